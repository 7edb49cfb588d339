//! `IHostMalloc` heaps through the Rust API: every point of issue 5 (the
//! COM face's own tests call the same heaps through the vtable).

use hostmem::heap::{ALIGNMENT, HostMalloc, MallocType, SMALL_MAX};
use hostmem::host::{
    HResult, HostConfig, HostError, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel,
    MemoryNotificationCallback, Method,
};
use hostmem::win32::{MemoryState, MemoryType, Protection};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

const TASK: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
const PROCESS: MemoryCriticalLevel = MemoryCriticalLevel::ProcessCritical;
const SLAB: usize = 64 * 1024;
const TS: MallocType = MallocType::THREADSAFE;

fn manager() -> Arc<HostMemoryManager> {
    Arc::new(HostMemoryManager::default())
}

fn budgeted(bytes: usize) -> Arc<HostMemoryManager> {
    HostMemoryManager::new(HostConfig {
        budget_bytes: Some(bytes as u64),
        ..HostConfig::default()
    })
    .unwrap()
}

fn hr<T>(r: Result<T, HostError>) -> HResult {
    r.map_or_else(|e| e.hresult(), |_| HResult::S_OK)
}

/// The byte a block filled with `seed` has at `i`.
fn pattern(seed: usize, i: usize) -> u8 {
    (seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) % 251) as u8
}

/// Fills `len` bytes at `p` with `seed`'s pattern.
fn fill(p: usize, len: usize, seed: usize) {
    // SAFETY: `p` is a live block of at least `len` bytes, ours alone.
    let bytes = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

/// Whether the `len` bytes at `p` still hold `seed`'s pattern.
fn intact(p: usize, len: usize, seed: usize) -> bool {
    // SAFETY: `p` is a live block of at least `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == pattern(seed, i))
}

#[test]
fn create_malloc_takes_the_two_flags_in_any_combination_and_nothing_else() {
    let m = manager();
    for bits in 0..4 {
        let heap = m.create_malloc(MallocType::from_bits_retain(bits)).unwrap();
        assert_eq!(heap.malloc_type().bits(), bits);
    }
    for bits in [4, 8, 0x10, 0x8000_0000, 0x7] {
        let r = m.create_malloc(MallocType::from_bits_retain(bits));
        assert_eq!(r.unwrap_err(), HostError::InvalidArgument);
        assert_eq!(
            hr(m.create_malloc(MallocType::from_bits_retain(bits))),
            HResult::E_INVALIDARG
        );
    }
    let stats = m.statistics();
    assert_eq!(stats.calls[&Method::CreateMalloc], 14);
    assert_eq!(
        stats.failures[&(Method::CreateMalloc, HResult::E_INVALIDARG)],
        10
    );
    // A heap holds nothing until its first allocation.
    assert_eq!(m.statistics().regions, 0);
}

#[test]
fn blocks_are_aligned_distinct_and_usable_at_every_size() {
    let m = manager();
    for flags in [TS, MallocType::empty()] {
        let heap = m.create_malloc(flags).unwrap();
        let mut sizes: Vec<usize> = (0..=2048).collect();
        sizes.extend((2048..=SMALL_MAX + 4096).step_by(97));
        sizes.extend([SMALL_MAX - 1, SMALL_MAX, SMALL_MAX + 1, 100_000, 1 << 20]);
        let blocks: Vec<(usize, usize)> = sizes
            .iter()
            .map(|&size| {
                let p = heap.alloc(size, TASK).unwrap();
                assert_eq!(p % ALIGNMENT, 0, "size {size}");
                assert!(HostMalloc::block_size(size) >= size);
                fill(p, size, p);
                (p, size)
            })
            .collect();
        // No two blocks overlap.
        let mut spans: Vec<(usize, usize)> = blocks
            .iter()
            .map(|&(p, s)| (p, p + HostMalloc::block_size(s).max(1)))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:x?} overlaps {:x?}", w[0], w[1]);
        }
        for &(p, size) in &blocks {
            assert!(intact(p, size, p));
            heap.free(p).unwrap();
        }
    }
}

