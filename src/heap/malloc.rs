//! `HostMalloc`: one heap of `IHostMemoryManager::CreateMalloc`.
#![forbid(unsafe_code)]

use super::block::{self, FreeList};
use super::cache::{ThreadCache, at_hand, switch_to, thread_id, with_cache};
use super::class::{CLASS, CLASSES, SMALL_MAX, class_of};
use super::debug::{DebugRecords, LeakReport};
use super::flags::MallocType;
use super::pages::{Pages, PagesUsage};
use super::registry::{self, HeapCalls, Hit};
use crate::host::{HostError, HostMemoryManager, MemoryCriticalLevel, Method, StopWatcher};
use crate::sync::fork::{self, ForkLocks, Rank};
use crate::win32::{AllocationType, FreeType, Protection, Win32Error};
use parking_lot::Mutex;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// A block bigger than `SMALL_MAX`: a reservation of its own.
#[derive(Clone, Copy, Debug)]
struct LargeBlock {
    /// The bytes requested.
    size: usize,
    /// Whether `DebugAlloc` made it (its record is in the debug records).
    debug: bool,
}

/// What a heap holds, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapUsage {
    /// Chunks reserved for small blocks.
    pub chunks: usize,
    /// Bytes reserved by the chunks.
    pub chunk_reserved_bytes: usize,
    /// Bytes of committed 64 KiB slabs (free and allocated small blocks).
    pub slab_committed_bytes: usize,
    /// Live blocks with a reservation of their own.
    pub large_blocks: usize,
    /// Bytes requested by them.
    pub large_bytes: usize,
    /// Live `DebugAlloc` allocations.
    pub debug_blocks: usize,
    /// Bytes requested by them.
    pub debug_bytes: usize,
}

/// What `DebugAlloc` keeps: its own slabs' free lists and the records.
#[derive(Default)]
struct DebugHeap {
    lists: Vec<FreeList>,
    records: DebugRecords,
}

/// An `IHostMalloc` heap: fine-grained memory carved from 64 KiB slabs the
/// heap commits through its manager (so it counts in the manager's budget,
/// statistics and `VirtualQuery`), released when the last reference goes.
///
/// - Blocks are 16-byte aligned; a request of 0 bytes gets a pointer of its
///   own; requests above 16 KiB get a reservation of their own.
/// - `Free` refuses, with `HOST_E_INVALIDOPERATION` and without touching
///   anything, a pointer the heap did not hand out or already took back:
///   another heap's, the C heap's, the stack, an interior pointer, a
///   double free. Double frees are told by a cookie (`secret ^ address`,
///   with a random secret per heap) that free blocks carry in their second
///   word; a live block whose caller data happens to equal its cookie
///   (probability 2^-64) is refused too, and leaks: it is never handed
///   out twice.
/// - Every heap keeps a cache per thread. A heap without
///   `MALLOC_THREADSAFE` is one the runtime promises to call from one
///   thread at a time, not always the same thread: any thread may use it
///   in turn. A call that finds another thread's call inside such a heap
///   at the same moment (told by one atomic compare-exchange per call) is
///   `HOST_E_NOT_OWNER` and changes nothing.
/// - Every call runs under the manager's rules: counted, refused after a
///   catastrophic failure or shutdown, panics turned into `E_FAIL`.
pub struct HostMalloc {
    manager: Arc<HostMemoryManager>,
    malloc_type: MallocType,
    thread_safe: bool,
    id: u64,
    secret: usize,
    protect: Protection,
    /// The thread inside a heap without `MALLOC_THREADSAFE` (its
    /// `thread_id`), 0 if none (always 0 for a thread-safe heap).
    inside: AtomicU64,
    pages: Pages,
    /// Batches of free blocks per class, shared by the threads.
    central: Box<[Mutex<Vec<FreeList>>]>,
    large: Mutex<HashMap<usize, LargeBlock>>,
    debug: Mutex<DebugHeap>,
    /// The calls of the hit paths (which run outside `run_call`).
    calls: Arc<HeapCalls>,
    /// Whether the manager is running, as the hit paths see it: cleared by
    /// the manager when it fails or shuts down (see `StopWatcher`).
    running: AtomicBool,
    /// Whether the hit paths are open to any caller, with no busy flag
    /// first: `running` for a thread-safe heap, always false for another
    /// (one load for the hit paths, not two).
    hits_open: AtomicBool,
    myself: Weak<HostMalloc>,
}

