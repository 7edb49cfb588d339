//! Per-thread caches: each thread keeps, for each heap it uses, a free
//! list per size class. `Alloc` and `Free` work on them with no lock and
//! no atomic read-modify-write. The caches trade batches with the heap's
//! shared lists (a lock per class) when they run dry or grow past their
//! limit.
//!
//! The caches of the last [`AT_HAND`] heaps a thread used sit in plain
//! thread-local cells (no destructor, so reaching them costs no state
//! check), tagged with the heap's unique id; the caches of other heaps
//! the thread used wait in a registry, which also holds each heap weakly.
//! When the thread exits, the registry's destructor hands each cache whose
//! heap is still alive back to it (lists move whole: no heap memory is
//! read). The caches of a heap that is gone are dropped unread.
//!
//! One `unsafe` block, in [`sets`]: reaching the thread's caches by
//! address, so that the hit paths inline to a thread-pointer-relative load.
#![allow(unsafe_code)]

use super::block::{FreeBlock, FreeList};
use super::class::CLASSES;
use super::malloc::HostMalloc;
use super::registry::SHARED_SLOT;
use std::cell::{Cell, RefCell};
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

/// Heaps whose caches a thread keeps at hand.
pub const AT_HAND: usize = 4;

/// One thread's cache of one heap.
pub struct ThreadCache {
    /// The heap's id; 0: unused.
    heap_id: Cell<u64>,
    /// The chunk the last `Free` found its block in.
    chunk_hint: Cell<usize>,
    /// The heap's counting slot this thread claimed.
    call_slot: Cell<u32>,
    lists: [Cell<FreeList>; CLASSES],
}

impl ThreadCache {
    const fn new() -> Self {
        Self {
            heap_id: Cell::new(0),
            chunk_hint: Cell::new(0),
            call_slot: Cell::new(SHARED_SLOT),
            lists: [const { Cell::new(FreeList::EMPTY) }; CLASSES],
        }
    }

    /// A block of `class` from the cache, if it has one (`None` for a
    /// class out of range, which no caller passes: the hit paths have no
    /// panicking branch).
    #[inline]
    pub fn pop(&self, class: usize) -> Option<usize> {
        FreeList::in_cell(self.lists.get(class)?, FreeList::pop)
    }

    /// How many blocks of `class` the cache holds (`None` for a class out
    /// of range, as in [`pop`](Self::pop)).
    #[inline]
    pub fn len(&self, class: usize) -> Option<u32> {
        Some(FreeList::in_cell(self.lists.get(class)?, |list| list.len()))
    }

    /// Puts a freed block of `class` in the cache; returns how many the
    /// cache then holds.
    #[inline]
    pub fn push(&self, class: usize, block: FreeBlock, secret: usize) -> u32 {
        FreeList::in_cell(&self.lists[class], |list| {
            list.push(block, secret);
            list.len()
        })
    }

    /// Keeps `keep` blocks of `class` and returns the rest.
    pub fn split_off(&self, class: usize, keep: u32) -> FreeList {
        let cell = &self.lists[class];
        let mut list = cell.take();
        let rest = list.split_off(keep);
        cell.set(list);
        rest
    }

    /// Adds `blocks` to the cache of `class`.
    pub fn give(&self, class: usize, blocks: FreeList) {
        let cell = &self.lists[class];
        let mut list = cell.take();
        list.prepend(blocks);
        cell.set(list);
    }

    /// The chunk hint `Free` starts from.
    #[inline]
    pub fn chunk_hint(&self) -> &Cell<usize> {
        &self.chunk_hint
    }

    /// The heap's counting slot this thread claimed.
    #[inline]
    pub fn call_slot(&self) -> u32 {
        self.call_slot.get()
    }

    fn take_lists(&self) -> Box<[FreeList; CLASSES]> {
        Box::new(std::array::from_fn(|class| self.lists[class].take()))
    }

    fn load(&self, entry: &mut Entry) {
        if let Some((saved, hint)) = entry.saved.take() {
            for (cell, list) in self.lists.iter().zip(*saved) {
                cell.set(list);
            }
            self.chunk_hint.set(hint);
        } else {
            self.chunk_hint.set(0);
        }
        self.call_slot.set(entry.call_slot);
        self.heap_id.set(entry.heap_id);
    }
}

/// The caches at hand and the one used last.
struct Sets {
    last: Cell<usize>,
    next_victim: Cell<usize>,
    sets: [ThreadCache; AT_HAND],
}

/// A heap this thread used: the heap, weakly, the counting slot the thread
/// claimed in it, and its cache while it is not at hand.
struct Entry {
    heap_id: u64,
    heap: Weak<HostMalloc>,
    call_slot: u32,
    saved: Option<(Box<[FreeList; CLASSES]>, usize)>,
}

/// Every heap the thread used.
struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    fn entry(&mut self, heap_id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.heap_id == heap_id)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The thread is exiting: every cache goes back to its heap.
        CACHES.with(|sets| {
            for set in &sets.sets {
                let id = set.heap_id.replace(0);
                if id != 0 {
                    let lists = set.take_lists();
                    if let Some(entry) = self.entry(id) {
                        entry.saved = Some((lists, 0));
                    }
                }
            }
        });
        for entry in self.entries.drain(..) {
            if let Some(heap) = entry.heap.upgrade() {
                let lists = entry.saved.map(|(lists, _)| lists);
                heap.adopt_thread_cache(lists, entry.call_slot);
            }
        }
    }
}

