//! Engine tests that need its insides: syscall counts and rollback under
//! injected OS failures. The Win32 conformance suite is in `tests/`.

use super::*;
use crate::os::{FaultInjectingBackend, FaultPlan, OsOperation};
use crate::win32::{MemoryState, Protection as P};

const RC: AllocationType = AllocationType::RESERVE.union(AllocationType::COMMIT);

fn faulty() -> AddressSpace<FaultInjectingBackend> {
    AddressSpace::with_backend(FaultInjectingBackend::new())
}

/// The kernel mapping that holds `addr`, if any.
fn kernel_mapping(addr: usize) -> Option<crate::os::KernelMapping> {
    let maps = crate::os::UnixBackend.mappings().unwrap();
    maps.into_iter().find(|m| m.start <= addr && addr < m.end)
}

fn kernel_access(space: &AddressSpace<FaultInjectingBackend>, addr: usize) -> Option<Access> {
    let _ = space;
    kernel_mapping(addr).map(|m| m.access)
}

#[test]
fn reserve_commit_is_a_single_mmap_at_a_honoured_hint() {
    let mut space = faulty();
    // The first reservation teaches the placement where to go.
    let first = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    let before = space.backend().total_calls();
    let mut extra = 0;
    for _ in 0..20 {
        let before_one = space.backend().total_calls();
        let base = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
        assert_eq!(base % ALLOCATION_GRANULARITY, 0);
        extra += space.backend().total_calls() - before_one - 1;
    }
    assert!(
        extra <= 4,
        "at most a few placements may need trimming, got {extra} extra calls"
    );
    assert!(space.backend().total_calls() - before >= 20);
    space.virtual_free(first, 0, FreeType::RELEASE).unwrap();
    let calls = space.backend().calls(OsOperation::Unmap);
    assert!(calls >= 1);
}

