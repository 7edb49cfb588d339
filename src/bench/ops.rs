//! The operations the benchmarks time, each as a function that does one
//! unit of work: through the host (`HostMemoryManager`), through the bare
//! engine (`AddressSpace`), and as the raw syscall sequence that does the
//! same work. `hostmem bench` and the criterion benches (`benches/engine.rs`)
//! both call these, so they measure the same thing.
//!
//! The raw side uses the same kernel flags as hostmem's unix backend
//! (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, through rustix), so a
//! ratio isolates what hostmem adds on top of the syscalls it needs.
#![allow(unsafe_code)]

use crate::engine::AddressSpace;
use crate::ffi::com::{ComMemoryManager, IHostMalloc, IHostMemoryManager, IUnknown};
use crate::heap::{HostMalloc, MallocType};
use crate::host::{HResult, HostMemoryManager, MemoryCriticalLevel};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection};
use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;

/// 64 KiB: the allocation granularity, the size figures 1, 3 and 7 use.
pub const SMALL: usize = 0x1_0000;
/// 256 MiB: the reservation of figure 2.
pub const LARGE: usize = 0x1000_0000;
/// The reservation figure 3 commits and decommits inside: 1 MiB.
pub const COMMIT_RESERVATION: usize = 0x10_0000;
/// Where in that reservation figure 3 commits (so the kernel splits and
/// merges the mapping, as a commit inside a larger reservation does).
pub const COMMIT_OFFSET: usize = 0x1_0000;

const FLAGS: MapFlags = MapFlags::PRIVATE.union(MapFlags::NORESERVE);
const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
const RESERVE_COMMIT: AllocationType = AllocationType::RESERVE.union(AllocationType::COMMIT);

/// Writes one byte at `addr` (the page fault is part of the work
/// measured).
///
/// # Safety
///
/// `addr` lies in a committed, writable page that the caller mapped or
/// committed itself and that nothing else references.
unsafe fn touch(addr: usize) {
    // SAFETY: the caller's contract.
    unsafe { (addr as *mut u8).write_volatile(1) }
}

/// `mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`.
pub(super) fn raw_map(len: usize, prot: ProtFlags) -> usize {
    // SAFETY: no MAP_FIXED: the kernel picks free address space, so no
    // existing mapping is affected.
    unsafe { mm::mmap_anonymous(std::ptr::null_mut(), len, prot, FLAGS) }.expect("mmap") as usize
}

/// `munmap(addr, len)`.
///
/// # Safety
///
/// The range is a mapping the caller made with [`raw_map`] and holds no
/// references into.
pub(super) unsafe fn raw_unmap(addr: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { mm::munmap(addr as *mut c_void, len) }.expect("munmap");
}

/// `mprotect(addr, len, prot)`.
///
/// # Safety
///
/// The range lies in a mapping the caller made with [`raw_map`] and
/// references nothing that `prot` would break.
unsafe fn raw_protect(addr: usize, len: usize, prot: MprotectFlags) {
    // SAFETY: the caller's contract.
    unsafe { mm::mprotect(addr as *mut c_void, len, prot) }.expect("mprotect");
}

/// `madvise(addr, len, MADV_DONTNEED)`.
///
/// # Safety
///
/// The range lies in a private anonymous mapping the caller made with
/// [`raw_map`], whose contents it means to drop.
unsafe fn raw_discard(addr: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { mm::madvise(addr as *mut c_void, len, Advice::LinuxDontNeed) }.expect("madvise");
}

/// A private anonymous mapping the benchmarks' raw side owns (`mmap` with
/// the backend's flags); unmapped when dropped. Only this module can reach
/// its address's memory.
pub struct RawMapping {
    addr: usize,
    len: usize,
}

impl RawMapping {
    /// `mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)`.
    ///
    /// # Panics
    ///
    /// If the kernel refuses (the benchmark cannot go on).
    pub fn new(len: usize, prot: ProtFlags) -> Self {
        Self {
            addr: raw_map(len, prot),
            len,
        }
    }

    /// Its address: memory that is not the host's (a foreign address to
    /// give the manager).
    pub fn addr(&self) -> usize {
        self.addr
    }
}

