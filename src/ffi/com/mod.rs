//! The COM face: hostmem's `IHostMemoryManager` and `IHostControl` objects,
//! laid out as in `mscoree.h` so that a host can hand them to the CLR (or
//! any runtime that speaks the hosting interfaces), and the two functions
//! that create them, `hostmem_CreateMemoryManager` and
//! `hostmem_CreateHostControl`. Declared for C and C++ in
//! `include/hostmem/com.h`.
//!
//! - [`guid`] — `GUID` and the IIDs;
//! - [`unknown`] — `IUnknown`, the reference count, [`ComRef`];
//! - [`interfaces`] — the vtables, in `mscoree.h` order;
//! - [`config`] — `hostmem_config`;
//! - [`manager`] — the `IHostMemoryManager` object;
//! - [`control`] — the `IHostControl` object;
//! - [`callback`] — the runtime's `ICLRMemoryNotificationCallback`, held.
//!
//! Every function the C side can call runs inside a panic boundary (a
//! panic becomes `E_FAIL`, or a count of 0 for `AddRef` / `Release`),
//! checks its pointers before it dereferences anything (NULL out-pointers
//! are `E_POINTER`) and adds no semantics: the host layer decides.
#![allow(unsafe_code)]

pub mod callback;
pub mod config;
pub mod control;
pub mod guid;
pub mod interfaces;
pub mod malloc;
pub mod manager;
pub mod unknown;

pub use callback::NotificationCallback;
pub use config::HostmemConfig;
pub use control::{ComHostControl, hostmem_CreateHostControl};
pub use guid::{
    Guid, IID_ICLR_MEMORY_NOTIFICATION_CALLBACK, IID_IHOST_CONTROL, IID_IHOST_MALLOC,
    IID_IHOST_MEMORY_MANAGER, IID_IHOST_MEMORY_WRITE_WATCH, IID_IUNKNOWN,
};
pub use interfaces::{
    ICLRMemoryNotificationCallback, ICLRMemoryNotificationCallbackVtbl, IHostControl,
    IHostControlVtbl, IHostMalloc, IHostMallocVtbl, IHostMemoryManager, IHostMemoryManagerVtbl,
    IHostMemoryWriteWatch, IHostMemoryWriteWatchVtbl,
};
pub use malloc::ComHostMalloc;
pub use manager::{ComMemoryManager, hostmem_CreateMemoryManager};
pub use unknown::{ComRef, IUnknown, IUnknownVtbl, Interface, RefCount};

use crate::host::HResult;
use std::ptr::NonNull;

/// `E_NOTIMPL` (0x80004001): the method is not implemented (yet).
pub const E_NOTIMPL: HResult = HResult::E_NOTIMPL;

/// Runs the body of a COM method: a panic becomes `E_FAIL`. (The manager
/// latches its own failures: a panic inside one of its calls is caught
/// there and answered `E_FAIL` once, `HOST_E_CLRNOTAVAILABLE` after.)
#[inline(always)]
fn hresult_boundary(body: impl FnOnce() -> HResult) -> HResult {
    super::ffi_boundary(body, || HResult::E_FAIL)
}

/// Runs the body of a method of an object over the manager `host` (NULL
/// `this`: `None`): a panic becomes `E_FAIL` and latches the manager's
/// failure, as a panic inside one of its calls does, so that every later
/// call answers `HOST_E_CLRNOTAVAILABLE`; a panic once the manager is
/// already unusable is `HOST_E_CLRNOTAVAILABLE` itself.
#[inline(always)]
fn latching_boundary(
    host: Option<&crate::host::HostMemoryManager>,
    body: impl FnOnce() -> HResult,
) -> HResult {
    super::ffi_boundary(
        || {
            #[cfg(test)]
            tests::panic_if_asked();
            body()
        },
        || match host {
            Some(host) if !host.latch_failure() => HResult::HOST_E_CLRNOTAVAILABLE,
            _ => HResult::E_FAIL,
        },
    )
}

/// Runs the body of `AddRef` / `Release`: a panic becomes a count of 0.
fn count_boundary(body: impl FnOnce() -> u32) -> u32 {
    super::ffi_boundary(body, || 0)
}

/// An out-parameter a C caller passed: not NULL, and writable for the
/// duration of the call (the promise of [`Out::new`]'s caller).
struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// `None` for NULL.
    ///
    /// # Safety
    ///
    /// `ptr` is NULL or valid for writes of a `T` until the call returns.
    unsafe fn new(ptr: *mut T) -> Option<Self> {
        NonNull::new(ptr).map(Self)
    }

    /// Stores `value` (unaligned: a C caller's pointer need not have Rust's
    /// alignment of `T`).
    fn write(&mut self, value: T) {
        // SAFETY: writable for the call (the contract of `new`).
        unsafe { self.0.as_ptr().write_unaligned(value) }
    }
}

