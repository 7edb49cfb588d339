//! Fork safety, as glibc's `malloc` does it: `pthread_atfork` handlers
//! that take every lock of every live manager and heap before `fork()`,
//! and release them after it, in the parent and in the child.
//!
//! A child of a multi-threaded process starts with one thread: the one that
//! called `fork()`. Any lock another thread held at that moment would stay
//! held in the child for ever, and a manager or heap behind it would be
//! dead there. The prepare handler therefore waits until it holds them
//! all (so no thread is half-way through a change), the fork copies the
//! memory in that quiet state, and then the parent unlocks them and the
//! child, whose only thread holds them, releases them too (a manager's
//! shards are set back to unlocked without waking anyone: the threads
//! that waited for them are not in the child).
//!
//! The threads of the parent that were waiting stay in parking_lot's wait
//! queues in the child (they are process-wide, keyed by a lock's
//! address), so the child handler also forgets them, lock by lock
//! ([`forget_waiters`]). Left there, such a ghost would take a wake-up
//! meant for a thread of the child (which would sleep on), be handed a
//! lock at a fair unlock (which nobody could take again), or, once glibc
//! gives its stack to a new thread of the child (the load watcher), share
//! that thread's queue entry and corrupt the queue. Ghosts waiting on
//! locks that are not hostmem's are beyond its reach. So is a thread that
//! held one of parking_lot's own bucket locks at the instant of the fork
//! (for the few instructions of a park or unpark): the child inherits it
//! held, and the first park or unpark that meets it there, forgetting
//! waiters included, waits for ever, as it would in any program that
//! forks while parking_lot is in use.
//!
//! The locks register here when their owner is made (managers' state
//! locks, heaps, the process-wide lists of heaps and stop watchers), each
//! with a [`Rank`]: the prepare handler takes lower ranks first, so that
//! it takes locks in the order the code nests them and cannot deadlock
//! against a thread holding one and waiting for the next. No code calls
//! out (callbacks) while holding any of them, so a thread inside a
//! notification callback holds none, and the handler never waits on it.
#![allow(unsafe_code)]
// A loom build installs no handlers: they and their helpers go unused.
#![cfg_attr(loom, allow(dead_code))]

use super::sharded_lock::{self, Shard};
use parking_lot::Mutex;
use std::sync::{Arc, Once, Weak};

/// The order in which the prepare handler takes locks: a code path that
/// holds one lock while it takes another takes the lower rank first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Rank {
    /// A heap's locks (a heap calls its manager with none held, but comes
    /// first should that change).
    Heap,
    /// A manager's state lock.
    Manager,
    /// A manager's registration lock (the slot of its load watcher): taken
    /// with no state lock held, and a notifier's lock is taken under it.
    Watcher,
    /// Leaf locks, taken briefly and with nothing else after them (lists
    /// of heaps and stop watchers, a notifier's state, which is updated
    /// under a manager's lock).
    Registry,
}

/// Proof that the caller is one of this module's fork handlers: only they
/// make one, so only they can call [`ForkLocks`]' methods, in the order
/// the handlers guarantee (lock before the fork on the forking thread,
/// then unlock in the parent or reset in the child on the same thread).
pub(crate) struct InFork {
    /// In the child, on its only thread (the child handler).
    in_child: bool,
}

impl InFork {
    /// In a fork's child: forgets the parent's threads that waited on
    /// `mutex` (see [`forget_waiters`]). Does nothing elsewhere.
    pub(crate) fn forget_mutex_waiters<T: ?Sized>(&self, mutex: &Mutex<T>) {
        if self.in_child {
            // SAFETY: the child handler, on the process's only thread;
            // the mutex is hostmem's (only hostmem's code holds an
            // `InFork`).
            unsafe { forget_waiters(mutex_key(mutex)) };
        }
    }

    /// In a fork's child: forgets the parent's threads that waited on
    /// `condvar`. Does nothing elsewhere.
    pub(crate) fn forget_condvar_waiters(&self, condvar: &parking_lot::Condvar) {
        if self.in_child {
            // SAFETY: as in `forget_mutex_waiters`; parking_lot queues a
            // condition variable's waiters under its raw part's address.
            unsafe { forget_waiters(std::ptr::from_ref(condvar.raw()).addr()) };
        }
    }
}

