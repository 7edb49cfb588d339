//! VirtualFree: free types, MEM_RELEASE and MEM_DECOMMIT rules.

use crate::*;

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;

// ------------------------------------------------------------ free types

/// W-k32 test_VirtualAlloc (type 0, MEM_FREE), PAL VirtualFree/test3
/// (DECOMMIT|RELEASE), spec §3 (unknown bits, placeholder flags refused).
/// Each row: fresh committed region, call at its base, 87, nothing changes.
#[test]
fn invalid_free_types() {
    let rows: &[(u32, usize)] = &[
        (0, GR),
        (0, 0),
        (0x1_0000, 0),        // MEM_FREE
        (0x4000 | 0x8000, 0), // DECOMMIT | RELEASE
        (0x4000 | 0x8000, GR),
        (0x8000 | 0x1, 0), // RELEASE | MEM_COALESCE_PLACEHOLDERS
        (0x8000 | 0x2, 0), // RELEASE | MEM_PRESERVE_PLACEHOLDER
        (0x4000 | 0x1, GR),
        (0x1000, GR),            // MEM_COMMIT
        (0x2000, 0),             // MEM_RESERVE
        (0x8000 | 0x10_0000, 0), // unknown bit
        (0x4000 | 0x8000_0000, PG),
    ];
    for &(t, size) in rows {
        let mut s = space();
        let base = alloc(&mut s, GR, RW);
        poke(base, 9);
        fails(&mut s, (base, GR), IP, |s| {
            s.virtual_free(base, size, ft(t))
        });
        assert_eq!(peek(base, 1), [9], "type {t:#x}");
    }
}

/// Wine's kernelbase test_VirtualAlloc2: MEM_RELEASE |
/// MEM_PRESERVE_PLACEHOLDER of half of a reservation that is no
/// placeholder fails with 487; Wine's NtFreeVirtualMemory for the order
/// of the checks (the range as for any free; size 0 is
/// STATUS_INVALID_PARAMETER_3; a split past the end is
/// STATUS_UNABLE_TO_FREE_VM; coalescing skips that check; memory that is
/// no placeholder conflicts). hostmem makes no placeholders (spec §3), so
/// every row fails, and nothing changes.
#[test]
fn placeholder_frees_of_memory_that_is_no_placeholder() {
    const PRESERVE: u32 = 0x8000 | 0x2;
    const COALESCE: u32 = 0x8000 | 0x1;
    let rows: &[(u32, usize, usize, E)] = &[
        (PRESERVE, 0, 8 * GR, IA), // Wine's call: the first half
        (PRESERVE, GR, GR, IA),
        (PRESERVE, GR + 0x123, PG, IA),
        (PRESERVE, GR, 0, IA),       // size 0 off the base
        (PRESERVE, 0x123, 0, IP),    // size 0 in the base's page
        (PRESERVE, GR, 16 * GR, IP), // past the end
        (PRESERVE, 0, 16 * GR, IA),  // the whole reservation
        (COALESCE, 0, 16 * GR, IA),
        (COALESCE, GR, 32 * GR, IA), // no end check for a coalesce
        (COALESCE, 0, 0, IP),
        (COALESCE, GR, 0, IA),
    ];
    for &(t, offset, size, err) in rows {
        let mut s = space();
        let base = alloc(&mut s, 16 * GR, RW);
        poke(base, 7);
        poke(base + 15 * GR, 8);
        fails(&mut s, (base, 16 * GR), err, |s| {
            s.virtual_free(base + offset, size, ft(t))
        });
        assert_eq!(peek(base, 1), [7], "{t:#x} +{offset:#x} {size:#x}");
        assert_eq!(peek(base + 15 * GR, 1), [8]);
    }
    // At an address in no reservation: 487 like any free there.
    let mut s = space();
    let gone = alloc(&mut s, GR, RW);
    s.virtual_free(gone, 0, FreeType::RELEASE).unwrap();
    for t in [PRESERVE, COALESCE] {
        assert_eq!(s.virtual_free(gone, GR, ft(t)), Err(IA), "{t:#x}");
    }
}

// ------------------------------------------------------------ MEM_RELEASE

/// W-k32 test_VirtualAlloc: "if the type is MEM_RELEASE, size must be 0".
#[test]
fn release_size_one() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_free(base, 1, F::RELEASE)
    });
}

/// spec §3: any non-zero size, even the exact region size.
#[test]
fn release_exact_size_is_still_invalid() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_free(base, GR, F::RELEASE)
    });
}

