//! `hostmem bench`: the performance figures, each a median over
//! interleaved trials and, where there is one, a ratio against the raw
//! syscall sequence (or the library a user would pick instead) doing the
//! same work in the same run.
//!
//! 1. reserve+commit 64 KiB, touch one page, release — vs mmap/munmap;
//! 2. reserve 256 MiB and release — vs mmap(PROT_NONE)/munmap;
//! 3. commit 64 KiB, touch, decommit inside a reservation — vs
//!    mprotect / madvise(DONTNEED) / mprotect;
//! 4. VirtualQuery of a host address at 1,000 and 50,000 live regions;
//! 5. VirtualFree of a foreign address at 1,000 and 50,000 live regions;
//! 6. VirtualQuery vs `region::query` at 1,000 mappings;
//! 7. figure 1's work and VirtualQuery from 2 threads vs 1;
//! 8. IHostMalloc Alloc+Free vs glibc malloc+free;
//! 9. figure 3's work on 8 threads, each in its own reservation, vs 8
//!    threads of the raw sequence;
//! 10. a numeric kernel (random gathers over 64 MiB) over memory committed
//!     through hostmem — vs the same kernel over a plain `mmap`, with a
//!     control row of two plain mappings (the noise floor);
//! 11. a collector's round: write 1 % of a 256 MiB `MEM_WRITE_WATCH` heap,
//!     `GetWriteWatch` with reset — vs soft-dirty bits (`/proc/self/pagemap`
//!     and `clear_refs`);
//! 12. commit 1 MiB, first write of each page, decommit, in a watched
//!     reservation — vs an ordinary one.
//!
//! Figures 1–3 are measured through the Rust API ([`HostMemoryManager`])
//! and the flat C API, each on a fresh manager and after a churn phase
//! (2,000 small reservations made and released), and report the worst
//! of the four against the target; the bare [`AddressSpace`] engine is
//! shown too, so the host layer's own cost is visible. The operations themselves are in
//! [`ops`] and [`kernel`], shared with the criterion benches (`benches/engine.rs`).
//!
//! [`HostMemoryManager`]: crate::host::HostMemoryManager
//! [`AddressSpace`]: crate::engine::AddressSpace

mod figures;
pub mod kernel;
mod measure;
pub mod ops;
mod report;
pub mod write_watch;

pub use figures::Plan;
pub use measure::{Side, interleaved, median, paired_ratio, throughput};
pub use report::{
    BenchReport, Comparison, Figure, Machine, Row, Subject, Summary, Target, Unit, Verdict,
};

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Few trials and small batches (seconds, for tests and CI) instead of
    /// the full run (about a minute).
    pub quick: bool,
    /// Overrides the number of interleaved trials, of every figure.
    pub trials: Option<usize>,
    /// The figures to run (1–12); empty: all.
    pub figures: Vec<u8>,
}

impl BenchOptions {
    fn wants(&self, figure: u8) -> bool {
        self.figures.is_empty() || self.figures.contains(&figure)
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count())
}

