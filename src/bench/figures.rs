//! The figures of `hostmem bench`, each measured against its reference in
//! the same loop.

use super::measure::{Side, interleaved, median, paired_ratio, throughput};
use super::ops::{self, LARGE};
use super::report::{Figure, Row, Target, Unit};
use crate::engine::AddressSpace;
use crate::host::{HostConfig, HostMemoryManager};
use rustix::mm::ProtFlags;
use std::hint::black_box;
use std::time::Duration;

/// How much work each figure does.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Interleaved trials per figure, but for figures 1–3.
    pub trials: usize,
    /// Interleaved trials for figures 1–3, whose targets lie within a few
    /// per cent of their references and are held by the worst of four
    /// conditions: the worst of four medians reads high by about the
    /// uncertainty of one, which shrinks as the trials grow (with 31, an
    /// API that does nothing but the system calls read up to 1.066 on
    /// figure 3; with 301, 1.027 at most).
    pub syscall_trials: usize,
    /// Operations per batch for figures 1 and 3 (a few µs each).
    pub syscall_batch: usize,
    /// Operations per batch for figure 2.
    pub reserve_batch: usize,
    /// Queries (or foreign frees) per batch, figures 4 and 5.
    pub query_batch: usize,
    /// `region::query` calls per batch, figure 6.
    pub region_batch: usize,
    /// How long each multi-threaded phase runs, figures 7 and 9: tens of
    /// milliseconds, so that starting and waking the threads (a scheduler
    /// tick, a late CPU) is a small part of it.
    pub thread_window: Duration,
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
                syscall_trials: 7,
                syscall_batch: 40,
                reserve_batch: 40,
                query_batch: 4_000,
                region_batch: 1,
                thread_window: Duration::from_millis(5),
                malloc_batch: 4_000,
                few_regions: 1_000,
                many_regions: 50_000,
            }
        } else {
            Self {
                trials: 31,
                syscall_trials: 301,
                syscall_batch: 200,
                reserve_batch: 200,
                query_batch: 20_000,
                region_batch: 3,
                thread_window: Duration::from_millis(25),
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

/// The state of the manager a figure is measured on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// A manager that has made no reservation yet.
    Fresh,
    /// A manager after the churn phase ([`ops::host_churn`]): 2,000 small reservations made,
    /// touched and released in random order.
    Churned,
}

/// The face a figure is measured through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Face {
    /// The Rust API, [`HostMemoryManager`]'s methods (a manager of its own).
    Rust,
    /// The flat C API, `hostmem_Virtual*` (the process's default manager).
    C,
}

/// One condition of a syscall figure (1–3): hostmem's and the raw
/// sequence's samples, interleaved.
pub struct Measured {
    face: Face,
    state: State,
    host: Vec<f64>,
    raw: Vec<f64>,
}

fn pair(plan: &Plan, batch: usize, host: &mut dyn FnMut(), raw: &mut dyn FnMut()) -> [Vec<f64>; 2] {
    let mut s = interleaved(
        plan.trials,
        &mut [Side::new(batch, host), Side::new(batch, raw)],
    );
    let raw = s.pop().expect("two sides");
    [s.pop().expect("two sides"), raw]
}

/// Measures syscall figure `number` (1–3) through `face` on a manager in
/// `state`. Through the C API the default manager is used as it is: the
/// caller churns it between the fresh and the churned runs
/// ([`ops::flat::churn`]).
pub fn measure_syscall(plan: &Plan, number: u8, face: Face, state: State) -> Measured {
    let manager = host();
    if state == State::Churned && face == Face::Rust {
        ops::host_churn(&manager);
    }
    let [host, raw] = match (number, face) {
        (1, Face::Rust) => pair(
            plan,
            plan.syscall_batch,
            &mut || ops::host_alloc_touch_free(&manager),
            &mut ops::raw_alloc_touch_free,
        ),
        (1, Face::C) => pair(
            plan,
            plan.syscall_batch,
            &mut ops::flat::alloc_touch_free,
            &mut ops::raw_alloc_touch_free,
        ),
        (2, Face::Rust) => pair(
            plan,
            plan.reserve_batch,
            &mut || ops::host_reserve_release(&manager),
            &mut ops::raw_reserve_release,
        ),
        (2, Face::C) => pair(
            plan,
            plan.reserve_batch,
            &mut ops::flat::reserve_release,
            &mut ops::raw_reserve_release,
        ),
        (_, Face::Rust) => commit_samples(plan, Some(&manager), ops::raw_commit_touch_decommit),
        (_, Face::C) => commit_samples(plan, None, ops::raw_commit_touch_decommit),
    };
    Measured {
        face,
        state,
        host,
        raw,
    }
}

