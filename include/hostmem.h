/*
 * hostmem.h: the C ABI of hostmem, a host memory manager that emulates the
 * Win32 virtual-memory functions (VirtualAlloc, VirtualFree, VirtualQuery,
 * VirtualProtect) exactly on Linux.
 *
 * Build the libraries with `cargo build --release` (into target/release/),
 * then link either the static archive with the system libraries it needs:
 *     target/release/libhostmem.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
 * or the shared library:
 *     -L target/release -lhostmem -Wl,-rpath,<absolute path of target/release>
 * (or `pkg-config --libs hostmem` with hostmem.pc, at the repository's root,
 * on PKG_CONFIG_PATH). The README's "Examples" section shows whole lines.
 * For the unprefixed Win32 names and types, include <hostmem/win32.h>.
 *
 * Hand-written; the integration test tests/flat_c_api.rs checks its
 * constants and the layout of hostmem_MEMORY_BASIC_INFORMATION against the
 * Rust definitions (src/win32), so the two cannot drift apart.
 */
#ifndef HOSTMEM_H
#define HOSTMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Allocation types (flAllocationType of VirtualAlloc, dwFreeType of
 * VirtualFree) and page states and types (MEMORY_BASIC_INFORMATION).
 * Values are Windows'. Each is a uint32_t constant usable in #if.
 * ------------------------------------------------------------------------ */
#define HOSTMEM_MEM_COMMIT        UINT32_C(0x00001000) /* back pages with memory; State of committed pages */
#define HOSTMEM_MEM_RESERVE       UINT32_C(0x00002000) /* take address space; State of reserved pages */
#define HOSTMEM_MEM_DECOMMIT      UINT32_C(0x00004000) /* VirtualFree: committed pages become reserved */
#define HOSTMEM_MEM_RELEASE       UINT32_C(0x00008000) /* VirtualFree: the whole reservation becomes free */
#define HOSTMEM_MEM_COALESCE_PLACEHOLDERS UINT32_C(0x00000001) /* VirtualFree, with MEM_RELEASE: join placeholders; hostmem makes none, so it fails */
#define HOSTMEM_MEM_PRESERVE_PLACEHOLDER  UINT32_C(0x00000002) /* VirtualFree, with MEM_RELEASE: split a placeholder; hostmem makes none, so it fails */
#define HOSTMEM_MEM_FREE          UINT32_C(0x00010000) /* State of address space nobody holds */
#define HOSTMEM_MEM_PRIVATE       UINT32_C(0x00020000) /* Type: anonymous memory of the process */
#define HOSTMEM_MEM_MAPPED        UINT32_C(0x00040000) /* Type: a view of a file */
#define HOSTMEM_MEM_RESET         UINT32_C(0x00080000) /* the pages' contents are no longer of interest */
#define HOSTMEM_MEM_TOP_DOWN      UINT32_C(0x00100000) /* place the reservation as high as possible */
#define HOSTMEM_MEM_WRITE_WATCH   UINT32_C(0x00200000) /* with MEM_RESERVE: watch writes (hostmem_GetWriteWatch) */
#define HOSTMEM_MEM_PHYSICAL      UINT32_C(0x00400000) /* refused by hostmem (ERROR_INVALID_PARAMETER) */
#define HOSTMEM_MEM_RESET_UNDO    UINT32_C(0x01000000) /* take back a MEM_RESET */
#define HOSTMEM_MEM_IMAGE         UINT32_C(0x01000000) /* Type: a view of a loaded executable image */
#define HOSTMEM_MEM_LARGE_PAGES   UINT32_C(0x20000000) /* with MEM_RESERVE | MEM_COMMIT: huge pages */
#define HOSTMEM_WRITE_WATCH_FLAG_RESET UINT32_C(1)    /* hostmem_GetWriteWatch: reset the pages reported */

/* ------------------------------------------------------------------------
 * Page protections: exactly one base protection, optionally with one
 * modifier (GUARD, NOCACHE or WRITECOMBINE; none with NOACCESS).
 * ------------------------------------------------------------------------ */
