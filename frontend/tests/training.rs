//! The `ai.onnx.preview.training` ops beyond the ONNX conformance cases: a whole training step
//! (forward, loss, Gradient, Adam) in one graph, checked against a hand-written computation and
//! run through the pass pipeline and the kernels; Gradient with fed inputs; errors.

use terafab_frontend::onnx::text::parse_model_text;
use terafab_frontend::onnx::{ImportOptions, import_model};
use terafab_ir::interp::run_function;
use terafab_ir::{Module, Tensor};

fn import(src: &str) -> Result<Module, String> {
    let m = parse_model_text(src).unwrap_or_else(|e| panic!("{e}"));
    import_model(&m, None, &ImportOptions::default()).map_err(|e| e.to_string())
}

fn f32s(dims: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(dims.to_vec(), v.to_vec()).unwrap()
}

const STEP: &str = r#"
<ir_version: 8, opset_import: ["" : 18, "ai.onnx.preview.training" : 1]>
step (float[4,3] x, float[4,2] t, float[3,2] w, float[2] b, float r, int64 n,
      float[3,2] vw, float[2] vb, float[3,2] hw, float[2] hb)
  => (float loss, float[3,2] w2, float[2] b2, float[3,2] vw2, float[2] vb2,
      float[3,2] hw2, float[2] hb2, float[3,2] gw, float[2] gb) {
  m = MatMul (x, w)
  h = Add (m, b)
  a = Tanh (h)
  d = Sub (a, t)
  sq = Mul (d, d)
  loss = ReduceMean <keepdims: int = 0> (sq)
  gw, gb = ai.onnx.preview.training.Gradient <xs: strings = ["w", "b"], zs: strings = ["x", "t"], y: string = "loss"> (w, b, x, t)
  w2, b2, vw2, vb2, hw2, hb2 = ai.onnx.preview.training.Adam <alpha: float = 0.9, beta: float = 0.999, epsilon: float = 0.000001, norm_coefficient: float = 0.01> (r, n, w, b, gw, gb, vw, vb, hw, hb)
}
"#;

/// The same step by hand, in f64.
#[allow(clippy::too_many_arguments)]
fn step_by_hand(
    x: &[f64],
    t: &[f64],
    w: &[f64],
    b: &[f64],
    r: f64,
    n: i64,
    v: &[f64],
    hh: &[f64],
) -> (f64, Vec<f64>, Vec<f64>) {
    let mut loss = 0.0;
    let mut gw = [0.0; 6];
    let mut gb = [0.0; 2];
    for i in 0..4 {
        for j in 0..2 {
            let h: f64 = (0..3).map(|k| x[i * 3 + k] * w[k * 2 + j]).sum::<f64>() + b[j];
            let a = h.tanh();
            let d = a - t[i * 2 + j];
            loss += d * d / 8.0;
            let dh = 2.0 * d / 8.0 * (1.0 - a * a);
            gb[j] += dh;
            for k in 0..3 {
                gw[k * 2 + j] += x[i * 3 + k] * dh;
            }
        }
    }
    // Adam on the parameters [w, b] flattened.
    let (alpha, beta, eps, norm) = (0.9f64, 0.999f64, 1e-6f64, 0.01f64);
    let params: Vec<f64> = w.iter().chain(b).copied().collect();
    let grads: Vec<f64> = gw.iter().chain(&gb).copied().collect();
    let mut out = Vec::new();
    for i in 0..8 {
        let g = norm * params[i] + grads[i];
        let v2 = alpha * v[i] + (1.0 - alpha) * g;
        let h2 = beta * hh[i] + (1.0 - beta) * g * g;
        let ra = if n > 0 {
            r * (1.0 - beta.powi(n as i32)).sqrt() / (1.0 - alpha.powi(n as i32))
        } else {
            r
        };
        out.push(params[i] - ra * v2 / (h2.sqrt() + eps));
    }
    (loss, grads, out)
}

