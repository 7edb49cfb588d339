//! VirtualAlloc: allocation types, protections, sizes, rounding, placement,
//! conflicts, commit semantics.

use crate::*;

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;

// ------------------------------------------------------------ allocation types

/// Valid `flAllocationType` values at a NULL address (spec §2: RESERVE,
/// COMMIT, RESERVE|COMMIT, each optionally with TOP_DOWN; COMMIT at NULL
/// reserves too). Each row: fresh space, 0x3000 bytes READWRITE.
#[test]
fn valid_types_at_null() {
    let rows: &[(u32, bool)] = &[
        (0x2000, false),             // MEM_RESERVE
        (0x1000, true),              // MEM_COMMIT (NULL: reserve + commit)
        (0x3000, true),              // MEM_RESERVE | MEM_COMMIT
        (0x2000 | 0x10_0000, false), // | MEM_TOP_DOWN
        (0x1000 | 0x10_0000, true),
        (0x3000 | 0x10_0000, true),
    ];
    for &(t, is_commit) in rows {
        let mut s = space();
        let base = s
            .virtual_alloc(0, 0x3000, at(t), RW)
            .unwrap_or_else(|e| panic!("type {t:#x}: {e:?}"));
        assert_eq!(base % GR, 0, "type {t:#x}");
        if is_commit {
            expect_q(&s, base, committed(base, base, RW, 0x3000, RW));
            assert_kernel(base, 0x3000, "rw-");
        } else {
            expect_q(&s, base, reserved(base, base, RW, 0x3000));
            assert_kernel(base, 0x3000, "---");
        }
    }
}

/// Invalid types (spec §2 "anything else → ERROR_INVALID_PARAMETER"; Wine
/// W-k32 test_write_watch for WRITE_WATCH alone, W-k32 test_VirtualAlloc for
/// AT_ROUND_TO_PAGE; Docs: LARGE_PAGES needs RESERVE|COMMIT).
const INVALID_TYPES: &[u32] = &[
    0,
    0x4000,                // MEM_DECOMMIT
    0x8000,                // MEM_RELEASE
    0x1_0000,              // MEM_FREE
    0x10_0000,             // MEM_TOP_DOWN alone
    0x20_0000,             // MEM_WRITE_WATCH alone
    0x1000 | 0x20_0000,    // COMMIT | WRITE_WATCH (WRITE_WATCH needs RESERVE)
    0x2000_0000,           // MEM_LARGE_PAGES alone
    0x2000 | 0x2000_0000,  // RESERVE | LARGE_PAGES (needs RESERVE|COMMIT)
    0x1000 | 0x2000_0000,  // COMMIT | LARGE_PAGES
    0x40_0000,             // MEM_PHYSICAL alone
    0x8_0000 | 0x1000,     // RESET | COMMIT
    0x8_0000 | 0x2000,     // RESET | RESERVE
    0x8_0000 | 0x10_0000,  // RESET | TOP_DOWN
    0x8_0000 | 0x100_0000, // RESET | RESET_UNDO
    0x100_0000 | 0x1000,   // RESET_UNDO | COMMIT
    0x100_0000 | 0x2000,   // RESET_UNDO | RESERVE
    0x2000 | 0x4000,       // RESERVE | DECOMMIT
    0x2000 | 0x8000,       // RESERVE | RELEASE
    0x1000 | 0x4000,       // COMMIT | DECOMMIT
    0x3000 | 0x4000_0000,  // | AT_ROUND_TO_PAGE (W-k32 test_VirtualAlloc)
    0x2000 | 0x1,          // unknown low bit
    0x1000 | 0x8000_0000,  // unknown high bit
    0x3000 | 0x800_0000,   // unknown bit
];

/// Each invalid type at a NULL address fails with ERROR_INVALID_PARAMETER.
#[test]
fn invalid_types_at_null() {
    for &t in INVALID_TYPES {
        let mut s = space();
        assert_eq!(s.virtual_alloc(0, GR, at(t), RW), Err(IP), "type {t:#x}");
    }
}

/// Each invalid type at the base of a committed region fails with
/// ERROR_INVALID_PARAMETER and changes nothing (the type is checked
/// before the address).
#[test]
fn invalid_types_at_committed_base() {
    for &t in INVALID_TYPES {
        let mut s = space();
        let base = alloc(&mut s, GR, RW);
        poke(base, 0x5a);
        fails(&mut s, (base, GR), IP, |s| {
            s.virtual_alloc(base, PG, at(t), RW)
        });
        assert_eq!(peek(base, 1), [0x5a], "type {t:#x}");
    }
}

