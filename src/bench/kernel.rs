//! Figure 10: a numeric kernel over memory a runtime got from hostmem,
//! against the same kernel over a plain `mmap`.
//!
//! Once memory is committed, hostmem is out of the way: no call of its own
//! runs while a runtime computes. What can still differ is how the kernel
//! backs the memory: where it lies, and whether transparent huge pages back
//! it (a random gather over 64 MiB walks the page tables on most loads
//! when its pages are small). The kernel here is such a gather, the access
//! pattern that makes TLB reach matter most.

use super::measure::{Side, interleaved, median, paired_ratio};
use super::ops::RawMapping;
use super::report::{Figure, Row, Target, Unit};
use crate::host::{HostConfig, HostMemoryManager, MemoryCriticalLevel};
use crate::win32::{AllocationType, FreeType, Protection};
use rustix::mm::{self, Advice, ProtFlags};
use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;

/// The memory the kernel runs over: 64 MiB.
pub const ARENA: usize = 64 << 20;
/// The chunks a runtime that makes few calls commits at a time.
pub const CHUNK: usize = 8 << 20;
/// The steps of a runtime that commits as it goes (a GC's heap growth).
pub const STEP: usize = 64 << 10;
/// Random loads per unit of work.
pub const GATHERS: usize = 1 << 18;

/// How an arena comes to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Making {
    /// hostmem: reserve, then commit [`CHUNK`]s (nine calls), then write.
    HostChunks,
    /// hostmem: reserve, then commit a [`STEP`] and write it, in turn.
    HostSteps,
    /// `mmap` read-write, then write.
    Raw,
}

/// Who holds an arena's memory.
enum Holder {
    Host(Arc<HostMemoryManager>),
    /// Kept for its `Drop`, which unmaps it.
    Raw {
        _mapping: RawMapping,
    },
}

/// [`ARENA`] bytes of read-write memory, every page written, that only its
/// owner reaches.
pub struct Arena {
    addr: usize,
    holder: Holder,
}

/// `madvise(MADV_HUGEPAGE)` over `[addr, addr + len)`.
///
/// # Safety
///
/// The range lies in a private anonymous mapping the caller was given or
/// made. (The advice changes neither contents nor access.)
#[allow(unsafe_code)]
unsafe fn advise_huge(addr: usize, len: usize) {
    // SAFETY: the caller's contract; MADV_HUGEPAGE only marks the mapping.
    let _ = unsafe { mm::madvise(addr as *mut c_void, len, Advice::LinuxHugepage) };
}

/// Writes a word to every word of `[addr, addr + len)`.
///
/// # Safety
///
/// The range is committed read-write memory that the caller owns and that
/// nothing references.
#[allow(unsafe_code)]
unsafe fn fill(addr: usize, len: usize) {
    // SAFETY: the caller's contract; `addr` is page aligned.
    let words = unsafe { std::slice::from_raw_parts_mut(addr as *mut u64, len / 8) };
    for (i, w) in words.iter_mut().enumerate() {
        *w = i as u64;
    }
}

impl Arena {
    /// A new arena made as `making` says, advised for huge pages first if
    /// `huge`.
    ///
    /// # Panics
    ///
    /// If the memory cannot be had (the benchmark cannot go on).
    #[allow(unsafe_code)]
    pub fn new(making: Making, huge: bool) -> Self {
        let level = MemoryCriticalLevel::TaskCritical;
        match making {
            Making::Raw => {
                let raw = RawMapping::new(ARENA, ProtFlags::READ | ProtFlags::WRITE);
                let addr = raw.addr();
                // SAFETY: the whole mapping, made just above and owned here.
                unsafe {
                    if huge {
                        advise_huge(addr, ARENA);
                    }
                    fill(addr, ARENA);
                }
                Self {
                    addr,
                    holder: Holder::Raw { _mapping: raw },
                }
            }
            Making::HostChunks | Making::HostSteps => {
                let host = HostMemoryManager::new(HostConfig::default()).expect("a manager");
                let base = host
                    .virtual_alloc(
                        0,
                        ARENA,
                        AllocationType::RESERVE,
                        Protection::NOACCESS,
                        level,
                    )
                    .expect("VirtualAlloc(MEM_RESERVE)");
                if huge {
                    // SAFETY: the reservation this function just made.
                    unsafe { advise_huge(base, ARENA) };
                }
                let step = if making == Making::HostChunks {
                    CHUNK
                } else {
                    STEP
                };
                for at in (base..base + ARENA).step_by(step) {
                    host.virtual_alloc(
                        at,
                        step,
                        AllocationType::COMMIT,
                        Protection::READWRITE,
                        level,
                    )
                    .expect("VirtualAlloc(MEM_COMMIT)");
                    if making == Making::HostSteps {
                        // SAFETY: just committed read-write, in a
                        // reservation only this arena knows.
                        unsafe { fill(at, step) };
                    }
                }
                if making == Making::HostChunks {
                    // SAFETY: the whole reservation, committed above.
                    unsafe { fill(base, ARENA) };
                }
                Self {
                    addr: base,
                    holder: Holder::Host(host),
                }
            }
        }
    }

