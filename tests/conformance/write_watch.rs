//! MEM_WRITE_WATCH, GetWriteWatch and ResetWriteWatch.
//!
//! Sources: "W-k32 test_write_watch" (Wine dlls/kernel32/tests/virtual.c,
//! whose expectations hold on Windows), "Docs" (GetWriteWatch,
//! ResetWriteWatch, VirtualAlloc's MEM_WRITE_WATCH). Every test skips with
//! a printed reason on a kernel without userfaultfd's asynchronous write
//! protection, where MEM_WRITE_WATCH must fail with ERROR_NOT_SUPPORTED
//! (tested by `unsupported_kernel_changes_nothing` either way).

use crate::*;
use hostmem::unstable::os::{FaultInjectingBackend, FaultPlan, OsError, OsOperation};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;
const WW: u32 = 0x20_0000;
const RESET: u32 = 1;

fn supported() -> bool {
    let ok = hostmem::unstable::os::write_watch_supported();
    if !ok {
        eprintln!("skipped: this kernel lacks userfaultfd WP_ASYNC / PAGEMAP_SCAN");
    }
    ok
}

/// `GetWriteWatch(flags, base, size, results, &count)` with `count = max`.
fn gww(
    s: &mut AddressSpace,
    flags: u32,
    base: usize,
    size: usize,
    max: usize,
) -> Result<Vec<usize>, E> {
    let mut out = Vec::new();
    s.get_write_watch(flags, base, size, max, &mut out)?;
    assert!(out.len() <= max, "more than count reported");
    Ok(out)
}

fn watched(s: &mut AddressSpace, size: usize, t: u32, p: P) -> usize {
    s.virtual_alloc(0, size, at(t | WW), p)
        .unwrap_or_else(|e| panic!("VirtualAlloc({t:#x} | MEM_WRITE_WATCH): {e:?}"))
}

/// W-k32 test_write_watch, first part: a committed watched region queries
/// as ordinary committed memory; nothing is written at first; each write
/// is reported once per page, in ascending order, until reset; a range
/// inside the region reports only its pages; ResetWriteWatch resets only
/// its range; a write straddling two pages reports both; a count of 1
/// with reset reports and resets only the first page.
#[test]
fn wine_sequence() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x3000, RW);
    expect_q(&s, base, committed(base, base, RW, size, RW));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));

    poke(base + PG + 1, 0x44);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + PG]));
    assert_eq!(gww(&mut s, RESET, base, size, 64), Ok(vec![base + PG]));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));

    poke(base + 2 * PG + 3, 0x11);
    poke(base + 4 * PG + 8, 0x11);
    assert_eq!(
        gww(&mut s, 0, base, size, 64),
        Ok(vec![base + 2 * PG, base + 4 * PG])
    );
    assert_eq!(
        gww(&mut s, 0, base + 3 * PG, 2 * PG, 64),
        Ok(vec![base + 4 * PG])
    );
    assert_eq!(s.reset_write_watch(base, 3 * PG), Ok(()));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + 4 * PG]));

    // A DWORD written at base + 2 pages - 2 touches pages 1 and 2.
    for i in 0..4 {
        poke(base + 2 * PG - 2 + i, 0xef);
    }
    assert_eq!(
        gww(&mut s, 0, base, size, 64),
        Ok(vec![base + PG, base + 2 * PG, base + 4 * PG])
    );
    assert_eq!(gww(&mut s, RESET, base, size, 1), Ok(vec![base + PG]));
    assert_eq!(
        gww(&mut s, 0, base, size, 64),
        Ok(vec![base + 2 * PG, base + 4 * PG])
    );

    // W-k32: "changing protections doesn't affect watches".
    protect(&mut s, base, 3 * PG, P::READONLY, RW);
    expect_q(&s, base, committed(base, base, RW, 3 * PG, P::READONLY));
    protect(&mut s, base, 3 * PG, RW, P::READONLY);
    assert_eq!(
        gww(&mut s, 0, base, size, 64),
        Ok(vec![base + 2 * PG, base + 4 * PG])
    );
    expect_q(&s, base, committed(base, base, RW, size, RW));
    release(&mut s, base);
}

/// W-k32 test_write_watch: a region written in full reports 16 pages;
/// with reset, the next call reports none.
#[test]
fn every_page_written() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x3000, RW);
    for page in (base..base + size).step_by(PG) {
        poke(page, 0);
    }
    let all: Vec<usize> = (base..base + size).step_by(PG).collect();
    assert_eq!(gww(&mut s, RESET, base, size, 64), Ok(all));
    assert_eq!(gww(&mut s, RESET, base, size, 64), Ok(vec![]));
    release(&mut s, base);
}

