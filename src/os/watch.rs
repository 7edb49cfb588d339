//! Write watching without signals, and the kernel's huge page size.
//!
//! A watched range is registered with one process-wide `userfaultfd` in
//! asynchronous write-protect mode (`UFFD_FEATURE_WP_ASYNC`, opened with
//! `UFFD_USER_MODE_ONLY` so no privilege is needed): the kernel itself
//! resolves the write fault of a protected page and marks the page
//! written, without waking anyone. The `PAGEMAP_SCAN` ioctl on
//! `/proc/self/pagemap` lists the written pages of a range and, with
//! `PM_SCAN_WP_MATCHING`, protects them again in the same page-table walk,
//! so a write that lands after a page was scanned marks it afresh.
//!
//! What the kernel reports (verified on 6.18 with a probe): a page with no
//! page-table entry reads as written — a range just registered, and a page
//! dropped by `MADV_DONTNEED` — until a protecting scan covers it;
//! `mprotect` keeps the marks. Hence [`watch`] arms a range with a
//! protecting scan right after registering it, and the engine re-arms
//! pages after it decommits them.
//!
//! The constants and structures are the kernel's uapi
//! (`include/uapi/linux/userfaultfd.h`, `include/uapi/linux/fs.h`), which
//! the C library headers of older systems lack.
#![allow(unsafe_code)]

use super::OsError;
use crate::win32::PAGE_SIZE;
use parking_lot::Mutex;
use rustix::fd::{AsFd, OwnedFd};
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};
use std::ffi::c_void;
use std::sync::OnceLock;

/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY`: handle faults of user mode only; no privilege needed.
const UFFD_USER_MODE_ONLY: u32 = 1;
/// `UFFD_FEATURE_WP_UNPOPULATED`: pages without a page-table entry are protected too.
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC`: the kernel resolves write-protect faults itself.
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER_MODE_WP`.
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail on ranges not registered for async write-protect.
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// `PAGE_IS_WRITTEN`: the page was written since it was last protected.
const PAGE_IS_WRITTEN: u64 = 1 << 1;

/// `struct uffdio_api`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register` (with its `struct uffdio_range`).
#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `UFFDIO_API`: `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: Opcode = opcode::read_write::<UffdioApi>(0xAA, 0x3F);
/// `UFFDIO_REGISTER`: `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: Opcode = opcode::read_write::<UffdioRegister>(0xAA, 0x00);
/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: Opcode = opcode::read_write::<PmScanArg>(b'f', 16);

/// An `ioctl` whose argument is a pointer to a `T` the kernel reads and
/// updates, and whose return value is the answer.
struct Updating<'a, const OPCODE: Opcode, T>(&'a mut T);

// SAFETY: the opcode and `T` pairs used below are the kernel's (the
// structures mirror the uapi layouts), the pointer is to a live `T` the
// kernel may write, and the output is the ioctl's return value only.
unsafe impl<const OPCODE: Opcode, T> Ioctl for Updating<'_, OPCODE, T> {
    type Output = IoctlOutput;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OPCODE
    }

    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::from_mut(self.0).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<IoctlOutput> {
        Ok(out)
    }
}

/// `EOPNOTSUPP`: the kernel lacks the feature.
pub const ENOTSUP: OsError = OsError(95);

/// The process's write-protect `userfaultfd`, with the process id that
/// made it: after `fork` the child must not use its parent's (a
/// `userfaultfd` acts on the address space that created it), so it makes
/// its own.
static UFFD: Mutex<Option<(u32, OwnedFd)>> = Mutex::new(None);
/// Whether the kernel refused the feature once (it will not change its mind).
static UNSUPPORTED: OnceLock<OsError> = OnceLock::new();

