//! The address-space engine: Win32 `VirtualAlloc`, `VirtualFree`,
//! `VirtualQuery` and `VirtualProtect`, exactly, over an [`OsBackend`].
//!
//! It knows Win32 and nothing of HRESULTs, budgets or threads: every method
//! takes `&self`/`&mut self` and answers with a [`Win32Error`]. A failed
//! call changes nothing — not the engine's state, not the kernel's
//! mappings — and the engine never changes memory it did not map.
//!
//! Its only `unsafe` is the calls of the backend's raw-memory methods
//! (`unmap`, `protect`, `discard`, `reset`, `keep_contents`, each an
//! `unsafe fn`), in the few functions marked `#[allow(unsafe_code)]`; each
//! call's range is a mapping just made, or lies in a reservation of the
//! index, which the engine mapped itself and alone changes. What lives in
//! that memory is its owner's, who asked for the change through the Win32
//! call (a runtime's own regions; the host's own are changed only by the
//! host, see [`Owner`]). The submodules have no `unsafe` at all.

mod foreign;
mod index;
mod page_map;
mod placement;
mod range;
mod request;
mod reservation;

pub use page_map::{PageMap, PageProtection, PageState, Survey};
pub use range::{PageRange, USER_ADDRESS_END, granule_floor, page_floor};
pub use reservation::{Owner, Reservation, WrittenMarks};

use crate::os::{Access, OsBackend, OsError, UnixBackend};
use crate::win32::{
    ALLOCATION_GRANULARITY, AllocationType, FreeType, MemoryBasicInformation, PAGE_SIZE,
    Protection, Win32Error,
};
pub use index::IndexView;
use index::{Lookup, ReservationIndex};
use placement::Placement;
use request::{AllocRequest, PrivateProtection, alloc_request, private_protection};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The length of the placement's anchor: the small area's first granule,
/// so that the first small reservation lies right next to it.
const ANCHOR_LEN: usize = ALLOCATION_GRANULARITY;

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
    /// The placement's anchor ([`ANCHOR_LEN`] bytes), once mapped
    /// (`Some(None)`: tried, but the address was taken or the kernel
    /// refused). It belongs to no reservation: Win32 sees it as foreign
    /// memory.
    anchor: Option<Option<usize>>,
    /// Committed bytes: changed in place (under the manager's shared
    /// lock) by several threads at once, so atomic, on a cache line of its
    /// own. A commit in place adds its pages before it makes them (see
    /// [`charge`](Self::charge)), a decommit takes them off after.
    committed_bytes: Committed,
    reserved_bytes: usize,
    /// The written marks hostmem keeps for watched reservations, by base
    /// (only for those that ever needed one).
    marks: std::collections::HashMap<usize, WrittenMarks>,
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

/// Committed bytes, on cache lines of their own (threads committing in
/// place write it; the address space's other fields are read meanwhile).
#[repr(align(128))]
#[derive(Default)]
struct Committed(AtomicUsize);

/// What a change tried in place answered.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InPlace<T> {
    /// It was made, or failed, with nothing structural to do: the answer.
    Done(Result<T, Win32Error>),
    /// It would commit pages the budget cannot take: nothing changed.
    OverBudget,
    /// Only the exclusive path may answer it (it changes or needs more
    /// than one reservation's pages, or its answer is one that path
    /// decides): nothing changed.
    Structural,
    /// Another change in place held the reservation's pages longer than
    /// the caller would wait: nothing changed.
    Busy,
}

