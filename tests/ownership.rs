//! A heap's chunks belong to the host, not to the runtime: every
//! runtime-facing call on them (release, decommit, protect, commit, reset,
//! reset-undo; Rust and COM faces) is refused with
//! `HOST_E_INVALIDOPERATION` and changes nothing, `VirtualQuery` still
//! describes them truthfully, and the heap keeps working.

use hostmem::ffi::com::{ComMemoryManager, IHostMalloc, IHostMemoryManager};
use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{HResult, HostConfig, HostError, HostMemoryManager, MemoryCriticalLevel};
use hostmem::win32::{
    AllocationType, FreeType, MemoryBasicInformation, MemoryState, MemoryType, PAGE_SIZE,
    Protection, Win32Error,
};
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Arc;

const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;

fn manager() -> Arc<HostMemoryManager> {
    HostMemoryManager::new(HostConfig::default()).unwrap()
}

/// Everything a refused call must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    block: MemoryBasicInformation,
    chunk_end: MemoryBasicInformation,
    regions: usize,
    reserved: usize,
    committed: usize,
}

fn snapshot(m: &HostMemoryManager, block: usize, chunk_end: usize) -> Snapshot {
    let s = m.statistics();
    Snapshot {
        block: m.virtual_query(block).unwrap(),
        chunk_end: m.virtual_query(chunk_end).unwrap(),
        regions: s.regions,
        reserved: s.reserved_bytes,
        committed: s.committed_bytes,
    }
}

/// The heap still hands out writable blocks and takes them back.
fn heap_still_works(heap: &HostMalloc, first: usize) {
    // SAFETY: `first` is a live 32-byte block of `heap`.
    unsafe { std::ptr::write_bytes(first as *mut u8, 0xa5, 32) };
    let more: Vec<usize> = (0..4096).map(|_| heap.alloc(32, LEVEL).unwrap()).collect();
    for &p in &more {
        // SAFETY: a live 32-byte block of `heap`.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0x5a, 32) };
    }
    for p in more {
        heap.free(p).unwrap();
    }
    heap.free(first).unwrap();
}

