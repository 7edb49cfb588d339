//! `Lifecycle`: a manager is usable from creation until it fails
//! catastrophically (E_FAIL, once) or is shut down; after either, every
//! hosting call answers `HOST_E_CLRNOTAVAILABLE`.

use crate::sync::fork::{self, ForkLocks, Rank};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Weak};

const RUNNING: u8 = 0;
const FAILED: u8 = 1;
const SHUT_DOWN: u8 = 2;

/// Told when a lifecycle stops running (fails or shuts down): the heaps,
/// whose hit paths test a flag of their own rather than the manager's
/// state (one load fewer, off another object, on every `Alloc`/`Free`).
pub trait StopWatcher: Send + Sync {
    /// The lifecycle left the running state.
    fn stopped(&self);
}

/// The latched state of a manager.
pub struct Lifecycle {
    state: AtomicU8,
    /// Shared with the fork handlers, which take it around a fork.
    watchers: Arc<Mutex<Vec<Weak<dyn StopWatcher>>>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        let watchers = Arc::new(Mutex::new(Vec::new()));
        let weak: Weak<dyn ForkLocks> = Arc::downgrade(&watchers) as _;
        fork::register(Rank::Registry, weak);
        Self {
            state: AtomicU8::new(RUNNING),
            watchers,
        }
    }
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Lifecycle")
            .field(&self.state.load(Ordering::Acquire))
            .finish()
    }
}

impl Lifecycle {
    /// Whether calls may proceed.
    #[inline]
    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    /// Whether a catastrophic failure latched.
    pub fn has_failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// Latches a failure. Returns true for the call that latched it (which
    /// answers E_FAIL); false if the manager was already unusable.
    pub fn fail(&self) -> bool {
        self.leave(FAILED)
    }

    /// Marks the manager shut down. Returns false if it already was
    /// unusable.
    pub fn shut_down(&self) -> bool {
        self.leave(SHUT_DOWN)
    }

    fn leave(&self, to: u8) -> bool {
        let left = self
            .state
            .compare_exchange(RUNNING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if left {
            // Told before the call that stopped the lifecycle returns; the
            // watchers are called (and released) with no lock held.
            let watchers: Vec<_> = self
                .watchers
                .lock()
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for watcher in &watchers {
                watcher.stopped();
            }
        }
        left
    }

    /// Tells `watcher` when the lifecycle stops (at once if it has).
    pub fn watch(&self, watcher: Weak<dyn StopWatcher>) {
        {
            let mut watchers = self.watchers.lock();
            watchers.retain(|w| w.strong_count() > 0);
            watchers.push(watcher.clone());
        }
        if !self.is_running()
            && let Some(watcher) = watcher.upgrade()
        {
            watcher.stopped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_latches_once() {
        let life = Lifecycle::default();
        assert!(life.is_running());
        assert!(life.fail());
        assert!(!life.fail(), "only the first failure answers E_FAIL");
        assert!(!life.is_running());
        assert!(!life.shut_down());
        assert!(life.has_failed());
    }

    #[test]
    fn watchers_are_told_when_it_stops() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        struct Flag(AtomicBool);
        impl StopWatcher for Flag {
            fn stopped(&self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let life = Lifecycle::default();
        let early = Arc::new(Flag(AtomicBool::new(false)));
        life.watch(Arc::downgrade(&early) as Weak<dyn StopWatcher>);
        assert!(!early.0.load(Ordering::Relaxed));
        assert!(life.shut_down());
        assert!(early.0.load(Ordering::Relaxed));
        let late = Arc::new(Flag(AtomicBool::new(false)));
        life.watch(Arc::downgrade(&late) as Weak<dyn StopWatcher>);
        assert!(late.0.load(Ordering::Relaxed), "told at once");
    }
}