/// Something whose locks a fork must not split. Its methods are called
/// only by the fork handlers (they need an [`InFork`]).
pub(crate) trait ForkLocks: Send + Sync {
    /// Takes every lock (waiting as long as it takes), for the fork.
    fn lock_for_fork(&self, fork: &InFork);

    /// Releases what [`lock_for_fork`](Self::lock_for_fork) took, in the
    /// parent after the fork (on the thread that took them).
    fn unlock_in_parent(&self, fork: &InFork);

    /// Releases what `lock_for_fork` took in the child (whose only
    /// thread took them), and clears any per-call state a thread that is
    /// not in the child left.
    fn reset_in_child(&self, fork: &InFork);
}

/// A registered lock holder.
enum Entry {
    /// Held weakly: an entry whose owner is gone is skipped, then dropped.
    Weak(Weak<dyn ForkLocks>),
    /// A process-wide one.
    Static(&'static dyn ForkLocks),
    /// The shards of a [`ShardedLock`](super::ShardedLock), held weakly.
    Shards(Weak<[Shard]>),
}

/// Forgets every thread that parking_lot's wait queues hold under `key`,
/// the address of a lock or condition variable (a lock word's second key
/// for a reader-writer lock): in a fork's child, where all of them are
/// the parent's and do not exist. Each is dequeued and "woken" at its own
/// parking word, which the child holds a copy of; no thread runs.
///
/// # Safety
///
/// The calling thread is the process's only one (a fork's child handler),
/// and `key` is the address under which one of hostmem's locks or
/// condition variables queues its waiters.
pub(crate) unsafe fn forget_waiters(key: usize) {
    // SAFETY: `key` belongs to one of hostmem's own locks (the contract),
    // so no other primitive's queue is touched; every thread queued under
    // it is a ghost of the parent whose parking word lies in memory the
    // child inherited, so unparking writes only there.
    unsafe { parking_lot_core::unpark_all(key, parking_lot_core::DEFAULT_UNPARK_TOKEN) };
}

/// The key parking_lot queues a mutex's waiters under: its raw lock's
/// address.
fn mutex_key<T: ?Sized>(mutex: &Mutex<T>) -> usize {
    // SAFETY: the raw lock is only looked at, for its address; it is
    // neither locked nor unlocked through this reference.
    std::ptr::from_ref(unsafe { mutex.raw() }).addr()
}

impl Entry {
    fn is_live(&self) -> bool {
        match self {
            Entry::Weak(weak) => weak.strong_count() > 0,
            Entry::Static(_) => true,
            Entry::Shards(weak) => weak.strong_count() > 0,
        }
    }

    fn upgrade(&self) -> Option<Held> {
        match self {
            Entry::Weak(weak) => weak.upgrade().map(Held::Arc),
            Entry::Static(locks) => Some(Held::Static(*locks)),
            Entry::Shards(weak) => weak.upgrade().map(Held::Shards),
        }
    }
}

/// A holder the prepare handler locked (kept alive until it is released).
enum Held {
    Arc(Arc<dyn ForkLocks>),
    Static(&'static dyn ForkLocks),
    Shards(Arc<[Shard]>),
}

impl Held {
    fn lock(&self, fork: &InFork) {
        match self {
            Held::Arc(locks) => locks.lock_for_fork(fork),
            Held::Static(locks) => locks.lock_for_fork(fork),
            Held::Shards(shards) => sharded_lock::lock_for_fork(shards),
        }
    }

    fn unlock_in_parent(&self, fork: &InFork) {
        match self {
            Held::Arc(locks) => locks.unlock_in_parent(fork),
            Held::Static(locks) => locks.unlock_in_parent(fork),
            // SAFETY: `prepare` locked them on this thread (an `InFork`
            // exists only in the handlers).
            Held::Shards(shards) => unsafe { sharded_lock::unlock_in_parent(shards) },
        }
    }

    fn reset_in_child(&self, fork: &InFork) {
        match self {
            Held::Arc(locks) => locks.reset_in_child(fork),
            Held::Static(locks) => locks.reset_in_child(fork),
            // SAFETY: the child of a fork whose `prepare` locked them; its
            // only thread.
            Held::Shards(shards) => unsafe { sharded_lock::reset_in_child(shards) },
        }
    }
}

struct Registry {
    entries: Vec<(Rank, Entry)>,
    /// What the prepare handler locked, in the order it did.
    held: Vec<Held>,
}

/// Taken first by the prepare handler and held across the fork, so that
/// no registration runs meanwhile.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    entries: Vec::new(),
    held: Vec::new(),
});

