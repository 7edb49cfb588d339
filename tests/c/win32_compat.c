/*
 * win32_compat.c: Windows code, compiled unchanged on Linux through
 * <hostmem/win32.h> (the Win32 names and types only).
 *
 * Built as C11 and as C++17, linked against libhostmem.a and run by
 * tests/flat_c_api.rs. Prints every failed check with its line, then
 * "win32_compat (C): N passed, M failed" (tests/c/check.h); exits 0 only
 * if nothing failed.
 */

/* A project's own definition, as <winerror.h> spells it: the header must
 * leave it alone (a redefinition would fail under -Werror). */
#define ERROR_SUCCESS 0L

#include <hostmem/win32.h>

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
#define CHECK_PROGRAM "win32_compat (C++)"
#else
#define CHECK_PROGRAM "win32_compat (C)"
#endif
#include "check.h"

/* CHECK_ERROR: GetLastError() is `expected`. */
#define CHECK_ERROR(expected) CHECK_EQ(GetLastError(), (DWORD)(expected))

/* After a failed check: the last error, which usually says why. */
static void print_last_error(void)
{
    fprintf(stderr, "    (GetLastError() %u)\n", (unsigned)GetLastError());
}

#define SENTINEL 0xdeadbeef

static BOOL is_all(const char* p, SIZE_T n, char value)
{
    for (SIZE_T i = 0; i < n; i++) {
        if (p[i] != value) return FALSE;
    }
    return TRUE;
}

static MEMORY_BASIC_INFORMATION query(LPCVOID address)
{
    MEMORY_BASIC_INFORMATION info;
    memset(&info, 'q', sizeof(info));
    CHECK(VirtualQuery(address, &info, sizeof(info)) == sizeof(info));
    return info;
}

static void test_types(void)
{
    CHECK(sizeof(DWORD) == 4);
    CHECK(sizeof(BOOL) == 4);
    CHECK(sizeof(SIZE_T) == sizeof(void*));
    CHECK(sizeof(MEMORY_BASIC_INFORMATION) == 48);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, AllocationProtect) == 16);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, PartitionId) == 20);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, RegionSize) == 24);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, State) == 32);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, Protect) == 36);
    CHECK(offsetof(MEMORY_BASIC_INFORMATION, Type) == 40);
    CHECK(ERROR_SUCCESS == 0);
    CHECK(MEM_COMMIT == 0x1000 && MEM_RESERVE == 0x2000 && MEM_RELEASE == 0x8000);
    CHECK(PAGE_READWRITE == 0x04 && ERROR_INVALID_ADDRESS == 487);
}

/* Function pointers with the Windows signatures, as code that loads them
 * with GetProcAddress would hold them. */
typedef LPVOID (WINAPI *VirtualAlloc_fn)(LPVOID, SIZE_T, DWORD, DWORD);
typedef BOOL (WINAPI *VirtualFree_fn)(LPVOID, SIZE_T, DWORD);
typedef SIZE_T (WINAPI *VirtualQuery_fn)(LPCVOID, PMEMORY_BASIC_INFORMATION, SIZE_T);
typedef BOOL (WINAPI *VirtualProtect_fn)(LPVOID, SIZE_T, DWORD, PDWORD);

