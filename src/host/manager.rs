//! `HostMemoryManager`: the Win32 engine under the hosting contract.

use super::lifecycle::Lifecycle;
use super::stats::CallCounters;
use super::{HostConfig, HostError, Method, Statistics};
use crate::engine::{AddressSpace, page_floor};
use crate::os::{OsBackend, UnixBackend};
use crate::sync::{LockError, ShardedLock};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection, Win32Error};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A host memory manager: every virtual-memory request of a runtime goes
/// through it. Safe to share between threads.
pub struct HostMemoryManager {
    space: ShardedLock<Space>,
    lifecycle: Lifecycle,
    config: HostConfig,
    counters: CallCounters,
    peak_committed: AtomicUsize,
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
        Self {
            space: ShardedLock::with_default_shards(AddressSpace::with_backend(os)),
            lifecycle: Lifecycle::default(),
            config,
            counters: CallCounters::default(),
            peak_committed: AtomicUsize::new(0),
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

    fn read<T>(&self, f: impl FnOnce(&Space) -> Result<T, HostError>) -> Result<T, HostError> {
        let space = self
            .space
            .read(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        f(&space)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Space) -> Result<T, HostError>) -> Result<T, HostError> {
        let mut space = self
            .space
            .write(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        let result = f(&mut space);
        self.peak_committed
            .fetch_max(space.totals().committed_bytes, Ordering::Relaxed);
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
    /// `HOST_E_INVALIDOPERATION`.
    pub fn virtual_alloc(
        &self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        _level: MemoryCriticalLevel,
    ) -> Result<usize, HostError> {
        self.call(Method::VirtualAlloc, || {
            self.write(|space| {
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
        self.call(Method::VirtualFree, || {
            self.write(|space| {
                space
                    .virtual_free(address, size, free_type)
                    .map_err(|e| Self::refuse_foreign(space, address, e))
            })
        })
    }

    /// `IHostMemoryManager::VirtualQuery`: `VirtualQuery`'s semantics, for
    /// any address.
    pub fn virtual_query(&self, address: usize) -> Result<MemoryBasicInformation, HostError> {
        self.call(Method::VirtualQuery, || {
            self.read(|space| space.virtual_query(address).map_err(HostError::from_engine))
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
        self.call(Method::VirtualProtect, || {
            self.write(|space| {
                space
                    .virtual_protect(address, size, new_protect)
                    .map_err(|e| Self::refuse_foreign(space, address, e))
            })
        })
    }

    /// Whether `address` lies in memory this manager allocated.
    pub fn owns(&self, address: usize) -> bool {
        self.space
            .read(Some(self.config.lock_timeout))
            .is_ok_and(|space| space.owns(address))
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
        let space = self
            .space
            .read(Some(self.config.lock_timeout))
            .map_err(Self::lock_error)?;
        Ok(f(&space))
    }

    /// Shuts the manager down: releases every region it holds; every later
    /// hosting call answers `HOST_E_CLRNOTAVAILABLE`.
    pub fn shutdown(&self) {
        if self.lifecycle.shut_down()
            && let Ok(mut space) = self.space.write(None)
        {
            space.release_all();
        }
    }

    /// Whether the manager latched a catastrophic failure.
    pub fn has_failed(&self) -> bool {
        self.lifecycle.has_failed()
    }

    /// The statistics at this moment.
    pub fn statistics(&self) -> Statistics {
        let totals = self
            .space
            .read(None)
            .map(|space| space.totals())
            .unwrap_or_default();
        Statistics {
            regions: totals.reservations,
            reserved_bytes: totals.reserved_bytes,
            committed_bytes: totals.committed_bytes,
            peak_committed_bytes: self.peak_committed.load(Ordering::Relaxed),
            calls: self.counters.calls(),
            failures: self.counters.failures(),
        }
    }
}

impl Default for HostMemoryManager {
    fn default() -> Self {
        Self::new(HostConfig::default())
    }
}

#[cfg(test)]
mod tests;
