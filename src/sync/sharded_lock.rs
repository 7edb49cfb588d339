//! `ShardedLock`: a reader-writer lock whose readers write only to their
//! own cache line.
//!
//! A plain reader-writer lock keeps one reader count that every reader
//! increments: on two cores that line bounces, and at ~50 ns a query the
//! bounce costs as much as the query. Here each thread reads through its
//! own shard (a raw parking_lot reader-writer lock on a cache line of its
//! own) and a writer takes every shard, in order. Readers on different
//! shards share nothing; writers pay one uncontended lock per shard.
//!
//! Acquisition is bounded by a timeout (one too long to express as a
//! deadline waits forever), and a write guard whose thread starts
//! panicking while it holds the lock marks the lock abandoned: the next
//! acquirer is told instead of being handed state a panic may have left
//! half-changed. As with the standard library's poisoning, what counts is
//! whether the panic began while the guard was held: a thread that takes
//! the lock while already unwinding (a destructor running during an
//! unrelated panic) abandons nothing. A reader cannot change the value,
//! so its panic abandons nothing either.
//!
//! The primitives come from [`prim`](super::prim), so that a build with
//! `--cfg loom` checks this file under loom (`loom_tests` below).
#![allow(unsafe_code)]

use super::prim::{self, AtomicBool, Ordering, RawRwLock, UnsafeCell};
use parking_lot::lock_api::GuardNoSend;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a lock could not be taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockError {
    /// The timeout passed while another thread held the lock.
    Timeout,
    /// A thread panicked while holding the lock.
    Abandoned,
}

#[repr(align(128))]
pub(super) struct Shard(RawRwLock);

/// Takes every shard of a lock exclusively for a fork (see `fork`), as a
/// writer would, waiting as long as it takes.
pub(super) fn lock_for_fork(shards: &[Shard]) {
    for shard in shards {
        shard.0.lock_exclusive();
    }
}

/// Releases the shards [`lock_for_fork`] took, in a fork's parent.
///
/// # Safety
///
/// The calling thread took them with `lock_for_fork`.
pub(super) unsafe fn unlock_in_parent(shards: &[Shard]) {
    for shard in shards {
        // SAFETY: locked exclusively by this thread (the contract).
        unsafe { shard.0.unlock_exclusive() }
    }
}

/// Sets the shards [`lock_for_fork`] took back to unlocked in a fork's
/// child, without waking the parent's waiters (not in the child).
///
/// # Safety
///
/// The process is the child of a fork whose prepare handler took them, and
/// the calling thread is its only one.
pub(super) unsafe fn reset_in_child(shards: &[Shard]) {
    for shard in shards {
        // SAFETY: the child's only thread, and no guard of the lock is in
        // use there (the fork's prepare handler held every shard).
        unsafe { shard.0.reset() }
    }
}

/// The slot of the calling thread: a small number, distinct for the first
/// threads that ask, used to pick a shard (and per-thread counters).
#[inline]
pub fn thread_slot() -> usize {
    prim::thread_slot()
}

/// A reader-writer lock with a shard per thread slot (see the module docs).
pub struct ShardedLock<T> {
    /// Shared with the fork handlers' registry, which holds it weakly.
    shards: Arc<[Shard]>,
    abandoned: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through guards: a `WriteGuard` holds
// every shard exclusively (one `&mut T` at a time, possibly on another
// thread: `T: Send`), a `ReadGuard` holds one shard shared, which excludes
// writers, so readers on several threads share `&T` (`T: Sync`).
unsafe impl<T: Send> Send for ShardedLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for ShardedLock<T> {}

impl<T> ShardedLock<T> {
    /// A lock with `shards` shards (at least one), rounded up to a power
    /// of two so that picking a thread's shard is a mask, not a division.
    pub fn new(value: T, shards: usize) -> Self {
        let shards: Arc<[Shard]> = (0..shards.max(1).next_power_of_two())
            .map(|_| Shard(RawRwLock::new()))
            .collect();
        // A fork takes every shard first (see `fork`).
        #[cfg(not(loom))]
        super::fork::register_shards(Arc::downgrade(&shards));
        Self {
            shards,
            abandoned: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// A lock with a shard for each of twice the machine's cores (at least
    /// four), so that busy threads rarely share one.
    pub fn with_default_shards(value: T) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self::new(value, (2 * cores).clamp(4, 64))
    }

    /// Whether a thread panicked while holding the lock.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    fn check_abandoned(&self) -> Result<(), LockError> {
        if self.is_abandoned() {
            Err(LockError::Abandoned)
        } else {
            Ok(())
        }
    }

