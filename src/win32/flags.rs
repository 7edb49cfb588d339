//! Flag types of the virtual-memory functions, each a `#[repr(transparent)]`
//! `u32` whose constants carry the Win32 names and values.
//!
//! Unknown bits are kept (`from_bits_retain`), because rejecting them is
//! part of the semantics: the engine answers `ERROR_INVALID_PARAMETER`.

use bitflags::bitflags;

bitflags! {
    /// `flAllocationType` of `VirtualAlloc` (`MEM_*`).
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct AllocationType: u32 {
        /// `MEM_COMMIT`: back pages with memory.
        const COMMIT = 0x1000;
        /// `MEM_RESERVE`: take a range of address space.
        const RESERVE = 0x2000;
        /// `MEM_RESET`: the pages' contents are no longer of interest.
        const RESET = 0x8_0000;
        /// `MEM_TOP_DOWN`: place the reservation as high as possible.
        const TOP_DOWN = 0x10_0000;
        /// `MEM_WRITE_WATCH`: track writes (with `MEM_RESERVE`; see
        /// `GetWriteWatch`).
        const WRITE_WATCH = 0x20_0000;
        /// `MEM_PHYSICAL`: AWE memory (refused by hostmem).
        const PHYSICAL = 0x40_0000;
        /// `MEM_RESET_UNDO`: take back a `MEM_RESET`.
        const RESET_UNDO = 0x100_0000;
        /// `MEM_LARGE_PAGES`: large pages (with `MEM_RESERVE | MEM_COMMIT`).
        const LARGE_PAGES = 0x2000_0000;
    }
}

bitflags! {
    /// `dwFreeType` of `VirtualFree` (`MEM_DECOMMIT`, `MEM_RELEASE`).
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct FreeType: u32 {
        /// `MEM_DECOMMIT`: committed pages become reserved.
        const DECOMMIT = 0x4000;
        /// `MEM_RELEASE`: the whole reservation becomes free.
        const RELEASE = 0x8000;
        /// `MEM_COALESCE_PLACEHOLDERS`: with `MEM_RELEASE`, joins
        /// neighbouring placeholders (Windows 10+). hostmem makes no
        /// placeholders, so it always fails.
        const COALESCE_PLACEHOLDERS = 0x1;
        /// `MEM_PRESERVE_PLACEHOLDER`: with `MEM_RELEASE`, splits a
        /// placeholder (Windows 10+). hostmem makes no placeholders, so it
        /// always fails.
        const PRESERVE_PLACEHOLDER = 0x2;
    }
}

bitflags! {
    /// A page protection (`PAGE_*`): one base protection, optionally with
    /// one modifier.
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct Protection: u32 {
        /// `PAGE_NOACCESS`.
        const NOACCESS = 0x01;
        /// `PAGE_READONLY`.
        const READONLY = 0x02;
        /// `PAGE_READWRITE`.
        const READWRITE = 0x04;
        /// `PAGE_WRITECOPY` (invalid for private memory).
        const WRITECOPY = 0x08;
        /// `PAGE_EXECUTE`.
        const EXECUTE = 0x10;
        /// `PAGE_EXECUTE_READ`.
        const EXECUTE_READ = 0x20;
        /// `PAGE_EXECUTE_READWRITE`.
        const EXECUTE_READWRITE = 0x40;
        /// `PAGE_EXECUTE_WRITECOPY` (invalid for private memory).
        const EXECUTE_WRITECOPY = 0x80;
        /// `PAGE_GUARD` modifier (refused by hostmem).
        const GUARD = 0x100;
        /// `PAGE_NOCACHE` modifier.
        const NOCACHE = 0x200;
        /// `PAGE_WRITECOMBINE` modifier.
        const WRITECOMBINE = 0x400;
    }
}

impl Protection {
    /// The eight base protections.
    pub const BASE_MASK: u32 = 0xFF;
    /// The modifiers `PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE`.
    pub const MODIFIER_MASK: u32 = 0x700;

    /// The base protection bits (may be zero or several bits if invalid).
    pub const fn base(self) -> Protection {
        Protection::from_bits_retain(self.bits() & Self::BASE_MASK)
    }

    /// The modifier bits.
    pub const fn modifiers(self) -> Protection {
        Protection::from_bits_retain(self.bits() & Self::MODIFIER_MASK)
    }

    /// Whether the protection is well formed for Win32: exactly one base
    /// protection, at most one modifier, no modifier with `PAGE_NOACCESS`,
    /// no unknown bits. (`WRITECOPY` is well formed here; whether it suits
    /// the memory is the caller's question.)
    pub const fn is_well_formed(self) -> bool {
        let bits = self.bits();
        let base = bits & Self::BASE_MASK;
        let modifiers = bits & Self::MODIFIER_MASK;
        bits & !(Self::BASE_MASK | Self::MODIFIER_MASK) == 0
            && base.count_ones() == 1
            && modifiers.count_ones() <= 1
            && !(modifiers != 0 && base == Self::NOACCESS.bits())
    }

    /// Whether the base protection lets the page be written.
    pub const fn is_writable(self) -> bool {
        self.bits() & 0xCC != 0
    }

    /// Whether the base protection lets the page be executed.
    pub const fn is_executable(self) -> bool {
        self.bits() & 0xF0 != 0
    }

    /// Whether the base protection lets the page be read.
    pub const fn is_readable(self) -> bool {
        self.bits() & 0xEE != 0
    }
}

bitflags! {
    /// `MEMORY_BASIC_INFORMATION::State`.
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct MemoryState: u32 {
        /// `MEM_COMMIT`: pages backed by memory.
        const COMMIT = 0x1000;
        /// `MEM_RESERVE`: pages reserved, not backed.
        const RESERVE = 0x2000;
        /// `MEM_FREE`: address space nobody holds.
        const FREE = 0x1_0000;
    }
}

bitflags! {
    /// `MEMORY_BASIC_INFORMATION::Type`; empty for free memory.
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct MemoryType: u32 {
        /// `MEM_PRIVATE`: anonymous memory of the process.
        const PRIVATE = 0x2_0000;
        /// `MEM_MAPPED`: a view of a file or section.
        const MAPPED = 0x4_0000;
        /// `MEM_IMAGE`: a view of a loaded executable image.
        const IMAGE = 0x100_0000;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_protections() {
        for base in [0x01u32, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
            assert!(Protection::from_bits_retain(base).is_well_formed());
        }
        let p = Protection::from_bits_retain;
        assert!(!p(0).is_well_formed());
        assert!(!p(0x06).is_well_formed(), "two base protections");
        assert!(!p(0x100).is_well_formed(), "modifier alone");
        assert!(!p(0x101).is_well_formed(), "GUARD with NOACCESS");
        assert!(p(0x204).is_well_formed());
        assert!(!p(0x604).is_well_formed(), "NOCACHE with WRITECOMBINE");
        assert!(!p(0x1004).is_well_formed(), "unknown bit");
        assert!(p(0x104).is_well_formed());
    }

    #[test]
    fn access_classes() {
        assert!(Protection::EXECUTE_READWRITE.is_writable());
        assert!(!Protection::EXECUTE_READ.is_writable());
        assert!(Protection::EXECUTE.is_executable());
        assert!(!Protection::EXECUTE.is_readable());
        assert!(!Protection::NOACCESS.is_readable());
        assert!(Protection::WRITECOPY.is_readable());
    }
}
