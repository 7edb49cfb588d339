//! The Linux backend: `mmap`, `mprotect`, `madvise`, `munmap` via rustix.
//!
//! The raw-memory methods are `unsafe fn`s of [`OsBackend`]: their callers
//! (the engine) promise the range is their own mapping.
#![allow(unsafe_code)]

use super::{Access, KernelMapping, OsBackend, OsError, parse_maps};
use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

/// The real backend over the Linux kernel. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnixBackend;

// `Access` has the kernel's `PROT_*` bits, so it converts by value.
const _: () = {
    assert!(Access::READ.bits() as u32 == ProtFlags::READ.bits());
    assert!(Access::WRITE.bits() as u32 == ProtFlags::WRITE.bits());
    assert!(Access::EXEC.bits() as u32 == ProtFlags::EXEC.bits());
    assert!(ProtFlags::READ.bits() == MprotectFlags::READ.bits());
    assert!(ProtFlags::WRITE.bits() == MprotectFlags::WRITE.bits());
    assert!(ProtFlags::EXEC.bits() == MprotectFlags::EXEC.bits());
};

#[inline(always)]
fn prot_flags(access: Access) -> ProtFlags {
    ProtFlags::from_bits_retain(u32::from(access.bits()))
}

#[inline(always)]
fn mprotect_flags(access: Access) -> MprotectFlags {
    MprotectFlags::from_bits_retain(u32::from(access.bits()))
}

const ANONYMOUS_FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NORESERVE);

impl OsBackend for UnixBackend {
    #[inline(always)]
    fn map_fixed(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        let flags = ANONYMOUS_FLAGS | MapFlags::FIXED_NOREPLACE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping,
        // so no memory anyone holds is affected; the new mapping is fresh.
        let got = unsafe { mm::mmap_anonymous(addr as *mut c_void, len, prot_flags(access), flags) }
            .map_err(OsError::from_errno)? as usize;
        if got != addr {
            // A kernel older than 4.17 takes NOREPLACE as a mere hint.
            // SAFETY: `got..got + len` is the mapping just made, which
            // nobody else has seen.
            let _ = unsafe { mm::munmap(got as *mut c_void, len) };
            return Err(OsError::EEXIST);
        }
        Ok(())
    }

    #[inline(always)]
    fn map_anywhere(&self, hint: usize, len: usize, access: Access) -> Result<usize, OsError> {
        // At the hint itself first: a fixed address spares the kernel its
        // handling of a mere hint, about 1 % of a 64 KiB reserve, touch
        // and release measured with the raw calls. Taken (EEXIST) or
        // refused, the kernel places it below.
        if hint != 0 && self.map_fixed(hint, len, access).is_ok() {
            return Ok(hint);
        }
        // SAFETY: without MAP_FIXED the hint is only a preference; the
        // kernel places the mapping in free address space.
        let got = unsafe {
            mm::mmap_anonymous(
                hint as *mut c_void,
                len,
                prot_flags(access),
                ANONYMOUS_FLAGS,
            )
        }
        .map_err(OsError::from_errno)?;
        Ok(got as usize)
    }

    #[inline(always)]
    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<(), OsError> {
        // SAFETY: by the caller's contract the range is its own mapping,
        // which nothing uses any more.
        unsafe { mm::munmap(addr as *mut c_void, len) }.map_err(OsError::from_errno)
    }

    #[inline(always)]
    unsafe fn protect(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        // SAFETY: the range is the caller's own mapping, and no reference
        // into it needs the access taken away (the caller's contract).
        unsafe { mm::mprotect(addr as *mut c_void, len, mprotect_flags(access)) }
            .map_err(OsError::from_errno)
    }

    #[inline(always)]
    unsafe fn discard(&self, addr: usize, len: usize) -> Result<(), OsError> {
        // SAFETY: the range is the caller's own private anonymous mapping,
        // whose contents its owner means to drop (the caller's contract).
        unsafe { mm::madvise(addr as *mut c_void, len, Advice::LinuxDontNeed) }
            .map_err(OsError::from_errno)
    }

