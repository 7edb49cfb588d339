//! `IHostMalloc` `Alloc`+`Free` against glibc `malloc`+`free`, on the same
//! pre-generated random sizes (16–1024 bytes), on one thread and on two
//! (the target: within 1.5× of glibc on one thread, and scaling on
//! two no worse than glibc's).
//!
//! Two patterns: `pairs` (window 1: each block is freed at the next step,
//! glibc's best case, all in its per-thread tcache) and `window256` (256
//! live blocks, each freed at a random later step). Every allocated block
//! gets one byte written, in both allocators.
//!
//! Run: `cargo bench --bench heap`. Each figure is the time of one step
//! (one allocation and one free) on one thread; with two threads (two
//! long-lived workers, started together for each sample) each thread does
//! the same number of steps, and the figure is the slower thread's time
//! per step, so perfect scaling keeps it equal to the one-thread figure.
//!
//! After criterion's figures, the same contenders run interleaved (each
//! round runs each once, in turn) and the medians and ratios are printed:
//! on a machine shared with other work, criterion's figures, taken one
//! contender after the other, drift apart; the interleaved ratios do not.
//!
//! The clock is each thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! that time a thread spends descheduled by other work on the machine is
//! not counted (stalls from sharing caches and memory are);
//! `HEAP_BENCH_CLOCK=wall` measures wall time instead (the two agree on an
//! idle machine).
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, criterion_group};
use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{HostMemoryManager, MemoryCriticalLevel};
use hostmem::unstable::heap_bench::{AllocPattern, replay};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// `CLOCK_THREAD_CPUTIME_ID` on Linux.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

const PATTERN_LEN: usize = 1 << 16;
const SIZES: std::ops::RangeInclusive<usize> = 16..=1024;

/// The calling thread's clock: CPU time, or wall time with
/// `HEAP_BENCH_CLOCK=wall`.
fn now() -> Duration {
    thread_local! {
        static WALL: Option<Instant> = std::env::var("HEAP_BENCH_CLOCK")
            .is_ok_and(|v| v == "wall")
            .then(Instant::now);
    }
    if let Some(origin) = WALL.with(|w| *w) {
        return origin.elapsed();
    }
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `struct timespec`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Writes one byte at `block`, so that both allocators hand out memory the
/// caller touches.
fn touch(block: usize, size: usize) {
    // SAFETY: `block` was just allocated with at least `size` >= 16 bytes.
    unsafe { (block as *mut u8).write_volatile(size as u8) };
}

/// `steps` steps of `pattern` with glibc: the time on this thread's clock.
fn glibc_steps(pattern: &AllocPattern, steps: u64) -> Duration {
    let start = now();
    replay(
        pattern,
        steps,
        |size| {
            // SAFETY: the C library's malloc.
            let p = black_box(unsafe { malloc(size) });
            (!p.is_null()).then(|| {
                touch(p as usize, size);
                p as usize
            })
        },
        // SAFETY: a block malloc returned, freed once.
        |block| unsafe { free(black_box(block as *mut c_void)) },
    )
    .expect("malloc");
    now() - start
}

/// `steps` steps of `pattern` with `heap`: the time on this thread's clock.
fn heap_steps(heap: &HostMalloc, pattern: &AllocPattern, steps: u64) -> Duration {
    let start = now();
    replay(
        pattern,
        steps,
        |size| {
            let p = heap.alloc(size, MemoryCriticalLevel::TaskCritical).ok()?;
            touch(p, size);
            Some(black_box(p))
        },
        |block| heap.free(black_box(block)).expect("Free"),
    )
    .expect("Alloc");
    now() - start
}

fn patterns(window: usize, threads: usize) -> Vec<AllocPattern> {
    (0..threads)
        .map(|t| AllocPattern::random(PATTERN_LEN, SIZES, window, 0x5EED + t as u64))
        .collect()
}

/// Two long-lived worker threads: each sample hands both the number of
/// steps at once, and takes the slower thread's time. (Threads made afresh
/// for each sample would measure thread start-up and cold caches too.)
struct Workers {
    steps: Vec<mpsc::Sender<u64>>,
    times: mpsc::Receiver<Duration>,
}

impl Workers {
    /// Starts two workers in `scope`, worker `t` running `work(t, steps)`.
    fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        work: impl Fn(usize, u64) -> Duration + Send + Sync + Copy + 'scope,
    ) -> Self {
        let (time_tx, times) = mpsc::channel();
        let steps = (0..2)
            .map(|t| {
                let (tx, rx) = mpsc::channel::<u64>();
                let time_tx = time_tx.clone();
                scope.spawn(move || {
                    for steps in rx {
                        time_tx.send(work(t, steps)).expect("bench");
                    }
                });
                tx
            })
            .collect();
        Self { steps, times }
    }

    /// Runs `steps` steps on both workers: the slower one's time.
    fn run(&self, steps: u64) -> Duration {
        for tx in &self.steps {
            tx.send(steps).expect("worker");
        }
        (0..self.steps.len())
            .map(|_| self.times.recv().expect("worker"))
            .max()
            .unwrap_or_default()
    }
}