/// W-k32 test_write_watch (ReadFile into the region): a write by the
/// kernel on the process's behalf counts like any other.
#[test]
fn kernel_writes_count() {
    use std::io::Read;
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x3000, RW);
    let mut file = std::fs::File::open("/proc/self/exe").unwrap();
    // SAFETY: the region is committed read-write and belongs to this test.
    let buf = unsafe { std::slice::from_raw_parts_mut((base + 3 * PG + 10) as *mut u8, 16) };
    file.read_exact(buf).unwrap();
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + 3 * PG]));
    release(&mut s, base);
}

/// W-k32 test_write_watch, "some invalid parameter tests" (the branch of
/// current Windows): unknown flags, size 0, a size past the region, a range
/// crossing its end, ResetWriteWatch with size 0 and on memory that is not
/// a watched region all fail with ERROR_INVALID_PARAMETER; a count of 0 as
/// well. An ordinary reservation is not watched (Docs: "If the specified
/// memory region was not allocated with MEM_WRITE_WATCH, the function
/// fails").
#[test]
fn invalid_parameters() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x3000, RW);
    poke(base, 1);
    let plain = alloc(&mut s, size, RW);
    poke(plain, 1);
    let cases: &[(u32, usize, usize, usize)] = &[
        (0xdead_beef, base, size, 64),
        (0, base, 0, 64),
        (0, base, size * 2, 64),
        (0, base + size - PG, PG + 1, 64),
        (0, base, size, 0),
        (0, 0, size, 64),
        (0, plain, size, 64),
        (RESET, plain, size, 64),
    ];
    for &(flags, addr, len, max) in cases {
        assert_eq!(
            gww(&mut s, flags, addr, len, max),
            Err(IP),
            "GetWriteWatch({flags:#x}, {addr:#x}, {len:#x}, count {max})"
        );
    }
    assert_eq!(s.reset_write_watch(base, 0), Err(IP));
    assert_eq!(s.reset_write_watch(plain, size), Err(IP));
    assert_eq!(s.reset_write_watch(base, size + PG), Err(IP));
    // The failures reset nothing.
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base]));
    release(&mut s, base);
    // A released region is no longer watched.
    assert_eq!(gww(&mut s, 0, base, size, 64), Err(IP));
    release(&mut s, plain);
}

/// W-k32 test_write_watch: MEM_RESERVE | MEM_WRITE_WATCH succeeds;
/// MEM_WRITE_WATCH alone fails with ERROR_INVALID_PARAMETER (Docs: "If you
/// specify this value, you must also specify MEM_RESERVE"), as does
/// MEM_COMMIT | MEM_WRITE_WATCH, and nothing is mapped.
#[test]
fn write_watch_needs_reserve() {
    if !supported() {
        return;
    }
    let mut s = space();
    let base = watched(&mut s, 0x10000, 0x2000, RW);
    expect_q(&s, base, reserved(base, base, RW, 0x10000));
    release(&mut s, base);
    let w = window();
    for t in [WW, 0x1000 | WW, 0x8_0000 | WW] {
        fails(&mut s, (w, 4 * GR), IP, |s| {
            s.virtual_alloc(w, GR, at(t), RW)
        });
        assert_eq!(s.virtual_alloc(0, GR, at(t), RW), Err(IP), "{t:#x}");
    }
    assert_unmapped(w, 4 * GR);
}

/// W-k32 test_write_watch, last part: "initial protect doesn't matter":
/// pages committed PAGE_NOACCESS are not written; made read-write,
/// written and made PAGE_NOACCESS again, the page is reported; after
/// MEM_DECOMMIT of the whole region it is still reported (current Windows:
/// count 1).
#[test]
fn decommit_keeps_written_marks() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x2000, NA);
    commit(&mut s, base, size, NA, base);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    protect(&mut s, base, 6 * PG, RW, NA);
    poke(base + 5 * PG + 200, 3);
    protect(&mut s, base, 6 * PG, NA, RW);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + 5 * PG]));
    decommit(&mut s, base, size);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + 5 * PG]));
    // Committed again, the page reads as zero and is still reported until
    // reset; the pages never written are still not reported.
    commit(&mut s, base, size, RW, base);
    assert_zero(base + 5 * PG, PG);
    assert_eq!(gww(&mut s, RESET, base, size, 64), Ok(vec![base + 5 * PG]));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    release(&mut s, base);
}

/// Docs (GetWriteWatch reports pages "written to since the region was
/// allocated or the write-tracking state was reset"): decommitting pages
/// that were never written, or committing fresh ones, writes nothing.
#[test]
fn decommit_and_commit_are_not_writes() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x40000;
    let base = watched(&mut s, size, 0x2000, RW);
    commit(&mut s, base, size / 2, RW, base);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    decommit(&mut s, base + PG, 3 * PG);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    commit(&mut s, base, size, RW, base);
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    poke(base + 2 * PG, 9);
    poke(base + size - PG, 9);
    assert_eq!(
        gww(&mut s, 0, base, size, 64),
        Ok(vec![base + 2 * PG, base + size - PG])
    );
    release(&mut s, base);
}

