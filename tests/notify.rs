//! Memory notifications under hostile callbacks, through the Rust API:
//! callbacks that re-enter the manager from the load-watcher thread while
//! another thread unregisters or drops the manager, callbacks that block
//! on a lock the unregistering thread holds, callbacks that panic, and
//! registrations racing each other.
//!
//! A deadlock must fail a test, not hang it: each shape runs on a thread
//! of its own and the test waits for its answer with a time limit
//! ([`within`]).

use hostmem::host::{
    HostConfig, HostError, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel,
    MemoryNotificationCallback,
};
use hostmem::win32::{AllocationType, FreeType, Protection};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a shape may take before it counts as a deadlock: each takes
/// well under a second when it works.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs `shape` on a thread of its own and returns its result, or fails
/// the test if it has not answered within [`LIMIT`] (the thread is left
/// behind, stuck: the process ends with the test run).
fn within<T: Send + 'static>(name: &str, shape: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, answer) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(shape());
    });
    match answer.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{name}: deadlock: no answer within {LIMIT:?}")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("{name}: the shape panicked"),
    }
}

/// A fake machine whose load the test sets (`/proc/meminfo` under a
/// directory of its own, no cgroup limit).
struct FakeMachine {
    root: PathBuf,
}

impl FakeMachine {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "hostmem-notify-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        std::fs::write(root.join("proc/self/cgroup"), "0::/\n").unwrap();
        let machine = Self { root };
        machine.set_used_percent(10);
        machine
    }

    /// Sets the machine's load (written to a new file then renamed, so
    /// the watcher never reads half a file).
    fn set_used_percent(&self, percent: u64) {
        let temp = self.root.join("proc/meminfo.new");
        std::fs::write(
            &temp,
            format!(
                "MemTotal: 1000 kB\nMemAvailable: {} kB\n",
                1000 - percent * 10
            ),
        )
        .unwrap();
        std::fs::rename(temp, self.root.join("proc/meminfo")).unwrap();
    }

    /// A manager without a budget (so a watcher thread reads the load and
    /// delivers) over this machine, polling every 5 ms.
    fn manager(&self) -> Arc<HostMemoryManager> {
        let config = HostConfig {
            load_poll_interval: Duration::from_millis(5),
            ..HostConfig::default()
        };
        Arc::new(
            HostMemoryManager::new_unshared(config)
                .unwrap()
                .with_machine_root(&self.root),
        )
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A callback that runs `body` on each notification.
struct OnEach<F>(F);

impl<F: Fn(MemoryAvailable) + Send + Sync> MemoryNotificationCallback for OnEach<F> {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        (self.0)(state)
    }
}

fn callback(
    body: impl Fn(MemoryAvailable) + Send + Sync + 'static,
) -> Arc<dyn MemoryNotificationCallback> {
    Arc::new(OnEach(body))
}

/// A callback that records the states it is told.
#[derive(Default)]
struct Recorder(Mutex<Vec<MemoryAvailable>>);

impl MemoryNotificationCallback for Recorder {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        self.0.lock().push(state);
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.0.lock().len()
    }

    /// Waits until `n` notifications arrived (or 5 s passed).
    fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.count()
    }
}

/// The shape every deadlock test shares: a callback on the watcher thread
/// that says it is in the call, then (after `pause`, long enough for the
/// test thread to be inside its own call) runs `inside`; the test thread
/// waits for the call to begin, then runs `outside`. Both must finish.
fn callback_meets_outside_call(
    name: &'static str,
    inside: impl Fn(&Weak<HostMemoryManager>) + Send + Sync + 'static,
    outside: impl FnOnce(Arc<HostMemoryManager>) + Send + 'static,
) {
    within(name, move || {
        let machine = FakeMachine::new(name);
        let m = machine.manager();
        let weak = Arc::downgrade(&m);
        let (entered, in_call) = mpsc::channel::<()>();
        let entered = Mutex::new(Some(entered));
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let cb = callback(move |_| {
            let Some(entered) = entered.lock().take() else {
                return;
            };
            let _ = entered.send(());
            std::thread::sleep(Duration::from_millis(100));
            inside(&weak);
            done.fetch_add(1, Ordering::SeqCst);
        });
        m.register_memory_notification(Some(cb)).unwrap();
        machine.set_used_percent(95);
        in_call
            .recv_timeout(Duration::from_secs(5))
            .expect("the watcher delivered the low state");
        outside(m);
        // The callback finishes too (it may do so after the outside call
        // returned: nothing waits for a running callback).
        let deadline = Instant::now() + Duration::from_secs(5);
        while finished.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the callback finished");
    });
}

