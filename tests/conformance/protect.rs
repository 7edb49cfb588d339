//! VirtualProtect: protection values, committed-range rule, old
//! protection, splitting, modifiers, foreign memory.

use crate::*;

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;

/// W-k32 test_VirtualProtect table: a committed NOACCESS page is set to each
/// value; valid ones succeed with old = NOACCESS and VirtualQuery shows the
/// new protection (AllocationProtect stays NOACCESS, RegionSize one page);
/// invalid ones fail with 87 and the page keeps NOACCESS, as the following
/// restore call proves (old = NOACCESS). Kernel permissions from spec §6.
#[test]
fn protection_table_from_noaccess() {
    let rows: &[(u32, Option<&str>)] = &[
        (0x00, None),
        (0x01, Some("---")),
        (0x02, Some("r--")),
        (0x03, None),
        (0x04, Some("rw-")),
        (0x05, None),
        (0x06, None),
        (0x07, None),
        (0x08, None), // PAGE_WRITECOPY: invalid for private memory
        (0x09, None),
        (0x0c, None),
        (0x0f, None),
        (0x10, Some("--x")),
        (0x20, Some("r-x")),
        (0x30, None),
        (0x40, Some("rwx")),
        (0x50, None),
        (0x60, None),
        (0x70, None),
        (0x80, None), // PAGE_EXECUTE_WRITECOPY: invalid for private memory
        (0x90, None),
        (0xc0, None),
        (0xf0, None),
        (0x04 | 0x80, None), // READWRITE | EXECUTE_WRITECOPY (W-k32 test_VirtualAlloc)
        (0x100, None),       // GUARD alone
        (0x104, None),       // GUARD | READWRITE (refused by hostmem, API.md)
        (0x200, None),       // NOCACHE alone
        (0x201, None),       // NOCACHE | NOACCESS (spec §2)
        (0x604, None),       // NOCACHE | WRITECOMBINE (spec §2)
        (0x804, None),       // unknown bit
        (0x8000_0002, None), // unknown bit
    ];
    for &(p, rwx) in rows {
        let mut s = space();
        let base = s.virtual_alloc(0, PG, A::RESERVE | A::COMMIT, NA).unwrap();
        expect_q(&s, base, committed(base, base, NA, PG, NA));
        match rwx {
            Some(rwx) => {
                assert_eq!(s.virtual_protect(base, PG, pr(p)), Ok(NA), "protect {p:#x}");
                expect_q(&s, base, committed(base, base, NA, PG, pr(p)));
                assert_kernel(base, PG, rwx);
                assert_eq!(s.virtual_protect(base, PG, NA), Ok(pr(p)), "restore {p:#x}");
            }
            None => {
                fails(&mut s, (base, PG), IP, |s| {
                    s.virtual_protect(base, PG, pr(p))
                });
                assert_eq!(s.virtual_protect(base, PG, NA), Ok(NA), "restore {p:#x}");
            }
        }
        assert_kernel(base, PG, "---");
    }
}

/// W-k32 test_VirtualAlloc: protect a range of which only the first page is
/// committed → 487; the first page keeps its protection.
#[test]
fn range_with_reserved_pages() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_protect(base, 0xFFFC, P::READONLY)
    });
    expect_q(&s, base, committed(base, base, NA, PG, NA));
}

/// W-k32 test_VirtualAlloc: protect of reserved-only memory → 487.
#[test]
fn reserved_only_range() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_protect(base, 0xFFFC, P::READONLY)
    });
}

/// spec §5: a reserved page at the end of the range; nothing changes,
/// including the committed pages before it.
#[test]
fn last_page_reserved() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base, 3 * PG, RW, base);
    poke(base, 1);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_protect(base, 4 * PG, P::READONLY)
    });
    expect_q(&s, base, committed(base, base, NA, 3 * PG, RW));
    poke(base, 2);
}

