//! MEM_RESET and MEM_RESET_UNDO.

use crate::*;

const RW: P = P::READWRITE;
const NA: P = P::NOACCESS;

/// W-k32 test_VirtualAlloc: reset of a committed READWRITE page returns the
/// address; State, Protect, RegionSize unchanged; content old or zero.
#[test]
fn reset_committed_page() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, NA, base);
    protect(&mut s, base, PG, RW, NA);
    for i in 0..20 {
        poke(base + i, 0x55);
    }
    assert_eq!(s.virtual_alloc(base, PG, A::RESET, NA), Ok(base));
    let b = peek(base, 4);
    assert!(b == [0x55; 4] || b == [0; 4], "content after reset: {b:?}");
    expect_q(&s, base, committed(base, base, NA, PG, RW));
    assert_kernel(base, PG, "rw-");
}

/// W-k32 test_VirtualAlloc: reset of a reserved page succeeds and the page
/// stays reserved with Protect 0 (RegionSize 0xF000 to the end).
#[test]
fn reset_reserved_page() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, RW, base);
    assert_eq!(s.virtual_alloc(base + PG, PG, A::RESET, NA), Ok(base + PG));
    expect_q(&s, base + PG, reserved(base + PG, base, NA, 0xF000));
    assert_kernel(base + PG, PG, "---");
}

/// W-k32 test_VirtualAlloc: a reset running past the reservation's end → 487.
#[test]
fn reset_past_reservation_end() {
    let mut s = space();
    let base = s.virtual_alloc(0, 0xFFFC, A::RESERVE, NA).unwrap();
    commit(&mut s, base, PG, RW, base);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_alloc(base + 0xF000, 0x2000, A::RESET, NA)
    });
}

/// spec §2: a reset covering committed and reserved pages of one
/// reservation succeeds and changes no state.
#[test]
fn reset_mixed_range() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base + 0x2000, 0x2000, P::READONLY, base + 0x2000);
    assert_eq!(s.virtual_alloc(base, GR, A::RESET, NA), Ok(base));
    expect_q(&s, base, reserved(base, base, NA, 0x2000));
    expect_q(
        &s,
        base + 0x2000,
        committed(base + 0x2000, base, NA, 0x2000, P::READONLY),
    );
    expect_q(
        &s,
        base + 0x4000,
        reserved(base + 0x4000, base, NA, GR - 0x4000),
    );
}

/// spec §2 / KB162104: the protection argument is ignored (but must be
/// valid): a reset with EXECUTE_READWRITE does not change READONLY pages.
#[test]
fn reset_ignores_protection() {
    let mut s = space();
    let base = alloc(&mut s, 2 * PG, P::READONLY);
    assert_eq!(
        s.virtual_alloc(base, 2 * PG, A::RESET, P::EXECUTE_READWRITE),
        Ok(base)
    );
    expect_q(
        &s,
        base,
        committed(base, base, P::READONLY, 2 * PG, P::READONLY),
    );
    assert_kernel(base, 2 * PG, "r--");
}

/// spec §2: `protect` must be valid even for a reset → 87.
#[test]
fn reset_with_invalid_protection() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_alloc(base, PG, A::RESET, P::empty())
    });
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_alloc(base, PG, A::RESET, P::READONLY | P::EXECUTE)
    });
}

/// spec §2 (size 0 → 87 for every VirtualAlloc).
#[test]
fn reset_size_zero() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_alloc(base, 0, A::RESET, NA)
    });
}

/// spec §2: reset in free space → 487.
#[test]
fn reset_free_memory() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, PG, A::RESET, NA)
    });
}

/// spec §2: reset across two adjacent reservations → 487.
#[test]
fn reset_across_two_reservations() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, GR, A::RESERVE | A::COMMIT, RW).unwrap();
    s.virtual_alloc(w + GR, GR, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    poke(w + GR - 1, 0x12);
    fails(&mut s, (w, 2 * GR), IA, |s| {
        s.virtual_alloc(w + GR - PG, 2 * PG, A::RESET, NA)
    });
    assert_eq!(peek(w + GR - 1, 1), [0x12]);
}

/// API.md: reset on foreign memory → 487, contents untouched.
#[test]
fn reset_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, 2 * PG, 0x4d);
    fails(&mut s, (w, 2 * PG), IA, |s| {
        s.virtual_alloc(w, 2 * PG, A::RESET, NA)
    });
    f.assert_intact("rw-", 0x4d);
}

/// API.md: reset on the thread's stack → 487 (a reset would lose it).
#[test]
fn reset_thread_stack() {
    let mut s = space();
    let page = stack_page();
    assert_eq!(s.virtual_alloc(page, PG, A::RESET, NA), Err(IA));
}

/// W-impl / ROS-k32: a non-NULL address below 64 KiB → 87.
#[test]
fn reset_low_address() {
    let mut s = space();
    assert_eq!(s.virtual_alloc(0x3000, PG, A::RESET, NA), Err(IP));
}

/// spec §2: after a reset the page is still committed and writable.
#[test]
fn reset_then_write() {
    let mut s = space();
    let base = alloc(&mut s, 2 * PG, RW);
    assert_eq!(s.virtual_alloc(base, 2 * PG, A::RESET, NA), Ok(base));
    poke(base + PG, 0x31);
    assert_eq!(peek(base + PG, 1), [0x31]);
}

