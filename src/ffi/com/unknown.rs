//! `IUnknown`: the vtable every COM interface starts with, the reference
//! count of hostmem's own objects, and [`ComRef`], a counted reference to
//! any COM object (hostmem's or the runtime's).
#![allow(unsafe_code)]

use super::guid::Guid;
use crate::host::HResult;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// `IUnknownVtbl`: `QueryInterface`, `AddRef`, `Release`, in that order.
#[repr(C)]
pub struct IUnknownVtbl {
    /// `HRESULT QueryInterface(REFIID riid, void** ppvObject)`.
    pub query_interface: unsafe extern "system" fn(
        this: *mut IUnknown,
        riid: *const Guid,
        out: *mut *mut c_void,
    ) -> HResult,
    /// `ULONG AddRef()`: the new count.
    pub add_ref: unsafe extern "system" fn(this: *mut IUnknown) -> u32,
    /// `ULONG Release()`: the new count; the object is gone at 0.
    pub release: unsafe extern "system" fn(this: *mut IUnknown) -> u32,
}

/// An `IUnknown*`: a pointer to an object whose first field points to a
/// vtable that starts with [`IUnknownVtbl`].
#[repr(C)]
pub struct IUnknown {
    /// `lpVtbl`.
    pub vtbl: *const IUnknownVtbl,
}

/// A COM interface as seen from Rust: a `#[repr(C)]` struct whose only
/// field is its `lpVtbl`.
///
/// # Safety
///
/// The implementing type must be `#[repr(C)]` with the vtable pointer
/// (`*const Self::Vtbl`) as its first field, and `Self::Vtbl` must be
/// `#[repr(C)]` and start with an [`IUnknownVtbl`], so that a pointer to
/// the interface is also a valid `IUnknown*`.
pub unsafe trait Interface {
    /// The interface's IID.
    const IID: Guid;
    /// The interface's vtable.
    type Vtbl;
}

// SAFETY: `IUnknown` is `#[repr(C)]`, its first field is `*const
// IUnknownVtbl`, which trivially starts with an `IUnknownVtbl`.
unsafe impl Interface for IUnknown {
    const IID: Guid = super::guid::IID_IUNKNOWN;
    type Vtbl = IUnknownVtbl;
}

/// The reference count of one of hostmem's COM objects: atomic, starting
/// at 1 (the reference the creator hands out).
#[derive(Debug)]
pub struct RefCount(AtomicU32);

impl RefCount {
    /// A count of one.
    pub fn new() -> Self {
        Self(AtomicU32::new(1))
    }

    /// `AddRef`: one more reference; the new count.
    pub fn add_ref(&self) -> u32 {
        // Relaxed suffices: a new reference can only be made from an
        // existing one, which already keeps the object alive.
        self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// `Release`: one reference fewer; the new count. At 0 the caller
    /// destroys the object: the acquire fence orders every other thread's
    /// use of it (ended by their releasing decrement) before that.
    pub fn release(&self) -> u32 {
        let new = self.0.fetch_sub(1, Ordering::Release).wrapping_sub(1);
        if new == 0 {
            fence(Ordering::Acquire);
        }
        new
    }
}

impl Default for RefCount {
    fn default() -> Self {
        Self::new()
    }
}

/// One counted reference to a COM object implementing `I`: `AddRef` when
/// made from a borrowed pointer or cloned, `Release` when dropped, so that
/// every reference hostmem takes is given back exactly once.
pub struct ComRef<I: Interface> {
    ptr: NonNull<I>,
}

// SAFETY: COM objects handed to a free-threaded host must be callable from
// any thread: the CLR calls its host's managers from all its threads and
// requires the same of what the host is given (ICLRMemoryNotificationCallback
// is called from whatever thread notices memory pressure). `ComRef` only
// calls through the object's vtable, whose `AddRef` / `Release` are atomic
// for such objects, and each `hostmem_*` entry point that takes a COM
// pointer states this requirement in its `# Safety` section.
unsafe impl<I: Interface> Send for ComRef<I> {}
// SAFETY: as for `Send`: a free-threaded COM object may be called from
// several threads at once, and `ComRef` hands out no `&mut` to it.
unsafe impl<I: Interface> Sync for ComRef<I> {}

impl<I: Interface> ComRef<I> {
    /// Takes a new reference to the object behind a borrowed pointer
    /// (calls `AddRef`). `None` for NULL.
    ///
    /// # Safety
    ///
    /// `ptr` is NULL or points to a live COM object implementing `I` that
    /// may be called from any thread.
    pub unsafe fn from_borrowed(ptr: *mut I) -> Option<Self> {
        let ptr = NonNull::new(ptr)?;
        let this = Self { ptr };
        // SAFETY: the object is live (the caller's contract) and its vtable
        // starts with IUnknown's (the `Interface` contract); the count this
        // adds is the one `Drop` gives back.
        unsafe { (this.unknown_vtbl().add_ref)(this.as_unknown()) };
        Some(this)
    }

    /// The interface pointer, still owned by `self`.
    pub fn as_ptr(&self) -> *mut I {
        self.ptr.as_ptr()
    }

    /// The same pointer as an `IUnknown*`.
    fn as_unknown(&self) -> *mut IUnknown {
        self.ptr.as_ptr().cast()
    }

    /// Hands the reference to a caller (who will `Release` it): the
    /// pointer, without the `Release` of `Drop`.
    pub fn into_raw(self) -> *mut I {
        let ptr = self.as_ptr();
        std::mem::forget(self);
        ptr
    }

    /// The object's vtable.
    pub fn vtbl(&self) -> &I::Vtbl {
        // SAFETY: `self` holds a reference, so the object is live; its
        // first field is `*const I::Vtbl` (the `Interface` contract) and a
        // COM vtable lives at least as long as its objects.
        unsafe { &**self.ptr.as_ptr().cast::<*const I::Vtbl>() }
    }

    /// The `IUnknown` part of the vtable.
    fn unknown_vtbl(&self) -> &IUnknownVtbl {
        // SAFETY: `I::Vtbl` is `#[repr(C)]` and starts with an
        // `IUnknownVtbl` (the `Interface` contract).
        unsafe { &*std::ptr::from_ref(self.vtbl()).cast::<IUnknownVtbl>() }
    }
}

impl<I: Interface> Clone for ComRef<I> {
    fn clone(&self) -> Self {
        // SAFETY: `self` keeps the object live; the count this adds is the
        // one the clone's `Drop` gives back.
        unsafe { (self.unknown_vtbl().add_ref)(self.as_unknown()) };
        Self { ptr: self.ptr }
    }
}

impl<I: Interface> Drop for ComRef<I> {
    fn drop(&mut self) {
        // SAFETY: `self` owns one reference (taken in `from_borrowed`) and
        // gives it back exactly once; the object may be destroyed by this
        // call and is not touched afterwards.
        unsafe { (self.unknown_vtbl().release)(self.as_unknown()) };
    }
}

/// Whether `riid` is one of `iids`; `None` for a NULL `riid`.
///
/// # Safety
///
/// `riid` is NULL or points to a readable `GUID`.
pub unsafe fn iid_in(riid: *const Guid, iids: &[Guid]) -> Option<bool> {
    if riid.is_null() {
        return None;
    }
    // SAFETY: not NULL, so readable (the caller's contract); read unaligned
    // because a C caller's GUID need not have Rust's alignment of it.
    let iid = unsafe { riid.read_unaligned() };
    Some(iids.contains(&iid))
}
