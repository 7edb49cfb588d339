//! VirtualQuery: the fields in every state, splitting and merging, free
//! space, foreign memory, limits.

use crate::*;

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;

// ------------------------------------------------------------ inside reservations

/// W-k32 test_VirtualAlloc "test a not committed memory".
#[test]
fn reserved_region_fields() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    let m = q(&s, base);
    assert_eq!(m.base_address, base);
    assert_eq!(m.allocation_base, base);
    assert_eq!(m.allocation_protect, NA);
    assert_eq!(m.region_size, 0x10000);
    assert_eq!(m.state, MemoryState::RESERVE);
    assert_eq!(
        m.protect,
        P::empty(),
        "NT reports Protect 0 for reserved pages"
    );
    assert_eq!(m.type_, MemoryType::PRIVATE);
    assert_eq!(m.partition_id, 0);
}

/// W-k32 test_VirtualAlloc "test a committed memory": NOACCESS committed
/// pages report Protect PAGE_NOACCESS.
#[test]
fn committed_noaccess_fields() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    expect_q(&s, base, committed(base, base, NA, PG, NA));
}

/// spec §4: BaseAddress is the queried address rounded down to its page;
/// RegionSize runs from there.
#[test]
fn base_address_rounds_down() {
    let mut s = space();
    let base = reserve(&mut s, GR, RW);
    expect_q(&s, base + 0x1234, reserved(base + PG, base, RW, GR - PG));
    expect_q(&s, base + 0xfff, reserved(base, base, RW, GR));
}

/// spec §4: the last page / last byte of a reservation.
#[test]
fn last_page_of_reservation() {
    let mut s = space();
    let base = alloc(&mut s, 0x7000, RW);
    expect_q(
        &s,
        base + 0x6000,
        committed(base + 0x6000, base, RW, PG, RW),
    );
    expect_q(
        &s,
        base + 0x6fff,
        committed(base + 0x6000, base, RW, PG, RW),
    );
}

/// ROS-at CheckAdjacentVADs: a query in the middle of a committed page
/// inside a larger reserved region.
#[test]
fn committed_page_inside_reserved_region() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0xF000, PG, RW, base + 0xF000);
    expect_q(
        &s,
        base + 0xF700,
        committed(base + 0xF000, base, NA, PG, RW),
    );
    expect_q(&s, base, reserved(base, base, NA, 0xF000));
}

/// spec §4: walking a reservation region by region.
#[test]
fn walk_mixed_layout() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0x1000, 0x2000, RW, base + 0x1000);
    commit(&mut s, base + 0x5000, 0x1000, P::READONLY, base + 0x5000);
    let want = [
        reserved(base, base, NA, 0x1000),
        committed(base + 0x1000, base, NA, 0x2000, RW),
        reserved(base + 0x3000, base, NA, 0x2000),
        committed(base + 0x5000, base, NA, 0x1000, P::READONLY),
        reserved(base + 0x6000, base, NA, 0xA000),
    ];
    let got: Vec<Mbi> = snapshot(&s, base, GR)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, want);
}

/// spec §4 / W-k32 test_VirtualAlloc (MEM_RESET part): RegionSize stops at
/// the reservation's end even when the next reservation is adjacent and in
/// the same state.
#[test]
fn region_stops_at_reservation_end_reserved() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    reserve_at(&mut s, w + GR, GR, NA, w + GR);
    expect_q(&s, w, reserved(w, w, NA, GR));
    expect_q(&s, w + GR, reserved(w + GR, w + GR, NA, GR));
}

#[test]
fn region_stops_at_reservation_end_committed() {
    let mut s = space();
    let w = window();
    assert_eq!(s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW), Ok(w));
    assert_eq!(
        s.virtual_alloc(w + GR, GR, A::RESERVE | A::COMMIT, RW),
        Ok(w + GR)
    );
    expect_q(&s, w + 0x8000, committed(w + 0x8000, w, RW, 0x8000, RW));
    expect_q(&s, w + GR, committed(w + GR, w + GR, RW, GR, RW));
}

