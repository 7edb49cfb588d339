//! Timing: interleaved trials, medians, and multi-threaded throughput.
//!
//! Every figure runs its sides (hostmem, the bare engine, the raw syscalls)
//! in the same loop, one batch of each per trial, rotating which goes first,
//! so that whatever the machine does meanwhile (another process, frequency
//! changes, the kernel's own housekeeping) falls on all of them alike.

use std::sync::Barrier;
use std::time::Instant;

/// One side of a comparison: a unit of work and how many units a batch
/// runs (sides may differ: a `/proc` read takes 10,000 queries' time).
pub struct Side<'a> {
    /// Units a batch runs.
    pub batch: usize,
    /// One unit of work.
    pub work: &'a mut dyn FnMut(),
}

impl<'a> Side<'a> {
    /// A side running `batch` units of `work` per trial.
    pub fn new(batch: usize, work: &'a mut dyn FnMut()) -> Self {
        Self {
            batch: batch.max(1),
            work,
        }
    }

    fn time_batch(&mut self) -> f64 {
        let start = Instant::now();
        for _ in 0..self.batch {
            (self.work)();
        }
        start.elapsed().as_nanos() as f64 / self.batch as f64
    }
}

/// Runs `trials` trials of every side after one untimed warm-up batch
/// each; returns, for each side, the nanoseconds per unit of each trial.
pub fn interleaved(trials: usize, sides: &mut [Side<'_>]) -> Vec<Vec<f64>> {
    for side in sides.iter_mut() {
        side.time_batch();
    }
    let n = sides.len();
    let mut samples = vec![Vec::with_capacity(trials); n];
    for trial in 0..trials {
        for k in 0..n {
            let i = (trial + k) % n;
            samples[i].push(sides[i].time_batch());
        }
    }
    samples
}

/// The median (the mean of the middle two for an even count); NaN for
/// none.
pub fn median(samples: &[f64]) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The median of the trial-by-trial ratios `a[i] / b[i]`: each pair ran
/// back to back, so the noise they share cancels.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

/// Runs `work` `per_thread` times on each of `threads` threads, all
/// started together; returns the total throughput in units per second
/// (from the first thread's start to the last one's end).
pub fn throughput(threads: usize, per_thread: usize, work: &(dyn Fn() + Sync)) -> f64 {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..per_thread {
                        work();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("a thread");
    let last = spans.iter().map(|s| s.1).max().expect("a thread");
    let secs = last.duration_since(first).as_secs_f64().max(1e-9);
    (threads * per_thread) as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(paired_ratio(&[2.0, 4.0, 9.0], &[1.0, 2.0, 3.0]), 2.0);
    }

    #[test]
    fn interleaving_runs_every_side_every_trial() {
        let (mut a, mut b) = (0, 0);
        let mut fa = || a += 1;
        let mut fb = || b += 1;
        let samples = interleaved(5, &mut [Side::new(3, &mut fa), Side::new(2, &mut fb)]);
        assert_eq!(samples.len(), 2);
        assert!(samples.iter().all(|s| s.len() == 5));
        assert_eq!((a, b), (18, 12), "a warm-up batch and five trials each");
    }

    #[test]
    fn throughput_counts_every_thread() {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let t = throughput(2, 100, &|| {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(n.into_inner(), 200);
        assert!(t > 0.0);
    }
}
