//! The address-space engine: Win32 `VirtualAlloc`, `VirtualFree`,
//! `VirtualQuery` and `VirtualProtect`, exactly, over an [`OsBackend`].
//!
//! It knows Win32 and nothing of HRESULTs, budgets or threads: every method
//! takes `&self`/`&mut self` and answers with a [`Win32Error`]. A failed
//! call changes nothing — not the engine's state, not the kernel's
//! mappings — and the engine never changes memory it did not map.
#![forbid(unsafe_code)]

mod foreign;
mod index;
mod page_map;
mod placement;
mod range;
mod request;
mod reservation;

pub use page_map::{PageMap, PageProtection, PageState};
pub use range::{PageRange, USER_ADDRESS_END, granule_floor, page_floor};
pub use reservation::Reservation;

use crate::os::{Access, OsBackend, OsError, UnixBackend};
use crate::win32::{
    ALLOCATION_GRANULARITY, AllocationType, FreeType, MemoryBasicInformation, PAGE_SIZE,
    Protection, Win32Error,
};
use index::{Lookup, ReservationIndex};
use placement::Placement;
use request::{AllocRequest, PrivateProtection, alloc_request, private_protection};
use std::ops::Range;

/// Totals of an address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SpaceTotals {
    /// Live reservations.
    pub reservations: usize,
    /// Bytes reserved (committed pages included).
    pub reserved_bytes: usize,
    /// Bytes committed.
    pub committed_bytes: usize,
}

/// The Win32 view of the address space a caller allocated through hostmem:
/// its reservations, indexed by address (a radix table: O(1) lookup),
/// each with four bits of state a page.
pub struct AddressSpace<B: OsBackend = UnixBackend> {
    os: B,
    reservations: ReservationIndex,
    placement: Placement,
    /// The placement's anchor page, once mapped (`Some(None)`: tried, but
    /// the address was taken). It belongs to no reservation: Win32 sees it
    /// as foreign memory.
    anchor: Option<Option<usize>>,
    committed_bytes: usize,
    reserved_bytes: usize,
}

impl AddressSpace<UnixBackend> {
    /// An empty address space over the Linux kernel.
    pub fn new() -> Self {
        Self::with_backend(UnixBackend)
    }
}

impl Default for AddressSpace<UnixBackend> {
    fn default() -> Self {
        Self::new()
    }
}

/// The Win32 error for a failed mapping call.
fn map_error(e: OsError) -> Win32Error {
    match e {
        OsError::EEXIST | OsError::EPERM => Win32Error::INVALID_ADDRESS,
        _ => Win32Error::NOT_ENOUGH_MEMORY,
    }
}

/// The Win32 error for a failed change of access or contents.
fn change_error(e: OsError) -> Win32Error {
    match e {
        OsError::ENOMEM | OsError::EAGAIN => Win32Error::NOT_ENOUGH_MEMORY,
        _ => Win32Error::INTERNAL_ERROR,
    }
}

impl<B: OsBackend> AddressSpace<B> {
    /// An empty address space over `os`.
    pub fn with_backend(os: B) -> Self {
        Self {
            os,
            reservations: ReservationIndex::new(),
            placement: Placement::default(),
            anchor: None,
            committed_bytes: 0,
            reserved_bytes: 0,
        }
    }

    /// The OS backend.
    pub fn backend(&self) -> &B {
        &self.os
    }

    /// Reservation count and byte totals.
    pub fn totals(&self) -> SpaceTotals {
        SpaceTotals {
            reservations: self.reservations.len(),
            reserved_bytes: self.reserved_bytes,
            committed_bytes: self.committed_bytes,
        }
    }

