//! `HostMemoryManager`: the Win32 engine under the hosting contract.

use super::budget::MemoryBudget;
use super::lifecycle::Lifecycle;
use super::load::{MachineMemory, MemoryLoad};
use super::notify::{MemoryNotificationCallback, Notifier, Thresholds, Watcher, WatcherSlot};
use super::stats::CallCounters;
use super::{ConfigError, HostConfig, HostError, Method, Statistics};
use crate::engine::{
    AddressSpace, InPlace, IndexView, Owner, PageRange, USER_ADDRESS_END, page_floor,
};
use crate::heap::HostKey;
use crate::os::{Backend, OsBackend, UnixBackend};
use crate::sync::{LockError, ShardedLock};
use crate::trace::{Call, TraceSink, Traced, Tracer};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection, Win32Error};
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

type Space = AddressSpace<Backend>;

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
///
/// [`new`](Self::new) returns it in an [`Arc`], because the heaps it
/// creates ([`create_malloc`](Self::create_malloc)) keep their manager
/// alive; clone the `Arc` to share it.
///
/// ```
/// use hostmem::{AllocationType, FreeType, HostConfig, HostMemoryManager};
/// use hostmem::{MemoryCriticalLevel, MemoryState, Protection};
///
/// let manager = HostMemoryManager::new(HostConfig::default())?;
/// let base = manager.virtual_alloc(
///     0,
///     0x10000,
///     AllocationType::RESERVE | AllocationType::COMMIT,
///     Protection::READWRITE,
///     MemoryCriticalLevel::TaskCritical,
/// )?;
/// assert_eq!(manager.virtual_query(base)?.state, MemoryState::COMMIT);
/// manager.virtual_free(base, 0, FreeType::RELEASE)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HostMemoryManager {
    state: ShardedLock<HostState>,
    /// The address space's index, read without the lock: queries it
    /// answers and refusals of addresses in no reservation touch no
    /// cache line another thread writes.
    view: IndexView,
    lifecycle: Lifecycle,
    config: HostConfig,
    budget: Option<MemoryBudget>,
    counters: CallCounters,
    peak_committed: AtomicUsize,
    machine: MachineMemory,
    notifier: Arc<Notifier>,
    /// Set while a callback is registered: the write path reads only this.
    notifying: AtomicBool,
    /// The load watcher, when one runs. Its mutex is also the registration
    /// lock: a registration swaps the callback, sets `notifying` and
    /// starts or stops the watcher under it, so registrations are
    /// linearisable (the last one wins, whole). It is held for no call
    /// out and no join, and never with the state lock.
    watcher: Arc<WatcherSlot>,
    /// Records every call when tracing is on (`HOSTMEM_TRACE`, or
    /// [`with_trace`](Self::with_trace)); `None` costs one branch a call.
    tracer: Option<Tracer>,
}

/// A change that [`HostMemoryManager::change_in_place`] may make.
#[derive(Clone, Copy)]
enum PageChange {
    /// `VirtualAlloc(.., allocation_type, protect)` committing at `level`.
    Commit {
        allocation_type: AllocationType,
        protect: Protection,
        level: MemoryCriticalLevel,
    },
    /// `VirtualFree(.., MEM_DECOMMIT)`.
    Decommit,
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
    /// A manager over the Linux kernel, ready to share (and to create
    /// heaps: [`create_malloc`](Self::create_malloc) takes `&Arc<Self>`).
    /// A configuration that makes no sense is refused, saying why.
    ///
    /// ```
    /// use hostmem::{ConfigError, HostConfig, HostMemoryManager};
    ///
    /// let manager = HostMemoryManager::new(HostConfig {
    ///     budget_bytes: Some(64 << 20),
    ///     ..HostConfig::default()
    /// })?;
    /// assert_eq!(manager.config().budget_bytes, Some(64 << 20));
    ///
    /// let inverted = HostConfig {
    ///     high_memory_percent: 95,
    ///     low_memory_percent: 90,
    ///     ..HostConfig::default()
    /// };
    /// let refused = HostMemoryManager::new(inverted).unwrap_err();
    /// assert_eq!(refused, ConfigError::HighNotBelowLow { high: 95, low: 90 });
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn new(config: HostConfig) -> Result<Arc<Self>, ConfigError> {
        Self::new_unshared(config).map(Arc::new)
    }