/// W-k32 test_VirtualAlloc: release at the base; afterwards the range is
/// MEM_FREE (spec §3, §4 free fields) and unmapped (spec §6).
#[test]
fn release_at_base() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 2 * GR, NA, w);
    commit(&mut s, w + PG, PG, RW, w + PG);
    reserve_at(&mut s, w + 4 * GR, GR, NA, w + 4 * GR); // a marker after the gap
    release(&mut s, w);
    expect_q(&s, w, free_mbi(w, 4 * GR));
    expect_q(&s, w + PG, free_mbi(w + PG, 4 * GR - PG));
    assert_unmapped(w, 2 * GR);
}

/// W-nt test_NtAllocateVirtualMemory: release at base + 0xfff works (the
/// address is rounded down to its page first).
#[test]
fn release_at_base_plus_0xfff() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, RW, w);
    commit(&mut s, w, GR, RW, w);
    assert_eq!(s.virtual_free(w + 0xfff, 0, F::RELEASE), Ok(()));
    assert_unmapped(w, GR);
}

/// W-nt test_NtAllocateVirtualMemory: base + 0x1001 is not the base → 487.
#[test]
fn release_at_base_plus_0x1001() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_free(base + 0x1001, 0, F::RELEASE)
    });
}

/// W-nt test_NtFreeVirtualMemory: release at base + 0x1000, size 0 → 487.
#[test]
fn release_at_second_page() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_free(base + PG, 0, F::RELEASE)
    });
}

/// spec §3: an address in the middle of the region → 487.
#[test]
fn release_interior_address() {
    let mut s = space();
    let base = reserve(&mut s, 4 * GR, NA);
    fails(&mut s, (base, 4 * GR), IA, |s| {
        s.virtual_free(base + 2 * GR, 0, F::RELEASE)
    });
}

/// spec §3: the base of a rounded fixed reservation is the rounded address;
/// the caller's unrounded address + 0x1010 is on another page → 487.
#[test]
fn release_at_unrounded_request_address() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0x1010, PG, NA, w);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_free(w + 0x1010, 0, F::RELEASE)
    });
    release(&mut s, w);
}

/// spec §3 (STATUS_MEMORY_NOT_ALLOCATED): releasing twice → 487.
#[test]
fn release_twice() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    release(&mut s, w);
    fails(&mut s, (w, GR), IA, |s| s.virtual_free(w, 0, F::RELEASE));
}

/// spec §3: an address in no reservation → 487.
#[test]
fn release_free_address() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IA, |s| s.virtual_free(w, 0, F::RELEASE));
}

/// API.md: never release memory hostmem does not own → 487, untouched.
#[test]
fn release_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, 2 * PG, 0x5c);
    fails(&mut s, (w, 2 * PG), IA, |s| {
        s.virtual_free(w, 0, F::RELEASE)
    });
    f.assert_intact("rw-", 0x5c);
}

/// DESIGN: another AddressSpace's reservation is not ours to release.
#[test]
fn release_other_address_space_reservation() {
    let mut a = space();
    let mut b = space();
    let base = alloc(&mut a, GR, RW);
    poke(base, 3);
    fails(&mut b, (base, GR), IA, |b| {
        b.virtual_free(base, 0, F::RELEASE)
    });
    expect_q(&a, base, committed(base, base, RW, GR, RW));
    assert_eq!(peek(base, 1), [3]);
}

/// spec §3: the whole region is released whatever its pages' states.
#[test]
fn release_mixed_states() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 2 * GR, NA, w);
    commit(&mut s, w, 0x3000, RW, w);
    protect(&mut s, w + PG, PG, P::READONLY, RW);
    commit(&mut s, w + GR, PG, P::EXECUTE_READ, w + GR);
    release(&mut s, w);
    assert_unmapped(w, 2 * GR);
    assert_eq!(q(&s, w).state, MemoryState::FREE);
    assert_eq!(q(&s, w + GR).state, MemoryState::FREE);
}

/// spec §3: releasing one region leaves its neighbour alone.
#[test]
fn release_leaves_adjacent_region() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, RW, w);
    s.virtual_alloc(w + GR, GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    poke(w + GR, 0x66);
    release(&mut s, w);
    expect_q(&s, w + GR, committed(w + GR, w + GR, RW, GR, RW));
    assert_eq!(peek(w + GR, 1), [0x66]);
    assert_unmapped(w, GR);
}

/// spec §3: after release the addresses may be reserved again, and a fresh
/// commit reads zero.
#[test]
fn release_then_reuse_reads_zero() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    poke(w, 0xee);
    release(&mut s, w);
    assert_eq!(s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW), Ok(w));
    assert_zero(w, GR);
}

// ------------------------------------------------------------ MEM_DECOMMIT

/// W-k32 test_VirtualAlloc: decommit 0x10000 at the base of a region of
/// which one page is committed succeeds.
#[test]
fn decommit_partially_committed_range() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    decommit(&mut s, base, 0x10000);
    expect_q(&s, base, reserved(base, base, NA, 0x10000));
    assert_kernel(base, 0x10000, "---");
}

