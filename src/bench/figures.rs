//! The eight performance figures, each measured against its reference in
//! the same loop.

use super::measure::{Side, interleaved, median, paired_ratio, throughput};
use super::ops::{self, LARGE};
use super::report::{Figure, Row, Target, Unit};
use crate::engine::AddressSpace;
use crate::host::{HostConfig, HostMemoryManager};
use rustix::mm::ProtFlags;
use std::hint::black_box;

/// How much work each figure does.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Interleaved trials per figure.
    pub trials: usize,
    /// Operations per batch for figures 1 and 3 (a few µs each).
    pub syscall_batch: usize,
    /// Operations per batch for figure 2.
    pub reserve_batch: usize,
    /// Queries (or foreign frees) per batch, figures 4 and 5.
    pub query_batch: usize,
    /// `region::query` calls per batch, figure 6.
    pub region_batch: usize,
    /// Operations per thread per trial, figure 7 (alloc/free).
    pub thread_ops: usize,
    /// Queries per thread per trial, figure 7.
    pub thread_queries: usize,
    /// Alloc+Free pairs per batch, figure 8.
    pub malloc_batch: usize,
    /// The small population of figures 4–6.
    pub few_regions: usize,
    /// The large population of figures 4 and 5.
    pub many_regions: usize,
}

impl Plan {
    /// The plan of a full run (about a minute) or a quick one (seconds).
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                trials: 7,
                syscall_batch: 40,
                reserve_batch: 40,
                query_batch: 4_000,
                region_batch: 1,
                thread_ops: 200,
                thread_queries: 40_000,
                malloc_batch: 4_000,
                few_regions: 1_000,
                many_regions: 50_000,
            }
        } else {
            Self {
                trials: 31,
                syscall_batch: 200,
                reserve_batch: 200,
                query_batch: 20_000,
                region_batch: 3,
                thread_ops: 1_000,
                thread_queries: 200_000,
                malloc_batch: 20_000,
                few_regions: 1_000,
                many_regions: 50_000,
            }
        }
    }
}

fn host() -> HostMemoryManager {
    HostMemoryManager::new_unshared(HostConfig::default()).expect("a valid configuration")
}

/// Figures 1–3: the host, the bare engine and the raw syscalls
/// interleaved in batches of `batch`, as rows against the raw side (the
/// host's with `target`).
fn host_engine_raw_rows(
    plan: &Plan,
    batch: usize,
    host: &mut dyn FnMut(),
    engine: &mut dyn FnMut(),
    raw: &mut dyn FnMut(),
    target: Target,
) -> Vec<Row> {
    let s = interleaved(
        plan.trials,
        &mut [
            Side::new(batch, host),
            Side::new(batch, engine),
            Side::new(batch, raw),
        ],
    );
    let (host, engine, raw) = (&s[0], &s[1], &s[2]);
    vec![
        Row::new(
            "host (HostMemoryManager)",
            Unit::Nanoseconds,
            Some(median(host)),
            Some(median(raw)),
            Some(paired_ratio(host, raw)),
            Some(target),
        ),
        Row::new(
            "bare engine (AddressSpace)",
            Unit::Nanoseconds,
            Some(median(engine)),
            Some(median(raw)),
            Some(paired_ratio(engine, raw)),
            None,
        ),
    ]
}

/// Figure 1: reserve+commit 64 KiB, touch one page, release.
pub fn fig1(plan: &Plan) -> Figure {
    let host = host();
    let mut space = AddressSpace::new();
    let mut h = || ops::host_alloc_touch_free(&host);
    let mut e = || ops::engine_alloc_touch_free(&mut space);
    let mut r = ops::raw_alloc_touch_free;
    let rows = host_engine_raw_rows(
        plan,
        plan.syscall_batch,
        &mut h,
        &mut e,
        &mut r,
        Target::ratio_at_most(1.10),
    );
    Figure {
        number: 1,
        title: "VirtualAlloc(MEM_RESERVE|MEM_COMMIT) 64 KiB, touch one page, VirtualFree(MEM_RELEASE)".into(),
        reference: "mmap(NULL, 64 KiB, RW) + touch + munmap".into(),
        ratio_means: "hostmem / raw, median of paired trials".into(),
        rows,
        notes: vec![
            "both sides map MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE; the raw side takes the kernel's placement (mmap at NULL), hostmem its 64 KiB-aligned hint".into(),
        ],
    }
}

