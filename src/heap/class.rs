//! Size classes: multiples of 16 bytes up to 1 KiB, then four classes per
//! power of two up to [`SMALL_MAX`] (16 KiB); larger requests get a
//! reservation of their own.
//!
//! Each 64 KiB slab holds blocks of one class. Telling whether an offset in
//! a slab is a block boundary needs a division by the class size, which
//! [`SlabMeta::is_block_start`] replaces with one multiplication, one
//! rotation and one comparison (no `%` or `/` by a variable on the free
//! path), from one word that packs the slab's class, block count and the
//! class's inverse.
#![forbid(unsafe_code)]

/// The bytes of a slab: the unit the heap commits, 64 KiB (the allocation
/// granularity, so a slab never straddles two reservations).
pub const SLAB_SIZE: usize = 64 * 1024;
/// `log2(SLAB_SIZE)`.
pub const SLAB_SHIFT: u32 = 16;
/// The largest request served from slabs; anything larger gets a
/// reservation of its own.
pub const SMALL_MAX: usize = 16 * 1024;
/// The alignment of every block.
pub const ALIGNMENT: usize = 16;
/// The number of size classes.
pub const CLASSES: usize = 80;

/// Fine classes: 16, 32, …, 1024.
const FINE: usize = 64;
/// The coarse classes above 1 KiB: four per power of two.
const COARSE: [u32; CLASSES - FINE] = [
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336,
    16384,
];

/// One size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    /// The block size in bytes (a multiple of 16).
    pub size: u32,
    /// Blocks in a slab.
    pub blocks: u32,
    /// The blocks a thread-safe heap's thread cache gives back at once
    /// (and keeps at most twice as many): about 16 KiB, 2 to 128 blocks.
    pub batch: u32,
    /// `ceil(2^32 / size)`: `(offset * magic) >> 32 == offset / size` for
    /// every offset inside a slab (see the test).
    magic: u64,
    /// The inverse, modulo 2^16, of the odd part of `size`.
    odd_inverse: u16,
    /// The power of two in `size` (`size = odd << shift`).
    shift: u32,
}

impl SizeClass {
    const fn new(size: u32) -> Self {
        Self {
            size,
            blocks: (SLAB_SIZE as u32) / size,
            batch: {
                let n = 16 * 1024 / size;
                if n < 2 {
                    2
                } else if n > 128 {
                    128
                } else {
                    n
                }
            },
            magic: (1u64 << 32).div_ceil(size as u64),
            odd_inverse: {
                let odd = (size >> size.trailing_zeros()) as u16;
                // Newton's iteration: an odd number is its own inverse
                // modulo 8, and each step doubles the bits that are right.
                let mut inverse = odd;
                let mut i = 0;
                while i < 4 {
                    inverse = inverse.wrapping_mul(2u16.wrapping_sub(odd.wrapping_mul(inverse)));
                    i += 1;
                }
                inverse
            },
            shift: size.trailing_zeros(),
        }
    }

    /// The index of the block starting at `offset` (from the slab's
    /// start), or `None` if `offset` is not the start of one of the slab's
    /// blocks (an interior pointer, or the tail no block covers). The
    /// reference for [`SlabMeta::is_block_start`].
    #[cfg(test)]
    pub fn block_index(&self, offset: usize) -> Option<u32> {
        debug_assert!(offset < SLAB_SIZE);
        let index = ((offset as u64 * self.magic) >> 32) as u32;
        (index as usize * self.size as usize == offset && index < self.blocks).then_some(index)
    }
}

/// A slab's entry in its chunk's table: 0 for a slab not carved, else the
/// class (bits 0–6), whether it serves `DebugAlloc` (bit 7), the class's
/// batch (bits 8–15), the slab's block count (bits 16–31, never 0), the
/// inverse of the odd part of the block size modulo 2^16 (bits 32–47)
/// and its power of two (bits 48–51).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabMeta(pub u64);

impl SlabMeta {
    /// The entry of a slab carved for `class`.
    pub fn new(class: usize, debug: bool) -> Self {
        let c = CLASS[class];
        Self(
            class as u64
                | u64::from(debug) << 7
                | u64::from(c.batch) << 8
                | u64::from(c.blocks) << 16
                | u64::from(c.odd_inverse) << 32
                | u64::from(c.shift) << 48,
        )
    }

    /// Whether the slab is carved.
    #[inline]
    pub fn is_carved(self) -> bool {
        self.0 != 0
    }

    /// The slab's class.
    #[inline]
    pub fn class(self) -> usize {
        (self.0 & 0x7F) as usize
    }

    /// The class and the `DebugAlloc` bit as one number: the class for a
    /// slab of `Alloc`'s, 128 or more for a `DebugAlloc` slab (no class
    /// of a thread cache).
    #[inline]
    pub fn cache_class(self) -> usize {
        (self.0 & 0xFF) as usize
    }

    /// Whether the slab serves `DebugAlloc`.
    #[inline]
    pub fn is_debug(self) -> bool {
        self.0 & 0x80 != 0
    }

    /// The class's batch (see [`SizeClass::batch`]).
    #[inline]
    pub fn batch(self) -> u32 {
        ((self.0 >> 8) & 0xFF) as u32
    }

