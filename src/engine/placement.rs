//! Where new reservations go, so that each is 64 KiB aligned with a single
//! `mmap`, and `MEM_TOP_DOWN` ones land above the others.
//!
//! Windows places reservations bottom-up from low addresses and
//! `MEM_TOP_DOWN` ones from the top. hostmem does the same: ordinary
//! reservations are hinted at a cursor that climbs through a window of
//! the address space (far above the program and its heap, far below the
//! kernel's mmap area), so the kernel honours the hint whenever that range
//! is free and no trimming is needed; `MEM_TOP_DOWN` reservations take the
//! kernel's own top-down placement, the highest free range below the
//! stack's growth area. When a cursor reaches its area's end it wraps to
//! the start, where released reservations left room.
//!
//! The window has two areas, so that small and large reservations never
//! share a kernel page-table page:
//!
//! - reservations under 2 MiB (less a granule) go to the *small* area,
//!   packed 64 KiB apart. Its first granule is kept for an *anchor*: a `PROT_NONE`
//!   mapping the engine makes there, so that the kernel's page tables for
//!   the area's first 2 MiB outlive the reservations placed there
//!   (without it, every reserve/touch/release allocates and frees
//!   page-table pages), and whose reverse-map root the reservations next
//!   to it share (see `AddressSpace::map_anchor`). Releasing the most
//!   recently placed reservation moves the cursor back over it, so that a
//!   reserve/release loop reuses the same addresses and page tables.
//!   The last granule of every 2 MiB block of the area stays free, so
//!   that the kernel never merges neighbouring reservations (or the
//!   anchor) into a mapping that covers a whole block: when it splits
//!   or merges a mapping off a 2 MiB boundary, the kernel looks for a
//!   transparent huge page to split, a page-table walk and a lock, but
//!   only where the mapping covers the whole block around the address.
//!   Every commit and decommit is such a split and merge; in a merged
//!   run that covers a block they cost about 1 % more.
//! - longer reservations go to the *large* area, which starts
//!   on a 1 GiB boundary: each starts on a 2 MiB boundary (the span of one
//!   last-level page table, and of a transparent huge page) and is
//!   followed by at least 2 MiB of free address space. So no page table
//!   under a large reservation is shared with another reservation, and
//!   its `munmap` has only its own page tables to free: a small area
//!   churned by thousands of reservations (whose page tables the kernel
//!   keeps while neighbours live) costs a large one nothing. The gap also
//!   keeps the kernel from merging two large reservations into one
//!   mapping, which a release would then have to split.

use super::range::{USER_ADDRESS_END, granule_floor};
use crate::win32::ALLOCATION_GRANULARITY;

/// The alignment of the window's start, and of large reservations: what
/// one last-level page table of x86-64 and AArch64 (4 KiB pages) covers.
const WINDOW_ALIGN: usize = 2 << 20;

/// The largest span the small area takes: a 2 MiB block less the free
/// granule at its end. Longer reservations go to the large area.
const SMALL_SPAN_MAX: usize = WINDOW_ALIGN - ALLOCATION_GRANULARITY;

/// The alignment of the large area's start: what one page-middle
/// directory covers, so that the small area's page tables end below it.
const LARGE_AREA_ALIGN: usize = 1 << 30;

/// Where the window starts: just under 16 TiB on x86-64 (an eighth of the
/// user address space, at most 16 TiB), plus a random offset of up to
/// 64 GiB so that addresses differ between runs, aligned to 2 MiB. (Under
/// AddressSanitizer, whose shadow ends at 16 TiB + 2 GiB, some windows
/// start inside the shadow; hints never replace a mapping, so the kernel
/// places those reservations elsewhere.)
fn window_start() -> usize {
    let base = (16usize << 40).min(USER_ADDRESS_END / 8);
    // A cheap per-process random: the address of a stack variable and the
    // time mix well enough for layout randomisation (not security).
    let local = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (&local as *const u8 as usize).rotate_left(17) ^ nanos as usize;
    (granule_floor(base) + (mix % 4096) * (ALLOCATION_GRANULARITY << 8)) & !(WINDOW_ALIGN - 1)
}