/// The bare engine's samples for syscall figure `number`, against raw.
#[allow(unsafe_code)] // calls the writers of figure 3, each on a reservation of its own
fn measure_engine(plan: &Plan, number: u8) -> [Vec<f64>; 2] {
    let mut space = AddressSpace::new();
    match number {
        1 => pair(
            plan,
            plan.syscall_batch,
            &mut || ops::engine_alloc_touch_free(&mut space),
            &mut ops::raw_alloc_touch_free,
        ),
        2 => pair(
            plan,
            plan.reserve_batch,
            &mut || ops::engine_reserve_release(&mut space),
            &mut ops::raw_reserve_release,
        ),
        _ => {
            let base = ops::engine_commit_reservation(&mut space);
            let mut raw = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
            pair(
                plan,
                plan.syscall_batch,
                // SAFETY: `base` is the reservation made just above for
                // this figure alone.
                &mut || unsafe { ops::engine_commit_touch_decommit(&mut space, base) },
                &mut || ops::raw_commit_touch_decommit(&mut raw),
            )
        }
    }
}

/// The reference of syscall figure `number` against itself: the run's
/// noise floor for the ratios of that figure.
fn measure_control(plan: &Plan, number: u8) -> [Vec<f64>; 2] {
    match number {
        1 => pair(
            plan,
            plan.syscall_batch,
            &mut ops::raw_alloc_touch_free,
            &mut ops::raw_alloc_touch_free,
        ),
        2 => pair(
            plan,
            plan.reserve_batch,
            &mut ops::raw_reserve_release,
            &mut ops::raw_reserve_release,
        ),
        _ => raw_commit_pair(
            plan,
            ops::raw_commit_touch_decommit,
            ops::raw_commit_touch_decommit,
        ),
    }
}

/// Two of figure 3's raw sequences against each other, each in a mapping
/// of its own.
fn raw_commit_pair(
    plan: &Plan,
    first: impl Fn(&mut ops::RawMapping),
    second: impl Fn(&mut ops::RawMapping),
) -> [Vec<f64>; 2] {
    let mut a = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    let mut b = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    pair(plan, plan.syscall_batch, &mut || first(&mut a), &mut || {
        second(&mut b)
    })
}

/// Figure 3's samples: hostmem's, in a reservation made for them on
/// `host` through the Rust API (`None`: through the C API, on the
/// process's default manager, and released afterwards), against
/// `reference` in a raw mapping of the same size.
#[allow(unsafe_code)] // calls the writers of figure 3, each on a reservation of its own
fn commit_samples(
    plan: &Plan,
    host: Option<&HostMemoryManager>,
    reference: impl Fn(&mut ops::RawMapping),
) -> [Vec<f64>; 2] {
    let base = match host {
        Some(manager) => ops::host_commit_reservation(manager),
        None => ops::flat::commit_reservation(),
    };
    let mut raw = ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty());
    let samples = pair(
        plan,
        plan.syscall_batch,
        // SAFETY: `base` is the reservation made just above for these
        // samples alone.
        &mut || unsafe {
            match host {
                Some(manager) => ops::host_commit_touch_decommit(manager, base),
                None => ops::flat::commit_touch_decommit(base),
            }
        },
        &mut || reference(&mut raw),
    );
    if host.is_none() {
        assert!(ops::flat::free(base, 0, crate::win32::FreeType::RELEASE));
    }
    samples
}

