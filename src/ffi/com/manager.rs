//! hostmem's `IHostMemoryManager` object: a reference-counted COM object
//! over an `Arc<HostMemoryManager>`, and `hostmem_CreateMemoryManager`.
#![allow(unsafe_code)]

use super::callback::NotificationCallback;
use super::config::HostmemConfig;
use super::guid::{Guid, IID_IHOST_MEMORY_WRITE_WATCH};
use super::interfaces::{
    ICLRMemoryNotificationCallback, IHostMalloc, IHostMemoryManager, IHostMemoryManagerVtbl,
    IHostMemoryWriteWatch, IHostMemoryWriteWatchVtbl,
};
use super::malloc::ComHostMalloc;
use super::unknown::IUnknown;
use super::unknown::{IUnknownVtbl, RefCount};
use super::{ComObject, object_add_ref, object_query_interface, object_release};
use super::{Out, hresult_boundary, latching_boundary};
use crate::heap::MallocType;
use crate::host::{
    HResult, HostConfig, HostError, HostMemoryManager, MemoryCriticalLevel,
    MemoryNotificationCallback,
};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection, Win32Error};
use std::ffi::c_void;
use std::mem::offset_of;
use std::ptr::null_mut;
use std::sync::Arc;

/// The `IHostMemoryManager` object. An `IHostMemoryManager*` that hostmem
/// hands out points to one of these (its first field is the vtable
/// pointer). It lives while references remain: the last `Release` frees
/// it, which drops its reference to the host manager (and, if that was
/// the last, the manager's regions are released and its callback with
/// them).
#[repr(C)]
pub struct ComMemoryManager {
    vtbl: *const IHostMemoryManagerVtbl,
    /// The object's `IHostMemoryWriteWatch` face: an interface pointer to
    /// it is the address of this field (COM's multiple inheritance), so
    /// both faces share the one object, its count and its identity.
    write_watch_vtbl: *const IHostMemoryWriteWatchVtbl,
    refs: RefCount,
    host: Arc<HostMemoryManager>,
}

/// The one vtable of hostmem's `IHostMemoryManager` objects.
static VTBL: IHostMemoryManagerVtbl = IHostMemoryManagerVtbl {
    unknown: IUnknownVtbl {
        query_interface: manager_query_interface,
        add_ref: object_add_ref::<ComMemoryManager>,
        release: object_release::<ComMemoryManager>,
    },
    create_malloc,
    virtual_alloc,
    virtual_free,
    virtual_query,
    virtual_protect,
    get_memory_load,
    register_memory_notification_callback,
    needs_virtual_address_space,
    acquired_virtual_address_space,
    released_virtual_address_space,
};

/// `sizeof(MEMORY_BASIC_INFORMATION)`: 48.
const MBI_SIZE: usize = std::mem::size_of::<MemoryBasicInformation>();

impl ComMemoryManager {
    /// A new object over `host` with one reference, which the caller owns
    /// (and gives back with `Release`).
    pub fn create(host: Arc<HostMemoryManager>) -> *mut IHostMemoryManager {
        let object = Box::new(Self {
            vtbl: &VTBL,
            write_watch_vtbl: &WRITE_WATCH_VTBL,
            refs: RefCount::new(),
            host,
        });
        Box::into_raw(object).cast()
    }

    /// The host manager behind `ptr` if it is one of hostmem's
    /// `IHostMemoryManager` objects (recognised by its vtable), else `None`.
    ///
    /// # Safety
    ///
    /// `ptr` is NULL or a live `IHostMemoryManager*` (hostmem's or not).
    pub unsafe fn host_of(ptr: *mut IHostMemoryManager) -> Option<Arc<HostMemoryManager>> {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a live interface pointer: its first field is its vtable
        // pointer, readable.
        let vtbl = unsafe { (*ptr).vtbl };
        if !std::ptr::eq(vtbl, &VTBL) {
            return None;
        }
        // SAFETY: only `create` makes objects with this vtable, so `ptr`
        // is a live `ComMemoryManager`.
        unsafe { Self::from_this(ptr) }.map(|object| object.host.clone())
    }

    /// The object behind `this`; `None` for NULL.
    ///
    /// # Safety
    ///
    /// `this` is NULL or a pointer made by [`create`](Self::create) on
    /// which the caller holds a reference for as long as `'a` lasts. (A
    /// function of [`VTBL`] is only reached through such a pointer.)
    unsafe fn from_this<'a, T>(this: *mut T) -> Option<&'a Self> {
        // SAFETY: NULL, or a live `ComMemoryManager` (the caller's contract).
        unsafe { this.cast::<Self>().as_ref() }
    }
}

