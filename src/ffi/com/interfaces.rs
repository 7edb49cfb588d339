//! The interfaces of the CLR hosting API that hostmem implements or calls,
//! laid out exactly as in `mscoree.h`: each interface pointer points to a
//! struct whose first field is `lpVtbl`; each vtable is `IUnknown`'s three
//! methods followed by the interface's methods in declaration order.
//!
//! Argument types follow 64-bit Windows: `DWORD` and enums are `u32`,
//! `SIZE_T` is `usize`, `ULONG` is `u32`. `extern "system"` is the C
//! calling convention on Linux (`STDMETHODCALLTYPE` is empty there).
//! Declaring an interface involves no unsafe code; implementing and
//! calling one does.
#![allow(unsafe_code)] // only `unsafe impl Interface`, whose contract is the layout below

use super::guid::{
    Guid, IID_ICLR_MEMORY_NOTIFICATION_CALLBACK, IID_IHOST_CONTROL, IID_IHOST_MALLOC,
    IID_IHOST_MEMORY_MANAGER, IID_IHOST_MEMORY_WRITE_WATCH,
};
use super::unknown::{IUnknown, IUnknownVtbl, Interface};
use crate::host::HResult;
use std::ffi::{c_char, c_void};

macro_rules! interface {
    ($(#[$doc:meta])* $name:ident, $vtbl:ident, $iid:expr) => {
        $(#[$doc])*
        #[repr(C)]
        pub struct $name {
            /// `lpVtbl`.
            pub vtbl: *const $vtbl,
        }

        // SAFETY: `#[repr(C)]` with `*const Vtbl` as its only field, and
        // the vtable is `#[repr(C)]` starting with `IUnknownVtbl`.
        unsafe impl Interface for $name {
            const IID: Guid = $iid;
            type Vtbl = $vtbl;
        }
    };
}

interface!(
    /// `IHostMemoryManager*`: the host's virtual-memory manager, which the
    /// runtime gets from `IHostControl::GetHostManager`.
    IHostMemoryManager,
    IHostMemoryManagerVtbl,
    IID_IHOST_MEMORY_MANAGER
);

/// `IHostMemoryManagerVtbl`, in `mscoree.h` order.
#[repr(C)]
pub struct IHostMemoryManagerVtbl {
    /// `QueryInterface`, `AddRef`, `Release`.
    pub unknown: IUnknownVtbl,
    /// `CreateMalloc(DWORD dwMallocType, IHostMalloc** ppMalloc)`.
    pub create_malloc: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        malloc_type: u32,
        out: *mut *mut IHostMalloc,
    ) -> HResult,
    /// `VirtualAlloc(void* pAddress, SIZE_T dwSize, DWORD flAllocationType,
    /// DWORD flProtect, EMemoryCriticalLevel eCriticalLevel, void** ppMem)`.
    pub virtual_alloc: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        size: usize,
        allocation_type: u32,
        protect: u32,
        critical_level: u32,
        out: *mut *mut c_void,
    ) -> HResult,
    /// `VirtualFree(LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType)`.
    pub virtual_free: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        size: usize,
        free_type: u32,
    ) -> HResult,
    /// `VirtualQuery(void* lpAddress, void* lpBuffer, SIZE_T dwLength,
    /// SIZE_T* pResult)`.
    pub virtual_query: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        buffer: *mut c_void,
        length: usize,
        result: *mut usize,
    ) -> HResult,
    /// `VirtualProtect(void* lpAddress, SIZE_T dwSize, DWORD flNewProtect,
    /// DWORD* pflOldProtect)`.
    pub virtual_protect: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        size: usize,
        new_protect: u32,
        old_protect: *mut u32,
    ) -> HResult,
    /// `GetMemoryLoad(DWORD* pMemoryLoad, SIZE_T* pAvailableBytes)`.
    pub get_memory_load: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        load: *mut u32,
        available: *mut usize,
    ) -> HResult,
    /// `RegisterMemoryNotificationCallback(ICLRMemoryNotificationCallback*
    /// pCallback)`.
    pub register_memory_notification_callback: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        callback: *mut ICLRMemoryNotificationCallback,
    ) -> HResult,
    /// `NeedsVirtualAddressSpace(LPVOID startAddress, SIZE_T size)`.
    pub needs_virtual_address_space: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        size: usize,
    ) -> HResult,
    /// `AcquiredVirtualAddressSpace(LPVOID startAddress, SIZE_T size)`.
    pub acquired_virtual_address_space: unsafe extern "system" fn(
        this: *mut IHostMemoryManager,
        address: *mut c_void,
        size: usize,
    ) -> HResult,
    /// `ReleasedVirtualAddressSpace(LPVOID startAddress)`.
    pub released_virtual_address_space:
        unsafe extern "system" fn(this: *mut IHostMemoryManager, address: *mut c_void) -> HResult,
}

