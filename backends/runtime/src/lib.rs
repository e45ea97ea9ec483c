//! The CPU runtime shared by the compiled backends (`terafab-llvm`, `terafab-cranelift`): what
//! runs a kernel program once its kernels are machine code in this process.
//!
//! - The runtime interface the generated code calls, [`Rt`]: `{ parallel_for, pool, call,
//!   call_ctx }`. `parallel_for(pool, task, bufs, n)` runs the task function `task(bufs, t)`
//!   for every `t < n` on the runtime's [`pool::Pool`] (one per thread count, shared by the
//!   process; its workers spin between calls, so a run's kernels find them awake);
//!   `call(ctx, k, bufs)` runs kernel `k` (a call kernel, or one over a type the backend does
//!   not compute with) through the kernel interpreter on the buffers' contents.
//! - [`Loaded`]: a compiled program's buffer table (weights by pointer, the arena of
//!   temporaries laid out by [`terafab_passes::fuse::plan_kernel_memory`], zero-copy outputs),
//!   and a run of its driver with inputs in and outputs out, optionally profiled per phase.
//! - Aligned buffers ([`AlignedBuf`]) and the reading and writing of tensors in buffers.
//! - [`gemm`]: the backends' packed GEMM, target-independent part (recognizing a contraction as
//!   a GEMM, the tile and block plan, the packed operands' memory).
//!
//! Results do not depend on the thread count: tasks are fixed sets of output elements.

pub mod gemm;
pub mod pool;

use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use terafab_ir::kernel::interp::run_program;
use terafab_ir::kernel::{Buffer, BufferId, KernelProgram, LoopNest, Stage, Storage};
use terafab_ir::{DType, Tensor, with_data, with_dtype};
use terafab_passes::memplan::MemoryPlan;

pub use pool::{Pool, parallel_for};

/// Errors of the runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The caller's inputs do not fit the program.
    #[error("bad input: {0}")]
    Input(String),
    /// The program cannot be run by this runtime (a layout it does not support).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A failure while running (a call kernel's error, memory).
    #[error("{0}")]
    Runtime(String),
}

/// `{ parallel_for, pool, call, call_ctx }`, as the generated code reads it.
#[repr(C)]
pub struct Rt {
    pub parallel_for: ParallelFor,
    pub pool: *const c_void,
    pub call: CallFn,
    pub call_ctx: *const c_void,
}

/// A task function: `task(bufs, t)`.
pub type TaskFn = unsafe extern "C" fn(*mut *mut u8, i64);
/// `parallel_for(pool, task, bufs, ntasks)`.
pub type ParallelFor = unsafe extern "C" fn(*const c_void, TaskFn, *mut *mut u8, i64);
/// `call(ctx, kernel, bufs) -> 0 | error`.
pub type CallFn = unsafe extern "C" fn(*const c_void, i64, *mut *mut u8) -> i32;

/// How the points of a loop nest's parallel space are split into tasks: the *parallel prefix*
/// (its first `prefix` dims, flattened into `total` points) in `ntasks` chunks of `chunk`
/// points (the last one shorter). Task `t` runs the prefix points
/// `t * chunk .. min((t + 1) * chunk, total)`; the other dims run inside each point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSplit {
    pub prefix: usize,
    pub total: u64,
    pub chunk: u64,
    pub ntasks: u64,
}

