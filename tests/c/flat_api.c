/*
 * flat_api.c: the flat C API through <hostmem.h> (the hostmem_ names).
 *
 * Built, linked against libhostmem.a and run by tests/flat_c_api.rs.
 * Prints every failed check with its line, then "flat_api: N passed, M
 * failed" (tests/c/check.h); exits 0 only if nothing failed.
 */
#include <hostmem.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_PROGRAM "flat_api"
#include "check.h"

/* CHECK_ERROR: the last error is `expected`. */
#define CHECK_ERROR(expected) CHECK_EQ(hostmem_GetLastError(), (expected))

/* After a failed check: the last error, which usually says why. */
static void print_last_error(void)
{
    fprintf(stderr, "    (last error %u)\n", (unsigned)hostmem_GetLastError());
}

#define SENTINEL UINT32_C(0xdeadbeef)

static char* addr(char* base, size_t offset)
{
    return base + offset;
}

static int all_bytes_are(const char* p, size_t n, char value)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != value) return 0;
    }
    return 1;
}

static hostmem_MEMORY_BASIC_INFORMATION query(const void* address)
{
    hostmem_MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0x5a, sizeof mbi);
    size_t written = hostmem_VirtualQuery(address, &mbi, sizeof mbi);
    CHECK(written == sizeof mbi);
    return mbi;
}

static void test_layout(void)
{
    CHECK(sizeof(hostmem_MEMORY_BASIC_INFORMATION) == 48);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, BaseAddress) == 0);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, AllocationBase) == 8);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, AllocationProtect) == 16);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, PartitionId) == 20);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, RegionSize) == 24);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, State) == 32);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, Protect) == 36);
    CHECK(offsetof(hostmem_MEMORY_BASIC_INFORMATION, Type) == 40);
}

/* Reserve, commit, write, read zero, decommit, recommit zero, protect,
 * query every field, release; success never touches the last error. */