/// The type hostmem refuses (API.md: PHYSICAL is never honoured), at a
/// free fixed address: ERROR_INVALID_PARAMETER and nothing is mapped.
/// (MEM_WRITE_WATCH and MEM_LARGE_PAGES are honoured: write_watch.rs,
/// large_pages.rs.)
#[test]
fn refused_types_at_free_address() {
    for t in [
        0x2000 | 0x40_0000,             // RESERVE | PHYSICAL
        0x3000 | 0x40_0000,             // RESERVE | COMMIT | PHYSICAL
        0x2000 | 0x10_0000 | 0x40_0000, // RESERVE | TOP_DOWN | PHYSICAL
    ] {
        let mut s = space();
        let w = window();
        fails(&mut s, (w, 4 * GR), IP, |s| {
            s.virtual_alloc(w, GR, at(t), RW)
        });
        assert_unmapped(w, 4 * GR);
    }
}

/// Same refused type at NULL.
#[test]
fn refused_types_at_null() {
    for t in [0x2000 | 0x40_0000, 0x3000 | 0x40_0000] {
        let mut s = space();
        assert_eq!(s.virtual_alloc(0, GR, at(t), RW), Err(IP), "type {t:#x}");
    }
}

// ------------------------------------------------------------ protections

/// Valid protections (W-k32 test_VirtualAlloc_protection: 0x01, 0x02, 0x04,
/// 0x10, 0x20, 0x40 succeed; VirtualQuery shows Protect and
/// AllocationProtect equal to it, RegionSize one page, MEM_PRIVATE), with
/// the kernel's permissions (spec §6: commit = mprotect to the protection).
const VALID_PROTECTIONS: &[(u32, &str)] = &[
    (0x01, "---"),
    (0x02, "r--"),
    (0x04, "rw-"),
    (0x10, "--x"),
    (0x20, "r-x"),
    (0x40, "rwx"),
];

#[test]
fn commit_each_valid_protection() {
    for &(p, rwx) in VALID_PROTECTIONS {
        let mut s = space();
        let base = s
            .virtual_alloc(0, PG, A::COMMIT, pr(p))
            .unwrap_or_else(|e| panic!("protect {p:#x}: {e:?}"));
        expect_q(&s, base, committed(base, base, pr(p), PG, pr(p)));
        assert_kernel(base, PG, rwx);
        // Committing the same page again with the same protection succeeds
        // (W-k32 test_VirtualAlloc_protection).
        assert_eq!(
            s.virtual_alloc(base, PG, A::COMMIT, pr(p)),
            Ok(base),
            "{p:#x}"
        );
    }
}

#[test]
fn reserve_each_valid_protection() {
    for &(p, _) in VALID_PROTECTIONS {
        let mut s = space();
        let base = s
            .virtual_alloc(0, PG, A::RESERVE, pr(p))
            .unwrap_or_else(|e| panic!("protect {p:#x}: {e:?}"));
        // AllocationProtect records the protection; reserved pages: Protect 0.
        expect_q(&s, base, reserved(base, base, pr(p), PG));
        assert_kernel(base, PG, "---");
    }
}

/// Invalid protections (W-k32 test_VirtualAlloc_protection table and
/// test_VirtualAlloc "invalid protection values"; spec §2 for modifiers;
/// API.md: PAGE_GUARD refused).
const INVALID_PROTECTIONS: &[u32] = &[
    0x00,
    0x03,
    0x05,
    0x06,
    0x07,
    0x08,
    0x09,
    0x0a,
    0x0c,
    0x0f, // READ* mixes, WRITECOPY
    0x12,
    0x14,
    0x30,
    0x50,
    0x60,
    0x70,
    0x80,
    0x90,
    0xa0,
    0xc0,
    0xf0, // EXECUTE mixes
    0x100,
    0x200,
    0x400, // a modifier alone
    0x101,
    0x201,
    0x401, // a modifier with NOACCESS
    0x104,
    0x140, // PAGE_GUARD (refused by hostmem)
    0x604,
    0x304,
    0x504, // two modifiers
    0x208,
    0x280, // WRITECOPY with a modifier
    0x804,
    0x1_0004,
    0x8000_0004, // unknown bits
];

#[test]
fn commit_each_invalid_protection() {
    for &p in INVALID_PROTECTIONS {
        let mut s = space();
        let base = reserve(&mut s, GR, NA);
        fails(&mut s, (base, GR), IP, |s| {
            s.virtual_alloc(base, PG, A::COMMIT, pr(p))
        });
    }
}

#[test]
fn reserve_each_invalid_protection() {
    for &p in INVALID_PROTECTIONS {
        let mut s = space();
        let w = window();
        fails(&mut s, (w, 2 * GR), IP, |s| {
            s.virtual_alloc(w, GR, A::RESERVE, pr(p))
        });
        assert_unmapped(w, 2 * GR);
    }
}

