//! The COM objects driven through their vtables, as a C caller would.
#![allow(unsafe_code)]

use super::*;
use crate::host::MemoryAvailable;
use crate::win32::{MemoryBasicInformation, MemoryState, Protection};
use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU32, Ordering};

const MEM_COMMIT: u32 = 0x1000;
const MEM_RESERVE: u32 = 0x2000;
const MEM_RELEASE: u32 = 0x8000;
const PAGE_READWRITE: u32 = 0x04;

fn new_manager() -> *mut IHostMemoryManager {
    let mut manager = null_mut();
    // SAFETY: NULL config, writable out.
    let hr = unsafe { hostmem_CreateMemoryManager(null(), &mut manager) };
    assert_eq!(hr, HResult::S_OK);
    assert!(!manager.is_null());
    manager
}

fn vtbl(manager: *mut IHostMemoryManager) -> &'static IHostMemoryManagerVtbl {
    // SAFETY: a live manager made by `new_manager`; the vtable is static.
    unsafe { &*(*manager).vtbl }
}

fn add_ref<I>(object: *mut I) -> u32 {
    // SAFETY: a live COM object; its vtable starts with IUnknown's.
    unsafe {
        let unknown = object.cast::<IUnknown>();
        ((*(*unknown).vtbl).add_ref)(unknown)
    }
}

fn release<I>(object: *mut I) -> u32 {
    // SAFETY: as for `add_ref`; the caller gives back one reference.
    unsafe {
        let unknown = object.cast::<IUnknown>();
        ((*(*unknown).vtbl).release)(unknown)
    }
}

fn query<I>(object: *mut I, iid: &Guid) -> (HResult, *mut c_void) {
    let mut out = std::ptr::dangling_mut::<c_void>();
    // SAFETY: a live COM object, a readable IID, a writable out.
    let hr = unsafe {
        let unknown = object.cast::<IUnknown>();
        ((*(*unknown).vtbl).query_interface)(unknown, iid, &mut out)
    };
    (hr, out)
}

#[test]
fn reference_counting_and_query_interface() {
    let manager = new_manager();
    assert_eq!(add_ref(manager), 2);
    assert_eq!(release(manager), 1);
    for iid in [IID_IUNKNOWN, IID_IHOST_MEMORY_MANAGER] {
        let (hr, out) = query(manager, &iid);
        assert_eq!((hr, out), (HResult::S_OK, manager.cast()));
        assert_eq!(release(manager), 1);
    }
    for iid in [IID_IHOST_CONTROL, IID_IHOST_MALLOC, Guid::default()] {
        assert_eq!(query(manager, &iid), (HResult::E_NOINTERFACE, null_mut()));
    }
    // SAFETY: a live manager; NULL out and NULL riid are answered.
    unsafe {
        let unknown = manager.cast::<IUnknown>();
        let qi = (*(*unknown).vtbl).query_interface;
        assert_eq!(qi(unknown, &IID_IUNKNOWN, null_mut()), HResult::E_POINTER);
        let mut out = std::ptr::dangling_mut::<c_void>();
        assert_eq!(qi(unknown, null(), &mut out), HResult::E_POINTER);
        assert!(out.is_null());
    }
    assert_eq!(release(manager), 0);
}

