//! A heap's pages: chunks of address space reserved through the manager,
//! 64 KiB slabs committed in them on demand, and the table that maps an
//! address to its slab's size class.
//!
//! Everything here goes through the manager (`alloc_pages`/`free_pages`),
//! so a heap's memory is counted in the budget, the statistics and
//! `VirtualQuery`. No lock of the heap is held while the manager is
//! called: the manager may run the runtime's memory-notification callback
//! on this thread, and the callback may call the heap again.
//!
//! The chunks are the host's own reservations: the manager's page calls
//! take the heap module's `HostKey`, and the runtime's calls (any face)
//! cannot free, decommit, protect or reset them, nor does a shutdown
//! release them while the heap lives. That is what keeps the free lists
//! threaded through their blocks (`block.rs`) pointing at live memory.
#![forbid(unsafe_code)]

use super::block::{self, FreeList};
use super::class::{CLASS, SLAB_SHIFT, SLAB_SIZE, SlabMeta};
use crate::host::{HostError, HostMemoryManager, MemoryCriticalLevel};
use crate::win32::{AllocationType, FreeType, Protection, Win32Error};
use parking_lot::Mutex;
use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The first chunk's size; each next one doubles, up to [`CHUNK_MAX`].
pub const CHUNK_MIN: usize = 4 << 20;
/// The largest chunk.
pub const CHUNK_MAX: usize = 256 << 20;
/// The most chunks a heap reserves (with the doubling: over 14 GiB).
pub const MAX_CHUNKS: usize = 64;

/// One reservation of the heap and the class of each of its slabs.
struct Chunk {
    base: usize,
    size: usize,
    /// A [`SlabMeta`] per slab, written once, after the slab is carved
    /// (`Release`); read by `Free` on any thread (`Acquire`: a plain load
    /// on x86-64 and a load-acquire on aarch64, no read-modify-write).
    slabs: Box<[AtomicU64]>,
}

/// Where a pointer handed to `Free` lies: a block boundary of a carved
/// slab of this class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    /// The slab's size class.
    pub class: usize,
    /// Whether the slab serves `DebugAlloc`.
    pub debug: bool,
    /// The class's batch.
    pub batch: u32,
    /// The class for a thread cache: `class` for a slab of `Alloc`'s, and
    /// 128 or more (no cache's class) for a `DebugAlloc` slab, so that the
    /// hit path of `Free` tells both with the one bounds check it makes.
    pub cache_class: usize,
}

/// The slabs not yet handed out.
#[derive(Default)]
struct Arena {
    /// Chunks installed (`chunks[..installed]` are set).
    installed: usize,
    /// `(chunk, next slab)` of chunks with slabs never committed.
    cursors: Vec<(usize, usize)>,
    /// `(chunk, slab)` claimed but given back because their commit failed.
    spare: Vec<(usize, usize)>,
}

/// A heap's chunks and slabs.
pub struct Pages {
    chunks: [OnceLock<Chunk>; MAX_CHUNKS],
    arena: Mutex<Arena>,
    protect: Protection,
    committed_slabs: AtomicUsize,
}

impl Pages {
    /// The lock of the arena (for the fork handlers).
    pub fn arena(&self) -> &dyn crate::sync::fork::ForkLocks {
        &self.arena
    }
}

/// What a heap holds in the manager, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagesUsage {
    /// Chunks reserved.
    pub chunks: usize,
    /// Bytes reserved by the chunks.
    pub reserved_bytes: usize,
    /// Bytes of committed slabs.
    pub committed_bytes: usize,
}

impl Pages {
    /// No pages yet; slabs will be committed with `protect`.
    pub fn new(protect: Protection) -> Self {
        Self {
            chunks: [const { OnceLock::new() }; MAX_CHUNKS],
            arena: Mutex::default(),
            protect,
            committed_slabs: AtomicUsize::new(0),
        }
    }

