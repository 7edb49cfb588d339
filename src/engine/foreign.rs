//! `VirtualQuery` of memory the engine does not own, answered from the
//! kernel's list of mappings the way Windows would describe it.

use super::range::{USER_ADDRESS_END, page_floor};
use crate::os::{Access, KernelMapping};
use crate::win32::{MemoryBasicInformation, MemoryState, MemoryType, Protection};
use std::ops::Range;

/// The Win32 protection closest to a kernel access; `None` for no access.
fn protection_of(access: Access) -> Option<Protection> {
    let (r, w, x) = (
        access.contains(Access::READ),
        access.contains(Access::WRITE),
        access.contains(Access::EXEC),
    );
    Some(match (r, w, x) {
        (false, false, false) => return None,
        (true, false, false) => Protection::READONLY,
        (_, true, false) => Protection::READWRITE,
        (false, false, true) => Protection::EXECUTE,
        (true, false, true) => Protection::EXECUTE_READ,
        (_, true, true) => Protection::EXECUTE_READWRITE,
    })
}

/// Whether two adjacent mappings are parts of one allocation: the same
/// file, or anonymous memory of the same kind (a thread stack and its
/// guard page are two mappings of one allocation).
fn same_allocation(a: &KernelMapping, b: &KernelMapping) -> bool {
    if a.end != b.start || a.shared != b.shared || a.is_file() != b.is_file() {
        return false;
    }
    if a.is_file() {
        a.device == b.device && a.inode == b.inode
    } else {
        a.path == b.path
    }
}

fn memory_type(maps: &[KernelMapping], m: &KernelMapping) -> MemoryType {
    if m.is_file() {
        let loaded = maps
            .iter()
            .any(|o| o.inode == m.inode && o.device == m.device && o.access.contains(Access::EXEC));
        if loaded {
            MemoryType::IMAGE
        } else {
            MemoryType::MAPPED
        }
    } else if m.path == "[vdso]" {
        MemoryType::IMAGE
    } else if m.shared {
        MemoryType::MAPPED
    } else {
        MemoryType::PRIVATE
    }
}

/// Describes `addr` from the kernel's `maps`, seen through `window`: the
/// stretch of address space around `addr` that holds none of the engine's
/// reservations (the kernel may have merged a foreign mapping with one of
/// them, so nothing is reported past the window).
pub fn query(maps: &[KernelMapping], addr: usize, window: Range<usize>) -> MemoryBasicInformation {
    let page = page_floor(addr);
    let i = maps.partition_point(|m| m.end <= page);
    let Some(m) = maps.get(i).filter(|m| m.start <= page) else {
        let next = maps.get(i).map_or(USER_ADDRESS_END, |m| m.start);
        return MemoryBasicInformation {
            base_address: page,
            region_size: next.min(window.end).max(page + 1) - page,
            state: MemoryState::FREE,
            protect: Protection::NOACCESS,
            ..Default::default()
        };
    };
    let mut first = i;
    while first > 0
        && same_allocation(&maps[first - 1], &maps[first])
        && maps[first - 1].end > window.start
    {
        first -= 1;
    }
    // The allocation runs on past `i`; the region stops where the access
    // changes.
    let mut group_end = i;
    while group_end + 1 < maps.len()
        && same_allocation(&maps[group_end], &maps[group_end + 1])
        && maps[group_end + 1].start < window.end
    {
        group_end += 1;
    }
    let last = (i..=group_end)
        .take_while(|&k| maps[k].access == m.access)
        .last()
        .unwrap_or(i);
    let memory_type = memory_type(maps, m);
    let allocation_protect = if memory_type == MemoryType::IMAGE {
        Protection::EXECUTE_WRITECOPY
    } else {
        maps[first..=group_end]
            .iter()
            .find_map(|o| protection_of(o.access))
            .unwrap_or(Protection::NOACCESS)
    };
    let protect = protection_of(m.access);
    MemoryBasicInformation {
        base_address: page,
        allocation_base: maps[first].start.max(window.start),
        allocation_protect,
        partition_id: 0,
        region_size: maps[last].end.min(window.end) - page,
        state: if protect.is_some() {
            MemoryState::COMMIT
        } else {
            MemoryState::RESERVE
        },
        protect: protect.unwrap_or(Protection::empty()),
        type_: memory_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::parse_maps;

    const MAPS: &str = "\
10000-20000 r--p 00000000 fd:01 77 /usr/lib/libx.so
20000-30000 r-xp 00010000 fd:01 77 /usr/lib/libx.so
40000-41000 ---p 00000000 00:00 0 
41000-50000 rw-p 00000000 00:00 0 
50000-60000 rw-p 00000000 00:00 0 [heap]
60000-70000 r--p 00000000 fd:01 88 /data/file
";

    fn q(addr: usize) -> MemoryBasicInformation {
        query(&parse_maps(MAPS), addr, 0..USER_ADDRESS_END)
    }

    #[test]
    fn image_mappings() {
        let mbi = q(0x2_1234);
        assert_eq!(mbi.base_address, 0x2_1000);
        assert_eq!(mbi.allocation_base, 0x1_0000);
        assert_eq!(mbi.allocation_protect, Protection::EXECUTE_WRITECOPY);
        assert_eq!(mbi.region_size, 0xf000);
        assert_eq!(mbi.state, MemoryState::COMMIT);
        assert_eq!(mbi.protect, Protection::EXECUTE_READ);
        assert_eq!(mbi.type_, MemoryType::IMAGE);
    }

    #[test]
    fn stack_with_guard_is_one_allocation() {
        let guard = q(0x4_0000);
        assert_eq!(guard.allocation_protect, Protection::READWRITE);
        assert_eq!(
            (guard.state, guard.protect, guard.region_size),
            (MemoryState::RESERVE, Protection::empty(), 0x1000)
        );
        let stack = q(0x4_8000);
        assert_eq!(stack.allocation_base, 0x4_0000);
        assert_eq!(stack.allocation_protect, Protection::READWRITE);
        assert_eq!(
            (stack.state, stack.protect, stack.region_size),
            (MemoryState::COMMIT, Protection::READWRITE, 0x8000)
        );
        assert_eq!(stack.type_, MemoryType::PRIVATE);
        let heap = q(0x5_0000);
        assert_eq!(
            heap.allocation_base, 0x5_0000,
            "[heap] is another allocation"
        );
    }

    #[test]
    fn free_gaps_and_plain_files() {
        let gap = q(0x3_0001);
        assert_eq!(gap.base_address, 0x3_0000);
        assert_eq!(gap.region_size, 0x1_0000);
        assert_eq!(
            (gap.state, gap.protect, gap.type_),
            (MemoryState::FREE, Protection::NOACCESS, MemoryType::empty())
        );
        assert_eq!(gap.allocation_base, 0);
        let top = q(0x7_0000);
        assert_eq!(top.region_size, USER_ADDRESS_END - 0x7_0000);
        assert_eq!(q(0x6_0000).type_, MemoryType::MAPPED);
    }

    #[test]
    fn window_clips_merged_mappings() {
        let mbi = query(&parse_maps(MAPS), 0x4_2000, 0x4_1000..0x4_8000);
        assert_eq!(mbi.allocation_base, 0x4_1000);
        assert_eq!(mbi.region_size, 0x6000);
    }
}