static HANDLERS: Once = Once::new();

fn install_handlers() {
    // A loom build models threads, not processes: no handlers.
    #[cfg(not(loom))]
    HANDLERS.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions that live
        // for the whole process; registering them has no other
        // precondition. A failure (ENOMEM) leaves fork as it was.
        let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    });
}

fn add(rank: Rank, entry: Entry) {
    install_handlers();
    let mut registry = REGISTRY.lock();
    registry.entries.retain(|(_, entry)| entry.is_live());
    registry.entries.push((rank, entry));
}

/// Registers `locks` (held weakly) for every later fork.
pub(crate) fn register(rank: Rank, locks: Weak<dyn ForkLocks>) {
    add(rank, Entry::Weak(locks));
}

/// Registers process-wide `locks` for every later fork.
pub(crate) fn register_static(rank: Rank, locks: &'static dyn ForkLocks) {
    add(rank, Entry::Static(locks));
}

/// Registers the shards of a sharded lock (held weakly) for every later
/// fork.
pub(super) fn register_shards(shards: Weak<[Shard]>) {
    add(Rank::Manager, Entry::Shards(shards));
}

/// Before `fork()`: takes the registry, then every registered lock by
/// rank, and keeps them all.
extern "C" fn prepare() {
    let mut registry = REGISTRY.lock();
    let mut live: Vec<(Rank, Held)> = registry
        .entries
        .iter()
        .filter_map(|(rank, entry)| Some((*rank, entry.upgrade()?)))
        .collect();
    live.sort_by_key(|(rank, _)| *rank);
    for (_, held) in &live {
        held.lock(&InFork { in_child: false });
    }
    registry.held = live.into_iter().map(|(_, held)| held).collect();
    // Held across the fork; `parent` and `child` release it.
    std::mem::forget(registry);
}

/// The registry's holders that `prepare` locked.
///
/// # Safety
///
/// `prepare` ran on this thread and left the registry locked.
unsafe fn take_held() -> Vec<Held> {
    // SAFETY: the registry is locked by this thread (the caller's
    // contract), so nothing else reaches its data.
    std::mem::take(unsafe { &mut (*REGISTRY.data_ptr()).held })
}

/// After `fork()`, in the parent: releases everything, last taken first.
extern "C" fn parent() {
    // SAFETY: `prepare` ran on this thread before the fork.
    let held = unsafe { take_held() };
    for held in held.iter().rev() {
        held.unlock_in_parent(&InFork { in_child: false });
    }
    // `prepare` locked the registry on this thread too.
    REGISTRY.unlock_in_parent(&InFork { in_child: false });
    // Dropped with no lock held: one may be the last reference.
    drop(held);
}

/// After `fork()`, in the child: every lock set back to unlocked, and the
/// load watcher marked gone (it starts again when next needed).
extern "C" fn child() {
    // SAFETY: `prepare` ran on this thread (the child's only one) before
    // the fork.
    let held = unsafe { take_held() };
    for held in held.iter().rev() {
        held.reset_in_child(&InFork { in_child: true });
    }
    // `prepare` locked the registry on this thread too.
    REGISTRY.reset_in_child(&InFork { in_child: true });
    crate::host::after_fork_in_child();
    drop(held);
}

/// A mutex: shared by an `Arc` (a manager's stop watchers), a static (the
/// heaps' list), or a field of something that registers itself (a heap).
impl<T: Send> ForkLocks for Mutex<T> {
    fn lock_for_fork(&self, _: &InFork) {
        // Held across the fork; the guard's job passes to the handlers.
        std::mem::forget(self.lock());
    }

    fn unlock_in_parent(&self, _: &InFork) {
        // SAFETY: the prepare handler locked it on this thread and forgot
        // the guard (an `InFork` exists only in the handlers, which call
        // these in that order); parking_lot's guard tokens carry no state.
        unsafe { self.force_unlock(Default::default()) }
    }

    fn reset_in_child(&self, fork: &InFork) {
        fork.forget_mutex_waiters(self);
        // SAFETY: as in `unlock_in_parent`: the child's only thread is the
        // one that locked it. With no waiter queued any more, unlocking
        // only clears the lock word (it cannot hand the lock to a thread
        // that is not in the child).
        unsafe { self.force_unlock(Default::default()) }
    }
}
