//! The write-watch figures: what `GetWriteWatch` with reset costs a
//! collector, against finding written pages the naive Linux way
//! (soft-dirty bits: read `/proc/self/pagemap`, then write `4` to
//! `/proc/self/clear_refs`) and Wine's way (`mprotect` the heap read-only,
//! a SIGSEGV handler marks the page and makes it writable; the benchmark
//! may install a handler, which the library itself never does); and what
//! a write watch adds to the first writes of freshly committed pages.
//!
//! The operations are public so the criterion benches
//! (`benches/engine.rs`) time the same work.
#![allow(unsafe_code)]

use super::measure::{Side, interleaved};
use super::report::{Figure, Row};
use crate::engine::AddressSpace;
use crate::host::{HostConfig, HostMemoryManager, MemoryCriticalLevel};
use crate::win32::{AllocationType, FreeType, PAGE_SIZE, Protection, WRITE_WATCH_FLAG_RESET};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The watched reservation of the collector figure: 256 MiB.
pub const HEAP: usize = 0x1000_0000;
/// One page in this many is written each round: 1 %.
pub const STRIDE: usize = 100;
/// The committed range of the first-write figure: 1 MiB.
pub const FIRST_WRITE: usize = 0x10_0000;

const WATCHED: AllocationType = AllocationType::RESERVE
    .union(AllocationType::COMMIT)
    .union(AllocationType::WRITE_WATCH);

/// Writes one byte to one page in [`STRIDE`] of `[base, base + len)`,
/// which must be committed read-write and the caller's alone.
fn dirty(base: usize, len: usize, round: u8) {
    for page in (base..base + len).step_by(STRIDE * PAGE_SIZE) {
        // SAFETY: the callers pass their own committed read-write range,
        // which nothing else references.
        unsafe { (page as *mut u8).write_volatile(round) };
    }
}

/// A collector's heap: a 256 MiB watched reservation, committed, of which
/// each round writes 1 % of the pages and then collects them with
/// `GetWriteWatch(WRITE_WATCH_FLAG_RESET)`.
pub struct WatchedHeap {
    host: Arc<HostMemoryManager>,
    base: usize,
    round: u8,
    found: Vec<usize>,
}

impl WatchedHeap {
    /// The heap, or `None` where the kernel cannot watch writes.
    pub fn new() -> Option<Self> {
        let host = HostMemoryManager::new(HostConfig::default()).ok()?;
        let base = host
            .virtual_alloc(
                0,
                HEAP,
                WATCHED,
                Protection::READWRITE,
                MemoryCriticalLevel::TaskCritical,
            )
            .ok()?;
        Some(Self {
            host,
            base,
            round: 0,
            found: Vec::with_capacity(HEAP / PAGE_SIZE),
        })
    }

    /// One round: write 1 % of the pages, then collect and reset them.
    /// Returns the number of pages reported.
    pub fn round(&mut self) -> usize {
        self.round = self.round.wrapping_add(1);
        dirty(self.base, HEAP, self.round);
        self.found.clear();
        self.host
            .get_write_watch(
                WRITE_WATCH_FLAG_RESET,
                self.base,
                HEAP,
                HEAP / PAGE_SIZE,
                &mut self.found,
            )
            .expect("GetWriteWatch of the heap");
        self.found.len()
    }
}

impl Drop for WatchedHeap {
    fn drop(&mut self) {
        let _ = self.host.virtual_free(self.base, 0, FreeType::RELEASE);
    }
}

/// The same heap and work, with written pages found through soft-dirty
/// bits: read the heap's 64 Ki pagemap entries, keep those with bit 55
/// set, then clear every soft-dirty bit of the process through
/// `/proc/self/clear_refs`.
pub struct SoftDirtyHeap {
    base: usize,
    pagemap: File,
    clear_refs: File,
    entries: Vec<u8>,
    round: u8,
}

impl SoftDirtyHeap {
    /// The heap, or `None` where the kernel keeps no soft-dirty bits.
    pub fn new() -> Option<Self> {
        let base = super::ops::raw_map(
            HEAP,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
        );
        let mut heap = Self {
            base,
            pagemap: File::open("/proc/self/pagemap").ok()?,
            clear_refs: std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/self/clear_refs")
                .ok()?,
            entries: vec![0; HEAP / PAGE_SIZE * 8],
            round: 0,
        };
        // Soft-dirty works if a round finds exactly the pages it wrote.
        heap.round();
        (heap.round() == HEAP / PAGE_SIZE / STRIDE + 1).then_some(heap)
    }

    /// One round: write 1 % of the pages, read their soft-dirty bits,
    /// clear them. Returns the number of pages found written.
    pub fn round(&mut self) -> usize {
        self.round = self.round.wrapping_add(1);
        dirty(self.base, HEAP, self.round);
        let offset = (self.base / PAGE_SIZE * 8) as u64;
        if self
            .pagemap
            .read_exact_at(&mut self.entries, offset)
            .is_err()
        {
            return 0;
        }
        let written = self
            .entries
            .chunks_exact(8)
            .filter(|e| u64::from_ne_bytes((*e).try_into().expect("8 bytes")) & (1 << 55) != 0)
            .count();
        let _ = self.clear_refs.write_all(b"4");
        written
    }
}

