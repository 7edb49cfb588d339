//! The address-space map of a run: every reservation with its runs of
//! pages (state, protection), who made it, and the runtime's own mappings
//! — as a table, JSON, or an SVG picture (see `svg`).

use super::units::bytes;
use hostmem::host::{HostError, HostMemoryManager};
use hostmem::trace::hresult_to_string;
use hostmem::unstable::engine::{PageState, Reservation};
use hostmem::win32::{PAGE_SIZE, Protection};
use serde::Serialize;
use std::fmt::Write as _;

/// A run of pages of one state and protection inside a reservation.
#[derive(Clone, Debug, Serialize)]
pub struct MapRegion {
    /// The first address.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// `MEM_COMMIT` or `MEM_RESERVE`.
    pub state: &'static str,
    /// The pages' protection (`PAGE_READWRITE`, …); empty when reserved.
    pub protect: String,
}

/// A reservation and its regions.
#[derive(Clone, Debug, Serialize)]
pub struct MapReservation {
    /// The trace's name for it (`r3`), when the map comes from a trace.
    pub name: Option<String>,
    /// The base address.
    pub base: u64,
    /// Bytes reserved.
    pub size: u64,
    /// Bytes committed.
    pub committed: u64,
    /// The protection given at reservation.
    pub allocation_protect: String,
    /// Who made it.
    pub owner: String,
    /// Its regions, in address order.
    pub regions: Vec<MapRegion>,
}

/// A range the runtime mapped by itself and reported.
#[derive(Clone, Debug, Serialize)]
pub struct MapMapping {
    /// The trace's name for it (`a2`), when the map comes from a trace.
    pub name: Option<String>,
    /// The base address.
    pub base: u64,
    /// Bytes.
    pub size: u64,
    /// Who made it.
    pub owner: String,
}

/// The map of one manager's address space at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AddressMap {
    /// The manager's reservations, in address order.
    pub reservations: Vec<MapReservation>,
    /// The runtime's own mappings, in address order.
    pub mappings: Vec<MapMapping>,
}

/// A protection's Win32 name(s): `PAGE_EXECUTE_READ`.
pub fn protection_name(p: Protection) -> String {
    let names: Vec<String> = p.iter_names().map(|(n, _)| format!("PAGE_{n}")).collect();
    names.join("|")
}

impl MapReservation {
    /// The map of reservation `r`, made by `owner`.
    pub fn of(r: &Reservation, name: Option<String>, owner: String) -> Self {
        let regions: Vec<MapRegion> = r
            .pages()
            .runs(0..r.pages().len())
            .map(|(run, state)| MapRegion {
                base: r.page_address(run.start) as u64,
                size: (run.len() * PAGE_SIZE) as u64,
                state: match state {
                    PageState::Reserved => "MEM_RESERVE",
                    PageState::Committed(_) => "MEM_COMMIT",
                },
                protect: protection_name(r.protection_of(state)),
            })
            .collect();
        Self {
            name,
            base: r.base() as u64,
            size: r.size() as u64,
            committed: r.committed_bytes() as u64,
            allocation_protect: protection_name(r.allocation_protect()),
            owner,
            regions,
        }
    }
}

impl AddressMap {
    /// The map of `host`'s reservations at this moment (a consistent
    /// snapshot), naming and attributing each with `label`.
    pub fn capture(
        host: &HostMemoryManager,
        label: impl Fn(&Reservation) -> (Option<String>, String),
    ) -> Result<Self, String> {
        host.with_address_space(|space| {
            space
                .reservations()
                .map(|r| {
                    let (name, owner) = label(r);
                    MapReservation::of(r, name, owner)
                })
                .collect::<Vec<_>>()
        })
        .map(|reservations| Self {
            reservations,
            mappings: Vec::new(),
        })
        .map_err(|e: HostError| {
            format!(
                "cannot read the manager's address space: {}",
                hresult_to_string(e.hresult())
            )
        })
    }

    /// Bytes reserved.
    pub fn reserved(&self) -> u64 {
        self.reservations.iter().map(|r| r.size).sum()
    }

    /// Bytes committed.
    pub fn committed(&self) -> u64 {
        self.reservations.iter().map(|r| r.committed).sum()
    }