/// One area of the window: a cursor climbing from `start` to `end`.
#[derive(Clone, Copy, Debug)]
struct Area {
    start: usize,
    end: usize,
    next: usize,
    /// What each reservation's span is rounded up to (a power of two).
    align: usize,
    /// Free bytes left after each reservation.
    gap: usize,
    /// Whether the last granule of each 2 MiB block stays free (no span
    /// may be longer than [`SMALL_SPAN_MAX`] then).
    block_gaps: bool,
}

impl Area {
    fn new(start: usize, end: usize, align: usize, gap: usize, block_gaps: bool) -> Self {
        Self {
            start,
            end,
            next: start,
            align,
            gap,
            block_gaps,
        }
    }

    /// The first address from `at` where `span` bytes fit without taking
    /// the last granule of a 2 MiB block, if the area keeps those free.
    #[inline]
    fn fit(&self, at: usize, span: usize) -> usize {
        if !self.block_gaps {
            return at;
        }
        debug_assert!(span <= SMALL_SPAN_MAX);
        let block_end = (at | (WINDOW_ALIGN - 1)).saturating_add(1);
        if at.saturating_add(span) > block_end - ALLOCATION_GRANULARITY {
            block_end
        } else {
            at
        }
    }

    /// The address space a reservation of `len` bytes takes, its gap
    /// included.
    fn span(&self, len: usize) -> Option<usize> {
        // A mask, not `checked_next_multiple_of`: `align` is a power of
        // two, and a division would cost tens of cycles on every call.
        debug_assert!(self.align.is_power_of_two());
        let mask = self.align - 1;
        (len.checked_add(mask)? & !mask).checked_add(self.gap)
    }

    fn hint(&mut self, len: usize) -> usize {
        let Some(span) = self.span(len) else {
            return 0;
        };
        let mut at = self.fit(self.next, span);
        if at.saturating_add(span) > self.end {
            self.next = self.start;
            at = self.fit(self.start, span);
        }
        if at.saturating_add(span) > self.end {
            0
        } else {
            at
        }
    }

    fn placed(&mut self, hint: usize, base: usize, len: usize) {
        let Some(span) = self.span(len) else {
            return;
        };
        if hint != 0 {
            self.next = if base == hint {
                base + span
            } else {
                hint + span
            };
        }
    }

    fn released(&mut self, base: usize, len: usize) {
        let Some(span) = self.span(len) else {
            return;
        };
        if base >= self.start && base.checked_add(span) == Some(self.next) {
            self.next = base;
        }
    }
}

/// The placement state.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// The anchor's address: the small area's first granule.
    anchor: usize,
    /// Reservations of up to [`SMALL_SPAN_MAX`] bytes, from the granule
    /// after the anchor's.
    small: Area,
    /// Longer reservations.
    large: Area,
}

impl Default for Placement {
    fn default() -> Self {
        let anchor = window_start();
        let small_end = anchor.saturating_add(USER_ADDRESS_END / 8);
        let large_start = small_end.next_multiple_of(LARGE_AREA_ALIGN);
        let large_end = large_start
            .saturating_add(USER_ADDRESS_END / 8)
            .min(USER_ADDRESS_END / 2);
        Self {
            anchor,
            small: Area::new(
                anchor + ALLOCATION_GRANULARITY,
                small_end,
                ALLOCATION_GRANULARITY,
                0,
                true,
            ),
            large: Area::new(large_start, large_end, WINDOW_ALIGN, WINDOW_ALIGN, false),
        }
    }
}

impl Placement {
    /// Where the anchor goes: the small area's first granule, which no
    /// hint ever points into.
    pub fn anchor(&self) -> usize {
        self.anchor
    }

    fn area(&mut self, len: usize) -> &mut Area {
        if len > SMALL_SPAN_MAX {
            &mut self.large
        } else {
            &mut self.small
        }
    }

