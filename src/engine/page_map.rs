//! `PageMap`: the state of every page of one reservation, four bits a page.
//!
//! Each page is a nibble: bits 0–2 hold the state (0 reserved, 1–6
//! committed with one of the six protections private memory can have) and
//! bit 3 says the page was reset (`MEM_RESET`) since it was committed.
//! Sixteen pages share a `u64`, so runs are found and changed a word at a
//! time with masks.

use crate::os::Access;
use crate::win32::Protection;
use std::ops::Range;

/// The protection of a committed page, as the page map stores it: one of
/// the six base protections that private memory can have (the
/// copy-on-write ones are refused for it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum PageProtection {
    /// `PAGE_NOACCESS`.
    NoAccess = 1,
    /// `PAGE_READONLY`.
    ReadOnly = 2,
    /// `PAGE_READWRITE`.
    ReadWrite = 3,
    /// `PAGE_EXECUTE`.
    Execute = 4,
    /// `PAGE_EXECUTE_READ`.
    ExecuteRead = 5,
    /// `PAGE_EXECUTE_READWRITE`.
    ExecuteReadWrite = 6,
}

impl PageProtection {
    /// The page protection for a protection's base, if private memory can
    /// have it.
    pub fn from_protection(protection: Protection) -> Option<Self> {
        Some(match protection.base() {
            Protection::NOACCESS => Self::NoAccess,
            Protection::READONLY => Self::ReadOnly,
            Protection::READWRITE => Self::ReadWrite,
            Protection::EXECUTE => Self::Execute,
            Protection::EXECUTE_READ => Self::ExecuteRead,
            Protection::EXECUTE_READWRITE => Self::ExecuteReadWrite,
            _ => return None,
        })
    }

    /// The Win32 base protection.
    pub fn protection(self) -> Protection {
        match self {
            Self::NoAccess => Protection::NOACCESS,
            Self::ReadOnly => Protection::READONLY,
            Self::ReadWrite => Protection::READWRITE,
            Self::Execute => Protection::EXECUTE,
            Self::ExecuteRead => Protection::EXECUTE_READ,
            Self::ExecuteReadWrite => Protection::EXECUTE_READWRITE,
        }
    }

    /// The kernel access that implements it. (`PAGE_EXECUTE` maps to
    /// execute-only, which x86-64 kernels widen to read-execute.)
    pub fn access(self) -> Access {
        match self {
            Self::NoAccess => Access::empty(),
            Self::ReadOnly => Access::READ,
            Self::ReadWrite => Access::READ | Access::WRITE,
            Self::Execute => Access::EXEC,
            Self::ExecuteRead => Access::READ | Access::EXEC,
            Self::ExecuteReadWrite => Access::READ | Access::WRITE | Access::EXEC,
        }
    }

    fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => Self::NoAccess,
            2 => Self::ReadOnly,
            3 => Self::ReadWrite,
            4 => Self::Execute,
            5 => Self::ExecuteRead,
            6 => Self::ExecuteReadWrite,
            _ => return None,
        })
    }
}

/// The Win32 state of a page inside a reservation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PageState {
    /// `MEM_RESERVE`: address space only; no access.
    Reserved,
    /// `MEM_COMMIT` with a protection.
    Committed(PageProtection),
}

impl PageState {
    /// The state's 3-bit code (0 reserved, 1–6 committed).
    pub(super) fn code(self) -> u64 {
        match self {
            Self::Reserved => 0,
            Self::Committed(p) => p as u64,
        }
    }

    /// The state of a 3-bit code.
    pub(super) fn from_code(code: u64) -> Self {
        PageProtection::from_code(code).map_or(Self::Reserved, Self::Committed)
    }

    /// The kernel access of a page in this state.
    pub fn access(self) -> Access {
        match self {
            Self::Reserved => Access::empty(),
            Self::Committed(p) => p.access(),
        }
    }
}

const PAGES_PER_WORD: usize = 16;
const STATE_BITS: u64 = 0x7777_7777_7777_7777;
const RESET_BITS: u64 = 0x8888_8888_8888_8888;
const NIBBLE_ONES: u64 = 0x1111_1111_1111_1111;

