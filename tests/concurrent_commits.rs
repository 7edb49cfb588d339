//! Commits in different reservations, made side by side under the
//! manager's shared lock: the budget stays exact under their races.

use hostmem::{
    AllocationType as A, FreeType, HostConfig, HostError, HostMemoryManager, MemoryCriticalLevel,
    Protection,
};
use std::sync::Barrier;

const GRANULE: usize = 0x10000;

/// Sixteen threads, each committing 64 KiB in its own reservation, under
/// a budget (at process-critical level) that takes exactly five of them:
/// exactly five pass, every refusal is `E_OUTOFMEMORY` and changes
/// nothing, and the committed bytes and their peak never pass the budget.
#[test]
fn racing_commits_never_pass_a_budget_that_fits_only_some() {
    const FITS: usize = 5;
    const THREADS: usize = 16;
    let level = MemoryCriticalLevel::ProcessCritical;
    let manager = HostMemoryManager::new(HostConfig {
        budget_bytes: Some((FITS * GRANULE) as u64),
        ..HostConfig::default()
    })
    .expect("a valid configuration");
    for _round in 0..20 {
        let bases: Vec<usize> = (0..THREADS)
            .map(|_| {
                manager
                    .virtual_alloc(0, GRANULE, A::RESERVE, Protection::NOACCESS, level)
                    .expect("reserving costs no budget")
            })
            .collect();
        let start = Barrier::new(THREADS);
        let answers: Vec<Result<usize, HostError>> = std::thread::scope(|s| {
            let handles: Vec<_> = bases
                .iter()
                .map(|&base| {
                    let (manager, start) = (&manager, &start);
                    s.spawn(move || {
                        start.wait();
                        manager.virtual_alloc(
                            base,
                            GRANULE,
                            A::COMMIT,
                            Protection::READWRITE,
                            level,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let passed = answers.iter().filter(|a| a.is_ok()).count();
        assert_eq!(passed, FITS, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| a.is_ok() || *a == Err(HostError::OverBudget)),
            "{answers:?}"
        );
        let stats = manager.statistics();
        assert_eq!(stats.committed_bytes, FITS * GRANULE);
        assert!(stats.peak_committed_bytes <= FITS * GRANULE);
        for (&base, answer) in bases.iter().zip(&answers) {
            let state = manager.virtual_query(base).unwrap().state;
            let committed = state == hostmem::MemoryState::COMMIT;
            assert_eq!(
                committed,
                answer.is_ok(),
                "a refused commit changed nothing"
            );
            manager.virtual_free(base, 0, FreeType::RELEASE).unwrap();
        }
        assert_eq!(manager.statistics().committed_bytes, 0);
    }
}
