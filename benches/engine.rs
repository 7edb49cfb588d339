//! Criterion benches of the benchmarked operations, hostmem and the raw
//! syscalls side by side (the same operations `hostmem bench` times, from
//! `hostmem::unstable::bench::ops`).
//!
//! `cargo bench --bench engine` runs them all; a filter picks some, e.g.
//! `cargo bench --bench engine -- fig4`. Figure 7 reports the time per
//! operation with 1 and 2 threads (its scaling is the ratio of the two).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hostmem::host::{HostConfig, HostMemoryManager};
use hostmem::unstable::bench::ops;
use hostmem::unstable::engine::AddressSpace;
use rustix::mm::ProtFlags;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn host() -> std::sync::Arc<HostMemoryManager> {
    HostMemoryManager::new(HostConfig::default()).expect("the default configuration is valid")
}

fn configured() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn fig1_alloc_touch_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("fig1_reserve_commit_64k_touch_release");
    let host = host();
    g.bench_function("hostmem", |b| b.iter(|| ops::host_alloc_touch_free(&host)));
    let mut space = AddressSpace::new();
    g.bench_function("engine", |b| {
        b.iter(|| ops::engine_alloc_touch_free(&mut space))
    });
    g.bench_function("raw_mmap_munmap", |b| b.iter(ops::raw_alloc_touch_free));
    g.finish();
}

fn fig2_reserve_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("fig2_reserve_256m_release");
    let host = host();
    g.bench_function("hostmem", |b| b.iter(|| ops::host_reserve_release(&host)));
    let mut space = AddressSpace::new();
    g.bench_function("engine", |b| {
        b.iter(|| ops::engine_reserve_release(&mut space))
    });
    g.bench_function("raw_mmap_munmap", |b| b.iter(ops::raw_reserve_release));
    g.finish();
}

fn fig3_commit_decommit(c: &mut Criterion) {
    let mut g = c.benchmark_group("fig3_commit_64k_touch_decommit");
    let host = host();
    let host_base = ops::host_commit_reservation(&host);
    // SAFETY (both): the reservations were made just above for this
    // benchmark alone and stay live until it is done.
    g.bench_function("hostmem", |b| {
        b.iter(|| unsafe { ops::host_commit_touch_decommit(&host, host_base) })
    });
    let mut space = AddressSpace::new();
    let engine_base = ops::engine_commit_reservation(&mut space);
    g.bench_function("engine", |b| {
        b.iter(|| unsafe { ops::engine_commit_touch_decommit(&mut space, engine_base) })
    });
    let mut raw = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    g.bench_function("raw_mprotect_madvise", |b| {
        b.iter(|| ops::raw_commit_touch_decommit(&mut raw))
    });
    // The same calls through libc's wrappers (figure 3's information row).
    let mut through_libc = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    g.bench_function("libc_mprotect_madvise", |b| {
        b.iter(|| ops::libc_commit_touch_decommit(&mut through_libc))
    });
    // The same calls from two functions that return, as an API's calls
    // do (figure 3's floor row).
    let mut floor = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    g.bench_function("floor_two_functions", |b| {
        b.iter(|| ops::api_floor_commit_touch_decommit(&mut floor))
    });
    g.finish();
}

/// Figures 4 and 5: a query and a foreign free at 1,000 and 50,000 regions
/// (each region one kernel mapping).
fn fig4_fig5_regions(c: &mut Criterion) {
    let mapping = ops::RawMapping::new(4096, ProtFlags::READ | ProtFlags::WRITE);
    let foreign = mapping.addr();
    for regions in [1_000, 50_000] {
        let host = host();
        let bases = ops::host_populate(&host, regions);
        let addrs = ops::random_addresses(&bases, 1 << 16, regions as u64);
        let mut i = 0;
        c.benchmark_group("fig4_virtual_query").bench_function(
            BenchmarkId::from_parameter(regions),
            |b| {
                b.iter(|| {
                    i = (i + 1) % addrs.len();
                    ops::host_query(&host, addrs[i])
                })
            },
        );
        c.benchmark_group("fig5_virtual_free_foreign")
            .bench_function(BenchmarkId::from_parameter(regions), |b| {
                b.iter(|| ops::host_free_foreign(&host, black_box(foreign)))
            });
    }
    drop(mapping);
}

