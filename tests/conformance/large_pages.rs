//! MEM_LARGE_PAGES and GetLargePageMinimum.
//!
//! Sources: "Docs" (VirtualAlloc: "MEM_LARGE_PAGES ... The size and
//! alignment must be a multiple of the large-page minimum ... you must
//! also specify MEM_RESERVE and MEM_COMMIT"; GetLargePageMinimum: "If the
//! processor does not support large pages, the return value is zero"),
//! and hostmem's documented rules where Windows' are not written down
//! (README, "Semantics, and where Linux differs": a large-page region is
//! neither decommitted nor re-protected piecewise; no huge pages to be had
//! is ERROR_NO_SYSTEM_RESOURCES).
//!
//! The tests that map huge pages run where some can be had: as root they
//! set /proc/sys/vm/nr_hugepages and restore it afterwards; elsewhere they
//! skip with a printed reason.

use crate::*;
use std::sync::Mutex;

const RW: P = P::READWRITE;
const LARGE: u32 = 0x2000_0000;
const NR: &str = "/proc/sys/vm/nr_hugepages";

/// Serialises the tests that change the kernel's huge page pool.
static POOL: Mutex<()> = Mutex::new(());

fn minimum() -> usize {
    // SAFETY: no arguments, no preconditions.
    unsafe { hostmem::ffi::flat::hostmem_GetLargePageMinimum() }
}

/// The kernel's pool set to `pages` huge pages for the guard's life.
struct Pool {
    old: String,
}

impl Pool {
    fn set(pages: usize) -> Result<Self, String> {
        let old = std::fs::read_to_string(NR).map_err(|e| format!("{NR}: {e}"))?;
        std::fs::write(NR, pages.to_string()).map_err(|e| format!("cannot write {NR}: {e}"))?;
        let now: usize = std::fs::read_to_string(NR).unwrap().trim().parse().unwrap();
        let pool = Self { old };
        if now < pages {
            return Err(format!("the kernel gave {now} of {pages} huge pages"));
        }
        Ok(pool)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.old.trim());
    }
}

/// Docs: GetLargePageMinimum is the large page size, here the kernel's
/// default huge page size (/proc/meminfo Hugepagesize; 2 MiB on x86-64).
#[test]
fn large_page_minimum_is_the_huge_page_size() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: usize = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Hugepagesize:"))
        .map_or(0, |v| {
            v.trim().trim_end_matches("kB").trim().parse().unwrap()
        });
    assert_eq!(minimum(), kb * 1024);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(minimum(), 2 << 20);
}

/// Docs: size and alignment must be multiples of the minimum, else
/// ERROR_INVALID_PARAMETER, with nothing mapped.
#[test]
fn size_and_alignment_must_be_multiples() {
    let large = minimum();
    if large == 0 {
        eprintln!("skipped: no huge pages on this kernel");
        return;
    }
    let mut s = space();
    let w = window();
    let aligned = (w + large - 1) & !(large - 1);
    for (addr, size) in [
        (0, large / 2),
        (0, large + PG),
        (aligned + GR, large),
        (aligned, PG),
    ] {
        fails(&mut s, (w, 8 << 20), IP, |s| {
            s.virtual_alloc(addr, size, at(0x3000 | LARGE), RW)
        });
    }
    assert_eq!(s.totals().reservations, 0);
}

/// With none to be had, ERROR_NO_SYSTEM_RESOURCES and nothing changes
/// (hostmem's rule, README; Windows gives it when it cannot find enough
/// large pages).
#[test]
fn none_available_changes_nothing() {
    let large = minimum();
    if large == 0 {
        eprintln!("skipped: no huge pages on this kernel");
        return;
    }
    let _serial = POOL.lock().unwrap();
    let pool = match Pool::set(0) {
        Ok(pool) => pool,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut s = space();
    let w = window();
    let aligned = (w + large - 1) & !(large - 1);
    fails(&mut s, (w, 8 << 20), Win32Error::NO_SYSTEM_RESOURCES, |s| {
        s.virtual_alloc(aligned, large, at(0x3000 | LARGE), RW)
    });
    assert_eq!(
        s.virtual_alloc(0, large, at(0x3000 | LARGE), RW),
        Err(Win32Error::NO_SYSTEM_RESOURCES)
    );
    assert_eq!(s.totals(), Default::default());
    drop(pool);
}

/// A large-page region: committed read-write at once, VirtualQuery reports
/// one committed run of its full size; it holds data; piecewise decommit
/// and protection fail with ERROR_INVALID_PARAMETER and change nothing; a
/// protection of whole large pages works; release frees it.
#[test]
fn large_page_region() {
    let large = minimum();
    if large == 0 {
        eprintln!("skipped: no huge pages on this kernel");
        return;
    }
    let _serial = POOL.lock().unwrap();
    let pool = match Pool::set(2) {
        Ok(pool) => pool,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut s = space();
    let base = s
        .virtual_alloc(0, 2 * large, at(0x3000 | LARGE), RW)
        .expect("two huge pages were set aside");
    assert_eq!(base % large, 0);
    expect_q(&s, base, committed(base, base, RW, 2 * large, RW));
    expect_q(
        &s,
        base + large + PG,
        committed(base + large + PG, base, RW, large - PG, RW),
    );
    assert_eq!(s.totals().committed_bytes, 2 * large);
    poke(base + large + 5, 0x5a);
    assert_eq!(peek(base + large + 5, 1), [0x5a]);
    let span = (base, 2 * large);
    fails(&mut s, span, IP, |s| s.virtual_free(base, PG, ft(0x4000)));
    fails(&mut s, span, IP, |s| s.virtual_free(base, 0, ft(0x4000)));
    fails(&mut s, span, IP, |s| {
        s.virtual_protect(base + PG, PG, P::READONLY)
    });
    protect(&mut s, base + large, large, P::READONLY, RW);
    expect_q(
        &s,
        base + large,
        committed(base + large, base, RW, large, P::READONLY),
    );
    assert_eq!(peek(base + large + 5, 1), [0x5a]);
    release(&mut s, base);
    assert_eq!(s.totals(), Default::default());
    drop(pool);
}