/// Runs the figures `options` asks for and reports them.
///
/// # Panics
///
/// If the kernel refuses a mapping the benchmark needs (out of memory or
/// of mappings), since no figure could then be trusted.
pub fn run(options: &BenchOptions) -> BenchReport {
    let mut plan = Plan::new(options.quick);
    if let Some(t) = options.trials {
        plan.trials = t.max(1);
        plan.syscall_trials = t.max(1);
    }
    let machine = Machine {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        kernel: kernel_release(),
        max_map_count: max_map_count(),
        mappings_at_start: mappings(),
        load_average: load_average(),
    };
    // Each region is one kernel mapping: keep clear of vm.max_map_count.
    let mut room_notes = Vec::new();
    if let Some(max) = machine.max_map_count {
        let room =
            (max as usize).saturating_sub(machine.mappings_at_start + 2_000 + plan.few_regions);
        if room < plan.many_regions {
            room_notes.push(format!(
                "vm.max_map_count {max} leaves room for {room} regions, not {}",
                plan.many_regions
            ));
            plan.many_regions = room.max(1);
        }
    }
    let mut figures = Vec::new();
    // Figures 1–3 in every condition: first on fresh managers (the C API's
    // default manager as the process found it), then after a churn phase
    // (the default manager churned once, between the two).
    let syscall: Vec<u8> = (1..=3).filter(|&f| options.wants(f)).collect();
    let syscall_plan = Plan {
        trials: plan.syscall_trials,
        ..plan
    };
    let mut measured: Vec<Vec<figures::Measured>> = syscall.iter().map(|_| Vec::new()).collect();
    for state in [figures::State::Fresh, figures::State::Churned] {
        if state == figures::State::Churned && !syscall.is_empty() {
            ops::flat::churn();
        }
        for (i, &number) in syscall.iter().enumerate() {
            for face in [figures::Face::Rust, figures::Face::C] {
                measured[i].push(figures::measure_syscall(&syscall_plan, number, face, state));
            }
        }
    }
    for (i, &number) in syscall.iter().enumerate() {
        figures.push(figures::syscall_figure(&syscall_plan, number, &measured[i]));
    }
    if (4..=7).any(|f| options.wants(f)) {
        let many = if options.wants(4) || options.wants(5) {
            plan.many_regions
        } else {
            0
        };
        let mut pops = figures::Populations::new(plan.few_regions, many);
        if options.wants(4) {
            let mut f = figures::fig4(&plan, &pops);
            f.notes.extend(room_notes.iter().cloned());
            figures.push(f);
        }
        if options.wants(5) {
            figures.push(figures::fig5(&plan, &pops));
        }
        // Figure 6 wants about 1,000 kernel mappings: the large population
        // goes first.
        pops.many = None;
        if many > 0 {
            // The same figures through the C API, on the default manager
            // (the Rust population is gone: both would not fit under
            // vm.max_map_count).
            let (query, free) = figures::c_api_query_rows(&plan, many);
            for f in figures.iter_mut() {
                match f.number {
                    4 => f.rows.insert(2, query.clone()),
                    5 => f.rows.push(free.clone()),
                    _ => {}
                }
            }
        }
        if options.wants(6) {
            figures.push(figures::fig6(&plan, &pops));
        }
        if options.wants(7) {
            figures.push(figures::fig7(&plan, &pops));
        }
    }
    if options.wants(8) {
        figures.push(figures::fig8(&plan));
    }
    if options.wants(9) {
        figures.push(figures::fig9(&plan));
    }
    if options.wants(10) {
        figures.push(kernel::fig10(plan.trials));
    }
    let watch_batch = if options.quick { 2 } else { 5 };
    if options.wants(11) {
        figures.push(write_watch::fig11(plan.trials, watch_batch));
    }
    if options.wants(12) {
        figures.push(write_watch::fig12(plan.trials, watch_batch * 4));
    }
    let summary = BenchReport::tally(&figures);
    BenchReport {
        version: env!("CARGO_PKG_VERSION"),
        quick: options.quick,
        trials: plan.trials,
        syscall_trials: plan.syscall_trials,
        machine,
        figures,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole quick run: every figure present, judged, printable and
    /// serialisable. (Timing targets are not asserted: a test machine's
    /// load decides them.)
    #[test]
    #[ignore = "takes a few seconds and 51,000 mappings; run with --ignored"]
    fn quick_run_reports_every_figure() {
        let _serial = crate::ffi::flat::tests::serial();
        let report = run(&BenchOptions {
            quick: true,
            ..Default::default()
        });
        assert_eq!(
            report.figures.iter().map(|f| f.number).collect::<Vec<_>>(),
            (1..=12).collect::<Vec<_>>()
        );
        let text = report.to_string();
        assert!(text.contains("targets:"), "{text}");
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains("\"figures\""));
        println!("{report}");
    }

    /// Prints a full run: `cargo test --release --lib bench::tests::full_report -- --ignored --nocapture`.
    #[test]
    #[ignore = "the full benchmark (about a minute); run with --ignored"]
    fn full_report() {
        let _serial = crate::ffi::flat::tests::serial();
        let report = run(&BenchOptions::default());
        println!("{report}");
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }

    #[test]
    fn a_single_cheap_figure_runs() {
        // Figure 2 reserves through the flat API's default manager, whose
        // statistics the flat API's tests compare.
        let _serial = crate::ffi::flat::tests::serial();
        let report = run(&BenchOptions {
            quick: true,
            trials: Some(2),
            figures: vec![2, 8],
        });
        assert_eq!(report.figures.len(), 2);
        assert_eq!(
            (report.trials, report.syscall_trials),
            (2, 2),
            "--trials sets both"
        );
        for figure in &report.figures {
            assert!(figure.rows[0].hostmem.is_some_and(|ns| ns > 0.0));
            assert!(figure.rows[0].ratio.is_some_and(|r| r > 0.0));
        }
    }

    #[test]
    fn figure_3_also_measures_the_c_api_against_libc_and_the_floor() {
        let _serial = crate::ffi::flat::tests::serial();
        let report = run(&BenchOptions {
            quick: true,
            trials: Some(2),
            figures: vec![3],
        });
        let rows = &report.figures[0].rows;
        let libc = rows
            .iter()
            .find(|row| row.label == "C API, reference through libc")
            .expect("the libc row");
        assert!(libc.hostmem.is_some_and(|ns| ns > 0.0));
        assert!(libc.reference.is_some_and(|ns| ns > 0.0));
        assert!(libc.target.is_none(), "information, not the target");
        let floor = rows
            .iter()
            .find(|row| row.label.starts_with("floor"))
            .expect("the floor row");
        assert!(floor.hostmem.is_some_and(|ns| ns > 0.0));
        assert!(floor.ratio.is_some_and(|r| r > 0.0));
        assert!(floor.target.is_none(), "information, not the target");
        assert!(rows[0].target.is_some(), "the worst condition carries it");
        let control = rows
            .iter()
            .find(|row| row.label.starts_with("control"))
            .expect("the control row");
        assert!(control.ratio.is_some_and(|r| r > 0.0));
        assert!(control.target.is_none(), "information, not a target");
        // Only the conditions compete for the worst: not the control,
        // whose two sides are both the reference.
        let conditions = rows
            .iter()
            .filter(|row| row.label.starts_with("Rust API") || row.label.starts_with("C API, "))
            .filter(|row| !row.label.contains("libc"))
            .filter_map(|row| row.ratio)
            .fold(f64::MIN, f64::max);
        assert_eq!(rows[0].ratio, Some(conditions));
    }
}
