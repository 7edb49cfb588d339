//! What `hostmem bench` reports: figures of rows, each with its target and
//! verdict; a table for people (`Display`) and JSON for machines
//! (`serde::Serialize`).

use super::measure::{median, paired_ratio};
use serde::Serialize;
use std::fmt;

/// The unit of a row's `hostmem` and `reference` values.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Nanoseconds per operation (a median).
    Nanoseconds,
    /// A factor: a scaling or a speed-up (a median).
    Factor,
}

/// Which number of a row a target applies to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The row's `hostmem` value.
    Hostmem,
    /// The row's `ratio`.
    Ratio,
}

/// How a value must compare with a bound.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// `value <= bound`.
    AtMost,
    /// `value < bound`.
    Below,
    /// `value >= bound`.
    AtLeast,
}

/// A figure's performance target.
#[derive(Clone, Copy, PartialEq, Debug, Serialize)]
pub struct Target {
    /// What it applies to.
    pub subject: Subject,
    /// How it compares.
    pub comparison: Comparison,
    /// The bound.
    pub bound: f64,
    /// The unit of the bound (for a target on `hostmem`).
    pub unit: Unit,
}

impl Target {
    /// `ratio <= bound`.
    pub fn ratio_at_most(bound: f64) -> Self {
        Self::new(Subject::Ratio, Comparison::AtMost, bound, Unit::Factor)
    }

    /// `ratio >= bound`.
    pub fn ratio_at_least(bound: f64) -> Self {
        Self::new(Subject::Ratio, Comparison::AtLeast, bound, Unit::Factor)
    }

    /// `hostmem < bound` nanoseconds.
    pub fn hostmem_below_ns(bound: f64) -> Self {
        Self::new(
            Subject::Hostmem,
            Comparison::Below,
            bound,
            Unit::Nanoseconds,
        )
    }

    /// `hostmem >= bound` (a factor).
    pub fn hostmem_at_least(bound: f64) -> Self {
        Self::new(Subject::Hostmem, Comparison::AtLeast, bound, Unit::Factor)
    }

    fn new(subject: Subject, comparison: Comparison, bound: f64, unit: Unit) -> Self {
        Self {
            subject,
            comparison,
            bound,
            unit,
        }
    }

    /// Whether `value` meets the target (NaN never does).
    pub fn met_by(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::AtMost => value <= self.bound,
            Comparison::Below => value < self.bound,
            Comparison::AtLeast => value >= self.bound,
        }
    }
}

/// The outcome of a row.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The target is met.
    Pass,
    /// The target is missed.
    Miss,
    /// No target: shown for information.
    Info,
    /// Not measured (yet): no number is given.
    NotMeasured,
}

/// One line of a figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What was measured.
    pub label: String,
    /// The unit of `hostmem` and `reference`.
    pub unit: Unit,
    /// hostmem's median.
    pub hostmem: Option<f64>,
    /// The reference's median (the raw syscalls, `region::query`, glibc).
    pub reference: Option<f64>,
    /// The figure's ratio (see the figure's `ratio_means`).
    pub ratio: Option<f64>,
    /// The target, if this row has one.
    pub target: Option<Target>,
    /// Whether the target is met.
    pub verdict: Verdict,
}

impl Row {
    /// A row of times in nanoseconds from interleaved samples: the median
    /// of each side and the median of their paired ratios (hostmem over
    /// the reference), judged against `target`.
    pub fn paired(
        label: impl Into<String>,
        hostmem: &[f64],
        reference: &[f64],
        target: Option<Target>,
    ) -> Self {
        Self::new(
            label,
            Unit::Nanoseconds,
            Some(median(hostmem)),
            Some(median(reference)),
            Some(paired_ratio(hostmem, reference)),
            target,
        )
    }

    /// A row, judged against `target`.
    pub fn new(
        label: impl Into<String>,
        unit: Unit,
        hostmem: Option<f64>,
        reference: Option<f64>,
        ratio: Option<f64>,
        target: Option<Target>,
    ) -> Self {
        let verdict = match target {
            None => Verdict::Info,
            Some(t) => {
                let value = match t.subject {
                    Subject::Hostmem => hostmem,
                    Subject::Ratio => ratio,
                };
                match value {
                    None => Verdict::NotMeasured,
                    Some(v) if t.met_by(v) => Verdict::Pass,
                    Some(_) => Verdict::Miss,
                }
            }
        };
        Self {
            label: label.into(),
            unit,
            hostmem,
            reference,
            ratio,
            target,
            verdict,
        }
    }

