//! The flat Win32-style C API: `hostmem_VirtualAlloc`, `hostmem_VirtualFree`,
//! `hostmem_VirtualQuery`, `hostmem_VirtualProtect`, `hostmem_GetWriteWatch`,
//! `hostmem_ResetWriteWatch`, `hostmem_GetLargePageMinimum`,
//! `hostmem_GetLastError` and `hostmem_SetLastError`, over one process-wide default manager (a
//! [`HostMemoryManager`] of its own, with no budget).
//!
//! The contract is Win32's: a function returns its success value (the
//! address, `TRUE`, the bytes written) or its failure value (`NULL`,
//! `FALSE`, 0) with the Win32 error code as the calling thread's last
//! error. As on Windows, a successful call leaves the last error as it was:
//! these functions never reset it, so a caller looks at
//! `hostmem_GetLastError()` only after a failure.
//!
//! The face adds no semantics: the manager's failure becomes the last
//! error as its Win32 code ([`HostError::win32`]: the engine's code
//! unchanged; memory the manager does not own is `ERROR_INVALID_ADDRESS`). What belongs to the face alone is the checking of the
//! caller's output pointers and lengths, done first, through small helpers,
//! in the order Windows' kernel does it (see `query_buffer` and
//! `old_protect_out`), and the panic boundary: a panic becomes the
//! failure value with `ERROR_INTERNAL_ERROR` (1359).
//!
//! The declarations for C and C++ are in `include/hostmem.h`.
#![allow(unsafe_code)]
// The exported names are Win32's, prefixed.
#![allow(non_snake_case)]

use super::{ffi_boundary, last_error};
use crate::host::{HostError, HostMemoryManager, MemoryCriticalLevel};
use crate::win32::{AllocationType, FreeType, MemoryBasicInformation, Protection, Win32Error};
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::{Arc, LazyLock};

/// `sizeof(MEMORY_BASIC_INFORMATION)` in the Windows x64 layout.
pub const MEMORY_BASIC_INFORMATION_SIZE: usize = size_of::<MemoryBasicInformation>();

#[cfg(target_pointer_width = "64")]
const _: () = assert!(MEMORY_BASIC_INFORMATION_SIZE == 48);

/// Win32 `TRUE`.
const TRUE: i32 = 1;
/// Win32 `FALSE`.
const FALSE: i32 = 0;

/// The process-wide manager of the flat API: one more manager, whose
/// memory is its own (no other manager frees or accounts it).
/// (In an `Arc`, as every manager that may have heaps.)
static DEFAULT: LazyLock<Arc<HostMemoryManager>> =
    LazyLock::new(|| Arc::new(HostMemoryManager::default()));

/// The critical level of the flat API's requests: a plain Win32 caller
/// has none, and the default manager has no budget to apply one to.
const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::ProcessCritical;

/// Runs `f` on the flat API's default manager: every exported function
/// goes through here.
#[inline(always)]
fn with_default<T>(f: impl FnOnce(&HostMemoryManager) -> T) -> T {
    f(&DEFAULT)
}

/// Records `error` as the calling thread's last error and returns the
/// function's `failure` value.
fn fail<R>(error: Win32Error, failure: R) -> R {
    last_error::set_error(error);
    failure
}

/// The C return of an engine outcome: `ok(value)` on success (the last
/// error untouched, as on Windows), `failure` with the error recorded
/// otherwise.
#[inline(always)]
fn finish<T, R>(result: Result<T, HostError>, ok: impl FnOnce(T) -> R, failure: R) -> R {
    match result {
        Ok(value) => ok(value),
        Err(error) => fail(error.win32(), failure),
    }
}

/// Runs the body of an exported function inside the panic boundary: a
/// panic becomes `failure` with `ERROR_INTERNAL_ERROR`.
#[inline(always)]
fn exported<R>(failure: R, body: impl FnOnce() -> R) -> R {
    ffi_boundary(body, || fail(Win32Error::INTERNAL_ERROR, failure))
}