/// `hostmem_CreateMemoryManager(config, &manager)`: a new, independent
/// manager (its memory is its own) as an `IHostMemoryManager*` with one
/// reference, which the caller gives back with `Release`.
///
/// `config` NULL: the defaults. `E_POINTER` if `out` is NULL;
/// `E_INVALIDARG` (and `*out` NULL) for a config whose `size` does not
/// cover the fields of `hostmem_config`, or whose thresholds are
/// inconsistent.
///
/// # Safety
///
/// `config` is NULL or points to a `hostmem_config` whose `size` bytes are
/// readable; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_CreateMemoryManager(
    config: *const HostmemConfig,
    out: *mut *mut IHostMemoryManager,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(out) }) else {
            return HResult::E_POINTER;
        };
        out.write(null_mut());
        // SAFETY: NULL or `size` readable bytes (the caller's contract).
        let config = match unsafe { HostmemConfig::read(config) } {
            Ok(None) => HostConfig::default(),
            Ok(Some(config)) => match config.to_host_config() {
                Ok(config) => config,
                Err(hr) => return hr,
            },
            Err(hr) => return hr,
        };
        match HostMemoryManager::new(config) {
            Ok(host) => {
                out.write(ComMemoryManager::create(host));
                HResult::S_OK
            }
            Err(_) => HResult::E_INVALIDARG,
        }
    })
}

/// The host manager behind `this`; `None` for NULL.
///
/// # Safety
///
/// `this` is NULL or a live object of this module, referenced by the
/// caller for the whole of `'a`.
unsafe fn host<'a>(this: *mut IHostMemoryManager) -> Option<&'a HostMemoryManager> {
    // SAFETY: NULL or ours, alive for `'a` (the caller's contract).
    unsafe { ComMemoryManager::from_this(this) }.map(|object| &*object.host)
}

/// `S_OK`, or the failure's HRESULT.
fn hresult(result: Result<(), HostError>) -> HResult {
    result.map_or_else(HostError::hresult, |()| HResult::S_OK)
}

/// `CreateMalloc(type, &malloc)`: a new heap over this manager as an
/// `IHostMalloc*` with one reference. Bits other than `MALLOC_THREADSAFE`
/// and `MALLOC_EXECUTABLE` are `E_INVALIDARG`; `E_POINTER` for a NULL
/// `out`; `*out` is NULL on failure.
///
/// # Safety
///
/// `this` is a live object of this module; `out` is NULL or writable.
unsafe extern "system" fn create_malloc(
    this: *mut IHostMemoryManager,
    malloc_type: u32,
    out: *mut *mut IHostMalloc,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let object = unsafe { ComMemoryManager::from_this(this) };
    latching_boundary(object.map(|o| &*o.host), || {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(out) }) else {
            return HResult::E_POINTER;
        };
        out.write(null_mut());
        let Some(object) = object else {
            return HResult::E_POINTER;
        };
        match object
            .host
            .create_malloc(MallocType::from_bits_retain(malloc_type))
        {
            Ok(heap) => {
                out.write(ComHostMalloc::create(heap));
                HResult::S_OK
            }
            Err(e) => e.hresult(),
        }
    })
}

/// `VirtualAlloc(address, size, type, protect, level, &mem)`: `*mem` is
/// the address, or NULL on failure. `E_POINTER` for a NULL `mem`;
/// `E_INVALIDARG` for a level outside `EMemoryCriticalLevel`.
///
/// # Safety
///
/// `this` is a live object of this module; `mem` is NULL or writable.
unsafe extern "system" fn virtual_alloc(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    size: usize,
    allocation_type: u32,
    protect: u32,
    critical_level: u32,
    mem: *mut *mut c_void,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut mem) = (unsafe { Out::new(mem) }) else {
            return HResult::E_POINTER;
        };
        mem.write(null_mut());
        let Some(level) = MemoryCriticalLevel::from_raw(critical_level) else {
            return HResult::E_INVALIDARG;
        };
        let result = host.virtual_alloc(
            address as usize,
            size,
            AllocationType::from_bits_retain(allocation_type),
            Protection::from_bits_retain(protect),
            level,
        );
        hresult(result.map(|base| mem.write(base as *mut c_void)))
    })
}

/// `VirtualFree(address, size, type)`: memory this manager did not
/// allocate is `HOST_E_INVALIDOPERATION`.
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn virtual_free(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    size: usize,
    free_type: u32,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        let free_type = FreeType::from_bits_retain(free_type);
        hresult(host.virtual_free(address as usize, size, free_type))
    })
}

