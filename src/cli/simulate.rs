//! `hostmem simulate`: runs the workload against a manager under a budget,
//! with a progress bar, and reports what happened.

use super::map::AddressMap;
use super::svg::PlotData;
use super::units::bytes;
use super::workload::{Actor, World};
use hostmem::host::{
    HResult, HostConfig, HostMemoryManager, MemoryAvailable, MemoryBudget, MemoryCriticalLevel,
    Method, Statistics,
};
use hostmem::trace::{TraceSink, hresult_to_string, level_name};
use hostmem::win32::Protection;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

/// How to run the workload.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    /// The manager's budget in bytes.
    pub budget: u64,
    /// Steps per thread; `None`: until `duration`.
    pub steps: Option<u64>,
    /// Stop after this long, whatever the steps.
    pub duration: Option<Duration>,
    /// Runtime threads.
    pub threads: usize,
    /// The seed of every choice.
    pub seed: u64,
    /// Mutator work between two steps of a thread.
    pub think: Duration,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Calls and failures of one method.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MethodCalls {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
}

/// The failures with one HRESULT.
#[derive(Clone, Debug, Serialize)]
pub struct HresultFailures {
    /// Its name.
    pub hresult: String,
    /// Its bits, in hex.
    pub code: String,
    /// How many.
    pub count: u64,
    /// How many by method.
    pub by_method: BTreeMap<String, u64>,
}

/// A peak and the value at the end of the workload.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PeakAndFinal {
    /// The most at any moment.
    pub peak: u64,
    /// At the end of the workload, before it gave everything back.
    #[serde(rename = "final")]
    pub at_end: u64,
}

/// Notifications delivered, by state.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct NotificationCounts {
    /// All of them (the manager's count).
    pub delivered: u64,
    /// `eMemoryAvailableLow`.
    pub low: u64,
    /// `eMemoryAvailableNeutral`.
    pub neutral: u64,
    /// `eMemoryAvailableHigh`.
    pub high: u64,
}

/// The settings of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSettings {
    /// Runtime threads.
    pub threads: usize,
    /// Steps per thread, if bounded.
    pub steps_per_thread: Option<u64>,
    /// The time limit, if any.
    pub duration_seconds: Option<f64>,
    /// The seed.
    pub seed: u64,
    /// The budget.
    pub budget_bytes: u64,
    /// Mutator work between steps, microseconds.
    pub think_us: u64,
}

/// What `hostmem simulate` reports.
#[derive(Clone, Debug, Serialize)]
pub struct SimulationReport {
    /// How it ran.
    pub settings: RunSettings,
    /// Steps done.
    pub steps: u64,
    /// Seconds it took, teardown included.
    pub wall_seconds: f64,
    /// Garbage collections.
    pub collections: u64,
    /// Allocations refused at every critical level.
    pub out_of_memory: u64,
    /// Calls by method (teardown included).
    pub calls: BTreeMap<String, MethodCalls>,
    /// Failures by HRESULT.
    pub failures_by_hresult: Vec<HresultFailures>,
    /// Budget refusals by the critical level asked for.
    pub refusals_by_level: BTreeMap<String, u64>,
    /// Budget refusals by what asked.
    pub refusals_by_source: BTreeMap<String, u64>,
    /// Committed bytes.
    pub committed: PeakAndFinal,
    /// Reserved bytes (the peak as sampled).
    pub reserved: PeakAndFinal,
    /// Bytes of the runtime's own mappings at the end.
    pub runtime_mapped_final: u64,
    /// Notifications delivered.
    pub notifications: NotificationCounts,
    /// Failures the workload did not expect (there should be none).
    pub unexpected_failures: Vec<String>,
    /// The trace written, if `HOSTMEM_TRACE` was set.
    pub trace: Option<String>,
    /// The plot written, if asked for.
    pub plot: Option<String>,
    /// The address-space map at the end of the workload.
    pub map: AddressMap,
}

/// A method's name for people: `VirtualAlloc`, `IHostMalloc::Alloc`.
pub fn method_name(m: Method) -> String {
    let debug = format!("{m:?}");
    match debug.strip_prefix("Malloc") {
        Some(rest) => format!("IHostMalloc::{rest}"),
        None => debug,
    }
}