#[test]
fn size_zero_gives_a_pointer_of_its_own_each_time() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let blocks: Vec<usize> = (0..10_000).map(|_| heap.alloc(0, TASK).unwrap()).collect();
    let distinct: HashSet<usize> = blocks.iter().copied().collect();
    assert_eq!(distinct.len(), blocks.len());
    assert!(blocks.iter().all(|&p| p != 0 && p % ALIGNMENT == 0));
    for p in blocks {
        heap.free(p).unwrap();
    }
}

#[test]
fn large_blocks_get_a_reservation_of_their_own_and_give_it_back() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let size = 3 << 20;
    let p = heap.alloc(size, TASK).unwrap();
    assert_eq!(p % 0x10000, 0);
    fill(p, size, 9);
    let mbi = m.virtual_query(p).unwrap();
    assert_eq!(mbi.allocation_base, p);
    assert_eq!(mbi.state, MemoryState::COMMIT);
    assert_eq!(mbi.region_size, size);
    assert_eq!(m.statistics().committed_bytes, size);
    assert_eq!(heap.usage().large_blocks, 1);
    assert!(intact(p, size, 9));
    heap.free(p).unwrap();
    assert_eq!(m.statistics().regions, 0);
    assert_eq!(m.virtual_query(p).unwrap().state, MemoryState::FREE);
    // More than the address space can hold.
    assert_eq!(
        hr(heap.alloc(usize::MAX - 0xFFFF, TASK)),
        HResult::E_OUTOFMEMORY
    );
    assert_eq!(hr(heap.alloc(1 << 62, TASK)), HResult::E_OUTOFMEMORY);
}

#[test]
fn frees_of_pointers_the_heap_did_not_hand_out_change_nothing() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let other = m.create_malloc(TS).unwrap();
    let sizes = [16, 24, 100, 1000, 4000, 16384, 40_000];
    let ours: Vec<(usize, usize)> = sizes
        .iter()
        .map(|&s| {
            let p = heap.alloc(s, TASK).unwrap();
            fill(p, s, p ^ 1);
            (p, s)
        })
        .collect();
    let theirs: Vec<(usize, usize)> = sizes
        .iter()
        .map(|&s| {
            let p = other.alloc(s, TASK).unwrap();
            fill(p, s, p ^ 2);
            (p, s)
        })
        .collect();
    let boxed = Box::new([0x5Au8; 64]);
    let stack = [0xA5u8; 64];
    let c_heap = Vec::<u8>::with_capacity(256);
    let before = m.statistics();

    let mut foreign: Vec<usize> = theirs.iter().map(|&(p, _)| p).collect();
    foreign.extend([
        boxed.as_ptr() as usize,
        stack.as_ptr() as usize,
        c_heap.as_ptr() as usize,
        1,
        16,
        0x10000,
        usize::MAX & !15,
    ]);
    for &(p, s) in &ours {
        // Interior pointers: every 16-byte step inside the block, and the
        // unaligned ones just after its start.
        foreign.extend((16..s.min(4096)).step_by(16).map(|o| p + o));
        foreign.extend([p + 1, p + 8, p + 15]);
    }
    // Inside the heap's chunk but in a slab never committed.
    foreign.push(ours[0].0 + 40 * SLAB);
    for &p in &foreign {
        assert_eq!(heap.free(p), Err(HostError::NotHostMemory), "{p:#x}");
        assert_eq!(hr(heap.free(p)), HResult::HOST_E_INVALIDOPERATION);
    }
    assert_eq!(*boxed, [0x5A; 64]);
    assert_eq!(stack, [0xA5; 64]);
    for &(p, s) in &ours {
        assert!(intact(p, s, p ^ 1));
    }
    for &(p, s) in &theirs {
        assert!(intact(p, s, p ^ 2));
    }
    let after = m.statistics();
    assert_eq!(
        (after.regions, after.committed_bytes),
        (before.regions, before.committed_bytes)
    );

    // Double frees, small and large, on a thread-safe and a single heap.
    for &(p, _) in &ours {
        heap.free(p).unwrap();
        assert_eq!(heap.free(p), Err(HostError::NotHostMemory));
    }
    let single = m.create_malloc(MallocType::empty()).unwrap();
    let p = single.alloc(48, TASK).unwrap();
    single.free(p).unwrap();
    assert_eq!(single.free(p), Err(HostError::NotHostMemory));
    // The refused frees corrupted no list: every block comes out once.
    let again: Vec<usize> = (0..5000)
        .map(|i| heap.alloc(sizes[i % 5], TASK).unwrap())
        .collect();
    let distinct: HashSet<usize> = again.iter().copied().collect();
    assert_eq!(distinct.len(), again.len());
    // The other heap's blocks are still its own.
    for &(p, s) in &theirs {
        assert!(intact(p, s, p ^ 2));
        other.free(p).unwrap();
    }
    drop(c_heap);
}