#[test]
fn commit_and_decommit_issue_only_the_raw_syscalls() {
    let mut space = faulty();
    let base = space
        .virtual_alloc(0, 0x100000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let os = space.backend();
    let (protects, discards) = (
        os.calls(OsOperation::Protect),
        os.calls(OsOperation::Discard),
    );
    space
        .virtual_alloc(base, 0x10000, AllocationType::COMMIT, P::READWRITE)
        .unwrap();
    assert_eq!(space.backend().calls(OsOperation::Protect), protects + 1);
    // Committing committed pages with the same protection costs nothing.
    space
        .virtual_alloc(base, 0x10000, AllocationType::COMMIT, P::READWRITE)
        .unwrap();
    assert_eq!(space.backend().calls(OsOperation::Protect), protects + 1);
    space
        .virtual_free(base, 0x10000, FreeType::DECOMMIT)
        .unwrap();
    assert_eq!(space.backend().calls(OsOperation::Protect), protects + 2);
    assert_eq!(space.backend().calls(OsOperation::Discard), discards + 1);
    // Decommitting reserved pages costs nothing.
    space.virtual_free(base, 0, FreeType::DECOMMIT).unwrap();
    assert_eq!(space.backend().calls(OsOperation::Protect), protects + 2);
}

#[test]
fn failed_commit_rolls_back_and_changes_nothing() {
    let mut space = faulty();
    let base = space
        .virtual_alloc(0, 0x40000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    space
        .virtual_alloc(base + 0x1000, 0x2000, AllocationType::COMMIT, P::READONLY)
        .unwrap();
    let before: Vec<_> = (0..0x40)
        .map(|i| space.virtual_query(base + i * 0x1000).unwrap())
        .collect();
    space.backend().inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::ENOMEM,
    });
    let got = space.virtual_alloc(base, 0x8000, AllocationType::COMMIT, P::READWRITE);
    assert_eq!(got, Err(Win32Error::NOT_ENOUGH_MEMORY));
    let after: Vec<_> = (0..0x40)
        .map(|i| space.virtual_query(base + i * 0x1000).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(space.totals().committed_bytes, 0x2000);
    assert_eq!(kernel_access(&space, base + 0x1000), Some(Access::READ));
    assert_eq!(kernel_access(&space, base + 0x4000), Some(Access::empty()));
}

#[test]
fn failed_discard_restores_access_and_data() {
    let mut space = faulty();
    let base = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    space.backend().inject(FaultPlan {
        operation: OsOperation::Discard,
        nth: 0,
        error: OsError::EAGAIN,
    });
    assert_eq!(
        space.virtual_free(base, 0x2000, FreeType::DECOMMIT),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    let mbi = space.virtual_query(base).unwrap();
    assert_eq!(
        (mbi.state, mbi.protect, mbi.region_size),
        (MemoryState::COMMIT, P::READWRITE, 0x10000)
    );
    assert_eq!(
        kernel_access(&space, base),
        Some(Access::READ | Access::WRITE)
    );
}

/// A decommit of whole kernel mappings drops the contents before revoking
/// access (as the raw sequence does); one that splits a mapping revokes
/// first, so that a failed split changes nothing. Told apart by the calls
/// made before an injected failure of the discard.
#[test]
#[cfg(feature = "cli")] // it writes a page through `bench::ops::touch`
fn decommit_discards_first_only_where_no_mapping_splits() {
    let mut space = faulty();
    let base = space
        .virtual_alloc(0, 0x100000, AllocationType::RESERVE, P::READWRITE)
        .unwrap();
    let run = base + 0x10000;
    space
        .virtual_alloc(run, 0x10000, AllocationType::COMMIT, P::READWRITE)
        .unwrap();
    let fail_discard = FaultPlan {
        operation: OsOperation::Discard,
        nth: 0,
        error: OsError::ENOMEM,
    };
    // The whole committed run: a mapping of its own.
    let protects = space.backend().calls(OsOperation::Protect);
    space.backend().inject(fail_discard);
    assert_eq!(
        space.virtual_free(run, 0x10000, FreeType::DECOMMIT),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    assert_eq!(
        space.backend().calls(OsOperation::Protect),
        protects,
        "the discard came first and changed nothing"
    );
    // Half of it: the mapping splits, so access is revoked first and
    // given back after the failed discard.
    space.backend().inject(fail_discard);
    assert_eq!(
        space.virtual_free(run, 0x8000, FreeType::DECOMMIT),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    assert_eq!(space.backend().calls(OsOperation::Protect), protects + 2);
    for addr in [run, run + 0x8000] {
        let mbi = space.virtual_query(addr).unwrap();
        assert_eq!(
            (mbi.state, mbi.protect),
            (MemoryState::COMMIT, P::READWRITE)
        );
        assert_eq!(
            kernel_access(&space, addr),
            Some(Access::READ | Access::WRITE)
        );
    }
    // A failed revoke after the discard: the pages stay committed and
    // accessible, their access given back; the contents are gone.
    #[allow(unsafe_code)]
    // SAFETY: `run` is a committed read-write page of this test's own
    // space, which nothing else references.
    unsafe {
        (run as *mut u8).write_volatile(1)
    };
    space.backend().inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::ENOMEM,
    });
    assert_eq!(
        space.virtual_free(run, 0x10000, FreeType::DECOMMIT),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    let mbi = space.virtual_query(run).unwrap();
    assert_eq!(
        (mbi.state, mbi.protect, mbi.region_size),
        (MemoryState::COMMIT, P::READWRITE, 0x10000)
    );
    assert_eq!(
        kernel_access(&space, run),
        Some(Access::READ | Access::WRITE)
    );
    assert_eq!(space.totals().committed_bytes, 0x10000);
    // And with no fault, the decommit goes through.
    space
        .virtual_free(run, 0x10000, FreeType::DECOMMIT)
        .unwrap();
    assert_eq!(kernel_access(&space, run), Some(Access::empty()));
    assert_eq!(space.totals().committed_bytes, 0);
}

#[test]
fn failed_rollback_is_an_internal_error() {
    let mut space = faulty();
    let base = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    space.backend().inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::ENOMEM,
    });
    space.backend().inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::EINVAL,
    });
    let got = space.virtual_alloc(base, 0x1000, AllocationType::COMMIT, P::READWRITE);
    assert_eq!(got, Err(Win32Error::INTERNAL_ERROR));
}