/// Checks `VirtualQuery`'s output buffer before anything else is done, in
/// the order of Windows' `NtQueryVirtualMemory`: the length first
/// (`length < 48` → `ERROR_BAD_LENGTH`, from `STATUS_INFO_LENGTH_MISMATCH`),
/// then the buffer, which the kernel probes for writing with pointer
/// alignment — `NULL` faults (`STATUS_ACCESS_VIOLATION`) and a buffer not
/// aligned to 8 bytes raises `STATUS_DATATYPE_MISALIGNMENT`; both are
/// `ERROR_NOACCESS` (998) — and only then the address.
fn query_buffer(mbi: *mut c_void, length: usize) -> Result<NonNull<u8>, Win32Error> {
    if length < MEMORY_BASIC_INFORMATION_SIZE {
        return Err(Win32Error::BAD_LENGTH);
    }
    let buffer = NonNull::new(mbi.cast::<MemoryBasicInformation>()).ok_or(Win32Error::NOACCESS)?;
    if !buffer.as_ptr().is_aligned() {
        return Err(Win32Error::NOACCESS);
    }
    Ok(buffer.cast())
}

/// Checks `VirtualProtect`'s `old_protect` before anything is changed, in
/// the order of Windows' `NtProtectVirtualMemory`: a malformed protection
/// is `ERROR_INVALID_PARAMETER` even with a `NULL` pointer (the protection
/// is checked first), then `NULL` is `ERROR_NOACCESS` (the kernel's write
/// probe faults), and only then the address range. Alignment is not
/// required (the kernel's `ULONG` probe does not check it on x64; hostmem
/// writes it unaligned).
fn old_protect_out(
    old_protect: *mut u32,
    new_protect: Protection,
) -> Result<NonNull<u32>, Win32Error> {
    match NonNull::new(old_protect) {
        Some(out) => Ok(out),
        None if !new_protect.is_well_formed() => Err(Win32Error::INVALID_PARAMETER),
        None => Err(Win32Error::NOACCESS),
    }
}

/// `mbi` as the 48 bytes of a C `MEMORY_BASIC_INFORMATION` (native byte
/// order), its padding zeroed, so that exactly these bytes reach the
/// caller and no uninitialised padding does.
pub(crate) fn mbi_bytes(mbi: &MemoryBasicInformation) -> [u8; MEMORY_BASIC_INFORMATION_SIZE] {
    fn put(bytes: &mut [u8], offset: usize, value: &[u8]) {
        bytes[offset..offset + value.len()].copy_from_slice(value);
    }
    type Mbi = MemoryBasicInformation;
    let mut bytes = [0u8; MEMORY_BASIC_INFORMATION_SIZE];
    put(
        &mut bytes,
        offset_of!(Mbi, base_address),
        &mbi.base_address.to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, allocation_base),
        &mbi.allocation_base.to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, allocation_protect),
        &mbi.allocation_protect.bits().to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, partition_id),
        &mbi.partition_id.to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, region_size),
        &mbi.region_size.to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, state),
        &mbi.state.bits().to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, protect),
        &mbi.protect.bits().to_ne_bytes(),
    );
    put(
        &mut bytes,
        offset_of!(Mbi, type_),
        &mbi.type_.bits().to_ne_bytes(),
    );
    bytes
}

/// `VirtualAlloc(address, size, allocation_type, protect)` — reserves,
/// commits or resets pages of the default address space.
///
/// Returns the base of a new reservation, or the page-rounded start of the
/// pages committed (or the address reset); `NULL` on failure, with the
/// Win32 error as the last error. Success leaves the last error unchanged.
///
/// # Safety
///
/// `address` is never dereferenced; it is only a number naming pages.
/// hostmem changes no memory it did not reserve itself, but within its own
/// reservations the caller must not let `MEM_COMMIT` with a new protection
/// or `MEM_RESET` (which may discard the contents) break code that still
/// uses those pages.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_VirtualAlloc(
    address: *mut c_void,
    size: usize,
    allocation_type: u32,
    protect: u32,
) -> *mut c_void {
    exported(ptr::null_mut(), || {
        let result = with_default(|space| {
            space.virtual_alloc(
                address.addr(),
                size,
                AllocationType::from_bits_retain(allocation_type),
                Protection::from_bits_retain(protect),
                LEVEL,
            )
        });
        finish(result, ptr::with_exposed_provenance_mut, ptr::null_mut())
    })
}

