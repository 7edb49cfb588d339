//! `ShardedLock`: a reader-writer lock whose readers write only to their
//! own cache line.
//!
//! A plain reader-writer lock keeps one reader count that every reader
//! increments: on two cores that line bounces, and at ~50 ns a query the
//! bounce costs as much as the query. Here each thread reads through its
//! own shard (a `parking_lot::RwLock<()>` on a cache line of its own) and
//! a writer takes every shard, in order. Readers on different shards share
//! nothing; writers pay one uncontended lock per shard.
//!
//! Acquisition is bounded by a timeout, and a guard dropped while its
//! thread panics marks the lock abandoned: the next acquirer is told
//! instead of being handed state a panic may have left half-changed.
#![allow(unsafe_code)]

use parking_lot::lock_api::GuardNoSend;
use parking_lot::{RwLock, RwLockReadGuard};
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
struct Shard(RwLock<()>);

/// The slot of the calling thread: a small number, distinct for the first
/// threads that ask, used to pick a shard (and per-thread counters).
pub fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|slot| *slot)
}

/// A reader-writer lock with a shard per thread slot (see the module docs).
pub struct ShardedLock<T> {
    shards: Box<[Shard]>,
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
    /// A lock with `shards` shards (at least one).
    pub fn new(value: T, shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Shard(RwLock::new(()))).collect(),
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
    pub fn read(&self, timeout: Option<Duration>) -> Result<ReadGuard<'_, T>, LockError> {
        let shard = &self.shards[thread_slot() % self.shards.len()].0;
        let guard = match timeout {
            None => shard.read(),
            Some(t) => shard.try_read_for(t).ok_or(LockError::Timeout)?,
        };
        self.check_abandoned()?;
        Ok(ReadGuard {
            lock: self,
            _shard: guard,
        })
    }

    /// Exclusive access, waiting at most `timeout` in all (`None`: forever).
    ///
    /// Each shard is tried first; the clock is read (for the deadline)
    /// only when one is contended, so an uncontended write allocates
    /// nothing and makes no system call.
    pub fn write(&self, timeout: Option<Duration>) -> Result<WriteGuard<'_, T>, LockError> {
        // `None` until a shard is contended; then the deadline, if any.
        let mut deadline: Option<Option<Instant>> = None;
        for (i, shard) in self.shards.iter().enumerate() {
            let locked = match shard.0.try_write() {
                Some(guard) => {
                    std::mem::forget(guard);
                    true
                }
                None => {
                    match *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t)) {
                        None => {
                            std::mem::forget(shard.0.write());
                            true
                        }
                        Some(d) => shard.0.try_write_until(d).map(std::mem::forget).is_some(),
                    }
                }
            };
            if !locked {
                for taken in &self.shards[..i] {
                    // SAFETY: this call locked `taken` exclusively above and
                    // forgot its guard; nothing else unlocks it.
                    unsafe { taken.0.force_unlock_write(GuardNoSend::new()) }
                }
                return Err(LockError::Timeout);
            }
        }
        // Built before the check, so that an abandoned lock is unlocked
        // again when the guard drops.
        let guard = WriteGuard {
            lock: self,
            _not_send: PhantomData,
        };
        self.check_abandoned()?;
        Ok(guard)
    }
}

/// Shared access to the value of a [`ShardedLock`].
pub struct ReadGuard<'a, T> {
    lock: &'a ShardedLock<T>,
    _shard: RwLockReadGuard<'a, ()>,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a shard shared, so no `WriteGuard` (which
        // needs every shard exclusively) exists while it lives.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.lock.abandoned.store(true, Ordering::Release);
        }
    }
}

/// Exclusive access to the value of a [`ShardedLock`].
///
/// It holds every shard exclusively; their guards were forgotten in
/// [`ShardedLock::write`], and its `Drop` unlocks them.
pub struct WriteGuard<'a, T> {
    lock: &'a ShardedLock<T>,
    /// Unlocked on the thread that locked it, as the shards' guards were.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds every shard exclusively: no other guard
        // exists while it lives.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this borrow unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.lock.abandoned.store(true, Ordering::Release);
        }
        for shard in self.lock.shards.iter() {
            // SAFETY: this guard holds every shard exclusively (`write`
            // locked each and forgot its guard); only this drop unlocks them.
            unsafe { shard.0.force_unlock_write(GuardNoSend::new()) }
        }
    }
}

#[cfg(test)]
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

    #[test]
    fn a_timed_out_writer_unlocks_the_shards_it_took() {
        let lock = Arc::new(ShardedLock::new((), 4));
        let held = lock.shards[2].0.read();
        let other = lock.clone();
        let got =
            std::thread::spawn(move || other.write(Some(Duration::from_millis(20))).map(|_| ()))
                .join()
                .unwrap();
        assert_eq!(got, Err(LockError::Timeout));
        for (i, shard) in lock.shards.iter().enumerate().filter(|&(i, _)| i != 2) {
            assert!(shard.0.try_write().is_some(), "shard {i} was unlocked");
        }
        drop(held);
        drop(lock.write(Some(Duration::from_millis(20))).unwrap());
        assert!(lock.shards.iter().all(|s| s.0.try_write().is_some()));
    }

    #[test]
    fn a_writer_waits_for_a_reader_without_a_timeout() {
        let lock = Arc::new(ShardedLock::new(0, 4));
        let held = lock.shards[1].0.read();
        let other = lock.clone();
        let writer = std::thread::spawn(move || *other.write(None).unwrap() += 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!writer.is_finished());
        drop(held);
        writer.join().unwrap();
        assert_eq!(*lock.read(None).unwrap(), 1);
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
}
