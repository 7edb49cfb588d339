//! `ReservationIndex`: the engine's reservations, found from any address
//! in three table reads, whatever their number.
//!
//! A B-tree keyed by base answers "which reservation holds this address"
//! in O(log n) node visits, and at 50,000 reservations each visit is a
//! cache miss. Here the address itself is the key: a radix table over the
//! 64 KiB granules of the user address space, three levels deep like a
//! page table (entries spanning 8 GiB, 2 MiB and 64 KiB). An entry is
//! empty, names the one reservation that meets its span, or points to a
//! table one level down when several do. A lookup reads at most one entry
//! per level, then checks the reservation it names really holds the
//! address (a reservation may meet a span only in part).
//!
//! Only spans that two reservations share are split, so a reservation
//! alone in its region costs one entry per span it meets at the highest
//! level: a 256 MiB reservation in an empty 8 GiB span is one entry, not
//! 4,096. Each 64 KiB granule belongs to at most one reservation (bases
//! are granule-aligned), so the bottom level never needs splitting.
//!
//! A query of a small reservation whose pages share one state (most of
//! them) needs no more: the granule entries of a reservation carry a
//! 32-bit summary of it (its state, protection and extent from that
//! granule), so that `VirtualQuery` reads one entry at the bottom and
//! nothing else. With 50,000 regions the granule tables take 400 KB where
//! the reservations take 3 MB, and on a machine whose caches hold a
//! megabyte or two that is the difference between a cache hit and a trip
//! to memory. The summary is rewritten whenever the reservation's state
//! changes from or to uniform.
//!
//! Reservations live in a slab (their slot is what the entries hold).
//! Their order needs no tree of its own: the tables are in address order,
//! so the neighbours of free memory, overlap checks and iteration walk
//! them, skipping an empty span at whatever level it is empty. (A search
//! that finds nothing reads at most every entry of the top table and of
//! one table a level: a few microseconds, spent only where the kernel's
//! mapping list is read anyway or a reservation is placed at an address
//! the caller chose.) Keeping a tree beside the tables doubled the cost
//! of a small reservation's insertion and removal.
//!
//! Readers without the manager's lock ([`IndexView`]) read the same
//! entries: the tables are atomic words in chunks that are allocated once
//! and kept until the index goes (a freed table is only reused, by the
//! writer), so a stale table number still leads to memory of the index,
//! and a sequence number, odd while the writer changes any entry, tells a
//! reader whether what it read between two readings is as of one moment.
//! A reader answers only from one entry (a summary, an extent, or an
//! empty span), and never touches a reservation.

use super::page_map::PageProtection;
use super::range::{USER_ADDRESS_END, page_floor};
use super::reservation::Reservation;
use crate::win32::{
    ALLOCATION_GRANULARITY, MemoryBasicInformation, MemoryState, MemoryType, PAGE_SIZE, Protection,
};
use std::ops::ControlFlow;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};

/// Bytes spanned by one entry at each level, as a shift.
const SHIFT: [u32; 3] = [33, 21, 16];
/// Entries of a table at each level: the top covers the user address space.
const FANOUT: [usize; 3] = [
    (USER_ADDRESS_END - 1) / (1 << SHIFT[0]) + 1,
    1 << (SHIFT[0] - SHIFT[1]),
    1 << (SHIFT[1] - SHIFT[2]),
];
const BOTTOM: usize = SHIFT.len() - 1;
const _: () = assert!(1 << SHIFT[BOTTOM] == ALLOCATION_GRANULARITY);
const _: () = assert!(
    BOTTOM == 2,
    "the walks down are written out for three levels"
);

const _: () = assert!(
    Extent::FIRST_MASK as usize + 1 == Extent::REGION / ALLOCATION_GRANULARITY,
    "an extent's first-granule field counts a region's granules"
);

/// An entry. Its low 32 bits: 0 is empty, `TABLE | t` points to table
/// `t`, and anything else is `slot + 1` of the one reservation that meets
/// the entry's span. Its high 32 bits, in a granule entry, may hold the
/// reservation's [`Summary`]; in an owner entry above the granules, its
/// [`Extent`] or 0; in a table's, where the table lies: its
/// chunk (the top [`CHUNK_BITS`] bits) and its place in the chunk (the
/// rest), so that a walk down finds it with no arithmetic on `t`.
type Entry = u64;
const EMPTY: Entry = 0;
const TABLE: u32 = 1 << 31;

/// Bits of a table entry's high half that hold the table's chunk.
const CHUNK_BITS: u32 = 5;
/// Bits of a table entry's high half that hold its place in the chunk.
const PLACE_BITS: u32 = 32 - CHUNK_BITS;

enum Kind {
    Empty,
    Owner(u32),
    Table(u32),
}

fn kind(e: Entry) -> Kind {
    let low = e as u32;
    if low == 0 {
        Kind::Empty
    } else if low & TABLE != 0 {
        Kind::Table(low & !TABLE)
    } else {
        Kind::Owner(low - 1)
    }
}

fn owner(slot: u32, summary: u32) -> Entry {
    (u64::from(summary) << 32) | u64::from(slot + 1)
}

/// The entry pointing to table `t` of `level`.
fn table_entry(level: usize, t: u32) -> Entry {
    let (k, place) = chunk_of(t as usize, FIRST[level]);
    debug_assert!(k < 1 << CHUNK_BITS && place < 1 << PLACE_BITS);
    ((k as u64) << (32 + PLACE_BITS)) | ((place as u64) << 32) | u64::from(TABLE | t)
}

/// Where the table a table entry points to lies: its chunk and its place
/// in the chunk (what [`table_entry`] stored).
#[inline(always)]
fn table_place(e: Entry) -> (usize, usize) {
    let k = (e >> (32 + PLACE_BITS)) as usize;
    (k, ((e >> 32) as usize) & ((1 << PLACE_BITS) - 1))
}

/// Where a reservation lies, in the high half of an owner entry above
/// the granules (whose high half holds no [`Summary`]), so that a reader
/// without the lock can tell an address in the reservation from one
/// beside it in the same span: bits 29–31 `0b001` (a summary always has
/// bit 31 or bit 30 set), bits 12–28 the reservation's first granule in
/// the 8 GiB region of the entry, bits 0–11 how many pages of it lie in
/// that region. 0 (no extent) when those pages number more than 4,095:
/// only the reservation can then say.
struct Extent;

impl Extent {
    const FLAG: u32 = 1 << 29;
    /// The largest count of pages an extent holds (bits 0–11).
    const PAGES: usize = 0xFFF;
    /// Where the first granule's field starts, and its 17 bits.
    const FIRST_SHIFT: u32 = 12;
    const FIRST_MASK: u32 = 0x1_FFFF;
    /// Bytes of the region an extent is relative to: a top entry's span.
    const REGION: usize = 1 << SHIFT[0];

    /// The extent of `r` in the region holding `span_start`.
    fn of(r: &Reservation, span_start: usize) -> u32 {
        let region = span_start & !(Self::REGION - 1);
        let start = r.base().max(region);
        let end = r.end().min(region + Self::REGION);
        let pages = (end - start) / PAGE_SIZE;
        if pages > Self::PAGES {
            return 0;
        }
        let first = (start - region) / ALLOCATION_GRANULARITY;
        Self::FLAG | (first as u32) << Self::FIRST_SHIFT | pages as u32
    }

    /// Whether the high half of an entry is an extent.
    #[inline]
    fn is_extent(high: u32) -> bool {
        high >> 29 == Self::FLAG >> 29
    }