    /// A manager over the Linux kernel, by value: to set up further
    /// ([`with_trace`](Self::with_trace),
    /// [`with_machine_root`](Self::with_machine_root)) or to embed. Put it
    /// in an [`Arc`] before creating heaps.
    pub fn new_unshared(config: HostConfig) -> Result<Self, ConfigError> {
        Self::on_backend(config, Backend::Kernel(UnixBackend))
    }

    /// A manager over any OS backend (tests inject failures this way).
    #[doc(hidden)]
    pub fn with_backend(config: HostConfig, os: Box<dyn OsBackend>) -> Result<Self, ConfigError> {
        Self::on_backend(config, Backend::Other(os))
    }

    fn on_backend(config: HostConfig, os: Backend) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = HostState {
            space: AddressSpace::with_backend(os),
            acquired: BTreeMap::new(),
            acquired_bytes: 0,
        };
        let thresholds = Thresholds {
            low_percent: config.low_memory_percent,
            high_percent: config.high_memory_percent,
        };
        let notifier = Arc::new(Notifier::new(thresholds));
        // A fork takes the notifier's lock, after the state lock (see
        // `sync::fork`).
        #[cfg(not(loom))]
        crate::sync::fork::register(
            crate::sync::fork::Rank::Registry,
            Arc::downgrade(&notifier) as std::sync::Weak<dyn crate::sync::fork::ForkLocks>,
        );
        // The registration lock: the write path takes it (to wake the
        // watcher) after the state lock is released, so a fork must hold
        // it too, or a child could find it held by a thread it lacks.
        let watcher = Arc::new(WatcherSlot::default());
        #[cfg(not(loom))]
        crate::sync::fork::register(
            crate::sync::fork::Rank::Watcher,
            Arc::downgrade(&watcher) as std::sync::Weak<dyn crate::sync::fork::ForkLocks>,
        );
        let view = state.space.index_view();
        let manager = Self {
            tracer: Tracer::from_env(&config),
            view,
            state: ShardedLock::with_default_shards(state),
            lifecycle: Lifecycle::default(),
            budget: config
                .budget_bytes
                .map(|b| MemoryBudget::new(b, config.critical_level_percent)),
            config,
            counters: CallCounters::default(),
            peak_committed: AtomicUsize::new(0),
            machine: MachineMemory::default(),
            notifier,
            notifying: AtomicBool::new(false),
            watcher,
        };
        if crate::os::check_page_size().is_err() {
            // Win32 pages cannot be emulated on this kernel: refuse every call.
            manager.lifecycle.fail();
        }
        Ok(manager)
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
    #[inline(always)]
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
    /// and counts it. Inlined, with the failures out of line, so that a
    /// change in place has no frame of it above its system call (see
    /// [`change_in_place`](Self::change_in_place)).
    #[inline(always)]
    fn call<T>(
        &self,
        method: Method,
        f: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        self.counters.call(method);
        if !self.lifecycle.is_running() {
            return Err(self.failed(method, HostError::Unavailable));
        }
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(method, e)),
            Err(_) => Err(self.failed(method, HostError::Catastrophic)),
        }
    }

    /// A call's failure, as [`call`](Self::call) answers it: a catastrophic
    /// one latched (only the first answers E_FAIL), an abandoned lock
    /// making the manager unusable; counted.
    #[cold]
    #[inline(never)]
    fn failed(&self, method: Method, e: HostError) -> HostError {
        let e = match e {
            HostError::Catastrophic if !self.lifecycle.fail() => HostError::Unavailable,
            HostError::Abandoned => {
                self.lifecycle.fail();
                HostError::Abandoned
            }
            other => other,
        };
        self.counters.failure(method, e.hresult());
        e
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

    /// Whether `address` lies in one of the engine's reservations (any
    /// owner's): looked up without the lock when the index can say (an
    /// address in no reservation is the common case), else under the
    /// shared lock. With tracing on always under the lock, where the
    /// call takes its place in the trace.
    #[inline(always)]
    fn space_owns(&self, address: usize) -> Result<bool, HostError> {
        let page = page_floor(address);
        if self.tracer.is_none()
            && let Some(held) = self.view.holds(page)
        {
            return Ok(held);
        }
        self.space_owns_locked(page)
    }

    /// [`space_owns`](Self::space_owns) under the shared lock.
    #[inline(never)]
    fn space_owns_locked(&self, page: usize) -> Result<bool, HostError> {
        self.read(|state| Ok(state.space.owns(page)))
    }

    /// Runs a change under the exclusive lock, then tells the notifier
    /// about the new load — queued under the lock, so loads arrive in the
    /// order they happened, and delivered after it is released.
    #[inline(always)]
    fn write<T>(
        &self,
        f: impl FnOnce(&mut HostState) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let mut state = self
            .state
            .write(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        if let Some(tracer) = &self.tracer {
            tracer.restamp();
        }
        let result = f(&mut state);
        self.note_peak(state.space.totals().committed_bytes);
        if self.notifying.load(Ordering::Relaxed) {
            if let Some(budget) = self.budget {
                self.notifier.update(budget.load(state.used_bytes()));
                drop(state);
                self.notifier.deliver();
            } else {
                // The watcher reads the machine's load itself: no order to
                // keep, so the state lock goes first.
                drop(state);
                self.kick_watcher();
            }
        }
        result
    }

    /// Wakes the load watcher after a change (with no lock held).
    fn kick_watcher(&self) {
        let mut watcher = self.watcher.lock();
        let mut gone = None;
        match watcher.as_ref() {
            Some(w) if w.is_running() => w.kick(),
            // A fork's child: the watcher's thread stayed in the parent; a
            // new one starts (and looks at once). One that cannot be made
            // is tried again at the next change.
            Some(_) => {
                if let Ok(started) = self.start_watcher() {
                    gone = watcher.replace(started);
                }
            }
            None => {}
        }
        drop(watcher);
        drop(gone);
    }

    /// Raises the peak of committed bytes to `committed` if it is higher:
    /// the locked read-modify-write only then (most changes do not set a
    /// new peak, and every change would otherwise take the line from the
    /// other CPUs).
    #[inline]
    fn note_peak(&self, committed: usize) {
        if committed > self.peak_committed.load(Ordering::Relaxed) {
            self.peak_committed.fetch_max(committed, Ordering::Relaxed);
        }
    }

    /// Tries a commit or decommit in place: under the *shared* lock,
    /// beside changes in place of other reservations (see
    /// [`AddressSpace::commit_in_place`]). `None` when only the exclusive
    /// path may make it (nothing changed). An address in no reservation is
    /// refused there too, under the shared lock — or, while a change holds
    /// the lock, from the index read without it, so that a refusal never
    /// waits. Afterwards, as [`write`](Self::write) does: the peak, and
    /// the notifier told the load as it is after the change — read under
    /// the notifier's lock, so that racing changes feed it loads in the
    /// order they were read.
    ///
    /// Inlined into the calls (as is everything down to the system call):
    /// a system call leaves the CPU's return-address predictor holding the
    /// kernel's addresses, so each frame between it and the caller would
    /// cost a mispredicted return, some 8 ns (see `os::Backend`).
    #[inline(always)]
    fn change_in_place(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        change: PageChange,
    ) -> Option<Result<usize, HostError>> {
        let state = match self.state.try_read() {
            Some(Ok(state)) => state,
            Some(Err(e)) => return Some(Err(Self::lock_error(e))),
            None => {
                let valid = match change {
                    PageChange::Commit {
                        allocation_type,
                        protect,
                        ..
                    } => crate::engine::existing_pages_arguments_valid(
                        address,
                        size,
                        allocation_type,
                        protect,
                    ),
                    PageChange::Decommit => true,
                };
                if valid && self.view.holds(page_floor(address)) == Some(false) {
                    return Some(Err(HostError::NotHostMemory));
                }
                match self.state.read(Some(self.config.lock_timeout)) {
                    Ok(state) => state,
                    Err(e) => return Some(Err(Self::lock_error(e))),
                }
            }
        };
        let space = &state.space;
        let done = match change {
            PageChange::Commit {
                allocation_type,
                protect,
                level,
            } => {
                let fits = |committed: usize, cost: usize| {
                    self.budget.is_none_or(|budget| {
                        let used = (committed + state.acquired_bytes) as u64;
                        budget.allows(used, cost as u64, level)
                    })
                };
                space.commit_in_place(
                    owner,
                    address,
                    size,
                    allocation_type,
                    protect,
                    &fits,
                    self.config.lock_timeout,
                )
            }
            PageChange::Decommit => space
                .decommit_in_place(
                    owner,
                    address,
                    size,
                    FreeType::DECOMMIT,
                    self.config.lock_timeout,
                )
                .map(|()| (0, 0)),
        };
        let result = match done {
            InPlace::Structural => return None,
            InPlace::OverBudget => Err(HostError::OverBudget),
            // Another change of the reservation's pages outlasted the
            // lock timeout (its thread may be suspended half-way).
            InPlace::Busy => Err(HostError::Timeout),
            InPlace::Done(Ok((answer, committed))) => {
                self.note_peak(committed);
                Ok(answer)
            }
            InPlace::Done(Err(e)) => Err(Self::refuse_foreign(space, owner, address, e)),
        };
        if self.notifying.load(Ordering::Relaxed) {
            if let Some(budget) = self.budget {
                self.notifier
                    .update_with(|| budget.load(state.used_bytes()));
                drop(state);
                self.notifier.deliver();
            } else {
                drop(state);
                self.kick_watcher();
            }
        }
        Some(result)
    }

    /// The engine's failure, or `HOST_E_INVALIDOPERATION` where the address
    /// the call works on is not in one of `owner`'s reservations (memory
    /// the host did not allocate, or the host's own for a runtime call).
    fn refuse_foreign(space: &Space, owner: Owner, address: usize, e: Win32Error) -> HostError {
        if e == Win32Error::INVALID_ADDRESS && !space.owned_by(owner, page_floor(address)) {
            HostError::NotHostMemory
        } else {
            HostError::from_engine(e)
        }
    }

    /// `IHostMemoryManager::VirtualAlloc`: `VirtualAlloc`'s semantics;
    /// committing or resetting memory the host did not allocate for the
    /// runtime (foreign memory, or the host's own heaps) is
    /// `HOST_E_INVALIDOPERATION`; a commit the budget cannot take at
    /// `level` is `E_OUTOFMEMORY` and changes nothing.
    ///
    /// ```
    /// use hostmem::{AllocationType as A, HostConfig, HostError, HostMemoryManager};
    /// use hostmem::{MemoryCriticalLevel, Protection, Win32Error};
    ///
    /// let m = HostMemoryManager::new(HostConfig::default())?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// // Reserve 256 KiB (at a 64 KiB boundary), commit two pages inside.
    /// let base = m.virtual_alloc(0, 0x40000, A::RESERVE, Protection::NOACCESS, level)?;
    /// assert_eq!(base % 0x10000, 0);
    /// let at = m.virtual_alloc(base + 0x1234, 0x1000, A::COMMIT, Protection::READWRITE, level)?;
    /// assert_eq!(at, base + 0x1000, "rounded down to its page");
    /// // Committing past the reservation's end is Win32's ERROR_INVALID_ADDRESS.
    /// assert_eq!(
    ///     m.virtual_alloc(base + 0x3f000, 0x2000, A::COMMIT, Protection::READWRITE, level),
    ///     Err(HostError::Win32(Win32Error::INVALID_ADDRESS))
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
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
        // The closures inlined (as they are not by themselves: each is
        // called from two places), so that the Rust API, like the C one,
        // has no frame between its caller and the system call.
        self.traced(
            call,
            #[inline(always)]
            || {
                self.call(
                    Method::VirtualAlloc,
                    #[inline(always)]
                    || {
                        self.commit_or_reserve(
                            Owner::Runtime,
                            address,
                            size,
                            allocation_type,
                            protect,
                            level,
                        )
                    },
                )
            },
        )
    }

    /// `VirtualAlloc` under the manager's rules, without counting a call
    /// of its own: for the crate's heaps, whose own call is counted (a
    /// trace records it as `Heap.VirtualAlloc`). It reserves for, and
    /// commits only in, the host's own reservations ([`Owner::Host`]),
    /// which the runtime's calls cannot change; only the heap module holds
    /// the [`HostKey`] it takes.
    pub(crate) fn alloc_pages(
        &self,
        _key: &HostKey,
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
        self.traced(
            call,
            #[inline(always)]
            || self.commit_or_reserve(Owner::Host, address, size, allocation_type, protect, level),
        )
    }

    #[inline(always)]
    fn commit_or_reserve(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        // A commit wholly inside one reservation: in place, beside commits
        // in other reservations. Not when tracing (the exclusive lock
        // orders the trace).
        if self.tracer.is_none()
            && address != 0
            && allocation_type.difference(AllocationType::TOP_DOWN) == AllocationType::COMMIT
        {
            let change = PageChange::Commit {
                allocation_type,
                protect,
                level,
            };
            if let Some(result) = self.change_in_place(owner, address, size, change) {
                return result;
            }
        } else if self.tracer.is_none()
            && works_on_existing_pages(address, allocation_type)
            && self.view.holds(page_floor(address)) == Some(false)
            && crate::engine::existing_pages_arguments_valid(
                address,
                size,
                allocation_type,
                protect,
            )
        {
            // A reset of pages at an address in no reservation, refused
            // with no lock when the index read without it says so (not
            // behind a change holding the lock).
            return Err(HostError::NotHostMemory);
        }
        // The rest under the exclusive lock, inlined down to the system
        // call as a change in place is.
        self.write(
            #[inline(always)]
            |state| {
                if let Some(budget) = self.budget {
                    let cost = state
                        .space
                        .commit_cost(owner, address, size, allocation_type)
                        as u64;
                    if cost > 0 && !budget.allows(state.used_bytes(), cost, level) {
                        return Err(HostError::OverBudget);
                    }
                }
                let space = &mut state.space;
                space
                    .virtual_alloc_as(owner, address, size, allocation_type, protect)
                    .map_err(|e| {
                        if works_on_existing_pages(address, allocation_type) {
                            Self::refuse_foreign(space, owner, address, e)
                        } else {
                            HostError::from_engine(e)
                        }
                    })
            },
        )
    }

    /// `IHostMemoryManager::VirtualFree`: `VirtualFree`'s semantics; memory
    /// the host did not allocate for the runtime (foreign, already
    /// released, or the host's own heaps) is `HOST_E_INVALIDOPERATION`.
    ///
    /// ```
    /// use hostmem::{AllocationType as A, FreeType, HostConfig, HostError, HostMemoryManager};
    /// use hostmem::{MemoryCriticalLevel, MemoryState, Protection};
    ///
    /// let m = HostMemoryManager::new(HostConfig::default())?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// let base = m.virtual_alloc(0, 0x20000, A::RESERVE | A::COMMIT, Protection::READWRITE, level)?;
    /// // Decommit the second 64 KiB: reserved again, and uncounted.
    /// m.virtual_free(base + 0x10000, 0x10000, FreeType::DECOMMIT)?;
    /// assert_eq!(m.virtual_query(base + 0x10000)?.state, MemoryState::RESERVE);
    /// assert_eq!(m.statistics().committed_bytes, 0x10000);
    /// // Release takes the base and a size of 0; afterwards the address is
    /// // no longer the host's.
    /// m.virtual_free(base, 0, FreeType::RELEASE)?;
    /// assert_eq!(m.virtual_free(base, 0, FreeType::RELEASE), Err(HostError::NotHostMemory));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline(always)]
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
        // Inlined, as in `virtual_alloc`.
        self.traced(
            call,
            #[inline(always)]
            || {
                self.call(
                    Method::VirtualFree,
                    #[inline(always)]
                    || self.decommit_or_release(Owner::Runtime, address, size, free_type),
                )
            },
        )
    }

    /// `VirtualFree` under the manager's rules, without counting a call of
    /// its own (for the crate's heaps; a trace records it as
    /// `Heap.VirtualFree`): only the host's own reservations.
    pub(crate) fn free_pages(
        &self,
        _key: &HostKey,
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
        self.traced(
            call,
            #[inline(always)]
            || self.decommit_or_release(Owner::Host, address, size, free_type),
        )
    }

    #[inline(always)]
    fn decommit_or_release(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), HostError> {
        if self.tracer.is_none() && free_type == FreeType::DECOMMIT {
            // In place; an address in no reservation is refused there.
            if let Some(result) = self.change_in_place(owner, address, size, PageChange::Decommit) {
                return result.map(drop);
            }
        } else {
            // Arguments the engine accepts whatever the address: an
            // address that is not the host's is then refused from the
            // index read without the lock (or under the shared lock where
            // it cannot say), and only an owned one takes the exclusive
            // lock, where the engine looks again. Between the two another
            // thread may reserve the address: the refusal is then the
            // answer of a call that ran first.
            let arguments_valid =
                (free_type == FreeType::RELEASE && size == 0) || free_type == FreeType::DECOMMIT;
            if arguments_valid && !self.space_owns(address)? {
                return Err(HostError::NotHostMemory);
            }
        }
        // The rest under the exclusive lock, inlined down to the system
        // call as a change in place is.
        self.write(
            #[inline(always)]
            |state| {
                let space = &mut state.space;
                space
                    .virtual_free_as(owner, address, size, free_type)
                    .map_err(|e| Self::refuse_foreign(space, owner, address, e))
            },
        )
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
    ///
    /// ```
    /// use hostmem::{AllocationType as A, HostConfig, HostMemoryManager, MemoryCriticalLevel};
    /// use hostmem::{MemoryState, MemoryType, Protection};
    ///
    /// let m = HostMemoryManager::new(HostConfig::default())?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// let base = m.virtual_alloc(0, 0x10000, A::RESERVE, Protection::READONLY, level)?;
    /// m.virtual_alloc(base, 0x3000, A::COMMIT, Protection::READWRITE, level)?;
    /// // The run of pages alike from the address on.
    /// let mbi = m.virtual_query(base + 0x1800)?;
    /// assert_eq!(mbi.base_address, base + 0x1000);
    /// assert_eq!(mbi.region_size, 0x2000);
    /// assert_eq!((mbi.state, mbi.protect, mbi.type_), (MemoryState::COMMIT, Protection::READWRITE, MemoryType::PRIVATE));
    /// assert_eq!((mbi.allocation_base, mbi.allocation_protect), (base, Protection::READONLY));
    /// let rest = m.virtual_query(base + 0x3000)?;
    /// assert_eq!((rest.state, rest.region_size), (MemoryState::RESERVE, 0xd000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn virtual_query(&self, address: usize) -> Result<MemoryBasicInformation, HostError> {
        // A reservation whose pages are alike is answered from its
        // granule's summary, read without the lock. This path is inlined
        // into the faces and runs outside `call` (it cannot panic or
        // fail): the answer then goes from registers to the caller's
        // buffer, not through temporaries that are stored field by field
        // and reloaded wider (a reload the CPU cannot forward from the
        // pending stores waits for them: it cost 8 ns of a 20 ns query).
        if self.tracer.is_none()
            && self.lifecycle.is_running()
            && let Some(mbi) = self.view.query(address)
        {
            self.counters.call(Method::VirtualQuery);
            return Ok(mbi);
        }
        self.virtual_query_locked(address)
    }

    /// [`virtual_query`](Self::virtual_query) under the shared lock: a
    /// reservation whose pages differ, an address in no reservation, and
    /// every traced call (whose place in the trace is taken under the
    /// lock).
    #[inline(never)]
    fn virtual_query_locked(&self, address: usize) -> Result<MemoryBasicInformation, HostError> {
        self.traced(Call::VirtualQuery { address }, || {
            self.call(Method::VirtualQuery, || {
                self.read(|state| {
                    state
                        .space
                        .virtual_query_within(address, self.config.lock_timeout)
                        .map_err(HostError::from_engine)
                })
            })
        })
    }

    /// `IHostMemoryManager::VirtualProtect`: `VirtualProtect`'s semantics;
    /// memory the host did not allocate for the runtime (foreign, or the
    /// host's own heaps) is `HOST_E_INVALIDOPERATION`.
    ///
    /// ```
    /// use hostmem::{AllocationType as A, HostConfig, HostError, HostMemoryManager};
    /// use hostmem::{MemoryCriticalLevel, Protection, Win32Error};
    ///
    /// let m = HostMemoryManager::new(HostConfig::default())?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// let base = m.virtual_alloc(0, 0x10000, A::RESERVE, Protection::NOACCESS, level)?;
    /// m.virtual_alloc(base, 0x2000, A::COMMIT, Protection::READWRITE, level)?;
    /// // Returns the old protection of the first page.
    /// let old = m.virtual_protect(base, 0x1000, Protection::READONLY)?;
    /// assert_eq!(old, Protection::READWRITE);
    /// assert_eq!(m.virtual_query(base)?.protect, Protection::READONLY);
    /// // Only committed pages can be protected.
    /// assert_eq!(
    ///     m.virtual_protect(base, 0x3000, Protection::READONLY),
    ///     Err(HostError::Win32(Win32Error::INVALID_ADDRESS))
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
                // host's is refused before the exclusive lock.
                if crate::engine::protect_arguments_valid(address, size, new_protect)
                    && !self.space_owns(address)?
                {
                    return Err(HostError::NotHostMemory);
                }
                self.write(|state| {
                    let space = &mut state.space;
                    space
                        .virtual_protect(address, size, new_protect)
                        .map_err(|e| Self::refuse_foreign(space, Owner::Runtime, address, e))
                })
            })
        })
    }

    /// `GetWriteWatch(flags, address, size, ...)`: appends to `out` the
    /// pages of a `MEM_WRITE_WATCH` reservation written since they were
    /// last reset, at most `max` (see
    /// [`AddressSpace::get_write_watch`]); memory the host did not allocate
    /// is `HOST_E_INVALIDOPERATION`. The granularity is always
    /// [`PAGE_SIZE`](crate::win32::PAGE_SIZE).
    pub fn get_write_watch(
        &self,
        flags: u32,
        address: usize,
        size: usize,
        max: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), HostError> {
        self.call(Method::GetWriteWatch, || {
            self.write(|state| {
                let space = &mut state.space;
                space
                    .get_write_watch(flags, address, size, max, out)
                    .map_err(|e| Self::refuse_unwatched(space, address, e))
            })
        })
    }

    /// `ResetWriteWatch(address, size)`: forgets the writes to pages of a
    /// `MEM_WRITE_WATCH` reservation; memory the host did not allocate is
    /// `HOST_E_INVALIDOPERATION`.
    pub fn reset_write_watch(&self, address: usize, size: usize) -> Result<(), HostError> {
        self.call(Method::ResetWriteWatch, || {
            self.write(|state| {
                let space = &mut state.space;
                space
                    .reset_write_watch(address, size)
                    .map_err(|e| Self::refuse_unwatched(space, address, e))
            })
        })
    }

    /// The write-watch functions answer `ERROR_INVALID_PARAMETER` for any
    /// memory that is not a watched reservation; memory that is not the
    /// host's at all is `HOST_E_INVALIDOPERATION` instead.
    fn refuse_unwatched(space: &Space, address: usize, e: Win32Error) -> HostError {
        if e == Win32Error::INVALID_PARAMETER && !space.owns(page_floor(address)) {
            HostError::NotHostMemory
        } else {
            HostError::from_engine(e)
        }
    }

    /// Whether `address` lies in memory this manager allocated.
    pub fn owns(&self, address: usize) -> bool {
        if let Some(held) = self.view.holds(address) {
            return held;
        }
        self.state
            .read(Some(self.config.lock_timeout))
            .is_ok_and(|state| state.space.owns(address))
    }

    /// Runs `f` over the manager's address space with the lock held shared
    /// (changes wait meanwhile): the way to take a consistent snapshot of
    /// the map. `f` cannot change the state, so a panic in it abandons
    /// nothing: the panic goes on to the caller and the manager stays
    /// usable. (Unstable: the address space is the crate's own type.)
    #[doc(hidden)]
    pub fn with_address_space<R>(
        &self,
        f: impl FnOnce(&AddressSpace<Backend>) -> R,
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

    /// Shuts the manager down: releases every region it holds for the
    /// runtime (also after a catastrophic failure latched); every later
    /// hosting call answers `HOST_E_CLRNOTAVAILABLE`. A heap still alive
    /// keeps its own chunks (its blocks stay readable and writable) until
    /// it is dropped.
    pub fn shutdown(&self) {
        let _ = self.traced(Call::Shutdown, || {
            self.shut_down();
            Ok(())
        });
    }

    /// Stops the manager and releases its regions, also after a latched
    /// failure (which stopped the calls but released nothing) and over a
    /// lock a panic abandoned: every region of the runtime's goes (a live
    /// heap keeps its chunks until it is dropped).
    fn shut_down(&self) {
        self.lifecycle.shut_down();
        self.stop_notifications();
        if let Ok(mut state) = self.state.write_even_if_abandoned(None) {
            // Not the heaps' chunks: a heap's hit path may be reading its
            // free lists right now, and its blocks are the runtime's until
            // it frees them.
            state.space.release_all_of(Owner::Runtime);
            state.acquired.clear();
            state.acquired_bytes = 0;
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
    /// the callback (`None`: none); the old one is released, with no lock
    /// held. The runtime is told at once if memory is not in the high
    /// state. Racing registrations take effect in some order, and the last
    /// is the one registered and notified. Without a budget the first
    /// registration starts the load-watcher thread: if it cannot be
    /// started, `ERROR_NOT_ENOUGH_MEMORY` (`E_OUTOFMEMORY`) and nothing
    /// changed. What the callback may do from inside its call:
    /// [`MemoryNotificationCallback`].
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
            // Under the registration lock: what is registered, whether
            // writes notify, and whether a watcher runs change together.
            // What may call out (releasing the old callback, stopping the
            // old watcher, delivering) comes after it is released.
            let mut watcher = self.watcher.lock();
            let mut stopped = None;
            match (registering, self.budget) {
                (false, _) => stopped = watcher.take(),
                (true, Some(_)) => {}
                (true, None) => {
                    if watcher.as_ref().is_some_and(|w| !w.is_running()) {
                        // A fork's child: its thread stayed in the parent
                        // (dropping it joins nothing).
                        stopped = watcher.take();
                    }
                    if watcher.is_none() {
                        // A thread that cannot be made fails the call,
                        // and nothing changed.
                        let started = self
                            .start_watcher()
                            .map_err(|_| HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY))?;
                        *watcher = Some(started);
                    }
                }
            }
            let old = self.notifier.register(callback);
            self.notifying.store(registering, Ordering::Relaxed);
            if let Some(running) = watcher.as_ref() {
                // A look now, with the new callback in place (a new
                // watcher may have taken its first look before).
                running.kick();
            }
            drop(watcher);
            drop(stopped);
            drop(old);
            if let (true, Some(budget)) = (registering, self.budget) {
                let used = self.read(|state| Ok(state.used_bytes()))?;
                self.notifier.observe(budget.load(used));
            }
            Ok(())
        })
    }

    fn start_watcher(&self) -> std::io::Result<Watcher> {
        Watcher::start(
            self.notifier.clone(),
            self.machine.clone(),
            self.config.load_poll_interval,
        )
    }

    /// The memory state last computed for notifications.
    pub fn memory_state(&self) -> super::MemoryAvailable {
        self.notifier.state()
    }

    /// Unregisters the callback and stops the watcher, both released with
    /// no lock held (neither waits for a callback that is running).
    fn stop_notifications(&self) {
        let mut watcher = self.watcher.lock();
        let stopped = watcher.take();
        let old = self.notifier.register(None);
        self.notifying.store(false, Ordering::Relaxed);
        drop(watcher);
        drop(stopped);
        drop(old);
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
    ///
    /// ```
    /// use hostmem::{AllocationType as A, HostConfig, HostMemoryManager, MemoryCriticalLevel, Protection};
    ///
    /// let m = HostMemoryManager::new(HostConfig::default())?;
    /// let level = MemoryCriticalLevel::TaskCritical;
    /// m.virtual_alloc(0, 0x20000, A::RESERVE, Protection::READWRITE, level)?;
    /// let s = m.statistics();
    /// assert_eq!((s.regions, s.reserved_bytes, s.committed_bytes), (1, 0x20000, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
            notification_panics: self.notifier.panics(),
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

impl std::fmt::Debug for HostMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemoryManager")
            .field("config", &self.config)
            .field("running", &self.lifecycle.is_running())
            .finish_non_exhaustive()
    }
}

impl Default for HostMemoryManager {
    /// A manager with the default configuration, by value (see
    /// [`new_unshared`](Self::new_unshared)).
    fn default() -> Self {
        Self::new_unshared(HostConfig::default()).expect("the default configuration is valid")
    }
}

#[cfg(test)]
mod tests;
