//! The flat C API end to end, from C and C++:
//!
//! - `include/hostmem.h` and `include/hostmem/win32.h` agree with the Rust
//!   definitions (constants, `MEMORY_BASIC_INFORMATION` layout, the fixed
//!   prototypes), so header and library never drift;
//! - `tests/c/flat_api.c` (the `hostmem_` names) and `tests/c/win32_compat.c`
//!   (Windows code, unchanged: the Win32 names only; built once as C11 and
//!   once as C++17) are compiled with `-Wall -Wextra -Werror`, linked
//!   statically against the `libhostmem.a` that this `cargo test` built,
//!   run, and must report no failed check.
//!
//! # Where the library comes from
//!
//! The `[lib]` target declares `crate-type = ["rlib", "cdylib",
//! "staticlib"]`, and Cargo builds a library target with a single rustc
//! invocation that emits every crate type at once (`--crate-type rlib
//! --crate-type cdylib --crate-type staticlib`), into the profile's `deps/`
//! directory (and uplifted to the profile directory). This test links the
//! rlib, so the invocation that produced `libhostmem.a` is a dependency of
//! this very binary: whenever the test runs — `cargo test`, `cargo test
//! --release`, a clean clone, `--target <triple>` — `libhostmem.a` exists
//! next to the test executable (`target/<profile>/deps/`) and is exactly as
//! fresh as the rlib the test was linked with. No second `cargo build` is
//! needed (it would contend for the build directory lock held by the outer
//! `cargo test`).
//!
//! The C compiler is the one the `cc` crate picks (`CC`/`CXX` respected);
//! executables go to `CARGO_TARGET_TMPDIR`. Each program runs natively,
//! then, when `valgrind` is installed (and `HOSTMEM_TEST_VALGRIND` is not
//! `0`), once more under valgrind, whose errors and definitely lost blocks
//! fail the test (`tests/common/mod.rs`). `tests/sanitizers.rs` builds the
//! same programs with AddressSanitizer.

use hostmem::ffi::flat::{
    MEMORY_BASIC_INFORMATION_SIZE, hostmem_GetLastError, hostmem_SetLastError,
    hostmem_VirtualAlloc, hostmem_VirtualFree, hostmem_VirtualProtect, hostmem_VirtualQuery,
};
use hostmem::win32::{
    AllocationType, FreeType, MemoryBasicInformation, MemoryState, MemoryType, Protection,
    Win32Error,
};
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::process::Command;

mod common;
use common::*;

#[test]
fn flat_api_c_program_passes() {
    build_and_run("flat_api.c", Language::C11);
}

#[test]
fn win32_compat_c_program_passes() {
    build_and_run("win32_compat.c", Language::C11);
}

/// A mark-and-sweep loop over `GetWriteWatch` with reset and four writer
/// threads (skips itself where the kernel cannot watch writes). Valgrind
/// does not pass `userfaultfd` through, so under it the program finds no
/// write watching and says so; its other checks must still pass.
#[test]
fn write_watch_c_program_passes() {
    let exe = build("write_watch.c", Language::C11);
    let native = run_checks(Command::new(&exe), "write_watch.c").passed;
    if let Some(mut valgrind) = valgrind() {
        valgrind.arg(&exe);
        let run = run_checks(valgrind, "write_watch.c under valgrind");
        let stdout = String::from_utf8_lossy(&run.output.stdout);
        assert!(
            run.passed == native || stdout.contains("skipped: this kernel cannot watch writes"),
            "write_watch.c under valgrind: {} checks, natively {native}",
            run.passed
        );
    }
}

#[test]
fn win32_compat_cpp_program_passes() {
    build_and_run("win32_compat.c", Language::Cxx17);
}

/// `HOSTMEM_X UINT32_C(value)` lines of `include/hostmem.h`, by `X`.
fn header_constants() -> BTreeMap<String, u32> {
    let mut constants = BTreeMap::new();
    for line in read("include/hostmem.h").lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let Some(name) = words.next().and_then(|n| n.strip_prefix("HOSTMEM_")) else {
            continue;
        };
        if !["MEM_", "PAGE_", "ERROR_", "WRITE_WATCH_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let literal = words
            .next()
            .and_then(|v| v.strip_prefix("UINT32_C("))
            .and_then(|v| v.strip_suffix(')'))
            .unwrap_or_else(|| panic!("HOSTMEM_{name} is not a UINT32_C(...) constant: {line}"));
        let value = match literal.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => literal.parse(),
        }
        .unwrap_or_else(|e| panic!("HOSTMEM_{name}: bad literal {literal}: {e}"));
        assert!(
            constants.insert(name.to_owned(), value).is_none(),
            "HOSTMEM_{name} defined twice"
        );
    }
    constants
}

