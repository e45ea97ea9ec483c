//! The kernel IR by hand: printer, verifier errors, and the interpreter's checks.

use terafab_ir::kernel::interp::run_program;
use terafab_ir::kernel::print::print_program;
use terafab_ir::kernel::verify::verify_program;
use terafab_ir::kernel::{
    Body, Buffer, BufferId, Expr, Index, Kernel, KernelKind, KernelProgram, Local, LoopNest, Stage,
    Storage, Var,
};
use terafab_ir::{BinaryOp, DType, ReduceKind, Tensor, UnaryOp};

fn load(b: BufferId, index: Vec<Index>) -> Expr {
    Expr::Load {
        buffer: b,
        index,
        fill: None,
    }
}

/// `y[i] = exp(x[i, j] - max_j x[i, j])` summed over j, then divided: a row softmax-sum
/// kernel (one outer var, a max stage, a sum stage, a store over the row).
fn softmax_program() -> KernelProgram {
    let mut p = KernelProgram::new("main");
    let x = p.add_buffer(Buffer::new("x", DType::F32, vec![2, 3], Storage::Input(0)));
    p.inputs.push(x);
    let y = p.add_buffer(Buffer::new("y", DType::F32, vec![2, 3], Storage::Temp));
    let (i, r0, r1, j) = (Var(0), Var(1), Var(2), Var(3));
    let xi = |v: Var| load(x, vec![Index::Var(i), Index::Var(v)]);
    let e = |v: Var| {
        Expr::unary(
            UnaryOp::Exp,
            Expr::binary(BinaryOp::Sub, xi(v), Expr::Local(Local(0))),
        )
    };
    p.kernels.push(Kernel {
        name: "k0".into(),
        kind: KernelKind::Reduction,
        inputs: vec![x],
        outputs: vec![y],
        body: Body::Loops(LoopNest {
            space: vec![2],
            stages: vec![
                Stage::Reduce {
                    local: Local(0),
                    kind: ReduceKind::Max,
                    vars: vec![(r0, 3)],
                    body: xi(r0),
                },
                Stage::Reduce {
                    local: Local(1),
                    kind: ReduceKind::Sum,
                    vars: vec![(r1, 3)],
                    body: e(r1),
                },
                Stage::Store {
                    buffer: y,
                    vars: vec![(j, 3)],
                    index: vec![Index::Var(i), Index::Var(j)],
                    value: Expr::binary(BinaryOp::Div, e(j), Expr::Local(Local(1))),
                },
            ],
        }),
        sources: vec!["softmax".into()],
    });
    p.outputs.push(("y".into(), y));
    p
}

#[test]
fn softmax_kernel_prints_verifies_and_runs() {
    let p = softmax_program();
    verify_program(&p).unwrap();
    insta::assert_snapshot!(print_program(&p));
    let x = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, -1.0, 0.0, 1000.0]).unwrap();
    let y = run_program(&p, &[x]).unwrap().remove(0);
    let v = y.typed::<f32>().unwrap();
    let want = [0.09003057f32, 0.24472848, 0.66524094, 0.0, 0.0, 1.0];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{v:?}");
    }
}

fn expect_verify_error(p: &KernelProgram, needle: &str) {
    let e = verify_program(p).expect_err("must not verify").to_string();
    assert!(e.contains(needle), "`{e}` does not mention `{needle}`");
}

fn store_stage(p: &mut KernelProgram) -> &mut Stage {
    let Body::Loops(nest) = &mut p.kernels[0].body else {
        unreachable!()
    };
    nest.stages.last_mut().unwrap()
}

#[test]
fn verifier_finds_out_of_bounds_indices() {
    let mut p = softmax_program();
    if let Stage::Store { index, .. } = store_stage(&mut p) {
        index[1] = Index::Var(Var(3)).offset(1);
    }
    expect_verify_error(&p, "index 1 of %y ranges over [1, 3], outside [0, 3)");
}

