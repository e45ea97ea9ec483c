//! Ahead-of-time builds: a kernel program as an object file or a shared library with a C
//! interface, and the C header that documents it.
//!
//! The library is linked by the system C compiler (`cc`, or `$CC`) from three parts:
//!
//! - the generated code (the LLVM module, O3 for the chosen CPU), as an object;
//! - the weights, one 64-byte-aligned blob assembled with `.incbin` (never IR constants);
//! - the runtime (`aot_runtime.c`: create/run/destroy, the arena, a pthread pool) after a
//!   generated prelude holding the buffer tables.
//!
//! The C interface, with `PREFIX` the chosen symbol prefix:
//!
//! ```c
//! PREFIX_model *PREFIX_create(int num_threads);  // 0: one thread per core; NULL if out of memory
//! int PREFIX_run(PREFIX_model *m, const void *const *inputs, void *const *outputs);  // 0: ok
//! void PREFIX_destroy(PREFIX_model *m);
//! ```
//!
//! Inputs and outputs are dense row-major arrays of the types and shapes the header lists (bool
//! is one byte, 0 or 1; f16/bf16 are their 16-bit patterns). Kernels that need the interpreter at
//! run time (call kernels, float8 arithmetic) are refused with an error naming them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use inkwell::context::Context;
use terafab_ir::kernel::{BufferId, KernelProgram, Storage};

use crate::LlvmError;
use crate::codegen::{KernelPlan, generate, sanitize};
use crate::target::{Cpu, Machine};

const RUNTIME_C: &str = include_str!("aot_runtime.c");

/// What a build wrote.
#[derive(Debug, Clone)]
pub struct Built {
    pub library: PathBuf,
    pub header: PathBuf,
    pub arena_bytes: usize,
    pub weights_bytes: usize,
}

/// The C compiler: `$CC`, else `cc`.
pub fn c_compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".into())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LlvmError + '_ {
    move |e| LlvmError::Io(format!("{}: {e}", path.display()))
}