#[test]
fn failed_mapping_is_out_of_memory_and_leaves_no_reservation() {
    let mut space = faulty();
    space.backend().inject(FaultPlan {
        operation: OsOperation::MapAnywhere,
        nth: 0,
        error: OsError::ENOMEM,
    });
    assert_eq!(
        space.virtual_alloc(0, 0x1000, RC, P::READWRITE),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    assert_eq!(space.totals(), SpaceTotals::default());
}

#[test]
fn totals_follow_commits() {
    let mut space = AddressSpace::new();
    let base = space
        .virtual_alloc(0, 0x20000, AllocationType::RESERVE, P::READWRITE)
        .unwrap();
    space
        .virtual_alloc(base + 0x3000, 0x2000, AllocationType::COMMIT, P::READWRITE)
        .unwrap();
    space
        .virtual_alloc(base + 0x4000, 0x2000, AllocationType::COMMIT, P::READONLY)
        .unwrap();
    assert_eq!(
        space.totals(),
        SpaceTotals {
            reservations: 1,
            reserved_bytes: 0x20000,
            committed_bytes: 0x3000
        }
    );
    space
        .virtual_free(base + 0x3000, 0x1000, FreeType::DECOMMIT)
        .unwrap();
    assert_eq!(space.totals().committed_bytes, 0x2000);
    space.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(space.totals(), SpaceTotals::default());
}

#[test]
fn top_down_reservations_land_above_ordinary_ones() {
    let mut space = AddressSpace::new();
    let low = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let high = space
        .virtual_alloc(
            0,
            0x10000,
            AllocationType::RESERVE | AllocationType::TOP_DOWN,
            P::NOACCESS,
        )
        .unwrap();
    assert!(high > low, "{high:#x} > {low:#x}");
    assert_eq!(high % ALLOCATION_GRANULARITY, 0);
}

#[test]
fn protect_with_size_zero_changes_nothing_but_needs_a_committed_page() {
    let mut space = AddressSpace::new();
    let base = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    space
        .virtual_alloc(base, 0x1000, AllocationType::COMMIT, P::READWRITE)
        .unwrap();
    assert_eq!(
        space.virtual_protect(base, 0, P::READONLY),
        Ok(P::READWRITE)
    );
    assert_eq!(
        space.virtual_query(base).unwrap().protect,
        P::READWRITE,
        "unchanged"
    );
    assert_eq!(
        space.virtual_protect(base + 0x1000, 0, P::READONLY),
        Err(Win32Error::INVALID_ADDRESS)
    );
    // An unaligned address with size 0 touches its page.
    assert_eq!(
        space.virtual_protect(base + 0x10, 0, P::READONLY),
        Ok(P::READWRITE)
    );
    assert_eq!(space.virtual_query(base).unwrap().protect, P::READONLY);
}

#[test]
fn the_placement_anchor_is_foreign_memory_and_goes_with_the_space() {
    let mut space = AddressSpace::new();
    let first = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let Some(Some(anchor)) = space.anchor else {
        panic!("the anchor is mapped at the window start");
    };
    assert_eq!(anchor % (2 << 20), 0);
    assert_eq!(first, anchor + ALLOCATION_GRANULARITY);
    assert!(!space.owns(anchor));
    assert_eq!(space.totals().reservations, 1);
    assert_eq!(space.totals().reserved_bytes, 0x10000);
    let mbi = space.virtual_query(anchor).unwrap();
    assert_ne!(mbi.allocation_base, first);
    assert_eq!(
        space.virtual_free(anchor, 0, FreeType::RELEASE),
        Err(Win32Error::INVALID_ADDRESS)
    );
    assert_eq!(
        space.virtual_alloc(anchor, 0x1000, AllocationType::COMMIT, P::READWRITE),
        Err(Win32Error::INVALID_ADDRESS)
    );
    let mapped = |addr: usize| kernel_mapping(addr).is_some();
    assert!(mapped(anchor));
    // The anchor is the whole first granule, inaccessible, and holds no
    // page: the one written to prime it was dropped at once.
    let kernel = kernel_mapping(anchor).expect("the anchor is mapped");
    assert_eq!(kernel.start, anchor);
    assert!(kernel.end >= anchor + ANCHOR_LEN);
    assert_eq!(kernel.access, Access::empty());
    assert_eq!(resident_kib(anchor), Some(0));
    drop(space);
    assert!(!mapped(anchor), "dropping the space unmaps the anchor");
    assert!(!mapped(anchor + ANCHOR_LEN - 1));
}

/// The resident kilobytes (`Rss` of `/proc/self/smaps`) of the kernel
/// mapping holding `addr`.
fn resident_kib(addr: usize) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    crate::os::smaps_kib(&smaps, "Rss", addr..addr + 1)
}

