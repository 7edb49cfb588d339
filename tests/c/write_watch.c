/*
 * write_watch.c: a garbage collector's use of write watching, through the
 * Win32 names of <hostmem/win32.h> only: a tiny mark-and-sweep loop. Four
 * writer threads dirty pages of a MEM_WRITE_WATCH heap between barriers;
 * each round the collector asks GetWriteWatch with WRITE_WATCH_FLAG_RESET
 * (a small buffer, so it pages through the answer) and checks that every
 * page written in the round is reported exactly once, and no other.
 * Error cases follow Wine's dlls/kernel32/tests/virtual.c test_write_watch.
 */
#define _POSIX_C_SOURCE 200809L /* pthread barriers */
#define CHECK_PROGRAM "write_watch"
#include <hostmem/win32.h>
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

enum { THREADS = 4, PAGES = 2048, ROUNDS = 24, BATCH = 61, PAGE = 4096 };

static char* heap;
static pthread_barrier_t round_start, round_end;

/* Whether page p is written in round r: about a third of the pages, a
 * different third each round. */
static int dirty(unsigned r, unsigned p)
{
    uint32_t h = (p + 1) * 2654435761u ^ (r + 1) * 40503u;
    h ^= h >> 13;
    return h % 3 == 0;
}

static void* writer(void* arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    for (unsigned r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&round_start);
        for (unsigned p = t; p < PAGES; p += THREADS) {
            if (dirty(r, p)) {
                /* Several stores to the page: still one report. */
                heap[(size_t)p * PAGE + (r * 97) % PAGE] = (char)r;
                heap[(size_t)p * PAGE + PAGE - 1] = (char)p;
            }
        }
        pthread_barrier_wait(&round_end);
    }
    return NULL;
}

static void sweep(unsigned r)
{
    static unsigned char seen[PAGES];
    memset(seen, 0, sizeof seen);
    PVOID found[BATCH];
    for (;;) {
        ULONG_PTR count = BATCH;
        DWORD granularity = 0;
        UINT ret = GetWriteWatch(WRITE_WATCH_FLAG_RESET, heap, (SIZE_T)PAGES * PAGE, found, &count,
                                 &granularity);
        REQUIRE(ret == 0);
        CHECK_EQ(granularity, PAGE);
        for (ULONG_PTR i = 0; i < count; i++) {
            uintptr_t offset = (uintptr_t)found[i] - (uintptr_t)heap;
            REQUIRE(offset % PAGE == 0 && offset / PAGE < PAGES);
            if (i > 0) {
                CHECK((uintptr_t)found[i] > (uintptr_t)found[i - 1]);
            }
            seen[offset / PAGE]++;
        }
        if (count < BATCH) {
            break;
        }
    }
    unsigned wrong = 0;
    for (unsigned p = 0; p < PAGES; p++) {
        if (seen[p] != (dirty(r, p) ? 1 : 0)) {
            wrong++;
        }
    }
    if (wrong) {
        fprintf(stderr, "round %u: %u pages reported wrongly\n", r, wrong);
    }
    CHECK_EQ(wrong, 0);
}

static void error_cases(void)
{
    /* Wine test_write_watch, "some invalid parameter tests". */
    char* base = VirtualAlloc(NULL, 0x10000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    REQUIRE(base != NULL);
    PVOID results[64];
    ULONG_PTR count = 0;
    DWORD granularity;
    SetLastError(0xdeadbeef);
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, results, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, results, NULL, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_NOACCESS);
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, results, &count, NULL), ~0u);
    CHECK_EQ(GetLastError(), ERROR_NOACCESS);
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, NULL, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_NOACCESS);
    count = 0;
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, NULL, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    count = 64;
    CHECK_EQ(GetWriteWatch(0xdeadbeef, base, 0x10000, results, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(GetWriteWatch(0, base, 0x20000, results, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(GetWriteWatch(0, NULL, 0x10000, results, &count, &granularity), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(ResetWriteWatch(base, 0), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(ResetWriteWatch((char*)&count, 0x10000), ~0u);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK_EQ(count, 64);
    /* MEM_WRITE_WATCH alone is invalid. */
    CHECK(VirtualAlloc(NULL, 0x10000, MEM_WRITE_WATCH, PAGE_READWRITE) == NULL);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    base[5] = 1;
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(results[0] == base);
    CHECK_EQ(ResetWriteWatch(base, 0x10000), 0);
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 0x10000, results, &count, &granularity), 0);
    CHECK_EQ(count, 0);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

int main(void)
{
    SIZE_T large = GetLargePageMinimum();
    CHECK(large % PAGE == 0);

    heap = VirtualAlloc(NULL, (SIZE_T)PAGES * PAGE, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                        PAGE_READWRITE);
    if (heap == NULL && GetLastError() == ERROR_NOT_SUPPORTED) {
        check_skip("write watch: this kernel lacks userfaultfd WP_ASYNC / PAGEMAP_SCAN");
        printf("skipped: this kernel cannot watch writes\n");
        return check_summary();
    }
    REQUIRE(heap != NULL);
    error_cases();

    pthread_barrier_init(&round_start, NULL, THREADS + 1);
    pthread_barrier_init(&round_end, NULL, THREADS + 1);
    pthread_t threads[THREADS];
    for (uintptr_t t = 0; t < THREADS; t++) {
        REQUIRE(pthread_create(&threads[t], NULL, writer, (void*)t) == 0);
    }
    for (unsigned r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&round_start);
        pthread_barrier_wait(&round_end);
        sweep(r);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    pthread_barrier_destroy(&round_start);
    pthread_barrier_destroy(&round_end);
    CHECK(VirtualFree(heap, 0, MEM_RELEASE));
    return check_summary();
}
