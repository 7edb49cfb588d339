//! The fuzzers' findings and chosen corpus entries, replayed under plain
//! `cargo test` (no cargo-fuzz, no nightly): every file in
//! `fuzz/regressions/<target>/` goes through the same decoding and the
//! same checks as in the fuzz target `<target>` (`fuzz/fuzz_targets/`),
//! the engine's with the full check after every step.
//!
//! A crash the fuzzer finds is minimised (`cargo fuzz tmin`), the bug it
//! shows fixed, and its input copied into the directory of its target.

#[allow(dead_code)]
#[path = "model/reference.rs"]
mod reference;

#[path = "model/harness.rs"]
mod harness;

#[path = "model/grammar.rs"]
mod grammar;

#[path = "../fuzz/checks/trace_parser.rs"]
mod trace_parser;

use std::path::{Path, PathBuf};

/// The files of `fuzz/<dir>/<target>/`, by name.
fn inputs(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Runs one input of `target` through the target's checks.
fn check(target: &str, data: &[u8]) -> Result<(), String> {
    match target {
        "engine_vs_model" => {
            let ops = grammar::ops_from_bytes(data);
            if ops.is_empty() {
                return Err("decodes to no operation".to_string());
            }
            let (result, trace) = harness::run_case(&ops, true);
            result.map_err(|e| {
                format!(
                    "{e}\n{} ops: {ops:#?}\ntrace:\n{}",
                    ops.len(),
                    trace.join("\n")
                )
            })
        }
        "trace_parser" => std::panic::catch_unwind(|| trace_parser::check(data)).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }),
        other => panic!("no fuzz target {other}"),
    }
}

/// Every input of `fuzz/<dir>/<target>/` through [`check`], at least one
/// (an empty directory would make a test pass without checking
/// anything); the failures, with their files.
fn replay(dir: &str, target: &str) -> Vec<String> {
    // The engine's checks read /proc/self/maps: no other test of this
    // binary may map or unmap meanwhile.
    let _serial = harness::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = inputs(dir, target);
    assert!(!inputs.is_empty(), "fuzz/{dir}/{target}/ has no inputs");
    inputs
        .iter()
        .filter_map(|(path, data)| {
            check(target, data)
                .err()
                .map(|e| format!("{}: {e}", path.display()))
        })
        .collect()
}

fn page_size_is_4k() -> bool {
    let ok = rustix::param::page_size() == reference::PAGE;
    if !ok {
        eprintln!(
            "skipped: the kernel page size is not 4 KiB, so /proc/self/maps cannot show single pages"
        );
    }
    ok
}

#[test]
fn engine_vs_model_regressions() {
    if !page_size_is_4k() {
        return;
    }
    let failures = replay("regressions", "engine_vs_model");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn trace_parser_regressions() {
    let failures = replay("regressions", "trace_parser");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