    unsafe fn reset(&self, addr: usize, len: usize) -> Result<(), OsError> {
        // SAFETY: as for `discard`; MADV_FREE only lets the kernel drop
        // pages that are not written again.
        match unsafe { mm::madvise(addr as *mut c_void, len, Advice::LinuxFree) } {
            // Kernels before 4.5 lack MADV_FREE: dropping the contents at
            // once is within MEM_RESET's contract (kept or zero).
            // SAFETY: the same range, under the same contract.
            Err(rustix::io::Errno::INVAL) => unsafe { self.discard(addr, len) },
            other => other.map_err(OsError::from_errno),
        }
    }

    unsafe fn keep_contents(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        let writable = access.contains(Access::READ | Access::WRITE);
        if !writable {
            // SAFETY: the caller's own mapping; granting access breaks no
            // reference.
            unsafe { self.protect(addr, len, Access::READ | Access::WRITE)? };
        }
        let page = rustix::param::page_size();
        for at in (addr..addr + len).step_by(page) {
            // SAFETY: `at` is in the caller's own mapping, now readable and
            // writable; an `AtomicU8` has no alignment needs.
            let byte = unsafe { AtomicU8::from_ptr(at as *mut u8) };
            // A successful compare-exchange is a write of the value the
            // page holds at that instant: the page becomes dirty, which
            // cancels MADV_FREE, without changing what it reads. If the
            // kernel dropped the page meanwhile, the exchange fails and
            // retries on the fresh zero page.
            loop {
                let now = byte.load(Ordering::Relaxed);
                if byte
                    .compare_exchange(now, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
        }
        if !writable {
            // SAFETY: back to the access the caller said the range had.
            unsafe { self.protect(addr, len, access)? };
        }
        Ok(())
    }

    unsafe fn watch_writes(&self, addr: usize, len: usize) -> Result<(), OsError> {
        // SAFETY: the range is the caller's own private anonymous mapping
        // (the contract); watching changes no contents or access.
        unsafe { super::watch::watch(addr, len) }
    }

    unsafe fn written_pages(
        &self,
        addr: usize,
        len: usize,
        max_pages: usize,
        protect: bool,
        out: Option<&mut Vec<usize>>,
    ) -> Result<(), OsError> {
        // SAFETY: a range the caller watched and owns (the contract).
        unsafe { super::watch::scan(addr, len, max_pages, protect, out) }
    }

    fn map_huge(&self, addr: usize, len: usize, access: Access) -> Result<usize, OsError> {
        // Not MAP_NORESERVE: the huge pages are taken from the pool now, so
        // a first touch can never fault for want of one (SIGBUS).
        let mut flags = MapFlags::PRIVATE | MapFlags::HUGETLB;
        if addr != 0 {
            flags |= MapFlags::FIXED_NOREPLACE;
        }
        // SAFETY: without MAP_FIXED, or with MAP_FIXED_NOREPLACE, no
        // existing mapping is replaced; the new mapping is fresh.
        let got = unsafe { mm::mmap_anonymous(addr as *mut c_void, len, prot_flags(access), flags) }
            .map_err(OsError::from_errno)? as usize;
        if addr != 0 && got != addr {
            // SAFETY: the mapping just made, which nobody else has seen.
            let _ = unsafe { mm::munmap(got as *mut c_void, len) };
            return Err(OsError::EEXIST);
        }
        Ok(got)
    }

    fn mappings(&self) -> Result<Vec<KernelMapping>, OsError> {
        let text = std::fs::read_to_string("/proc/self/maps")
            .map_err(|e| OsError(e.raw_os_error().unwrap_or(OsError::EINVAL.0)))?;
        Ok(parse_maps(&text))
    }
}