/// Words summed up by one entry of [`PageMap`]'s block summaries: 1,024
/// pages (4 MiB). Tests use two words, so that small maps have several
/// blocks and a partial last one.
const BLOCK_WORDS: usize = if cfg!(test) { 2 } else { 64 };
/// A block summary for a block whose words differ.
const MIXED: u8 = 0xFF;
const BYTE_ONES: u64 = 0x0101_0101_0101_0101;
const BYTE_STATE_BITS: u64 = 0x0707_0707_0707_0707;

/// The nibble every lane of `word` holds, if they all hold one.
#[inline(always)]
fn repeated_nibble(word: u64) -> Option<u8> {
    let nibble = word & 0xF;
    (word == nibble * NIBBLE_ONES).then_some(nibble as u8)
}

/// What a range of pages holds, found by [`PageMap::survey`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Survey {
    /// How many of its pages are committed.
    pub committed: usize,
    /// Whether any of its pages has a state other than the one surveyed
    /// for.
    pub differs: bool,
}

/// A change of pages that all lie in one word of a map that keeps
/// per-page words, and that is not the whole map (so the map stays
/// per-page): what they hold, found before the system calls, and the
/// word they leave, written after ([`PageMap::apply`]). The common
/// change in place (64 KiB or less inside a larger reservation) is one,
/// and working it out is a handful of mask operations, not a survey, a
/// split check and an update each walking the map.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WordChange {
    word: usize,
    new: u64,
    /// How many of the pages are committed.
    pub committed: usize,
    /// Whether any of them has a state other than the one set.
    pub differs: bool,
    /// For a change to reserved: whether taking the pages to no access
    /// would split a kernel mapping (as [`PageMap::revoking_splits`]).
    pub revoke_splits: bool,
}

/// The number of nibble lanes whose bit 3 is set in `lanes` (which has
/// no other bits): the lanes' bits folded into bytes and summed by one
/// multiplication (x86-64's baseline has no `popcnt`, and `count_ones`
/// spends fifteen instructions where this spends seven).
#[inline(always)]
fn lanes_set(lanes: u64) -> usize {
    let ones = lanes >> 3; // bit 0 of each nibble
    let pairs = (ones + (ones >> 4)) & 0x0F0F_0F0F_0F0F_0F0F; // 0..=2 a byte
    (pairs.wrapping_mul(0x0101_0101_0101_0101) >> 56) as usize
}

/// The nibble of `page` in `word`, the word of the map that holds it.
#[inline(always)]
fn nibble_in(word: u64, page: usize) -> u64 {
    (word >> ((page % PAGES_PER_WORD) * 4)) & 0xF
}

/// A page's kernel access as a number: reserved and `PAGE_NOACCESS`
/// pages both have none (0); the other codes each have their own.
#[inline(always)]
fn access_code(code: u64) -> u64 {
    if code <= 1 { 0 } else { code }
}

/// Four bits of state for each page of a reservation.
///
/// A map whose pages all share one nibble is *uniform*: it holds no words
/// (reserving a huge region allocates nothing, and queries of it answer
/// without a scan) until the first change of part of it.
#[derive(Clone, Debug)]
pub struct PageMap {
    /// One word per 16 pages; empty while the map is uniform.
    words: Box<[u64]>,
    /// When the words are more than one block: for each block of
    /// [`BLOCK_WORDS`] words, the nibble all its lanes hold, or [`MIXED`].
    /// A query in a large reservation skips the blocks of its run whole
    /// (a reservation of 256 GiB has 64 Ki of them and 4 Mi words).
    blocks: Box<[u8]>,
    /// While uniform: the word every word would hold.
    fill: u64,
    pages: usize,
}

/// The nibble lanes of pages `lo..hi` of one word (`lo < hi <= 16`).
#[inline]
fn lane_mask(lo: usize, hi: usize) -> u64 {
    debug_assert!(lo < hi && hi <= PAGES_PER_WORD);
    (u64::MAX >> ((PAGES_PER_WORD - hi) * 4)) & (u64::MAX << (lo * 4))
}

