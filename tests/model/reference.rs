//! A pure reference model of the Win32 virtual-memory rules that hostmem
//! emulates: `VirtualAlloc`, `VirtualFree`, `VirtualQuery` and
//! `VirtualProtect` over a set of reservations.
//!
//! It is written from the rules (docs/semantics.md, the decisions of
//! the engine API note, and Wine's conformance tests, which record what
//! Windows does), not from the engine's code, so that the property test in
//! `main.rs` compares two independent readings of the same rules.
//!
//! The model has no operating system. It knows only the reservations made
//! through it; it cannot know where the system places a reservation made
//! at address NULL (the caller tells it the base the engine returned, and
//! the model checks that base against the rules), nor which addresses
//! outside its reservations are mapped by someone else (a fixed-address
//! reservation there is expected to succeed; the test decides from
//! `/proc/self/maps` whether a foreign mapping was in the way).
//!
//! # Undetermined calls
//!
//! Every call is answered either with the result Windows would give
//! ([`Verdict::Expect`]) or with [`Verdict::Undetermined`] when the rules do
//! not settle the result; the test never makes such a call, so the engine
//! is never held to an answer the rules do not give. The cases:
//!
//! - Calls wrong in two ways at once whose errors differ (an
//!   `ERROR_INVALID_PARAMETER` cause and an `ERROR_INVALID_ADDRESS` cause):
//!   no Wine test records which check comes first, and the implementations
//!   disagree (NT's `NtFreeVirtualMemory` checks the free type before the
//!   address, Wine's ntdll the address before the type). Several
//!   `ERROR_INVALID_PARAMETER` causes together (bad type, bad protection,
//!   size 0) are determined: whatever the order, the error is the same.
//!   A `VirtualAlloc` type that is not one of the valid forms is always
//!   `ERROR_INVALID_PARAMETER`: without a valid type there is no reading of
//!   the address that could fail first (NT and Wine both reject the type
//!   before looking at the address).
//! - `MEM_RESET` / `MEM_RESET_UNDO` at an address that is not page aligned
//!   (Windows returns "the address"; whether rounded is not recorded), at
//!   NULL, or `MEM_RESET` with `PAGE_GUARD` or a WRITECOPY protection
//!   (ignored-but-valid on Windows, refused by hostmem's decisions: not
//!   settled), and `MEM_RESET_UNDO` with an invalid protection (the docs
//!   do not say whether it is checked).
//! - A commit whose `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` modifier differs
//!   from the allocation's, and `PAGE_NOACCESS` committed or protected in
//!   an allocation that has a modifier: the modifiers belong to the whole
//!   allocation on current Windows, and Wine records only `VirtualProtect`
//!   (the page keeps the allocation's modifier, whatever the new protection
//!   says), and the reserve-and-commit at once.
//! - `VirtualProtect` with size 0, and ranges whose end overflows.
//!
//! # Data
//!
//! For a few sampled bytes of every committed page the model tracks the
//! value the test wrote there ([`Sample`]): committed pages read zero
//! after a commit from reserved, keep their data when committed again, and
//! after `MEM_RESET` read either their old value or zero.

use hostmem::win32::{
    ALLOCATION_GRANULARITY, AllocationType, FreeType, MemoryBasicInformation, MemoryState,
    MemoryType, PAGE_SIZE, Protection, Win32Error,
};
use std::collections::BTreeMap;

/// The page (4 KiB, Windows' value).
pub const PAGE: usize = PAGE_SIZE;
/// The allocation granularity (64 KiB).
pub const GRANULE: usize = ALLOCATION_GRANULARITY;
/// Byte offsets, within every committed page, whose contents are tracked.
pub const SAMPLE_OFFSETS: [usize; 3] = [0, 0x5a7, PAGE - 1];
/// How many bytes per page are tracked.
pub const SAMPLES: usize = SAMPLE_OFFSETS.len();
/// What the model answers for a reservation at NULL that should succeed
/// when it has not been told the base the system chose.
pub const ANY_BASE: usize = 0;

// The numbers, spelled out from the spec's table rather than taken from the
// engine's constants, so the model checks those too.
const MEM_COMMIT: u32 = 0x1000;
const MEM_RESERVE: u32 = 0x2000;
const MEM_DECOMMIT: u32 = 0x4000;
const MEM_RELEASE: u32 = 0x8000;
const MEM_COALESCE_PLACEHOLDERS: u32 = 0x1;
const MEM_PRESERVE_PLACEHOLDER: u32 = 0x2;
const MEM_RESET: u32 = 0x8_0000;
const MEM_TOP_DOWN: u32 = 0x10_0000;
const MEM_RESET_UNDO: u32 = 0x100_0000;
const MEM_WRITE_WATCH: u32 = 0x20_0000;
const MEM_LARGE_PAGES: u32 = 0x2000_0000;
const WRITE_WATCH_FLAG_RESET: u32 = 1;
const PAGE_NOACCESS: u32 = 0x01;
const PAGE_WRITECOPY: u32 = 0x08;
const PAGE_EXECUTE_WRITECOPY: u32 = 0x80;
const PAGE_GUARD: u32 = 0x100;
const BASE_MASK: u32 = 0xff;
const MODIFIER_MASK: u32 = 0x700;