/// `VirtualFree(address, size, free_type)` — decommits pages
/// (`MEM_DECOMMIT`) or releases a whole reservation (`MEM_RELEASE`, size 0,
/// the reservation's base) of the default address space.
///
/// Returns `TRUE` (1), or `FALSE` (0) with the Win32 error as the last
/// error. Success leaves the last error unchanged.
///
/// # Safety
///
/// `address` is never dereferenced. The pages decommitted or released must
/// no longer be used by anyone: afterwards they fault, and read as zeros
/// once committed again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_VirtualFree(
    address: *mut c_void,
    size: usize,
    free_type: u32,
) -> i32 {
    exported(FALSE, || {
        let result = with_default(|space| {
            space.virtual_free(address.addr(), size, FreeType::from_bits_retain(free_type))
        });
        finish(result, |()| TRUE, FALSE)
    })
}

/// `VirtualQuery(address, mbi, length)` — describes the run of pages at
/// `address` into the caller's `MEMORY_BASIC_INFORMATION` (Windows x64
/// layout, 48 bytes).
///
/// Returns the number of bytes written (always 48), or 0 with the Win32
/// error as the last error: `length < 48` → `ERROR_BAD_LENGTH` (24); `mbi`
/// `NULL` or not 8-byte aligned → `ERROR_NOACCESS` (998); an address above
/// the user address space → `ERROR_INVALID_PARAMETER` (87). Exactly 48
/// bytes are written, padding zeroed, and only on success. Success leaves
/// the last error unchanged.
///
/// # Safety
///
/// `address` is never dereferenced. `mbi` must be `NULL` or valid for
/// writes of 48 bytes (hostmem writes no more, whatever `length` says).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_VirtualQuery(
    address: *const c_void,
    mbi: *mut c_void,
    length: usize,
) -> usize {
    exported(0, || {
        let buffer = match query_buffer(mbi, length) {
            Ok(buffer) => buffer,
            Err(error) => return fail(error, 0),
        };
        let result = with_default(|space| space.virtual_query(address.addr()));
        finish(
            result,
            |info| {
                let bytes = mbi_bytes(&info);
                // SAFETY: `buffer` is non-null (checked by `query_buffer`)
                // and the caller guarantees it is valid for writes of 48
                // bytes; `bytes` is a local array, so the two do not
                // overlap; a byte copy needs no alignment.
                unsafe {
                    ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.as_ptr(), bytes.len());
                }
                MEMORY_BASIC_INFORMATION_SIZE
            },
            0,
        )
    })
}

/// `VirtualProtect(address, size, new_protect, old_protect)` — changes the
/// protection of committed pages of the default address space and stores
/// the old protection of the first page in `*old_protect`.
///
/// Returns `TRUE` (1), or `FALSE` (0) with the Win32 error as the last
/// error: a malformed `new_protect` → `ERROR_INVALID_PARAMETER` (87);
/// `old_protect` `NULL` → `ERROR_NOACCESS` (998), checked before anything
/// is changed. `*old_protect` is written only on success. Success leaves
/// the last error unchanged.
///
/// # Safety
///
/// `address` is never dereferenced. `old_protect` must be `NULL` or valid
/// for a write of 4 bytes (any alignment). Code still using the pages must
/// cope with their new protection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_VirtualProtect(
    address: *mut c_void,
    size: usize,
    new_protect: u32,
    old_protect: *mut u32,
) -> i32 {
    exported(FALSE, || {
        let new_protect = Protection::from_bits_retain(new_protect);
        let out = match old_protect_out(old_protect, new_protect) {
            Ok(out) => out,
            Err(error) => return fail(error, FALSE),
        };
        let result = with_default(|space| space.virtual_protect(address.addr(), size, new_protect));
        finish(
            result,
            |old| {
                // SAFETY: `out` is non-null (checked by `old_protect_out`)
                // and the caller guarantees it is valid for a 4-byte write;
                // the write is unaligned, so no alignment is assumed.
                unsafe { out.as_ptr().write_unaligned(old.bits()) };
                TRUE
            },
            FALSE,
        )
    })
}