    /// Shared access, waiting at most `timeout` (`None`: forever).
    #[inline]
    pub fn read(&self, timeout: Option<Duration>) -> Result<ReadGuard<'_, T>, LockError> {
        // The shard count is a power of two (`new`).
        let shard = &self.shards[thread_slot() & (self.shards.len() - 1)].0;
        match timeout {
            None => shard.lock_shared(),
            Some(t) => {
                if !shard.try_lock_shared_for(t) {
                    return Err(LockError::Timeout);
                }
            }
        }
        // Built before the check, so that the shard is unlocked again when
        // the guard drops.
        let guard = ReadGuard {
            lock: self,
            shard,
            _not_send: PhantomData,
        };
        self.check_abandoned()?;
        Ok(guard)
    }

    /// Shared access if it can be had at once: `None` while a writer holds
    /// (or is taking) the lock.
    #[inline]
    pub fn try_read(&self) -> Option<Result<ReadGuard<'_, T>, LockError>> {
        let shard = &self.shards[thread_slot() & (self.shards.len() - 1)].0;
        if !shard.try_lock_shared() {
            return None;
        }
        // Built before the check, so that the shard is unlocked again when
        // the guard drops.
        let guard = ReadGuard {
            lock: self,
            shard,
            _not_send: PhantomData,
        };
        Some(self.check_abandoned().map(|()| guard))
    }

    /// Exclusive access, waiting at most `timeout` in all (`None`: forever).
    ///
    /// Each shard is tried first; the clock is read (for the deadline)
    /// only when one is contended, so an uncontended write allocates
    /// nothing and makes no system call.
    #[inline(always)]
    pub fn write(&self, timeout: Option<Duration>) -> Result<WriteGuard<'_, T>, LockError> {
        // Kept until the check, so that an abandoned lock is unlocked again
        // when the guard drops.
        let guard = self.write_even_if_abandoned(timeout)?;
        self.check_abandoned()?;
        Ok(guard)
    }

    /// As [`write`](Self::write), but also when the lock is abandoned: for
    /// the one caller that must reach the value whatever a panic left
    /// (shutting down releases every region it still can).
    ///
    /// Inlined up to the first contended shard, so that an uncontended
    /// write is a few instructions in the caller and no call (a call's
    /// return right after a page fault or a system call is slow on some
    /// machines); [`write_contended`](Self::write_contended) does the rest.
    #[inline(always)]
    pub fn write_even_if_abandoned(
        &self,
        timeout: Option<Duration>,
    ) -> Result<WriteGuard<'_, T>, LockError> {
        let taken = self
            .shards
            .iter()
            .take_while(|shard| shard.0.try_lock_exclusive())
            .count();
        if taken < self.shards.len() {
            self.write_contended(taken, timeout)?;
        }
        Ok(WriteGuard {
            lock: self,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        })
    }

    /// Takes the shards from `taken` on, the first of them contended,
    /// the ones before it held by this call already; on a timeout
    /// releases all of them.
    #[cold]
    #[inline(never)]
    fn write_contended(&self, taken: usize, timeout: Option<Duration>) -> Result<(), LockError> {
        let deadline = deadline_after(timeout);
        for (i, shard) in self.shards.iter().enumerate().skip(taken) {
            let locked = shard.0.try_lock_exclusive()
                || match deadline {
                    None => {
                        shard.0.lock_exclusive();
                        true
                    }
                    Some(d) => shard.0.try_lock_exclusive_until(d),
                };
            if !locked {
                for taken in &self.shards[..i] {
                    // SAFETY: this call locked `taken` exclusively above;
                    // nothing else unlocks it.
                    unsafe { taken.0.unlock_exclusive() }
                }
                return Err(LockError::Timeout);
            }
        }
        Ok(())
    }
}