/// The first and last words `range` (not empty) meets, and the lanes it
/// starts at in the first and ends before in the last.
#[inline(always)]
fn word_bounds(range: &Range<usize>) -> (usize, usize, usize, usize) {
    debug_assert!(!range.is_empty());
    (
        range.start / PAGES_PER_WORD,
        (range.end - 1) / PAGES_PER_WORD,
        range.start % PAGES_PER_WORD,
        (range.end - 1) % PAGES_PER_WORD + 1,
    )
}

/// The word `range` (not empty) lies in and its lanes there, if it lies
/// in one.
#[inline(always)]
fn one_word(range: &Range<usize>) -> Option<(usize, u64)> {
    let (first, last, lo, hi) = word_bounds(range);
    (first == last).then(|| (first, lane_mask(lo, hi)))
}

/// The lanes of word `w` inside a range whose bounds are
/// `(first, last, lo, hi)` ([`word_bounds`]): the first and last words in
/// part, those between whole.
#[inline(always)]
fn lanes_of(w: usize, first: usize, last: usize, lo: usize, hi: usize) -> u64 {
    let from = if w == first { lo } else { 0 };
    let to = if w == last { hi } else { PAGES_PER_WORD };
    lane_mask(from, to)
}

/// Bit 3 of each lane whose state is committed (state bits non-zero).
fn committed_lanes(word: u64) -> u64 {
    ((word & STATE_BITS) + STATE_BITS) & RESET_BITS
}

impl PageMap {
    /// A map of `pages` pages, all in `initial` state, none reset.
    pub fn new(pages: usize, initial: PageState) -> Self {
        Self {
            words: Box::default(),
            blocks: Box::default(),
            fill: initial.code() * NIBBLE_ONES,
            pages,
        }
    }

    /// Whether every page has the same state and reset mark, with no
    /// per-page words stored.
    pub fn is_uniform(&self) -> bool {
        self.words.is_empty()
    }

    /// The state of every page, while the map is uniform.
    pub fn uniform_state(&self) -> Option<PageState> {
        self.words
            .is_empty()
            .then(|| PageState::from_code(self.fill & 7))
    }

    fn word(&self, w: usize) -> u64 {
        if self.words.is_empty() {
            self.fill
        } else {
            self.words[w]
        }
    }

    /// The number of pages.
    pub fn len(&self) -> usize {
        self.pages
    }

