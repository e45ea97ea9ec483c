//! End-to-end tests of the `terafab` binary.

mod common;

use std::path::{Path, PathBuf};

use common::*;

use terafab_ir::npy::{read_npy, write_npy};
use terafab_ir::{DType, Tensor};

fn example(name: &str) -> String {
    arg(&repo().join("examples").join(name))
}

fn write_model(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn write_tensor(dir: &Path, name: &str, t: &Tensor) -> PathBuf {
    let path = dir.join(name);
    write_npy(&path, t).unwrap();
    path
}

/// `NAME=PATH` for `--input`.
fn input_arg(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

#[test]
fn runs_the_mlp_on_random_inputs_and_writes_outputs() {
    let dir = scratch("mlp_random");
    let model = example("mlp.tfir");
    let out_dir = dir.join("out");
    let text = success(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--seed",
        "1",
        "--output-dir",
        &arg(&out_dir),
    ]));
    assert!(
        text.contains("input x: f32[4,16] random (seed 1)"),
        "{text}"
    );
    let line = output_line(&text, "y");
    assert!(line.starts_with("output y: f32[4,3] "), "{line}");
    for key in ["min=", "max=", "mean=", "values=["] {
        assert!(line.contains(key), "{line}");
    }
    assert!(
        text.contains(&format!("wrote {}", out_dir.join("y.npy").display())),
        "{text}"
    );

    let y = read_npy(&out_dir.join("y.npy")).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_eq!(y.shape(), &[4, 3]);
    // A logistic output.
    assert!(y.to_f64_vec().iter().all(|v| *v > 0.0 && *v < 1.0));

    // Deterministic in the seed.
    let again = success(&terafab(&["run", &model, "--random-inputs", "--seed", "1"]));
    assert_eq!(output_line(&again, "y"), line);
    let other = success(&terafab(&["run", &model, "--random-inputs", "--seed", "2"]));
    assert_ne!(output_line(&other, "y"), line);
}

/// The summary line of output `name`.
#[track_caller]
fn output_line<'a>(text: &'a str, name: &str) -> &'a str {
    let prefix = format!("output {name}: ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no output {name} in:\n{text}"))
}

#[test]
fn runs_on_inputs_from_npy_files() {
    let dir = scratch("mlp_files");
    let model = example("mlp.tfir");
    let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 40.0).collect();
    let x = Tensor::from_vec(vec![4, 16], values).unwrap();
    let x_path = write_tensor(&dir, "x.npy", &x);
    let out_dir = dir.join("results");
    let text = success(&terafab(&[
        "run",
        &model,
        "--input",
        &input_arg("x", &x_path),
        "--output-dir",
        &arg(&out_dir),
        "--backend",
        "interp",
    ]));
    assert!(
        text.contains(&format!("input x: f32[4,16] from {}", x_path.display())),
        "{text}"
    );

    // The written output is exactly what the interpreter computes.
    let module = terafab_frontend::load_model(Path::new(&model)).unwrap();
    let expected = terafab_ir::interp::run_function(module.entry().unwrap(), &[x]).unwrap();
    let y = read_npy(&out_dir.join("y.npy")).unwrap();
    assert!(y.bit_eq(&expected[0]), "{y:?} vs {:?}", expected[0]);
}

#[test]
fn symbolic_dims_of_random_inputs_need_a_value() {
    let model = example("symbolic_batch.tfir");
    let text = success(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--dim",
        "N=3",
    ]));
    assert!(text.contains("input x: f32[3,4] random"), "{text}");
    assert!(text.contains("input bias: f32[2] random"), "{text}");
    assert!(
        output_line(&text, "y").starts_with("output y: f32[3,2] "),
        "{text}"
    );
    assert!(
        output_line(&text, "total").starts_with("output total: f32[3] "),
        "{text}"
    );

    let err = user_error(&terafab(&["run", &model, "--random-inputs"]));
    assert!(err.contains("`N`") && err.contains("--dim N="), "{err}");

    let err = user_error(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--dim",
        "M=3",
    ]));
    assert!(err.contains("`M`") && err.contains("`N`"), "{err}");
}