    /// The live reservations, in address order.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.iter()
    }

    /// The reservation holding `addr`, if the engine made it.
    pub fn reservation_at(&self, addr: usize) -> Option<&Reservation> {
        self.reservations.at(addr)
    }

    /// The live reservation at `base` (a base the caller found).
    fn reservation(&self, base: usize) -> &Reservation {
        self.reservations
            .get(base)
            .expect("a base found in the index")
    }

    /// Changes the live reservation at `base` (the index keeps its
    /// granules' summaries up to date).
    fn change(&mut self, base: usize, f: impl FnOnce(&mut Reservation)) {
        self.reservations
            .update(base, f)
            .expect("a base found in the index");
    }

    fn reservation_base_at(&self, addr: usize) -> Option<usize> {
        self.reservation_at(addr).map(Reservation::base)
    }

    /// Whether `addr` lies in one of the engine's reservations.
    pub fn owns(&self, addr: usize) -> bool {
        self.reservation_at(addr).is_some()
    }

    /// `VirtualAlloc(address, size, allocation_type, protect)`: reserves,
    /// commits or resets pages. Returns the base of a new reservation, or
    /// the page-rounded start of the pages committed or reset.
    pub fn virtual_alloc(
        &mut self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
    ) -> Result<usize, Win32Error> {
        if size == 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let request = alloc_request(allocation_type, address)?;
        if address != 0 {
            // Windows refuses the low 64 KiB, ranges that wrap, and ranges
            // that reach past the user address space, whatever the type.
            let in_user_space = address >= ALLOCATION_GRANULARITY
                && PageRange::touched(address, size).is_ok_and(|r| r.end() <= USER_ADDRESS_END);
            if !in_user_space {
                return Err(Win32Error::INVALID_PARAMETER);
            }
        }
        match request {
            AllocRequest::Reset | AllocRequest::ResetUndo => {
                // The protection is ignored but must be a valid one.
                if !protect.is_well_formed() {
                    return Err(Win32Error::INVALID_PARAMETER);
                }
                let range = PageRange::touched(address, size)?;
                if request == AllocRequest::Reset {
                    self.reset(range)
                } else {
                    self.reset_undo(range)
                }
            }
            AllocRequest::Reserve { commit } => {
                let protection = private_protection(protect)?;
                let top_down = allocation_type.contains(AllocationType::TOP_DOWN);
                self.reserve(address, size, protection, commit, top_down)
            }
            AllocRequest::Commit => {
                let protection = private_protection(protect)?;
                self.commit(PageRange::touched(address, size)?, protection)
            }
        }
    }

    /// The bytes a `VirtualAlloc` with these arguments would newly commit
    /// if it succeeded (0 for calls that commit nothing or would fail).
    pub fn commit_cost(
        &self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
    ) -> usize {
        if size == 0 {
            return 0;
        }
        match alloc_request(allocation_type, address) {
            Ok(AllocRequest::Reserve { commit: true }) if address == 0 => {
                range::checked_align_up(size, PAGE_SIZE).unwrap_or(0)
            }
            Ok(AllocRequest::Reserve { commit: true }) => {
                PageRange::touched(address, size).map_or(0, |r| r.end() - granule_floor(address))
            }
            Ok(AllocRequest::Commit) => PageRange::touched(address, size)
                .ok()
                .and_then(|range| {
                    let r = self
                        .reservation_at(range.start())
                        .filter(|r| r.contains_range(range))?;
                    let pages = r.page_indices(range);
                    Some((pages.len() - r.pages().committed_pages(pages)) * PAGE_SIZE)
                })
                .unwrap_or(0),
            _ => 0,
        }
    }

    fn reserve(
        &mut self,
        address: usize,
        size: usize,
        protection: PrivateProtection,
        commit: bool,
        top_down: bool,
    ) -> Result<usize, Win32Error> {
        let initial = if commit {
            PageState::Committed(protection.page)
        } else {
            PageState::Reserved
        };
        let access = initial.access();
        let (base, len) = if address == 0 {
            let len = range::checked_align_up(size, PAGE_SIZE)
                .filter(|&len| len < USER_ADDRESS_END)
                .ok_or(Win32Error::NOT_ENOUGH_MEMORY)?;
            (self.map_placed(len, access, top_down)?, len)
        } else {
            let base = granule_floor(address);
            let end = PageRange::touched(address, size)?.end();
            if self.overlaps_reservation(base..end) {
                return Err(Win32Error::INVALID_ADDRESS);
            }
            self.os
                .map_fixed(base, end - base, access)
                .map_err(map_error)?;
            (base, end - base)
        };
        let reservation = Reservation::new(base, len, protection.protection(), initial);
        self.reserved_bytes += len;
        if commit {
            self.committed_bytes += len;
        }
        self.reservations.insert(reservation);
        Ok(base)
    }

    fn overlaps_reservation(&self, range: Range<usize>) -> bool {
        self.reservations
            .last_before(range.end)
            .is_some_and(|r| r.end() > range.start)
    }

    /// Maps `len` bytes at a 64 KiB-aligned address: one `mmap` at the
    /// placement hint when the kernel honours it (the common case), else
    /// over-allocation and trimming. `top_down` takes the kernel's own
    /// top-down placement instead of the hint.
    fn map_placed(
        &mut self,
        len: usize,
        access: Access,
        top_down: bool,
    ) -> Result<usize, Win32Error> {
        let hint = if top_down {
            0
        } else {
            if self.anchor.is_none() {
                // Keeps the page tables of the window's first 2 MiB alive
                // across reserve/release churn. Never replaces a mapping.
                let at = self.placement.anchor();
                let mapped = self.os.map_fixed(at, PAGE_SIZE, Access::empty());
                self.anchor = Some(mapped.ok().map(|()| at));
            }
            self.placement.hint(len)
        };
        let got = self.os.map_anywhere(hint, len, access).map_err(map_error)?;
        let base = if got.is_multiple_of(ALLOCATION_GRANULARITY) {
            got
        } else {
            self.os
                .unmap(got, len)
                .map_err(|_| Win32Error::INTERNAL_ERROR)?;
            self.map_trimmed(len, access)?
        };
        self.placement.placed(hint, base, len);
        Ok(base)
    }

    /// Maps `len + 60 KiB` anywhere and unmaps the head and tail that fall
    /// outside the first 64 KiB-aligned `len` bytes.
    fn map_trimmed(&mut self, len: usize, access: Access) -> Result<usize, Win32Error> {
        let over = len
            .checked_add(ALLOCATION_GRANULARITY - PAGE_SIZE)
            .ok_or(Win32Error::NOT_ENOUGH_MEMORY)?;
        let got = self.os.map_anywhere(0, over, access).map_err(map_error)?;
        let base = range::checked_align_up(got, ALLOCATION_GRANULARITY)
            .ok_or(Win32Error::INTERNAL_ERROR)?;
        let trims = [(got, base - got), (base + len, got + over - (base + len))];
        for (at, n) in trims.into_iter().filter(|&(_, n)| n > 0) {
            self.os
                .unmap(at, n)
                .map_err(|_| Win32Error::INTERNAL_ERROR)?;
        }
        Ok(base)
    }

    /// Finds the reservation holding all of `range`, or
    /// `ERROR_INVALID_ADDRESS`.
    fn reservation_holding(&self, range: PageRange) -> Result<usize, Win32Error> {
        self.reservation_at(range.start())
            .filter(|r| r.contains_range(range))
            .map(Reservation::base)
            .ok_or(Win32Error::INVALID_ADDRESS)
    }

    /// Sets the kernel access of `range` in reservation `base`, restoring
    /// the old access of every run if the kernel fails part way.
    fn set_access(&self, base: usize, range: PageRange, access: Access) -> Result<(), Win32Error> {
        let Err(e) = self.os.protect(range.start(), range.len(), access) else {
            return Ok(());
        };
        self.restore_access(base, range)?;
        Err(change_error(e))
    }

    /// Gives every run of `range` back the access its page state says.
    fn restore_access(&self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        let r = &self.reservation(base);
        for (run, state) in r.pages().runs(r.page_indices(range)) {
            let (start, end) = (r.page_address(run.start), r.page_address(run.end));
            self.os
                .protect(start, end - start, state.access())
                .map_err(|_| Win32Error::INTERNAL_ERROR)?;
        }
        Ok(())
    }

    fn commit(
        &mut self,
        range: PageRange,
        protection: PrivateProtection,
    ) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(range)?;
        let state = PageState::Committed(protection.page);
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        if r.pages().run_end(pages.start, pages.end) < pages.end
            || r.pages().state(pages.start) != state
        {
            self.set_access(base, range, state.access())?;
        }
        let before = self
            .reservation(base)
            .pages()
            .committed_pages(pages.clone());
        self.committed_bytes += (pages.len() - before) * PAGE_SIZE;
        self.change(base, |r| r.set_pages(pages, state, before));
        Ok(range.start())
    }

    fn reset(&mut self, range: PageRange) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(range)?;
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        if r.pages().committed_pages(pages.clone()) > 0 {
            // Reserved pages in the range hold nothing, so one call covers it.
            self.os
                .reset(range.start(), range.len())
                .map_err(change_error)?;
            self.change(base, |r| r.pages_mut().mark_reset(pages));
        }
        Ok(range.start())
    }

    fn reset_undo(&mut self, range: PageRange) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(range)?;
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        if r.pages().committed_pages(pages.clone()) != pages.len() {
            return Err(Win32Error::INVALID_ADDRESS);
        }
        if !r.pages().any_reset(pages.clone()) {
            return Ok(range.start());
        }
        // Some page may have been dropped already: make every reset page
        // stable again (as Windows' undo does) and report that contents may
        // have been lost.
        for reset_run in r.pages().reset_runs(pages.clone()) {
            // A reset run may span several protections.
            for (run, state) in r.pages().runs(reset_run) {
                let (start, end) = (r.page_address(run.start), r.page_address(run.end));
                self.os
                    .keep_contents(start, end - start, state.access())
                    .map_err(change_error)?;
            }
        }
        self.change(base, |r| r.pages_mut().clear_reset(pages));
        Err(Win32Error::INVALID_ADDRESS)
    }

    /// `VirtualFree(address, size, free_type)`: decommits pages or releases
    /// a whole reservation.
    pub fn virtual_free(
        &mut self,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), Win32Error> {
        let release = if free_type == FreeType::RELEASE {
            true
        } else if free_type == FreeType::DECOMMIT {
            false
        } else {
            return Err(Win32Error::INVALID_PARAMETER);
        };
        if release && size != 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let page = page_floor(address);
        let base = self
            .reservation_base_at(page)
            .ok_or(Win32Error::INVALID_ADDRESS)?;
        if release {
            if page != base {
                return Err(Win32Error::INVALID_ADDRESS);
            }
            return self.release(base);
        }
        let r = &self.reservation(base);
        let range = if size == 0 {
            if page != base {
                return Err(Win32Error::INVALID_ADDRESS);
            }
            PageRange::new(base, r.end()).expect("a reservation is page aligned and non-empty")
        } else {
            let range = PageRange::touched(address, size)?;
            if range.end() > r.end() {
                return Err(Win32Error::INVALID_PARAMETER);
            }
            range
        };
        self.decommit(base, range)
    }

    fn release(&mut self, base: usize) -> Result<(), Win32Error> {
        let r = &self.reservation(base);
        self.os.unmap(base, r.size()).map_err(|e| match e {
            // munmap checks the mapping limit before it changes anything.
            OsError::ENOMEM | OsError::EAGAIN => Win32Error::NOT_ENOUGH_MEMORY,
            _ => Win32Error::INTERNAL_ERROR,
        })?;
        let r = self
            .reservations
            .remove(base)
            .expect("reservation found above");
        self.reserved_bytes -= r.size();
        self.committed_bytes -= r.committed_bytes();
        self.placement.released(base, r.size());
        if self.reservations.len() == 0 {
            self.placement.emptied();
        }
        Ok(())
    }

    fn decommit(&mut self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        let committed = r.pages().committed_pages(pages.clone());
        if committed > 0 {
            if splits_a_mapping(r, pages.clone()) {
                // Revoking access splits a kernel mapping, which can fail
                // (ENOMEM at vm.max_map_count): revoke first, then drop
                // the contents, so that a failure of either leaves the
                // pages exactly as they were.
                self.set_access(base, range, Access::empty())?;
                if let Err(e) = self.os.discard(range.start(), range.len()) {
                    self.restore_access(base, range)?;
                    return Err(change_error(e));
                }
            } else {
                // Whole mappings: drop the contents first, then revoke
                // access — the raw sequence, which spares the kernel one
                // page-table walk and TLB flush (revoking access to
                // present pages, then zapping them, costs ~6 % more). A
                // failed revoke gives every run its access back; only
                // the contents, which the caller was discarding, are gone.
                self.os
                    .discard(range.start(), range.len())
                    .map_err(change_error)?;
                self.set_access(base, range, Access::empty())?;
            }
        }
        self.change(base, |r| r.set_pages(pages, PageState::Reserved, committed));
        self.committed_bytes -= committed * PAGE_SIZE;
        Ok(())
    }

    /// `VirtualQuery(address, &mbi, sizeof mbi)`: describes the run of pages
    /// at `address` — from the engine's map inside its reservations, from
    /// the kernel's view elsewhere.
    pub fn virtual_query(&self, address: usize) -> Result<MemoryBasicInformation, Win32Error> {
        if address >= USER_ADDRESS_END {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        match self.reservations.lookup(address) {
            Lookup::Answered(mbi) => return Ok(mbi),
            Lookup::In(r) => return Ok(r.query(address)),
            Lookup::Outside => {}
        }
        let below = self
            .reservations
            .last_before(address)
            .map_or(0, Reservation::end);
        let above = self
            .reservations
            .first_from(address)
            .map_or(USER_ADDRESS_END, Reservation::base);
        let maps = self
            .os
            .mappings()
            .map_err(|_| Win32Error::NOT_ENOUGH_MEMORY)?;
        Ok(foreign::query(&maps, address, below..above))
    }

    /// `VirtualProtect(address, size, new_protect, &old)`: changes the
    /// protection of committed pages; returns the old protection of the
    /// first page. A size of 0 at a page-aligned address changes nothing
    /// (but the page must be committed).
    pub fn virtual_protect(
        &mut self,
        address: usize,
        size: usize,
        new_protect: Protection,
    ) -> Result<Protection, Win32Error> {
        let protection = private_protection(new_protect)?;
        // The pages of [address, address + size): none when size is 0 and
        // the address is page aligned. The first page must still be
        // committed (its protection is the old one) but nothing changes,
        // as in Windows' NtProtectVirtualMemory.
        let first_page = PageRange::touched(address, 1)?;
        if size == 0 && address.is_multiple_of(PAGE_SIZE) {
            let r = self
                .reservation_at(address)
                .ok_or(Win32Error::INVALID_ADDRESS)?;
            let state = r.pages().state(r.page_indices(first_page).start);
            return match state {
                PageState::Reserved => Err(Win32Error::INVALID_ADDRESS),
                PageState::Committed(_) => Ok(r.protection_of(state)),
            };
        }
        let range = PageRange::touched(address, size.max(1))?;
        let base = self.reservation_holding(range)?;
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        if r.pages().committed_pages(pages.clone()) != pages.len() {
            return Err(Win32Error::INVALID_ADDRESS);
        }
        let old = r.protection_of(r.pages().state(pages.start));
        let state = PageState::Committed(protection.page);
        if r.pages().run_end(pages.start, pages.end) < pages.end
            || r.pages().state(pages.start) != state
        {
            self.set_access(base, range, state.access())?;
        }
        let all = pages.len();
        self.change(base, |r| r.set_pages(pages, state, all));
        Ok(old)
    }
}

