/*
 * hostmem/win32.h: the Win32 names of hostmem's flat API, so that Windows
 * code using virtual memory compiles unchanged on Linux:
 *
 *     #include <hostmem/win32.h>
 *
 *     void* p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
 *     if (!p) printf("failed: %u\n", GetLastError());
 *
 * It defines the Win32 types (DWORD, SIZE_T, LPVOID, LPCVOID, PVOID, BOOL,
 * PDWORD, ...), TRUE/FALSE, WINAPI, MEMORY_BASIC_INFORMATION, the MEM_*,
 * PAGE_* and ERROR_* constants, and VirtualAlloc, VirtualFree, VirtualQuery,
 * VirtualProtect, GetWriteWatch, ResetWriteWatch, GetLargePageMinimum,
 * GetLastError and SetLastError as static inline functions
 * with the Windows signatures (they type-check, and their address can be
 * taken) calling the hostmem_ functions of <hostmem.h>.
 *
 * Coexistence with a project that defines some of these itself: every
 * constant, type and function is skipped if a macro of its name is already
 * defined; a project whose own definitions are typedefs or functions
 * defines HOSTMEM_WIN32_NO_TYPES (types and MEMORY_BASIC_INFORMATION) or
 * HOSTMEM_WIN32_NO_FUNCTIONS (the nine functions) before including this
 * header. Types are those of 64-bit Windows: DWORD is 32 bits.
 */
#ifndef HOSTMEM_WIN32_H
#define HOSTMEM_WIN32_H

#include "../hostmem.h"

/* ------------------------------------------------------------------------
 * Calling convention and booleans
 * ------------------------------------------------------------------------ */
#ifndef WINAPI
#define WINAPI /* __stdcall on 32-bit Windows; nothing on x64 or Linux */
#endif
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

/* ------------------------------------------------------------------------
 * Types (64-bit Windows sizes)
 * ------------------------------------------------------------------------ */
#ifndef HOSTMEM_WIN32_NO_TYPES
#ifndef DWORD
typedef uint32_t DWORD;
#endif
#ifndef WORD
typedef uint16_t WORD;
#endif
#ifndef BOOL
typedef int BOOL;
#endif
#ifndef SIZE_T
typedef size_t SIZE_T;
#endif
#ifndef PVOID
typedef void* PVOID;
#endif
#ifndef LPVOID
typedef void* LPVOID;
#endif
#ifndef LPCVOID
typedef const void* LPCVOID;
#endif
#ifndef PDWORD
typedef uint32_t* PDWORD;
#endif
#ifndef LPDWORD
typedef uint32_t* LPDWORD;
#endif
#ifndef UINT
typedef unsigned int UINT;
#endif
#ifndef ULONG_PTR
typedef uintptr_t ULONG_PTR;
#endif
#ifndef PULONG_PTR
typedef uintptr_t* PULONG_PTR;
#endif
#ifndef MEMORY_BASIC_INFORMATION
typedef hostmem_MEMORY_BASIC_INFORMATION MEMORY_BASIC_INFORMATION;
#endif
#ifndef PMEMORY_BASIC_INFORMATION
typedef hostmem_MEMORY_BASIC_INFORMATION* PMEMORY_BASIC_INFORMATION;
#endif
#endif /* HOSTMEM_WIN32_NO_TYPES */

/* ------------------------------------------------------------------------
 * MEM_* (allocation types, page states and types)
 * ------------------------------------------------------------------------ */