/// spec §5: a reserved page in the middle of the range.
#[test]
fn hole_in_range() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    decommit(&mut s, base + PG, PG);
    fails(&mut s, (base, 4 * PG), IA, |s| {
        s.virtual_protect(base, 4 * PG, P::EXECUTE_READ)
    });
}

/// W-k32 test_VirtualAlloc: old = previous protection, twice in a row.
#[test]
fn old_protection_chain() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    protect(&mut s, base, PG, P::READONLY, NA);
    protect(&mut s, base, PG, RW, P::READONLY);
    expect_q(&s, base, committed(base, base, NA, PG, RW));
    poke(base + 19, 0x55);
}

/// spec §5: old = protection of the FIRST page when the range has several.
#[test]
fn old_protection_is_first_page() {
    let mut s = space();
    let base = alloc(&mut s, 3 * PG, RW);
    protect(&mut s, base + PG, 2 * PG, P::READONLY, RW);
    protect(&mut s, base, 3 * PG, P::EXECUTE_READ, RW);
    expect_q(&s, base, committed(base, base, RW, 3 * PG, P::EXECUTE_READ));
    protect(&mut s, base + PG, PG, NA, P::EXECUTE_READ);
}

/// Docs (pages touched by [address, address + size)): 2 bytes at
/// base + 0xfff cover two pages.
#[test]
fn range_straddling_pages() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    protect(&mut s, base + 0xfff, 2, P::READONLY, RW);
    expect_q(&s, base, committed(base, base, RW, 2 * PG, P::READONLY));
    expect_q(
        &s,
        base + 2 * PG,
        committed(base + 2 * PG, base, RW, 2 * PG, RW),
    );
}

/// spec §5: unaligned address inside a page; only that page changes.
#[test]
fn unaligned_address_single_page() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    protect(&mut s, base + 0x2010, 0x10, NA, RW);
    expect_q(
        &s,
        base + 0x2000,
        committed(base + 0x2000, base, RW, PG, NA),
    );
    assert_kernel(base + 0x2000, PG, "---");
    assert_kernel(base, 0x2000, "rw-");
}

/// NT's NtProtectVirtualMemory: a base above user space
/// (STATUS_INVALID_PARAMETER_2) or a size reaching past its top
/// (STATUS_INVALID_PARAMETER_3) → 87 before anything is looked up, as a
/// wrapping size is; nothing changes.
#[test]
fn range_past_user_space() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    poke(base, 5);
    let user_end = hostmem::unstable::engine::USER_ADDRESS_END;
    for size in [
        user_end - base + 1,
        (1 << 48) - base,
        usize::MAX - base,
        usize::MAX,
    ] {
        let mut old = None;
        fails(&mut s, (base, GR), IP, |s| {
            s.virtual_protect(base, size, P::READONLY)
                .map(|p| old = Some(p))
        });
        assert_eq!(old, None);
    }
    for address in [ABOVE_USER, user_end, user_end + 0x123] {
        assert_eq!(
            s.virtual_protect(address, PG, P::READONLY),
            Err(IP),
            "{address:#x}"
        );
        assert_eq!(
            s.virtual_protect(address, 0, P::READONLY),
            Err(IP),
            "{address:#x}"
        );
    }
    // The last page of user space is still a user address: in no
    // reservation, so 487.
    assert_eq!(s.virtual_protect(user_end - PG, PG, P::READONLY), Err(IA));
    assert_eq!(peek(base, 1), [5]);
    assert_kernel(base, GR, "rw-");
}

/// spec §5: data survives a protection round trip.
#[test]
fn data_survives_protection_changes() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    poke(base, 0x99);
    protect(&mut s, base, PG, NA, RW);
    assert_kernel(base, PG, "---");
    protect(&mut s, base, PG, P::READONLY, NA);
    assert_eq!(peek(base, 1), [0x99]);
    protect(&mut s, base, PG, RW, P::READONLY);
    poke(base, 0x98);
}