    /// A row with no numbers: not measured.
    pub fn not_measured(label: impl Into<String>, target: Option<Target>) -> Self {
        Self {
            label: label.into(),
            unit: Unit::Nanoseconds,
            hostmem: None,
            reference: None,
            ratio: None,
            target,
            verdict: Verdict::NotMeasured,
        }
    }
}

/// One of the eight performance figures.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// 1 to 8.
    pub number: u8,
    /// What the figure measures.
    pub title: String,
    /// What the `reference` column is.
    pub reference: String,
    /// What the `ratio` column is.
    pub ratio_means: String,
    /// The rows.
    pub rows: Vec<Row>,
    /// Remarks: how it was measured, caveats.
    pub notes: Vec<String>,
}

impl Figure {
    /// The figure's verdict: a miss if any row misses, not measured if a
    /// targeted row was not measured, else a pass (or info with no target).
    pub fn verdict(&self) -> Verdict {
        let verdicts = self.rows.iter().map(|r| r.verdict);
        if verdicts.clone().any(|v| v == Verdict::Miss) {
            Verdict::Miss
        } else if verdicts.clone().any(|v| v == Verdict::NotMeasured) {
            Verdict::NotMeasured
        } else if verdicts.clone().any(|v| v == Verdict::Pass) {
            Verdict::Pass
        } else {
            Verdict::Info
        }
    }
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `vm.max_map_count`.
    pub max_map_count: Option<u64>,
    /// Kernel mappings of the process when the run began.
    pub mappings_at_start: usize,
    /// The 1-minute load average when the run began: above the CPU count,
    /// other work shared the machine and the figures are noisier.
    pub load_average: Option<f64>,
}

/// Counts of targets met, missed and not measured.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    /// Targeted rows that pass.
    pub pass: usize,
    /// Targeted rows that miss.
    pub miss: usize,
    /// Targeted rows not measured.
    pub not_measured: usize,
}

/// The result of [`run`](super::run).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// hostmem's version.
    pub version: &'static str,
    /// Whether this was a quick run (few trials).
    pub quick: bool,
    /// Interleaved trials per figure, but for figures 1–3.
    pub trials: usize,
    /// Interleaved trials for figures 1–3.
    pub syscall_trials: usize,
    /// Where it ran.
    pub machine: Machine,
    /// The figures, in order.
    pub figures: Vec<Figure>,
    /// The targets' tally.
    pub summary: Summary,
}

impl BenchReport {
    pub(crate) fn tally(figures: &[Figure]) -> Summary {
        let mut s = Summary::default();
        for row in figures.iter().flat_map(|f| &f.rows) {
            match row.verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::Miss => s.miss += 1,
                Verdict::NotMeasured if row.target.is_some() => s.not_measured += 1,
                _ => {}
            }
        }
        s
    }

    /// Whether every target was measured and met.
    pub fn all_met(&self) -> bool {
        self.summary.miss == 0 && self.summary.not_measured == 0
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e4 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn fmt_value(value: Option<f64>, unit: Unit) -> String {
    match value {
        None => "—".into(),
        Some(v) => match unit {
            Unit::Nanoseconds => fmt_ns(v),
            Unit::Factor => fmt_factor(v),
        },
    }
}

fn fmt_factor(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}×")
    } else {
        format!("{v:.2}×")
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.3}"),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.comparison {
            Comparison::AtMost => "≤",
            Comparison::Below => "<",
            Comparison::AtLeast => "≥",
        };
        match self.subject {
            Subject::Ratio => write!(f, "ratio {op} {}", fmt_bound(self.bound)),
            Subject::Hostmem => write!(f, "{op} {}", fmt_value(Some(self.bound), self.unit)),
        }
    }
}

fn fmt_bound(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.0}")
    } else {
        format!("{b}")
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
            Verdict::NotMeasured => "NOT MEASURED",
        })
    }
}

