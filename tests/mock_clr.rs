//! The COM face end to end, as a runtime sees it:
//!
//! - `include/hostmem/com.h` agrees with the Rust definitions (the IIDs,
//!   byte for byte, with their `{...}` comments; the HRESULT values; the
//!   enum values), so header and library never drift;
//! - `tests/c/mock_clr.c`, a mock CLR in C, is compiled with `-Wall -Wextra
//!   -Werror`, linked statically against the `libhostmem.a` this `cargo
//!   test` built, run, and must report "mock_clr: N passed, 0 failed";
//!   then, when valgrind is installed, run again under valgrind, which
//!   must report no invalid access and no definite leak;
//! - `tests/c/mock_clr_cpp.cpp` drives the objects through the C++
//!   declarations (`manager->VirtualAlloc(...)`, a C++ callback class),
//!   natively and under valgrind too, and the C declarations compile as
//!   C++ as well (`CINTERFACE`).
//!
//! `tests/sanitizers.rs` runs both mocks built with AddressSanitizer.
//!
//! The library is found as `tests/flat_c_api.rs` finds it: Cargo builds the
//! `[lib]` target with one rustc invocation that emits every crate type
//! (rlib, cdylib, staticlib) into `target/<profile>/deps/`, and this test
//! links the rlib, so `libhostmem.a` sits next to this executable and is
//! exactly as fresh. The compiler is the one the `cc` crate picks.

use hostmem::ffi::com::{
    E_NOTIMPL, Guid, IID_ICLR_MEMORY_NOTIFICATION_CALLBACK, IID_IHOST_CONTROL, IID_IHOST_MALLOC,
    IID_IHOST_MEMORY_MANAGER, IID_IUNKNOWN,
};
use hostmem::host::{HResult, MemoryAvailable, MemoryCriticalLevel};
use std::collections::BTreeMap;

mod common;
use common::*;

#[test]
fn mock_clr_c_passes_and_is_clean_under_valgrind() {
    let passed = build_and_run("mock_clr.c", Language::C11);
    println!("mock CLR (C): {passed} checks passed");
}

#[test]
fn mock_clr_cpp_passes_and_is_clean_under_valgrind() {
    let passed = build_and_run("mock_clr_cpp.cpp", Language::Cxx17);
    println!("mock CLR (C++): {passed} checks passed");
}

#[test]
fn c_declarations_compile_as_cpp_with_cinterface() {
    let mut command = compiler(Language::Cxx17);
    command
        .args(["-x", "c++", "-std=c++17", "-DCINTERFACE", "-fsyntax-only"])
        .args(WARNINGS)
        .arg("-I")
        .arg(repo_path("include"))
        .arg(repo_path("include/hostmem/com.h"));
    run(command);
}

/// The IIDs of the header: `static const IID IID_X = { ... };`, by name,
/// with the `{...}` text of the comment above each.
fn header_iids(header: &str) -> BTreeMap<String, (Guid, String)> {
    let mut iids = BTreeMap::new();
    let mut comment = String::new();
    let mut rest = header;
    while let Some(start) = rest.find("static const IID ") {
        let before = &rest[..start];
        if let Some(open) = before.rfind("/* {") {
            comment = before[open + 3..]
                .split(" */")
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        let declaration = &rest[start + "static const IID ".len()..];
        let end = declaration
            .find(';')
            .expect("an IID definition ends with ';'");
        let (name, value) = declaration[..end]
            .split_once('=')
            .expect("an IID definition has '='");
        let numbers: Vec<u64> = value
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter_map(|word| word.strip_prefix("0x"))
            .map(|hex| u64::from_str_radix(hex, 16).expect("a hex number"))
            .collect();
        assert_eq!(numbers.len(), 11, "{name}: 11 numbers");
        let mut data4 = [0u8; 8];
        for (byte, &n) in data4.iter_mut().zip(&numbers[3..]) {
            *byte = u8::try_from(n).expect("Data4 holds bytes");
        }
        let guid = Guid {
            data1: u32::try_from(numbers[0]).unwrap(),
            data2: u16::try_from(numbers[1]).unwrap(),
            data3: u16::try_from(numbers[2]).unwrap(),
            data4,
        };
        iids.insert(name.trim().to_owned(), (guid, std::mem::take(&mut comment)));
        rest = &declaration[end..];
    }
    iids
}

#[test]
fn header_iids_match_rust() {
    let header = read("include/hostmem/com.h");
    let iids = header_iids(&header);
    let expected = [
        ("IID_IUnknown", IID_IUNKNOWN),
        ("IID_IHostMemoryManager", IID_IHOST_MEMORY_MANAGER),
        ("IID_IHostMalloc", IID_IHOST_MALLOC),
        (
            "IID_ICLRMemoryNotificationCallback",
            IID_ICLR_MEMORY_NOTIFICATION_CALLBACK,
        ),
        ("IID_IHostControl", IID_IHOST_CONTROL),
        (
            "IID_IHostMemoryWriteWatch",
            hostmem::ffi::com::IID_IHOST_MEMORY_WRITE_WATCH,
        ),
    ];
    assert_eq!(iids.len(), expected.len(), "{iids:?}");
    for (name, guid) in expected {
        let (header_guid, comment) = &iids[name];
        assert_eq!(header_guid, &guid, "{name}");
        assert_eq!(comment, &guid.to_string(), "{name}'s comment");
    }
    // The spec's spelling (docs/semantics.md §1), independently of both.
    assert_eq!(
        IID_IHOST_MEMORY_MANAGER.to_string(),
        "{7BC698D1-F9E3-4460-9CDE-D04248E9FA25}"
    );
    assert_eq!(
        IID_IHOST_CONTROL.to_string(),
        "{02CA073C-7079-4860-880A-C2F7A449C991}"
    );
}

/// `#define NAME ((HRESULT)0x...L)` lines, by name.
fn header_hresults(header: &str) -> BTreeMap<String, u32> {
    let mut hresults = BTreeMap::new();
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(hex) = value
            .strip_prefix("((HRESULT)0x")
            .and_then(|v| v.strip_suffix("L)"))
        else {
            continue;
        };
        let value = u32::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            hresults.insert(name.to_owned(), value).is_none(),
            "{name} defined twice"
        );
    }
    hresults
}

