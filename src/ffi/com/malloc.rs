//! hostmem's `IHostMalloc` object: a reference-counted COM object over an
//! `Arc<HostMalloc>` (a heap drawn from its manager's pages).
#![allow(unsafe_code)]

use super::interfaces::{IHostMalloc, IHostMallocVtbl};
use super::unknown::{IUnknownVtbl, RefCount};
use super::{ComObject, object_add_ref, object_query_interface, object_release};
use super::{Out, latching_boundary};
use crate::heap::HostMalloc;
use crate::host::{HResult, HostError, MemoryCriticalLevel};
use std::ffi::{CStr, c_char, c_void};
use std::ptr::null_mut;
use std::sync::Arc;

/// The `IHostMalloc` object: its first field is the vtable pointer. The
/// last `Release` frees it and drops its reference to the heap (the heap's
/// memory goes back to the manager when no reference remains).
#[repr(C)]
pub struct ComHostMalloc {
    vtbl: *const IHostMallocVtbl,
    refs: RefCount,
    heap: Arc<HostMalloc>,
}

static VTBL: IHostMallocVtbl = IHostMallocVtbl {
    unknown: IUnknownVtbl {
        query_interface: object_query_interface::<ComHostMalloc>,
        add_ref: object_add_ref::<ComHostMalloc>,
        release: object_release::<ComHostMalloc>,
    },
    alloc,
    debug_alloc,
    free,
};

impl ComHostMalloc {
    /// A new object over `heap` with one reference, which the caller owns.
    pub fn create(heap: Arc<HostMalloc>) -> *mut IHostMalloc {
        Box::into_raw(Box::new(Self {
            vtbl: &VTBL,
            refs: RefCount::new(),
            heap,
        }))
        .cast()
    }

    /// The object behind `this`; `None` for NULL.
    ///
    /// # Safety
    ///
    /// `this` is NULL or a pointer made by [`create`](Self::create) on
    /// which the caller holds a reference for as long as `'a` lasts.
    unsafe fn from_this<'a, T>(this: *mut T) -> Option<&'a Self> {
        // SAFETY: NULL, or a live `ComHostMalloc` (the caller's contract).
        unsafe { this.cast::<Self>().as_ref() }
    }
}

/// The heap behind `this`; `None` for NULL.
///
/// # Safety
///
/// `this` is NULL or a live object of this module, referenced by the
/// caller for the whole of `'a`.
unsafe fn heap<'a>(this: *mut IHostMalloc) -> Option<&'a HostMalloc> {
    // SAFETY: NULL or ours, alive for `'a` (the caller's contract).
    unsafe { ComHostMalloc::from_this(this) }.map(|object| &*object.heap)
}

/// The body of `Alloc` and `DebugAlloc`: `*out` NULL first, then the
/// block `allocate` returns. `E_POINTER` for a NULL `out` or object,
/// `E_INVALIDARG` for a level outside `EMemoryCriticalLevel`.
///
/// # Safety
///
/// `out` is NULL or writable.
#[inline(always)]
unsafe fn allocate(
    heap: Option<&HostMalloc>,
    critical_level: u32,
    out: *mut *mut c_void,
    allocate: impl FnOnce(&HostMalloc, MemoryCriticalLevel) -> Result<usize, HostError>,
) -> HResult {
    latching_boundary(heap.map(|h| &**h.manager()), || {
        // SAFETY: NULL or writable (the caller's contract).
        let Some(mut out) = (unsafe { Out::new(out) }) else {
            return HResult::E_POINTER;
        };
        out.write(null_mut());
        let Some(heap) = heap else {
            return HResult::E_POINTER;
        };
        let Some(level) = MemoryCriticalLevel::from_raw(critical_level) else {
            return HResult::E_INVALIDARG;
        };
        match allocate(heap, level) {
            Ok(block) => {
                out.write(std::ptr::with_exposed_provenance_mut(block));
                HResult::S_OK
            }
            Err(e) => e.hresult(),
        }
    })
}

