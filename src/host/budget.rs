//! `MemoryBudget`: the cap on a manager's committed bytes, and the share of
//! it each `EMemoryCriticalLevel` may use.

use super::MemoryCriticalLevel;
use super::load::MemoryLoad;

/// A budget of committed bytes with a limit per critical level.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemoryBudget {
    bytes: u64,
    level_percent: [u32; 3],
}

impl MemoryBudget {
    /// A budget of `bytes`; a request at level `l` may take the load to
    /// `level_percent[l]` percent. The percentages are made monotone
    /// (never lower for a more critical level) and at most 100.
    pub fn new(bytes: u64, level_percent: [u32; 3]) -> Self {
        let mut p = level_percent.map(|x| x.min(100));
        p[1] = p[1].max(p[0]);
        p[2] = p[2].max(p[1]);
        Self {
            bytes,
            level_percent: p,
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The most bytes a request at `level` may bring the total to.
    pub fn limit(&self, level: MemoryCriticalLevel) -> u64 {
        (u128::from(self.bytes) * u128::from(self.level_percent[level as usize]) / 100) as u64
    }

    /// Whether `cost` more bytes may be committed at `level` when `used`
    /// are.
    pub fn allows(&self, used: u64, cost: u64, level: MemoryCriticalLevel) -> bool {
        used.checked_add(cost)
            .is_some_and(|total| total <= self.limit(level))
    }

    /// The load when `used` bytes are committed.
    pub fn load(&self, used: u64) -> MemoryLoad {
        MemoryLoad {
            used_bytes: used,
            total_bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryCriticalLevel::*;
    use proptest::prelude::*;

    #[test]
    fn less_critical_requests_fail_first() {
        let b = MemoryBudget::new(1000, [90, 95, 100]);
        assert!(b.allows(800, 100, TaskCritical));
        assert!(!b.allows(800, 101, TaskCritical));
        assert!(b.allows(800, 150, AppDomainCritical));
        assert!(!b.allows(800, 151, AppDomainCritical));
        assert!(b.allows(800, 200, ProcessCritical));
        assert!(!b.allows(800, 201, ProcessCritical));
        assert!(!b.allows(u64::MAX, 1, ProcessCritical));
    }

    proptest! {
        #[test]
        fn monotone_in_level(bytes in 0u64..1 << 40, p in any::<[u32; 3]>(), used in 0u64..1 << 41, cost in 0u64..1 << 41) {
            let b = MemoryBudget::new(bytes, p);
            let levels = [TaskCritical, AppDomainCritical, ProcessCritical];
            for w in levels.windows(2) {
                prop_assert!(!b.allows(used, cost, w[0]) || b.allows(used, cost, w[1]));
            }
            prop_assert!(b.limit(ProcessCritical) <= bytes);
        }
    }
}
