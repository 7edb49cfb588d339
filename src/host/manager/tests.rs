//! Each HRESULT of the contract, reached by its real cause.

use super::*;
use crate::host::HResult;
use crate::os::{FaultInjectingBackend, FaultPlan, OsError, OsOperation};
use crate::win32::MemoryState;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const RESERVE: AllocationType = AllocationType::RESERVE;
const RC: AllocationType = AllocationType::RESERVE.union(AllocationType::COMMIT);
const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;

fn hr<T: std::fmt::Debug>(r: Result<T, HostError>) -> HResult {
    r.map_or_else(|e| e.hresult(), |_| HResult::S_OK)
}

#[test]
fn own_memory_round_trip_is_s_ok() {
    let m = HostMemoryManager::default();
    let base = m
        .virtual_alloc(0, 0x20000, RESERVE, Protection::NOACCESS, LEVEL)
        .unwrap();
    assert_eq!(
        hr(m.virtual_alloc(
            base,
            0x1000,
            AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL
        )),
        HResult::S_OK
    );
    assert_eq!(
        m.virtual_protect(base, 0x1000, Protection::READONLY),
        Ok(Protection::READWRITE)
    );
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::COMMIT);
    assert_eq!(
        hr(m.virtual_free(base, 0x1000, FreeType::DECOMMIT)),
        HResult::S_OK
    );
    assert_eq!(
        hr(m.virtual_free(base, 0, FreeType::RELEASE)),
        HResult::S_OK
    );
    let stats = m.statistics();
    assert_eq!(
        (
            stats.regions,
            stats.committed_bytes,
            stats.peak_committed_bytes
        ),
        (0, 0, 0x1000)
    );
    assert_eq!(stats.calls[&Method::VirtualAlloc], 2);
}

#[test]
fn memory_the_host_did_not_allocate_is_invalid_operation() {
    let m = HostMemoryManager::default();
    let other = HostMemoryManager::default();
    let theirs = other
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    let on_stack = 0u64;
    let on_heap = Box::new(0u64);
    let foreign = [
        &on_stack as *const u64 as usize,
        &*on_heap as *const u64 as usize,
        theirs,
        0,
        0x8000_0000_0000_0000,
        hr as fn(Result<(), HostError>) -> HResult as usize,
    ];
    for addr in foreign {
        let invalid = HResult::HOST_E_INVALIDOPERATION;
        assert_eq!(
            hr(m.virtual_free(addr, 0, FreeType::RELEASE)),
            invalid,
            "{addr:#x}"
        );
        assert_eq!(
            hr(m.virtual_free(addr, 0x1000, FreeType::DECOMMIT)),
            invalid,
            "{addr:#x}"
        );
        assert_eq!(
            hr(m.virtual_protect(addr, 8, Protection::READWRITE)),
            invalid,
            "{addr:#x}"
        );
        if (0x10000..crate::engine::USER_ADDRESS_END).contains(&addr) {
            let commit = m.virtual_alloc(
                addr,
                8,
                AllocationType::COMMIT,
                Protection::READWRITE,
                LEVEL,
            );
            assert_eq!(hr(commit), invalid, "{addr:#x}");
            let reset =
                m.virtual_alloc(addr, 8, AllocationType::RESET, Protection::NOACCESS, LEVEL);
            assert_eq!(hr(reset), invalid, "{addr:#x}");
        }
    }
    // Nothing was touched: the other manager's region is intact.
    assert_eq!(
        other.virtual_query(theirs).unwrap().protect,
        Protection::READWRITE
    );
    // A double free is HOST_E_INVALIDOPERATION; an interior pointer of the
    // host's own memory keeps its Win32 error.
    let base = m
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    assert_eq!(
        hr(m.virtual_free(base + 0x1001, 0, FreeType::RELEASE)),
        HResult(0x8007_01E7u32 as i32)
    );
    assert_eq!(
        hr(m.virtual_free(base, 0, FreeType::RELEASE)),
        HResult::S_OK
    );
    assert_eq!(
        hr(m.virtual_free(base, 0, FreeType::RELEASE)),
        HResult::HOST_E_INVALIDOPERATION
    );
    // Bad parameters stay parameter errors.
    assert_eq!(
        hr(m.virtual_free(theirs, 0, FreeType::from_bits_retain(0))),
        HResult::E_INVALIDARG
    );
}

