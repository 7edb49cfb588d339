//! `IHostMalloc` `Alloc`+`Free` against glibc `malloc`+`free`, on the same
//! pre-generated random sizes (16–1024 bytes), on one thread and on two
//! (issue 5's target: within 1.5× of glibc on one thread, and scaling on
//! two no worse than glibc's).
//!
//! Two patterns: `pairs` (window 1: each block is freed at the next step,
//! glibc's best case, all in its per-thread tcache) and `window256` (256
//! live blocks, each freed at a random later step). Every allocated block
//! gets one byte written, in both allocators.
//!
//! Run: `cargo bench --bench heap`. Each figure is the time of one step
//! (one allocation and one free) on one thread; with two threads each
//! thread does the same number of steps, and the figure is the slower
//! thread's time per step, so perfect scaling keeps it equal to the
//! one-thread figure.
//!
//! The clock is each thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so
//! that time a thread spends descheduled by other work on the machine is
//! not counted (stalls from sharing caches and memory are);
//! `HEAP_BENCH_CLOCK=wall` measures wall time instead (the two agree on an
//! idle machine).
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hostmem::heap::bench::{AllocPattern, replay, run_threads};
use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{HostMemoryManager, MemoryCriticalLevel};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;
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

/// The slower of two threads, each running `work` (which returns its own
/// time) at the same moment.
fn two_threads(work: impl Fn(usize) -> Duration + Sync) -> Duration {
    let times = parking_lot::Mutex::new(Vec::new());
    run_threads(2, |t| {
        let time = work(t);
        times.lock().push(time);
        Some(())
    })
    .expect("threads");
    times.into_inner().into_iter().max().unwrap_or_default()
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
        let patterns = patterns(window, 2);
        group.bench_function(BenchmarkId::new("glibc", name), |b| {
            b.iter_custom(|steps| two_threads(|t| glibc_steps(&patterns[t], steps)))
        });
        group.bench_function(BenchmarkId::new("hostmem-threadsafe", name), |b| {
            b.iter_custom(|steps| two_threads(|t| heap_steps(&safe, &patterns[t], steps)))
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
criterion_main!(benches);
