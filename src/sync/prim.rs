//! The primitives under [`ShardedLock`](super::ShardedLock) and the
//! notifier of memory-pressure changes: parking_lot's and the standard
//! library's, or, in a build with `--cfg loom`, models of them over
//! [loom](https://docs.rs/loom)'s, so that loom's model checker can run
//! the code above through every interleaving of its threads (the
//! `loom_tests` modules; the README's Testing section has the command).
//!
//! The two sets have one interface:
//!
//! - [`RawRwLock`]: a reader-writer lock without guards, locked and
//!   unlocked by hand (parking_lot's raw lock). loom's `RwLock` has no raw
//!   form and no timeouts, so under loom it is a count of readers under a
//!   loom mutex, with a condition variable to wait on, and a timed
//!   acquisition tries twice (once more after the other threads had a
//!   turn) before it gives up: the model explores both the acquisition and
//!   the timeout;
//! - [`Mutex`]: `lock()` returns the guard (no poisoning);
//! - [`UnsafeCell`]: reached through `with` and `with_mut`, so that loom
//!   can see every access and report two that are not ordered;
//! - the atomics, and [`thread_slot`], a small number per thread (under
//!   loom, per modelled thread).
#![allow(unsafe_code)]

pub(crate) use imp::*;

#[cfg(not(loom))]
mod imp {
    use parking_lot::lock_api::{RawRwLock as _, RawRwLockTimed as _};
    use std::time::{Duration, Instant};