    /// The hint for an ordinary reservation of `len` bytes (0: none, the
    /// kernel picks).
    pub fn hint(&mut self, len: usize) -> usize {
        self.area(len).hint(len)
    }

    /// Records where a reservation of `len` bytes hinted at `hint` went:
    /// the cursor moves past it, or past the occupied hint if the kernel
    /// put it elsewhere.
    pub fn placed(&mut self, hint: usize, base: usize, len: usize) {
        self.area(len).placed(hint, base, len);
    }

    /// Records that the reservation `[base, base + len)` was released: if
    /// it is the one placed last in its area, the cursor moves back over
    /// it, so the next reservation reuses its addresses (and the kernel's
    /// page tables for them).
    pub fn released(&mut self, base: usize, len: usize) {
        self.area(len).released(base, len);
    }

    /// Records that no reservation is left: both cursors go back to their
    /// area's start, so the next small reservation lands next to the
    /// anchor, in the 2 MiB whose page table it keeps alive. (Left where
    /// churn took it, the cursor would put a reserve/touch/release loop in
    /// a 2 MiB span of its own, and each cycle would make the kernel
    /// allocate and free a page-table page: a third more time.)
    pub fn emptied(&mut self) {
        self.small.next = self.small.start;
        self.large.next = self.large.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_climbs_and_wraps() {
        let mut p = Placement::default();
        let h = p.hint(0x1000);
        assert_eq!(h % ALLOCATION_GRANULARITY, 0);
        p.placed(h, h, 0x1000);
        assert_eq!(p.hint(0x20000), h + ALLOCATION_GRANULARITY);
        p.small.next = p.small.end - ALLOCATION_GRANULARITY;
        assert_eq!(p.hint(0x20000), p.small.start, "wraps to the start");
        assert_eq!(
            p.hint(usize::MAX / 2),
            0,
            "too large for the window: no hint"
        );
    }

    #[test]
    fn the_anchor_is_2_mib_aligned_and_never_hinted() {
        let mut p = Placement::default();
        assert_eq!(p.anchor() % WINDOW_ALIGN, 0);
        let h = p.hint(0x1000);
        assert_eq!(h, p.anchor() + ALLOCATION_GRANULARITY);
        p.small.next = p.small.end - ALLOCATION_GRANULARITY;
        assert_eq!(
            p.hint(0x20000),
            p.anchor() + ALLOCATION_GRANULARITY,
            "wraps past the anchor"
        );
    }

    #[test]
    fn releasing_the_last_placed_moves_the_cursor_back() {
        let mut p = Placement::default();
        let a = p.hint(0x10000);
        p.placed(a, a, 0x10000);
        let b = p.hint(0x3000);
        p.placed(b, b, 0x3000);
        assert_eq!(b, a + 0x10000);
        p.released(a, 0x10000);
        assert_eq!(p.hint(0x1000), b + 0x10000, "not the last one: no change");
        p.released(b, 0x3000);
        assert_eq!(p.hint(0x1000), b, "the last one: its addresses are reused");
        p.released(a, 0x10000);
        assert_eq!(p.hint(0x1000), a);
    }

    /// The page-table page (2 MiB) and page-middle directory (1 GiB)
    /// spans an address lies in.
    fn pte_page(addr: usize) -> usize {
        addr / WINDOW_ALIGN
    }

    #[test]
    fn large_reservations_share_no_page_table_with_small_ones_or_each_other() {
        let mut p = Placement::default();
        let small = p.hint(0x10000);
        p.placed(small, small, 0x10000);
        let just_under = p.hint(SMALL_SPAN_MAX);
        p.placed(just_under, just_under, SMALL_SPAN_MAX);
        assert_eq!(
            just_under,
            p.anchor() + WINDOW_ALIGN,
            "2 MiB less a granule: the small area, in a block of its own"
        );
        let mut large = Vec::new();
        for len in [SMALL_SPAN_MAX + 0x1000, 0x30_1000, 256 << 20, WINDOW_ALIGN] {
            let at = p.hint(len);
            assert_ne!(at, 0);
            p.placed(at, at, len);
            large.push((at, len));
        }
        let first = large[0].0;
        assert_eq!(
            first % LARGE_AREA_ALIGN,
            0,
            "the large area starts on 1 GiB"
        );
        assert!(
            first / LARGE_AREA_ALIGN > (p.small.end - 1) / LARGE_AREA_ALIGN,
            "no page-middle directory is shared with the small area"
        );
        for w in large.windows(2) {
            let ((a, alen), (b, _)) = (w[0], w[1]);
            assert_eq!(b % WINDOW_ALIGN, 0, "large reservations start on 2 MiB");
            assert!(
                pte_page(a + alen - 1) + 1 < pte_page(b),
                "at least one free 2 MiB span between {a:#x}+{alen:#x} and {b:#x}"
            );
        }
        // Releasing the last large one gives its place back; releasing a
        // small one does not move the large cursor.
        let (last, len) = large[3];
        p.released(just_under, SMALL_SPAN_MAX);
        p.released(last, len);
        assert_eq!(p.hint(len), last);
        assert_eq!(p.hint(0x10000), just_under);
    }

    /// Places reservations of `lens` one after another, as the engine
    /// does when every hint is honoured, and returns them.
    fn place_all(p: &mut Placement, lens: impl IntoIterator<Item = usize>) -> Vec<(usize, usize)> {
        lens.into_iter()
            .map(|len| {
                let at = p.hint(len);
                assert_ne!(at, 0);
                p.placed(at, at, len);
                (at, len)
            })
            .collect()
    }

    #[test]
    fn the_last_granule_of_every_small_block_stays_free() {
        let mut p = Placement::default();
        // Sizes that land on a block's end in every way: one granule,
        // several, a page more than a granule, half a block, the most.
        let lens =
            (0..200).map(|i| [0x1000, 0x10000, 0x30000, 0x11000, 1 << 20, SMALL_SPAN_MAX][i % 6]);
        let placed = place_all(&mut p, lens);
        for &(at, len) in &placed {
            assert_eq!(at % ALLOCATION_GRANULARITY, 0);
            let end = at + len.next_multiple_of(ALLOCATION_GRANULARITY);
            let gap = (at | (WINDOW_ALIGN - 1)) + 1 - ALLOCATION_GRANULARITY;
            assert!(
                end <= gap,
                "{at:#x}+{len:#x} takes the free granule at {gap:#x}"
            );
        }
        for w in placed.windows(2) {
            assert!(w[0].0 < w[1].0, "the cursor still climbs");
        }
        // Granules packed: the first block holds the anchor and 30
        // granules of reservations before its free one.
        let mut q = Placement::default();
        let packed = place_all(&mut q, std::iter::repeat_n(0x10000, 31));
        assert_eq!(
            packed[29].0,
            q.anchor() + WINDOW_ALIGN - 2 * ALLOCATION_GRANULARITY
        );
        assert_eq!(
            packed[30].0,
            q.anchor() + WINDOW_ALIGN,
            "the free granule skipped"
        );
    }

    #[test]
    fn an_emptied_space_places_from_the_start_again() {
        let mut p = Placement::default();
        for len in [0x10000, 0x30000, WINDOW_ALIGN, 0x10000] {
            let at = p.hint(len);
            p.placed(at, at, len);
        }
        p.emptied();
        assert_eq!(p.hint(0x10000), p.anchor() + ALLOCATION_GRANULARITY);
        assert_eq!(p.hint(WINDOW_ALIGN), p.large.start);
    }

    #[test]
    fn the_large_area_wraps_inside_itself() {
        let mut p = Placement::default();
        p.large.next = p.large.end - WINDOW_ALIGN;
        assert_eq!(p.hint(WINDOW_ALIGN), p.large.start);
        assert!(p.large.end <= USER_ADDRESS_END / 2);
    }
}