#[test]
fn reserve_commit_each_invalid_protection_at_null() {
    for &p in INVALID_PROTECTIONS {
        let mut s = space();
        assert_eq!(
            s.virtual_alloc(0, PG, A::RESERVE | A::COMMIT, pr(p)),
            Err(IP),
            "protect {p:#x}"
        );
    }
}

/// W-k32 test_VirtualAlloc: MEM_COMMIT with protection 0 → 87.
#[test]
fn commit_protection_zero_at_null() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0, PG, A::COMMIT, P::empty()), Err(IP));
}

/// W-k32 test_VirtualAlloc: READONLY|EXECUTE on a commit → 87.
#[test]
fn commit_readonly_execute_mix() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_alloc(base, PG, A::COMMIT, P::READONLY | P::EXECUTE)
    });
}

/// W-k32 test_VirtualAlloc: PAGE_NOCACHE is recorded in both
/// AllocationProtect and Protect.
#[test]
fn commit_readwrite_nocache_recorded() {
    let mut s = space();
    let p = RW | P::NOCACHE;
    let base = s.virtual_alloc(0, 2 * PG, A::COMMIT, p).unwrap();
    expect_q(&s, base, committed(base, base, p, 2 * PG, p));
    assert_kernel(base, 2 * PG, "rw-");
}

/// spec §6: PAGE_WRITECOMBINE is accepted, recorded, mapped as the base.
#[test]
fn commit_readonly_writecombine_recorded() {
    let mut s = space();
    let p = P::READONLY | P::WRITECOMBINE;
    let base = s.virtual_alloc(0, PG, A::COMMIT, p).unwrap();
    expect_q(&s, base, committed(base, base, p, PG, p));
    assert_kernel(base, PG, "r--");
}

// ------------------------------------------------------------ sizes

/// W-k32 test_VirtualAlloc: size 0 → 87.
#[test]
fn size_zero_reserve() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0, 0, A::RESERVE, NA), Err(IP));
}

#[test]
fn size_zero_reserve_commit() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0, 0, A::RESERVE | A::COMMIT, RW), Err(IP));
}

/// spec §2: size 0 → 87, also for a commit inside a reservation.
#[test]
fn size_zero_commit_in_reservation() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_alloc(base, 0, A::COMMIT, RW)
    });
}

#[test]
fn size_zero_fixed_reserve() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_alloc(w, 0, A::RESERVE, RW)
    });
}

/// W-k32 test_VirtualAlloc: 0xFFFC bytes → RegionSize 0x10000, reserved,
/// Protect 0, AllocationProtect NOACCESS, MEM_PRIVATE.
#[test]
fn size_0xfffc_rounds_to_0x10000() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    expect_q(&s, base, reserved(base, base, NA, 0x10000));
}

/// spec §2: the end is rounded up to 4 KiB (not 64 KiB): one byte → one page.
#[test]
fn size_one_byte_is_one_page() {
    let mut s = space();
    let base = s.virtual_alloc(0, 1, A::RESERVE, NA).unwrap();
    expect_q(&s, base, reserved(base, base, NA, PG));
    assert_kernel(base, PG, "---");
}

#[test]
fn size_page_plus_one_commit() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, PG + 1, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    expect_q(&s, base, committed(base, base, RW, 2 * PG, RW));
}

/// spec §2: a reservation larger than one granule ends on a page, not a granule.
#[test]
fn size_granule_plus_one() {
    let mut s = space();
    let base = s.virtual_alloc(0, GR + 1, A::RESERVE, RW).unwrap();
    expect_q(&s, base, reserved(base, base, RW, GR + PG));
}

/// NT's NtAllocateVirtualMemory (a size beyond the top of user space less
/// the base is STATUS_INVALID_PARAMETER_4, before any search for room):
/// at NULL, a size so large that rounding wraps → 87, whatever the type.
#[test]
fn size_max_at_null_fails() {
    let mut s = space();
    for ty in [
        A::RESERVE,
        A::COMMIT,
        A::RESERVE | A::COMMIT,
        A::RESERVE | A::TOP_DOWN,
    ] {
        assert_eq!(s.virtual_alloc(0, usize::MAX, ty, NA), Err(IP), "{ty:?}");
    }
}