#[test]
fn memory_through_the_vtable() {
    let manager = new_manager();
    let v = vtbl(manager);
    let mut base = null_mut();
    // SAFETY: a live manager and writable out-pointers throughout.
    unsafe {
        let kind = MEM_RESERVE | MEM_COMMIT;
        let hr = (v.virtual_alloc)(
            manager,
            null_mut(),
            0x10000,
            kind,
            PAGE_READWRITE,
            0,
            &mut base,
        );
        assert_eq!(hr, HResult::S_OK);
        base.cast::<u8>().write(7);
        let mut mbi = MemoryBasicInformation::default();
        let mut written = 99;
        let buffer = (&raw mut mbi).cast();
        let hr = (v.virtual_query)(manager, base, buffer, 48, &mut written);
        assert_eq!((hr, written), (HResult::S_OK, 48));
        assert_eq!(mbi.state, MemoryState::COMMIT);
        assert_eq!(mbi.allocation_base, base as usize);
        let hr = (v.virtual_query)(manager, base, buffer, 47, &mut written);
        assert_eq!((hr.bits(), written), (0x8007_0018, 0));
        let hr = (v.virtual_query)(manager, base, null_mut(), 48, &mut written);
        assert_eq!(hr, HResult::E_POINTER);
        let hr = (v.virtual_query)(manager, base, buffer, 48, null_mut());
        assert_eq!(hr, HResult::E_POINTER);
        let mut old = 0;
        let hr = (v.virtual_protect)(manager, base, 0x1000, 0x02, &mut old);
        assert_eq!((hr, old), (HResult::S_OK, PAGE_READWRITE));
        let hr = (v.virtual_protect)(manager, base, 0x1000, 0x04, null_mut());
        assert_eq!(hr, HResult::E_POINTER);
        let mut other = std::ptr::dangling_mut::<c_void>();
        let hr = (v.virtual_alloc)(
            manager,
            null_mut(),
            0x10000,
            kind,
            PAGE_READWRITE,
            3,
            &mut other,
        );
        assert_eq!((hr, other), (HResult::E_INVALIDARG, null_mut()));
        let hr = (v.virtual_alloc)(manager, null_mut(), 0, kind, PAGE_READWRITE, 0, &mut other);
        assert_eq!((hr, other), (HResult::E_INVALIDARG, null_mut()));
        let hr = (v.virtual_alloc)(
            manager,
            null_mut(),
            0x1000,
            kind,
            PAGE_READWRITE,
            0,
            null_mut(),
        );
        assert_eq!(hr, HResult::E_POINTER);
        assert_eq!(
            (v.virtual_free)(manager, base, 0, MEM_RELEASE),
            HResult::S_OK
        );
        assert_eq!(
            (v.virtual_free)(manager, base, 0, MEM_RELEASE),
            HResult::HOST_E_INVALIDOPERATION
        );
        let mut malloc = std::ptr::dangling_mut::<IHostMalloc>();
        assert_eq!(
            (v.create_malloc)(manager, 4, &mut malloc),
            HResult::E_INVALIDARG
        );
        assert!(malloc.is_null());
        assert_eq!((v.create_malloc)(manager, 1, &mut malloc), HResult::S_OK);
        assert!(!malloc.is_null());
        let heap = &*(*malloc).vtbl;
        let mut block = std::ptr::null_mut();
        assert_eq!((heap.alloc)(malloc, 24, 0, &mut block), HResult::S_OK);
        assert_eq!(block.addr() % 16, 0);
        assert_eq!((heap.free)(malloc, block), HResult::S_OK);
        assert_eq!((heap.free)(malloc, block), HResult::HOST_E_INVALIDOPERATION);
        assert_eq!((heap.unknown.release)(malloc.cast()), 0);
    }
    assert_eq!(release(manager), 0);
}