impl Drop for RawMapping {
    fn drop(&mut self) {
        // SAFETY: made by `raw_map` in `new`; nothing references it (the
        // address only ever went to the manager, which refuses it).
        unsafe { raw_unmap(self.addr, self.len) }
    }
}

/// Figure 1, raw: `mmap` 64 KiB read-write, touch one page, `munmap`.
pub fn raw_alloc_touch_free() {
    let at = raw_map(SMALL, ProtFlags::READ | ProtFlags::WRITE);
    // SAFETY: a read-write mapping just made here, referenced by nothing,
    // unmapped once.
    unsafe {
        touch(at);
        raw_unmap(at, SMALL);
    }
}

/// Figure 1, host: `VirtualAlloc(NULL, 64 KiB, MEM_RESERVE | MEM_COMMIT,
/// PAGE_READWRITE)`, touch one page, `VirtualFree(MEM_RELEASE)`.
pub fn host_alloc_touch_free(host: &HostMemoryManager) {
    let at = host
        .virtual_alloc(0, SMALL, RESERVE_COMMIT, Protection::READWRITE, LEVEL)
        .expect("VirtualAlloc");
    // SAFETY: a new read-write region of the runtime's, which this
    // function reserved and no one else knows.
    unsafe { touch(at) };
    host.virtual_free(at, 0, FreeType::RELEASE)
        .expect("VirtualFree");
}

/// Figure 1, bare engine: the same calls on an [`AddressSpace`].
pub fn engine_alloc_touch_free(space: &mut AddressSpace) {
    let at = space
        .virtual_alloc(0, SMALL, RESERVE_COMMIT, Protection::READWRITE)
        .expect("VirtualAlloc");
    // SAFETY: a new read-write region, which this function reserved and
    // no one else knows.
    unsafe { touch(at) };
    space
        .virtual_free(at, 0, FreeType::RELEASE)
        .expect("VirtualFree");
}

/// Figure 2, raw: `mmap(PROT_NONE)` 256 MiB and `munmap`.
pub fn raw_reserve_release() {
    let at = raw_map(LARGE, ProtFlags::empty());
    // SAFETY: the mapping just made; nothing references it.
    unsafe { raw_unmap(black_box(at), LARGE) };
}

/// Figure 2, host: `VirtualAlloc(NULL, 256 MiB, MEM_RESERVE,
/// PAGE_READWRITE)` and `VirtualFree(MEM_RELEASE)`.
pub fn host_reserve_release(host: &HostMemoryManager) {
    let at = host
        .virtual_alloc(
            0,
            LARGE,
            AllocationType::RESERVE,
            Protection::READWRITE,
            LEVEL,
        )
        .expect("VirtualAlloc");
    host.virtual_free(at, 0, FreeType::RELEASE)
        .expect("VirtualFree");
}

/// Figure 2, bare engine.
pub fn engine_reserve_release(space: &mut AddressSpace) {
    let at = space
        .virtual_alloc(0, LARGE, AllocationType::RESERVE, Protection::READWRITE)
        .expect("VirtualAlloc");
    space
        .virtual_free(at, 0, FreeType::RELEASE)
        .expect("VirtualFree");
}

/// Figure 3, raw: in `raw`, a `PROT_NONE` mapping of at least
/// [`COMMIT_RESERVATION`] bytes, `mprotect` 64 KiB read-write, touch,
/// `madvise(MADV_DONTNEED)`, `mprotect(PROT_NONE)`.
///
/// # Panics
///
/// If `raw` is smaller.
pub fn raw_commit_touch_decommit(raw: &mut RawMapping) {
    // SAFETY: `raw` is borrowed exclusively: no other thread is in it.
    unsafe { raw_commit_touch_decommit_shared(raw) }
}

/// [`raw_commit_touch_decommit`] in a mapping several threads can reach
/// (figure 9 gives each of its threads one of a set).
///
/// # Safety
///
/// No other thread works in `raw` at the same time.
///
/// # Panics
///
/// If `raw` is smaller than [`COMMIT_RESERVATION`].
pub unsafe fn raw_commit_touch_decommit_shared(raw: &RawMapping) {
    assert!(raw.len >= COMMIT_RESERVATION, "figure 3 needs 1 MiB");
    let at = raw.addr + COMMIT_OFFSET;
    // SAFETY: inside a mapping `raw` owns, whose memory nothing references
    // (only these functions reach it) and in which no other thread works
    // (the caller's contract).
    unsafe {
        raw_protect(at, SMALL, MprotectFlags::READ | MprotectFlags::WRITE);
        touch(at);
        raw_discard(at, SMALL);
        raw_protect(at, SMALL, MprotectFlags::empty());
    }
}