    /// Whether `offset` (from the slab's start, below `SLAB_SIZE`) starts
    /// one of the slab's blocks (not an interior pointer, not the tail no
    /// block covers).
    ///
    /// With `size = odd << shift`: for a multiple of `size`,
    /// `offset * inverse` (modulo 2^16) is `offset / size` shifted left by
    /// `shift`, and rotating it right gives `offset / size`. For any other
    /// offset the rotation leaves a set bit among the top `shift` bits (not
    /// a multiple of `1 << shift`) or, multiplication by the inverse being
    /// one-to-one, a value whose product with `odd` does not fit (not a
    /// multiple of `odd`): at least the block count either way. So one
    /// comparison with the block count tells both the boundary and the
    /// tail (checked for every offset by a test).
    #[inline]
    pub fn is_block_start(self, offset: usize) -> bool {
        let blocks = (self.0 >> 16) & 0xFFFF;
        let inverse = (self.0 >> 32) as u16;
        let shift = ((self.0 >> 48) & 0xF) as u32;
        let index = (offset as u16).wrapping_mul(inverse).rotate_right(shift);
        u64::from(index) < blocks
    }
}

/// Every class, by index.
pub static CLASS: [SizeClass; CLASSES] = {
    let mut table = [SizeClass::new(16); CLASSES];
    let mut i = 0;
    while i < CLASSES {
        let size = if i < FINE {
            (i as u32 + 1) * 16
        } else {
            COARSE[i - FINE]
        };
        table[i] = SizeClass::new(size);
        i += 1;
    }
    table
};

/// `COARSE_OF[(size - 1) >> 7]`: the class of a size above 1 KiB (every
/// coarse class is a multiple of 128 bytes).
static COARSE_OF: [u8; SMALL_MAX >> 7] = {
    let mut table = [0u8; SMALL_MAX >> 7];
    let mut slot = 0;
    while slot < table.len() {
        // The largest size this slot stands for.
        let size = (slot as u32 + 1) << 7;
        let mut c = 0;
        while c < COARSE.len() && COARSE[c] < size {
            c += 1;
        }
        table[slot] = if c < COARSE.len() {
            (FINE + c) as u8
        } else {
            0
        };
        slot += 1;
    }
    table
};

/// The class of a request of `size` bytes (at most [`SMALL_MAX`]); 0 bytes
/// take the smallest class, so that each gets a pointer of its own.
#[inline]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= SMALL_MAX);
    if size <= 1024 {
        ((size + 15) >> 4).saturating_sub(1)
    } else {
        COARSE_OF[(size - 1) >> 7] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_fits_its_class_and_not_a_smaller_one() {
        for size in 0..=SMALL_MAX {
            let c = class_of(size);
            assert!(CLASS[c].size as usize >= size.max(1), "size {size}");
            if c > 0 {
                assert!((CLASS[c - 1].size as usize) < size, "size {size}");
            }
        }
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(16), 0);
        assert_eq!(class_of(17), 1);
        assert_eq!(class_of(1024), FINE - 1);
        assert_eq!(class_of(1025), FINE);
        assert_eq!(class_of(SMALL_MAX), CLASSES - 1);
    }

    #[test]
    fn classes_fit_their_slab_meta_fields() {
        const { assert!(CLASSES <= 0x80) };
        for c in CLASS {
            assert!(c.batch <= 0xFF && c.blocks <= 0xFFFF && c.shift <= 0xF);
            assert!(c.blocks > 0 && c.magic < 1 << 32);
            let odd = c.size >> c.shift;
            assert_eq!(odd % 2, 1);
            assert_eq!((odd as u16).wrapping_mul(c.odd_inverse), 1, "{c:?}");
        }
    }

    #[test]
    fn classes_are_aligned_and_increasing() {
        for w in CLASS.windows(2) {
            assert!(w[0].size < w[1].size);
        }
        for c in CLASS {
            assert_eq!(c.size as usize % ALIGNMENT, 0);
            assert!(c.blocks >= 4);
        }
    }

    #[test]
    fn block_index_is_exact_division() {
        for class in CLASS {
            for offset in 0..SLAB_SIZE {
                let expected = (offset % class.size as usize == 0
                    && offset / (class.size as usize) < class.blocks as usize)
                    .then_some((offset / class.size as usize) as u32);
                assert_eq!(class.block_index(offset), expected, "{class:?} {offset}");
            }
        }
    }

    #[test]
    fn slab_meta_agrees_with_the_class_table() {
        for (class, c) in CLASS.iter().enumerate() {
            for debug in [false, true] {
                let meta = SlabMeta::new(class, debug);
                assert!(meta.is_carved());
                assert_eq!(
                    (meta.class(), meta.is_debug(), meta.batch()),
                    (class, debug, c.batch)
                );
                if debug {
                    assert!(meta.cache_class() >= CLASSES, "no cache's class");
                } else {
                    assert_eq!(meta.cache_class(), class);
                }
                for offset in 0..SLAB_SIZE {
                    assert_eq!(
                        meta.is_block_start(offset),
                        c.block_index(offset).is_some(),
                        "{c:?} {offset}"
                    );
                }
            }
        }
    }

    #[test]
    fn batches() {
        assert_eq!(CLASS[0].batch, 128);
        assert_eq!(CLASS[class_of(1024)].batch, 16);
        assert_eq!(CLASS[CLASSES - 1].batch, 2);
    }
}
