//! Call statistics: per-thread counters (no shared cache line on the
//! query path, nor on the common refusals, and no locked instruction for
//! a thread that has a slot of its own) and a map of the other failures by
//! method and HRESULT.

use super::HResult;
use crate::sync::thread_slot;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A hosting method, for statistics.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Method {
    /// `IHostMemoryManager::CreateMalloc`.
    CreateMalloc,
    /// `IHostMemoryManager::VirtualAlloc`.
    VirtualAlloc,
    /// `IHostMemoryManager::VirtualFree`.
    VirtualFree,
    /// `IHostMemoryManager::VirtualQuery`.
    VirtualQuery,
    /// `IHostMemoryManager::VirtualProtect`.
    VirtualProtect,
    /// `IHostMemoryManager::GetMemoryLoad`.
    GetMemoryLoad,
    /// `IHostMemoryManager::RegisterMemoryNotificationCallback`.
    RegisterMemoryNotificationCallback,
    /// `IHostMemoryManager::NeedsVirtualAddressSpace`.
    NeedsVirtualAddressSpace,
    /// `IHostMemoryManager::AcquiredVirtualAddressSpace`.
    AcquiredVirtualAddressSpace,
    /// `IHostMemoryManager::ReleasedVirtualAddressSpace`.
    ReleasedVirtualAddressSpace,
    /// `IHostMalloc::Alloc`.
    MallocAlloc,
    /// `IHostMalloc::DebugAlloc`.
    MallocDebugAlloc,
    /// `IHostMalloc::Free`.
    MallocFree,
    /// `IHostMemoryWriteWatch::GetWriteWatch` (hostmem's extension).
    GetWriteWatch,
    /// `IHostMemoryWriteWatch::ResetWriteWatch` (hostmem's extension).
    ResetWriteWatch,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 15] = [
        Self::CreateMalloc,
        Self::VirtualAlloc,
        Self::VirtualFree,
        Self::VirtualQuery,
        Self::VirtualProtect,
        Self::GetMemoryLoad,
        Self::RegisterMemoryNotificationCallback,
        Self::NeedsVirtualAddressSpace,
        Self::AcquiredVirtualAddressSpace,
        Self::ReleasedVirtualAddressSpace,
        Self::MallocAlloc,
        Self::MallocDebugAlloc,
        Self::MallocFree,
        Self::GetWriteWatch,
        Self::ResetWriteWatch,
    ];
}

const METHODS: usize = Method::ALL.len();
/// Slots a thread may hold alone, process-wide: it counts there with a
/// plain load and store (no other thread writes them).
const OWNED_SLOTS: usize = 16;
/// Slots the other threads share, counting with `fetch_add`.
const SHARED_SLOTS: usize = 4;
const SLOTS: usize = OWNED_SLOTS + SHARED_SLOTS;

/// Where the calling thread counts.
#[derive(Clone, Copy)]
enum Slot {
    /// A slot only this thread writes.
    Owned(usize),
    /// A slot other threads may write too.
    Shared(usize),
}

#[cfg(not(loom))]
mod claim {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// The owned slots held by a live thread, one bit each.
    static CLAIMED: AtomicU32 = AtomicU32::new(0);
    const _: () = assert!(super::OWNED_SLOTS <= 32);

    const UNASKED: usize = usize::MAX;
    const NONE: usize = usize::MAX - 1;

    /// A thread's owned slot, claimed at its first count and given back
    /// when the thread ends.
    struct Claim(Cell<usize>);

    impl Drop for Claim {
        fn drop(&mut self) {
            let slot = self.0.get();
            if slot < super::OWNED_SLOTS {
                // Release: the next holder's claim (Acquire) sees every
                // count this thread stored in the slot.
                CLAIMED.fetch_and(!(1 << slot), Ordering::Release);
            }
        }
    }

    thread_local! {
        static CLAIM: Claim = const { Claim(Cell::new(UNASKED)) };
    }

    fn claim() -> usize {
        let mut bits = CLAIMED.load(Ordering::Relaxed);
        loop {
            let free = !bits & ((1u64 << super::OWNED_SLOTS) - 1) as u32;
            if free == 0 {
                return NONE;
            }
            let slot = free.trailing_zeros() as usize;
            match CLAIMED.compare_exchange_weak(
                bits,
                bits | 1 << slot,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return slot,
                Err(now) => bits = now,
            }
        }
    }

    /// The calling thread's owned slot, if it holds or can claim one.
    #[inline]
    pub(super) fn owned() -> Option<usize> {
        CLAIM
            .try_with(|c| {
                let mut slot = c.0.get();
                if slot == UNASKED {
                    slot = claim();
                    c.0.set(slot);
                }
                slot
            })
            .ok()
            .filter(|&slot| slot < super::OWNED_SLOTS)
    }
}

#[cfg(loom)]
mod claim {
    /// Under loom every thread counts in a shared slot.
    pub(super) fn owned() -> Option<usize> {
        None
    }
}

#[inline]
fn slot() -> Slot {
    match claim::owned() {
        Some(i) => Slot::Owned(i),
        None => Slot::Shared(OWNED_SLOTS + thread_slot() % SHARED_SLOTS),
    }
}

