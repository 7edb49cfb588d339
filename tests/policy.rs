//! The host's policy through the Rust API: budget, critical levels, memory
//! load, notifications, and the runtime's own address space.

use hostmem::host::{
    HResult, HostConfig, HostError, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel,
    MemoryNotificationCallback,
};
use hostmem::unstable::os::parse_maps;
use hostmem::win32::{AllocationType, FreeType, Protection};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const RESERVE: AllocationType = AllocationType::RESERVE;
const COMMIT: AllocationType = AllocationType::COMMIT;
use MemoryCriticalLevel::*;

fn budgeted(bytes: usize) -> std::sync::Arc<HostMemoryManager> {
    HostMemoryManager::new(HostConfig {
        budget_bytes: Some(bytes as u64),
        ..HostConfig::default()
    })
    .unwrap()
}

/// Committed bytes of the kernel's mappings inside `[base, base + len)`:
/// those with any access (hostmem maps reserved pages PROT_NONE).
fn kernel_committed(regions: &[(usize, usize)]) -> usize {
    let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    regions
        .iter()
        .map(|&(base, len)| {
            maps.iter()
                .filter(|m| !m.access.is_empty())
                .map(|m| m.end.min(base + len).saturating_sub(m.start.max(base)))
                .sum::<usize>()
        })
        .sum()
}

#[test]
fn the_budget_is_never_passed_by_four_threads_committing_at_once() {
    let budget = 24 * MIB;
    let m = Arc::new(budgeted(budget));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let base = m
                    .virtual_alloc(0, 16 * MIB, RESERVE, Protection::NOACCESS, ProcessCritical)
                    .unwrap();
                let mut refused = 0;
                for round in 0..200 {
                    let at = base + (round * 7 + t) % 256 * 0x10000;
                    match m.virtual_alloc(
                        at,
                        0x10000,
                        COMMIT,
                        Protection::READWRITE,
                        ProcessCritical,
                    ) {
                        Ok(_) => {}
                        Err(HostError::OverBudget) => refused += 1,
                        Err(e) => panic!("{e}"),
                    }
                    assert!(m.statistics().committed_bytes <= budget);
                    if round % 3 == 0 {
                        m.virtual_free(at, 0x10000, FreeType::DECOMMIT).unwrap();
                    }
                }
                (base, refused)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let stats = m.statistics();
    assert!(stats.committed_bytes <= budget);
    assert!(stats.peak_committed_bytes <= budget);
    assert!(
        results.iter().map(|r| r.1).sum::<i32>() > 0,
        "the budget refused some commits"
    );
    let regions: Vec<_> = results.iter().map(|&(base, _)| (base, 16 * MIB)).collect();
    assert_eq!(
        kernel_committed(&regions),
        stats.committed_bytes,
        "the kernel agrees"
    );
}

#[test]
fn less_critical_requests_are_refused_first() {
    let m = budgeted(100 * 0x10000);
    let base = m
        .virtual_alloc(
            0,
            120 * 0x10000,
            RESERVE,
            Protection::NOACCESS,
            TaskCritical,
        )
        .unwrap();
    // 89 of 100 granules committed.
    m.virtual_alloc(
        base,
        89 * 0x10000,
        COMMIT,
        Protection::READWRITE,
        TaskCritical,
    )
    .unwrap();
    let next = |n: usize| (base + 89 * 0x10000, n * 0x10000);
    let (at, two) = next(2);
    let refused = m.virtual_alloc(at, two, COMMIT, Protection::READWRITE, TaskCritical);
    assert_eq!(
        refused.map_err(|e| e.hresult()),
        Err(HResult::E_OUTOFMEMORY)
    );
    assert_eq!(
        m.statistics().committed_bytes,
        89 * 0x10000,
        "a refusal changes nothing"
    );
    assert!(
        m.virtual_alloc(at, 0x10000, COMMIT, Protection::READWRITE, TaskCritical)
            .is_ok(),
        "to 90 %"
    );
    let (at, six) = (base + 90 * 0x10000, 6 * 0x10000);
    assert_eq!(
        m.virtual_alloc(at, six, COMMIT, Protection::READWRITE, AppDomainCritical)
            .err(),
        Some(HostError::OverBudget)
    );
    assert!(
        m.virtual_alloc(
            at,
            5 * 0x10000,
            COMMIT,
            Protection::READWRITE,
            AppDomainCritical
        )
        .is_ok(),
        "to 95 %"
    );
    let at = base + 95 * 0x10000;
    assert_eq!(
        m.virtual_alloc(at, six, COMMIT, Protection::READWRITE, ProcessCritical)
            .err(),
        Some(HostError::OverBudget)
    );
    assert!(
        m.virtual_alloc(
            at,
            5 * 0x10000,
            COMMIT,
            Protection::READWRITE,
            ProcessCritical
        )
        .is_ok(),
        "to 100 %"
    );
    // Recommitting committed pages costs nothing.
    assert!(
        m.virtual_alloc(base, 0x10000, COMMIT, Protection::READONLY, TaskCritical)
            .is_ok()
    );
    // Reserving costs address space, not budget.
    let more = m
        .virtual_alloc(0, 64 * MIB, RESERVE, Protection::READWRITE, TaskCritical)
        .unwrap();
    m.virtual_free(more, 0, FreeType::RELEASE).unwrap();
    // A reserve-and-commit is refused as a whole.
    let none = m.virtual_alloc(
        0,
        0x1000,
        RESERVE | COMMIT,
        Protection::READWRITE,
        ProcessCritical,
    );
    assert_eq!(none.err(), Some(HostError::OverBudget));
    assert_eq!(m.statistics().regions, 1);
}