fn run_cc(args: &[&str], what: &str) -> Result<(), LlvmError> {
    let cc = c_compiler();
    let out = Command::new(&cc)
        .args(args)
        .output()
        .map_err(|e| LlvmError::Io(format!("running the C compiler `{cc}` ({what}): {e}")))?;
    if !out.status.success() {
        return Err(LlvmError::Io(format!(
            "`{cc} {}` ({what}) failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Build `p` into `output` (`.so`: a shared library; `.o`: a relocatable object) and write the
/// header beside it (`output` with the extension `.h`). Symbols start with `prefix` (made a C
/// identifier).
pub fn build(
    p: &KernelProgram,
    cpu: &Cpu,
    prefix: &str,
    output: &Path,
) -> Result<Built, LlvmError> {
    let shared = match output.extension().and_then(|e| e.to_str()) {
        Some("so") => true,
        Some("o") => false,
        _ => {
            return Err(LlvmError::Unsupported(format!(
                "output `{}`: name a shared library (.so) or an object file (.o)",
                output.display()
            )));
        }
    };
    let mut prefix = sanitize(prefix);
    if prefix.is_empty() || prefix.starts_with(|c: char| c.is_ascii_digit()) {
        prefix = format!("m_{prefix}");
    }
    let plan = crate::memory_plan(p)?;

    let ctx = Context::create();
    let g = generate(&ctx, p, &format!("{prefix}_tf_"))?;
    let calls: Vec<String> = g
        .kernels
        .iter()
        .zip(&p.kernels)
        .filter_map(|(plan, k)| match plan {
            KernelPlan::Call { reason } => Some(format!("@{} ({reason})", k.name)),
            KernelPlan::Compiled { .. } => None,
        })
        .collect();
    if !calls.is_empty() {
        return Err(LlvmError::Unsupported(format!(
            "ahead-of-time builds compile loop kernels only; these need the interpreter at run \
             time: {}",
            calls.join(", ")
        )));
    }
    let machine = Machine::new(cpu)?;
    machine.prepare(&g.module);
    machine.optimize(&g.module)?;
    let object = machine.object(&g.module)?;

    let dir = tempdir(prefix.as_str())?;
    let result = (|| {
        let gen_o = dir.join("generated.o");
        std::fs::write(&gen_o, &object).map_err(io(&gen_o))?;

        // Weights: one blob, each constant at a 64-byte-aligned offset.
        let mut blob: Vec<u8> = Vec::new();
        let n = p.buffers.len();
        let mut kind = vec!["TF_UNUSED"; n + g.packed.len()];
        let mut where_ = vec![0usize; n + g.packed.len()];
        for (i, b) in p.buffers.iter().enumerate() {
            match &b.storage {
                Storage::Const(t) => {
                    blob.resize(blob.len().next_multiple_of(64), 0);
                    kind[i] = "TF_CONST";
                    where_[i] = blob.len();
                    blob.extend_from_slice(tensor_bytes(t));
                }
                Storage::Input(k) => {
                    kind[i] = "TF_INPUT";
                    where_[i] = *k;
                }
                Storage::Temp => {}
            }
        }
        for s in &plan.buffers {
            kind[s.value.0 as usize] = "TF_TEMP";
            where_[s.value.0 as usize] = s.offset;
        }
        let mut packed_bytes = 0usize;
        for pc in &g.packed {
            match pc.scratch {
                Some(at) => {
                    kind[pc.slot] = "TF_SCRATCH";
                    where_[pc.slot] = at;
                }
                None => {
                    kind[pc.slot] = "TF_PACKED";
                    where_[pc.slot] = packed_bytes;
                    packed_bytes += pc.bytes.next_multiple_of(64);
                }
            }
        }
        let weights_bin = dir.join("weights.bin");
        std::fs::write(&weights_bin, &blob).map_err(io(&weights_bin))?;
        let weights_sym = format!("{prefix}_tf_weights");
        let weights_s = dir.join("weights.S");
        let asm = format!(
            "    .section .rodata\n    .balign 64\n    .globl {sym}\n    .hidden {sym}\n\
             {sym}:\n    .incbin \"{bin}\"\n    .byte 0\n    .section .note.GNU-stack,\"\",@progbits\n",
            sym = weights_sym,
            bin = weights_bin.display()
        );
        std::fs::write(&weights_s, asm).map_err(io(&weights_s))?;

        // The runtime with its tables.
        let mut c = String::new();
        let _ = writeln!(c, "/* Generated by terafab for `{}`. */", p.name);
        let _ = writeln!(c, "#include <stdint.h>");
        let _ = writeln!(c, "#define TF_PREFIX {prefix}");
        let _ = writeln!(
            c,
            "enum {{ TF_UNUSED, TF_INPUT, TF_CONST, TF_TEMP, TF_PACKED, TF_SCRATCH }};"
        );
        let _ = writeln!(c, "#define TF_NUM_SLOTS {}", kind.len());
        let _ = writeln!(c, "#define TF_ARENA_BYTES {}", plan.arena_bytes);
        let _ = writeln!(c, "#define TF_PACKED_BYTES {packed_bytes}");
        let _ = writeln!(c, "#define TF_SCRATCH_BYTES {}", g.scratch_bytes);
        let _ = writeln!(c, "#define TF_NUM_INPUTS {}", p.inputs.len());
        let _ = writeln!(c, "#define TF_NUM_OUTPUTS {}", p.outputs.len());
        let slots: Vec<String> = p.outputs.iter().map(|(_, b)| b.0.to_string()).collect();
        let bytes: Vec<String> = p
            .outputs
            .iter()
            .map(|(_, b)| {
                let buf = p.buffer(*b);
                (buf.len() * buf.dtype.size_bytes()).to_string()
            })
            .collect();
        let wh: Vec<String> = where_.iter().map(|w| w.to_string()).collect();
        let kind: Vec<String> = kind.iter().map(|k| k.to_string()).collect();
        for (ty, name, values) in [
            ("int8_t", "tf_kind", &kind),
            ("int64_t", "tf_where", &wh),
            ("int64_t", "tf_output_slot", &slots),
            ("int64_t", "tf_output_bytes", &bytes),
        ] {
            // C has no empty arrays: a lone 0 stands for none (the counts say how many).
            let body = if values.is_empty() {
                "0".to_string()
            } else {
                values.join(",")
            };
            let _ = writeln!(
                c,
                "static const {ty} {name}[{}] = {{{body}}};",
                values.len().max(1)
            );
        }
        let _ = writeln!(c, "extern const unsigned char {weights_sym}[];");
        let _ = writeln!(c, "#define TF_WEIGHTS {weights_sym}");
        let _ = writeln!(c, "int {}(void **bufs, const void *rt);", g.run_symbol);
        let _ = writeln!(c, "void {}(void **bufs, const void *rt);", g.init_symbol);
        let _ = writeln!(c, "#define TF_RUN {}", g.run_symbol);
        let _ = writeln!(c, "#define TF_INIT {}", g.init_symbol);
        c.push_str(RUNTIME_C);
        let runtime_c = dir.join("runtime.c");
        std::fs::write(&runtime_c, c).map_err(io(&runtime_c))?;

        let header = output.with_extension("h");
        std::fs::write(
            &header,
            header_text(p, &prefix, plan.arena_bytes, blob.len()),
        )
        .map_err(io(&header))?;

        let runtime_o = dir.join("runtime.o");
        let weights_o = dir.join("weights.o");
        let s = |p: &Path| p.display().to_string();
        run_cc(
            &["-O2", "-fPIC", "-c", &s(&runtime_c), "-o", &s(&runtime_o)],
            "the runtime",
        )?;
        run_cc(
            &["-fPIC", "-c", &s(&weights_s), "-o", &s(&weights_o)],
            "the weights",
        )?;
        let out = s(output);
        if shared {
            run_cc(
                &[
                    "-shared",
                    "-o",
                    &out,
                    &s(&gen_o),
                    &s(&runtime_o),
                    &s(&weights_o),
                    "-lm",
                    "-lpthread",
                ],
                "linking the library",
            )?;
        } else {
            run_cc(
                &[
                    "-r",
                    "-nostdlib",
                    "-o",
                    &out,
                    &s(&gen_o),
                    &s(&runtime_o),
                    &s(&weights_o),
                ],
                "linking the object",
            )?;
        }
        Ok(Built {
            library: output.to_path_buf(),
            header,
            arena_bytes: plan.arena_bytes,
            weights_bytes: blob.len(),
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh private directory for the build's intermediate files.
fn tempdir(prefix: &str) -> Result<PathBuf, LlvmError> {
    let base = std::env::temp_dir();
    for i in 0..1000u32 {
        let d = base.join(format!(
            "terafab-aot-{prefix}-{}-{}-{i}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LlvmError::Io(format!("{}: {e}", d.display()))),
        }
    }
    Err(LlvmError::Io("cannot create a temporary directory".into()))
}

fn tensor_bytes(t: &terafab_ir::Tensor) -> &[u8] {
    let n = t.size_bytes();
    let ptr = terafab_runtime::tensor_ptr(t);
    // SAFETY: the tensor's elements are `n` initialized bytes, borrowed from `t`.
    unsafe { std::slice::from_raw_parts(ptr, n) }
}

/// The C type of an element.
fn c_type(d: terafab_ir::DType) -> &'static str {
    use terafab_ir::DType::*;
    match d {
        F64 => "double",
        F32 => "float",
        F16 | BF16 | U16 => "uint16_t",
        I16 => "int16_t",
        I8 => "int8_t",
        I32 => "int32_t",
        I64 => "int64_t",
        U8 | Bool => "uint8_t",
        U32 => "uint32_t",
        U64 => "uint64_t",
        _ => "uint8_t",
    }
}

fn header_text(p: &KernelProgram, prefix: &str, arena: usize, weights: usize) -> String {
    let guard = format!("{}_H", prefix.to_ascii_uppercase());
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {prefix}.h: the C interface of `{}`, compiled ahead of time by terafab.\n *",
        p.name
    );
    let _ = writeln!(
        h,
        " * Usage:\n *   {prefix}_model *m = {prefix}_create(0);      // 0 threads: one per core\n *   const void *in[{ni}] = {{...}}; void *out[{no}] = {{...}};\n *   int rc = {prefix}_run(m, in, out);          // 0 on success\n *   {prefix}_destroy(m);\n *",
        ni = p.inputs.len().max(1),
        no = p.outputs.len().max(1)
    );
    let _ = writeln!(
        h,
        " * Arrays are dense and row-major; bool is one byte (0 or 1); f16 and bf16 are their\n * 16-bit patterns. A model runs one call at a time; separate models are independent.\n * Memory: an arena of {arena} bytes per model; {weights} bytes of weights in the library.\n */"
    );
    let _ = writeln!(h, "#ifndef {guard}\n#define {guard}\n");
    let _ = writeln!(h, "#include <stdint.h>\n");
    let _ = writeln!(h, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n");
    let _ = writeln!(h, "typedef struct {prefix}_model {prefix}_model;\n");
    let _ = writeln!(h, "/* Inputs, in the order `inputs` takes them. */");
    let _ = writeln!(
        h,
        "#define {}_NUM_INPUTS {}",
        prefix.to_ascii_uppercase(),
        p.inputs.len()
    );
    let describe = |h: &mut String, what: &str, i: usize, name: &str, b: BufferId| {
        let buf = p.buffer(b);
        let _ = writeln!(
            h,
            "/* {what} {i}: `{name}`, {}{:?}: {} elements of {} */\n#define {}_{}{i}_BYTES {}",
            buf.dtype,
            buf.shape,
            buf.len(),
            c_type(buf.dtype),
            prefix.to_ascii_uppercase(),
            what.to_ascii_uppercase(),
            buf.len() * buf.dtype.size_bytes()
        );
    };
    for (i, &b) in p.inputs.iter().enumerate() {
        describe(&mut h, "input", i, &p.buffer(b).name, b);
    }
    let _ = writeln!(h, "\n/* Outputs, in the order `outputs` takes them. */");
    let _ = writeln!(
        h,
        "#define {}_NUM_OUTPUTS {}",
        prefix.to_ascii_uppercase(),
        p.outputs.len()
    );
    for (i, (name, b)) in p.outputs.iter().enumerate() {
        describe(&mut h, "output", i, name, *b);
    }
    let _ = writeln!(
        h,
        "\n/* A model ready to run with `num_threads` threads (<= 0: one per core), its constant\n * operands packed; NULL when memory or threads cannot be had. */\n{prefix}_model *{prefix}_create(int num_threads);\n"
    );
    let _ = writeln!(
        h,
        "/* Run on `inputs` (read only), writing `outputs`; 0 on success, nonzero on bad arguments. */\nint {prefix}_run({prefix}_model *m, const void *const *inputs, void *const *outputs);\n"
    );
    let _ = writeln!(
        h,
        "/* Free the model (NULL is ignored). */\nvoid {prefix}_destroy({prefix}_model *m);\n"
    );
    let _ = writeln!(h, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */");
    h
}
