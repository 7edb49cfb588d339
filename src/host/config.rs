//! `HostConfig`: how a manager is set up.

use std::time::Duration;

/// The settings of a [`HostMemoryManager`](super::HostMemoryManager).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// How long a call waits for the manager's lock before it answers
    /// `HOST_E_TIMEOUT`.
    pub lock_timeout: Duration,
    /// The cap on committed bytes; `None`: no budget (the load comes from
    /// the machine or its cgroup).
    pub budget_bytes: Option<u64>,
    /// Load (percent) at or above which memory is `eMemoryAvailableLow`.
    pub low_memory_percent: u32,
    /// Load (percent) at or below which memory is `eMemoryAvailableHigh`.
    pub high_memory_percent: u32,
    /// How far (percent of the budget) a request at each
    /// `EMemoryCriticalLevel` may take the load: task, app domain, process.
    pub critical_level_percent: [u32; 3],
    /// How often the load watcher looks at the machine's memory when
    /// nothing else wakes it (no budget, a callback registered).
    pub load_poll_interval: Duration,
}

impl HostConfig {
    /// The default lock timeout: long enough that only a stuck holder
    /// reaches it.
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default low-memory threshold.
    pub const DEFAULT_LOW_MEMORY_PERCENT: u32 = 90;
    /// The default high-memory threshold.
    pub const DEFAULT_HIGH_MEMORY_PERCENT: u32 = 60;
    /// The default limits per critical level: 90 %, 95 %, 100 %.
    pub const DEFAULT_CRITICAL_LEVEL_PERCENT: [u32; 3] = [90, 95, 100];
    /// The default poll interval of the load watcher.
    pub const DEFAULT_LOAD_POLL_INTERVAL: Duration = Duration::from_millis(250);
}

impl HostConfig {
    /// Whether the settings make sense: percentages at most 100 and the
    /// high-memory threshold below the low-memory one (else the states
    /// would overlap).
    pub fn validate(&self) -> Result<(), super::HostError> {
        let percents_ok = self.low_memory_percent <= 100
            && self.high_memory_percent < self.low_memory_percent
            && self.critical_level_percent.iter().all(|&p| p <= 100);
        if percents_ok {
            Ok(())
        } else {
            Err(super::HostError::InvalidArgument)
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            budget_bytes: None,
            low_memory_percent: Self::DEFAULT_LOW_MEMORY_PERCENT,
            high_memory_percent: Self::DEFAULT_HIGH_MEMORY_PERCENT,
            critical_level_percent: Self::DEFAULT_CRITICAL_LEVEL_PERCENT,
            load_poll_interval: Self::DEFAULT_LOAD_POLL_INTERVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(HostConfig::default().validate().is_ok());
        let bad = |f: fn(&mut HostConfig)| {
            let mut c = HostConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.low_memory_percent = 101));
        assert!(bad(|c| c.high_memory_percent = 90));
        assert!(bad(|c| c.critical_level_percent[2] = 120));
    }
}
