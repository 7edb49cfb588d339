//! `hostmem_config`: the settings a C host passes to
//! `hostmem_CreateMemoryManager`, versioned by its `size` field.
#![allow(unsafe_code)]

use crate::host::{HResult, HostConfig};
use std::mem::{offset_of, size_of};
use std::time::Duration;

/// `hostmem_config` (see `include/hostmem/com.h`). Every field 0 means
/// "the default".
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HostmemConfig {
    /// `sizeof(hostmem_config)` as the caller compiled it: versioning. A
    /// later, longer version is accepted (its new fields are not read); a
    /// size that does not cover the fields read here is `E_INVALIDARG`.
    pub size: u32,
    /// How long a call waits for the manager's lock before it answers
    /// `HOST_E_TIMEOUT`, in milliseconds.
    pub lock_timeout_ms: u32,
    /// The cap on committed bytes; 0: no budget.
    pub budget_bytes: u64,
    /// Load (percent) at or above which memory is `eMemoryAvailableLow`.
    pub low_memory_percent: u32,
    /// Load (percent) at or below which memory is `eMemoryAvailableHigh`.
    pub high_memory_percent: u32,
}

impl HostmemConfig {
    /// The size that covers every field this version reads: 24 bytes.
    pub const MIN_SIZE: u32 = (offset_of!(Self, high_memory_percent) + size_of::<u32>()) as u32;

    /// A config of this version with every setting at its default.
    pub const fn new() -> Self {
        Self {
            size: size_of::<Self>() as u32,
            lock_timeout_ms: 0,
            budget_bytes: 0,
            low_memory_percent: 0,
            high_memory_percent: 0,
        }
    }

    /// Reads the caller's config: `Ok(None)` for NULL (defaults),
    /// `E_INVALIDARG` for a `size` too small for the fields read here. Only
    /// `size` is read before it is checked, so a shorter (older or wrong)
    /// struct is never read past its end.
    ///
    /// # Safety
    ///
    /// `config` is NULL, or points to a readable `u32` (`size`) followed by
    /// at least `size` - 4 readable bytes.
    pub unsafe fn read(config: *const Self) -> Result<Option<Self>, HResult> {
        if config.is_null() {
            return Ok(None);
        }
        // SAFETY: not NULL, so its first 4 bytes are readable (the caller's
        // contract); unaligned because a C caller's struct need not have
        // Rust's alignment of it.
        let size = unsafe { config.cast::<u32>().read_unaligned() };
        if size < Self::MIN_SIZE {
            return Err(HResult::E_INVALIDARG);
        }
        // SAFETY: `size` readable bytes, and `size` covers the whole struct.
        Ok(Some(unsafe { config.read_unaligned() }))
    }

    /// The manager's configuration: 0 fields take the defaults;
    /// percentages above 100, or a high-memory threshold not below the
    /// low-memory one, are `E_INVALIDARG`.
    pub fn to_host_config(&self) -> Result<HostConfig, HResult> {
        let defaults = HostConfig::default();
        let or = |value: u32, default: u32| if value == 0 { default } else { value };
        let low = or(self.low_memory_percent, defaults.low_memory_percent);
        let high = or(self.high_memory_percent, defaults.high_memory_percent);
        let config = HostConfig {
            lock_timeout: match self.lock_timeout_ms {
                0 => defaults.lock_timeout,
                ms => Duration::from_millis(ms.into()),
            },
            budget_bytes: (self.budget_bytes != 0).then_some(self.budget_bytes),
            low_memory_percent: low,
            high_memory_percent: high,
            ..defaults
        };
        config.validate().map_err(|_| HResult::E_INVALIDARG)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_versioning() {
        assert_eq!(size_of::<HostmemConfig>(), 24);
        assert_eq!(HostmemConfig::MIN_SIZE, 24);
        // SAFETY: NULL is allowed.
        assert_eq!(unsafe { HostmemConfig::read(std::ptr::null()) }, Ok(None));
        let mut config = HostmemConfig::new();
        // SAFETY: a whole, live struct.
        assert_eq!(unsafe { HostmemConfig::read(&config) }, Ok(Some(config)));
        config.size = 8;
        // SAFETY: as above.
        assert_eq!(
            unsafe { HostmemConfig::read(&config) },
            Err(HResult::E_INVALIDARG)
        );
        // A later version's longer struct: its prefix is read.
        let longer: [u32; 8] = [32, 7, 0, 0, 80, 20, 0xdead, 0xbeef];
        // SAFETY: 32 readable bytes, as `size` says.
        let read = unsafe { HostmemConfig::read(longer.as_ptr().cast()) };
        let read = read.unwrap().unwrap();
        assert_eq!((read.lock_timeout_ms, read.low_memory_percent), (7, 80));
    }

    #[test]
    fn zero_fields_take_the_defaults() {
        let config = HostmemConfig::new().to_host_config().unwrap();
        assert_eq!(config, HostConfig::default());
        let config = HostmemConfig {
            lock_timeout_ms: 50,
            budget_bytes: 1 << 20,
            low_memory_percent: 80,
            high_memory_percent: 40,
            ..HostmemConfig::new()
        }
        .to_host_config()
        .unwrap();
        assert_eq!(config.lock_timeout, Duration::from_millis(50));
        assert_eq!(config.budget_bytes, Some(1 << 20));
        assert_eq!(
            (config.low_memory_percent, config.high_memory_percent),
            (80, 40)
        );
    }

    #[test]
    fn inconsistent_thresholds_are_invalid() {
        let bad = |low, high| {
            HostmemConfig {
                low_memory_percent: low,
                high_memory_percent: high,
                ..HostmemConfig::new()
            }
            .to_host_config()
        };
        assert_eq!(bad(101, 0), Err(HResult::E_INVALIDARG));
        assert_eq!(bad(50, 50), Err(HResult::E_INVALIDARG));
        assert_eq!(
            bad(50, 0),
            Err(HResult::E_INVALIDARG),
            "high defaults to 60"
        );
        assert!(bad(100, 99).is_ok());
    }
}
