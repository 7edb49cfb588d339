//! The per-thread last error of the flat API (`GetLastError` /
//! `SetLastError`).
//!
//! Each thread has its own value, starting at `ERROR_SUCCESS` (0), exactly
//! as a Windows thread's `LastErrorValue` in its TEB. Nothing here is
//! unsafe, so the file stays under the crate's ban.
#![forbid(unsafe_code)]

use crate::win32::Win32Error;
use std::cell::Cell;

thread_local! {
    static LAST_ERROR: Cell<u32> = const { Cell::new(Win32Error::SUCCESS.code()) };
}

/// The calling thread's last error code.
///
/// During the thread's teardown, after its thread-locals were destroyed,
/// this answers `ERROR_SUCCESS` instead of panicking.
pub(crate) fn get() -> u32 {
    LAST_ERROR
        .try_with(Cell::get)
        .unwrap_or(Win32Error::SUCCESS.code())
}

/// Sets the calling thread's last error code (any value, as Windows allows).
///
/// During the thread's teardown the value is dropped silently.
pub(crate) fn set(code: u32) {
    let _ = LAST_ERROR.try_with(|cell| cell.set(code));
}

/// Records a Win32 failure as the calling thread's last error, unchanged.
pub(crate) fn set_error(error: Win32Error) {
    set(error.code());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_success_and_keeps_what_was_set() {
        std::thread::spawn(|| {
            assert_eq!(get(), 0);
            set(0xdead_beef);
            assert_eq!(get(), 0xdead_beef);
            set_error(Win32Error::INVALID_ADDRESS);
            assert_eq!(get(), 487);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn is_per_thread() {
        set(7);
        std::thread::spawn(|| {
            assert_eq!(get(), 0, "a new thread starts at ERROR_SUCCESS");
            set(99);
        })
        .join()
        .unwrap();
        assert_eq!(get(), 7, "another thread's value does not leak here");
    }
}