#define HOSTMEM_PAGE_NOACCESS          UINT32_C(0x00000001)
#define HOSTMEM_PAGE_READONLY          UINT32_C(0x00000002)
#define HOSTMEM_PAGE_READWRITE         UINT32_C(0x00000004)
#define HOSTMEM_PAGE_WRITECOPY         UINT32_C(0x00000008) /* invalid for private memory */
#define HOSTMEM_PAGE_EXECUTE           UINT32_C(0x00000010)
#define HOSTMEM_PAGE_EXECUTE_READ      UINT32_C(0x00000020)
#define HOSTMEM_PAGE_EXECUTE_READWRITE UINT32_C(0x00000040)
#define HOSTMEM_PAGE_EXECUTE_WRITECOPY UINT32_C(0x00000080) /* invalid for private memory */
#define HOSTMEM_PAGE_GUARD             UINT32_C(0x00000100) /* modifier; refused by hostmem */
#define HOSTMEM_PAGE_NOCACHE           UINT32_C(0x00000200) /* modifier; recorded, no effect on Linux */
#define HOSTMEM_PAGE_WRITECOMBINE      UINT32_C(0x00000400) /* modifier; recorded, no effect on Linux */

/* ------------------------------------------------------------------------
 * Win32 error codes, as hostmem_GetLastError() returns them.
 * ------------------------------------------------------------------------ */
#define HOSTMEM_ERROR_SUCCESS           UINT32_C(0)    /* no error */
#define HOSTMEM_ERROR_NOT_ENOUGH_MEMORY UINT32_C(8)    /* out of address space or memory */
#define HOSTMEM_ERROR_OUTOFMEMORY       UINT32_C(14)
#define HOSTMEM_ERROR_BAD_LENGTH        UINT32_C(24)   /* VirtualQuery: length < sizeof(MEMORY_BASIC_INFORMATION) */
#define HOSTMEM_ERROR_NOT_SUPPORTED     UINT32_C(50)   /* MEM_WRITE_WATCH on a kernel that cannot watch writes */
#define HOSTMEM_ERROR_INVALID_PARAMETER UINT32_C(87)   /* a bad type, size, protection or address */
#define HOSTMEM_ERROR_INVALID_ADDRESS   UINT32_C(487)  /* an address in the wrong state, or not hostmem's */
#define HOSTMEM_ERROR_NOACCESS          UINT32_C(998)  /* an output pointer that cannot be written */
#define HOSTMEM_ERROR_INTERNAL_ERROR    UINT32_C(1359) /* hostmem's map may no longer match the kernel's */
#define HOSTMEM_ERROR_NO_SYSTEM_RESOURCES UINT32_C(1450) /* MEM_LARGE_PAGES: no huge pages to be had */
#define HOSTMEM_ERROR_COMMITMENT_LIMIT  UINT32_C(1455) /* the commit limit was reached */
#define HOSTMEM_ERROR_TIMEOUT           UINT32_C(1460) /* the manager's lock was not free in time (another call held it too long); nothing changed */

/* ------------------------------------------------------------------------
 * MEMORY_BASIC_INFORMATION in the Windows x64 layout (48 bytes): what
 * hostmem_VirtualQuery writes.
 * ------------------------------------------------------------------------ */
typedef struct hostmem_MEMORY_BASIC_INFORMATION {
    void*    BaseAddress;       /* the queried address rounded down to its page */
    void*    AllocationBase;    /* the reservation's base; NULL for free memory */
    uint32_t AllocationProtect; /* the protection given at reservation; 0 for free memory */
    uint16_t PartitionId;       /* always 0 */
    /* 2 bytes of padding (written as zeros) */
    size_t   RegionSize;        /* bytes from BaseAddress with the same State and Protect */
    uint32_t State;             /* HOSTMEM_MEM_COMMIT, HOSTMEM_MEM_RESERVE or HOSTMEM_MEM_FREE */
    uint32_t Protect;           /* HOSTMEM_PAGE_*; 0 for reserved pages */
    uint32_t Type;              /* HOSTMEM_MEM_PRIVATE, _MAPPED, _IMAGE; 0 for free memory */
    /* 4 bytes of padding (written as zeros) */
} hostmem_MEMORY_BASIC_INFORMATION;