/// Figure `number` (1–3) from its conditions: a row for each (information),
/// the bare engine's, for figure 3 the C API's against the calls made
/// through libc, a control (the reference against itself), and the worst
/// condition's, which carries the target.
pub fn syscall_figure(plan: &Plan, number: u8, measured: &[Measured]) -> Figure {
    let (title, reference, target, note) = match number {
        1 => (
            "VirtualAlloc(MEM_RESERVE|MEM_COMMIT) 64 KiB, touch one page, VirtualFree(MEM_RELEASE)",
            "mmap(NULL, 64 KiB, RW) + touch + munmap",
            1.03,
            "both sides map MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE; the raw side takes the kernel's placement (mmap at NULL), hostmem its own 64 KiB-aligned address (MAP_FIXED_NOREPLACE)",
        ),
        2 => (
            "VirtualAlloc(MEM_RESERVE) 256 MiB, VirtualFree(MEM_RELEASE)",
            "mmap(NULL, 256 MiB, PROT_NONE) + munmap",
            1.05,
            "reservations of 2 MiB and more have an area of their own, 2 MiB aligned, so small ones' page tables never lie under them",
        ),
        _ => (
            "VirtualAlloc(MEM_COMMIT) 64 KiB, touch, VirtualFree(MEM_DECOMMIT), inside a 1 MiB reservation",
            "mprotect(RW) + touch + madvise(DONTNEED) + mprotect(NONE)",
            1.03,
            "the 64 KiB lie 64 KiB into the reservation, so the kernel splits and re-merges the mapping on both sides",
        ),
    };
    let mut rows = Vec::new();
    let mut worst: Option<(f64, &Measured)> = None;
    for m in measured {
        let ratio = paired_ratio(&m.host, &m.raw);
        let label = format!(
            "{}, {}",
            match m.face {
                Face::Rust => "Rust API",
                Face::C => "C API",
            },
            match m.state {
                State::Fresh => "fresh manager",
                State::Churned => "after churn",
            }
        );
        rows.push(Row::new(
            label,
            Unit::Nanoseconds,
            Some(median(&m.host)),
            Some(median(&m.raw)),
            Some(ratio),
            None,
        ));
        if worst.is_none_or(|(w, _)| ratio > w) {
            worst = Some((ratio, m));
        }
    }
    if let Some((ratio, m)) = worst {
        rows.insert(
            0,
            Row::new(
                "worst of the conditions below",
                Unit::Nanoseconds,
                Some(median(&m.host)),
                Some(median(&m.raw)),
                Some(ratio),
                Some(Target::ratio_at_most(target)),
            ),
        );
    }
    let [engine, raw] = measure_engine(plan, number);
    rows.push(Row::paired(
        "bare engine (AddressSpace), fresh",
        &engine,
        &raw,
        None,
    ));
    if number == 3 {
        let [host, libc] = commit_samples(plan, None, ops::libc_commit_touch_decommit);
        rows.push(Row::paired(
            "C API, reference through libc",
            &host,
            &libc,
            None,
        ));
        let [api, inline] = raw_commit_pair(
            plan,
            ops::api_floor_commit_touch_decommit,
            ops::raw_commit_touch_decommit,
        );
        rows.push(Row::paired(
            "floor: bare calls in two functions",
            &api,
            &inline,
            None,
        ));
    }
    let [first, second] = measure_control(plan, number);
    rows.push(Row::paired(
        "control: the reference against itself",
        &first,
        &second,
        None,
    ));
    let mut notes = vec![note.to_string()];
    if number == 3 {
        notes.push("the reference makes its three system calls inline in one function, while each API call returns after its system call, as libc's wrappers do; the first return after a system call can cost far more than others (about 120 cycles on the machine docs/performance.md describes): the row \"C API, reference through libc\" compares the C API with the calls made through libc".into());
        notes.push("floor: the reference's own system calls in a commit function and a decommit function, each returning after its calls, against the same calls inline: an API that does nothing else, so what any API reads here before any work of its own".into());
    }
    if number == 2 {
        notes.push(format!(
            "a 256 MiB reservation has {} pages, all in one state: hostmem's page map keeps one fill word for it until a part of it changes",
            LARGE / 4096
        ));
    }
    notes.push("churn: 2,000 reservations of 64 KiB made, touched and released in random order (64 live at a time); the C API runs on the process's default manager, churned once between its fresh and churned runs".into());
    notes.push("control: the reference's work timed against itself in the same loop (for figure 3, each side in a mapping of its own), with nothing of hostmem's: how far the run's noise alone moves a ratio".into());
    Figure {
        number,
        title: title.into(),
        reference: reference.into(),
        ratio_means: "hostmem / raw, median of paired trials".into(),
        rows,
        notes,
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
                Some(Target::hostmem_below_ns(20.0)),
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
                Some(Target::hostmem_below_ns(20.0)),
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
    let window = plan.thread_window;
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
    for work in [
        &host_work as &(dyn Fn() + Sync),
        &raw_work,
        &query,
        &control,
    ] {
        throughput(2, window / 5, work);
    }
    let (mut hs, mut rs, mut ratio) = (vec![], vec![], vec![]);
    let (mut qs, mut cs, mut qratio) = (vec![], vec![], vec![]);
    for trial in 0..plan.trials {
        let mut t = [[0.0; 2]; 4];
        for k in 0..8 {
            let step = (trial + k) % 8;
            let (which, threads) = (step / 2, 1 + step % 2);
            t[which][threads - 1] = match which {
                0 => throughput(threads, window, &host_work),
                1 => throughput(threads, window, &raw_work),
                2 => throughput(threads, window, &query),
                _ => throughput(threads, window, &control),
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
                Some(Target::hostmem_at_least(1.8)),
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
    let mut rows = vec![Row::paired(
        if heap.is_com() {
            "IHostMalloc via COM vtable"
        } else {
            "IHostMalloc via Rust API"
        },
        &s[0],
        &s[2],
        Some(Target::ratio_at_most(1.2)),
    )];
    if heap.is_com() {
        rows.push(Row::paired("IHostMalloc via Rust API", &s[1], &s[2], None));
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

/// Figure 9: 8 threads, each committing, touching and decommitting 64 KiB
/// in a reservation of its own (figure 3's work), against 8 threads doing
/// the raw `mprotect`/`madvise` sequence each in a mapping of its own;
/// total throughput, hostmem / raw.
#[allow(unsafe_code)] // calls the writers of figure 3, each on a reservation of its own
pub fn fig9(plan: &Plan) -> Figure {
    const THREADS: usize = 8;
    // Eight threads share the CPUs in time slices of a few milliseconds:
    // a window of several rounds of them.
    let window = plan.thread_window * 4;
    let fresh = host();
    let churned = host();
    ops::host_churn(&churned);
    let fresh_bases: Vec<usize> = (0..THREADS)
        .map(|_| ops::host_commit_reservation(&fresh))
        .collect();
    let churned_bases: Vec<usize> = (0..THREADS)
        .map(|_| ops::host_commit_reservation(&churned))
        .collect();
    let c_bases: Vec<usize> = (0..THREADS)
        .map(|_| ops::flat::commit_reservation())
        .collect();
    let raw_mappings: Vec<ops::RawMapping> = (0..THREADS)
        .map(|_| ops::RawMapping::new(ops::COMMIT_RESERVATION, ProtFlags::empty()))
        .collect();
    // Each thread takes the next reservation of the set it works in.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let run = |which: usize| -> f64 {
        next.store(0, std::sync::atomic::Ordering::Relaxed);
        let work = || {
            thread_local! {
                static MINE: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((usize::MAX, 0)) };
            }
            // A thread keeps its reservation for the whole run: its index
            // is picked once per (run, thread), so no two threads share one.
            let i = MINE.with(|m| {
                let (tag, i) = m.get();
                if tag == which {
                    i
                } else {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % THREADS;
                    m.set((which, i));
                    i
                }
            });
            // SAFETY: reservation (or mapping) `i` of a set made above for
            // this figure alone, and only this thread works in it during
            // the run (each thread takes its own index).
            unsafe {
                match which {
                    0 => ops::host_commit_touch_decommit(&fresh, fresh_bases[i]),
                    1 => ops::host_commit_touch_decommit(&churned, churned_bases[i]),
                    2 => ops::flat::commit_touch_decommit(c_bases[i]),
                    _ => ops::raw_commit_touch_decommit_shared(&raw_mappings[i]),
                }
            }
        };
        throughput(THREADS, window, &work)
    };
    // Warm-up, then trials rotating which side goes first; each thread's
    // tag is reset by a side change, so a new run picks again.
    for which in 0..4 {
        run(which);
    }
    let mut t = [vec![], vec![], vec![], vec![]];
    for trial in 0..plan.trials {
        for k in 0..4 {
            let which = (trial + k) % 4;
            t[which].push(run(which));
        }
    }
    // Throughputs: hostmem / raw is the ratio (higher is better).
    let ratios: Vec<Vec<f64>> = (0..3)
        .map(|i| t[i].iter().zip(&t[3]).map(|(h, r)| h / r).collect())
        .collect();
    let labels = [
        "Rust API, fresh manager",
        "Rust API, after churn",
        "C API (default manager)",
    ];
    let worst = (0..3)
        .min_by(|&a, &b| median(&ratios[a]).total_cmp(&median(&ratios[b])))
        .expect("three rows");
    let per_op = |tput: &[f64]| 1e9 / median(tput) * THREADS as f64;
    let mut rows = vec![Row::new(
        "worst of the conditions below",
        Unit::Nanoseconds,
        Some(per_op(&t[worst])),
        Some(per_op(&t[3])),
        Some(median(&ratios[worst])),
        Some(Target::ratio_at_least(0.9)),
    )];
    for i in 0..3 {
        rows.push(Row::new(
            labels[i],
            Unit::Nanoseconds,
            Some(per_op(&t[i])),
            Some(per_op(&t[3])),
            Some(median(&ratios[i])),
            None,
        ));
    }
    drop(raw_mappings);
    for base in c_bases {
        assert!(ops::flat::free(base, 0, crate::win32::FreeType::RELEASE));
    }
    Figure {
        number: 9,
        title: format!("{THREADS} threads: VirtualAlloc(MEM_COMMIT) 64 KiB, touch, VirtualFree(MEM_DECOMMIT), each thread in a reservation of its own"),
        reference: format!("{THREADS} threads: mprotect(RW) + touch + madvise(DONTNEED) + mprotect(NONE), each in a mapping of its own"),
        ratio_means: "hostmem's total throughput / raw's, median of trials (the ns columns: wall time per operation per thread)".into(),
        rows,
        notes: vec![format!(
            "{} CPUs; the kernel serialises these calls of one process on its mmap_lock",
            std::thread::available_parallelism().map_or(1, usize::from)
        )],
    }
}

/// Figures 4 and 5 through the flat C API: `many` regions made in the
/// process's default manager (as [`ops::host_populate`] makes them), then
/// `VirtualQuery` of random host addresses and `VirtualFree` of a foreign
/// page, interleaved; the regions are released afterwards. Returns the
/// two rows, each with its figure's target.
pub fn c_api_query_rows(plan: &Plan, many: usize) -> (Row, Row) {
    const ADDRESSES: usize = 1 << 16;
    let bases = ops::flat::populate(many);
    let addrs = ops::random_addresses(&bases, ADDRESSES, 5);
    let mapping = ops::RawMapping::new(4096, ProtFlags::READ | ProtFlags::WRITE);
    let foreign = mapping.addr();
    assert!(!ops::flat::free(
        foreign,
        0,
        crate::win32::FreeType::RELEASE
    ));
    let mut i = 0usize;
    let mut q = || {
        i = (i + 1) % ADDRESSES;
        black_box(ops::flat::query(addrs[i]));
    };
    let mut f = || {
        black_box(ops::flat::free(
            black_box(foreign),
            0,
            crate::win32::FreeType::RELEASE,
        ));
    };
    let b = plan.query_batch;
    let s = interleaved(
        plan.trials,
        &mut [Side::new(b, &mut q), Side::new(b, &mut f)],
    );
    drop(mapping);
    for base in bases {
        assert!(ops::flat::free(base, 0, crate::win32::FreeType::RELEASE));
    }
    let label = format!("{} live regions, C API", count_label(many));
    (
        Row::new(
            label.clone(),
            Unit::Nanoseconds,
            Some(median(&s[0])),
            None,
            None,
            Some(Target::hostmem_below_ns(20.0)),
        ),
        Row::new(
            label,
            Unit::Nanoseconds,
            Some(median(&s[1])),
            None,
            None,
            Some(Target::hostmem_below_ns(20.0)),
        ),
    )
}
