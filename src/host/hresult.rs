//! `HResult`: the status codes of the hosting interfaces.

use crate::win32::Win32Error;
use std::fmt;

/// A COM `HRESULT`: 0 for success, negative (high bit set) for failure.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HResult(pub i32);

const fn hr(bits: u32) -> HResult {
    HResult(bits as i32)
}

impl HResult {
    /// `S_OK`.
    pub const S_OK: Self = hr(0);
    /// `E_FAIL`: a catastrophic failure; the manager is no longer usable.
    pub const E_FAIL: Self = hr(0x8000_4005);
    /// `E_NOTIMPL`.
    pub const E_NOTIMPL: Self = hr(0x8000_4001);
    /// `E_NOINTERFACE`.
    pub const E_NOINTERFACE: Self = hr(0x8000_4002);
    /// `E_POINTER`: a NULL pointer where one was required.
    pub const E_POINTER: Self = hr(0x8000_4003);
    /// `E_OUTOFMEMORY`.
    pub const E_OUTOFMEMORY: Self = hr(0x8007_000E);
    /// `E_INVALIDARG`.
    pub const E_INVALIDARG: Self = hr(0x8007_0057);
    /// `HOST_E_DEADLOCK`.
    pub const HOST_E_DEADLOCK: Self = hr(0x8013_1020);
    /// `HOST_E_INTERRUPTED`.
    pub const HOST_E_INTERRUPTED: Self = hr(0x8013_1021);
    /// `HOST_E_INVALIDOPERATION`: the memory was not allocated through the
    /// host.
    pub const HOST_E_INVALIDOPERATION: Self = hr(0x8013_1022);
    /// `HOST_E_CLRNOTAVAILABLE`: the manager failed or was shut down.
    pub const HOST_E_CLRNOTAVAILABLE: Self = hr(0x8013_1023);
    /// `HOST_E_TIMEOUT`: the call timed out waiting for a lock.
    pub const HOST_E_TIMEOUT: Self = hr(0x8013_1024);
    /// `HOST_E_NOT_OWNER`: the caller does not own what it used.
    pub const HOST_E_NOT_OWNER: Self = hr(0x8013_1025);
    /// `HOST_E_ABANDONED`: a thread died holding what the caller waited on.
    pub const HOST_E_ABANDONED: Self = hr(0x8013_1026);
    /// `HOST_E_EXITPROCESS_THREADABORT`.
    pub const HOST_E_EXITPROCESS_THREADABORT: Self = hr(0x8013_1027);

    /// `HRESULT_FROM_WIN32(e)`: `0x80070000 | (e & 0xFFFF)`, and `S_OK` for 0.
    pub const fn from_win32(e: Win32Error) -> Self {
        if e.0 == 0 {
            Self::S_OK
        } else {
            hr(0x8007_0000 | (e.0 & 0xFFFF))
        }
    }

    /// The bits as an unsigned number.
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// Whether this is a success code.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The name of a code hostmem returns, if it is one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::S_OK => "S_OK",
            Self::E_FAIL => "E_FAIL",
            Self::E_NOTIMPL => "E_NOTIMPL",
            Self::E_NOINTERFACE => "E_NOINTERFACE",
            Self::E_POINTER => "E_POINTER",
            Self::E_OUTOFMEMORY => "E_OUTOFMEMORY",
            Self::E_INVALIDARG => "E_INVALIDARG",
            Self::HOST_E_DEADLOCK => "HOST_E_DEADLOCK",
            Self::HOST_E_INTERRUPTED => "HOST_E_INTERRUPTED",
            Self::HOST_E_INVALIDOPERATION => "HOST_E_INVALIDOPERATION",
            Self::HOST_E_CLRNOTAVAILABLE => "HOST_E_CLRNOTAVAILABLE",
            Self::HOST_E_TIMEOUT => "HOST_E_TIMEOUT",
            Self::HOST_E_NOT_OWNER => "HOST_E_NOT_OWNER",
            Self::HOST_E_ABANDONED => "HOST_E_ABANDONED",
            Self::HOST_E_EXITPROCESS_THREADABORT => "HOST_E_EXITPROCESS_THREADABORT",
            _ => return None,
        })
    }
}

impl fmt::Debug for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.bits()),
            None if self.bits() & 0xFFFF_0000 == 0x8007_0000 => {
                let e = Win32Error(self.bits() & 0xFFFF);
                write!(f, "HRESULT_FROM_WIN32({e:?}) ({:#010x})", self.bits())
            }
            None => write!(f, "HRESULT({:#010x})", self.bits()),
        }
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for HResult {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win32_codes_become_hresults() {
        assert_eq!(
            HResult::from_win32(Win32Error::INVALID_PARAMETER).bits(),
            0x8007_0057
        );
        assert_eq!(
            HResult::from_win32(Win32Error::INVALID_PARAMETER),
            HResult::E_INVALIDARG
        );
        assert_eq!(HResult::from_win32(Win32Error::SUCCESS), HResult::S_OK);
        assert_eq!(
            HResult::from_win32(Win32Error::INVALID_ADDRESS).bits(),
            0x8007_01E7
        );
        assert!(!HResult::HOST_E_TIMEOUT.is_success());
        assert_eq!(
            format!("{}", HResult::from_win32(Win32Error::INVALID_ADDRESS)),
            "HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS (487)) (0x800701e7)"
        );
    }
}