impl HostMalloc {
    /// A heap of `malloc_type` (whose bits must be valid) over `manager`.
    pub(super) fn new(manager: Arc<HostMemoryManager>, malloc_type: MallocType) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // The low four bits of a block address are zero; setting them in
        // the secret keeps every cookie non-zero, unlike a cleared word.
        let secret = RandomState::new().hash_one((id, thread_id())) as usize | 0xF;
        let protect = if malloc_type.contains(MallocType::EXECUTABLE) {
            Protection::EXECUTE_READWRITE
        } else {
            Protection::READWRITE
        };
        let calls = Arc::new(HeapCalls::default());
        let heap = Arc::new_cyclic(|myself| Self {
            manager: manager.clone(),
            malloc_type,
            thread_safe: malloc_type.contains(MallocType::THREADSAFE),
            id,
            secret,
            protect,
            inside: AtomicU64::new(0),
            pages: Pages::new(protect),
            central: (0..CLASSES).map(|_| Mutex::default()).collect(),
            large: Mutex::default(),
            debug: Mutex::new(DebugHeap {
                lists: (0..CLASSES).map(|_| FreeList::EMPTY).collect(),
                records: DebugRecords::default(),
            }),
            calls: calls.clone(),
            running: AtomicBool::new(true),
            hits_open: AtomicBool::new(malloc_type.contains(MallocType::THREADSAFE)),
            myself: myself.clone(),
        });
        registry::register(&manager, &heap, calls);
        manager.watch_stop(Arc::downgrade(&heap) as Weak<dyn StopWatcher>);
        // A fork takes the heap's locks first (see `heap::fork`).
        fork::register(Rank::Heap, Arc::downgrade(&heap) as Weak<dyn ForkLocks>);
        heap
    }

    /// The heap's unique id (never reused in the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn weak(&self) -> Weak<HostMalloc> {
        self.myself.clone()
    }

    /// The `MALLOC_TYPE` the heap was created with.
    pub fn malloc_type(&self) -> MallocType {
        self.malloc_type
    }

    /// The manager the heap takes its pages from.
    pub fn manager(&self) -> &Arc<HostMemoryManager> {
        &self.manager
    }

    /// `IHostMalloc::Alloc(size, level, &p)`: a 16-byte-aligned block of at
    /// least `size` bytes (0: a pointer of its own). A request the budget
    /// refuses at `level` is `E_OUTOFMEMORY` (`OverBudget`), as is one the
    /// address space cannot hold.
    ///
    /// ```
    /// use hostmem::{HostConfig, HostError, HostMemoryManager, MallocType, MemoryCriticalLevel};
    ///
    /// let manager = HostMemoryManager::new(HostConfig {
    ///     budget_bytes: Some(1 << 20),
    ///     ..HostConfig::default()
    /// })?;
    /// let heap = manager.create_malloc(MallocType::THREADSAFE)?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// let block = heap.alloc(24, level)?;
    /// assert_eq!(block % 16, 0);
    /// // The block is the caller's to use through raw pointers.
    /// // SAFETY: a live block of at least 24 bytes.
    /// unsafe { std::ptr::write_bytes(block as *mut u8, 0xab, 24) };
    /// heap.free(block)?;
    /// // Larger than the budget: refused, nothing taken.
    /// assert_eq!(heap.alloc(2 << 20, level), Err(HostError::OverBudget));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn alloc(&self, size: usize, level: MemoryCriticalLevel) -> Result<usize, HostError> {
        match self.alloc_hit(size) {
            Some(block) => Ok(block),
            None => self.alloc_full(size, level),
        }
    }

    /// `Alloc`'s hit path, which the COM face also takes before its panic
    /// boundary: a block of `size` bytes from the calling thread's cache of
    /// this heap, counted in the statistics; `None` (nothing changed, no
    /// call counted) when the request is for the full path: the heap is
    /// not thread-safe (its calls take the busy flag first), the manager
    /// stopped, the request is large, or the cache is not at hand or has
    /// no block of the class. It takes no lock, makes no page call and has
    /// no panicking branch (every index is checked).
    #[inline(always)]
    pub(crate) fn alloc_hit(&self, size: usize) -> Option<usize> {
        if !self.hits_open.load(Ordering::Relaxed) {
            return None;
        }
        self.alloc_from_cache(size)
    }

    /// The hit path of `Alloc` for a caller entitled to the heap (a
    /// thread-safe heap, or one this thread is inside) that found the
    /// manager running.
    #[inline(always)]
    fn alloc_from_cache(&self, size: usize) -> Option<usize> {
        // It cannot fail or panic, so of the manager's call rules it needs
        // only the lifecycle check (the heap's copy of it) and the count
        // (kept by the heap, see `registry`); everything else runs under
        // `run_call`.
        if size > SMALL_MAX {
            return None;
        }
        // The cache first, the class after: fewer values live at once, so
        // the hit path fits in the registers a call may clobber.
        let cache = at_hand(self)?;
        let block = cache.pop(class_of(size))?;
        self.calls.count(cache.call_slot(), Hit::Alloc);
        Some(block)
    }

    /// `Alloc` when the hit path missed (or was not open to the caller):
    /// the busy flag of a non-thread-safe heap, then the manager's call
    /// rules.
    #[inline(never)]
    pub(crate) fn alloc_full(
        &self,
        size: usize,
        level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        if self.thread_safe {
            // The hit path looked only at the cache used last: another
            // heap's, maybe, with this heap's at hand too.
            if self.hits_open.load(Ordering::Relaxed)
                && switch_to(self)
                && let Some(block) = self.alloc_from_cache(size)
            {
                return Ok(block);
            }
            return self
                .manager
                .run_call(Method::MallocAlloc, || self.alloc_slow(size, level));
        }
        self.exclusive(Method::MallocAlloc, || {
            let hit = if self.running.load(Ordering::Relaxed) {
                switch_to(self);
                self.alloc_from_cache(size)
            } else {
                None
            };
            match hit {
                Some(block) => Ok(block),
                None => self
                    .manager
                    .run_call(Method::MallocAlloc, || self.alloc_slow(size, level)),
            }
        })
    }

    /// Runs `call` as the only call inside this non-thread-safe heap: if
    /// another thread's call is inside at this moment, the call is
    /// `HOST_E_NOT_OWNER` (under the manager's call rules: counted,
    /// `HOST_E_CLRNOTAVAILABLE` once the manager stopped) and changes
    /// nothing. A call nested in this thread's own (from a memory
    /// notification that call caused) is the same caller and goes ahead:
    /// the heap holds no lock or cache while its manager runs.
    #[inline(always)]
    fn exclusive<T>(
        &self,
        method: Method,
        call: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        /// Leaves the heap when the call ends, panicking or not.
        struct Inside<'a>(&'a AtomicU64);
        impl Drop for Inside<'_> {
            #[inline(always)]
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        let me = thread_id();
        match self
            .inside
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                let _inside = Inside(&self.inside);
                call()
            }
            Err(thread) if thread == me => call(),
            Err(_) => self.manager.run_call(method, || Err(HostError::NotOwner)),
        }
    }

    #[inline(never)]
    fn alloc_slow(&self, size: usize, level: MemoryCriticalLevel) -> Result<usize, HostError> {
        if size > SMALL_MAX {
            return self.alloc_large(size, level, None);
        }
        let class = class_of(size);
        match with_cache(self, |cache| cache.pop(class)) {
            Some(Some(block)) => Ok(block),
            Some(None) => self.refill(class, level, true),
            None => self.refill(class, level, false),
        }
    }

    /// `IHostMalloc::DebugAlloc(size, level, file, line, &p)`: as
    /// [`alloc`](Self::alloc), and remembers `file` and `line` until the
    /// block is freed (see [`leak_report`](Self::leak_report)). Debug
    /// blocks come from slabs of their own and take the heap's debug lock.
    pub fn debug_alloc(
        &self,
        size: usize,
        level: MemoryCriticalLevel,
        file: Option<&CStr>,
        line: i32,
    ) -> Result<usize, HostError> {
        if self.thread_safe {
            self.debug_alloc_entered(size, level, file, line)
        } else {
            self.exclusive(Method::MallocDebugAlloc, || {
                self.debug_alloc_entered(size, level, file, line)
            })
        }
    }

    fn debug_alloc_entered(
        &self,
        size: usize,
        level: MemoryCriticalLevel,
        file: Option<&CStr>,
        line: i32,
    ) -> Result<usize, HostError> {
        self.manager.run_call(Method::MallocDebugAlloc, || {
            if size > SMALL_MAX {
                return self.alloc_large(size, level, Some((file, line)));
            }
            let class = class_of(size);
            loop {
                {
                    let mut debug = self.debug.lock();
                    let debug = &mut *debug;
                    if let Some(block) = debug.lists[class].pop() {
                        debug.records.record(block, size, file, line);
                        return Ok(block);
                    }
                }
                // No lock held while the manager commits.
                let list = self
                    .pages
                    .new_slab(&self.manager, class, true, self.secret, level)?;
                self.debug.lock().lists[class].prepend(list);
            }
        })
    }

    /// `IHostMalloc::Free(p)`: gives back a block of this heap. NULL is
    /// fine; a pointer this heap did not hand out, or already took back, is
    /// `HOST_E_INVALIDOPERATION` (`NotHostMemory`) and changes nothing.
    ///
    /// ```
    /// use hostmem::{HostConfig, HostError, HostMemoryManager, MallocType, MemoryCriticalLevel};
    ///
    /// let manager = HostMemoryManager::new(HostConfig::default())?;
    /// let heap = manager.create_malloc(MallocType::empty())?;
    /// let block = heap.alloc(100, MemoryCriticalLevel::TaskCritical)?;
    /// heap.free(block)?;
    /// assert_eq!(heap.free(block), Err(HostError::NotHostMemory), "freed twice");
    /// assert_eq!(heap.free(block + 8), Err(HostError::NotHostMemory), "not a block");
    /// heap.free(0)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn free(&self, address: usize) -> Result<(), HostError> {
        if self.free_hit(address) {
            return Ok(());
        }
        self.free_full(address)
    }

    /// `Free`'s hit path, which the COM face also takes before its panic
    /// boundary: the block at `address` back to the calling thread's cache
    /// of this heap, counted in the statistics; false (nothing changed, no
    /// call counted) when the call is for the full path: the heap is not
    /// thread-safe, the manager stopped, `address` is NULL, not a small
    /// block of this heap handed out and not yet freed, or a debug block,
    /// or the cache is not at hand or full (the full path hands its surplus
    /// to the shared lists, under their lock). No lock, no page call, no
    /// panicking branch.
    #[inline(always)]
    pub(crate) fn free_hit(&self, address: usize) -> bool {
        self.hits_open.load(Ordering::Relaxed) && self.free_from_cache(address)
    }

    /// The hit path of `Free` for a caller entitled to the heap that found
    /// the manager running.
    #[inline(always)]
    fn free_from_cache(&self, address: usize) -> bool {
        if address == 0 {
            return false;
        }
        let Some(cache) = at_hand(self) else {
            return false;
        };
        let freed = self.cache_block(cache, address, false);
        if freed {
            self.calls.count(cache.call_slot(), Hit::Free);
        }
        freed
    }

    /// `Free` when the hit path missed (or was not open to the caller):
    /// the busy flag of a non-thread-safe heap, then the manager's call
    /// rules.
    #[inline(never)]
    pub(crate) fn free_full(&self, address: usize) -> Result<(), HostError> {
        if self.thread_safe || address == 0 {
            // As in `alloc_full`: this heap's cache may be at hand, not
            // used last.
            if self.hits_open.load(Ordering::Relaxed)
                && switch_to(self)
                && self.free_from_cache(address)
            {
                return Ok(());
            }
            return self
                .manager
                .run_call(Method::MallocFree, || self.free_slow(address));
        }
        self.exclusive(Method::MallocFree, || {
            if self.running.load(Ordering::Relaxed) && {
                switch_to(self);
                self.free_from_cache(address)
            } {
                return Ok(());
            }
            self.manager
                .run_call(Method::MallocFree, || self.free_slow(address))
        })
    }

    /// Puts the block at `address` in `cache` if it is a small block of this
    /// heap, allocated and not from `DebugAlloc`; false (nothing changed)
    /// otherwise. A cache past its limit hands a batch to the shared lists
    /// if `spill`, and refuses the block (false) if not.
    #[inline(always)]
    fn cache_block(&self, cache: &ThreadCache, address: usize, spill: bool) -> bool {
        let Some(at) = self.pages.locate(address, cache.chunk_hint()) else {
            return false;
        };
        // A debug block's `cache_class` is no cache's class: `len` tells
        // it with the bounds check it makes anyway.
        let class = at.cache_class;
        let limit = 2 * at.batch;
        match cache.len(class) {
            Some(len) if spill || len < limit => {}
            _ => return false,
        }
        let Some(block) = block::check_not_free(address, self.secret) else {
            return false;
        };
        let cached = cache.push(class, block, self.secret);
        // Tested on `spill` first: the hit path (which refused a full
        // cache above) then has no call out, and saves no register.
        if spill && cached > limit {
            self.spill(cache.split_off(class, at.batch), class);
        }
        true
    }

    /// Every `Free` the hit path did not take: NULL, the first call on a
    /// thread (its cache of the heap is not at hand yet), large and debug
    /// blocks, pointers that are not the heap's, and a thread with no
    /// cache (exiting).
    #[inline(never)]
    fn free_slow(&self, address: usize) -> Result<(), HostError> {
        if address == 0 {
            return Ok(());
        }
        if with_cache(self, |cache| self.cache_block(cache, address, true)) == Some(true) {
            return Ok(());
        }
        let Some(at) = self.pages.locate(address, &Cell::new(0)) else {
            return self.free_large(address);
        };
        if at.debug {
            return self.free_debug(address, at.class);
        }
        let block = block::check_not_free(address, self.secret).ok_or(HostError::NotHostMemory)?;
        let mut list = FreeList::EMPTY;
        list.push(block, self.secret);
        self.central[at.class].lock().push(list);
        Ok(())
    }

    /// A block of `class` when the thread's cache of it is empty (or the
    /// thread has no cache: `cached` false): a batch from the shared
    /// lists, or a new slab, of which the rest goes to the cache.
    #[cold]
    fn refill(
        &self,
        class: usize,
        level: MemoryCriticalLevel,
        cached: bool,
    ) -> Result<usize, HostError> {
        let batch = self.central[class].lock().pop();
        let mut list = match batch {
            Some(list) => list,
            None => {
                // No lock or cache borrowed while the manager commits.
                let mut slab =
                    self.pages
                        .new_slab(&self.manager, class, false, self.secret, level)?;
                // One batch for this thread, the rest for any thread.
                let batch = CLASS[class].batch;
                let mut rest = slab.split_off(batch);
                let mut shared = Vec::new();
                while !rest.is_empty() {
                    let next = rest.split_off(batch);
                    shared.push(std::mem::replace(&mut rest, next));
                }
                self.central[class].lock().extend(shared);
                slab
            }
        };
        let block = list.pop().expect("batches and slabs are never empty");
        if !list.is_empty() {
            let mut rest = Some(list);
            if cached {
                with_cache(self, |cache| {
                    cache.give(class, rest.take().unwrap_or_default())
                });
            }
            if let Some(rest) = rest {
                self.central[class].lock().push(rest);
            }
        }
        Ok(block)
    }

    /// Gives a thread cache's surplus of `class` to the shared lists.
    #[cold]
    #[inline(never)]
    fn spill(&self, blocks: FreeList, class: usize) {
        self.central[class].lock().push(blocks);
    }

    #[cold]
    fn free_debug(&self, address: usize, class: usize) -> Result<(), HostError> {
        let mut debug = self.debug.lock();
        let debug = &mut *debug;
        if !debug.records.is_live(address) {
            return Err(HostError::NotHostMemory);
        }
        // A live block whose second word equals its cookie: refused (and
        // leaked) like any other, see the type's docs.
        let block = block::check_not_free(address, self.secret).ok_or(HostError::NotHostMemory)?;
        debug.records.forget(address);
        debug.lists[class].push(block, self.secret);
        Ok(())
    }

    /// A block bigger than a slab's: its own reservation, committed.
    #[cold]
    fn alloc_large(
        &self,
        size: usize,
        level: MemoryCriticalLevel,
        debug: Option<(Option<&CStr>, i32)>,
    ) -> Result<usize, HostError> {
        // Larger than the user address space: no room, as a heap answers
        // (VirtualAlloc refuses such a size as an invalid parameter).
        if size > crate::engine::USER_ADDRESS_END {
            return Err(HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY));
        }
        let base = self.manager.alloc_pages(
            &super::KEY,
            0,
            size,
            AllocationType::RESERVE | AllocationType::COMMIT,
            self.protect,
            level,
        )?;
        self.large.lock().insert(
            base,
            LargeBlock {
                size,
                debug: debug.is_some(),
            },
        );
        if let Some((file, line)) = debug {
            self.debug.lock().records.record(base, size, file, line);
        }
        Ok(base)
    }

    #[cold]
    fn free_large(&self, address: usize) -> Result<(), HostError> {
        let block = self
            .large
            .lock()
            .remove(&address)
            .ok_or(HostError::NotHostMemory)?;
        if let Err(e) = self
            .manager
            .free_pages(&super::KEY, address, 0, FreeType::RELEASE)
        {
            self.large.lock().insert(address, block);
            return Err(e);
        }
        if block.debug {
            self.debug.lock().records.forget(address);
        }
        Ok(())
    }

    /// The (`Alloc`, `Free`) calls the hit paths counted so far (for
    /// tests that tell a hit from a call of the full path).
    #[cfg(test)]
    pub(crate) fn hit_calls(&self) -> (u64, u64) {
        self.calls.totals()
    }

    /// A counting slot for the calling thread's hit paths.
    pub(super) fn claim_call_slot(&self) -> u32 {
        self.calls.claim(thread_id())
    }

    /// A cache given back by an exiting thread: its lists go to the shared
    /// ones, whole (no heap memory is read), and its counting slot is free
    /// again.
    pub(super) fn adopt_thread_cache(
        &self,
        lists: Option<Box<[FreeList; CLASSES]>>,
        call_slot: u32,
    ) {
        self.calls.release(call_slot, thread_id());
        for (class, list) in lists.into_iter().flat_map(|l| *l).enumerate() {
            if !list.is_empty() {
                self.central[class].lock().push(list);
            }
        }
    }

    /// The live `DebugAlloc` allocations of this heap by call site, with
    /// counts and bytes. Any thread may ask, at any time.
    pub fn leak_report(&self) -> LeakReport {
        self.debug.lock().records.report()
    }

    /// What the heap holds at this moment.
    pub fn usage(&self) -> HeapUsage {
        let PagesUsage {
            chunks,
            reserved_bytes,
            committed_bytes,
        } = self.pages.usage();
        let (large_blocks, large_bytes) = {
            let large = self.large.lock();
            (large.len(), large.values().map(|b| b.size).sum())
        };
        let (debug_blocks, debug_bytes) = self.debug.lock().records.totals();
        HeapUsage {
            chunks,
            chunk_reserved_bytes: reserved_bytes,
            slab_committed_bytes: committed_bytes,
            large_blocks,
            large_bytes,
            debug_blocks,
            debug_bytes,
        }
    }

    /// Runs `f` on every lock of the heap, in one fixed order (for the
    /// fork handlers, see `heap::fork`).
    pub(super) fn for_each_lock(&self, mut f: impl FnMut(&dyn ForkLocks)) {
        for class in self.central.iter() {
            f(class);
        }
        f(&self.large);
        f(&self.debug);
        f(self.pages.arena());
    }

    /// Clears the mark of a call inside the heap: in a fork's child, where
    /// the thread that made it does not exist.
    pub(super) fn forget_call_inside(&self) {
        self.inside.store(0, Ordering::Relaxed);
    }

    /// The block size a request of `size` bytes gets (for statistics and
    /// tests): its class's, or `size` for blocks of their own.
    pub fn block_size(size: usize) -> usize {
        if size > SMALL_MAX {
            size
        } else {
            CLASS[class_of(size)].size as usize
        }
    }
}