/// Figure 2: reserve 256 MiB and release.
pub fn fig2(plan: &Plan) -> Figure {
    let host = host();
    let mut space = AddressSpace::new();
    let mut h = || ops::host_reserve_release(&host);
    let mut e = || ops::engine_reserve_release(&mut space);
    let mut r = ops::raw_reserve_release;
    let rows = host_engine_raw_rows(
        plan,
        plan.reserve_batch,
        &mut h,
        &mut e,
        &mut r,
        Target::ratio_at_most(1.10),
    );
    Figure {
        number: 2,
        title: "VirtualAlloc(MEM_RESERVE) 256 MiB, VirtualFree(MEM_RELEASE)".into(),
        reference: "mmap(NULL, 256 MiB, PROT_NONE) + munmap".into(),
        ratio_means: "hostmem / raw, median of paired trials".into(),
        rows,
        notes: vec![format!(
            "a 256 MiB reservation has {} pages, all in one state: hostmem's page map keeps one \
             fill word for it until a part of it changes (then 4 bits a page, {} KiB)",
            LARGE / 4096,
            LARGE / 4096 / 2 / 1024
        )],
    }
}

/// Figure 3: commit 64 KiB, touch, decommit, inside a reservation.
pub fn fig3(plan: &Plan) -> Figure {
    let host = host();
    let host_base = ops::host_commit_reservation(&host);
    let mut space = AddressSpace::new();
    let engine_base = ops::engine_commit_reservation(&mut space);
    let mut raw = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    // SAFETY: `host_base` and `engine_base` were reserved just above for
    // this figure alone and stay live until it is done.
    #[allow(unsafe_code)]
    let mut h = || unsafe { ops::host_commit_touch_decommit(&host, host_base) };
    // SAFETY: as above.
    #[allow(unsafe_code)]
    let mut e = || unsafe { ops::engine_commit_touch_decommit(&mut space, engine_base) };
    let mut r = || ops::raw_commit_touch_decommit(&mut raw);
    let rows = host_engine_raw_rows(
        plan,
        plan.syscall_batch,
        &mut h,
        &mut e,
        &mut r,
        Target::ratio_at_most(1.10),
    );
    drop(raw);
    Figure {
        number: 3,
        title: "VirtualAlloc(MEM_COMMIT) 64 KiB, touch, VirtualFree(MEM_DECOMMIT), inside a 1 MiB reservation".into(),
        reference: "mprotect(RW) + touch + madvise(DONTNEED) + mprotect(NONE)".into(),
        ratio_means: "hostmem / raw, median of paired trials".into(),
        rows,
        notes: vec![
            "the 64 KiB lie 64 KiB into the reservation, so the kernel splits and re-merges the mapping on both sides".into(),
        ],
    }
}

/// Two managers with a few and many live regions, for figures 4–7.
pub struct Populations {
    /// The manager with `few` regions.
    pub few: HostMemoryManager,
    /// Its region bases.
    pub few_bases: Vec<usize>,
    /// The manager with `many` regions (dropped before figure 6).
    pub many: Option<(HostMemoryManager, Vec<usize>)>,
}

impl Populations {
    /// Makes both populations.
    pub fn new(few: usize, many: usize) -> Self {
        let few_host = host();
        let few_bases = ops::host_populate(&few_host, few);
        let many_host = host();
        let many_bases = ops::host_populate(&many_host, many);
        Self {
            few: few_host,
            few_bases,
            many: Some((many_host, many_bases)),
        }
    }
}