    /// Whether the map has no pages.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    fn nibble(&self, page: usize) -> u64 {
        debug_assert!(page < self.pages);
        nibble_in(self.word(page / PAGES_PER_WORD), page)
    }

    /// The state of `page`.
    pub fn state(&self, page: usize) -> PageState {
        PageState::from_code(self.nibble(page) & 7)
    }

    /// Whether `page` was reset since it was committed.
    pub fn is_reset(&self, page: usize) -> bool {
        self.nibble(page) & 8 != 0
    }

    /// Applies `f(word, lanes)` to the words of `range`; `f` must treat
    /// each nibble lane on its own.
    fn update(&mut self, range: Range<usize>, mut f: impl FnMut(u64, u64) -> u64) {
        debug_assert!(range.end <= self.pages);
        if range.is_empty() {
            return;
        }
        if self.words.is_empty() {
            let changed = f(self.fill, u64::MAX);
            if range.start == 0 && range.end == self.pages {
                self.fill = changed;
                return;
            }
            if changed == self.fill {
                return;
            }
            let words = self.pages.div_ceil(PAGES_PER_WORD);
            self.words = vec![self.fill; words].into_boxed_slice();
            if words > BLOCK_WORDS {
                let block = repeated_nibble(self.fill).unwrap_or(MIXED);
                self.blocks = vec![block; words.div_ceil(BLOCK_WORDS)].into_boxed_slice();
            }
        }
        if let Some((w, mask)) = one_word(&range) {
            // The common change (64 KiB is one word): no loop.
            self.words[w] = f(self.words[w], mask);
            self.word_changed(w);
            return;
        }
        let (first, last, lo, hi) = word_bounds(&range);
        let mut w = first;
        while w <= last {
            if let Some(b) = self.whole_block_at(w, first, last) {
                // A block whose pages are alike changes alike (`f` treats
                // each lane on its own): one word and one summary.
                let word = u64::from(self.blocks[b]) * NIBBLE_ONES;
                let new = f(word, u64::MAX);
                if new != word {
                    self.words[w..w + BLOCK_WORDS].fill(new);
                    self.blocks[b] = (new & 0xF) as u8;
                }
                w += BLOCK_WORDS;
                continue;
            }
            self.words[w] = f(self.words[w], lanes_of(w, first, last, lo, hi));
            if !self.blocks.is_empty() && (w == last || (w + 1).is_multiple_of(BLOCK_WORDS)) {
                self.blocks[w / BLOCK_WORDS] = self.summary_of_block(w / BLOCK_WORDS);
            }
            w += 1;
        }
    }

    /// If word `w` starts a block whose pages are alike and that lies
    /// wholly between words `first` and `last` (exclusive, so that every
    /// lane of it is in the range): the block.
    #[inline(always)]
    fn whole_block_at(&self, w: usize, first: usize, last: usize) -> Option<usize> {
        let b = w / BLOCK_WORDS;
        (w.is_multiple_of(BLOCK_WORDS)
            && w > first
            && w + BLOCK_WORDS <= last
            && self.blocks.get(b).is_some_and(|&s| s != MIXED))
        .then_some(b)
    }

    /// The summary of block `b`, from its words.
    fn summary_of_block(&self, b: usize) -> u8 {
        let start = b * BLOCK_WORDS;
        let words = &self.words[start..(start + BLOCK_WORDS).min(self.words.len())];
        match repeated_nibble(words[0]) {
            Some(nibble) if words.iter().all(|&w| w == words[0]) => nibble,
            _ => MIXED,
        }
    }

    /// Keeps the summary of word `w`'s block true after a change of that
    /// word alone: a uniform block whose word now differs is mixed; a
    /// mixed one is looked at again only if the word is one nibble
    /// repeated (then the block may have become uniform).
    #[inline(always)]
    fn word_changed(&mut self, w: usize) {
        let b = w / BLOCK_WORDS;
        let Some(&block) = self.blocks.get(b) else {
            return;
        };
        let word = self.words[w];
        let summary = if block != MIXED {
            if u64::from(block) * NIBBLE_ONES == word {
                return;
            }
            MIXED
        } else if repeated_nibble(word).is_some() {
            self.summary_of_block(b)
        } else {
            return;
        };
        self.blocks[b] = summary;
    }

    /// Folds `f(acc, word, lanes, repeat)` over the words of `range`:
    /// `repeat` words alike, each with those lanes (more than one for a
    /// block whose pages are alike, read from its summary alone).
    fn fold<T>(
        &self,
        range: Range<usize>,
        init: T,
        mut f: impl FnMut(T, u64, u64, usize) -> T,
    ) -> T {
        debug_assert!(range.end <= self.pages);
        if range.is_empty() {
            return init;
        }
        if let Some((w, mask)) = one_word(&range) {
            return f(init, self.word(w), mask, 1);
        }
        let (first, last, lo, hi) = word_bounds(&range);
        let mut acc = init;
        let mut w = first;
        while w <= last {
            if let Some(b) = self.whole_block_at(w, first, last) {
                // This block and the whole ones after it with the same
                // summary, at once.
                let whole = (last - w) / BLOCK_WORDS;
                let summary = self.blocks[b];
                let alike = self.blocks[b..b + whole]
                    .iter()
                    .take_while(|&&s| s == summary)
                    .count();
                let word = u64::from(summary) * NIBBLE_ONES;
                acc = f(acc, word, u64::MAX, alike * BLOCK_WORDS);
                w += alike * BLOCK_WORDS;
                continue;
            }
            acc = f(acc, self.words[w], lanes_of(w, first, last, lo, hi), 1);
            w += 1;
        }
        acc
    }

    /// Sets the state of the pages in `range`. Pages made committed keep
    /// their reset bit; pages made reserved lose it.
    pub fn set_state(&mut self, range: Range<usize>, state: PageState) {
        let pattern = state.code() * NIBBLE_ONES;
        let touched = match state {
            PageState::Reserved => u64::MAX,
            PageState::Committed(_) => STATE_BITS,
        };
        if range.start == 0 && range.end == self.pages {
            // Every page in one state: uniform again, unless committed
            // pages keep differing reset marks.
            let marked = match state {
                PageState::Reserved => 0,
                PageState::Committed(_) if self.words.is_empty() => self.fill & RESET_BITS,
                PageState::Committed(_) => {
                    let any = self.words.iter().fold(0, |acc, w| acc | (w & RESET_BITS));
                    let all = self.words.iter().fold(RESET_BITS, |acc, w| acc & w);
                    if any != 0 && all != RESET_BITS {
                        u64::MAX // differing marks: stays per page
                    } else {
                        any
                    }
                }
            };
            if marked != u64::MAX {
                self.words = Box::default();
                self.blocks = Box::default();
                self.fill = pattern | marked;
                return;
            }
        }
        self.update(range, |word, mask| {
            let mask = mask & touched;
            (word & !mask) | (pattern & mask)
        });
    }

    /// Marks the committed pages of `range` as reset.
    pub fn mark_reset(&mut self, range: Range<usize>) {
        self.update(range, |word, mask| word | (committed_lanes(word) & mask));
    }

    /// Clears the reset mark of the pages in `range`.
    pub fn clear_reset(&mut self, range: Range<usize>) {
        self.update(range, |word, mask| word & !(RESET_BITS & mask));
    }

    /// How many pages of `range` are committed.
    pub fn committed_pages(&self, range: Range<usize>) -> usize {
        if self.words.is_empty() {
            return if committed_lanes(self.fill) != 0 {
                range.len()
            } else {
                0
            };
        }
        self.fold(range, 0, |n, word, mask, repeat| {
            n + (committed_lanes(word) & mask).count_ones() as usize * repeat
        })
    }

    /// What the pages of `range` hold, for a change of them all to
    /// `state`: in one pass over the words, how many are committed and
    /// whether any has another state (and so another kernel access).
    pub fn survey(&self, range: Range<usize>, state: PageState) -> Survey {
        let pattern = state.code() * NIBBLE_ONES;
        if self.words.is_empty() {
            let committed = if committed_lanes(self.fill) != 0 {
                range.len()
            } else {
                0
            };
            let differs = !range.is_empty() && (self.fill ^ pattern) & 7 != 0;
            return Survey { committed, differs };
        }
        self.fold(
            range,
            Survey::default(),
            |Survey { committed, differs }, word, mask, repeat| Survey {
                committed: committed
                    + (committed_lanes(word) & mask).count_ones() as usize * repeat,
                differs: differs || (word ^ pattern) & STATE_BITS & mask != 0,
            },
        )
    }

    /// Whether taking every page of `pages` (not empty) to no access
    /// would split a kernel mapping: where an edge of the range has pages
    /// whose access changes, and the page across that edge has the same
    /// access (one mapping holds both) or is past the map's end (another
    /// reservation, which the kernel may have merged with this one).
    /// Inside the range, runs of different access are mappings of their
    /// own.
    pub fn revoking_splits(&self, pages: Range<usize>) -> bool {
        debug_assert!(!pages.is_empty() && pages.end <= self.pages);
        self.splits_on_revoke(&pages, |page| self.nibble(page))
    }

    /// The rule of [`revoking_splits`](Self::revoking_splits), with each
    /// page's nibble read by `nibble`.
    #[inline(always)]
    fn splits_on_revoke(&self, pages: &Range<usize>, nibble: impl Fn(usize) -> u64) -> bool {
        let access = |page: usize| access_code(nibble(page) & 7);
        let first = access(pages.start);
        let last = access(pages.end - 1);
        let at_start = first != 0 && (pages.start == 0 || access(pages.start - 1) == first);
        let at_end = last != 0 && (pages.end == self.pages || access(pages.end) == last);
        at_start || at_end
    }

    /// The change of `pages` (not empty) to `state`, if it is a
    /// [`WordChange`]: the map keeps words, the pages lie in one, and they
    /// are not all of the map's.
    #[inline(always)]
    pub fn word_change(&self, pages: &Range<usize>, state: PageState) -> Option<WordChange> {
        debug_assert!(!pages.is_empty() && pages.end <= self.pages);
        if self.words.is_empty() || (pages.start == 0 && pages.end == self.pages) {
            return None;
        }
        let (w, mask) = one_word(pages)?;
        let word = *self.words.get(w)?;
        let pattern = state.code() * NIBBLE_ONES;
        let committed = lanes_set(committed_lanes(word) & mask);
        let differs = (word ^ pattern) & STATE_BITS & mask != 0;
        let (touched, revoke_splits) = match state {
            PageState::Reserved => (
                mask,
                committed > 0 && self.revoking_splits_at(pages, w, word),
            ),
            PageState::Committed(_) => (mask & STATE_BITS, false),
        };
        Some(WordChange {
            word: w,
            new: (word & !touched) | (pattern & touched),
            committed,
            differs,
            revoke_splits,
        })
    }

    /// [`revoking_splits`](Self::revoking_splits) for pages inside word
    /// `w` (which holds `word`) of a map that keeps words.
    #[inline(always)]
    fn revoking_splits_at(&self, pages: &Range<usize>, w: usize, word: u64) -> bool {
        self.splits_on_revoke(
            pages,
            #[inline(always)]
            |page| {
                let word = if page / PAGES_PER_WORD == w {
                    word
                } else {
                    self.words[page / PAGES_PER_WORD]
                };
                nibble_in(word, page)
            },
        )
    }

    /// Writes a [`WordChange`] that [`word_change`](Self::word_change)
    /// worked out on this map, unchanged since.
    #[inline(always)]
    pub fn apply(&mut self, change: &WordChange) {
        self.words[change.word] = change.new;
        self.word_changed(change.word);
    }

    /// Whether any page of `range` is marked reset.
    pub fn any_reset(&self, range: Range<usize>) -> bool {
        if self.words.is_empty() {
            return !range.is_empty() && self.fill & RESET_BITS != 0;
        }
        self.fold(range, false, |any, word, mask, _| {
            any || word & RESET_BITS & mask != 0
        })
    }

    /// The end of the run of pages from `page` that share its state (reset
    /// marks aside), not past `limit`.
    pub fn run_end(&self, page: usize, limit: usize) -> usize {
        debug_assert!(page < limit && limit <= self.pages);
        if self.words.is_empty() {
            return limit;
        }
        let code = self.nibble(page) & 7;
        let pattern = code * NIBBLE_ONES;
        let (first, last, lo, hi) = word_bounds(&(page..limit));
        let mut w = first;
        while w <= last {
            // Whole blocks before the last word whose pages all have the
            // state (reset marks aside) are skipped at once.
            if w.is_multiple_of(BLOCK_WORDS) && !self.blocks.is_empty() {
                // MIXED's low three bits are 7, which is no state's code,
                // so `& 7 == code` also stops at a mixed block; eight
                // summaries are compared at once.
                let mut b = w / BLOCK_WORDS;
                let end = last / BLOCK_WORDS;
                while b + 8 <= end {
                    let eight = u64::from_le_bytes(self.blocks[b..b + 8].try_into().unwrap());
                    if eight & BYTE_STATE_BITS != code * BYTE_ONES {
                        break;
                    }
                    b += 8;
                }
                while b < end && u64::from(self.blocks[b] & 7) == code {
                    b += 1;
                }
                w = w.max(b * BLOCK_WORDS);
            }
            let diff = (self.words[w] ^ pattern) & STATE_BITS & lanes_of(w, first, last, lo, hi);
            if diff != 0 {
                return w * PAGES_PER_WORD + diff.trailing_zeros() as usize / 4;
            }
            w += 1;
        }
        limit
    }

    /// The runs of equal state in `range`, in order.
    pub fn runs(
        &self,
        range: Range<usize>,
    ) -> impl Iterator<Item = (Range<usize>, PageState)> + '_ {
        let mut at = range.start;
        std::iter::from_fn(move || {
            if at >= range.end {
                return None;
            }
            let end = self.run_end(at, range.end);
            let run = (at..end, self.state(at));
            at = end;
            Some(run)
        })
    }

    /// The runs of committed pages in `range` that are marked reset.
    pub fn reset_runs(&self, range: Range<usize>) -> Vec<Range<usize>> {
        if self.words.is_empty() {
            return if self.fill & RESET_BITS != 0 && !range.is_empty() {
                vec![range]
            } else {
                Vec::new()
            };
        }
        let mut runs: Vec<Range<usize>> = Vec::new();
        for page in range.filter(|&p| self.is_reset(p)) {
            match runs.last_mut() {
                Some(last) if last.end == page => last.end = page + 1,
                _ => runs.push(page..page + 1),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RW: PageState = PageState::Committed(PageProtection::ReadWrite);
    const RO: PageState = PageState::Committed(PageProtection::ReadOnly);

    #[test]
    fn runs_split_and_merge() {
        let mut map = PageMap::new(40, PageState::Reserved);
        assert_eq!(map.run_end(0, 40), 40);
        map.set_state(3..20, RW);
        map.set_state(10..12, RO);
        let runs: Vec<_> = map.runs(0..40).collect();
        assert_eq!(
            runs,
            vec![
                (0..3, PageState::Reserved),
                (3..10, RW),
                (10..12, RO),
                (12..20, RW),
                (20..40, PageState::Reserved)
            ]
        );
        assert_eq!(map.committed_pages(0..40), 17);
        map.set_state(10..12, RW);
        assert_eq!(map.run_end(3, 40), 20);
        assert_eq!(map.run_end(5, 15), 15);
    }

    #[test]
    fn reset_marks_only_committed_pages_and_survive_recommit() {
        let mut map = PageMap::new(33, PageState::Reserved);
        map.set_state(16..33, RW);
        map.mark_reset(0..33);
        assert!(!map.any_reset(0..16));
        assert!(map.any_reset(16..17));
        assert_eq!(map.reset_runs(0..33), vec![16..33]);
        map.set_state(20..21, RO);
        assert!(map.is_reset(20), "a commit keeps the mark");
        assert_eq!(map.run_end(16, 33), 20, "reset marks do not split runs");
        map.set_state(16..33, PageState::Reserved);
        assert!(!map.any_reset(0..33), "a decommit clears the mark");
    }

    #[test]
    fn lanes_set_counts_every_pattern_of_marks() {
        for pattern in 0u64..1 << 16 {
            // Bit k of the pattern marks lane k (its bit 3).
            let lanes = (0..16)
                .filter(|k| pattern >> k & 1 == 1)
                .fold(0u64, |acc, k| acc | 8 << (4 * k));
            assert_eq!(
                lanes_set(lanes),
                pattern.count_ones() as usize,
                "{pattern:#x}"
            );
        }
    }

    fn state_strategy() -> impl Strategy<Value = PageState> {
        (0u64..7).prop_map(PageState::from_code)
    }

    proptest! {
        #[test]
        fn matches_a_byte_per_page_model(
            pages in 1usize..300,
            initial in state_strategy(),
            ops in proptest::collection::vec((0usize..300, 0usize..300, state_strategy(), 0u8..4, any::<bool>()), 1..30)
        ) {
            let mut map = PageMap::new(pages, initial);
            let mut model = vec![(initial, false); pages];
            prop_assert!(map.is_uniform());
            for (a, b, state, op, whole) in ops {
                let (lo, hi) = if whole {
                    // The whole map: the lazy (uniform) form's own case.
                    (0, pages)
                } else {
                    let lo = a.min(b) % pages;
                    (lo, ((a.max(b) % pages) + 1).max(lo + 1).min(pages))
                };
                if op == 3 {
                    map.clear_reset(lo..hi);
                    for m in &mut model[lo..hi] {
                        m.1 = false;
                    }
                } else if op == 2 {
                    map.mark_reset(lo..hi);
                    for m in &mut model[lo..hi] {
                        if m.0 != PageState::Reserved { m.1 = true; }
                    }
                } else {
                    // The one-word change, worked out before, must agree
                    // with the model and leave the map set_state leaves.
                    let before = &model[lo..hi];
                    let change = map.word_change(&(lo..hi), state);
                    let one_word = lo / PAGES_PER_WORD == (hi - 1) / PAGES_PER_WORD;
                    prop_assert_eq!(
                        change.is_some(),
                        !map.is_uniform() && one_word && (lo, hi) != (0, pages)
                    );
                    let mut changed = map.clone();
                    if let Some(change) = change {
                        let part = before.iter().filter(|m| m.0 != PageState::Reserved).count();
                        prop_assert_eq!(change.committed, part);
                        prop_assert_eq!(change.differs, before.iter().any(|m| m.0 != state));
                        let splits = map.revoking_splits(lo..hi);
                        prop_assert_eq!(
                            change.revoke_splits,
                            state == PageState::Reserved && part > 0 && splits
                        );
                        changed.apply(&change);
                    }
                    map.set_state(lo..hi, state);
                    if change.is_some() {
                        prop_assert_eq!(&changed.words, &map.words);
                    }
                    for m in &mut model[lo..hi] {
                        *m = (state, if state == PageState::Reserved { false } else { m.1 });
                    }
                }
                // Each block's summary is what its words say (whatever
                // the change: one word, several, the whole map).
                for b in 0..map.blocks.len() {
                    prop_assert_eq!(map.blocks[b], map.summary_of_block(b), "block {}", b);
                }
                prop_assert_eq!(
                    map.blocks.is_empty(),
                    map.words.len() <= BLOCK_WORDS,
                    "blocks exactly when the words are more than one block"
                );
                for (p, m) in model.iter().enumerate() {
                    prop_assert_eq!(map.state(p), m.0);
                    prop_assert_eq!(map.is_reset(p), m.1);
                    let end = (p..pages).find(|&q| model[q].0 != m.0).unwrap_or(pages);
                    prop_assert_eq!(map.run_end(p, pages), end);
                }
                for p in lo..hi {
                    let end = (p..hi).find(|&q| model[q].0 != model[p].0).unwrap_or(hi);
                    prop_assert_eq!(map.run_end(p, hi), end, "from {} to {}", p, hi);
                }
                let committed = model.iter().filter(|m| m.0 != PageState::Reserved).count();
                prop_assert_eq!(map.committed_pages(0..pages), committed);
                let part = model[lo..hi].iter().filter(|m| m.0 != PageState::Reserved).count();
                prop_assert_eq!(map.committed_pages(lo..hi), part);
                prop_assert_eq!(map.any_reset(lo..hi), model[lo..hi].iter().any(|m| m.1));
                let survey = map.survey(lo..hi, state);
                prop_assert_eq!(survey.committed, part);
                prop_assert_eq!(survey.differs, model[lo..hi].iter().any(|m| m.0 != state));
                let access = |p: usize| model[p].0.access();
                let (first, last) = (access(lo), access(hi - 1));
                let splits = (!first.is_empty() && (lo == 0 || access(lo - 1) == first))
                    || (!last.is_empty() && (hi == pages || access(hi) == last));
                prop_assert_eq!(map.revoking_splits(lo..hi), splits);
                let resets: Vec<usize> = (0..pages).filter(|&p| model[p].1).collect();
                let from_runs: Vec<usize> = map.reset_runs(0..pages).into_iter().flatten().collect();
                prop_assert_eq!(from_runs, resets);
                let first = model[0];
                if model.iter().all(|&m| m == first) && map.is_uniform() {
                    prop_assert_eq!(map.run_end(0, pages), pages);
                }
                if whole && op < 2 && state == PageState::Reserved {
                    prop_assert!(map.is_uniform(), "decommitting the whole map makes it uniform again");
                }
            }
        }
    }
}