static void test_lifecycle(void)
{
    hostmem_SetLastError(SENTINEL);
    char* base = (char*)hostmem_VirtualAlloc(NULL, 0x40000, HOSTMEM_MEM_RESERVE, HOSTMEM_PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK(((uintptr_t)base & 0xffff) == 0);
    CHECK_ERROR(SENTINEL);

    hostmem_MEMORY_BASIC_INFORMATION mbi = query(base);
    CHECK(mbi.BaseAddress == base);
    CHECK(mbi.AllocationBase == base);
    CHECK(mbi.AllocationProtect == HOSTMEM_PAGE_NOACCESS);
    CHECK(mbi.PartitionId == 0);
    CHECK(mbi.RegionSize == 0x40000);
    CHECK(mbi.State == HOSTMEM_MEM_RESERVE);
    CHECK(mbi.Protect == 0);
    CHECK(mbi.Type == HOSTMEM_MEM_PRIVATE);

    /* Commit the pages touched by [base + 0x1800, base + 0x2800): two. */
    char* pages = (char*)hostmem_VirtualAlloc(addr(base, 0x1800), 0x1000, HOSTMEM_MEM_COMMIT,
                                              HOSTMEM_PAGE_READWRITE);
    REQUIRE(pages == addr(base, 0x1000));
    CHECK_ERROR(SENTINEL);
    CHECK(all_bytes_are(pages, 0x2000, 0));
    memset(pages, 0x11, 0x2000);
    CHECK(all_bytes_are(pages, 0x2000, 0x11));

    mbi = query(addr(pages, 0x123));
    CHECK(mbi.BaseAddress == pages);
    CHECK(mbi.AllocationBase == base);
    CHECK(mbi.AllocationProtect == HOSTMEM_PAGE_NOACCESS);
    CHECK(mbi.PartitionId == 0);
    CHECK(mbi.RegionSize == 0x2000);
    CHECK(mbi.State == HOSTMEM_MEM_COMMIT);
    CHECK(mbi.Protect == HOSTMEM_PAGE_READWRITE);
    CHECK(mbi.Type == HOSTMEM_MEM_PRIVATE);
    mbi = query(base);
    CHECK(mbi.State == HOSTMEM_MEM_RESERVE && mbi.RegionSize == 0x1000);
    mbi = query(addr(base, 0x3000));
    CHECK(mbi.State == HOSTMEM_MEM_RESERVE && mbi.RegionSize == 0x3d000);

    /* Decommit the first page, recommit it: zeros; the second page kept. */
    CHECK(hostmem_VirtualFree(pages, 0x1000, HOSTMEM_MEM_DECOMMIT) == 1);
    CHECK_ERROR(SENTINEL);
    mbi = query(pages);
    CHECK(mbi.State == HOSTMEM_MEM_RESERVE && mbi.Protect == 0 && mbi.RegionSize == 0x1000);
    CHECK(hostmem_VirtualAlloc(pages, 0x1000, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_READWRITE) == pages);
    CHECK(all_bytes_are(pages, 0x1000, 0));
    CHECK(all_bytes_are(addr(pages, 0x1000), 0x1000, 0x11));

    /* Protect: the old protection of the first page; regions split. */
    uint32_t old = 0;
    CHECK(hostmem_VirtualProtect(addr(pages, 0x1000), 0x1000, HOSTMEM_PAGE_READONLY, &old) == 1);
    CHECK(old == HOSTMEM_PAGE_READWRITE);
    CHECK_ERROR(SENTINEL);
    mbi = query(pages);
    CHECK(mbi.Protect == HOSTMEM_PAGE_READWRITE && mbi.RegionSize == 0x1000);
    mbi = query(addr(pages, 0x1000));
    CHECK(mbi.Protect == HOSTMEM_PAGE_READONLY && mbi.RegionSize == 0x1000);
    CHECK(mbi.AllocationProtect == HOSTMEM_PAGE_NOACCESS);
    CHECK(all_bytes_are(addr(pages, 0x1000), 0x1000, 0x11));
    old = 0;
    CHECK(hostmem_VirtualProtect(pages, 0x2000, HOSTMEM_PAGE_READWRITE, &old) == 1);
    CHECK(old == HOSTMEM_PAGE_READWRITE);
    old = 0;
    CHECK(hostmem_VirtualProtect(addr(pages, 0x1000), 1, HOSTMEM_PAGE_EXECUTE_READ, &old) == 1);
    CHECK(old == HOSTMEM_PAGE_READWRITE);
    old = 0;
    CHECK(hostmem_VirtualProtect(addr(pages, 0x1000), 1, HOSTMEM_PAGE_READWRITE, &old) == 1);
    CHECK(old == HOSTMEM_PAGE_EXECUTE_READ);
    mbi = query(pages);
    CHECK(mbi.Protect == HOSTMEM_PAGE_READWRITE && mbi.RegionSize == 0x2000);

    /* MEM_RESET: committed pages stay committed with their protection. */
    CHECK(hostmem_VirtualAlloc(pages, 0x2000, HOSTMEM_MEM_RESET, HOSTMEM_PAGE_NOACCESS) == pages);
    mbi = query(pages);
    CHECK(mbi.State == HOSTMEM_MEM_COMMIT && mbi.Protect == HOSTMEM_PAGE_READWRITE);

    /* Release: the whole region is free again. */
    CHECK(hostmem_VirtualFree(base, 0, HOSTMEM_MEM_RELEASE) == 1);
    CHECK_ERROR(SENTINEL);
    mbi = query(base);
    CHECK(mbi.State == HOSTMEM_MEM_FREE);
    CHECK(mbi.AllocationBase == NULL);
    CHECK(mbi.AllocationProtect == 0);
    CHECK(mbi.Protect == HOSTMEM_PAGE_NOACCESS);
    CHECK(mbi.Type == 0);
    CHECK(mbi.BaseAddress == base);

    /* A reservation at a given address is rounded down to 64 KiB. */
    char* again = (char*)hostmem_VirtualAlloc(addr(base, 0x8000), 0x1000, HOSTMEM_MEM_RESERVE,
                                              HOSTMEM_PAGE_READWRITE);
    CHECK(again == base);
    if (again) {
        mbi = query(again);
        CHECK(mbi.RegionSize == 0x9000 && mbi.AllocationProtect == HOSTMEM_PAGE_READWRITE);
        /* base + 0xfff lies in the base's page: it releases the region. */
        CHECK(hostmem_VirtualFree(addr(again, 0xfff), 0, HOSTMEM_MEM_RELEASE) == 1);
    }

    /* Reserve and commit at once. */
    char* both = (char*)hostmem_VirtualAlloc(NULL, 0x3000, HOSTMEM_MEM_RESERVE | HOSTMEM_MEM_COMMIT,
                                             HOSTMEM_PAGE_READWRITE);
    REQUIRE(both != NULL);
    CHECK(all_bytes_are(both, 0x3000, 0));
    both[0x2fff] = 1;
    mbi = query(both);
    CHECK(mbi.State == HOSTMEM_MEM_COMMIT && mbi.RegionSize == 0x3000);
    CHECK(hostmem_VirtualFree(both, 0, HOSTMEM_MEM_RELEASE) == 1);
    CHECK_ERROR(SENTINEL);
}

static void test_errors(void)
{
    char* base = (char*)hostmem_VirtualAlloc(NULL, 0x10000, HOSTMEM_MEM_RESERVE | HOSTMEM_MEM_COMMIT,
                                             HOSTMEM_PAGE_READWRITE);
    REQUIRE(base != NULL);

    /* VirtualAlloc: bad type, size 0, bad protection. */
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, 0, HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, HOSTMEM_MEM_DECOMMIT, HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, HOSTMEM_MEM_RESERVE | HOSTMEM_MEM_RESET,
                               HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, UINT32_C(0x80000000) | HOSTMEM_MEM_RESERVE,
                               HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualAlloc(NULL, 0, HOSTMEM_MEM_RESERVE, HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(base, 0, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, HOSTMEM_MEM_RESERVE, 0) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(NULL, 0x1000, HOSTMEM_MEM_RESERVE,
                               HOSTMEM_PAGE_READONLY | HOSTMEM_PAGE_EXECUTE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(base, 0x1000, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_WRITECOPY) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualAlloc(base, 0x1000, HOSTMEM_MEM_COMMIT,
                               HOSTMEM_PAGE_NOACCESS | HOSTMEM_PAGE_NOCACHE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);

    /* VirtualFree: bad types, release with a size, at an interior address,
     * twice. */
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualFree(base, 0x1000, 0) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualFree(base, 0, HOSTMEM_MEM_DECOMMIT | HOSTMEM_MEM_RELEASE) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualFree(base, 0, HOSTMEM_MEM_FREE) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualFree(base, 0x10000, HOSTMEM_MEM_RELEASE) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualFree(addr(base, 0x1001), 0, HOSTMEM_MEM_RELEASE) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
    CHECK(hostmem_VirtualFree(addr(base, 0x1001), 0, HOSTMEM_MEM_DECOMMIT) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
    CHECK(query(base).State == HOSTMEM_MEM_COMMIT); /* nothing changed */
    base[0] = 42;
    CHECK(base[0] == 42);

    /* VirtualQuery: length 47, NULL buffer. */
    hostmem_MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0x5a, sizeof mbi);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualQuery(base, &mbi, sizeof mbi - 1) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_BAD_LENGTH);
    CHECK(mbi.State == UINT32_C(0x5a5a5a5a)); /* nothing written */
    CHECK(hostmem_VirtualQuery(base, &mbi, 0) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_BAD_LENGTH);
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualQuery(base, NULL, sizeof mbi) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_NOACCESS);
    CHECK(hostmem_VirtualQuery(base, &mbi, sizeof mbi + 16) == sizeof mbi); /* longer is fine */

    /* VirtualProtect: NULL old protection, checked before anything changes. */
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualProtect(base, 0x1000, HOSTMEM_PAGE_READONLY, NULL) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_NOACCESS);
    CHECK(query(base).Protect == HOSTMEM_PAGE_READWRITE);
    base[1] = 43; /* still writable */
    CHECK(base[1] == 43);
    uint32_t old = 0x77;
    CHECK(hostmem_VirtualProtect(base, 0x1000, HOSTMEM_PAGE_READONLY | HOSTMEM_PAGE_EXECUTE, &old) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(old == 0x77);
    CHECK(hostmem_VirtualProtect(base, 0x1000, HOSTMEM_PAGE_WRITECOPY, &old) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK(hostmem_VirtualProtect(base, 0x11000, HOSTMEM_PAGE_READONLY, &old) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS); /* runs past the reservation */
    CHECK(query(base).Protect == HOSTMEM_PAGE_READWRITE);

    /* Decommitted pages cannot be protected. */
    CHECK(hostmem_VirtualFree(addr(base, 0x2000), 0x1000, HOSTMEM_MEM_DECOMMIT) == 1);
    CHECK(hostmem_VirtualProtect(addr(base, 0x1000), 0x3000, HOSTMEM_PAGE_READONLY, &old) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
    CHECK(query(addr(base, 0x1000)).Protect == HOSTMEM_PAGE_READWRITE);

    /* Release, then release again: the address is no reservation's. */
    hostmem_SetLastError(SENTINEL);
    CHECK(hostmem_VirtualFree(base, 0, HOSTMEM_MEM_RELEASE) == 1);
    CHECK_ERROR(SENTINEL);
    CHECK(hostmem_VirtualFree(base, 0, HOSTMEM_MEM_RELEASE) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
    CHECK(hostmem_VirtualFree(base, 0x1000, HOSTMEM_MEM_DECOMMIT) == 0);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
    CHECK(hostmem_VirtualAlloc(base, 0x1000, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_READWRITE) == NULL);
    CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
}

/* Memory that is not hostmem's (the stack, the C heap) is never changed:
 * free, protect and commit fail with ERROR_INVALID_ADDRESS; query answers
 * from the kernel's view. */
static void test_foreign_memory(void)
{
    volatile char on_stack[64];
    memset((char*)on_stack, 7, sizeof on_stack);
    char* on_heap = (char*)malloc(256);
    REQUIRE(on_heap != NULL);
    memset(on_heap, 9, 256);
    void* foreign[2] = {(void*)on_stack, on_heap};

    for (int i = 0; i < 2; i++) {
        void* p = foreign[i];
        uint32_t old = 0x77;
        hostmem_SetLastError(SENTINEL);
        CHECK(hostmem_VirtualFree(p, 0, HOSTMEM_MEM_RELEASE) == 0);
        CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
        CHECK(hostmem_VirtualFree(p, 16, HOSTMEM_MEM_DECOMMIT) == 0);
        CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
        hostmem_SetLastError(SENTINEL);
        CHECK(hostmem_VirtualProtect(p, 16, HOSTMEM_PAGE_READONLY, &old) == 0);
        CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
        CHECK(old == 0x77);
        hostmem_SetLastError(SENTINEL);
        CHECK(hostmem_VirtualAlloc(p, 16, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_READWRITE) == NULL);
        CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);
        hostmem_SetLastError(SENTINEL);
        CHECK(hostmem_VirtualAlloc(p, 16, HOSTMEM_MEM_RESET, HOSTMEM_PAGE_READWRITE) == NULL);
        CHECK_ERROR(HOSTMEM_ERROR_INVALID_ADDRESS);

        hostmem_MEMORY_BASIC_INFORMATION mbi = query(p);
        CHECK(mbi.State == HOSTMEM_MEM_COMMIT);
        /* read-write, or read-write-execute where the mapping is rwx (the
         * heap and stack valgrind gives its client) */
        CHECK(mbi.Protect == HOSTMEM_PAGE_READWRITE || mbi.Protect == HOSTMEM_PAGE_EXECUTE_READWRITE);
        CHECK(mbi.Type == HOSTMEM_MEM_PRIVATE);
        CHECK((uintptr_t)mbi.BaseAddress == ((uintptr_t)p & ~(uintptr_t)0xfff));
    }
    /* Still there, still writable. */
    on_stack[0] = 1;
    on_heap[0] = 2;
    CHECK(on_stack[0] == 1 && on_stack[63] == 7);
    CHECK(on_heap[0] == 2 && on_heap[255] == 9);
    free(on_heap);
}

/* The last error is per thread. */
struct thread_report {
    uint32_t initial;      /* GetLastError() when the thread starts */
    uint32_t after_set;    /* after SetLastError(0x1234) */
    uint32_t after_fail;   /* after a failing call */
    int      fail_result;  /* that call's return */
};

static void* last_error_thread(void* arg)
{
    struct thread_report* report = (struct thread_report*)arg;
    report->initial = hostmem_GetLastError();
    hostmem_SetLastError(0x1234);
    report->after_set = hostmem_GetLastError();
    report->fail_result = hostmem_VirtualFree(NULL, 0, 0);
    report->after_fail = hostmem_GetLastError();
    return NULL;
}

static void test_last_error_per_thread(void)
{
    struct thread_report report;
    memset(&report, 0xff, sizeof report);
    hostmem_SetLastError(SENTINEL);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, last_error_thread, &report) == 0);
    REQUIRE(pthread_join(thread, NULL) == 0);
    CHECK(report.initial == HOSTMEM_ERROR_SUCCESS);
    CHECK(report.after_set == 0x1234);
    CHECK(report.fail_result == 0);
    CHECK(report.after_fail == HOSTMEM_ERROR_INVALID_PARAMETER);
    CHECK_ERROR(SENTINEL); /* the main thread's is unchanged */
}

/* Several threads allocating at once through the one default manager. */
#define WORKERS 4
#define ROUNDS 200

static void* worker(void* arg)
{
    unsigned* failures = (unsigned*)arg;
    for (int round = 0; round < ROUNDS; round++) {
        char* p = (char*)hostmem_VirtualAlloc(NULL, 0x20000, HOSTMEM_MEM_RESERVE, HOSTMEM_PAGE_NOACCESS);
        if (!p) { ++*failures; continue; }
        if (hostmem_VirtualAlloc(addr(p, 0x1000), 0x2000, HOSTMEM_MEM_COMMIT, HOSTMEM_PAGE_READWRITE) !=
            addr(p, 0x1000)) {
            ++*failures;
        } else {
            if (p[0x1000] != 0 || p[0x2fff] != 0) ++*failures;
            p[0x1000] = (char)round;
            hostmem_MEMORY_BASIC_INFORMATION mbi;
            if (hostmem_VirtualQuery(addr(p, 0x1000), &mbi, sizeof mbi) != sizeof mbi ||
                mbi.AllocationBase != p || mbi.RegionSize != 0x2000) {
                ++*failures;
            }
        }
        if (hostmem_VirtualFree(p, 0, HOSTMEM_MEM_RELEASE) != 1) ++*failures;
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t threads[WORKERS];
    unsigned failures[WORKERS] = {0};
    for (int i = 0; i < WORKERS; i++) {
        REQUIRE(pthread_create(&threads[i], NULL, worker, &failures[i]) == 0);
    }
    for (int i = 0; i < WORKERS; i++) {
        REQUIRE(pthread_join(threads[i], NULL) == 0);
        CHECK(failures[i] == 0);
    }
}

int main(void)
{
    check_on_failure = print_last_error;
    test_layout();
    test_lifecycle();
    test_errors();
    test_foreign_memory();
    test_last_error_per_thread();
    test_threads();
    return check_summary();
}