#[test]
fn a_heap_without_threadsafe_serves_threads_in_turn() {
    // "Not thread-safe" means the runtime serialises its calls, from
    // whichever threads it likes: each thread in turn allocates, frees the
    // previous thread's blocks and reads them intact.
    let m = manager();
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let small = heap.alloc(200, TASK).unwrap();
    let large = heap.alloc(100_000, TASK).unwrap();
    let debug = heap.debug_alloc(64, TASK, Some(c"turns.cpp"), 3).unwrap();
    fill(small, 200, 1);
    fill(large, 100_000, 2);
    let mut handed = vec![small, large, debug];
    for turn in 0..2usize {
        handed = std::thread::spawn({
            let heap = heap.clone();
            move || {
                assert!(intact(handed[0], 200, 1 + turn));
                assert!(intact(handed[1], 100_000, 2 + turn));
                for p in handed {
                    assert_eq!(heap.free(p), Ok(()), "turn {turn}: free");
                }
                let small = heap.alloc(200, TASK).unwrap();
                let large = heap.alloc(100_000, TASK).unwrap();
                let debug = heap.debug_alloc(64, TASK, Some(c"turns.cpp"), 9).unwrap();
                fill(small, 200, 2 + turn);
                fill(large, 100_000, 3 + turn);
                vec![small, large, debug]
            }
        })
        .join()
        .unwrap();
    }
    assert_eq!(heap.leak_report().count(), 1);
    for p in handed {
        heap.free(p).unwrap();
    }
    assert_eq!(heap.leak_report().count(), 0);
    let failures = m.statistics().failures;
    assert!(
        !failures
            .keys()
            .any(|(_, hr)| *hr == HResult::HOST_E_NOT_OWNER),
        "no call was refused: {failures:?}"
    );
}

#[test]
fn a_single_thread_heap_reuses_blocks_another_thread_freed() {
    let m = manager();
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let blocks: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            let blocks: Vec<usize> = (0..100).map(|_| heap.alloc(32, TASK).unwrap()).collect();
            for &p in &blocks[50..] {
                heap.free(p).unwrap();
            }
            blocks[..50].to_vec()
        })
        .join()
        .unwrap()
    });
    let committed = m.statistics().committed_bytes;
    // This thread frees the first thread's blocks and reuses them and the
    // blocks that thread gave back at its exit.
    for p in blocks {
        heap.free(p).unwrap();
    }
    for _ in 0..100 {
        heap.alloc(32, TASK).unwrap();
    }
    assert_eq!(m.statistics().committed_bytes, committed);
}

#[test]
fn four_threads_hammering_one_heap_keep_every_block_intact() {
    const THREADS: usize = 4;
    const STEPS: usize = 40_000;
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    // Blocks handed between threads, freed by another thread than their
    // allocator's.
    let exchange: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());
    let checked = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (heap, exchange, checked, barrier) = (&heap, &exchange, &checked, &barrier);
            s.spawn(move || {
                let mut rng = 0x9E37_79B9u64.wrapping_mul(t as u64 + 1) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as usize
                };
                let mut live: Vec<(usize, usize, usize)> = Vec::new();
                barrier.wait();
                for step in 0..STEPS {
                    let r = next();
                    if live.len() < 300 && r % 3 != 0 {
                        let size = match r % 100 {
                            0 => 16_385 + r % 50_000,
                            1..=9 => 1025 + r % (SMALL_MAX - 1024),
                            _ => r % 1025,
                        };
                        let p = heap.alloc(size, TASK).unwrap();
                        assert_eq!(p % ALIGNMENT, 0);
                        let seed = t << 32 | step;
                        fill(p, size, seed);
                        live.push((p, size, seed));
                    } else if !live.is_empty() {
                        let (p, size, seed) = live.swap_remove(r % live.len());
                        if r % 7 == 0 {
                            exchange.lock().push((p, size, seed));
                            continue;
                        }
                        assert!(intact(p, size, seed), "thread {t}: block {p:#x} corrupted");
                        checked.fetch_add(1, Ordering::Relaxed);
                        heap.free(p).unwrap();
                    }
                    if r % 64 == 0 {
                        let taken = exchange.lock().pop();
                        if let Some((p, size, seed)) = taken {
                            assert!(intact(p, size, seed), "exchanged block {p:#x} corrupted");
                            checked.fetch_add(1, Ordering::Relaxed);
                            heap.free(p).unwrap();
                        }
                    }
                }
                for (p, size, seed) in live {
                    assert!(intact(p, size, seed));
                    heap.free(p).unwrap();
                }
            });
        }
    });
    for (p, size, seed) in exchange.into_inner() {
        assert!(intact(p, size, seed));
        heap.free(p).unwrap();
    }
    assert!(checked.load(Ordering::Relaxed) > THREADS * STEPS / 4);
    assert_eq!(heap.usage().large_blocks, 0);
    assert!(m.statistics().failures.is_empty());
    drop(heap);
    assert_eq!(m.statistics().regions, 0);
}

