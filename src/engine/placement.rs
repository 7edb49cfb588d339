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

use super::range::{USER_ADDRESS_END, granule_floor};
use crate::win32::ALLOCATION_GRANULARITY;

/// Where the window starts: 16 TiB (or an eighth of a smaller address
/// space), plus a random offset so that addresses differ between runs.
fn window_start() -> usize {
    let base = (16usize << 40).min(USER_ADDRESS_END / 8);
    // A cheap per-process random: the address of a stack variable and the
    // time mix well enough for layout randomisation (not security).
    let local = 0u8;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (&local as *const u8 as usize).rotate_left(17) ^ nanos as usize;
    granule_floor(base) + (mix % 4096) * (ALLOCATION_GRANULARITY << 8)
}

/// The placement state.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    start: usize,
    end: usize,
    next: usize,
}

impl Default for Placement {
    fn default() -> Self {
        let start = window_start();
        Self {
            start,
            end: start
                .saturating_add(USER_ADDRESS_END / 4)
                .min(USER_ADDRESS_END / 2),
            next: start,
        }
    }
}

impl Placement {
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
}