thread_local! {
    static CACHES: Sets = const {
        Sets {
            last: Cell::new(0),
            next_victim: Cell::new(0),
            sets: [const { ThreadCache::new() }; AT_HAND],
        }
    };
    static REGISTRY: RefCell<Registry> = const { RefCell::new(Registry { entries: Vec::new() }) };
    static THREAD_ID: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's caches, for a borrow the caller picks.
///
/// `LocalKey::with` wrapped around a hit path's whole body is too big to
/// be inlined, and out of line it reaches the thread-local through an
/// indirect call: a third of `Alloc`+`Free`'s instructions. Taking only
/// the address inlines to one load from the thread pointer, and handing
/// back a reference (not running a closure) keeps the hit paths in one
/// piece of straight code, with no call and no register to save.
#[inline(always)]
fn sets<'a>() -> &'a Sets {
    let sets: *const Sets = CACHES.with(std::ptr::from_ref);
    // SAFETY: `CACHES` is initialised in place (`const`) and has no
    // destructor, so its storage is valid, and stays put, from the
    // thread's start until the thread is gone; `sets` is its address on
    // this thread. `Sets` is not `Sync`, so the reference is not `Send`:
    // it cannot reach another thread, nor a `static`, so it is used only
    // on this thread while the thread exists. Shared access only: `Sets`
    // changes through `Cell`s, as it does under `LocalKey::with`.
    unsafe { &*sets }
}

/// A number for the calling thread, unique for the life of the process
/// (never 0, never reused), for the heaps' counting slots.
#[inline]
pub fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD_ID.with(|id| match id.get() {
        0 => {
            let new = NEXT.fetch_add(1, Ordering::Relaxed);
            id.set(new);
            new
        }
        known => known,
    })
}

/// The calling thread's cache of `heap` if it is the one used last (the
/// hit paths' test), else `None`.
///
/// All inline, with no call out and no search: a hit path that calls
/// nothing and keeps few values saves fewer registers. A thread that
/// turns to another heap whose cache is at hand finds it through
/// [`switch_to`], on the full path.
#[inline(always)]
pub fn at_hand(heap: &HostMalloc) -> Option<&ThreadCache> {
    let sets = sets();
    let set = sets.sets.get(sets.last.get() % AT_HAND)?;
    (set.heap_id.get() == heap.id()).then_some(set)
}

/// Makes `heap`'s cache the one used last if it is at hand but was not:
/// true if it did (the hit path may then be tried again).
#[inline]
pub fn switch_to(heap: &HostMalloc) -> bool {
    let sets = sets();
    let last = sets.last.get() % AT_HAND;
    match find_at_hand(sets, heap.id()) {
        Some(i) => i != last,
        None => false,
    }
}

/// The set of heap `id` among those at hand, made the last used.
#[cold]
#[inline(never)]
fn find_at_hand(sets: &Sets, id: u64) -> Option<usize> {
    let i = sets.sets.iter().position(|s| s.heap_id.get() == id)?;
    sets.last.set(i);
    Some(i)
}

/// Runs `f` on the calling thread's cache of `heap` (brought to hand if
/// needed), or returns `None` if the thread has no caches any more (it is
/// exiting); callers then use the heap's shared lists.
#[inline]
pub fn with_cache<R>(heap: &HostMalloc, f: impl FnOnce(&ThreadCache) -> R) -> Option<R> {
    CACHES.with(|sets| {
        let set = &sets.sets[sets.last.get() % AT_HAND];
        if set.heap_id.get() == heap.id() {
            return Some(f(set));
        }
        let i = bring_to_hand(sets, heap)?;
        Some(f(&sets.sets[i]))
    })
}

/// Finds `heap`'s cache among those at hand, or puts it there in place of
/// another (whose cache goes to the registry).
#[cold]
#[inline(never)]
fn bring_to_hand(sets: &Sets, heap: &HostMalloc) -> Option<usize> {
    let id = heap.id();
    if let Some(i) = find_at_hand(sets, id) {
        return Some(i);
    }
    REGISTRY
        .try_with(|registry| {
            let mut registry = registry.try_borrow_mut().ok()?;
            let victim = sets.next_victim.get() % AT_HAND;
            sets.next_victim.set(victim + 1);
            let set = &sets.sets[victim];
            let old = set.heap_id.replace(0);
            if old != 0 {
                let saved = (set.take_lists(), set.chunk_hint.get());
                if let Some(entry) = registry.entry(old) {
                    entry.saved = Some(saved);
                }
            }
            if registry.entry(id).is_none() {
                // Heaps that are gone: their caches point into released
                // memory and are dropped unread.
                registry.entries.retain(|e| e.heap.strong_count() > 0);
                registry.entries.push(Entry {
                    heap_id: id,
                    heap: heap.weak(),
                    call_slot: heap.claim_call_slot(),
                    saved: None,
                });
            }
            let entry = registry.entry(id)?;
            set.load(entry);
            sets.last.set(victim);
            Some(victim)
        })
        .ok()
        .flatten()
}
