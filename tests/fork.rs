//! `fork()` from a busy multi-threaded parent: like glibc's `malloc`,
//! hostmem takes every manager's and heap's locks around a fork, so the
//! child (whose only thread is the one that forked) can use every manager
//! and heap it inherited, and the load watcher starts again in the child
//! when it is needed.
//!
//! The children run Rust code and leave with `_exit`, so that nothing of
//! the parent's test harness runs twice.

use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{
    HostConfig, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel, MemoryNotificationCallback,
};
use hostmem::win32::{AllocationType, FreeType, MemoryState, Protection};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TASK: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
const RESERVE: AllocationType = AllocationType::RESERVE;
const COMMIT: AllocationType = AllocationType::COMMIT;

struct Quiet;
impl MemoryNotificationCallback for Quiet {
    fn on_memory_notification(&self, _state: MemoryAvailable) {}
}

/// One round of everything a busy thread does to a manager and its heaps.
fn churn(m: &HostMemoryManager, heap: &HostMalloc, single: Option<&HostMalloc>, round: usize) {
    let base = m
        .virtual_alloc(0, 0x40000, RESERVE, Protection::NOACCESS, TASK)
        .unwrap();
    m.virtual_alloc(base, 0x10000, COMMIT, Protection::READWRITE, TASK)
        .unwrap();
    assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::COMMIT);
    m.virtual_protect(base, 0x1000, Protection::READONLY)
        .unwrap();
    m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    let small = heap.alloc(16 + round % 2000, TASK).unwrap();
    let large = heap.alloc(40_000, TASK).unwrap();
    heap.free(small).unwrap();
    heap.free(large).unwrap();
    if let Some(single) = single {
        let p = single.alloc(48, TASK).unwrap();
        single.free(p).unwrap();
    }
}

/// Whether a thread of this process has `name` (as `/proc` shows it:
/// at most 15 bytes).
fn has_thread_named(name: &str) -> bool {
    let name = &name[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
}

/// What a child does with what it inherited; its exit status.
fn in_child(m: &Arc<HostMemoryManager>, heap: &HostMalloc, single: &HostMalloc) -> i32 {
    let work = catch_unwind(AssertUnwindSafe(|| {
        assert!(!has_thread_named("hostmem-load-watcher"), "the parent's");
        for round in 0..50 {
            churn(m, heap, Some(single), round);
        }
        let base = m
            .virtual_alloc(0, 0x10000, RESERVE | COMMIT, Protection::READWRITE, TASK)
            .unwrap();
        // SAFETY: committed read-write just above, and ours alone.
        unsafe { (base as *mut u64).write(0x0F0F) };
        assert_eq!(m.virtual_query(base).unwrap().region_size, 0x10000);
        m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
        // The parent's watcher is not in the child: dropping it must not
        // wait for it, and registering again starts a new one.
        m.register_memory_notification(None).unwrap();
        m.register_memory_notification(Some(Arc::new(Quiet)))
            .unwrap();
        // The new thread names itself as it starts.
        let asked = Instant::now();
        while !has_thread_named("hostmem-load-watcher") {
            assert!(asked.elapsed() < Duration::from_millis(500), "restarted");
            std::thread::sleep(Duration::from_millis(1));
        }
        m.register_memory_notification(None).unwrap();
        let fresh = m.create_malloc(MallocType::empty()).unwrap();
        let p = fresh.alloc(64, TASK).unwrap();
        fresh.free(p).unwrap();
        assert!(!m.has_failed());
    }));
    if work.is_ok() { 0 } else { 1 }
}

/// Waits at most `limit` for child `pid`; its exit status, or `None` if it
/// is still running then (it is killed) or did not exit normally.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is writable.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        assert_eq!(got, 0, "waitpid failed");
        if start.elapsed() > limit {
            // SAFETY: our child, still running.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn children_of_a_busy_parent_use_every_manager_and_heap() {
    let m = Arc::new(HostMemoryManager::default());
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let single = m.create_malloc(MallocType::empty()).unwrap();
    // A callback without a budget: the load watcher runs in the parent,
    // and every change wakes it.
    m.register_memory_notification(Some(Arc::new(Quiet)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let (m, heap, single, stop, rounds) = (
                m.clone(),
                heap.clone(),
                single.clone(),
                stop.clone(),
                rounds.clone(),
            );
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    // One thread uses the non-thread-safe heap, alone.
                    churn(&m, &heap, (t == 0).then_some(&*single), round);
                    rounds.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
            })
        })
        .collect();
    while rounds.load(Ordering::Relaxed) < 300 {
        std::thread::yield_now();
    }
    let mut failed = Vec::new();
    for child in 0..20 {
        let before = rounds.load(Ordering::Relaxed);
        // SAFETY: the child runs only `in_child` and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let status = in_child(&m, &heap, &single);
            // SAFETY: ends the child at once, running nothing of the
            // parent's (no destructors, no atexit handlers).
            unsafe { libc::_exit(status) }
        }
        assert!(pid > 0, "fork failed");
        let status = wait_for(pid, Duration::from_secs(1));
        if status != Some(0) {
            failed.push((child, status));
        }
        // The parent's threads went on meanwhile.
        while rounds.load(Ordering::Relaxed) < before + 10 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(
        failed.is_empty(),
        "children that did not exit 0 within 1 s (None: hung or killed): {failed:?}"
    );
    assert!(!m.has_failed());
    m.register_memory_notification(None).unwrap();
}