fn label_of(world: &World, r: &hostmem::unstable::engine::Reservation) -> (Option<String>, String) {
    let owner = match world.owners.lock().get(&r.base()) {
        Some(owner) => owner.clone(),
        None if r.allocation_protect().base() == Protection::EXECUTE_READWRITE => {
            "JIT code heap (IHostMalloc)".to_owned()
        }
        None => "loader heap (IHostMalloc)".to_owned(),
    };
    (None, owner)
}

/// Runs the workload; returns the report and the data for a plot.
pub fn simulate(options: &SimulateOptions) -> Result<(SimulationReport, PlotData), String> {
    let config = HostConfig {
        budget_bytes: Some(options.budget),
        ..HostConfig::default()
    };
    let budget = MemoryBudget::new(options.budget, config.critical_level_percent);
    let high = options.budget * u64::from(config.high_memory_percent) / 100;
    let low = options.budget * u64::from(config.low_memory_percent) / 100;
    let percents = (
        config.low_memory_percent,
        config.high_memory_percent,
        config.critical_level_percent,
    );
    let host = HostMemoryManager::new(config).map_err(|e| e.to_string())?;
    let world = World::new(host.clone())?;
    let start = world.start;

    let threads: Vec<_> = (1..=options.threads)
        .map(|id| {
            let mut actor = Actor::new(world.clone(), id, options.seed);
            let (steps, think) = (options.steps, options.think);
            std::thread::Builder::new()
                .name(format!("runtime-{id}"))
                .spawn(move || {
                    actor.run(steps, think);
                    actor
                })
                .map_err(|e| format!("cannot start a thread: {e}"))
        })
        .collect::<Result<_, _>>()?;

    let bar = progress_bar(options);
    let mut samples = Vec::new();
    let mut peak_reserved = 0u64;
    let sample = |samples: &mut Vec<(f64, u64, u64, u64)>, s: &Statistics| {
        let committed = s.committed_bytes as u64;
        samples.push((
            start.elapsed().as_secs_f64(),
            committed,
            s.reserved_bytes as u64,
            committed + s.acquired_bytes as u64,
        ));
    };
    loop {
        let s = host.statistics();
        peak_reserved = peak_reserved.max(s.reserved_bytes as u64);
        sample(&mut samples, &s);
        let steps = world.steps.load(std::sync::atomic::Ordering::Relaxed);
        let elapsed = start.elapsed();
        match options.steps {
            Some(_) => bar.set_position(steps),
            None => bar.set_position(elapsed.as_millis() as u64),
        }
        let committed = format!(
            "committed {} / {}",
            bytes(s.committed_bytes as u64),
            bytes(options.budget)
        );
        bar.set_message(match options.steps {
            Some(_) => committed,
            None => format!("{steps} steps · {committed}"),
        });
        if options.duration.is_some_and(|d| elapsed >= d) {
            world.stop();
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bar.finish_and_clear();
    let actors: Vec<Actor> = threads
        .into_iter()
        .map(|t| t.join().map_err(|_| "a runtime thread panicked".to_owned()))
        .collect::<Result<_, _>>()?;
    let steps = world.steps.load(std::sync::atomic::Ordering::Relaxed);

    // The state at the end of the workload.
    let at_end = host.statistics();
    sample(&mut samples, &at_end);
    let mut map = AddressMap::capture(&host, |r| label_of(&world, r))?;
    map.mappings = world
        .mappings
        .lock()
        .iter()
        .map(|(&base, (size, owner))| super::map::MapMapping {
            name: None,
            base: base as u64,
            size: *size as u64,
            owner: owner.clone(),
        })
        .collect();

    // Teardown: each thread gives back what it holds, the heaps go, the
    // manager shuts down.
    for actor in actors {
        actor.finish();
    }
    world.drop_heaps();
    host.register_memory_notification(None)
        .map_err(|e| format!("unregistering the callback failed: {}", e.hresult()))?;
    let stats = host.statistics();
    host.shutdown();
    let wall_seconds = start.elapsed().as_secs_f64();

    let notifications = world.pressure.log();
    let refusals = world.refusals.lock().clone();
    let count = |state| notifications.iter().filter(|n| n.1 == state).count() as u64;
    let report = SimulationReport {
        settings: RunSettings {
            threads: options.threads,
            steps_per_thread: options.steps,
            duration_seconds: options.duration.map(|d| d.as_secs_f64()),
            seed: options.seed,
            budget_bytes: options.budget,
            think_us: options.think.as_micros() as u64,
        },
        steps,
        wall_seconds,
        collections: world.collections.load(std::sync::atomic::Ordering::Relaxed),
        out_of_memory: world
            .out_of_memory
            .load(std::sync::atomic::Ordering::Relaxed),
        calls: calls_by_method(&stats),
        failures_by_hresult: failures_by_hresult(&stats),
        refusals_by_level: {
            let mut m = BTreeMap::new();
            for r in &refusals {
                *m.entry(level_name(r.level).to_owned()).or_default() += 1;
            }
            m
        },
        refusals_by_source: {
            let mut m = BTreeMap::new();
            for r in &refusals {
                *m.entry(r.source.to_owned()).or_default() += 1;
            }
            m
        },
        committed: PeakAndFinal {
            peak: stats.peak_committed_bytes as u64,
            at_end: at_end.committed_bytes as u64,
        },
        reserved: PeakAndFinal {
            peak: peak_reserved,
            at_end: at_end.reserved_bytes as u64,
        },
        runtime_mapped_final: at_end.acquired_bytes as u64,
        notifications: NotificationCounts {
            delivered: stats.notifications_delivered,
            low: count(MemoryAvailable::Low),
            neutral: count(MemoryAvailable::Neutral),
            high: count(MemoryAvailable::High),
        },
        unexpected_failures: world.unexpected.lock().clone(),
        trace: TraceSink::from_env().map(|s| s.path().display().to_string()),
        plot: None,
        map,
    };
    let plot = PlotData {
        title: format!(
            "hostmem simulate — {}, seed {}, budget {}",
            super::count(options.threads as u64, "thread"),
            options.seed,
            bytes(options.budget)
        ),
        samples,
        budget: options.budget,
        limits: [
            MemoryCriticalLevel::TaskCritical,
            MemoryCriticalLevel::AppDomainCritical,
            MemoryCriticalLevel::ProcessCritical,
        ]
        .map(|l| budget.limit(l)),
        limit_percent: percents.2,
        low,
        low_percent: percents.0,
        high,
        high_percent: percents.1,
        notifications,
        refusals: refusals.iter().map(|r| (r.t, r.level)).collect(),
    };
    Ok((report, plot))
}

fn progress_bar(options: &SimulateOptions) -> ProgressBar {
    let (len, unit) = match (options.steps, options.duration) {
        (Some(steps), _) => (steps * options.threads as u64, "steps"),
        (None, Some(d)) => (d.as_millis() as u64, "ms"),
        (None, None) => (0, ""),
    };
    let bar = ProgressBar::new(len);
    let target = if options.progress && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    bar.set_draw_target(target);
    let template =
        format!("{{elapsed_precise}} {{wide_bar:.cyan/blue}} {{pos}}/{{len}} {unit} · {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    bar
}

fn calls_by_method(stats: &Statistics) -> BTreeMap<String, MethodCalls> {
    let mut out: BTreeMap<String, MethodCalls> = stats
        .calls
        .iter()
        .map(|(&m, &n)| {
            (
                method_name(m),
                MethodCalls {
                    calls: n,
                    failures: 0,
                },
            )
        })
        .collect();
    for (&(m, _), &n) in &stats.failures {
        out.entry(method_name(m)).or_default().failures += n;
    }
    out
}

fn failures_by_hresult(stats: &Statistics) -> Vec<HresultFailures> {
    let mut by: BTreeMap<HResult, HresultFailures> = BTreeMap::new();
    for (&(m, hr), &n) in &stats.failures {
        let entry = by.entry(hr).or_insert_with(|| HresultFailures {
            hresult: hresult_to_string(hr),
            code: format!("{:#010x}", hr.bits()),
            count: 0,
            by_method: BTreeMap::new(),
        });
        entry.count += n;
        *entry.by_method.entry(method_name(m)).or_default() += n;
    }
    let mut out: Vec<HresultFailures> = by.into_values().collect();
    out.sort_by_key(|h| std::cmp::Reverse(h.count));
    out
}

impl fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let bound = match (s.steps_per_thread, s.duration_seconds) {
            (Some(n), Some(d)) => format!("{} each (at most {d} s)", super::count(n, "step")),
            (Some(n), None) => format!("{} each", super::count(n, "step")),
            (None, Some(d)) => format!("for {d} s"),
            (None, None) => String::new(),
        };
        writeln!(
            f,
            "hostmem simulate: {}, {bound}, seed {}, budget {}, mutator work {} µs a step",
            super::count(s.threads as u64, "thread"),
            s.seed,
            bytes(s.budget_bytes),
            s.think_us
        )?;
        writeln!(
            f,
            "{} in {:.2} s; {}; {} refused at every level",
            super::count(self.steps, "step"),
            self.wall_seconds,
            super::count(self.collections, "garbage collection"),
            super::count(self.out_of_memory, "allocation")
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<44} {:>9} {:>9}",
            "calls by method", "calls", "failed"
        )?;
        let (mut calls, mut failed) = (0, 0);
        for (m, c) in &self.calls {
            writeln!(f, "  {m:<42} {:>9} {:>9}", c.calls, c.failures)?;
            calls += c.calls;
            failed += c.failures;
        }
        writeln!(f, "  {:<42} {calls:>9} {failed:>9}", "all")?;
        writeln!(f)?;
        writeln!(f, "failures by HRESULT")?;
        if self.failures_by_hresult.is_empty() {
            writeln!(f, "  none")?;
        }
        for h in &self.failures_by_hresult {
            let methods: Vec<String> = h
                .by_method
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect();
            writeln!(
                f,
                "  {:<42} {:>9}   {}",
                format!("{} ({})", h.hresult, h.code),
                h.count,
                methods.join(", ")
            )?;
        }
        writeln!(f)?;
        writeln!(f, "budget refusals by critical level")?;
        for level in ["eTaskCritical", "eAppDomainCritical", "eProcessCritical"] {
            let n = self.refusals_by_level.get(level).copied().unwrap_or(0);
            writeln!(f, "  {level:<42} {n:>9}")?;
        }
        let sources: Vec<String> = self
            .refusals_by_source
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        if !sources.is_empty() {
            writeln!(f, "  by what asked: {}", sources.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "{:<44} {:>11} {:>11}", "memory", "peak", "final")?;
        writeln!(
            f,
            "  {:<42} {:>11} {:>11}",
            "committed",
            bytes(self.committed.peak),
            bytes(self.committed.at_end)
        )?;
        writeln!(
            f,
            "  {:<42} {:>11} {:>11}",
            "reserved (peak as sampled)",
            bytes(self.reserved.peak),
            bytes(self.reserved.at_end)
        )?;
        writeln!(
            f,
            "  {:<42} {:>11} {:>11}",
            "runtime's own mappings",
            "",
            bytes(self.runtime_mapped_final)
        )?;
        writeln!(f)?;
        let n = &self.notifications;
        writeln!(
            f,
            "notifications delivered: {} (eMemoryAvailableLow {}, Neutral {}, High {})",
            n.delivered, n.low, n.neutral, n.high
        )?;
        writeln!(f, "wall time: {:.2} s", self.wall_seconds)?;
        if !self.unexpected_failures.is_empty() {
            writeln!(f, "unexpected failures:")?;
            for u in &self.unexpected_failures {
                writeln!(f, "  {u}")?;
            }
        }
        writeln!(f)?;
        write!(
            f,
            "address-space map at the end of the workload: {}",
            self.map.summary(40)
        )?;
        if let Some(t) = &self.trace {
            writeln!(f, "\ntrace written to {t}")?;
        }
        if let Some(p) = &self.plot {
            writeln!(f, "plot written to {p}")?;
        }
        Ok(())
    }
}