#[test]
fn memory_load_is_exact_to_the_page_with_a_budget() {
    let budget = 400 * 0x1000;
    let m = budgeted(budget);
    let l = m.get_memory_load().unwrap();
    assert_eq!((l.percent(), l.available_bytes()), (0, budget as u64));
    let base = m
        .virtual_alloc(0, 0x100000, RESERVE, Protection::NOACCESS, TaskCritical)
        .unwrap();
    m.virtual_alloc(
        base,
        0x1000 * 101,
        COMMIT,
        Protection::READWRITE,
        TaskCritical,
    )
    .unwrap();
    let l = m.get_memory_load().unwrap();
    assert_eq!(
        (l.percent(), l.available_bytes()),
        (25, (budget - 101 * 0x1000) as u64)
    );
    m.virtual_free(base, 0x1000, FreeType::DECOMMIT).unwrap();
    let l = m.get_memory_load().unwrap();
    assert_eq!(
        (l.percent(), l.available_bytes()),
        (25, (budget - 100 * 0x1000) as u64)
    );
    // The runtime's own mappings count too.
    m.acquired_virtual_address_space(0x5000_0000_0000, 100 * 0x1000)
        .unwrap();
    let l = m.get_memory_load().unwrap();
    assert_eq!(
        (l.percent(), l.available_bytes()),
        (50, (budget - 200 * 0x1000) as u64)
    );
}

