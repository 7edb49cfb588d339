//! Queries and refusals racing with changes: every answer a reader gets
//! while another thread reserves, commits, protects, decommits and
//! releases one reservation must be exactly one of the states that
//! reservation passes through — never a mix of two (a torn read), never
//! an error. A refusal of an unowned address, looked up before the
//! exclusive lock is taken, must be the answer of one of those states.
//! The reservation's pages are alike when reserved, and partly committed
//! otherwise: the reader's answers come from the index read without the
//! lock in the first case and under the shared lock in the second.

use hostmem::host::{HostConfig, HostError, HostMemoryManager, MemoryCriticalLevel};
use hostmem::win32::{
    AllocationType, FreeType, MemoryBasicInformation, MemoryState, MemoryType, Protection,
    Win32Error,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
const SIZE: usize = 0x2_0000;
const COMMITTED: usize = 0x1_0000;
const ROUNDS: usize = 300;

/// What `VirtualQuery(base)` may answer while the reservation at `base`
/// lives, in each of its states.
fn legal_answers(base: usize) -> Vec<MemoryBasicInformation> {
    let mbi = |region_size, state, protect| MemoryBasicInformation {
        base_address: base,
        allocation_base: base,
        allocation_protect: Protection::READWRITE,
        partition_id: 0,
        region_size,
        state,
        protect,
        type_: MemoryType::PRIVATE,
    };
    vec![
        // Reserved (and again once decommitted).
        mbi(SIZE, MemoryState::RESERVE, Protection::empty()),
        // The first 64 KiB committed read-write.
        mbi(COMMITTED, MemoryState::COMMIT, Protection::READWRITE),
        // Its first page made read-only.
        mbi(0x1000, MemoryState::COMMIT, Protection::READONLY),
    ]
}

#[test]
fn queries_and_refusals_racing_with_changes_see_only_whole_states() {
    let m = HostMemoryManager::new(HostConfig::default()).unwrap();
    // A place for the reservation that the kernel leaves free.
    let base = m
        .virtual_alloc(
            0,
            SIZE,
            AllocationType::RESERVE,
            Protection::READWRITE,
            LEVEL,
        )
        .unwrap();
    m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    let legal = legal_answers(base);
    let foreign = Box::new([0u8; 64]);
    let foreign = foreign.as_ptr() as usize;
    let done = AtomicBool::new(false);
    // The reader's answers so far: the writer starts once the reader is
    // running and stops only after it answered during the writer's rounds,
    // however late a loaded machine schedules the reader's thread.
    let reads = AtomicUsize::new(0);
    // (A reader that panicked never gets there: the wait gives up after
    // a while, so the panic is reported rather than the test hanging.)
    let wait_for_reads = |n: usize| {
        let start = std::time::Instant::now();
        while reads.load(Ordering::Acquire) < n && start.elapsed().as_secs() < 20 {
            std::thread::yield_now();
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            wait_for_reads(1);
            let first = reads.load(Ordering::Acquire);
            for _ in 0..ROUNDS {
                let at = m
                    .virtual_alloc(
                        base,
                        SIZE,
                        AllocationType::RESERVE,
                        Protection::READWRITE,
                        LEVEL,
                    )
                    .unwrap();
                assert_eq!(at, base);
                m.virtual_alloc(
                    base,
                    COMMITTED,
                    AllocationType::COMMIT,
                    Protection::READWRITE,
                    LEVEL,
                )
                .unwrap();
                m.virtual_protect(base, 0x1000, Protection::READONLY)
                    .unwrap();
                m.virtual_free(base, COMMITTED, FreeType::DECOMMIT).unwrap();
                m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
            }
            wait_for_reads(first + ROUNDS);
            done.store(true, Ordering::Release);
        });
        let reader = || {
            let mut seen = [0usize; 4];
            while !done.load(Ordering::Acquire) {
                let mbi = m
                    .virtual_query(base)
                    .expect("VirtualQuery never fails here");
                if mbi.allocation_base != base {
                    // Released: the kernel's view, free address space.
                    assert_eq!(mbi.state, MemoryState::FREE, "{mbi:?}");
                    seen[3] += 1;
                } else {
                    let i = legal
                        .iter()
                        .position(|l| *l == mbi)
                        .unwrap_or_else(|| panic!("a torn or unknown answer: {mbi:?}"));
                    seen[i] += 1;
                }
                reads.fetch_add(1, Ordering::Release);
            }
            seen
        };
        let refuser = || {
            while !done.load(Ordering::Acquire) {
                // Never the host's: refused every time.
                assert_eq!(
                    m.virtual_free(foreign, 0, FreeType::RELEASE),
                    Err(HostError::NotHostMemory)
                );
                assert_eq!(
                    m.virtual_alloc(
                        foreign,
                        0x1000,
                        AllocationType::COMMIT,
                        Protection::READWRITE,
                        LEVEL
                    ),
                    Err(HostError::NotHostMemory)
                );
                // Reserved but never committed, or not there at all.
                let r = m.virtual_protect(base + COMMITTED, 0x1000, Protection::READONLY);
                assert!(
                    r == Err(HostError::NotHostMemory)
                        || r == Err(HostError::Win32(Win32Error::INVALID_ADDRESS)),
                    "{r:?}"
                );
            }
        };
        let r = s.spawn(reader);
        s.spawn(refuser);
        let seen = r.join().unwrap();
        assert!(
            seen.iter().sum::<usize>() > 0,
            "the reader ran while the writer did"
        );
    });
}