/// `GetWriteWatch(flags, base, size, addresses, count, granularity)` —
/// lists the pages of a `MEM_WRITE_WATCH` reservation of the default
/// address space written since they were last reset, ascending, at most
/// `*count` of them; with `WRITE_WATCH_FLAG_RESET` (1) in `flags`, resets
/// exactly the pages listed.
///
/// Returns 0 with `*count` set to the number of addresses stored and
/// `*granularity` to the page size (4096), or `(UINT)-1` with the Win32
/// error as the last error, checked in the order of Windows' kernel:
/// unknown `flags` → `ERROR_INVALID_PARAMETER`; `count` or `granularity`
/// `NULL` → `ERROR_NOACCESS`; `*count` 0 or `size` 0 →
/// `ERROR_INVALID_PARAMETER`; `addresses` `NULL` → `ERROR_NOACCESS`; a
/// range that is not inside one watched reservation →
/// `ERROR_INVALID_PARAMETER`. Nothing is written on failure. Success
/// leaves the last error unchanged.
///
/// # Safety
///
/// `base` is never dereferenced. `count` and `granularity` must be `NULL`
/// or valid for a write (of 8 and 4 bytes); `addresses` must be `NULL` or
/// valid for writes of `*count` pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_GetWriteWatch(
    flags: u32,
    base: *mut c_void,
    size: usize,
    addresses: *mut *mut c_void,
    count: *mut usize,
    granularity: *mut u32,
) -> u32 {
    const FAILED: u32 = u32::MAX;
    exported(FAILED, || {
        if flags & !crate::win32::WRITE_WATCH_FLAG_RESET != 0 {
            return fail(Win32Error::INVALID_PARAMETER, FAILED);
        }
        if count.is_null() || granularity.is_null() {
            return fail(Win32Error::NOACCESS, FAILED);
        }
        // SAFETY: `count` is non-null and the caller guarantees it is
        // valid for a read and a write.
        let max = unsafe { count.read_unaligned() };
        if max == 0 || size == 0 {
            return fail(Win32Error::INVALID_PARAMETER, FAILED);
        }
        if addresses.is_null() {
            return fail(Win32Error::NOACCESS, FAILED);
        }
        let mut found = Vec::new();
        let result = with_default(|space| {
            space
                .get_write_watch(flags, base.addr(), size, max, &mut found)
                .map_err(|e| match e {
                    // Whatever is not a watched reservation, Windows calls
                    // an invalid parameter.
                    HostError::NotHostMemory => HostError::Win32(Win32Error::INVALID_PARAMETER),
                    other => other,
                })
        });
        finish(
            result,
            |()| {
                for (i, &page) in found.iter().enumerate() {
                    // SAFETY: `found` holds at most `max` addresses and the
                    // caller guarantees `addresses` is valid for `max`
                    // pointer writes.
                    unsafe {
                        addresses
                            .add(i)
                            .write_unaligned(ptr::with_exposed_provenance_mut(page));
                    }
                }
                // SAFETY: both non-null (checked above), valid for writes
                // (the caller's guarantee).
                unsafe {
                    count.write_unaligned(found.len());
                    granularity.write_unaligned(crate::win32::PAGE_SIZE as u32);
                }
                0
            },
            FAILED,
        )
    })
}

/// `ResetWriteWatch(base, size)` — forgets the writes to pages of a
/// `MEM_WRITE_WATCH` reservation of the default address space.
///
/// Returns 0, or `(UINT)-1` with the Win32 error as the last error: `size`
/// 0, or a range not inside one watched reservation →
/// `ERROR_INVALID_PARAMETER`. Success leaves the last error unchanged.
///
/// # Safety
///
/// `base` is never dereferenced; it is only a number naming pages.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_ResetWriteWatch(base: *mut c_void, size: usize) -> u32 {
    const FAILED: u32 = u32::MAX;
    exported(FAILED, || {
        let result = with_default(|space| {
            space
                .reset_write_watch(base.addr(), size)
                .map_err(|e| match e {
                    HostError::NotHostMemory => HostError::Win32(Win32Error::INVALID_PARAMETER),
                    other => other,
                })
        });
        finish(result, |()| 0, FAILED)
    })
}

