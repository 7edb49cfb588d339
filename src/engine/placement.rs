//! Where new reservations go: a placement hint that keeps them 64 KiB
//! aligned with a single `mmap`.
//!
//! The kernel places mappings top-down; asking for the granule just below
//! the last reservation is honoured whenever that address space is free,
//! which makes the common case one `mmap` with no trimming.

use super::range::granule_floor;
use crate::win32::ALLOCATION_GRANULARITY;

/// The lowest address hints go down to: far above any brk heap or binary.
const LOWEST_HINT: usize = 1 << 32;

/// The placement state: where the last reservation went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement {
    last: usize,
}

impl Placement {
    /// The hint for a reservation of `len` bytes (0: none).
    pub fn hint(&self, len: usize) -> usize {
        let span = len.next_multiple_of(ALLOCATION_GRANULARITY);
        match self.last.checked_sub(span) {
            Some(at) if at >= LOWEST_HINT => granule_floor(at),
            _ => 0,
        }
    }

    /// Records that a reservation was placed at `base`.
    pub fn placed(&mut self, base: usize) {
        self.last = base;
    }
}