#[test]
fn unregistering_while_a_callback_registers_does_not_deadlock() {
    callback_meets_outside_call(
        "a callback re-registers while the test thread unregisters",
        |weak| {
            if let Some(m) = weak.upgrade() {
                m.register_memory_notification(Some(Arc::new(Recorder::default())))
                    .unwrap();
            }
        },
        |m| m.register_memory_notification(None).unwrap(),
    );
}

#[test]
fn unregistering_while_a_callback_unregisters_does_not_deadlock() {
    callback_meets_outside_call(
        "a callback unregisters while the test thread unregisters",
        |weak| {
            if let Some(m) = weak.upgrade() {
                m.register_memory_notification(None).unwrap();
            }
        },
        |m| m.register_memory_notification(None).unwrap(),
    );
}

#[test]
fn unregistering_while_a_callback_allocates_does_not_deadlock() {
    callback_meets_outside_call(
        "a callback allocates while the test thread unregisters",
        |weak| {
            if let Some(m) = weak.upgrade() {
                let p = m
                    .virtual_alloc(
                        0,
                        0x10000,
                        AllocationType::RESERVE | AllocationType::COMMIT,
                        Protection::READWRITE,
                        MemoryCriticalLevel::ProcessCritical,
                    )
                    .unwrap();
                m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
            }
        },
        |m| m.register_memory_notification(None).unwrap(),
    );
}

#[test]
fn unregistering_while_holding_a_lock_the_callback_takes_does_not_deadlock() {
    let lock = Arc::new(Mutex::new(()));
    let taken = lock.clone();
    callback_meets_outside_call(
        "a callback takes a lock the unregistering thread holds",
        move |_| drop(taken.lock()),
        move |m| {
            let _held = lock.lock();
            m.register_memory_notification(None).unwrap();
        },
    );
}

#[test]
fn dropping_the_last_reference_while_holding_a_lock_the_callback_takes_does_not_deadlock() {
    let lock = Arc::new(Mutex::new(()));
    let taken = lock.clone();
    callback_meets_outside_call(
        "the manager is dropped holding a lock the callback takes",
        move |_| drop(taken.lock()),
        move |m| {
            let _held = lock.lock();
            drop(m);
        },
    );
}

#[test]
fn dropping_the_last_reference_while_a_callback_registers_does_not_deadlock() {
    callback_meets_outside_call(
        "the manager is dropped while a callback registers",
        |weak| {
            if let Some(m) = weak.upgrade() {
                m.register_memory_notification(None).unwrap();
            }
        },
        drop,
    );
}

#[test]
fn a_callback_can_drop_the_last_reference_to_the_manager() {
    within("a callback drops the last reference", || {
        let machine = FakeMachine::new("last-ref");
        let m = machine.manager();
        let slot = Arc::new(Mutex::new(Some(m.clone())));
        let keep = slot.clone();
        let (dropped, was_dropped) = mpsc::channel();
        let dropped = Mutex::new(dropped);
        m.register_memory_notification(Some(callback(move |_| {
            if let Some(m) = keep.lock().take() {
                drop(m);
                let _ = dropped.lock().send(());
            }
        })))
        .unwrap();
        let weak = Arc::downgrade(&m);
        drop(m);
        machine.set_used_percent(95);
        was_dropped
            .recv_timeout(Duration::from_secs(5))
            .expect("the callback ran and dropped the manager");
        assert!(weak.upgrade().is_none(), "the manager is gone");
        drop(slot);
    });
}