impl<T> InPlace<T> {
    /// The same answer, with `f` applied to a success's value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> InPlace<U> {
        match self {
            Self::Done(done) => InPlace::Done(done.map(f)),
            Self::OverBudget => InPlace::OverBudget,
            Self::Structural => InPlace::Structural,
            Self::Busy => InPlace::Busy,
        }
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
            committed_bytes: Committed::default(),
            reserved_bytes: 0,
            marks: std::collections::HashMap::new(),
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
            committed_bytes: self.committed_bytes.0.load(Ordering::Acquire),
        }
    }

    /// The live reservations, in address order.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.iter()
    }

    /// A view of the reservations for readers that hold no lock over the
    /// address space: it answers what it can from the index as it is at
    /// the moment it reads, and says when it cannot (see [`IndexView`]).
    pub fn index_view(&self) -> IndexView {
        self.reservations.view()
    }

    /// The reservation holding `addr`, if the engine made it.
    #[inline]
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

    /// The reservation of `owner` holding `addr`: another owner's is, to
    /// a caller, memory it does not own.
    #[inline]
    fn reservation_of(&self, owner: Owner, addr: usize) -> Option<&Reservation> {
        self.reservation_at(addr).filter(|r| r.owner() == owner)
    }

    /// Whether `addr` lies in one of the engine's reservations (of any
    /// owner).
    pub fn owns(&self, addr: usize) -> bool {
        self.reservation_at(addr).is_some()
    }

    /// Whether `addr` lies in one of `owner`'s reservations.
    pub fn owned_by(&self, owner: Owner, addr: usize) -> bool {
        self.reservation_of(owner, addr).is_some()
    }

    /// `VirtualAlloc(address, size, allocation_type, protect)`: reserves,
    /// commits or resets pages. Returns the base of a new reservation, or
    /// the page-rounded start of the pages committed or reset.
    ///
    /// The runtime's call: it reserves for [`Owner::Runtime`], and commits
    /// or resets only in the runtime's reservations (the host's answer
    /// `ERROR_INVALID_ADDRESS`, as memory the caller does not own).
    pub fn virtual_alloc(
        &mut self,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
    ) -> Result<usize, Win32Error> {
        self.virtual_alloc_as(Owner::Runtime, address, size, allocation_type, protect)
    }

    /// [`virtual_alloc`](Self::virtual_alloc) on behalf of `owner`: a new
    /// reservation is `owner`'s, and only `owner`'s pages can be committed
    /// or reset.
    #[inline(always)]
    pub fn virtual_alloc_as(
        &mut self,
        owner: Owner,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
    ) -> Result<usize, Win32Error> {
        if size == 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let request = alloc_request(allocation_type, address)?;
        if !alloc_in_user_space(address, size) {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        match request {
            AllocRequest::Reset | AllocRequest::ResetUndo => {
                // The protection is ignored but must be a valid one.
                if !protect.is_well_formed() {
                    return Err(Win32Error::INVALID_PARAMETER);
                }
                let range = PageRange::touched(address, size)?;
                if request == AllocRequest::Reset {
                    self.reset(owner, range)
                } else {
                    self.reset_undo(owner, range)
                }
            }
            AllocRequest::Reserve {
                commit,
                watch,
                large,
            } => {
                let protection = private_protection(protect)?;
                let top_down = allocation_type.contains(AllocationType::TOP_DOWN);
                if large {
                    self.reserve_large(owner, address, size, protection)
                } else {
                    self.reserve(owner, address, size, protection, commit, top_down, watch)
                }
            }
            AllocRequest::Commit => {
                let protection = private_protection(protect)?;
                self.commit(owner, PageRange::touched(address, size)?, protection)
            }
        }
    }

    /// The bytes a `VirtualAlloc` by `owner` with these arguments would
    /// newly commit if it succeeded (0 for calls that commit nothing or
    /// would fail).
    pub fn commit_cost(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
    ) -> usize {
        if size == 0 || !alloc_in_user_space(address, size) {
            return 0;
        }
        match alloc_request(allocation_type, address) {
            Ok(AllocRequest::Reserve {
                commit: true,
                large: true,
                ..
            }) => size,
            Ok(AllocRequest::Reserve { commit: true, .. }) if address == 0 => {
                range::checked_align_up(size, PAGE_SIZE).unwrap_or(0)
            }
            Ok(AllocRequest::Reserve { commit: true, .. }) => {
                PageRange::touched(address, size).map_or(0, |r| r.end() - granule_floor(address))
            }
            Ok(AllocRequest::Commit) => PageRange::touched(address, size)
                .ok()
                .and_then(|range| {
                    let r = self
                        .reservation_of(owner, range.start())
                        .filter(|r| r.contains_range(range))?;
                    let pages = r.page_indices(range);
                    Some((pages.len() - r.pages().committed_pages(pages)) * PAGE_SIZE)
                })
                .unwrap_or(0),
            _ => 0,
        }
    }

    // Each argument is one of VirtualAlloc's, decoded; a struct for them
    // would only be unpacked again here.
    #[allow(unsafe_code, clippy::too_many_arguments)]
    #[inline(always)]
    fn reserve(
        &mut self,
        owner: Owner,
        address: usize,
        size: usize,
        protection: PrivateProtection,
        commit: bool,
        top_down: bool,
        watch: bool,
    ) -> Result<usize, Win32Error> {
        if watch && !crate::os::write_watch_supported() {
            // Asked before anything is mapped: a kernel without the
            // feature refuses with nothing changed.
            return Err(Win32Error::NOT_SUPPORTED);
        }
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
        let mut reservation =
            Reservation::new(base, len, protection.protection(), initial).with_owner(owner);
        if watch {
            // SAFETY: the mapping made just above for this reservation.
            if let Err(e) = unsafe { self.os.watch_writes(base, len) } {
                // SAFETY: the mapping made just above, which nothing else
                // knows of yet.
                unsafe { self.os.unmap(base, len) }.map_err(|_| Win32Error::INTERNAL_ERROR)?;
                return Err(match e {
                    OsError::ENOMEM | OsError::EAGAIN => Win32Error::NOT_ENOUGH_MEMORY,
                    _ => Win32Error::NOT_SUPPORTED,
                });
            }
            reservation = reservation.with_write_watch();
        }
        self.reserved_bytes += len;
        if commit {
            *self.committed_bytes.0.get_mut() += len;
        }
        self.reservations.insert(reservation);
        Ok(base)
    }

    /// `MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES`: size and address must
    /// be multiples of the large page size (`GetLargePageMinimum`).
    fn reserve_large(
        &mut self,
        owner: Owner,
        address: usize,
        size: usize,
        protection: PrivateProtection,
    ) -> Result<usize, Win32Error> {
        let large = crate::os::huge_page_size();
        if large == 0 || !size.is_multiple_of(large) || !address.is_multiple_of(large) {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        if address != 0 {
            let end = address
                .checked_add(size)
                .filter(|&end| end <= USER_ADDRESS_END)
                .ok_or(Win32Error::INVALID_PARAMETER)?;
            if self.overlaps_reservation(address..end) {
                return Err(Win32Error::INVALID_ADDRESS);
            }
        }
        let state = PageState::Committed(protection.page);
        let base = self
            .os
            .map_huge(address, size, state.access())
            .map_err(|e| match e {
                OsError::EEXIST | OsError::EPERM => Win32Error::INVALID_ADDRESS,
                // The kernel's huge page pool cannot hold the mapping.
                _ => Win32Error::NO_SYSTEM_RESOURCES,
            })?;
        let reservation = Reservation::new(base, size, protection.protection(), state)
            .with_owner(owner)
            .with_large_pages();
        self.reserved_bytes += size;
        *self.committed_bytes.0.get_mut() += size;
        self.reservations.insert(reservation);
        Ok(base)
    }

    /// The watched reservation holding all of `[address, address + size)`
    /// (`ERROR_INVALID_PARAMETER` otherwise, as `GetWriteWatch` answers),
    /// and the range's pages.
    fn watched(&self, address: usize, size: usize) -> Result<(usize, PageRange), Win32Error> {
        if size == 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let range = PageRange::touched(address, size).map_err(|_| Win32Error::INVALID_PARAMETER)?;
        self.reservation_at(range.start())
            .filter(|r| r.is_watched() && r.contains_range(range))
            .map(|r| (r.base(), range))
            .ok_or(Win32Error::INVALID_PARAMETER)
    }

    /// `GetWriteWatch(flags, address, size, addresses, &count, &granularity)`:
    /// appends to `out` the pages of a `MEM_WRITE_WATCH` reservation written
    /// since they were last reset, ascending, at most `max` of them; with
    /// `WRITE_WATCH_FLAG_RESET` in `flags`, resets exactly the pages
    /// reported. The granularity is [`PAGE_SIZE`].
    #[allow(unsafe_code)]
    pub fn get_write_watch(
        &mut self,
        flags: u32,
        address: usize,
        size: usize,
        max: usize,
        out: &mut Vec<usize>,
    ) -> Result<(), Win32Error> {
        if flags & !crate::win32::WRITE_WATCH_FLAG_RESET != 0 || max == 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let reset = flags & crate::win32::WRITE_WATCH_FLAG_RESET != 0;
        let (base, range) = self.watched(address, size)?;
        let kept = self.marks.get(&base).is_some_and(|m| !m.is_empty());
        if !kept {
            // The common case: every mark is in the kernel, which reports
            // and resets the first `max` in one walk.
            // SAFETY: `range` lies in the watched reservation at `base`.
            return unsafe {
                self.os
                    .written_pages(range.start(), range.len(), max, reset, Some(out))
            }
            .map_err(change_error);
        }
        let mut kernel = Vec::new();
        // SAFETY: as above.
        unsafe {
            self.os
                .written_pages(range.start(), range.len(), max, reset, Some(&mut kernel))
        }
        .map_err(change_error)?;
        let r = self.reservation(base);
        let pages = r.page_indices(range);
        let count = r.pages().len();
        let marks = self.marks.entry(base).or_default();
        let ours: Vec<usize> = marks.iter(pages).map(|i| base + i * PAGE_SIZE).collect();
        // Merge the two ascending lists; with reset, kernel pages beyond
        // the first `max` were protected all the same, so their marks move
        // to hostmem's, and hostmem's marks of the pages reported go.
        let mut merged: Vec<usize> = kernel.iter().chain(&ours).copied().collect();
        merged.sort_unstable();
        merged.dedup();
        merged.truncate(max);
        out.extend_from_slice(&merged);
        if reset {
            let cut = merged.last().copied().unwrap_or(0);
            for &addr in kernel.iter().filter(|&&a| a > cut) {
                marks.set((addr - base) / PAGE_SIZE, count);
            }
            for &addr in &merged {
                marks.clear((addr - base) / PAGE_SIZE);
            }
        }
        Ok(())
    }

    /// `ResetWriteWatch(address, size)`: forgets the writes to the pages of
    /// a `MEM_WRITE_WATCH` reservation.
    #[allow(unsafe_code)]
    pub fn reset_write_watch(&mut self, address: usize, size: usize) -> Result<(), Win32Error> {
        let (base, range) = self.watched(address, size)?;
        // SAFETY: `range` lies in the watched reservation at `base`.
        unsafe {
            self.os
                .written_pages(range.start(), range.len(), 0, true, None)
        }
        .map_err(change_error)?;
        let pages = self.reservation(base).page_indices(range);
        if let Some(marks) = self.marks.get_mut(&base) {
            for i in pages {
                marks.clear(i);
            }
        }
        Ok(())
    }

    /// Before a change that drops page-table entries of a watched
    /// reservation (which the kernel would then report written): moves the
    /// kernel's marks of `range` to hostmem's, protecting the pages.
    #[allow(unsafe_code)]
    fn keep_marks(&mut self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        if !self.reservation(base).is_watched() {
            return Ok(());
        }
        let mut written = Vec::new();
        // SAFETY: `range` lies in the watched reservation at `base`.
        let scanned = unsafe {
            self.os
                .written_pages(range.start(), range.len(), 0, true, Some(&mut written))
        };
        // Whatever was reported is kept, even if the scan failed part way.
        if !written.is_empty() {
            let pages = self.reservation(base).pages().len();
            let marks = self.marks.entry(base).or_default();
            for addr in written {
                marks.set((addr - base) / PAGE_SIZE, pages);
            }
        }
        scanned.map_err(change_error)
    }

    /// After such a change: protects the pages of `range` again (their
    /// marks are in hostmem's keeping). A failure leaves pages reading as
    /// written, which a watcher takes for a write it did not see: safe.
    #[allow(unsafe_code)]
    fn rearm(&self, base: usize, range: PageRange) {
        if self.reservation(base).is_watched() {
            // SAFETY: `range` lies in the watched reservation at `base`.
            let _ = unsafe {
                self.os
                    .written_pages(range.start(), range.len(), 0, true, None)
            };
        }
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
    #[allow(unsafe_code)]
    #[inline(always)]
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
                self.anchor = Some(self.map_anchor());
            }
            self.placement.hint(len)
        };
        let got = self.os.map_anywhere(hint, len, access).map_err(map_error)?;
        let base = if got.is_multiple_of(ALLOCATION_GRANULARITY) {
            got
        } else {
            // SAFETY: the mapping `map_anywhere` just made, which no one
            // has seen.
            unsafe { self.os.unmap(got, len) }.map_err(|_| Win32Error::INTERNAL_ERROR)?;
            self.map_trimmed(len, access)?
        };
        self.placement.placed(hint, base, len);
        Ok(base)
    }

    /// Maps the placement's anchor, the small area's first granule, with
    /// no access (never replacing a mapping); `None` if it cannot be had.
    ///
    /// It keeps the kernel's page tables of the area's first 2 MiB alive
    /// across reserve/release churn. And it is *primed*: one of its pages
    /// is written and dropped at once, which makes the kernel give the
    /// mapping its reverse-map root for anonymous pages (Linux's
    /// `anon_vma`, otherwise made at a mapping's first write fault). A
    /// mapping made right next to one that has a root, with the same
    /// flags, shares it at its own first write; so the small reservations
    /// packed after the anchor share its root, where each would otherwise
    /// have the kernel make one at its first touch and free it at its
    /// release (some 150 ns a short-lived reservation on the development
    /// machine).
    #[allow(unsafe_code)]
    #[cold]
    #[inline(never)]
    fn map_anchor(&self) -> Option<usize> {
        let at = self.placement.anchor();
        let len = ANCHOR_LEN;
        self.os
            .map_fixed(at, len, Access::READ | Access::WRITE)
            .ok()?;
        // SAFETY: the mapping just made at `at`, the engine's own, which
        // no one else has seen: its first page is written with the value
        // it holds and dropped, then the whole is made inaccessible.
        let primed = unsafe {
            self.os
                .keep_contents(at, PAGE_SIZE, Access::READ | Access::WRITE)
                .and_then(|()| self.os.discard(at, PAGE_SIZE))
                .and_then(|()| self.os.protect(at, len, Access::empty()))
        };
        if primed.is_err() {
            // Not kept half made (writable, or holding a page).
            // SAFETY: the same mapping, which no one uses.
            let _ = unsafe { self.os.unmap(at, len) };
            return None;
        }
        Some(at)
    }

    /// Maps `len + 60 KiB` anywhere and unmaps the head and tail that fall
    /// outside the first 64 KiB-aligned `len` bytes.
    #[allow(unsafe_code)]
    fn map_trimmed(&mut self, len: usize, access: Access) -> Result<usize, Win32Error> {
        let over = len
            .checked_add(ALLOCATION_GRANULARITY - PAGE_SIZE)
            .ok_or(Win32Error::NOT_ENOUGH_MEMORY)?;
        let got = self.os.map_anywhere(0, over, access).map_err(map_error)?;
        let base = range::checked_align_up(got, ALLOCATION_GRANULARITY)
            .ok_or(Win32Error::INTERNAL_ERROR)?;
        let trims = [(got, base - got), (base + len, got + over - (base + len))];
        for (at, n) in trims.into_iter().filter(|&(_, n)| n > 0) {
            // SAFETY: the head or tail of the mapping just made, outside
            // the reservation kept, which no one has seen.
            unsafe { self.os.unmap(at, n) }.map_err(|_| Win32Error::INTERNAL_ERROR)?;
        }
        Ok(base)
    }

    /// Finds the reservation of `owner` holding all of `range`, or
    /// `ERROR_INVALID_ADDRESS`.
    fn reservation_holding(&self, owner: Owner, range: PageRange) -> Result<usize, Win32Error> {
        self.reservation_of(owner, range.start())
            .filter(|r| r.contains_range(range))
            .map(Reservation::base)
            .ok_or(Win32Error::INVALID_ADDRESS)
    }

    /// Sets the kernel access of `range` in reservation `base`, restoring
    /// the old access of every run if the kernel fails part way.
    #[allow(unsafe_code)]
    #[inline(always)]
    fn set_access(&self, base: usize, range: PageRange, access: Access) -> Result<(), Win32Error> {
        // SAFETY: `range` lies in the reservation at `base` (every caller
        // found it there), which the engine mapped; its owner asked for
        // this access.
        let Err(e) = (unsafe { self.os.protect(range.start(), range.len(), access) }) else {
            return Ok(());
        };
        self.restore_access(base, range)?;
        Err(change_error(e))
    }

    /// Gives every run of `range` back the access its page state says.
    #[allow(unsafe_code)]
    fn restore_access(&self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        let r = &self.reservation(base);
        for (run, state) in r.pages().runs(r.page_indices(range)) {
            let (start, end) = (r.page_address(run.start), r.page_address(run.end));
            // SAFETY: pages of the reservation at `base`, which the engine
            // mapped, given back the access they had.
            unsafe { self.os.protect(start, end - start, state.access()) }
                .map_err(|_| Win32Error::INTERNAL_ERROR)?;
        }
        Ok(())
    }

    /// For a large-page reservation, refuses a change of protection to
    /// part of a large page (the kernel maps them whole).
    fn whole_large_pages(&self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        let large = crate::os::huge_page_size();
        if self.reservation(base).is_large()
            && !((range.start() - base).is_multiple_of(large) && range.len().is_multiple_of(large))
        {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        Ok(())
    }

    fn commit(
        &mut self,
        owner: Owner,
        range: PageRange,
        protection: PrivateProtection,
    ) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(owner, range)?;
        self.whole_large_pages(base, range)?;
        let state = PageState::Committed(protection.page);
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        let found = r.pages().survey(pages.clone(), state);
        if found.differs {
            self.set_access(base, range, state.access())?;
        }
        let before = found.committed;
        *self.committed_bytes.0.get_mut() += (pages.len() - before) * PAGE_SIZE;
        self.change(base, |r| r.set_pages(pages, state, before));
        Ok(range.start())
    }

    #[allow(unsafe_code)]
    fn reset(&mut self, owner: Owner, range: PageRange) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(owner, range)?;
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        // Large pages are never paged: their contents are simply kept,
        // which MEM_RESET allows.
        if !r.is_large() && r.pages().committed_pages(pages.clone()) > 0 {
            // Reserved pages in the range hold nothing, so one call covers it.
            // SAFETY: `range` lies in `owner`'s reservation at `base`, which
            // the engine mapped; its owner asked for MEM_RESET.
            unsafe { self.os.reset(range.start(), range.len()) }.map_err(change_error)?;
            self.change(base, |r| r.pages_mut().mark_reset(pages));
        }
        Ok(range.start())
    }

    #[allow(unsafe_code)]
    fn reset_undo(&mut self, owner: Owner, range: PageRange) -> Result<usize, Win32Error> {
        let base = self.reservation_holding(owner, range)?;
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
        // have been lost. Making a page stable writes it: a watched
        // reservation keeps its marks aside meanwhile.
        self.keep_marks(base, range)?;
        let r = &self.reservation(base);
        for reset_run in r.pages().reset_runs(pages.clone()) {
            // A reset run may span several protections.
            for (run, state) in r.pages().runs(reset_run) {
                let (start, end) = (r.page_address(run.start), r.page_address(run.end));
                // SAFETY: committed pages of `owner`'s reservation at
                // `base`, which the engine mapped, with the access their
                // state says; their contents are kept.
                unsafe { self.os.keep_contents(start, end - start, state.access()) }
                    .map_err(change_error)?;
            }
        }
        self.rearm(base, range);
        self.change(base, |r| r.pages_mut().clear_reset(pages));
        Err(Win32Error::INVALID_ADDRESS)
    }

    /// `VirtualFree(address, size, free_type)`: decommits pages or releases
    /// a whole reservation — of the runtime's: the host's own answer
    /// `ERROR_INVALID_ADDRESS`.
    pub fn virtual_free(
        &mut self,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), Win32Error> {
        self.virtual_free_as(Owner::Runtime, address, size, free_type)
    }

    /// [`virtual_free`](Self::virtual_free) on behalf of `owner`: only
    /// `owner`'s reservations can be decommitted or released.
    #[inline(always)]
    pub fn virtual_free_as(
        &mut self,
        owner: Owner,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Result<(), Win32Error> {
        let release = if free_type == FreeType::RELEASE {
            true
        } else if free_type == FreeType::DECOMMIT {
            false
        } else if free_type == FreeType::RELEASE | FreeType::PRESERVE_PLACEHOLDER
            || free_type == FreeType::RELEASE | FreeType::COALESCE_PLACEHOLDERS
        {
            return Err(self.refuse_placeholder_free(owner, address, size, free_type));
        } else {
            return Err(Win32Error::INVALID_PARAMETER);
        };
        if release && size != 0 {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let page = page_floor(address);
        let (base, reserved) = self
            .reservation_of(owner, page)
            .map(|r| (r.base(), r.size()))
            .ok_or(Win32Error::INVALID_ADDRESS)?;
        if release {
            if page != base {
                return Err(Win32Error::INVALID_ADDRESS);
            }
            return self.release(base, reserved);
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

    /// The refusal of a `VirtualFree` that splits a placeholder
    /// (`MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER`) or joins placeholders
    /// (`MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS`): hostmem makes no
    /// placeholders, so each fails as Windows fails it on a reservation
    /// that is not one. The range is checked as for any free (no
    /// reservation, or size 0 off its base: `ERROR_INVALID_ADDRESS`; a
    /// split past the reservation's end: `ERROR_INVALID_PARAMETER`), then
    /// size 0 is an invalid parameter and any other size names memory that
    /// is no placeholder (`STATUS_CONFLICTING_ADDRESSES`,
    /// `ERROR_INVALID_ADDRESS`).
    fn refuse_placeholder_free(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        free_type: FreeType,
    ) -> Win32Error {
        let page = page_floor(address);
        let Some(r) = self.reservation_of(owner, page) else {
            return Win32Error::INVALID_ADDRESS;
        };
        if size == 0 {
            return if page == r.base() {
                Win32Error::INVALID_PARAMETER
            } else {
                Win32Error::INVALID_ADDRESS
            };
        }
        let past_end =
            PageRange::touched(address, size).map_or(true, |range| range.end() > r.end());
        if past_end && free_type.contains(FreeType::PRESERVE_PLACEHOLDER) {
            return Win32Error::INVALID_PARAMETER;
        }
        Win32Error::INVALID_ADDRESS
    }

    #[allow(unsafe_code)]
    #[inline(always)]
    fn release(&mut self, base: usize, size: usize) -> Result<(), Win32Error> {
        debug_assert_eq!(self.reservation(base).size(), size);
        // SAFETY: the whole reservation at `base` (`size` is its size),
        // which the engine mapped; its owner asked for MEM_RELEASE.
        unsafe { self.os.unmap(base, size) }.map_err(|e| match e {
            // munmap checks the mapping limit before it changes anything.
            OsError::ENOMEM | OsError::EAGAIN => Win32Error::NOT_ENOUGH_MEMORY,
            _ => Win32Error::INTERNAL_ERROR,
        })?;
        let mut r = self
            .reservations
            .remove(base)
            .expect("reservation found above");
        // Only a watched reservation has marks: the others skip the hash.
        if r.is_watched() {
            self.marks.remove(&base);
        }
        self.reserved_bytes -= r.size();
        *self.committed_bytes.0.get_mut() -= r.committed_bytes_alone();
        self.placement.released(base, r.size());
        if self.reservations.len() == 0 {
            self.placement.emptied();
        }
        Ok(())
    }

    #[allow(unsafe_code)]
    fn decommit(&mut self, base: usize, range: PageRange) -> Result<(), Win32Error> {
        if self.reservation(base).is_large() {
            // Large pages stay committed until the region is released.
            return Err(Win32Error::INVALID_PARAMETER);
        }
        let r = &self.reservation(base);
        let pages = r.page_indices(range);
        let committed = r.pages().committed_pages(pages.clone());
        if committed > 0 {
            // A decommitted page keeps its written mark (Windows reports it
            // until reset), but the kernel drops it with the page.
            self.keep_marks(base, range)?;
            let r = &self.reservation(base);
            if r.pages().revoking_splits(pages.clone()) {
                // Revoking access splits a kernel mapping, which can fail
                // (ENOMEM at vm.max_map_count): revoke first, then drop
                // the contents, so that a failure of either leaves the
                // pages exactly as they were.
                self.set_access(base, range, Access::empty())?;
                // SAFETY: `range` lies in the reservation at `base`, which
                // the engine mapped; its owner asked for MEM_DECOMMIT.
                if let Err(e) = unsafe { self.os.discard(range.start(), range.len()) } {
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
                // SAFETY: as above.
                unsafe { self.os.discard(range.start(), range.len()) }.map_err(change_error)?;
                self.set_access(base, range, Access::empty())?;
            }
            self.rearm(base, range);
        }
        self.change(base, |r| r.set_pages(pages, PageState::Reserved, committed));
        *self.committed_bytes.0.get_mut() -= committed * PAGE_SIZE;
        Ok(())
    }

    /// `VirtualQuery(address, &mbi, sizeof mbi)`: describes the run of pages
    /// at `address` — from the engine's map inside its reservations, from
    /// the kernel's view elsewhere.
    pub fn virtual_query(&self, address: usize) -> Result<MemoryBasicInformation, Win32Error> {
        self.virtual_query_within(address, Duration::MAX)
    }

    /// [`virtual_query`](Self::virtual_query), waiting at most `wait` for a
    /// change in place that is writing the reservation's page map
    /// (`ERROR_TIMEOUT` after that: the changing thread may be suspended
    /// in the middle of its write).
    pub fn virtual_query_within(
        &self,
        address: usize,
        wait: Duration,
    ) -> Result<MemoryBasicInformation, Win32Error> {
        if address >= USER_ADDRESS_END {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        match self.reservations.lookup(address) {
            Lookup::Answered(mbi) => return Ok(mbi),
            Lookup::In(r) => return r.query_within(address, wait).ok_or(Win32Error::TIMEOUT),
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
    /// (but the page must be committed). Only the runtime's reservations:
    /// the host's own answer `ERROR_INVALID_ADDRESS`.
    pub fn virtual_protect(
        &mut self,
        address: usize,
        size: usize,
        new_protect: Protection,
    ) -> Result<Protection, Win32Error> {
        let protection = private_protection(new_protect)?;
        // The pages of [address, address + size) (at least the first).
        // NtProtectVirtualMemory refuses a range that wraps, starts above
        // the user address space or reaches past its top as an invalid
        // parameter, before it looks at what is mapped.
        let range = PageRange::touched(address, size.max(1))?;
        if range.end() > USER_ADDRESS_END {
            return Err(Win32Error::INVALID_PARAMETER);
        }
        // None when size is 0 and the address is page aligned: the page
        // must still be committed (its protection is the old one) but
        // nothing changes, as in Windows' NtProtectVirtualMemory.
        if size == 0 && address.is_multiple_of(PAGE_SIZE) {
            let r = self
                .reservation_of(Owner::Runtime, address)
                .ok_or(Win32Error::INVALID_ADDRESS)?;
            let state = r.pages().state(r.page_indices(range).start);
            return match state {
                PageState::Reserved => Err(Win32Error::INVALID_ADDRESS),
                PageState::Committed(_) => Ok(r.protection_of(state)),
            };
        }
        let base = self.reservation_holding(Owner::Runtime, range)?;
        self.whole_large_pages(base, range)?;
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

/// Changes made in place: under the manager's *shared* lock, side by side
/// with changes in place of other reservations (and with readers), each
/// holding its reservation's pages (see [`Reservation::hold_pages`]).
/// Each makes exactly the change, with exactly the answer, of the
/// exclusive path, or answers [`InPlace::Structural`] having changed
/// nothing, whenever that path could answer otherwise or must do more:
/// arguments it would refuse, a range not wholly inside one of the
/// owner's reservations, watched or large-page reservations.
impl<B: OsBackend> AddressSpace<B> {
    /// Adds `bytes` to the committed count if `fits` says the count it
    /// sees can take them, atomically: of racing charges that the budget
    /// can take only one of, exactly one passes. Returns the count after
    /// the charge, or `None` (and nothing changed) if it did not fit.
    pub fn charge(&self, bytes: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
        let counter = &self.committed_bytes.0;
        let mut now = counter.load(Ordering::Relaxed);
        loop {
            if !fits(now) {
                return None;
            }
            match counter.compare_exchange_weak(
                now,
                now + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(now + bytes),
                Err(seen) => now = seen,
            }
        }
    }

    /// Takes back a [`charge`](Self::charge) whose commit failed, or the
    /// bytes of a decommit.
    fn uncharge(&self, bytes: usize) {
        self.committed_bytes.0.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// A `VirtualAlloc(address, size, MEM_COMMIT, protect)` by `owner`
    /// made in place. `fits(committed, cost)` says whether the budget can
    /// take `cost` more bytes when `committed` are committed; if not, the
    /// answer is [`InPlace::OverBudget`] and nothing changed. The answer
    /// carries the start of the pages and the committed count right after
    /// this call's charge (for the peak). At an address in no reservation
    /// (with arguments the exclusive path would take) it answers
    /// `ERROR_INVALID_ADDRESS` itself. It waits at most `wait` for another
    /// change in place of the same reservation ([`InPlace::Busy`]).
    // Each argument is one of VirtualAlloc's, or of the wait and budget
    // the caller decides; a struct would only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn commit_in_place(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        allocation_type: AllocationType,
        protect: Protection,
        fits: &dyn Fn(usize, usize) -> bool,
        wait: Duration,
    ) -> InPlace<(usize, usize)> {
        if size == 0
            || address < ALLOCATION_GRANULARITY
            || !matches!(
                alloc_request(allocation_type, address),
                Ok(AllocRequest::Commit)
            )
        {
            return InPlace::Structural;
        }
        let (Ok(range), Ok(protection)) = (
            PageRange::touched(address, size),
            private_protection(protect),
        ) else {
            return InPlace::Structural;
        };
        if range.end() > USER_ADDRESS_END {
            return InPlace::Structural;
        }
        let state = PageState::Committed(protection.page);
        self.change_in_place(owner, range.start(), range.len(), state, fits, wait)
            .map(|after| (range.start(), after))
    }

    /// A `VirtualFree(address, size, free_type)` by `owner` made in place:
    /// only `MEM_DECOMMIT`. At an address in no reservation it answers
    /// `ERROR_INVALID_ADDRESS` itself, as [`virtual_free_as`](Self::virtual_free_as)
    /// would (a decommit's size and address are valid whatever they are
    /// until a reservation is found). It waits at most `wait` for another
    /// change in place of the same reservation ([`InPlace::Busy`]).
    #[inline(always)]
    pub fn decommit_in_place(
        &self,
        owner: Owner,
        address: usize,
        size: usize,
        free_type: FreeType,
        wait: Duration,
    ) -> InPlace<()> {
        if free_type != FreeType::DECOMMIT {
            return InPlace::Structural;
        }
        // Size 0: the whole reservation from its base (`change_in_place`
        // checks the base). A range that wraps is the exclusive path's.
        let len = if size == 0 {
            0
        } else {
            match PageRange::touched(address, size) {
                Ok(range) => range.len(),
                Err(_) => return InPlace::Structural,
            }
        };
        self.change_in_place(
            owner,
            page_floor(address),
            len,
            PageState::Reserved,
            &|_, _| true,
            wait,
        )
        .map(drop)
    }

    /// The body of both changes in place, inlined down to the system call
    /// (see `os::Backend` for why): takes the `len` bytes of
    /// pages from `start` (page aligned; `len` 0: the whole reservation,
    /// which `start` must then be the base of) to `state`. The answer
    /// carries the committed count right after a commit's charge (0 for a
    /// decommit, which sets no peak).
    #[allow(unsafe_code)]
    #[inline(always)]
    fn change_in_place(
        &self,
        owner: Owner,
        start: usize,
        len: usize,
        state: PageState,
        fits: &dyn Fn(usize, usize) -> bool,
        wait: Duration,
    ) -> InPlace<usize> {
        let Some(r) = self.reservation_at(start) else {
            return InPlace::Done(Err(Win32Error::INVALID_ADDRESS));
        };
        let base = r.base();
        if r.owner() != owner
            || r.is_large()
            || r.is_watched()
            || (len == 0 && start != base)
            || len > r.end() - start
        {
            return InPlace::Structural;
        }
        let end = if len == 0 { r.end() } else { start + len };
        let range = PageRange::new(start, end).expect("a page-aligned range inside a reservation");
        let pages = r.page_indices(range);
        let Some(held) = r.hold_pages(wait) else {
            return InPlace::Busy;
        };
        let map = held.map();
        // One word of the map, worked out at once, or the whole survey.
        let word = map.word_change(&pages, state);
        // (A one-word change leaves the map per page: no uniform state to
        // carry to the write.)
        let (found, revoke_splits, uniform) = match &word {
            Some(change) => (
                Survey {
                    committed: change.committed,
                    differs: change.differs,
                },
                change.revoke_splits,
                None,
            ),
            None => {
                let found = map.survey(pages.clone(), state);
                let splits = state == PageState::Reserved
                    && found.committed > 0
                    && map.revoking_splits(pages.clone());
                (found, splits, map.uniform_state())
            }
        };
        let after = if let PageState::Committed(_) = state {
            let cost = (pages.len() - found.committed) * PAGE_SIZE;
            let Some(after) = self.charge(cost, |committed| cost == 0 || fits(committed, cost))
            else {
                return InPlace::OverBudget;
            };
            if found.differs
                && let Err(e) = self.set_access(base, range, state.access())
            {
                self.uncharge(cost);
                return InPlace::Done(Err(e));
            }
            after
        } else {
            if found.committed > 0 {
                // As `decommit` does (an unwatched reservation: no marks).
                if revoke_splits {
                    if let Err(e) = self.set_access(base, range, Access::empty()) {
                        return InPlace::Done(Err(e));
                    }
                    // SAFETY: `range` lies in `owner`'s reservation at
                    // `base`, which the engine mapped and the manager's
                    // shared lock keeps; its pages are held, so no other
                    // change runs on them; its owner asked for
                    // MEM_DECOMMIT.
                    if let Err(e) = unsafe { self.os.discard(range.start(), range.len()) } {
                        if let Err(e) = self.restore_access(base, range) {
                            return InPlace::Done(Err(e));
                        }
                        return InPlace::Done(Err(change_error(e)));
                    }
                } else {
                    // SAFETY: as above.
                    if let Err(e) = unsafe { self.os.discard(range.start(), range.len()) } {
                        return InPlace::Done(Err(change_error(e)));
                    }
                    if let Err(e) = self.set_access(base, range, Access::empty()) {
                        return InPlace::Done(Err(e));
                    }
                }
            }
            0
        };
        match word {
            Some(change) => Reservation::apply_held_word(held, &change, pages.len(), state),
            None => {
                Reservation::set_held_pages(held, pages, state, found.committed, uniform, || {
                    self.reservations.refresh_shared(r)
                })
            }
        }
        if state == PageState::Reserved {
            self.uncharge(found.committed * PAGE_SIZE);
        }
        InPlace::Done(Ok(after))
    }
}

/// Whether a `VirtualAlloc` of `size` (not 0) bytes at `address` passes
/// Windows' checks of the range, whatever the type: at an address, not
/// in the low 64 KiB, not wrapping, and not reaching past the user
/// address space; at NULL, no larger than the user address space
/// (`NtAllocateVirtualMemory` refuses a size beyond the top of user
/// space less the base with an invalid parameter, before it looks for
/// room).
#[inline(always)]
fn alloc_in_user_space(address: usize, size: usize) -> bool {
    if address == 0 {
        size <= USER_ADDRESS_END
    } else {
        address >= ALLOCATION_GRANULARITY
            && PageRange::touched(address, size).is_ok_and(|r| r.end() <= USER_ADDRESS_END)
    }
}

/// Whether `VirtualProtect(address, size, new_protect, ..)` has a valid
/// protection and a range that does not wrap: if so, the engine refuses
/// a range outside its reservations for where it lies alone
/// (`ERROR_INVALID_ADDRESS`, or `ERROR_INVALID_PARAMETER` past the user
/// address space), and a host may refuse it as memory it did not
/// allocate without asking the engine for a change.
pub fn protect_arguments_valid(address: usize, size: usize, new_protect: Protection) -> bool {
    private_protection(new_protect).is_ok() && PageRange::touched(address, size.max(1)).is_ok()
}

/// Whether `VirtualAlloc` arguments that work on existing pages (a commit
/// at an address, `MEM_RESET`, `MEM_RESET_UNDO`) are ones the engine
/// accepts whatever the address: with them, an address outside the
/// engine's reservations fails for that reason alone
/// (`ERROR_INVALID_ADDRESS`), and a caller may refuse it without asking
/// the engine for a change. False for a reservation.
pub fn existing_pages_arguments_valid(
    address: usize,
    size: usize,
    allocation_type: AllocationType,
    protect: Protection,
) -> bool {
    if size == 0 {
        return false;
    }
    let Ok(request) = alloc_request(allocation_type, address) else {
        return false;
    };
    let Ok(range) = PageRange::touched(address, size) else {
        return false;
    };
    if address != 0 && (address < ALLOCATION_GRANULARITY || range.end() > USER_ADDRESS_END) {
        return false;
    }
    match request {
        AllocRequest::Reset | AllocRequest::ResetUndo => protect.is_well_formed(),
        AllocRequest::Commit => private_protection(protect).is_ok(),
        AllocRequest::Reserve { .. } => false,
    }
}

impl<B: OsBackend> AddressSpace<B> {
    /// Releases every reservation, and unmaps the placement's anchor (a
    /// failure to unmap one leaves that mapping in place: nothing else can
    /// be done about it).
    #[allow(unsafe_code)]
    pub fn release_all(&mut self) {
        for r in self.reservations.take_all() {
            // SAFETY: a reservation the engine mapped, now out of its
            // index; releasing everything is what the owner of the address
            // space asked for.
            let _ = unsafe { self.os.unmap(r.base(), r.size()) };
        }
        if let Some(Some(at)) = self.anchor.take() {
            // SAFETY: the anchor the engine mapped for itself.
            let _ = unsafe { self.os.unmap(at, ANCHOR_LEN) };
        }
        self.reserved_bytes = 0;
        *self.committed_bytes.0.get_mut() = 0;
        self.marks.clear();
    }
}

impl<B: OsBackend> AddressSpace<B> {
    /// Releases every reservation of `owner` (a failure to unmap one
    /// leaves that reservation in place); the others stay.
    pub fn release_all_of(&mut self, owner: Owner) {
        let all: Vec<(usize, usize)> = self
            .reservations()
            .filter(|r| r.owner() == owner)
            .map(|r| (r.base(), r.size()))
            .collect();
        for (base, size) in all {
            let _ = self.release(base, size);
        }
    }
}

impl<B: OsBackend> Drop for AddressSpace<B> {
    fn drop(&mut self) {
        self.release_all();
    }
}

#[cfg(test)]
mod tests;