/// The moment `timeout` from now; `None` (no deadline) for no timeout or
/// one that would overflow the clock (`Duration::MAX`): waiting that long
/// is waiting forever.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Shared access to the value of a [`ShardedLock`].
///
/// It holds one shard shared; its `Drop` unlocks it. A reader cannot
/// change the value, so a panic while one is held abandons nothing.
pub struct ReadGuard<'a, T> {
    lock: &'a ShardedLock<T>,
    shard: &'a RawRwLock,
    /// Unlocked on the thread that locked it (parking_lot's raw lock asks
    /// for that), and shareable as `&T` is.
    _not_send: PhantomData<GuardNoSend>,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a shard shared, so no `WriteGuard` (which
        // needs every shard exclusively) exists while it lives.
        self.lock.value.with(|value| unsafe { &*value })
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this guard holds its shard shared (`read` locked it);
        // only this drop unlocks it.
        unsafe { self.shard.unlock_shared() }
    }
}

/// Exclusive access to the value of a [`ShardedLock`].
///
/// It holds every shard exclusively, as [`ShardedLock::write`] locked
/// them; its `Drop` unlocks them.
pub struct WriteGuard<'a, T> {
    lock: &'a ShardedLock<T>,
    /// Whether the thread was already panicking when it took the lock: only
    /// a panic that starts while the guard is held abandons the lock.
    panicking: bool,
    /// Unlocked on the thread that locked it.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds every shard exclusively: no other guard
        // exists while it lives.
        self.lock.value.with(|value| unsafe { &*value })
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        self.lock.value.with_mut(|value| unsafe { &mut *value })
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.lock.abandoned.store(true, Ordering::Release);
        }
        for shard in self.lock.shards.iter() {
            // SAFETY: this guard holds every shard exclusively (`write`
            // locked each); only this drop unlocks them.
            unsafe { shard.0.unlock_exclusive() }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn writers_exclude_readers_and_counts_stay_exact() {
        let lock = Arc::new(ShardedLock::new(0u64, 4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut w = lock.write(None).unwrap();
                        let v = *w;
                        *w = v + 1;
                        drop(w);
                        let r = lock.read(None).unwrap();
                        assert!(*r > 0);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(*lock.read(None).unwrap(), 40_000);
    }

    #[test]
    fn try_read_waits_for_no_writer() {
        let lock = ShardedLock::new(5u32, 4);
        let reader = lock.try_read().expect("free").expect("not abandoned");
        assert_eq!(*reader, 5);
        assert!(
            lock.try_read().is_some(),
            "readers share the lock, on one shard or another"
        );
        drop(reader);
        let writer = lock.write(None).unwrap();
        assert!(lock.try_read().is_none(), "a writer holds every shard");
        drop(writer);
        assert!(lock.try_read().is_some());
    }

    #[test]
    fn a_held_reader_times_a_writer_out() {
        let lock = Arc::new(ShardedLock::new((), 4));
        let reader = lock.read(None).unwrap();
        let other = lock.clone();
        let got =
            std::thread::spawn(move || other.write(Some(Duration::from_millis(30))).map(|_| ()))
                .join()
                .unwrap();
        assert_eq!(got, Err(LockError::Timeout));
        drop(reader);
        assert!(lock.write(Some(Duration::from_millis(30))).is_ok());
    }

    /// Whether `shard` is free: it can be locked exclusively (and is
    /// unlocked again).
    fn is_free(shard: &Shard) -> bool {
        let free = shard.0.try_lock_exclusive();
        if free {
            // SAFETY: locked exclusively just above, by this thread.
            unsafe { shard.0.unlock_exclusive() }
        }
        free
    }

    #[test]
    fn a_timed_out_writer_unlocks_the_shards_it_took() {
        let lock = Arc::new(ShardedLock::new((), 4));
        lock.shards[2].0.lock_shared();
        let other = lock.clone();
        let got =
            std::thread::spawn(move || other.write(Some(Duration::from_millis(20))).map(|_| ()))
                .join()
                .unwrap();
        assert_eq!(got, Err(LockError::Timeout));
        for (i, shard) in lock.shards.iter().enumerate().filter(|&(i, _)| i != 2) {
            assert!(is_free(shard), "shard {i} was unlocked");
        }
        // SAFETY: locked shared above, on this thread.
        unsafe { lock.shards[2].0.unlock_shared() }
        drop(lock.write(Some(Duration::from_millis(20))).unwrap());
        assert!(lock.shards.iter().all(is_free));
    }

    #[test]
    fn a_writer_waits_for_a_reader_without_a_timeout() {
        let lock = Arc::new(ShardedLock::new(0, 4));
        lock.shards[1].0.lock_shared();
        let other = lock.clone();
        let writer = std::thread::spawn(move || *other.write(None).unwrap() += 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!writer.is_finished());
        // SAFETY: locked shared above, on this thread.
        unsafe { lock.shards[1].0.unlock_shared() }
        writer.join().unwrap();
        assert_eq!(*lock.read(None).unwrap(), 1);
    }

    #[test]
    fn guards_unlock_their_shards() {
        let lock = ShardedLock::new(0, 4);
        let reader = lock.read(None).unwrap();
        let slot = thread_slot() % 4;
        assert!(!is_free(&lock.shards[slot]), "a reader holds its shard");
        drop(reader);
        assert!(lock.shards.iter().all(is_free));
        let writer = lock.write(None).unwrap();
        assert!(
            !lock.shards.iter().any(is_free),
            "a writer holds every shard"
        );
        drop(writer);
        assert!(lock.shards.iter().all(is_free));
    }

    #[test]
    fn a_panic_while_holding_abandons_the_lock() {
        let lock = Arc::new(ShardedLock::new(1, 2));
        let other = lock.clone();
        let joined = std::thread::spawn(move || {
            let _w = other.write(None).unwrap();
            panic!("while holding");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(lock.read(None).err(), Some(LockError::Abandoned));
        assert_eq!(lock.write(None).err(), Some(LockError::Abandoned));
    }
    /// `Duration::MAX` cannot be added to the clock: it means no timeout.
    /// A writer that finds a shard held waits for it instead of panicking
    /// with the shards before it locked (which would then stay locked).
    #[test]
    fn a_timeout_too_long_for_the_clock_waits_without_one() {
        let lock = Arc::new(ShardedLock::new(0, 4));
        lock.shards[2].0.lock_shared();
        let other = lock.clone();
        let writer = std::thread::spawn(move || {
            *other.write(Some(Duration::MAX)).unwrap() += 1;
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!writer.is_finished(), "the writer waits for the reader");
        // SAFETY: locked shared above, on this thread.
        unsafe { lock.shards[2].0.unlock_shared() }
        writer.join().expect("the writer got the lock");
        assert_eq!(*lock.read(Some(Duration::MAX)).unwrap(), 1);
        assert!(lock.shards.iter().all(is_free));
    }

    /// A guard taken by a destructor while its thread unwinds from an
    /// unrelated panic abandons nothing (as with std's poison flag).
    #[test]
    fn a_lock_taken_while_already_unwinding_is_not_abandoned() {
        struct WritesInDrop<'a>(&'a ShardedLock<u32>);
        impl Drop for WritesInDrop<'_> {
            fn drop(&mut self) {
                // No assertion here: a second panic would abort.
                if let Ok(mut value) = self.0.write(None) {
                    *value += u32::from(std::thread::panicking());
                }
                drop(self.0.read(None));
            }
        }
        let lock = ShardedLock::new(0, 2);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _wrapper = WritesInDrop(&lock);
            std::panic::resume_unwind(Box::new("an unrelated panic"));
        }));
        assert!(unwound.is_err());
        assert!(!lock.is_abandoned());
        assert_eq!(*lock.write(None).unwrap(), 1);
    }

    /// A reader that panics cannot have changed the value: nothing is
    /// abandoned. A writer that starts panicking while it holds the lock,
    /// even one that took it while unwinding from an earlier panic caught
    /// inside the destructor, does abandon it.
    #[test]
    fn only_a_panic_that_starts_under_a_write_guard_abandons() {
        let lock = ShardedLock::new(0, 2);
        let reader = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _value = lock.read(None).unwrap();
            std::panic::resume_unwind(Box::new("a reader panics"));
        }));
        assert!(reader.is_err());
        assert!(!lock.is_abandoned(), "a reader's panic abandons nothing");
        let writer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut value = lock.write(None).unwrap();
            *value = 1;
            std::panic::resume_unwind(Box::new("a writer panics"));
        }));
        assert!(writer.is_err());
        assert_eq!(lock.read(None).err(), Some(LockError::Abandoned));
    }
}

