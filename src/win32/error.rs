//! `Win32Error`: the numeric error codes of `GetLastError`.

use std::fmt;

/// A Win32 error code as `GetLastError` returns it (`ERROR_*`).
///
/// A `#[repr(transparent)]` newtype so callers match on numbers, not text.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Win32Error(pub u32);

impl Win32Error {
    /// `ERROR_SUCCESS` (0): no error.
    pub const SUCCESS: Self = Self(0);
    /// `ERROR_NOT_ENOUGH_MEMORY` (8): out of address space or memory.
    pub const NOT_ENOUGH_MEMORY: Self = Self(8);
    /// `ERROR_OUTOFMEMORY` (14).
    pub const OUTOFMEMORY: Self = Self(14);
    /// `ERROR_BAD_LENGTH` (24): a buffer too small for the answer.
    pub const BAD_LENGTH: Self = Self(24);
    /// `ERROR_NOT_SUPPORTED` (50): the kernel lacks what the call needs
    /// (`MEM_WRITE_WATCH` without userfaultfd's asynchronous write
    /// protection).
    pub const NOT_SUPPORTED: Self = Self(50);
    /// `ERROR_INVALID_PARAMETER` (87).
    pub const INVALID_PARAMETER: Self = Self(87);
    /// `ERROR_INVALID_ADDRESS` (487): an address in the wrong state.
    pub const INVALID_ADDRESS: Self = Self(487);
    /// `ERROR_NOACCESS` (998): an output pointer that cannot be written.
    pub const NOACCESS: Self = Self(998);
    /// `ERROR_INTERNAL_ERROR` (1359): an OS call that must not fail failed
    /// and could not be rolled back, so hostmem's map of the address space
    /// may no longer match the kernel's. The host layer turns it into
    /// `E_FAIL`.
    pub const INTERNAL_ERROR: Self = Self(1359);
    /// `ERROR_NO_SYSTEM_RESOURCES` (1450): no large pages to be had.
    pub const NO_SYSTEM_RESOURCES: Self = Self(1450);
    /// `ERROR_COMMITMENT_LIMIT` (1455): the commit limit was reached.
    pub const COMMITMENT_LIMIT: Self = Self(1455);
    /// `ERROR_TIMEOUT` (1460): the manager's lock was not free within its
    /// timeout (another call held it too long).
    pub const TIMEOUT: Self = Self(1460);

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// The `ERROR_*` name of a code hostmem produces, if it is one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "ERROR_SUCCESS",
            8 => "ERROR_NOT_ENOUGH_MEMORY",
            14 => "ERROR_OUTOFMEMORY",
            24 => "ERROR_BAD_LENGTH",
            50 => "ERROR_NOT_SUPPORTED",
            87 => "ERROR_INVALID_PARAMETER",
            487 => "ERROR_INVALID_ADDRESS",
            998 => "ERROR_NOACCESS",
            1359 => "ERROR_INTERNAL_ERROR",
            1450 => "ERROR_NO_SYSTEM_RESOURCES",
            1455 => "ERROR_COMMITMENT_LIMIT",
            1460 => "ERROR_TIMEOUT",
            _ => return None,
        })
    }
}

impl fmt::Debug for Win32Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "Win32Error({})", self.0),
        }
    }
}

impl fmt::Display for Win32Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Win32Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_windows_numbers() {
        assert_eq!(Win32Error::INVALID_PARAMETER.code(), 87);
        assert_eq!(Win32Error::INVALID_ADDRESS.code(), 487);
        assert_eq!(
            format!("{}", Win32Error::BAD_LENGTH),
            "ERROR_BAD_LENGTH (24)"
        );
        assert_eq!(format!("{:?}", Win32Error(5)), "Win32Error(5)");
    }
}
