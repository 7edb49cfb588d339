//! hostmem: a host memory manager.
//!
//! The Win32 semantics of `VirtualAlloc`, `VirtualFree`, `VirtualQuery` and
//! `VirtualProtect`, emulated exactly on Linux, under the CLR hosting
//! contract `IHostMemoryManager`: a [`HostMemoryManager`] answers every
//! virtual-memory request of a runtime, keeps it within a budget, tells it
//! when memory runs low, and creates the [`HostMalloc`] heaps it asks for.
//!
//! ```
//! use hostmem::{
//!     AllocationType, FreeType, HostConfig, HostError, HostMemoryManager, MallocType,
//!     MemoryCriticalLevel, MemoryState, Protection,
//! };
//!
//! const TASK: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
//!
//! // A manager with a 16 MiB budget (`new` checks the configuration and
//! // returns the manager in an `Arc`, ready to share and to make heaps).
//! let manager = HostMemoryManager::new(HostConfig {
//!     budget_bytes: Some(16 << 20),
//!     ..HostConfig::default()
//! })?;
//!
//! // Reserve 1 MiB, then commit its first 64 KiB.
//! let base = manager.virtual_alloc(0, 1 << 20, AllocationType::RESERVE, Protection::NOACCESS, TASK)?;
//! manager.virtual_alloc(base, 0x10000, AllocationType::COMMIT, Protection::READWRITE, TASK)?;
//!
//! // VirtualQuery: the committed run, then the reserved rest.
//! let committed = manager.virtual_query(base)?;
//! assert_eq!((committed.state, committed.region_size), (MemoryState::COMMIT, 0x10000));
//! let reserved = manager.virtual_query(base + 0x10000)?;
//! assert_eq!(reserved.state, MemoryState::RESERVE);
//! assert_eq!(reserved.allocation_base, base);
//!
//! // A heap, drawn from the manager's own pages.
//! let heap = manager.create_malloc(MallocType::THREADSAFE)?;
//! let block = heap.alloc(100, TASK)?;
//! heap.free(block)?;
//!
//! // The budget refuses a commit that would take it past its limit, and
//! // the refusal changes nothing.
//! let before = manager.statistics().committed_bytes;
//! let too_much = manager.virtual_alloc(
//!     0,
//!     32 << 20,
//!     AllocationType::RESERVE | AllocationType::COMMIT,
//!     Protection::READWRITE,
//!     TASK,
//! );
//! assert_eq!(too_much, Err(HostError::OverBudget));
//! assert_eq!(manager.statistics().committed_bytes, before);
//!
//! // Release the region: its address is no longer the manager's.
//! manager.virtual_free(base, 0, FreeType::RELEASE)?;
//! assert_eq!(manager.virtual_query(base)?.allocation_base, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What is here:
//!
//! - the manager, its configuration and errors at the crate root
//!   ([`HostMemoryManager`], [`HostConfig`], [`ConfigError`],
//!   [`HostError`], [`HResult`]), with the rest of the hosting contract in
//!   [`host`] (memory load, notifications, statistics);
//! - the Win32 vocabulary, in [`win32`] and at the root
//!   ([`AllocationType`], [`Protection`], [`MemoryBasicInformation`], ...);
//! - heaps: [`HostMalloc`], in [`heap`];
//! - the C faces (the COM interfaces and the flat Win32-style API), in
//!   [`ffi`];
//! - recording every call a manager takes (`HOSTMEM_TRACE`) and reading or
//!   replaying a recording, in [`trace`].
//!
//! The layers underneath (the address-space engine, the OS backend, the
//! lock, the benchmarks) are the crate's own. The tests, benchmarks, fuzz
//! targets and the `hostmem` binary reach them through a hidden `unstable`
//! module, which follows no versioning promise.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "cli")]
mod bench;
mod engine;
pub mod ffi;
pub mod heap;
pub mod host;
mod os;
mod sync;
#[cfg(test)]
mod test_random;
pub mod trace;
pub mod win32;

pub use heap::{HostMalloc, MallocType};
pub use host::{
    ConfigError, HResult, HostConfig, HostError, HostMemoryManager, MemoryAvailable,
    MemoryCriticalLevel, MemoryLoad, MemoryNotificationCallback, Statistics,
};
pub use win32::{
    ALLOCATION_GRANULARITY, AllocationType, FreeType, MemoryBasicInformation, MemoryState,
    MemoryType, PAGE_SIZE, Protection, Win32Error,
};

/// The crate's internals, for its own tests, benchmarks, fuzz targets and
/// command line: no part of the API, and no promise of stability.
///
/// Even here, safe code cannot change memory at an address it picks. The
/// OS backend's raw-memory methods are `unsafe fn`s:
///
/// ```compile_fail,E0133
/// use hostmem::unstable::os::{OsBackend, UnixBackend};
/// let boxed = Box::new([0u8; 8192]);
/// let page = (boxed.as_ptr() as usize + 4095) & !4095;
/// UnixBackend.discard(page, 4096).unwrap(); // would zero the Box's page
/// ```
///
/// (with `unsafe`, on a mapping of one's own, the same call compiles:)
///
/// ```
/// use hostmem::unstable::os::{Access, OsBackend, UnixBackend};
/// let at = UnixBackend.map_anywhere(0, 4096, Access::READ | Access::WRITE).unwrap();
/// // SAFETY: the mapping just made, referenced by nothing.
/// unsafe {
///     UnixBackend.discard(at, 4096).unwrap();
///     UnixBackend.unmap(at, 4096).unwrap();
/// }
/// ```
///
/// and the benchmarks' raw operations are private to them:
///
/// ```compile_fail,E0603
/// hostmem::unstable::bench::ops::touch(0x1000);
/// ```
///
/// ```compile_fail,E0603
/// hostmem::unstable::bench::ops::raw_unmap(0x1000, 4096);
/// ```
///
/// ```compile_fail,E0603
/// use hostmem::unstable::bench::ops::raw_protect;
/// ```
///
/// ```compile_fail,E0603
/// use hostmem::unstable::bench::ops::raw_discard;
/// ```
///
/// ```compile_fail,E0133
/// // Writes into a reservation its caller names: unsafe.
/// let m = hostmem::HostMemoryManager::new(hostmem::HostConfig::default()).unwrap();
/// hostmem::unstable::bench::ops::host_commit_touch_decommit(&m, 0x10000);
/// ```
#[doc(hidden)]
pub mod unstable {
    /// The address-space engine: Win32's rules over an OS backend.
    pub mod engine {
        pub use crate::engine::*;
    }
    /// The OS backend: the kernel primitives, and a fault-injecting one.
    pub mod os {
        pub use crate::os::*;
    }
    /// The manager's sharded reader-writer lock.
    pub mod sync {
        pub use crate::sync::*;
    }
    /// `hostmem bench`: the performance figures (feature `cli`).
    #[cfg(feature = "cli")]
    pub mod bench {
        pub use crate::bench::*;
    }
    /// Heap workloads for the benchmarks.
    pub mod heap_bench {
        pub use crate::heap::bench::*;
    }
}