/// W-k32 test_VirtualProtect: AllocationProtect is unchanged by protect.
#[test]
fn allocation_protect_survives_protect() {
    let mut s = space();
    let base = s.virtual_alloc(0, PG, A::RESERVE | A::COMMIT, NA).unwrap();
    protect(&mut s, base, PG, P::EXECUTE_READWRITE, NA);
    expect_q(
        &s,
        base,
        committed(base, base, NA, PG, P::EXECUTE_READWRITE),
    );
}

/// W-k32 test_write_watch (protection part): protecting the first 3 pages
/// splits the region; restoring merges it back.
#[test]
fn split_then_merge_by_protect() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    protect(&mut s, base, 3 * PG, P::READONLY, RW);
    expect_q(&s, base, committed(base, base, RW, 3 * PG, P::READONLY));
    expect_q(
        &s,
        base + 3 * PG,
        committed(base + 3 * PG, base, RW, GR - 3 * PG, RW),
    );
    protect(&mut s, base, 3 * PG, RW, P::READONLY);
    expect_q(&s, base, committed(base, base, RW, GR, RW));
}

/// spec §5: a page in the middle splits the region in three.
#[test]
fn split_in_three() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    protect(&mut s, base + PG, PG, P::READONLY, RW);
    expect_q(&s, base, committed(base, base, RW, PG, RW));
    expect_q(
        &s,
        base + PG,
        committed(base + PG, base, RW, PG, P::READONLY),
    );
    expect_q(
        &s,
        base + 2 * PG,
        committed(base + 2 * PG, base, RW, 2 * PG, RW),
    );
}

/// spec §4: decommit then query shows the reserved run, Protect 0.
#[test]
fn after_decommit() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, P::EXECUTE_READ);
    decommit(&mut s, base + 2 * PG, 2 * PG);
    expect_q(
        &s,
        base + 2 * PG,
        reserved(base + 2 * PG, base, P::EXECUTE_READ, 2 * PG),
    );
    expect_q(
        &s,
        base,
        committed(base, base, P::EXECUTE_READ, 2 * PG, P::EXECUTE_READ),
    );
}

/// spec §4: every page of a reservation reports the reservation's base.
#[test]
fn allocation_base_of_every_page() {
    let mut s = space();
    let base = reserve(&mut s, 2 * GR, NA);
    commit(&mut s, base + GR, PG, RW, base + GR);
    for off in [0, PG, GR - 1, GR, GR + PG, 2 * GR - 1] {
        let m = q(&s, base + off);
        assert_eq!(m.allocation_base, base, "offset {off:#x}");
        assert_eq!(m.type_, MemoryType::PRIVATE, "offset {off:#x}");
    }
}

/// ROS-at CheckSize: a reservation at base + 0x8000 of one byte covers
/// [base, base + 0x9000).
#[test]
fn rounded_fixed_reservation() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0x8000, 1, NA, w);
    expect_q(&s, w, reserved(w, w, NA, 0x9000));
    expect_q(&s, w + 0x8fff, reserved(w + 0x8000, w, NA, PG));
}

// ------------------------------------------------------------ free space

/// W-k32 test_MapViewOfFile (after unmapping): free memory reports
/// AllocationBase NULL, AllocationProtect 0, Protect NOACCESS, Type 0;
/// spec §4: RegionSize up to the next mapping.
#[test]
fn free_gap_between_reservations() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    reserve_at(&mut s, w + 3 * GR, GR, NA, w + 3 * GR);
    expect_q(&s, w + GR, free_mbi(w + GR, 2 * GR));
    expect_q(&s, w + GR + 0x1234, free_mbi(w + GR + PG, 2 * GR - PG));
    expect_q(&s, w + 3 * GR - 1, free_mbi(w + 3 * GR - PG, PG));
}