static void test_function_pointers(void)
{
    VirtualAlloc_fn alloc = VirtualAlloc;
    VirtualFree_fn release = VirtualFree;
    VirtualQuery_fn query_fn = VirtualQuery;
    VirtualProtect_fn protect = VirtualProtect;
    MEMORY_BASIC_INFORMATION info;
    DWORD old = 0;

    LPVOID p = alloc(NULL, 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
    REQUIRE(p != NULL);
    CHECK(query_fn(p, &info, sizeof(info)) == sizeof(info));
    CHECK(info.Protect == PAGE_READONLY);
    CHECK(protect(p, 0x1000, PAGE_READWRITE, &old));
    CHECK(old == PAGE_READONLY);
    CHECK(release(p, 0, MEM_RELEASE));
}

/* test_VirtualAlloc of Wine's kernel32 tests, as Windows code. */
static void test_VirtualAlloc(void)
{
    LPVOID addr1, addr2;
    DWORD old_prot;
    MEMORY_BASIC_INFORMATION info;

    SetLastError(SENTINEL);
    addr1 = VirtualAlloc(0, 0, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(addr1 == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);

    SetLastError(SENTINEL);
    addr1 = VirtualAlloc(0, 0xFFFC, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(addr1 != NULL);
    CHECK_ERROR(SENTINEL); /* success does not touch the last error */

    info = query(addr1);
    CHECK(info.BaseAddress == addr1);
    CHECK(info.AllocationBase == addr1);
    CHECK(info.AllocationProtect == PAGE_NOACCESS);
    CHECK(info.PartitionId == 0);
    CHECK(info.RegionSize == 0x10000);
    CHECK(info.State == MEM_RESERVE);
    CHECK(info.Protect == 0);
    CHECK(info.Type == MEM_PRIVATE);

    SetLastError(SENTINEL);
    CHECK(!VirtualProtect(addr1, 0xFFFC, PAGE_READONLY, &old_prot));
    CHECK_ERROR(ERROR_INVALID_ADDRESS);

    addr2 = VirtualAlloc(addr1, 0x1000, MEM_COMMIT, PAGE_NOACCESS);
    CHECK(addr1 == addr2);

    info = query(addr1);
    CHECK(info.BaseAddress == addr1);
    CHECK(info.AllocationBase == addr1);
    CHECK(info.AllocationProtect == PAGE_NOACCESS);
    CHECK(info.RegionSize == 0x1000);
    CHECK(info.State == MEM_COMMIT);
    CHECK(info.Protect == PAGE_NOACCESS);
    CHECK(info.Type == MEM_PRIVATE);

    SetLastError(SENTINEL);
    CHECK(!VirtualProtect(addr1, 0xFFFC, PAGE_READONLY, &old_prot));
    CHECK_ERROR(ERROR_INVALID_ADDRESS);

    old_prot = 0;
    CHECK(VirtualProtect(addr1, 0x1000, PAGE_READONLY, &old_prot));
    CHECK(old_prot == PAGE_NOACCESS);
    old_prot = 0;
    CHECK(VirtualProtect(addr1, 0x1000, PAGE_READWRITE, &old_prot));
    CHECK(old_prot == PAGE_READONLY);

    /* Write, read back; the rest of the page reads zero. */
    char* bytes = (char*)addr1;
    CHECK(is_all(bytes, 0x1000, 0));
    strcpy(bytes, "hostmem");
    CHECK(strcmp(bytes, "hostmem") == 0);

    CHECK(!VirtualFree(addr1, 0x10000, 0));
    CHECK_ERROR(ERROR_INVALID_PARAMETER);

    CHECK(VirtualFree(addr1, 0x10000, MEM_DECOMMIT));
    info = query(addr1);
    CHECK(info.State == MEM_RESERVE && info.Protect == 0 && info.RegionSize == 0x10000);

    /* Recommitted pages read zero. */
    CHECK(VirtualAlloc(addr1, 0x1000, MEM_COMMIT, PAGE_READWRITE) == addr1);
    CHECK(is_all(bytes, 0x1000, 0));

    /* if the type is MEM_RELEASE, size must be 0 */
    CHECK(!VirtualFree(addr1, 1, MEM_RELEASE));
    CHECK_ERROR(ERROR_INVALID_PARAMETER);

    /* not the base: base + 0x1001 is in the second page */
    SetLastError(SENTINEL);
    CHECK(!VirtualFree((char*)addr1 + 0x1001, 0, MEM_RELEASE));
    CHECK_ERROR(ERROR_INVALID_ADDRESS);

    CHECK(VirtualFree(addr1, 0, MEM_RELEASE));

    /* released twice */
    CHECK(!VirtualFree(addr1, 0, MEM_RELEASE));
    CHECK_ERROR(ERROR_INVALID_ADDRESS);
    info = query(addr1);
    CHECK(info.State == MEM_FREE);
    CHECK(info.AllocationBase == NULL);
    CHECK(info.Protect == PAGE_NOACCESS);
    CHECK(info.Type == 0);
}

static void test_invalid_arguments(void)
{
    LPVOID p = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(p != NULL);
    MEMORY_BASIC_INFORMATION info;
    DWORD old = 0x77;

    /* bad types */
    SetLastError(SENTINEL);
    CHECK(VirtualAlloc(NULL, 0x1000, 0, PAGE_READWRITE) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(NULL, 0x1000, MEM_RELEASE, PAGE_READWRITE) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(NULL, 0x1000, MEM_WRITE_WATCH, PAGE_READWRITE) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(!VirtualFree(p, 0, MEM_DECOMMIT | MEM_RELEASE));
    CHECK_ERROR(ERROR_INVALID_PARAMETER);

    /* size 0 */
    SetLastError(SENTINEL);
    CHECK(VirtualAlloc(NULL, 0, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);

    /* bad protections */
    SetLastError(SENTINEL);
    CHECK(VirtualAlloc(NULL, 0x1000, MEM_RESERVE, 0) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(NULL, 0x1000, MEM_COMMIT, PAGE_READONLY | PAGE_READWRITE) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(VirtualAlloc(p, 0x1000, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY) == NULL);
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(!VirtualProtect(p, 0x1000, PAGE_READWRITE | PAGE_EXECUTE_WRITECOPY, &old));
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(!VirtualProtect(p, 0x1000, PAGE_WRITECOPY, &old));
    CHECK_ERROR(ERROR_INVALID_PARAMETER);
    CHECK(old == 0x77);

    /* VirtualQuery with a buffer one byte short */
    memset(&info, 'q', sizeof(info));
    SetLastError(SENTINEL);
    CHECK(VirtualQuery(p, &info, sizeof(info) - 1) == 0);
    CHECK_ERROR(ERROR_BAD_LENGTH);
    CHECK(info.Type == 0x71717171); /* untouched */
    SetLastError(SENTINEL);
    CHECK(VirtualQuery(p, NULL, sizeof(info)) == 0);
    CHECK_ERROR(ERROR_NOACCESS);

    /* VirtualProtect without somewhere to put the old protection */
    SetLastError(SENTINEL);
    CHECK(!VirtualProtect(p, 0x1000, PAGE_NOACCESS, NULL));
    CHECK_ERROR(ERROR_NOACCESS);
    info = query(p);
    CHECK(info.Protect == PAGE_READWRITE && info.RegionSize == 0x10000);
    ((char*)p)[0] = 1; /* still writable: nothing changed */
    CHECK(((char*)p)[0] == 1);

    CHECK(VirtualFree(p, 0, MEM_RELEASE));
}

/* The stack and the C heap are not hostmem's: hostmem never changes them. */
static void test_foreign_addresses(void)
{
    DWORD local = 5;
    char* heap = (char*)malloc(100);
    REQUIRE(heap != NULL);
    LPVOID addresses[2];
    addresses[0] = &local;
    addresses[1] = heap;
    for (int i = 0; i < 2; i++) {
        DWORD old = 0x77;
        SetLastError(SENTINEL);
        CHECK(!VirtualFree(addresses[i], 0, MEM_RELEASE));
        CHECK_ERROR(ERROR_INVALID_ADDRESS);
        SetLastError(SENTINEL);
        CHECK(!VirtualFree(addresses[i], 4, MEM_DECOMMIT));
        CHECK_ERROR(ERROR_INVALID_ADDRESS);
        SetLastError(SENTINEL);
        CHECK(!VirtualProtect(addresses[i], 4, PAGE_READONLY, &old));
        CHECK_ERROR(ERROR_INVALID_ADDRESS);
        CHECK(old == 0x77);
        SetLastError(SENTINEL);
        CHECK(VirtualAlloc(addresses[i], 4, MEM_COMMIT, PAGE_READWRITE) == NULL);
        CHECK_ERROR(ERROR_INVALID_ADDRESS);
        MEMORY_BASIC_INFORMATION info = query(addresses[i]);
        CHECK(info.State == MEM_COMMIT);
        /* read-write, or read-write-execute where the mapping is rwx (the
         * heap and stack valgrind gives its client) */
        CHECK(info.Protect == PAGE_READWRITE || info.Protect == PAGE_EXECUTE_READWRITE);
        CHECK(info.Type == MEM_PRIVATE);
    }
    local = 6;
    heap[99] = 'x';
    CHECK(local == 6 && heap[99] == 'x');
    free(heap);
}

/* Each thread has its own last error. */
struct report {
    DWORD initial;
    DWORD own;
    DWORD after_failure;
};

static void* thread_main(void* arg)
{
    struct report* r = (struct report*)arg;
    r->initial = GetLastError();
    SetLastError(1234);
    r->own = GetLastError();
    if (VirtualAlloc(NULL, 0, MEM_RESERVE, PAGE_READWRITE) == NULL) {
        r->after_failure = GetLastError();
    }
    return NULL;
}

static void test_last_error_per_thread(void)
{
    struct report r;
    memset(&r, 0, sizeof(r));
    pthread_t thread;
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    REQUIRE(pthread_create(&thread, NULL, thread_main, &r) == 0);
    REQUIRE(pthread_join(thread, NULL) == 0);
    CHECK(r.initial == ERROR_SUCCESS);
    CHECK(r.own == 1234);
    CHECK(r.after_failure == ERROR_INVALID_PARAMETER);
    CHECK_ERROR(ERROR_NOT_ENOUGH_MEMORY);
}

int main(void)
{
    check_on_failure = print_last_error;
    test_types();
    test_function_pointers();
    test_VirtualAlloc();
    test_invalid_arguments();
    test_foreign_addresses();
    test_last_error_per_thread();
    return check_summary();
}
