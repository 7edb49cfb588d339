//! The `hostmem` binary: simulate → record → replay round trips, `--json`
//! everywhere, pictures, and errors as one line with a failure status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn hostmem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hostmem"));
    c.env_remove("HOSTMEM_TRACE");
    c
}

fn run(args: &[&str]) -> Output {
    hostmem().args(args).output().expect("run hostmem")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "hostmem {args:?} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("hostmem {args:?}: not JSON ({e}):\n{out}"))
}

/// Fails with one line on stderr naming `what`.
fn fails_with(args: &[&str], what: &str) -> String {
    let o = run(args);
    assert!(!o.status.success(), "hostmem {args:?} succeeded");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("hostmem: "), "{err}");
    assert!(err.contains(what), "`{what}` not in: {err}");
    err
}

fn temp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "hostmem-cli-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

const QUICK: [&str; 8] = [
    "--steps",
    "300",
    "--think",
    "0",
    "--budget",
    "64MiB",
    "--threads",
    "2",
];

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

#[test]
fn simulate_records_a_trace_that_replays_without_a_difference() {
    let trace = temp("round-trip.trace");
    let o = hostmem()
        .arg("simulate")
        .args(QUICK)
        .env("HOSTMEM_TRACE", &trace)
        .output()
        .expect("run hostmem");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("trace written to"));
    let text = std::fs::read_to_string(&trace).expect("the trace was written");
    assert!(text.starts_with("hostmem-trace 1\n"));
    for method in [
        "VirtualAlloc",
        "Heap.VirtualAlloc",
        "AcquiredVirtualAddressSpace",
        "OnMemoryNotification",
        "Shutdown",
    ] {
        assert!(
            text.contains(&format!(" {method} ")) || text.contains(&format!(" {method}\n")),
            "no {method}"
        );
    }
    let report = json(&["replay", path_str(&trace), "--json"]);
    let _ = std::fs::remove_file(&trace);
    assert_eq!(report["differences"], serde_json::json!([]), "{report:#}");
    assert!(report["calls"].as_u64().unwrap() > 300);
    assert_eq!(
        report["notifications_recorded"],
        report["notifications_replayed"]
    );
}

