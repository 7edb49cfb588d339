//! Conformance suite for the address-space engine.
//!
//! Every case is: a fresh `AddressSpace`, a sequence of calls, the expected
//! result (value or Win32 error) and the expected `VirtualQuery` fields.
//! Expectations come from the sources, never from the engine's output:
//!
//! - "spec §n": `docs/semantics.md`;
//! - "W-k32 fn": Wine `dlls/kernel32/tests/virtual.c`, test function `fn`;
//! - "W-nt fn": Wine `dlls/ntdll/tests/virtual.c`, test function `fn`;
//! - "W-impl": Wine's `NtAllocateVirtualMemory` parameter checks;
//! - "ROS-at fn": ReactOS `apitests/ntdll/NtAllocateVirtualMemory.c` (written
//!   to pass on Windows), function `fn`;
//! - "PAL name": CoreCLR palsuite `filemapping_memmgt/name`;
//! - "Docs": the Win32 documentation of the function;
//! - "API.md": hostmem's documented departures (foreign memory is never
//!   touched; GUARD / PHYSICAL refused).
//!
//! Tests that need an exact layout of free space work inside a private
//! "window": a 16 MiB range in the middle of the largest hole of the
//! process's address space, one window per test, which nothing else in the
//! process maps into.

mod alloc;
mod free;
mod large_pages;
mod protect;
mod query;
mod reset;
mod write_watch;

use std::ffi::c_void;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use hostmem::unstable::engine::AddressSpace;
pub use hostmem::win32::{
    ALLOCATION_GRANULARITY, AllocationType, FreeType, MemoryBasicInformation, MemoryState,
    MemoryType, PAGE_SIZE, Protection, Win32Error,
};

/// One page (4 KiB).
pub const PG: usize = PAGE_SIZE;
/// One allocation granule (64 KiB).
pub const GR: usize = ALLOCATION_GRANULARITY;

pub type A = AllocationType;
pub type F = FreeType;
pub type P = Protection;
pub type E = Win32Error;
pub type Mbi = MemoryBasicInformation;

pub const IP: E = Win32Error::INVALID_PARAMETER;
pub const IA: E = Win32Error::INVALID_ADDRESS;

/// An address above any Linux user address space (47- or 56-bit).
pub const ABOVE_USER: usize = 0xffff_8000_0000_0000;

pub fn space() -> AddressSpace {
    AddressSpace::new()
}

pub fn at(bits: u32) -> A {
    A::from_bits_retain(bits)
}

pub fn pr(bits: u32) -> P {
    P::from_bits_retain(bits)
}

pub fn ft(bits: u32) -> F {
    F::from_bits_retain(bits)
}

// ---------------------------------------------------------------- calls

/// Reserves `size` bytes wherever the engine likes.
#[track_caller]
pub fn reserve(s: &mut AddressSpace, size: usize, p: P) -> usize {
    let base = s
        .virtual_alloc(0, size, A::RESERVE, p)
        .expect("reserve at NULL");
    assert_eq!(
        base % GR,
        0,
        "reservation base {base:#x} not 64 KiB aligned"
    );
    base
}

/// Reserves and commits `size` bytes wherever the engine likes.
#[track_caller]
pub fn alloc(s: &mut AddressSpace, size: usize, p: P) -> usize {
    let base = s
        .virtual_alloc(0, size, A::RESERVE | A::COMMIT, p)
        .expect("reserve|commit at NULL");
    assert_eq!(
        base % GR,
        0,
        "reservation base {base:#x} not 64 KiB aligned"
    );
    base
}

/// Reserves at a fixed address; must succeed and return `expect`.
#[track_caller]
pub fn reserve_at(s: &mut AddressSpace, addr: usize, size: usize, p: P, expect: usize) {
    assert_eq!(s.virtual_alloc(addr, size, A::RESERVE, p), Ok(expect));
}

/// Commits inside a reservation; must succeed and return `expect`.
#[track_caller]
pub fn commit(s: &mut AddressSpace, addr: usize, size: usize, p: P, expect: usize) {
    assert_eq!(s.virtual_alloc(addr, size, A::COMMIT, p), Ok(expect));
}

#[track_caller]
pub fn protect(s: &mut AddressSpace, addr: usize, size: usize, p: P, old: P) {
    assert_eq!(s.virtual_protect(addr, size, p), Ok(old));
}

#[track_caller]
pub fn decommit(s: &mut AddressSpace, addr: usize, size: usize) {
    assert_eq!(s.virtual_free(addr, size, F::DECOMMIT), Ok(()));
}

#[track_caller]
pub fn release(s: &mut AddressSpace, addr: usize) {
    assert_eq!(s.virtual_free(addr, 0, F::RELEASE), Ok(()));
}

// ---------------------------------------------------------------- queries

