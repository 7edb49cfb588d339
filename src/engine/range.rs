//! Addresses with rules: page- and granule-aligned values and the page
//! range a Win32 call touches, checked once so that a misaligned or
//! wrapping value cannot reach the engine.

use crate::win32::{ALLOCATION_GRANULARITY, PAGE_SIZE, Win32Error};

/// One past the highest user address of the process: where the kernel's
/// half of the address space (or the non-canonical hole) begins.
#[cfg(target_arch = "x86_64")]
pub const USER_ADDRESS_END: usize = 0x7FFF_FFFF_F000;
/// One past the highest user address of the process (48-bit VA).
#[cfg(not(target_arch = "x86_64"))]
pub const USER_ADDRESS_END: usize = 0x1_0000_0000_0000;

/// `addr` rounded down to its page.
pub const fn page_floor(addr: usize) -> usize {
    addr & !(PAGE_SIZE - 1)
}

/// `addr` rounded down to the allocation granularity (64 KiB).
pub const fn granule_floor(addr: usize) -> usize {
    addr & !(ALLOCATION_GRANULARITY - 1)
}

/// `n` rounded up to a multiple of `align` (a power of two), if it fits.
pub const fn checked_align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// A non-empty range of whole 4 KiB pages: `start` and `end` are page
/// aligned and `start < end`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageRange {
    start: usize,
    end: usize,
}

impl PageRange {
    /// The pages touched by `[addr, addr + size)`, `size > 0`; a range that
    /// wraps the address space is `ERROR_INVALID_PARAMETER`.
    pub fn touched(addr: usize, size: usize) -> Result<Self, Win32Error> {
        debug_assert!(size > 0);
        let last = addr
            .checked_add(size - 1)
            .ok_or(Win32Error::INVALID_PARAMETER)?;
        let end = last
            .checked_add(1)
            .and_then(|end| checked_align_up(end, PAGE_SIZE))
            .ok_or(Win32Error::INVALID_PARAMETER)?;
        Ok(Self {
            start: page_floor(addr),
            end,
        })
    }

    /// From aligned bounds; `None` if misaligned or empty.
    pub fn new(start: usize, end: usize) -> Option<Self> {
        (start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE) && start < end)
            .then_some(Self { start, end })
    }

    /// First address.
    pub const fn start(self) -> usize {
        self.start
    }

    /// One past the last address.
    pub const fn end(self) -> usize {
        self.end
    }

    /// Length in bytes.
    pub const fn len(self) -> usize {
        self.end - self.start
    }

    /// Always false: a `PageRange` is never empty.
    pub const fn is_empty(self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_pages() {
        let r = PageRange::touched(0x1_0fff, 2).unwrap();
        assert_eq!((r.start(), r.end()), (0x1_0000, 0x1_2000));
        let r = PageRange::touched(0x2_0000, 0x1000).unwrap();
        assert_eq!((r.start(), r.end()), (0x2_0000, 0x2_1000));
        assert_eq!(
            PageRange::touched(usize::MAX - 10, 20),
            Err(Win32Error::INVALID_PARAMETER)
        );
        assert_eq!(
            PageRange::touched(usize::MAX - 0xffe, 1),
            Err(Win32Error::INVALID_PARAMETER)
        );
        // The last byte of the address space: the end does not fit.
        assert_eq!(
            PageRange::touched(0xffff_ffff_ffff_f000, 0x1000),
            Err(Win32Error::INVALID_PARAMETER)
        );
        assert_eq!(
            PageRange::touched(usize::MAX, 1),
            Err(Win32Error::INVALID_PARAMETER)
        );
        assert!(PageRange::new(0x1000, 0x1000).is_none());
        assert!(PageRange::new(0x1001, 0x2000).is_none());
    }

    #[test]
    fn rounding() {
        assert_eq!(granule_floor(0x1_ffff), 0x1_0000);
        assert_eq!(page_floor(0x1fff), 0x1000);
        assert_eq!(checked_align_up(0x1001, PAGE_SIZE), Some(0x2000));
        assert_eq!(checked_align_up(usize::MAX, PAGE_SIZE), None);
    }
}