/// Takes a snapshot of `m`'s address space on another thread and holds it
/// (the lock shared) for `hold`; returns once it is held. The thread
/// answers the number of reservations it saw.
fn hold_a_snapshot(
    m: &Arc<HostMemoryManager>,
    hold: Duration,
) -> std::thread::JoinHandle<Result<usize, HostError>> {
    let held = Arc::new(Barrier::new(2));
    let snapshot = {
        let (m, held) = (m.clone(), held.clone());
        std::thread::spawn(move || {
            m.with_address_space(|space| {
                held.wait();
                std::thread::sleep(hold);
                space.totals().reservations
            })
        })
    };
    held.wait();
    snapshot
}

#[test]
fn a_long_snapshot_makes_a_change_time_out() {
    let config = HostConfig {
        lock_timeout: Duration::from_millis(40),
        ..HostConfig::default()
    };
    let m = HostMemoryManager::new(config).unwrap();
    let snapshot = hold_a_snapshot(&m, Duration::from_millis(400));
    let got = m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL);
    assert_eq!(hr(got), HResult::HOST_E_TIMEOUT);
    assert_eq!(snapshot.join().unwrap(), Ok(0));
    assert_eq!(m.statistics().regions, 0, "the timed-out call did nothing");
    assert!(
        m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
            .is_ok(),
        "not latched"
    );
}

#[test]
fn a_reader_panicking_with_the_lock_abandons_nothing() {
    // A snapshot cannot change the state: its panic leaves the manager as
    // it was, and usable.
    let m = Arc::new(HostMemoryManager::default());
    let m2 = m.clone();
    let died =
        std::thread::spawn(move || m2.with_address_space(|_| panic!("the holder dies"))).join();
    assert!(died.is_err());
    assert_eq!(hr(m.virtual_query(0x10000)), HResult::S_OK);
    assert!(!m.has_failed());
}

#[test]
fn a_lock_timeout_of_duration_max_waits_for_the_holder() {
    let config = HostConfig {
        lock_timeout: Duration::MAX,
        ..HostConfig::default()
    };
    let m = HostMemoryManager::new(config).unwrap();
    let snapshot = hold_a_snapshot(&m, Duration::from_millis(50));
    // The change finds the snapshot's shard held and waits (no deadline).
    let got = m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL);
    assert_eq!(hr(got), HResult::S_OK);
    assert_eq!(snapshot.join().unwrap(), Ok(0));
    assert!(!m.has_failed());
    // Every shard was unlocked again: changes and queries still work.
    let base = got.unwrap();
    assert_eq!(m.virtual_free(base, 0, FreeType::RELEASE), Ok(()));
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::FREE);
}

#[test]
fn a_destructor_freeing_during_an_unrelated_panic_keeps_the_manager_usable() {
    /// A region released when the wrapper goes, as a RAII user writes it.
    struct Region<'a> {
        manager: &'a HostMemoryManager,
        base: usize,
        freed: &'a std::cell::Cell<Option<Result<(), HostError>>>,
    }
    impl Drop for Region<'_> {
        fn drop(&mut self) {
            let freed = self.manager.virtual_free(self.base, 0, FreeType::RELEASE);
            self.freed.set(Some(freed));
        }
    }
    let m = HostMemoryManager::default();
    let base = m
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    let freed = std::cell::Cell::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _region = Region {
            manager: &m,
            base,
            freed: &freed,
        };
        std::panic::resume_unwind(Box::new("an unrelated panic"));
    }));
    assert!(unwound.is_err());
    assert_eq!(freed.get(), Some(Ok(())), "the destructor's free succeeded");
    assert!(!m.has_failed());
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::FREE);
    let again = m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL);
    assert_eq!(hr(again), HResult::S_OK, "the manager still works");
}

