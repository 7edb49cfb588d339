//! The `hostmem` command line: the commands, their options, and the one
//! place errors become a line on stderr and an exit status.
//!
//! - `simulate` (the default): a runtime's workload under a budget, with
//!   a progress bar, a summary and the address-space map; `--plot`;
//! - `replay [TRACE]`: a recorded trace against a fresh manager (with no
//!   trace, the one `simulate` recorded for the repository);
//! - `map [TRACE]`: the address-space map of a run, as a table, `--svg`;
//! - `bench`: the performance figures of `hostmem::bench`.
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
use replay::{At, load_trace, map_of_trace, parse_at, peak_of};
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
    args_conflicts_with_subcommands = true
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
    /// Measure hostmem against the raw syscalls (issue 7's figures).
    Bench(BenchArgs),
}

/// The workload's knobs, shared by `simulate` and `map`.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The manager's budget of committed bytes (e.g. 256MiB, 1G)
    /// [default: 256MiB].
    #[arg(long, value_parser = units::parse_bytes)]
    budget: Option<u64>,
    /// Steps per thread [default: simulate 3000, map 400].
    #[arg(long)]
    steps: Option<u64>,
    /// Runtime threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// The seed of every choice the workload makes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Mutator work between two steps of a thread, microseconds
    /// [default: simulate 1500, map 0].
    #[arg(long, value_name = "MICROS")]
    think: Option<u64>,
}

#[derive(Args, Debug, Clone)]
struct SimulateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Stop after this many seconds (with no --steps: run this long).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Write a plot of committed and reserved bytes over time (SVG).
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
    /// Replay this trace and map its manager (default: run a short
    /// simulation and map it at its end).
    trace: Option<PathBuf>,
    /// With a trace: the moment to map — `peak` (after the call that took
    /// committed memory to its peak), `end` (the end, or just before the
    /// manager shuts down), or a sequence number (after that call).
    #[arg(long, value_name = "SEQ|peak|end", value_parser = parse_at)]
    at: Option<At>,
    /// Also draw the map as a picture (SVG).
    #[arg(long, value_name = "FILE.svg")]
    svg: Option<PathBuf>,
    /// Print the map as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Few trials and small batches (seconds) instead of the full run.
    #[arg(long)]
    quick: bool,
    /// The number of interleaved trials.
    #[arg(long)]
    trials: Option<usize>,
    /// Run only this figure (1–9); may be given several times.
    #[arg(long = "figure", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=9))]
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
    let cli = match Cli::try_parse() {
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
    if let Err(page) = hostmem::os::check_page_size() {
        eprintln!(
            "hostmem: the kernel's page size ({page} bytes) does not divide the 4 KiB Win32 page"
        );
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
    SimulateOptions {
        budget: run.budget.unwrap_or(256 << 20),
        steps: Some(run.steps.unwrap_or(steps)),
        duration: None,
        threads: usize::from(run.threads),
        seed: run.seed,
        think: Duration::from_micros(run.think.unwrap_or(think_us)),
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
        emit(&format!("trace: {name}\n{report}"))?;
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
        writable(path)?;
    }
    let (source, maps) = match &args.trace {
        Some(path) => {
            let (name, trace) = load_trace(Some(path))?;
            let at = args.at.unwrap_or(At::Peak);
            let when = match at {
                At::Seq(seq) => format!(" after seq {seq}"),
                At::Peak => match peak_of(&trace) {
                    Some(seq) => format!(" at its peak of committed memory (after seq {seq})"),
                    None => " (no calls)".to_owned(),
                },
                At::End => " at its end".to_owned(),
            };
            (format!("{name}{when}"), map_of_trace(&trace, at))
        }
        None => {
            if args.at.is_some() {
                return Err("--at needs a trace".to_owned());
            }
            let opts = options(&args.run, 400, 0, false);
            let (report, _) = simulate(&opts)?;
            (
                format!(
                    "a simulation ({} threads × {} steps, seed {}) at the end of its workload",
                    opts.threads,
                    opts.steps.unwrap_or(0),
                    opts.seed
                ),
                vec![(1, report.map)],
            )
        }
    };
    if let Some(path) = &args.svg {
        let (id, map) = maps
            .iter()
            .max_by_key(|(_, m)| m.reservations.len())
            .ok_or("the trace creates no manager")?;
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
    let options = hostmem::bench::BenchOptions {
        quick: args.quick,
        trials: args.trials,
        figures: args.figures.clone(),
    };
    let report = hostmem::bench::run(&options);
    if args.json {
        print_json(&report)?;
    } else {
        emit(&report.to_string())?;
    }
    Ok(Outcome::Success)
}
