//! Memory-pressure notifications: a state machine over the load with two
//! thresholds (hysteresis), delivered in order, never under the manager's
//! lock, and a watcher thread for loads that change without the runtime.
//!
//! The notifier has no lock-free part: its state, queue and delivery flag
//! are under one mutex, and its one atomic counts deliveries. What needs
//! checking is the hand-off between threads (one delivers, the others
//! queue, nobody holds the lock during a call), so the notifier's mutex
//! and counter come from [`prim`](crate::sync::prim), and a build with
//! `--cfg loom` checks it under loom (`loom_tests` below). The watcher
//! thread is not modelled.

use super::load::{MachineMemory, MemoryLoad};
use crate::sync::prim::{AtomicU64, Mutex, Ordering};
use parking_lot::Condvar;
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `EMemoryAvailable`: the memory state the host tells the runtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u32)]
pub enum MemoryAvailable {
    /// `eMemoryAvailableLow` (1): the load reached the low-memory threshold.
    Low = 1,
    /// `eMemoryAvailableNeutral` (2): between the thresholds, on the way
    /// back from low.
    Neutral = 2,
    /// `eMemoryAvailableHigh` (3): the load fell to the high-memory
    /// threshold.
    High = 3,
}

/// `ICLRMemoryNotificationCallback`: what the runtime registers to be told
/// the memory state.
pub trait MemoryNotificationCallback: Send + Sync {
    /// `OnMemoryNotification(state)`.
    fn on_memory_notification(&self, state: MemoryAvailable);
}

/// The thresholds of the state machine.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// At or above: low.
    pub low_percent: u32,
    /// At or below: high.
    pub high_percent: u32,
}

impl Thresholds {
    /// The state after `state` given `load`: low at or above the low
    /// threshold, high at or below the high one, and in between the state
    /// holds, except that leaving low passes through neutral.
    pub fn next(self, state: MemoryAvailable, load: MemoryLoad) -> MemoryAvailable {
        if load.at_least(self.low_percent) {
            MemoryAvailable::Low
        } else if load.at_most(self.high_percent) {
            MemoryAvailable::High
        } else if state == MemoryAvailable::Low {
            MemoryAvailable::Neutral
        } else {
            state
        }
    }
}

struct NotifierState {
    state: MemoryAvailable,
    callback: Option<Arc<dyn MemoryNotificationCallback>>,
    queue: VecDeque<MemoryAvailable>,
    delivering: bool,
}

/// The state machine and the registered callback. Changes of state are
/// queued and delivered by one thread at a time, in order, with no lock
/// held during the call (the callback may call the manager again).
pub struct Notifier {
    thresholds: Thresholds,
    inner: Mutex<NotifierState>,
    delivered: AtomicU64,
}