/// spec §5: a range running past the reservation's end into free space → 487.
#[test]
fn range_past_reservation_end() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, 0x3000, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_protect(w, 0x4000, P::READONLY)
    });
}

/// spec §5: a range spanning two committed adjacent reservations → 487.
#[test]
fn range_across_two_reservations() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    s.virtual_alloc(w + GR, GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_protect(w + GR - PG, 2 * PG, P::READONLY)
    });
}

/// spec §5: free memory → 487.
#[test]
fn free_memory() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IA, |s| s.virtual_protect(w, PG, RW));
}

/// spec §5: a released region → 487.
#[test]
fn released_region() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    release(&mut s, w);
    fails(&mut s, (w, GR), IA, |s| s.virtual_protect(w, PG, RW));
}

/// spec §5: decommitted pages → 487.
#[test]
fn decommitted_pages() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    decommit(&mut s, base, 0);
    fails(&mut s, (base, GR), IA, |s| s.virtual_protect(base, PG, RW));
}

/// spec §5: an address below 64 KiB is in no reservation → 487.
#[test]
fn low_address() {
    let mut s = space();
    assert_eq!(s.virtual_protect(0x1000, PG, RW), Err(IA));
}

/// API.md: foreign memory is never changed → 487, kernel permissions and
/// contents unchanged.
#[test]
fn foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, 2 * PG, 0x3c);
    fails(&mut s, (w, 2 * PG), IA, |s| s.virtual_protect(w, PG, NA));
    f.assert_intact("rw-", 0x3c);
}

/// API.md: the thread's stack (Windows would allow it) → 487.
#[test]
fn thread_stack() {
    let mut s = space();
    let page = stack_page();
    let before = kview(page, PG);
    assert_eq!(s.virtual_protect(page, PG, P::READONLY), Err(IA));
    assert_eq!(kview(page, PG), before);
}

/// DESIGN: another AddressSpace's pages are foreign.
#[test]
fn other_address_space() {
    let mut a = space();
    let mut b = space();
    let base = alloc(&mut a, GR, RW);
    fails(&mut b, (base, GR), IA, |b| b.virtual_protect(base, PG, NA));
    expect_q(&a, base, committed(base, base, RW, GR, RW));
}

/// spec §5: a protection check failure on a valid range changes nothing
/// even for a multi-page split layout.
#[test]
fn invalid_protection_on_split_layout() {
    let mut s = space();
    let base = alloc(&mut s, 4 * PG, RW);
    protect(&mut s, base + PG, PG, P::READONLY, RW);
    fails(&mut s, (base, 4 * PG), IP, |s| {
        s.virtual_protect(base, 4 * PG, P::WRITECOPY)
    });
}

/// spec §5: a range whose end wraps around must fail and change nothing
/// (no source settles the code: 87 or 487).
#[test]
fn wrapping_size() {
    let mut s = space();
    let base = alloc(&mut s, GR, RW);
    fails_any(&mut s, (base, GR), &[IP, IA], |s| {
        s.virtual_protect(base + PG, usize::MAX, NA)
    });
}

/// spec §5 with W-k32 test_VirtualProtect (restore pass): protecting with the
/// current protection is a successful no-op.
#[test]
fn same_protection_is_noop() {
    let mut s = space();
    let base = alloc(&mut s, 2 * PG, P::READONLY);
    protect(&mut s, base, 2 * PG, P::READONLY, P::READONLY);
    expect_q(
        &s,
        base,
        committed(base, base, P::READONLY, 2 * PG, P::READONLY),
    );
}

// ------------------------------------------------------------ modifiers

