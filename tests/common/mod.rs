//! Building and running the C test programs: the compiler the `cc` crate
//! picks, the `libhostmem.a` this `cargo test` built (Cargo emits every
//! crate type of the `[lib]` target in one rustc invocation, into
//! `target/<profile>/deps/`, next to the test executable), and the system
//! libraries a Rust `staticlib` needs; each program built plainly or with
//! AddressSanitizer, run natively or under valgrind, and its
//! `tests/c/check.h` totals read. Shared by `tests/flat_c_api.rs`,
//! `tests/mock_clr.rs` and `tests/sanitizers.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The system libraries a Rust `staticlib` needs on Linux (glibc), as
/// `rustc --print native-static-libs` lists them: the link line the README
/// and `include/hostmem.h` give (`tests/examples.rs` checks that they do).
pub const NATIVE_STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

/// Warnings are errors: the headers must be clean C11 and C++17.
pub const WARNINGS: &[&str] = &["-Wall", "-Wextra", "-Werror"];

/// Says that a test skipped some of its work, and why, where the person
/// running `cargo test` sees it: straight to the process's stderr, which
/// the test harness does not capture (`println!` output it shows only for
/// failed tests).
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `target/<profile>/deps`, where this test executable and the library are.
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .expect("the test executable is in a directory")
        .to_path_buf()
}

/// The `libhostmem.a` built by this `cargo test` (see the module docs).
pub fn static_library() -> PathBuf {
    let deps = deps_dir();
    let candidates = [Some(deps.as_path()), deps.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join("libhostmem.a"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libhostmem.a not found in {} or its parent: is crate-type \"staticlib\" still in \
                 Cargo.toml's [lib]?",
                deps.display()
            )
        })
}

/// The `libhostmem.so` built by this `cargo test`, beside
/// [`static_library`]'s archive.
pub fn shared_library() -> PathBuf {
    let path = static_library().with_file_name("libhostmem.so");
    assert!(
        path.is_file(),
        "{} not found: is crate-type \"cdylib\" still in Cargo.toml's [lib]?",
        path.display()
    );
    path
}

/// A directory for this profile's executables.
pub fn output_dir() -> PathBuf {
    let deps = deps_dir();
    let profile = deps.parent().and_then(Path::file_name).map_or_else(
        || "unknown".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(env!("CARGO_CRATE_NAME"))
        .join(profile);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The target triple of this test (the one the library was built for).
pub fn target_triple() -> String {
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "gnu"
    };
    format!("{}-unknown-linux-{env}", std::env::consts::ARCH)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Language {
    /// C11.
    C11,
    /// C++17.
    Cxx17,
}

/// The compiler command the `cc` crate picks for `language`, with its
/// default flags for this target.
pub fn compiler(language: Language) -> Command {
    let triple = target_triple();
    cc::Build::new()
        .cpp(language == Language::Cxx17)
        .target(&triple)
        .host(&triple)
        .opt_level(0)
        .debug(true)
        .warnings(false)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .get_compiler()
        .to_command()
}

pub fn describe(command: &Command, output: &Output) -> String {
    format!(
        "{command:?}\nstatus: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn run(mut command: Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "failed:\n{}",
        describe(&command, &output)
    );
    output
}

/// How a C test program is built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    /// As a host would build it.
    Plain,
    /// With AddressSanitizer (and its LeakSanitizer): the C or C++ code is
    /// instrumented and every `malloc`/`free` of the process, the Rust
    /// library's included, goes through ASan's allocator; the Rust code
    /// itself is not instrumented.
    AddressSanitizer,
}

/// The compiler and linker flags of a variant.
fn variant_flags(variant: Variant) -> &'static [&'static str] {
    match variant {
        Variant::Plain => &[],
        Variant::AddressSanitizer => &["-fsanitize=address", "-fno-omit-frame-pointer", "-g"],
    }
}

/// Compiles `source` (under `tests/c`) as `language`, links it against
/// `libhostmem.a`, and returns the executable.
pub fn build(source: &str, language: Language) -> PathBuf {
    build_variant(source, language, Variant::Plain)
}

