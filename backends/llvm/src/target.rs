//! The target machine: the host CPU (or a named one), LLVM's optimization pipeline, and the
//! text, assembly and object forms of a module.

use std::sync::Once;

use inkwell::OptimizationLevel;
use inkwell::attributes::AttributeLoc;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};

use crate::LlvmError;

/// The CPU code is generated for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cpu {
    /// The machine terafab runs on (its CPU name and features, as LLVM detects them).
    #[default]
    Host,
    /// A CPU LLVM knows by name (`x86-64-v3`, `znver3`, `skylake`...), with its default
    /// features: for output that does not depend on the machine (snapshot tests, AOT builds
    /// for another machine).
    Named(String),
}

/// A target machine for x86-64 code.
pub struct Machine {
    pub tm: TargetMachine,
    pub cpu: String,
    pub features: String,
}

fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Errors surface when the target is looked up below.
        let _ = Target::initialize_native(&InitializationConfig::default());
    });
}

impl Machine {
    /// The target machine for `cpu`, optimizing at O3, position-independent code.
    pub fn new(cpu: &Cpu) -> Result<Machine, LlvmError> {
        init();
        let triple = TargetMachine::get_default_triple();
        let target = Target::from_triple(&triple).map_err(|e| LlvmError::Target(e.to_string()))?;
        let (cpu, features) = match cpu {
            Cpu::Host => (
                TargetMachine::get_host_cpu_name().to_string(),
                TargetMachine::get_host_cpu_features().to_string(),
            ),
            Cpu::Named(n) => (n.clone(), String::new()),
        };
        let tm = target
            .create_target_machine(
                &triple,
                &cpu,
                &features,
                OptimizationLevel::Aggressive,
                RelocMode::PIC,
                CodeModel::Default,
            )
            .ok_or_else(|| LlvmError::Target(format!("no target machine for CPU `{cpu}`")))?;
        Ok(Machine { tm, cpu, features })
    }

    pub fn triple(&self) -> TargetTriple {
        self.tm.get_triple()
    }

    /// Stamp the module with this machine's triple, data layout, CPU and features (on every
    /// defined function, which is how the JIT's code generator learns them).
    pub fn prepare(&self, module: &Module<'_>) {
        module.set_triple(&self.tm.get_triple());
        module.set_data_layout(&self.tm.get_target_data().get_data_layout());
        let ctx = module.get_context();
        let cpu = ctx.create_string_attribute("target-cpu", &self.cpu);
        let feats = ctx.create_string_attribute("target-features", &self.features);
        for f in module.get_functions() {
            if f.count_basic_blocks() > 0 {
                f.add_attribute(AttributeLoc::Function, cpu);
                if !self.features.is_empty() {
                    f.add_attribute(AttributeLoc::Function, feats);
                }
            }
        }
    }

    /// Verify the module, then run LLVM's `default<O3>` pipeline on it.
    pub fn optimize(&self, module: &Module<'_>) -> Result<(), LlvmError> {
        module
            .verify()
            .map_err(|e| LlvmError::Verify(e.to_string()))?;
        module
            .run_passes("default<O3>", &self.tm, PassBuilderOptions::create())
            .map_err(|e| LlvmError::Llvm(e.to_string()))
    }

    /// The module as assembly text.
    pub fn assembly(&self, module: &Module<'_>) -> Result<String, LlvmError> {
        let buf = self
            .tm
            .write_to_memory_buffer(module, FileType::Assembly)
            .map_err(|e| LlvmError::Llvm(e.to_string()))?;
        Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
    }

    /// The module as an ELF object file.
    pub fn object(&self, module: &Module<'_>) -> Result<Vec<u8>, LlvmError> {
        let buf = self
            .tm
            .write_to_memory_buffer(module, FileType::Object)
            .map_err(|e| LlvmError::Llvm(e.to_string()))?;
        Ok(buf.as_slice().to_vec())
    }
}