/// `VirtualQuery(address, buffer, length, &result)`: writes a 48-byte
/// `MEMORY_BASIC_INFORMATION` to `buffer` and 48 to `*result`; on failure
/// `*result` is 0. `E_POINTER` for a NULL `buffer` or `result`;
/// `HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)` for `length` < 48.
///
/// # Safety
///
/// `this` is a live object of this module; `buffer` is NULL or writable
/// for `length` bytes; `result` is NULL or writable.
unsafe extern "system" fn virtual_query(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    buffer: *mut c_void,
    length: usize,
    result: *mut usize,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut result) = (unsafe { Out::new(result) }) else {
            return HResult::E_POINTER;
        };
        result.write(0);
        if buffer.is_null() {
            return HResult::E_POINTER;
        }
        if length < MBI_SIZE {
            return HResult::from_win32(Win32Error::BAD_LENGTH);
        }
        // SAFETY: not NULL and writable for `length` >= 48 bytes, the size
        // of a `MemoryBasicInformation` (the caller's contract).
        let mut buffer = unsafe { Out::new(buffer.cast::<[u8; MBI_SIZE]>()) };
        let answer = host.virtual_query(address as usize).map(|mbi| {
            if let Some(buffer) = buffer.as_mut() {
                // The structure's bytes with its padding zeroed, as the
                // flat face writes them: no uninitialised byte reaches C.
                buffer.write(crate::ffi::flat::mbi_bytes(&mbi));
            }
            result.write(MBI_SIZE);
        });
        hresult(answer)
    })
}

/// `VirtualProtect(address, size, new, &old)`: `*old` is the protection
/// of the first page. `E_POINTER` for a NULL `old` (nothing changes);
/// memory this manager did not allocate is `HOST_E_INVALIDOPERATION`.
///
/// # Safety
///
/// `this` is a live object of this module; `old` is NULL or writable.
unsafe extern "system" fn virtual_protect(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    size: usize,
    new_protect: u32,
    old_protect: *mut u32,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut old_protect) = (unsafe { Out::new(old_protect) }) else {
            return HResult::E_POINTER;
        };
        let new_protect = Protection::from_bits_retain(new_protect);
        let result = host.virtual_protect(address as usize, size, new_protect);
        hresult(result.map(|old| old_protect.write(old.bits())))
    })
}

/// `GetMemoryLoad(&load, &available)`: the load in percent and the bytes
/// available, as the host sees them (the budget when there is one).
/// `E_POINTER` if either pointer is NULL; both are 0 on failure.
///
/// # Safety
///
/// `this` is a live object of this module; `load` and `available` are
/// NULL or writable.
unsafe extern "system" fn get_memory_load(
    this: *mut IHostMemoryManager,
    load: *mut u32,
    available: *mut usize,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or writable (the caller's contract).
        let (load, available) = unsafe { (Out::new(load), Out::new(available)) };
        let (Some(mut load), Some(mut available)) = (load, available) else {
            return HResult::E_POINTER;
        };
        load.write(0);
        available.write(0);
        hresult(host.get_memory_load().map(|memory| {
            load.write(memory.percent());
            available.write(usize::try_from(memory.available_bytes()).unwrap_or(usize::MAX));
        }))
    })
}

/// `RegisterMemoryNotificationCallback(callback)`: the manager holds a
/// reference to `callback` (`AddRef`) until another one, or NULL (which
/// unregisters), is registered, or the manager is destroyed; then it
/// `Release`s it. The runtime may be called back before this returns.
///
/// # Safety
///
/// `this` is a live object of this module; `callback` is NULL or a live
/// `ICLRMemoryNotificationCallback*` that may be called from any thread
/// until hostmem releases it.
unsafe extern "system" fn register_memory_notification_callback(
    this: *mut IHostMemoryManager,
    callback: *mut ICLRMemoryNotificationCallback,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        // SAFETY: NULL or a live, free-threaded callback (the caller's
        // contract).
        let callback = unsafe { NotificationCallback::wrap(callback) };
        let callback = callback.map(|c| Arc::new(c) as Arc<dyn MemoryNotificationCallback>);
        hresult(host.register_memory_notification(callback))
    })
}

/// `NeedsVirtualAddressSpace(address, size)`: the runtime is about to map
/// `size` bytes by itself; `E_OUTOFMEMORY` if the budget cannot take them.
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn needs_virtual_address_space(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    size: usize,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        hresult(host.needs_virtual_address_space(address as usize, size))
    })
}