#[test]
fn files_bind_symbolic_dims_for_random_inputs() {
    let dir = scratch("symbolic_files");
    let model = example("symbolic_batch.tfir");
    let x = Tensor::from_vec(vec![5, 4], vec![0.25f32; 20]).unwrap();
    let x_input = input_arg("x", &write_tensor(&dir, "x.npy", &x));
    let text = success(&terafab(&[
        "run",
        &model,
        "--input",
        &x_input,
        "--random-inputs",
        "--seed",
        "3",
    ]));
    assert!(
        text.contains("input bias: f32[2] random (seed 3)"),
        "{text}"
    );
    assert!(
        output_line(&text, "y").starts_with("output y: f32[5,2] "),
        "{text}"
    );

    // A --dim that contradicts a file.
    let err = user_error(&terafab(&[
        "run",
        &model,
        "--input",
        &x_input,
        "--random-inputs",
        "--dim",
        "N=3",
    ]));
    assert!(err.contains("N=3") && err.contains("N=5"), "{err}");

    // Every input from a file.
    let bias = Tensor::from_vec(vec![2], vec![1.0f32, -1.0]).unwrap();
    let bias_input = input_arg("bias", &write_tensor(&dir, "bias.npy", &bias));
    let text = success(&terafab(&[
        "run",
        &model,
        "--input",
        &x_input,
        "--input",
        &bias_input,
    ]));
    // relu(0.25 * sum(w[:, j]) + bias[j]) summed over j, the same on every row.
    assert!(
        output_line(&text, "total").starts_with("output total: f32[5] "),
        "{text}"
    );

    let err = user_error(&terafab(&[
        "run", &model, "--input", &x_input, "--input", &x_input,
    ]));
    assert!(err.contains("more than once"), "{err}");
}

#[test]
fn missing_and_unknown_inputs_are_errors() {
    let model = example("mlp.tfir");
    let err = user_error(&terafab(&["run", &model]));
    assert!(err.contains("missing input `x`"), "{err}");
    assert!(err.contains("--random-inputs"), "{err}");

    let err = user_error(&terafab(&["run", &model, "--input", "nope=whatever.npy"]));
    assert!(err.contains("`nope`") && err.contains("`x`"), "{err}");

    let err = user_error(&terafab(&[
        "run",
        &model,
        "--input",
        "x=does-not-exist.npy",
    ]));
    assert!(err.contains("does-not-exist.npy"), "{err}");
}

#[test]
fn inputs_of_the_wrong_type_are_errors() {
    let dir = scratch("wrong_type");
    let model = example("mlp.tfir");
    let cases = [
        (
            "shape.npy",
            Tensor::from_vec(vec![3, 16], vec![0.0f32; 48]).unwrap(),
            "f32[3,16]",
        ),
        (
            "dtype.npy",
            Tensor::from_vec(vec![4, 16], vec![0.0f64; 64]).unwrap(),
            "f64[4,16]",
        ),
        (
            "rank.npy",
            Tensor::from_vec(vec![64], vec![0.0f32; 64]).unwrap(),
            "f32[64]",
        ),
    ];
    for (file, t, shown) in cases {
        let x_input = input_arg("x", &write_tensor(&dir, file, &t));
        let err = user_error(&terafab(&["run", &model, "--input", &x_input]));
        assert!(
            err.contains(shown) && err.contains("f32[4,16]") && err.contains(file),
            "{err}"
        );
    }
    // Not a .npy file at all.
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"hello").unwrap();
    let err = user_error(&terafab(&[
        "run",
        &model,
        "--input",
        &input_arg("x", &garbage),
    ]));
    assert!(
        err.contains("garbage.npy") && err.contains("caused by: "),
        "{err}"
    );
}

#[test]
fn bad_model_files_are_errors() {
    let dir = scratch("bad_models");
    let err = user_error(&terafab(&["run", "no/such/model.tfir", "--random-inputs"]));
    assert!(err.contains("no/such/model.tfir"), "{err}");

    let bad = arg(&write_model(
        &dir,
        "malformed.tfir",
        "func @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = add(%x, %x : f32[2]\n  return %y\n}\n",
    ));
    for cmd in ["run", "print", "verify"] {
        let err = user_error(&terafab(&[cmd, &bad]));
        assert!(err.contains("malformed.tfir"), "{err}");
        assert!(err.contains("line 2, column"), "{err}");
    }

    let ill_typed = arg(&write_model(
        &dir,
        "ill_typed.tfir",
        "func @main(%x: f32[2]) -> (y: f32[3]) {\n  %y = add(%x, %x) : f32[3]\n  return %y\n}\n",
    ));
    let err = user_error(&terafab(&["verify", &ill_typed]));
    assert!(
        err.contains("ill_typed.tfir") && err.contains("caused by: "),
        "{err}"
    );

    let unknown = arg(&write_model(&dir, "model.pt", "not a tfir model"));
    let err = user_error(&terafab(&["verify", &unknown]));
    assert!(err.contains(".tfir"), "{err}");

    let err = user_error(&terafab(&["verify", &arg(&dir)]));
    assert!(err.contains("directory"), "{err}");

    let empty = arg(&write_model(&dir, "empty.tfir", "// nothing here\n"));
    assert_eq!(
        success(&terafab(&["verify", &empty])),
        "ok: 0 functions, 0 nodes\n"
    );
    let err = user_error(&terafab(&["run", &empty]));
    assert!(err.contains("no function"), "{err}");
}