#[test]
fn an_os_failure_that_cannot_be_rolled_back_is_e_fail_then_unavailable() {
    let os = Arc::new(FaultInjectingBackend::new());
    let m = HostMemoryManager::with_backend(HostConfig::default(), Box::new(os.clone())).unwrap();
    let base = m
        .virtual_alloc(0, 0x10000, RESERVE, Protection::NOACCESS, LEVEL)
        .unwrap();
    // The commit's mprotect fails, and so does the rollback.
    os.inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::ENOMEM,
    });
    os.inject(FaultPlan {
        operation: OsOperation::Protect,
        nth: 0,
        error: OsError::EINVAL,
    });
    let got = m.virtual_alloc(
        base,
        0x2000,
        AllocationType::COMMIT,
        Protection::READWRITE,
        LEVEL,
    );
    assert_eq!(hr(got), HResult::E_FAIL);
    assert!(m.has_failed());
    assert_eq!(hr(m.virtual_query(base)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(
        hr(m.virtual_free(base, 0, FreeType::RELEASE)),
        HResult::HOST_E_CLRNOTAVAILABLE
    );
    let failures = m.statistics().failures;
    assert_eq!(failures[&(Method::VirtualAlloc, HResult::E_FAIL)], 1);
}

#[test]
fn an_os_failure_that_rolls_back_is_out_of_memory_and_not_latched() {
    let os = Arc::new(FaultInjectingBackend::new());
    let m = HostMemoryManager::with_backend(HostConfig::default(), Box::new(os.clone())).unwrap();
    os.inject(FaultPlan {
        operation: OsOperation::MapAnywhere,
        nth: 0,
        error: OsError::ENOMEM,
    });
    assert_eq!(
        hr(m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)),
        HResult::E_OUTOFMEMORY
    );
    assert!(
        m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
            .is_ok()
    );
}

#[test]
fn calls_after_shutdown_are_unavailable_and_regions_are_released() {
    let m = HostMemoryManager::default();
    let base = m
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    m.shutdown();
    assert_eq!(hr(m.virtual_query(base)), HResult::HOST_E_CLRNOTAVAILABLE);
    assert_eq!(
        hr(m.virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)),
        HResult::HOST_E_CLRNOTAVAILABLE
    );
    let stats = m.statistics();
    assert_eq!((stats.regions, stats.reserved_bytes), (0, 0));
}

