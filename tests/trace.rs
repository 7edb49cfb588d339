//! Traces: the parser's errors (each kind, with its line number), replays
//! of the shipped traces, and recordings made through the manager's hooks
//! replayed without a difference.

use hostmem::heap::MallocType;
use hostmem::host::{
    HostConfig, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel, MemoryNotificationCallback,
};
use hostmem::trace::{Speed, Sym, Trace, TraceErrorKind, TraceSink, replay};
use hostmem::win32::{AllocationType, FreeType, Protection};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const HEADER: &str = "hostmem-trace 1\n";
const CREATE: &str =
    "1 0.000001 t1 m1 CreateManager budget=0x100000 low=90 high=60 levels=90,95,100 => S_OK\n";
const RESERVE: &str = "2 0.000002 t1 m1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE protect=PAGE_READWRITE level=eTaskCritical => S_OK r1\n";

/// The error of `text`, which must not parse.
fn error(text: &str) -> (usize, TraceErrorKind) {
    match Trace::parse(text) {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => (e.line, e.kind),
    }
}

/// The error of a trace whose last line is `line` (line 4, after the
/// header, the manager and a reservation).
fn error_on_line_4(line: &str) -> TraceErrorKind {
    let (n, kind) = error(&format!("{HEADER}{CREATE}{RESERVE}{line}\n"));
    assert_eq!(n, 4, "{kind:?} for {line}");
    kind
}

#[test]
fn a_trace_needs_its_header() {
    assert_eq!(error(""), (1, TraceErrorKind::MissingHeader));
    assert_eq!(error("\n\n# hello\n"), (3, TraceErrorKind::MissingHeader));
    assert_eq!(error(CREATE), (1, TraceErrorKind::MissingHeader));
    assert_eq!(
        error("hostmem-trace 2\n"),
        (1, TraceErrorKind::UnsupportedVersion("2".into()))
    );
}

#[test]
fn fields_are_checked_in_order() {
    use TraceErrorKind::*;
    assert_eq!(error_on_line_4("7"), MissingField("time"));
    assert_eq!(error_on_line_4("7 0.1 t1"), MissingField("manager"));
    assert_eq!(error_on_line_4("7 0.1 t1 m1"), MissingField("method"));
    assert_eq!(
        error_on_line_4("x7 0.1 t1 m1 GetMemoryLoad => S_OK used=0 total=1"),
        BadField("sequence number", "x7".into())
    );
    assert_eq!(
        error_on_line_4("7 soon t1 m1 GetMemoryLoad => S_OK used=0 total=1"),
        BadField("time", "soon".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1234567 t1 m1 GetMemoryLoad => S_OK used=0 total=1"),
        BadField("time", "0.1234567".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 thread1 m1 GetMemoryLoad => S_OK used=0 total=1"),
        BadField("thread", "thread1".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 mx GetMemoryLoad => S_OK used=0 total=1"),
        BadField("manager", "mx".into())
    );
}

#[test]
fn methods_and_arguments_are_checked() {
    use TraceErrorKind::*;
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualAloc addr=0 => S_OK"),
        UnknownMethod("VirtualAloc".into())
    );
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualAlloc addr=0 size=0x1000 type=MEM_RESERVE protect=PAGE_READWRITE => S_OK r2"
        ),
        MissingArgument("level")
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r1 colour=blue => HOST_E_TIMEOUT"),
        UnexpectedArgument("colour=blue".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r1 addr=r1 => HOST_E_TIMEOUT"),
        UnexpectedArgument("addr=r1".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery r1 => HOST_E_TIMEOUT"),
        UnexpectedArgument("r1".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualFree addr=r1 size=0x0 type=MEM_BOGUS => S_OK"),
        BadValue("type".into(), "MEM_BOGUS".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=q1 => HOST_E_TIMEOUT"),
        BadValue("addr".into(), "q1".into())
    );
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualProtect addr=r1 size=lots protect=PAGE_READONLY => E_INVALIDARG"
        ),
        BadValue("size".into(), "lots".into())
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 OnMemoryNotification state=eMemoryAvailableSome"),
        BadValue("state".into(), "eMemoryAvailableSome".into())
    );
}

#[test]
fn results_are_checked_against_their_method() {
    use TraceErrorKind::*;
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r1"),
        MissingResult
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r1 => E_NOPE"),
        BadResult("E_NOPE".into())
    );
    // VirtualAlloc's success carries the address.
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualAlloc addr=r1 size=0x1000 type=MEM_COMMIT protect=PAGE_READWRITE level=eTaskCritical => S_OK"
        ),
        BadResult("S_OK".into())
    );
    // A failure carries nothing more.
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualFree addr=r1 size=0x0 type=MEM_RELEASE => E_INVALIDARG r1"
        ),
        BadResult("E_INVALIDARG r1".into())
    );
    // A query's answer needs every field.
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r1 => S_OK base=r1 alloc=r1"),
        BadResult("S_OK base=r1 alloc=r1".into())
    );
    // An event has no result.
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 OnMemoryNotification state=eMemoryAvailableLow => S_OK"),
        BadResult("S_OK".into())
    );
    // A reservation's success names a new reservation.
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualAlloc addr=0 size=0x1000 type=MEM_RESERVE protect=PAGE_READWRITE level=eTaskCritical => S_OK r1+0x1000"
        ),
        BadResult("S_OK r1+0x1000".into())
    );
}

