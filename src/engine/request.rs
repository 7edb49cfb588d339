//! Validation of `VirtualAlloc`'s and `VirtualProtect`'s flags: what the
//! caller asked for, or `ERROR_INVALID_PARAMETER`.

use super::page_map::PageProtection;
use crate::win32::{AllocationType, Protection, Win32Error};

/// What a well-formed `VirtualAlloc` call asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllocRequest {
    /// `MEM_RESERVE`, `MEM_RESERVE | MEM_COMMIT`, or `MEM_COMMIT` at NULL:
    /// a new reservation, committed at once if `commit`.
    Reserve {
        /// Commit every page of the new reservation.
        commit: bool,
        /// `MEM_WRITE_WATCH`: watch writes to the reservation.
        watch: bool,
        /// `MEM_LARGE_PAGES`: map it with large pages.
        large: bool,
    },
    /// `MEM_COMMIT` at an address: commit pages of an existing reservation.
    Commit,
    /// `MEM_RESET`.
    Reset,
    /// `MEM_RESET_UNDO`.
    ResetUndo,
}

/// A protection that private memory can have: the base protection of the
/// pages and the caching modifier (`PAGE_NOCACHE`, `PAGE_WRITECOMBINE` or
/// none).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PrivateProtection {
    /// The base protection.
    pub page: PageProtection,
    /// `PAGE_NOCACHE`, `PAGE_WRITECOMBINE` or empty.
    pub caching: Protection,
}

impl PrivateProtection {
    /// The full Win32 protection.
    pub fn protection(self) -> Protection {
        self.page.protection() | self.caching
    }
}

/// Checks a protection for memory hostmem maps (private memory):
/// well formed, not copy-on-write (invalid for private memory), and not
/// `PAGE_GUARD` (which hostmem refuses rather than half-emulates).
pub fn private_protection(protect: Protection) -> Result<PrivateProtection, Win32Error> {
    if !protect.is_well_formed() || protect.contains(Protection::GUARD) {
        return Err(Win32Error::INVALID_PARAMETER);
    }
    let page = PageProtection::from_protection(protect).ok_or(Win32Error::INVALID_PARAMETER)?;
    Ok(PrivateProtection {
        page,
        caching: protect.modifiers(),
    })
}

/// Classifies `flAllocationType` (`address` decides whether a lone
/// `MEM_COMMIT` reserves too).
pub fn alloc_request(kind: AllocationType, address: usize) -> Result<AllocRequest, Win32Error> {
    use AllocationType as T;
    // MEM_WRITE_WATCH needs MEM_RESERVE; MEM_LARGE_PAGES needs MEM_RESERVE
    // and MEM_COMMIT (VirtualAlloc's documentation); the two do not mix.
    let watch = kind.contains(T::WRITE_WATCH);
    let large = kind.contains(T::LARGE_PAGES);
    let plain = kind.difference(T::WRITE_WATCH | T::LARGE_PAGES);
    if watch || large {
        let reserve = plain.difference(T::TOP_DOWN);
        let fits = if large {
            !watch && reserve == T::RESERVE | T::COMMIT
        } else {
            reserve == T::RESERVE || reserve == T::RESERVE | T::COMMIT
        };
        if !fits {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        return Ok(AllocRequest::Reserve {
            commit: reserve.contains(T::COMMIT),
            watch,
            large,
        });
    }
    let without_top_down = kind.difference(T::TOP_DOWN);
    let request = if kind == T::RESET {
        AllocRequest::Reset
    } else if kind == T::RESET_UNDO {
        AllocRequest::ResetUndo
    } else if without_top_down == T::RESERVE || without_top_down == T::RESERVE | T::COMMIT {
        AllocRequest::Reserve {
            commit: without_top_down.contains(T::COMMIT),
            watch: false,
            large: false,
        }
    } else if without_top_down == T::COMMIT {
        if address == 0 {
            AllocRequest::Reserve {
                commit: true,
                watch: false,
                large: false,
            }
        } else {
            AllocRequest::Commit
        }
    } else {
        // Everything else: no type, MEM_DECOMMIT/RELEASE/FREE bits, MEM_RESET
        // with anything, unknown bits — and MEM_PHYSICAL, which hostmem
        // refuses in every combination.
        return Err(Win32Error::INVALID_PARAMETER);
    };
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AllocationType as T;

    const fn reserve(commit: bool) -> AllocRequest {
        AllocRequest::Reserve {
            commit,
            watch: false,
            large: false,
        }
    }

    #[test]
    fn write_watch_and_large_pages_need_reserve() {
        assert_eq!(
            alloc_request(T::RESERVE | T::WRITE_WATCH, 0),
            Ok(AllocRequest::Reserve {
                commit: false,
                watch: true,
                large: false
            })
        );
        assert_eq!(
            alloc_request(T::RESERVE | T::COMMIT | T::WRITE_WATCH | T::TOP_DOWN, 0),
            Ok(AllocRequest::Reserve {
                commit: true,
                watch: true,
                large: false
            })
        );
        assert_eq!(
            alloc_request(T::RESERVE | T::COMMIT | T::LARGE_PAGES, 0),
            Ok(AllocRequest::Reserve {
                commit: true,
                watch: false,
                large: true
            })
        );
        for bad in [
            T::WRITE_WATCH,
            T::COMMIT | T::WRITE_WATCH,
            T::RESERVE | T::WRITE_WATCH | T::RESET,
            T::RESERVE | T::LARGE_PAGES,
            T::COMMIT | T::LARGE_PAGES,
            T::LARGE_PAGES,
            T::RESERVE | T::COMMIT | T::LARGE_PAGES | T::WRITE_WATCH,
        ] {
            assert_eq!(
                alloc_request(bad, 0),
                Err(Win32Error::INVALID_PARAMETER),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allocation_types() {
        assert_eq!(alloc_request(T::RESERVE, 0), Ok(reserve(false)));
        assert_eq!(alloc_request(T::COMMIT, 0), Ok(reserve(true)));
        assert_eq!(alloc_request(T::COMMIT, 0x10000), Ok(AllocRequest::Commit));
        assert_eq!(
            alloc_request(T::COMMIT | T::TOP_DOWN, 0x10000),
            Ok(AllocRequest::Commit)
        );
        assert_eq!(
            alloc_request(T::RESERVE | T::COMMIT | T::TOP_DOWN, 0),
            Ok(reserve(true))
        );
        assert_eq!(alloc_request(T::RESET, 1), Ok(AllocRequest::Reset));
        assert_eq!(alloc_request(T::RESET_UNDO, 1), Ok(AllocRequest::ResetUndo));
        for bad in [
            0,
            0x4000,
            0x8000,
            0x1_0000,
            0x8_1000,
            0x10_0000,
            0x20_0000,
            0x20_1000,
            0x2000_2000,
            0x4_0000,
        ] {
            assert_eq!(
                alloc_request(T::from_bits_retain(bad), 0),
                Err(Win32Error::INVALID_PARAMETER),
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn private_protections() {
        assert!(private_protection(Protection::READWRITE | Protection::NOCACHE).is_ok());
        for bad in [0, 0x08, 0x80, 0x104, 0x06, 0x201, 0x604] {
            assert_eq!(
                private_protection(Protection::from_bits_retain(bad)),
                Err(Win32Error::INVALID_PARAMETER),
                "{bad:#x}"
            );
        }
    }
}