/// W-k32 test_VirtualAlloc (current Windows): on a NOCACHE allocation,
/// VirtualProtect(READWRITE) of page 0 returns READWRITE|NOCACHE and the
/// page keeps NOCACHE, so the region does not split.
#[test]
fn nocache_allocation_keeps_modifier_on_protect() {
    let mut s = space();
    let nc = RW | P::NOCACHE;
    let base = s.virtual_alloc(0, 2 * PG, A::COMMIT, nc).unwrap();
    protect(&mut s, base, PG, RW, nc);
    expect_q(&s, base, committed(base, base, nc, 2 * PG, nc));
}

/// W-k32 test_VirtualAlloc: then READONLY → old READWRITE|NOCACHE, Protect
/// READONLY|NOCACHE, RegionSize one page.
#[test]
fn nocache_allocation_readonly() {
    let mut s = space();
    let nc = RW | P::NOCACHE;
    let base = s.virtual_alloc(0, 2 * PG, A::COMMIT, nc).unwrap();
    protect(&mut s, base, PG, P::READONLY, nc);
    expect_q(
        &s,
        base,
        committed(base, base, nc, PG, P::READONLY | P::NOCACHE),
    );
    expect_q(&s, base + PG, committed(base + PG, base, nc, PG, nc));
    assert_kernel(base, PG, "r--");
}

/// W-k32 test_VirtualAlloc (current Windows): READONLY|NOCACHE on memory
/// allocated without NOCACHE succeeds, old READWRITE, and the page shows
/// plain READONLY.
#[test]
fn nocache_on_plain_allocation_is_dropped() {
    let mut s = space();
    let base = s.virtual_alloc(0, 2 * PG, A::COMMIT, RW).unwrap();
    protect(&mut s, base, PG, P::READONLY | P::NOCACHE, RW);
    expect_q(&s, base, committed(base, base, RW, PG, P::READONLY));
    expect_q(&s, base + PG, committed(base + PG, base, RW, PG, RW));
}

/// spec §6 (modifiers belong to the whole allocation), same rule as the
/// NOCACHE case above.
#[test]
fn writecombine_on_plain_allocation_is_dropped() {
    let mut s = space();
    let base = s.virtual_alloc(0, PG, A::COMMIT, RW).unwrap();
    protect(&mut s, base, PG, P::READONLY | P::WRITECOMBINE, RW);
    expect_q(&s, base, committed(base, base, RW, PG, P::READONLY));
}

/// spec §6: a WRITECOMBINE allocation keeps the modifier through protect.
#[test]
fn writecombine_allocation_keeps_modifier() {
    let mut s = space();
    let wc = RW | P::WRITECOMBINE;
    let base = s.virtual_alloc(0, PG, A::COMMIT, wc).unwrap();
    protect(&mut s, base, PG, P::EXECUTE_READ, wc);
    expect_q(
        &s,
        base,
        committed(base, base, wc, PG, P::EXECUTE_READ | P::WRITECOMBINE),
    );
}

/// W-k32 test_VirtualProtect commit loop: WRITECOPY protections are refused
/// on committed private memory, whatever the current protection.
#[test]
fn writecopy_refused_on_readwrite_memory() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_protect(base, PG, P::WRITECOPY)
    });
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_protect(base, PG, P::EXECUTE_WRITECOPY)
    });
    expect_q(&s, base, committed(base, base, RW, PG, RW));
}

/// spec §5: protection applied to a whole multi-page region reports one run.
#[test]
fn whole_region_execute_readwrite() {
    let mut s = space();
    let base = alloc(&mut s, 5 * PG, RW);
    protect(&mut s, base, 5 * PG, P::EXECUTE_READWRITE, RW);
    expect_q(
        &s,
        base,
        committed(base, base, RW, 5 * PG, P::EXECUTE_READWRITE),
    );
    assert_kernel(base, 5 * PG, "rwx");
}

/// spec §5: the first page reserved, the rest committed → 487, nothing changes.
#[test]
fn first_page_reserved() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + PG, 3 * PG, RW, base + PG);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_protect(base, 4 * PG, P::READONLY)
    });
}