#[test]
fn sequence_numbers_order_the_lines_and_are_unique() {
    // Written out of order (as threads do), read in sequence order: r1 is
    // made (seq 2) before it is used (seq 3), though written after.
    let out_of_order = format!(
        "{HEADER}{CREATE}3 0.000003 t2 m1 VirtualQuery addr=r1 => HOST_E_TIMEOUT\n{RESERVE}"
    );
    let trace = Trace::parse(&out_of_order).expect("parses");
    let seqs: Vec<u64> = trace.records.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(trace.records[2].0, 3, "each record keeps its line number");
    let duplicate = format!("{HEADER}{CREATE}{RESERVE}\n# comment\n{RESERVE}");
    assert_eq!(
        error(&duplicate),
        (6, TraceErrorKind::DuplicateSequence(2, 3))
    );
}

#[test]
fn names_must_be_made_before_use() {
    use TraceErrorKind::*;
    assert_eq!(
        error_on_line_4("7 0.1 t1 m1 VirtualQuery addr=r2+0x10 => HOST_E_TIMEOUT"),
        UnknownRegion(Sym::Reservation(2))
    );
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 ReleasedVirtualAddressSpace addr=a1 => HOST_E_INVALIDOPERATION"
        ),
        UnknownRegion(Sym::Acquired(1))
    );
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 VirtualAlloc addr=0 size=0x1000 type=MEM_RESERVE protect=PAGE_READWRITE level=eTaskCritical => S_OK r1"
        ),
        RegionNamedTwice(Sym::Reservation(1))
    );
    assert_eq!(
        error_on_line_4("7 0.1 t1 m2 GetMemoryLoad => HOST_E_TIMEOUT"),
        UnknownManager(2)
    );
    assert_eq!(
        error_on_line_4(
            "7 0.1 t1 m1 CreateManager budget=none low=90 high=60 levels=90,95,100 => S_OK"
        ),
        ManagerCreatedTwice(1)
    );
    // Names are per manager: m2's r1 is not m1's.
    let two = format!(
        "{HEADER}{CREATE}{RESERVE}3 0.1 t1 m2 CreateManager budget=none low=90 high=60 levels=90,95,100 => S_OK\n4 0.1 t1 m2 VirtualQuery addr=r1 => HOST_E_TIMEOUT\n"
    );
    assert_eq!(error(&two), (5, UnknownRegion(Sym::Reservation(1))));
}

#[test]
fn errors_read_as_one_line_with_the_line_number() {
    let e = Trace::parse(&format!(
        "{HEADER}{CREATE}\n7 0.1 t1 m1 VirtualAloc => S_OK\n"
    ))
    .expect_err("unknown method");
    assert_eq!(e.to_string(), "line 4: unknown method `VirtualAloc`");
}

fn replay_clean(name: &str, text: &str) {
    let trace = Trace::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let report = replay(&trace, Speed::Fast);
    assert!(report.is_clean(), "{name}:\n{report}");
    assert!(report.calls > 0);
}

#[test]
fn the_shipped_traces_replay_without_a_difference() {
    replay_clean(
        "simulate-seed42.trace",
        include_str!("../traces/simulate-seed42.trace"),
    );
    let edge = include_str!("../traces/edge-cases.trace");
    replay_clean("edge-cases.trace", edge);
    let report = replay(&Trace::parse(edge).unwrap(), Speed::Fast);
    assert_eq!(report.managers, 2);
    assert_eq!(report.notifications_recorded, 2);
    assert_eq!(report.notifications_replayed, 2);
}

