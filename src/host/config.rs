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

/// Why a [`HostConfig`] was refused (by
/// [`HostMemoryManager::new`](super::HostMemoryManager::new), or as
/// `E_INVALIDARG` by the C entry point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `low_memory_percent` above 100.
    #[error("low_memory_percent is {0}, above 100")]
    LowMemoryPercent(u32),
    /// `high_memory_percent` not below `low_memory_percent`: the memory
    /// states would overlap.
    #[error("high_memory_percent ({high}) must be below low_memory_percent ({low})")]
    HighNotBelowLow {
        /// The high-memory threshold given.
        high: u32,
        /// The low-memory threshold given.
        low: u32,
    },
    /// An entry of `critical_level_percent` above 100.
    #[error("critical_level_percent[{index}] is {percent}, above 100")]
    CriticalLevelPercent {
        /// Which entry (0: task, 1: app domain, 2: process).
        index: usize,
        /// Its value.
        percent: u32,
    },
    /// A `load_poll_interval` of zero: the watcher would never sleep.
    #[error("load_poll_interval is zero")]
    ZeroPollInterval,
}

impl HostConfig {
    /// Whether the settings make sense: percentages at most 100, the
    /// high-memory threshold below the low-memory one (else the states
    /// would overlap), and a poll interval above zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.low_memory_percent > 100 {
            return Err(ConfigError::LowMemoryPercent(self.low_memory_percent));
        }
        if self.high_memory_percent >= self.low_memory_percent {
            return Err(ConfigError::HighNotBelowLow {
                high: self.high_memory_percent,
                low: self.low_memory_percent,
            });
        }
        if let Some((index, &percent)) = self
            .critical_level_percent
            .iter()
            .enumerate()
            .find(|(_, p)| **p > 100)
        {
            return Err(ConfigError::CriticalLevelPercent { index, percent });
        }
        if self.load_poll_interval.is_zero() {
            return Err(ConfigError::ZeroPollInterval);
        }
        Ok(())
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
        assert!(bad(|c| c.load_poll_interval = Duration::ZERO));
        let mut c = HostConfig {
            high_memory_percent: 95,
            ..HostConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "high_memory_percent (95) must be below low_memory_percent (90)"
        );
        c.high_memory_percent = 60;
        c.critical_level_percent[1] = 101;
        assert_eq!(
            c.validate(),
            Err(ConfigError::CriticalLevelPercent {
                index: 1,
                percent: 101
            })
        );
    }
}