fn count_label(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Figure 4: VirtualQuery of a host address at few and many regions.
pub fn fig4(plan: &Plan, pops: &Populations) -> Figure {
    let (many, many_bases) = pops.many.as_ref().expect("the large population");
    const ADDRESSES: usize = 1 << 16;
    let few_addrs = ops::random_addresses(&pops.few_bases, ADDRESSES, 4);
    let many_addrs = ops::random_addresses(many_bases, ADDRESSES, 5);
    let (mut i, mut j) = (0usize, 0usize);
    let mut f = || {
        i = (i + 1) % ADDRESSES;
        black_box(ops::host_query(&pops.few, few_addrs[i]));
    };
    let mut m = || {
        j = (j + 1) % ADDRESSES;
        black_box(ops::host_query(many, many_addrs[j]));
    };
    let few_one = pops.few_bases[pops.few_bases.len() / 2] + 0x1234;
    let many_one = many_bases[many_bases.len() / 2] + 0x1234;
    let mut f1 = || {
        black_box(ops::host_query(&pops.few, black_box(few_one)));
    };
    let mut m1 = || {
        black_box(ops::host_query(many, black_box(many_one)));
    };
    let b = plan.query_batch;
    let s = interleaved(
        plan.trials,
        &mut [
            Side::new(b, &mut f),
            Side::new(b, &mut m),
            Side::new(b, &mut f1),
            Side::new(b, &mut m1),
        ],
    );
    let (nf, nm) = (pops.few_bases.len(), many_bases.len());
    Figure {
        number: 4,
        title: "VirtualQuery of a host address (random, among the live regions)".into(),
        reference: "—".into(),
        ratio_means: format!(
            "{} regions / {} regions, median of paired trials",
            count_label(nm),
            count_label(nf)
        ),
        rows: vec![
            Row::new(
                format!("{} live regions", count_label(nf)),
                Unit::Nanoseconds,
                Some(median(&s[0])),
                None,
                None,
                None,
            ),
            Row::new(
                format!("{} live regions", count_label(nm)),
                Unit::Nanoseconds,
                Some(median(&s[1])),
                None,
                None,
                Some(Target::hostmem_below_ns(100.0)),
            ),
            Row::new(
                format!("{} / {}", count_label(nm), count_label(nf)),
                Unit::Factor,
                None,
                None,
                Some(paired_ratio(&s[1], &s[0])),
                Some(Target::ratio_at_most(1.5)),
            ),
            Row::new(
                format!("{}, one address again and again", count_label(nf)),
                Unit::Nanoseconds,
                Some(median(&s[2])),
                None,
                None,
                None,
            ),
            Row::new(
                format!("{}, one address again and again", count_label(nm)),
                Unit::Nanoseconds,
                Some(median(&s[3])),
                None,
                Some(paired_ratio(&s[3], &s[2])),
                None,
            ),
        ],
        notes: vec![format!(
            "each region is 64 KiB and one kernel mapping (reserved and committed ones alternate, so none merge); the targeted rows query {} random addresses in turn (the index does not stay in cache), the last two one address (cache-warm: the lookup's own cost)",
            count_label(ADDRESSES)
        )],
    }
}

/// Figure 5: VirtualFree of a foreign address at few and many regions.
pub fn fig5(plan: &Plan, pops: &Populations) -> Figure {
    let (many, _) = pops.many.as_ref().expect("the large population");
    // A mapping of the caller's own, as the runtime's: not the host's.
    let mapping = ops::RawMapping::new(4096, ProtFlags::READ | ProtFlags::WRITE);
    let foreign = mapping.addr();
    assert!(ops::host_free_foreign(&pops.few, foreign));
    assert!(ops::host_free_foreign(many, foreign));
    let mut f = || {
        black_box(ops::host_free_foreign(&pops.few, black_box(foreign)));
    };
    let mut m = || {
        black_box(ops::host_free_foreign(many, black_box(foreign)));
    };
    let b = plan.query_batch;
    let s = interleaved(
        plan.trials,
        &mut [Side::new(b, &mut f), Side::new(b, &mut m)],
    );
    drop(mapping);
    let (nf, nm) = (
        pops.few_bases.len(),
        pops.many.as_ref().map_or(0, |m| m.1.len()),
    );
    Figure {
        number: 5,
        title: "VirtualFree(MEM_RELEASE) of a foreign address → HOST_E_INVALIDOPERATION".into(),
        reference: "—".into(),
        ratio_means: format!("{} regions / {} regions", count_label(nm), count_label(nf)),
        rows: vec![
            Row::new(
                format!("{} live regions", count_label(nf)),
                Unit::Nanoseconds,
                Some(median(&s[0])),
                None,
                None,
                None,
            ),
            Row::new(
                format!("{} live regions", count_label(nm)),
                Unit::Nanoseconds,
                Some(median(&s[1])),
                None,
                Some(paired_ratio(&s[1], &s[0])),
                Some(Target::hostmem_below_ns(100.0)),
            ),
        ],
        notes: vec!["the address is a page the caller mapped itself with mmap".into()],
    }
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

/// Figure 6: VirtualQuery vs `region::query` on the same address, with the
/// few-region population alone (about that many kernel mappings).
pub fn fig6(plan: &Plan, pops: &Populations) -> Figure {
    let addr = pops.few_bases[pops.few_bases.len() / 2] + 0x1234;
    let region = region::query(addr as *const u8).expect("region::query");
    let start = region.as_ptr::<u8>() as usize;
    assert!((start..start + region.len()).contains(&addr));
    assert_eq!(
        ops::host_query(&pops.few, addr).allocation_base,
        addr & !0xffff
    );
    let maps = mappings();
    let mut h = || {
        black_box(ops::host_query(&pops.few, black_box(addr)));
    };
    let mut r = || {
        black_box(region::query(black_box(addr) as *const u8).expect("region::query"));
    };
    let s = interleaved(
        plan.trials,
        &mut [
            Side::new(plan.query_batch, &mut h),
            Side::new(plan.region_batch, &mut r),
        ],
    );
    Figure {
        number: 6,
        title: format!(
            "VirtualQuery vs region::query of the same address, {} kernel mappings",
            count_label(maps)
        ),
        reference: "region::query (reads /proc/self/maps)".into(),
        ratio_means: "region::query / hostmem (speed-up), median of paired trials".into(),
        rows: vec![Row::new(
            format!("{} host regions", count_label(pops.few_bases.len())),
            Unit::Nanoseconds,
            Some(median(&s[0])),
            Some(median(&s[1])),
            Some(paired_ratio(&s[1], &s[0])),
            Some(Target::ratio_at_least(1000.0)),
        )],
        notes: vec![],
    }
}

/// Figure 7: 2 threads vs 1, for figure 1's work (against the raw
/// syscalls' own scaling) and for VirtualQuery alone.
pub fn fig7(plan: &Plan, pops: &Populations) -> Figure {
    let host = host();
    let n = plan.thread_ops;
    let q = plan.thread_queries;
    let addrs = ops::random_addresses(&pops.few_bases, 1 << 12, 7);
    let query = || {
        // Each thread walks the addresses from its own point.
        thread_local! {
            static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let i = NEXT.with(|c| {
            let i = c.get();
            c.set(i.wrapping_add(1));
            i
        });
        black_box(ops::host_query(&pops.few, addrs[i % addrs.len()]));
    };
    // The control: the same lookups in a plain map, no lock, no counters:
    // how well this machine runs two CPU-bound threads at all.
    let plain: std::collections::BTreeMap<usize, usize> = pops
        .few_bases
        .iter()
        .map(|&b| (b, b + ops::SMALL))
        .collect();
    let control = || {
        thread_local! {
            static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let i = NEXT.with(|c| {
            let i = c.get();
            c.set(i.wrapping_add(1));
            i
        });
        let a = addrs[i % addrs.len()];
        black_box(plain.range(..=a).next_back().filter(|(_, end)| a < **end));
    };
    let host_work = || ops::host_alloc_touch_free(&host);
    let raw_work = ops::raw_alloc_touch_free;
    // Warm-up.
    throughput(2, n / 10 + 1, &host_work);
    throughput(2, n / 10 + 1, &raw_work);
    throughput(2, q / 10 + 1, &query);
    throughput(2, q / 10 + 1, &control);
    let (mut hs, mut rs, mut ratio) = (vec![], vec![], vec![]);
    let (mut qs, mut cs, mut qratio) = (vec![], vec![], vec![]);
    for trial in 0..plan.trials {
        let mut t = [[0.0; 2]; 4];
        for k in 0..8 {
            let step = (trial + k) % 8;
            let (which, threads) = (step / 2, 1 + step % 2);
            t[which][threads - 1] = match which {
                0 => throughput(threads, n, &host_work),
                1 => throughput(threads, n, &raw_work),
                2 => throughput(threads, q, &query),
                _ => throughput(threads, q, &control),
            };
        }
        let (h, r) = (t[0][1] / t[0][0], t[1][1] / t[1][0]);
        hs.push(h);
        rs.push(r);
        ratio.push(h / r);
        let (qh, qc) = (t[2][1] / t[2][0], t[3][1] / t[3][0]);
        qs.push(qh);
        cs.push(qc);
        qratio.push(qh / qc);
    }
    Figure {
        number: 7,
        title: "2 threads vs 1: total throughput".into(),
        reference: "row 1: the raw syscalls' own 2-thread scaling (mmap/touch/munmap); row 2: a control (see the note)".into(),
        ratio_means: "hostmem's scaling / the reference's scaling, median of trials".into(),
        rows: vec![
            Row::new(
                "figure 1's work, scaling 2 thr / 1 thr",
                Unit::Factor,
                Some(median(&hs)),
                Some(median(&rs)),
                Some(median(&ratio)),
                Some(Target::ratio_at_least(0.9)),
            ),
            Row::new(
                format!(
                    "VirtualQuery ({} regions), 2 thr / 1 thr",
                    count_label(pops.few_bases.len())
                ),
                Unit::Factor,
                Some(median(&qs)),
                Some(median(&cs)),
                Some(median(&qratio)),
                Some(Target::hostmem_at_least(1.5)),
            ),
        ],
        notes: vec![
            format!(
                "{} CPUs; the kernel serialises mmap/munmap of one process on its mmap_lock",
                std::thread::available_parallelism().map_or(1, usize::from)
            ),
            "VirtualQuery's reference is a control: the same lookups in a plain BTreeMap with no lock or counters, i.e. how far this machine lets two CPU-bound threads scale at all (if it is busy, neither scales); its ratio is hostmem's scaling / the control's".into(),
        ],
    }
}

/// Figure 8: IHostMalloc Alloc+Free vs glibc malloc+free, random sizes
/// from 16 to 1024 bytes, each block freed right after it is allocated
/// (and its first byte written).
pub fn fig8(plan: &Plan) -> Figure {
    let host = std::sync::Arc::new(host());
    let (heap, how) = match ops::BenchHeap::com(host.clone()) {
        Ok(heap) => (
            heap,
            "through the COM vtable (IHostMemoryManager::CreateMalloc, IHostMalloc::Alloc/Free)"
                .to_string(),
        ),
        Err(hr) => (
            ops::BenchHeap::rust(&host),
            format!(
                "through the Rust API (HostMalloc::alloc/free): the COM CreateMalloc answered {:#010x}",
                hr.0 as u32
            ),
        ),
    };
    let rust = ops::BenchHeap::rust(&host);
    const SIZES: usize = 1 << 12;
    let sizes = ops::malloc_sizes(SIZES, 8);
    let (mut i, mut j, mut k) = (0usize, 0usize, 0usize);
    let mut h = || {
        i = (i + 1) % SIZES;
        heap.alloc_free(sizes[i]);
    };
    let mut r = || {
        j = (j + 1) % SIZES;
        rust.alloc_free(sizes[j]);
    };
    let mut g = || {
        k = (k + 1) % SIZES;
        ops::libc_malloc_free(sizes[k]);
    };
    let b = plan.malloc_batch;
    let s = interleaved(
        plan.trials,
        &mut [
            Side::new(b, &mut h),
            Side::new(b, &mut r),
            Side::new(b, &mut g),
        ],
    );
    let mut rows = vec![Row::new(
        if heap.is_com() {
            "IHostMalloc via COM vtable"
        } else {
            "IHostMalloc via Rust API"
        },
        Unit::Nanoseconds,
        Some(median(&s[0])),
        Some(median(&s[2])),
        Some(paired_ratio(&s[0], &s[2])),
        Some(Target::ratio_at_most(1.5)),
    )];
    if heap.is_com() {
        rows.push(Row::new(
            "IHostMalloc via Rust API",
            Unit::Nanoseconds,
            Some(median(&s[1])),
            Some(median(&s[2])),
            Some(paired_ratio(&s[1], &s[2])),
            None,
        ));
    }
    Figure {
        number: 8,
        title: "IHostMalloc Alloc + write + Free of random 16–1024 byte sizes (MALLOC_THREADSAFE)"
            .into(),
        reference: "glibc malloc + write + free of the same sizes".into(),
        ratio_means: "hostmem / glibc, median of paired trials".into(),
        rows,
        notes: vec![how],
    }
}