#[test]
fn the_host_control_holds_and_hands_out_the_manager() {
    let manager = new_manager();
    let mut control = null_mut();
    // SAFETY: a live manager and a writable out.
    assert_eq!(
        unsafe { hostmem_CreateHostControl(manager, &mut control) },
        HResult::S_OK
    );
    assert_eq!(add_ref(manager), 3, "the control holds one reference");
    assert_eq!(release(manager), 2);
    // SAFETY: the control is live; out-pointers are writable.
    unsafe {
        let v = &*(*control).vtbl;
        let mut out = null_mut();
        let hr = (v.get_host_manager)(control, &IID_IHOST_MEMORY_MANAGER, &mut out);
        assert_eq!((hr, out), (HResult::S_OK, manager.cast()));
        assert_eq!(release(manager), 2);
        let mut out = std::ptr::dangling_mut::<c_void>();
        let hr = (v.get_host_manager)(control, &IID_IHOST_MALLOC, &mut out);
        assert_eq!((hr, out), (HResult::E_NOINTERFACE, null_mut()));
        let hr = (v.get_host_manager)(control, &IID_IHOST_MEMORY_MANAGER, null_mut());
        assert_eq!(hr, HResult::E_POINTER);
        assert_eq!(
            (v.set_app_domain_manager)(control, 1, null_mut()),
            HResult::S_OK
        );
        assert_eq!(query(control, &IID_IHOST_CONTROL).0, HResult::S_OK);
        assert_eq!(release(control), 1);
    }
    assert_eq!(release(manager), 1, "the control keeps the manager alive");
    assert_eq!(release(control), 0);
    // SAFETY: NULL arguments are answered.
    unsafe {
        let mut out = std::ptr::dangling_mut::<IHostControl>();
        assert_eq!(
            hostmem_CreateHostControl(null_mut(), &mut out),
            HResult::E_POINTER
        );
        assert!(out.is_null());
    }
}

#[test]
fn configs_are_checked() {
    let mut out = std::ptr::dangling_mut::<IHostMemoryManager>();
    let mut config = HostmemConfig {
        size: 8,
        ..HostmemConfig::new()
    };
    // SAFETY: a live config and writable out throughout.
    unsafe {
        assert_eq!(
            hostmem_CreateMemoryManager(&config, &mut out),
            HResult::E_INVALIDARG
        );
        assert!(out.is_null());
        config.size = HostmemConfig::MIN_SIZE;
        config.budget_bytes = 1 << 20;
        assert_eq!(
            hostmem_CreateMemoryManager(&config, &mut out),
            HResult::S_OK
        );
        let host = ComMemoryManager::host_of(out).unwrap();
        assert_eq!(host.config().budget_bytes, Some(1 << 20));
        drop(host);
        assert_eq!(release(out), 0);
        assert_eq!(
            hostmem_CreateMemoryManager(&config, null_mut()),
            HResult::E_POINTER
        );
    }
}

/// A runtime-side callback written in Rust, counting its references.
#[repr(C)]
struct FakeCallback {
    vtbl: *const ICLRMemoryNotificationCallbackVtbl,
    refs: AtomicU32,
    last: AtomicU32,
}

/// `QueryInterface` of the fake: nothing but itself is asked for here.
///
/// # Safety
///
/// `out` is writable.
unsafe extern "system" fn fake_qi(
    _: *mut IUnknown,
    _: *const Guid,
    out: *mut *mut c_void,
) -> HResult {
    // SAFETY: the test passes a writable out (never called here anyway).
    unsafe { *out = null_mut() };
    HResult::E_NOINTERFACE
}
/// `AddRef` of the fake.
///
/// # Safety
///
/// `this` is a live `FakeCallback`.
unsafe extern "system" fn fake_add_ref(this: *mut IUnknown) -> u32 {
    // SAFETY: `this` is a live `FakeCallback`.
    unsafe {
        (*this.cast::<FakeCallback>())
            .refs
            .fetch_add(1, Ordering::SeqCst)
            + 1
    }
}
/// `Release` of the fake (its storage is the test's).
///
/// # Safety
///
/// `this` is a live `FakeCallback`.
unsafe extern "system" fn fake_release(this: *mut IUnknown) -> u32 {
    // SAFETY: `this` is a live `FakeCallback` (the test owns its storage).
    unsafe {
        (*this.cast::<FakeCallback>())
            .refs
            .fetch_sub(1, Ordering::SeqCst)
            - 1
    }
}
/// `OnMemoryNotification` of the fake: records the state.
///
/// # Safety
///
/// `this` is a live `FakeCallback`.
unsafe extern "system" fn fake_notify(
    this: *mut ICLRMemoryNotificationCallback,
    state: u32,
) -> HResult {
    // SAFETY: `this` is a live `FakeCallback`.
    unsafe {
        (*this.cast::<FakeCallback>())
            .last
            .store(state, Ordering::SeqCst)
    };
    HResult::S_OK
}
static FAKE_VTBL: ICLRMemoryNotificationCallbackVtbl = ICLRMemoryNotificationCallbackVtbl {
    unknown: IUnknownVtbl {
        query_interface: fake_qi,
        add_ref: fake_add_ref,
        release: fake_release,
    },
    on_memory_notification: fake_notify,
};