fn fig6_query_vs_region(c: &mut Criterion) {
    let host = host();
    let bases = ops::host_populate(&host, 1_000);
    let addr = bases[bases.len() / 2] + 0x1234;
    let mut g = c.benchmark_group("fig6_query_1000_mappings");
    g.bench_function("hostmem", |b| {
        b.iter(|| ops::host_query(&host, black_box(addr)))
    });
    g.sample_size(10);
    g.bench_function("region_query", |b| {
        b.iter(|| region::query(black_box(addr) as *const u8).expect("region::query"))
    });
    g.finish();
}

/// Time per operation of `work` run `iters` times in all, split over
/// `threads` threads started together.
fn threaded(iters: u64, threads: u64, work: &(dyn Fn() + Sync)) -> Duration {
    let per = iters.div_ceil(threads);
    let barrier = std::sync::Barrier::new(threads as usize);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let t = Instant::now();
                    for _ in 0..per {
                        work();
                    }
                    (t, Instant::now())
                })
            })
            .collect();
        let spans: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let first = spans.iter().map(|s| s.0).min().unwrap();
        let last = spans.iter().map(|s| s.1).max().unwrap();
        last - first
    });
    // Scale to exactly `iters` operations.
    elapsed.mul_f64(iters as f64 / (per * threads) as f64)
}

fn fig7_two_threads(c: &mut Criterion) {
    let queried = host();
    let bases = ops::host_populate(&queried, 1_000);
    let addrs = ops::random_addresses(&bases, 1 << 12, 7);
    let allocating = host();
    let host_work = || ops::host_alloc_touch_free(&allocating);
    let raw_work = ops::raw_alloc_touch_free;
    let query = || {
        thread_local! {
            static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let i = NEXT.with(|c| {
            c.set(c.get().wrapping_add(1));
            c.get()
        });
        black_box(ops::host_query(&queried, addrs[i % addrs.len()]));
    };
    let mut g = c.benchmark_group("fig7_threads");
    for threads in [1u64, 2] {
        g.bench_function(BenchmarkId::new("hostmem_alloc_touch_free", threads), |b| {
            b.iter_custom(|iters| threaded(iters, threads, &host_work))
        });
        g.bench_function(BenchmarkId::new("raw_mmap_touch_munmap", threads), |b| {
            b.iter_custom(|iters| threaded(iters, threads, &raw_work))
        });
        g.bench_function(BenchmarkId::new("hostmem_virtual_query", threads), |b| {
            b.iter_custom(|iters| threaded(iters, threads, &query))
        });
    }
    g.finish();
}

/// Figures 1–3 after the churn phase (`ops::churn`), through the Rust
/// API and the flat C API: `hostmem bench` holds the worst condition to
/// the target.
fn fig1_to_3_churned_and_c_api(c: &mut Criterion) {
    let churned = host();
    ops::host_churn(&churned);
    ops::flat::churn();
    let mut g = c.benchmark_group("fig1_3_after_churn");
    g.bench_function("fig1_hostmem", |b| {
        b.iter(|| ops::host_alloc_touch_free(&churned))
    });
    g.bench_function("fig1_c_api", |b| b.iter(ops::flat::alloc_touch_free));
    g.bench_function("fig1_raw", |b| b.iter(ops::raw_alloc_touch_free));
    g.bench_function("fig2_hostmem", |b| {
        b.iter(|| ops::host_reserve_release(&churned))
    });
    g.bench_function("fig2_c_api", |b| b.iter(ops::flat::reserve_release));
    g.bench_function("fig2_raw", |b| b.iter(ops::raw_reserve_release));
    let host_base = ops::host_commit_reservation(&churned);
    let c_base = ops::flat::commit_reservation();
    let mut raw = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    g.bench_function("fig3_hostmem", |b| {
        // SAFETY: the reservation made above for this benchmark alone.
        b.iter(|| unsafe { ops::host_commit_touch_decommit(&churned, host_base) })
    });
    g.bench_function("fig3_c_api", |b| {
        // SAFETY: as above.
        b.iter(|| unsafe { ops::flat::commit_touch_decommit(c_base) })
    });
    g.bench_function("fig3_raw", |b| {
        b.iter(|| ops::raw_commit_touch_decommit(&mut raw))
    });
    g.finish();
}

/// Figure 9: 8 threads committing, touching and decommitting, each in a
/// reservation (or raw mapping) of its own; the time per operation of
/// all 8 together.
fn fig9_eight_threads(c: &mut Criterion) {
    const THREADS: usize = 8;
    let committing = host();
    let host_bases: Vec<usize> = (0..THREADS)
        .map(|_| ops::host_commit_reservation(&committing))
        .collect();
    let raw_mappings: Vec<ops::RawMapping> = (0..THREADS)
        .map(|_| ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty()))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // A thread's index, picked once: no two threads share a reservation.
    let mine = || {
        thread_local! {
            static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        }
        SLOT.with(|s| {
            s.get().unwrap_or_else(|| {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % THREADS;
                s.set(Some(i));
                i
            })
        })
    };
    // SAFETY (both): reservation or mapping `mine()` of a set made above
    // for this benchmark, worked in by this thread alone.
    let host_work = || unsafe { ops::host_commit_touch_decommit(&committing, host_bases[mine()]) };
    let raw_work = || unsafe { ops::raw_commit_touch_decommit_shared(&raw_mappings[mine()]) };
    let mut g = c.benchmark_group("fig9_eight_threads_commit_decommit");
    g.bench_function("hostmem", |b| {
        b.iter_custom(|iters| threaded(iters, THREADS as u64, &host_work))
    });
    g.bench_function("raw_mprotect_madvise", |b| {
        b.iter_custom(|iters| threaded(iters, THREADS as u64, &raw_work))
    });
    g.finish();
}