#[test]
fn an_anchor_that_cannot_be_primed_is_not_kept_and_placement_goes_on() {
    for operation in [
        OsOperation::KeepContents,
        OsOperation::Discard,
        OsOperation::Protect,
    ] {
        let mut space = faulty();
        space.backend().inject(FaultPlan {
            operation,
            nth: 0,
            error: OsError::ENOMEM,
        });
        let base = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
        assert_eq!(space.backend().injected(), 1, "{operation:?}");
        assert_eq!(space.anchor, Some(None), "{operation:?}");
        let anchor = space.placement.anchor();
        assert_eq!(
            kernel_access(&space, anchor),
            None,
            "{operation:?}: not left mapped (writable, or holding a page)"
        );
        assert_eq!(
            kernel_access(&space, base),
            Some(Access::READ | Access::WRITE)
        );
        space.virtual_free(base, 0, FreeType::RELEASE).unwrap();
        // Tried once only: later reservations do not map it again.
        let again = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
        assert_eq!(space.backend().calls(OsOperation::MapFixed), 1);
        assert_eq!(kernel_access(&space, anchor), None);
        space.virtual_free(again, 0, FreeType::RELEASE).unwrap();
    }
}

/// A reservation kept, and the address of one placed after it and
/// released at once: the last placed, where the next reservation goes.
fn keep_one_and_release_the_next(space: &mut AddressSpace) -> (usize, usize) {
    let keep = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let a = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    space.virtual_free(a, 0, FreeType::RELEASE).unwrap();
    (keep, a)
}

#[test]
fn releasing_the_last_reservation_reuses_its_address() {
    let mut space = AddressSpace::new();
    let (keep, a) = keep_one_and_release_the_next(&mut space);
    let b = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    assert_eq!(a, b);
    space.virtual_free(keep, 0, FreeType::RELEASE).unwrap();
    let c = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    assert_ne!(c, keep, "not the last placed: the cursor stays");
}