/// `QueryInterface` of an object that implements `I` (and `IUnknown`):
/// for those IIDs, one more reference and `*out = this`; for any other,
/// `E_NOINTERFACE` with `*out` NULL. `E_POINTER` for a NULL `out`,
/// `riid` or object (`refs` `None`).
///
/// # Safety
///
/// `riid` is NULL or readable; `out` is NULL or writable; `refs` is the
/// count of the live object `this`.
unsafe fn query_interface_of<I: Interface>(
    this: *mut IUnknown,
    refs: Option<&RefCount>,
    riid: *const Guid,
    out: *mut *mut std::ffi::c_void,
) -> HResult {
    // SAFETY: NULL or writable (the caller's contract).
    let Some(mut out) = (unsafe { Out::new(out) }) else {
        return HResult::E_POINTER;
    };
    out.write(std::ptr::null_mut());
    let Some(refs) = refs else {
        return HResult::E_POINTER;
    };
    // SAFETY: NULL or readable (the caller's contract).
    match unsafe { unknown::iid_in(riid, &[IID_IUNKNOWN, I::IID]) } {
        None => HResult::E_POINTER,
        Some(false) => HResult::E_NOINTERFACE,
        Some(true) => {
            refs.add_ref();
            out.write(this.cast());
            HResult::S_OK
        }
    }
}

/// One of hostmem's COM objects: a `#[repr(C)]` struct whose first field
/// is the vtable pointer of [`Interface`](ComObject::Interface), made by
/// `Box::into_raw` and freed when its count reaches 0. Its `IUnknown`
/// methods are [`object_query_interface`], [`object_add_ref`] and
/// [`object_release`].
///
/// # Safety
///
/// Implementors are `#[repr(C)]` with the vtable pointer first, and every
/// object reached through a pointer to them was made by `Box::into_raw`
/// with a count of one.
unsafe trait ComObject: Sized {
    /// The interface the object implements (besides `IUnknown`).
    type Interface: Interface;
    /// The object's reference count.
    fn refs(&self) -> &RefCount;
}

/// The object behind `this`; `None` for NULL.
///
/// # Safety
///
/// `this` is NULL or points to a live `T` on which the caller holds a
/// reference for as long as `'a` lasts.
unsafe fn object_of<'a, T: ComObject, P>(this: *mut P) -> Option<&'a T> {
    // SAFETY: NULL, or a live `T` (the caller's contract).
    unsafe { this.cast::<T>().as_ref() }
}

/// `QueryInterface` of a [`ComObject`]: `IUnknown` and its interface.
///
/// # Safety
///
/// `this` is a live `T`; `riid` is NULL or readable; `out` is NULL or
/// writable.
unsafe extern "system" fn object_query_interface<T: ComObject>(
    this: *mut IUnknown,
    riid: *const Guid,
    out: *mut *mut std::ffi::c_void,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: `this` is a live `T` (the caller's contract).
        let refs = unsafe { object_of::<T, _>(this) }.map(ComObject::refs);
        // SAFETY: `riid` and `out` as the caller promised.
        unsafe { query_interface_of::<T::Interface>(this, refs, riid, out) }
    })
}

/// `AddRef` of a [`ComObject`]: the new count.
///
/// # Safety
///
/// `this` is a live `T`.
unsafe extern "system" fn object_add_ref<T: ComObject>(this: *mut IUnknown) -> u32 {
    count_boundary(|| {
        // SAFETY: `this` is a live `T` (the caller's contract).
        unsafe { object_of::<T, _>(this) }.map_or(0, |o| o.refs().add_ref())
    })
}

/// `Release` of a [`ComObject`]: the new count; at 0 the object is freed
/// (dropping what it holds).
///
/// # Safety
///
/// `this` is a live `T` on which the caller gives back one reference.
unsafe extern "system" fn object_release<T: ComObject>(this: *mut IUnknown) -> u32 {
    count_boundary(|| {
        // SAFETY: `this` is a live `T` (the caller's contract).
        let Some(object) = (unsafe { object_of::<T, _>(this) }) else {
            return 0;
        };
        let count = object.refs().release();
        if count == 0 {
            // SAFETY: the last reference is gone, so nothing else reaches
            // the object; it was made by `Box::into_raw` (the trait's
            // contract), and the count reaches 0 once: freed exactly once.
            drop(unsafe { Box::from_raw(this.cast::<T>()) });
        }
        count
    })
}

#[cfg(test)]
mod tests;