/// spec §2: a reset page that is decommitted and recommitted reads zero.
#[test]
fn reset_decommit_recommit_zero() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    poke(base, 0xab);
    assert_eq!(s.virtual_alloc(base, PG, A::RESET, NA), Ok(base));
    decommit(&mut s, base, PG);
    commit(&mut s, base, PG, RW, base);
    assert_zero(base, PG);
}

// ------------------------------------------------------------ MEM_RESET_UNDO

/// spec §2 (hostmem rule): undo on a committed range never reset succeeds
/// and returns the address; contents kept.
#[test]
fn undo_never_reset_range() {
    let mut s = space();
    let base = alloc(&mut s, 3 * PG, RW);
    poke(base, 0x61);
    assert_eq!(s.virtual_alloc(base, 3 * PG, A::RESET_UNDO, RW), Ok(base));
    assert_eq!(peek(base, 1), [0x61]);
    expect_q(&s, base, committed(base, base, RW, 3 * PG, RW));
}

/// spec §2 (hostmem rule, API.md): undo after a reset → NULL with 487; the
/// pages stay committed.
#[test]
fn undo_after_reset_fails() {
    let mut s = space();
    let base = alloc(&mut s, 2 * PG, RW);
    assert_eq!(s.virtual_alloc(base, 2 * PG, A::RESET, NA), Ok(base));
    assert_eq!(s.virtual_alloc(base, 2 * PG, A::RESET_UNDO, RW), Err(IA));
    expect_q(&s, base, committed(base, base, RW, 2 * PG, RW));
    assert_kernel(base, 2 * PG, "rw-");
}

/// spec §2: only the reset page matters: undo of an untouched neighbour
/// succeeds, undo of a range including the reset page fails.
#[test]
fn undo_is_per_page() {
    let mut s = space();
    let base = alloc(&mut s, 3 * PG, RW);
    assert_eq!(s.virtual_alloc(base + PG, PG, A::RESET, NA), Ok(base + PG));
    assert_eq!(
        s.virtual_alloc(base + 2 * PG, PG, A::RESET_UNDO, RW),
        Ok(base + 2 * PG)
    );
    assert_eq!(s.virtual_alloc(base, PG, A::RESET_UNDO, RW), Ok(base));
    assert_eq!(s.virtual_alloc(base, 3 * PG, A::RESET_UNDO, RW), Err(IA));
}

/// spec §2: "no page reset since it was last committed": decommit and
/// recommit after a reset makes undo succeed again.
#[test]
fn undo_after_recommit_succeeds() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    assert_eq!(s.virtual_alloc(base, PG, A::RESET, NA), Ok(base));
    decommit(&mut s, base, PG);
    commit(&mut s, base, PG, RW, base);
    assert_eq!(s.virtual_alloc(base, PG, A::RESET_UNDO, RW), Ok(base));
}

/// spec §2: undo needs committed pages: reserved → 487.
#[test]
fn undo_on_reserved_range() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_alloc(base, PG, A::RESET_UNDO, NA)
    });
}

/// spec §2: a range only partly committed → 487.
#[test]
fn undo_on_partly_committed_range() {
    let mut s = space();
    let base = reserve(&mut s, GR, NA);
    commit(&mut s, base, PG, RW, base);
    fails(&mut s, (base, GR), IA, |s| {
        s.virtual_alloc(base, 2 * PG, A::RESET_UNDO, RW)
    });
}

/// spec §2: undo in free space → 487.
#[test]
fn undo_on_free_memory() {
    let mut s = space();
    let w = window();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w, PG, A::RESET_UNDO, RW)
    });
}

/// API.md: undo on foreign memory → 487.
#[test]
fn undo_on_foreign_mapping() {
    let mut s = space();
    let w = window();
    let f = Foreign::rw(w, PG, 0x17);
    fails(&mut s, (w, PG), IA, |s| {
        s.virtual_alloc(w, PG, A::RESET_UNDO, RW)
    });
    f.assert_intact("rw-", 0x17);
}

/// spec §2 (size 0 → 87).
#[test]
fn undo_size_zero() {
    let mut s = space();
    let base = alloc(&mut s, PG, RW);
    fails(&mut s, (base, PG), IP, |s| {
        s.virtual_alloc(base, 0, A::RESET_UNDO, RW)
    });
}

/// spec §2: undo across the reservation's end → 487.
#[test]
fn undo_past_reservation_end() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, 2 * PG, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w + PG, 2 * PG, A::RESET_UNDO, RW)
    });
}

/// W-k32 test_VirtualAlloc (past the end → 487) with a partial granule: a
/// reset running into the reservation's unusable tail.
#[test]
fn reset_into_granule_tail() {
    let mut s = space();
    let w = window();
    s.virtual_alloc(w, 0x3000, A::RESERVE | A::COMMIT, RW)
        .unwrap();
    fails(&mut s, (w, GR), IA, |s| {
        s.virtual_alloc(w + 0x2000, 0x2000, A::RESET, NA)
    });
}

/// spec §2: a reset of committed NOACCESS pages succeeds and keeps them
/// NOACCESS.
#[test]
fn reset_noaccess_pages() {
    let mut s = space();
    let base = alloc(&mut s, 2 * PG, NA);
    assert_eq!(
        s.virtual_alloc(base, 2 * PG, A::RESET, P::READONLY),
        Ok(base)
    );
    expect_q(&s, base, committed(base, base, NA, 2 * PG, NA));
    assert_kernel(base, 2 * PG, "---");
}
