//! hostmem's `IHostControl` object, and `hostmem_CreateHostControl`: what
//! a host passes to `ICLRRuntimeHost::SetHostControl` so that the runtime
//! can ask it for its managers.
#![allow(unsafe_code)]

use super::guid::Guid;
use super::interfaces::{IHostControl, IHostControlVtbl, IHostMemoryManager};
use super::unknown::{ComRef, IUnknown, IUnknownVtbl, RefCount};
use super::{ComObject, object_add_ref, object_query_interface, object_release};
use super::{Out, hresult_boundary};
use crate::host::HResult;
use std::ffi::c_void;
use std::ptr::null_mut;

/// The `IHostControl` object: hands out one memory manager, of which it
/// holds a reference for as long as it lives (so the manager outlives the
/// host's own reference to it if the runtime still holds the control).
///
/// `SetAppDomainManager` stores nothing: hostmem has no use for the
/// runtime's application-domain managers, so it takes no reference to
/// them (and has none to release).
#[repr(C)]
pub struct ComHostControl {
    vtbl: *const IHostControlVtbl,
    refs: RefCount,
    manager: ComRef<IHostMemoryManager>,
}

/// The one vtable of hostmem's `IHostControl` objects.
static VTBL: IHostControlVtbl = IHostControlVtbl {
    unknown: IUnknownVtbl {
        query_interface: object_query_interface::<ComHostControl>,
        add_ref: object_add_ref::<ComHostControl>,
        release: object_release::<ComHostControl>,
    },
    get_host_manager,
    set_app_domain_manager,
};

impl ComHostControl {
    /// A new object handing out `manager`, with one reference, which the
    /// caller owns (and gives back with `Release`).
    pub fn create(manager: ComRef<IHostMemoryManager>) -> *mut IHostControl {
        let object = Box::new(Self {
            vtbl: &VTBL,
            refs: RefCount::new(),
            manager,
        });
        Box::into_raw(object).cast()
    }

    /// The object behind `this`; `None` for NULL.
    ///
    /// # Safety
    ///
    /// `this` is NULL or a pointer made by [`create`](Self::create) on
    /// which the caller holds a reference for as long as `'a` lasts.
    unsafe fn from_this<'a, T>(this: *mut T) -> Option<&'a Self> {
        // SAFETY: NULL, or a live `ComHostControl` (the caller's contract).
        unsafe { this.cast::<Self>().as_ref() }
    }
}

/// `hostmem_CreateHostControl(manager, &control)`: an `IHostControl*` with
/// one reference (the caller gives it back with `Release`) whose
/// `GetHostManager(IID_IHostMemoryManager)` hands out `manager`. The
/// control holds its own reference to `manager` (`AddRef`) and releases
/// it when the control is destroyed.
///
/// `manager` is usually one from `hostmem_CreateMemoryManager`, but any
/// `IHostMemoryManager` will do (a host may wrap hostmem's). `E_POINTER`
/// if `manager` or `out` is NULL (`*out` is then NULL if it can be
/// written).
///
/// # Safety
///
/// `manager` is NULL or a live `IHostMemoryManager*` that may be called
/// from any thread; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_CreateHostControl(
    manager: *mut IHostMemoryManager,
    out: *mut *mut IHostControl,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(out) }) else {
            return HResult::E_POINTER;
        };
        out.write(null_mut());
        // SAFETY: NULL or a live, free-threaded manager (the caller's
        // contract).
        let Some(manager) = (unsafe { ComRef::from_borrowed(manager) }) else {
            return HResult::E_POINTER;
        };
        out.write(ComHostControl::create(manager));
        HResult::S_OK
    })
}

/// `GetHostManager(riid, &object)`: for `IID_IHostMemoryManager`, the
/// manager with one more reference; for any other IID (the runtime also
/// asks for `IHostTaskManager`, `IHostSyncManager`, …) `E_NOINTERFACE`
/// with `*object` NULL, which tells the runtime to use its own.
/// `E_POINTER` for a NULL `riid` or `object`.
///
/// # Safety
///
/// `this` is a live object of this module; `riid` is NULL or readable;
/// `out` is NULL or writable.
unsafe extern "system" fn get_host_manager(
    this: *mut IHostControl,
    riid: *const Guid,
    out: *mut *mut c_void,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(out) }) else {
            return HResult::E_POINTER;
        };
        out.write(null_mut());
        // SAFETY: `this` is ours, alive for the call (the caller's contract).
        let Some(control) = (unsafe { ComHostControl::from_this(this) }) else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or readable (the caller's contract).
        match unsafe { super::unknown::iid_in(riid, &[super::IID_IHOST_MEMORY_MANAGER]) } {
            None => HResult::E_POINTER,
            Some(false) => HResult::E_NOINTERFACE,
            Some(true) => {
                out.write(control.manager.clone().into_raw().cast());
                HResult::S_OK
            }
        }
    })
}

/// `SetAppDomainManager(id, manager)`: `S_OK`; hostmem keeps nothing (no
/// reference is taken).
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn set_app_domain_manager(
    this: *mut IHostControl,
    _app_domain_id: u32,
    _app_domain_manager: *mut IUnknown,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: `this` is ours, alive for the call (the caller's contract).
        match unsafe { ComHostControl::from_this(this) } {
            Some(_) => HResult::S_OK,
            None => HResult::E_POINTER,
        }
    })
}

// SAFETY: `#[repr(C)]` with the vtable pointer first; objects are made only
// by `create`, with `Box::into_raw` and a count of one.
unsafe impl ComObject for ComHostControl {
    type Interface = IHostControl;
    fn refs(&self) -> &RefCount {
        &self.refs
    }
}