/// Whether `VirtualProtect(address, size, new_protect, ..)` passes every
/// check the engine makes before it looks the address up: if so, an
/// address outside the engine's reservations fails for that reason alone
/// (`ERROR_INVALID_ADDRESS`), and a caller may refuse it without asking
/// the engine for a change.
pub fn protect_arguments_valid(address: usize, size: usize, new_protect: Protection) -> bool {
    private_protection(new_protect).is_ok() && PageRange::touched(address, size.max(1)).is_ok()
}

/// Whether making the pages of `pages` inaccessible would split a kernel
/// mapping: where an edge of the range has pages whose access changes, and
/// the page across that edge has the same access (one mapping holds both)
/// or belongs to another reservation (the kernel may have merged the two).
/// Inside the range, runs of different access are mappings of their own.
fn splits_a_mapping(r: &Reservation, pages: Range<usize>) -> bool {
    let map = r.pages();
    let access = |page: usize| map.state(page).access();
    let first = access(pages.start);
    let last = access(pages.end - 1);
    let at_start = !first.is_empty() && (pages.start == 0 || access(pages.start - 1) == first);
    let at_end = !last.is_empty() && (pages.end == map.len() || access(pages.end) == last);
    at_start || at_end
}

impl<B: OsBackend> AddressSpace<B> {
    /// Releases every reservation, and unmaps the placement's anchor (a
    /// failure to unmap one leaves that mapping in place: nothing else can
    /// be done about it).
    pub fn release_all(&mut self) {
        for r in self.reservations.take_all() {
            let _ = self.os.unmap(r.base(), r.size());
        }
        if let Some(Some(at)) = self.anchor.take() {
            let _ = self.os.unmap(at, PAGE_SIZE);
        }
        self.reserved_bytes = 0;
        self.committed_bytes = 0;
    }
}

impl<B: OsBackend> Drop for AddressSpace<B> {
    fn drop(&mut self) {
        self.release_all();
    }
}

#[cfg(test)]
mod tests;