    fn heading(&self) -> String {
        format!(
            "{} ({} reserved, {} committed), {} ({})",
            super::count(self.reservations.len() as u64, "reservation"),
            bytes(self.reserved()),
            bytes(self.committed()),
            super::count(self.mappings.len() as u64, "runtime mapping"),
            bytes(self.mappings.iter().map(|m| m.size).sum())
        )
    }

    /// One row a reservation: base, size, committed, the protections of
    /// its committed pages, owner; then the runtime's mappings. At most
    /// `limit` rows of each.
    pub fn summary(&self, limit: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.heading());
        let _ = writeln!(
            out,
            "  {:<5} {:<16} {:>10} {:>10}  {:<12} owner",
            "", "base", "size", "committed", "committed as"
        );
        for r in self.reservations.iter().take(limit) {
            let mut prots: Vec<&str> = r
                .regions
                .iter()
                .filter(|g| g.state == "MEM_COMMIT")
                .map(|g| short_of_name(&g.protect))
                .collect();
            prots.sort();
            prots.dedup();
            let _ = writeln!(
                out,
                "  {:<5} {:<16} {:>10} {:>10}  {:<12} {}",
                r.name.as_deref().unwrap_or(""),
                format!("{:#x}", r.base),
                bytes(r.size),
                bytes(r.committed),
                if prots.is_empty() {
                    "-".to_owned()
                } else {
                    prots.join(",")
                },
                r.owner
            );
        }
        if self.reservations.len() > limit {
            let _ = writeln!(
                out,
                "  … {} more",
                super::count((self.reservations.len() - limit) as u64, "reservation")
            );
        }
        for m in self.mappings.iter().take(limit) {
            let _ = writeln!(
                out,
                "  {:<5} {:<16} {:>10} {:>10}  {:<12} {}",
                m.name.as_deref().unwrap_or(""),
                format!("{:#x}", m.base),
                bytes(m.size),
                "(runtime)",
                "",
                m.owner
            );
        }
        if self.mappings.len() > limit {
            let _ = writeln!(
                out,
                "  … {} more",
                super::count((self.mappings.len() - limit) as u64, "mapping")
            );
        }
        out
    }

    /// Every region: each reservation's line, then its runs of pages
    /// indented; then the runtime's mappings. At most `limit` lines of
    /// regions a reservation.
    pub fn table(&self, limit: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.heading());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<35} {:>10}  {:<11} {:<22} owner",
            "region", "size", "state", "protection"
        );
        for r in &self.reservations {
            let range = format!("{:#x}-{:#x}", r.base, r.base + r.size);
            let owner = match &r.name {
                Some(n) => format!("{} [{n}]", r.owner),
                None => r.owner.clone(),
            };
            let _ = writeln!(
                out,
                "{:<35} {:>10}  {:<11} {:<22} {}",
                range,
                bytes(r.size),
                "reservation",
                r.allocation_protect,
                owner
            );
            for g in r.regions.iter().take(limit) {
                let range = format!("  {:#x}-{:#x}", g.base, g.base + g.size);
                let protect = if g.protect.is_empty() {
                    "-"
                } else {
                    &g.protect
                };
                let _ = writeln!(
                    out,
                    "{:<35} {:>10}  {:<11} {}",
                    range,
                    bytes(g.size),
                    g.state,
                    protect
                );
            }
            if r.regions.len() > limit {
                let _ = writeln!(out, "  … {} more regions", r.regions.len() - limit);
            }
        }
        for m in &self.mappings {
            let range = format!("{:#x}-{:#x}", m.base, m.base + m.size);
            let owner = match &m.name {
                Some(n) => format!("{} [{n}]", m.owner),
                None => m.owner.clone(),
            };
            let _ = writeln!(
                out,
                "{:<35} {:>10}  {:<11} {:<22} {}",
                range,
                bytes(m.size),
                "mapped",
                "(the runtime's)",
                owner
            );
        }
        out
    }
}

/// `PAGE_EXECUTE_READ` → `RX`.
pub fn short_of_name(name: &str) -> &'static str {
    match name.split('|').next().unwrap_or("") {
        "PAGE_NOACCESS" => "NA",
        "PAGE_READONLY" => "R",
        "PAGE_READWRITE" => "RW",
        "PAGE_EXECUTE" => "X",
        "PAGE_EXECUTE_READ" => "RX",
        "PAGE_EXECUTE_READWRITE" => "RWX",
        _ => "?",
    }
}