const INVALID_PARAMETER: Win32Error = Win32Error(87);
const INVALID_ADDRESS: Win32Error = Win32Error(487);

/// The tracked value of one sampled byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// The byte reads exactly this.
    Known(u8),
    /// The page was reset (`MEM_RESET`) since this value was written: the
    /// byte reads this value or zero.
    OldOrZero(u8),
}

impl Sample {
    /// Whether reading `value` agrees with the model.
    pub fn accepts(self, value: u8) -> bool {
        match self {
            Sample::Known(v) => value == v,
            Sample::OldOrZero(v) => value == v || value == 0,
        }
    }

    fn after_reset(self) -> Sample {
        match self {
            Sample::Known(0) | Sample::OldOrZero(0) => Sample::Known(0),
            Sample::Known(v) | Sample::OldOrZero(v) => Sample::OldOrZero(v),
        }
    }
}

/// Whether a committed page was given to `MEM_RESET` since it was last
/// committed from reserved or undone (spec §2: `MEM_RESET_UNDO` succeeds
/// only where no page is reset; a failing one still undoes the reset, as
/// on Windows, so the next one succeeds — README).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetMark {
    /// Not reset.
    Clean,
    /// Reset: `MEM_RESET_UNDO` fails with `ERROR_INVALID_ADDRESS`.
    Reset,
    /// Reset, then committed again while committed. "No page reset since
    /// it was last committed" reads either way here (the commit did not
    /// bring the contents back), so both answers of `MEM_RESET_UNDO` are
    /// accepted.
    Unsure,
}

/// One page of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `MEM_RESERVE`: no access, no contents.
    Reserved,
    /// `MEM_COMMIT` with this protection (base protection plus the
    /// allocation's modifier).
    Committed {
        /// The page protection as `VirtualQuery` reports it.
        protect: Protection,
        /// Whether `MEM_RESET_UNDO` may succeed here.
        reset: ResetMark,
        /// The bytes at [`SAMPLE_OFFSETS`].
        samples: [Sample; SAMPLES],
    },
}

impl Page {
    fn fresh(protect: Protection) -> Page {
        Page::Committed {
            protect,
            reset: ResetMark::Clean,
            samples: [Sample::Known(0); SAMPLES],
        }
    }

    /// `(State, Protect)` as `VirtualQuery` reports them.
    pub fn view(&self) -> (MemoryState, Protection) {
        match self {
            Page::Reserved => (MemoryState::RESERVE, Protection::empty()),
            Page::Committed { protect, .. } => (MemoryState::COMMIT, *protect),
        }
    }

    /// The page protection if committed.
    pub fn protect(&self) -> Option<Protection> {
        match self {
            Page::Reserved => None,
            Page::Committed { protect, .. } => Some(*protect),
        }
    }
}

/// One reservation: a range of whole pages starting at a 64 KiB boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Order of creation within the model (for readable traces).
    pub id: usize,
    /// The base address (64 KiB aligned).
    pub base: usize,
    /// The protection given when the region was reserved.
    pub alloc_protect: Protection,
    /// Every page, from the base.
    pub pages: Vec<Page>,
    /// `MEM_WRITE_WATCH`: for each page, whether it was written since its
    /// mark was last reset (Docs GetWriteWatch; W-k32 test_write_watch: a
    /// decommit keeps the mark).
    pub written: Option<Vec<bool>>,
}

impl Reservation {
    /// The first address past the reservation.
    pub fn end(&self) -> usize {
        self.base + self.pages.len() * PAGE
    }

    /// Whether `address` is in the reservation.
    pub fn contains(&self, address: usize) -> bool {
        (self.base..self.end()).contains(&address)
    }

    /// The page holding `address` (which must be inside).
    pub fn page_index(&self, address: usize) -> usize {
        (address - self.base) / PAGE
    }

    /// The allocation's `PAGE_NOCACHE` / `PAGE_WRITECOMBINE` modifier.
    fn modifier(&self) -> u32 {
        self.alloc_protect.bits() & MODIFIER_MASK
    }

    /// The runs of pages with the same state and protection, as
    /// `(first page, page count)`: the regions `VirtualQuery` reports.
    pub fn runs(&self) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (i, page) in self.pages.iter().enumerate() {
            match runs.last_mut() {
                Some((first, count)) if self.pages[*first].view() == page.view() => *count += 1,
                _ => runs.push((i, 1)),
            }
        }
        runs
    }
}

/// What the model says of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Windows' answer (and the model now holds the state after it).
    Expect(Result<T, Win32Error>),
    /// The rules do not settle the answer: the call must not be made. The
    /// model is unchanged.
    Undetermined(&'static str),
    /// The answer the engine gave, which the model needed to know (the base
    /// of a reservation at NULL), breaks a rule. The model is unchanged.
    Violation(String),
}

/// The kinds of `VirtualAlloc` call (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AllocKind {
    Reserve {
        commit: bool,
        watch: bool,
    },
    /// `MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES`: the answer depends on
    /// the kernel's huge page pool.
    Large,
    Commit,
    Reset,
    ResetUndo,
}

