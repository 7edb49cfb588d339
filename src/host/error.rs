//! `HostError`: why a call to the host failed, convertible both to the
//! HRESULT of the hosting interfaces and to the Win32 error of the flat API.

use super::HResult;
use crate::win32::Win32Error;

/// Why a host call failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, thiserror::Error)]
pub enum HostError {
    /// The Win32 semantics refused the call.
    #[error("{0}")]
    Win32(Win32Error),
    /// The address is not in memory this manager allocated.
    #[error("the memory was not allocated through this host")]
    NotHostMemory,
    /// The budget (or the critical level's share of it) refuses the request.
    #[error("the memory budget refuses the request")]
    OverBudget,
    /// The manager's lock could not be taken in time.
    #[error("timed out waiting for the manager's lock")]
    Timeout,
    /// A thread panicked while holding the manager's lock.
    #[error("a thread panicked while holding the manager's lock")]
    Abandoned,
    /// The calling thread does not own the (single-threaded) object.
    #[error("the calling thread does not own the object")]
    NotOwner,
    /// The manager failed earlier (E_FAIL) or was shut down.
    #[error("the manager is no longer available")]
    Unavailable,
    /// A catastrophic failure: the manager can no longer be trusted.
    #[error("catastrophic failure")]
    Catastrophic,
    /// A required pointer was NULL.
    #[error("a required pointer was NULL")]
    NullPointer,
    /// An argument outside what the method accepts.
    #[error("an invalid argument")]
    InvalidArgument,
}

/// `ERROR_NOT_OWNER`.
const ERROR_NOT_OWNER: Win32Error = Win32Error(288);

impl HostError {
    /// The failure the engine reported, with its catastrophic code and its
    /// timeout lifted.
    pub fn from_engine(e: Win32Error) -> Self {
        if e == Win32Error::INTERNAL_ERROR {
            Self::Catastrophic
        } else if e == Win32Error::TIMEOUT {
            // Only a wait the engine gave up (the host's lock timeout).
            Self::Timeout
        } else {
            Self::Win32(e)
        }
    }

    /// The HRESULT of the hosting interfaces: Win32 failures are
    /// `HRESULT_FROM_WIN32`, running out of memory is `E_OUTOFMEMORY`.
    pub fn hresult(self) -> HResult {
        match self {
            Self::Win32(
                Win32Error::NOT_ENOUGH_MEMORY
                | Win32Error::OUTOFMEMORY
                | Win32Error::COMMITMENT_LIMIT,
            )
            | Self::OverBudget => HResult::E_OUTOFMEMORY,
            Self::Win32(e) => HResult::from_win32(e),
            Self::NotHostMemory => HResult::HOST_E_INVALIDOPERATION,
            Self::Timeout => HResult::HOST_E_TIMEOUT,
            Self::Abandoned => HResult::HOST_E_ABANDONED,
            Self::NotOwner => HResult::HOST_E_NOT_OWNER,
            Self::Unavailable => HResult::HOST_E_CLRNOTAVAILABLE,
            Self::Catastrophic => HResult::E_FAIL,
            Self::NullPointer => HResult::E_POINTER,
            Self::InvalidArgument => HResult::E_INVALIDARG,
        }
    }

    /// The Win32 error of the flat API: foreign memory is
    /// `ERROR_INVALID_ADDRESS`, a refused budget `ERROR_COMMITMENT_LIMIT`.
    pub fn win32(self) -> Win32Error {
        match self {
            Self::Win32(e) => e,
            Self::NotHostMemory => Win32Error::INVALID_ADDRESS,
            Self::OverBudget => Win32Error::COMMITMENT_LIMIT,
            Self::Timeout => Win32Error::TIMEOUT,
            Self::NotOwner => ERROR_NOT_OWNER,
            Self::Abandoned | Self::Unavailable | Self::Catastrophic => Win32Error::INTERNAL_ERROR,
            Self::NullPointer => Win32Error::NOACCESS,
            Self::InvalidArgument => Win32Error::INVALID_PARAMETER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hresults_and_win32_codes() {
        assert_eq!(
            HostError::Win32(Win32Error::INVALID_PARAMETER)
                .hresult()
                .bits(),
            0x8007_0057
        );
        assert_eq!(
            HostError::Win32(Win32Error::NOT_ENOUGH_MEMORY).hresult(),
            HResult::E_OUTOFMEMORY
        );
        assert_eq!(
            HostError::from_engine(Win32Error::INTERNAL_ERROR),
            HostError::Catastrophic
        );
        assert_eq!(HostError::NotHostMemory.hresult().bits(), 0x8013_1022);
        assert_eq!(
            HostError::NotHostMemory.win32(),
            Win32Error::INVALID_ADDRESS
        );
        assert_eq!(HostError::Unavailable.hresult().bits(), 0x8013_1023);
        // The engine's given-up wait is the host's timeout.
        assert_eq!(
            HostError::from_engine(Win32Error::TIMEOUT).hresult(),
            HResult::HOST_E_TIMEOUT
        );
    }
}