interface!(
    /// `IHostMalloc*`: a heap the runtime gets from
    /// `IHostMemoryManager::CreateMalloc`.
    IHostMalloc,
    IHostMallocVtbl,
    IID_IHOST_MALLOC
);

/// `IHostMallocVtbl`, in `mscoree.h` order.
#[repr(C)]
pub struct IHostMallocVtbl {
    /// `QueryInterface`, `AddRef`, `Release`.
    pub unknown: IUnknownVtbl,
    /// `Alloc(SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel, void**
    /// ppMem)`.
    pub alloc: unsafe extern "system" fn(
        this: *mut IHostMalloc,
        size: usize,
        critical_level: u32,
        out: *mut *mut c_void,
    ) -> HResult,
    /// `DebugAlloc(SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
    /// char* pszFileName, int iLineNo, void** ppMem)`.
    pub debug_alloc: unsafe extern "system" fn(
        this: *mut IHostMalloc,
        size: usize,
        critical_level: u32,
        file: *mut c_char,
        line: i32,
        out: *mut *mut c_void,
    ) -> HResult,
    /// `Free(void* pMem)`.
    pub free: unsafe extern "system" fn(this: *mut IHostMalloc, mem: *mut c_void) -> HResult,
}

interface!(
    /// `ICLRMemoryNotificationCallback*`: what the runtime registers to be
    /// told the memory state.
    ICLRMemoryNotificationCallback,
    ICLRMemoryNotificationCallbackVtbl,
    IID_ICLR_MEMORY_NOTIFICATION_CALLBACK
);

/// `ICLRMemoryNotificationCallbackVtbl`, in `mscoree.h` order.
#[repr(C)]
pub struct ICLRMemoryNotificationCallbackVtbl {
    /// `QueryInterface`, `AddRef`, `Release`.
    pub unknown: IUnknownVtbl,
    /// `OnMemoryNotification(EMemoryAvailable eMemoryAvailable)`.
    pub on_memory_notification: unsafe extern "system" fn(
        this: *mut ICLRMemoryNotificationCallback,
        memory_available: u32,
    ) -> HResult,
}

interface!(
    /// `IHostControl*`: what a host gives the runtime
    /// (`ICLRRuntimeHost::SetHostControl`) so that it can ask for the
    /// host's managers.
    IHostControl,
    IHostControlVtbl,
    IID_IHOST_CONTROL
);