#[test]
fn the_callback_wrapper_takes_and_gives_back_one_reference() {
    let fake = FakeCallback {
        vtbl: &FAKE_VTBL,
        refs: AtomicU32::new(1),
        last: AtomicU32::new(0),
    };
    let ptr = (&raw const fake)
        .cast_mut()
        .cast::<ICLRMemoryNotificationCallback>();
    // SAFETY: `fake` lives for the whole test and is free-threaded.
    let wrapped = unsafe { NotificationCallback::wrap(ptr) }.unwrap();
    assert_eq!(fake.refs.load(Ordering::SeqCst), 2);
    assert_eq!(wrapped.notify(MemoryAvailable::Low), HResult::S_OK);
    assert_eq!(fake.last.load(Ordering::SeqCst), 1);
    drop(wrapped);
    assert_eq!(fake.refs.load(Ordering::SeqCst), 1);

    let manager = new_manager();
    let v = vtbl(manager);
    // SAFETY: a live manager; `fake` outlives it.
    unsafe {
        assert_eq!(
            (v.register_memory_notification_callback)(manager, ptr),
            HResult::S_OK
        );
        assert_eq!(fake.refs.load(Ordering::SeqCst), 2);
        assert_eq!(
            (v.register_memory_notification_callback)(manager, null_mut()),
            HResult::S_OK
        );
        assert_eq!(fake.refs.load(Ordering::SeqCst), 1);
        assert_eq!(
            (v.register_memory_notification_callback)(manager, ptr),
            HResult::S_OK
        );
    }
    assert_eq!(release(manager), 0);
    assert_eq!(
        fake.refs.load(Ordering::SeqCst),
        1,
        "destroying the manager releases it"
    );
}

#[test]
fn memory_load_needs_its_pointers() {
    let manager = new_manager();
    let v = vtbl(manager);
    let (mut load, mut available) = (0u32, 0usize);
    // SAFETY: a live manager; the out-pointers are writable or NULL.
    unsafe {
        assert_eq!(
            (v.get_memory_load)(manager, null_mut(), &mut available),
            HResult::E_POINTER
        );
        assert_eq!(
            (v.get_memory_load)(manager, &mut load, null_mut()),
            HResult::E_POINTER
        );
        let hr = (v.get_memory_load)(manager, &mut load, &mut available);
        assert!(hr == HResult::S_OK || hr.bits() == 0x8007_0032, "{hr}");
        assert!(load <= 100);
    }
    let _ = Protection::READWRITE;
    assert_eq!(release(manager), 0);
}

