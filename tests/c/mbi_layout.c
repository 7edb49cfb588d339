/*
 * mbi_layout.c: prints the size and the field offsets and sizes of
 * hostmem_MEMORY_BASIC_INFORMATION as a C compiler lays it out from
 * <hostmem.h>; tests/flat_c_api.rs compares them with the Rust struct.
 * Output lines: "<field> <offset> <size>", then "sizeof <size>".
 */
#include <hostmem.h>

#include <stdio.h>

#define FIELD(name)                                                                       \
    printf("%s %zu %zu\n", #name, offsetof(hostmem_MEMORY_BASIC_INFORMATION, name),      \
           sizeof(((hostmem_MEMORY_BASIC_INFORMATION*)0)->name))

int main(void)
{
    FIELD(BaseAddress);
    FIELD(AllocationBase);
    FIELD(AllocationProtect);
    FIELD(PartitionId);
    FIELD(RegionSize);
    FIELD(State);
    FIELD(Protect);
    FIELD(Type);
    printf("sizeof %zu\n", sizeof(hostmem_MEMORY_BASIC_INFORMATION));
    return 0;
}
