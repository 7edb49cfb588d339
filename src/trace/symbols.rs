//! `SymbolTable`: the regions a trace named, so that addresses can be
//! written relative to them (`r3+0x1000`) and read back against another
//! run's addresses.
//!
//! The writer numbers the regions as it sees them made; the replayer binds
//! the names the trace gives to the regions its own run makes. Both keep
//! the history (each region with the sequence numbers of its making and
//! release), so an address is named by the region that held it at that
//! point of the trace, and an address inside a released reservation still
//! names it (a later reservation made at the same place, say).

use super::record::{Addr, Call, Outcome, Sym};
use crate::engine::page_floor;
use crate::win32::{AllocationType, FreeType, PAGE_SIZE};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Copy, Debug)]
struct Region {
    sym: Sym,
    base: usize,
    size: usize,
    made: u64,
    released: Option<u64>,
}

impl Region {
    fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr - self.base < self.size
    }

    fn live_at(&self, seq: u64) -> bool {
        self.made <= seq && self.released.is_none_or(|r| seq < r)
    }
}

/// The regions of one manager that a trace named.
#[derive(Default, Debug)]
pub struct SymbolTable {
    reservations: u32,
    acquisitions: u32,
    live: BTreeMap<usize, Region>,
    acquired: BTreeMap<usize, Region>,
    history: BTreeMap<usize, Vec<Region>>,
    bases: HashMap<Sym, (usize, usize)>,
    largest: usize,
}