#[test]
fn a_callback_can_replace_itself_and_the_new_one_is_notified() {
    within("a callback replaces itself", || {
        let machine = FakeMachine::new("replace");
        let m = machine.manager();
        let weak = Arc::downgrade(&m);
        let next = Arc::new(Recorder::default());
        let handed = next.clone();
        let first = Arc::new(AtomicUsize::new(0));
        let count = first.clone();
        m.register_memory_notification(Some(callback(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
            if let Some(m) = weak.upgrade() {
                m.register_memory_notification(Some(handed.clone()))
                    .unwrap();
            }
        })))
        .unwrap();
        machine.set_used_percent(95);
        let deadline = Instant::now() + Duration::from_secs(5);
        while first.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(first.load(Ordering::SeqCst), 1);
        machine.set_used_percent(10);
        assert_eq!(next.wait_for(2), 2, "the replacement is notified");
        // Registered while memory was low, it is told so at once.
        use MemoryAvailable::*;
        assert_eq!(*next.0.lock(), vec![Low, High]);
        assert_eq!(first.load(Ordering::SeqCst), 1, "the first is not");
        m.register_memory_notification(None).unwrap();
    });
}

/// A callback that panics on its first notification and records the rest.
#[derive(Default)]
struct PanicsOnce {
    calls: AtomicUsize,
    recorded: Recorder,
}

impl MemoryNotificationCallback for PanicsOnce {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a callback panics on its first notification (expected by the test)");
        }
        self.recorded.on_memory_notification(state);
    }
}

#[test]
fn a_callback_that_panics_on_the_watcher_thread_still_gets_later_changes() {
    within("a panicking callback on the watcher thread", || {
        let machine = FakeMachine::new("panic-watcher");
        let m = machine.manager();
        let cb = Arc::new(PanicsOnce::default());
        m.register_memory_notification(Some(cb.clone())).unwrap();
        machine.set_used_percent(95);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cb.calls.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            cb.calls.load(Ordering::SeqCst),
            1,
            "the low state, panicked"
        );
        machine.set_used_percent(10);
        assert_eq!(cb.recorded.wait_for(1), 1, "the high state after the panic");
        machine.set_used_percent(95);
        assert_eq!(cb.recorded.wait_for(2), 2, "and the next low one");
        use MemoryAvailable::*;
        assert_eq!(*cb.recorded.0.lock(), vec![High, Low]);
        assert_eq!(
            m.statistics().notification_panics,
            1,
            "the panic is counted"
        );
        assert!(!m.has_failed(), "a callback's panic is not the manager's");
        m.register_memory_notification(None).unwrap();
    });
}

/// What the budget tests count in.
const GRANULE: usize = 0x10000;

/// A manager whose budget is ten granules.
fn ten_granule_budget() -> Arc<HostMemoryManager> {
    HostMemoryManager::new(HostConfig {
        budget_bytes: Some(10 * GRANULE as u64),
        ..HostConfig::default()
    })
    .unwrap()
}

/// Reserves and commits nine granules at the most critical level: 90 % of
/// a ten-granule budget, where memory is low.
fn commit_nine_granules(m: &HostMemoryManager) -> Result<usize, HostError> {
    m.virtual_alloc(
        0,
        9 * GRANULE,
        AllocationType::RESERVE | AllocationType::COMMIT,
        Protection::READWRITE,
        MemoryCriticalLevel::ProcessCritical,
    )
}

#[test]
fn a_callback_that_panics_on_a_callers_thread_fails_nothing() {
    within("a panicking callback on the caller's thread", || {
        let m = ten_granule_budget();
        let cb = Arc::new(PanicsOnce::default());
        m.register_memory_notification(Some(cb.clone())).unwrap();
        // 90 %: low, and the callback panics; the commit still succeeded.
        let p = commit_nine_granules(&m).expect("the commit that made memory low succeeds");
        assert_eq!(cb.calls.load(Ordering::SeqCst), 1);
        assert_eq!(m.statistics().committed_bytes, 9 * GRANULE);
        m.virtual_free(p, 0, FreeType::RELEASE)
            .expect("the manager still works");
        let p = commit_nine_granules(&m).expect("and commits again");
        m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
        use MemoryAvailable::*;
        assert_eq!(*cb.recorded.0.lock(), vec![High, Low, High]);
        assert_eq!(m.statistics().notification_panics, 1);
        assert!(!m.has_failed());
    });
}