/// A count smaller than the pages written after a decommit: the pages
/// beyond the count stay reported (W-k32: a count of 1 with reset resets
/// only the page it reports), whichever of hostmem and the kernel holds
/// their marks.
#[test]
fn small_count_after_decommit() {
    if !supported() {
        return;
    }
    let mut s = space();
    let size = 0x10000;
    let base = watched(&mut s, size, 0x3000, RW);
    poke(base + PG, 1);
    decommit(&mut s, base + PG, PG);
    poke(base, 1);
    poke(base + 3 * PG, 1);
    poke(base + 5 * PG, 1);
    assert_eq!(gww(&mut s, RESET, base, size, 2), Ok(vec![base, base + PG]));
    assert_eq!(gww(&mut s, RESET, base, size, 1), Ok(vec![base + 3 * PG]));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![base + 5 * PG]));
    assert_eq!(s.reset_write_watch(base, size), Ok(()));
    assert_eq!(gww(&mut s, 0, base, size, 64), Ok(vec![]));
    release(&mut s, base);
}

/// Where the kernel cannot watch writes, MEM_WRITE_WATCH fails with
/// ERROR_NOT_SUPPORTED and changes nothing (Wine's test itself accepts
/// ERROR_NOT_SUPPORTED as "write watches not supported").
#[test]
fn unsupported_kernel_changes_nothing() {
    let os = Arc::new(FaultInjectingBackend::new());
    let mut s = AddressSpace::with_backend(Arc::clone(&os));
    os.inject(FaultPlan {
        operation: OsOperation::WatchWrites,
        nth: 0,
        error: OsError::ENOTSUP,
    });
    let w = window();
    let before = kview(w, 4 * GR);
    assert_eq!(
        s.virtual_alloc(w, GR, at(0x3000 | WW), RW),
        Err(Win32Error::NOT_SUPPORTED)
    );
    assert_eq!(kview(w, 4 * GR), before);
    assert!(s.reservation_at(w).is_none());
    assert_eq!(s.totals().reservations, 0);
    assert_eq!(s.totals().reserved_bytes, 0);
}

/// Writers on other threads during scans with reset: a page written before
/// a scan started is reported by that scan or an earlier one, and every
/// page written is reported (Docs: reset "for the pages reported"; a write
/// after a scan shows up in the next one). A store racing a scan may be
/// reported by that scan and again by later ones (README); once every
/// store is done, a scan finds nothing new after the next one.
#[test]
fn writes_during_scans_are_never_lost() {
    if !supported() {
        return;
    }
    const PAGES: usize = 4096;
    const THREADS: usize = 4;
    let mut s = space();
    let size = PAGES * PG;
    let base = watched(&mut s, size, 0x3000, RW);
    let published: Arc<Vec<AtomicUsize>> =
        Arc::new((0..THREADS).map(|_| AtomicUsize::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let published = Arc::clone(&published);
            std::thread::spawn(move || {
                // Thread t writes pages t, t + THREADS, ... once each.
                for (n, page) in (t..PAGES).step_by(THREADS).enumerate() {
                    // SAFETY: the page is committed read-write and owned by
                    // the test, which releases it only after joining.
                    unsafe { ((base + page * PG) as *mut u8).write_volatile(1) };
                    published[t].store(n + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let mut seen = vec![0u32; PAGES];
    let mut rounds = 0;
    loop {
        let finished = done.load(Ordering::Acquire);
        let before: Vec<usize> = published
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .collect();
        for page in gww(&mut s, RESET, base, size, PAGES).unwrap() {
            seen[(page - base) / PG] += 1;
        }
        for (t, &n) in before.iter().enumerate() {
            for page in (t..PAGES).step_by(THREADS).take(n) {
                assert!(
                    seen[page] >= 1,
                    "page {page} written before scan {rounds} is lost"
                );
            }
        }
        rounds += 1;
        if finished {
            break;
        }
        if writers.iter().all(|w| w.is_finished()) {
            done.store(true, Ordering::Release);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    // A write that races a scan may be seen by that scan and again by a
    // later one: the kernel resolves the write fault, the scan protects the
    // page again before the store is retried, and the retried store
    // faults again (as many times as a scan comes in between, which is
    // rare but not bounded). So: every page at least once, and once every
    // store is done, one scan takes what is left and the next finds
    // nothing.
    let never: Vec<usize> = (0..PAGES).filter(|&p| seen[p] == 0).collect();
    assert!(
        never.is_empty(),
        "pages never reported after {rounds} rounds: {never:?}"
    );
    gww(&mut s, RESET, base, size, PAGES).unwrap();
    assert_eq!(
        gww(&mut s, RESET, base, size, PAGES).unwrap(),
        Vec::<usize>::new(),
        "reported with no write since the last scan"
    );
    release(&mut s, base);
}