#[test]
fn header_hresults_match_rust() {
    let hresults = header_hresults(&read("include/hostmem/com.h"));
    let expected = [
        ("S_OK", HResult::S_OK),
        ("E_NOTIMPL", E_NOTIMPL),
        ("E_NOINTERFACE", HResult::E_NOINTERFACE),
        ("E_POINTER", HResult::E_POINTER),
        ("E_FAIL", HResult::E_FAIL),
        ("E_OUTOFMEMORY", HResult::E_OUTOFMEMORY),
        ("E_INVALIDARG", HResult::E_INVALIDARG),
        ("HOST_E_DEADLOCK", HResult::HOST_E_DEADLOCK),
        ("HOST_E_INTERRUPTED", HResult::HOST_E_INTERRUPTED),
        ("HOST_E_INVALIDOPERATION", HResult::HOST_E_INVALIDOPERATION),
        ("HOST_E_CLRNOTAVAILABLE", HResult::HOST_E_CLRNOTAVAILABLE),
        ("HOST_E_TIMEOUT", HResult::HOST_E_TIMEOUT),
        ("HOST_E_NOT_OWNER", HResult::HOST_E_NOT_OWNER),
        ("HOST_E_ABANDONED", HResult::HOST_E_ABANDONED),
        (
            "HOST_E_EXITPROCESS_THREADABORT",
            HResult::HOST_E_EXITPROCESS_THREADABORT,
        ),
    ];
    assert_eq!(hresults.len(), expected.len(), "{hresults:?}");
    for (name, hr) in expected {
        assert_eq!(hresults.get(name), Some(&hr.bits()), "{name}");
        if hr != E_NOTIMPL {
            assert_eq!(hr.name(), Some(name), "the Rust name of {name}");
        }
    }
    // The spec's numbers (docs/semantics.md §1), independently of both.
    assert_eq!(hresults["HOST_E_INVALIDOPERATION"], 0x8013_1022);
    assert_eq!(hresults["E_INVALIDARG"], 0x8007_0057);
}

/// `name = value` enumerators of the header, by name.
fn header_enumerators(header: &str) -> BTreeMap<String, u32> {
    let mut values = BTreeMap::new();
    for line in header.lines() {
        let line = line.split("/*").next().unwrap_or_default().trim();
        let Some((name, value)) = line.trim_end_matches(',').split_once(" = ") else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if !name.starts_with('e') && !name.starts_with("MALLOC_") {
            continue;
        }
        let value = match value.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => value.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        values.insert(name.to_owned(), value);
    }
    values
}

#[test]
fn header_enums_match_rust() {
    let values = header_enumerators(&read("include/hostmem/com.h"));
    let expected = [
        ("eTaskCritical", MemoryCriticalLevel::TaskCritical as u32),
        (
            "eAppDomainCritical",
            MemoryCriticalLevel::AppDomainCritical as u32,
        ),
        (
            "eProcessCritical",
            MemoryCriticalLevel::ProcessCritical as u32,
        ),
        ("eMemoryAvailableLow", MemoryAvailable::Low as u32),
        ("eMemoryAvailableNeutral", MemoryAvailable::Neutral as u32),
        ("eMemoryAvailableHigh", MemoryAvailable::High as u32),
        ("MALLOC_THREADSAFE", 0x1),
        ("MALLOC_EXECUTABLE", 0x2),
    ];
    assert_eq!(values.len(), expected.len(), "{values:?}");
    for (name, value) in expected {
        assert_eq!(values.get(name), Some(&value), "{name}");
    }
    for (name, value) in &values {
        if name.starts_with("eTask") || name.ends_with("Critical") {
            assert!(MemoryCriticalLevel::from_raw(*value).is_some(), "{name}");
        }
    }
}