/// The kind of a `VirtualAlloc` type, or `None` when the type is invalid.
///
/// Valid: `MEM_RESERVE`, `MEM_COMMIT`, `MEM_RESERVE | MEM_COMMIT`, each
/// optionally with `MEM_TOP_DOWN`; `MEM_RESET` alone; `MEM_RESET_UNDO`
/// alone; `MEM_WRITE_WATCH` with `MEM_RESERVE` (Docs: "you must also
/// specify MEM_RESERVE"), with or without `MEM_COMMIT`; `MEM_LARGE_PAGES`
/// with `MEM_RESERVE | MEM_COMMIT` (Docs). `MEM_PHYSICAL` is refused by
/// hostmem whatever it comes with, so every type that has it is invalid
/// here, like every other bit.
fn alloc_kind(ty: AllocationType, address: usize) -> Option<AllocKind> {
    let bits = ty.bits();
    if bits & MEM_LARGE_PAGES != 0 {
        return (bits & !MEM_TOP_DOWN == MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES)
            .then_some(AllocKind::Large);
    }
    if bits & MEM_WRITE_WATCH != 0 {
        return match bits & !(MEM_TOP_DOWN | MEM_WRITE_WATCH) {
            MEM_RESERVE => Some(AllocKind::Reserve {
                commit: false,
                watch: true,
            }),
            x if x == MEM_RESERVE | MEM_COMMIT => Some(AllocKind::Reserve {
                commit: true,
                watch: true,
            }),
            _ => None,
        };
    }
    if bits == MEM_RESET {
        return Some(AllocKind::Reset);
    }
    if bits == MEM_RESET_UNDO {
        return Some(AllocKind::ResetUndo);
    }
    match bits & !MEM_TOP_DOWN {
        MEM_RESERVE => Some(AllocKind::Reserve {
            commit: false,
            watch: false,
        }),
        x if x == MEM_RESERVE | MEM_COMMIT => Some(AllocKind::Reserve {
            commit: true,
            watch: false,
        }),
        // A commit at NULL reserves and commits (spec §2).
        MEM_COMMIT if address == 0 => Some(AllocKind::Reserve {
            commit: true,
            watch: false,
        }),
        MEM_COMMIT => Some(AllocKind::Commit),
        _ => None,
    }
}

/// Whether `p` is exactly one base protection, optionally with one of
/// GUARD, NOCACHE, WRITECOMBINE, no modifier with NOACCESS, and no other
/// bit (spec §2, from Wine's tests).
pub fn well_formed(p: Protection) -> bool {
    let bits = p.bits();
    let base = bits & BASE_MASK;
    let modifier = bits & MODIFIER_MASK;
    bits & !(BASE_MASK | MODIFIER_MASK) == 0
        && base.count_ones() == 1
        && modifier.count_ones() <= 1
        && !(modifier != 0 && base == PAGE_NOACCESS)
}

/// Whether hostmem accepts `p` for its (private) memory: well formed, not
/// a WRITECOPY protection (Docs: invalid for private memory), and without
/// `PAGE_GUARD` (refused: engine decision).
pub fn valid_private(p: Protection) -> bool {
    let base = p.bits() & BASE_MASK;
    well_formed(p)
        && base != PAGE_WRITECOPY
        && base != PAGE_EXECUTE_WRITECOPY
        && p.bits() & PAGE_GUARD == 0
}

fn round_down(x: usize, to: usize) -> usize {
    x & !(to - 1)
}

fn round_up(x: usize, to: usize) -> Option<usize> {
    Some(x.checked_add(to - 1)? & !(to - 1))
}

/// The pages touched by `[address, address + size)`, as a byte range.
fn page_span(address: usize, size: usize) -> Option<(usize, usize)> {
    Some((
        round_down(address, PAGE),
        round_up(address.checked_add(size)?, PAGE)?,
    ))
}

/// The reference model: the reservations of one address space.
#[derive(Clone, Debug, Default)]
pub struct Model {
    reservations: BTreeMap<usize, Reservation>,
    next_id: usize,
}

impl Model {
    /// An address space with no reservation.
    pub fn new() -> Model {
        Model::default()
    }

    /// Every reservation, by address.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    /// The reservation holding `address`, if any.
    pub fn owner(&self, address: usize) -> Option<&Reservation> {
        let (_, r) = self.reservations.range(..=address).next_back()?;
        r.contains(address).then_some(r)
    }

    fn owner_base(&self, address: usize) -> Option<usize> {
        self.owner(address).map(|r| r.base)
    }

