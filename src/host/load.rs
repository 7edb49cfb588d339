//! Memory load: the host's view (the budget) or the machine's (its cgroup's
//! limit when there is one, else `/proc/meminfo`).

use std::fs;
use std::path::{Path, PathBuf};

/// Memory in use out of a total, as `GetMemoryLoad` reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MemoryLoad {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in all (the budget, the cgroup's limit, or the machine's).
    pub total_bytes: u64,
}

impl MemoryLoad {
    /// The load in percent, 0–100 (rounded down).
    pub fn percent(self) -> u32 {
        match self.total_bytes {
            0 => 100,
            total => (u128::from(self.used_bytes.min(total)) * 100 / u128::from(total)) as u32,
        }
    }

    /// Bytes still available.
    pub fn available_bytes(self) -> u64 {
        self.total_bytes.saturating_sub(self.used_bytes)
    }

    /// Whether the load is at or above `percent` (exactly, not rounded).
    pub fn at_least(self, percent: u32) -> bool {
        u128::from(self.used_bytes) * 100 >= u128::from(percent) * u128::from(self.total_bytes)
    }

    /// Whether the load is at or below `percent` (exactly, not rounded).
    pub fn at_most(self, percent: u32) -> bool {
        u128::from(self.used_bytes) * 100 <= u128::from(percent) * u128::from(self.total_bytes)
    }
}

/// Where the machine's memory figures are read: `/` normally; a test
/// points it at a fake tree.
#[derive(Clone, Debug)]
pub struct MachineMemory {
    root: PathBuf,
}