    /// The arena's words.
    #[allow(unsafe_code)]
    pub fn words(&self) -> &[u64] {
        // SAFETY: ARENA bytes of committed read-write memory, initialised by
        // `fill`, owned by `self` (it is released only when `self` drops)
        // and written by no one while this borrow lasts.
        unsafe { std::slice::from_raw_parts(self.addr as *const u64, ARENA / 8) }
    }

    /// Kilobytes of the arena that transparent huge pages back, from
    /// `/proc/self/smaps`; `None` if it cannot be read.
    fn huge_kib(&self) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        crate::os::smaps_kib(&smaps, "AnonHugePages", self.addr..self.addr + ARENA)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Holder::Host(host) = &self.holder {
            // The slice borrows ended with `&self`'s.
            let _ = host.virtual_free(self.addr, 0, FreeType::RELEASE);
        }
    }
}

/// Where a run of [`gather`]s starts its pseudo-random sequence.
pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The kernel: [`GATHERS`] loads from pseudo-random words, summed. The
/// sequence goes on from `seed` and leaves it where it stopped, so that
/// calls in turn read new words: a kernel that read the same 2^18 words
/// at every call (about 16 MiB of lines) would find part of them still in
/// the cache from its previous call, as much or as little as the other
/// side's call in between left there.
pub fn gather(words: &[u64], seed: &mut u64) -> u64 {
    let mask = words.len() - 1;
    let mut x = *seed;
    let mut sum = 0u64;
    for _ in 0..GATHERS {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        sum = sum.wrapping_add(words[(x >> 33) as usize & mask]);
    }
    *seed = x;
    sum
}

/// The system's transparent huge page mode (`always`, `madvise`, `never`),
/// if it can be read.
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_string())
}

/// One row: the kernel over an arena made as `making` vs over a plain
/// mapping, both advised for huge pages if `huge`; and the huge-page
/// backing of each, for the notes.
///
/// Two pairs of arenas, each measured for half the trials: one with
/// hostmem's made first, one with the plain mapping made first. Of two
/// plain mappings made one after the other, the kernel ran 1–2 % slower
/// over the first in most runs (the pages the kernel hands out first),
/// which one pair made in a fixed order would count for or against
/// hostmem.
fn row(trials: usize, making: Making, huge: bool) -> ([Vec<f64>; 2], [Option<u64>; 2]) {
    let mut samples = [Vec::new(), Vec::new()];
    let mut backing = [None, None];
    for host_first in [true, false] {
        let (host, raw) = if host_first {
            let host = Arena::new(making, huge);
            (host, Arena::new(Making::Raw, huge))
        } else {
            let raw = Arena::new(Making::Raw, huge);
            (Arena::new(making, huge), raw)
        };
        if host_first {
            backing = [host.huge_kib(), raw.huge_kib()];
        }
        let (mut hs, mut rs) = (SEED, SEED);
        let mut h = || {
            black_box(gather(black_box(host.words()), &mut hs));
        };
        let mut r = || {
            black_box(gather(black_box(raw.words()), &mut rs));
        };
        let mut pair = interleaved(
            trials.div_ceil(2),
            &mut [Side::new(1, &mut h), Side::new(1, &mut r)],
        );
        samples[1].append(&mut pair.pop().expect("two sides"));
        samples[0].append(&mut pair.pop().expect("two sides"));
    }
    (samples, backing)
}

fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_string(), |k| format!("{k} kB"))
}

/// Trials of figure 10 for each trial of the others. One unit's time
/// varies by a tenth from trial to trial on either side (whatever else
/// uses the machine's memory), so that the median of 32 paired ratios of
/// two plain mappings (the control row) read 0.97–1.03 in six runs, and
/// of 124, 0.98–1.01 in five: a unit takes about 2 ms, and 124 pairs of
/// them half a second a row.
const TRIAL_FACTOR: usize = 4;

