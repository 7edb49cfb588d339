//! The `hostmem` command line: the commands, their options, and the one
//! place errors become a line on stderr and an exit status.
//!
//! - `simulate` (the default): a runtime's workload under a budget, with
//!   a progress bar, a summary and the address-space map; `--plot`;
//! - `replay [TRACE]`: a recorded trace against a fresh manager (with no
//!   trace, the one `simulate` recorded for the repository);
//! - `map [TRACE]`: the address-space map of a run, as a table, `--svg`;
//! - `bench`: the performance figures of `hostmem::unstable::bench`.
//!
//! Every command takes `--json`.

mod map;
mod replay;
mod simulate;
mod svg;
mod units;
mod workload;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hostmem::trace::{Speed, replay};
use map::{MapMapping, MapReservation};
use replay::{At, load_trace, map_of_trace, parse_at, peak_of, truncation_note};
use serde::Serialize;
use simulate::{SimulateOptions, simulate};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "hostmem",
    version,
    about = "A host memory manager (IHostMemoryManager over Linux): simulate a runtime's workload, record and replay traces, map the address space",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Environment:\n  HOSTMEM_TRACE=FILE  record every call any manager takes into FILE (replay it with `hostmem replay FILE`, draw it with `hostmem map FILE`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: `simulate` with these options.
    #[command(flatten)]
    simulate: SimulateArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a managed runtime's workload against a manager under a budget
    /// (the default command).
    Simulate(SimulateArgs),
    /// Replay a trace against a fresh manager and check every result.
    Replay(ReplayArgs),
    /// Show the address-space map of a run (a trace's, or a short
    /// simulation's).
    Map(MapArgs),
    /// Measure hostmem against the raw syscalls doing the same work.
    Bench(BenchArgs),
}

/// The workload's knobs, shared by `simulate` and `map`. The help shows
/// `simulate`'s defaults; [`command`] puts `map`'s in its help.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The manager's budget of committed bytes (e.g. 256MiB, 1G)
    /// [default: 256MiB].
    #[arg(long, value_parser = units::parse_bytes)]
    budget: Option<u64>,
    /// Steps per thread [default: 3000].
    #[arg(long)]
    steps: Option<u64>,
    /// Runtime threads. Their interleaving changes what happens from run to
    /// run: only --threads 1 reproduces a run exactly from its --seed.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// The seed of every choice the workload makes (with --threads 1, the
    /// same seed gives the same run).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Mutator work between two steps of a thread, microseconds, at most
    /// 1000000 [default: 1500].
    #[arg(long, value_name = "MICROS", value_parser = clap::value_parser!(u64).range(0..=MAX_THINK_US))]
    think: Option<u64>,
}

/// The longest `--think`: one second of mutator work a step.
const MAX_THINK_US: u64 = 1_000_000;

/// `map`'s defaults for the workload's knobs (it runs a short simulation).
const MAP_STEPS: u64 = 400;
const MAP_THINK_US: u64 = 0;

/// The command line's definition, with `map`'s own defaults in its help.
fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommand("map", |map| {
        map.mut_arg("steps", |arg| {
            arg.help(format!(
                "Steps per thread of the short simulation (no TRACE) [default: {MAP_STEPS}]"
            ))
        })
        .mut_arg("think", |arg| {
            arg.help(format!(
                "Mutator work between two steps of a thread, microseconds, at most \
                 {MAX_THINK_US} [default: {MAP_THINK_US}]"
            ))
        })
    })
}