/// PAL VirtualAlloc/test22 (2,147,483,647,000,000 bytes at NULL fails),
/// with NT's code for it: larger than the user address space → 87, not
/// "out of memory"; a size that fits in it but finds no room → 8.
#[test]
fn size_beyond_address_space_at_null_fails() {
    let mut s = space();
    let user_end = hostmem::unstable::engine::USER_ADDRESS_END;
    for size in [2_147_483_647_000_000, 1 << 62, user_end + 1, user_end + GR] {
        for ty in [A::COMMIT, A::RESERVE, A::RESERVE | A::COMMIT] {
            assert_eq!(
                s.virtual_alloc(0, size, ty, RW),
                Err(IP),
                "{size:#x} {ty:?}"
            );
        }
    }
    assert_eq!(
        s.virtual_alloc(0, user_end, A::RESERVE, NA),
        Err(E::NOT_ENOUGH_MEMORY),
        "the whole user address space is never free"
    );
}

// ------------------------------------------------------------ fixed reservations

/// ROS-at CheckSize: (base + 0x1010, 0xC000) → base, size 0xE000.
#[test]
fn fixed_reserve_rounds_address_down_to_granule() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0x1010, 0xC000, NA, w);
    expect_q(&s, w, reserved(w, w, NA, 0xE000));
}

/// ROS-at CheckSize: (base + 0xFFFF, 0x3000) → base, size 0x13000.
#[test]
fn fixed_reserve_end_rounds_up_to_page() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0xFFFF, 0x3000, NA, w);
    expect_q(&s, w, reserved(w, w, NA, 0x13000));
    assert_kernel(w, 0x13000, "---");
}

/// ROS-at CheckSize: (base + 0x8000, 1) → size 0x9000.
#[test]
fn fixed_reserve_one_byte_mid_granule() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0x8000, 1, RW, w);
    expect_q(&s, w + 0x8000, reserved(w + 0x8000, w, RW, PG));
    expect_q(&s, w, reserved(w, w, RW, 0x9000));
}

/// ROS-at CheckAlignment "Reserve and commit at once": RESERVE|COMMIT at
/// base + 0x4080, 0x1000 → base, 0x6000 committed, writable at both ends.
#[test]
fn fixed_reserve_commit_rounding() {
    let mut s = space();
    let w = window();
    assert_eq!(
        s.virtual_alloc(w + 0x4080, PG, A::RESERVE | A::COMMIT, RW),
        Ok(w)
    );
    expect_q(&s, w, committed(w, w, RW, 0x6000, RW));
    poke(w, 1);
    poke(w + 0x4080, 1);
    assert_kernel(w, 0x6000, "rw-");
}

/// spec §2: a free fixed address is honoured; MEM_TOP_DOWN is only a hint.
#[test]
fn fixed_reserve_top_down_is_ignored() {
    let mut s = space();
    let w = window() + 3 * GR;
    assert_eq!(s.virtual_alloc(w, GR, A::RESERVE | A::TOP_DOWN, NA), Ok(w));
    expect_q(&s, w, reserved(w, w, NA, GR));
}

/// W-k32 test_VirtualAlloc: after a release, the same address can be
/// reserved and committed again.
#[test]
fn fixed_reserve_at_released_address() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, 0x2000, A::RESERVE | A::COMMIT, P::EXECUTE_READWRITE)
        .unwrap();
    release(&mut s, base);
    let again = s.virtual_alloc(base, PG, A::RESERVE | A::COMMIT, P::EXECUTE_READWRITE);
    // Another test thread may have taken the range in between; only the
    // outcome "same address" or "conflict" is acceptable.
    match again {
        Ok(a) => {
            assert_eq!(a, base);
            expect_q(
                &s,
                base,
                committed(base, base, P::EXECUTE_READWRITE, PG, P::EXECUTE_READWRITE),
            );
        }
        Err(e) => assert_eq!(e, IA),
    }
}

/// Same, deterministic: inside the test's window.
#[test]
fn fixed_reserve_again_after_release_in_window() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 2 * GR, NA, w);
    release(&mut s, w);
    reserve_at(&mut s, w, GR, RW, w);
    expect_q(&s, w, reserved(w, w, RW, GR));
}

/// W-nt test_NtAllocateVirtualMemory "allocation conflicts because of 64k
/// align": a reservation at base + 0x1000 conflicts with one at base.
#[test]
fn fixed_reserve_conflict_same_granule() {
    let mut s = space();
    let w = window();
    assert_eq!(
        s.virtual_alloc(w, PG, A::RESERVE | A::COMMIT, P::EXECUTE_READWRITE),
        Ok(w)
    );
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w + PG, PG, A::RESERVE | A::COMMIT, P::EXECUTE_READWRITE)
    });
}

/// ROS-at CheckAlignment: "Try to reserve again in the same 64k region".
#[test]
fn fixed_reserve_conflict_mid_granule() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + 0x1010, PG, NA, w);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w + 0x8000, PG, A::RESERVE, NA)
    });
}

/// spec §2: a range overlapping an existing reservation → 487.
#[test]
fn fixed_reserve_conflict_exact() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, GR, A::RESERVE, NA)
    });
}

