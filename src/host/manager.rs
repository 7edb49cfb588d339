//! `HostMemoryManager`: the Win32 engine under the hosting contract.

use super::budget::MemoryBudget;
use super::lifecycle::Lifecycle;
use super::load::{MachineMemory, MemoryLoad};
use super::notify::{MemoryNotificationCallback, Notifier, Thresholds, Watcher};
use super::stats::CallCounters;
use super::{HostConfig, HostError, Method, Statistics};
use crate::engine::{AddressSpace, PageRange, USER_ADDRESS_END, page_floor};
use crate::os::{OsBackend, UnixBackend};
use crate::sync::{LockError, ShardedLock};
use crate::trace::{Call, TraceSink, Traced, Tracer};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection, Win32Error};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `EMemoryCriticalLevel`: how bad it would be for the runtime if a request
/// failed — the host refuses the least critical first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
#[repr(u32)]
pub enum MemoryCriticalLevel {
    /// `eTaskCritical` (0): failing aborts a task.
    #[default]
    TaskCritical = 0,
    /// `eAppDomainCritical` (1): failing unloads an application domain.
    AppDomainCritical = 1,
    /// `eProcessCritical` (2): failing ends the process.
    ProcessCritical = 2,
}

impl MemoryCriticalLevel {
    /// From the enum's number; `None` for a value outside it.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::TaskCritical,
            1 => Self::AppDomainCritical,
            2 => Self::ProcessCritical,
            _ => return None,
        })
    }
}

type Space = AddressSpace<Box<dyn OsBackend>>;

/// What the manager's lock guards: the address space and the ranges the
/// runtime mapped by itself and reported.
struct HostState {
    space: Space,
    /// Start → size of each range reported by `AcquiredVirtualAddressSpace`.
    acquired: BTreeMap<usize, usize>,
    acquired_bytes: usize,
}

impl HostState {
    /// Bytes counted against the budget: committed pages (heaps' included)
    /// and the runtime's own reported mappings.
    fn used_bytes(&self) -> u64 {
        (self.space.totals().committed_bytes + self.acquired_bytes) as u64
    }

    fn overlaps_acquired(&self, start: usize, end: usize) -> bool {
        self.acquired
            .range(..end)
            .next_back()
            .is_some_and(|(&s, &n)| s + n > start)
    }
}

/// A host memory manager: every virtual-memory request of a runtime goes
/// through it. Safe to share between threads.
pub struct HostMemoryManager {
    state: ShardedLock<HostState>,
    lifecycle: Lifecycle,
    config: HostConfig,
    budget: Option<MemoryBudget>,
    counters: CallCounters,
    peak_committed: AtomicUsize,
    machine: MachineMemory,
    notifier: Arc<Notifier>,
    /// Set while a callback is registered: the write path reads only this.
    notifying: AtomicBool,
    watcher: Mutex<Option<Watcher>>,
    /// Records every call when tracing is on (`HOSTMEM_TRACE`, or
    /// [`with_trace`](Self::with_trace)); `None` costs one branch a call.
    tracer: Option<Tracer>,
}

/// Whether a `VirtualAlloc` works on existing pages (and so on memory that
/// must be the host's), rather than reserving new ones.
fn works_on_existing_pages(address: usize, kind: AllocationType) -> bool {
    let kind = kind.difference(AllocationType::TOP_DOWN);
    kind == AllocationType::RESET
        || kind == AllocationType::RESET_UNDO
        || (address != 0 && kind == AllocationType::COMMIT)
}

impl HostMemoryManager {
    /// A manager over the Linux kernel.
    pub fn new(config: HostConfig) -> Self {
        Self::with_backend(config, Box::new(UnixBackend))
    }

    /// A manager over any OS backend (tests inject failures this way).
    pub fn with_backend(config: HostConfig, os: Box<dyn OsBackend>) -> Self {
        let state = HostState {
            space: AddressSpace::with_backend(os),
            acquired: BTreeMap::new(),
            acquired_bytes: 0,
        };
        let thresholds = Thresholds {
            low_percent: config.low_memory_percent,
            high_percent: config.high_memory_percent,
        };
        let manager = Self {
            tracer: Tracer::from_env(&config),
            state: ShardedLock::with_default_shards(state),
            lifecycle: Lifecycle::default(),
            budget: config
                .budget_bytes
                .map(|b| MemoryBudget::new(b, config.critical_level_percent)),
            config,
            counters: CallCounters::default(),
            peak_committed: AtomicUsize::new(0),
            machine: MachineMemory::default(),
            notifier: Arc::new(Notifier::new(thresholds)),
            notifying: AtomicBool::new(false),
            watcher: Mutex::new(None),
        };
        if crate::os::check_page_size().is_err() {
            // Win32 pages cannot be emulated on this kernel: refuse every call.
            manager.lifecycle.fail();
        }
        manager
    }

