//! Helpers shared by the GPU backend's tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use terafab_ir::Tensor;
use terafab_ir::kernel::KernelProgram;

// The LLVM backend's helper that fuses a module in IR text.
#[path = "../../../llvm/tests/common/mod.rs"]
mod llvm_common;
pub use llvm_common::fuse_text;

/// The stage models of the testsuite (`testsuite/models/`).
pub const MODELS: [&str; 4] = ["mlp", "cnn_bn", "resnet_bottleneck", "transformer_block"];

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testsuite/models")
}

/// A stage model's kernel program (after the `default` pipeline), and its input.
pub fn model_program(name: &str) -> (KernelProgram, Tensor) {
    let dir = models_dir();
    let x = terafab_ir::npy::read_npy(&dir.join(format!("{name}_input.npy"))).unwrap();
    let mut m = terafab_frontend::load_model_with(
        &dir.join(format!("{name}.onnx")),
        &terafab_frontend::LoadOptions::default(),
    )
    .unwrap();
    terafab_passes::run_pipeline(
        &mut m,
        "default",
        terafab_passes::PipelineOptions::default(),
    )
    .unwrap();
    let f = m.entry().unwrap();
    let bind = terafab_ir::interp::bind_inputs(f, std::slice::from_ref(&x)).unwrap();
    (terafab_passes::fuse::fuse_function(f, &bind).unwrap(), x)
}

/// `ptxas`: `$TERAFAB_PTXAS`, else the one `scripts/ptxas.sh` installs, else one on `PATH`;
/// `None` (with a message saying how to get it) when there is none.
pub fn ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TERAFAB_PTXAS") {
        return Some(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ptxas.sh");
    if let Ok(out) = Command::new(&script).arg("--find").output()
        && out.status.success()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return Some(PathBuf::from(p));
        }
    }
    if Command::new("ptxas").arg("--version").output().is_ok() {
        return Some(PathBuf::from("ptxas"));
    }
    eprintln!(
        "SKIPPED: no ptxas (set TERAFAB_PTXAS, or run scripts/ptxas.sh to install the \
         nvidia-cuda-nvcc-cu12 wheel into the test venv)"
    );
    None
}

/// Assemble `ptx` with `ptxas -arch=arch`; the error output on failure.
pub fn assemble(ptxas: &Path, ptx: &str, arch: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("terafab-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let src = dir.join(format!("k{k}.ptx"));
    let obj = dir.join(format!("k{k}.cubin"));
    std::fs::write(&src, ptx).map_err(|e| e.to_string())?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .map_err(|e| format!("running {}: {e}", ptxas.display()))?;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&obj);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The GPU, or `None` with a message saying why the test is skipped.
pub fn device() -> Option<std::sync::Arc<terafab_gpu::Device>> {
    match terafab_gpu::open_device() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: needs a GPU: {e}");
            None
        }
    }
}