/// spec §4: a free gap ends at a foreign mapping.
#[test]
fn free_gap_ends_at_foreign_mapping() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    let _f = Foreign::rw(w + 3 * GR, PG, 0);
    expect_q(&s, w + GR, free_mbi(w + GR, 2 * GR));
}

/// spec §3/§4: a released region is free up to the next mapping.
#[test]
fn released_region_is_free() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, 2 * GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    let _f = Foreign::rw(w + 5 * GR, PG, 0);
    release(&mut s, w);
    expect_q(&s, w, free_mbi(w, 5 * GR));
}

/// spec §4: a free query in the middle of a granule runs to the next mapping.
#[test]
fn free_gap_mid_granule_before_reservation() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 2 * GR, GR, NA, w + 2 * GR);
    expect_q(&s, w + 0x8000, free_mbi(w + 0x8000, 2 * GR - 0x8000));
}

/// spec §4: address 0 is free space; RegionSize runs to the first mapping.
#[test]
fn address_zero_is_free() {
    let s = space();
    let m = q(&s, 0);
    assert_eq!(m.state, MemoryState::FREE);
    assert_eq!(m.base_address, 0);
    assert_eq!(m.allocation_base, 0);
    assert_eq!(m.allocation_protect, P::empty());
    assert_eq!(m.protect, NA);
    assert_eq!(m.type_, MemoryType::empty());
    // Other tests' reservations may come and go below everything else
    // (even come and go between two readings of the maps that agree), so
    // the answer must match a reading taken right before and after it in
    // one of many tries, and always be at least a page.
    let lowest = || maps().iter().map(|l| l.start).min().unwrap();
    let mut readings = Vec::new();
    for _ in 0..200 {
        let before = lowest();
        let m = q(&s, 0);
        assert!(m.region_size >= PG);
        if lowest() == before && m.region_size == before {
            return;
        }
        readings.push((before, m.region_size));
    }
    panic!("free run from 0 never matched the first mapping: (maps, answer) {readings:x?}");
}

/// Docs VirtualQuery: an address above the highest user address → 87.
#[test]
fn above_user_space() {
    let s = space();
    assert_eq!(s.virtual_query(ABOVE_USER), Err(IP));
    assert_eq!(s.virtual_query(usize::MAX), Err(IP));
    assert_eq!(s.virtual_query(1 << 63), Err(IP));
}

// ------------------------------------------------------------ foreign memory

/// spec §4: an accessible anonymous mapping not ours → MEM_COMMIT,
/// Protect from the permissions, MEM_PRIVATE, RegionSize to its end.
#[test]
fn foreign_readwrite_mapping() {
    let s = space();
    let w = window();
    let _f = Foreign::rw(w, 3 * PG, 0);
    let m = q(&s, w + PG);
    assert_eq!(m.base_address, w + PG);
    assert_eq!(m.state, MemoryState::COMMIT);
    assert_eq!(m.protect, RW);
    assert_eq!(m.type_, MemoryType::PRIVATE);
    assert_eq!(m.region_size, 2 * PG);
}

#[test]
fn foreign_readonly_mapping() {
    let s = space();
    let w = window();
    let _f = Foreign::at(w, 2 * PG, 0, rustix::mm::MprotectFlags::READ);
    let m = q(&s, w);
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::COMMIT, P::READONLY, MemoryType::PRIVATE)
    );
    assert_eq!(m.region_size, 2 * PG);
}

/// spec §4: a PROT_NONE mapping not ours → MEM_RESERVE, Protect 0.
#[test]
fn foreign_prot_none_mapping() {
    let s = space();
    let w = window();
    let _f = Foreign::at(w, 4 * PG, 0, rustix::mm::MprotectFlags::empty());
    let m = q(&s, w);
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::RESERVE, P::empty(), MemoryType::PRIVATE)
    );
    assert_eq!(m.base_address, w);
    assert_eq!(m.region_size, 4 * PG);
}