#[test]
#[allow(unsafe_code)]
fn a_placement_taken_by_someone_else_is_left_alone() {
    let mut space = AddressSpace::new();
    let (keep, a) = keep_one_and_release_the_next(&mut space);
    // The next reservation would go to `a` again (see above): someone
    // else maps a page there first.
    let os = crate::os::UnixBackend;
    os.map_fixed(a, PAGE_SIZE, Access::READ | Access::WRITE)
        .unwrap();
    // SAFETY: the page just mapped at `a`, the test's own, read-write.
    unsafe { (a as *mut u8).write(0x5a) };
    let b = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    assert_ne!(b, a);
    assert_eq!(b % ALLOCATION_GRANULARITY, 0);
    assert!(b + 0x10000 <= a || b >= a + PAGE_SIZE, "no overlap");
    // The other mapping is untouched: same extent, access and contents.
    let theirs = kernel_mapping(a).expect("still mapped");
    assert_eq!(
        (theirs.start, theirs.access),
        (a, Access::READ | Access::WRITE)
    );
    assert!(theirs.end >= a + PAGE_SIZE);
    // SAFETY: the test's page at `a`, still mapped (just checked).
    assert_eq!(unsafe { (a as *const u8).read() }, 0x5a);
    assert!(!space.owns(a));
    space.virtual_free(b, 0, FreeType::RELEASE).unwrap();
    space.virtual_free(keep, 0, FreeType::RELEASE).unwrap();
    // SAFETY: the test's own page, which nothing else uses.
    unsafe { os.unmap(a, PAGE_SIZE) }.unwrap();
}

#[test]
fn each_owner_changes_only_its_own_reservations() {
    let mut space = faulty();
    let host = space
        .virtual_alloc_as(
            Owner::Host,
            0,
            0x20000,
            AllocationType::RESERVE,
            P::READWRITE,
        )
        .unwrap();
    let runtime = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    assert_eq!(space.reservation_at(host).unwrap().owner(), Owner::Host);
    assert_eq!(
        space.reservation_at(runtime).unwrap().owner(),
        Owner::Runtime
    );
    space
        .virtual_alloc_as(
            Owner::Host,
            host,
            0x1000,
            AllocationType::COMMIT,
            P::READWRITE,
        )
        .unwrap();
    let query = space.virtual_query(host).unwrap();
    let totals = space.totals();
    let calls = space.backend().total_calls();
    let refused: Result<(), _> = Err(Win32Error::INVALID_ADDRESS);
    // The runtime's calls treat the host's reservation as not theirs...
    assert_eq!(space.virtual_free(host, 0, FreeType::RELEASE), refused);
    assert_eq!(
        space.virtual_free(host, 0x1000, FreeType::DECOMMIT),
        refused
    );
    assert_eq!(
        space.virtual_protect(host, 0x1000, P::READONLY),
        Err(Win32Error::INVALID_ADDRESS)
    );
    assert_eq!(
        space.virtual_protect(host, 0, P::READONLY),
        Err(Win32Error::INVALID_ADDRESS)
    );
    for kind in [
        AllocationType::COMMIT,
        AllocationType::RESET,
        AllocationType::RESET_UNDO,
    ] {
        assert_eq!(
            space.virtual_alloc(host, 0x1000, kind, P::READWRITE),
            Err(Win32Error::INVALID_ADDRESS)
        );
        assert_eq!(
            space.commit_cost(Owner::Runtime, host + 0x1000, 0x1000, kind),
            0
        );
    }
    // ...and the host's the runtime's.
    assert_eq!(
        space.virtual_free_as(Owner::Host, runtime, 0, FreeType::RELEASE),
        refused
    );
    assert_eq!(
        space.virtual_alloc_as(
            Owner::Host,
            runtime,
            0x1000,
            AllocationType::COMMIT,
            P::READWRITE
        ),
        Err(Win32Error::INVALID_ADDRESS)
    );
    // Nothing changed, not even in the kernel; queries still tell the truth.
    assert_eq!(space.backend().total_calls(), calls);
    assert_eq!(space.totals(), totals);
    assert_eq!(space.virtual_query(host).unwrap(), query);
    assert_eq!(query.state, MemoryState::COMMIT);
    assert!(space.owns(host) && !space.owned_by(Owner::Runtime, host));
    assert_eq!(
        space.commit_cost(Owner::Host, host + 0x1000, 0x1000, AllocationType::COMMIT),
        0x1000
    );
    space
        .virtual_free_as(Owner::Host, host, 0, FreeType::RELEASE)
        .unwrap();
    space.virtual_free(runtime, 0, FreeType::RELEASE).unwrap();
    assert_eq!(space.totals().reservations, 0);
}