/// The task split of `nest`: the prefix is the fewest leading dims (at most `max_prefix`) with
/// at least 64 points (all of them when there are fewer); one task per 2^14 element operations
/// (counting each stage's loops and expression size), at least 1 and at most 64: a task
/// claimed by another thread costs about a microsecond (the claim, the cache lines shared at
/// its ends), so the small CNN's pools and frame copies ran slower on 2 threads than on 1 as
/// 64 tasks of a few microseconds each. The split depends on the nest only, never on the thread
/// count.
pub fn split_tasks(nest: &LoopNest, max_prefix: usize) -> TaskSplit {
    let max_prefix = max_prefix.min(nest.space.len());
    let mut prefix = 0;
    let mut total: u64 = 1;
    while prefix < max_prefix && total < 64 {
        total *= nest.space[prefix] as u64;
        prefix += 1;
    }
    let inner_points: u64 = nest.space[prefix..].iter().map(|&n| n as u64).product();
    let per_point: u64 = nest
        .stages
        .iter()
        .map(|s| match s {
            Stage::Reduce { vars, body, .. }
            | Stage::Store {
                vars, value: body, ..
            } => vars.iter().map(|v| v.1 as u64).product::<u64>() * (1 + body.num_ops() as u64),
        })
        .sum::<u64>()
        .max(1);
    let work = total.saturating_mul(inner_points).saturating_mul(per_point);
    let ntasks = (work >> 14).clamp(1, total.clamp(1, 64));
    let chunk = total.div_ceil(ntasks).max(1);
    let ntasks = total.div_ceil(chunk).max(1);
    TaskSplit {
        prefix,
        total,
        chunk,
        ntasks,
    }
}

/// The thread count for `threads` (0: one per core).
pub fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// A thread pool per thread count, shared by every executable of the process.
pub fn pool(threads: usize) -> Result<Arc<Pool>, RuntimeError> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<Pool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = Arc::new(
        Pool::new(threads).map_err(|e| RuntimeError::Runtime(format!("thread pool: {e}")))?,
    );
    pools.insert(threads, p.clone());
    Ok(p)
}

/// The pool of a profiled run: the real pool and the time of every `parallel_for` call.
struct ProfiledPool {
    pool: *const Pool,
    records: Mutex<Vec<(usize, Duration)>>,
}

/// `parallel_for` timing each call (by task function address).
unsafe extern "C" fn parallel_for_profiled(
    pool: *const c_void,
    f: TaskFn,
    data: *mut *mut u8,
    n: i64,
) {
    // SAFETY: `pool` is the `ProfiledPool` of the run.
    let pp = unsafe { &*(pool as *const ProfiledPool) };
    let t = Instant::now();
    // SAFETY: as `parallel_for`.
    unsafe { parallel_for(pp.pool as *const c_void, f, data, n) };
    let dt = t.elapsed();
    pp.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((f as usize, dt));
}

/// The time one kernel phase took in a profiled run.
#[derive(Debug, Clone)]
pub struct PhaseTime {
    /// The kernel's index in the program.
    pub kernel: usize,
    /// The phase: its task function's name (`k3.conv.packB.task`), or `call`.
    pub phase: String,
    pub time: Duration,
}

/// What the library call needs: the program, and the first error it met.
struct CallCtx<'a> {
    program: &'a KernelProgram,
    error: Mutex<Option<String>>,
    /// When profiling: the time of each call, by kernel.
    times: Option<Mutex<Vec<(usize, Duration)>>>,
}

/// The runtime's `call`: runs kernel `k` with the kernel interpreter on the buffers' contents.
unsafe extern "C" fn call_kernel(ctx: *const c_void, k: i64, bufs: *mut *mut u8) -> i32 {
    // SAFETY: `ctx` is the `CallCtx` the run put in the `Rt`, alive for the run.
    let ctx = unsafe { &*(ctx as *const CallCtx) };
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| run_call(ctx.program, k as usize, bufs)));
    if let Some(times) = &ctx.times {
        times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((k as usize, t.elapsed()));
    }
    let msg = match r {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e,
        Err(_) => format!("kernel #{k} panicked in the interpreter"),
    };
    let mut slot = ctx.error.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert(msg);
    1
}