/// Figure 10: the kernel over hostmem's memory vs over a plain mapping.
pub fn fig10(trials: usize) -> Figure {
    let trials = trials * TRIAL_FACTOR;
    let mode = thp_mode();
    let huge_possible = mode.as_deref().is_some_and(|m| m != "never");
    let mut rows = Vec::new();
    let mut notes = vec![format!(
        "a unit: {GATHERS} loads of random words of a 64 MiB arena; transparent huge pages: {}",
        mode.as_deref().unwrap_or("unknown")
    )];
    let cases: [(Making, bool, &str, Option<Target>); 4] = [
        (
            Making::HostChunks,
            false,
            "reserve 64 MiB, commit 8 × 8 MiB, write; THP as the system has it",
            Some(Target::ratio_at_most(1.02)),
        ),
        (
            Making::HostChunks,
            true,
            "the same, both sides MADV_HUGEPAGE (what THP `always` does)",
            Some(Target::ratio_at_most(1.02)),
        ),
        (
            Making::HostSteps,
            true,
            "commit and first write 64 KiB at a time, both MADV_HUGEPAGE",
            None,
        ),
        (
            Making::Raw,
            false,
            "control: two plain mmaps, THP as the system has it",
            None,
        ),
    ];
    for (making, huge, label, target) in cases {
        if huge && !huge_possible {
            rows.push(Row::not_measured(label, target));
            continue;
        }
        let ([h, r], [hk, rk]) = row(trials, making, huge);
        rows.push(Row::new(
            label,
            Unit::Nanoseconds,
            Some(median(&h) / GATHERS as f64),
            Some(median(&r) / GATHERS as f64),
            Some(paired_ratio(&h, &r)),
            target,
        ));
        notes.push(format!(
            "huge pages backing \"{label}\": hostmem {}, mmap {}",
            kib(hk),
            kib(rk)
        ));
    }
    notes.push(
        "the control row runs the kernel over two plain mmaps made alike: how far two \
         arenas differ by the pages they were given and the run's noise, with nothing of \
         hostmem's"
            .into(),
    );
    notes.push(
        "pages first written while their commit is narrower than 2 MiB fault in as small \
         pages (the kernel can map a huge page only where one mapping spans the whole \
         aligned 2 MiB); khugepaged collapses them later"
            .into(),
    );
    Figure {
        number: 10,
        title: "a numeric kernel (random gathers over 64 MiB) over memory from hostmem".into(),
        reference: "the same kernel over a plain mmap of 64 MiB".into(),
        ratio_means: "hostmem's memory / mmap's, median of paired trials (ns per load)".into(),
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arena_from_hostmem_holds_what_was_written_and_is_released() {
        let arena = Arena::new(Making::HostSteps, false);
        let words = arena.words();
        assert_eq!(words.len(), ARENA / 8);
        assert!(
            words
                .iter()
                .enumerate()
                .step_by(4099)
                .all(|(i, &w)| w == (i % (STEP / 8)) as u64)
        );
        let Holder::Host(host) = &arena.holder else {
            panic!("a host arena")
        };
        let host = Arc::clone(host);
        assert_eq!(host.statistics().committed_bytes, ARENA);
        drop(arena);
        assert_eq!(host.statistics().committed_bytes, 0);
    }

    #[test]
    fn a_row_measures_two_pairs_made_in_both_orders() {
        // Half the trials (rounded up) on each pair: three trials, two a
        // pair, four samples a side.
        let ([host, raw], backing) = row(3, Making::HostChunks, false);
        assert_eq!((host.len(), raw.len()), (4, 4));
        assert!(host.iter().chain(&raw).all(|&ns| ns > 0.0));
        assert!(backing.iter().all(Option::is_some));
    }

    #[test]
    fn the_figure_ends_with_a_control_of_two_plain_mappings() {
        let figure = fig10(1);
        let control = figure.rows.last().expect("rows");
        assert!(control.label.starts_with("control"), "{}", control.label);
        assert!(control.target.is_none(), "information, not a target");
        assert!(control.ratio.is_some_and(|r| r > 0.0));
        assert!(figure.rows[0].target.is_some());
    }

    #[test]
    fn the_kernel_reads_the_words_it_is_given() {
        let arena = Arena::new(Making::Raw, false);
        assert!(arena.huge_kib().is_some());
        let zeros = vec![0u64; 1 << 10];
        let ones = vec![1u64; 1 << 10];
        let mut seed = SEED;
        assert_eq!(gather(&zeros, &mut seed), 0);
        assert_eq!(gather(&ones, &mut seed), GATHERS as u64);
        // Calls in turn go on with the sequence; from the same seed they
        // read the same words.
        let (mut a, mut b) = (SEED, SEED);
        let first = gather(arena.words(), &mut a);
        assert_eq!(first, gather(arena.words(), &mut b));
        assert_ne!(a, SEED);
        assert_ne!(gather(arena.words(), &mut a), first);
    }
}