/// The lock under loom's model checker (`RUSTFLAGS="--cfg loom" cargo
/// test --release --lib loom_`): two shards, a reader on each, and a
/// writer; loom runs every interleaving (up to its preemption bound) and
/// also fails on any two accesses to the value that the locks leave
/// unordered.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::prim::model;
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::sync::Arc;

    /// A writer that keeps a pair equal, preempted between its halves:
    /// neither reader ever sees the pair torn.
    #[test]
    fn loom_readers_never_see_a_half_written_pair() {
        model("readers never see a half-written pair", || {
            let lock = Arc::new(ShardedLock::new((0u32, 0u32), 2));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let lock = lock.clone();
                    thread::spawn(move || {
                        let pair = lock.read(None).unwrap();
                        assert_eq!(pair.0, pair.1, "a reader saw a torn pair");
                        pair.0
                    })
                })
                .collect();
            {
                let mut pair = lock.write(None).unwrap();
                pair.0 += 1;
                thread::yield_now();
                pair.1 += 1;
            }
            for reader in readers {
                assert!(reader.join().unwrap() <= 1);
            }
            assert_eq!(*lock.read(None).unwrap(), (1, 1));
        });
    }

    /// While the writer holds the lock no reader is inside, on either
    /// shard, and the readers are on different shards.
    #[test]
    fn loom_a_writer_excludes_the_readers_of_every_shard() {
        model("a writer excludes the readers of every shard", || {
            let lock = Arc::new(ShardedLock::new((), 2));
            let readers_inside = Arc::new(AtomicUsize::new(0));
            let writing = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let (lock, inside, writing) =
                        (lock.clone(), readers_inside.clone(), writing.clone());
                    thread::spawn(move || {
                        let guard = lock.read(None).unwrap();
                        inside.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            !writing.load(Ordering::SeqCst),
                            "a reader inside with a writer"
                        );
                        inside.fetch_sub(1, Ordering::SeqCst);
                        drop(guard);
                        thread_slot() % 2
                    })
                })
                .collect();
            {
                let guard = lock.write(None).unwrap();
                writing.store(true, Ordering::SeqCst);
                assert_eq!(
                    readers_inside.load(Ordering::SeqCst),
                    0,
                    "a writer with readers"
                );
                writing.store(false, Ordering::SeqCst);
                drop(guard);
            }
            let shards: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
            assert_ne!(shards[0], shards[1], "the readers share a shard");
        });
    }

    /// A writer whose timeout passes while a reader holds the second shard
    /// gives back the first: afterwards the lock can be taken both ways.
    /// Both outcomes, timeout and success, must occur among the
    /// interleavings.
    #[test]
    fn loom_a_timed_out_writer_leaves_every_shard_unlocked() {
        use std::sync::atomic::AtomicU64 as Count;
        static TIMED_OUT: Count = Count::new(0);
        static WROTE: Count = Count::new(0);
        model("a timed-out writer leaves every shard unlocked", || {
            let lock = Arc::new(ShardedLock::new(0u32, 2));
            // This thread takes slot 0, so the reader's shard is the second.
            assert_eq!(thread_slot(), 0);
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let value = lock.read(None).unwrap();
                    thread::yield_now();
                    *value
                })
            };
            match lock.write(Some(Duration::from_millis(1))) {
                Ok(mut value) => {
                    *value += 1;
                    WROTE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    assert_eq!(e, LockError::Timeout);
                    TIMED_OUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            reader.join().unwrap();
            *lock.write(None).unwrap() += 1;
            assert!(*lock.read(None).unwrap() >= 1);
        });
        assert!(
            TIMED_OUT.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "never timed out"
        );
        assert!(
            WROTE.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "never wrote"
        );
    }

    /// Runs `f`, which must panic, and catches the panic.
    fn panics(f: impl FnOnce()) {
        assert!(catch_unwind(AssertUnwindSafe(f)).is_err());
    }

    /// Panics without the panic hook's message.
    fn unwind() -> ! {
        resume_unwind(Box::new("a panic while holding the lock"))
    }

    /// After all threads are done, the lock is abandoned, and says so to
    /// both kinds of acquirer (which therefore found every shard unlocked).
    fn assert_abandoned(lock: &ShardedLock<u32>) {
        assert!(lock.is_abandoned());
        assert_eq!(lock.read(None).err(), Some(LockError::Abandoned));
        assert_eq!(lock.write(None).err(), Some(LockError::Abandoned));
    }

    /// A writer panics after changing the value: a reader either comes
    /// first (and sees the old value) or is told the lock is abandoned;
    /// it never sees the half-made change as if nothing happened.
    #[test]
    fn loom_a_writer_that_panics_abandons_the_lock() {
        model("a writer that panics abandons the lock", || {
            let lock = Arc::new(ShardedLock::new(0u32, 2));
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || {
                    panics(|| {
                        let mut value = lock.write(None).unwrap();
                        *value = 1;
                        unwind();
                    });
                })
            };
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || match lock.read(None) {
                    Ok(value) => assert_eq!(*value, 0, "the panicked change, unflagged"),
                    Err(e) => assert_eq!(e, LockError::Abandoned),
                })
            };
            writer.join().unwrap();
            reader.join().unwrap();
            assert_abandoned(&lock);
        });
    }

    /// A reader panics while holding its shard: it cannot have changed the
    /// value, so the writer gets the lock whichever comes first, and the
    /// lock is not abandoned.
    #[test]
    fn loom_a_reader_that_panics_abandons_nothing() {
        model("a reader that panics abandons nothing", || {
            let lock = Arc::new(ShardedLock::new(0u32, 2));
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    panics(|| {
                        let value = lock.read(None).unwrap();
                        assert!(*value <= 1);
                        unwind();
                    });
                })
            };
            *lock.write(None).unwrap() += 1;
            reader.join().unwrap();
            assert!(!lock.is_abandoned());
            assert_eq!(*lock.read(None).unwrap(), 1);
        });
    }

    // A lock taken while the thread already unwinds is not modelled here:
    // loom's runtime cannot schedule a thread that is unwinding. The unit
    // test `a_lock_taken_while_already_unwinding_is_not_abandoned` covers
    // it.
}