/// spec §2: a range that starts in free space and runs into a reservation.
#[test]
fn fixed_reserve_conflict_tail_overlap() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + GR, GR, NA, w + GR);
    fails(&mut s, (w, 3 * GR), IA, |s| {
        s.virtual_alloc(w, 2 * GR, A::RESERVE, NA)
    });
    assert_unmapped(w, GR);
}

/// spec §2: a reservation that would enclose an existing one.
#[test]
fn fixed_reserve_conflict_enclosing() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + GR, GR, RW, w + GR);
    fails(&mut s, (w, 4 * GR), IA, |s| {
        s.virtual_alloc(w, 4 * GR, A::RESERVE, NA)
    });
}

/// spec §2: RESERVE|COMMIT conflicting with an existing reservation commits
/// nothing.
#[test]
fn fixed_reserve_commit_conflict_commits_nothing() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW)
    });
    expect_q(&s, w, reserved(w, w, NA, GR));
}

/// spec §2 "overlaps anything already mapped (hostmem's or not)".
#[test]
fn fixed_reserve_conflict_with_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w + 0x4000, PG, 0xa5);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, GR, A::RESERVE, NA)
    });
    f.assert_intact("rw-", 0xa5);
}

/// A foreign mapping in the rounded-down granule also conflicts.
#[test]
fn fixed_reserve_conflict_with_foreign_in_rounded_granule() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, PG, 0x11);
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w + 0x8000, PG, A::RESERVE, NA)
    });
    f.assert_intact("rw-", 0x11);
}

/// Reserving right up to a foreign mapping (adjacent, no overlap) works.
#[test]
fn fixed_reserve_adjacent_to_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w + 2 * GR, PG, 0x22);
    reserve_at(&mut s, w, 2 * GR, NA, w);
    expect_q(&s, w, reserved(w, w, NA, 2 * GR));
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_alloc(w + 2 * GR, GR, A::RESERVE, NA)
    });
    f.assert_intact("rw-", 0x22);
}

/// DESIGN: one AddressSpace's memory is foreign to another.
#[test]
fn fixed_reserve_conflict_with_other_address_space() {
    let mut a = space();
    let mut b = space();
    let w = window();
    reserve_at(&mut a, w, GR, NA, w);
    fails(&mut b, (w, GR), IA, |b| {
        b.virtual_alloc(w, GR, A::RESERVE, NA)
    });
    expect_q(&a, w, reserved(w, w, NA, GR));
}

/// ROS-k32 VirtualAllocEx / W-impl "disallow low 64k": 0x1000 → 87.
#[test]
fn fixed_reserve_below_64k() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0x1000, PG, A::RESERVE, NA), Err(IP));
}

/// ROS-at CheckSomeDefaultAddresses: 0x0FFF with RESERVE|COMMIT on x64 → 87.
#[test]
fn fixed_reserve_commit_at_0xfff() {
    let mut s = space();
    assert_eq!(
        s.virtual_alloc(0xFFF, PG, A::RESERVE | A::COMMIT, RW),
        Err(IP)
    );
}

#[test]
fn fixed_reserve_at_0xffff() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0xFFFF, PG, A::RESERVE, NA), Err(IP));
}

/// W-impl: a range in kernel space → 87.
#[test]
fn fixed_reserve_above_user_space() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(ABOVE_USER, GR, A::RESERVE, NA), Err(IP));
}

/// W-impl "wrap-around": address + size overflows → 87.
#[test]
fn fixed_reserve_wrapping_size() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_alloc(w, usize::MAX - w + PG, A::RESERVE, NA)
    });
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_alloc(w, usize::MAX, A::RESERVE, NA)
    });
}

/// W-impl "kernel space": a range that ends above the user address space → 87.
#[test]
fn fixed_reserve_ending_above_user_space() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IP, |s| {
        s.virtual_alloc(w, 1 << 57, A::RESERVE, NA)
    });
}

// ------------------------------------------------------------ placement

/// W-k32 test_VirtualAlloc: memory returned by VirtualAlloc is 64 KiB
/// aligned; distinct allocations do not overlap.
#[test]
fn null_allocations_aligned_and_disjoint() {
    let mut s = space();
    let mut got: Vec<usize> = (0..8).map(|_| alloc(&mut s, 0x2000, RW)).collect();
    got.sort_unstable();
    for pair in got.windows(2) {
        assert!(
            pair[1] >= pair[0] + GR,
            "{:#x} and {:#x} share a granule",
            pair[0],
            pair[1]
        );
    }
}

