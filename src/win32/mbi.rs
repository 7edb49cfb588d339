//! `MEMORY_BASIC_INFORMATION` in the Windows x64 layout.

use super::{MemoryState, MemoryType, Protection};

/// What `VirtualQuery` answers about a run of pages: Windows x64 layout,
/// 48 bytes, so it can be copied straight into a C caller's buffer.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemoryBasicInformation {
    /// `BaseAddress`: the queried address rounded down to its page.
    pub base_address: usize,
    /// `AllocationBase`: the base of the reservation (0 for free memory).
    pub allocation_base: usize,
    /// `AllocationProtect`: the protection given at reservation.
    pub allocation_protect: Protection,
    /// `PartitionId`: always 0.
    pub partition_id: u16,
    /// `RegionSize`: bytes from `base_address` with the same state and
    /// protection.
    pub region_size: usize,
    /// `State`: `MEM_COMMIT`, `MEM_RESERVE` or `MEM_FREE`.
    pub state: MemoryState,
    /// `Protect`: the pages' protection (0 for reserved pages).
    pub protect: Protection,
    /// `Type`: `MEM_PRIVATE`, `MEM_MAPPED`, `MEM_IMAGE`, or 0 when free.
    pub type_: MemoryType,
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn windows_x64_layout() {
        assert_eq!(size_of::<MemoryBasicInformation>(), 48);
        assert_eq!(offset_of!(MemoryBasicInformation, base_address), 0);
        assert_eq!(offset_of!(MemoryBasicInformation, allocation_base), 8);
        assert_eq!(offset_of!(MemoryBasicInformation, allocation_protect), 16);
        assert_eq!(offset_of!(MemoryBasicInformation, partition_id), 20);
        assert_eq!(offset_of!(MemoryBasicInformation, region_size), 24);
        assert_eq!(offset_of!(MemoryBasicInformation, state), 32);
        assert_eq!(offset_of!(MemoryBasicInformation, protect), 36);
        assert_eq!(offset_of!(MemoryBasicInformation, type_), 40);
    }
}