#[test]
fn verifier_finds_scoping_and_type_errors() {
    let mut p = softmax_program();
    if let Stage::Store { value, .. } = store_stage(&mut p) {
        *value = load(BufferId(0), vec![Index::Var(Var(0)), Index::Var(Var(1))]);
    }
    expect_verify_error(&p, "loop variable #1 is not in scope");

    let mut p = softmax_program();
    if let Stage::Store { value, .. } = store_stage(&mut p) {
        *value = Expr::Local(Local(7));
    }
    expect_verify_error(&p, "local t7 is used before it is defined");

    let mut p = softmax_program();
    if let Stage::Store { value, .. } = store_stage(&mut p) {
        *value = Expr::Convert(DType::F64, Box::new(value.clone()));
    }
    expect_verify_error(&p, "stores a f64 value into %y (f32)");
}

#[test]
fn verifier_checks_the_write_discipline() {
    // A second kernel writing the same buffer.
    let mut p = softmax_program();
    let mut k = p.kernels[0].clone();
    k.name = "k1".into();
    p.kernels.push(k);
    expect_verify_error(&p, "which is already written");

    // Reading a temporary before it is written.
    let mut p = softmax_program();
    let t = p.add_buffer(Buffer::new("t", DType::F32, vec![2, 3], Storage::Temp));
    p.kernels[0].inputs.push(t);
    expect_verify_error(&p, "reads %t before any kernel writes it");

    // An output never written.
    let mut p = softmax_program();
    let t = p.add_buffer(Buffer::new("t", DType::F32, vec![1], Storage::Temp));
    p.outputs.push(("t".into(), t));
    expect_verify_error(&p, "output `t` is never written");
}

#[test]
fn interpreter_refuses_partial_and_double_writes() {
    let x = Tensor::from_vec(vec![2, 3], vec![0.0f32; 6]).unwrap();
    // Store to column 0 only: the rest of %y is never written.
    let mut p = softmax_program();
    if let Stage::Store { index, .. } = store_stage(&mut p) {
        index[1] = Index::Var(Var(3)).times(0);
    }
    let e = run_program(&p, std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("written twice"), "{e}");
}

#[test]
fn loads_with_fill_read_the_fill_out_of_bounds() {
    // y[i] = x[i - 1] or 7 (a shift with padding), run on [1, 2, 3].
    let mut p = KernelProgram::new("shift");
    let x = p.add_buffer(Buffer::new("x", DType::I32, vec![3], Storage::Input(0)));
    p.inputs.push(x);
    let y = p.add_buffer(Buffer::new("y", DType::I32, vec![3], Storage::Temp));
    p.kernels.push(Kernel {
        name: "k0".into(),
        kind: KernelKind::Movement,
        inputs: vec![x],
        outputs: vec![y],
        body: Body::Loops(LoopNest {
            space: vec![3],
            stages: vec![Stage::Store {
                buffer: y,
                vars: vec![],
                index: vec![Index::Var(Var(0))],
                value: Expr::Load {
                    buffer: x,
                    index: vec![Index::Var(Var(0)).offset(-1)],
                    fill: Some(Tensor::scalar(7i32)),
                },
            }],
        }),
        sources: vec![],
    });
    p.outputs.push(("y".into(), y));
    verify_program(&p).unwrap();
    let x = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
    let y = run_program(&p, &[x]).unwrap().remove(0);
    assert_eq!(y.typed::<i32>().unwrap(), &[7, 1, 2]);
    // Without the fill, the load is out of bounds for i = 0.
    let Body::Loops(nest) = &mut p.kernels[0].body else {
        unreachable!()
    };
    if let Stage::Store {
        value: Expr::Load { fill, .. },
        ..
    } = &mut nest.stages[0]
    {
        *fill = None;
    }
    expect_verify_error(&p, "ranges over [-1, 1], outside [0, 3)");
}