fn run_call(p: &KernelProgram, k: usize, bufs: *mut *mut u8) -> Result<(), String> {
    let kern = &p.kernels[k];
    let mut sub = KernelProgram::new(p.name.clone());
    sub.buffers = p.buffers.clone();
    let mut inputs = Vec::new();
    for &b in &kern.inputs {
        if matches!(p.buffer(b).storage, Storage::Const(_)) || sub.inputs.contains(&b) {
            continue;
        }
        sub.buffers[b.index()].storage = Storage::Input(inputs.len());
        sub.inputs.push(b);
        // SAFETY: the table holds a live pointer for every buffer.
        inputs.push(unsafe { read_buffer(p.buffer(b), *bufs.add(b.index())) }?);
    }
    for &b in &kern.outputs {
        sub.buffers[b.index()].storage = Storage::Temp;
        sub.outputs.push((p.buffer(b).name.clone(), b));
    }
    sub.kernels = vec![kern.clone()];
    let outs = run_program(&sub, &inputs).map_err(|e| {
        let mut s = format!("kernel @{}: {e}", kern.name);
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s.push_str(&format!(": {c}"));
            src = c.source();
        }
        s
    })?;
    for (&b, t) in kern.outputs.iter().zip(&outs) {
        // SAFETY: as above; the output's slot has room for its span.
        unsafe { write_buffer(p.buffer(b), *bufs.add(b.index()), t) };
    }
    Ok(())
}

/// The raw bytes of a tensor's elements.
#[allow(clippy::unnecessary_cast)] // u8 elements among the types
pub fn tensor_ptr(t: &Tensor) -> *const u8 {
    with_data!(t.data(), v, T => v.as_ptr() as *const u8)
}

/// A tensor of `dtype` and `shape` from `bytes` (row-major, exactly its size).
///
/// # Safety
/// `bytes` must hold valid elements of `dtype` (bool as 0 or 1).
#[allow(clippy::unnecessary_cast)] // u8 elements among the types
pub unsafe fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Tensor {
    let n: usize = shape.iter().product();
    with_dtype!(dtype, T => {
        let mut v: Vec<T> = Vec::with_capacity(n);
        debug_assert_eq!(bytes.len(), n * std::mem::size_of::<T>());
        // SAFETY: the caller promises valid elements; capacity is n.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len());
            v.set_len(n);
        }
        Tensor::from_vec(shape, v).expect("length matches shape")
    })
}

/// The offsets (in elements) of a buffer's elements, in row-major order.
fn element_offsets(buf: &Buffer) -> Vec<usize> {
    let mut out = vec![0usize; buf.len()];
    for (i, o) in out.iter_mut().enumerate() {
        let mut rem = i;
        for (&n, &s) in buf.shape.iter().zip(&buf.strides).rev() {
            *o += (rem % n) * s;
            rem /= n;
        }
    }
    out
}

/// A buffer's contents as a row-major tensor.
///
/// # Safety
/// `ptr` must point to the buffer's `span()` elements, written.
pub unsafe fn read_buffer(buf: &Buffer, ptr: *const u8) -> Result<Tensor, String> {
    let es = buf.dtype.size_bytes();
    let n = buf.len();
    let mut bytes = vec![0u8; n * es];
    if n > 0 {
        if buf.is_row_major() {
            // SAFETY: the caller's promise.
            unsafe { std::ptr::copy_nonoverlapping(ptr, bytes.as_mut_ptr(), n * es) };
        } else {
            for (i, o) in element_offsets(buf).into_iter().enumerate() {
                // SAFETY: every offset is below the span.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        ptr.add(o * es),
                        bytes.as_mut_ptr().add(i * es),
                        es,
                    )
                };
            }
        }
    }
    // SAFETY: the bytes were written by kernels of this dtype.
    Ok(unsafe { tensor_from_bytes(buf.dtype, buf.shape.clone(), &bytes) })
}

/// Write a row-major tensor into a buffer's layout.
///
/// # Safety
/// `ptr` must point to room for the buffer's `span()` elements.
pub unsafe fn write_buffer(buf: &Buffer, ptr: *mut u8, t: &Tensor) {
    let es = buf.dtype.size_bytes();
    let src = tensor_ptr(t);
    if buf.is_row_major() {
        // SAFETY: the caller's promise; `t` has the buffer's shape and type.
        unsafe { std::ptr::copy_nonoverlapping(src, ptr, buf.len() * es) };
    } else {
        for (i, o) in element_offsets(buf).into_iter().enumerate() {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(src.add(i * es), ptr.add(o * es), es) };
        }
    }
}