/// Pads `s` on the right to `width` characters (not bytes: µ, ≤ and ×
/// are one character each).
fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

fn pad_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{}{s}", " ".repeat(width.saturating_sub(n)))
}

const LABEL: usize = 40;

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.machine;
        writeln!(
            f,
            "hostmem {} bench{}: {} CPUs, Linux {}, vm.max_map_count {}, {} mappings at start",
            self.version,
            if self.quick { " --quick" } else { "" },
            m.cpus,
            m.kernel,
            m.max_map_count
                .map_or_else(|| "unknown".into(), |n| n.to_string()),
            m.mappings_at_start,
        )?;
        if let Some(load) = m.load_average {
            let busy = if load > m.cpus as f64 {
                " — busier than its CPUs: other work shared the machine"
            } else {
                ""
            };
            writeln!(f, "load average {load:.2} at start{busy}")?;
        }
        let syscall = if self.syscall_trials == self.trials {
            String::new()
        } else {
            format!("{} for figures 1–3; ", self.syscall_trials)
        };
        writeln!(
            f,
            "medians of {} interleaved {} ({syscall}hostmem and its reference alternate in one loop)",
            self.trials,
            if self.trials == 1 { "trial" } else { "trials" }
        )?;
        if self.quick {
            writeln!(
                f,
                "a quick run (few trials, small batches): its ratios are rough and not comparable \
                 to the targets; run `hostmem bench` without --quick to judge them"
            )?;
        }
        for fig in &self.figures {
            writeln!(f)?;
            writeln!(f, "{}. {}  [{}]", fig.number, fig.title, fig.verdict())?;
            writeln!(
                f,
                "   reference: {}; ratio: {}",
                fig.reference, fig.ratio_means
            )?;
            writeln!(
                f,
                "   {} {} {} {}  {} verdict",
                pad("", LABEL),
                pad_left("hostmem", 10),
                pad_left("reference", 10),
                pad_left("ratio", 8),
                pad("target", 16),
            )?;
            for row in &fig.rows {
                let target = row
                    .target
                    .map_or_else(|| "—".to_string(), |t| t.to_string());
                writeln!(
                    f,
                    "   {} {} {} {}  {} {}",
                    pad(&row.label, LABEL),
                    pad_left(&fmt_value(row.hostmem, row.unit), 10),
                    pad_left(&fmt_value(row.reference, row.unit), 10),
                    pad_left(&fmt_ratio(row.ratio), 8),
                    pad(&target, 16),
                    row.verdict,
                )?;
            }
            for note in &fig.notes {
                writeln!(f, "   note: {note}")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "targets: {} met, {} missed, {} not measured",
            self.summary.pass, self.summary.miss, self.summary.not_measured
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_judged_on_their_subject() {
        let r = Row::new(
            "x",
            Unit::Nanoseconds,
            Some(5.0),
            Some(4.0),
            Some(1.25),
            Some(Target::ratio_at_most(1.1)),
        );
        assert_eq!(r.verdict, Verdict::Miss);
        let r = Row::new(
            "x",
            Unit::Nanoseconds,
            Some(50.0),
            None,
            None,
            Some(Target::hostmem_below_ns(100.0)),
        );
        assert_eq!(r.verdict, Verdict::Pass);
        let r = Row::new("x", Unit::Nanoseconds, Some(1.0), None, None, None);
        assert_eq!(r.verdict, Verdict::Info);
        let r = Row::new(
            "x",
            Unit::Nanoseconds,
            None,
            None,
            None,
            Some(Target::ratio_at_least(0.9)),
        );
        assert_eq!(r.verdict, Verdict::NotMeasured);
        assert!(!Target::ratio_at_most(1.0).met_by(f64::NAN));
    }

    #[test]
    fn units_format_for_people() {
        assert_eq!(fmt_ns(42.25), "42.2 ns");
        assert_eq!(fmt_ns(6_800.0), "6.80 µs");
        assert_eq!(fmt_ns(312_000.0), "312.0 µs");
        assert_eq!(fmt_ns(3_400_000.0), "3.40 ms");
        assert_eq!(Target::ratio_at_most(1.1).to_string(), "ratio ≤ 1.1");
        assert_eq!(Target::hostmem_below_ns(100.0).to_string(), "< 100 ns");
    }
}
