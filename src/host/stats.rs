//! Call statistics: per-thread-slot counters (no shared cache line on the
//! query path) and a map of failures by method and HRESULT.

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
const SLOTS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct SlotCounters([AtomicU64; METHODS]);

/// Counters of calls and failures.
pub struct CallCounters {
    calls: Box<[SlotCounters]>,
    failures: Mutex<BTreeMap<(Method, HResult), u64>>,
}

impl Default for CallCounters {
    fn default() -> Self {
        Self {
            calls: (0..SLOTS).map(|_| SlotCounters::default()).collect(),
            failures: Mutex::default(),
        }
    }
}

impl CallCounters {
    /// Counts a call of `method` on the calling thread's slot.
    pub fn call(&self, method: Method) {
        self.calls[thread_slot() % SLOTS].0[method as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure.
    pub fn failure(&self, method: Method, hr: HResult) {
        *self.failures.lock().entry((method, hr)).or_default() += 1;
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
        self.failures.lock().clone()
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
