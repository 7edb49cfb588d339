//! A heap's side of fork safety (see `sync::fork`): its locks, taken
//! before a fork and released after it, and the mark of a call inside a
//! non-thread-safe heap, cleared in the child (the thread that made it is
//! not there).
#![forbid(unsafe_code)]

use super::malloc::HostMalloc;
use crate::sync::fork::{ForkLocks, InFork};

impl ForkLocks for HostMalloc {
    fn lock_for_fork(&self, fork: &InFork) {
        self.for_each_lock(|lock| lock.lock_for_fork(fork));
    }

    fn unlock_in_parent(&self, fork: &InFork) {
        self.for_each_lock(|lock| lock.unlock_in_parent(fork));
    }

    fn reset_in_child(&self, fork: &InFork) {
        self.for_each_lock(|lock| lock.reset_in_child(fork));
        self.forget_call_inside();
    }
}