#[derive(Args, Debug, Clone)]
struct SimulateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Stop after at most this many seconds, whatever --steps and --think
    /// say (with no --steps: run this long).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Write a plot of committed and reserved bytes over time (an SVG file,
    /// named .svg).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SpeedArg {
    /// As fast as possible.
    Fast,
    /// Each call at its recorded time.
    Realtime,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// The trace (default: the built-in one recorded by `simulate`).
    trace: Option<PathBuf>,
    /// How fast to replay.
    #[arg(long, value_enum, default_value_t = SpeedArg::Fast)]
    speed: SpeedArg,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct MapArgs {
    /// Replay this trace and map its managers (default: run a short
    /// simulation and map it at its end).
    trace: Option<PathBuf>,
    /// With a trace: the moment to map — `peak` (after the call that took
    /// committed memory to its peak), `end` (the end, or just before the
    /// manager shuts down), or a sequence number (after that call).
    #[arg(long, value_name = "SEQ|peak|end", value_parser = parse_at)]
    at: Option<At>,
    /// Also draw the map as a picture (an SVG file, named .svg).
    #[arg(long, value_name = "FILE.svg")]
    svg: Option<PathBuf>,
    /// With a trace of several managers: map only this one (m1, m2, …, or
    /// its number). --svg needs it when the trace has more than one.
    #[arg(long, value_name = "mN", value_parser = parse_manager)]
    manager: Option<u32>,
    /// Print the map as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Few trials and small batches (seconds) instead of the full run; its
    /// ratios are rough, not comparable to the targets.
    #[arg(long)]
    quick: bool,
    /// The number of interleaved trials (at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    trials: Option<u64>,
    /// Run only this figure (1–12); may be given several times.
    #[arg(long = "figure", value_name = "N", value_parser = parse_figure)]
    figures: Vec<u8>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// A command's failure: one line for stderr.
type CliResult<T> = Result<T, String>;

/// What a command ends with.
enum Outcome {
    Success,
    /// Finished, but a check failed (replay differences): this line and
    /// exit status 1.
    Failed(String),
}

/// Runs the command line; the exit status says how it went.
pub fn main() -> ExitCode {
    use clap::FromArgMatches;
    let parsed = command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message, first line only, as one line.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "hostmem: {} (see hostmem --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    if let Err(page) = hostmem::unstable::os::check_page_size() {
        eprintln!(
            "hostmem: the kernel's page size ({page} bytes) does not divide the 4 KiB Win32 page"
        );
        return ExitCode::FAILURE;
    }
    if let Err(line) = check_trace_env() {
        eprintln!("hostmem: {line}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        None => run_simulate(&cli.simulate),
        Some(Command::Simulate(args)) => run_simulate(&args),
        Some(Command::Replay(args)) => run_replay(&args),
        Some(Command::Map(args)) => run_map(&args),
        Some(Command::Bench(args)) => run_bench(&args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(line)) | Err(line) => {
            eprintln!("hostmem: {line}");
            ExitCode::FAILURE
        }
    }
}

/// `--manager`: `m2` or `2`.
fn parse_manager(text: &str) -> Result<u32, String> {
    text.strip_prefix('m')
        .unwrap_or(text)
        .parse()
        .map_err(|_| format!("`{text}` is not a manager (m1, m2, …)"))
}

/// The user asked for a recording (`HOSTMEM_TRACE`): if the file cannot
/// be created, say so and stop before doing anything, rather than run
/// without it. (The library itself never fails a call for its trace.)
fn check_trace_env() -> CliResult<()> {
    let Some(path) = std::env::var_os(hostmem::trace::TRACE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    // The trace is created (truncated) at the first manager anyway.
    std::fs::File::create(&path).map(drop).map_err(|e| {
        format!(
            "{}={}: cannot create the trace: {e}",
            hostmem::trace::TRACE_ENV,
            std::path::Path::new(&path).display()
        )
    })
}

/// Fails unless `path` names an SVG file (`option` is the flag that gave
/// it): the pictures are SVG only.
fn svg_name(option: &str, path: &std::path::Path) -> CliResult<()> {
    let svg = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("svg"));
    if svg {
        Ok(())
    } else {
        Err(format!(
            "{option} {}: the picture is SVG; give a file name ending in .svg",
            path.display()
        ))
    }
}

/// `n` and `word`, in the plural unless `n` is 1 (`word` + "s").
pub(crate) fn count(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Fails unless a file can be created at `path`.
fn writable(path: &std::path::Path) -> CliResult<()> {
    std::fs::File::create(path)
        .map(drop)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an
/// error.
fn emit(text: &str) -> CliResult<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

fn print_json<T: Serialize>(value: &T) -> CliResult<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| format!("cannot write JSON: {e}"))?;
    emit(&format!("{text}\n"))
}

fn options(run: &RunArgs, steps: u64, think_us: u64, progress: bool) -> SimulateOptions {
    // The parser bounds --think; it stays bounded here too.
    let think_us = run.think.unwrap_or(think_us).min(MAX_THINK_US);
    SimulateOptions {
        budget: run.budget.unwrap_or(256 << 20),
        steps: Some(run.steps.unwrap_or(steps)),
        duration: None,
        threads: usize::from(run.threads),
        seed: run.seed,
        think: Duration::from_micros(think_us),
        progress,
    }
}

fn run_simulate(args: &SimulateArgs) -> CliResult<Outcome> {
    let mut opts = options(&args.run, 3000, 1500, true);
    if let Some(secs) = args.duration {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(format!(
                "--duration {secs}: give a positive number of seconds"
            ));
        }
        opts.duration = Some(Duration::from_secs_f64(secs));
        opts.steps = args.run.steps;
    }
    if opts.budget < 1 << 20 {
        return Err(format!(
            "--budget {}: give at least 1 MiB",
            units::bytes(opts.budget)
        ));
    }
    if let Some(path) = &args.plot {
        // Find out now, not after the run, that the picture cannot be written.
        svg_name("--plot", path)?;
        writable(path)?;
    }
    let (mut report, plot) = simulate(&opts)?;
    if let Some(path) = &args.plot {
        svg::plot_svg(&plot, path)?;
        report.plot = Some(path.display().to_string());
    }
    if args.json {
        print_json(&report)?;
    } else {
        emit(&report.to_string())?;
    }
    Ok(Outcome::Success)
}

#[derive(Serialize)]
struct ReplayJson<'a> {
    trace: &'a str,
    #[serde(flatten)]
    report: &'a hostmem::trace::ReplayReport,
}

