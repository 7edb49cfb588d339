/*
 * win32_port.c: Windows code ported to Linux through <hostmem/win32.h>.
 *
 * The body below is what a Windows program would write: a growable table
 * that reserves its whole address range once, commits it in 64 KiB steps as
 * it fills, makes the filled part read-only, looks at itself with
 * VirtualQuery and gives everything back. Only the #include differs from the
 * Windows version (<windows.h> there).
 *
 * Build and run it with the lines of the README's "Examples" section.
 */
#include <hostmem/win32.h>

#include <stdio.h>
#include <string.h>

#define TABLE_RESERVE (1024u * 1024u) /* address space for the whole table */
#define COMMIT_STEP   (64u * 1024u)   /* committed as the table grows */

static const char* state_name(DWORD state) {
    switch (state) {
    case MEM_COMMIT: return "MEM_COMMIT";
    case MEM_RESERVE: return "MEM_RESERVE";
    case MEM_FREE: return "MEM_FREE";
    default: return "?";
    }
}

static const char* protect_name(DWORD protect) {
    switch (protect) {
    case 0: return "0";
    case PAGE_NOACCESS: return "PAGE_NOACCESS";
    case PAGE_READONLY: return "PAGE_READONLY";
    case PAGE_READWRITE: return "PAGE_READWRITE";
    default: return "other";
    }
}

/* Prints the run of pages at address as VirtualQuery describes it. */
static BOOL show(const char* what, LPCVOID address) {
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery(address, &mbi, sizeof mbi) != sizeof mbi) {
        printf("VirtualQuery failed: error %u\n", (unsigned)GetLastError());
        return FALSE;
    }
    printf("%-9s +0x%06zx: %zu KiB %s %s\n", what,
           (size_t)((const char*)mbi.BaseAddress - (const char*)mbi.AllocationBase),
           mbi.RegionSize / 1024, state_name(mbi.State), protect_name(mbi.Protect));
    return TRUE;
}

int main(void) {
    /* Reserve: address space only, nothing readable yet. */
    char* table = VirtualAlloc(NULL, TABLE_RESERVE, MEM_RESERVE, PAGE_NOACCESS);
    if (table == NULL) {
        printf("VirtualAlloc(MEM_RESERVE) failed: error %u\n", (unsigned)GetLastError());
        return 1;
    }
    printf("reserved 1024 KiB\n");

    /* Commit in steps as the table fills: 5 steps of 64 KiB. */
    size_t committed = 0;
    for (int step = 0; step < 5; step++) {
        if (VirtualAlloc(table + committed, COMMIT_STEP, MEM_COMMIT, PAGE_READWRITE) == NULL) {
            printf("VirtualAlloc(MEM_COMMIT) failed: error %u\n", (unsigned)GetLastError());
            return 1;
        }
        memset(table + committed, 'a' + step, COMMIT_STEP); /* newly committed pages read as zero */
        committed += COMMIT_STEP;
    }
    printf("committed %zu KiB in 5 steps\n", committed / 1024);
    if (!show("table", table) || !show("rest", table + committed)) return 1;

    /* The one departure a port may meet: hostmem changes only memory it
     * reserved itself. Committing anything else (here, the stack) fails
     * with ERROR_INVALID_ADDRESS, where Windows would succeed. */
    int local = 0;
    if (VirtualAlloc(&local, COMMIT_STEP, MEM_COMMIT, PAGE_READWRITE) != NULL ||
        GetLastError() != ERROR_INVALID_ADDRESS) {
        printf("committing the stack was not refused\n");
        return 1;
    }
    printf("committing memory hostmem did not reserve: ERROR_INVALID_ADDRESS\n");

    /* The first two steps are final: make them read-only. */
    DWORD old = 0;
    if (!VirtualProtect(table, 2 * COMMIT_STEP, PAGE_READONLY, &old)) {
        printf("VirtualProtect failed: error %u\n", (unsigned)GetLastError());
        return 1;
    }
    printf("protected 128 KiB read-only (was %s)\n", protect_name(old));
    if (!show("frozen", table) || !show("open", table + 2 * COMMIT_STEP)) return 1;
    if (table[0] != 'a' || table[committed - 1] != 'e') {
        printf("the contents changed\n");
        return 1;
    }

    /* Decommit the last step, then release the whole reservation. */
    if (!VirtualFree(table + 4 * COMMIT_STEP, COMMIT_STEP, MEM_DECOMMIT)) {
        printf("VirtualFree(MEM_DECOMMIT) failed: error %u\n", (unsigned)GetLastError());
        return 1;
    }
    if (!show("dropped", table + 4 * COMMIT_STEP)) return 1;
    if (!VirtualFree(table, 0, MEM_RELEASE)) {
        printf("VirtualFree(MEM_RELEASE) failed: error %u\n", (unsigned)GetLastError());
        return 1;
    }
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery(table, &mbi, sizeof mbi) != sizeof mbi || mbi.State != MEM_FREE) {
        printf("the released table is not free\n");
        return 1;
    }
    printf("released: the table's address is MEM_FREE again\n");
    return 0;
}