/// hostmem's extension: the manager object's second face, reached by
/// QueryInterface, shares the object's count and identity, and watches
/// writes to a MEM_WRITE_WATCH reservation made through the first face.
#[test]
fn write_watch_face() {
    let manager = new_manager();
    let (hr, face) = query(manager, &IID_IHOST_MEMORY_WRITE_WATCH);
    assert_eq!(hr, HResult::S_OK);
    assert!(!face.is_null() && face != manager.cast());
    assert_eq!(query(face, &IID_IUNKNOWN), (HResult::S_OK, manager.cast()));
    assert_eq!(release(manager), 2);
    assert_eq!(
        query(face, &IID_IHOST_MEMORY_MANAGER),
        (HResult::S_OK, manager.cast())
    );
    assert_eq!(release(face), 2);
    let face = face.cast::<IHostMemoryWriteWatch>();
    // SAFETY: a live face; its vtable is static.
    let ww = unsafe { &*(*face).vtbl };
    let mut large = 1;
    // SAFETY: live face, writable out.
    assert_eq!(
        unsafe { (ww.get_large_page_minimum)(face, &mut large) },
        HResult::S_OK
    );
    assert_eq!(large, crate::os::huge_page_size());
    if !crate::os::write_watch_supported() {
        eprintln!("skipped: this kernel cannot watch writes");
    } else {
        let mut base = null_mut();
        // SAFETY: a live manager, a writable out.
        let hr = unsafe {
            (vtbl(manager).virtual_alloc)(
                manager,
                null_mut(),
                0x10000,
                MEM_RESERVE | MEM_COMMIT | 0x20_0000,
                PAGE_READWRITE,
                0,
                &mut base,
            )
        };
        assert_eq!(hr, HResult::S_OK);
        // SAFETY: committed read-write just above.
        unsafe { base.cast::<u8>().add(0x3005).write_volatile(7) };
        let mut found = [null_mut::<c_void>(); 8];
        let (mut count, mut granularity) = (8usize, 0u32);
        // SAFETY: live face; outputs writable for 8 entries.
        let hr = unsafe {
            (ww.get_write_watch)(
                face,
                1,
                base,
                0x10000,
                found.as_mut_ptr(),
                &mut count,
                &mut granularity,
            )
        };
        assert_eq!((hr, count, granularity), (HResult::S_OK, 1, 4096));
        assert_eq!(found[0], base.wrapping_byte_add(0x3000));
        // SAFETY: as above; reset, then nothing is written.
        let hr = unsafe {
            (ww.get_write_watch)(
                face,
                0,
                base,
                0x10000,
                found.as_mut_ptr(),
                &mut count,
                &mut granularity,
            )
        };
        assert_eq!((hr, count), (HResult::S_OK, 0));
        // SAFETY: live face.
        assert_eq!(
            unsafe { (ww.reset_write_watch)(face, base, 0) },
            HResult::E_INVALIDARG
        );
        let mut local = 0u8;
        assert_eq!(
            // SAFETY: live face; the address is only a number to it.
            unsafe { (ww.reset_write_watch)(face, (&raw mut local).cast(), 4096) },
            HResult::HOST_E_INVALIDOPERATION
        );
        // SAFETY: as above, NULL count.
        let hr = unsafe {
            (ww.get_write_watch)(
                face,
                0,
                base,
                0x10000,
                found.as_mut_ptr(),
                null_mut(),
                &mut granularity,
            )
        };
        assert_eq!(hr, HResult::E_POINTER);
        // SAFETY: live manager; the reservation's base.
        let hr = unsafe { (vtbl(manager).virtual_free)(manager, base, 0, MEM_RELEASE) };
        assert_eq!(hr, HResult::S_OK);
    }
    assert_eq!(release(face), 1);
    assert_eq!(release(manager), 0);
}