/// spec §2 MEM_TOP_DOWN: the highest free range (Docs: "at the highest
/// possible address") — above every ordinary placement made just before.
#[test]
fn top_down_is_higher_than_ordinary() {
    let mut s = space();
    let low: Vec<usize> = (0..8).map(|_| reserve(&mut s, GR, NA)).collect();
    let high = s
        .virtual_alloc(0, GR, A::RESERVE | A::TOP_DOWN, NA)
        .unwrap();
    assert_eq!(high % GR, 0);
    let top = *low.iter().max().unwrap();
    assert!(high > top, "top-down {high:#x} below ordinary {top:#x}");
    expect_q(&s, high, reserved(high, high, NA, GR));
}

/// MEM_TOP_DOWN with RESERVE|COMMIT gives committed memory.
#[test]
fn top_down_reserve_commit() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, 0x3000, A::RESERVE | A::COMMIT | A::TOP_DOWN, RW)
        .unwrap();
    expect_q(&s, base, committed(base, base, RW, 0x3000, RW));
    poke(base + 0x2fff, 7);
}

/// spec §2: MEM_TOP_DOWN on a commit inside a reservation is harmless.
#[test]
fn top_down_on_commit_in_reservation() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    assert_eq!(
        s.virtual_alloc(base + PG, PG, A::COMMIT | A::TOP_DOWN, RW),
        Ok(base + PG)
    );
    expect_q(&s, base + PG, committed(base + PG, base, NA, PG, RW));
}

// ------------------------------------------------------------ commit

/// spec §2: a commit needs a reservation: at a free fixed address → 487.
#[test]
fn commit_at_free_address() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, PG, A::COMMIT, RW)
    });
    assert_unmapped(w, GR);
}

/// ROS-at CheckAlignment "Commit memory at a too high address": a commit
/// running one page past the reservation's end → 487, nothing committed.
#[test]
fn commit_running_past_reservation_end() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 0x3000, NA, w);
    fails(&mut s, (w, 0x3000), IA, |s| {
        s.virtual_alloc(w + 0x2000, 0x2000, A::COMMIT, RW)
    });
    expect_q(&s, w, reserved(w, w, NA, 0x3000));
}

/// ROS-at: the page just past the end of a 0x3000 reservation is not
/// committable.
#[test]
fn commit_just_after_reservation_end() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, 0x3000, NA, w);
    fails(&mut s, (w, 0x4000), IA, |s| {
        s.virtual_alloc(w + 0x3000, PG, A::COMMIT, NA)
    });
}

/// ROS-at CheckAdjacentVADs: a commit covering two adjacent reservations →
/// 487, neither changes.
#[test]
fn commit_across_two_reservations() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, NA, w);
    reserve_at(&mut s, w + GR, GR, NA, w + GR);
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_alloc(w + 0x4000, GR, A::COMMIT, NA)
    });
    expect_q(&s, w, reserved(w, w, NA, GR));
    expect_q(&s, w + GR, reserved(w + GR, w + GR, NA, GR));
}

/// Two pages straddling the boundary of adjacent reservations.
#[test]
fn commit_straddling_reservation_boundary() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w, GR, RW, w);
    reserve_at(&mut s, w + GR, GR, RW, w + GR);
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_alloc(w + GR - 1, 2, A::COMMIT, RW)
    });
}

/// A commit that starts in free space and ends inside a reservation.
#[test]
fn commit_starting_in_free_space() {
    let mut s = space();
    let w = window();
    reserve_at(&mut s, w + GR, GR, NA, w + GR);
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_alloc(w + GR - PG, 2 * PG, A::COMMIT, RW)
    });
}

/// API.md: commit on memory hostmem does not own → 487, untouched.
#[test]
fn commit_on_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::at(w, 2 * PG, 0x33, rustix::mm::MprotectFlags::empty());
    fails(&mut s, (w, 2 * PG), IA, |s| {
        s.virtual_alloc(w, PG, A::COMMIT, RW)
    });
    f.assert_intact("---", 0x33);
}

/// API.md: commit on the thread's stack → 487 (Windows would succeed).
#[test]
fn commit_on_thread_stack() {
    let mut s = space();
    let page = stack_page();
    let before = kview(page, PG);
    assert_eq!(s.virtual_alloc(page, PG, A::COMMIT, P::READONLY), Err(IA));
    assert_eq!(kview(page, PG), before);
}

/// DESIGN: another AddressSpace's reservation is foreign.
#[test]
fn commit_in_other_address_space_reservation() {
    let mut a = space();
    let mut b = space();
    let base = reserve(&mut a, GR, NA);
    fails(&mut b, (base, GR), IA, |b| {
        b.virtual_alloc(base, PG, A::COMMIT, RW)
    });
    expect_q(&a, base, reserved(base, base, NA, GR));
}

/// W-impl: a commit address below 64 KiB → 87.
#[test]
fn commit_below_64k() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0x2000, PG, A::COMMIT, RW), Err(IP));
}