    /// The class of the block starting at `address`, or `None` if it is
    /// not the start of a block of a carved slab of these pages. `hint` is
    /// the chunk the caller found last; it is tried first and updated.
    #[inline]
    pub fn locate(&self, address: usize, hint: &Cell<usize>) -> Option<Located> {
        // `% MAX_CHUNKS` (a power of two, so a mask): the index is in range
        // with no bounds check (hints are always below it).
        let chunk = match self.chunks[hint.get() % MAX_CHUNKS].get() {
            Some(c) if address.wrapping_sub(c.base) < c.size => c,
            _ => {
                let (i, c) = self
                    .chunks
                    .iter()
                    .map_while(OnceLock::get)
                    .enumerate()
                    .find(|(_, c)| address.wrapping_sub(c.base) < c.size)?;
                hint.set(i);
                c
            }
        };
        let offset = address - chunk.base;
        // `get`, not an index: `Free`'s hit path has no panicking branch.
        let meta = SlabMeta(
            chunk
                .slabs
                .get(offset >> SLAB_SHIFT)?
                .load(Ordering::Acquire),
        );
        (meta.is_carved() && meta.is_block_start(offset & (SLAB_SIZE - 1))).then(|| Located {
            class: meta.class(),
            debug: meta.is_debug(),
            batch: meta.batch(),
            cache_class: meta.cache_class(),
        })
    }

    /// Commits a new slab for `class` (a `DebugAlloc` slab if `debug`) and
    /// returns its blocks as a free list. A commit the budget refuses at
    /// `level` is `OverBudget` and leaves the slab for a later request.
    pub fn new_slab(
        &self,
        manager: &HostMemoryManager,
        class: usize,
        debug: bool,
        secret: usize,
        level: MemoryCriticalLevel,
    ) -> Result<FreeList, HostError> {
        let (c, s) = self.claim(manager, level)?;
        let chunk = self.chunks[c]
            .get()
            .expect("a claimed slab's chunk is installed");
        let start = chunk.base + (s << SLAB_SHIFT);
        let committed = manager.alloc_pages(
            &super::KEY,
            start,
            SLAB_SIZE,
            AllocationType::COMMIT,
            self.protect,
            level,
        );
        if let Err(e) = committed {
            self.arena.lock().spare.push((c, s));
            return Err(e);
        }
        let size = CLASS[class];
        let list = block::carve(start, size.size as usize, size.blocks, secret);
        // Published after carving: `locate` never sees a slab whose blocks
        // lack their cookies.
        chunk.slabs[s].store(SlabMeta::new(class, debug).0, Ordering::Release);
        self.committed_slabs.fetch_add(1, Ordering::Relaxed);
        Ok(list)
    }