/// Adds one to `counter` of `slot`.
#[inline]
fn bump(slot: Slot, counter: &AtomicU64) {
    match slot {
        // Only this thread writes the counter: no read-modify-write needed.
        Slot::Owned(_) => counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed),
        Slot::Shared(_) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Slot {
    fn index(self) -> usize {
        match self {
            Slot::Owned(i) | Slot::Shared(i) => i,
        }
    }
}

#[repr(align(128))]
#[derive(Default)]
struct SlotCounters([AtomicU64; METHODS]);

/// The failures a runtime meets in normal running (memory that is not
/// the host's, a bad argument, no memory), counted per thread slot like
/// calls: a refused call then writes no cache line that other threads
/// write. Other HRESULTs go to a map under a mutex.
const COMMON_FAILURES: usize = 5;

fn common_failures() -> [HResult; COMMON_FAILURES] {
    [
        HResult::HOST_E_INVALIDOPERATION,
        HResult::E_INVALIDARG,
        HResult::E_OUTOFMEMORY,
        HResult::from_win32(crate::win32::Win32Error::INVALID_ADDRESS),
        HResult::E_POINTER,
    ]
}

#[repr(align(128))]
#[derive(Default)]
struct SlotFailures([[AtomicU64; COMMON_FAILURES]; METHODS]);

/// Counters of calls and failures.
pub struct CallCounters {
    calls: Box<[SlotCounters]>,
    common: [HResult; COMMON_FAILURES],
    common_failures: Box<[SlotFailures]>,
    failures: Mutex<BTreeMap<(Method, HResult), u64>>,
}

impl Default for CallCounters {
    fn default() -> Self {
        Self {
            calls: (0..SLOTS).map(|_| SlotCounters::default()).collect(),
            common: common_failures(),
            common_failures: (0..SLOTS).map(|_| SlotFailures::default()).collect(),
            failures: Mutex::default(),
        }
    }
}

impl CallCounters {
    /// Counts a call of `method` on the calling thread's slot.
    #[inline]
    pub fn call(&self, method: Method) {
        let slot = slot();
        bump(slot, &self.calls[slot.index()].0[method as usize]);
    }

    /// Counts a failure.
    pub fn failure(&self, method: Method, hr: HResult) {
        match self.common.iter().position(|&c| c == hr) {
            Some(i) => {
                let slot = slot();
                bump(
                    slot,
                    &self.common_failures[slot.index()].0[method as usize][i],
                );
            }
            None => *self.failures.lock().entry((method, hr)).or_default() += 1,
        }
    }

    /// Calls by method.
    pub fn calls(&self) -> BTreeMap<Method, u64> {
        Method::ALL
            .iter()
            .map(|&m| {
                (
                    m,
                    self.calls
                        .iter()
                        .map(|s| s.0[m as usize].load(Ordering::Relaxed))
                        .sum(),
                )
            })
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    /// Failures by method and HRESULT.
    pub fn failures(&self) -> BTreeMap<(Method, HResult), u64> {
        let mut all = self.failures.lock().clone();
        for m in Method::ALL {
            for (i, &hr) in self.common.iter().enumerate() {
                let n: u64 = self
                    .common_failures
                    .iter()
                    .map(|s| s.0[m as usize][i].load(Ordering::Relaxed))
                    .sum();
                if n > 0 {
                    *all.entry((m, hr)).or_default() += n;
                }
            }
        }
        all
    }
}

/// A manager's statistics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Live reservations.
    pub regions: usize,
    /// Bytes reserved.
    pub reserved_bytes: usize,
    /// Bytes committed.
    pub committed_bytes: usize,
    /// The most bytes ever committed at once.
    pub peak_committed_bytes: usize,
    /// Bytes the runtime mapped by itself and reported as acquired.
    pub acquired_bytes: usize,
    /// Memory notifications delivered to the runtime.
    pub notifications_delivered: u64,
    /// Notifications whose callback panicked (each also counted as
    /// delivered; the panic hook reported it, and delivery went on).
    pub notification_panics: u64,
    /// Calls by method.
    pub calls: BTreeMap<Method, u64>,
    /// Failures by method and HRESULT.
    pub failures: BTreeMap<(Method, HResult), u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_from_every_thread_are_counted_common_or_not() {
        let c = CallCounters::default();
        let timeout = HResult::HOST_E_TIMEOUT;
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        c.failure(Method::VirtualFree, HResult::HOST_E_INVALIDOPERATION);
                    }
                    c.failure(Method::VirtualQuery, HResult::E_INVALIDARG);
                    c.failure(Method::VirtualAlloc, timeout);
                });
            }
        });
        let f = c.failures();
        assert_eq!(
            f.get(&(Method::VirtualFree, HResult::HOST_E_INVALIDOPERATION)),
            Some(&300)
        );
        assert_eq!(
            f.get(&(Method::VirtualQuery, HResult::E_INVALIDARG)),
            Some(&3)
        );
        assert_eq!(f.get(&(Method::VirtualAlloc, timeout)), Some(&3));
        assert_eq!(f.len(), 3, "nothing else: {f:?}");
    }

    #[test]
    fn counts_are_exact_with_more_threads_than_owned_slots_and_slots_reused() {
        const THREADS: usize = OWNED_SLOTS + 8;
        const EACH: u64 = 100_000;
        let c = CallCounters::default();
        // Two waves: in each, all threads live at once (some count in
        // shared slots, next to the owners'), and the second wave's
        // threads take over the slots the first wave's gave back.
        for _ in 0..2 {
            let start = std::sync::Barrier::new(THREADS);
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        start.wait();
                        for i in 0..EACH {
                            if i % 256 == 0 {
                                // Threads take turns: counts interleave.
                                std::thread::yield_now();
                            }
                            c.call(Method::VirtualQuery);
                            c.failure(Method::VirtualFree, HResult::HOST_E_INVALIDOPERATION);
                        }
                    });
                }
            });
        }
        let total = 2 * THREADS as u64 * EACH;
        assert_eq!(c.calls().get(&Method::VirtualQuery), Some(&total));
        assert_eq!(
            c.failures()
                .get(&(Method::VirtualFree, HResult::HOST_E_INVALIDOPERATION)),
            Some(&total)
        );
    }
}