/// W-k32 test_VirtualAlloc: commit of the first page of a reservation; the
/// rest stays reserved.
#[test]
fn commit_first_page() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    expect_q(&s, base, committed(base, base, NA, PG, NA));
    expect_q(&s, base + PG, reserved(base + PG, base, NA, 0xF000));
    assert_kernel(base, GR, "---");
}

/// spec §2: commit rounds the address down to its page and returns it.
#[test]
fn commit_returns_page_rounded_address() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0x1234, 0x10, RW, base + PG);
    expect_q(&s, base + PG, committed(base + PG, base, NA, PG, RW));
    expect_q(&s, base, reserved(base, base, NA, PG));
    expect_q(
        &s,
        base + 2 * PG,
        reserved(base + 2 * PG, base, NA, GR - 2 * PG),
    );
}

/// Docs lpAddress/dwSize: a 2-byte range straddling a page boundary
/// commits both pages.
#[test]
fn commit_two_bytes_straddling_pages() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0x1fff, 2, RW, base + PG);
    expect_q(&s, base + PG, committed(base + PG, base, NA, 2 * PG, RW));
}

/// ROS-at CheckAlignment: commit with a protection other than the
/// reservation's; AllocationProtect stays the reservation's.
#[test]
fn commit_protection_differs_from_reservation() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0xF000, PG, RW, base + 0xF000);
    expect_q(
        &s,
        base + 0xF700,
        committed(base + 0xF000, base, NA, PG, RW),
    );
    poke(base + 0xF000, 1);
}

/// ROS-at CheckAlignment / spec §2: committing a committed page with a new
/// protection succeeds and the protection becomes the new one.
#[test]
fn recommit_changes_protection() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0x2000, PG, NA, base + 0x2000);
    commit(&mut s, base + 0x2000, PG, RW, base + 0x2000);
    expect_q(
        &s,
        base + 0x2000,
        committed(base + 0x2000, base, NA, PG, RW),
    );
    assert_kernel(base + 0x2000, PG, "rw-");
}

/// spec §2 (Docs): recommitting keeps contents.
#[test]
fn recommit_keeps_contents() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    poke(base + 10, 0x77);
    commit(&mut s, base, PG, RW, base);
    assert_eq!(peek(base + 10, 1), [0x77]);
}

/// ROS-at CheckAdjacentVADs: committing 3 pages over committed ones sets the
/// protection of all of them (READONLY), keeps old contents, and the new
/// page reads zero.
#[test]
fn commit_over_partially_committed_range() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base, PG, RW, base);
    commit(&mut s, base + 0x2000, PG, NA, base + 0x2000);
    poke(base, 0x42);
    commit(&mut s, base, 0x3000, P::READONLY, base);
    expect_q(&s, base, committed(base, base, NA, 0x3000, P::READONLY));
    assert_kernel(base, 0x3000, "r--");
    assert_eq!(peek(base, 1), [0x42]);
    assert_zero(base + PG, 2 * PG);
}

/// Docs (MEM_COMMIT: contents are zero on first access) / PAL test21.
#[test]
fn commit_reads_zero() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, 4 * GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    assert_zero(base, 4 * GR);
}

#[test]
fn commit_in_reservation_reads_zero() {
    let mut s = space();
    let base = reserve(&mut s, 2 * GR, NA);
    commit(&mut s, base + GR, GR, P::READONLY, base + GR);
    assert_zero(base + GR, GR);
}

/// PAL VirtualAlloc/test21: commit, write, decommit, commit again → zero.
#[test]
fn recommit_after_decommit_reads_zero() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    poke(base, 123);
    decommit(&mut s, base, PG);
    commit(&mut s, base, PG, RW, base);
    assert_zero(base, PG);
}

/// Writes to committed READWRITE memory stick (W-k32 test_VirtualAlloc
/// memset after VirtualProtect READWRITE).
#[test]
fn committed_memory_is_usable() {
    let mut s = space();
    let base = alloc(&mut s, 3 * PG, RW);
    for i in 0..3 {
        poke(base + i * PG + 5, i as u8 + 1);
    }
    for i in 0..3 {
        assert_eq!(peek(base + i * PG + 5, 1), [i as u8 + 1]);
    }
}

/// spec §2: reserved pages are PROT_NONE in the kernel, no access.
#[test]
fn reserved_pages_are_prot_none() {
    let mut s = space();
    let base = reserve(&mut s, 3 * GR, RW);
    assert_kernel(base, 3 * GR, "---");
}