    /// Whether `addr` lies in the reservation of extent `high`.
    #[inline]
    fn holds(high: u32, addr: usize) -> bool {
        let region = addr & !(Self::REGION - 1);
        let first = (high >> Self::FIRST_SHIFT) & Self::FIRST_MASK;
        let start = region + first as usize * ALLOCATION_GRANULARITY;
        let pages = high as usize & Self::PAGES;
        (start..start + pages * PAGE_SIZE).contains(&addr)
    }
}

/// A reservation seen from one of its granules, in 32 bits (0 only in
/// entries that are not a granule's).
///
/// What `VirtualQuery` needs, when its pages share one state and it fits:
/// bit 31 set; bits 28–30 the page state's code; bits 23–27 the allocation
/// protection (3 bits base, 2 bits caching); bits 12–22 how many granules
/// before this one the reservation starts; bits 0–11 how many pages after
/// this granule's start it ends.
///
/// Otherwise only where it ends, which is what a refusal of an address in
/// no reservation needs: bit 31 clear, bit 30 set, bits 0–11 how many
/// pages after this granule's start it ends, 4,095 meaning that many or
/// more (past the granule's end either way).
struct Summary;

impl Summary {
    const VALID: u32 = 1 << 31;
    const BOUNDS: u32 = 1 << 30;
    /// The largest count of pages ahead a summary holds.
    const AHEAD: usize = 0xFFF;

    fn of(r: &Reservation, granule: usize) -> u32 {
        let ahead = (r.end() - granule) / PAGE_SIZE;
        Self::answering(r, granule, ahead).unwrap_or(Self::BOUNDS | ahead.min(Self::AHEAD) as u32)
    }

    /// The summary that answers queries, if the reservation has one.
    fn answering(r: &Reservation, granule: usize, ahead: usize) -> Option<u32> {
        let state = r.pages().uniform_state()?;
        let protect = r.allocation_protect();
        let base = PageProtection::from_protection(protect)?;
        let caching = match protect.modifiers() {
            m if m.is_empty() => 0,
            Protection::NOCACHE => 1,
            Protection::WRITECOMBINE => 2,
            _ => return None,
        };
        let back = (granule - r.base()) / ALLOCATION_GRANULARITY;
        if back >= 1 << 11 || ahead > Self::AHEAD {
            return None;
        }
        Some(
            Self::VALID
                | (state.code() as u32) << 28
                | (base as u32) << 25
                | caching << 23
                | (back as u32) << 12
                | ahead as u32,
        )
    }

    /// Whether the summary answers queries.
    fn answers(summary: u32) -> bool {
        summary & Self::VALID != 0
    }

    /// Whether `addr`, in granule `granule`, lies before the reservation's
    /// end.
    #[inline]
    fn holds(summary: u32, granule: usize, addr: usize) -> bool {
        addr < granule + (summary & 0xFFF) as usize * PAGE_SIZE
    }

    /// The query of `addr` in granule `granule`, or `None` if `addr` lies
    /// past the reservation's end (in the rest of its last granule).
    /// Decoded with tables rather than branches: queries of neighbours in
    /// different states do not mispredict.
    #[inline]
    fn query(summary: u32, granule: usize, addr: usize) -> Option<MemoryBasicInformation> {
        /// The protection of each page-state code (0: reserved, none).
        const PROTECT: [u32; 8] = [
            0,
            Protection::NOACCESS.bits(),
            Protection::READONLY.bits(),
            Protection::READWRITE.bits(),
            Protection::EXECUTE.bits(),
            Protection::EXECUTE_READ.bits(),
            Protection::EXECUTE_READWRITE.bits(),
            0,
        ];
        /// Which codes are committed pages: they carry the caching modifier.
        const COMMITTED: [u32; 8] = [0, !0, !0, !0, !0, !0, !0, 0];
        const STATE: [MemoryState; 8] = [
            MemoryState::RESERVE,
            MemoryState::COMMIT,
            MemoryState::COMMIT,
            MemoryState::COMMIT,
            MemoryState::COMMIT,
            MemoryState::COMMIT,
            MemoryState::COMMIT,
            MemoryState::RESERVE,
        ];
        const CACHING: [u32; 4] = [
            0,
            Protection::NOCACHE.bits(),
            Protection::WRITECOMBINE.bits(),
            0,
        ];
        let end = granule + (summary & 0xFFF) as usize * PAGE_SIZE;
        if addr >= end {
            return None;
        }
        let base = granule - ((summary >> 12) & 0x7FF) as usize * ALLOCATION_GRANULARITY;
        let state = ((summary >> 28) & 7) as usize;
        let allocation = ((summary >> 25) & 7) as usize;
        let caching = CACHING[((summary >> 23) & 3) as usize];
        let page = page_floor(addr);
        Some(MemoryBasicInformation {
            base_address: page,
            allocation_base: base,
            allocation_protect: Protection::from_bits_retain(PROTECT[allocation] | caching),
            partition_id: 0,
            region_size: end - page,
            state: STATE[state],
            protect: Protection::from_bits_retain(PROTECT[state] | (caching & COMMITTED[state])),
            type_: MemoryType::PRIVATE,
        })
    }
}

/// Tables a level's first chunk holds; chunk `k` holds `FIRST << k`, so
/// that chunks never move and a few of them hold any number of tables.
const FIRST: [usize; 3] = [1, 1, 64];
const _: () =
    assert!(FIRST[0].is_power_of_two() && FIRST[1].is_power_of_two() && FIRST[2].is_power_of_two());
/// Chunks a level may have (all a table entry can name).
const CHUNKS: usize = 1 << CHUNK_BITS;

/// Tables a level may have: as many as the chunks whose every table's
/// place fits in a table entry hold (over 2^27 at every level; 2^27
/// granule tables take 32 GiB).
const fn max_tables(first: usize) -> usize {
    let mut k = 0;
    while k + 1 < CHUNKS && first << (k + 1) <= 1 << PLACE_BITS {
        k += 1;
    }
    first * ((2 << k) - 1)
}
const _: () = assert!(
    max_tables(FIRST[0]) <= TABLE as usize
        && max_tables(FIRST[1]) <= TABLE as usize
        && max_tables(FIRST[2]) <= TABLE as usize,
    "a table's number fits beside the TABLE bit"
);

/// The chunk holding table `t` of a level whose first chunk holds `first`
/// tables (a power of two), and the table's place in it.
#[inline]
fn chunk_of(t: usize, first: usize) -> (usize, usize) {
    debug_assert!(first.is_power_of_two());
    // Shifts, not a division: the level, hence `first`, is known only at
    // run time on the walks, and a division costs tens of cycles.
    let shift = first.trailing_zeros();
    let n = (t >> shift) + 1;
    let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (k, t - (((1 << k) - 1) << shift))
}

/// The index's tables, shared with the readers that query without the
/// manager's lock ([`IndexView`]): arrays of atomic entries in chunks that
/// are allocated once and freed only when the last holder goes, so a
/// reader following a table number never reads freed memory, and a
/// sequence number that is odd while a writer changes any entry.
///
/// Only the writer (the [`ReservationIndex`], under the manager's
/// exclusive lock) allocates chunks and stores entries.
struct Tables {
    /// Even when no change is under way; bumped before and after each.
    seq: AtomicU64,
    /// Serialises the summary refreshes of changes made in place, which
    /// run side by side under the manager's shared lock (each on its own
    /// reservation's granules): one `begin`..`end` at a time keeps the
    /// sequence number odd for the whole of each. The exclusive writer
    /// needs it not: no change in place runs beside it.
    refreshing: parking_lot::Mutex<()>,
    /// The chunks of each level (level 0 has one, of one table).
    chunks: [[OnceLock<Box<[AtomicU64]>>; CHUNKS]; 3],
}