#[test]
fn bad_arguments_exit_with_code_2() {
    let model = example("mlp.tfir");
    // --seed only makes sense with --random-inputs (--dim also binds the dims of ONNX models).
    usage_error(&terafab(&["run", &model, "--seed", "3"]));
    let err = usage_error(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--backend",
        "tpu",
    ]));
    assert!(err.contains("interp") && err.contains("gpu"), "{err}");
    usage_error(&terafab(&["run", &model, "--input", "x"]));
    usage_error(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--dim",
        "N=-1",
    ]));
    usage_error(&terafab(&["frobnicate"]));
    usage_error(&terafab(&["run"]));
}

#[test]
fn every_subcommand_has_examples_in_its_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["print", "--help"],
        &["verify", "--help"],
        &["plan-memory", "--help"],
        &["conformance", "--help"],
    ] {
        let text = success(&terafab(args));
        assert!(text.contains("EXAMPLES:"), "{args:?}: {text}");
        assert!(text.contains("  terafab "), "{args:?}: {text}");
    }
}

#[test]
fn opt_help_names_every_registered_pass() {
    let text = success(&terafab(&["opt", "--help"]));
    let listed = text.split("PASSES:").nth(1).expect("a PASSES section");
    for p in terafab_passes::REGISTRY {
        let named = listed
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .any(|w| w == p.name);
        assert!(named, "`{}` is not in opt's help: {listed}", p.name);
    }
}

#[test]
fn verify_and_print() {
    let model = example("mlp.tfir");
    let text = success(&terafab(&["verify", &model]));
    assert_eq!(text, "ok: 1 functions, 11 nodes\n");

    let text = success(&terafab(&["print", &model]));
    let reparsed = terafab_ir::parse::parse_module(&text).unwrap();
    let original = terafab_frontend::load_model(Path::new(&model)).unwrap();
    assert_eq!(
        terafab_ir::print::print_module(&reparsed),
        terafab_ir::print::print_module(&original)
    );

    let elided = success(&terafab(&["print", &model, "--elide-constants", "8"]));
    assert!(elided.contains("elided"), "{elided}");
    assert!(elided.len() < text.len());
}

#[test]
fn output_names_cannot_escape_the_output_directory() {
    let dir = scratch("escape");
    let model = arg(&write_model(
        &dir,
        "escape.tfir",
        "func @main(%x: f32[2]) -> (\"../evil\": f32[2], \"/abs\": f32[2]) {\n  %y = neg(%x) : f32[2]\n  return %y, %x\n}\n",
    ));
    let out_dir = dir.join("out");
    let text = success(&terafab(&[
        "run",
        &model,
        "--random-inputs",
        "--output-dir",
        &arg(&out_dir),
    ]));
    assert!(text.contains("output ../evil: f32[2]"), "{text}");
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["_._evil.npy", "_abs.npy"]);
    assert!(!dir.join("evil.npy").exists());
}

#[test]
fn summaries_count_nans_and_trues() {
    let dir = scratch("summaries");
    let model = arg(&write_model(
        &dir,
        "nan.tfir",
        "func @main(%x: f32[64]) -> (l: f32[64], pos: bool[64]) {\n  %l = log(%x) : f32[64]\n  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]\n  %pos = gt(%x, %zero) : bool[64]\n  return %l, %pos\n}\n",
    ));
    let text = success(&terafab(&["run", &model, "--random-inputs", "--seed", "5"]));
    let count = |line: &str, key: &str, end: char| -> usize {
        let rest = line
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        rest.split(end).next().unwrap().parse().unwrap()
    };
    // log is NaN exactly on the negative inputs; no random f32 input is exactly 0 here.
    let nans = count(output_line(&text, "l"), "nan=", ' ');
    let trues = count(output_line(&text, "pos"), "true=", '/');
    assert!(nans > 0 && trues > 0, "{text}");
    assert_eq!(nans + trues, 64, "{text}");
}