#[test]
fn a_watcher_that_cannot_be_spawned_fails_the_registration_and_changes_nothing() {
    use crate::host::notify::FAIL_NEXT_SPAWN;
    struct Count(std::sync::atomic::AtomicUsize);
    impl MemoryNotificationCallback for Count {
        fn on_memory_notification(&self, _: super::super::MemoryAvailable) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    // No budget: a registration needs the load-watcher thread.
    let m = HostMemoryManager::default();
    let cb = Arc::new(Count(AtomicUsize::new(0)));
    FAIL_NEXT_SPAWN.set(true);
    let failed = m.register_memory_notification(Some(cb.clone()));
    assert_eq!(hr(failed), HResult::E_OUTOFMEMORY);
    assert_eq!(
        m.register_memory_notification(Some(cb.clone()))
            .map_err(|e| e.win32()),
        Ok(()),
        "the next registration spawns it"
    );
    m.register_memory_notification(None).unwrap();
    assert_eq!(Arc::strong_count(&cb), 1);
    // The failed registration left nothing: not the callback, not the
    // flag the write path reads, not a watcher.
    FAIL_NEXT_SPAWN.set(true);
    let failed = m.register_memory_notification(Some(cb.clone()));
    assert_eq!(
        failed.map_err(|e| e.win32()),
        Err(Win32Error::NOT_ENOUGH_MEMORY)
    );
    assert_eq!(Arc::strong_count(&cb), 1, "the callback is not held");
    assert!(!m.notifying.load(Ordering::Relaxed));
    assert!(m.watcher.lock().is_none());
    assert!(!FAIL_NEXT_SPAWN.get(), "the hook was used");
    assert!(
        !m.has_failed(),
        "a thread that cannot be made latches nothing"
    );
    let p = m
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn shutdown_after_a_latched_failure_still_releases_every_region() {
    let m = HostMemoryManager::default();
    let base = m
        .virtual_alloc(0, 0x10000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    assert!(m.latch_failure());
    m.shutdown();
    let stats = m.statistics();
    assert_eq!((stats.regions, stats.reserved_bytes), (0, 0));
    assert!(m.has_failed(), "still a failed manager");
    assert_eq!(hr(m.virtual_query(base)), HResult::HOST_E_CLRNOTAVAILABLE);
}

/// A `VirtualFree` or `VirtualProtect` of an address that is not the
/// host's is refused without the exclusive lock: while another thread reads the address
/// space (holding the lock shared), the refusal comes at once, where the
/// exclusive lock would wait out the timeout. A free of the host's own
/// memory still waits for the exclusive lock.
#[test]
fn a_foreign_free_or_protect_is_refused_under_the_shared_lock() {
    let m = HostMemoryManager::new(HostConfig {
        lock_timeout: Duration::from_millis(200),
        ..HostConfig::default()
    })
    .unwrap();
    let own = m
        .virtual_alloc(0, 0x10000, RESERVE, Protection::NOACCESS, LEVEL)
        .unwrap();
    let foreign = Box::new([0u8; 64]);
    let foreign = foreign.as_ptr() as usize;
    let (reading, done) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            m.with_address_space(|_| {
                reading.wait();
                done.wait();
            })
            .unwrap();
        });
        reading.wait();
        // Every answer is taken before the reader is let go (a failed
        // assertion here would leave it waiting).
        let started = std::time::Instant::now();
        let release = m.virtual_free(foreign, 0, FreeType::RELEASE);
        let decommit = m.virtual_free(foreign, 0x1000, FreeType::DECOMMIT);
        let protect = m.virtual_protect(foreign, 0x1000, Protection::READONLY);
        let protect_0 = m.virtual_protect(foreign & !0xFFF, 0, Protection::READONLY);
        let elapsed = started.elapsed();
        let owned = m.virtual_free(own, 0, FreeType::RELEASE);
        done.wait();
        assert_eq!(release, Err(HostError::NotHostMemory));
        assert_eq!(decommit, Err(HostError::NotHostMemory));
        assert_eq!(protect, Err(HostError::NotHostMemory));
        assert_eq!(protect_0, Err(HostError::NotHostMemory));
        assert!(
            elapsed < Duration::from_millis(150),
            "refused without waiting for the exclusive lock ({elapsed:?})"
        );
        assert_eq!(
            owned,
            Err(HostError::Timeout),
            "the host's own memory needs the exclusive lock"
        );
    });
    // Invalid arguments are judged before ownership, as before.
    assert_eq!(
        m.virtual_free(foreign, 0x1000, FreeType::RELEASE),
        Err(HostError::from_engine(Win32Error::INVALID_PARAMETER))
    );
    assert_eq!(
        m.virtual_free(foreign, 0, FreeType::RELEASE | FreeType::DECOMMIT),
        Err(HostError::from_engine(Win32Error::INVALID_PARAMETER))
    );
    assert_eq!(
        m.virtual_protect(foreign, 0x1000, Protection::from_bits_retain(0x3)),
        Err(HostError::from_engine(Win32Error::INVALID_PARAMETER))
    );
    assert_eq!(
        m.virtual_protect(foreign, usize::MAX, Protection::READONLY),
        Err(HostError::from_engine(Win32Error::INVALID_PARAMETER))
    );
    assert_eq!(m.virtual_free(own, 0, FreeType::RELEASE), Ok(()));
}

#[test]
fn queries_and_foreign_refusals_answer_while_a_change_holds_the_lock() {
    let m = HostMemoryManager::new(HostConfig {
        lock_timeout: Duration::from_millis(50),
        ..HostConfig::default()
    })
    .unwrap();
    let uniform = m
        .virtual_alloc(0, 0x20000, RC, Protection::READWRITE, LEVEL)
        .unwrap();
    let mixed = m
        .virtual_alloc(0, 0x20000, RESERVE, Protection::READWRITE, LEVEL)
        .unwrap();
    m.virtual_alloc(
        mixed,
        0x1000,
        AllocationType::COMMIT,
        Protection::READWRITE,
        LEVEL,
    )
    .unwrap();
    let expected = m.virtual_query(uniform + 0x1234).unwrap();
    let foreign = Box::new([0u8; 64]);
    let foreign = foreign.as_ptr() as usize;
    // The exclusive lock held, as by a change under way on this thread.
    let guard = m.state.write(None).unwrap();
    let query = m.virtual_query(uniform + 0x1234);
    let release = m.virtual_free(foreign, 0, FreeType::RELEASE);
    let protect = m.virtual_protect(foreign, 0x1000, Protection::READONLY);
    let commit = m.virtual_alloc(
        foreign,
        0x1000,
        AllocationType::COMMIT,
        Protection::READWRITE,
        LEVEL,
    );
    let reset = m.virtual_alloc(
        foreign,
        0x1000,
        AllocationType::RESET,
        Protection::READWRITE,
        LEVEL,
    );
    // A bad protection is the engine's to judge: it waits for the lock.
    let bad = m.virtual_alloc(
        foreign,
        0x1000,
        AllocationType::COMMIT,
        Protection::from_bits_retain(0x3),
        LEVEL,
    );
    // Pages not alike: only the locked path can describe them.
    let not_uniform = m.virtual_query(mixed);
    drop(guard);
    assert_eq!(commit, Err(HostError::NotHostMemory));
    assert_eq!(reset, Err(HostError::NotHostMemory));
    assert_eq!(bad, Err(HostError::Timeout));
    assert_eq!(
        m.virtual_alloc(
            foreign,
            0x1000,
            AllocationType::COMMIT,
            Protection::from_bits_retain(0x3),
            LEVEL,
        ),
        Err(HostError::from_engine(Win32Error::INVALID_PARAMETER))
    );
    assert_eq!(query, Ok(expected));
    assert_eq!(expected.region_size, 0x20000 - 0x1000);
    assert_eq!(release, Err(HostError::NotHostMemory));
    assert_eq!(protect, Err(HostError::NotHostMemory));
    assert_eq!(not_uniform, Err(HostError::Timeout));
    assert_eq!(m.virtual_query(mixed).unwrap().region_size, 0x1000);
}