/// [`build`], as `variant`.
pub fn build_variant(source: &str, language: Language, variant: Variant) -> PathBuf {
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    let suffix = match (language, variant) {
        (Language::C11, Variant::Plain) => "c",
        (Language::Cxx17, Variant::Plain) => "cxx",
        (Language::C11, Variant::AddressSanitizer) => "c-asan",
        (Language::Cxx17, Variant::AddressSanitizer) => "cxx-asan",
    };
    let exe = output_dir().join(format!("{stem}-{suffix}"));
    let mut command = compiler(language);
    match language {
        Language::C11 => command.arg("-std=c11"),
        Language::Cxx17 => command.args(["-x", "c++", "-std=c++17"]),
    };
    command
        .args(WARNINGS)
        .args(variant_flags(variant))
        .arg("-I")
        .arg(repo_path("include"))
        .arg(repo_path(&format!("tests/c/{source}")));
    if language == Language::Cxx17 {
        // What follows is not C++ source.
        command.args(["-x", "none"]);
    }
    command
        .arg(static_library())
        .args(NATIVE_STATIC_LIBS)
        .arg("-o")
        .arg(&exe);
    run(command);
    exe
}

/// Whether the C compiler can build and run an AddressSanitizer program
/// (gcc needs libasan; clang its compiler-rt). Asked once per test binary;
/// the reason is returned when it cannot.
pub fn address_sanitizer() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            let dir = output_dir();
            let source = dir.join("asan_probe.c");
            let exe = dir.join("asan_probe");
            std::fs::write(&source, "int main(void) { return 0; }\n")
                .map_err(|e| format!("writing {}: {e}", source.display()))?;
            let mut command = compiler(Language::C11);
            command
                .args(variant_flags(Variant::AddressSanitizer))
                .arg(&source)
                .arg("-o")
                .arg(&exe);
            let output = command
                .output()
                .map_err(|e| format!("could not run {command:?}: {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "the C compiler cannot build with -fsanitize=address:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let output = Command::new(&exe)
                .output()
                .map_err(|e| format!("could not run {}: {e}", exe.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "an empty AddressSanitizer program fails here:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// `valgrind` (memcheck) with the options every C test program runs
/// under: any invalid access, use of uninitialised memory or definitely
/// lost block fails the run (exit status 99). `None` when valgrind is not
/// installed or `HOSTMEM_TEST_VALGRIND=0`.
pub fn valgrind() -> Option<Command> {
    if std::env::var_os("HOSTMEM_TEST_VALGRIND").is_some_and(|v| v == "0") {
        return None;
    }
    let installed = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    installed.then(|| {
        let mut command = Command::new("valgrind");
        command.args([
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--track-origins=yes",
        ]);
        command
    })
}

/// The totals line of a C test program (`tests/c/check.h`),
/// "<program>: N passed, M failed", as `(N, M)`.
pub fn check_totals(stdout: &str) -> Option<(u32, u32)> {
    stdout.lines().find_map(|line| {
        let (_, totals) = line.rsplit_once(": ")?;
        let (passed, failed) = totals.split_once(" passed, ")?;
        let failed = failed.strip_suffix(" failed")?;
        Some((passed.parse().ok()?, failed.parse().ok()?))
    })
}

/// A C test program's run that passed.
pub struct Checked {
    /// How many checks passed (more than none).
    pub passed: u32,
    /// What it printed.
    pub output: Output,
}

/// Runs a C test program: it must exit 0 and report "N passed, 0 failed"
/// with N > 0. Prints its standard output.
pub fn run_checks(mut command: Command, what: &str) -> Checked {
    command.env("RUST_BACKTRACE", "0");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let details = describe(&command, &output);
    print!("{stdout}");
    assert!(output.status.success(), "{what} failed:\n{details}");
    let (passed, failed) = check_totals(&stdout)
        .unwrap_or_else(|| panic!("no \"N passed, M failed\" line from {what}:\n{details}"));
    assert_eq!(failed, 0, "{what}:\n{details}");
    assert!(passed > 0, "{what} checked nothing");
    Checked { passed, output }
}

/// Builds a C test program and runs it natively, then under valgrind if
/// there is one (see [`valgrind`]); both runs must pass the same checks.
/// Returns the number of checks.
pub fn build_and_run(source: &str, language: Language) -> u32 {
    let exe = build(source, language);
    let what = format!("{source} ({language:?})");
    let passed = run_checks(Command::new(&exe), &what).passed;
    match valgrind() {
        Some(mut valgrind) => {
            valgrind.arg(&exe);
            let under_valgrind = run_checks(valgrind, &format!("{what} under valgrind")).passed;
            assert_eq!(
                under_valgrind, passed,
                "{what}: valgrind run made other checks"
            );
            println!("{what} under valgrind: no invalid access, no definite leak");
        }
        None => skipped(&format!(
            "{what} under valgrind (valgrind is not installed, or HOSTMEM_TEST_VALGRIND=0); it ran natively only"
        )),
    }
    passed
}
