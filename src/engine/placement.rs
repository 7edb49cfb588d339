//! Where new reservations go, so that each is 64 KiB aligned with a single
//! `mmap`, and `MEM_TOP_DOWN` ones land above the others.
//!
//! Windows places reservations bottom-up from low addresses and
//! `MEM_TOP_DOWN` ones from the top. hostmem does the same: ordinary
//! reservations are hinted at a cursor that climbs through a low window of
//! the address space (far above the program and its heap, far below the
//! kernel's mmap area), so the kernel honours the hint whenever that range
//! is free and no trimming is needed; `MEM_TOP_DOWN` reservations take the
//! kernel's own top-down placement, the highest free range below the
//! stack's growth area. When the cursor reaches the window's end it wraps to
//! its start, where released reservations left room.
//!
//! The window starts on a 2 MiB boundary, and its first granule is kept for
//! an *anchor*: one `PROT_NONE` page the engine maps there, so that the
//! kernel's page tables for the window's first 2 MiB outlive the
//! reservations placed there (without it, every reserve/touch/release
//! allocates and frees page-table pages). Releasing the most recently
//! placed reservation moves the cursor back over it, so that a
//! reserve/release loop reuses the same addresses and page tables.

use super::range::{USER_ADDRESS_END, granule_floor};
use crate::win32::ALLOCATION_GRANULARITY;

/// The alignment of the window's start: what one last-level page table of
/// x86-64 and AArch64 (4 KiB pages) covers.
const WINDOW_ALIGN: usize = 2 << 20;

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

/// The placement state.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// The anchor's address: the window's first granule.
    anchor: usize,
    /// Where reservations may start: the granule after the anchor's.
    start: usize,
    end: usize,
    next: usize,
}

impl Default for Placement {
    fn default() -> Self {
        let anchor = window_start();
        let start = anchor + ALLOCATION_GRANULARITY;
        Self {
            anchor,
            start,
            end: anchor
                .saturating_add(USER_ADDRESS_END / 4)
                .min(USER_ADDRESS_END / 2),
            next: start,
        }
    }
}

impl Placement {
    /// Where the anchor page goes: the window's first granule, which no
    /// hint ever points into.
    pub fn anchor(&self) -> usize {
        self.anchor
    }

    /// The hint for an ordinary reservation of `len` bytes.
    pub fn hint(&mut self, len: usize) -> usize {
        let Some(span) = len.checked_next_multiple_of(ALLOCATION_GRANULARITY) else {
            return 0;
        };
        if self.next.saturating_add(span) > self.end {
            self.next = self.start;
        }
        if self.next.saturating_add(span) > self.end {
            0
        } else {
            self.next
        }
    }

    /// Records where a reservation of `len` bytes hinted at `hint` went:
    /// the cursor moves past it, or past the occupied hint if the kernel
    /// put it elsewhere.
    pub fn placed(&mut self, hint: usize, base: usize, len: usize) {
        let span = len.next_multiple_of(ALLOCATION_GRANULARITY);
        if hint != 0 {
            self.next = if base == hint {
                base + span
            } else {
                hint + span
            };
        }
    }

    /// Records that the reservation `[base, base + len)` was released: if
    /// it is the one placed last, the cursor moves back over it, so the
    /// next reservation reuses its addresses (and the kernel's page tables
    /// for them).
    pub fn released(&mut self, base: usize, len: usize) {
        let span = len.next_multiple_of(ALLOCATION_GRANULARITY);
        if base >= self.start && base.checked_add(span) == Some(self.next) {
            self.next = base;
        }
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
        p.next = p.end - ALLOCATION_GRANULARITY;
        assert_eq!(p.hint(0x20000), p.start, "wraps to the start");
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
        p.next = p.end - ALLOCATION_GRANULARITY;
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
}