#if UINTPTR_MAX == UINT64_MAX
#  if defined(__cplusplus) && __cplusplus >= 201103L
#    define HOSTMEM_STATIC_ASSERT_(cond, msg) static_assert(cond, msg)
#  elif !defined(__cplusplus) && defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#    define HOSTMEM_STATIC_ASSERT_(cond, msg) _Static_assert(cond, msg)
#  endif
#  ifdef HOSTMEM_STATIC_ASSERT_
HOSTMEM_STATIC_ASSERT_(sizeof(hostmem_MEMORY_BASIC_INFORMATION) == 48,
                       "MEMORY_BASIC_INFORMATION must have the Windows x64 layout (48 bytes)");
HOSTMEM_STATIC_ASSERT_(offsetof(hostmem_MEMORY_BASIC_INFORMATION, RegionSize) == 24,
                       "MEMORY_BASIC_INFORMATION.RegionSize must be at offset 24");
HOSTMEM_STATIC_ASSERT_(offsetof(hostmem_MEMORY_BASIC_INFORMATION, Type) == 40,
                       "MEMORY_BASIC_INFORMATION.Type must be at offset 40");
#    undef HOSTMEM_STATIC_ASSERT_
#  endif
#endif

/* ------------------------------------------------------------------------
 * The flat Win32-style API over one process-wide default manager.
 *
 * Each function returns its success value, or its failure value (NULL,
 * 0) with a Win32 error code as the calling thread's last error. As on
 * Windows, success does NOT reset the last error: read
 * hostmem_GetLastError() only after a failure. The last error is per
 * thread. All functions are thread-safe. hostmem changes only memory it
 * reserved itself: committing, protecting, resetting or freeing any other
 * address fails with HOSTMEM_ERROR_INVALID_ADDRESS (a deliberate departure
 * from Windows). Any function may also fail with HOSTMEM_ERROR_TIMEOUT when
 * another call held the manager's lock past its timeout (nothing changed:
 * the call may be retried), or HOSTMEM_ERROR_INTERNAL_ERROR once the
 * manager has failed.
 * ------------------------------------------------------------------------ */

/* VirtualAlloc: reserves (HOSTMEM_MEM_RESERVE), commits (HOSTMEM_MEM_COMMIT)
 * or both, or resets (HOSTMEM_MEM_RESET, HOSTMEM_MEM_RESET_UNDO) pages.
 * address: NULL to let hostmem choose (64 KiB aligned), else the desired
 * address (reservations are rounded down to 64 KiB, commits to the page).
 * Returns the base of the reservation or the page-rounded start of the
 * pages committed; NULL on failure (size 0, a bad type or protection, or a
 * range past the user address space, or at NULL a size larger than it:
 * HOSTMEM_ERROR_INVALID_PARAMETER; a conflicting or wrong-state address:
 * HOSTMEM_ERROR_INVALID_ADDRESS; out of memory:
 * HOSTMEM_ERROR_NOT_ENOUGH_MEMORY). Newly committed pages read as zero. */
void* hostmem_VirtualAlloc(void* address, size_t size, uint32_t allocation_type, uint32_t protect);

/* VirtualFree: HOSTMEM_MEM_DECOMMIT makes the pages touched by
 * [address, address + size) reserved again (size 0 at the base: the whole
 * region); HOSTMEM_MEM_RELEASE frees the whole reservation, given its base
 * and size 0. Returns 1 (TRUE), or 0 (FALSE) on failure (another type, or
 * RELEASE with size != 0: HOSTMEM_ERROR_INVALID_PARAMETER; not a
 * reservation's base, or not hostmem's: HOSTMEM_ERROR_INVALID_ADDRESS).
 * RELEASE with a placeholder flag fails as Windows fails it on memory that
 * is not a placeholder (hostmem makes none): HOSTMEM_ERROR_INVALID_ADDRESS,
 * or HOSTMEM_ERROR_INVALID_PARAMETER for size 0 at the base or a split
 * past the reservation's end. */