/// `Alloc(size, level, &p)`: `*p` a 16-byte aligned block, or NULL with
/// `E_OUTOFMEMORY` when the budget (at `level`) refuses. `E_POINTER` for a
/// NULL `p`; `E_INVALIDARG` for a level outside `EMemoryCriticalLevel`.
///
/// A call the heap's hit path serves (see [`HostMalloc::alloc_hit`]) is
/// answered here, before the panic boundary: the arguments are checked as
/// the full path checks them (a NULL object or `p`, or a bad level, goes
/// to the full path, which answers it), and the hit path itself tests the
/// manager's state and counts the call. Any other call takes the full
/// path.
///
/// # Safety
///
/// `this` is a live object of this module; `out` is NULL or writable.
unsafe extern "system" fn alloc(
    this: *mut IHostMalloc,
    size: usize,
    critical_level: u32,
    out: *mut *mut c_void,
) -> HResult {
    // SAFETY: `this` is NULL or ours, alive for the call (the caller's
    // contract).
    let heap = unsafe { heap(this) };
    if let Some(heap) = heap
        && !out.is_null()
        && MemoryCriticalLevel::from_raw(critical_level).is_some()
        && let Some(block) = heap.alloc_hit(size)
    {
        // SAFETY: not NULL, and writable for the call (the caller's
        // contract); unaligned, as `Out::write` stores.
        unsafe { out.write_unaligned(std::ptr::with_exposed_provenance_mut(block)) };
        return HResult::S_OK;
    }
    // A miss is the rare case: the hint lays the hit path out as straight
    // code. The heap, not `this`, is passed on: one value fewer to keep
    // across the hit path.
    std::hint::cold_path();
    let heap = heap.map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: the caller's contract, passed on (`heap` is NULL or the
    // object's heap, which the caller's reference keeps alive).
    unsafe { alloc_full(heap, size, critical_level, out) }
}

/// `Alloc` when its hit path did not answer: everything inside the panic
/// boundary. A tail call of [`alloc`], with the same convention.
///
/// # Safety
///
/// `heap` is NULL or a heap alive for the call; `out` is NULL or writable.
#[inline(never)]
unsafe extern "system" fn alloc_full(
    heap: *const HostMalloc,
    size: usize,
    critical_level: u32,
    out: *mut *mut c_void,
) -> HResult {
    // SAFETY: NULL or alive for the call (the caller's contract).
    let heap = unsafe { heap.as_ref() };
    // SAFETY: the caller's contract, passed on.
    unsafe {
        allocate(heap, critical_level, out, |heap, level| {
            heap.alloc_full(size, level)
        })
    }
}

/// `DebugAlloc(size, level, file, line, &p)`: as `Alloc`, and the heap
/// remembers `file` (NULL: none) and `line` for its leak report.
///
/// # Safety
///
/// `this` is a live object of this module; `file` is NULL or a
/// NUL-terminated string readable for the call; `out` is NULL or writable.
unsafe extern "system" fn debug_alloc(
    this: *mut IHostMalloc,
    size: usize,
    critical_level: u32,
    file: *mut c_char,
    line: i32,
    out: *mut *mut c_void,
) -> HResult {
    let debug_alloc = |heap: &HostMalloc, level| {
        // SAFETY: NULL or a NUL-terminated string (the caller's contract).
        let file = (!file.is_null()).then(|| unsafe { CStr::from_ptr(file) });
        heap.debug_alloc(size, level, file, line)
    };
    // SAFETY: `this` is NULL or ours, alive for the call (the caller's
    // contract).
    let heap = unsafe { heap(this) };
    // SAFETY: the caller's contract, passed on.
    unsafe { allocate(heap, critical_level, out, debug_alloc) }
}

/// `Free(p)`: NULL is `S_OK`; a pointer this heap did not hand out is
/// `HOST_E_INVALIDOPERATION` and changes nothing.
///
/// A call the heap's hit path serves (see [`HostMalloc::free_hit`]) is
/// answered here, before the panic boundary; any other (a NULL object or
/// block included) takes the full path.
///
/// # Safety
///
/// `this` is a live object of this module.
unsafe extern "system" fn free(this: *mut IHostMalloc, block: *mut c_void) -> HResult {
    // SAFETY: `this` is NULL or ours, alive for the call (the caller's
    // contract).
    let heap = unsafe { heap(this) };
    if let Some(heap) = heap
        && heap.free_hit(block.addr())
    {
        return HResult::S_OK;
    }
    // As in `alloc`: the rare case, and the heap passed on.
    std::hint::cold_path();
    let heap = heap.map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `heap` is NULL or the object's heap, which the caller's
    // reference keeps alive.
    unsafe { free_full(heap, block) }
}