/// Figure 3's raw sequence through libc's wrappers (`mprotect`,
/// `madvise`), each a function call that returns after its system call,
/// as a C program makes them; the reference above makes the system calls
/// inline. Information beside the target, not its reference.
///
/// # Panics
///
/// If `raw` is smaller than [`COMMIT_RESERVATION`], or a call fails.
pub fn libc_commit_touch_decommit(raw: &mut RawMapping) {
    assert!(raw.len >= COMMIT_RESERVATION, "figure 3 needs 1 MiB");
    let at = (raw.addr + COMMIT_OFFSET) as *mut libc::c_void;
    // SAFETY: inside a mapping `raw` owns and borrows exclusively, whose
    // memory nothing references (only these functions reach it).
    unsafe {
        assert_eq!(
            libc::mprotect(at, SMALL, libc::PROT_READ | libc::PROT_WRITE),
            0
        );
        touch(at as usize);
        assert_eq!(libc::madvise(at, SMALL, libc::MADV_DONTNEED), 0);
        assert_eq!(libc::mprotect(at, SMALL, libc::PROT_NONE), 0);
    }
}

/// Figure 3's raw sequence made as an API that does nothing but the
/// system calls would make it: a commit function and a decommit function,
/// each called and each returning to its caller after its system calls,
/// where the reference makes all three inline in one function. What any
/// API's figure 3 reads at best. Information beside the target.
///
/// # Panics
///
/// If `raw` is smaller than [`COMMIT_RESERVATION`], or a call fails.
pub fn api_floor_commit_touch_decommit(raw: &mut RawMapping) {
    /// The commit: one system call, then back to the caller.
    ///
    /// # Safety
    ///
    /// As `raw_protect`'s.
    #[inline(never)]
    unsafe fn commit(at: usize) {
        // SAFETY: the caller's contract.
        unsafe { raw_protect(at, SMALL, MprotectFlags::READ | MprotectFlags::WRITE) }
    }
    /// The decommit: two system calls, then back to the caller.
    ///
    /// # Safety
    ///
    /// As `raw_discard`'s and `raw_protect`'s.
    #[inline(never)]
    unsafe fn decommit(at: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            raw_discard(at, SMALL);
            raw_protect(at, SMALL, MprotectFlags::empty());
        }
    }
    assert!(raw.len >= COMMIT_RESERVATION, "figure 3 needs 1 MiB");
    let at = raw.addr + COMMIT_OFFSET;
    // SAFETY: inside a mapping `raw` owns and borrows exclusively, whose
    // memory nothing references (only these functions reach it).
    unsafe {
        commit(at);
        touch(at);
        decommit(at);
    }
}

/// Figure 3, host: in a reservation at `base` ([`COMMIT_RESERVATION`]
/// bytes), `VirtualAlloc(MEM_COMMIT)` 64 KiB, touch,
/// `VirtualFree(MEM_DECOMMIT)`.
///
/// # Safety
///
/// `base` is a reservation [`host_commit_reservation`] made on `host`, still
/// live, whose memory nothing else uses (the call writes into it).
pub unsafe fn host_commit_touch_decommit(host: &HostMemoryManager, base: usize) {
    let at = base + COMMIT_OFFSET;
    host.virtual_alloc(
        at,
        SMALL,
        AllocationType::COMMIT,
        Protection::READWRITE,
        LEVEL,
    )
    .expect("VirtualAlloc");
    // SAFETY: just committed read-write, in the caller's reservation that
    // nothing else uses (the contract).
    unsafe { touch(at) };
    host.virtual_free(at, SMALL, FreeType::DECOMMIT)
        .expect("VirtualFree");
}

