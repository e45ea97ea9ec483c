//! Helpers shared by the Cranelift backend's tests.

use terafab_ir::Tensor;
use terafab_ir::kernel::KernelProgram;

/// The kernel program of a module in IR text, its dims bound by zero inputs of the declared
/// (static) shapes.
pub fn fuse_text(src: &str) -> KernelProgram {
    let m = terafab_ir::parse::parse_module(src).expect("the module parses");
    let f = m.entry().expect("a function");
    let inputs: Vec<Tensor> = f
        .inputs()
        .iter()
        .map(|&v| {
            let t = f.values.ty(v);
            let shape: Vec<usize> = t
                .shape
                .dims()
                .iter()
                .map(|d| d.as_static().expect("static shapes"))
                .collect();
            Tensor::zeros(t.dtype, &shape).unwrap()
        })
        .collect();
    let bind = terafab_ir::interp::bind_inputs(f, &inputs).unwrap();
    terafab_passes::fuse::fuse_function(f, &bind).unwrap()
}