/// The manager stopped: the hit paths step aside, and every call goes
/// through `run_call`, which answers `HOST_E_CLRNOTAVAILABLE`. The flag is
/// cleared before the call that stopped the manager returns, so any call
/// that follows it sees it.
impl StopWatcher for HostMalloc {
    fn stopped(&self) {
        self.hits_open.store(false, Ordering::Release);
        self.running.store(false, Ordering::Release);
    }
}

impl Drop for HostMalloc {
    fn drop(&mut self) {
        registry::retire(&self.manager, &self.calls);
        // No lock of the heap is held while the manager releases (it may
        // call the runtime back). Failures mean the manager released
        // everything already (shut down).
        for (&base, _) in self.large.get_mut().iter() {
            let _ = self
                .manager
                .free_pages(&super::KEY, base, 0, FreeType::RELEASE);
        }
        self.large.get_mut().clear();
        self.pages.release(&self.manager);
    }
}

impl std::fmt::Debug for HostMalloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMalloc")
            .field("id", &self.id)
            .field("malloc_type", &self.malloc_type)
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HResult;
    use std::sync::Barrier;

    const TASK: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;

    /// Marks the calling thread inside the heap, as a call in progress
    /// does, until dropped.
    struct HeldBusy<'a>(&'a HostMalloc);
    impl<'a> HeldBusy<'a> {
        fn hold(heap: &'a HostMalloc) -> Self {
            let entered =
                heap.inside
                    .compare_exchange(0, thread_id(), Ordering::Acquire, Ordering::Relaxed);
            assert!(entered.is_ok(), "no call inside");
            Self(heap)
        }
    }
    impl Drop for HeldBusy<'_> {
        fn drop(&mut self) {
            self.0.inside.store(0, Ordering::Release);
        }
    }

    /// A thread turning from one heap to another, both with their caches
    /// at hand, is served from the caches (counted as hits) though the
    /// inline hit path looks only at the cache used last; the counts stay
    /// exact.
    #[test]
    fn a_thread_alternating_between_heaps_is_served_from_their_caches() {
        let manager = Arc::new(HostMemoryManager::default());
        let a = manager.create_malloc(MallocType::THREADSAFE).unwrap();
        let b = manager.create_malloc(MallocType::THREADSAFE).unwrap();
        for heap in [&a, &b] {
            let block = heap.alloc(80, TASK).unwrap();
            heap.free(block).unwrap();
        }
        let hits = (a.hit_calls(), b.hit_calls());
        let calls = manager.statistics().calls;
        for _ in 0..10 {
            let x = a.alloc(80, TASK).unwrap();
            let y = b.alloc(80, TASK).unwrap();
            a.free(x).unwrap();
            b.free(y).unwrap();
        }
        assert_eq!(a.hit_calls(), (hits.0.0 + 10, hits.0.1 + 10));
        assert_eq!(b.hit_calls(), (hits.1.0 + 10, hits.1.1 + 10));
        let after = manager.statistics().calls;
        assert_eq!(
            after[&Method::MallocAlloc],
            calls[&Method::MallocAlloc] + 20
        );
        assert_eq!(after[&Method::MallocFree], calls[&Method::MallocFree] + 20);
    }

    /// One thread is inside a non-thread-safe heap (held busy, as in the
    /// middle of a call) when another calls it: that call is
    /// `HOST_E_NOT_OWNER`, counted, and changes nothing; once the first
    /// leaves, the other thread's calls succeed.
    #[test]
    fn a_call_meeting_another_inside_a_single_thread_heap_is_not_owner() {
        let manager = Arc::new(HostMemoryManager::default());
        let heap = manager.create_malloc(MallocType::empty()).unwrap();
        let small = heap.alloc(100, TASK).unwrap();
        let large = heap.alloc(100_000, TASK).unwrap();
        let usage = heap.usage();
        let committed = manager.statistics().committed_bytes;
        let (entered, leave) = (Barrier::new(2), Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                let held = HeldBusy::hold(&heap);
                entered.wait();
                leave.wait();
                drop(held);
            });
            entered.wait();
            assert_eq!(heap.alloc(16, TASK), Err(HostError::NotOwner));
            assert_eq!(heap.alloc(1 << 20, TASK), Err(HostError::NotOwner));
            assert_eq!(
                heap.debug_alloc(16, TASK, None, 1),
                Err(HostError::NotOwner)
            );
            assert_eq!(heap.free(small), Err(HostError::NotOwner));
            assert_eq!(heap.free(large), Err(HostError::NotOwner));
            assert_eq!(heap.free(0), Ok(()), "NULL is nothing to free");
            assert_eq!(heap.usage(), usage, "the refused calls changed nothing");
            assert_eq!(manager.statistics().committed_bytes, committed);
            leave.wait();
        });
        let failures = manager.statistics().failures;
        assert_eq!(
            failures[&(Method::MallocAlloc, HResult::HOST_E_NOT_OWNER)],
            2
        );
        assert_eq!(
            failures[&(Method::MallocFree, HResult::HOST_E_NOT_OWNER)],
            2
        );
        heap.free(small).unwrap();
        heap.free(large).unwrap();
        assert_eq!(heap.inside.load(Ordering::Relaxed), 0, "every call left");
    }
}