/// Figure 3, bare engine.
///
/// # Safety
///
/// `base` is a reservation [`engine_commit_reservation`] made in `space`,
/// still live, whose memory nothing else uses (the call writes into it).
pub unsafe fn engine_commit_touch_decommit(space: &mut AddressSpace, base: usize) {
    let at = base + COMMIT_OFFSET;
    space
        .virtual_alloc(at, SMALL, AllocationType::COMMIT, Protection::READWRITE)
        .expect("VirtualAlloc");
    // SAFETY: just committed read-write, in the caller's reservation that
    // nothing else uses (the contract).
    unsafe { touch(at) };
    space
        .virtual_free(at, SMALL, FreeType::DECOMMIT)
        .expect("VirtualFree");
}

/// Reserves the reservation figure 3 works in, through the host.
pub fn host_commit_reservation(host: &HostMemoryManager) -> usize {
    host.virtual_alloc(
        0,
        COMMIT_RESERVATION,
        AllocationType::RESERVE,
        Protection::READWRITE,
        LEVEL,
    )
    .expect("VirtualAlloc")
}

/// Reserves the reservation figure 3 works in, in a bare engine.
pub fn engine_commit_reservation(space: &mut AddressSpace) -> usize {
    space
        .virtual_alloc(
            0,
            COMMIT_RESERVATION,
            AllocationType::RESERVE,
            Protection::READWRITE,
        )
        .expect("VirtualAlloc")
}

/// `VirtualQuery` through the host; panics on failure.
pub fn host_query(host: &HostMemoryManager, addr: usize) -> MemoryBasicInformation {
    host.virtual_query(addr).expect("VirtualQuery")
}

/// Figure 5: `VirtualFree(MEM_RELEASE)` of an address the host did not
/// allocate; returns whether it answered `HOST_E_INVALIDOPERATION`.
pub fn host_free_foreign(host: &HostMemoryManager, addr: usize) -> bool {
    host.virtual_free(addr, 0, FreeType::RELEASE) == Err(crate::host::HostError::NotHostMemory)
}

/// Makes `count` live reservations of 64 KiB each in `host`, each exactly
/// one kernel mapping: they alternate between reserved (`PROT_NONE`) and
/// committed read-write, so that neighbours never merge into one mapping
/// and no reservation is split in several. Returns their bases.
pub fn host_populate(host: &HostMemoryManager, count: usize) -> Vec<usize> {
    (0..count)
        .map(|i| {
            let kind = if i % 2 == 0 {
                AllocationType::RESERVE
            } else {
                RESERVE_COMMIT
            };
            host.virtual_alloc(0, SMALL, kind, Protection::READWRITE, LEVEL)
                .expect("VirtualAlloc")
        })
        .collect()
}

unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

/// The C library's `malloc` then `free` of `size` bytes (figure 8's
/// reference); touches the first byte so the block is really used.
pub fn libc_malloc_free(size: usize) {
    // SAFETY: malloc and free are the C library's; the block is written
    // within its size (at least one byte) and freed once.
    unsafe {
        let p = malloc(size).cast::<u8>();
        assert!(!p.is_null(), "malloc");
        p.write_volatile(1);
        free(black_box(p).cast());
    }
}

/// A small, fast pseudo-random sequence (xorshift64*), so that the
/// addresses and sizes the benchmarks use are the same in every run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }
}

/// `count` allocation sizes drawn uniformly from 16 to 1024 bytes
/// (figure 8).
pub fn malloc_sizes(count: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..count).map(|_| 16 + rng.below(1024 - 16 + 1)).collect()
}

/// `count` addresses drawn at random inside the reservations at `bases`
/// (each 64 KiB), page-aligned or not.
pub fn random_addresses(bases: &[usize], count: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| bases[rng.below(bases.len())] + rng.below(SMALL))
        .collect()
}

/// Figure 8's heap: an `IHostMalloc` reached through the COM vtable (what
/// the runtime calls) when `CreateMalloc` works, else through the Rust API.
pub enum BenchHeap {
    /// Through `IHostMemoryManager::CreateMalloc` and the `IHostMalloc`
    /// vtable; both objects are released on drop.
    Com {
        /// The `IHostMemoryManager*`, one reference owned.
        manager: *mut IHostMemoryManager,
        /// The `IHostMalloc*`, one reference owned.
        heap: *mut IHostMalloc,
    },
    /// Through [`HostMalloc`]'s methods.
    Rust(Arc<HostMalloc>),
}