    /// Whether `[start, end)` overlaps a reservation.
    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        self.reservations
            .range(..end)
            .next_back()
            .is_some_and(|(_, r)| r.end() > start)
    }

    /// The reservation holding all of `[start, end)` (a non-empty range).
    fn holder(&self, start: usize, end: usize) -> Option<usize> {
        let r = self.owner(start)?;
        (end <= r.end()).then_some(r.base)
    }

    /// The page holding `address`, if it is in a reservation.
    pub fn page(&self, address: usize) -> Option<&Page> {
        let r = self.owner(address)?;
        Some(&r.pages[r.page_index(address)])
    }

    /// Checks the base the system chose for a reservation at NULL of
    /// `size` bytes: 64 KiB aligned, not NULL, and free in the model.
    pub fn check_system_base(&self, base: usize, size: usize) -> Result<(), String> {
        let end = round_up(size, PAGE)
            .and_then(|s| base.checked_add(s))
            .ok_or_else(|| format!("reservation at {base:#x} of {size:#x} bytes wraps"))?;
        if base == 0 || !base.is_multiple_of(GRANULE) {
            return Err(format!(
                "the system chose base {base:#x}, not a 64 KiB-aligned address"
            ));
        }
        if self.overlaps(base, end) {
            return Err(format!(
                "the system chose [{base:#x}, {end:#x}), which overlaps a live reservation"
            ));
        }
        Ok(())
    }

    fn insert(
        &mut self,
        base: usize,
        pages: usize,
        alloc_protect: Protection,
        commit: bool,
        watch: bool,
    ) {
        let page = if commit {
            Page::fresh(alloc_protect)
        } else {
            Page::Reserved
        };
        self.next_id += 1;
        self.reservations.insert(
            base,
            Reservation {
                id: self.next_id,
                base,
                alloc_protect,
                pages: vec![page; pages],
                written: watch.then(|| vec![false; pages]),
            },
        );
    }

    fn pages_mut(&mut self, base: usize, start: usize, end: usize) -> &mut [Page] {
        let r = self
            .reservations
            .get_mut(&base)
            .expect("holder() found this reservation");
        let first = (start - base) / PAGE;
        let last = (end - base) / PAGE;
        &mut r.pages[first..last]
    }

    /// `VirtualAlloc(address, size, ty, protect)`.
    ///
    /// `observed` is the engine's answer, used only where the model cannot
    /// know the answer by itself: the base of a reservation at NULL, and
    /// `MEM_RESET_UNDO` over pages whose reset state is [`ResetMark::Unsure`].
    pub fn virtual_alloc(
        &mut self,
        address: usize,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        observed: Option<&Result<usize, Win32Error>>,
    ) -> Verdict<usize> {
        use Verdict::{Expect, Undetermined};
        let Some(kind) = alloc_kind(ty, address) else {
            return Expect(Err(INVALID_PARAMETER));
        };
        if kind == AllocKind::Large {
            return Undetermined("MEM_LARGE_PAGES: the kernel's huge page pool decides");
        }
        if let AllocKind::Reserve { watch: true, .. } = kind
            && size != 0
            && valid_private(protect)
            && !hostmem::unstable::os::write_watch_supported()
        {
            return Expect(Err(Win32Error::NOT_SUPPORTED));
        }
        // ERROR_INVALID_PARAMETER causes other than the type.
        let mut bad_parameter = size == 0;
        match kind {
            AllocKind::Reset if !well_formed(protect) => bad_parameter = true,
            AllocKind::Reset if !valid_private(protect) => {
                return Undetermined("MEM_RESET with PAGE_GUARD or a WRITECOPY protection");
            }
            AllocKind::Reset => {}
            AllocKind::ResetUndo if !valid_private(protect) => {
                return Undetermined("MEM_RESET_UNDO with an invalid protection");
            }
            AllocKind::ResetUndo => {}
            AllocKind::Reserve { .. } | AllocKind::Commit if !valid_private(protect) => {
                bad_parameter = true
            }
            AllocKind::Reserve { .. } | AllocKind::Commit => {}
            AllocKind::Large => unreachable!("answered above"),
        }
        let size_for_span = size.max(1);
        match kind {
            AllocKind::Reserve { commit, watch } if address == 0 => {
                if bad_parameter {
                    return Expect(Err(INVALID_PARAMETER));
                }
                let Some(bytes) = round_up(size, PAGE) else {
                    return Undetermined("size wraps the address space");
                };
                match observed {
                    Some(Ok(base)) => {
                        if let Err(why) = self.check_system_base(*base, size) {
                            return Verdict::Violation(why);
                        }
                        self.insert(*base, bytes / PAGE, protect, commit, watch);
                        Expect(Ok(*base))
                    }
                    _ => Expect(Ok(ANY_BASE)),
                }
            }
            AllocKind::Reserve { commit, watch } => {
                // Rounded down to 64 KiB, the end up to 4 KiB (spec §2).
                let base = round_down(address, GRANULE);
                let Some(end) = address
                    .checked_add(size_for_span)
                    .and_then(|e| round_up(e, PAGE))
                else {
                    return Undetermined("range wraps the address space");
                };
                let conflict = self.overlaps(base, end);
                match (bad_parameter, conflict) {
                    (true, true) => Undetermined("bad parameter and conflicting address"),
                    (true, false) => Expect(Err(INVALID_PARAMETER)),
                    (false, true) => Expect(Err(INVALID_ADDRESS)),
                    (false, false) => {
                        self.insert(base, (end - base) / PAGE, protect, commit, watch);
                        Expect(Ok(base))
                    }
                }
            }
            AllocKind::Large => unreachable!("answered above"),
            AllocKind::Commit | AllocKind::Reset | AllocKind::ResetUndo => {
                let Some((start, end)) = page_span(address, size_for_span) else {
                    return Undetermined("range wraps the address space");
                };
                if address == 0 && kind != AllocKind::Commit {
                    return Undetermined("MEM_RESET / MEM_RESET_UNDO at NULL");
                }
                let holder = self.holder(start, end);
                let address_ok = match (kind, holder) {
                    (_, None) => false,
                    (AllocKind::ResetUndo, Some(base)) => {
                        // Every page committed (spec §2); reset pages are
                        // judged by `reset_undo`.
                        self.pages_mut(base, start, end)
                            .iter()
                            .all(|p| matches!(p, Page::Committed { .. }))
                    }
                    (_, Some(_)) => true,
                };
                match (bad_parameter, address_ok) {
                    (true, false) => return Undetermined("bad parameter and bad address"),
                    (true, true) => return Expect(Err(INVALID_PARAMETER)),
                    (false, false) => return Expect(Err(INVALID_ADDRESS)),
                    (false, true) => {}
                }
                let base = holder.expect("address_ok implies a holder");
                match kind {
                    AllocKind::Commit => self.commit(base, start, end, protect),
                    AllocKind::Reset => self.reset(base, start, end, address),
                    _ => self.reset_undo(base, start, end, address, observed),
                }
            }
        }
    }

    fn commit(
        &mut self,
        base: usize,
        start: usize,
        end: usize,
        protect: Protection,
    ) -> Verdict<usize> {
        let modifier = self.reservations[&base].modifier();
        let base_protect = protect.bits() & BASE_MASK;
        if protect.bits() & MODIFIER_MASK != modifier {
            return Verdict::Undetermined("commit with a modifier other than the allocation's");
        }
        if modifier != 0 && base_protect == PAGE_NOACCESS {
            return Verdict::Undetermined("PAGE_NOACCESS in an allocation with a modifier");
        }
        for page in self.pages_mut(base, start, end) {
            *page = match *page {
                // Newly committed pages read zero.
                Page::Reserved => Page::fresh(protect),
                // Committed pages keep their contents; the protection of the
                // whole range becomes `protect` (spec §2).
                Page::Committed { reset, samples, .. } => Page::Committed {
                    protect,
                    reset: match reset {
                        ResetMark::Clean => ResetMark::Clean,
                        ResetMark::Reset | ResetMark::Unsure => ResetMark::Unsure,
                    },
                    samples,
                },
            };
        }
        // The page-rounded start (spec §2).
        Verdict::Expect(Ok(start))
    }

    fn reset(&mut self, base: usize, start: usize, end: usize, address: usize) -> Verdict<usize> {
        if !address.is_multiple_of(PAGE) {
            return Verdict::Undetermined("MEM_RESET at an address inside a page");
        }
        for page in self.pages_mut(base, start, end) {
            if let Page::Committed { reset, samples, .. } = page {
                *reset = ResetMark::Reset;
                for s in samples.iter_mut() {
                    *s = s.after_reset();
                }
            }
        }
        Verdict::Expect(Ok(address))
    }

    fn reset_undo(
        &mut self,
        base: usize,
        start: usize,
        end: usize,
        address: usize,
        observed: Option<&Result<usize, Win32Error>>,
    ) -> Verdict<usize> {
        if !address.is_multiple_of(PAGE) {
            return Verdict::Undetermined("MEM_RESET_UNDO at an address inside a page");
        }
        let pages = self.pages_mut(base, start, end);
        let mark = |wanted: ResetMark| move |p: &Page| matches!(p, Page::Committed { reset, .. } if *reset == wanted);
        let reset = pages.iter().any(mark(ResetMark::Reset));
        let unsure = pages.iter().any(mark(ResetMark::Unsure));
        // Either way the undo happens: the pages are stable again (README:
        // a failing MEM_RESET_UNDO, as on Windows, undid the reset but
        // cannot promise the contents survived it).
        for page in pages {
            if let Page::Committed { reset, .. } = page {
                *reset = ResetMark::Clean;
            }
        }
        if reset || (unsure && observed == Some(&Err(INVALID_ADDRESS))) {
            return Verdict::Expect(Err(INVALID_ADDRESS));
        }
        Verdict::Expect(Ok(address))
    }

    /// `VirtualFree(address, size, ty)` (spec §3).
    pub fn virtual_free(&mut self, address: usize, size: usize, ty: FreeType) -> Verdict<()> {
        use Verdict::{Expect, Undetermined};
        let page = round_down(address, PAGE);
        let owner = self.owner_base(page);
        let bits = ty.bits();
        if bits == MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER
            || bits == MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS
        {
            // Splitting or joining placeholders: hostmem makes none, so
            // each fails as Windows fails it on memory that is not one
            // (Wine's NtFreeVirtualMemory and kernelbase's VirtualAlloc2
            // test): the range checked first, then size 0 is an invalid
            // parameter and any other range conflicts.
            let Some(base) = owner else {
                return Expect(Err(INVALID_ADDRESS));
            };
            if size == 0 {
                return Expect(Err(if page == base {
                    INVALID_PARAMETER
                } else {
                    INVALID_ADDRESS
                }));
            }
            let past_end = page_span(address, size)
                .is_none_or(|(_, end)| end > self.reservations[&base].end());
            if past_end && bits == MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER {
                // STATUS_UNABLE_TO_FREE_VM.
                return Expect(Err(INVALID_PARAMETER));
            }
            // STATUS_CONFLICTING_ADDRESSES.
            return Expect(Err(INVALID_ADDRESS));
        }
        if bits != MEM_DECOMMIT && bits != MEM_RELEASE {
            return match owner {
                Some(_) => Expect(Err(INVALID_PARAMETER)),
                None => Undetermined("bad free type at an address in no reservation"),
            };
        }
        if bits == MEM_RELEASE {
            return match owner {
                Some(base) if size != 0 && base == page => Expect(Err(INVALID_PARAMETER)),
                _ if size != 0 => Undetermined("MEM_RELEASE with a size, not at a base"),
                // STATUS_MEMORY_NOT_ALLOCATED, STATUS_FREE_VM_NOT_AT_BASE.
                None => Expect(Err(INVALID_ADDRESS)),
                Some(base) if base != page => Expect(Err(INVALID_ADDRESS)),
                Some(base) => {
                    self.reservations.remove(&base);
                    Expect(Ok(()))
                }
            };
        }
        // MEM_DECOMMIT.
        let Some(base) = owner else {
            return Expect(Err(INVALID_ADDRESS));
        };
        let (start, end) = if size == 0 {
            if page != base {
                return Expect(Err(INVALID_ADDRESS));
            }
            (base, self.reservations[&base].end())
        } else {
            let Some(span) = page_span(address, size) else {
                return Undetermined("range wraps the address space");
            };
            span
        };
        if end > self.reservations[&base].end() {
            // STATUS_UNABLE_TO_FREE_VM.
            return Expect(Err(INVALID_PARAMETER));
        }
        for p in self.pages_mut(base, start, end) {
            *p = Page::Reserved;
        }
        Expect(Ok(()))
    }

    /// `VirtualProtect(address, size, new)` (spec §5): the old protection
    /// of the first page.
    pub fn virtual_protect(
        &mut self,
        address: usize,
        size: usize,
        new: Protection,
    ) -> Verdict<Protection> {
        use Verdict::{Expect, Undetermined};
        if size == 0 {
            return Undetermined("VirtualProtect of size 0");
        }
        let Some((start, end)) = page_span(address, size) else {
            return Undetermined("range wraps the address space");
        };
        let holder = self.holder(start, end).filter(|&base| {
            self.pages_mut(base, start, end)
                .iter()
                .all(|p| matches!(p, Page::Committed { .. }))
        });
        let bad_parameter = !valid_private(new);
        let base = match (bad_parameter, holder) {
            (true, None) => return Undetermined("bad protection and bad range"),
            (true, Some(_)) => return Expect(Err(INVALID_PARAMETER)),
            (false, None) => return Expect(Err(INVALID_ADDRESS)),
            (false, Some(base)) => base,
        };
        let modifier = self.reservations[&base].modifier();
        let base_protect = new.bits() & BASE_MASK;
        if modifier != 0 && base_protect == PAGE_NOACCESS {
            return Undetermined("PAGE_NOACCESS in an allocation with a modifier");
        }
        // The allocation's modifier stays, whatever `new` says (Wine:
        // "PAGE_NOCACHE cannot be set per page in recent Windows").
        let effective = Protection::from_bits_retain(base_protect | modifier);
        let pages = self.pages_mut(base, start, end);
        let old = pages[0].protect().expect("all pages are committed");
        for page in pages {
            if let Page::Committed { protect, .. } = page {
                *protect = effective;
            }
        }
        Expect(Ok(old))
    }

    /// `VirtualQuery(address)` for an address in a reservation; `None`
    /// for every other address (free or foreign: the test asks the kernel).
    pub fn virtual_query(&self, address: usize) -> Option<MemoryBasicInformation> {
        let r = self.owner(address)?;
        let first = r.page_index(address);
        let view = r.pages[first].view();
        let run = r.pages[first..]
            .iter()
            .take_while(|p| p.view() == view)
            .count();
        Some(MemoryBasicInformation {
            base_address: round_down(address, PAGE),
            allocation_base: r.base,
            allocation_protect: r.alloc_protect,
            partition_id: 0,
            region_size: run * PAGE,
            state: view.0,
            protect: view.1,
            type_: MemoryType::PRIVATE,
        })
    }

    /// Records that the test wrote `value` at sample `index` of the
    /// committed page holding `address`.
    pub fn write_sample(&mut self, address: usize, index: usize, value: u8) {
        let base = self.owner_base(address).expect("a written page is owned");
        let i = (address - base) / PAGE;
        let r = self.reservations.get_mut(&base).expect("owner exists");
        match &mut r.pages[i] {
            Page::Committed { samples, .. } => samples[index] = Sample::Known(value),
            Page::Reserved => panic!("the test wrote to a reserved page"),
        }
        if let Some(written) = &mut r.written {
            written[i] = true;
        }
    }

    /// The watched reservation holding all of the pages touched by
    /// `[address, address + size)`, and those pages' indices.
    fn watched(&self, address: usize, size: usize) -> Option<(usize, usize, usize)> {
        let (start, end) = page_span(address, size)?;
        let base = self.holder(start, end)?;
        let r = &self.reservations[&base];
        r.written.as_ref()?;
        Some((base, (start - base) / PAGE, (end - base) / PAGE))
    }

    /// `GetWriteWatch(flags, address, size, ..., &count)` with `count =
    /// max`: the written pages, ascending, at most `max`; with
    /// `WRITE_WATCH_FLAG_RESET`, those pages' marks are cleared (W-k32
    /// test_write_watch: unknown flags, size 0, count 0, and a range not
    /// inside one watched region are ERROR_INVALID_PARAMETER).
    pub fn get_write_watch(
        &mut self,
        flags: u32,
        address: usize,
        size: usize,
        max: usize,
    ) -> Verdict<Vec<usize>> {
        if flags & !WRITE_WATCH_FLAG_RESET != 0 || size == 0 || max == 0 {
            return Verdict::Expect(Err(INVALID_PARAMETER));
        }
        let Some((base, first, last)) = self.watched(address, size) else {
            return Verdict::Expect(Err(INVALID_PARAMETER));
        };
        let r = self.reservations.get_mut(&base).expect("holder exists");
        let written = r.written.as_mut().expect("watched");
        let found: Vec<usize> = (first..last).filter(|&i| written[i]).take(max).collect();
        if flags & WRITE_WATCH_FLAG_RESET != 0 {
            for &i in &found {
                written[i] = false;
            }
        }
        Verdict::Expect(Ok(found.into_iter().map(|i| base + i * PAGE).collect()))
    }

    /// `ResetWriteWatch(address, size)`: clears the marks of the pages.
    pub fn reset_write_watch(&mut self, address: usize, size: usize) -> Verdict<()> {
        if size == 0 {
            return Verdict::Expect(Err(INVALID_PARAMETER));
        }
        let Some((base, first, last)) = self.watched(address, size) else {
            return Verdict::Expect(Err(INVALID_PARAMETER));
        };
        let r = self.reservations.get_mut(&base).expect("holder exists");
        r.written.as_mut().expect("watched")[first..last].fill(false);
        Verdict::Expect(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    //! The model against Wine's recorded Windows behaviour, replayed on the
    //! model alone (the engine is compared in `main.rs`).
    use super::*;

    const B: usize = 0x5000_0000;

    fn expect<T: std::fmt::Debug>(v: Verdict<T>) -> Result<T, Win32Error> {
        match v {
            Verdict::Expect(r) => r,
            other => panic!("not determined: {other:?}"),
        }
    }

    fn alloc(m: &mut Model, a: usize, s: usize, t: u32, p: u32) -> Result<usize, Win32Error> {
        expect(m.virtual_alloc(
            a,
            s,
            AllocationType::from_bits_retain(t),
            Protection::from_bits_retain(p),
            None,
        ))
    }

    #[test]
    fn wine_test_virtual_alloc() {
        let mut m = Model::new();
        assert_eq!(alloc(&mut m, 0, 0, MEM_RESERVE, 1), Err(INVALID_PARAMETER));
        assert_eq!(alloc(&mut m, B, 0xfffc, MEM_RESERVE, 1), Ok(B));
        let q = m.virtual_query(B).unwrap();
        assert_eq!(
            (q.region_size, q.state, q.protect),
            (0x10000, MemoryState::RESERVE, Protection::empty())
        );
        let ro = Protection::from_bits_retain(2);
        assert_eq!(
            expect(m.virtual_protect(B, 0xfffc, ro)),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(alloc(&mut m, B, 0x1000, MEM_COMMIT, 1), Ok(B));
        assert_eq!(m.virtual_query(B).unwrap().region_size, 0x1000);
        assert_eq!(
            expect(m.virtual_protect(B, 0xfffc, ro)),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(expect(m.virtual_protect(B, 0x1000, ro)).unwrap().bits(), 1);
        // MEM_RESET of a reserved page succeeds; across the end it fails.
        assert_eq!(
            alloc(&mut m, B + 0x1000, 0x1000, MEM_RESET, 1),
            Ok(B + 0x1000)
        );
        assert_eq!(
            alloc(&mut m, B + 0xf000, 0x2000, MEM_RESET, 1),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(
            alloc(&mut m, B, 0x1000, MEM_COMMIT, 0x12),
            Err(INVALID_PARAMETER)
        );
        let free =
            |m: &mut Model, a, s, t| expect(m.virtual_free(a, s, FreeType::from_bits_retain(t)));
        assert_eq!(free(&mut m, B, 0x10000, 0), Err(INVALID_PARAMETER));
        assert_eq!(free(&mut m, B, 0, 0x10000), Err(INVALID_PARAMETER));
        assert_eq!(free(&mut m, B, 0x10000, MEM_DECOMMIT), Ok(()));
        assert_eq!(free(&mut m, B, 1, MEM_RELEASE), Err(INVALID_PARAMETER));
        assert_eq!(free(&mut m, B, 0, MEM_RELEASE), Ok(()));
        assert!(m.virtual_query(B).is_none());
    }

    #[test]
    fn wine_test_nt_free_virtual_memory() {
        let mut m = Model::new();
        assert_eq!(
            alloc(&mut m, B, 0x10000, MEM_RESERVE | MEM_COMMIT, 0x40),
            Ok(B)
        );
        let free =
            |m: &mut Model, a, s, t| expect(m.virtual_free(a, s, FreeType::from_bits_retain(t)));
        assert_eq!(free(&mut m, B + 0x1fff, 2, MEM_DECOMMIT), Ok(()));
        let q = m.virtual_query(B + 0x1000).unwrap();
        assert_eq!((q.state, q.region_size), (MemoryState::RESERVE, 0x2000));
        assert_eq!(
            free(&mut m, B + 0x1001, 0, MEM_DECOMMIT),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(free(&mut m, B + 0xffe, 0, MEM_DECOMMIT), Ok(()));
        assert_eq!(
            free(&mut m, B + 0x1001, 0, MEM_RELEASE),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(free(&mut m, B + 0xfff, 0, MEM_RELEASE), Ok(()));
        // Conflicts "because of 64k align".
        assert_eq!(
            alloc(&mut m, B, 0x1000, MEM_RESERVE | MEM_COMMIT, 0x40),
            Ok(B)
        );
        assert_eq!(
            alloc(&mut m, B + 0x1000, 0x1000, MEM_RESERVE | MEM_COMMIT, 0x40),
            Err(INVALID_ADDRESS)
        );
    }

    #[test]
    fn wine_test_nocache_belongs_to_the_allocation() {
        let mut m = Model::new();
        let rw_nocache = 0x204;
        assert_eq!(
            alloc(&mut m, B, 0x2000, MEM_RESERVE | MEM_COMMIT, rw_nocache),
            Ok(B)
        );
        let rw = Protection::from_bits_retain(4);
        assert_eq!(
            expect(m.virtual_protect(B, 0x1000, rw)).unwrap().bits(),
            rw_nocache
        );
        let q = m.virtual_query(B).unwrap();
        assert_eq!((q.protect.bits(), q.region_size), (rw_nocache, 0x2000));
        let mut m = Model::new();
        assert_eq!(alloc(&mut m, B, 0x2000, MEM_RESERVE | MEM_COMMIT, 4), Ok(B));
        let ro_nocache = Protection::from_bits_retain(0x202);
        assert_eq!(expect(m.virtual_protect(B, 0x1000, ro_nocache)), Ok(rw));
        assert_eq!(m.virtual_query(B).unwrap().protect.bits(), 2);
    }

    #[test]
    fn reserve_commit_at_an_unaligned_address_commits_from_the_base() {
        // ReactOS' apitest (checked against Windows): 0x50004080, 0x1000
        // gives base 0x50000000 and size 0x6000, all of it committed.
        let mut m = Model::new();
        assert_eq!(
            alloc(&mut m, B + 0x4080, 0x1000, MEM_RESERVE | MEM_COMMIT, 4),
            Ok(B)
        );
        let q = m.virtual_query(B).unwrap();
        assert_eq!((q.state, q.region_size), (MemoryState::COMMIT, 0x6000));
    }

    #[test]
    fn reset_undo_follows_the_reset_marks() {
        let mut m = Model::new();
        assert_eq!(alloc(&mut m, B, 0x4000, MEM_RESERVE | MEM_COMMIT, 4), Ok(B));
        m.write_sample(B, 0, 7);
        assert_eq!(alloc(&mut m, B, 0x4000, MEM_RESET_UNDO, 4), Ok(B));
        assert_eq!(alloc(&mut m, B, 0x1000, MEM_RESET, 4), Ok(B));
        assert!(matches!(
            m.page(B),
            Some(Page::Committed {
                samples: [Sample::OldOrZero(7), ..],
                ..
            })
        ));
        assert_eq!(
            alloc(&mut m, B, 0x4000, MEM_RESET_UNDO, 4),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(
            alloc(&mut m, B + 0x1000, 0x3000, MEM_RESET_UNDO, 4),
            Ok(B + 0x1000)
        );
        let free = FreeType::from_bits_retain(MEM_DECOMMIT);
        assert_eq!(expect(m.virtual_free(B, 0x1000, free)), Ok(()));
        assert_eq!(
            alloc(&mut m, B, 0x1000, MEM_RESET_UNDO, 4),
            Err(INVALID_ADDRESS)
        );
        assert_eq!(alloc(&mut m, B, 0x1000, MEM_COMMIT, 4), Ok(B));
        assert_eq!(alloc(&mut m, B, 0x4000, MEM_RESET_UNDO, 4), Ok(B));
    }

    #[test]
    fn double_faults_are_undetermined() {
        let mut m = Model::new();
        let t = AllocationType::from_bits_retain(MEM_COMMIT);
        let bad = Protection::from_bits_retain(0x06);
        assert!(matches!(
            m.virtual_alloc(B, 0x1000, t, bad, None),
            Verdict::Undetermined(_)
        ));
        let ft = FreeType::from_bits_retain(0);
        assert!(matches!(m.virtual_free(B, 0, ft), Verdict::Undetermined(_)));
    }
}