pub fn reserved(base: usize, alloc_base: usize, ap: P, size: usize) -> Mbi {
    Mbi {
        base_address: base,
        allocation_base: alloc_base,
        allocation_protect: ap,
        partition_id: 0,
        region_size: size,
        state: MemoryState::RESERVE,
        protect: P::empty(),
        type_: MemoryType::PRIVATE,
    }
}

pub fn committed(base: usize, alloc_base: usize, ap: P, size: usize, p: P) -> Mbi {
    Mbi {
        base_address: base,
        allocation_base: alloc_base,
        allocation_protect: ap,
        partition_id: 0,
        region_size: size,
        state: MemoryState::COMMIT,
        protect: p,
        type_: MemoryType::PRIVATE,
    }
}

pub fn free_mbi(base: usize, size: usize) -> Mbi {
    Mbi {
        base_address: base,
        allocation_base: 0,
        allocation_protect: P::empty(),
        partition_id: 0,
        region_size: size,
        state: MemoryState::FREE,
        protect: P::NOACCESS,
        type_: MemoryType::empty(),
    }
}

#[track_caller]
pub fn q(s: &AddressSpace, addr: usize) -> Mbi {
    match s.virtual_query(addr) {
        Ok(m) => m,
        Err(e) => panic!("VirtualQuery({addr:#x}) failed with {e:?}"),
    }
}

#[track_caller]
pub fn expect_q(s: &AddressSpace, addr: usize, want: Mbi) {
    assert_eq!(s.virtual_query(addr), Ok(want), "VirtualQuery({addr:#x})");
}

/// The engine's view of `[lo, lo + len)`: the regions `VirtualQuery` walks,
/// each clipped to the span (a free run beyond it depends on neighbours).
pub fn snapshot(s: &AddressSpace, lo: usize, len: usize) -> Vec<Result<Mbi, E>> {
    let hi = lo + len;
    let mut out = Vec::new();
    let mut addr = lo;
    while addr < hi && out.len() < 4096 {
        let mut r = s.virtual_query(addr);
        let step = match &mut r {
            Ok(m) if m.region_size > 0 && m.base_address <= addr => {
                m.region_size = m.region_size.min(hi - m.base_address);
                m.base_address + m.region_size - addr
            }
            _ => PG,
        };
        out.push(r);
        addr = addr.saturating_add(step.max(PG));
    }
    out
}

/// Runs a call that must fail with `err` and checks that neither the
/// engine's view nor the kernel's view of `[lo, lo + len)` changed.
#[track_caller]
pub fn fails<T: Debug>(
    s: &mut AddressSpace,
    span: (usize, usize),
    err: E,
    call: impl FnOnce(&mut AddressSpace) -> Result<T, E>,
) {
    fails_any(s, span, &[err], call);
}

/// Like [`fails`], for cases where the sources allow more than one error.
#[track_caller]
pub fn fails_any<T: Debug>(
    s: &mut AddressSpace,
    span: (usize, usize),
    errs: &[E],
    call: impl FnOnce(&mut AddressSpace) -> Result<T, E>,
) {
    let (lo, len) = span;
    let engine_before = snapshot(s, lo, len);
    let kernel_before = kview(lo, len);
    let r = call(s);
    match r {
        Err(e) if errs.contains(&e) => {}
        other => panic!("expected one of {errs:?}, got {other:?}"),
    }
    assert_eq!(snapshot(s, lo, len), engine_before, "engine view changed");
    assert_eq!(kview(lo, len), kernel_before, "kernel view changed");
}

// ---------------------------------------------------------------- kernel view

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    pub path: String,
}

pub fn maps() -> Vec<MapLine> {
    let text = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = parts.nth(3).unwrap_or("").to_string();
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        else {
            continue;
        };
        out.push(MapLine {
            start,
            end,
            perms: perms.to_string(),
            path,
        });
    }
    out
}

/// The kernel's mappings clipped to `[lo, lo + len)`, adjacent runs with the
/// same permissions merged: `(start, end, "rwx")`.
pub fn kview(lo: usize, len: usize) -> Vec<(usize, usize, String)> {
    let hi = lo + len;
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for m in maps() {
        let (a, b) = (m.start.max(lo), m.end.min(hi));
        if a >= b {
            continue;
        }
        let perms = m.perms[..3].to_string();
        if let Some(last) = out.last_mut()
            && last.1 == a
            && last.2 == perms
        {
            last.1 = b;
            continue;
        }
        out.push((a, b, perms));
    }
    out
}

/// Every byte of `[addr, addr + len)` is mapped with permissions `rwx`
/// (e.g. "rw-", "---").
#[track_caller]
pub fn assert_kernel(addr: usize, len: usize, rwx: &str) {
    assert_eq!(
        kview(addr, len),
        vec![(addr, addr + len, rwx.to_string())],
        "kernel view of [{addr:#x}, {:#x})",
        addr + len
    );
}

/// Nothing of `[addr, addr + len)` is mapped.
#[track_caller]
pub fn assert_unmapped(addr: usize, len: usize) {
    assert_eq!(
        kview(addr, len),
        vec![],
        "kernel view of [{addr:#x}, +{len:#x})"
    );
}