int32_t hostmem_VirtualFree(void* address, size_t size, uint32_t free_type);

/* VirtualQuery: writes a hostmem_MEMORY_BASIC_INFORMATION (exactly 48
 * bytes) describing the run of pages at address into mbi. Returns 48, or
 * 0 on failure (length < 48: HOSTMEM_ERROR_BAD_LENGTH; mbi NULL or not
 * 8-byte aligned: HOSTMEM_ERROR_NOACCESS; address above the user address
 * space: HOSTMEM_ERROR_INVALID_PARAMETER), checked in that order. Memory
 * that is not hostmem's is described from the kernel's view. */
size_t hostmem_VirtualQuery(const void* address, void* mbi, size_t length);

/* VirtualProtect: changes the protection of committed pages touched by
 * [address, address + size) to new_protect and stores the protection the
 * first page had in *old_protect. Returns 1 (TRUE), or 0 (FALSE) on
 * failure (a bad protection, or a range that reaches past the user
 * address space: HOSTMEM_ERROR_INVALID_PARAMETER; old_protect
 * NULL: HOSTMEM_ERROR_NOACCESS; a page not committed, pages of two
 * reservations, or not hostmem's: HOSTMEM_ERROR_INVALID_ADDRESS). A
 * failure changes nothing. */
int32_t hostmem_VirtualProtect(void* address, size_t size, uint32_t new_protect, uint32_t* old_protect);

/* GetWriteWatch: stores in addresses[] the pages of a MEM_WRITE_WATCH
 * reservation touched by [base, base + size) that were written since they
 * were last reset, ascending, at most *count of them; sets *count to the
 * number stored and *granularity to the page size (4096). With
 * HOSTMEM_WRITE_WATCH_FLAG_RESET in flags, resets exactly the pages stored.
 * Returns 0, or (uint32_t)-1 on failure, checked in this order: unknown
 * flags: HOSTMEM_ERROR_INVALID_PARAMETER; count or granularity NULL:
 * HOSTMEM_ERROR_NOACCESS; *count or size 0: HOSTMEM_ERROR_INVALID_PARAMETER;
 * addresses NULL: HOSTMEM_ERROR_NOACCESS; a range not inside one watched
 * reservation: HOSTMEM_ERROR_INVALID_PARAMETER. */
uint32_t hostmem_GetWriteWatch(uint32_t flags, void* base, size_t size, void** addresses,
                               size_t* count, uint32_t* granularity);

/* ResetWriteWatch: forgets the writes to the pages of a MEM_WRITE_WATCH
 * reservation touched by [base, base + size). Returns 0, or (uint32_t)-1 on
 * failure (size 0, or a range not inside one watched reservation:
 * HOSTMEM_ERROR_INVALID_PARAMETER). */
uint32_t hostmem_ResetWriteWatch(void* base, size_t size);

/* GetLargePageMinimum: the size of a large page for MEM_LARGE_PAGES (the
 * kernel's default huge page size: 2 MiB on x86-64), 0 if there is none. */
size_t hostmem_GetLargePageMinimum(void);

/* GetLastError: the calling thread's last error (0 in a new thread). */
uint32_t hostmem_GetLastError(void);

/* SetLastError: sets the calling thread's last error to any value. */
void hostmem_SetLastError(uint32_t code);

/* ========================================================================
 * COM interfaces
 *
 * IHostMemoryManager, IHostMalloc, ICLRMemoryNotificationCallback and
 * IHostControl (vtables laid out as in mscoree.h), hostmem_config,
 * hostmem_CreateMemoryManager and hostmem_CreateHostControl, declared in
 * <hostmem/com.h> (C and C++ style).
 * ======================================================================== */

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "hostmem/com.h"

#endif /* HOSTMEM_H */
