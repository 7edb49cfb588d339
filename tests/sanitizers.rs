//! The C and C++ test programs built with AddressSanitizer and run with its
//! LeakSanitizer (issue 8, item 6).
//!
//! Each program of `tests/c` is compiled with `-fsanitize=address
//! -fno-omit-frame-pointer -g` and linked against the same uninstrumented
//! `libhostmem.a` as the plain build (`tests/common/mod.rs`): the C and
//! C++ side is checked access by access, and every `malloc`/`free` of the
//! process, the Rust library's too, goes through ASan's allocator, so a
//! double free, a free of a pointer the library never handed out, or a
//! block nobody can reach at exit (LeakSanitizer) is reported wherever it
//! comes from. Every program must pass all its checks, exit 0, and leave no
//! AddressSanitizer or LeakSanitizer report on stderr.
//!
//! hostmem and ASan share the address space: ASan maps its shadow memory
//! (on x86-64 up to 16 TiB + 2 GiB) before `main`, and hostmem's placement
//! window starts near 16 TiB, so about one manager in 32 finds its window
//! beginning in the shadow. hostmem never maps over an existing mapping
//! (`MAP_FIXED_NOREPLACE` for its anchor page and for the address it picks
//! for a reservation, then a mere hint when that is taken), so the kernel
//! places those reservations elsewhere; `tests/c/asan_window.c`
//! creates a thousand managers to make that case occur in every run.
//!
//! When the compiler cannot build an ASan program (no libasan), each test
//! prints a note and passes without running.

use std::process::{Command, Output};

mod common;
use common::*;

/// What the sanitizers are told: leaks are checked at exit; the first
/// report aborts (non-zero status); stack frames are checked after return;
/// string functions check their whole arguments; globals are checked for
/// use before their initialisation.
const ASAN_OPTIONS: &str = "detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:\
                            strict_string_checks=1:check_initialization_order=1";

/// Whether this test can run; prints why not when it cannot.
fn asan_available(what: &str) -> bool {
    match address_sanitizer() {
        Ok(()) => true,
        Err(why) => {
            common::skipped(&format!(
                "{what} (AddressSanitizer is not available here: {why})"
            ));
            false
        }
    }
}

/// The command that runs `exe` with [`ASAN_OPTIONS`] (and no other
/// sanitizer options from the environment).
fn asan_command(exe: &std::path::Path) -> Command {
    let mut command = Command::new(exe);
    command
        .env("ASAN_OPTIONS", ASAN_OPTIONS)
        .env_remove("LSAN_OPTIONS")
        .env_remove("UBSAN_OPTIONS");
    command
}

/// The AddressSanitizer and LeakSanitizer reports in a run's stderr.
fn reports(output: &Output) -> usize {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| {
            [
                "ERROR: AddressSanitizer",
                "ERROR: LeakSanitizer",
                "WARNING: AddressSanitizer",
            ]
            .iter()
            .any(|report| line.contains(report))
        })
        .count()
}

/// Builds `source` with ASan and runs it: every check must pass, and
/// there must be no report.
fn run_with_asan(source: &str, language: Language) {
    let what = format!("{source} ({language:?}, AddressSanitizer)");
    if !asan_available(&what) {
        return;
    }
    let exe = build_variant(source, language, Variant::AddressSanitizer);
    let checked = run_checks(asan_command(&exe), &what);
    let reports = reports(&checked.output);
    assert_eq!(
        reports,
        0,
        "{what}: sanitizer reports:\n{}",
        String::from_utf8_lossy(&checked.output.stderr)
    );
    println!(
        "{what}: {} checks passed, ASan/LSan reports: {reports}",
        checked.passed
    );
}

#[test]
fn flat_api_c_is_clean_under_asan() {
    run_with_asan("flat_api.c", Language::C11);
}

#[test]
fn win32_compat_c_is_clean_under_asan() {
    run_with_asan("win32_compat.c", Language::C11);
}

#[test]
fn win32_compat_cpp_is_clean_under_asan() {
    run_with_asan("win32_compat.c", Language::Cxx17);
}

#[test]
fn mock_clr_c_is_clean_under_asan() {
    run_with_asan("mock_clr.c", Language::C11);
}

#[test]
fn mock_clr_cpp_is_clean_under_asan() {
    run_with_asan("mock_clr_cpp.cpp", Language::Cxx17);
}

/// The mark-and-sweep loop over `GetWriteWatch`, four writer threads.
#[test]
fn write_watch_c_is_clean_under_asan() {
    run_with_asan("write_watch.c", Language::C11);
}

#[test]
fn managers_whose_window_meets_the_asan_shadow_work() {
    run_with_asan("asan_window.c", Language::C11);
}

/// `mbi_layout.c` makes no checks: it prints the layout, which must be
/// the same with ASan as without, and leave no report.
#[test]
fn mbi_layout_is_the_same_and_clean_under_asan() {
    let what = "mbi_layout.c (AddressSanitizer)";
    if !asan_available(what) {
        return;
    }
    let plain = run(Command::new(build("mbi_layout.c", Language::C11)));
    let exe = build_variant("mbi_layout.c", Language::C11, Variant::AddressSanitizer);
    let asan = run(asan_command(&exe));
    assert_eq!(
        String::from_utf8_lossy(&asan.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "{what}: another layout"
    );
    assert_eq!(reports(&asan), 0, "{what}: sanitizer reports");
    assert!(!asan.stdout.is_empty(), "{what} printed nothing");
}