impl Default for MachineMemory {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A `/proc/meminfo` field in bytes.
fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|l| l.split(':').next() == Some(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A number from a cgroup file; `None` for "max" or an unset v1 limit.
fn cgroup_number(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    // cgroup v1 spells "no limit" as a huge page-rounded number.
    (n < 1 << 62).then_some(n)
}

impl MachineMemory {
    /// Figures from the files under `root` (`root/proc/…`, `root/sys/…`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The process's cgroup limit and usage, v2 (`memory.max`,
    /// `memory.current`) or v1 (`memory.limit_in_bytes`,
    /// `memory.usage_in_bytes`), if it runs under a limit.
    pub fn cgroup(&self) -> Option<MemoryLoad> {
        let cgroups = read(&self.path("proc/self/cgroup"))?;
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            let found = if controllers.is_empty() {
                ["sys/fs/cgroup", "sys/fs/cgroup/unified"]
                    .iter()
                    .find_map(|mount| {
                        let dir = self.path(mount).join(path);
                        let total = cgroup_number(&read(&dir.join("memory.max"))?)?;
                        let used = cgroup_number(&read(&dir.join("memory.current"))?)?;
                        Some(MemoryLoad {
                            used_bytes: used,
                            total_bytes: total,
                        })
                    })
            } else if controllers.split(',').any(|c| c == "memory") {
                let dir = self.path("sys/fs/cgroup/memory").join(path);
                (|| {
                    let total = cgroup_number(&read(&dir.join("memory.limit_in_bytes"))?)?;
                    let used = cgroup_number(&read(&dir.join("memory.usage_in_bytes"))?)?;
                    Some(MemoryLoad {
                        used_bytes: used,
                        total_bytes: total,
                    })
                })()
            } else {
                None
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// The machine's figures from `/proc/meminfo`: `MemTotal` in all,
    /// `MemAvailable` available.
    pub fn meminfo(&self) -> Option<MemoryLoad> {
        let text = read(&self.path("proc/meminfo"))?;
        let total = meminfo_field(&text, "MemTotal")?;
        let available = meminfo_field(&text, "MemAvailable")?;
        Some(MemoryLoad {
            used_bytes: total.saturating_sub(available),
            total_bytes: total,
        })
    }

    /// The load the process lives under: its cgroup's when the cgroup's
    /// limit is below the machine's memory, else the machine's.
    pub fn load(&self) -> Option<MemoryLoad> {
        let machine = self.meminfo();
        match (self.cgroup(), machine) {
            (Some(cg), Some(m)) if cg.total_bytes < m.total_bytes => Some(cg),
            (Some(cg), None) => Some(cg),
            (_, m) => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake machine root holding `files`, removed when dropped.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::Builder::new()
            .prefix("hostmem-load-")
            .tempdir()
            .unwrap();
        for (path, text) in files {
            let p = root.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        root
    }

    const MEMINFO: &str =
        "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";

    #[test]
    fn percent_and_thresholds_are_exact() {
        let l = MemoryLoad {
            used_bytes: 899,
            total_bytes: 1000,
        };
        assert_eq!((l.percent(), l.available_bytes()), (89, 101));
        assert!(!l.at_least(90));
        assert!(
            MemoryLoad {
                used_bytes: 900,
                total_bytes: 1000
            }
            .at_least(90)
        );
        assert!(
            MemoryLoad {
                used_bytes: 600,
                total_bytes: 1000
            }
            .at_most(60)
        );
        assert!(
            !MemoryLoad {
                used_bytes: 601,
                total_bytes: 1000
            }
            .at_most(60)
        );
        assert_eq!(
            MemoryLoad {
                used_bytes: 2000,
                total_bytes: 1000
            }
            .percent(),
            100
        );
    }

    #[test]
    fn meminfo_without_cgroup_limit() {
        let root = tree(&[("proc/meminfo", MEMINFO), ("proc/self/cgroup", "0::/\n")]);
        let load = MachineMemory::with_root(root.path()).load().unwrap();
        assert_eq!(
            load,
            MemoryLoad {
                used_bytes: 750 * 1024,
                total_bytes: 1000 * 1024
            }
        );
        assert_eq!(load.percent(), 75);
    }

    #[test]
    fn cgroup_v2_limit_wins_when_lower() {
        let root = tree(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/app.slice/x\n"),
            ("sys/fs/cgroup/app.slice/x/memory.max", "409600\n"),
            ("sys/fs/cgroup/app.slice/x/memory.current", "102400\n"),
        ]);
        let load = MachineMemory::with_root(root.path()).load().unwrap();
        assert_eq!(
            load,
            MemoryLoad {
                used_bytes: 102400,
                total_bytes: 409600
            }
        );
        assert_eq!((load.percent(), load.available_bytes()), (25, 307200));
    }

    #[test]
    fn cgroup_v2_max_means_no_limit() {
        let root = tree(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "0::/x\n"),
            ("sys/fs/cgroup/x/memory.max", "max\n"),
            ("sys/fs/cgroup/x/memory.current", "5\n"),
        ]);
        assert_eq!(
            MachineMemory::with_root(root.path())
                .load()
                .unwrap()
                .total_bytes,
            1000 * 1024
        );
    }

    #[test]
    fn cgroup_v1_memory_controller() {
        let root = tree(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/job\n0::/\n"),
            ("sys/fs/cgroup/memory/job/memory.limit_in_bytes", "204800\n"),
            ("sys/fs/cgroup/memory/job/memory.usage_in_bytes", "51200\n"),
        ]);
        let load = MachineMemory::with_root(root.path()).load().unwrap();
        assert_eq!(
            load,
            MemoryLoad {
                used_bytes: 51200,
                total_bytes: 204800
            }
        );
        let unlimited = tree(&[
            ("proc/meminfo", MEMINFO),
            ("proc/self/cgroup", "4:memory:/job\n"),
            (
                "sys/fs/cgroup/memory/job/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("sys/fs/cgroup/memory/job/memory.usage_in_bytes", "51200\n"),
        ]);
        assert_eq!(
            MachineMemory::with_root(unlimited.path())
                .load()
                .unwrap()
                .total_bytes,
            1000 * 1024
        );
    }
}