/// `AcquiredVirtualAddressSpace(address, size)`: the runtime mapped the
/// range by itself; it is accounted until released.
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn acquired_virtual_address_space(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
    size: usize,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        hresult(host.acquired_virtual_address_space(address as usize, size))
    })
}

/// `ReleasedVirtualAddressSpace(address)`: the runtime unmapped the range
/// it reported at `address`.
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn released_virtual_address_space(
    this: *mut IHostMemoryManager,
    address: *mut c_void,
) -> HResult {
    // SAFETY: `this` is ours, alive for the call (the caller's contract).
    let host = unsafe { host(this) };
    latching_boundary(host, || {
        let Some(host) = host else {
            return HResult::E_POINTER;
        };
        hresult(host.released_virtual_address_space(address as usize))
    })
}

// SAFETY: `#[repr(C)]` with the vtable pointer first; objects are made only
// by `create`, with `Box::into_raw` and a count of one.
unsafe impl ComObject for ComMemoryManager {
    type Interface = IHostMemoryManager;
    fn refs(&self) -> &RefCount {
        &self.refs
    }
}

/// `QueryInterface` of the manager object: `IUnknown` and
/// `IHostMemoryManager` (the primary face), and hostmem's
/// `IHostMemoryWriteWatch` (the second face).
///
/// # Safety
///
/// `this` is a live object of this module (its primary face); `riid` is
/// NULL or readable; `out` is NULL or writable.
unsafe extern "system" fn manager_query_interface(
    this: *mut IUnknown,
    riid: *const Guid,
    out: *mut *mut c_void,
) -> HResult {
    // SAFETY: `riid` is NULL or readable (the caller's contract).
    if unsafe { super::unknown::iid_in(riid, &[IID_IHOST_MEMORY_WRITE_WATCH]) } == Some(true) {
        return hresult_boundary(|| {
            // SAFETY: NULL or writable (the caller's contract).
            let Some(mut out) = (unsafe { Out::new(out) }) else {
                return HResult::E_POINTER;
            };
            // SAFETY: `this` is ours, alive for the call (the caller's contract).
            let Some(object) = (unsafe { ComMemoryManager::from_this(this) }) else {
                out.write(null_mut());
                return HResult::E_POINTER;
            };
            object.refs.add_ref();
            out.write(
                std::ptr::from_ref(&object.write_watch_vtbl)
                    .cast_mut()
                    .cast(),
            );
            HResult::S_OK
        });
    }
    // SAFETY: as the caller promised.
    unsafe { object_query_interface::<ComMemoryManager>(this, riid, out) }
}

/// The one vtable of the `IHostMemoryWriteWatch` face.
static WRITE_WATCH_VTBL: IHostMemoryWriteWatchVtbl = IHostMemoryWriteWatchVtbl {
    unknown: IUnknownVtbl {
        query_interface: write_watch_query_interface,
        add_ref: write_watch_add_ref,
        release: write_watch_release,
    },
    get_write_watch,
    reset_write_watch,
    get_large_page_minimum,
};

/// The primary face of the object whose `IHostMemoryWriteWatch` face is
/// `this` (NULL for NULL).
fn primary<T>(this: *mut T) -> *mut IUnknown {
    if this.is_null() {
        return null_mut();
    }
    this.cast::<u8>()
        .wrapping_sub(offset_of!(ComMemoryManager, write_watch_vtbl))
        .cast()
}

/// `QueryInterface` through the second face: the object's.
///
/// # Safety
///
/// `this` is a live `IHostMemoryWriteWatch` face of this module; `riid`
/// and `out` as for any `QueryInterface`.
unsafe extern "system" fn write_watch_query_interface(
    this: *mut IUnknown,
    riid: *const Guid,
    out: *mut *mut c_void,
) -> HResult {
    // SAFETY: the face lies inside a live object, whose primary face is
    // `primary(this)`.
    unsafe { manager_query_interface(primary(this), riid, out) }
}

/// `AddRef` through the second face: the object's count.
///
/// # Safety
///
/// `this` is a live `IHostMemoryWriteWatch` face of this module.
unsafe extern "system" fn write_watch_add_ref(this: *mut IUnknown) -> u32 {
    // SAFETY: as above.
    unsafe { object_add_ref::<ComMemoryManager>(primary(this)) }
}