impl Notifier {
    /// A notifier in the high state with no callback.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            inner: Mutex::new(NotifierState {
                state: MemoryAvailable::High,
                callback: None,
                queue: VecDeque::new(),
                delivering: false,
            }),
            delivered: AtomicU64::new(0),
        }
    }

    /// Replaces the callback (the old one is dropped, which releases it).
    pub fn register(&self, callback: Option<Arc<dyn MemoryNotificationCallback>>) {
        let old = std::mem::replace(&mut self.inner.lock().callback, callback);
        drop(old);
    }

    /// The current state.
    pub fn state(&self) -> MemoryAvailable {
        self.inner.lock().state
    }

    /// Feeds a new load: a change of state is queued, to be delivered by
    /// [`deliver`](Self::deliver). Cheap; callers may hold their own lock
    /// (so that loads are fed in the order they happened).
    pub fn update(&self, load: MemoryLoad) {
        let mut inner = self.inner.lock();
        let next = self.thresholds.next(inner.state, load);
        if next != inner.state {
            inner.state = next;
            if inner.callback.is_some() {
                inner.queue.push_back(next);
            }
        }
    }

    /// Delivers the queued changes on this thread, unless another thread is
    /// delivering already (it will deliver them, in order). Call it with no
    /// lock held: the callback may call the manager again.
    pub fn deliver(&self) {
        let mut inner = self.inner.lock();
        if inner.delivering || inner.queue.is_empty() {
            return;
        }
        inner.delivering = true;
        while let Some(event) = inner.queue.pop_front() {
            let callback = inner.callback.clone();
            drop(inner);
            if let Some(callback) = callback {
                callback.on_memory_notification(event);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            inner = self.inner.lock();
        }
        inner.delivering = false;
    }

    /// [`update`](Self::update) then [`deliver`](Self::deliver).
    pub fn observe(&self, load: MemoryLoad) {
        self.update(load);
        self.deliver();
    }

    /// How many notifications were delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

struct WatcherControl {
    stop: bool,
    kick: bool,
}

/// A fork takes the notifier's lock (after the manager's, under which the
/// notifier is updated); in the child, a delivery another thread was
/// making is over (that thread is not there), so the next change delivers.
#[cfg(not(loom))]
impl crate::sync::fork::ForkLocks for Notifier {
    fn lock_for_fork(&self, fork: &crate::sync::fork::InFork) {
        self.inner.lock_for_fork(fork);
    }

    fn unlock_in_parent(&self, fork: &crate::sync::fork::InFork) {
        self.inner.unlock_in_parent(fork);
    }

    fn reset_in_child(&self, fork: &crate::sync::fork::InFork) {
        self.inner.reset_in_child(fork);
        self.inner.lock().delivering = false;
    }
}

/// Forks this process is a child of (counted in the child, by the fork
/// handler): a watcher started before the last of them has no thread.
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Called in a fork's child: every watcher started before is marked not
/// running (its thread is not in the child), so that the next need starts
/// a new one.
pub(crate) fn after_fork_in_child() {
    FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn forks() -> u64 {
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A thread that watches the machine's (or cgroup's) load while a callback
/// is registered and no budget decides the load: it sleeps on a condition
/// variable between polls, wakes at once when the manager changed memory,
/// and stops with the manager.
pub struct Watcher {
    control: Arc<(parking_lot::Mutex<WatcherControl>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// [`FORKS`] when it started.
    forks: u64,
}

impl Watcher {
    /// Starts watching `machine` for `notifier`.
    pub fn start(notifier: Arc<Notifier>, machine: MachineMemory, poll: Duration) -> Self {
        let control = Arc::new((
            parking_lot::Mutex::new(WatcherControl {
                stop: false,
                kick: true,
            }),
            Condvar::new(),
        ));
        let shared = control.clone();
        let thread = std::thread::Builder::new()
            .name("hostmem-load-watcher".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                loop {
                    {
                        let mut c = lock.lock();
                        if !c.kick && !c.stop {
                            wake.wait_for(&mut c, poll);
                        }
                        if c.stop {
                            return;
                        }
                        c.kick = false;
                    }
                    if let Some(load) = machine.load() {
                        notifier.observe(load);
                    }
                }
            })
            .ok();
        Self {
            control,
            thread,
            forks: forks(),
        }
    }

    /// Whether its thread exists: false in a fork's child (the thread
    /// stayed in the parent).
    pub fn is_running(&self) -> bool {
        self.forks == forks()
    }

    /// Asks for a look at the load now (memory changed).
    pub fn kick(&self) {
        let (lock, wake) = &*self.control;
        lock.lock().kick = true;
        wake.notify_one();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if !self.is_running() {
            // A fork's child: the thread is the parent's. Nothing to stop
            // or join (joining would wait for ever), and its control may
            // be locked by it: both are left alone.
            std::mem::forget(self.thread.take());
            return;
        }
        let (lock, wake) = &*self.control;
        lock.lock().stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The last reference to the manager may be dropped by a
            // callback running on the watcher itself: it stops on its own
            // and must not join itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        low_percent: 90,
        high_percent: 60,
    };

    fn load(pct: u64) -> MemoryLoad {
        MemoryLoad {
            used_bytes: pct,
            total_bytes: 100,
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MemoryAvailable>>);
    impl MemoryNotificationCallback for Recorder {
        fn on_memory_notification(&self, state: MemoryAvailable) {
            self.0.lock().push(state);
        }
    }

    #[test]
    fn fill_and_drain_delivers_each_change_once() {
        let n = Notifier::new(T);
        let rec = Arc::new(Recorder::default());
        n.register(Some(rec.clone()));
        for pct in (0..=100).chain((0..=100).rev()) {
            n.observe(load(pct));
        }
        use MemoryAvailable::*;
        assert_eq!(*rec.0.lock(), vec![Low, Neutral, High]);
    }

    #[test]
    fn between_thresholds_the_state_holds() {
        use MemoryAvailable::*;
        assert_eq!(T.next(High, load(89)), High);
        assert_eq!(T.next(High, load(90)), Low);
        assert_eq!(T.next(Low, load(89)), Neutral);
        assert_eq!(T.next(Neutral, load(75)), Neutral);
        assert_eq!(T.next(Neutral, load(60)), High);
        assert_eq!(T.next(Neutral, load(95)), Low);
    }

    #[test]
    fn a_callback_that_calls_back_gets_events_in_order() {
        struct Reentrant(Arc<Notifier>, Mutex<Vec<MemoryAvailable>>);
        impl MemoryNotificationCallback for Reentrant {
            fn on_memory_notification(&self, state: MemoryAvailable) {
                self.1.lock().push(state);
                if state == MemoryAvailable::Low {
                    self.0.observe(load(10));
                }
            }
        }
        let n = Arc::new(Notifier::new(T));
        let cb = Arc::new(Reentrant(n.clone(), Mutex::new(Vec::new())));
        n.register(Some(cb.clone()));
        n.observe(load(95));
        assert_eq!(
            *cb.1.lock(),
            vec![MemoryAvailable::Low, MemoryAvailable::High]
        );
        n.register(None);
    }
}

/// The notifier under loom's model checker (`RUSTFLAGS="--cfg loom" cargo
/// test --release --lib loom_`): loads fed from several threads at once;
/// every change of state must reach the callback exactly once, in the
/// order the changes were made, one call at a time, and nothing may stay
/// queued once every thread is done.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::prim::{AtomicBool, model};
    use loom::thread;

    const T: Thresholds = Thresholds {
        low_percent: 90,
        high_percent: 60,
    };

    fn load(pct: u64) -> MemoryLoad {
        MemoryLoad {
            used_bytes: pct,
            total_bytes: 100,
        }
    }

    /// A callback that records what it is told, takes its time (other
    /// threads run during the call), and fails if two calls overlap.
    #[derive(Default)]
    struct Recorder {
        in_call: AtomicBool,
        events: std::sync::Mutex<Vec<MemoryAvailable>>,
    }

    impl Recorder {
        fn record(&self, state: MemoryAvailable) {
            assert!(
                !self.in_call.swap(true, Ordering::SeqCst),
                "two notifications at once"
            );
            thread::yield_now();
            self.events.lock().unwrap().push(state);
            self.in_call.store(false, Ordering::SeqCst);
        }

        fn events(&self) -> Vec<MemoryAvailable> {
            self.events.lock().unwrap().clone()
        }
    }

    impl MemoryNotificationCallback for Recorder {
        fn on_memory_notification(&self, state: MemoryAvailable) {
            self.record(state);
        }
    }

    /// Whether the state machine can go from `from` to `to` in one change.
    fn is_change(from: MemoryAvailable, to: MemoryAvailable) -> bool {
        use MemoryAvailable::*;
        matches!(
            (from, to),
            (High, Low) | (Low, Neutral) | (Low, High) | (Neutral, High) | (Neutral, Low)
        )
    }

    /// Once every thread is done: nothing queued or being delivered; the
    /// events, from the initial `High`, are a chain of changes ending in
    /// the current state; each was counted once.
    fn assert_delivered(n: &Notifier, events: &[MemoryAvailable]) {
        {
            let inner = n.inner.lock();
            assert!(inner.queue.is_empty(), "left queued: {:?}", inner.queue);
            assert!(!inner.delivering, "still marked delivering");
        }
        let mut state = MemoryAvailable::High;
        for &event in events {
            assert!(
                is_change(state, event),
                "{state:?} then {event:?}: a change lost or doubled in {events:?}"
            );
            state = event;
        }
        assert_eq!(
            state,
            n.state(),
            "the last change was not delivered: {events:?}"
        );
        assert_eq!(n.delivered(), events.len() as u64);
    }

    /// Low, high and low again from three threads: the changes alternate,
    /// whatever the order, so a lost or doubled one shows as a repeat.
    #[test]
    fn loom_changes_from_three_threads_are_each_delivered_once() {
        model("changes from three threads are each delivered once", || {
            let n = Arc::new(Notifier::new(T));
            let recorder = Arc::new(Recorder::default());
            n.register(Some(recorder.clone()));
            let threads: Vec<_> = [95, 10]
                .into_iter()
                .map(|pct| {
                    let n = n.clone();
                    thread::spawn(move || n.observe(load(pct)))
                })
                .collect();
            n.observe(load(95));
            threads.into_iter().for_each(|t| t.join().unwrap());
            assert_delivered(&n, &recorder.events());
            n.register(None);
        });
    }

    /// One thread goes low then neutral while another goes high: whatever
    /// the order, what is delivered is a chain of changes ending in the
    /// state the notifier is in.
    #[test]
    fn loom_a_neutral_state_is_delivered_between_others() {
        model("a neutral state is delivered between others", || {
            let n = Arc::new(Notifier::new(T));
            let recorder = Arc::new(Recorder::default());
            n.register(Some(recorder.clone()));
            let other = {
                let n = n.clone();
                thread::spawn(move || n.observe(load(10)))
            };
            n.observe(load(95));
            n.observe(load(75));
            other.join().unwrap();
            let events = recorder.events();
            assert_delivered(&n, &events);
            assert!(events.starts_with(&[MemoryAvailable::Low]));
            n.register(None);
        });
    }

    /// A callback that feeds a load itself (as a runtime's may, calling
    /// the manager) while another thread feeds one: its change is queued
    /// and delivered after the call, not inside it.
    #[test]
    fn loom_a_change_made_by_the_callback_is_delivered_after_it() {
        struct Reentrant {
            notifier: Arc<Notifier>,
            recorder: Recorder,
        }
        impl MemoryNotificationCallback for Reentrant {
            fn on_memory_notification(&self, state: MemoryAvailable) {
                self.recorder.record(state);
                if state == MemoryAvailable::Low {
                    self.notifier.observe(load(10));
                }
            }
        }
        model(
            "a change made by the callback is delivered after it",
            || {
                let n = Arc::new(Notifier::new(T));
                let callback = Arc::new(Reentrant {
                    notifier: n.clone(),
                    recorder: Recorder::default(),
                });
                n.register(Some(callback.clone()));
                let other = {
                    let n = n.clone();
                    thread::spawn(move || n.observe(load(95)))
                };
                n.observe(load(95));
                other.join().unwrap();
                let events = callback.recorder.events();
                assert_delivered(&n, &events);
                assert!(events.len() >= 2, "the callback's own change: {events:?}");
                n.register(None);
            },
        );
    }
}
