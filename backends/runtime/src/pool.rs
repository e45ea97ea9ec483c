//! The runtime's thread pool: a fork-join pool whose workers spin between `parallel_for` calls.
//!
//! A compiled program runs its kernels one after the other, each as one or a few
//! `parallel_for` calls of some tens of microseconds to milliseconds. A worker that goes to
//! sleep between two of them must be woken by the kernel (a futex wake, then the scheduler):
//! on a virtual machine that took 100 µs and more, enough to make a 0.15 ms packing phase
//! slower on two threads than on one. So, as OpenMP runtimes and onnxruntime's pool do, the
//! workers here spin on the pool's job word for [`SPIN`] after their last task before they
//! park, and a run's consecutive calls find them awake.
//!
//! - **Calls:** the caller takes part: it publishes the job, then claims tasks like any worker
//!   and returns once every task has finished. Tasks are claimed one at a time from a shared
//!   counter (dynamic scheduling), so unequal tasks balance themselves.
//! - **One job at a time:** a second caller while a job runs (another executable on the same
//!   pool, or a `parallel_for` inside a task) runs its tasks itself, in order. The caller
//!   never waits on a worker to start: with every worker parked it does all the tasks alone.
//! - **Generations:** the job word packs the job's generation with its next task index; a
//!   worker claims a task by compare-and-swap on the word, so a worker that read an older job
//!   can never claim (or skip) a task of the current one.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::TaskFn;

/// How long a worker spins for the next job after its last task before it parks.
pub const SPIN: Duration = Duration::from_millis(2);

/// Tasks per job word (the low 32 bits); longer calls run in rounds of this many.
const ROUND: u64 = 1 << 31;

/// A job: `f(data, t)` for `t < n`, of generation `gen`.
#[derive(Clone, Copy)]
struct Job {
    generation: u32,
    f: Option<TaskFn>,
    data: usize,
    n: u64,
}

struct Shared {
    job: Mutex<Job>,
    /// `generation << 32 | next task index` of the current job.
    word: AtomicU64,
    /// Tasks of the current job that have finished.
    done: AtomicU64,
    /// Workers parked (or about to park) on `wake`.
    parked: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Shared {
    /// Claim and run tasks of `job` until none is left.
    fn work(&self, job: &Job) {
        let Some(f) = job.f else { return };
        let generation = u64::from(job.generation);
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            if w >> 32 != generation || (w & 0xffff_ffff) >= job.n {
                return;
            }
            match self
                .word
                .compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let t = (w & 0xffff_ffff) as i64;
                    // SAFETY: the caller of `run` guarantees `f` may run any task of `data`,
                    // and waits until every claimed task has finished.
                    unsafe { f(job.data as *mut *mut u8, t) };
                    self.done.fetch_add(1, Ordering::Release);
                    w = self.word.load(Ordering::Acquire);
                }
                Err(now) => w = now,
            }
        }
    }

    fn worker(&self) {
        let mut seen = 0u32;
        loop {
            // Spin for a new generation, then park.
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                if (self.word.load(Ordering::Acquire) >> 32) as u32 != seen {
                    break;
                }
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) && start.elapsed() >= SPIN {
                    let guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
                    self.parked.fetch_add(1, Ordering::SeqCst);
                    let idle = (self.word.load(Ordering::SeqCst) >> 32) as u32 == seen
                        && !self.stop.load(Ordering::SeqCst);
                    let guard = if idle {
                        self.wake.wait(guard).unwrap_or_else(|e| e.into_inner())
                    } else {
                        guard
                    };
                    self.parked.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                    break;
                }
            }
            let job = *self.job.lock().unwrap_or_else(|e| e.into_inner());
            if job.generation == seen {
                continue;
            }
            seen = job.generation;
            self.work(&job);
        }
    }
}

