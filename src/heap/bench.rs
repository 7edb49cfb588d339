//! The allocation benchmark shared by `benches/heap.rs` and `hostmem
//! bench`: the same pre-generated random requests replayed against a heap
//! or against any other allocator (glibc's `malloc`/`free` in the bench).
//!
//! A pattern keeps `window` slots of live blocks; each step frees the
//! block in a random slot (if any) and allocates one of a random size into
//! it. With a window of 1 a step is an `Alloc` then, at the next step, its
//! `Free`; with a larger one, blocks live a while and are freed out of
//! order.
#![forbid(unsafe_code)]

use super::HostMalloc;
use crate::host::{HostError, MemoryCriticalLevel};
use std::ops::RangeInclusive;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// A pre-generated sequence of requests: sizes, and the slot each one
/// replaces.
#[derive(Clone, Debug)]
pub struct AllocPattern {
    steps: Vec<(usize, u32)>,
    window: usize,
}

impl AllocPattern {
    /// `len` steps of sizes drawn uniformly from `sizes`, over `window`
    /// slots (at least 1), from `seed` (the same seed gives the same
    /// pattern).
    pub fn random(len: usize, sizes: RangeInclusive<usize>, window: usize, seed: u64) -> Self {
        let window = window.max(1);
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let span = (sizes.end() - sizes.start()) as u64 + 1;
        let steps = (0..len.max(1))
            .map(|_| {
                let size = sizes.start() + (next() % span) as usize;
                let slot = (next() % window as u64) as u32;
                (size, slot)
            })
            .collect();
        Self { steps, window }
    }

    /// The number of steps before the pattern repeats.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the pattern has no step (never: `random` makes at least
    /// one).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The number of slots.
    pub fn window(&self) -> usize {
        self.window
    }
}

/// Replays `steps` steps of `pattern` (repeating it as needed) with
/// `alloc` and `free`, then frees what is left, and returns the time it
/// took; `None` as soon as `alloc` fails (returns `None`).
pub fn replay(
    pattern: &AllocPattern,
    steps: u64,
    mut alloc: impl FnMut(usize) -> Option<usize>,
    mut free: impl FnMut(usize),
) -> Option<Duration> {
    let mut live = vec![0usize; pattern.window];
    let start = Instant::now();
    let mut left = steps;
    while left > 0 {
        let n = left.min(pattern.steps.len() as u64) as usize;
        for &(size, slot) in &pattern.steps[..n] {
            let slot = &mut live[slot as usize];
            if *slot != 0 {
                free(*slot);
            }
            *slot = alloc(size)?;
        }
        left -= n as u64;
    }
    for block in live.into_iter().filter(|&b| b != 0) {
        free(block);
    }
    Some(start.elapsed())
}

/// Runs `work(thread)` on `threads` threads started together, and returns
/// the time from the first start to the last end; `None` if any run
/// returned `None`.
pub fn run_threads(threads: usize, work: impl Fn(usize) -> Option<()> + Sync) -> Option<Duration> {
    let barrier = Barrier::new(threads);
    let spans: Vec<Option<(Instant, Instant)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(t)?;
                    Some((start, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let spans: Option<Vec<_>> = spans.into_iter().collect();
    let spans = spans?;
    let first = spans.iter().map(|s| s.0).min()?;
    let last = spans.iter().map(|s| s.1).max()?;
    Some(last - first)
}

/// `steps` steps of `pattern` against `heap` (`Alloc` at task level, then
/// `Free`): the time taken, or the first failure.
pub fn bench_alloc_free(
    heap: &HostMalloc,
    pattern: &AllocPattern,
    steps: u64,
) -> Result<Duration, HostError> {
    let mut failure = None;
    let elapsed = replay(
        pattern,
        steps,
        |size| {
            heap.alloc(size, MemoryCriticalLevel::TaskCritical)
                .map_err(|e| failure = Some(e))
                .ok()
        },
        |block| {
            let _ = heap.free(block);
        },
    );
    elapsed.ok_or_else(|| failure.unwrap_or(HostError::Catastrophic))
}

/// [`bench_alloc_free`] on `patterns.len()` threads at once against one
/// (thread-safe) heap, each thread with its own pattern: the wall time
/// from the first start to the last end.
pub fn bench_alloc_free_threads(
    heap: &HostMalloc,
    patterns: &[AllocPattern],
    steps: u64,
) -> Result<Duration, HostError> {
    let failure = parking_lot::Mutex::new(None);
    run_threads(patterns.len(), |t| {
        bench_alloc_free(heap, &patterns[t], steps)
            .map_err(|e| *failure.lock() = Some(e))
            .ok()
            .map(drop)
    })
    .ok_or_else(|| failure.into_inner().unwrap_or(HostError::Catastrophic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::MallocType;
    use crate::host::HostMemoryManager;
    use std::sync::Arc;

    #[test]
    fn patterns_are_reproducible_and_in_range() {
        let a = AllocPattern::random(1000, 16..=1024, 64, 7);
        let b = AllocPattern::random(1000, 16..=1024, 64, 7);
        assert_eq!(a.steps, b.steps);
        assert!(
            a.steps
                .iter()
                .all(|&(s, slot)| (16..=1024).contains(&s) && slot < 64)
        );
        assert_ne!(a.steps, AllocPattern::random(1000, 16..=1024, 64, 8).steps);
    }

    #[test]
    fn replay_balances_allocs_and_frees() {
        let pattern = AllocPattern::random(100, 16..=64, 8, 1);
        let (mut allocs, mut frees) = (0, 0);
        replay(
            &pattern,
            250,
            |_| {
                allocs += 1;
                Some(allocs)
            },
            |_| frees += 1,
        )
        .unwrap();
        assert_eq!((allocs, frees), (250, 250));
    }

    #[test]
    fn heap_bench_runs_on_one_and_two_threads() {
        let manager = Arc::new(HostMemoryManager::default());
        let heap = manager.create_malloc(MallocType::THREADSAFE).unwrap();
        let pattern = AllocPattern::random(1000, 16..=1024, 32, 3);
        bench_alloc_free(&heap, &pattern, 5000).unwrap();
        let patterns = [
            pattern.clone(),
            AllocPattern::random(1000, 16..=1024, 32, 4),
        ];
        bench_alloc_free_threads(&heap, &patterns, 5000).unwrap();
        assert!(heap.leak_report().is_empty());
    }
}
