//! Snapshots of the backend's text forms on small kernels: the LLVM IR as generated from the
//! kernel IR, the LLVM IR after O3, and the assembly, all for the named CPU `x86-64-v3` (AVX2 and
//! FMA, whatever machine runs the test) so that they do not depend on the host.

mod common;

use terafab_ir::kernel::KernelProgram;
use terafab_llvm::{Cpu, IrStage, emit_asm, emit_llvm};

fn program(src: &str) -> KernelProgram {
    common::fuse_text(src)
}

/// A fused elementwise kernel: relu(x * 2 + y).
const ELEMENTWISE: &str = "func @main(%x: f32[64], %y: f32[64]) -> (z: f32[64]) {
  %two = constant() {value=dense<f32[]>[2.0]} : f32[]
  %m = mul(%x, %two) : f32[64]
  %s = add(%m, %y) : f32[64]
  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]
  %z = max(%s, %zero) : f32[64]
  return %z
}";

/// A row reduction: the sum of each row of an i32 matrix, converted to f64.
const REDUCTION: &str = "func @main(%x: i32[4,6]) -> (s: f64[4]) {
  %s = reduce_sum(%x) {axes=[1], keep_dims=false} : i32[4]
  %f = convert(%s) {to=f64} : f64[4]
  return %f
}";

fn cpu() -> Cpu {
    Cpu::Named("x86-64-v3".into())
}

#[test]
fn elementwise_llvm_ir() {
    let p = program(ELEMENTWISE);
    insta::assert_snapshot!(
        "elementwise_generated",
        emit_llvm(&p, &cpu(), IrStage::Generated).unwrap()
    );
    insta::assert_snapshot!(
        "elementwise_optimized",
        emit_llvm(&p, &cpu(), IrStage::Optimized).unwrap()
    );
}

#[test]
fn elementwise_asm() {
    insta::assert_snapshot!(
        "elementwise_asm",
        emit_asm(&program(ELEMENTWISE), &cpu()).unwrap()
    );
}

#[test]
fn reduction_llvm_ir() {
    insta::assert_snapshot!(
        "reduction_generated",
        emit_llvm(&program(REDUCTION), &cpu(), IrStage::Generated).unwrap()
    );
}