#[test]
fn once_every_reservation_is_released_placement_starts_over_next_to_the_anchor() {
    let mut space = AddressSpace::new();
    let bases: Vec<usize> = (0..40)
        .map(|_| space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap())
        .collect();
    // Released out of order: the cursor stays past the last one.
    for &b in bases
        .iter()
        .step_by(2)
        .chain(bases.iter().skip(1).step_by(2))
    {
        space.virtual_free(b, 0, FreeType::RELEASE).unwrap();
    }
    let Some(Some(anchor)) = space.anchor else {
        panic!("the anchor is mapped");
    };
    let again = space.virtual_alloc(0, 0x10000, RC, P::READWRITE).unwrap();
    assert_eq!(again, anchor + ALLOCATION_GRANULARITY);
}

#[test]
fn no_kernel_mapping_of_small_reservations_covers_a_whole_2_mib_block() {
    const BLOCK: usize = 2 << 20;
    let mut space = AddressSpace::new();
    // Reserved, then committed: neighbours with the same access merge
    // into one kernel mapping (the first run with the anchor), and each
    // run of 50 granules is longer than a block.
    let bases: Vec<usize> = (0..100)
        .map(|i| {
            let kind = if i < 50 { AllocationType::RESERVE } else { RC };
            space.virtual_alloc(0, 0x10000, kind, P::READWRITE).unwrap()
        })
        .collect();
    let blocks: std::collections::BTreeSet<usize> = bases.iter().map(|b| b / BLOCK).collect();
    assert!(blocks.len() >= 3, "the reservations span several blocks");
    for &b in &bases {
        let m = kernel_mapping(b).expect("a reservation is mapped");
        let first_whole = m.start.next_multiple_of(BLOCK);
        assert!(
            first_whole + BLOCK > m.end,
            "{:#x}-{:#x} holds the reservation at {b:#x} and covers the block at {first_whole:#x}",
            m.start,
            m.end
        );
    }
    for b in bases {
        space.virtual_free(b, 0, FreeType::RELEASE).unwrap();
    }
}

#[test]
fn large_reservations_are_2_mib_aligned_away_from_small_ones() {
    let mut space = AddressSpace::new();
    let small = space
        .virtual_alloc(0, 0x10000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let large = space
        .virtual_alloc(0, 2 << 20, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    let larger = space
        .virtual_alloc(0, 0x30_0000, AllocationType::RESERVE, P::NOACCESS)
        .unwrap();
    assert_eq!(large % (2 << 20), 0);
    assert_eq!(larger % (2 << 20), 0);
    assert_ne!(small >> 30, large >> 30, "not in the same 1 GiB");
    assert!(
        larger >= large + (4 << 20),
        "a free 2 MiB between two large reservations"
    );
    for b in [small, large, larger] {
        space.virtual_free(b, 0, FreeType::RELEASE).unwrap();
    }
}

/// Racing charges against a budget that takes exactly `N` of them: exactly
/// `N` pass, and the count never passes the budget.
#[test]
fn charges_racing_for_a_budget_pass_exactly_as_many_as_fit() {
    const N: usize = 5;
    const THREADS: usize = 16;
    let space = AddressSpace::new();
    let limit = N * PAGE_SIZE;
    let passed = std::sync::atomic::AtomicUsize::new(0);
    let start = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                if let Some(after) = space.charge(PAGE_SIZE, |now| now + PAGE_SIZE <= limit) {
                    assert!(after <= limit);
                    passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(passed.into_inner(), N);
    assert_eq!(space.totals().committed_bytes, limit);
    // A charge that does not fit changes nothing.
    assert_eq!(
        space.charge(PAGE_SIZE, |now| now + PAGE_SIZE <= limit),
        None
    );
    assert_eq!(space.totals().committed_bytes, limit);
}