/// A result tensor's memory, handed to the kernels before it holds its elements.
struct OutputBuf {
    ptr: *mut u8,
    /// Makes the tensor, once its elements are written.
    finish: Box<dyn FnOnce(Vec<usize>) -> Tensor>,
}

impl OutputBuf {
    #[allow(clippy::unnecessary_cast)] // u8 elements among the types
    fn new(dtype: DType, n: usize) -> OutputBuf {
        with_dtype!(dtype, T => {
            let mut arc: Arc<[std::mem::MaybeUninit<T>]> = Arc::new_uninit_slice(n);
            let ptr = Arc::get_mut(&mut arc).expect("fresh").as_mut_ptr() as *mut u8;
            OutputBuf {
                ptr,
                finish: Box::new(move |shape| {
                    // SAFETY: `finish`'s caller promises every element was written.
                    let data: Arc<[T]> = unsafe { arc.assume_init() };
                    Tensor::from_data(shape, <T as terafab_ir::Element>::wrap(data))
                        .expect("length matches shape")
                }),
            }
        })
    }

    /// The tensor.
    ///
    /// # Safety
    /// Every element must have been written with a valid value of the type.
    unsafe fn finish(self, shape: Vec<usize>) -> Tensor {
        (self.finish)(shape)
    }
}

/// A zeroed allocation aligned to 64 bytes.
pub struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: a plain owned allocation.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out the raw pointer; writes happen under the arena's mutex.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new(bytes: usize) -> Result<AlignedBuf, RuntimeError> {
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), 64)
            .map_err(|e| RuntimeError::Runtime(format!("arena of {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(RuntimeError::Runtime(format!(
                "cannot allocate {bytes} bytes of memory"
            )));
        }
        Ok(AlignedBuf { ptr, layout })
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// The arena plan of `p`'s temporaries, once its layouts are checked: the program's inputs,
/// outputs and weights are passed by pointer as dense row-major arrays.
pub fn memory_plan(p: &KernelProgram) -> Result<MemoryPlan, RuntimeError> {
    for b in &p.buffers {
        if !matches!(b.storage, Storage::Temp) && !b.is_row_major() {
            return Err(RuntimeError::Unsupported(format!(
                "buffer %{} has a non-row-major layout",
                b.name
            )));
        }
    }
    terafab_passes::fuse::plan_kernel_memory(p).map_err(|e| RuntimeError::Runtime(e.to_string()))
}

/// The table's fixed part for `p` with `extra` more slots: the weights' pointers (null for
/// inputs, temporaries and the extra slots, which the caller fills).
pub fn fixed_table(p: &KernelProgram, extra: usize) -> Vec<usize> {
    let mut fixed = vec![0usize; p.buffers.len() + extra];
    for (i, b) in p.buffers.iter().enumerate() {
        if let Storage::Const(t) = &b.storage {
            fixed[i] = tensor_ptr(t) as usize;
        }
    }
    fixed
}

/// A compiled program's runtime state: its buffer table's fixed part, the arena of its
/// temporaries and the thread pool. Runs are serialized (they share the arena).
pub struct Loaded {
    program: KernelProgram,
    /// The table's fixed part: weights and packed constants (null for inputs and temps).
    fixed: Vec<usize>,
    /// Arena offset of each temporary.
    offsets: HashMap<BufferId, usize>,
    arena: Mutex<AlignedBuf>,
    pool: Arc<Pool>,
    /// Task function address -> (kernel, phase name), for profiles.
    phases: HashMap<usize, (usize, String)>,
}