    pub(crate) use parking_lot::Mutex;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    /// The slot of the calling thread: a small number, distinct for the
    /// first threads that ask.
    ///
    /// A constant-initialised thread local, so that reading it is one
    /// load from the thread's block (a lazily initialised one is a call
    /// to its accessor on every read).
    #[inline(always)]
    pub(crate) fn thread_slot() -> usize {
        thread_local! {
            static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(UNASSIGNED) };
        }
        match SLOT.get() {
            UNASSIGNED => assign_slot(&SLOT),
            slot => slot,
        }
    }

    /// The value of a thread's slot before it first asks.
    const UNASSIGNED: usize = usize::MAX;

    #[cold]
    #[inline(never)]
    fn assign_slot(slot: &'static std::thread::LocalKey<std::cell::Cell<usize>>) -> usize {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Never UNASSIGNED: that would take usize::MAX threads.
        let assigned = NEXT.fetch_add(1, Ordering::Relaxed);
        slot.set(assigned);
        assigned
    }

    /// A reader-writer lock without guards: parking_lot's raw lock, in a
    /// cell so that a fork's child can set it back to unlocked
    /// ([`reset`](Self::reset)).
    pub(crate) struct RawRwLock(std::cell::UnsafeCell<parking_lot::RawRwLock>);

    // SAFETY: parking_lot's raw lock is made to be shared between threads;
    // the cell is written only by `reset`, whose contract excludes every
    // other access.
    unsafe impl Sync for RawRwLock {}
    // SAFETY: as above; the lock holds no thread-bound state.
    unsafe impl Send for RawRwLock {}

    impl RawRwLock {
        pub(crate) fn new() -> Self {
            Self(std::cell::UnsafeCell::new(parking_lot::RawRwLock::INIT))
        }

        /// The lock.
        #[inline(always)]
        fn raw(&self) -> &parking_lot::RawRwLock {
            // SAFETY: the cell is written only by `reset`, while nothing
            // else uses the lock (its contract), so no write overlaps this
            // shared borrow.
            unsafe { &*self.0.get() }
        }

        #[inline]
        pub(crate) fn lock_shared(&self) {
            self.raw().lock_shared();
        }

        /// Whether the lock was taken shared without waiting.
        #[inline]
        pub(crate) fn try_lock_shared(&self) -> bool {
            self.raw().try_lock_shared().is_some()
        }

        /// Whether the lock was taken shared within `timeout`.
        #[inline]
        pub(crate) fn try_lock_shared_for(&self, timeout: Duration) -> bool {
            self.raw().try_lock_shared_for(timeout).is_some()
        }

        /// # Safety
        ///
        /// The calling thread holds the lock shared, and gives that up.
        #[inline]
        pub(crate) unsafe fn unlock_shared(&self) {
            // SAFETY: the caller holds the lock shared (this function's
            // contract); parking_lot's guard tokens carry no state.
            unsafe { self.raw().unlock_shared(Default::default()) }
        }

        #[inline]
        pub(crate) fn try_lock_exclusive(&self) -> bool {
            self.raw().try_lock_exclusive().is_some()
        }

        #[inline]
        pub(crate) fn lock_exclusive(&self) {
            self.raw().lock_exclusive();
        }

        /// Whether the lock was taken exclusively by `deadline`.
        #[inline]
        pub(crate) fn try_lock_exclusive_until(&self, deadline: Instant) -> bool {
            self.raw().try_lock_exclusive_until(deadline).is_some()
        }

        /// # Safety
        ///
        /// The calling thread holds the lock exclusively, and gives that up.
        #[inline]
        pub(crate) unsafe fn unlock_exclusive(&self) {
            // SAFETY: the caller holds the lock exclusively (this
            // function's contract); the guard tokens carry no state.
            unsafe { self.raw().unlock_exclusive(Default::default()) }
        }

        /// Sets the lock back to unlocked without waking anyone, and
        /// forgets the threads parking_lot's queues hold for it: for a
        /// fork's child, where the threads that waited for it do not
        /// exist (see `sync::fork`).
        ///
        /// # Safety
        ///
        /// The calling thread is the process's only one, and nothing uses
        /// the lock meanwhile.
        pub(crate) unsafe fn reset(&self) {
            // parking_lot queues readers and writers under the lock's
            // address, and a writer waiting for readers to leave under the
            // next one.
            let key = self.0.get().addr();
            for key in [key, key + 1] {
                // SAFETY: the process's only thread (the contract), and
                // keys of this lock, hostmem's own.
                unsafe { crate::sync::fork::forget_waiters(key) };
            }
            // SAFETY: nothing else uses the lock meanwhile (the contract),
            // so no borrow from `raw` is live; the raw lock has no
            // destructor to skip.
            unsafe { *self.0.get() = parking_lot::RawRwLock::INIT }
        }
    }

    /// `std::cell::UnsafeCell`, reached through closures as loom's is.
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
mod imp {
    use loom::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// The slot of the calling modelled thread, numbered in the order the
    /// threads first ask (afresh in each execution of the model).
    pub(crate) fn thread_slot() -> usize {
        loom::lazy_static! {
            static ref NEXT: AtomicUsize = AtomicUsize::new(0);
        }
        loom::thread_local! {
            static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        SLOT.with(|slot| *slot)
    }

    /// loom's mutex with parking_lot's interface (a panic while holding it
    /// does not poison it).
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    /// The state of a lock held exclusively.
    const EXCLUSIVE: usize = usize::MAX;

    /// A model of a raw reader-writer lock: the number of readers, or
    /// [`EXCLUSIVE`], under a loom mutex, and a condition variable that
    /// waiters block on (blocked threads, unlike spinning ones, give loom
    /// finitely many interleavings to explore).
    pub(crate) struct RawRwLock {
        state: loom::sync::Mutex<usize>,
        released: loom::sync::Condvar,
    }

    impl RawRwLock {
        pub(crate) fn new() -> Self {
            Self {
                state: loom::sync::Mutex::new(0),
                released: loom::sync::Condvar::new(),
            }
        }

        fn state(&self) -> loom::sync::MutexGuard<'_, usize> {
            self.state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn try_lock_shared(&self) -> bool {
            let mut state = self.state();
            let free = *state != EXCLUSIVE;
            if free {
                *state += 1;
            }
            free
        }

        pub(crate) fn lock_shared(&self) {
            let mut state = self.state();
            while *state == EXCLUSIVE {
                state = self
                    .released
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            *state += 1;
        }

        /// Two tries, the second after the other threads had a turn: if
        /// both fail, the timeout passed while a writer held the lock.
        pub(crate) fn try_lock_shared_for(&self, _timeout: Duration) -> bool {
            self.try_lock_shared() || {
                loom::thread::yield_now();
                self.try_lock_shared()
            }
        }

        /// # Safety
        ///
        /// The calling thread holds the lock shared, and gives that up.
        pub(crate) unsafe fn unlock_shared(&self) {
            let mut state = self.state();
            assert!(
                *state != 0 && *state != EXCLUSIVE,
                "unlock_shared of a lock not held shared"
            );
            *state -= 1;
            if *state == 0 {
                self.released.notify_all();
            }
        }

        pub(crate) fn try_lock_exclusive(&self) -> bool {
            let mut state = self.state();
            let free = *state == 0;
            if free {
                *state = EXCLUSIVE;
            }
            free
        }

        pub(crate) fn lock_exclusive(&self) {
            let mut state = self.state();
            while *state != 0 {
                state = self
                    .released
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            *state = EXCLUSIVE;
        }

        /// As [`try_lock_shared_for`](Self::try_lock_shared_for).
        pub(crate) fn try_lock_exclusive_until(&self, _deadline: Instant) -> bool {
            self.try_lock_exclusive() || {
                loom::thread::yield_now();
                self.try_lock_exclusive()
            }
        }

        /// # Safety
        ///
        /// The calling thread holds the lock exclusively, and gives that up.
        pub(crate) unsafe fn unlock_exclusive(&self) {
            let mut state = self.state();
            assert_eq!(
                *state, EXCLUSIVE,
                "unlock_exclusive of a lock not held exclusively"
            );
            *state = 0;
            self.released.notify_all();
        }

        /// Sets the lock back to unlocked without waking anyone (a fork's
        /// child; not reached under loom, which has no fork handlers).
        ///
        /// # Safety
        ///
        /// The calling thread is the only one using the lock.
        pub(crate) unsafe fn reset(&self) {
            *self.state() = 0;
        }
    }
}

/// Runs `f` through loom's model checker: every interleaving of the
/// threads it spawns, with at most `LOOM_MAX_PREEMPTIONS` preemptions
/// each (5 if unset: all eight models take seconds; 8 takes minutes). Prints how many executions it explored and how long
/// that took.
#[cfg(all(test, loom))]
pub(crate) fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};

    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(5);
    }
    let executions = Arc::new(StdAtomicU64::new(0));
    let counted = executions.clone();
    let started = std::time::Instant::now();
    builder.check(move || {
        counted.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    println!(
        "loom: {name}: {} executions, preemption bound {}, {:.1} s",
        executions.load(StdOrdering::Relaxed),
        builder.preemption_bound.unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
}
