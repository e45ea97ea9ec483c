//! terafab-tile: the simulated Dojo-like tile accelerator.
//!
//! The machine (see `ISA.md` in this crate for the full specification): a 2-D mesh of nodes,
//! each with an SRAM scratchpad, a matrix engine, a vector engine, a DMA engine and a router;
//! HBM at the mesh edge. Programs are per-node instruction streams; each node's engines run
//! their own in-order queues and synchronize through semaphores (tokens) and barriers.
//!
//! * [`isa`]: instructions and their operand tables; [`encode`]: 256-bit binary words and the
//!   program file; [`asm`]: the assembly text form (parser and printer).
//! * [`dtype`] and [`numerics`]: f32, bf16, CFP8 (1-4-3 and 1-5-2, bias 0-63, saturating,
//!   nearest-even or stochastic rounding).
//! * [`config`]: machine parameters, presets (`1x1`, `2x2`, `4x4`, `d1`) and config files.
//! * `gen` (`r#gen`, as `gen` is a reserved word in Rust 2024): code generators ([`gemm_program`]: tiled, double-buffered,
//!   mesh-partitioned GEMM with multicast operands and a bias/ReLU epilogue).
//! * [`sim`]: the functional, timed simulator; [`report`] and [`trace`]: its results.
//!
//! ```
//! use terafab_tile::{Config, Program, Simulator};
//!
//! let program = Program::parse(
//!     ".hbm X addr=0x0, dtype=f32, shape=4, role=inout\n\
//!      .node 0,0\n\
//!      dma.ld dst=0x0, src=X, len=16 signal=0\n\
//!      vmul dst=0x0, src1=0x0, cols=4, itype=f32, otype=f32, bcast=imm, imm=2.0 wait=0 signal=1\n\
//!      dma.st dst=X, src=0x0, len=16 wait=1\n\
//!      end\n",
//! )
//! .unwrap();
//! let mut sim = Simulator::new(Config::preset("1x1").unwrap(), program).unwrap();
//! sim.load_hbm_f32("X", &[1.0, 2.0, 3.0, 4.0]).unwrap();
//! let report = sim.run().unwrap();
//! assert_eq!(sim.read_hbm_f32("X").unwrap(), vec![2.0, 4.0, 6.0, 8.0]);
//! assert!(report.cycles > 0);
//! ```

pub mod asm;
pub mod backend;
pub mod compile;
pub mod config;
pub mod dtype;
pub mod encode;
pub mod error;
pub mod r#gen;
pub mod isa;
pub mod link;
pub mod lower;
pub mod numerics;
pub mod program;
pub mod report;
pub mod sim;
pub mod trace;

pub use config::Config;
pub use dtype::ElemType;
pub use error::{AsmError, ConfigError, DecodeError, EncodeError, SimError, Site};
pub use r#gen::{
    EpiOperand, EpiStep, Epilogue, GemmPlan, GemmSpec, GenError, gemm_plan, gemm_program,
};
pub use isa::{Engine, Instruction, Op};
pub use numerics::{Cfp8, Cfp8Layout, Rounding};
pub use program::{Buffer, Program, Role, Stream};
pub use report::Report;
pub use sim::Simulator;