/// One round of racing registrations: `a` registers while another thread
/// unregisters (or registers `b`), both released at once by a barrier.
/// Whatever the order, the manager then holds at most one of them, and
/// the one it holds is told when memory goes low; the other is not.
fn race_once(m: &Arc<HostMemoryManager>, round: usize) -> [Arc<Recorder>; 2] {
    let callbacks = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
    let start = Arc::new(std::sync::Barrier::new(2));
    let other = {
        let (m, start, b) = (m.clone(), start.clone(), callbacks[1].clone());
        std::thread::spawn(move || {
            start.wait();
            let b: Option<Arc<dyn MemoryNotificationCallback>> = if round.is_multiple_of(2) {
                None
            } else {
                Some(b)
            };
            m.register_memory_notification(b).unwrap();
        })
    };
    start.wait();
    m.register_memory_notification(Some(callbacks[0].clone()))
        .unwrap();
    other.join().unwrap();
    callbacks
}

/// The callbacks of `callbacks` the manager holds (their count is the
/// test's reference and the manager's).
fn held(callbacks: &[Arc<Recorder>]) -> Vec<&Arc<Recorder>> {
    callbacks
        .iter()
        .filter(|cb| Arc::strong_count(cb) > 1)
        .collect()
}

#[test]
fn racing_registrations_leave_one_registered_and_notified_under_a_budget() {
    // 4,000 rounds, in eight parts that must each answer within the limit:
    // the whole takes 8–9 s in a debug build on a slow day, too close to
    // the limit to tell a deadlock from a slow machine.
    const ROUNDS: usize = 4000;
    const PARTS: usize = 8;
    for part in 0..PARTS {
        within("racing registrations under a budget", move || {
            for round in part * ROUNDS / PARTS..(part + 1) * ROUNDS / PARTS {
                let m = ten_granule_budget();
                let callbacks = race_once(&m, round);
                let held = held(&callbacks);
                assert!(
                    held.len() <= 1,
                    "round {round}: {} callbacks held",
                    held.len()
                );
                let p = commit_nine_granules(&m).unwrap();
                if let Some(cb) = held.first() {
                    assert_eq!(
                        *cb.0.lock(),
                        vec![MemoryAvailable::Low],
                        "round {round}: the registered callback is told memory is low"
                    );
                }
                let told: usize = callbacks.iter().map(|cb| cb.count()).sum();
                assert_eq!(
                    told,
                    held.len(),
                    "round {round}: only the registered one is told"
                );
                m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
            }
        });
    }
}

#[test]
fn racing_registrations_leave_one_registered_and_notified_by_the_watcher() {
    within("racing registrations with a watcher", || {
        for round in 0..200 {
            let machine = FakeMachine::new("race");
            let m = machine.manager();
            let callbacks = race_once(&m, round);
            let held = held(&callbacks);
            assert!(
                held.len() <= 1,
                "round {round}: {} callbacks held",
                held.len()
            );
            machine.set_used_percent(95);
            if let Some(cb) = held.first() {
                assert_eq!(
                    cb.wait_for(1),
                    1,
                    "round {round}: the registered callback is told memory is low"
                );
            }
            let told: usize = callbacks.iter().map(|cb| cb.count()).sum();
            assert_eq!(
                told,
                held.len(),
                "round {round}: only the registered one is told"
            );
        }
    });
}

/// A callback whose release takes a while (as a runtime's `Release` may):
/// the registration that releases it must not let a later one slip in
/// between its steps.
struct SlowToRelease;

impl MemoryNotificationCallback for SlowToRelease {
    fn on_memory_notification(&self, _: MemoryAvailable) {}
}

impl Drop for SlowToRelease {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_registration_made_while_another_releases_the_old_callback_is_notified() {
    within("a registration during another's release", || {
        let m = ten_granule_budget();
        m.register_memory_notification(Some(Arc::new(SlowToRelease)))
            .unwrap();
        // One thread unregisters (and so releases the slow callback) ...
        let unregister = {
            let m = m.clone();
            std::thread::spawn(move || m.register_memory_notification(None).unwrap())
        };
        // ... and this one registers after it began: the last registration.
        std::thread::sleep(Duration::from_millis(50));
        let cb = Arc::new(Recorder::default());
        m.register_memory_notification(Some(cb.clone())).unwrap();
        unregister.join().unwrap();
        assert_eq!(Arc::strong_count(&cb), 2, "the last registration holds");
        let p = commit_nine_granules(&m).unwrap();
        assert_eq!(
            *cb.0.lock(),
            vec![MemoryAvailable::Low],
            "the registered callback is told memory is low"
        );
        m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    });
}