/// spec §3: size 0 at the base decommits the whole region.
#[test]
fn decommit_size_zero_at_base() {
    let mut s = space();
    let base = alloc(&mut s, 3 * GR, RW);
    decommit(&mut s, base, 0);
    expect_q(&s, base, reserved(base, base, RW, 3 * GR));
    assert_kernel(base, 3 * GR, "---");
}

/// W-nt test_NtAllocateVirtualMemory: size 0 at base + 0xffe (first page)
/// decommits the whole region.
#[test]
fn decommit_size_zero_in_first_page() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, GR, A::RESERVE | A::COMMIT, P::EXECUTE_READWRITE)
        .unwrap();
    decommit(&mut s, base + 0xffe, 0);
    expect_q(&s, base, reserved(base, base, P::EXECUTE_READWRITE, GR));
}

/// W-nt test_NtAllocateVirtualMemory: size 0 at base + 0x1001 → 487.
#[test]
fn decommit_size_zero_at_base_plus_0x1001() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_free(base + 0x1001, 0, F::DECOMMIT)
    });
}

/// spec §3: size 0 at an interior page → 487.
#[test]
fn decommit_size_zero_interior_page() {
    let mut s = space();
    let base = alloc(&mut s, 2 * GR, RW);
    fails(&mut s, (base, 2 * GR), IA, |s| {
        s.virtual_free(base + GR, 0, F::DECOMMIT)
    });
}

/// W-nt test_NtAllocateVirtualMemory: size 2 at base + 0x1fff decommits the
/// two pages it touches (base+0x1000 .. base+0x3000).
#[test]
fn decommit_two_bytes_straddling_pages() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    decommit(&mut s, base + 0x1fff, 2);
    expect_q(&s, base, committed(base, base, RW, PG, RW));
    expect_q(&s, base + PG, reserved(base + PG, base, RW, 2 * PG));
    expect_q(
        &s,
        base + 0x3000,
        committed(base + 0x3000, base, RW, GR - 0x3000, RW),
    );
    assert_kernel(base + PG, 2 * PG, "---");
    assert_kernel(base + 0x3000, PG, "rw-");
}

/// spec §3: an interior range splits the region into three.
#[test]
fn decommit_interior_range() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    decommit(&mut s, base + 0x2000, 0x3000);
    expect_q(&s, base, committed(base, base, RW, 0x2000, RW));
    expect_q(&s, base + 0x2000, reserved(base + 0x2000, base, RW, 0x3000));
    expect_q(
        &s,
        base + 0x5000,
        committed(base + 0x5000, base, RW, GR - 0x5000, RW),
    );
}

/// spec §3: the last page of a region.
#[test]
fn decommit_last_page() {
    let mut s = space();
    let base = alloc(&mut s, 0x5000, RW);
    decommit(&mut s, base + 0x4000, PG);
    expect_q(&s, base, committed(base, base, RW, 0x4000, RW));
    expect_q(&s, base + 0x4000, reserved(base + 0x4000, base, RW, PG));
}

/// W-nt test_NtFreeVirtualMemory: decommit of 0x10000 from a one-page
/// reservation runs past its end → STATUS_UNABLE_TO_FREE_VM → 87, nothing
/// changes.
#[test]
fn decommit_running_past_reservation_end() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, PG, A::RESERVE | A::COMMIT, RW).unwrap();
    poke(w, 1);
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_free(w, 0x10000, F::DECOMMIT)
    });
    assert_eq!(peek(w, 1), [1]);
}

/// spec §3: a range past the end by one page (0x3000 region).
#[test]
fn decommit_one_page_past_end() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, 0x3000, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_free(w + PG, 0x3000, F::DECOMMIT)
    });
}

/// spec §3: a range spanning two adjacent reservations runs past the end
/// of the first → 87, neither changes.
#[test]
fn decommit_across_two_reservations() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    s.virtual_alloc(w + GR, GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, 2 * GR), IP, |s| {
        s.virtual_free(w + 0x8000, GR, F::DECOMMIT)
    });
}

/// W-nt test_NtFreeVirtualMemory: a decommit starting in free space → 487.
#[test]
fn decommit_free_address() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, PG, RW, w);
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_free(w + GR, PG, F::DECOMMIT)
    });
}

/// spec §3: a decommit in a released region → 487.
#[test]
fn decommit_after_release() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    release(&mut s, w);
    fails(&mut s, (w, GR), IA, |s| s.virtual_free(w, PG, F::DECOMMIT));
    fails(&mut s, (w, GR), IA, |s| s.virtual_free(w, 0, F::DECOMMIT));
}

/// API.md: decommit on foreign memory → 487, untouched.
#[test]
fn decommit_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, 3 * PG, 0x71);
    fails(&mut s, (w, 3 * PG), IA, |s| {
        s.virtual_free(w, PG, F::DECOMMIT)
    });
    f.assert_intact("rw-", 0x71);
}