impl Tables {
    fn new() -> Self {
        let tables = Self {
            seq: AtomicU64::new(0),
            refreshing: parking_lot::Mutex::new(()),
            chunks: Default::default(),
        };
        tables.ensure(0, 0);
        tables
    }

    /// Entries in chunk `k` of `level`.
    fn chunk_len(level: usize, k: usize) -> usize {
        (FIRST[level] << k) * FANOUT[level]
    }

    /// Entry `i` of table `t` at `level`, if its chunk is allocated.
    #[inline(always)]
    fn slot(&self, level: usize, t: usize, i: usize) -> Option<&AtomicU64> {
        if level == 0 {
            // The one top table, the first of its chunk: no arithmetic.
            return self.chunks[0][0].get()?.get(i).filter(|_| t == 0);
        }
        let (k, offset) = chunk_of(t, FIRST[level]);
        if i >= FANOUT[level] {
            return None;
        }
        self.chunks[level]
            .get(k)?
            .get()?
            .get(offset * FANOUT[level] + i)
    }

    /// The writer's entry `i` of table `t` at `level` (allocated).
    #[inline]
    fn at(&self, level: usize, t: u32, i: usize) -> &AtomicU64 {
        self.slot(level, t as usize, i)
            .expect("a table in use lies in an allocated chunk")
    }

    /// Makes sure table `t` of `level` has memory, all entries empty in a
    /// new chunk (the writer only).
    fn ensure(&self, level: usize, t: u32) {
        let (k, _) = chunk_of(t as usize, FIRST[level]);
        self.chunks[level][k].get_or_init(|| {
            (0..Self::chunk_len(level, k))
                .map(|_| AtomicU64::new(EMPTY))
                .collect()
        });
    }

    /// Marks the start of a change: readers that overlap it retry.
    /// (Odd already after a change a panic cut short: it stays odd, and
    /// readers keep to the locked path.)
    fn begin(&self) {
        let s = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Marks the end of a change.
    fn end(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store((s | 1) + 1, Ordering::Release);
    }

    /// The entry that decides `addr` (empty or an owner), read as a
    /// reader does; `None` where a table's memory is not there (a change
    /// under way).
    #[inline(always)]
    fn entry_at(&self, addr: usize) -> Option<Entry> {
        // Level by level, not in a loop: each level's shift and fanout
        // are then constants.
        let mut e = self.slot(0, 0, addr >> SHIFT[0])?.load(Ordering::Acquire);
        if (e as u32) & TABLE != 0 {
            let i = (addr >> SHIFT[1]) & (FANOUT[1] - 1);
            e = self.below(1, e, i)?.load(Ordering::Acquire);
            if (e as u32) & TABLE != 0 {
                let i = (addr >> SHIFT[2]) & (FANOUT[2] - 1);
                e = self.below(2, e, i)?.load(Ordering::Acquire);
            }
        }
        Some(e)
    }

    /// Entry `i` of the table at `level` that the table entry `e` points
    /// to, found from where `e` says the table lies (no arithmetic on
    /// its number); `None` if that chunk is not allocated.
    #[inline(always)]
    fn below(&self, level: usize, e: Entry, i: usize) -> Option<&AtomicU64> {
        let (k, place) = table_place(e);
        self.chunks[level]
            .get(k)?
            .get()?
            .get(place * FANOUT[level] + i)
    }

    /// The sequence number a read starts from, or `None` while a change
    /// is under way.
    #[inline(always)]
    fn read_begin(&self) -> Option<u64> {
        let seq = self.seq.load(Ordering::Acquire);
        seq.is_multiple_of(2).then_some(seq)
    }

    /// Whether no change started since [`read_begin`](Self::read_begin)
    /// returned `seq`: what was read in between is then as of one moment.
    #[inline(always)]
    fn read_valid(&self, seq: u64) -> bool {
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == seq
    }

    /// Reads `addr`'s entry between two reads of the sequence number,
    /// up to `TRIES` times: the entry as of a moment no change was under
    /// way, or `None` if changes kept overlapping the reads.
    #[inline(always)]
    fn stable_entry_at(&self, addr: usize) -> Option<Entry> {
        const TRIES: usize = 4;
        for _ in 0..TRIES {
            let Some(seq) = self.read_begin() else {
                std::hint::spin_loop();
                continue;
            };
            let e = self.entry_at(addr);
            if let Some(e) = e
                && self.read_valid(seq)
            {
                return Some(e);
            }
        }
        None
    }
}

/// A view of the index for readers without the manager's lock: answers
/// `VirtualQuery` of an address whose granule's summary says it all, and
/// whether an address is in no reservation, from entries read between two
/// reads of the index's sequence number. Anything else (and a read that
/// overlaps changes four times in a row) is left to the locked path.
#[derive(Clone)]
pub struct IndexView(Arc<Tables>);

impl IndexView {
    /// The query of `addr` if its granule's summary answers it.
    #[inline]
    pub fn query(&self, addr: usize) -> Option<MemoryBasicInformation> {
        let e = self.0.stable_entry_at(addr)?;
        let summary = (e >> 32) as u32;
        if !Summary::answers(summary) {
            return None;
        }
        Summary::query(summary, addr & !(ALLOCATION_GRANULARITY - 1), addr)
    }

    /// Whether `addr` lies in a reservation (of any owner): `Some(false)`
    /// when no reservation holds it, `Some(true)` when one surely does,
    /// `None` when only the reservation itself could say.
    #[inline(always)]
    pub fn holds(&self, addr: usize) -> Option<bool> {
        if addr >= USER_ADDRESS_END {
            return Some(false);
        }
        let e = self.0.stable_entry_at(addr)?;
        let high = (e >> 32) as u32;
        if Extent::is_extent(high) {
            return Some(Extent::holds(high, addr));
        }
        if high != 0 {
            return Some(Summary::holds(
                high,
                addr & !(ALLOCATION_GRANULARITY - 1),
                addr,
            ));
        }
        match kind(e) {
            Kind::Empty => Some(false),
            _ => None,
        }
    }
}

/// What the index knows of an address.
pub enum Lookup<'a> {
    /// The query, answered from the granule's summary.
    Answered(MemoryBasicInformation),
    /// The reservation holding the address.
    In(&'a Reservation),
    /// No reservation holds it.
    Outside,
}

/// A reservation in the slab, aligned to a cache line: a lookup that
/// misses the cache reads its first line (the lock of its pages made it
/// two lines long; the prefetcher brings the pair).
#[repr(align(64))]
struct Slot(Option<Reservation>);

const _: () = assert!(size_of::<Slot>() <= 128);

/// The engine's reservations, indexed by address (see the module docs).
pub struct ReservationIndex {
    /// The tables of each level (level 0 has one), shared with the
    /// readers' [`IndexView`]s. Table `t` of level `l` is in use when
    /// `t < live[l].len()` and it is not in `free_tables[l]`.
    tables: Arc<Tables>,
    /// The entries of each table that are not empty: a table is freed
    /// when none is left.
    live: [Vec<u32>; 3],
    /// Freed tables for reuse, by level (the top is never freed).
    free_tables: [Vec<u32>; 3],
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// How many reservations are indexed.
    count: usize,
}

/// Whether `v`'s memory is small enough to keep when it empties (4 KiB):
/// a loop that reserves and releases one reservation should not allocate
/// each time.
fn small<T>(v: &Vec<T>) -> bool {
    v.capacity() * std::mem::size_of::<T>() <= 4096
}

/// Empties `v`, giving its memory back unless it is [`small`].
fn forget<T>(v: &mut Vec<T>) {
    if !small(v) {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

impl Default for ReservationIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl ReservationIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            tables: Arc::new(Tables::new()),
            live: [vec![0], Vec::new(), Vec::new()],
            free_tables: Default::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            count: 0,
        }
    }