fn fig8_malloc(c: &mut Criterion) {
    let sizes = ops::malloc_sizes(1 << 12, 8);
    let mut i = 0;
    let mut g = c.benchmark_group("fig8_alloc_free_16_1024");
    g.bench_function("glibc_malloc_free", |b| {
        b.iter(|| {
            i = (i + 1) % sizes.len();
            ops::libc_malloc_free(sizes[i])
        })
    });
    g.finish();
}

/// Figure 10: the random-gather kernel over 64 MiB from hostmem (committed
/// in 8 MiB chunks, or 64 KiB steps each written at once) and from a
/// plain mapping, with and without `MADV_HUGEPAGE`.
fn fig10_numeric_kernel(c: &mut Criterion) {
    use hostmem::unstable::bench::kernel::{Arena, Making, SEED, gather};
    let mut g = c.benchmark_group("fig10_gather_64m");
    for huge in [false, true] {
        for (name, making) in [
            ("hostmem_chunks", Making::HostChunks),
            ("hostmem_steps", Making::HostSteps),
            ("raw_mmap", Making::Raw),
        ] {
            let arena = Arena::new(making, huge);
            let id = BenchmarkId::new(name, if huge { "hugepage" } else { "system" });
            let mut seed = SEED;
            g.bench_function(id, |b| {
                b.iter(|| black_box(gather(black_box(arena.words()), &mut seed)))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = configured();
    targets =
        fig1_alloc_touch_free,
        fig2_reserve_release,
        fig3_commit_decommit,
        fig4_fig5_regions,
        fig6_query_vs_region,
        fig7_two_threads,
        fig8_malloc,
        fig1_to_3_churned_and_c_api,
        fig9_eight_threads,
        fig10_numeric_kernel
}
criterion_main!(benches);