    /// Takes a slab never committed (or given back), reserving a chunk if
    /// none is left.
    fn claim(
        &self,
        manager: &HostMemoryManager,
        level: MemoryCriticalLevel,
    ) -> Result<(usize, usize), HostError> {
        loop {
            let installed = {
                let mut arena = self.arena.lock();
                if let Some(slab) = arena.spare.pop() {
                    return Ok(slab);
                }
                if let Some(&(c, s)) = arena.cursors.last() {
                    let slabs = self.chunks[c].get().map_or(0, |chunk| chunk.slabs.len());
                    if s + 1 >= slabs {
                        arena.cursors.pop();
                    } else if let Some(cursor) = arena.cursors.last_mut() {
                        cursor.1 += 1;
                    }
                    return Ok((c, s));
                }
                arena.installed
            };
            if installed == MAX_CHUNKS {
                return Err(HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY));
            }
            // Reserve with no lock held; another thread may do the same,
            // and both chunks are kept.
            let (base, size) = self.reserve_chunk(manager, installed, level)?;
            let mut arena = self.arena.lock();
            if arena.installed == MAX_CHUNKS {
                drop(arena);
                let _ = manager.free_pages(&super::KEY, base, 0, FreeType::RELEASE);
                return Err(HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY));
            }
            let c = arena.installed;
            let chunk = Chunk {
                base,
                size,
                slabs: (0..size >> SLAB_SHIFT).map(|_| AtomicU64::new(0)).collect(),
            };
            if self.chunks[c].set(chunk).is_err() {
                unreachable!("chunks are installed in order under the arena lock");
            }
            arena.installed += 1;
            arena.cursors.push((c, 0));
        }
    }

    /// Reserves the `index`th chunk: `CHUNK_MIN << index` bytes up to
    /// `CHUNK_MAX`, or `CHUNK_MIN` if the address space refuses that much.
    fn reserve_chunk(
        &self,
        manager: &HostMemoryManager,
        index: usize,
        level: MemoryCriticalLevel,
    ) -> Result<(usize, usize), HostError> {
        let size = CHUNK_MIN << index.min((CHUNK_MAX / CHUNK_MIN).trailing_zeros() as usize);
        let reserve = |size| {
            manager.alloc_pages(
                &super::KEY,
                0,
                size,
                AllocationType::RESERVE,
                self.protect,
                level,
            )
        };
        match reserve(size) {
            Ok(base) => Ok((base, size)),
            Err(_) if size > CHUNK_MIN => reserve(CHUNK_MIN).map(|base| (base, CHUNK_MIN)),
            Err(e) => Err(e),
        }
    }

    /// What these pages hold in the manager.
    pub fn usage(&self) -> PagesUsage {
        let (chunks, reserved_bytes) = self
            .chunks
            .iter()
            .map_while(OnceLock::get)
            .fold((0, 0), |(n, bytes), c| (n + 1, bytes + c.size));
        PagesUsage {
            chunks,
            reserved_bytes,
            committed_bytes: self.committed_slabs.load(Ordering::Relaxed) * SLAB_SIZE,
        }
    }

    /// Releases every chunk (when the heap goes). Failures are ignored:
    /// they mean the manager already released everything (shut down).
    pub fn release(&mut self, manager: &HostMemoryManager) {
        for chunk in self.chunks.iter_mut().filter_map(OnceLock::take) {
            let _ = manager.free_pages(&super::KEY, chunk.base, 0, FreeType::RELEASE);
        }
        *self.committed_slabs.get_mut() = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostConfig;

    const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;

    #[test]
    fn slabs_are_committed_carved_and_located() {
        let manager = HostMemoryManager::new(HostConfig::default()).unwrap();
        let mut pages = Pages::new(Protection::READWRITE);
        let secret = 0x1234_5678_9abc_def7;
        let list = pages.new_slab(&manager, 3, false, secret, LEVEL).unwrap();
        assert_eq!(list.len(), CLASS[3].blocks);
        let blocks = list.blocks();
        let hint = Cell::new(0);
        for &b in &blocks {
            assert_eq!(
                pages.locate(b, &hint),
                Some(Located {
                    class: 3,
                    debug: false,
                    batch: CLASS[3].batch,
                    cache_class: 3,
                })
            );
            assert_eq!(pages.locate(b + 16, &hint), None, "interior");
        }
        // The tail of the slab no block covers.
        let tail = blocks[0] + CLASS[3].blocks as usize * CLASS[3].size as usize;
        assert_eq!(pages.locate(tail, &hint), None);
        // The next slab is reserved, not carved.
        assert_eq!(pages.locate(blocks[0] + SLAB_SIZE, &hint), None);
        let debug = pages.new_slab(&manager, 0, true, secret, LEVEL).unwrap();
        assert!(pages.locate(debug.blocks()[0], &hint).unwrap().debug);
        assert_eq!(
            pages.usage(),
            PagesUsage {
                chunks: 1,
                reserved_bytes: CHUNK_MIN,
                committed_bytes: 2 * SLAB_SIZE
            }
        );
        assert_eq!(manager.statistics().committed_bytes, 2 * SLAB_SIZE);
        pages.release(&manager);
        assert_eq!(manager.statistics().regions, 0);
    }

    #[test]
    fn chunks_grow_and_are_found_from_any_hint() {
        let manager = HostMemoryManager::new(HostConfig::default()).unwrap();
        let mut pages = Pages::new(Protection::READWRITE);
        let per_first_chunk = CHUNK_MIN / SLAB_SIZE;
        let mut firsts = Vec::new();
        for _ in 0..per_first_chunk + 2 {
            let list = pages
                .new_slab(&manager, CLASS.len() - 1, false, 7, LEVEL)
                .unwrap();
            firsts.push(list.blocks()[0]);
        }
        let usage = pages.usage();
        assert_eq!(usage.chunks, 2);
        assert_eq!(usage.reserved_bytes, CHUNK_MIN + 2 * CHUNK_MIN);
        for &b in &firsts {
            for start_hint in [0, 1, 5, MAX_CHUNKS + 3] {
                let hint = Cell::new(start_hint);
                assert!(pages.locate(b, &hint).is_some());
            }
        }
        pages.release(&manager);
        assert_eq!(manager.statistics().regions, 0);
    }
}