#ifndef MEM_COMMIT
#define MEM_COMMIT HOSTMEM_MEM_COMMIT
#endif
#ifndef MEM_RESERVE
#define MEM_RESERVE HOSTMEM_MEM_RESERVE
#endif
#ifndef MEM_DECOMMIT
#define MEM_DECOMMIT HOSTMEM_MEM_DECOMMIT
#endif
#ifndef MEM_RELEASE
#define MEM_RELEASE HOSTMEM_MEM_RELEASE
#endif
#ifndef MEM_COALESCE_PLACEHOLDERS
#define MEM_COALESCE_PLACEHOLDERS HOSTMEM_MEM_COALESCE_PLACEHOLDERS
#endif
#ifndef MEM_PRESERVE_PLACEHOLDER
#define MEM_PRESERVE_PLACEHOLDER HOSTMEM_MEM_PRESERVE_PLACEHOLDER
#endif
#ifndef MEM_FREE
#define MEM_FREE HOSTMEM_MEM_FREE
#endif
#ifndef MEM_PRIVATE
#define MEM_PRIVATE HOSTMEM_MEM_PRIVATE
#endif
#ifndef MEM_MAPPED
#define MEM_MAPPED HOSTMEM_MEM_MAPPED
#endif
#ifndef MEM_RESET
#define MEM_RESET HOSTMEM_MEM_RESET
#endif
#ifndef MEM_TOP_DOWN
#define MEM_TOP_DOWN HOSTMEM_MEM_TOP_DOWN
#endif
#ifndef MEM_WRITE_WATCH
#define MEM_WRITE_WATCH HOSTMEM_MEM_WRITE_WATCH
#endif
#ifndef MEM_PHYSICAL
#define MEM_PHYSICAL HOSTMEM_MEM_PHYSICAL
#endif
#ifndef MEM_RESET_UNDO
#define MEM_RESET_UNDO HOSTMEM_MEM_RESET_UNDO
#endif
#ifndef MEM_IMAGE
#define MEM_IMAGE HOSTMEM_MEM_IMAGE
#endif
#ifndef MEM_LARGE_PAGES
#define MEM_LARGE_PAGES HOSTMEM_MEM_LARGE_PAGES
#endif
#ifndef WRITE_WATCH_FLAG_RESET
#define WRITE_WATCH_FLAG_RESET HOSTMEM_WRITE_WATCH_FLAG_RESET
#endif

/* ------------------------------------------------------------------------
 * PAGE_* (protections)
 * ------------------------------------------------------------------------ */
#ifndef PAGE_NOACCESS
#define PAGE_NOACCESS HOSTMEM_PAGE_NOACCESS
#endif
#ifndef PAGE_READONLY
#define PAGE_READONLY HOSTMEM_PAGE_READONLY
#endif
#ifndef PAGE_READWRITE
#define PAGE_READWRITE HOSTMEM_PAGE_READWRITE
#endif
#ifndef PAGE_WRITECOPY
#define PAGE_WRITECOPY HOSTMEM_PAGE_WRITECOPY
#endif
#ifndef PAGE_EXECUTE
#define PAGE_EXECUTE HOSTMEM_PAGE_EXECUTE
#endif
#ifndef PAGE_EXECUTE_READ
#define PAGE_EXECUTE_READ HOSTMEM_PAGE_EXECUTE_READ
#endif
#ifndef PAGE_EXECUTE_READWRITE
#define PAGE_EXECUTE_READWRITE HOSTMEM_PAGE_EXECUTE_READWRITE
#endif
#ifndef PAGE_EXECUTE_WRITECOPY
#define PAGE_EXECUTE_WRITECOPY HOSTMEM_PAGE_EXECUTE_WRITECOPY
#endif
#ifndef PAGE_GUARD
#define PAGE_GUARD HOSTMEM_PAGE_GUARD
#endif
#ifndef PAGE_NOCACHE
#define PAGE_NOCACHE HOSTMEM_PAGE_NOCACHE
#endif
#ifndef PAGE_WRITECOMBINE
#define PAGE_WRITECOMBINE HOSTMEM_PAGE_WRITECOMBINE
#endif

/* ------------------------------------------------------------------------
 * ERROR_* (GetLastError codes)
 * ------------------------------------------------------------------------ */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS HOSTMEM_ERROR_SUCCESS