#[test]
fn lock_free_answers_equal_locked_answers_over_random_changes() {
    let m = HostMemoryManager::default();
    let mut next = crate::test_random::below(0x2545_F491_4F6C_DD1D);
    // A foreign address: a variable on this thread's stack.
    let on_stack = 0u64;
    let page = 0x1000;
    let mut live: Vec<(usize, usize)> = Vec::new();
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..1500 {
        match next(8) {
            0 | 1 if live.len() < 24 => {
                // Sizes from a page to past a granule, some past 2 MiB.
                let size = match next(4) {
                    0 => (1 + next(3)) << 21,
                    _ => (1 + next(40)) * page,
                };
                let kind = if next(2) == 0 { RC } else { RESERVE };
                let protect = [Protection::READWRITE, Protection::READONLY][next(2)];
                if let Ok(base) = m.virtual_alloc(0, size, kind, protect, LEVEL) {
                    live.push((base, size));
                }
            }
            2 if !live.is_empty() => {
                let (base, _) = live.swap_remove(next(live.len()));
                m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
            }
            _ if !live.is_empty() => {
                let (base, size) = live[next(live.len())];
                let pages = size / page;
                let first = next(pages);
                let count = if next(2) == 0 {
                    pages - first
                } else {
                    1 + next(pages - first)
                };
                let (start, len) = if next(3) == 0 {
                    (base, size)
                } else {
                    (base + first * page, count * page)
                };
                let _ = match next(3) {
                    0 => m
                        .virtual_alloc(
                            start,
                            len,
                            AllocationType::COMMIT,
                            Protection::READWRITE,
                            LEVEL,
                        )
                        .map(|_| ()),
                    1 => m.virtual_free(start, len, FreeType::DECOMMIT),
                    _ => m
                        .virtual_protect(start, len, Protection::EXECUTE_READ)
                        .map(|_| ()),
                };
            }
            _ => {}
        }
        // Probes: in, at the edges of and just past every live region,
        // and a foreign address.
        let mut probes = vec![0x10000, &on_stack as *const u64 as usize];
        for &(b, s) in &live {
            probes.extend([
                b,
                b + s / 2,
                b + s - 1,
                b + s,
                b + s.next_multiple_of(0x10000),
            ]);
            probes.push(b + next(s));
        }
        m.with_address_space(|space| {
            for &a in &probes {
                if let Some(mbi) = m.view.query(a) {
                    // The reservation's own description (pages read one
                    // by one, no summary), and the locked call's.
                    let own = space.reservation_at(a).map(|r| r.query(a));
                    assert_eq!(Some(mbi), own, "query of {a:#x}");
                    assert_eq!(Ok(mbi), space.virtual_query(a), "query of {a:#x}");
                    answered += 1;
                }
                if let Some(held) = m.view.holds(page_floor(a)) {
                    assert_eq!(held, space.owns(page_floor(a)), "holds {a:#x}");
                    refused += usize::from(!held);
                }
            }
        })
        .unwrap();
    }
    assert!(answered > 1000, "the view answered queries ({answered})");
    assert!(refused > 1000, "and refusals ({refused})");
}