#[test]
fn a_changed_result_is_a_difference_at_its_line() {
    let edge = include_str!("../traces/edge-cases.trace");
    let changed = edge.replace(
        "level=eTaskCritical => E_OUTOFMEMORY\n22 ",
        "level=eTaskCritical => S_OK r1+0xe0000\n22 ",
    );
    assert_ne!(changed, edge);
    let report = replay(&Trace::parse(&changed).unwrap(), Speed::Fast);
    let first = report.differences.first().expect("a difference");
    assert_eq!(first.seq, 21);
    assert_eq!(first.recorded, "S_OK r1+0xe0000");
    assert_eq!(first.replayed, "E_OUTOFMEMORY");
}

fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "hostmem-trace-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

struct Quiet;
impl MemoryNotificationCallback for Quiet {
    fn on_memory_notification(&self, _: MemoryAvailable) {}
}

#[test]
fn a_recorded_session_replays_without_a_difference() {
    let path = temp_path("session.trace");
    let sink = TraceSink::create(&path).expect("create the trace");
    let config = HostConfig {
        budget_bytes: Some(1 << 20),
        ..HostConfig::default()
    };
    let host = Arc::new(
        HostMemoryManager::new_unshared(config)
            .unwrap()
            .with_trace(Some(sink)),
    );
    let task = MemoryCriticalLevel::TaskCritical;
    host.register_memory_notification(Some(Arc::new(Quiet)))
        .unwrap();
    let base = host
        .virtual_alloc(
            0,
            0x10_0000,
            AllocationType::RESERVE,
            Protection::READWRITE,
            task,
        )
        .unwrap();
    host.virtual_alloc(
        base,
        0xe_0000,
        AllocationType::COMMIT,
        Protection::READWRITE,
        task,
    )
    .unwrap();
    // Over the task limit, then within the app domain's: Low.
    assert!(
        host.virtual_alloc(
            base + 0xe_0000,
            0x1_0000,
            AllocationType::COMMIT,
            Protection::READWRITE,
            task
        )
        .is_err()
    );
    host.virtual_alloc(
        base + 0xe_0000,
        0x1_0000,
        AllocationType::COMMIT,
        Protection::READWRITE,
        MemoryCriticalLevel::AppDomainCritical,
    )
    .unwrap();
    host.virtual_protect(base, 0x1000, Protection::EXECUTE_READ)
        .unwrap();
    host.virtual_query(base + 0x1234).unwrap();
    host.get_memory_load().unwrap();
    host.virtual_free(base, 0, FreeType::DECOMMIT).unwrap();
    // A heap's page calls are recorded as the heap's.
    let heap = host.create_malloc(MallocType::EXECUTABLE).unwrap();
    let block = heap.alloc(100, task).unwrap();
    heap.free(block).unwrap();
    drop(heap);
    assert!(host.virtual_free(0x1_0000, 0, FreeType::RELEASE).is_err());
    host.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    host.shutdown();
    assert!(host.virtual_query(base).is_err());

    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let trace = Trace::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for method in [
        "CreateManager",
        "RegisterMemoryNotificationCallback",
        "VirtualAlloc",
        "VirtualProtect",
        "VirtualQuery",
        "GetMemoryLoad",
        "VirtualFree",
        "Heap.VirtualAlloc",
        "Heap.VirtualFree",
        "Shutdown",
        "OnMemoryNotification",
    ] {
        assert!(
            trace.records.iter().any(|(_, r)| r.call.method() == method),
            "no {method} line in\n{text}"
        );
    }
    assert!(text.contains("=> S_OK r1\n"), "{text}");
    assert!(text.contains("=> HOST_E_INVALIDOPERATION\n"), "{text}");
    assert!(text.contains("=> HOST_E_CLRNOTAVAILABLE\n"), "{text}");
    let report = replay(&trace, Speed::Fast);
    assert!(report.is_clean(), "{report}\n{text}");
    assert_eq!(report.notifications_recorded, report.notifications_replayed);
}

