//! The OS backend: the few primitives the address-space engine needs from
//! the kernel, behind a trait so failures can be injected in tests and
//! another OS can be added without touching the layers above.
//!
//! Preconditions, stated once for every method: addresses and lengths are
//! multiples of 4 KiB (which the kernel's page size divides, see
//! [`check_page_size`]) and lengths are non-zero. The methods that change
//! existing memory (`unmap`, `protect`, `discard`, `reset`,
//! `keep_contents`) are `unsafe fn`s: their range must be memory the
//! caller mapped through this backend and still owns, since on any other
//! address they would pull memory from under a live Rust value. Mapping
//! (`map_*`, which never replaces anything) and reading the map are safe.
//! The backend checks nothing of Win32 and keeps no state; the engine owns
//! statistics and rules.

mod backend;
mod faulty;
mod maps;
mod unix;
mod watch;

pub use backend::Backend;
pub use faulty::{FaultInjectingBackend, FaultPlan, OsOperation};
#[cfg(any(test, feature = "cli"))]
pub use maps::smaps_kib;
pub use maps::{KernelMapping, parse_maps};
pub use unix::UnixBackend;
pub use watch::{huge_page_size, supported as write_watch_supported};

use bitflags::bitflags;
use std::fmt;

bitflags! {
    /// The access a mapping grants, in the kernel's terms (`PROT_*`).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Access: u8 {
        /// `PROT_READ`.
        const READ = 1;
        /// `PROT_WRITE`.
        const WRITE = 2;
        /// `PROT_EXEC`.
        const EXEC = 4;
    }
}

/// An error of the OS backend: the `errno` of the failed system call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OsError(pub i32);

impl OsError {
    /// `ENOMEM`: out of memory, address space, or mappings.
    pub const ENOMEM: Self = Self(libc_errno::ENOMEM);
    /// `EEXIST`: a fixed mapping would replace an existing one.
    pub const EEXIST: Self = Self(libc_errno::EEXIST);
    /// `EINVAL`: the kernel refused the arguments.
    pub const EINVAL: Self = Self(libc_errno::EINVAL);
    /// `EAGAIN`: a transient shortage.
    pub const EAGAIN: Self = Self(libc_errno::EAGAIN);
    /// `EPERM`: the address is forbidden (below `mmap_min_addr`).
    pub const EPERM: Self = Self(libc_errno::EPERM);
    /// `EOPNOTSUPP`: the kernel lacks the feature asked for.
    pub const ENOTSUP: Self = watch::ENOTSUP;

    /// From a rustix errno.
    pub fn from_errno(errno: rustix::io::Errno) -> Self {
        Self(errno.raw_os_error())
    }
}

impl fmt::Debug for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", rustix::io::Errno::from_raw_os_error(self.0))
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for OsError {}

/// Linux errno values used by name (the same on x86-64 and aarch64).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
}

