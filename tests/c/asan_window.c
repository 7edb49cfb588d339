/*
 * asan_window.c: many memory managers, one after the other, each
 * reserving, committing, writing, querying and releasing one region.
 *
 * Each manager places its reservations in a window of its own, which
 * starts near 16 TiB plus a random multiple of 16 MiB below 64 GiB
 * (src/engine/placement.rs). AddressSanitizer's shadow memory on x86-64
 * ends at 16 TiB + 2 GiB (0x10007fff7fff), so about one window in 32
 * begins inside it. The shadow is mapped before main, and hostmem never
 * maps over a mapping (MAP_FIXED_NOREPLACE for the window's anchor page,
 * a mere hint for a reservation), so such a manager must still work, its
 * reservations going wherever the kernel puts them. With this many
 * managers that case is all but certain to occur; the program prints how
 * many first reservations were not in their window.
 *
 * Built with -fsanitize=address and run by tests/sanitizers.rs.
 */
#include <hostmem.h>
#include <hostmem/com.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CHECK_PROGRAM "asan_window"
#include "check.h"

#define MANAGERS 1000
#define SIZE ((size_t)0x20000)

/* Where a window's first reservation can be when its hint is honoured:
 * from 16 TiB less 2 MiB (the start rounds down to 2 MiB) to 16 TiB plus
 * 64 GiB. */
#define WINDOWS_START ((uint64_t)0x0FFFFFE00000)
#define WINDOWS_END ((uint64_t)0x101000000000)

enum step { CREATE, RESERVE, WRITE, QUERY, RELEASE, REFERENCES, STEPS };
static const char* const step_names[STEPS] = {
    "hostmem_CreateMemoryManager", "VirtualAlloc(MEM_RESERVE | MEM_COMMIT)",
    "the region reads back what was written", "VirtualQuery",
    "VirtualFree(MEM_RELEASE)", "Release() == 0",
};

int main(void)
{
    unsigned failures[STEPS] = {0};
    unsigned outside = 0;
    for (int i = 0; i < MANAGERS; i++) {
        IHostMemoryManager* m = NULL;
        if (hostmem_CreateMemoryManager(NULL, &m) != S_OK || m == NULL) {
            failures[CREATE]++;
            continue;
        }
        unsigned char* p = NULL;
        if (m->lpVtbl->VirtualAlloc(m, NULL, SIZE, HOSTMEM_MEM_RESERVE | HOSTMEM_MEM_COMMIT,
                                    HOSTMEM_PAGE_READWRITE, eTaskCritical, (void**)&p) != S_OK ||
            p == NULL) {
            failures[RESERVE]++;
        } else {
            uint64_t at = (uint64_t)(uintptr_t)p;
            if (at < WINDOWS_START || at >= WINDOWS_END) outside++;
            memset(p, i & 0xff, SIZE);
            if (p[0] != (unsigned char)(i & 0xff) || p[SIZE - 1] != (unsigned char)(i & 0xff)) {
                failures[WRITE]++;
            }
            hostmem_MEMORY_BASIC_INFORMATION mbi;
            size_t written = 0;
            if (m->lpVtbl->VirtualQuery(m, p + 0x1000, &mbi, sizeof mbi, &written) != S_OK ||
                written != sizeof mbi || mbi.BaseAddress != p + 0x1000 || mbi.AllocationBase != p ||
                mbi.RegionSize != SIZE - 0x1000 || mbi.State != HOSTMEM_MEM_COMMIT) {
                failures[QUERY]++;
            }
            if (m->lpVtbl->VirtualFree(m, p, 0, HOSTMEM_MEM_RELEASE) != S_OK) failures[RELEASE]++;
        }
        if (m->lpVtbl->Release(m) != 0) failures[REFERENCES]++;
    }
    for (int step = 0; step < STEPS; step++) {
        check_at(failures[step] == 0, __FILE__, __LINE__, step_names[step]);
        if (failures[step] != 0) {
            fprintf(stderr, "    %s failed for %u of %d managers\n", step_names[step],
                    failures[step], MANAGERS);
        }
    }
    printf("asan_window: %u of %d managers' first reservations were placed outside the "
           "windows (by the kernel: the window began in a mapping such as ASan's shadow)\n",
           outside, MANAGERS);
    return check_summary();
}
