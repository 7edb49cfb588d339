//! Memory-pressure notifications: a state machine over the load with two
//! thresholds (hysteresis), delivered in order, never under the manager's
//! lock, and a watcher thread for loads that change without the runtime.
//!
//! The notifier has no lock-free part: its state, queue and delivery flag
//! are under one mutex, and its atomics count deliveries and panics. What needs
//! checking is the hand-off between threads (one delivers, the others
//! queue, nobody holds the lock during a call), so the notifier's mutex
//! and counter come from [`prim`](crate::sync::prim), and a build with
//! `--cfg loom` checks it under loom (`loom_tests` below). The watcher
//! thread is not modelled.

use super::load::{MachineMemory, MemoryLoad};
use crate::sync::prim::{AtomicU64, Mutex, Ordering};
use parking_lot::Condvar;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
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
///
/// The call is made with no lock of the manager held, on the thread whose
/// call changed the load (with a budget) or on the manager's load-watcher
/// thread (without one), one call at a time and in order. It may call
/// anything on the manager, its heaps included: register another
/// callback, unregister (`None`), or drop the last reference to the
/// manager or to itself. Nothing waits for a running call to finish: a
/// thread that unregisters, or drops the manager, while a call runs on the
/// watcher returns at once and the call ends on its own, so a callback may
/// also take locks that such a thread holds. (One call already on its way
/// may still begin just after the unregistering call returned; none after
/// that.)
/// A panic in the callback is caught, counted
/// ([`Statistics::notification_panics`](super::Statistics::notification_panics))
/// and reported by the panic hook; later changes are still delivered.
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
    panics: AtomicU64,
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
            panics: AtomicU64::new(0),
        }
    }

    /// Replaces the callback and returns the old one, for the caller to
    /// drop (which releases it, and may call out) once it holds no lock.
    /// Changes queued for the old callback are dropped; a new callback is
    /// told the state at the next [`deliver`](Self::deliver) if it is not
    /// high (it may have changed while no callback listened).
    #[must_use = "dropping the old callback calls out: drop it with no lock held"]
    pub fn register(
        &self,
        callback: Option<Arc<dyn MemoryNotificationCallback>>,
    ) -> Option<Arc<dyn MemoryNotificationCallback>> {
        let mut inner = self.inner.lock();
        inner.queue.clear();
        if callback.is_some() && inner.state != MemoryAvailable::High {
            let state = inner.state;
            inner.queue.push_back(state);
        }
        std::mem::replace(&mut inner.callback, callback)
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

    /// [`update`](Self::update) with the load `load` computes under the
    /// notifier's lock: for callers that change the load side by side
    /// (commits in place, under the manager's shared lock), each reading
    /// it after its change from an atomic count, so that the loads fed
    /// are in the order they were read, and the last is the latest.
    pub fn update_with(&self, load: impl FnOnce() -> MemoryLoad) {
        let mut inner = self.inner.lock();
        let next = self.thresholds.next(inner.state, load());
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
                // A panicking callback must not stop delivery for good
                // (`delivering` would stay set) nor kill the thread that
                // delivers (the watcher, or a caller whose call succeeded):
                // the notification counts as given, and the panic is
                // counted. The panic hook has reported it already.
                let call = AssertUnwindSafe(|| callback.on_memory_notification(event));
                if catch_unwind(call).is_err() {
                    self.panics.fetch_add(1, Ordering::Relaxed);
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
                // The last reference may be this one (the callback was
                // replaced meanwhile): released here, with no lock held.
                drop(callback);
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

    /// How many notifications ended in a panic of the callback.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

struct WatcherControl {
    stop: bool,
    kick: bool,
    /// Set while the thread reads the load or delivers: from its last
    /// look at `stop` until it is back under the lock.
    busy: bool,
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next watcher started on this thread fails to spawn.
    pub(crate) static FAIL_NEXT_SPAWN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

/// The slot of a manager's load watcher, behind the registration lock (a
/// fork takes it). In a fork's child, the parent's watcher thread is also
/// forgotten in parking_lot's wait queues.
#[derive(Default)]
pub struct WatcherSlot(parking_lot::Mutex<Option<Watcher>>);

impl std::ops::Deref for WatcherSlot {
    type Target = parking_lot::Mutex<Option<Watcher>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(not(loom))]
impl crate::sync::fork::ForkLocks for WatcherSlot {
    fn lock_for_fork(&self, fork: &crate::sync::fork::InFork) {
        self.0.lock_for_fork(fork);
    }

    fn unlock_in_parent(&self, fork: &crate::sync::fork::InFork) {
        self.0.unlock_in_parent(fork);
    }

    fn reset_in_child(&self, fork: &crate::sync::fork::InFork) {
        self.0.reset_in_child(fork);
        if let Some(watcher) = &*self.0.lock() {
            watcher.forget_waiters(fork);
        }
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
/// and stops when dropped.
///
/// Dropping it never waits for a callback: an idle thread is joined (it
/// only has to see the stop flag), a busy one is told to stop and left to
/// finish its call and exit on its own, so that a callback may block on
/// whatever the dropping thread holds.
pub struct Watcher {
    control: Arc<(parking_lot::Mutex<WatcherControl>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// [`FORKS`] when it started.
    forks: u64,
}

impl Watcher {
    /// Starts watching `machine` for `notifier`; the error of a thread
    /// that could not be spawned.
    pub fn start(
        notifier: Arc<Notifier>,
        machine: MachineMemory,
        poll: Duration,
    ) -> std::io::Result<Self> {
        let control = Arc::new((
            parking_lot::Mutex::new(WatcherControl {
                stop: false,
                kick: true,
                busy: false,
            }),
            Condvar::new(),
        ));
        let shared = control.clone();
        #[cfg(test)]
        if FAIL_NEXT_SPAWN.take() {
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        let thread = std::thread::Builder::new()
            .name("hostmem-load-watcher".into())
            .spawn(move || {
                let (lock, wake) = &*shared;
                loop {
                    {
                        let mut c = lock.lock();
                        c.busy = false;
                        if !c.kick && !c.stop {
                            wake.wait_for(&mut c, poll);
                        }
                        if c.stop {
                            return;
                        }
                        c.kick = false;
                        c.busy = true;
                    }
                    if let Some(load) = machine.load() {
                        notifier.observe(load);
                    }
                }
            })?;
        Ok(Self {
            control,
            thread: Some(thread),
            forks: forks(),
        })
    }

    /// Forgets, in a fork's child, the parent's watcher thread in
    /// parking_lot's wait queues, where it waits on this watcher's
    /// condition variable or mutex (see `sync::fork`): before the child
    /// starts a watcher of its own, whose stack may be the ghost's.
    #[cfg(not(loom))]
    fn forget_waiters(&self, fork: &crate::sync::fork::InFork) {
        let (lock, wake) = &*self.control;
        fork.forget_condvar_waiters(wake);
        fork.forget_mutex_waiters(lock);
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
        let busy = {
            let mut c = lock.lock();
            c.stop = true;
            c.busy
        };
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // Joined only when idle: it sees `stop` before it could call
            // out, so the join is short and waits for nothing the caller
            // may hold. Busy (a callback may be running, maybe the one
            // dropping this), it exits by itself after the call.
            if !busy && thread.thread().id() != std::thread::current().id() {
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
        let _ = n.register(Some(rec.clone()));
        for pct in (0..=100).chain((0..=100).rev()) {
            n.observe(load(pct));
        }
        use MemoryAvailable::*;
        assert_eq!(*rec.0.lock(), vec![Low, Neutral, High]);
    }

    #[test]
    fn a_callback_registered_while_low_is_told_and_the_old_ones_queue_is_dropped() {
        use MemoryAvailable::*;
        let n = Notifier::new(T);
        let old = Arc::new(Recorder::default());
        let _ = n.register(Some(old.clone()));
        n.update(load(95)); // queued for `old`, not delivered yet
        let new = Arc::new(Recorder::default());
        let replaced = n.register(Some(new.clone()));
        assert!(replaced.is_some_and(|r| Arc::ptr_eq(&r, &(old.clone() as Arc<_>))));
        n.deliver();
        assert_eq!(*old.0.lock(), vec![], "not told after it was replaced");
        assert_eq!(*new.0.lock(), vec![Low], "told the state at once");
        // Registered while high: nothing to tell.
        n.observe(load(10));
        let _ = n.register(Some(old.clone()));
        n.deliver();
        assert_eq!(*old.0.lock(), vec![]);
        assert_eq!(*new.0.lock(), vec![Low, High]);
    }

    #[test]
    fn a_panicking_callback_is_counted_and_delivery_goes_on() {
        struct Panics(Recorder);
        impl MemoryNotificationCallback for Panics {
            fn on_memory_notification(&self, state: MemoryAvailable) {
                self.0.on_memory_notification(state);
                if state == MemoryAvailable::Low {
                    panic!("a callback panics (expected by the test)");
                }
            }
        }
        let n = Notifier::new(T);
        let cb = Arc::new(Panics(Recorder::default()));
        let _ = n.register(Some(cb.clone()));
        n.observe(load(95));
        n.observe(load(10));
        assert_eq!(
            *cb.0.0.lock(),
            vec![MemoryAvailable::Low, MemoryAvailable::High]
        );
        assert_eq!((n.delivered(), n.panics()), (2, 1));
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
        let _ = n.register(Some(cb.clone()));
        n.observe(load(95));
        assert_eq!(
            *cb.1.lock(),
            vec![MemoryAvailable::Low, MemoryAvailable::High]
        );
        let _ = n.register(None);
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
            let _ = n.register(Some(recorder.clone()));
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
            let _ = n.register(None);
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
            let _ = n.register(Some(recorder.clone()));
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
            let _ = n.register(None);
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
                let _ = n.register(Some(callback.clone()));
                let other = {
                    let n = n.clone();
                    thread::spawn(move || n.observe(load(95)))
                };
                n.observe(load(95));
                other.join().unwrap();
                let events = callback.recorder.events();
                assert_delivered(&n, &events);
                assert!(events.len() >= 2, "the callback's own change: {events:?}");
                let _ = n.register(None);
            },
        );
    }
}