/// spec §2: COMMIT at NULL reserves and commits in one step.
#[test]
fn commit_at_null_reserves() {
    let mut s = space();
    let base = s
        .virtual_alloc(0, 0x5000, A::COMMIT, P::EXECUTE_READ)
        .unwrap();
    assert_eq!(base % GR, 0);
    expect_q(
        &s,
        base,
        committed(base, base, P::EXECUTE_READ, 0x5000, P::EXECUTE_READ),
    );
    assert_kernel(base, 0x5000, "r-x");
}

/// WRITECOPY on a commit in an existing reservation → 87 (Docs: invalid
/// for private memory; W-k32 test_VirtualProtect commit loop).
#[test]
fn commit_writecopy_in_reservation() {
    let mut s = space();
    let base = reserve(&mut s, GR, RW);
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_alloc(base, PG, A::COMMIT, P::WRITECOPY)
    });
    fails(&mut s, (base, GR), IP, |s| {
        s.virtual_alloc(base, PG, A::COMMIT, P::EXECUTE_WRITECOPY)
    });
}

/// Dropping an AddressSpace releases its reservations (API.md).
#[test]
fn drop_releases_everything() {
    let w = window();
    {
        let mut s = space();
        reserve_at(&mut s, w, GR, NA, w);
        s.virtual_alloc(w + 2 * GR, GR, A::RESERVE | A::COMMIT, RW)
            .unwrap();
        assert_kernel(w, GR, "---");
    }
    assert_unmapped(w, 3 * GR);
}

/// spec §2: the range of a reservation is [base, end) with end rounded to a
/// page, so a foreign mapping later in the same 64 KiB granule does not
/// conflict with it.
#[test]
fn fixed_reserve_small_with_foreign_later_in_granule() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w + 0x8000, PG, 0x44);
    reserve_at(&mut s, w, 0x3000, NA, w);
    expect_q(&s, w, reserved(w, w, NA, 0x3000));
    f.assert_intact("rw-", 0x44);
}

/// spec §2: a commit whose last byte falls one byte into the page after the
/// reservation's end → 487 (the page touched is outside).
#[test]
fn commit_one_byte_past_end() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_alloc(base + 0xF800, 0x801, A::COMMIT, RW)
    });
    commit(&mut s, base + 0xF800, 0x800, RW, base + 0xF000);
    expect_q(
        &s,
        base + 0xF000,
        committed(base + 0xF000, base, NA, PG, RW),
    );
}

/// spec §2: a commit whose size wraps around the address space fails and
/// commits nothing (W-impl "wrap-around" → 87; 487 also names the fault).
#[test]
fn commit_wrapping_size() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails_any(&mut s, (base, GR), &[IP, IA], |s| {
        s.virtual_alloc(base + PG, usize::MAX - PG, A::COMMIT, RW)
    });
}

/// W-k32 test_VirtualAlloc, whole sequence: reserve 0xFFFC NOACCESS, protect
/// fails, commit one page NOACCESS, protect 0xFFFC fails, protect one page
/// READONLY then READWRITE, write, type-0 free fails, decommit 0x10000,
/// release with size 1 fails, release.
#[test]
fn wine_virtualalloc_sequence() {
    let mut s = space();
    let a = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    expect_q(&s, a, reserved(a, a, NA, 0x10000));
    assert_eq!(s.virtual_protect(a, 0xFFFC, P::READONLY), Err(IA));
    commit(&mut s, a, PG, NA, a);
    expect_q(&s, a, committed(a, a, NA, PG, NA));
    assert_eq!(s.virtual_protect(a, 0xFFFC, P::READONLY), Err(IA));
    protect(&mut s, a, PG, P::READONLY, NA);
    protect(&mut s, a, PG, RW, P::READONLY);
    expect_q(&s, a, committed(a, a, NA, PG, RW));
    for i in 0..20 {
        poke(a + i, 0x55);
    }
    assert_eq!(s.virtual_free(a, 0x10000, F::empty()), Err(IP));
    assert_eq!(s.virtual_free(a, 0, ft(0x1_0000)), Err(IP));
    decommit(&mut s, a, 0x10000);
    expect_q(&s, a, reserved(a, a, NA, 0x10000));
    assert_eq!(s.virtual_free(a, 1, F::RELEASE), Err(IP));
    release(&mut s, a);
    assert_eq!(q(&s, a).state, MemoryState::FREE);
}

/// DESIGN: each AddressSpace owns its reservations; dropping one leaves the
/// other's intact.
#[test]
fn dropping_one_space_keeps_the_other() {
    let mut keep = space();
    let base = alloc(&mut keep, GR, RW);
    poke(base, 0x21);
    {
        let mut gone = space();
        alloc(&mut gone, GR, RW);
    }
    expect_q(&keep, base, committed(base, base, RW, GR, RW));
    assert_eq!(peek(base, 1), [0x21]);
}