impl BenchHeap {
    /// A thread-safe heap through the COM vtable, or the HRESULT
    /// `CreateMalloc` answered.
    pub fn com(host: Arc<HostMemoryManager>) -> Result<Self, HResult> {
        let manager = ComMemoryManager::create(host);
        let mut heap = std::ptr::null_mut();
        // SAFETY: `manager` is a live object just made, with one reference
        // that this function owns; `heap` is writable.
        let hr = unsafe {
            ((*(*manager).vtbl).create_malloc)(manager, MallocType::THREADSAFE.bits(), &mut heap)
        };
        if hr == HResult::S_OK && !heap.is_null() {
            Ok(Self::Com { manager, heap })
        } else {
            release(manager.cast());
            Err(hr)
        }
    }

    /// A thread-safe heap through the Rust API.
    pub fn rust(host: &Arc<HostMemoryManager>) -> Self {
        Self::Rust(
            host.create_malloc(MallocType::THREADSAFE)
                .expect("CreateMalloc"),
        )
    }

    /// Whether calls go through the COM vtable.
    pub fn is_com(&self) -> bool {
        matches!(self, Self::Com { .. })
    }

    /// `Alloc(size)`, a write to the block's first byte, `Free`.
    pub fn alloc_free(&self, size: usize) {
        match self {
            Self::Com { heap, .. } => {
                let mut p = std::ptr::null_mut();
                // SAFETY: `heap` is a live IHostMalloc this value holds a
                // reference on; `p` is writable; the block is written within
                // its size and freed once.
                unsafe {
                    let vtbl = &*(**heap).vtbl;
                    let hr = (vtbl.alloc)(*heap, size, LEVEL as u32, &mut p);
                    assert!(hr == HResult::S_OK && !p.is_null(), "IHostMalloc::Alloc");
                    p.cast::<u8>().write_volatile(1);
                    (vtbl.free)(*heap, black_box(p));
                }
            }
            Self::Rust(heap) => {
                let p = heap.alloc(size, LEVEL).expect("IHostMalloc::Alloc");
                // SAFETY: a block of at least one byte just allocated
                // from a heap of the host's, known to no one else.
                unsafe { touch(p) };
                heap.free(black_box(p)).expect("IHostMalloc::Free");
            }
        }
    }
}

fn release(object: *mut IUnknown) {
    // SAFETY: the callers pass an object on which they own a reference and
    // which they do not use afterwards.
    unsafe {
        ((*(*object).vtbl).release)(object);
    }
}

impl Drop for BenchHeap {
    fn drop(&mut self) {
        if let Self::Com { manager, heap } = *self {
            release(heap.cast());
            release(manager.cast());
        }
    }
}

// SAFETY: hostmem's COM objects are safe to call from any thread (the
// contract of the COM face).
unsafe impl Send for BenchHeap {}
// SAFETY: as above.
unsafe impl Sync for BenchHeap {}

/// The churn phase of the "after churn" figures: 2,000 cycles that each
/// reserve and commit 64 KiB, touch it, and release a reservation made
/// earlier (a random one of the last 64, as an allocator's spans come and
/// go), then the release of the rest. It leaves no reservation but leaves
/// the placement cursor moved and the kernel's page tables as a real
/// process's. `alloc`/`free` are the face churned (Rust or C API).
///
/// Private: `alloc` must return a new read-write region of 64 KiB that
/// nothing else uses, which its two callers' `VirtualAlloc(MEM_RESERVE |
/// MEM_COMMIT)` does.
fn churn(alloc: &mut dyn FnMut() -> usize, free: &mut dyn FnMut(usize)) {
    let mut rng = Rng::new(15);
    let mut live = Vec::with_capacity(65);
    for _ in 0..2_000 {
        let at = alloc();
        // SAFETY: a region just reserved and committed read-write for this
        // function alone (see above).
        unsafe { touch(at) };
        live.push(at);
        if live.len() > 64 {
            free(live.swap_remove(rng.below(live.len())));
        }
    }
    for at in live {
        free(at);
    }
}

/// The churn phase (see `churn`) through the Rust API of `host`.
pub fn host_churn(host: &HostMemoryManager) {
    churn(
        &mut || {
            host.virtual_alloc(0, SMALL, RESERVE_COMMIT, Protection::READWRITE, LEVEL)
                .expect("VirtualAlloc")
        },
        &mut |at| {
            host.virtual_free(at, 0, FreeType::RELEASE)
                .expect("VirtualFree");
        },
    );
}

