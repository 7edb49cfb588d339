//! `Reservation`: one region reserved by `VirtualAlloc`, with the state of
//! each of its pages.

use super::page_map::{PageMap, PageState, WordChange};
use super::range::PageRange;
use crate::win32::{MemoryBasicInformation, MemoryState, MemoryType, PAGE_SIZE, Protection};
use parking_lot::{
    MappedRecursiveRwLockReadGuard, RecursiveRwLock as RwLock, RecursiveRwLockReadGuard,
    RecursiveRwLockUpgradableReadGuard, RecursiveRwLockWriteGuard,
};
use std::ops::Range;
use std::time::Duration;

/// Who a reservation belongs to. The runtime's calls (`VirtualAlloc`,
/// `VirtualFree`, `VirtualProtect` through any face) work only on the
/// runtime's reservations; the host's own (a heap's chunks and large
/// blocks) answer them as memory the runtime does not own, and only the
/// host's internal path ([`AddressSpace::virtual_alloc_as`],
/// [`AddressSpace::virtual_free_as`] with [`Owner::Host`]) changes them.
/// `VirtualQuery` describes both alike.
///
/// [`AddressSpace::virtual_alloc_as`]: super::AddressSpace::virtual_alloc_as
/// [`AddressSpace::virtual_free_as`]: super::AddressSpace::virtual_free_as
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Owner {
    /// Reserved by the runtime (or any caller of the Win32 calls).
    #[default]
    Runtime,
    /// Reserved by the host for itself.
    Host,
}

/// A reservation: `[base, base + size)`, `base` a multiple of 64 KiB and
/// `size` of 4 KiB, one kernel mapping (or several after `mprotect`s)
/// that the engine made and alone may change.
///
/// Its pages sit behind a reader/writer lock of their own, so that a
/// commit or decommit made in place (under the manager's shared lock,
/// see [`AddressSpace::commit_in_place`](super::AddressSpace::commit_in_place))
/// can change them while other reservations change too: readers take it
/// shared (a recursive lock: a reader waits only for a writer that holds it), a change in
/// place holds it upgradable for the whole call (changes of one
/// reservation are serialised) and exclusive only for the moment the map
/// changes. With `&mut` access no lock is taken.
#[derive(Debug)]
pub struct Reservation {
    base: usize,
    size: usize,
    allocation_protect: Protection,
    pages: RwLock<Pages>,
    owner: Owner,
    /// `MEM_WRITE_WATCH`: writes are watched (the engine keeps the
    /// reservation's [`WrittenMarks`]).
    watched: bool,
    /// `MEM_LARGE_PAGES`: mapped with the kernel's huge pages.
    large: bool,
}

/// A reservation's page map and its committed count, changed together.
#[derive(Clone, Debug)]
pub struct Pages {
    map: PageMap,
    /// How many pages are committed, kept by [`Reservation::set_pages`]
    /// from the counts its callers compute anyway, so that totals need
    /// no scan.
    committed: usize,
}

impl Pages {
    /// The page map.
    pub fn map(&self) -> &PageMap {
        &self.map
    }

    /// Committed bytes, from the count (checked against the map in debug
    /// builds).
    #[inline]
    fn committed_bytes(&self) -> usize {
        debug_assert_eq!(self.committed, self.map.committed_pages(0..self.map.len()));
        self.committed * PAGE_SIZE
    }

    fn set(&mut self, pages: Range<usize>, state: PageState, committed_before: usize) {
        debug_assert_eq!(committed_before, self.map.committed_pages(pages.clone()));
        self.recount(pages.len(), state, committed_before);
        self.map.set_state(pages, state);
    }

    /// Keeps the committed count for `pages` pages set to `state`, of
    /// which `committed_before` were committed.
    #[inline(always)]
    fn recount(&mut self, pages: usize, state: PageState, committed_before: usize) {
        self.committed = match state {
            PageState::Reserved => self.committed - committed_before,
            PageState::Committed(_) => self.committed + pages - committed_before,
        };
    }
}

/// A reservation's pages held for a change in place: others may read
/// them meanwhile, no one else may change them.
pub type PagesHeld<'a> = RecursiveRwLockUpgradableReadGuard<'a, Pages>;

impl Clone for Reservation {
    fn clone(&self) -> Self {
        Self {
            base: self.base,
            size: self.size,
            allocation_protect: self.allocation_protect,
            pages: RwLock::new(self.pages.read().clone()),
            owner: self.owner,
            watched: self.watched,
            large: self.large,
        }
    }
}

/// The written marks of a watched reservation that hostmem keeps itself
/// (the engine holds them by reservation base):
/// the kernel keeps the others in its page tables. A page's mark moves
/// here when the kernel would lose it (decommit drops the page-table
/// entry) or when a `GetWriteWatch` with reset protected more pages than
/// it could report. One bit a page, allocated at the first such mark.
#[derive(Clone, Debug, Default)]
pub struct WrittenMarks {
    bits: Vec<u64>,
    count: usize,
}