/// A callback that stays inside its first low-memory notification until
/// released (or 3 s pass).
struct Lingers {
    inside: AtomicBool,
    release: AtomicBool,
}

impl MemoryNotificationCallback for Lingers {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        if state != MemoryAvailable::Low || self.inside.swap(true, Ordering::SeqCst) {
            return;
        }
        let start = Instant::now();
        while !self.release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn a_fork_does_not_wait_for_a_thread_inside_a_notification_callback() {
    let config = HostConfig {
        budget_bytes: Some(1 << 20),
        ..HostConfig::default()
    };
    let m = HostMemoryManager::new(config).unwrap();
    let callback = Arc::new(Lingers {
        inside: AtomicBool::new(false),
        release: AtomicBool::new(false),
    });
    m.register_memory_notification(Some(callback.clone()))
        .unwrap();
    // Past the low-memory threshold (90 % of the budget): the notification
    // is delivered on this thread, after the call's lock is released.
    let crossing = std::thread::spawn({
        let m = m.clone();
        move || {
            let level = MemoryCriticalLevel::ProcessCritical;
            m.virtual_alloc(0, 960 << 10, RESERVE | COMMIT, Protection::READWRITE, level)
                .map(|_| ())
        }
    });
    while !callback.inside.load(Ordering::SeqCst) {
        assert!(!crossing.is_finished(), "no low-memory notification");
        std::thread::yield_now();
    }
    let forking = Instant::now();
    // SAFETY: the child runs only the closure below and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let work = catch_unwind(AssertUnwindSafe(|| {
            let base = m
                .virtual_alloc(0, 0x10000, RESERVE, Protection::NOACCESS, TASK)
                .unwrap();
            assert_eq!(m.virtual_query(base).unwrap().state, MemoryState::RESERVE);
            m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
        }));
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(if work.is_ok() { 0 } else { 1 }) }
    }
    assert!(pid > 0, "fork failed");
    let forked_in = forking.elapsed();
    let status = wait_for(pid, Duration::from_secs(1));
    callback.release.store(true, Ordering::SeqCst);
    assert_eq!(crossing.join().unwrap(), Ok(()));
    assert!(
        forked_in < Duration::from_secs(1),
        "the fork waited for the callback: {forked_in:?}"
    );
    assert_eq!(status, Some(0), "the child used the manager and exited");
    m.register_memory_notification(None).unwrap();
}

/// Set by the test below in the process it re-executes: its own fork
/// handler then lets the waiting threads go and gives them time to wait.
static GHOSTS_ARMED: AtomicBool = AtomicBool::new(false);
static GHOSTS_GO: AtomicBool = AtomicBool::new(false);