/// `GetLargePageMinimum()` — the size of a large page (`MEM_LARGE_PAGES`):
/// the kernel's default huge page size (2 MiB on x86-64), or 0 where the
/// kernel has none.
///
/// # Safety
///
/// None: it may be called at any time from any thread (it is `unsafe` only
/// for the uniformity of the C face).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_GetLargePageMinimum() -> usize {
    ffi_boundary(crate::os::huge_page_size, || 0)
}

/// `GetLastError()` — the calling thread's last error code: the Win32 error
/// of its latest failed hostmem call, or what it last passed to
/// [`hostmem_SetLastError`]; 0 (`ERROR_SUCCESS`) in a new thread.
///
/// # Safety
///
/// None: it may be called at any time from any thread (it is `unsafe` only
/// for the uniformity of the C face).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_GetLastError() -> u32 {
    ffi_boundary(last_error::get, || Win32Error::INTERNAL_ERROR.code())
}

/// `SetLastError(code)` — sets the calling thread's last error code (any
/// value; other threads' are not affected).
///
/// # Safety
///
/// None: it may be called at any time from any thread (it is `unsafe` only
/// for the uniformity of the C face).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn hostmem_SetLastError(code: u32) {
    ffi_boundary(|| last_error::set(code), || ());
}

// The tests read the Windows x64 layout back byte by byte.
#[cfg(all(test, target_pointer_width = "64"))]
pub(crate) mod tests {
    use super::*;
    use crate::heap::MallocType;
    use crate::win32::{MemoryState, MemoryType, PAGE_SIZE};

    const MEM_COMMIT: u32 = 0x1000;
    const MEM_RESET: u32 = 0x8_0000;
    const MEM_RESERVE: u32 = 0x2000;
    const MEM_DECOMMIT: u32 = 0x4000;
    const MEM_RELEASE: u32 = 0x8000;
    const PAGE_NOACCESS: u32 = 0x01;
    const PAGE_READONLY: u32 = 0x02;
    const PAGE_READWRITE: u32 = 0x04;
    const SENTINEL: u32 = 0xdead_beef;