#[test]
fn runs_the_onnx_example_like_numpy() {
    let dir = scratch("onnx_example");
    let out = dir.join("out");
    let x = format!("x={}", example("x.npy"));
    let text = success(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--input",
        &x,
        "--output-dir",
        &arg(&out),
    ]));
    assert!(output_line(&text, "probs").contains("f32[4,10]"), "{text}");
    let got = read_npy(&out.join("probs.npy")).unwrap();
    let want = read_npy(Path::new(&example("mlp_expected_probs.npy"))).unwrap();
    assert_eq!(got.shape(), want.shape());
    // numpy computed in f64; the interpreter accumulates f32 sums in f64 too, so only the f32
    // roundings of intermediates differ: a few ulps.
    for (g, w) in got.to_f64_vec().iter().zip(want.to_f64_vec()) {
        assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn onnx_models_need_bound_dims_and_check_lists_problems() {
    // Random inputs for an ONNX model with a symbolic batch need its extent.
    let err = user_error(&terafab(&["run", &example("mlp.onnx"), "--random-inputs"]));
    assert!(
        err.contains("symbolic dim `batch`") && err.contains("--dim batch=N"),
        "{err}"
    );
    let text = success(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--random-inputs",
        "--dim",
        "batch=3",
    ]));
    assert!(output_line(&text, "probs").contains("f32[3,10]"), "{text}");
    let text = success(&terafab(&["check", &example("mlp.onnx")]));
    assert!(text.contains("ok: every node imports"), "{text}");
    // A truncated model is a clear error, not a panic.
    let dir = scratch("onnx_truncated");
    let bytes = std::fs::read(example("mlp.onnx")).unwrap();
    let cut = dir.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = user_error(&terafab(&[
        "run",
        &arg(&cut),
        "--random-inputs",
        "--dim",
        "batch=1",
    ]));
    assert!(err.contains("malformed ONNX protobuf"), "{err}");
}

#[test]
fn plan_memory_prints_the_arena_and_every_buffer() {
    let text = success(&terafab(&[
        "plan-memory",
        &example("mlp.onnx"),
        "--dim",
        "batch=64",
        "--passes",
        "dce",
    ]));
    assert!(text.starts_with("memory plan of @main: "), "{text}");
    for line in ["arena (peak):", "without reuse:", "weights:", "probs "] {
        assert!(text.contains(line), "{line}: {text}");
    }
    // Symbolic dims need a value; a bad pipeline is an error too.
    let err = user_error(&terafab(&["plan-memory", &example("symbolic_batch.tfir")]));
    assert!(err.contains("symbolic dim"), "{err}");
    let err = user_error(&terafab(&[
        "plan-memory",
        &example("mlp.tfir"),
        "--passes",
        "frobnicate",
    ]));
    assert!(err.contains("unknown pass `frobnicate`"), "{err}");
}

#[test]
fn conformance_rejects_unknown_passes_at_once() {
    let dir = scratch("conformance_passes");
    let err = user_error(&terafab(&[
        "conformance",
        "--passes",
        "frobnicate",
        "--cases",
        &arg(&dir),
    ]));
    assert!(err.contains("--passes: unknown pass `frobnicate`"), "{err}");
    let err = user_error(&terafab(&[
        "conformance",
        "--passes",
        "dce",
        "--update-expectations",
    ]));
    assert!(err.contains("no --passes"), "{err}");
}

/// A small model every pass of the default pipeline changes.
const OPT_MODEL: &str = "func @main(%x: f32[2,3]) -> (y: f32[2,3]) {
  %one = constant() {value=dense<f32[]>[1.0]} : f32[]
  %two = constant() {value=dense<f32[]>[2.0]} : f32[]
  %half = div(%one, %two) : f32[]
  %a = mul(%x, %one) : f32[2,3]
  %b = mul(%a, %half) : f32[2,3]
  %c = mul(%x, %half) : f32[2,3]
  %y = add(%b, %c) : f32[2,3]
  return %y
}
";

#[test]
fn opt_runs_the_default_pipeline() {
    let dir = scratch("opt_default");
    let model = arg(&write_model(&dir, "m.tfir", OPT_MODEL));
    let text = success(&terafab(&["opt", &model]));
    assert_eq!(
        text,
        "func @main(%x: f32[2,3]) -> (y: f32[2,3]) {
  %half = constant() {value=dense<f32[]>[0.5]} : f32[]
  %b = mul(%x, %half) : f32[2,3]
  %y = add(%b, %b) : f32[2,3]
  return %y
}
"
    );
    // -o writes the same text, which loads back.
    let out = arg(&dir.join("out.tfir"));
    assert_eq!(success(&terafab(&["opt", &model, "-o", &out])), "");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    success(&terafab(&["verify", &out]));
}