/// A prepare handler registered before hostmem's, so that it runs after
/// them (prepare handlers run last registered first), while hostmem holds
/// every lock: the threads told to go now block on those locks, and
/// sleep in parking_lot's wait queues when the fork happens.
extern "C" fn let_the_waiters_wait() {
    if GHOSTS_ARMED.load(Ordering::SeqCst) {
        GHOSTS_GO.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
}

const GHOSTS_ENV: &str = "HOSTMEM_TEST_FORK_GHOSTS";

/// Threads of the parent that wait for hostmem's locks at the moment of
/// the fork (for the manager's lock, a heap's, the registration lock,
/// and the load watcher on its condition variable) stay in parking_lot's
/// process-wide wait queues in the child, where they do not exist; the
/// child forgets them, and then its own threads and a new load watcher
/// contend for the same locks. Here the waiters are certain, not a race
/// as in the test above: the test's own fork handler runs while hostmem
/// holds its locks and lets the threads block on them first. (Which of
/// the ghosts' harms the child would meet if they stayed, a lock handed
/// to one at a fair unlock, a wake-up it takes from a thread of the
/// child, a queue entry shared with a new thread given its stack, depends
/// on timing; the test above met one in about 800 forks under load.)
/// Runs alone, in a re-executed test binary, so that its handler is
/// registered before hostmem's.
#[test]
fn a_child_forgets_the_parents_threads_that_waited_for_a_lock() {
    if std::env::var_os(GHOSTS_ENV).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_child_forgets_the_parents_threads_that_waited_for_a_lock",
                "--test-threads=1",
            ])
            .env(GHOSTS_ENV, "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "the re-executed test failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    // SAFETY: a handler that lives for the whole process; registered
    // before any manager exists, so before hostmem's.
    assert_eq!(
        unsafe { libc::pthread_atfork(Some(let_the_waiters_wait), None, None) },
        0
    );
    let m = Arc::new(HostMemoryManager::default());
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let single = m.create_malloc(MallocType::empty()).unwrap();
    // The parent's load watcher waits on its condition variable.
    m.register_memory_notification(Some(Arc::new(Quiet)))
        .unwrap();
    let waiters: Vec<_> = (0..4)
        .map(|t| {
            let (m, heap) = (m.clone(), heap.clone());
            std::thread::spawn(move || {
                while !GHOSTS_GO.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                match t {
                    // The manager's lock, exclusively.
                    0 => {
                        let base = m
                            .virtual_alloc(0, 0x10000, RESERVE, Protection::NOACCESS, TASK)
                            .unwrap();
                        m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
                    }
                    // A heap's lock: a new thread's first block comes from
                    // the heap's shared lists.
                    1 | 2 => {
                        let p = heap.alloc(24 + 40 * t, TASK).unwrap();
                        heap.free(p).unwrap();
                    }
                    // The registration lock.
                    _ => m
                        .register_memory_notification(Some(Arc::new(Quiet)))
                        .unwrap(),
                }
            })
        })
        .collect();
    GHOSTS_ARMED.store(true, Ordering::SeqCst);
    // SAFETY: the child runs only the closure below and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let work = catch_unwind(AssertUnwindSafe(|| {
            // Two threads of the child contend for every lock the ghosts
            // waited for, and a new load watcher starts and is woken.
            m.register_memory_notification(Some(Arc::new(Quiet)))
                .unwrap();
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let (m, heap, single) = (m.clone(), heap.clone(), single.clone());
                    std::thread::spawn(move || {
                        for round in 0..200 {
                            churn(&m, &heap, (t == 0).then_some(&*single), round);
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            m.register_memory_notification(None).unwrap();
            assert!(!m.has_failed());
        }));
        // SAFETY: ends the child at once, running nothing of the parent's.
        unsafe { libc::_exit(if work.is_ok() { 0 } else { 1 }) }
    }
    assert!(pid > 0, "fork failed");
    GHOSTS_ARMED.store(false, Ordering::SeqCst);
    let status = wait_for(pid, Duration::from_secs(10));
    for waiter in waiters {
        waiter.join().unwrap();
    }
    assert_eq!(status, Some(0), "the child hung (None) or failed");
    m.register_memory_notification(None).unwrap();
}
