//! `DebugAlloc`'s records: the call site (file and line) of every live
//! debug allocation, and the leak report that groups them.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CStr;
use std::fmt;

/// A call site given to `DebugAlloc`.
type SiteKey = (Option<Box<CStr>>, i32);

/// The live debug allocations of one heap.
#[derive(Default)]
pub struct DebugRecords {
    /// Interned call sites.
    sites: Vec<SiteKey>,
    site_index: HashMap<SiteKey, u32>,
    /// Live allocation → (requested size, site).
    live: HashMap<usize, (usize, u32)>,
}

impl DebugRecords {
    /// Remembers that `address` was handed out for `size` bytes at
    /// `file:line`.
    pub fn record(&mut self, address: usize, size: usize, file: Option<&CStr>, line: i32) {
        let key = (file.map(Box::from), line);
        let site = match self.site_index.get(&key) {
            Some(&site) => site,
            None => {
                let site = self.sites.len() as u32;
                self.sites.push(key.clone());
                self.site_index.insert(key, site);
                site
            }
        };
        self.live.insert(address, (size, site));
    }

    /// Forgets the allocation at `address`; false if there is none.
    pub fn forget(&mut self, address: usize) -> bool {
        self.live.remove(&address).is_some()
    }

    /// Whether `address` is a live debug allocation.
    pub fn is_live(&self, address: usize) -> bool {
        self.live.contains_key(&address)
    }

    /// Live debug allocations and their bytes.
    pub fn totals(&self) -> (usize, usize) {
        (
            self.live.len(),
            self.live.values().map(|&(size, _)| size).sum(),
        )
    }

    /// The live allocations grouped by call site.
    pub fn report(&self) -> LeakReport {
        let mut by_site: HashMap<u32, (usize, usize)> = HashMap::new();
        for &(size, site) in self.live.values() {
            let entry = by_site.entry(site).or_default();
            entry.0 += 1;
            entry.1 += size;
        }
        let mut report = LeakReport {
            sites: by_site
                .into_iter()
                .map(|(site, (count, bytes))| {
                    let (file, line) = &self.sites[site as usize];
                    LeakSite {
                        file: file.as_ref().map(|f| f.to_string_lossy().into_owned()),
                        line: *line,
                        count,
                        bytes,
                    }
                })
                .collect(),
        };
        report.sort();
        report
    }
}

/// Live `DebugAlloc` allocations from one call site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakSite {
    /// The file name given to `DebugAlloc` (`None` for NULL; bytes that
    /// are not UTF-8 are replaced).
    pub file: Option<String>,
    /// The line given to `DebugAlloc`.
    pub line: i32,
    /// Live allocations from this site.
    pub count: usize,
    /// Bytes requested by them.
    pub bytes: usize,
}

/// Live `DebugAlloc` allocations grouped by call site, the most bytes
/// first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeakReport {
    /// One entry per call site with live allocations.
    pub sites: Vec<LeakSite>,
}

impl LeakReport {
    /// Whether no debug allocation is live.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// Live debug allocations in all.
    pub fn count(&self) -> usize {
        self.sites.iter().map(|s| s.count).sum()
    }

    /// Bytes of live debug allocations in all.
    pub fn bytes(&self) -> usize {
        self.sites.iter().map(|s| s.bytes).sum()
    }

    /// The entry of `file:line`, if it has live allocations.
    pub fn site(&self, file: Option<&str>, line: i32) -> Option<&LeakSite> {
        self.sites
            .iter()
            .find(|s| s.file.as_deref() == file && s.line == line)
    }

    /// Adds another report's sites (a manager's report over its heaps).
    pub fn merge(&mut self, other: LeakReport) {
        for site in other.sites {
            match self
                .sites
                .iter_mut()
                .find(|s| s.file == site.file && s.line == site.line)
            {
                Some(s) => {
                    s.count += site.count;
                    s.bytes += site.bytes;
                }
                None => self.sites.push(site),
            }
        }
        self.sort();
    }

    fn sort(&mut self) {
        self.sites.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.file.cmp(&b.file))
                .then(a.line.cmp(&b.line))
        });
    }
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} live debug allocations, {} bytes",
            self.count(),
            self.bytes()
        )?;
        for s in &self.sites {
            writeln!(
                f,
                "  {:>8} bytes in {:>6} allocations at {}:{}",
                s.bytes,
                s.count,
                s.file.as_deref().unwrap_or("<unknown>"),
                s.line
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_groups_by_site() {
        let mut r = DebugRecords::default();
        r.record(0x1000, 10, Some(c"a.cpp"), 1);
        r.record(0x2000, 20, Some(c"a.cpp"), 1);
        r.record(0x3000, 100, Some(c"b.cpp"), 7);
        r.record(0x4000, 5, None, 0);
        assert!(r.forget(0x2000));
        assert!(!r.forget(0x2000));
        let report = r.report();
        assert_eq!(report.count(), 3);
        assert_eq!(report.bytes(), 115);
        assert_eq!(report.sites[0].file.as_deref(), Some("b.cpp"));
        assert_eq!(report.site(Some("a.cpp"), 1).unwrap().count, 1);
        assert_eq!(report.site(None, 0).unwrap().bytes, 5);
        let mut merged = report.clone();
        merged.merge(report);
        assert_eq!(merged.site(Some("b.cpp"), 7).unwrap().count, 2);
        assert!(merged.to_string().contains("b.cpp:7"));
    }
}