thread_local! {
    /// Set by [`panic_in_next_method`]: the next COM method body on this
    /// thread panics (once).
    static PANIC_NEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics if [`panic_in_next_method`] asked for it (the test hook of
/// `latching_boundary`); silent (`resume_unwind` skips the panic hook).
pub(super) fn panic_if_asked() {
    if PANIC_NEXT.with(|p| p.replace(false)) {
        std::panic::resume_unwind(Box::new("a panic injected in the COM face"));
    }
}

fn panic_in_next_method() {
    PANIC_NEXT.with(|p| p.set(true));
}

fn alloc_rw(manager: *mut IHostMemoryManager) -> (HResult, *mut c_void) {
    let mut mem = null_mut();
    // SAFETY: a live manager, a writable out.
    let hr = unsafe {
        (vtbl(manager).virtual_alloc)(
            manager,
            null_mut(),
            0x10000,
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
            0,
            &mut mem,
        )
    };
    (hr, mem)
}

#[test]
fn a_panic_in_a_manager_method_latches_the_failure() {
    let manager = new_manager();
    let (hr, kept) = alloc_rw(manager);
    assert_eq!(hr, HResult::S_OK);
    panic_in_next_method();
    assert_eq!(alloc_rw(manager).0, HResult::E_FAIL, "the panic is E_FAIL");
    assert_eq!(
        alloc_rw(manager).0,
        HResult::HOST_E_CLRNOTAVAILABLE,
        "and latched, as the README promises"
    );
    let mut mbi = [0u8; 48];
    let mut written = 0;
    // SAFETY: a live manager, 48 writable bytes, a writable out.
    let hr = unsafe {
        (vtbl(manager).virtual_query)(manager, kept, mbi.as_mut_ptr().cast(), 48, &mut written)
    };
    assert_eq!(hr, HResult::HOST_E_CLRNOTAVAILABLE);
    panic_in_next_method();
    assert_eq!(
        alloc_rw(manager).0,
        HResult::HOST_E_CLRNOTAVAILABLE,
        "a panic after the latch is not a second E_FAIL"
    );
    assert_eq!(release(manager), 0);
}

#[test]
fn a_panic_in_a_heap_method_latches_its_managers_failure() {
    let manager = new_manager();
    let mut heap = null_mut();
    // SAFETY: a live manager, a writable out.
    let hr = unsafe { (vtbl(manager).create_malloc)(manager, 1, &mut heap) };
    assert_eq!(hr, HResult::S_OK);
    // SAFETY: a heap made just above; its vtable is static.
    let heap_vtbl = unsafe { &*(*heap).vtbl };
    let mut block = null_mut();
    panic_in_next_method();
    // SAFETY: a live heap, a writable out.
    let hr = unsafe { (heap_vtbl.alloc)(heap, 32, 0, &mut block) };
    assert_eq!(hr, HResult::E_FAIL);
    assert!(block.is_null());
    // SAFETY: as above.
    let hr = unsafe { (heap_vtbl.alloc)(heap, 32, 0, &mut block) };
    assert_eq!(hr, HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(alloc_rw(manager).0, HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(release(heap), 0);
    assert_eq!(release(manager), 0);
}

/// Leaves non-zero bytes in the stack below this frame, where the query's
/// temporaries will live: padding copied from them would show.
#[inline(never)]
fn dirty_stack() {
    let junk = [0x5Au8; 16 * 1024];
    std::hint::black_box(&junk);
}

#[test]
fn virtual_query_writes_zeroed_padding_and_nothing_past_48_bytes() {
    let manager = new_manager();
    let (hr, base) = alloc_rw(manager);
    assert_eq!(hr, HResult::S_OK);
    let mut buffer = [0xA5u8; 64];
    let mut written = 0;
    dirty_stack();
    // SAFETY: a live manager, 64 writable bytes, a writable out.
    let hr = unsafe {
        (vtbl(manager).virtual_query)(manager, base, buffer.as_mut_ptr().cast(), 64, &mut written)
    };
    assert_eq!(hr, HResult::S_OK);
    assert_eq!(written, 48);
    assert_eq!(&buffer[20..22], &[0, 0], "PartitionId");
    assert_eq!(&buffer[22..24], &[0, 0], "padding after PartitionId");
    assert_eq!(&buffer[44..48], &[0, 0, 0, 0], "tail padding");
    assert_eq!(&buffer[48..], &[0xA5; 16], "nothing past the structure");
    assert_eq!(
        usize::from_ne_bytes(buffer[0..8].try_into().unwrap()),
        base as usize
    );
    assert_eq!(release(manager), 0);
}