impl Drop for SoftDirtyHeap {
    fn drop(&mut self) {
        // SAFETY: the heap's own mapping, made in `new`; nothing refers
        // into it once the heap goes.
        unsafe { super::ops::raw_unmap(self.base, HEAP) };
    }
}

/// Wine's emulation: the heap read-only between collections; a SIGSEGV
/// handler marks the faulting page and makes it writable.
pub struct SignalHeap {
    base: usize,
    previous: libc::sigaction,
    round: u8,
    found: Vec<usize>,
}

/// The heap the SIGSEGV handler serves (one at a time).
static SIGNAL_HEAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// One mark per page of that heap.
static SIGNAL_MARKS: std::sync::Mutex<Vec<std::sync::atomic::AtomicBool>> =
    std::sync::Mutex::new(Vec::new());
/// The marks, reachable from the handler without a lock.
static SIGNAL_MARKS_PTR: std::sync::atomic::AtomicPtr<std::sync::atomic::AtomicBool> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_segv(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    use std::sync::atomic::Ordering;
    let base = SIGNAL_HEAP.load(Ordering::Acquire);
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV.
    let addr = unsafe { (*info).si_addr() } as usize;
    let marks = SIGNAL_MARKS_PTR.load(Ordering::Acquire);
    if base == 0 || marks.is_null() || !(base..base + HEAP).contains(&addr) {
        // Not ours: the default action, at once.
        // SAFETY: restoring the default disposition and re-raising is
        // async-signal-safe.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
        return;
    }
    let page = (addr - base) / PAGE_SIZE;
    // SAFETY: `marks` holds one flag per page of the heap while it is set.
    unsafe { (*marks.add(page)).store(true, Ordering::Relaxed) };
    // SAFETY: the page is the benchmark's own; mprotect is async-signal-safe.
    unsafe {
        libc::mprotect(
            (base + page * PAGE_SIZE) as *mut libc::c_void,
            PAGE_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
        );
    }
}

impl SignalHeap {
    /// The heap, with the handler installed (the previous one comes back
    /// when the heap is dropped).
    pub fn new() -> Option<Self> {
        use std::sync::atomic::Ordering;
        let base = super::ops::raw_map(
            HEAP,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
        );
        let mut marks = SIGNAL_MARKS.lock().ok()?;
        *marks = (0..HEAP / PAGE_SIZE)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        SIGNAL_MARKS_PTR.store(marks.as_ptr().cast_mut(), Ordering::Release);
        drop(marks);
        SIGNAL_HEAP.store(base, Ordering::Release);
        // SAFETY: a zeroed sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_segv as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        // SAFETY: a zeroed sigaction, to receive the previous one.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both point to valid sigactions; the handler only touches
        // the benchmark's heap and forwards every other fault.
        if unsafe { libc::sigaction(libc::SIGSEGV, &action, &mut previous) } != 0 {
            return None;
        }
        let mut heap = Self {
            base,
            previous,
            round: 0,
            found: Vec::with_capacity(HEAP / PAGE_SIZE),
        };
        heap.round();
        Some(heap)
    }

    /// One round: write 1 % of the pages (a fault each), collect the
    /// marks, protect the heap again.
    pub fn round(&mut self) -> usize {
        use std::sync::atomic::Ordering;
        self.round = self.round.wrapping_add(1);
        dirty(self.base, HEAP, self.round);
        self.found.clear();
        let marks = SIGNAL_MARKS_PTR.load(Ordering::Acquire);
        for page in 0..HEAP / PAGE_SIZE {
            // SAFETY: one flag per page while the heap lives.
            let mark = unsafe { &*marks.add(page) };
            if mark.swap(false, Ordering::Relaxed) {
                self.found.push(self.base + page * PAGE_SIZE);
            }
        }
        // SAFETY: the heap is this object's own mapping.
        unsafe {
            libc::mprotect(self.base as *mut libc::c_void, HEAP, libc::PROT_READ);
        }
        self.found.len()
    }
}

impl Drop for SignalHeap {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        // SAFETY: puts back the handler saved in `new`.
        unsafe { libc::sigaction(libc::SIGSEGV, &self.previous, std::ptr::null_mut()) };
        SIGNAL_HEAP.store(0, Ordering::Release);
        SIGNAL_MARKS_PTR.store(std::ptr::null_mut(), Ordering::Release);
        // SAFETY: the heap's own mapping, made in `new`; nothing refers
        // into it once the heap goes.
        unsafe { super::ops::raw_unmap(self.base, HEAP) };
    }
}

/// Commits 1 MiB, writes every page once, decommits it: in a watched
/// reservation or an ordinary one.
pub struct FirstWrites {
    space: AddressSpace,
    base: usize,
}