/// Commits (then decommits) in two different reservations are inside the
/// kernel at the same moment: each call's `mprotect` (then `madvise`)
/// waits until the other's has arrived too. Under one exclusive lock the
/// second call could not start before the first returned, and the two
/// would never meet.
#[test]
fn commits_in_different_reservations_reach_the_kernel_together() {
    let os = Arc::new(FaultInjectingBackend::new());
    let m = HostMemoryManager::with_backend(HostConfig::default(), Box::new(os.clone())).unwrap();
    let bases: Vec<usize> = (0..2)
        .map(|_| {
            m.virtual_alloc(0, 0x40000, RESERVE, Protection::NOACCESS, LEVEL)
                .unwrap()
        })
        .collect();
    let both = |operation: OsOperation, call: &(dyn Fn(usize) -> HResult + Sync)| {
        os.rendezvous(operation, 2, Duration::from_secs(20));
        let answers: Vec<HResult> = std::thread::scope(|s| {
            let handles: Vec<_> = bases.iter().map(|&b| s.spawn(move || call(b))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(answers, [HResult::S_OK, HResult::S_OK]);
        assert!(os.rendezvous_met(), "{operation:?} calls ran one at a time");
    };
    both(OsOperation::Protect, &|b| {
        hr(m.virtual_alloc(
            b + 0x10000,
            0x10000,
            AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL,
        ))
    });
    for &b in &bases {
        assert_eq!(
            m.virtual_query(b + 0x10000).unwrap().state,
            MemoryState::COMMIT
        );
    }
    assert_eq!(m.statistics().committed_bytes, 0x20000);
    both(OsOperation::Discard, &|b| {
        hr(m.virtual_free(b + 0x10000, 0x10000, FreeType::DECOMMIT))
    });
    for &b in &bases {
        assert_eq!(
            m.virtual_query(b + 0x10000).unwrap().state,
            MemoryState::RESERVE
        );
    }
    assert_eq!(m.statistics().committed_bytes, 0);
}

/// A change in place whose thread stops half-way (here: inside its
/// `mprotect`, as a suspended thread would) holds its reservation's
/// pages; another change of the same reservation waits for them no longer
/// than the lock timeout, answers `HOST_E_TIMEOUT` and changes nothing,
/// while the stopped change completes when its thread goes on.
#[test]
fn a_change_stuck_in_the_same_reservation_times_out_instead_of_waiting_for_ever() {
    let os = Arc::new(FaultInjectingBackend::new());
    let config = HostConfig {
        lock_timeout: Duration::from_millis(200),
        ..HostConfig::default()
    };
    let m = HostMemoryManager::with_backend(config, Box::new(os.clone())).unwrap();
    let base = m
        .virtual_alloc(0, 0x40000, RESERVE, Protection::NOACCESS, LEVEL)
        .unwrap();
    let commit = |at: usize| {
        m.virtual_alloc(
            at,
            0x1000,
            AllocationType::COMMIT,
            Protection::READWRITE,
            LEVEL,
        )
    };
    // The first commit's mprotect waits 3 s for a second party that never
    // comes.
    os.rendezvous(OsOperation::Protect, 2, Duration::from_secs(3));
    std::thread::scope(|s| {
        let stuck = s.spawn(|| commit(base));
        while os.rendezvous_arrived() == 0 {
            std::thread::yield_now();
        }
        let asked = std::time::Instant::now();
        assert_eq!(hr(commit(base + 0x2000)), HResult::HOST_E_TIMEOUT);
        assert_eq!(
            hr(m.virtual_free(base, 0x1000, FreeType::DECOMMIT)),
            HResult::HOST_E_TIMEOUT
        );
        assert!(
            asked.elapsed() < Duration::from_millis(2500),
            "waited for the stuck change: {:?}",
            asked.elapsed()
        );
        assert_eq!(
            m.virtual_query(base + 0x2000).unwrap().state,
            MemoryState::RESERVE,
            "the timed-out commit changed nothing"
        );
        assert_eq!(stuck.join().unwrap(), Ok(base));
    });
    assert!(!os.rendezvous_met());
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::COMMIT);
    assert_eq!(m.statistics().committed_bytes, 0x1000);
    // Once the stuck change is over, the same calls go through.
    assert_eq!(commit(base + 0x2000), Ok(base + 0x2000));
    assert!(!m.has_failed());
}