#[test]
fn blocks_a_thread_gives_back_at_exit_are_reused() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    // Joined explicitly: a scope's end does not wait for the threads'
    // thread-local destructors, a join does.
    std::thread::scope(|s| {
        s.spawn(|| {
            let blocks: Vec<usize> = (0..2000).map(|_| heap.alloc(64, TASK).unwrap()).collect();
            for p in blocks {
                heap.free(p).unwrap();
            }
        })
        .join()
        .unwrap();
    });
    let committed = m.statistics().committed_bytes;
    let blocks: Vec<usize> = (0..2000).map(|_| heap.alloc(64, TASK).unwrap()).collect();
    assert_eq!(m.statistics().committed_bytes, committed);
    for p in blocks {
        heap.free(p).unwrap();
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn executable_heaps_run_generated_code() {
    let m = manager();
    let heap = m
        .create_malloc(MallocType::EXECUTABLE | MallocType::THREADSAFE)
        .unwrap();
    // mov eax, 42; ret
    let code = [0xB8u8, 0x2A, 0x00, 0x00, 0x00, 0xC3];
    let p = heap.alloc(code.len(), TASK).unwrap();
    // SAFETY: a live block of at least 6 bytes.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), p as *mut u8, code.len()) };
    assert_eq!(
        m.virtual_query(p).unwrap().protect,
        Protection::EXECUTE_READWRITE
    );
    // SAFETY: the block holds a complete function of this signature, in
    // executable memory.
    let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(p as *const u8) };
    assert_eq!(f(), 42);
    // Large executable blocks too.
    let big = heap.alloc(SMALL_MAX * 2, TASK).unwrap();
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), big as *mut u8, code.len()) };
    // SAFETY: as above.
    let g: extern "C" fn() -> i32 = unsafe { std::mem::transmute(big as *const u8) };
    assert_eq!(g(), 42);
    heap.free(p).unwrap();
    heap.free(big).unwrap();
}

#[test]
fn executable_heaps_are_execute_read_write_and_others_read_write() {
    let m = manager();
    for (flags, protect) in [
        (MallocType::empty(), Protection::READWRITE),
        (MallocType::EXECUTABLE, Protection::EXECUTE_READWRITE),
    ] {
        let heap = m.create_malloc(flags).unwrap();
        for size in [16, 100_000] {
            let p = heap.alloc(size, TASK).unwrap();
            let mbi = m.virtual_query(p).unwrap();
            assert_eq!((mbi.protect, mbi.allocation_protect), (protect, protect));
            heap.free(p).unwrap();
        }
    }
}

