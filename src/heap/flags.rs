//! `MALLOC_TYPE`: what `IHostMemoryManager::CreateMalloc` asks of a heap.
#![forbid(unsafe_code)]

use bitflags::bitflags;

bitflags! {
    /// `dwMallocType` of `CreateMalloc` (`MALLOC_*`). Unknown bits are
    /// kept (`from_bits_retain`) so that `create_malloc` can refuse them
    /// with `E_INVALIDARG`.
    #[repr(transparent)]
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct MallocType: u32 {
        /// `MALLOC_THREADSAFE`: the heap may be used from several threads at
        /// once. Without it the caller calls it from one thread at a time
        /// (any thread); a call that meets another inside the heap is
        /// `HOST_E_NOT_OWNER`.
        const THREADSAFE = 0x1;
        /// `MALLOC_EXECUTABLE`: the heap's memory is
        /// `PAGE_EXECUTE_READWRITE`.
        const EXECUTABLE = 0x2;
    }
}

impl MallocType {
    /// Whether every bit is a known `MALLOC_*` flag.
    pub fn is_valid(self) -> bool {
        Self::all().contains(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_bits_are_valid() {
        for bits in 0..4 {
            assert!(MallocType::from_bits_retain(bits).is_valid());
        }
        assert!(!MallocType::from_bits_retain(4).is_valid());
        assert!(!MallocType::from_bits_retain(0x8000_0001).is_valid());
    }
}