/// spec §4: a foreign mapping whose middle page has other permissions
/// splits into runs.
#[test]
fn foreign_mapping_with_mixed_permissions() {
    use rustix::mm::MprotectFlags as M;
    let s = space();
    let w = window();
    let _f = Foreign::rw(w, 3 * PG, 0);
    // SAFETY: the page belongs to the test's own mapping.
    unsafe { rustix::mm::mprotect((w + PG) as *mut std::ffi::c_void, PG, M::READ) }.unwrap();
    let a = q(&s, w);
    let b = q(&s, w + PG);
    let c = q(&s, w + 2 * PG);
    assert_eq!((a.protect, a.region_size), (RW, PG));
    assert_eq!((b.protect, b.region_size), (P::READONLY, PG));
    assert_eq!((c.protect, c.region_size), (RW, PG));
}

/// spec §4: the thread's stack is committed read-write private memory.
#[test]
fn thread_stack() {
    let s = space();
    let page = stack_page();
    let m = q(&s, page + 8);
    assert_eq!(m.base_address, page);
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::COMMIT, RW, MemoryType::PRIVATE)
    );
}

/// spec §4: the test binary's code is a file-backed executable mapping of a
/// loaded object → MEM_IMAGE, PAGE_EXECUTE_READ.
#[test]
fn own_code_is_image() {
    let s = space();
    let code = own_code_is_image as fn() as usize;
    let m = q(&s, code);
    assert_eq!(m.base_address, code & !(PG - 1));
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::COMMIT, P::EXECUTE_READ, MemoryType::IMAGE)
    );
}

/// spec §4: a file mapping that is not executable → MEM_MAPPED.
#[test]
fn foreign_file_mapping_is_mapped() {
    use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};
    let s = space();
    let path = std::env::temp_dir().join(format!("hostmem-conf-{}.bin", std::process::id()));
    std::fs::write(&path, vec![7u8; 2 * PG]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a fresh read-only private mapping of our own temporary file.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            2 * PG,
            ProtFlags::READ,
            MapFlags::PRIVATE,
            &file,
            0,
        )
    }
    .unwrap();
    let m = q(&s, p as usize);
    // SAFETY: unmapping the mapping made just above.
    unsafe { munmap(p, 2 * PG) }.unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(m.base_address, p as usize);
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::COMMIT, P::READONLY, MemoryType::MAPPED)
    );
    assert_eq!(m.region_size, 2 * PG);
}

/// DESIGN: another AddressSpace's reserved region is foreign: seen through
/// the kernel (PROT_NONE → MEM_RESERVE, Protect 0).
#[test]
fn other_address_space_region_is_foreign() {
    let mut a = space();
    let b = space();
    let w = window();
    reserve_at(&mut a, w, GR, RW, w);
    let m = q(&b, w);
    assert_eq!(
        (m.state, m.protect, m.type_),
        (MemoryState::RESERVE, P::empty(), MemoryType::PRIVATE)
    );
    assert_eq!(m.base_address, w);
}

/// A query never changes anything (engine and kernel view identical).
#[test]
fn query_changes_nothing() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    protect(&mut s, base + PG, PG, P::READONLY, RW);
    let before = (snapshot(&s, base, GR), kview(base, GR));
    for off in (0..GR).step_by(PG / 2) {
        let _ = s.virtual_query(base + off);
    }
    assert_eq!((snapshot(&s, base, GR), kview(base, GR)), before);
}

/// spec §4: the pages after a reservation's end in its last 64 KiB granule
/// are free address space (Windows reports the unusable tail as MEM_FREE).
#[test]
fn tail_of_last_granule_is_free() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 0x3000, NA, w);
    reserve_at(&mut s, w + 2 * GR, GR, NA, w + 2 * GR);
    expect_q(&s, w + 0x3000, free_mbi(w + 0x3000, 2 * GR - 0x3000));
    expect_q(&s, w + 0x2fff, reserved(w + 0x2000, w, NA, PG));
}