/// The primitives of a kernel's virtual memory, as the engine uses them.
///
/// Every mapping is private and anonymous and reserves no swap
/// (`MAP_NORESERVE`): commit charge is the engine's business.
///
/// # Safety of the raw-memory methods
///
/// Each `unsafe fn` here requires that its range lie inside mappings the
/// caller made with [`map_fixed`](Self::map_fixed) or
/// [`map_anywhere`](Self::map_anywhere) on this backend, has not unmapped
/// since, and whose memory no Rust reference points into in a way the
/// call would break (unmapping, revoking access or dropping contents of
/// memory a live value uses is undefined behaviour). An implementation
/// may rely on exactly that, and must pass it on unchanged when it
/// forwards the call.
#[allow(unsafe_code)]
pub trait OsBackend: Send + Sync {
    /// Maps `len` bytes at exactly `addr` with `access`, failing with
    /// `EEXIST` (and changing nothing) if any part of the range is mapped.
    fn map_fixed(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError>;

    /// Maps `len` bytes with `access` at `hint` if that range is free,
    /// else wherever the kernel likes (0: no preference). Never replaces
    /// a mapping. Returns the address.
    fn map_anywhere(&self, hint: usize, len: usize, access: Access) -> Result<usize, OsError>;

    /// Unmaps the range.
    ///
    /// # Safety
    ///
    /// The range is the caller's own mapping (see the trait's section on
    /// the raw-memory methods), which nothing uses any more.
    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<(), OsError>;

    /// Sets the access of the range.
    ///
    /// # Safety
    ///
    /// The range is the caller's own mapping, and no live reference into
    /// it needs an access `access` takes away.
    unsafe fn protect(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError>;

    /// Drops the contents of the range: afterwards it reads as zero
    /// (`MADV_DONTNEED`).
    ///
    /// # Safety
    ///
    /// The range is the caller's own mapping, and its owner means to drop
    /// what it holds.
    unsafe fn discard(&self, addr: usize, len: usize) -> Result<(), OsError>;

    /// Tells the kernel the contents of the range may be dropped lazily
    /// (`MADV_FREE`): each page later reads as before or as zero.
    ///
    /// # Safety
    ///
    /// As for [`discard`](Self::discard).
    unsafe fn reset(&self, addr: usize, len: usize) -> Result<(), OsError>;

    /// Makes the contents of the range stable again after
    /// [`reset`](Self::reset): each page keeps what it reads now (its data,
    /// or zero if the kernel already dropped it) until written. `access` is
    /// the range's current access, which is left as it was.
    ///
    /// # Safety
    ///
    /// The range is the caller's own mapping, with access `access`; the
    /// call briefly makes it writable and writes each page's first byte
    /// with the value it holds.
    unsafe fn keep_contents(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError>;

    /// The kernel's list of the process's mappings, sorted by address.
    fn mappings(&self) -> Result<Vec<KernelMapping>, OsError>;

    /// Starts watching writes to the range (asynchronous write protection
    /// of `userfaultfd`): afterwards no page of it reads as written.
    /// `ENOTSUP` where the kernel cannot (asked once, then remembered).
    ///
    /// # Safety
    ///
    /// The range is a private anonymous mapping the caller made and owns
    /// (the watch is registered on whatever the range holds).
    unsafe fn watch_writes(&self, addr: usize, len: usize) -> Result<(), OsError>;

    /// Appends to `out` the pages of a watched range written since they
    /// were last protected, in address order, at most `max_pages` (0: all);
    /// with `protect`, protects exactly the pages reported. Without `out`,
    /// only protects.
    ///
    /// # Safety
    ///
    /// The range lies in one the caller watched with
    /// [`watch_writes`](Self::watch_writes) and still owns.
    unsafe fn written_pages(
        &self,
        addr: usize,
        len: usize,
        max_pages: usize,
        protect: bool,
        out: Option<&mut Vec<usize>>,
    ) -> Result<(), OsError>;

    /// Maps `len` bytes of huge pages (`MAP_HUGETLB`, the kernel's default
    /// size, reserved from its pool at once) with `access`, at exactly
    /// `addr` (failing with `EEXIST` if anything is mapped there) or, for
    /// `addr` 0, wherever the kernel likes. `len` is a multiple of
    /// [`huge_page_size`]. Returns the address.
    fn map_huge(&self, addr: usize, len: usize, access: Access) -> Result<usize, OsError>;
}

/// Refuses to run on a kernel whose page size does not divide Windows'
/// 4 KiB page; returns the kernel's page size in the error.
///
/// hostmem keeps Windows' 4 KiB pages; on a kernel with larger pages (16 or
/// 64 KiB) a Win32 page would be smaller than what `mprotect` can change.
pub fn check_page_size() -> Result<(), usize> {
    let page = rustix::param::page_size();
    if !crate::win32::PAGE_SIZE.is_multiple_of(page) {
        Err(page)
    } else {
        Ok(())
    }
}

macro_rules! forward_backend {
    ($($ptr:ident)::+) => {
        impl<T: OsBackend + ?Sized> OsBackend for $($ptr)::+<T> {
            fn map_fixed(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
                (**self).map_fixed(addr, len, access)
            }
            fn map_anywhere(&self, hint: usize, len: usize, access: Access) -> Result<usize, OsError> {
                (**self).map_anywhere(hint, len, access)
            }
            // SAFETY (each method below): the caller's contract, passed on
            // unchanged to the same backend.
            unsafe fn unmap(&self, addr: usize, len: usize) -> Result<(), OsError> {
                unsafe { (**self).unmap(addr, len) }
            }
            unsafe fn protect(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
                unsafe { (**self).protect(addr, len, access) }
            }
            unsafe fn discard(&self, addr: usize, len: usize) -> Result<(), OsError> {
                unsafe { (**self).discard(addr, len) }
            }
            unsafe fn reset(&self, addr: usize, len: usize) -> Result<(), OsError> {
                unsafe { (**self).reset(addr, len) }
            }
            unsafe fn keep_contents(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
                unsafe { (**self).keep_contents(addr, len, access) }
            }
            fn mappings(&self) -> Result<Vec<KernelMapping>, OsError> {
                (**self).mappings()
            }
            unsafe fn watch_writes(&self, addr: usize, len: usize) -> Result<(), OsError> {
                unsafe { (**self).watch_writes(addr, len) }
            }
            unsafe fn written_pages(
                &self,
                addr: usize,
                len: usize,
                max_pages: usize,
                protect: bool,
                out: Option<&mut Vec<usize>>,
            ) -> Result<(), OsError> {
                unsafe { (**self).written_pages(addr, len, max_pages, protect, out) }
            }
            fn map_huge(&self, addr: usize, len: usize, access: Access) -> Result<usize, OsError> {
                (**self).map_huge(addr, len, access)
            }
        }
    };
}

#[allow(unsafe_code)]
mod forward {
    use super::*;
    forward_backend!(Box);
    forward_backend!(std::sync::Arc);
}