#[test]
fn memory_load_without_a_budget_is_the_machines() {
    let m = HostMemoryManager::default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |name: &str| -> u64 {
        let line = meminfo.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let l = m.get_memory_load().unwrap();
    let expected = hostmem::host::MachineMemory::default().load().unwrap();
    assert_eq!(l.total_bytes, expected.total_bytes);
    if expected.total_bytes == field("MemTotal:") {
        // No cgroup limit below the machine: /proc/meminfo decides.
        let available = field("MemAvailable:");
        let slack = 64 * MIB as u64;
        assert!(
            l.available_bytes().abs_diff(available) < slack,
            "{} vs {available}",
            l.available_bytes()
        );
    }
    // A fake cgroup v2 limit below the machine's memory wins.
    let dir = tempfile::Builder::new()
        .prefix("hostmem-policy-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("proc/meminfo", "MemTotal: 4000 kB\nMemAvailable: 1000 kB\n");
    write("proc/self/cgroup", "0::/job\n");
    write("sys/fs/cgroup/job/memory.max", "2048000\n");
    write("sys/fs/cgroup/job/memory.current", "1024000\n");
    let m = HostMemoryManager::default().with_machine_root(root);
    let l = m.get_memory_load().unwrap();
    assert_eq!((l.percent(), l.available_bytes()), (50, 1024000));
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(MemoryAvailable, Instant)>>);

impl MemoryNotificationCallback for Recorder {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        self.0.lock().push((state, Instant::now()));
    }
}

impl Recorder {
    fn states(&self) -> Vec<MemoryAvailable> {
        self.0.lock().iter().map(|e| e.0).collect()
    }
}

#[test]
fn low_then_high_once_each_across_fill_and_drain() {
    let m = budgeted(100 * 0x10000);
    let rec = Arc::new(Recorder::default());
    m.register_memory_notification(Some(rec.clone())).unwrap();
    assert_eq!(
        Arc::strong_count(&rec),
        2,
        "the manager holds one reference"
    );
    let base = m
        .virtual_alloc(
            0,
            100 * 0x10000,
            RESERVE,
            Protection::NOACCESS,
            ProcessCritical,
        )
        .unwrap();
    for i in 0..100 {
        let before = Instant::now();
        m.virtual_alloc(
            base + i * 0x10000,
            0x10000,
            COMMIT,
            Protection::READWRITE,
            ProcessCritical,
        )
        .unwrap();
        if i == 89 {
            let events = rec.0.lock();
            assert_eq!(events.len(), 1, "low at 90 %");
            assert!(events[0].1.duration_since(before) < Duration::from_millis(50));
        }
    }
    for i in (0..100).rev() {
        m.virtual_free(base + i * 0x10000, 0x10000, FreeType::DECOMMIT)
            .unwrap();
    }
    use MemoryAvailable::*;
    assert_eq!(rec.states(), vec![Low, Neutral, High]);
    assert_eq!(m.statistics().notifications_delivered, 3);
    m.register_memory_notification(None).unwrap();
    assert_eq!(Arc::strong_count(&rec), 1, "replaced: released");
    // Dropping the manager releases a registered callback.
    let rec2 = Arc::new(Recorder::default());
    m.register_memory_notification(Some(rec2.clone())).unwrap();
    drop(m);
    assert_eq!(Arc::strong_count(&rec2), 1);
}

#[test]
fn the_watcher_reports_machine_load_changes_without_allocations() {
    let dir = tempfile::Builder::new()
        .prefix("hostmem-watch-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::write(root.join("proc/self/cgroup"), "0::/\n").unwrap();
    let meminfo = |avail: u64| {
        std::fs::write(
            root.join("proc/meminfo"),
            format!("MemTotal: 1000 kB\nMemAvailable: {avail} kB\n"),
        )
        .unwrap()
    };
    meminfo(800);
    let config = HostConfig {
        load_poll_interval: Duration::from_millis(20),
        ..HostConfig::default()
    };
    let m = HostMemoryManager::new_unshared(config)
        .unwrap()
        .with_machine_root(root);
    let rec = Arc::new(Recorder::default());
    m.register_memory_notification(Some(rec.clone())).unwrap();
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while rec.0.lock().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    meminfo(50); // 95 % used
    wait_for(1);
    meminfo(900); // 10 % used
    wait_for(2);
    use MemoryAvailable::*;
    assert_eq!(rec.states(), vec![Low, High]);
    drop(m);
    assert_eq!(
        Arc::strong_count(&rec),
        1,
        "the watcher stopped and the callback was released"
    );
}

#[test]
fn the_runtimes_own_address_space_is_accounted_and_never_freed() {
    let m = budgeted(16 * MIB);
    let start = 0x6000_0000_0000;
    assert_eq!(m.needs_virtual_address_space(start, 8 * MIB), Ok(()));
    assert_eq!(
        m.needs_virtual_address_space(start, 17 * MIB).err(),
        Some(HostError::OverBudget)
    );
    m.acquired_virtual_address_space(start, 8 * MIB).unwrap();
    assert_eq!(m.statistics().acquired_bytes, 8 * MIB);
    assert_eq!(
        m.needs_virtual_address_space(start, 9 * MIB).err(),
        Some(HostError::OverBudget)
    );
    // A commit that would pass the budget with it is refused.
    let big = m.virtual_alloc(
        0,
        9 * MIB,
        RESERVE | COMMIT,
        Protection::READWRITE,
        ProcessCritical,
    );
    assert_eq!(big.err(), Some(HostError::OverBudget));
    // These ranges are never freed or protected through the manager.
    assert_eq!(
        m.virtual_free(start, 0, FreeType::RELEASE).err(),
        Some(HostError::NotHostMemory)
    );
    assert_eq!(
        m.virtual_protect(start, 0x1000, Protection::READONLY).err(),
        Some(HostError::NotHostMemory)
    );
    // Overlapping or empty reports are invalid; unknown releases too.
    assert_eq!(
        m.acquired_virtual_address_space(start + 0x1000, 0x1000)
            .err(),
        Some(HostError::InvalidArgument)
    );
    assert_eq!(
        m.acquired_virtual_address_space(0, 0x1000).err(),
        Some(HostError::InvalidArgument)
    );
    assert_eq!(
        m.released_virtual_address_space(start + 0x1000).err(),
        Some(HostError::NotHostMemory)
    );
    m.released_virtual_address_space(start).unwrap();
    assert_eq!(m.statistics().acquired_bytes, 0);
    assert_eq!(
        m.released_virtual_address_space(start).err(),
        Some(HostError::NotHostMemory)
    );
}