fn run_replay(args: &ReplayArgs) -> CliResult<Outcome> {
    let (name, trace) = load_trace(args.trace.as_deref())?;
    let speed = match args.speed {
        SpeedArg::Fast => Speed::Fast,
        SpeedArg::Realtime => Speed::Realtime,
    };
    let report = replay(&trace, speed);
    if args.json {
        print_json(&ReplayJson {
            trace: &name,
            report: &report,
        })?;
    } else {
        let note = truncation_note(&trace).map_or_else(String::new, |n| format!("{n}\n"));
        emit(&format!("trace: {name}\n{note}{report}"))?;
    }
    if report.is_clean() {
        Ok(Outcome::Success)
    } else {
        Ok(Outcome::Failed(format!(
            "{name}: {} results differ from the recorded ones",
            report.differences.len()
        )))
    }
}

#[derive(Serialize)]
struct MapJson {
    source: String,
    managers: Vec<ManagerMapJson>,
}

#[derive(Serialize)]
struct ManagerMapJson {
    manager: String,
    reserved: u64,
    committed: u64,
    reservations: Vec<MapReservation>,
    mappings: Vec<MapMapping>,
}

fn run_map(args: &MapArgs) -> CliResult<Outcome> {
    if let Some(path) = &args.svg {
        svg_name("--svg", path)?;
    }
    let (source, mut maps) = match &args.trace {
        Some(path) => {
            let (name, trace) = load_trace(Some(path))?;
            let at = args.at.unwrap_or(At::Peak);
            if let At::Seq(seq) = at {
                let last = trace.records.last().map_or(0, |(_, r)| r.seq);
                if seq > last {
                    return Err(format!(
                        "--at {seq}: {name} ends at seq {last}; give a sequence number up to {last}, `peak` or `end`"
                    ));
                }
            }
            let when = match at {
                At::Seq(seq) => format!(" after seq {seq}"),
                At::Peak => match peak_of(&trace) {
                    Some(seq) => format!(" at its peak of committed memory (after seq {seq})"),
                    None => " (no calls)".to_owned(),
                },
                At::End => " at its end".to_owned(),
            };
            if let Some(note) = truncation_note(&trace).filter(|_| !args.json) {
                emit(&format!("{note}\n"))?;
            }
            (format!("{name}{when}"), map_of_trace(&trace, at))
        }
        None => {
            if args.at.is_some() {
                return Err("--at needs a trace".to_owned());
            }
            if args.manager.is_some() {
                return Err("--manager needs a trace".to_owned());
            }
            let opts = options(&args.run, MAP_STEPS, MAP_THINK_US, false);
            let (report, _) = simulate(&opts)?;
            (
                format!(
                    "a simulation ({} × {}, seed {}) at the end of its workload",
                    count(opts.threads as u64, "thread"),
                    count(opts.steps.unwrap_or(0), "step"),
                    opts.seed
                ),
                vec![(1, report.map)],
            )
        }
    };
    if let Some(id) = args.manager {
        if !maps.iter().any(|(m, _)| *m == id) {
            let known: Vec<String> = maps.iter().map(|(m, _)| format!("m{m}")).collect();
            return Err(format!(
                "--manager m{id}: {source} has no such manager (it has {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ));
        }
        maps.retain(|(m, _)| *m == id);
    }
    if let Some(path) = &args.svg {
        let (id, map) = match maps.as_slice() {
            [] => return Err(format!("{source}: no manager to draw")),
            [one] => one,
            several => {
                let known: Vec<String> = several.iter().map(|(m, _)| format!("m{m}")).collect();
                return Err(format!(
                    "--svg draws one manager and the trace has {}: choose one with --manager",
                    known.join(", ")
                ));
            }
        };
        writable(path)?;
        svg::map_svg(map, &format!("hostmem map — m{id} of {source}"), path)?;
    }
    if args.json {
        print_json(&MapJson {
            source,
            managers: maps
                .into_iter()
                .map(|(id, m)| ManagerMapJson {
                    manager: format!("m{id}"),
                    reserved: m.reserved(),
                    committed: m.committed(),
                    reservations: m.reservations,
                    mappings: m.mappings,
                })
                .collect(),
        })?;
    } else {
        let mut text = format!("address-space map of {source}\n");
        for (id, m) in &maps {
            text += &format!("\nmanager m{id}: {}", m.table(64));
        }
        if let Some(path) = &args.svg {
            text += &format!("\npicture written to {}\n", path.display());
        }
        emit(&text)?;
    }
    Ok(Outcome::Success)
}

fn run_bench(args: &BenchArgs) -> CliResult<Outcome> {
    let options = hostmem::unstable::bench::BenchOptions {
        quick: args.quick,
        trials: args
            .trials
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        figures: args.figures.clone(),
    };
    let report = hostmem::unstable::bench::run(&options);
    if args.json {
        print_json(&report)?;
    } else {
        emit(&report.to_string())?;
    }
    Ok(Outcome::Success)
}

/// A figure number `hostmem bench` has: 1 to 12.
fn parse_figure(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(n @ 1..=12) => Ok(n),
        _ => Err(format!("no figure {text} (figures: 1-12)")),
    }
}