fn one_thread(c: &mut Criterion) {
    let manager = Arc::new(HostMemoryManager::default());
    let safe = manager.create_malloc(MallocType::THREADSAFE).unwrap();
    let single = manager.create_malloc(MallocType::empty()).unwrap();
    let mut group = c.benchmark_group("heap/1-thread");
    for (name, window) in [("pairs", 1), ("window256", 256)] {
        let pattern = &patterns(window, 1)[0];
        group.bench_function(BenchmarkId::new("glibc", name), |b| {
            b.iter_custom(|steps| glibc_steps(pattern, steps))
        });
        group.bench_function(BenchmarkId::new("hostmem-threadsafe", name), |b| {
            b.iter_custom(|steps| heap_steps(&safe, pattern, steps))
        });
        group.bench_function(BenchmarkId::new("hostmem-single", name), |b| {
            b.iter_custom(|steps| heap_steps(&single, pattern, steps))
        });
    }
    group.finish();
}

fn both_threads(c: &mut Criterion) {
    let manager = Arc::new(HostMemoryManager::default());
    let safe = manager.create_malloc(MallocType::THREADSAFE).unwrap();
    let mut group = c.benchmark_group("heap/2-threads");
    for (name, window) in [("pairs", 1), ("window256", 256)] {
        let patterns = &patterns(window, 2);
        let safe = &safe;
        std::thread::scope(|scope| {
            let workers = Workers::start(scope, |t, steps| glibc_steps(&patterns[t], steps));
            group.bench_function(BenchmarkId::new("glibc", name), |b| {
                b.iter_custom(|steps| workers.run(steps))
            });
            drop(workers);
            let workers = Workers::start(scope, |t, steps| heap_steps(safe, &patterns[t], steps));
            group.bench_function(BenchmarkId::new("hostmem-threadsafe", name), |b| {
                b.iter_custom(|steps| workers.run(steps))
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = one_thread, both_threads
}

/// The median and the least of `times`.
fn median_min(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// The same comparison, interleaved: each round runs every contender once
/// in turn, so that a change in the machine's load (other jobs, the
/// host's other guests) hits them alike. Criterion's figures above are
/// measured one contender after another, seconds apart; these ratios are
/// the ones to compare.
fn interleaved() {
    const ROUNDS: usize = 21;
    const STEPS: u64 = 300_000;
    let per_step = |d: Duration| d.as_nanos() as f64 / STEPS as f64;
    let manager = Arc::new(HostMemoryManager::default());
    let safe = manager.create_malloc(MallocType::THREADSAFE).unwrap();
    let single = manager.create_malloc(MallocType::empty()).unwrap();
    println!();
    println!("interleaved, {ROUNDS} rounds of {STEPS} steps, ns a step (median / least):");
    for (name, window) in [("pairs", 1), ("window256", 256)] {
        let one = &patterns(window, 1)[0];
        let two = &patterns(window, 2);
        let mut times: [Vec<f64>; 5] = Default::default();
        std::thread::scope(|scope| {
            let glibc2 = Workers::start(scope, |t, steps| glibc_steps(&two[t], steps));
            let safe2 = Workers::start(scope, |t, steps| heap_steps(&safe, &two[t], steps));
            for _ in 0..ROUNDS {
                times[0].push(per_step(glibc_steps(one, STEPS)));
                times[1].push(per_step(heap_steps(&safe, one, STEPS)));
                times[2].push(per_step(heap_steps(&single, one, STEPS)));
                times[3].push(per_step(glibc2.run(STEPS)));
                times[4].push(per_step(safe2.run(STEPS)));
            }
        });
        let [g1, s1, n1, g2, s2] = times.map(median_min);
        let ratio = |a: (f64, f64), b: (f64, f64)| (a.0 / b.0, a.1 / b.1);
        println!(
            "  {name:>9}  1 thread: glibc {:5.1} / {:5.1}   threadsafe {:5.1} / {:5.1} ({:.2}x / {:.2}x)   single {:5.1} / {:5.1} ({:.2}x / {:.2}x)",
            g1.0,
            g1.1,
            s1.0,
            s1.1,
            ratio(s1, g1).0,
            ratio(s1, g1).1,
            n1.0,
            n1.1,
            ratio(n1, g1).0,
            ratio(n1, g1).1,
        );
        println!(
            "  {name:>9} 2 threads: glibc {:5.1} / {:5.1} (x{:.2} of 1 thread)   threadsafe {:5.1} / {:5.1} (x{:.2} of 1 thread; {:.2}x glibc)",
            g2.0,
            g2.1,
            g2.0 / g1.0,
            s2.0,
            s2.1,
            s2.0 / s1.0,
            s2.0 / g2.0,
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().all(|a| a != "--list" && a != "--test") {
        interleaved();
    }
}