/// A pool of `threads - 1` spinning workers plus the calling thread.
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    /// Held while a job runs: one job at a time.
    busy: Mutex<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool running tasks on `threads` threads (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: Mutex::new(Job {
                generation: 0,
                f: None,
                data: 0,
                n: 0,
            }),
            word: AtomicU64::new(0),
            done: AtomicU64::new(0),
            parked: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut pool = Pool {
            threads,
            shared: shared.clone(),
            busy: Mutex::new(()),
            handles: Vec::new(),
        };
        for i in 1..threads {
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("terafab-{i}"))
                .spawn(move || s.worker())?;
            // On an error, dropping `pool` stops the workers started so far.
            pool.handles.push(h);
        }
        Ok(pool)
    }

    /// The threads that run tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(data, t)` for every `t < n` (none for `n <= 0`) and return when all have
    /// finished.
    ///
    /// # Safety
    /// `f` must be safe to call with `data` and any `t < n`, from any thread, concurrently
    /// for distinct `t`.
    pub unsafe fn run(&self, f: TaskFn, data: *mut *mut u8, n: i64) {
        let n = n.max(0) as u64;
        let serial = || {
            for t in 0..n {
                // SAFETY: the caller's contract.
                unsafe { f(data, t as i64) };
            }
        };
        if n <= 1 || self.threads == 1 {
            return serial();
        }
        let Ok(_busy) = self.busy.try_lock() else {
            return serial();
        };
        let s = &*self.shared;
        let mut first = 0u64;
        while first < n {
            let len = (n - first).min(ROUND);
            // Tasks `first..first + len` as the job's `0..len`, through a shifted table.
            let mut round = Round {
                f,
                data,
                first: first as i64,
            };
            let (f, data): (TaskFn, *mut *mut u8) = if first == 0 {
                (f, data)
            } else {
                (round_task, &mut round as *mut Round as *mut *mut u8)
            };
            let job = {
                let mut j = s.job.lock().unwrap_or_else(|e| e.into_inner());
                j.generation = j.generation.wrapping_add(1).max(1);
                j.f = Some(f);
                j.data = data as usize;
                j.n = len;
                *j
            };
            s.done.store(0, Ordering::Relaxed);
            s.word
                .store(u64::from(job.generation) << 32, Ordering::SeqCst);
            if s.parked.load(Ordering::SeqCst) > 0 {
                let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
                s.wake.notify_all();
            }
            s.work(&job);
            while s.done.load(Ordering::Acquire) < len {
                std::hint::spin_loop();
            }
            first += len;
        }
    }
}

/// The table of a round after the first: the real task function, table and first task.
struct Round {
    f: TaskFn,
    data: *mut *mut u8,
    first: i64,
}

unsafe extern "C" fn round_task(data: *mut *mut u8, t: i64) {
    // SAFETY: `data` is the `Round` of the running call, alive until it returns.
    let r = unsafe { &*(data as *const Round) };
    // SAFETY: the caller's contract of `Pool::run`.
    unsafe { (r.f)(r.data, r.first + t) }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// `parallel_for(pool, f, data, n)` for the generated code: `pool` is a `*const Pool`.
///
/// # Safety
/// `pool` must point to a live [`Pool`], and `f` and `data` meet [`Pool::run`]'s contract.
pub unsafe extern "C" fn parallel_for(pool: *const c_void, f: TaskFn, data: *mut *mut u8, n: i64) {
    // SAFETY: the run put a live `Pool` there.
    let pool = unsafe { &*(pool as *const Pool) };
    // SAFETY: the caller's contract.
    unsafe { pool.run(f, data, n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    static HITS: [AtomicU32; 1000] = [const { AtomicU32::new(0) }; 1000];

    unsafe extern "C" fn hit(_data: *mut *mut u8, t: i64) {
        HITS[t as usize].fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn every_task_runs_once_across_many_calls_and_pauses() {
        let pool = Pool::new(3).unwrap();
        for (i, n) in [0i64, 1, 2, 7, 1000, 999, 3, 1000].into_iter().enumerate() {
            for h in &HITS {
                h.store(0, Ordering::Relaxed);
            }
            if i == 5 {
                // Let the workers park: the next call must wake them (or run alone).
                std::thread::sleep(SPIN * 3);
            }
            // SAFETY: `hit` reads nothing of the table.
            unsafe { pool.run(hit, std::ptr::null_mut(), n) };
            for (t, h) in HITS.iter().enumerate() {
                let want = u32::from((t as i64) < n);
                assert_eq!(h.load(Ordering::Relaxed), want, "call {i}: task {t} of {n}");
            }
        }
    }

    static SUM: AtomicU64 = AtomicU64::new(0);

    unsafe extern "C" fn add(data: *mut *mut u8, t: i64) {
        let base = data as usize as u64;
        SUM.fetch_add(base + t as u64, Ordering::Relaxed);
    }

    #[test]
    fn concurrent_callers_share_a_pool() {
        let pool = Arc::new(Pool::new(2).unwrap());
        SUM.store(0, Ordering::Relaxed);
        std::thread::scope(|s| {
            for c in 0..4u64 {
                let pool = pool.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        // SAFETY: `add` only reads the table pointer as a number.
                        unsafe { pool.run(add, (c * 1000) as usize as *mut *mut u8, 10) };
                    }
                });
            }
        });
        // Each caller: 200 calls of sum(c*1000 + t, t < 10).
        let want: u64 = (0..4u64).map(|c| 200 * (10 * c * 1000 + 45)).sum();
        assert_eq!(SUM.load(Ordering::Relaxed), want);
    }
}