#[test]
fn threads_racing_under_a_budget_replay_in_sequence_order() {
    let path = temp_path("threads.trace");
    let sink = TraceSink::create(&path).expect("create the trace");
    let config = HostConfig {
        budget_bytes: Some(4 << 20),
        ..HostConfig::default()
    };
    let host = Arc::new(
        HostMemoryManager::new_unshared(config)
            .unwrap()
            .with_trace(Some(sink)),
    );
    host.register_memory_notification(Some(Arc::new(Quiet)))
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let host = host.clone();
            std::thread::spawn(move || {
                let level = MemoryCriticalLevel::from_raw(t % 3).unwrap();
                let base = host
                    .virtual_alloc(
                        0,
                        4 << 20,
                        AllocationType::RESERVE,
                        Protection::READWRITE,
                        level,
                    )
                    .unwrap();
                for i in 0..200usize {
                    let at = base + (i * 0x3_0000) % (4 << 20);
                    let _ = host.virtual_alloc(
                        at,
                        0x2_0000,
                        AllocationType::COMMIT,
                        Protection::READWRITE,
                        level,
                    );
                    if i % 3 == 0 {
                        let _ = host.virtual_free(at, 0x1_0000, FreeType::DECOMMIT);
                    }
                    let _ = host.virtual_query(at);
                }
                host.virtual_free(base, 0, FreeType::RELEASE).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(host);
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let trace = Trace::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let report = replay(&trace, Speed::Fast);
    assert!(report.is_clean(), "{report}");
    // Per thread: a reservation, 200 commits, 67 decommits, 200 queries,
    // a release; and the registration.
    assert_eq!(report.calls, 4 * 469 + 1);
}

#[test]
fn a_trace_that_cannot_be_created_is_an_error() {
    assert!(TraceSink::create("/nonexistent-dir-of-hostmem/x.trace").is_err());
}

/// The variable that makes [`the_c_faces_are_recorded_too`] play the child
/// that makes the calls.
const CHILD: &str = "HOSTMEM_TRACE_TEST_CHILD";

/// In the child (with `HOSTMEM_TRACE` set before any manager exists):
/// calls through the flat C API's default manager and through a COM
/// object, the ways a C host calls.
fn call_through_the_c_faces() {
    use hostmem::ffi::com::{ComMemoryManager, IUnknown};
    use hostmem::ffi::flat::{hostmem_VirtualAlloc, hostmem_VirtualFree, hostmem_VirtualQuery};
    use std::ptr::null_mut;
    let (reserve_commit, release, rw) = (0x3000, 0x8000, 0x04);
    // SAFETY: the flat API's contract: a NULL address, a writable 48-byte
    // buffer, an address the API returned.
    unsafe {
        let p = hostmem_VirtualAlloc(null_mut(), 0x1_0000, reserve_commit, rw);
        assert!(!p.is_null());
        let mut mbi = [0u8; 48];
        assert_eq!(hostmem_VirtualQuery(p, mbi.as_mut_ptr().cast(), 48), 48);
        assert_eq!(hostmem_VirtualFree(p, 0, release), 1);
        assert_eq!(hostmem_VirtualFree(p, 0, release), 0);
    }
    let config = HostConfig {
        budget_bytes: Some(1 << 20),
        ..HostConfig::default()
    };
    let com = ComMemoryManager::create(HostMemoryManager::new(config).unwrap());
    // SAFETY: `com` is a live object with one reference, given back last.
    unsafe {
        let vtbl = &*(*com).vtbl;
        let mut p = null_mut();
        let hr = (vtbl.virtual_alloc)(com, null_mut(), 0x20_0000, reserve_commit, rw, 0, &mut p);
        assert!(!hr.is_success(), "2 MiB is over the budget");
        let hr = (vtbl.virtual_alloc)(com, null_mut(), 0x1_0000, reserve_commit, rw, 0, &mut p);
        assert!(hr.is_success());
        assert!((vtbl.virtual_free)(com, p, 0, release).is_success());
        (vtbl.unknown.release)(com.cast::<IUnknown>());
    }
}

#[test]
fn the_c_faces_are_recorded_too() {
    if std::env::var_os(CHILD).is_some() {
        call_through_the_c_faces();
        return;
    }
    // A process of its own, so that HOSTMEM_TRACE is set before the flat
    // API's default manager is made.
    let path = temp_path("faces.trace");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_c_faces_are_recorded_too",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("HOSTMEM_TRACE", &path)
        .output()
        .expect("run the child");
    assert!(
        child.status.success(),
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("the child wrote a trace");
    let _ = std::fs::remove_file(&path);
    let trace = Trace::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(
        text.contains(" m1 VirtualQuery addr=r1 => S_OK base=r1 "),
        "{text}"
    );
    assert!(
        text.contains(
            " m1 VirtualFree addr=r1 size=0x0 type=MEM_RELEASE => HOST_E_INVALIDOPERATION\n"
        ),
        "{text}"
    );
    assert!(text.contains(" m2 VirtualAlloc addr=0 size=0x200000 type=MEM_COMMIT|MEM_RESERVE protect=PAGE_READWRITE level=eTaskCritical => E_OUTOFMEMORY\n"), "{text}");
    let report = replay(&trace, Speed::Fast);
    assert_eq!(report.managers, 2);
    assert!(report.is_clean(), "{report}");
}