impl WrittenMarks {
    /// Marks page `index` written.
    pub fn set(&mut self, index: usize, pages: usize) {
        if self.bits.is_empty() {
            self.bits = vec![0; pages.div_ceil(64)];
        }
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.count += 1;
        }
    }

    /// Clears the mark of page `index`.
    pub fn clear(&mut self, index: usize) {
        if self.count == 0 {
            return;
        }
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            self.bits[word] &= !bit;
            self.count -= 1;
        }
    }

    /// Whether no page is marked.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The marked page indices in `pages`, ascending.
    pub fn iter(&self, pages: Range<usize>) -> impl Iterator<Item = usize> + '_ {
        pages.filter(move |&i| self.count > 0 && self.bits[i / 64] & (1u64 << (i % 64)) != 0)
    }
}

impl Reservation {
    /// A reservation whose pages are all in `initial` state.
    pub fn new(
        base: usize,
        size: usize,
        allocation_protect: Protection,
        initial: PageState,
    ) -> Self {
        Self {
            base,
            size,
            allocation_protect,
            pages: RwLock::new(Pages {
                map: PageMap::new(size / PAGE_SIZE, initial),
                committed: match initial {
                    PageState::Reserved => 0,
                    PageState::Committed(_) => size / PAGE_SIZE,
                },
            }),
            owner: Owner::Runtime,
            watched: false,
            large: false,
        }
    }

    /// The same reservation, belonging to `owner`.
    pub fn with_owner(mut self, owner: Owner) -> Self {
        self.owner = owner;
        self
    }

    /// Who the reservation belongs to.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Makes the reservation a watched one (`MEM_WRITE_WATCH`).
    pub fn with_write_watch(mut self) -> Self {
        self.watched = true;
        self
    }

    /// Makes the reservation one of large pages (`MEM_LARGE_PAGES`).
    pub fn with_large_pages(mut self) -> Self {
        self.large = true;
        self
    }

    /// Whether writes to the reservation are watched (`MEM_WRITE_WATCH`).
    pub fn is_watched(&self) -> bool {
        self.watched
    }

    /// Whether the reservation is mapped with large pages
    /// (`MEM_LARGE_PAGES`).
    pub fn is_large(&self) -> bool {
        self.large
    }

    /// The base address (`AllocationBase`).
    pub fn base(&self) -> usize {
        self.base
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// One past the last address.
    pub fn end(&self) -> usize {
        self.base + self.size
    }

    /// The protection given when the region was reserved.
    pub fn allocation_protect(&self) -> Protection {
        self.allocation_protect
    }

    /// `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` of the allocation: they belong
    /// to the whole allocation, as on current Windows.
    pub fn caching(&self) -> Protection {
        self.allocation_protect.modifiers()
    }

    /// Whether `addr` lies inside.
    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        (self.base..self.end()).contains(&addr)
    }

    /// Whether the whole of `range` lies inside.
    pub fn contains_range(&self, range: PageRange) -> bool {
        range.start() >= self.base && range.end() <= self.end()
    }