#[test]
fn the_budget_refuses_heap_allocations() {
    let budget = 16 * SLAB;
    let m = budgeted(budget);
    let heap = m.create_malloc(TS).unwrap();
    // A large block beyond the budget.
    assert_eq!(hr(heap.alloc(budget + 1, PROCESS)), HResult::E_OUTOFMEMORY);
    assert_eq!(heap.alloc(budget + 1, PROCESS), Err(HostError::OverBudget));
    // Small blocks until a slab commit is refused at task level (90 %).
    let mut blocks = Vec::new();
    let refused = loop {
        match heap.alloc(1024, TASK) {
            Ok(p) => blocks.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(refused, HostError::OverBudget);
    assert_eq!(refused.hresult(), HResult::E_OUTOFMEMORY);
    let committed = m.statistics().committed_bytes;
    assert_eq!(committed, 14 * SLAB, "floor(90 % of 16 slabs)");
    assert_eq!(blocks.len(), 14 * 64);
    // A more critical request may go further.
    blocks.push(heap.alloc(1024, PROCESS).unwrap());
    assert_eq!(m.statistics().committed_bytes, 15 * SLAB);
    // What is freed can be allocated again without the budget.
    for p in blocks.drain(..10) {
        heap.free(p).unwrap();
    }
    for _ in 0..10 {
        blocks.push(heap.alloc(1010, TASK).unwrap());
    }
    assert_eq!(
        m.statistics().failures[&(Method::MallocAlloc, HResult::E_OUTOFMEMORY)],
        3
    );
    drop(heap);
    assert_eq!(m.statistics().committed_bytes, 0);
}

#[test]
fn heap_memory_is_in_the_statistics_and_virtual_query_and_goes_with_the_heap() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let small = heap.alloc(100, TASK).unwrap();
    let large = heap.alloc(SMALL_MAX + 1, TASK).unwrap();
    let stats = m.statistics();
    assert_eq!(stats.regions, 2);
    assert_eq!(stats.committed_bytes, SLAB + 20 * 1024);
    assert!(stats.reserved_bytes >= 4 << 20);
    // The pages are the heap's calls, not the runtime's VirtualAlloc.
    assert_eq!(stats.calls.get(&Method::VirtualAlloc), None);
    assert_eq!(stats.calls[&Method::MallocAlloc], 2);
    let mbi = m.virtual_query(small).unwrap();
    assert_eq!(mbi.state, MemoryState::COMMIT);
    assert_eq!(mbi.type_, MemoryType::PRIVATE);
    assert_eq!(mbi.protect, Protection::READWRITE);
    assert!(mbi.allocation_base <= small && small < mbi.base_address + mbi.region_size);
    assert!(m.owns(small) && m.owns(large));
    let usage = heap.usage();
    assert_eq!(
        (usage.chunks, usage.slab_committed_bytes, usage.large_blocks),
        (1, SLAB, 1)
    );
    heap.free(small).unwrap();
    heap.free(large).unwrap();
    assert_eq!(m.statistics().calls[&Method::MallocFree], 2);
    // Freed small blocks stay in the heap until it goes.
    assert_eq!(m.statistics().committed_bytes, SLAB);
    let base = mbi.allocation_base;
    let live = heap.alloc(50, TASK).unwrap();
    drop(heap);
    let stats = m.statistics();
    assert_eq!(
        (stats.regions, stats.reserved_bytes, stats.committed_bytes),
        (0, 0, 0)
    );
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::FREE);
    assert!(!m.owns(live));
}

#[test]
fn leak_report_lists_live_debug_allocations_by_call_site() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let mut a: Vec<usize> = (0..5)
        .map(|_| heap.debug_alloc(100, TASK, Some(c"gc.cpp"), 120).unwrap())
        .collect();
    let b = heap.debug_alloc(40_000, TASK, Some(c"jit.cpp"), 7).unwrap();
    let c = heap.debug_alloc(0, TASK, None, 0).unwrap();
    let plain = heap.alloc(100, TASK).unwrap();
    for &p in &a {
        fill(p, 100, p);
    }
    let report = heap.leak_report();
    assert_eq!((report.count(), report.bytes()), (7, 500 + 40_000));
    let gc = report.site(Some("gc.cpp"), 120).unwrap();
    assert_eq!((gc.count, gc.bytes), (5, 500));
    let jit = report.site(Some("jit.cpp"), 7).unwrap();
    assert_eq!((jit.count, jit.bytes), (1, 40_000));
    assert_eq!(report.site(None, 0).unwrap().count, 1);
    assert_eq!(report.sites[0].file.as_deref(), Some("jit.cpp"));
    assert!(report.to_string().contains("gc.cpp:120"));
    // The manager's report covers all its heaps.
    let other = m.create_malloc(MallocType::empty()).unwrap();
    let o = other.debug_alloc(10, TASK, Some(c"gc.cpp"), 120).unwrap();
    let all = m.leak_report();
    assert_eq!(all.site(Some("gc.cpp"), 120).unwrap().count, 6);
    assert_eq!(all.count(), 8);
    assert!(
        manager().leak_report().is_empty(),
        "another manager's heaps are not counted"
    );
    // Frees take allocations off the report; a double free is refused.
    for p in a.drain(..3) {
        assert!(intact(p, 100, p));
        heap.free(p).unwrap();
        assert_eq!(heap.free(p), Err(HostError::NotHostMemory));
    }
    heap.free(b).unwrap();
    assert_eq!(heap.free(b), Err(HostError::NotHostMemory));
    assert_eq!(heap.free(c + 16), Err(HostError::NotHostMemory));
    let report = heap.leak_report();
    assert_eq!(report.site(Some("gc.cpp"), 120).unwrap().count, 2);
    assert!(report.site(Some("jit.cpp"), 7).is_none());
    assert_eq!(heap.usage().debug_blocks, 3);
    assert_eq!(m.statistics().calls[&Method::MallocDebugAlloc], 8);
    drop(other);
    assert_eq!(m.leak_report().count(), 3);
    let _ = (o, plain);
}