/// spec §4: RegionSize is the run of pages, from the queried page, with the
/// state and protection of that page, up to the reservation's end, however
/// far that is. A 1 GiB reservation changed at, across and between 4 MiB
/// boundaries (whole 4 MiB stretches committed, reprotected, reset and
/// decommitted again) is queried around every change and compared with a
/// page-by-page model, as is the count of committed bytes.
#[test]
fn regions_across_a_large_reservation() {
    const MIB: usize = 1 << 20;
    let size = 1 << 30;
    let mut s = space();
    let base = reserve(&mut s, size, NA);
    // One entry per page: None reserved, Some(p) committed with p.
    let mut model: Vec<Option<P>> = vec![None; size / PG];
    let mut edges = vec![0, size - PG];
    let set = |model: &mut [Option<P>], at: usize, len: usize, p: Option<P>| {
        model[at / PG..(at + len) / PG].fill(p);
    };
    let ro = P::READONLY;
    // (offset, length, what): 0 commit RW, 1 protect RO, 2 decommit, 3 reset.
    let changes: &[(usize, usize, u8)] = &[
        (4 * MIB - PG, 2 * PG, 0),       // across the first boundary
        (8 * MIB, 4 * MIB, 0),           // exactly one 4 MiB stretch
        (8 * MIB, 4 * MIB, 1),           // and reprotected whole
        (12 * MIB, 8 * MIB, 0),          // two stretches after it, RW
        (16 * MIB, 4 * MIB, 3),          // the second reset (state unchanged)
        (13 * MIB, PG, 1),               // one page inside the first
        (13 * MIB, PG, 0),               // and back: the stretch is whole again
        (100 * MIB, 64 * MIB, 0),        // many stretches
        (132 * MIB, 4 * MIB, 2),         // a hole of one stretch in them
        (300 * MIB + 3 * PG, 5 * PG, 0), // a few pages far away
        (512 * MIB, 512 * MIB, 0),       // the whole second half
        (512 * MIB, 256 * MIB, 2),       // a quarter decommitted again
        (1020 * MIB, 4 * MIB, 1),        // the last stretch
    ];
    for &(at, len, what) in changes {
        let addr = base + at;
        match what {
            0 => {
                commit(&mut s, addr, len, RW, addr);
                set(&mut model, at, len, Some(RW));
            }
            1 => {
                let old = model[at / PG].expect("protect only committed pages");
                protect(&mut s, addr, len, ro, old);
                set(&mut model, at, len, Some(ro));
            }
            2 => {
                decommit(&mut s, addr, len);
                set(&mut model, at, len, None);
            }
            _ => assert_eq!(s.virtual_alloc(addr, len, A::RESET, NA), Ok(addr)),
        }
        let committed = model.iter().filter(|p| p.is_some()).count() * PG;
        assert_eq!(
            s.totals().committed_bytes,
            committed,
            "after {at:#x}+{len:#x}"
        );
        for edge in [at, at + len] {
            edges.extend([edge.saturating_sub(PG), edge, edge + PG]);
        }
    }
    // Every 4 MiB boundary, its neighbours, and every 1 MiB.
    for b in (0..size).step_by(MIB) {
        edges.extend([b.saturating_sub(PG), b, b + PG]);
    }
    edges.retain(|&e| e < size);
    edges.sort_unstable();
    edges.dedup();
    // The end of each page's run, from the back.
    let pages = model.len();
    let mut run_end = vec![pages; pages];
    for p in (0..pages - 1).rev() {
        run_end[p] = if model[p] == model[p + 1] {
            run_end[p + 1]
        } else {
            p + 1
        };
    }
    for at in edges {
        let page = at / PG;
        let addr = base + at;
        let len = (run_end[page] - page) * PG;
        let want = match model[page] {
            None => reserved(addr, base, NA, len),
            Some(p) => committed(addr, base, NA, len, p),
        };
        assert_eq!(q(&s, addr + 123), want, "query at offset {at:#x}");
    }
    release(&mut s, base);
    assert_eq!(s.totals().committed_bytes, 0);
}