/// Every named constant of the Rust vocabulary, by its Win32 name.
fn rust_constants() -> BTreeMap<String, u32> {
    let mut constants = BTreeMap::new();
    let mut add = |name: String, value: u32| {
        if let Some(other) = constants.insert(name.clone(), value) {
            assert_eq!(other, value, "{name} has two values in Rust");
        }
    };
    for (name, flag) in AllocationType::all().iter_names() {
        add(format!("MEM_{name}"), flag.bits());
    }
    for (name, flag) in FreeType::all().iter_names() {
        add(format!("MEM_{name}"), flag.bits());
    }
    for (name, flag) in MemoryState::all().iter_names() {
        add(format!("MEM_{name}"), flag.bits());
    }
    for (name, flag) in MemoryType::all().iter_names() {
        add(format!("MEM_{name}"), flag.bits());
    }
    for (name, flag) in Protection::all().iter_names() {
        add(format!("PAGE_{name}"), flag.bits());
    }
    for code in 0..=0xFFFF {
        if let Some(name) = Win32Error(code).name() {
            add(name.to_owned(), code);
        }
    }
    add(
        "WRITE_WATCH_FLAG_RESET".to_owned(),
        hostmem::win32::WRITE_WATCH_FLAG_RESET,
    );
    constants
}

#[test]
fn header_constants_match_rust() {
    let header = header_constants();
    let rust = rust_constants();
    for (name, value) in &rust {
        assert_eq!(
            header.get(name),
            Some(value),
            "HOSTMEM_{name}: the header does not say {value:#x} as Rust does"
        );
    }
    for (name, value) in &header {
        assert_eq!(
            rust.get(name),
            Some(value),
            "HOSTMEM_{name} = {value:#x} in the header, unknown to Rust"
        );
    }
    // Spot checks against the spec's table, in case both sides moved.
    assert_eq!(header["MEM_COMMIT"], 0x1000);
    assert_eq!(header["MEM_RESET_UNDO"], 0x100_0000);
    assert_eq!(header["PAGE_EXECUTE_READWRITE"], 0x40);
    assert_eq!(header["ERROR_INVALID_ADDRESS"], 487);
}

#[test]
fn win32_header_aliases_every_constant() {
    let mut aliased = Vec::new();
    for line in read("include/hostmem/win32.h").lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some(target) = value.strip_prefix("HOSTMEM_") {
            assert_eq!(name, target, "{name} is defined as {value}");
            aliased.push(name.to_owned());
        }
    }
    aliased.sort();
    let header: Vec<String> = header_constants().into_keys().collect();
    assert_eq!(
        aliased, header,
        "win32.h must alias every hostmem.h constant once"
    );
}

/// Whitespace-normalised text, for comparing prototypes.
fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn header_declares_the_fixed_abi() {
    // The C ABI of docs/design.md, verbatim.
    let prototypes = [
        "void* hostmem_VirtualAlloc(void* address, size_t size, uint32_t allocation_type, uint32_t protect);",
        "int32_t hostmem_VirtualFree(void* address, size_t size, uint32_t free_type);",
        "size_t hostmem_VirtualQuery(const void* address, void* mbi, size_t length);",
        "int32_t hostmem_VirtualProtect(void* address, size_t size, uint32_t new_protect, uint32_t* old_protect);",
        "uint32_t hostmem_GetLastError(void);",
        "void hostmem_SetLastError(uint32_t code);",
    ];
    let header = normalise(&read("include/hostmem.h"));
    for prototype in prototypes {
        assert!(
            header.contains(&normalise(prototype)),
            "hostmem.h lacks `{prototype}`"
        );
    }
    // The Rust functions have the same C types.
    let _: unsafe extern "C" fn(*mut c_void, usize, u32, u32) -> *mut c_void = hostmem_VirtualAlloc;
    let _: unsafe extern "C" fn(*mut c_void, usize, u32) -> i32 = hostmem_VirtualFree;
    let _: unsafe extern "C" fn(*const c_void, *mut c_void, usize) -> usize = hostmem_VirtualQuery;
    let _: unsafe extern "C" fn(*mut c_void, usize, u32, *mut u32) -> i32 = hostmem_VirtualProtect;
    let _: unsafe extern "C" fn() -> u32 = hostmem_GetLastError;
    let _: unsafe extern "C" fn(u32) = hostmem_SetLastError;
}