    /// A view for readers without the lock (see [`IndexView`]).
    pub fn view(&self) -> IndexView {
        IndexView(self.tables.clone())
    }

    /// The number of reservations.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The reservation holding `addr`.
    #[inline(always)]
    pub fn at(&self, addr: usize) -> Option<&Reservation> {
        let slot = self.slot_at(addr)?;
        self.slots[slot as usize]
            .0
            .as_ref()
            .filter(|r| r.contains(addr))
    }

    /// The reservation whose base is `base`.
    pub fn get(&self, base: usize) -> Option<&Reservation> {
        self.at(base).filter(|r| r.base() == base)
    }

    /// The reservations in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Reservation> {
        self.slots_in_order()
            .into_iter()
            .map(|slot| self.reservation(slot))
    }

    /// The slots of the reservations, in address order: each is taken
    /// from the entry whose span holds its base.
    fn slots_in_order(&self) -> Vec<u32> {
        let mut order = Vec::with_capacity(self.count);
        if self.count > 0 {
            self.find(0, 0, 0, 0..USER_ADDRESS_END, false, &mut |slot, span| {
                if span.contains(&self.reservation(slot).base()) {
                    order.push(slot);
                }
                ControlFlow::Continue(())
            });
        }
        order
    }

    /// The last reservation starting before `addr`.
    pub fn last_before(&self, addr: usize) -> Option<&Reservation> {
        let end = addr.min(USER_ADDRESS_END);
        if end == 0 || self.count == 0 {
            return None;
        }
        // Spans from `addr` down: the first reservation met that starts
        // before `addr` is the last one. (One that starts between it and
        // `addr` would meet a span met earlier, or share this one, which
        // would then be a table, not an owner.)
        self.find(0, 0, 0, 0..end, true, &mut |slot, _| {
            if self.reservation(slot).base() < addr {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map(|slot| self.reservation(slot))
    }

    /// The first reservation starting at or after `addr`.
    pub fn first_from(&self, addr: usize) -> Option<&Reservation> {
        if addr >= USER_ADDRESS_END || self.count == 0 {
            return None;
        }
        // Spans from `addr` up: as in `last_before`, the first met that
        // starts at or after `addr` is the first one.
        self.find(0, 0, 0, addr..USER_ADDRESS_END, false, &mut |slot, _| {
            if self.reservation(slot).base() >= addr {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map(|slot| self.reservation(slot))
    }

    /// Visits the owner entries of the table at `level` (first address
    /// `origin`) that meet `range`, and those of the tables below it, in
    /// address order (`down`: descending), each with its span: the slot
    /// of the first `visit` breaks at, if any.
    fn find(
        &self,
        table: u32,
        level: usize,
        origin: usize,
        range: Range<usize>,
        down: bool,
        visit: &mut dyn FnMut(u32, Range<usize>) -> ControlFlow<()>,
    ) -> Option<u32> {
        let mut entry = |(i, span, sub): (usize, Range<usize>, Range<usize>)| match kind(
            self.entry(level, table, i),
        ) {
            Kind::Empty => None,
            Kind::Owner(slot) => visit(slot, span).is_break().then_some(slot),
            Kind::Table(child) => self.find(child, level + 1, span.start, sub, down, visit),
        };
        let mut spans = Self::spans(level, origin, range);
        if down {
            spans.rev().find_map(&mut entry)
        } else {
            spans.find_map(&mut entry)
        }
    }

    /// Adds `r`, which must overlap no reservation.
    pub fn insert(&mut self, r: Reservation) {
        let granules = Self::granules(&r);
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize].0 = Some(r);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&s| s < TABLE - 1)
                    .expect("fewer than 2^31 reservations");
                self.slots.push(Slot(Some(r)));
                slot
            }
        };
        self.count += 1;
        self.tables.begin();
        if granules.len() == ALLOCATION_GRANULARITY {
            self.insert_granule(granules.start, slot);
        } else {
            self.insert_in(0, 0, 0, granules, slot);
        }
        self.tables.end();
    }

    /// Removes and returns the reservation whose base is `base`.
    pub fn remove(&mut self, base: usize) -> Option<Reservation> {
        if base >= USER_ADDRESS_END {
            return None;
        }
        // One walk down to the entry deciding `base`, whose path a
        // reservation of one granule (it has no other entry) clears.
        let mut path = [(0u32, 0usize); SHIFT.len()];
        let (mut table, mut level) = (0, 0);
        let slot = loop {
            let (i, _) = Self::place(level, base);
            path[level] = (table, i);
            match kind(self.entry(level, table, i)) {
                Kind::Owner(slot) => break slot,
                Kind::Table(child) => (table, level) = (child, level + 1),
                Kind::Empty => return None,
            }
        };
        let r = self.slots[slot as usize].0.take_if(|r| r.base() == base)?;
        self.count -= 1;
        let granules = Self::granules(&r);
        self.tables.begin();
        if granules.len() == ALLOCATION_GRANULARITY {
            self.clear_path(&path, level);
        } else {
            self.remove_in(0, 0, 0, granules, slot);
        }
        self.tables.end();
        // The last one gone: the slab's memory goes back, unless it is
        // small (one reservation made and released over and over).
        if self.count == 0 && !small(&self.slots) {
            self.forget_all();
        } else {
            self.free_slots.push(slot);
        }
        Some(r)
    }

    /// Removes and returns every reservation, in address order.
    pub fn take_all(&mut self) -> Vec<Reservation> {
        let all = self
            .slots_in_order()
            .into_iter()
            .filter_map(|slot| self.slots[slot as usize].0.take())
            .collect();
        self.count = 0;
        self.forget_all();
        all
    }

    /// Back to the state of a new index, giving the memory of the slab
    /// back. The tables' chunks stay allocated (readers without the lock
    /// may be reading them), all entries empty, for the next reservations.
    fn forget_all(&mut self) {
        // The top table is 128 KiB: clearing it costs microseconds, as
        // much as the `munmap` of a release. After the last `remove` every
        // table is empty already (each removal clears its entries), so
        // only `take_all` has anything to clear.
        if self.live[0][0] != 0 {
            self.tables.begin();
            for (level, &fanout) in FANOUT.iter().enumerate() {
                for t in 0..self.live[level].len() as u32 {
                    for i in 0..fanout {
                        self.tables.at(level, t, i).store(EMPTY, Ordering::Relaxed);
                    }
                }
            }
            self.tables.end();
            self.live[0][0] = 0;
        }
        debug_assert!(self.all_empty());
        for level in 1..SHIFT.len() {
            forget(&mut self.live[level]);
            forget(&mut self.free_tables[level]);
        }
        forget(&mut self.slots);
        forget(&mut self.free_slots);
    }

    /// Whether every entry of every allocated table is empty.
    fn all_empty(&self) -> bool {
        (0..SHIFT.len()).all(|level| {
            (0..CHUNKS).all(|k| {
                let first = FIRST[level] * ((1 << k) - 1);
                self.tables.chunks[level][k].get().is_none()
                    || (0..FIRST[level] << k).all(|t| {
                        (0..FANOUT[level]).all(|i| {
                            self.tables
                                .at(level, (first + t) as u32, i)
                                .load(Ordering::Relaxed)
                                == EMPTY
                        })
                    })
            })
        })
    }

    fn reservation(&self, slot: u32) -> &Reservation {
        self.slots[slot as usize]
            .0
            .as_ref()
            .expect("an indexed slot holds a reservation")
    }

    /// The granules a reservation occupies (its last one in full: no other
    /// reservation can start in it).
    fn granules(r: &Reservation) -> Range<usize> {
        let end = r.end().div_ceil(ALLOCATION_GRANULARITY) * ALLOCATION_GRANULARITY;
        r.base()..end
    }

    /// The entry that decides `addr`: empty or an owner.
    #[inline]
    fn entry_at(&self, addr: usize) -> Entry {
        self.tables.entry_at(addr).unwrap_or(EMPTY)
    }

    #[inline]
    fn slot_at(&self, addr: usize) -> Option<u32> {
        (self.entry_at(addr) as u32).checked_sub(1)
    }

    /// `VirtualQuery`'s view of `addr`: answered from the granule's
    /// summary when it has one, else the reservation holding it, if any.
    #[inline]
    pub fn lookup(&self, addr: usize) -> Lookup<'_> {
        let e = self.entry_at(addr);
        let summary = (e >> 32) as u32;
        if Summary::answers(summary) {
            let granule = addr & !(ALLOCATION_GRANULARITY - 1);
            return Summary::query(summary, granule, addr)
                .map_or(Lookup::Outside, Lookup::Answered);
        }
        let Some(slot) = (e as u32).checked_sub(1) else {
            return Lookup::Outside;
        };
        match self.slots[slot as usize]
            .0
            .as_ref()
            .filter(|r| r.contains(addr))
        {
            Some(r) => Lookup::In(r),
            None => Lookup::Outside,
        }
    }

    /// Changes the reservation at `base` with `f`, keeping the summaries
    /// of its granules true. `None` if there is none.
    pub fn update<R>(&mut self, base: usize, f: impl FnOnce(&mut Reservation) -> R) -> Option<R> {
        let slot = self.slot_at(base)?;
        let r = self.slots[slot as usize]
            .0
            .as_mut()
            .filter(|r| r.base() == base)?;
        let before = r.pages().uniform_state();
        let result = f(r);
        let r = self.reservation(slot);
        if r.pages().uniform_state() != before {
            let granules = Self::granules(r);
            self.tables.begin();
            self.refresh_in(0, 0, 0, granules, slot);
            self.tables.end();
        }
        Some(result)
    }

    /// After a change in place of reservation `r` that made its pages
    /// uniform or not uniform, or uniform in another state (made with its
    /// pages held, which the caller still holds, under the manager's
    /// shared lock): rewrites its granules' summaries. Changes in place of
    /// other reservations may refresh theirs at the same time: the
    /// refreshes take turns (see `Tables::refreshing`).
    pub fn refresh_shared(&self, r: &Reservation) {
        let Some(slot) = self.slot_at(r.base()) else {
            return;
        };
        let granules = Self::granules(r);
        let _turn = self.tables.refreshing.lock();
        self.tables.begin();
        self.refresh_in(0, 0, 0, granules, slot);
        self.tables.end();
    }

    /// The entries of a table at `level` whose spans meet `range`: each
    /// one's index, its whole span, and its span clipped to `range`.
    /// `origin` is the table's first address.
    fn spans(
        level: usize,
        origin: usize,
        range: Range<usize>,
    ) -> impl DoubleEndedIterator<Item = (usize, Range<usize>, Range<usize>)> {
        let shift = SHIFT[level];
        let first = (range.start - origin) >> shift;
        let last = (range.end - 1 - origin) >> shift;
        (first..=last).map(move |i| {
            let start = origin + (i << shift);
            let end = start + (1 << shift);
            (i, start..end, range.start.max(start)..range.end.min(end))
        })
    }

    fn entry(&self, level: usize, table: u32, i: usize) -> Entry {
        self.tables.at(level, table, i).load(Ordering::Relaxed)
    }

    /// Stores an entry: only between `begin` and `end` of the tables.
    /// (A load and a store, not a swap: the writer is alone, and a swap
    /// is a locked instruction.)
    fn set(&mut self, level: usize, table: u32, i: usize, e: Entry) {
        debug_assert!(self.tables.seq.load(Ordering::Relaxed) % 2 == 1);
        let entry = self.tables.at(level, table, i);
        let was = entry.load(Ordering::Relaxed);
        entry.store(e, Ordering::Relaxed);
        let live = &mut self.live[level][table as usize];
        match (was == EMPTY, e == EMPTY) {
            (true, false) => *live += 1,
            (false, true) => *live -= 1,
            _ => {}
        }
    }

    /// An empty table at `level` (a freed one is empty again).
    fn new_table(&mut self, level: usize) -> u32 {
        if let Some(t) = self.free_tables[level].pop() {
            return t;
        }
        let t = u32::try_from(self.live[level].len())
            .ok()
            .filter(|&t| (t as usize) < max_tables(FIRST[level]))
            .expect("fewer tables at a level than a table entry can place");
        self.tables.ensure(level, t);
        self.live[level].push(0);
        t
    }

    /// The index of `addr`'s entry in the table at `level` whose span
    /// holds it, and that table's first address.
    #[inline]
    fn place(level: usize, addr: usize) -> (usize, usize) {
        if level == 0 {
            (addr >> SHIFT[0], 0)
        } else {
            let origin = addr & !((1 << SHIFT[level - 1]) - 1);
            ((addr - origin) >> SHIFT[level], origin)
        }
    }

    /// The entry at `level` naming `slot` over the span starting at
    /// `span_start`: with the reservation's summary in a granule entry,
    /// its extent above.
    fn owner_entry(&self, level: usize, slot: u32, span_start: usize) -> Entry {
        let r = self.reservation(slot);
        let high = if level == BOTTOM {
            Summary::of(r, span_start)
        } else {
            Extent::of(r, span_start)
        };
        owner(slot, high)
    }

    /// [`insert_in`](Self::insert_in) from the top for a reservation of
    /// the one granule at `granule` (the common small one), walking down
    /// without recursion until it meets an empty entry — or another
    /// reservation's, whose span the general walk then splits.
    fn insert_granule(&mut self, granule: usize, slot: u32) {
        let (mut table, mut level) = (0, 0);
        loop {
            let (i, origin) = Self::place(level, granule);
            match kind(self.entry(level, table, i)) {
                Kind::Empty => {
                    let e = self.owner_entry(level, slot, granule);
                    return self.set(level, table, i, e);
                }
                Kind::Table(child) => (table, level) = (child, level + 1),
                Kind::Owner(_) => {
                    let granules = granule..granule + ALLOCATION_GRANULARITY;
                    return self.insert_in(table, level, origin, granules, slot);
                }
            }
        }
    }

    /// [`remove_in`](Self::remove_in) for a reservation of one granule,
    /// whose one entry is at the end of `path` (the table and index of the
    /// entry taken at each level down to `level`): clears it, then frees
    /// each table on the way that it left empty, from the bottom up.
    fn clear_path(&mut self, path: &[(u32, usize); SHIFT.len()], mut level: usize) {
        let (t, i) = path[level];
        self.set(level, t, i, EMPTY);
        while level > 0 && self.live[level][path[level].0 as usize] == 0 {
            let child = path[level].0;
            level -= 1;
            let (t, i) = path[level];
            self.set(level, t, i, EMPTY);
            self.free_tables[level + 1].push(child);
        }
    }

    /// Records `slot` over `range` (granule-aligned, inside the span of
    /// table `table` at `level`, which starts at `origin`).
    fn insert_in(
        &mut self,
        table: u32,
        level: usize,
        origin: usize,
        range: Range<usize>,
        slot: u32,
    ) {
        for (i, span, sub) in Self::spans(level, origin, range) {
            match kind(self.entry(level, table, i)) {
                Kind::Empty => {
                    let e = self.owner_entry(level, slot, span.start);
                    self.set(level, table, i, e);
                }
                Kind::Owner(other) => {
                    assert!(level < BOTTOM, "two reservations in one granule");
                    // Two reservations meet this span: split it.
                    let child = self.new_table(level + 1);
                    let theirs = Self::granules(self.reservation(other));
                    let theirs = theirs.start.max(span.start)..theirs.end.min(span.end);
                    self.insert_in(child, level + 1, span.start, theirs, other);
                    self.set(level, table, i, table_entry(level + 1, child));
                    self.insert_in(child, level + 1, span.start, sub, slot);
                }
                Kind::Table(child) => self.insert_in(child, level + 1, span.start, sub, slot),
            }
        }
    }

    /// Rewrites the summaries of `slot`'s granule entries over `range`
    /// (an owner entry stays one: no table's live count changes). Only
    /// between `begin` and `end` of the tables.
    fn refresh_in(&self, table: u32, level: usize, origin: usize, range: Range<usize>, slot: u32) {
        for (i, span, sub) in Self::spans(level, origin, range) {
            match kind(self.entry(level, table, i)) {
                Kind::Owner(s) if s == slot && level == BOTTOM => {
                    let summary = Summary::of(self.reservation(slot), span.start);
                    debug_assert!(self.tables.seq.load(Ordering::Relaxed) % 2 == 1);
                    self.tables
                        .at(level, table, i)
                        .store(owner(slot, summary), Ordering::Relaxed);
                }
                Kind::Table(child) => self.refresh_in(child, level + 1, span.start, sub, slot),
                _ => {}
            }
        }
    }

    /// Forgets `slot` over `range`, freeing the tables left empty.
    fn remove_in(
        &mut self,
        table: u32,
        level: usize,
        origin: usize,
        range: Range<usize>,
        slot: u32,
    ) {
        for (i, span, sub) in Self::spans(level, origin, range) {
            match kind(self.entry(level, table, i)) {
                Kind::Owner(s) if s == slot => self.set(level, table, i, EMPTY),
                Kind::Table(child) => {
                    self.remove_in(child, level + 1, span.start, sub, slot);
                    if self.live[level + 1][child as usize] == 0 {
                        self.set(level, table, i, EMPTY);
                        self.free_tables[level + 1].push(child);
                    }
                }
                Kind::Owner(_) | Kind::Empty => {
                    debug_assert!(false, "a reservation's span not indexed to it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PageProtection, PageState};

    impl ReservationIndex {
        /// Tables allocated at each level.
        fn tables(&self) -> [usize; 3] {
            [0, 1, 2].map(|l| self.live[l].len())
        }
    }

    fn reservation(base: usize, size: usize) -> Reservation {
        Reservation::new(base, size, Protection::READWRITE, PageState::Reserved)
    }

    /// Every address of interest answers as a linear scan over the live
    /// reservations does.
    fn check(index: &ReservationIndex, live: &[(usize, usize)], probes: &[usize]) {
        for &addr in probes {
            let expected = live
                .iter()
                .find(|&&(b, s)| b <= addr && addr < b + s)
                .map(|&(b, _)| b);
            assert_eq!(
                index.at(addr).map(Reservation::base),
                expected,
                "lookup of {addr:#x}"
            );
            match (index.lookup(addr), index.at(addr)) {
                (Lookup::Answered(mbi), Some(r)) => {
                    assert_eq!(mbi, r.query(addr), "summary of {addr:#x}");
                }
                (Lookup::In(found), Some(r)) => assert_eq!(found.base(), r.base()),
                (Lookup::Outside, None) => {}
                _ => panic!("lookup and at disagree at {addr:#x}"),
            }
            // What a reader without the lock is told, when it is told.
            let view = index.view();
            if let Some(mbi) = view.query(addr) {
                assert_eq!(
                    Some(mbi),
                    index.at(addr).map(|r| r.query(addr)),
                    "view of {addr:#x}"
                );
            }
            if let Some(held) = view.holds(addr) {
                assert_eq!(held, expected.is_some(), "holds {addr:#x}");
            }
            // The neighbours, as the scan finds them.
            let before = live.iter().map(|&(b, _)| b).filter(|&b| b < addr).max();
            let from = live.iter().map(|&(b, _)| b).filter(|&b| b >= addr).min();
            assert_eq!(
                index.last_before(addr).map(Reservation::base),
                before,
                "last before {addr:#x}"
            );
            assert_eq!(
                index.first_from(addr).map(Reservation::base),
                from,
                "first from {addr:#x}"
            );
        }
        assert_eq!(index.len(), live.len());
        let mut bases: Vec<usize> = live.iter().map(|&(b, _)| b).collect();
        bases.sort_unstable();
        let order: Vec<usize> = index.iter().map(Reservation::base).collect();
        assert_eq!(order, bases);
    }

    fn probes(live: &[(usize, usize)]) -> Vec<usize> {
        let mut p = vec![
            0,
            ALLOCATION_GRANULARITY,
            USER_ADDRESS_END - 1,
            USER_ADDRESS_END,
        ];
        for &(b, s) in live {
            p.extend([b - 1, b, b + s / 2, b + s - 1, b + s, b + s + PAGE_SIZE]);
            p.push((b + s).div_ceil(ALLOCATION_GRANULARITY) * ALLOCATION_GRANULARITY);
        }
        p
    }

    #[test]
    fn neighbours_in_one_granule_span_split_down_to_the_bottom() {
        let g = ALLOCATION_GRANULARITY;
        let origin = 16 << 40;
        let mut index = ReservationIndex::new();
        // Three reservations in one 2 MiB span, the middle one ending
        // mid-granule: the rest of its last granule answers no one.
        let live = [
            (origin, g),
            (origin + g, PAGE_SIZE),
            (origin + 3 * g, 2 * g),
        ];
        for &(b, s) in &live {
            index.insert(reservation(b, s));
        }
        check(&index, &live, &probes(&live));
        assert_eq!(
            index.tables(),
            [1, 1, 1],
            "the top, one 2 MiB table, one granule table"
        );
        // With one reservation left in the span, no table is empty yet.
        index.remove(live[0].0).unwrap();
        index.remove(live[1].0).unwrap();
        check(&index, &live[2..], &probes(&live));
        assert!(index.free_tables.iter().all(Vec::is_empty));
        // A reservation elsewhere keeps the index from being emptied: the
        // last one's removal frees both tables of its span for reuse.
        let elsewhere = origin + (64 << 30);
        index.insert(reservation(elsewhere, g));
        index.remove(live[2].0).unwrap();
        assert_eq!(index.free_tables[1].len() + index.free_tables[2].len(), 2);
        check(&index, &[(elsewhere, g)], &probes(&live));
        index.remove(elsewhere).unwrap();
        check(&index, &[], &probes(&live));
        assert_eq!(index.live[0][0], 0);
        assert!(index.all_empty());
        // A slab this small is kept, with the tables free for reuse.
        assert!((1..3).all(|l| index.live[l].len() == index.free_tables[l].len()));
        assert_eq!(index.free_slots.len(), index.slots.len());
    }

    #[test]
    fn granule_summaries_answer_queries_and_follow_state_changes() {
        let g = ALLOCATION_GRANULARITY;
        let origin = 16 << 40;
        let mut index = ReservationIndex::new();
        let protect = Protection::READWRITE | Protection::NOCACHE;
        index.insert(Reservation::new(origin, g, protect, PageState::Reserved));
        index.insert(Reservation::new(
            origin + g,
            3 * g,
            protect,
            PageState::Reserved,
        ));
        let addr = origin + 2 * g + 3 * PAGE_SIZE + 5;
        let answered = |index: &ReservationIndex| match index.lookup(addr) {
            Lookup::Answered(mbi) => Some(mbi),
            Lookup::In(_) => None,
            Lookup::Outside => panic!("{addr:#x} is inside"),
        };
        let mbi = answered(&index).expect("a uniform reservation is summarised");
        assert_eq!(mbi, index.at(addr).unwrap().query(addr));
        assert_eq!(
            (mbi.allocation_base, mbi.region_size),
            (origin + g, 2 * g - 3 * PAGE_SIZE)
        );
        // Part committed: not uniform, answered from the reservation.
        let commit = PageState::Committed(PageProtection::ReadWrite);
        index.update(origin + g, |r| r.set_pages(0..1, commit, 0));
        assert!(answered(&index).is_none());
        // All committed: uniform again, and the summary says so.
        index.update(origin + g, |r| r.set_pages(0..48, commit, 1));
        let mbi = answered(&index).expect("uniform again");
        assert_eq!(mbi, index.at(addr).unwrap().query(addr));
        assert_eq!(mbi.protect, protect);
        // Past the end of a reservation that ends mid-granule: outside.
        index.insert(Reservation::new(
            origin + 4 * g,
            PAGE_SIZE,
            protect,
            PageState::Reserved,
        ));
        assert!(matches!(
            index.lookup(origin + 4 * g + PAGE_SIZE),
            Lookup::Outside
        ));
        assert!(matches!(index.lookup(origin + 4 * g), Lookup::Answered(_)));
    }

    #[test]
    fn every_granule_entry_tells_where_its_reservation_ends() {
        let g = ALLOCATION_GRANULARITY;
        let origin = 16 << 40;
        let mut index = ReservationIndex::new();
        let view = index.view();
        // 20 MiB and a page, between two neighbours that share its first
        // and its last 2 MiB span, so that the granules there have entries
        // at the bottom level: the first is more than 4,095 pages from the
        // end, the last holds one page.
        let (start, size) = (origin + g, 20 * 1024 * 1024 + PAGE_SIZE);
        let after = start + size.next_multiple_of(g);
        index.insert(reservation(origin, g));
        index.insert(reservation(after, g));
        index.insert(reservation(start, size));
        let commit = PageState::Committed(PageProtection::ReadWrite);
        index.update(start, |r| r.set_pages(16..32, commit, 0));
        for addr in [start + 5, start + size - 1] {
            assert_eq!(view.query(addr), None, "{addr:#x}: pages not alike");
            assert_eq!(view.holds(addr), Some(true), "{addr:#x} is held");
        }
        assert_eq!(view.holds(start + size), Some(false), "past the end");
        assert_eq!(view.holds(after - 1), Some(false));
        assert_eq!(view.holds(after), Some(true));
        // Uniform again: the summaries answer queries once more.
        let pages = size / PAGE_SIZE;
        index.update(start, |r| r.set_pages(0..pages, PageState::Reserved, 16));
        assert!(view.query(start + size - 1).is_some());
        assert_eq!(view.holds(start + size), Some(false));
    }

    #[test]
    fn entries_above_the_granules_tell_where_their_reservation_lies() {
        let g = ALLOCATION_GRANULARITY;
        let region = 16 << 40;
        let mut index = ReservationIndex::new();
        let view = index.view();
        // Alone in its 8 GiB region, 17 pages long (its last granule only
        // in part): one top entry, which tells the reservation's pages
        // from the rest of the region without the reservation.
        let answers = |cases: &[(usize, bool)]| {
            for &(addr, held) in cases {
                assert_eq!(view.holds(addr), Some(held), "{addr:#x}");
            }
        };
        let base = region + 5 * g;
        index.insert(reservation(base, 17 * PAGE_SIZE));
        assert_eq!(index.tables(), [1, 0, 0]);
        answers(&[
            (region, false),
            (base - 1, false),
            (base, true),
            (base + 17 * PAGE_SIZE - 1, true),
            (base + 17 * PAGE_SIZE, false),
            (base + 2 * g, false),
            (region + (1 << 33) - 1, false),
        ]);
        // Across a region's end: an extent on either side, each of the
        // pages in its own region.
        let across = region + (1 << 33) - g;
        index.insert(reservation(across, 3 * g));
        answers(&[
            (across - 1, false),
            (across, true),
            (across + g - 1, true),
            (across + g, true),
            (across + 3 * g - 1, true),
            (across + 3 * g, false),
        ]);
        // More pages in a region than an extent counts (4,095): the entry
        // says nothing, and only the reservation can answer.
        let large = region + (2 << 33);
        index.insert(reservation(large, 4096 * PAGE_SIZE));
        assert_eq!(view.holds(large), None);
        assert_eq!(view.holds(large + 4096 * PAGE_SIZE), None);
        let just = region + (3 << 33);
        index.insert(reservation(just, 4095 * PAGE_SIZE));
        answers(&[
            (just + 4095 * PAGE_SIZE - 1, true),
            (just + 4095 * PAGE_SIZE, false),
        ]);
        // An entry two levels up, in a 2 MiB span, tells it as well.
        index.insert(reservation(base + (4 << 20), g));
        assert_eq!(index.tables(), [1, 1, 0], "split into 2 MiB spans");
        answers(&[
            (base + 17 * PAGE_SIZE, false),
            (base + 16 * PAGE_SIZE, true),
            (base + (4 << 20) + g, false),
            (base + (4 << 20), true),
        ]);
    }

    #[test]
    fn a_read_overlapping_a_change_is_refused_and_views_fall_back() {
        let g = ALLOCATION_GRANULARITY;
        let origin = 16 << 40;
        let mut index = ReservationIndex::new();
        let view = index.view();
        let tables = &view.0;
        index.insert(reservation(origin, g));
        let addr = origin + 5;
        // A read that starts, sees the entry, then a change: refused.
        let seq = tables.read_begin().expect("no change under way");
        let before = tables.entry_at(addr).unwrap();
        let high = (before >> 32) as u32;
        assert!(
            Extent::is_extent(high),
            "alone in its 8 GiB span: one top entry, with the extent"
        );
        assert!(!Summary::answers(high), "which answers no query");
        // A neighbour in the same 2 MiB span splits the entry into a
        // table: the read above saw the old layout.
        index.insert(reservation(origin + g, g));
        assert!(!tables.read_valid(seq), "a change in between is seen");
        // Read again: valid, and the new layout (a table below the top).
        let seq = tables.read_begin().unwrap();
        let after = tables.entry_at(addr).unwrap();
        assert!(tables.read_valid(seq));
        assert_eq!(after as u32, before as u32, "the same reservation");
        assert!(
            Summary::answers((after >> 32) as u32),
            "now a summarised granule entry"
        );
        assert_eq!(view.holds(addr), Some(true));
        // A table freed and handed to another span: a reader that
        // followed the old table number is refused as well.
        let seq = tables.read_begin().unwrap();
        index.remove(origin + g).unwrap();
        index.remove(origin).unwrap();
        index.insert(reservation(origin + (64 << 30), g));
        index.insert(reservation(origin + (64 << 30) + g, g));
        assert!(!tables.read_valid(seq));
        assert_eq!(view.holds(addr), Some(false), "the old span is empty");
        // While a change is under way (the sequence number odd), views
        // answer nothing and leave it to the locked path.
        let moved = origin + (64 << 30) + 5;
        assert!(view.query(moved).is_some());
        tables.begin();
        assert_eq!(tables.read_begin(), None);
        assert!(view.query(moved).is_none());
        assert_eq!(view.holds(moved), None);
        assert_eq!(view.holds(addr), None);
        tables.end();
        assert_eq!(
            view.query(moved),
            Some(index.at(moved).unwrap().query(moved))
        );
        assert_eq!(view.holds(moved), Some(true));
    }

    #[test]
    fn readers_racing_with_tables_recycled_between_spans_see_only_whole_answers() {
        let g = ALLOCATION_GRANULARITY;
        // Two 2 MiB spans in one 8 GiB span: the writer splits one, frees
        // its granule table, and splits the other with the same table.
        // The spans' layouts differ, so that an entry of one read as the
        // other's gives a wrong answer: in span one, one granule at 3 and
        // one at 5 (4 is free); in span two, two granules at 3 and one at
        // 6 (5 is free).
        let one = 16 << 40;
        let two = one + (2 << 20);
        let layouts = [
            (one, [(3 * g, g), (5 * g, g)], 4 * g),
            (two, [(3 * g, 2 * g), (6 * g, g)], 5 * g),
        ];
        let mut index = ReservationIndex::new();
        // A neighbour far off keeps the level-1 table alive.
        index.insert(reservation(one + (1 << 30), g));
        let view = index.view();
        let probe = 0x1234;
        let expected = layouts.map(|(origin, [(at, size), _], gap)| {
            let r = reservation(origin + at, size);
            (
                origin + at + probe,
                r.query(origin + at + probe),
                origin + gap + probe,
            )
        });
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..50_000 {
                    for (origin, parts, _) in layouts {
                        for (at, size) in parts {
                            index.insert(reservation(origin + at, size));
                        }
                        for (at, _) in parts {
                            index.remove(origin + at).unwrap();
                        }
                    }
                }
                done.store(true, Ordering::Release);
            });
            let mut answered = 0;
            while !done.load(Ordering::Acquire) {
                for (addr, mbi, gap) in expected {
                    if let Some(got) = view.query(addr) {
                        assert_eq!(got, mbi, "a torn answer at {addr:#x}");
                        answered += 1;
                    }
                    assert_ne!(view.holds(gap), Some(true), "{gap:#x} is never held");
                    assert_eq!(view.query(gap), None, "{gap:#x} is never held");
                }
            }
            // Not asserted (the writer may finish first on one CPU), but
            // reported when the test is run with --nocapture.
            println!("{answered} answers while the tables changed");
        });
    }

    #[test]
    fn chunks_place_every_table_once() {
        for first in [1, 64] {
            let mut expected = (0, 0);
            for t in 0..5000 {
                let (k, offset) = chunk_of(t, first);
                assert_eq!((k, offset), expected, "table {t}");
                assert!(offset < first << k);
                expected = if offset + 1 == first << k {
                    (k + 1, 0)
                } else {
                    (k, offset + 1)
                };
            }
        }
        for (level, &first) in FIRST.iter().enumerate() {
            let last = max_tables(first) - 1;
            let (k, place) = chunk_of(last, first);
            assert!(k < CHUNKS && place < 1 << PLACE_BITS, "level {level}");
            assert!(last >= 1 << 27, "level {level}: {last}");
            // The entry names the table's chunk and place, and its number.
            let e = table_entry(level, last as u32);
            assert_eq!(table_place(e), (k, place));
            assert!(matches!(kind(e), Kind::Table(t) if t as usize == last));
        }
    }

    #[test]
    fn a_large_reservation_alone_is_one_entry_a_span() {
        let mut index = ReservationIndex::new();
        let base = 32 << 30;
        index.insert(reservation(base, 256 << 20));
        assert_eq!(index.tables(), [1, 0, 0], "no table below the top");
        assert_eq!(index.live[0][0], 1);
        // A neighbour in the same 8 GiB span splits it once, into 2 MiB
        // entries; the two share no 2 MiB span, so no granule table.
        index.insert(reservation(base + (256 << 20), ALLOCATION_GRANULARITY));
        assert_eq!(index.tables(), [1, 1, 0]);
        let live = [
            (base, 256 << 20),
            (base + (256 << 20), ALLOCATION_GRANULARITY),
        ];
        check(&index, &live, &probes(&live));
    }

    #[test]
    fn random_inserts_and_removes_agree_with_a_scan() {
        let mut next = crate::test_random::below(0x9E37_79B9_7F4A_7C15);
        let g = ALLOCATION_GRANULARITY;
        let mut index = ReservationIndex::new();
        let mut live: Vec<(usize, usize)> = Vec::new();
        for step in 0..3000 {
            if !live.is_empty() && next(4) == 0 {
                // Change some pages' state: from or to uniform.
                let (b, size) = live[next(live.len())];
                let pages = size / PAGE_SIZE;
                let from = next(pages);
                let to = if next(2) == 0 {
                    pages
                } else {
                    from + 1 + next(pages - from)
                };
                let state = match next(3) {
                    0 => PageState::Reserved,
                    1 => PageState::Committed(PageProtection::ReadWrite),
                    _ => PageState::Committed(PageProtection::ExecuteRead),
                };
                let from = if next(2) == 0 { 0 } else { from };
                index.update(b, |r| {
                    let before = r.pages().committed_pages(from..to);
                    r.set_pages(from..to, state, before);
                });
            } else if live.len() > 40 && next(2) == 0 || live.len() > 200 {
                let (b, _) = live.swap_remove(next(live.len()));
                assert_eq!(index.remove(b).map(|r| r.base()), Some(b));
                assert!(index.remove(b).is_none(), "removed twice");
            } else {
                // Bases over a few 8 GiB spans, sizes from one page to
                // beyond a 2 MiB span and, rarely, an 8 GiB one.
                let base = (1 << 36) + next(1 << 20) * g;
                let size = match next(10) {
                    0 => (1 + next(4)) << 33,
                    1..=3 => (1 + next(64)) * g,
                    _ => (1 + next(40)) * PAGE_SIZE,
                };
                let overlaps = live.iter().any(|&(b, s)| {
                    let end = |b: usize, s: usize| (b + s).div_ceil(g) * g;
                    b < end(base, size) && base < end(b, s)
                });
                if !overlaps {
                    index.insert(reservation(base, size));
                    live.push((base, size));
                }
            }
            if step % 50 == 0 {
                check(&index, &live, &probes(&live));
            }
        }
        for (b, _) in live.drain(..) {
            index.remove(b).unwrap();
        }
        assert_eq!(index.live[0][0], 0, "every entry emptied");
        let in_use: usize = (1..3)
            .map(|l| index.live[l].len() - index.free_tables[l].len())
            .sum();
        assert_eq!(in_use, 0, "every table below the top freed");
        assert!(index.all_empty());
        assert_eq!(
            index.tables(),
            [1, 0, 0],
            "every table below the top forgotten (its chunk kept for reuse)"
        );
        assert_eq!(index.slots.capacity(), 0, "and the slab's");
    }
}
