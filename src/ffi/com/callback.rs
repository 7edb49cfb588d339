//! The runtime's `ICLRMemoryNotificationCallback`, held by the manager:
//! one reference taken when wrapped, given back when dropped, and
//! `OnMemoryNotification` called through the runtime's vtable.
#![allow(unsafe_code)]

use super::interfaces::ICLRMemoryNotificationCallback;
use super::unknown::ComRef;
use crate::host::{HResult, MemoryAvailable, MemoryNotificationCallback};

/// A registered `ICLRMemoryNotificationCallback*`, as the host layer's
/// [`MemoryNotificationCallback`]. `Send + Sync` through [`ComRef`]: COM
/// objects handed to a free-threaded host must be callable from any
/// thread (the CLR's are), and the manager notifies from whichever thread
/// sees the load change.
pub struct NotificationCallback(ComRef<ICLRMemoryNotificationCallback>);

impl NotificationCallback {
    /// Holds `callback` (`AddRef`); `None` for NULL.
    ///
    /// # Safety
    ///
    /// `callback` is NULL or a live `ICLRMemoryNotificationCallback*`
    /// that may be called from any thread.
    pub unsafe fn wrap(callback: *mut ICLRMemoryNotificationCallback) -> Option<Self> {
        // SAFETY: NULL or live and free-threaded (the caller's contract).
        unsafe { ComRef::from_borrowed(callback) }.map(Self)
    }

    /// The runtime's object.
    pub fn as_ptr(&self) -> *mut ICLRMemoryNotificationCallback {
        self.0.as_ptr()
    }

    /// `OnMemoryNotification(state)`: the runtime's answer.
    pub fn notify(&self, state: MemoryAvailable) -> HResult {
        let on_memory_notification = self.0.vtbl().on_memory_notification;
        // SAFETY: `self.0` holds a reference, so the object is live; it is
        // free-threaded (the contract of `wrap`), and its vtable is an
        // `ICLRMemoryNotificationCallbackVtbl` (the `Interface` contract).
        unsafe { on_memory_notification(self.as_ptr(), state as u32) }
    }
}

impl MemoryNotificationCallback for NotificationCallback {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        // The runtime's HRESULT changes nothing: the notification was
        // given, and the host has no one to report a failure to.
        let _ = self.notify(state);
    }
}
