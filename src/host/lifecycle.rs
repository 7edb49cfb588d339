//! `Lifecycle`: a manager is usable from creation until it fails
//! catastrophically (E_FAIL, once) or is shut down; after either, every
//! hosting call answers `HOST_E_CLRNOTAVAILABLE`.

use std::sync::atomic::{AtomicU8, Ordering};

const RUNNING: u8 = 0;
const FAILED: u8 = 1;
const SHUT_DOWN: u8 = 2;

/// The latched state of a manager.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

impl Lifecycle {
    /// Whether calls may proceed.
    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::Acquire) == RUNNING
    }

    /// Whether a catastrophic failure latched.
    pub fn has_failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == FAILED
    }

    /// Latches a failure. Returns true for the call that latched it (which
    /// answers E_FAIL); false if the manager was already unusable.
    pub fn fail(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, FAILED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks the manager shut down. Returns false if it already was
    /// unusable.
    pub fn shut_down(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, SHUT_DOWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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
}
