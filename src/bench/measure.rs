//! Timing: interleaved trials, medians, and multi-threaded throughput.
//!
//! Every figure runs its sides (hostmem, the bare engine, the raw syscalls)
//! in the same loop, one batch of each per trial, rotating which goes first,
//! so that whatever the machine does meanwhile (another process, frequency
//! changes, the kernel's own housekeeping) falls on all of them alike.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// Calls of `work` a thread makes between two looks at the stop flag.
const STOP_CHECK: usize = 8;

/// Runs `work` on each of `threads` threads for `window` (all started
/// together, all stopped together); returns the total throughput in calls
/// per second: every call made, over the time from the start to the last
/// thread's end.
///
/// Fixed time, not fixed work: with a fixed number of calls each, a
/// thread slowed for a moment (a CPU the host of a virtual machine takes
/// back, a lock the other thread holds) ends after the other and runs its
/// tail alone, and that tail counted as if both were still running (the
/// same lookups, with nothing shared, scaled 1.2-1.6 on 2 threads that
/// way and 1.7-2.2 by each thread's own rate in a standalone C driver of
/// 40 ms phases). Here both run for the same window, which is what a
/// throughput is.
pub fn throughput(threads: usize, window: Duration, work: &(dyn Fn() + Sync)) -> f64 {
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let (calls, began, ended) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let mut calls = 0;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..STOP_CHECK {
                            work();
                        }
                        calls += STOP_CHECK;
                    }
                    (calls, Instant::now())
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let ends: Vec<(usize, Instant)> = handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread"))
            .collect();
        let calls: usize = ends.iter().map(|e| e.0).sum();
        let ended = ends.iter().map(|e| e.1).max().expect("a thread");
        (calls, began, ended)
    });
    calls as f64 / ended.duration_since(began).as_secs_f64().max(1e-9)
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
    fn throughput_counts_every_call_of_every_thread() {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let window = Duration::from_millis(20);
        let begun = Instant::now();
        let t = throughput(2, window, &|| {
            n.fetch_add(1, Ordering::Relaxed);
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_micros(100));
        });
        let took = begun.elapsed();
        let n = n.into_inner();
        assert_eq!(threads.into_inner().unwrap().len(), 2, "both threads ran");
        assert!(took >= window, "the window was waited out");
        assert_eq!(n % STOP_CHECK, 0, "whole batches");
        // Every call is counted over at most the whole run's time, and the
        // run lasted at least the window: the rate lies between the two.
        let (low, high) = (
            n as f64 / took.as_secs_f64(),
            n as f64 / window.as_secs_f64(),
        );
        assert!(low <= t && t <= high, "{low} <= {t} <= {high}");
    }
}
