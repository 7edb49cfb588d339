//! The examples in `examples/`, built and run with the very lines the
//! README gives: its "Examples" block is read, each C and C++ compile line
//! is run by `sh` under each of its `LIBS=` link lines (the static archive,
//! the shared library with a run path, pkg-config) in a folder laid out
//! like the repository after `cargo build --release` (`include/`,
//! `examples/`, `hostmem.pc`, and `target/release/` holding the libraries
//! this `cargo test` built), and each program must exit 0 and print its
//! last line. The Rust example runs in-process. The link line is also
//! checked against `include/hostmem.h`, `hostmem.pc` and the flags the C
//! tests link with.

mod common;

#[path = "../examples/embed.rs"]
mod embed;

use common::{NATIVE_STATIC_LIBS, describe, read, repo_path};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's fenced block that builds the examples.
fn readme_block() -> Vec<String> {
    let readme = read("README.md");
    let mut blocks = readme.split("```").skip(1).step_by(2);
    let block = blocks
        .find(|block| block.contains("examples/win32_port.c"))
        .expect("the README has a block that builds examples/win32_port.c");
    block
        .lines()
        .skip(1) // the info string
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The block's `LIBS=...` lines.
fn link_lines() -> Vec<String> {
    readme_block()
        .into_iter()
        .filter(|line| line.starts_with("LIBS="))
        .collect()
}

/// The block's line that compiles and runs `source`.
fn compile_line(source: &str) -> String {
    readme_block()
        .into_iter()
        .find(|line| {
            (line.starts_with("cc ") || line.starts_with("c++ "))
                && line.contains(&format!("examples/{source} "))
        })
        .unwrap_or_else(|| panic!("the README's examples block has no line for {source}"))
}

/// The README's static link line: `LIBS="target/release/libhostmem.a ..."`.
fn static_link_line() -> String {
    link_lines()
        .into_iter()
        .find(|line| line.contains("libhostmem.a"))
        .expect("the README gives a static link line")
}

/// A folder laid out like the repository after `cargo build --release`,
/// with this test's libraries in `target/release/`.
fn release_like_folder(name: &str) -> PathBuf {
    let dir = common::output_dir().join(format!("examples-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("target/release")).expect("creating the folder");
    let link = |from: &Path, to: &str| {
        std::os::unix::fs::symlink(from, dir.join(to))
            .unwrap_or_else(|e| panic!("linking {to}: {e}"));
    };
    link(&repo_path("include"), "include");
    link(&repo_path("examples"), "examples");
    link(&common::static_library(), "target/release/libhostmem.a");
    link(&common::shared_library(), "target/release/libhostmem.so");
    // A copy: pkg-config's ${pcfiledir} is where it found the file.
    std::fs::copy(repo_path("hostmem.pc"), dir.join("hostmem.pc")).expect("copying hostmem.pc");
    dir
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The libraries `exe` needs at run time (`readelf -d`), if readelf is here.
fn needed(exe: &Path) -> Option<String> {
    let output = Command::new("readelf").arg("-d").arg(exe).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Builds and runs `source` with the README's compile line under the
/// README's link line that contains `link_marker`; the program must exit 0
/// and print `last`.
fn build_and_run(source: &str, link_marker: &str, variant: &str, last: &str) {
    if variant == "pkg-config" && !installed("pkg-config") {
        common::skipped(&format!(
            "{source} through pkg-config (pkg-config is not installed)"
        ));
        return;
    }
    let libs = link_lines()
        .into_iter()
        .find(|line| line.contains(link_marker))
        .unwrap_or_else(|| panic!("the README gives no link line with {link_marker}"));
    let line = compile_line(source);
    let stem = Path::new(source).file_stem().unwrap().to_string_lossy();
    let dir = release_like_folder(&format!("{stem}-{variant}"));
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("set -e\n{libs}\n{line}"))
        .current_dir(&dir)
        .env_remove("HOSTMEM_TRACE")
        .env_remove("PKG_CONFIG_PATH");
    let output = command.output().expect("running sh");
    let details = describe(&command, &output);
    assert!(output.status.success(), "{source} ({variant}):\n{details}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some(last),
        "{source} ({variant}):\n{details}"
    );
    if let Some(dynamic) = needed(&dir.join(&*stem)) {
        let shared = dynamic.contains("libhostmem.so");
        assert_eq!(
            shared,
            variant != "static",
            "{source} ({variant}) links the {} library:\n{dynamic}",
            if shared { "shared" } else { "static" }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const WIN32_PORT_LAST: &str = "released: the table's address is MEM_FREE again";
const NOTIFICATION_LAST: &str = "heard Low, Neutral, High: once per change";
const CLR_HOST_LAST: &str = "host: done";

#[test]
fn win32_port_static() {
    build_and_run("win32_port.c", "libhostmem.a", "static", WIN32_PORT_LAST);
}

#[test]
fn win32_port_shared() {
    build_and_run("win32_port.c", "-lhostmem", "shared", WIN32_PORT_LAST);
}

#[test]
fn win32_port_pkg_config() {
    build_and_run("win32_port.c", "pkg-config", "pkg-config", WIN32_PORT_LAST);
}

#[test]
fn memory_notification_static() {
    build_and_run(
        "memory_notification.c",
        "libhostmem.a",
        "static",
        NOTIFICATION_LAST,
    );
}

#[test]
fn memory_notification_shared() {
    build_and_run(
        "memory_notification.c",
        "-lhostmem",
        "shared",
        NOTIFICATION_LAST,
    );
}

#[test]
fn clr_host_static() {
    build_and_run("clr_host.cpp", "libhostmem.a", "static", CLR_HOST_LAST);
}

#[test]
fn clr_host_shared() {
    build_and_run("clr_host.cpp", "-lhostmem", "shared", CLR_HOST_LAST);
}

#[test]
fn clr_host_pkg_config() {
    build_and_run("clr_host.cpp", "pkg-config", "pkg-config", CLR_HOST_LAST);
}

#[test]
fn the_rust_example_runs() {
    embed::main().expect("examples/embed.rs");
    assert!(
        readme_block().contains(&"cargo run --example embed".to_owned()),
        "the README's examples block runs the Rust example"
    );
}

/// The README's C++ snippet is a whole function of `examples/clr_host.cpp`.
#[test]
fn the_readme_snippet_is_the_examples_code() {
    let readme = read("README.md");
    let snippet = readme
        .split("```cpp\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a C++ snippet");
    assert!(
        snippet.contains("HRESULT install_hostmem("),
        "the snippet is install_hostmem:\n{snippet}"
    );
    let example = read("examples/clr_host.cpp");
    assert!(
        example.contains(snippet),
        "the README's C++ snippet is not, verbatim, in examples/clr_host.cpp:\n{snippet}"
    );
}

/// One link line: the README's, the header's, pkg-config's, and the flags
/// the C tests link with.
#[test]
fn one_link_line() {
    let flags = NATIVE_STATIC_LIBS.join(" ");
    assert_eq!(
        static_link_line(),
        format!("LIBS=\"target/release/libhostmem.a {flags}\""),
        "the README's static link line"
    );
    assert!(
        read("include/hostmem.h").contains(&format!("libhostmem.a {flags}")),
        "include/hostmem.h does not give the link line `libhostmem.a {flags}`"
    );
    let pc = read("hostmem.pc");
    assert!(
        pc.contains(&format!("Libs.private: {flags}\n")),
        "hostmem.pc's Libs.private is not `{flags}`"
    );
    assert!(
        pc.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))),
        "hostmem.pc's Version is not Cargo.toml's"
    );
    assert_eq!(link_lines().len(), 3, "static, shared, pkg-config");
}