#[test]
fn opt_prints_ir_after_passes_and_times_them() {
    let dir = scratch("opt_print");
    let model = arg(&write_model(&dir, "m.tfir", OPT_MODEL));
    let o = terafab(&[
        "opt",
        &model,
        "--passes",
        "fold,dce",
        "--print-ir-after",
        "dce",
    ]);
    success(&o);
    let err = stderr(&o);
    assert!(
        err.starts_with("// -----// IR after dce //----- //\nfunc @main"),
        "{err}"
    );
    assert_eq!(err.matches("// -----// IR after").count(), 1, "{err}");
    let o = terafab(&["opt", &model, "--print-ir-after-all", "--time-passes"]);
    success(&o);
    let err = stderr(&o);
    for pass in ["canonicalize", "fold", "cse", "dce"] {
        assert!(
            err.contains(&format!("// -----// IR after {pass} //----- //")),
            "{err}"
        );
        // Every pass changes this model.
        let row = err.lines().find(|l| l.ends_with(&format!("  {pass}")));
        assert!(row.is_some_and(|r| r.contains(" yes ")), "{err}");
    }
    assert!(err.contains("Pass execution timing report"), "{err}");
    assert!(
        err.contains("---Wall Time---  --Changed--  ---Nodes---"),
        "{err}"
    );
    assert!(err.contains("(verifier)") && err.contains("Total"), "{err}");
}

#[test]
fn opt_reports_bad_pipelines() {
    let dir = scratch("opt_bad");
    let model = arg(&write_model(&dir, "m.tfir", OPT_MODEL));
    let err = user_error(&terafab(&["opt", &model, "--passes", "fold,frobnicate"]));
    assert!(
        err.contains("unknown pass `frobnicate`") && err.contains("canonicalize"),
        "{err}"
    );
    let err = user_error(&terafab(&["opt", &model, "--passes", "fold,,dce"]));
    assert!(err.contains("empty pass name"), "{err}");
    let err = user_error(&terafab(&["opt", &model, "--print-ir-after", "default"]));
    assert!(err.contains("named pipeline"), "{err}");
    let err = user_error(&terafab(&["opt", &model, "--print-ir-after", "nope"]));
    assert!(err.contains("unknown pass `nope`"), "{err}");
    let help = success(&terafab(&["opt", "--help"]));
    assert!(
        help.contains("EXAMPLES") && help.contains("--time-passes"),
        "{help}"
    );
}

#[test]
fn opt_ending_with_fuse_prints_the_kernel_ir() {
    let dir = scratch("opt_fuse");
    let model = arg(&write_model(&dir, "m.tfir", OPT_MODEL));
    let o = terafab(&["opt", &model, "--passes", "default,fuse", "--time-passes"]);
    let text = success(&o);
    assert!(
        text.starts_with(
            "// 1 kernel (1 elementwise) from 2 ops, temporaries in a 64 byte arena (64 without reuse)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("kernels @main(%x: f32[2,3]) -> (%y) {"),
        "{text}"
    );
    assert!(text.contains("parallel i0 < 2, i1 < 3"), "{text}");
    assert!(
        stderr(&o).contains("fuse: @main: 1 kernel (1 elementwise)"),
        "{}",
        stderr(&o)
    );
    // A symbolic dim that is not bound: the pass reports it, `opt` says why there is no kernel IR.
    let sym = arg(&write_model(
        &dir,
        "sym.tfir",
        "func @main(%x: f32[N]) -> (y: f32[N]) {\n  %y = neg(%x) : f32[N]\n  return %y\n}\n",
    ));
    let text = success(&terafab(&["opt", &sym, "--passes", "fuse"]));
    assert!(text.starts_with("// not lowered to kernels:"), "{text}");
    assert!(text.contains("symbolic shape [N]"), "{text}");
}

#[test]
fn runs_through_the_kernels_like_the_interpreter() {
    let dir = scratch("mlp_kernels");
    let model = example("mlp.tfir");
    let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 40.0).collect();
    let x = Tensor::from_vec(vec![4, 16], values).unwrap();
    let x_path = write_tensor(&dir, "x.npy", &x);
    let mut outs = Vec::new();
    for backend in ["interp", "kernels"] {
        let out_dir = dir.join(backend);
        success(&terafab(&[
            "run",
            &model,
            "--input",
            &input_arg("x", &x_path),
            "--output-dir",
            &arg(&out_dir),
            "--backend",
            backend,
        ]));
        outs.push(read_npy(&out_dir.join("y.npy")).unwrap());
    }
    // f32 matmuls: the kernels round each product to f32 before the f64 sum, the graph
    // interpreter sums exact products; a few ulps.
    assert_close(&outs[0], &outs[1]);
}

fn assert_close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
        assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "{a:?} vs {b:?}");
    }
}