#endif
#ifndef ERROR_NOT_ENOUGH_MEMORY
#define ERROR_NOT_ENOUGH_MEMORY HOSTMEM_ERROR_NOT_ENOUGH_MEMORY
#endif
#ifndef ERROR_OUTOFMEMORY
#define ERROR_OUTOFMEMORY HOSTMEM_ERROR_OUTOFMEMORY
#endif
#ifndef ERROR_BAD_LENGTH
#define ERROR_BAD_LENGTH HOSTMEM_ERROR_BAD_LENGTH
#endif
#ifndef ERROR_INVALID_PARAMETER
#define ERROR_INVALID_PARAMETER HOSTMEM_ERROR_INVALID_PARAMETER
#endif
#ifndef ERROR_INVALID_ADDRESS
#define ERROR_INVALID_ADDRESS HOSTMEM_ERROR_INVALID_ADDRESS
#endif
#ifndef ERROR_NOACCESS
#define ERROR_NOACCESS HOSTMEM_ERROR_NOACCESS
#endif
#ifndef ERROR_INTERNAL_ERROR
#define ERROR_INTERNAL_ERROR HOSTMEM_ERROR_INTERNAL_ERROR
#endif
#ifndef ERROR_COMMITMENT_LIMIT
#define ERROR_COMMITMENT_LIMIT HOSTMEM_ERROR_COMMITMENT_LIMIT
#endif
#ifndef ERROR_NOT_SUPPORTED
#define ERROR_NOT_SUPPORTED HOSTMEM_ERROR_NOT_SUPPORTED
#endif
#ifndef ERROR_NO_SYSTEM_RESOURCES
#define ERROR_NO_SYSTEM_RESOURCES HOSTMEM_ERROR_NO_SYSTEM_RESOURCES
#endif
#ifndef ERROR_TIMEOUT
#define ERROR_TIMEOUT HOSTMEM_ERROR_TIMEOUT
#endif

/* ------------------------------------------------------------------------
 * Functions, with the Windows signatures (memoryapi.h, errhandlingapi.h)
 * ------------------------------------------------------------------------ */
#ifndef HOSTMEM_WIN32_NO_FUNCTIONS
#ifndef VirtualAlloc
static inline LPVOID WINAPI VirtualAlloc(LPVOID lpAddress, SIZE_T dwSize, DWORD flAllocationType,
                                         DWORD flProtect)
{
    return hostmem_VirtualAlloc(lpAddress, dwSize, flAllocationType, flProtect);
}
#endif
#ifndef VirtualFree
static inline BOOL WINAPI VirtualFree(LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType)
{
    return hostmem_VirtualFree(lpAddress, dwSize, dwFreeType);
}
#endif
#ifndef VirtualQuery
static inline SIZE_T WINAPI VirtualQuery(LPCVOID lpAddress, PMEMORY_BASIC_INFORMATION lpBuffer,
                                         SIZE_T dwLength)
{
    return hostmem_VirtualQuery(lpAddress, lpBuffer, dwLength);
}
#endif
#ifndef VirtualProtect
static inline BOOL WINAPI VirtualProtect(LPVOID lpAddress, SIZE_T dwSize, DWORD flNewProtect,
                                         PDWORD lpflOldProtect)
{
    return hostmem_VirtualProtect(lpAddress, dwSize, flNewProtect, lpflOldProtect);
}
#endif
#ifndef GetWriteWatch
static inline UINT WINAPI GetWriteWatch(DWORD dwFlags, PVOID lpBaseAddress, SIZE_T dwRegionSize,
                                        PVOID* lpAddresses, ULONG_PTR* lpdwCount,
                                        LPDWORD lpdwGranularity)
{
    return hostmem_GetWriteWatch(dwFlags, lpBaseAddress, dwRegionSize, lpAddresses,
                                 (size_t*)lpdwCount, lpdwGranularity);
}
#endif
#ifndef ResetWriteWatch
static inline UINT WINAPI ResetWriteWatch(LPVOID lpBaseAddress, SIZE_T dwRegionSize)
{
    return hostmem_ResetWriteWatch(lpBaseAddress, dwRegionSize);
}
#endif
#ifndef GetLargePageMinimum
static inline SIZE_T WINAPI GetLargePageMinimum(void)
{
    return hostmem_GetLargePageMinimum();
}
#endif
#ifndef GetLastError
static inline DWORD WINAPI GetLastError(void)
{
    return hostmem_GetLastError();
}
#endif
#ifndef SetLastError
static inline void WINAPI SetLastError(DWORD dwErrCode)
{
    hostmem_SetLastError(dwErrCode);
}
#endif
#endif /* HOSTMEM_WIN32_NO_FUNCTIONS */

#endif /* HOSTMEM_WIN32_H */
