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
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod engine;
pub mod ffi;
pub mod heap;
pub mod host;
pub mod os;
pub mod sync;
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
