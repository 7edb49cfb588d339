//! `Backend`: the kernel itself, or any other backend behind a trait
//! object.
//!
//! A manager runs on the kernel in production and on an injected backend
//! in tests. Through a trait object, every system call would sit one
//! frame below the engine's code; with the kernel named here, its calls
//! inline into the caller. That matters more than a call's cost: a system
//! call leaves the CPU's return-address predictor holding the kernel's
//! addresses, so every function return between the `syscall` instruction
//! and the caller's frame is mispredicted (about 8 ns each on this
//! project's machine). See the engine's changes in place, which inline
//! down to the system call for that reason.
#![allow(unsafe_code)]

use super::{Access, KernelMapping, OsBackend, OsError, UnixBackend};

/// The OS backend of a manager: [`UnixBackend`], called directly, or
/// another one (tests inject failures so).
pub enum Backend {
    /// The Linux kernel.
    Kernel(UnixBackend),
    /// Any other backend.
    Other(Box<dyn OsBackend>),
}

/// `$call` on the backend `$self` holds, bound to `$os`: the one match
/// every method makes.
macro_rules! on_chosen {
    ($self:ident, $os:ident => $call:expr) => {
        match $self {
            Backend::Kernel($os) => $call,
            Backend::Other($os) => $call,
        }
    };
}

// SAFETY (each unsafe method below): the caller's contract, passed on
// unchanged to the backend chosen.
impl OsBackend for Backend {
    #[inline(always)]
    fn map_fixed(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        on_chosen!(self, os => os.map_fixed(addr, len, access))
    }

    #[inline(always)]
    fn map_anywhere(&self, hint: usize, len: usize, access: Access) -> Result<usize, OsError> {
        on_chosen!(self, os => os.map_anywhere(hint, len, access))
    }

    #[inline(always)]
    unsafe fn unmap(&self, addr: usize, len: usize) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.unmap(addr, len) })
    }

    #[inline(always)]
    unsafe fn protect(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.protect(addr, len, access) })
    }

    #[inline(always)]
    unsafe fn discard(&self, addr: usize, len: usize) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.discard(addr, len) })
    }

    unsafe fn reset(&self, addr: usize, len: usize) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.reset(addr, len) })
    }

    unsafe fn keep_contents(&self, addr: usize, len: usize, access: Access) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.keep_contents(addr, len, access) })
    }

    fn mappings(&self) -> Result<Vec<KernelMapping>, OsError> {
        on_chosen!(self, os => os.mappings())
    }

    unsafe fn watch_writes(&self, addr: usize, len: usize) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.watch_writes(addr, len) })
    }

    unsafe fn written_pages(
        &self,
        addr: usize,
        len: usize,
        max_pages: usize,
        protect: bool,
        out: Option<&mut Vec<usize>>,
    ) -> Result<(), OsError> {
        on_chosen!(self, os => unsafe { os.written_pages(addr, len, max_pages, protect, out) })
    }

    fn map_huge(&self, addr: usize, len: usize, access: Access) -> Result<usize, OsError> {
        on_chosen!(self, os => os.map_huge(addr, len, access))
    }
}