/// API.md: decommit on the thread's stack → 487.
#[test]
fn decommit_thread_stack() {
    let mut s = space();
    let page = stack_page();
    let before = kview(page, PG);
    assert_eq!(s.virtual_free(page, PG, F::DECOMMIT), Err(IA));
    assert_eq!(kview(page, PG), before);
}

/// spec §3: pages already reserved are fine.
#[test]
fn decommit_reserved_only_range() {
    let mut s = space();
    let base = reserve(&mut s, GR, P::READONLY);
    decommit(&mut s, base + PG, 0x4000);
    expect_q(&s, base, reserved(base, base, P::READONLY, GR));
}

/// spec §3: decommitting twice succeeds twice.
#[test]
fn decommit_twice() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    decommit(&mut s, base, 0x2000);
    decommit(&mut s, base, 0x2000);
    expect_q(&s, base, reserved(base, base, RW, 0x2000));
}

/// spec §3 / PAL test21: decommitted pages read zero when committed again,
/// and pages outside the decommitted range keep their data.
#[test]
fn decommit_recommit_zero_and_neighbours_kept() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    for i in 0..4 {
        poke(base + i * PG, 0x10 + i as u8);
    }
    decommit(&mut s, base + PG, 2 * PG);
    commit(&mut s, base, 4 * PG, RW, base);
    assert_eq!(peek(base, 1), [0x10]);
    assert_zero(base + PG, 2 * PG);
    assert_eq!(peek(base + 3 * PG, 1), [0x13]);
}

/// spec §4: decommit keeps AllocationProtect; merging with neighbouring
/// reserved pages gives one reserved region.
#[test]
fn decommit_merges_with_reserved_neighbours() {
    let mut s = space();
    let base = reserve(&mut s, GR, P::EXECUTE_READ);
    commit(&mut s, base + 0x4000, 0x4000, RW, base + 0x4000);
    expect_q(&s, base, reserved(base, base, P::EXECUTE_READ, 0x4000));
    decommit(&mut s, base + 0x4000, 0x4000);
    expect_q(&s, base, reserved(base, base, P::EXECUTE_READ, GR));
}

/// DESIGN: another AddressSpace cannot decommit our pages.
#[test]
fn decommit_other_address_space() {
    let mut a = space();
    let mut b = space();
    let base = alloc(&mut a, GR, RW);
    fails(&mut b, (base, GR), IA, |b| {
        b.virtual_free(base, PG, F::DECOMMIT)
    });
}

/// spec §3: a decommit range whose end wraps around must fail and change
/// nothing (the sources settle no code: 87 or 487).
#[test]
fn decommit_wrapping_size() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails_any(&mut s, (base, GR), &[IP, IA], |s| {
        s.virtual_free(base + PG, usize::MAX - PG, F::DECOMMIT)
    });
}

/// W-nt test_NtAllocateVirtualMemory (pages touched): an unaligned start and
/// a size ending exactly at the reservation's end is fine.
#[test]
fn decommit_unaligned_to_exact_end() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    decommit(&mut s, base + 0x1800, GR - 0x1800);
    expect_q(&s, base, committed(base, base, RW, PG, RW));
    expect_q(&s, base + PG, reserved(base + PG, base, RW, GR - PG));
}

/// spec §3 (range past the end → 87): one byte more than the previous case
/// touches the page after the end.
#[test]
fn decommit_unaligned_one_byte_past_end() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    fails(&mut s, (w, 2 * GR), IP, |s| {
        s.virtual_free(w + 0x1800, GR - 0x1800 + 1, F::DECOMMIT)
    });
}

/// spec §3: decommit of exactly the whole region by size.
#[test]
fn decommit_whole_region_by_size() {
    let mut s = space();
    let base = alloc(&mut s, 0x7000, P::EXECUTE_READWRITE);
    decommit(&mut s, base, 0x7000);
    expect_q(&s, base, reserved(base, base, P::EXECUTE_READWRITE, 0x7000));
    assert_kernel(base, 0x7000, "---");
}

/// spec §3/§4: releasing the middle of three adjacent reservations leaves a
/// one-granule free gap.
#[test]
fn release_middle_of_three() {
    let mut s = space();
    let w = window();
    for i in 0..3 {
        reserve_at(&mut s, w + i * GR, GR, NA, w + i * GR);
    }
    release(&mut s, w + GR);
    expect_q(&s, w + GR, free_mbi(w + GR, GR));
    expect_q(&s, w, reserved(w, w, NA, GR));
    expect_q(&s, w + 2 * GR, reserved(w + 2 * GR, w + 2 * GR, NA, GR));
    assert_unmapped(w + GR, GR);
}