fn open_uffd() -> Result<OwnedFd, OsError> {
    let flags = rustix::mm::UserfaultfdFlags::CLOEXEC
        | rustix::mm::UserfaultfdFlags::NONBLOCK
        | rustix::mm::UserfaultfdFlags::from_bits_retain(UFFD_USER_MODE_ONLY);
    // SAFETY: creating the descriptor affects no memory; it is used below
    // only to register ranges the engine mapped, in write-protect mode.
    let fd = unsafe { rustix::mm::userfaultfd(flags) }.map_err(|e| match e {
        // Out of descriptors or memory: a shortage, not the kernel's answer.
        rustix::io::Errno::MFILE | rustix::io::Errno::NFILE | rustix::io::Errno::NOMEM => {
            OsError::ENOMEM
        }
        _ => ENOTSUP,
    })?;
    let mut api = UffdioApi {
        api: UFFD_API,
        features: UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API takes a `struct uffdio_api`, which `UffdioApi` is.
    unsafe { rustix::ioctl::ioctl(fd.as_fd(), Updating::<UFFDIO_API, _>(&mut api)) }
        .map_err(|_| ENOTSUP)?;
    Ok(fd)
}

/// Whether this kernel can watch writes (asked once, then remembered; a
/// passing shortage of descriptors does not count as a refusal).
pub fn supported() -> bool {
    with_uffd(|_| Ok(())) != Err(ENOTSUP)
}

fn with_uffd(f: impl FnOnce(&OwnedFd) -> Result<(), OsError>) -> Result<(), OsError> {
    if let Some(&e) = UNSUPPORTED.get() {
        return Err(e);
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let mut slot = UFFD.lock();
    if slot.as_ref().is_none_or(|(owner, _)| *owner != pid) {
        match open_uffd() {
            Ok(fd) => *slot = Some((pid, fd)),
            Err(e) => {
                // Only the kernel's refusal is remembered; a shortage of
                // descriptors may pass.
                if e == ENOTSUP {
                    let _ = UNSUPPORTED.set(e);
                }
                return Err(e);
            }
        }
    }
    let (_, fd) = slot.as_ref().expect("opened above");
    f(fd)
}

/// Registers `[addr, addr + len)` for write watching and protects every
/// page of it: afterwards no page reads as written.
///
/// # Safety
///
/// The range must be a private anonymous mapping the caller owns.
pub unsafe fn watch(addr: usize, len: usize) -> Result<(), OsError> {
    with_uffd(|fd| {
        let mut register = UffdioRegister {
            start: addr as u64,
            len: len as u64,
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER takes a `struct uffdio_register`; the
        // range is the caller's own mapping (precondition), and async
        // write protection never stops a thread.
        unsafe { rustix::ioctl::ioctl(fd.as_fd(), Updating::<UFFDIO_REGISTER, _>(&mut register)) }
            .map_err(|e| match OsError::from_errno(e) {
                OsError::ENOMEM => OsError::ENOMEM,
                _ => ENOTSUP,
            })?;
        Ok(())
    })?;
    // SAFETY: the range was just registered for async write protection.
    unsafe { scan(addr, len, 0, true, None) }
}

/// Appends to `out` the 4 KiB pages of `[addr, addr + len)` written since
/// they were last protected, in address order, at most `max_pages` of them
/// (0: all); with `protect`, protects exactly the pages reported, so that
/// later writes mark them again. Without `out` the pages are only
/// protected.
///
/// # Safety
///
/// The range must be one the caller registered with [`watch`] (the kernel
/// refuses others with `EPERM`).
pub unsafe fn scan(
    addr: usize,
    len: usize,
    max_pages: usize,
    protect: bool,
    mut out: Option<&mut Vec<usize>>,
) -> Result<(), OsError> {
    let pagemap = rustix::fs::open(
        "/proc/self/pagemap",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(OsError::from_errno)?;
    let end = addr + len;
    let mut regions = [PageRegion::default(); 64];
    let mut start = addr;
    let mut remaining = max_pages;
    while start < end {
        let mut arg = PmScanArg {
            size: size_of::<PmScanArg>() as u64,
            flags: PM_SCAN_CHECK_WPASYNC | if protect { PM_SCAN_WP_MATCHING } else { 0 },
            start: start as u64,
            end: end as u64,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: remaining as u64,
            category_inverted: 0,
            category_mask: PAGE_IS_WRITTEN,
            category_anyof_mask: 0,
            return_mask: PAGE_IS_WRITTEN,
        };
        // SAFETY: PAGEMAP_SCAN takes a `struct pm_scan_arg`, whose `vec`
        // points to `regions.len()` writable `struct page_region`s; the
        // range is the caller's registered mapping, whose contents the
        // scan does not change (it only write-protects page-table entries).
        let found =
            unsafe { rustix::ioctl::ioctl(&pagemap, Updating::<PAGEMAP_SCAN, _>(&mut arg)) }
                .map_err(OsError::from_errno)?;
        let mut pages = 0;
        for region in &regions[..found as usize] {
            let (first, last) = (region.start as usize, region.end as usize);
            pages += (last - first) / PAGE_SIZE;
            if let Some(out) = out.as_deref_mut() {
                out.extend((first..last).step_by(PAGE_SIZE));
            }
        }
        if max_pages != 0 {
            remaining -= pages.min(remaining);
            if remaining == 0 {
                break;
            }
        }
        let walked = arg.walk_end as usize;
        if walked <= start {
            break;
        }
        start = walked;
    }
    Ok(())
}

/// The kernel's default huge page size (`Hugepagesize` in
/// `/proc/meminfo`), 0 where there is none. Read once.
pub fn huge_page_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
            return 0;
        };
        text.lines()
            .find_map(|line| line.strip_prefix("Hugepagesize:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::{Access, OsBackend, UnixBackend};

    #[test]
    fn reports_exactly_the_written_pages_and_protects_them() {
        if !supported() {
            eprintln!("skipped: this kernel cannot watch writes");
            return;
        }
        let os = UnixBackend;
        let len = 16 * PAGE_SIZE;
        let base = os
            .map_anywhere(0, len, Access::READ | Access::WRITE)
            .unwrap();
        // SAFETY: the mapping was just made by this test.
        unsafe { watch(base, len) }.unwrap();
        let mut out = Vec::new();
        // SAFETY: registered above.
        unsafe { scan(base, len, 0, false, Some(&mut out)) }.unwrap();
        assert!(out.is_empty(), "fresh pages are not written: {out:x?}");
        let bytes = base as *mut u8;
        // SAFETY: the pages are this test's, readable and writable.
        unsafe {
            bytes.add(3 * PAGE_SIZE).write_volatile(1);
            bytes.add(7 * PAGE_SIZE + 5).write_volatile(1);
            let _ = bytes.add(9 * PAGE_SIZE).read_volatile();
        }
        // SAFETY (the three scans): the range registered above, this
        // test's own mapping.
        unsafe { scan(base, len, 1, true, Some(&mut out)) }.unwrap();
        assert_eq!(out, [base + 3 * PAGE_SIZE]);
        out.clear();
        // SAFETY: as above.
        unsafe { scan(base, len, 0, true, Some(&mut out)) }.unwrap();
        assert_eq!(out, [base + 7 * PAGE_SIZE], "page 3 was protected again");
        out.clear();
        // SAFETY: as above.
        unsafe { scan(base, len, 0, false, Some(&mut out)) }.unwrap();
        assert!(out.is_empty());
        // SAFETY: this test's own mapping, referenced no more.
        unsafe { os.unmap(base, len) }.unwrap();
    }
}