#[test]
fn header_declares_the_write_watch_functions() {
    let prototypes = [
        "uint32_t hostmem_GetWriteWatch(uint32_t flags, void* base, size_t size, void** addresses, size_t* count, uint32_t* granularity);",
        "uint32_t hostmem_ResetWriteWatch(void* base, size_t size);",
        "size_t hostmem_GetLargePageMinimum(void);",
    ];
    let header = normalise(&read("include/hostmem.h"));
    for prototype in prototypes {
        assert!(
            header.contains(&normalise(prototype)),
            "hostmem.h lacks `{prototype}`"
        );
    }
    use hostmem::ffi::flat::{
        hostmem_GetLargePageMinimum, hostmem_GetWriteWatch, hostmem_ResetWriteWatch,
    };
    let _: unsafe extern "C" fn(
        u32,
        *mut c_void,
        usize,
        *mut *mut c_void,
        *mut usize,
        *mut u32,
    ) -> u32 = hostmem_GetWriteWatch;
    let _: unsafe extern "C" fn(*mut c_void, usize) -> u32 = hostmem_ResetWriteWatch;
    let _: unsafe extern "C" fn() -> usize = hostmem_GetLargePageMinimum;
}

#[test]
fn header_struct_layout_matches_rust() {
    type Mbi = MemoryBasicInformation;
    let rust = [
        (
            "BaseAddress",
            offset_of!(Mbi, base_address),
            size_of::<usize>(),
        ),
        (
            "AllocationBase",
            offset_of!(Mbi, allocation_base),
            size_of::<usize>(),
        ),
        (
            "AllocationProtect",
            offset_of!(Mbi, allocation_protect),
            size_of::<Protection>(),
        ),
        (
            "PartitionId",
            offset_of!(Mbi, partition_id),
            size_of::<u16>(),
        ),
        (
            "RegionSize",
            offset_of!(Mbi, region_size),
            size_of::<usize>(),
        ),
        ("State", offset_of!(Mbi, state), size_of::<MemoryState>()),
        ("Protect", offset_of!(Mbi, protect), size_of::<Protection>()),
        ("Type", offset_of!(Mbi, type_), size_of::<MemoryType>()),
    ];
    let exe = build("mbi_layout.c", Language::C11);
    let stdout = String::from_utf8(run(Command::new(exe)).stdout).expect("ASCII output");
    let mut c = BTreeMap::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let numbers: Vec<usize> = words[1..].iter().map(|w| w.parse().unwrap()).collect();
        c.insert(words[0].to_owned(), numbers);
    }
    for (field, offset, size) in rust {
        assert_eq!(
            c.get(field),
            Some(&vec![offset, size]),
            "{field}: C (offset, size) differ from Rust"
        );
    }
    assert_eq!(c["sizeof"], vec![size_of::<Mbi>()]);
    assert_eq!(size_of::<Mbi>(), MEMORY_BASIC_INFORMATION_SIZE);
    #[cfg(target_pointer_width = "64")]
    assert_eq!(MEMORY_BASIC_INFORMATION_SIZE, 48);
}

/// Every Win32 error a flat call can set (each way a manager call fails,
/// as the flat API reports it) is documented in `hostmem.h` under its
/// `ERROR_*` name.
#[test]
fn every_error_a_flat_call_can_set_is_in_the_header() {
    use hostmem::host::HostError;
    let header = header_constants();
    let failures = [
        HostError::NotHostMemory,
        HostError::OverBudget,
        HostError::Timeout,
        HostError::Abandoned,
        HostError::Unavailable,
        HostError::Catastrophic,
        HostError::Win32(Win32Error::INVALID_PARAMETER),
        HostError::Win32(Win32Error::INVALID_ADDRESS),
        HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY),
    ];
    for failure in failures {
        let code = failure.win32();
        let named = header
            .iter()
            .any(|(name, &value)| name.starts_with("ERROR_") && value == code.code());
        assert!(
            named,
            "{failure:?} sets {code:?}, which hostmem.h does not name"
        );
    }
    assert_eq!(header.get("ERROR_TIMEOUT"), Some(&1460));
}