#[test]
fn a_training_step_is_one_graph() {
    let module = import(STEP).unwrap();
    let xs: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
    let ts: Vec<f32> = (0..8).map(|i| (i as f32 * 0.71).cos() * 0.5).collect();
    let ws: Vec<f32> = (0..6).map(|i| (i as f32 * 1.3).sin() * 0.8).collect();
    let bs = [0.1f32, -0.2];
    let vs: Vec<f32> = (0..8).map(|i| i as f32 * 0.01).collect();
    let hs: Vec<f32> = (0..8).map(|i| i as f32 * 0.001).collect();
    for n in [0i64, 3] {
        let inputs = [
            f32s(&[4, 3], &xs),
            f32s(&[4, 2], &ts),
            f32s(&[3, 2], &ws),
            f32s(&[2], &bs),
            Tensor::scalar(0.05f32),
            Tensor::scalar(n),
            f32s(&[3, 2], &vs[..6]),
            f32s(&[2], &vs[6..]),
            f32s(&[3, 2], &hs[..6]),
            f32s(&[2], &hs[6..]),
        ];
        let f = module.entry().unwrap();
        let out = run_function(f, &inputs).unwrap();
        let d = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (loss, grads, params) = step_by_hand(
            &d(&xs),
            &d(&ts),
            &d(&ws),
            &d(&bs),
            0.05,
            n,
            &d(&vs),
            &d(&hs),
        );
        let close = |got: &Tensor, want: &[f64]| {
            let got = got.to_f64_vec();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{got:?} vs {want:?}"
                );
            }
        };
        close(&out[0], &[loss]);
        close(&out[7], &grads[..6]);
        close(&out[8], &grads[6..]);
        close(&out[1], &params[..6]);
        close(&out[2], &params[6..]);

        // The same graph through the standard pipeline and the kernels.
        let mut opt = module.clone();
        terafab_passes::run_pipeline(&mut opt, "default", Default::default()).unwrap();
        let f2 = opt.entry().unwrap();
        let out2 = run_function(f2, &inputs).unwrap();
        let out3 = terafab_passes::fuse::run_kernels(f2, &inputs).unwrap();
        for ((a, b), c) in out.iter().zip(&out2).zip(&out3) {
            close(b, &a.to_f64_vec());
            close(c, &a.to_f64_vec());
        }
    }
}

#[test]
fn gradient_feeds_its_inputs_in_place_of_the_named_tensors() {
    let src = r#"
<ir_version: 8, opset_import: ["" : 18, "ai.onnx.preview.training" : 1]>
g (float[2] a, float[2] p) => (float[2] y, float[2] ga) {
  y = Mul (a, a)
  s = ReduceSum <keepdims: int = 0> (y)
  ga = ai.onnx.preview.training.Gradient <xs: strings = ["a"], y: string = "s"> (p)
}
"#;
    let module = import(src).unwrap();
    let out = run_function(
        module.entry().unwrap(),
        &[f32s(&[2], &[1.0, 2.0]), f32s(&[2], &[5.0, -3.0])],
    )
    .unwrap();
    assert_eq!(out[1].as_slice::<f32>().unwrap(), &[10.0, -6.0]);
}

#[test]
fn errors_name_the_node() {
    let bad_mode = r#"
<ir_version: 8, opset_import: ["ai.onnx.preview.training" : 1]>
g (float r, int64 t, float[2] x, float[2] gr, float[2] v) => (float[2] x2, float[2] v2) {
  x2, v2 = ai.onnx.preview.training.Momentum <alpha: float = 0.9, beta: float = 0.1, norm_coefficient: float = 0.0, mode: string = "heavy"> (r, t, x, gr, v)
}
"#;
    let e = import(bad_mode).unwrap_err();
    assert!(e.contains("Momentum") && e.contains("heavy"), "{e}");

    let unknown_y = r#"
<ir_version: 8, opset_import: ["" : 18, "ai.onnx.preview.training" : 1]>
g (float[2] a) => (float[2] ga) {
  ga = ai.onnx.preview.training.Gradient <xs: strings = ["a"], y: string = "nope"> (a)
}
"#;
    let e = import(unknown_y).unwrap_err();
    assert!(e.contains("nope"), "{e}");

    let version = r#"
<ir_version: 8, opset_import: ["ai.onnx.preview.training" : 2]>
g (float r, int64 t, float[2] x, float[2] gr, float[2] h) => (float[2] x2, float[2] h2) {
  x2, h2 = ai.onnx.preview.training.Adagrad (r, t, x, gr, h)
}
"#;
    let e = import(version).unwrap_err();
    assert!(e.contains("version 2"), "{e}");

    // A multiplying scatter on the path from x to y has no VJP rule: a typed error naming it.
    let topk = r#"
<ir_version: 8, opset_import: ["" : 18, "ai.onnx.preview.training" : 1]>
g (float[4] a, float[2] u) => (float[4] ga) {
  i = Constant <value: tensor = int64[2] {0, 2}> ()
  v = ScatterElements <reduction: string = "mul"> (a, i, u)
  s = ReduceSum <keepdims: int = 0> (v)
  ga = ai.onnx.preview.training.Gradient <xs: strings = ["a"], y: string = "s"> (a)
}
"#;
    let e = import(topk).unwrap_err();
    assert!(
        e.contains("Gradient") && e.contains("not differentiable"),
        "{e}"
    );
}