#[test]
fn the_runtime_may_use_a_heap_from_its_memory_notification() {
    struct UsesHeap {
        heap: Mutex<Option<Arc<HostMalloc>>>,
        calls: AtomicUsize,
    }
    impl MemoryNotificationCallback for UsesHeap {
        fn on_memory_notification(&self, _state: MemoryAvailable) {
            let heap = self.heap.lock().clone();
            if let Some(heap) = heap {
                // Commits a slab of another class: the manager again.
                let p = heap.alloc(4000, PROCESS).unwrap();
                heap.free(p).unwrap();
                let d = heap.debug_alloc(8, PROCESS, None, 1).unwrap();
                heap.free(d).unwrap();
                self.calls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for flags in [TS, MallocType::empty()] {
        let m = budgeted(20 * SLAB);
        let heap = m.create_malloc(flags).unwrap();
        let callback = Arc::new(UsesHeap {
            heap: Mutex::new(Some(heap.clone())),
            calls: AtomicUsize::new(0),
        });
        m.register_memory_notification(Some(callback.clone()))
            .unwrap();
        // Fill the budget past the low-memory threshold (90 %) slab by slab.
        let mut blocks = Vec::new();
        while m.statistics().committed_bytes < 19 * SLAB {
            blocks.push(heap.alloc(1024, PROCESS).unwrap());
        }
        assert!(callback.calls.load(Ordering::Relaxed) >= 1);
        assert!(!m.has_failed());
        for p in blocks {
            heap.free(p).unwrap();
        }
        *callback.heap.lock() = None;
        m.register_memory_notification(None).unwrap();
    }
}

#[test]
fn after_shutdown_heap_calls_answer_clr_not_available() {
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let p = heap.alloc(64, TASK).unwrap();
    m.shutdown();
    assert_eq!(hr(heap.alloc(64, TASK)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(hr(heap.free(p)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(
        hr(m.create_malloc(MallocType::empty())),
        HResult::HOST_E_CLRNOTAVAILABLE
    );
    drop(heap);
    assert_eq!(m.statistics().regions, 0);
}

#[test]
fn call_statistics_are_exact_whichever_path_a_call_takes() {
    let m = manager();
    let heaps: Vec<Arc<HostMalloc>> = (0..6)
        .map(|i| {
            m.create_malloc(if i % 2 == 0 { TS } else { MallocType::empty() })
                .unwrap()
        })
        .collect();
    let safe: Vec<Arc<HostMalloc>> = heaps.iter().step_by(2).cloned().collect();
    // Six heaps in turn on one thread (more than a thread keeps at hand),
    // and the thread-safe ones on three more threads.
    let mut blocks = Vec::new();
    for round in 0..300 {
        for heap in &heaps {
            let p = heap.alloc(round % 300, TASK).unwrap();
            fill(p, round % 300, p);
            blocks.push((heap.clone(), p, round % 300));
        }
    }
    std::thread::scope(|s| {
        for t in 0..3 {
            let safe = &safe;
            s.spawn(move || {
                for i in 0..1000 {
                    let heap = &safe[(i + t) % safe.len()];
                    let p = heap.alloc(i % 700, TASK).unwrap();
                    heap.free(p).unwrap();
                }
            });
        }
    });
    for (heap, p, size) in blocks.drain(..) {
        assert!(intact(p, size, p));
        heap.free(p).unwrap();
    }
    let stats = m.statistics();
    assert_eq!(stats.calls[&Method::MallocAlloc], 1800 + 3000);
    assert_eq!(stats.calls[&Method::MallocFree], 1800 + 3000);
    // The counts outlive the heaps.
    drop(heaps);
    drop(safe);
    let stats = m.statistics();
    assert_eq!(
        (
            stats.calls[&Method::MallocAlloc],
            stats.calls[&Method::MallocFree],
            stats.regions
        ),
        (4800, 4800, 0)
    );
    assert!(stats.failures.is_empty());
}

#[test]
fn a_thread_using_many_heaps_gives_each_its_blocks_back_at_exit() {
    let m = manager();
    let heaps: Vec<Arc<HostMalloc>> = (0..7).map(|_| m.create_malloc(TS).unwrap()).collect();
    std::thread::spawn({
        let heaps = heaps.clone();
        move || {
            for round in 0..50 {
                for heap in &heaps {
                    let p = heap.alloc(48 + round, TASK).unwrap();
                    heap.free(p).unwrap();
                }
            }
            let blocks: Vec<(usize, usize)> = heaps
                .iter()
                .enumerate()
                .flat_map(|(i, h)| (0..500).map(move |_| (i, h.alloc(100, TASK).unwrap())))
                .collect();
            for (i, p) in blocks {
                heaps[i].free(p).unwrap();
            }
        }
    })
    .join()
    .unwrap();
    let committed = m.statistics().committed_bytes;
    for heap in &heaps {
        let blocks: Vec<usize> = (0..500).map(|_| heap.alloc(100, TASK).unwrap()).collect();
        for p in blocks {
            heap.free(p).unwrap();
        }
    }
    assert_eq!(m.statistics().committed_bytes, committed);
}

#[test]
fn a_thread_that_only_frees_caches_what_it_frees() {
    // A producer allocates, a consumer frees: the consumer's frees go to
    // its own cache (and from there back to the heap's shared lists), so
    // the producer keeps reusing memory instead of committing more.
    let m = manager();
    let heap = m.create_malloc(TS).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let consumer = std::thread::spawn({
        let heap = heap.clone();
        move || {
            for batch in rx {
                for p in batch {
                    heap.free(p).unwrap();
                }
            }
        }
    });
    for _ in 0..200 {
        let batch: Vec<usize> = (0..500)
            .map(|i| heap.alloc(16 + i % 200, TASK).unwrap())
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    consumer.join().unwrap();
    // 100 000 blocks went through; far fewer were ever live at once.
    assert!(
        m.statistics().committed_bytes < 64 * SLAB,
        "{:?}",
        m.statistics()
    );
    let stats = m.statistics();
    assert_eq!(stats.calls[&Method::MallocFree], 100_000);
}

#[test]
fn after_a_catastrophic_failure_even_cached_blocks_are_refused() {
    let m = manager();
    for flags in [TS, MallocType::empty()] {
        let heap = m.create_malloc(flags).unwrap();
        let p = heap.alloc(32, TASK).unwrap();
        heap.free(p).unwrap();
        let q = heap.alloc(32, TASK).unwrap();
        assert_eq!(p, q, "served from the thread's cache");
        heap.free(q).unwrap();
        drop(heap);
    }
    let heap = m.create_malloc(TS).unwrap();
    let p = heap.alloc(32, TASK).unwrap();
    let cached = heap.alloc(32, TASK).unwrap();
    heap.free(cached).unwrap();
    // Another thread latches a failure (a face's panic boundary, say).
    std::thread::spawn({
        let m = m.clone();
        move || assert!(m.latch_failure())
    })
    .join()
    .unwrap();
    assert_eq!(hr(heap.alloc(32, TASK)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(hr(heap.free(p)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(
        m.statistics().failures[&(Method::MallocAlloc, HResult::HOST_E_CLRNOTAVAILABLE)],
        1
    );
}