    /// Reads the machine's load from the files under `root` instead of
    /// `/` (for tests with a fake cgroup or meminfo).
    pub fn with_machine_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.machine = MachineMemory::with_root(root);
        self
    }

    /// Records this manager's calls to `sink` (`None`: not at all),
    /// instead of to the `HOSTMEM_TRACE` file.
    pub fn with_trace(mut self, sink: Option<std::sync::Arc<TraceSink>>) -> Self {
        self.tracer = sink.map(|sink| Tracer::new(sink, &self.config));
        self
    }

    /// Runs `run`, recording `call` and its result when tracing is on.
    #[inline]
    fn traced<T: Traced>(
        &self,
        call: Call<usize>,
        run: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        match &self.tracer {
            None => run(),
            Some(tracer) => tracer.trace(call, run),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Runs one hosting call: refuses it once the manager is unusable,
    /// turns a panic into a catastrophic failure, latches catastrophic
    /// failures (the first answers E_FAIL, the rest HOST_E_CLRNOTAVAILABLE)
    /// and counts it.
    fn call<T>(
        &self,
        method: Method,
        f: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        self.counters.call(method);
        let result = if self.lifecycle.is_running() {
            catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(HostError::Catastrophic))
        } else {
            Err(HostError::Unavailable)
        };
        let result = match result {
            Err(HostError::Catastrophic) if !self.lifecycle.fail() => Err(HostError::Unavailable),
            Err(HostError::Abandoned) => {
                self.lifecycle.fail();
                Err(HostError::Abandoned)
            }
            other => other,
        };
        if let Err(e) = result {
            self.counters.failure(method, e.hresult());
        }
        result
    }

    fn lock_error(e: LockError) -> HostError {
        match e {
            LockError::Timeout => HostError::Timeout,
            LockError::Abandoned => HostError::Abandoned,
        }
    }

    fn read<T>(&self, f: impl FnOnce(&HostState) -> Result<T, HostError>) -> Result<T, HostError> {
        let state = self
            .state
            .read(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        if let Some(tracer) = &self.tracer {
            tracer.stamp();
        }
        f(&state)
    }

    /// Runs a change under the exclusive lock, then tells the notifier
    /// about the new load — queued under the lock, so loads arrive in the
    /// order they happened, and delivered after it is released.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut HostState) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let mut state = self
            .state
            .write(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        if let Some(tracer) = &self.tracer {
            tracer.stamp();
        }
        let result = f(&mut state);
        self.peak_committed
            .fetch_max(state.space.totals().committed_bytes, Ordering::Relaxed);
        if self.notifying.load(Ordering::Relaxed) {
            if let Some(budget) = self.budget {
                self.notifier.update(budget.load(state.used_bytes()));
                drop(state);
                self.notifier.deliver();
            } else if let Some(watcher) = self.watcher.lock().as_ref() {
                watcher.kick();
            }
        }
        result
    }

    /// The engine's failure, or `HOST_E_INVALIDOPERATION` where the address
    /// the call works on is not the host's.
    fn refuse_foreign(space: &Space, address: usize, e: Win32Error) -> HostError {
        if e == Win32Error::INVALID_ADDRESS && !space.owns(page_floor(address)) {
            HostError::NotHostMemory
        } else {
            HostError::from_engine(e)
        }
    }

    /// `IHostMemoryManager::VirtualAlloc`: `VirtualAlloc`'s semantics;
    /// committing or resetting memory the host did not allocate is
    /// `HOST_E_INVALIDOPERATION`; a commit the budget cannot take at
    /// `level` is `E_OUTOFMEMORY` and changes nothing.
    pub fn virtual_alloc(
        &self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        let call = Call::VirtualAlloc {
            heap: false,
            address,
            size,
            allocation_type,
            protect,
            level,
        };
        self.traced(call, || {
            self.call(Method::VirtualAlloc, || {
                self.commit_or_reserve(address, size, allocation_type, protect, level)
            })
        })
    }

    /// `VirtualAlloc` under the manager's rules, without counting a call
    /// of its own: for the crate's heaps, whose own call is counted (a
    /// trace records it as `Heap.VirtualAlloc`).
    pub(crate) fn alloc_pages(
        &self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        let call = Call::VirtualAlloc {
            heap: true,
            address,
            size,
            allocation_type,
            protect,
            level,
        };
        self.traced(call, || {
            self.commit_or_reserve(address, size, allocation_type, protect, level)
        })
    }

    fn commit_or_reserve(
        &self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        self.write(|state| {
            if let Some(budget) = self.budget {
                let cost = state.space.commit_cost(address, size, allocation_type) as u64;
                if cost > 0 && !budget.allows(state.used_bytes(), cost, level) {
                    return Err(HostError::OverBudget);
                }
            }
            let space = &mut state.space;
            space
                .virtual_alloc(address, size, allocation_type, protect)
                .map_err(|e| {
                    if works_on_existing_pages(address, allocation_type) {
                        Self::refuse_foreign(space, address, e)
                    } else {
                        HostError::from_engine(e)
                    }
                })
        })
    }

    /// `IHostMemoryManager::VirtualFree`: `VirtualFree`'s semantics; memory
    /// the host did not allocate (or already released) is
    /// `HOST_E_INVALIDOPERATION`.
    pub fn virtual_free(
        &self,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), HostError> {
        let call = Call::VirtualFree {
            heap: false,
            address,
            size,
            free_type,
        };
        self.traced(call, || {
            self.call(Method::VirtualFree, || {
                self.decommit_or_release(address, size, free_type)
            })
        })
    }

    /// `VirtualFree` under the manager's rules, without counting a call of
    /// its own (for the crate's heaps; a trace records it as
    /// `Heap.VirtualFree`).
    pub(crate) fn free_pages(
        &self,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), HostError> {
        let call = Call::VirtualFree {
            heap: true,
            address,
            size,
            free_type,
        };
        self.traced(call, || self.decommit_or_release(address, size, free_type))
    }

    fn decommit_or_release(
        &self,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), HostError> {
        // Arguments the engine accepts whatever the address: an address
        // that is not the host's is then refused under the shared lock
        // (one shard, no write shared with other threads), and only an
        // owned one takes the exclusive lock, where the engine looks
        // again. Between the two another thread may reserve the address:
        // the refusal is then the answer of a call that ran first.
        let arguments_valid =
            (free_type == FreeType::RELEASE && size == 0) || free_type == FreeType::DECOMMIT;
        if arguments_valid && !self.read(|state| Ok(state.space.owns(page_floor(address))))? {
            return Err(HostError::NotHostMemory);
        }
        self.write(|state| {
            let space = &mut state.space;
            space
                .virtual_free(address, size, free_type)
                .map_err(|e| Self::refuse_foreign(space, address, e))
        })
    }

    /// Tells `watcher` when the manager stops (fails or shuts down): for
    /// the heaps' hit paths, which run outside [`run_call`](Self::run_call)
    /// and count their calls themselves (see `statistics`).
    pub(crate) fn watch_stop(&self, watcher: std::sync::Weak<dyn super::StopWatcher>) {
        self.lifecycle.watch(watcher);
    }

    /// Runs a call of another interface of this manager (a heap's) under
    /// the same rules: refused once unusable, panics caught, failures
    /// latched and counted.
    pub(crate) fn run_call<T>(
        &self,
        method: Method,
        f: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        self.call(method, f)
    }

    /// `IHostMemoryManager::VirtualQuery`: `VirtualQuery`'s semantics, for
    /// any address.
    pub fn virtual_query(&self, address: usize) -> Result<MemoryBasicInformation, HostError> {
        self.traced(Call::VirtualQuery { address }, || {
            self.call(Method::VirtualQuery, || {
                self.read(|state| {
                    state
                        .space
                        .virtual_query(address)
                        .map_err(HostError::from_engine)
                })
            })
        })
    }

    /// `IHostMemoryManager::VirtualProtect`: `VirtualProtect`'s semantics;
    /// memory the host did not allocate is `HOST_E_INVALIDOPERATION`.
    pub fn virtual_protect(
        &self,
        address: usize,
        size: usize,
        new_protect: Protection,
    ) -> Result<Protection, HostError> {
        let call = Call::VirtualProtect {
            address,
            size,
            protect: new_protect,
        };
        self.traced(call, || {
            self.call(Method::VirtualProtect, || {
                // As in `decommit_or_release`: an address that is not the
                // host's is refused under the shared lock.
                if crate::engine::protect_arguments_valid(address, size, new_protect)
                    && !self.read(|state| Ok(state.space.owns(page_floor(address))))?
                {
                    return Err(HostError::NotHostMemory);
                }
                self.write(|state| {
                    let space = &mut state.space;
                    space
                        .virtual_protect(address, size, new_protect)
                        .map_err(|e| Self::refuse_foreign(space, address, e))
                })
            })
        })
    }

    /// Whether `address` lies in memory this manager allocated.
    pub fn owns(&self, address: usize) -> bool {
        self.state
            .read(Some(self.config.lock_timeout))
            .is_ok_and(|state| state.space.owns(address))
    }

    /// Runs `f` over the manager's address space with the lock held shared
    /// (changes wait meanwhile): the way to take a consistent snapshot of
    /// the map. A panic in `f` abandons the lock: the next call answers
    /// `HOST_E_ABANDONED` and the manager latches as failed.
    pub fn with_address_space<R>(
        &self,
        f: impl FnOnce(&AddressSpace<Box<dyn OsBackend>>) -> R,
    ) -> Result<R, HostError> {
        if !self.lifecycle.is_running() {
            return Err(HostError::Unavailable);
        }
        let state = self
            .state
            .read(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        Ok(f(&state.space))
    }

    /// Shuts the manager down: releases every region it holds; every later
    /// hosting call answers `HOST_E_CLRNOTAVAILABLE`.
    pub fn shutdown(&self) {
        let _ = self.traced(Call::Shutdown, || {
            self.shut_down();
            Ok(())
        });
    }

    fn shut_down(&self) {
        if self.lifecycle.shut_down() {
            self.stop_notifications();
            if let Ok(mut state) = self.state.write(None) {
                state.space.release_all();
                state.acquired.clear();
                state.acquired_bytes = 0;
            }
        }
    }

    /// Latches a catastrophic failure found outside the manager's own calls
    /// (a face's panic boundary): every later call answers
    /// `HOST_E_CLRNOTAVAILABLE`. Returns true if this call latched it.
    pub fn latch_failure(&self) -> bool {
        self.lifecycle.fail()
    }

    /// Whether the manager latched a catastrophic failure.
    pub fn has_failed(&self) -> bool {
        self.lifecycle.has_failed()
    }

    /// `IHostMemoryManager::GetMemoryLoad`: with a budget, the share of it
    /// in use (committed pages and reported mappings) and the bytes left;
    /// without one, the machine's load under its cgroup's limit, if any.
    pub fn get_memory_load(&self) -> Result<MemoryLoad, HostError> {
        self.traced(Call::GetMemoryLoad, || {
            self.call(Method::GetMemoryLoad, || match self.budget {
                Some(budget) => self.read(|state| Ok(budget.load(state.used_bytes()))),
                // ERROR_NOT_SUPPORTED: neither /proc/meminfo nor a cgroup says.
                None => self.machine.load().ok_or(HostError::Win32(Win32Error(50))),
            })
        })
    }

    /// `IHostMemoryManager::RegisterMemoryNotificationCallback`: replaces
    /// the callback (`None`: none); the old one is released. The runtime is
    /// told at once if memory is not in the high state.
    pub fn register_memory_notification(
        &self,
        callback: Option<Arc<dyn MemoryNotificationCallback>>,
    ) -> Result<(), HostError> {
        let call = Call::RegisterMemoryNotificationCallback {
            set: callback.is_some(),
        };
        self.traced(call, || match &self.tracer {
            Some(tracer) => self.register_callback(callback.map(|c| tracer.wrap_callback(c))),
            None => self.register_callback(callback),
        })
    }

    fn register_callback(
        &self,
        callback: Option<Arc<dyn MemoryNotificationCallback>>,
    ) -> Result<(), HostError> {
        self.call(Method::RegisterMemoryNotificationCallback, || {
            let registering = callback.is_some();
            self.notifier.register(callback);
            self.notifying.store(registering, Ordering::Relaxed);
            let mut watcher = self.watcher.lock();
            match (registering, self.budget) {
                (false, _) => *watcher = None,
                (true, Some(budget)) => {
                    drop(watcher);
                    let used = self.read(|state| Ok(state.used_bytes()))?;
                    self.notifier.observe(budget.load(used));
                }
                (true, None) => {
                    let w = watcher.get_or_insert_with(|| {
                        Watcher::start(
                            self.notifier.clone(),
                            self.machine.clone(),
                            self.config.load_poll_interval,
                        )
                    });
                    w.kick();
                }
            }
            Ok(())
        })
    }

    /// The memory state last computed for notifications.
    pub fn memory_state(&self) -> super::MemoryAvailable {
        self.notifier.state()
    }

    fn stop_notifications(&self) {
        self.notifying.store(false, Ordering::Relaxed);
        *self.watcher.lock() = None;
        self.notifier.register(None);
    }

    /// The range `[address, address + size)` of a report, or
    /// `E_INVALIDARG` for NULL, empty, wrapping or kernel ranges.
    fn reported_range(address: usize, size: usize) -> Result<PageRange, HostError> {
        if address == 0 || size == 0 {
            return Err(HostError::InvalidArgument);
        }
        PageRange::touched(address, size)
            .ok()
            .filter(|r| r.end() <= USER_ADDRESS_END)
            .ok_or(HostError::InvalidArgument)
    }

    /// `IHostMemoryManager::NeedsVirtualAddressSpace`: the runtime is about
    /// to map `size` bytes by itself; `E_OUTOFMEMORY` if the budget cannot
    /// take them.
    pub fn needs_virtual_address_space(
        &self,
        address: usize,
        size: usize,
    ) -> Result<(), HostError> {
        let call = Call::NeedsVirtualAddressSpace { address, size };
        self.traced(call, || self.needs_space(address, size))
    }

    fn needs_space(&self, address: usize, size: usize) -> Result<(), HostError> {
        self.call(Method::NeedsVirtualAddressSpace, || {
            if size == 0 {
                return Err(HostError::InvalidArgument);
            }
            let _ = address;
            match self.budget {
                Some(budget) => self.read(|state| {
                    let level = MemoryCriticalLevel::ProcessCritical;
                    if budget.allows(state.used_bytes(), size as u64, level) {
                        Ok(())
                    } else {
                        Err(HostError::OverBudget)
                    }
                }),
                None => Ok(()),
            }
        })
    }

    /// `IHostMemoryManager::AcquiredVirtualAddressSpace`: the runtime mapped
    /// `[address, address + size)` by itself; it is accounted (and counted
    /// against the budget) until released, and can never be freed or
    /// protected through the manager.
    pub fn acquired_virtual_address_space(
        &self,
        address: usize,
        size: usize,
    ) -> Result<(), HostError> {
        let call = Call::AcquiredVirtualAddressSpace { address, size };
        self.traced(call, || self.acquired_space(address, size))
    }

    fn acquired_space(&self, address: usize, size: usize) -> Result<(), HostError> {
        self.call(Method::AcquiredVirtualAddressSpace, || {
            let range = Self::reported_range(address, size)?;
            self.write(|state| {
                let own = state
                    .space
                    .reservations()
                    .any(|r| r.base() < range.end() && r.end() > range.start());
                if own || state.overlaps_acquired(range.start(), range.end()) {
                    return Err(HostError::InvalidArgument);
                }
                state.acquired.insert(address, size);
                state.acquired_bytes += size;
                Ok(())
            })
        })
    }

    /// `IHostMemoryManager::ReleasedVirtualAddressSpace`: the runtime
    /// unmapped the range it reported at `address`; an address it never
    /// reported is `HOST_E_INVALIDOPERATION`.
    pub fn released_virtual_address_space(&self, address: usize) -> Result<(), HostError> {
        let call = Call::ReleasedVirtualAddressSpace { address };
        self.traced(call, || self.released_space(address))
    }

    fn released_space(&self, address: usize) -> Result<(), HostError> {
        self.call(Method::ReleasedVirtualAddressSpace, || {
            self.write(|state| {
                let size = state
                    .acquired
                    .remove(&address)
                    .ok_or(HostError::NotHostMemory)?;
                state.acquired_bytes -= size;
                Ok(())
            })
        })
    }

    /// The statistics at this moment.
    pub fn statistics(&self) -> Statistics {
        let (totals, acquired) = self
            .state
            .read(None)
            .map(|state| (state.space.totals(), state.acquired_bytes))
            .unwrap_or_default();
        Statistics {
            regions: totals.reservations,
            reserved_bytes: totals.reserved_bytes,
            committed_bytes: totals.committed_bytes,
            peak_committed_bytes: self.peak_committed.load(Ordering::Relaxed),
            acquired_bytes: acquired,
            notifications_delivered: self.notifier.delivered(),
            calls: {
                // With the calls the heaps' hit paths counted themselves.
                let mut calls = self.counters.calls();
                crate::heap::add_hit_calls(self, &mut calls);
                calls
            },
            failures: self.counters.failures(),
        }
    }
}

impl Drop for HostMemoryManager {
    fn drop(&mut self) {
        // Stop the watcher and release the callback before the regions go.
        self.stop_notifications();
    }
}

impl Default for HostMemoryManager {
    fn default() -> Self {
        Self::new(HostConfig::default())
    }
}

#[cfg(test)]
mod tests;
