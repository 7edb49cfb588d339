//! The heaps of each manager, process-wide: for the manager's leak report
//! and for its call statistics, which include the calls the heaps' hit
//! paths count themselves.
//!
//! Hit-path calls are counted per thread, exactly and without an atomic
//! read-modify-write: each thread that uses a heap claims one of the
//! heap's [`HeapCalls`] slots and is its only writer (a plain load and
//! store); the slot goes back when the thread exits, keeping its counts
//! for the next owner. When a heap goes, its counts move into its
//! manager's entry here, so the manager's statistics never lose them.
#![forbid(unsafe_code)]

use super::malloc::HostMalloc;
use crate::host::{HostMemoryManager, Method};
use crate::sync::fork::{self, Rank};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Threads that get a counting slot of their own in each heap; others
/// share one counter per method (with an atomic add).
const CALL_SLOTS: usize = 32;

/// A thread's counts of one heap's hit-path calls.
#[repr(align(64))]
#[derive(Default)]
struct CallSlot {
    /// The thread writing the counts; 0: none.
    owner: AtomicU64,
    alloc: AtomicU64,
    free: AtomicU64,
}

/// Which hit path a call took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// `IHostMalloc::Alloc` from the thread's cache.
    Alloc,
    /// `IHostMalloc::Free` to the thread's cache.
    Free,
}

/// The hit-path calls of one heap.
#[derive(Default)]
pub struct HeapCalls {
    slots: [CallSlot; CALL_SLOTS],
    shared: CallSlot,
}

/// The slot of a thread that found none free.
pub const SHARED_SLOT: u32 = u32::MAX;

impl HeapCalls {
    /// A slot for `thread` to count in, or [`SHARED_SLOT`].
    pub fn claim(&self, thread: u64) -> u32 {
        self.slots
            .iter()
            .position(|s| {
                s.owner
                    .compare_exchange(0, thread, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .map_or(SHARED_SLOT, |i| i as u32)
    }

    /// Gives `slot` back (its counts stay).
    pub fn release(&self, slot: u32, thread: u64) {
        if let Some(s) = self.slots.get(slot as usize) {
            let _ = s
                .owner
                .compare_exchange(thread, 0, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// Counts a call in `slot`, which the calling thread claimed.
    #[inline]
    pub fn count(&self, slot: u32, hit: Hit) {
        match self.slots.get(slot as usize) {
            Some(s) => {
                let c = match hit {
                    Hit::Alloc => &s.alloc,
                    Hit::Free => &s.free,
                };
                // The slot's only writer: no read-modify-write needed.
                c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            }
            None => {
                let c = match hit {
                    Hit::Alloc => &self.shared.alloc,
                    Hit::Free => &self.shared.free,
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (Alloc, Free) calls counted so far.
    pub fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .chain(std::iter::once(&self.shared))
            .fold((0, 0), |(a, f), s| {
                (
                    a + s.alloc.load(Ordering::Relaxed),
                    f + s.free.load(Ordering::Relaxed),
                )
            })
    }
}

/// One manager's heaps.
struct ManagerHeaps {
    /// Weak, so that the entry neither keeps the manager alive nor lets its
    /// address be reused while the entry exists.
    manager: Weak<HostMemoryManager>,
    heaps: Vec<(Weak<HostMalloc>, Arc<HeapCalls>)>,
    /// (Alloc, Free) hit-path calls of heaps that are gone.
    retired: (u64, u64),
}

static MANAGERS: Mutex<Vec<ManagerHeaps>> = Mutex::new(Vec::new());

fn is(entry: &ManagerHeaps, manager: &HostMemoryManager) -> bool {
    std::ptr::eq(entry.manager.as_ptr(), manager)
}

/// Registers a new heap of `manager`.
pub fn register(manager: &Arc<HostMemoryManager>, heap: &Arc<HostMalloc>, calls: Arc<HeapCalls>) {
    static FORK_SAFE: std::sync::Once = std::sync::Once::new();
    // A fork takes the list too, so that the child can use it.
    FORK_SAFE.call_once(|| fork::register_static(Rank::Registry, &MANAGERS));
    let mut managers = MANAGERS.lock();
    managers.retain(|m| m.manager.strong_count() > 0);
    let index = match managers.iter().position(|m| is(m, manager)) {
        Some(i) => i,
        None => {
            managers.push(ManagerHeaps {
                manager: Arc::downgrade(manager),
                heaps: Vec::new(),
                retired: (0, 0),
            });
            managers.len() - 1
        }
    };
    managers[index].heaps.push((Arc::downgrade(heap), calls));
}

/// Forgets a heap that is going, keeping its counts for its manager.
pub fn retire(manager: &HostMemoryManager, calls: &Arc<HeapCalls>) {
    let mut managers = MANAGERS.lock();
    if let Some(entry) = managers.iter_mut().find(|m| is(m, manager)) {
        entry.heaps.retain(|(_, c)| !Arc::ptr_eq(c, calls));
        let (alloc, free) = calls.totals();
        entry.retired.0 += alloc;
        entry.retired.1 += free;
    }
}

/// Every live heap of `manager`.
pub fn heaps_of(manager: &HostMemoryManager) -> Vec<Arc<HostMalloc>> {
    // Upgraded under the lock, dropped outside it: dropping the last
    // reference of a heap takes the lock.
    let managers = MANAGERS.lock();
    let heaps = managers
        .iter()
        .find(|m| is(m, manager))
        .map(|m| m.heaps.iter().filter_map(|(h, _)| h.upgrade()).collect())
        .unwrap_or_default();
    drop(managers);
    heaps
}

/// Adds the hit-path calls of `manager`'s heaps, live and gone, to `calls`
/// (the calls the manager counted itself).
pub fn add_hit_calls(manager: &HostMemoryManager, calls: &mut BTreeMap<Method, u64>) {
    let (alloc, free) = {
        let managers = MANAGERS.lock();
        let Some(entry) = managers.iter().find(|m| is(m, manager)) else {
            return;
        };
        entry
            .heaps
            .iter()
            .map(|(_, c)| c.totals())
            .fold(entry.retired, |(a, f), (a2, f2)| (a + a2, f + f2))
    };
    for (method, n) in [(Method::MallocAlloc, alloc), (Method::MallocFree, free)] {
        if n > 0 {
            *calls.entry(method).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_keep_their_counts() {
        let calls = HeapCalls::default();
        let a = calls.claim(1);
        let b = calls.claim(2);
        assert_ne!(a, b);
        calls.count(a, Hit::Alloc);
        calls.count(b, Hit::Free);
        calls.count(SHARED_SLOT, Hit::Alloc);
        assert_eq!(calls.totals(), (2, 1));
        calls.release(a, 1);
        assert_eq!(calls.claim(3), a, "a released slot is taken again");
        calls.count(a, Hit::Alloc);
        assert_eq!(calls.totals(), (3, 1));
        for t in 10..10 + CALL_SLOTS as u64 {
            calls.claim(t);
        }
        assert_eq!(calls.claim(99), SHARED_SLOT);
    }
}