impl Loaded {
    /// The runtime state of `p` with the memory plan `plan`, the table's fixed part `fixed`
    /// (see [`fixed_table`]), `threads` workers (0: one per core) and the task functions'
    /// addresses with their kernel and phase names.
    pub fn new(
        p: &KernelProgram,
        plan: &MemoryPlan,
        fixed: Vec<usize>,
        threads: usize,
        phases: HashMap<usize, (usize, String)>,
    ) -> Result<Loaded, RuntimeError> {
        let offsets = plan
            .buffers
            .iter()
            .map(|s| (BufferId(s.value.0), s.offset))
            .collect();
        Ok(Loaded {
            program: p.clone(),
            fixed,
            offsets,
            arena: Mutex::new(AlignedBuf::new(plan.arena_bytes)?),
            pool: pool(resolve_threads(threads))?,
            phases,
        })
    }

    pub fn program(&self) -> &KernelProgram {
        &self.program
    }

    /// Run `f(table, rt)` once on the fixed table (a backend's `init`, packing constants).
    pub fn init(&self, f: impl FnOnce(*mut *mut u8, &Rt)) {
        let call_ctx = CallCtx {
            program: &self.program,
            error: Mutex::new(None),
            times: None,
        };
        let rt = Rt {
            parallel_for,
            pool: Arc::as_ptr(&self.pool) as *const c_void,
            call: call_kernel,
            call_ctx: &call_ctx as *const CallCtx as *const c_void,
        };
        let mut table: Vec<*mut u8> = self.fixed.iter().map(|&a| a as *mut u8).collect();
        f(table.as_mut_ptr(), &rt);
    }