    /// The page map, read under the pages' lock taken shared (a change
    /// in place waits for the guard to go before it changes the map).
    pub fn pages(&self) -> MappedRecursiveRwLockReadGuard<'_, PageMap> {
        RecursiveRwLockReadGuard::map(self.pages.read(), |p| &p.map)
    }

    /// The page map, to change reset marks (state changes go through
    /// [`Self::set_pages`], which keeps the committed count).
    pub fn pages_mut(&mut self) -> &mut PageMap {
        &mut self.pages.get_mut().map
    }

    /// Holds the pages for a change in place: waits for any other change
    /// in place of this reservation to end, at most `wait` (`None` after
    /// that: the other change's thread may be suspended half-way, and a
    /// caller with a lock timeout must not wait for ever); readers go on.
    #[inline(always)]
    pub fn hold_pages(&self, wait: Duration) -> Option<PagesHeld<'_>> {
        self.pages.try_upgradable_read_for(wait)
    }

    /// [`set_pages`](Self::set_pages) on pages held for a change in place,
    /// ending the hold: waits for the readers of the map to go (the caller
    /// must hold no other guard of it) and changes it. If that changes
    /// whether (and in which state) the map is uniform, compared with
    /// `uniform_before`, `refresh` runs before the hold ends, with the
    /// pages held again for reading (it may read them); otherwise the
    /// lock is let go at once, the one atomic step a change needs after
    /// it has made its system calls.
    pub fn set_held_pages(
        held: PagesHeld<'_>,
        pages: Range<usize>,
        state: PageState,
        committed_before: usize,
        uniform_before: Option<PageState>,
        refresh: impl FnOnce(),
    ) {
        let mut write = RecursiveRwLockUpgradableReadGuard::upgrade(held);
        write.set(pages, state, committed_before);
        if write.map.uniform_state() != uniform_before {
            let held = RecursiveRwLockWriteGuard::downgrade_to_upgradable(write);
            refresh();
            drop(held);
        }
    }

    /// [`set_held_pages`](Self::set_held_pages) for a [`WordChange`] the
    /// caller worked out on the held map: ends the hold with one word
    /// written. Such a change leaves the map per page, so whether it is
    /// uniform (what the index's summaries follow) cannot change.
    #[inline(always)]
    pub fn apply_held_word(
        held: PagesHeld<'_>,
        change: &WordChange,
        pages: usize,
        state: PageState,
    ) {
        let mut write = RecursiveRwLockUpgradableReadGuard::upgrade(held);
        write.recount(pages, state, change.committed);
        write.map.apply(change);
        debug_assert!(write.map.uniform_state().is_none());
    }

    /// Sets the state of page indices `pages`, of which `committed_before`
    /// were committed (`pages().committed_pages(pages)`, which the caller
    /// has computed already).
    pub fn set_pages(&mut self, pages: Range<usize>, state: PageState, committed_before: usize) {
        self.pages.get_mut().set(pages, state, committed_before);
    }

    /// The page indices of `range`, which must lie inside.
    pub fn page_indices(&self, range: PageRange) -> Range<usize> {
        debug_assert!(self.contains_range(range));
        (range.start() - self.base) / PAGE_SIZE..(range.end() - self.base) / PAGE_SIZE
    }

    /// The address of page `index`.
    pub fn page_address(&self, index: usize) -> usize {
        self.base + index * PAGE_SIZE
    }

    /// The Win32 protection of a page in `state` (0 for reserved pages).
    pub fn protection_of(&self, state: PageState) -> Protection {
        match state {
            PageState::Reserved => Protection::empty(),
            PageState::Committed(p) => p.protection() | self.caching(),
        }
    }

    /// Committed bytes, read without the pages' lock: the caller holds
    /// the reservation alone (one taken out of the index).
    #[inline]
    pub fn committed_bytes_alone(&mut self) -> usize {
        self.pages.get_mut().committed_bytes()
    }

    /// Committed bytes.
    pub fn committed_bytes(&self) -> usize {
        self.pages.read().committed_bytes()
    }

    /// `VirtualQuery` of an address inside: the run of pages from its page
    /// with the same state and protection.
    pub fn query(&self, addr: usize) -> MemoryBasicInformation {
        self.query_within(addr, Duration::MAX)
            .expect("a wait with no deadline ends with the lock")
    }

    /// [`query`](Self::query), waiting at most `wait` for a change in place
    /// that is writing the page map (`None` after that).
    pub fn query_within(&self, addr: usize, wait: Duration) -> Option<MemoryBasicInformation> {
        debug_assert!(self.contains(addr));
        let index = (addr - self.base) / PAGE_SIZE;
        let pages = RecursiveRwLockReadGuard::map(self.pages.try_read_for(wait)?, |p| &p.map);
        let state = pages.state(index);
        let end = pages.run_end(index, pages.len());
        Some(describe(
            self.page_address(index),
            self.page_address(end),
            self.base,
            self.allocation_protect,
            state,
        ))
    }
}

/// The `MEMORY_BASIC_INFORMATION` of the run of pages `[page, run_end)` of
/// a reservation at `base` reserved with `allocation_protect`, all in
/// `state`.
#[inline]
pub fn describe(
    page: usize,
    run_end: usize,
    base: usize,
    allocation_protect: Protection,
    state: PageState,
) -> MemoryBasicInformation {
    MemoryBasicInformation {
        base_address: page,
        allocation_base: base,
        allocation_protect,
        partition_id: 0,
        region_size: run_end - page,
        state: match state {
            PageState::Reserved => MemoryState::RESERVE,
            PageState::Committed(_) => MemoryState::COMMIT,
        },
        protect: match state {
            PageState::Reserved => Protection::empty(),
            PageState::Committed(p) => p.protection() | allocation_protect.modifiers(),
        },
        type_: MemoryType::PRIVATE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::win32::MemoryState;

    /// A thread stopped while it writes the page map (a change in place
    /// whose thread was suspended there) makes a query give up after its
    /// wait, not hang; once the write ends, the same query answers.
    #[test]
    fn a_query_gives_up_on_a_page_map_written_too_long() {
        let r = Reservation::new(0x10_0000, 0x4000, Protection::NOACCESS, PageState::Reserved);
        let writing = r.pages.write();
        std::thread::scope(|s| {
            let asked = std::time::Instant::now();
            let query = s.spawn(|| r.query_within(0x10_1000, Duration::from_millis(100)));
            assert_eq!(query.join().unwrap(), None);
            assert!(asked.elapsed() >= Duration::from_millis(100));
        });
        drop(writing);
        let mbi = r
            .query_within(0x10_1000, Duration::from_millis(100))
            .expect("no writer");
        assert_eq!(
            (mbi.base_address, mbi.state),
            (0x10_1000, MemoryState::RESERVE)
        );
        assert_eq!(r.query(0x10_1000), mbi);
    }
}
