//! The Win32 vocabulary of virtual memory: flags, protections, states,
//! error codes and `MEMORY_BASIC_INFORMATION`, with Windows' numbers.
//!
//! Nothing here has behaviour beyond naming and classifying values; the
//! rules live in the engine underneath [`HostMemoryManager`](crate::HostMemoryManager).

mod error;
mod flags;
mod mbi;

pub use error::Win32Error;
pub use flags::{AllocationType, FreeType, MemoryState, MemoryType, Protection};
pub use mbi::MemoryBasicInformation;

/// The page size of Windows (and of hostmem, whatever the kernel's): 4 KiB.
pub const PAGE_SIZE: usize = 0x1000;
/// `WRITE_WATCH_FLAG_RESET`: `GetWriteWatch` also resets the pages it reports.
pub const WRITE_WATCH_FLAG_RESET: u32 = 1;

/// The allocation granularity of Windows: reservations start at multiples
/// of 64 KiB.
pub const ALLOCATION_GRANULARITY: usize = 0x1_0000;