/// The size of the reservation a successful `VirtualAlloc(address, size,
/// MEM_RESERVE…)` made at `base`.
fn reservation_size(address: usize, size: usize, base: usize) -> usize {
    let end = if address == 0 {
        base.saturating_add(size)
    } else {
        address.saturating_add(size)
    };
    end.saturating_add(PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE - base
}

impl SymbolTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `addr` as the trace writes it at sequence number `seq`: relative to
    /// the reservation or reported range that held it then, else to the
    /// reservation released last where it lies, else as it is.
    pub fn symbolize(&self, addr: usize, seq: u64) -> Addr {
        let holding = |map: &BTreeMap<usize, Region>| {
            map.range(..=addr)
                .next_back()
                .map(|(_, r)| *r)
                .filter(|r| r.contains(addr) && r.live_at(seq))
        };
        if let Some(r) = holding(&self.live).or_else(|| holding(&self.acquired)) {
            return Addr::Rel(r.sym, addr - r.base);
        }
        let low = addr.saturating_sub(self.largest);
        let mut best: Option<Region> = None;
        for r in self
            .history
            .range(low..=addr)
            .flat_map(|(_, rs)| rs.iter())
            .filter(|r| r.contains(addr) && r.made <= seq)
        {
            // The one live at `seq` wins; else the last released.
            let better = match best {
                None => true,
                Some(b) => {
                    (r.live_at(seq) && !b.live_at(seq))
                        || (r.live_at(seq) == b.live_at(seq) && r.made > b.made)
                }
            };
            if better {
                best = Some(*r);
            }
        }
        match best {
            Some(r) => Addr::Rel(r.sym, addr - r.base),
            None => Addr::Abs(addr),
        }
    }

    /// The address `addr` stands for in this run, if its region is bound.
    pub fn resolve(&self, addr: Addr) -> Option<usize> {
        match addr {
            Addr::Abs(a) => Some(a),
            Addr::Rel(sym, off) => self.bases.get(&sym).and_then(|&(b, _)| b.checked_add(off)),
        }
    }

    /// The base and size bound to `sym`.
    pub fn region(&self, sym: Sym) -> Option<(usize, usize)> {
        self.bases.get(&sym).copied()
    }

    /// The live reservations: name, base and size, in address order.
    pub fn live_reservations(&self) -> impl Iterator<Item = (Sym, usize, usize)> + '_ {
        self.live.values().map(|r| (r.sym, r.base, r.size))
    }

    /// The live reported ranges: name, base and size, in address order.
    pub fn live_acquired(&self) -> impl Iterator<Item = (Sym, usize, usize)> + '_ {
        self.acquired.values().map(|r| (r.sym, r.base, r.size))
    }

    fn bind(&mut self, sym: Sym, base: usize, size: usize, seq: u64) -> Region {
        self.bases.insert(sym, (base, size));
        Region {
            sym,
            base,
            size,
            made: seq,
            released: None,
        }
    }

    /// Binds a new reservation: to `name`, or to the next `rN`.
    pub fn reserve(&mut self, name: Option<Sym>, base: usize, size: usize, seq: u64) -> Sym {
        let sym = match name {
            Some(s @ Sym::Reservation(n)) => {
                self.reservations = self.reservations.max(n);
                s
            }
            _ => {
                self.reservations += 1;
                Sym::Reservation(self.reservations)
            }
        };
        self.largest = self.largest.max(size);
        let region = self.bind(sym, base, size, seq);
        if let Some(old) = self.live.insert(base, region) {
            self.retire(old, seq);
        }
        sym
    }

    fn retire(&mut self, mut region: Region, seq: u64) {
        region.released = Some(seq);
        self.history.entry(region.base).or_default().push(region);
    }

    /// The reservation at `base` was released.
    pub fn release(&mut self, base: usize, seq: u64) {
        if let Some(region) = self.live.remove(&base) {
            self.retire(region, seq);
        }
    }

    /// Binds a range the runtime reported: to `name`, or to the next `aN`.
    pub fn acquire(&mut self, name: Option<Sym>, base: usize, size: usize, seq: u64) -> Sym {
        let sym = match name {
            Some(s @ Sym::Acquired(n)) => {
                self.acquisitions = self.acquisitions.max(n);
                s
            }
            _ => {
                self.acquisitions += 1;
                Sym::Acquired(self.acquisitions)
            }
        };
        let region = self.bind(sym, base, size, seq);
        self.acquired.insert(base, region);
        sym
    }

    /// The range reported at `base` was released.
    pub fn unacquire(&mut self, base: usize) {
        self.acquired.remove(&base);
    }

    /// Everything was released (the manager shut down).
    pub fn release_all(&mut self, seq: u64) {
        for region in std::mem::take(&mut self.live).into_values() {
            self.retire(region, seq);
        }
        self.acquired.clear();
    }

    /// Writes `call` and its `outcome` as a trace does at `seq`, updating
    /// the table with what the call made or released. A new region is
    /// bound to `name` if given (the replayer passes the trace's), else to
    /// the next free one.
    pub fn record(
        &mut self,
        seq: u64,
        call: Call<usize>,
        outcome: Outcome<usize>,
        name: Option<Sym>,
    ) -> (Call<Addr>, Outcome<Addr>) {
        let written = call.map(|a| self.symbolize(a, seq));
        let outcome = match (call, outcome) {
            (
                Call::VirtualAlloc {
                    address,
                    size,
                    allocation_type,
                    ..
                },
                Outcome::Address(base),
            ) if allocation_type.contains(AllocationType::RESERVE) => {
                let len = reservation_size(address, size, base);
                Outcome::Address(Addr::Rel(self.reserve(name, base, len, seq), 0))
            }
            (
                Call::VirtualFree {
                    address, free_type, ..
                },
                Outcome::Ok,
            ) if free_type == FreeType::RELEASE => {
                self.release(page_floor(address), seq);
                Outcome::Ok
            }
            (Call::AcquiredVirtualAddressSpace { address, size }, Outcome::Ok) => {
                Outcome::Named(self.acquire(name, address, size, seq))
            }
            (Call::ReleasedVirtualAddressSpace { address }, Outcome::Ok) => {
                self.unacquire(address);
                Outcome::Ok
            }
            (Call::Shutdown, outcome) => {
                self.release_all(seq);
                outcome.map(Addr::Abs)
            }
            (_, outcome) => outcome.map(|a| self.symbolize(a, seq)),
        };
        (written, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::MemoryCriticalLevel;
    use crate::win32::Protection;

    fn reserve(address: usize, size: usize) -> Call<usize> {
        Call::VirtualAlloc {
            heap: false,
            address,
            size,
            allocation_type: AllocationType::RESERVE,
            protect: Protection::READWRITE,
            level: MemoryCriticalLevel::TaskCritical,
        }
    }

    #[test]
    fn addresses_are_named_by_the_region_that_held_them() {
        let mut t = SymbolTable::new();
        let (_, out) = t.record(1, reserve(0, 0x2_0000), Outcome::Address(0x100_0000), None);
        assert_eq!(out, Outcome::Address(Addr::Rel(Sym::Reservation(1), 0)));
        assert_eq!(
            t.symbolize(0x101_0000, 2),
            Addr::Rel(Sym::Reservation(1), 0x1_0000)
        );
        assert_eq!(t.symbolize(0x102_0000, 2), Addr::Abs(0x102_0000));
        let free = Call::VirtualFree {
            heap: false,
            address: 0x100_0000,
            size: 0,
            free_type: FreeType::RELEASE,
        };
        let (written, _) = t.record(3, free, Outcome::Ok, None);
        assert_eq!(
            written,
            free.map(|_| Addr::Rel(Sym::Reservation(1), 0)),
            "the argument is named before the release"
        );
        // Released: still named (a reservation made there again, say).
        assert_eq!(
            t.symbolize(0x100_0000, 4),
            Addr::Rel(Sym::Reservation(1), 0)
        );
        // Before the reservation was made, the address was nobody's.
        assert_eq!(t.symbolize(0x100_0000, 0), Addr::Abs(0x100_0000));
        let (_, out) = t.record(
            5,
            reserve(0x100_0000, 0x1000),
            Outcome::Address(0x100_0000),
            None,
        );
        assert_eq!(out, Outcome::Address(Addr::Rel(Sym::Reservation(2), 0)));
        assert_eq!(
            t.symbolize(0x100_0000, 6),
            Addr::Rel(Sym::Reservation(2), 0)
        );
        assert_eq!(
            t.symbolize(0x101_0000, 6),
            Addr::Rel(Sym::Reservation(1), 0x1_0000)
        );
        assert_eq!(
            t.resolve(Addr::Rel(Sym::Reservation(1), 8)),
            Some(0x100_0008)
        );
    }

    #[test]
    fn replay_binds_the_trace_names() {
        let mut t = SymbolTable::new();
        let name = Some(Sym::Reservation(7));
        let (_, out) = t.record(1, reserve(0, 0x1_0000), Outcome::Address(0x5_0000), name);
        assert_eq!(out, Outcome::Address(Addr::Rel(Sym::Reservation(7), 0)));
        let call = Call::AcquiredVirtualAddressSpace {
            address: 0x9_0000,
            size: 0x3000,
        };
        let (_, out) = t.record(2, call, Outcome::Ok, Some(Sym::Acquired(4)));
        assert_eq!(out, Outcome::Named(Sym::Acquired(4)));
        assert_eq!(
            t.symbolize(0x9_1000, 3),
            Addr::Rel(Sym::Acquired(4), 0x1000)
        );
        assert_eq!(t.resolve(Addr::Rel(Sym::Acquired(4), 0)), Some(0x9_0000));
        assert_eq!(t.resolve(Addr::Rel(Sym::Acquired(5), 0)), None);
    }
}
