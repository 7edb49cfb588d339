//! The C faces of hostmem: thin wrappers that add no semantics.
//!
//! - [`flat`]: the flat Win32-style API (`hostmem_VirtualAlloc`, …,
//!   `hostmem_GetLastError`) over one process-wide default address space,
//!   declared for C and C++ in `include/hostmem.h` (and under the Win32
//!   names in `include/hostmem/win32.h`);
//! - [`com`]: the COM objects (`IHostMemoryManager`, `IHostControl`),
//!   declared in `include/hostmem/com.h`.
//!
//! Every exported function runs its body inside `ffi_boundary`, so a
//! panic never unwinds into a C caller: it becomes the function's failure
//! value. Unsafe code is opted into per file (`flat.rs`, the files of
//! `com/`); this file and `last_error.rs` have none and stay under the
//! crate's ban.

pub mod com;
pub mod flat;
mod last_error;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

/// Runs `body` and returns its value; if it panics, returns `on_panic()`
/// instead, so that no panic crosses an `extern "C"` boundary (unwinding
/// into C is undefined behaviour, and aborting would take the host down).
///
/// The flat API's `on_panic` sets `ERROR_INTERNAL_ERROR` and returns the
/// function's failure value; the COM face's returns `E_FAIL` (and latches
/// the manager). `body` is treated as unwind safe: the state it can leave
/// half-changed is behind a `parking_lot` mutex (not poisoned), and the
/// layer above reports `ERROR_INTERNAL_ERROR` / `E_FAIL` exactly so the
/// caller stops trusting that state.
#[inline(always)]
pub(crate) fn ffi_boundary<T>(body: impl FnOnce() -> T, on_panic: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            discard_payload(payload);
            on_panic()
        }
    }
}

/// Drops a panic payload without letting a panicking `Drop` escape: a
/// second payload is leaked instead.
fn discard_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_passes_values_through() {
        assert_eq!(ffi_boundary(|| 42, || 0), 42);
    }

    #[test]
    fn boundary_turns_a_panic_into_the_failure_value() {
        let value = ffi_boundary(|| -> i32 { panic!("boom") }, || -1);
        assert_eq!(value, -1);
    }

    #[test]
    fn boundary_survives_a_payload_whose_drop_panics() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("payload drop");
            }
        }
        let value = ffi_boundary(|| -> i32 { std::panic::panic_any(Bomb) }, || 7);
        assert_eq!(value, 7);
    }
}
