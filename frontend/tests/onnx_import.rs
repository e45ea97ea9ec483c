//! ONNX import features beyond single ops: model-local functions, symbolic dims, specialization
//! on input values. Models are written in ONNX's textual syntax.

use terafab_frontend::onnx::text::parse_model_text;
use terafab_frontend::onnx::{ImportOptions, import_model};
use terafab_ir::Tensor;
use terafab_ir::interp::run_function;

fn run(src: &str, opts: &ImportOptions, inputs: &[Tensor]) -> Vec<Tensor> {
    let m = parse_model_text(src).unwrap_or_else(|e| panic!("{e}"));
    let module = import_model(&m, None, opts).unwrap_or_else(|e| panic!("{e}"));
    terafab_ir::verify::verify_module(&module).unwrap_or_else(|e| panic!("{e}"));
    run_function(module.entry().unwrap(), inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn f32s(dims: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(dims.to_vec(), v.to_vec()).unwrap()
}

const FUNCTIONS: &str = r#"
<ir_version: 8, opset_import: ["" : 18, "local" : 1]>
g (float[3] x) => (float[3] y, float[3] z) {
  y = local.ScaleAdd <alpha: float = 2.0> (x, x)
  z = local.ScaleAdd (x, x)
}
<domain: "local", opset_import: ["" : 18]>
ScaleAdd <alpha: float = 10.0> (a, b) => (c) {
  s = Constant <value_float: float = @alpha> ()
  t = Mul (a, s)
  c = Add (t, b)
}
"#;

#[test]
fn model_local_functions_are_inlined_with_attribute_references() {
    let out = run(
        FUNCTIONS,
        &ImportOptions::default(),
        &[f32s(&[3], &[1., 2., 3.])],
    );
    // alpha = 2 from the call; the second call uses the function's default 10.
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[3., 6., 9.]);
    assert_eq!(out[1].as_slice::<f32>().unwrap(), &[11., 22., 33.]);
}

const SYMBOLIC: &str = r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[batch, 4] x) => (float[batch] y) {
  y = ReduceSum <keepdims: int = 0> (x, axes)
  axes = Constant <value: tensor = int64[1] {1}> ()
}
"#;

#[test]
fn symbolic_dims_are_bound_from_options_and_nodes_may_come_in_any_order() {
    let mut opts = ImportOptions::default();
    let m = parse_model_text(SYMBOLIC).unwrap();
    let e = import_model(&m, None, &opts).unwrap_err().to_string();
    assert!(e.contains("symbolic dim `batch`"), "{e}");
    opts.dims.insert("batch".into(), 2);
    let out = run(
        SYMBOLIC,
        &opts,
        &[f32s(&[2, 4], &[1., 1., 1., 1., 2., 2., 2., 2.])],
    );
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[4., 8.]);
}

const RESHAPE_BY_INPUT: &str = r#"
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x, int64[2] shape) => (float[3, 2] y) {
  y = Reshape (x, shape)
}
"#;

#[test]
fn inputs_that_determine_shapes_are_specialized() {
    let m = parse_model_text(RESHAPE_BY_INPUT).unwrap();
    // Without the value, the target shape is unknown at import time.
    let e = import_model(&m, None, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be known at import time"), "{e}");
    let mut opts = ImportOptions::default();
    opts.input_values.insert(
        "shape".into(),
        Tensor::from_vec(vec![2], vec![3i64, 2]).unwrap(),
    );
    let module = import_model(&m, None, &opts).unwrap();
    let f = module.entry().unwrap();
    // `shape` is now part of the model; `x` stays an input.
    assert_eq!(f.inputs().len(), 1);
    let out = run_function(f, &[f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.])]).unwrap();
    assert_eq!(out[0].shape(), &[3, 2]);
}