/// `Free` when its hit path did not answer: everything inside the panic
/// boundary. A tail call of [`free`], with the same convention.
///
/// # Safety
///
/// `heap` is NULL or a heap alive for the call.
#[inline(never)]
unsafe extern "system" fn free_full(heap: *const HostMalloc, block: *mut c_void) -> HResult {
    // SAFETY: NULL or alive for the call (the caller's contract).
    let heap = unsafe { heap.as_ref() };
    latching_boundary(heap.map(|h| &**h.manager()), || {
        let Some(heap) = heap else {
            return HResult::E_POINTER;
        };
        heap.free_full(block.addr())
            .map_or_else(HostError::hresult, |()| HResult::S_OK)
    })
}

// SAFETY: `#[repr(C)]` with the vtable pointer first; objects are made only
// by `create`, with `Box::into_raw` and a count of one.
unsafe impl ComObject for ComHostMalloc {
    type Interface = IHostMalloc;
    fn refs(&self) -> &RefCount {
        &self.refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::com::ComMemoryManager;
    use crate::ffi::com::interfaces::IHostMemoryManager;
    use crate::heap::MallocType;
    use crate::host::{HostMemoryManager, Method};

    const TASK: u32 = MemoryCriticalLevel::TaskCritical as u32;

    /// A manager (its Rust face and a COM reference) and a thread-safe
    /// heap made through the vtable.
    struct Fixture {
        host: Arc<HostMemoryManager>,
        manager: *mut IHostMemoryManager,
        this: *mut IHostMalloc,
    }

    impl Fixture {
        fn new() -> Self {
            let host = Arc::new(HostMemoryManager::default());
            let manager = ComMemoryManager::create(host.clone());
            let mut this = null_mut();
            // SAFETY: a live manager just made; `this` is writable.
            let hr = unsafe {
                ((*(*manager).vtbl).create_malloc)(
                    manager,
                    MallocType::THREADSAFE.bits(),
                    &mut this,
                )
            };
            assert_eq!(hr, HResult::S_OK);
            Self {
                host,
                manager,
                this,
            }
        }

        fn heap(&self) -> &HostMalloc {
            // SAFETY: the fixture holds its reference on the object.
            unsafe { heap(self.this) }.expect("a heap")
        }

        /// `Alloc` through the vtable: the answer and `*out` (preset to a
        /// non-NULL value, to see that it is written).
        fn alloc_on(&self, this: *mut IHostMalloc, size: usize, level: u32) -> (HResult, usize) {
            let mut out = std::ptr::dangling_mut::<c_void>();
            // SAFETY: `this` is NULL or the fixture's object; `out` is
            // writable.
            let hr = unsafe { (super::VTBL.alloc)(this, size, level, &mut out) };
            (hr, out.addr())
        }

        fn alloc(&self, size: usize) -> usize {
            let (hr, block) = self.alloc_on(self.this, size, TASK);
            assert_eq!(hr, HResult::S_OK);
            block
        }

        fn free_on(&self, this: *mut IHostMalloc, block: usize) -> HResult {
            // SAFETY: `this` is NULL or the fixture's object.
            unsafe { (super::VTBL.free)(this, std::ptr::with_exposed_provenance_mut(block)) }
        }

        fn free(&self, block: usize) -> HResult {
            self.free_on(self.this, block)
        }

        /// The manager's counts of `Alloc` and `Free` calls (the full
        /// path's and the hit paths').
        fn calls(&self) -> (u64, u64) {
            let calls = self.host.statistics().calls;
            let count = |m| calls.get(&m).copied().unwrap_or(0);
            (count(Method::MallocAlloc), count(Method::MallocFree))
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            // SAFETY: the fixture's references, given back once.
            unsafe {
                ((*(*self.this).vtbl).unknown.release)(self.this.cast());
                ((*(*self.manager).vtbl).unknown.release)(self.manager.cast());
            }
        }
    }

    /// With the thread's cache holding a block of the class, the calls the
    /// full path refuses for their arguments are refused the same by the
    /// vtable's hit paths, change nothing (the cached block is still the
    /// next one handed out) and are not counted (the full path answers them
    /// before the heap's call begins).
    #[test]
    fn the_vtables_hit_paths_check_their_arguments() {
        let f = Fixture::new();
        let block = f.alloc(32);
        assert_eq!(f.free(block), HResult::S_OK);
        let (calls, hits) = (f.calls(), f.heap().hit_calls());
        assert_eq!(f.alloc_on(null_mut(), 32, TASK), (HResult::E_POINTER, 0));
        assert_eq!(f.alloc_on(f.this, 32, 3), (HResult::E_INVALIDARG, 0));
        assert_eq!(f.alloc_on(f.this, 32, u32::MAX), (HResult::E_INVALIDARG, 0));
        // SAFETY: the fixture's object; a NULL out is answered.
        let hr = unsafe { (super::VTBL.alloc)(f.this, 32, TASK, null_mut()) };
        assert_eq!(hr, HResult::E_POINTER);
        assert_eq!(f.free_on(null_mut(), block), HResult::E_POINTER);
        assert_eq!(f.heap().hit_calls(), hits, "no hit path answered");
        assert_eq!(
            f.calls(),
            calls,
            "answered before any count, as the full path answers them"
        );
        // The block went back to the cache and is handed out again first:
        // no refused call took it.
        assert_eq!(f.alloc(32), block);
        // A block the heap did not hand out, an interior pointer, a double
        // free: refused, as by the full path.
        let failures = |f: &Fixture| {
            f.host.statistics().failures[&(Method::MallocFree, HResult::HOST_E_INVALIDOPERATION)]
        };
        let stack = 0u128;
        let foreign = std::ptr::from_ref(&stack).addr();
        assert_eq!(f.free(foreign), HResult::HOST_E_INVALIDOPERATION);
        assert_eq!(f.free(block + 8), HResult::HOST_E_INVALIDOPERATION);
        assert_eq!(f.free(block), HResult::S_OK);
        assert_eq!(f.free(block), HResult::HOST_E_INVALIDOPERATION);
        assert_eq!(failures(&f), 3);
        assert_eq!(f.free(0), HResult::S_OK, "NULL is nothing to free");
        assert_eq!(f.alloc(32), block, "the double free changed nothing");
        assert_eq!(f.free(block), HResult::S_OK);
    }

    /// Hits are counted like full-path calls; an empty cache sends `Alloc`
    /// to the full path (which refills it), a full one sends `Free` there
    /// (which hands a batch to the shared lists), and the counts stay
    /// exact across both.
    #[test]
    fn the_vtables_hit_paths_count_and_spill_to_the_full_path() {
        const N: u64 = 1000;
        let f = Fixture::new();
        let (calls, hits) = (f.calls(), f.heap().hit_calls());
        let blocks: Vec<usize> = (0..N).map(|_| f.alloc(48)).collect();
        let after_allocs = f.heap().hit_calls();
        assert!(after_allocs.0 > hits.0, "some Allocs were hits");
        assert!(
            after_allocs.0 - hits.0 < N,
            "an empty cache sent some Allocs to the full path"
        );
        for &block in &blocks {
            assert_eq!(f.free(block), HResult::S_OK);
        }
        let after_frees = f.heap().hit_calls();
        assert!(after_frees.1 > hits.1, "some Frees were hits");
        assert!(
            after_frees.1 - hits.1 < N,
            "a full cache sent some Frees to the full path"
        );
        assert_eq!(
            f.calls(),
            (calls.0 + N, calls.1 + N),
            "every call counted once"
        );
        // Every block is free once more: each is handed out again, once.
        let mut again: Vec<usize> = (0..N).map(|_| f.alloc(48)).collect();
        again.sort_unstable();
        let mut blocks = blocks;
        blocks.sort_unstable();
        assert_eq!(again, blocks);
        for &block in &again {
            assert_eq!(f.free(block), HResult::S_OK);
        }
    }

    /// Once the manager stops (a latched failure, or a shutdown), the
    /// vtable's hit paths refuse as the full path does, with a warm cache
    /// and a live block in hand: `HOST_E_CLRNOTAVAILABLE`, `*out` NULL,
    /// nothing counted as a hit.
    #[test]
    fn the_vtables_hit_paths_stop_with_the_manager() {
        for stop in [
            |host: &HostMemoryManager| assert!(host.latch_failure()),
            |host: &HostMemoryManager| host.shutdown(),
        ] {
            let f = Fixture::new();
            let live = f.alloc(64);
            let cached = f.alloc(64);
            assert_eq!(f.free(cached), HResult::S_OK);
            let hits = f.heap().hit_calls();
            stop(&f.host);
            assert_eq!(
                f.alloc_on(f.this, 64, TASK),
                (HResult::HOST_E_CLRNOTAVAILABLE, 0)
            );
            assert_eq!(f.free(live), HResult::HOST_E_CLRNOTAVAILABLE);
            assert_eq!(f.heap().hit_calls(), hits, "no hit after the stop");
        }
    }
}