#[test]
fn runtime_calls_on_a_heap_chunk_are_refused_and_change_nothing() {
    let m = manager();
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let block = heap.alloc(32, LEVEL).unwrap();
    let mbi = m.virtual_query(block).unwrap();
    // VirtualQuery tells the truth about the host's own memory.
    assert_eq!(mbi.state, MemoryState::COMMIT);
    assert_eq!(mbi.type_, MemoryType::PRIVATE);
    assert_eq!(mbi.protect, Protection::READWRITE);
    let base = mbi.allocation_base;
    let page = block & !(PAGE_SIZE - 1);
    let chunk_end = {
        let mut at = base;
        loop {
            let r = m.virtual_query(at).unwrap();
            if r.allocation_base != base {
                break at;
            }
            at += r.region_size;
        }
    };
    // The last page of the chunk: reserved, never committed.
    let last = chunk_end - PAGE_SIZE;
    assert_eq!(m.virtual_query(last).unwrap().state, MemoryState::RESERVE);
    let before = snapshot(&m, block, last);

    let refused = HostError::NotHostMemory;
    assert_eq!(m.virtual_free(base, 0, FreeType::RELEASE), Err(refused));
    assert_eq!(
        m.virtual_free(page, PAGE_SIZE, FreeType::DECOMMIT),
        Err(refused)
    );
    assert_eq!(m.virtual_free(base, 0, FreeType::DECOMMIT), Err(refused));
    assert_eq!(
        m.virtual_protect(page, PAGE_SIZE, Protection::NOACCESS),
        Err(refused)
    );
    assert_eq!(
        m.virtual_protect(page, 0, Protection::READONLY),
        Err(refused)
    );
    for (at, kind) in [
        (page, AllocationType::RESET),
        (page, AllocationType::RESET_UNDO),
        (page, AllocationType::COMMIT),
        (last, AllocationType::COMMIT),
    ] {
        assert_eq!(
            m.virtual_alloc(at, PAGE_SIZE, kind, Protection::READWRITE, LEVEL),
            Err(refused),
            "{kind:?} at {at:#x}"
        );
    }
    // Reserving over it is the usual "address in use".
    assert_eq!(
        m.virtual_alloc(
            base,
            PAGE_SIZE,
            AllocationType::RESERVE,
            Protection::READWRITE,
            LEVEL
        ),
        Err(HostError::Win32(Win32Error::INVALID_ADDRESS))
    );
    assert_eq!(snapshot(&m, block, last), before);
    heap_still_works(&heap, block);

    // Dropping the heap releases its chunks, and only them.
    let mine = m
        .virtual_alloc(
            0,
            PAGE_SIZE,
            AllocationType::RESERVE | AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL,
        )
        .unwrap();
    drop(heap);
    assert_eq!(m.statistics().regions, 1);
    assert_eq!(m.virtual_query(mine).unwrap().state, MemoryState::COMMIT);
    m.virtual_free(mine, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn the_host_cannot_be_made_to_touch_runtime_memory_through_a_heap() {
    // The runtime's reservation next to a heap's chunk stays the runtime's:
    // freeing a heap block never reaches it.
    let m = manager();
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let mine = m
        .virtual_alloc(
            0,
            PAGE_SIZE,
            AllocationType::RESERVE | AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL,
        )
        .unwrap();
    assert!(heap.free(mine).is_err());
    assert_eq!(m.virtual_query(mine).unwrap().state, MemoryState::COMMIT);
    m.virtual_free(mine, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn com_virtual_calls_on_a_heap_chunk_are_refused() {
    let host = manager();
    let com: *mut IHostMemoryManager = ComMemoryManager::create(Arc::clone(&host));
    // SAFETY: a live object made above, used on this thread only; every
    // out-pointer is valid.
    unsafe {
        let vtbl = &*(*com).vtbl;
        let mut malloc: *mut IHostMalloc = null_mut();
        let hr = (vtbl.create_malloc)(com, MallocType::THREADSAFE.bits(), &mut malloc);
        assert_eq!(hr, HResult::S_OK);
        let mvtbl = &*(*malloc).vtbl;
        let mut block: *mut c_void = null_mut();
        assert_eq!((mvtbl.alloc)(malloc, 32, 0, &mut block), HResult::S_OK);
        let before = host.virtual_query(block as usize).unwrap();
        let base = before.allocation_base as *mut c_void;
        let page = (block as usize & !(PAGE_SIZE - 1)) as *mut c_void;
        let refused = HResult::HOST_E_INVALIDOPERATION;
        assert_eq!(
            (vtbl.virtual_free)(com, base, 0, FreeType::RELEASE.bits()),
            refused
        );
        assert_eq!(
            (vtbl.virtual_free)(com, page, PAGE_SIZE, FreeType::DECOMMIT.bits()),
            refused
        );
        let mut old = 0;
        assert_eq!(
            (vtbl.virtual_protect)(com, page, PAGE_SIZE, Protection::NOACCESS.bits(), &mut old),
            refused
        );
        let mut out = null_mut();
        assert_eq!(
            (vtbl.virtual_alloc)(
                com,
                page,
                PAGE_SIZE,
                AllocationType::RESET.bits(),
                Protection::READWRITE.bits(),
                0,
                &mut out
            ),
            refused
        );
        assert_eq!(host.virtual_query(block as usize).unwrap(), before);
        // The heap still works.
        std::ptr::write_bytes(block.cast::<u8>(), 0xa5, 32);
        assert_eq!((mvtbl.free)(malloc, block), HResult::S_OK);
        let mut again: *mut c_void = null_mut();
        assert_eq!((mvtbl.alloc)(malloc, 32, 0, &mut again), HResult::S_OK);
        std::ptr::write_bytes(again.cast::<u8>(), 0x5a, 32);
        assert_eq!((mvtbl.free)(malloc, again), HResult::S_OK);
        (mvtbl.unknown.release)(malloc.cast());
        (vtbl.unknown.release)(com.cast());
    }
}

#[test]
fn shutdown_leaves_a_live_heaps_memory_mapped_until_the_heap_goes() {
    let m = manager();
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let block = heap.alloc(64, LEVEL).unwrap();
    let mine = m
        .virtual_alloc(
            0,
            PAGE_SIZE,
            AllocationType::RESERVE | AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL,
        )
        .unwrap();
    m.shutdown();
    // The runtime's region is gone, the heap refuses new work...
    assert!(heap.alloc(64, LEVEL).is_err());
    let stats = m.statistics();
    assert_eq!(stats.regions, 1, "only the heap's chunk is left");
    let _ = mine;
    // ...but a block the runtime holds is still memory (it would fault if
    // the shutdown had unmapped the chunk under the heap).
    // SAFETY: a live 64-byte block of `heap`, whose chunk is still mapped.
    unsafe {
        std::ptr::write_bytes(block as *mut u8, 0x77, 64);
        assert_eq!(*(block as *const u8).add(63), 0x77);
    }
    drop(heap);
    assert_eq!(m.statistics().regions, 0);
}