// ---------------------------------------------------------------- memory access

/// Writes `v` at `addr` after checking that the kernel lets us.
#[track_caller]
pub fn poke(addr: usize, v: u8) {
    let page = addr & !(PG - 1);
    let view = kview(page, PG);
    assert!(
        view.len() == 1 && view[0].2.starts_with("rw"),
        "page {page:#x} is not writable: {view:?}"
    );
    // SAFETY: the kernel says the page is mapped read-write, and it belongs
    // to this test (an engine reservation or the test's own mapping).
    unsafe { (addr as *mut u8).write_volatile(v) }
}

/// Reads `len` bytes at `addr` after checking that the kernel lets us.
#[track_caller]
pub fn peek(addr: usize, len: usize) -> Vec<u8> {
    let lo = addr & !(PG - 1);
    let hi = (addr + len + PG - 1) & !(PG - 1);
    let view = kview(lo, hi - lo);
    assert!(
        view.iter().all(|v| v.2.starts_with('r'))
            && view.iter().map(|v| v.1 - v.0).sum::<usize>() == hi - lo,
        "[{addr:#x}, +{len:#x}) is not readable: {view:?}"
    );
    (0..len)
        // SAFETY: checked readable just above; the memory belongs to this test.
        .map(|i| unsafe { ((addr + i) as *const u8).read_volatile() })
        .collect()
}

#[track_caller]
pub fn assert_zero(addr: usize, len: usize) {
    let bytes = peek(addr, len);
    if let Some(i) = bytes.iter().position(|&b| b != 0) {
        panic!("byte at {:#x} is {:#x}, expected 0", addr + i, bytes[i]);
    }
}

// ---------------------------------------------------------------- windows

const WINDOW: usize = 0x100_0000;

fn quiet_region() -> usize {
    // Gaps between user mappings only (not the one up to [vsyscall]).
    let mut lines: Vec<MapLine> = maps().into_iter().filter(|m| m.start < 1 << 63).collect();
    lines.sort_by_key(|m| m.start);
    // Only holes between two mappings: the windows must not become the
    // lowest mapping of the process (query::address_zero_is_free).
    let mut best = (0usize, 0usize);
    let mut prev_end = lines.first().map_or(0, |m| m.end);
    for m in &lines {
        if m.start > prev_end && m.start - prev_end > best.1 {
            best = (prev_end, m.start - prev_end);
        }
        prev_end = prev_end.max(m.end);
    }
    assert!(
        best.1 >= 1 << 36,
        "no large hole in the address space: {best:x?}"
    );
    (best.0 + best.1 / 2) & !((1 << 30) - 1)
}

/// A fresh 16 MiB window of address space that only the calling test uses.
pub fn window() -> usize {
    static BASE: OnceLock<usize> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = *BASE.get_or_init(quiet_region);
    let w = base + NEXT.fetch_add(1, Ordering::Relaxed) * WINDOW;
    assert_unmapped(w, WINDOW);
    w
}

/// A mapping made by the test itself, not through the engine.
pub struct Foreign {
    pub addr: usize,
    pub len: usize,
}

impl Foreign {
    /// Maps `len` bytes read-write at exactly `addr`, fills them with
    /// `fill`, then sets the protection to `prot`.
    pub fn at(addr: usize, len: usize, fill: u8, prot: rustix::mm::MprotectFlags) -> Foreign {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, mprotect};
        // SAFETY: a fixed, no-replace mapping inside the test's own window.
        let p = unsafe {
            mmap_anonymous(
                addr as *mut c_void,
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE,
            )
        }
        .expect("foreign mmap");
        assert_eq!(p as usize, addr);
        // SAFETY: freshly mapped read-write, owned by this value.
        unsafe {
            std::ptr::write_bytes(p as *mut u8, fill, len);
            mprotect(p, len, prot).expect("foreign mprotect");
        }
        Foreign { addr, len }
    }

    /// Read-write foreign memory filled with `fill`.
    pub fn rw(addr: usize, len: usize, fill: u8) -> Foreign {
        use rustix::mm::MprotectFlags as M;
        Foreign::at(addr, len, fill, M::READ | M::WRITE)
    }

    /// Asserts the mapping is intact: same permissions, same bytes.
    #[track_caller]
    pub fn assert_intact(&self, rwx: &str, fill: u8) {
        assert_kernel(self.addr, self.len, rwx);
        if rwx.starts_with('r') {
            assert!(
                peek(self.addr, self.len).iter().all(|&b| b == fill),
                "foreign content changed"
            );
        }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Foreign::at` and is ours.
        unsafe {
            let _ = rustix::mm::munmap(self.addr as *mut c_void, self.len);
        }
    }
}

/// The page holding a local variable of the calling thread's stack.
pub fn stack_page() -> usize {
    let local = 0u8;
    std::hint::black_box(&local) as *const u8 as usize & !(PG - 1)
}
