//! `IHostMalloc` heaps: what `IHostMemoryManager::CreateMalloc` hands the
//! runtime for fine-grained memory.
//!
//! A [`HostMalloc`] takes all its memory from its [`HostMemoryManager`]:
//! it reserves chunks (4 MiB, doubling up to 256 MiB) and commits 64 KiB
//! slabs in them on demand, `PAGE_READWRITE` or, for `MALLOC_EXECUTABLE`
//! heaps, `PAGE_EXECUTE_READWRITE`; requests above 16 KiB get a
//! reservation of their own. So heap memory counts in the manager's
//! budget (a refused commit is `E_OUTOFMEMORY`), statistics and
//! `VirtualQuery`, and it is all released when the heap's last reference
//! goes.
//!
//! Every `Alloc`, `DebugAlloc` and `Free` follows the manager's call
//! rules: refused with `HOST_E_CLRNOTAVAILABLE` once the manager failed or
//! shut down, counted in its statistics, panics turned into `E_FAIL`.
//! Most calls take a *hit path*: a block from (or back to) the calling
//! thread's cache, with no lock and no atomic read-modify-write. It
//! cannot fail or panic, so it runs outside the manager's `run_call`
//! (whose bookkeeping costs as much as glibc's whole `malloc`+`free`): it
//! tests the heap's copy of the manager's state (cleared by the manager
//! when it stops) and counts itself, exactly, in a per-thread slot that
//! the manager's statistics add up. Every other call (a miss, a large
//! or debug block, any failure) runs under `run_call`. The hit paths
//! (`HostMalloc::alloc_hit`, `free_hit`) are open to thread-safe heaps
//! only (a heap without `MALLOC_THREADSAFE` takes its busy flag first),
//! look only at the cache the thread used last (the full path switches
//! to another cache at hand and tries again before `run_call`), and have
//! no lock, no call out and no panicking branch, so the COM face runs
//! them before its panic boundary and tail-calls the full path on a
//! miss.
//!
//! The layout, file by file:
//!
//! - `class`: the size classes (16-byte steps to 1 KiB, four per power of
//!   two to 16 KiB), one class per slab;
//! - `pages`: chunks, slabs, and the table from an address to its slab's
//!   class (kept in the heap's own Rust memory, which a caller's overflow
//!   cannot reach);
//! - `block`: free lists threaded through free blocks, with the
//!   double-free cookie — the only file with `unsafe`;
//! - `cache`: per-thread caches (no lock, no atomic read-modify-write on
//!   a hit);
//! - `malloc`: the heap: `Alloc`, `DebugAlloc`, `Free`, the busy flag of
//!   non-thread-safe heaps, large blocks;
//! - `debug`: `DebugAlloc`'s records and the leak report;
//! - `fork`: the heap's locks around a `fork()`;
//! - `registry`: each manager's heaps, and the exact per-thread counts of
//!   the calls the hit paths take outside the manager's `run_call`;
//! - `bench`: the benchmark shared by `benches/heap.rs` and the CLI.

mod block;
mod cache;
mod class;
mod debug;
mod flags;
mod fork;
mod malloc;
mod pages;
mod registry;

pub(crate) mod bench;

pub use class::{ALIGNMENT, SMALL_MAX};

/// The key to the manager's host-internal page calls
/// (`HostMemoryManager::alloc_pages` and `free_pages`), which reserve,
/// commit and release the host's own reservations: the runtime's calls
/// refuse those, and these refuse the runtime's. Only this module (and
/// its children) can make one, so no other path of the crate can act on
/// a heap's chunks.
pub(crate) struct HostKey(());

/// The one key, for the heap's modules.
const KEY: HostKey = HostKey(());

/// Replays a heap's recorded `VirtualAlloc` of pages (a trace's
/// `Heap.VirtualAlloc`) on the host's own path.
pub(crate) fn replay_alloc_pages(
    manager: &HostMemoryManager,
    address: usize,
    size: usize,
    allocation_type: crate::win32::AllocationType,
    protect: crate::win32::Protection,
    level: crate::host::MemoryCriticalLevel,
) -> Result<usize, HostError> {
    manager.alloc_pages(&KEY, address, size, allocation_type, protect, level)
}

/// Replays a heap's recorded `VirtualFree` of pages (a trace's
/// `Heap.VirtualFree`) on the host's own path.
pub(crate) fn replay_free_pages(
    manager: &HostMemoryManager,
    address: usize,
    size: usize,
    free_type: crate::win32::FreeType,
) -> Result<(), HostError> {
    manager.free_pages(&KEY, address, size, free_type)
}
pub use debug::{LeakReport, LeakSite};
pub use flags::MallocType;
pub use malloc::{HeapUsage, HostMalloc};
pub(crate) use registry::add_hit_calls;

use crate::host::{HostError, HostMemoryManager, Method};
use std::sync::Arc;

/// The heaps' face on the manager.
impl HostMemoryManager {
    /// `IHostMemoryManager::CreateMalloc(dwMallocType, &malloc)`: a new heap
    /// over this manager. Bits other than `MALLOC_THREADSAFE` and
    /// `MALLOC_EXECUTABLE` are `E_INVALIDARG`. The heap holds no memory
    /// until its first allocation.
    ///
    /// The heap keeps its manager alive, so it is called on the `Arc` that
    /// [`HostMemoryManager::new`] returns. The heap's chunks are the
    /// host's own: `VirtualQuery` shows them, but the runtime's
    /// `VirtualFree`, `VirtualProtect` and `VirtualAlloc` refuse them.
    ///
    /// ```
    /// use hostmem::{FreeType, HostConfig, HostError, HostMemoryManager, MallocType};
    /// use hostmem::{MemoryCriticalLevel, MemoryState};
    ///
    /// let manager = HostMemoryManager::new(HostConfig::default())?;
    /// let heap = manager.create_malloc(MallocType::THREADSAFE)?;
    /// let block = heap.alloc(64, MemoryCriticalLevel::TaskCritical)?;
    /// let mbi = manager.virtual_query(block)?;
    /// assert_eq!(mbi.state, MemoryState::COMMIT);
    /// assert_eq!(
    ///     manager.virtual_free(mbi.allocation_base, 0, FreeType::RELEASE),
    ///     Err(HostError::NotHostMemory)
    /// );
    /// heap.free(block)?;
    /// assert_eq!(
    ///     manager.create_malloc(MallocType::from_bits_retain(0x100)).unwrap_err(),
    ///     HostError::InvalidArgument
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_malloc(
        self: &Arc<Self>,
        malloc_type: MallocType,
    ) -> Result<Arc<HostMalloc>, HostError> {
        self.run_call(Method::CreateMalloc, || {
            if !malloc_type.is_valid() {
                return Err(HostError::InvalidArgument);
            }
            Ok(HostMalloc::new(Arc::clone(self), malloc_type))
        })
    }

    /// The live `DebugAlloc` allocations of every live heap of this
    /// manager, by call site.
    pub fn leak_report(&self) -> LeakReport {
        let mut report = LeakReport::default();
        for heap in registry::heaps_of(self) {
            report.merge(heap.leak_report());
        }
        report
    }
}