/// `Release` through the second face: the object's count.
///
/// # Safety
///
/// `this` is a live `IHostMemoryWriteWatch` face of this module on which
/// the caller gives back one reference.
unsafe extern "system" fn write_watch_release(this: *mut IUnknown) -> u32 {
    // SAFETY: as above.
    unsafe { object_release::<ComMemoryManager>(primary(this)) }
}

/// The host manager behind a second face; `None` for NULL.
///
/// # Safety
///
/// `this` is NULL or a live face of this module, referenced by the caller
/// for the whole of `'a`.
unsafe fn watch_host<'a>(this: *mut IHostMemoryWriteWatch) -> Option<&'a HostMemoryManager> {
    // SAFETY: NULL, or the face of a live object (the caller's contract).
    unsafe { ComMemoryManager::from_this(primary(this)) }.map(|object| &*object.host)
}

/// `GetWriteWatch(flags, base, size, addresses, &count, &granularity)`:
/// `GetWriteWatch`'s rules (see `hostmem_GetWriteWatch`) as HRESULTs: a
/// NULL `count`, `granularity` or (with `*count` > 0) `addresses` is
/// `E_POINTER`; Win32 failures are `HRESULT_FROM_WIN32` (an invalid
/// parameter: `E_INVALIDARG`); memory not the host's is
/// `HOST_E_INVALIDOPERATION`. The outputs are written only on success.
///
/// # Safety
///
/// `this` is a live face of this module; `count` and `granularity` are
/// NULL or writable; `addresses` is NULL or writable for `*count` pointers.
unsafe extern "system" fn get_write_watch(
    this: *mut IHostMemoryWriteWatch,
    flags: u32,
    base: *mut c_void,
    size: usize,
    addresses: *mut *mut c_void,
    count: *mut usize,
    granularity: *mut u32,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: the face is ours, alive for the call (the caller's contract).
        let Some(host) = (unsafe { watch_host(this) }) else {
            return HResult::E_POINTER;
        };
        if flags & !crate::win32::WRITE_WATCH_FLAG_RESET != 0 {
            return HostError::Win32(Win32Error::INVALID_PARAMETER).hresult();
        }
        if count.is_null() || granularity.is_null() {
            return HResult::E_POINTER;
        }
        // SAFETY: non-null, readable (the caller's contract).
        let max = unsafe { count.read_unaligned() };
        if max == 0 || size == 0 {
            return HostError::Win32(Win32Error::INVALID_PARAMETER).hresult();
        }
        if addresses.is_null() {
            return HResult::E_POINTER;
        }
        let mut found = Vec::new();
        match host.get_write_watch(flags, base as usize, size, max, &mut found) {
            Ok(()) => {
                for (i, &page) in found.iter().enumerate() {
                    // SAFETY: at most `max` entries, and `addresses` is
                    // writable for `max` pointers (the caller's contract).
                    unsafe {
                        addresses
                            .add(i)
                            .write_unaligned(std::ptr::with_exposed_provenance_mut(page));
                    }
                }
                // SAFETY: both non-null and writable (checked above; the
                // caller's contract).
                unsafe {
                    count.write_unaligned(found.len());
                    granularity.write_unaligned(crate::win32::PAGE_SIZE as u32);
                }
                HResult::S_OK
            }
            Err(e) => e.hresult(),
        }
    })
}

/// `ResetWriteWatch(base, size)`: `ResetWriteWatch`'s rules as HRESULTs.
///
/// # Safety
///
/// `this` is a live face of this module.
unsafe extern "system" fn reset_write_watch(
    this: *mut IHostMemoryWriteWatch,
    base: *mut c_void,
    size: usize,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: the face is ours, alive for the call (the caller's contract).
        let Some(host) = (unsafe { watch_host(this) }) else {
            return HResult::E_POINTER;
        };
        hresult(host.reset_write_watch(base as usize, size))
    })
}

/// `GetLargePageMinimum(&size)`: the large page size for
/// `MEM_LARGE_PAGES` (0 where the kernel has none). `E_POINTER` for a
/// NULL `size`.
///
/// # Safety
///
/// `this` is a live face of this module; `size` is NULL or writable.
unsafe extern "system" fn get_large_page_minimum(
    this: *mut IHostMemoryWriteWatch,
    size: *mut usize,
) -> HResult {
    hresult_boundary(|| {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(size) }) else {
            return HResult::E_POINTER;
        };
        // SAFETY: the face is ours, alive for the call (the caller's contract).
        if unsafe { watch_host(this) }.is_none() {
            return HResult::E_POINTER;
        }
        out.write(crate::os::huge_page_size());
        HResult::S_OK
    })
}