impl FirstWrites {
    /// A 1 MiB reservation, watched or not; `None` if the kernel cannot
    /// watch writes and `watched` is asked for.
    pub fn new(watched: bool) -> Option<Self> {
        let mut space = AddressSpace::new();
        let kind = if watched {
            AllocationType::RESERVE | AllocationType::WRITE_WATCH
        } else {
            AllocationType::RESERVE
        };
        let base = space
            .virtual_alloc(0, FIRST_WRITE, kind, Protection::READWRITE)
            .ok()?;
        Some(Self { space, base })
    }

    /// One unit: commit, first write of each page, decommit.
    pub fn run(&mut self) {
        self.space
            .virtual_alloc(
                self.base,
                FIRST_WRITE,
                AllocationType::COMMIT,
                Protection::READWRITE,
            )
            .expect("commit");
        for page in (self.base..self.base + FIRST_WRITE).step_by(PAGE_SIZE) {
            // SAFETY: committed read-write just above, this object's own.
            unsafe { (page as *mut u8).write_volatile(1) };
        }
        self.space
            .virtual_free(self.base, FIRST_WRITE, FreeType::DECOMMIT)
            .expect("decommit");
    }
}

/// Figure 11: a collector's round over a 256 MiB watched heap, against
/// soft-dirty bits (where the kernel keeps them) and Wine's signals.
pub fn fig11(trials: usize, batch: usize) -> Figure {
    let title = "write 1 % of a 256 MiB heap's pages, then find and reset them".to_string();
    let reference =
        "soft-dirty (pagemap read + clear_refs); Wine's mprotect + SIGSEGV handler".to_string();
    let ratio_means = "GetWriteWatch / the reference, median of paired trials".to_string();
    let label = "GetWriteWatch(WRITE_WATCH_FLAG_RESET) vs";
    let Some(mut watched) = WatchedHeap::new() else {
        return Figure {
            number: 11,
            title,
            reference,
            ratio_means,
            rows: vec![Row::not_measured(format!("{label} soft-dirty"), None)],
            notes: vec!["this kernel cannot watch writes".into()],
        };
    };
    let mut notes = vec![format!(
        "each round writes {} of {} pages (one write fault each on every side) and \
         collects them; the heaps are committed and populated before timing",
        HEAP / PAGE_SIZE / STRIDE + 1,
        HEAP / PAGE_SIZE
    )];
    let mut rows = Vec::new();
    let mut w = || {
        std::hint::black_box(watched.round());
    };
    match SoftDirtyHeap::new() {
        Some(mut soft) => {
            let mut s = || {
                std::hint::black_box(soft.round());
            };
            let samples = interleaved(
                trials,
                &mut [Side::new(batch, &mut w), Side::new(batch, &mut s)],
            );
            rows.push(Row::paired(
                format!("{label} soft-dirty"),
                &samples[0],
                &samples[1],
                None,
            ));
        }
        None => {
            notes.push(
                "soft-dirty not measured: this kernel keeps no soft-dirty bits \
                        (CONFIG_MEM_SOFT_DIRTY)"
                    .into(),
            );
        }
    }
    if let Some(mut signals) = SignalHeap::new() {
        let mut g = || {
            std::hint::black_box(signals.round());
        };
        let samples = interleaved(
            trials,
            &mut [Side::new(batch, &mut w), Side::new(batch, &mut g)],
        );
        rows.push(Row::paired(
            format!("{label} mprotect + SIGSEGV"),
            &samples[0],
            &samples[1],
            None,
        ));
    }
    Figure {
        number: 11,
        title,
        reference,
        ratio_means,
        rows,
        notes,
    }
}

/// Figure 12: first writes of committed pages, watched against unwatched.
pub fn fig12(trials: usize, batch: usize) -> Figure {
    let title = "commit 1 MiB, write each page once, decommit".to_string();
    let reference = "the same in an ordinary reservation".to_string();
    let ratio_means = "watched / unwatched, median of paired trials".to_string();
    let (Some(mut watched), Some(mut plain)) = (FirstWrites::new(true), FirstWrites::new(false))
    else {
        return Figure {
            number: 12,
            title,
            reference,
            ratio_means,
            rows: vec![Row::not_measured("MEM_WRITE_WATCH reservation", None)],
            notes: vec!["this kernel cannot watch writes".into()],
        };
    };
    let mut w = || watched.run();
    let mut p = || plain.run();
    let samples = interleaved(
        trials,
        &mut [Side::new(batch, &mut w), Side::new(batch, &mut p)],
    );
    Figure {
        number: 12,
        title,
        reference,
        ratio_means,
        rows: vec![Row::paired(
            "MEM_WRITE_WATCH reservation (bare engine)",
            &samples[0],
            &samples[1],
            None,
        )],
        notes: vec![
            "256 first-touch faults a unit; the watched decommit also moves the kernel's \
             written marks aside and protects the pages again (two PAGEMAP_SCAN walks)"
                .into(),
        ],
    }
}
