//! Criterion benches of the write-watch figures (11 and 12 of `hostmem
//! bench`, the same operations from `hostmem::unstable::bench::write_watch`): a
//! collector's round over a 256 MiB `MEM_WRITE_WATCH` heap against Wine's
//! `mprotect` + SIGSEGV emulation (and soft-dirty bits where the kernel
//! keeps them), and commit + first writes + decommit of 1 MiB, watched
//! and not.
//!
//! `cargo bench --bench write_watch`. Benches whose mechanism this kernel
//! lacks print "skipped: reason" and are left out.

use criterion::{Criterion, criterion_group, criterion_main};
use hostmem::unstable::bench::write_watch::{FirstWrites, SignalHeap, SoftDirtyHeap, WatchedHeap};
use std::hint::black_box;
use std::time::Duration;

fn configured() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn fig11_collector_round(c: &mut Criterion) {
    let mut g = c.benchmark_group("fig11_write_1pct_of_256m_then_collect");
    match WatchedHeap::new() {
        Some(mut heap) => {
            g.bench_function("get_write_watch_reset", |b| {
                b.iter(|| black_box(heap.round()))
            });
        }
        None => println!("skipped: get_write_watch_reset: this kernel cannot watch writes"),
    }
    match SoftDirtyHeap::new() {
        Some(mut heap) => {
            g.bench_function("soft_dirty_pagemap_clear_refs", |b| {
                b.iter(|| black_box(heap.round()))
            });
        }
        None => println!("skipped: soft_dirty_pagemap_clear_refs: no soft-dirty bits"),
    }
    if let Some(mut heap) = SignalHeap::new() {
        g.bench_function("mprotect_sigsegv", |b| b.iter(|| black_box(heap.round())));
    }
    g.finish();
}

fn fig12_first_writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("fig12_commit_1m_first_writes_decommit");
    match FirstWrites::new(true) {
        Some(mut watched) => g.bench_function("watched", |b| b.iter(|| watched.run())),
        None => {
            println!("skipped: watched: this kernel cannot watch writes");
            &mut g
        }
    };
    if let Some(mut plain) = FirstWrites::new(false) {
        g.bench_function("unwatched", |b| b.iter(|| plain.run()));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = configured();
    targets = fig11_collector_round, fig12_first_writes
}
criterion_main!(benches);
