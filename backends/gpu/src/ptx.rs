//! The NVPTX target machine: LLVM's O3 pipeline for a GPU architecture and PTX text.

use std::sync::Once;

use inkwell::OptimizationLevel;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};

use crate::GpuError;

/// The GPU architecture PTX is generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// Ampere (A100): compute capability 8.0.
    #[default]
    Sm80,
    /// Hopper (H100, H200): compute capability 9.0.
    Sm90,
}

impl Arch {
    /// LLVM's CPU name (`sm_80`), as `ptxas -arch` takes it too.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }

    /// The architecture for a device of compute capability `major.minor`: the newest one
    /// whose PTX the device's driver can run (`None` below 8.0).
    pub fn for_capability(major: i32, _minor: i32) -> Option<Arch> {
        match major {
            ..8 => None,
            8 => Some(Arch::Sm80),
            _ => Some(Arch::Sm90),
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = GpuError;
    fn from_str(s: &str) -> Result<Arch, GpuError> {
        match s {
            "sm_80" | "sm80" => Ok(Arch::Sm80),
            "sm_90" | "sm90" => Ok(Arch::Sm90),
            _ => Err(GpuError::Target(format!(
                "unknown GPU architecture `{s}` (expected sm_80 or sm_90)"
            ))),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The target triple of 64-bit CUDA code.
pub const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// A target machine for PTX of one architecture.
pub struct PtxMachine {
    tm: TargetMachine,
}

impl PtxMachine {
    pub fn new(arch: Arch) -> Result<PtxMachine, GpuError> {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| Target::initialize_nvptx(&InitializationConfig::default()));
        let triple = TargetTriple::create(TRIPLE);
        let target = Target::from_triple(&triple).map_err(|e| GpuError::Target(e.to_string()))?;
        let tm = target
            .create_target_machine(
                &triple,
                arch.name(),
                "",
                OptimizationLevel::Aggressive,
                RelocMode::Default,
                CodeModel::Default,
            )
            .ok_or_else(|| GpuError::Target(format!("no NVPTX target machine for {arch}")))?;
        Ok(PtxMachine { tm })
    }

    /// Stamp `module` with the triple and data layout, verify it and run `default<O3>`.
    pub fn optimize(&self, module: &Module<'_>) -> Result<(), GpuError> {
        module.set_triple(&self.tm.get_triple());
        module.set_data_layout(&self.tm.get_target_data().get_data_layout());
        module
            .verify()
            .map_err(|e| GpuError::Verify(e.to_string()))?;
        module
            .run_passes("default<O3>", &self.tm, PassBuilderOptions::create())
            .map_err(|e| GpuError::Llvm(e.to_string()))
    }

    /// The module as PTX text.
    pub fn ptx(&self, module: &Module<'_>) -> Result<String, GpuError> {
        let buf = self
            .tm
            .write_to_memory_buffer(module, FileType::Assembly)
            .map_err(|e| GpuError::Llvm(e.to_string()))?;
        Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
    }
}