/// `IHostControlVtbl`, in `mscoree.h` order.
#[repr(C)]
pub struct IHostControlVtbl {
    /// `QueryInterface`, `AddRef`, `Release`.
    pub unknown: IUnknownVtbl,
    /// `GetHostManager(REFIID riid, void** ppObject)`.
    pub get_host_manager: unsafe extern "system" fn(
        this: *mut IHostControl,
        riid: *const Guid,
        out: *mut *mut c_void,
    ) -> HResult,
    /// `SetAppDomainManager(DWORD dwAppDomainID, IUnknown*
    /// pUnkAppDomainManager)`.
    pub set_app_domain_manager: unsafe extern "system" fn(
        this: *mut IHostControl,
        app_domain_id: u32,
        app_domain_manager: *mut IUnknown,
    ) -> HResult,
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The slot of each method: its index in the vtable times 8.
    #[test]
    fn vtable_slots_follow_mscoree_h() {
        assert_eq!(size_of::<IUnknownVtbl>(), 3 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, create_malloc), 3 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, virtual_alloc), 4 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, virtual_free), 5 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, virtual_query), 6 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, virtual_protect), 7 * 8);
        assert_eq!(offset_of!(IHostMemoryManagerVtbl, get_memory_load), 8 * 8);
        assert_eq!(
            offset_of!(
                IHostMemoryManagerVtbl,
                register_memory_notification_callback
            ),
            9 * 8
        );
        assert_eq!(
            offset_of!(IHostMemoryManagerVtbl, needs_virtual_address_space),
            10 * 8
        );
        assert_eq!(
            offset_of!(IHostMemoryManagerVtbl, acquired_virtual_address_space),
            11 * 8
        );
        assert_eq!(
            offset_of!(IHostMemoryManagerVtbl, released_virtual_address_space),
            12 * 8
        );
        assert_eq!(size_of::<IHostMemoryManagerVtbl>(), 13 * 8);
        assert_eq!(offset_of!(IHostMallocVtbl, free), 5 * 8);
        assert_eq!(size_of::<IHostMallocVtbl>(), 6 * 8);
        assert_eq!(
            offset_of!(ICLRMemoryNotificationCallbackVtbl, on_memory_notification),
            3 * 8
        );
        assert_eq!(offset_of!(IHostControlVtbl, get_host_manager), 3 * 8);
        assert_eq!(offset_of!(IHostControlVtbl, set_app_domain_manager), 4 * 8);
        assert_eq!(size_of::<IHostControlVtbl>(), 5 * 8);
    }
}

interface!(
    /// `IHostMemoryWriteWatch*`: hostmem's extension of its manager object,
    /// which a runtime reaches with `QueryInterface` on the
    /// `IHostMemoryManager*` it was given: `GetWriteWatch`,
    /// `ResetWriteWatch` and `GetLargePageMinimum` with the Win32 rules,
    /// answered as HRESULTs.
    IHostMemoryWriteWatch,
    IHostMemoryWriteWatchVtbl,
    IID_IHOST_MEMORY_WRITE_WATCH
);

/// `IHostMemoryWriteWatchVtbl` (`include/hostmem/com.h`).
#[repr(C)]
pub struct IHostMemoryWriteWatchVtbl {
    /// `QueryInterface`, `AddRef`, `Release` (of the manager object).
    pub unknown: IUnknownVtbl,
    /// `GetWriteWatch(DWORD dwFlags, void* lpBaseAddress, SIZE_T
    /// dwRegionSize, void** lpAddresses, ULONG_PTR* lpdwCount, DWORD*
    /// lpdwGranularity)`.
    pub get_write_watch: unsafe extern "system" fn(
        this: *mut IHostMemoryWriteWatch,
        flags: u32,
        base: *mut c_void,
        size: usize,
        addresses: *mut *mut c_void,
        count: *mut usize,
        granularity: *mut u32,
    ) -> HResult,
    /// `ResetWriteWatch(void* lpBaseAddress, SIZE_T dwRegionSize)`.
    pub reset_write_watch: unsafe extern "system" fn(
        this: *mut IHostMemoryWriteWatch,
        base: *mut c_void,
        size: usize,
    ) -> HResult,
    /// `GetLargePageMinimum(SIZE_T* pSize)`.
    pub get_large_page_minimum:
        unsafe extern "system" fn(this: *mut IHostMemoryWriteWatch, size: *mut usize) -> HResult,
}