    /// Serialises the tests that use the default address space, so that
    /// one test's released range is not reserved by another before the
    /// first is done with it, and its statistics hold still (the bench's
    /// tests take it too: figures 1–5 run through the flat API).
    pub(crate) fn serial() -> parking_lot::MutexGuard<'static, ()> {
        static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
        SERIAL.lock()
    }

    // Thin safe wrappers for the tests. Each test sets the last error it
    // expects to be kept before relying on it (with `--test-threads=1`
    // the tests share one thread).

    fn alloc(address: usize, size: usize, kind: u32, protect: u32) -> usize {
        // SAFETY: the tests only name pages of reservations they made.
        unsafe {
            hostmem_VirtualAlloc(
                ptr::with_exposed_provenance_mut(address),
                size,
                kind,
                protect,
            )
        }
        .addr()
    }

    fn free(address: usize, size: usize, kind: u32) -> i32 {
        // SAFETY: the tests free only their own reservations' pages,
        // which nothing else uses.
        unsafe { hostmem_VirtualFree(ptr::with_exposed_provenance_mut(address), size, kind) }
    }

    fn query_into(address: usize, buffer: *mut c_void, length: usize) -> usize {
        // SAFETY: the callers pass NULL or a buffer with at least 48
        // writable bytes.
        unsafe { hostmem_VirtualQuery(ptr::with_exposed_provenance(address), buffer, length) }
    }

    fn protect(address: usize, size: usize, new: u32, old: *mut u32) -> i32 {
        // SAFETY: `old` is NULL or a local; the pages are the test's own.
        unsafe { hostmem_VirtualProtect(ptr::with_exposed_provenance_mut(address), size, new, old) }
    }

    fn last_error() -> u32 {
        // SAFETY: no requirements.
        unsafe { hostmem_GetLastError() }
    }

    fn set_last_error(code: u32) {
        // SAFETY: no requirements.
        unsafe { hostmem_SetLastError(code) }
    }

    /// A C-shaped MBI read back from the bytes the API wrote.
    fn query(address: usize) -> MemoryBasicInformation {
        let mut words = [0u64; 6];
        let written = query_into(address, words.as_mut_ptr().cast(), 48);
        assert_eq!(written, 48, "VirtualQuery failed: {}", last_error());
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        let usize_at = |o: usize| usize::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
        MemoryBasicInformation {
            base_address: usize_at(0),
            allocation_base: usize_at(8),
            allocation_protect: Protection::from_bits_retain(u32_at(16)),
            partition_id: u16::from_ne_bytes([bytes[20], bytes[21]]),
            region_size: usize_at(24),
            state: MemoryState::from_bits_retain(u32_at(32)),
            protect: Protection::from_bits_retain(u32_at(36)),
            type_: MemoryType::from_bits_retain(u32_at(40)),
        }
    }

    #[test]
    fn reserve_commit_protect_query_release() {
        let _serial = serial();
        set_last_error(SENTINEL);
        let base = alloc(0, 0x10000, MEM_RESERVE, PAGE_NOACCESS);
        assert_ne!(base, 0, "reserve failed: {}", last_error());
        assert_eq!(last_error(), SENTINEL, "success keeps the last error");
        assert_eq!(alloc(base, 0x2000, MEM_COMMIT, PAGE_READWRITE), base);

        let info = query(base + 0x10);
        assert_eq!(info.base_address, base);
        assert_eq!(info.allocation_base, base);
        assert_eq!(info.allocation_protect, Protection::NOACCESS);
        assert_eq!(info.partition_id, 0);
        assert_eq!(info.region_size, 0x2000);
        assert_eq!(info.state, MemoryState::COMMIT);
        assert_eq!(info.protect, Protection::READWRITE);
        assert_eq!(info.type_, MemoryType::PRIVATE);

        let mut old = 0u32;
        assert_eq!(
            protect(base + PAGE_SIZE, PAGE_SIZE, PAGE_READONLY, &mut old),
            TRUE
        );
        assert_eq!(old, PAGE_READWRITE);
        assert_eq!(query(base).region_size, PAGE_SIZE);
        assert_eq!(query(base + PAGE_SIZE).protect, Protection::READONLY);

        assert_eq!(free(base, 0x2000, MEM_DECOMMIT), TRUE);
        assert_eq!(query(base).state, MemoryState::RESERVE);
        assert_eq!(free(base, 0, MEM_RELEASE), TRUE);
        assert_eq!(last_error(), SENTINEL);
        // (Not queried: another test's address space may map it at once.)
        assert!(!with_default(|space| space.owns(base)));
    }

    #[test]
    fn a_heaps_chunks_are_not_the_callers_to_free_protect_or_reset() {
        let _serial = serial();
        // A heap of the flat API's own manager: its chunks are the host's.
        let heap = DEFAULT.create_malloc(MallocType::THREADSAFE).unwrap();
        let block = heap.alloc(32, LEVEL).unwrap();
        let before = query(block);
        assert_eq!(before.state, MemoryState::COMMIT);
        let base = before.allocation_base;
        let page = block & !(PAGE_SIZE - 1);
        let stats = DEFAULT.statistics();
        let refused = Win32Error::INVALID_ADDRESS.code();
        set_last_error(SENTINEL);
        assert_eq!(free(base, 0, MEM_RELEASE), FALSE);
        assert_eq!(last_error(), refused);
        set_last_error(SENTINEL);
        assert_eq!(free(page, PAGE_SIZE, MEM_DECOMMIT), FALSE);
        assert_eq!(last_error(), refused);
        set_last_error(SENTINEL);
        let mut old = SENTINEL;
        assert_eq!(protect(page, PAGE_SIZE, PAGE_NOACCESS, &mut old), FALSE);
        assert_eq!((last_error(), old), (refused, SENTINEL));
        for kind in [MEM_RESET, MEM_COMMIT] {
            set_last_error(SENTINEL);
            assert_eq!(alloc(page, PAGE_SIZE, kind, PAGE_READWRITE), 0);
            assert_eq!(last_error(), refused);
        }
        assert_eq!(query(block), before);
        let after = DEFAULT.statistics();
        assert_eq!(
            (after.regions, after.reserved_bytes, after.committed_bytes),
            (stats.regions, stats.reserved_bytes, stats.committed_bytes)
        );
        // The heap still works.
        // SAFETY: a live 32-byte block of `heap`.
        unsafe { ptr::write_bytes(block as *mut u8, 0x5a, 32) };
        heap.free(block).unwrap();
        let again = heap.alloc(32, LEVEL).unwrap();
        heap.free(again).unwrap();
    }

    #[test]
    fn engine_errors_become_the_last_error_unchanged() {
        let _serial = serial();
        set_last_error(SENTINEL);
        assert_eq!(alloc(0, 0, MEM_RESERVE, PAGE_READWRITE), 0);
        assert_eq!(last_error(), Win32Error::INVALID_PARAMETER.code());
        let base = alloc(0, 0x10000, MEM_RESERVE, PAGE_READWRITE);
        assert_ne!(base, 0);
        assert_eq!(free(base, 1, MEM_RELEASE), FALSE);
        assert_eq!(last_error(), 87);
        assert_eq!(free(base + 0x1001, 0, MEM_RELEASE), FALSE);
        assert_eq!(last_error(), 487);
        assert_eq!(free(base, 0, MEM_RELEASE), TRUE);
        assert_eq!(free(base, 0, MEM_RELEASE), FALSE);
        assert_eq!(last_error(), 487);
    }

    #[test]
    fn query_checks_length_then_buffer_then_address() {
        let _serial = serial();
        let mut words = [0u64; 7];
        let buffer: *mut c_void = words.as_mut_ptr().cast();
        let here = (&raw const words).addr();

        set_last_error(SENTINEL);
        assert_eq!(query_into(here, buffer, 47), 0);
        assert_eq!(last_error(), Win32Error::BAD_LENGTH.code());
        assert_eq!(query_into(here, ptr::null_mut(), 47), 0);
        assert_eq!(last_error(), 24, "the length is checked before the buffer");
        assert_eq!(query_into(here, ptr::null_mut(), 48), 0);
        assert_eq!(last_error(), Win32Error::NOACCESS.code());
        // SAFETY: one byte into a 56-byte array leaves 55 bytes.
        let misaligned = unsafe { buffer.byte_add(1) };
        assert_eq!(query_into(here, misaligned, 48), 0);
        assert_eq!(last_error(), Win32Error::NOACCESS.code());
        assert_eq!(words, [0; 7], "nothing written on failure");
        assert_eq!(query_into(usize::MAX - 0xfff, ptr::null_mut(), 48), 0);
        assert_eq!(
            last_error(),
            998,
            "the buffer is checked before the address"
        );
        assert_eq!(query_into(usize::MAX - 0xfff, buffer, 48), 0);
        assert_eq!(last_error(), Win32Error::INVALID_PARAMETER.code());

        set_last_error(SENTINEL);
        assert_eq!(
            query_into(here, buffer, 1000),
            48,
            "a longer buffer is fine"
        );
        assert_eq!(last_error(), SENTINEL);
    }

    #[test]
    fn query_writes_exactly_48_bytes_with_zeroed_padding() {
        let _serial = serial();
        let base = alloc(0, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        assert_ne!(base, 0);
        let mut words = [u64::MAX; 7];
        assert_eq!(query_into(base, words.as_mut_ptr().cast(), 48), 48);
        assert_eq!(words[6], u64::MAX, "nothing written past 48 bytes");
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes[22..24], &[0, 0], "padding after PartitionId");
        assert_eq!(&bytes[44..48], &[0, 0, 0, 0], "tail padding");
        assert_eq!(free(base, 0, MEM_RELEASE), TRUE);
    }

    #[test]
    fn protect_checks_old_pointer_before_changing_anything() {
        let _serial = serial();
        let base = alloc(0, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        assert_ne!(base, 0);
        set_last_error(SENTINEL);
        assert_eq!(
            protect(base, PAGE_SIZE, PAGE_READONLY, ptr::null_mut()),
            FALSE
        );
        assert_eq!(last_error(), Win32Error::NOACCESS.code());
        assert_eq!(
            query(base).protect,
            Protection::READWRITE,
            "nothing changed"
        );
        assert_eq!(protect(base, PAGE_SIZE, 0x06, ptr::null_mut()), FALSE);
        assert_eq!(last_error(), 87, "a malformed protection is reported first");
        assert_eq!(protect(base, PAGE_SIZE, 0, ptr::null_mut()), FALSE);
        assert_eq!(last_error(), 87);

        let mut unaligned = [0u8; 8];
        let old = unaligned[1..].as_mut_ptr().cast::<u32>();
        assert_eq!(protect(base, PAGE_SIZE, PAGE_READONLY, old), TRUE);
        assert_eq!(
            u32::from_ne_bytes(unaligned[1..5].try_into().unwrap()),
            PAGE_READWRITE
        );
        assert_eq!(free(base, 0, MEM_RELEASE), TRUE);
    }

    #[test]
    fn last_error_is_per_thread() {
        let _serial = serial();
        set_last_error(5);
        std::thread::spawn(|| {
            assert_eq!(last_error(), 0);
            assert_eq!(alloc(0, 0, MEM_RESERVE, PAGE_READWRITE), 0);
            assert_eq!(last_error(), 87);
        })
        .join()
        .unwrap();
        assert_eq!(last_error(), 5);
    }

    #[test]
    fn a_panic_becomes_the_failure_value_with_internal_error() {
        let _serial = serial();
        set_last_error(SENTINEL);
        let value = exported(FALSE, || -> i32 { panic!("engine bug") });
        assert_eq!(value, FALSE);
        assert_eq!(last_error(), Win32Error::INTERNAL_ERROR.code());
        set_last_error(SENTINEL);
        let value = exported(ptr::null_mut::<c_void>(), || panic!("engine bug"));
        assert!(value.is_null());
        assert_eq!(last_error(), 1359);
        // The default address space is still usable (the mutex does not
        // poison).
        assert_eq!(with_default(|_| 1), 1);
    }

    #[test]
    fn mbi_bytes_follow_the_c_layout() {
        let info = MemoryBasicInformation {
            base_address: 0x1122_3344_5566_7788,
            allocation_base: 0x0102_0304_0506_0708,
            allocation_protect: Protection::EXECUTE_READ,
            partition_id: 0xabcd,
            region_size: 0x0a0b_0c0d_0e0f_1011,
            state: MemoryState::RESERVE,
            protect: Protection::READWRITE,
            type_: MemoryType::IMAGE,
        };
        let bytes = mbi_bytes(&info);
        assert_eq!(bytes[0..8], 0x1122_3344_5566_7788usize.to_ne_bytes());
        assert_eq!(bytes[8..16], 0x0102_0304_0506_0708usize.to_ne_bytes());
        assert_eq!(bytes[16..20], 0x20u32.to_ne_bytes());
        assert_eq!(bytes[20..22], 0xabcdu16.to_ne_bytes());
        assert_eq!(bytes[22..24], [0, 0]);
        assert_eq!(bytes[24..32], 0x0a0b_0c0d_0e0f_1011usize.to_ne_bytes());
        assert_eq!(bytes[32..36], 0x2000u32.to_ne_bytes());
        assert_eq!(bytes[36..40], 0x04u32.to_ne_bytes());
        assert_eq!(bytes[40..44], 0x0100_0000u32.to_ne_bytes());
        assert_eq!(bytes[44..48], [0; 4]);
    }
}