#[test]
fn simulate_is_the_default_and_reports_pressure() {
    let out = ok(&QUICK);
    for part in [
        "calls by method",
        "failures by HRESULT",
        "budget refusals by critical level",
        "notifications delivered",
        "wall time",
        "address-space map at the end of the workload",
        "GC segment",
    ] {
        assert!(out.contains(part), "`{part}` missing:\n{out}");
    }
    let report = json(
        &["simulate", "--json", "--seed", "7"]
            .iter()
            .copied()
            .chain(QUICK)
            .collect::<Vec<_>>(),
    );
    assert_eq!(report["settings"]["seed"], 7);
    assert!(
        report["notifications"]["delivered"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(!report["refusals_by_level"].as_object().unwrap().is_empty());
    assert!(report["failures_by_hresult"][0]["hresult"] == "E_OUTOFMEMORY");
    assert!(report["committed"]["peak"].as_u64().unwrap() <= 64 << 20);
    assert_eq!(report["unexpected_failures"], serde_json::json!([]));
    assert!(!report["map"]["reservations"].as_array().unwrap().is_empty());
}

#[test]
fn replay_without_a_trace_replays_the_built_in_one() {
    let out = ok(&["replay"]);
    assert!(out.contains("simulate-seed42.trace (built in)"), "{out}");
    assert!(out.contains("no differences"), "{out}");
    let report = json(&["replay", "--json"]);
    assert_eq!(report["differences"], serde_json::json!([]));
    let edge = json(&["replay", "traces/edge-cases.trace", "--json"]);
    assert_eq!(edge["differences"], serde_json::json!([]));
    assert_eq!(edge["managers"], 2);
}

#[test]
fn replay_reports_differences_with_a_failure_status() {
    let original = std::fs::read_to_string("traces/edge-cases.trace").unwrap();
    let changed = original.replace(
        "level=eTaskCritical => E_OUTOFMEMORY\n22 ",
        "level=eTaskCritical => S_OK r1+0xe0000\n22 ",
    );
    let path = temp("changed.trace");
    std::fs::write(&path, changed).unwrap();
    let o = run(&["replay", path_str(&path)]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("line "), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("differ from the recorded ones"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn errors_are_one_line_and_a_failure_status() {
    fails_with(
        &["replay", "/nonexistent/hostmem.trace"],
        "/nonexistent/hostmem.trace",
    );
    let bad = temp("bad.trace");
    std::fs::write(
        &bad,
        "hostmem-trace 1\n# fine so far\n1 0.0 t1 m1 CreateManager budget=none low=90 high=60 levels=90,95,100 => S_OK\n2 0.1 t1 m1 VirtualAloc addr=0 => S_OK\n",
    )
    .unwrap();
    let err = fails_with(
        &["replay", path_str(&bad)],
        "line 4: unknown method `VirtualAloc`",
    );
    assert!(err.contains(path_str(&bad)));
    fails_with(&["map", path_str(&bad)], "line 4");
    let _ = std::fs::remove_file(&bad);
    fails_with(&["simulate", "--budget", "lots"], "lots");
    fails_with(&["simulate", "--no-such-option"], "--no-such-option");
    fails_with(&["replay", "--speed", "warp"], "warp");
    fails_with(&["map", "--at", "7"], "--at needs a trace");
}

#[test]
fn map_prints_tables_json_and_a_picture() {
    let out = ok(&["map", "traces/edge-cases.trace", "--at", "20"]);
    assert!(out.contains("after seq 20"), "{out}");
    assert!(out.contains("MEM_COMMIT"), "{out}");
    assert!(out.contains("[r1]"), "{out}");
    let svg = temp("map.svg");
    let map = json(&[
        "map",
        "traces/edge-cases.trace",
        "--json",
        "--svg",
        path_str(&svg),
    ]);
    let picture = std::fs::read_to_string(&svg).expect("the picture was written");
    let _ = std::fs::remove_file(&svg);
    assert!(picture.contains("<svg") && picture.contains("</svg>"));
    assert!(picture.contains("<rect"));
    // One scale for every bar, labelled; only the protections that occur.
    assert!(picture.contains("log scale"), "no scale named");
    for present in ["committed PAGE_READWRITE", "committed PAGE_READONLY"] {
        assert!(picture.contains(present), "{present} missing");
    }
    for absent in [
        "PAGE_EXECUTE_READWRITE",
        "PAGE_EXECUTE_READ<",
        "PAGE_NOACCESS",
    ] {
        assert!(!picture.contains(absent), "{absent} listed but absent");
    }
    let m1 = &map["managers"][0];
    assert_eq!(m1["manager"], "m1");
    assert!(m1["committed"].as_u64().unwrap() > 0, "{map:#}");
    // Without a trace: a short simulation.
    let map = json(&["map", "--json", "--steps", "100", "--budget", "64MiB"]);
    assert!(
        !map["managers"][0]["reservations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn simulate_plots_to_svg() {
    let plot = temp("plot.svg");
    let out = ok(&[
        "simulate",
        "--steps",
        "200",
        "--think",
        "0",
        "--budget",
        "64MiB",
        "--plot",
        path_str(&plot),
    ]);
    assert!(out.contains("plot written to"));
    let picture = std::fs::read_to_string(&plot).expect("the plot was written");
    let _ = std::fs::remove_file(&plot);
    assert!(picture.contains("<svg") && picture.contains("</svg>"));
    assert!(picture.contains("budget"));
    // The notification levels by their names, both marked.
    assert!(picture.contains("60 %: eMemoryAvailableHigh level"));
    assert!(picture.contains("eMemoryAvailableLow level"));
    assert!(!picture.contains("high-memory threshold"));
    // Ticks without ".0".
    assert!(!picture.contains(".0</text>"), "a tick label ends in .0");
}

#[test]
fn bench_reports_json() {
    let report = json(&["bench", "--json", "--quick", "--figure", "1"]);
    assert!(
        report["figures"].as_array().is_some_and(|f| f.len() == 1),
        "{report:#}"
    );
    fails_with(&["bench", "--figure", "13"], "13");
    fails_with(&["bench", "--figure", "0"], "0");
}

/// `hostmem` with `HOSTMEM_TRACE` set to `trace`.
fn run_traced(args: &[&str], trace: &Path) -> Output {
    hostmem()
        .args(args)
        .env("HOSTMEM_TRACE", trace)
        .output()
        .expect("run hostmem")
}

fn one_line_failure(o: &Output, what: &str) {
    assert!(!o.status.success(), "succeeded:\n{}", stdout(o));
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("hostmem: ") && err.contains(what), "{err}");
}

#[test]
fn map_svg_of_a_trace_with_several_managers_needs_manager() {
    let svg = temp("two.svg");
    // At its end the trace has two managers, m1 and m2.
    let err = fails_with(
        &[
            "map",
            "traces/edge-cases.trace",
            "--at",
            "end",
            "--svg",
            path_str(&svg),
        ],
        "--manager",
    );
    assert!(err.contains("m1, m2"), "{err}");
    assert!(!svg.exists(), "a picture was written anyway");
    let out = ok(&[
        "map",
        "traces/edge-cases.trace",
        "--at",
        "end",
        "--manager",
        "m2",
        "--svg",
        path_str(&svg),
    ]);
    let picture = std::fs::read_to_string(&svg).expect("the picture was written");
    let _ = std::fs::remove_file(&svg);
    assert!(picture.contains("m2 of"), "the picture is not m2's");
    assert!(
        out.contains("manager m2:") && !out.contains("manager m1:"),
        "{out}"
    );
    fails_with(
        &["map", "traces/edge-cases.trace", "--manager", "m9"],
        "no such manager",
    );
}

#[test]
fn map_at_past_the_end_of_the_trace_fails() {
    fails_with(
        &["map", "traces/edge-cases.trace", "--at", "99999"],
        "ends at seq 61",
    );
    // The last call itself is fine.
    ok(&["map", "traces/edge-cases.trace", "--at", "61"]);
}

#[test]
fn bench_refuses_zero_trials() {
    fails_with(&["bench", "--trials", "0"], "--trials");
}

#[test]
fn a_trace_that_cannot_be_created_fails_the_command() {
    let trace = temp("no-such-dir").join("run.trace");
    let o = run_traced(&["simulate", "--steps", "5", "--think", "0"], &trace);
    one_line_failure(&o, "HOSTMEM_TRACE");
    assert!(stdout(&o).is_empty(), "it ran anyway:\n{}", stdout(&o));
}

#[test]
fn duration_caps_the_run_whatever_think_says() {
    // Each step would sleep 0.5 to 1.5 s: the run must end at the cap.
    let report = json(&[
        "simulate",
        "--json",
        "--duration",
        "0.2",
        "--think",
        "1000000",
        "--steps",
        "1000",
        "--budget",
        "64MiB",
    ]);
    let wall = report["wall_seconds"].as_f64().expect("wall_seconds");
    assert!(wall < 0.45, "a 0.2 s cap ran {wall} s");
    fails_with(&["simulate", "--think", "3000000"], "3000000");
}

#[test]
fn pictures_must_be_named_svg() {
    let png = temp("plot.png");
    fails_with(&["simulate", "--plot", path_str(&png)], ".svg");
    fails_with(
        &["map", "traces/edge-cases.trace", "--svg", path_str(&png)],
        ".svg",
    );
    assert!(!png.exists());
}

#[test]
fn one_thread_reproduces_a_run_from_its_seed() {
    let args = [
        "simulate",
        "--json",
        "--threads",
        "1",
        "--seed",
        "9",
        "--steps",
        "300",
        "--think",
        "0",
        "--budget",
        "64MiB",
    ];
    let (a, b) = (json(&args), json(&args));
    for key in [
        "calls_by_method",
        "failures_by_hresult",
        "committed",
        "steps",
    ] {
        assert_eq!(a[key], b[key], "{key} differs between two runs of seed 9");
    }
    let help = stdout(&run(&["simulate", "--help"]));
    assert!(help.contains("--threads 1"), "{help}");
}

#[test]
fn help_names_the_environment_and_each_commands_own_defaults() {
    let help = stdout(&run(&["--help"]));
    assert!(help.contains("HOSTMEM_TRACE"), "{help}");
    let simulate = stdout(&run(&["simulate", "--help"]));
    let map = stdout(&run(&["map", "--help"]));
    assert!(simulate.contains("[default: 3000]"), "{simulate}");
    assert!(simulate.contains("[default: 1500]"), "{simulate}");
    assert!(map.contains("[default: 400]"), "{map}");
    assert!(map.contains("[default: 0]"), "{map}");
    for (name, text, other) in [("simulate", &simulate, "400"), ("map", &map, "3000")] {
        assert!(
            !text.contains(&format!("[default: {other}]")) && !text.contains("map 400"),
            "{name}'s help shows another command's default:\n{text}"
        );
    }
    let bench = stdout(&run(&["bench", "--help"]));
    assert!(bench.contains("not comparable to the targets"), "{bench}");
}

#[test]
fn bench_quick_says_its_ratios_are_not_comparable() {
    let out = ok(&["bench", "--quick", "--figure", "2", "--trials", "2"]);
    assert!(out.contains("not comparable to the targets"), "{out}");
}

#[test]
fn counts_of_one_are_singular() {
    let out = ok(&[
        "simulate",
        "--threads",
        "1",
        "--steps",
        "1",
        "--think",
        "0",
        "--budget",
        "64MiB",
    ]);
    assert!(
        out.contains("1 thread,") && out.contains("1 step "),
        "{out}"
    );
    for wrong in [
        "1 threads",
        "1 steps",
        "1 reservations",
        "1 runtime mappings",
    ] {
        assert!(!out.contains(wrong), "`{wrong}` in:\n{out}");
    }
    let map = ok(&["map", "traces/edge-cases.trace", "--at", "3"]);
    assert!(!map.contains("1 reservations"), "{map}");
}

#[test]
fn a_truncated_trace_says_it_looks_truncated() {
    let text = std::fs::read_to_string("traces/edge-cases.trace").unwrap();
    // Cut in the middle of a line.
    let cut = text.find("=> HOST_E").expect("a HOST_E result") + "=> HO".len();
    let mid_line = temp("mid-line.trace");
    std::fs::write(&mid_line, &text[..cut]).unwrap();
    let err = fails_with(&["replay", path_str(&mid_line)], "looks truncated");
    assert!(err.contains("line "), "{err}");
    // Cut at a line's end: it replays, and says the managers never shut down.
    let lines: Vec<&str> = text.lines().take(20).collect();
    let whole_lines = temp("whole-lines.trace");
    std::fs::write(&whole_lines, lines.join("\n") + "\n").unwrap();
    let out = ok(&["replay", path_str(&whole_lines)]);
    let map = ok(&["map", path_str(&whole_lines), "--at", "end"]);
    let _ = std::fs::remove_file(&mid_line);
    let _ = std::fs::remove_file(&whole_lines);
    assert!(
        out.contains("looks truncated: m1 never shuts down"),
        "{out}"
    );
    assert!(map.contains("looks truncated"), "{map}");
    // A whole trace does not.
    assert!(!ok(&["replay"]).contains("truncated"));
}