/// The flat C API (`hostmem_Virtual*`, on the process's default manager),
/// as a C caller reaches it.
pub mod flat {
    use super::{FreeType, LARGE, Protection, RESERVE_COMMIT, SMALL, touch};
    use crate::ffi::flat::{hostmem_VirtualAlloc, hostmem_VirtualFree, hostmem_VirtualQuery};
    use crate::win32::AllocationType;
    use std::ffi::c_void;

    /// `VirtualAlloc`; panics on failure.
    pub fn alloc(address: usize, size: usize, kind: AllocationType, protect: Protection) -> usize {
        // SAFETY: the address only names pages; a reserve makes new ones,
        // a commit is of pages the benchmark reserved itself.
        let p = unsafe {
            hostmem_VirtualAlloc(
                std::ptr::with_exposed_provenance_mut(address),
                size,
                kind.bits(),
                protect.bits(),
            )
        };
        assert!(!p.is_null(), "hostmem_VirtualAlloc");
        p.addr()
    }

    /// `VirtualFree`; returns whether it succeeded.
    pub fn free(address: usize, size: usize, free_type: FreeType) -> bool {
        // SAFETY: the benchmark frees only its own pages, which nobody
        // uses afterwards (or foreign ones, which are refused).
        unsafe {
            hostmem_VirtualFree(
                std::ptr::with_exposed_provenance_mut(address),
                size,
                free_type.bits(),
            ) != 0
        }
    }

    /// `VirtualQuery`; returns the region size (panics on failure).
    pub fn query(address: usize) -> usize {
        let mut mbi = [0u64; 6];
        // SAFETY: `mbi` is 48 writable, 8-byte aligned bytes.
        let n = unsafe {
            hostmem_VirtualQuery(
                std::ptr::with_exposed_provenance(address),
                mbi.as_mut_ptr().cast::<c_void>(),
                48,
            )
        };
        assert_eq!(n, 48, "hostmem_VirtualQuery");
        mbi[3] as usize
    }

    /// Figure 1 through the C API.
    pub fn alloc_touch_free() {
        let at = alloc(0, SMALL, RESERVE_COMMIT, Protection::READWRITE);
        // SAFETY: a new read-write region, which this function reserved
        // and no one else knows.
        unsafe { touch(at) };
        assert!(free(at, 0, FreeType::RELEASE));
    }

    /// Figure 2 through the C API.
    pub fn reserve_release() {
        let at = alloc(0, LARGE, AllocationType::RESERVE, Protection::READWRITE);
        assert!(free(std::hint::black_box(at), 0, FreeType::RELEASE));
    }

    /// Figure 3 through the C API, in a reservation at `base`.
    ///
    /// # Safety
    ///
    /// `base` is a reservation [`commit_reservation`] made, still live,
    /// whose memory nothing else uses (the call writes into it).
    pub unsafe fn commit_touch_decommit(base: usize) {
        let at = base + super::COMMIT_OFFSET;
        alloc(at, SMALL, AllocationType::COMMIT, Protection::READWRITE);
        // SAFETY: just committed read-write, in the caller's reservation
        // that nothing else uses (the contract).
        unsafe { touch(at) };
        assert!(free(at, SMALL, FreeType::DECOMMIT));
    }

    /// The reservation figure 3 works in.
    pub fn commit_reservation() -> usize {
        alloc(
            0,
            super::COMMIT_RESERVATION,
            AllocationType::RESERVE,
            Protection::READWRITE,
        )
    }

    /// The churn phase (see `churn` above) through the C API.
    pub fn churn() {
        super::churn(
            &mut || alloc(0, SMALL, RESERVE_COMMIT, Protection::READWRITE),
            &mut |at| assert!(free(at, 0, FreeType::RELEASE)),
        );
    }

    /// [`host_populate`](super::host_populate) through the C API.
    pub fn populate(count: usize) -> Vec<usize> {
        (0..count)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    AllocationType::RESERVE
                } else {
                    RESERVE_COMMIT
                };
                alloc(0, SMALL, kind, Protection::READWRITE)
            })
            .collect()
    }
}