    /// Run the program on `inputs` (one per program input, of its type and shape): builds the
    /// table, calls `driver(table, rt)` (0: success, else the first call error is reported)
    /// and returns the outputs; with `profile`, the time of every phase is pushed there.
    pub fn run(
        &self,
        inputs: &[Tensor],
        profile: Option<&mut Vec<PhaseTime>>,
        driver: &dyn Fn(*mut *mut u8, &Rt) -> i32,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let p = &self.program;
        if inputs.len() != p.inputs.len() {
            return Err(RuntimeError::Input(format!(
                "expected {} inputs, got {}",
                p.inputs.len(),
                inputs.len()
            )));
        }
        let arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let mut table: Vec<*mut u8> = self.fixed.iter().map(|&a| a as *mut u8).collect();
        for (&b, t) in p.inputs.iter().zip(inputs) {
            p.check_input(b, t).map_err(RuntimeError::Input)?;
            table[b.index()] = tensor_ptr(t) as *mut u8;
        }
        for (&b, &off) in &self.offsets {
            // SAFETY: the plan's offsets lie inside the arena.
            table[b.index()] = unsafe { arena.ptr().add(off) };
        }
        // Outputs computed by a kernel are written straight into the result tensors' memory
        // (a row-major temporary named once among the outputs); the others are copied out.
        let mut direct: Vec<Option<OutputBuf>> = Vec::with_capacity(p.outputs.len());
        for (_, b) in &p.outputs {
            let buf = p.buffer(*b);
            let once = p.outputs.iter().filter(|(_, o)| o == b).count() == 1;
            if matches!(buf.storage, Storage::Temp) && buf.is_row_major() && once {
                let out = OutputBuf::new(buf.dtype, buf.len());
                table[b.index()] = out.ptr;
                direct.push(Some(out));
            } else {
                direct.push(None);
            }
        }
        let call_ctx = CallCtx {
            program: p,
            error: Mutex::new(None),
            times: profile.is_some().then(Default::default),
        };
        let profiled = ProfiledPool {
            pool: Arc::as_ptr(&self.pool),
            records: Mutex::new(Vec::new()),
        };
        let rt = match profile {
            None => Rt {
                parallel_for,
                pool: Arc::as_ptr(&self.pool) as *const c_void,
                call: call_kernel,
                call_ctx: &call_ctx as *const CallCtx as *const c_void,
            },
            Some(_) => Rt {
                parallel_for: parallel_for_profiled,
                pool: &profiled as *const ProfiledPool as *const c_void,
                call: call_kernel,
                call_ctx: &call_ctx as *const CallCtx as *const c_void,
            },
        };
        // The driver runs on this thread, which takes part in every kernel's tasks.
        let rc = driver(table.as_mut_ptr(), &rt);
        if let Some(out) = profile {
            let records = profiled
                .records
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            for (addr, time) in records {
                if let Some((kernel, phase)) = self.phases.get(&addr) {
                    out.push(PhaseTime {
                        kernel: *kernel,
                        phase: phase.clone(),
                        time,
                    });
                }
            }
            if let Some(calls) = &call_ctx.times {
                for (kernel, time) in calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    out.push(PhaseTime {
                        kernel: *kernel,
                        phase: "call".into(),
                        time: *time,
                    });
                }
            }
        }
        if rc != 0 {
            let msg = call_ctx
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| format!("the program failed with code {rc}"));
            return Err(RuntimeError::Runtime(msg));
        }
        p.outputs
            .iter()
            .zip(direct)
            .map(|((_, b), direct)| {
                let buf = p.buffer(*b);
                match direct {
                    // SAFETY: the output's kernel wrote every element (write-once, verified).
                    Some(out) => Ok(unsafe { out.finish(buf.shape.clone()) }),
                    // SAFETY: every output was written by its kernel (or is an input or constant).
                    None => {
                        unsafe { read_buffer(buf, table[b.index()]) }.map_err(RuntimeError::Runtime)
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use terafab_ir::kernel::{Body, Expr, Index, Kernel, KernelKind, LoopNest, Stage, Var};

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        for n in [0, 1, 63, 64, 1000] {
            let b = AlignedBuf::new(n).unwrap();
            assert_eq!(b.ptr() as usize % 64, 0);
            // SAFETY: the buffer has at least max(n, 1) bytes.
            let s = unsafe { std::slice::from_raw_parts(b.ptr(), n.max(1)) };
            assert!(s.iter().all(|&x| x == 0));
        }
        assert!(matches!(
            AlignedBuf::new(usize::MAX - 8),
            Err(RuntimeError::Runtime(_))
        ));
    }

    #[test]
    fn strided_buffers_round_trip_through_tensors() {
        // A 2x3 buffer stored column-major (strides [1, 2]).
        let mut buf = Buffer::new("b", DType::I32, vec![2, 3], Storage::Temp);
        buf.strides = vec![1, 2];
        let t = Tensor::from_vec(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let mut mem = vec![0i32; 6];
        // SAFETY: `mem` has the buffer's span (6 elements).
        unsafe { write_buffer(&buf, mem.as_mut_ptr() as *mut u8, &t) };
        assert_eq!(mem, [1, 4, 2, 5, 3, 6]);
        // SAFETY: as above, written.
        let back = unsafe { read_buffer(&buf, mem.as_ptr() as *const u8) }.unwrap();
        assert!(back.bit_eq(&t));
    }

    static HITS: [AtomicU32; 100] = [const { AtomicU32::new(0) }; 100];

    unsafe extern "C" fn count(_bufs: *mut *mut u8, t: i64) {
        HITS[t as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn parallel_for_runs_every_task_once_on_any_pool() {
        for threads in [1, 3] {
            for h in &HITS {
                h.store(0, Ordering::Relaxed);
            }
            let p = pool(threads).unwrap();
            let mut table: Vec<*mut u8> = Vec::new();
            // SAFETY: `count` reads nothing of the table.
            unsafe {
                parallel_for(
                    Arc::as_ptr(&p) as *const c_void,
                    count,
                    table.as_mut_ptr(),
                    100,
                )
            };
            assert!(HITS.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    /// `y[i] = x[i]` as a one-kernel program, run with a driver that calls the kernel through
    /// the runtime's library call (the kernel interpreter).
    fn copy_program() -> KernelProgram {
        let mut p = KernelProgram::new("copy");
        let x = p.add_buffer(Buffer::new("x", DType::F32, vec![5], Storage::Input(0)));
        let y = p.add_buffer(Buffer::new("y", DType::F32, vec![5], Storage::Temp));
        p.inputs.push(x);
        p.outputs.push(("y".into(), y));
        p.kernels.push(Kernel {
            name: "k0".into(),
            kind: KernelKind::Movement,
            inputs: vec![x],
            outputs: vec![y],
            body: Body::Loops(LoopNest {
                space: vec![5],
                stages: vec![Stage::Store {
                    buffer: y,
                    vars: vec![],
                    index: vec![Index::Var(Var(0))],
                    value: Expr::Load {
                        buffer: x,
                        index: vec![Index::Var(Var(0))],
                        fill: None,
                    },
                }],
            }),
            sources: vec![],
        });
        p
    }

    #[test]
    fn loaded_programs_check_inputs_and_run_call_kernels() {
        let p = copy_program();
        let plan = memory_plan(&p).unwrap();
        let loaded = Loaded::new(&p, &plan, fixed_table(&p, 0), 1, HashMap::new()).unwrap();
        // SAFETY: the call context and table are the run's own.
        let driver = |t: *mut *mut u8, rt: &Rt| unsafe { (rt.call)(rt.call_ctx, 0, t) };
        let x = Tensor::from_vec(vec![5], vec![1.0f32, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let out = loaded.run(std::slice::from_ref(&x), None, &driver).unwrap();
        assert!(out[0].bit_eq(&x));
        let mut times = Vec::new();
        loaded
            .run(std::slice::from_ref(&x), Some(&mut times), &driver)
            .unwrap();
        assert_eq!(times.len(), 1);
        assert_eq!(times[0].phase, "call");
        assert!(matches!(
            loaded.run(&[], None, &driver),
            Err(RuntimeError::Input(_))
        ));
        let bad = Tensor::from_vec(vec![4], vec![0.0f32; 4]).unwrap();
        assert!(matches!(
            loaded.run(&[bad], None, &driver),
            Err(RuntimeError::Input(_))
        ));
        // A driver reporting a failure without a message.
        let fail = |_: *mut *mut u8, _: &Rt| 7;
        let err = loaded.run(&[x], None, &fail).unwrap_err();
        assert!(err.to_string().contains("code 7"), "{err}");
    }

    fn nest(space: Vec<usize>, inner: usize) -> LoopNest {
        LoopNest {
            space,
            stages: vec![Stage::Store {
                buffer: BufferId(0),
                vars: vec![(Var(9), inner)],
                index: vec![],
                value: Expr::Const(Tensor::scalar(0.0f32)),
            }],
        }
    }

    #[test]
    fn tasks_split_the_prefix_in_at_most_64_chunks() {
        // Little work: one task over the smallest prefix of >= 64 points.
        assert_eq!(
            split_tasks(&nest(vec![8, 8, 3], 1), 3),
            TaskSplit {
                prefix: 2,
                total: 64,
                chunk: 64,
                ntasks: 1
            }
        );
        // More work: one task per 2^14 operations (700,000 here: 42 tasks of 24 points)...
        let s = split_tasks(&nest(vec![1000, 7], 100), 2);
        assert_eq!((s.prefix, s.total, s.chunk, s.ntasks), (1, 1000, 24, 42));
        // ... up to 64 (or fewer, of whole chunks).
        let s = split_tasks(&nest(vec![1000, 7], 1000), 2);
        assert_eq!((s.prefix, s.total, s.chunk, s.ntasks), (1, 1000, 16, 63));
        // The prefix never takes more dims than allowed; an empty space is one empty task.
        assert_eq!(split_tasks(&nest(vec![4, 4], 1), 1).prefix, 1);
        let e = split_tasks(&nest(vec![0, 5], 1), 2);
        assert_eq!((e.total, e.ntasks), (0, 1));
        assert_eq!(split_tasks(&nest(vec![], 1), 0).ntasks, 1);
    }

    #[test]
    fn non_row_major_inputs_are_unsupported() {
        let mut p = copy_program();
        p.buffers[0].strides = vec![2];
        assert!(matches!(memory_plan(&p), Err(RuntimeError::Unsupported(_))));
    }
}
