//! The differential driver shared by the property test (`main.rs`), the
//! fuzz target `engine_vs_model` (`fuzz/fuzz_targets/engine_vs_model.rs`)
//! and the replay of the fuzzer's findings (`tests/fuzz_regressions.rs`):
//! abstract operations, their translation into concrete calls against a
//! fresh `AddressSpace` and the reference model, and every comparison
//! (results, errors, `VirtualQuery`, `/proc/self/maps`, sampled bytes).
//! See `main.rs` for what is checked and why.
//!
//! Each including crate declares `mod reference;` (this directory's
//! `reference.rs`) beside `mod harness;`. Each uses only part of this
//! file (the property test's trace and statistics, the fuzzer's plain
//! run), hence the `dead_code` allowance.
#![allow(dead_code)]

use crate::reference::{self, GRANULE, Model, PAGE, Page, SAMPLE_OFFSETS, SAMPLES, Verdict};
use hostmem::unstable::engine::AddressSpace;
use hostmem::win32::{
    AllocationType, FreeType, MemoryBasicInformation, MemoryState, MemoryType, Protection,
    Win32Error,
};
use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why a case failed: the disagreement, in words.
pub type Failure = String;

// ---------------------------------------------------------------------------
// Fixtures: the arena and the test's own foreign mappings.

/// The arena for fixed-address reservations.
const ARENA_SIZE: usize = 64 << 20;
/// Fixed-address reservations start in the first `ARENA_SLOTS` granules
/// of the arena (few, so that they collide often).
pub const ARENA_SLOTS: usize = 48;
/// Size of each of the test's own foreign mappings.
const FOREIGN_MAP: usize = 0x1_0000;
/// A byte pattern in foreign memory that must survive every call.
const CANARY: u8 = 0xA5;

struct Fixtures {
    /// Base of the (unmapped) arena.
    arena: usize,
    /// A `PROT_NONE` anonymous mapping of the test's.
    guard_map: usize,
    /// A read-write anonymous mapping of the test's, filled with `CANARY`.
    rw_map: usize,
}

/// Serialises the tests of this binary: they look at the whole address
/// space, and a mapping made by one must not surprise another.
pub static SERIAL: Mutex<()> = Mutex::new(());
static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
/// Read-only data of the test binary, a foreign target.
static RODATA: [u8; 256] = [CANARY; 256];

fn fixtures() -> &'static Fixtures {
    FIXTURES.get_or_init(|| {
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE;
        // SAFETY: a fresh anonymous mapping where the kernel chooses
        // replaces nothing; it is unmapped again at once and never used.
        let probe = unsafe {
            let p = mmap_anonymous(std::ptr::null_mut(), ARENA_SIZE, ProtFlags::empty(), flags)
                .expect("probe mapping");
            munmap(p, ARENA_SIZE).expect("unmap probe");
            p as usize
        };
        let hint = (probe / 2) & !(GRANULE - 1);
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping;
        // the arena is unmapped at once, so it is free address space.
        let arena = unsafe {
            let p = match mmap_anonymous(
                hint as *mut _,
                ARENA_SIZE,
                ProtFlags::empty(),
                flags | MapFlags::FIXED_NOREPLACE,
            ) {
                Ok(p) => p,
                Err(_) => {
                    mmap_anonymous(std::ptr::null_mut(), ARENA_SIZE, ProtFlags::empty(), flags)
                        .expect("arena mapping")
                }
            };
            munmap(p, ARENA_SIZE).expect("unmap arena");
            p as usize
        };
        assert!(
            arena.is_multiple_of(GRANULE),
            "arena must be 64 KiB aligned"
        );
        // SAFETY: fresh anonymous mappings where the kernel chooses; they
        // stay mapped for the life of the process and are only read (and
        // written here, before anyone else knows them).
        let (guard_map, rw_map) = unsafe {
            let g = mmap_anonymous(std::ptr::null_mut(), FOREIGN_MAP, ProtFlags::empty(), flags)
                .expect("guard mapping");
            let rw = mmap_anonymous(
                std::ptr::null_mut(),
                FOREIGN_MAP,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
            .expect("rw mapping");
            std::ptr::write_bytes(rw.cast::<u8>(), CANARY, FOREIGN_MAP);
            (g as usize, rw as usize)
        };
        Fixtures {
            arena,
            guard_map,
            rw_map,
        }
    })
}

// ---------------------------------------------------------------------------
// The kernel's view.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Vma {
    start: usize,
    end: usize,
    perms: String,
    path: String,
}

fn read_maps() -> Vec<Vma> {
    let text = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.to_string();
            let path = fields.nth(3).unwrap_or("").to_string();
            Some(Vma {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                perms,
                path,
            })
        })
        .collect()
}

fn vma_at(maps: &[Vma], address: usize) -> Option<&Vma> {
    let i = maps.partition_point(|v| v.end <= address);
    maps.get(i).filter(|v| v.start <= address)
}

fn next_vma_start(maps: &[Vma], address: usize) -> Option<usize> {
    maps.iter().find(|v| v.start > address).map(|v| v.start)
}

fn overlapping(maps: &[Vma], start: usize, end: usize) -> Vec<&Vma> {
    maps.iter()
        .filter(|v| v.start < end && v.end > start)
        .collect()
}

/// What `/proc/self/maps` shows for a page of this protection (`None`:
/// reserved).
fn kernel_perms(p: Option<Protection>) -> &'static str {
    match p.map(|p| p.bits() & 0xff) {
        None | Some(0x01) => "---p",
        Some(0x02) => "r--p",
        Some(0x04) => "rw-p",
        Some(0x10) => "--xp",
        Some(0x20) => "r-xp",
        Some(0x40) => "rwxp",
        Some(_) => "????",
    }
}

fn readable(p: Protection) -> bool {
    matches!(p.bits() & 0xff, 0x02 | 0x04 | 0x20 | 0x40)
}

fn writable(p: Protection) -> bool {
    matches!(p.bits() & 0xff, 0x04 | 0x40)
}

// ---------------------------------------------------------------------------
// Statistics.

#[derive(Default)]
struct Stats {
    cases: AtomicU64,
    steps: AtomicU64,
    calls: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    undetermined: AtomicU64,
    unreachable: AtomicU64,
    foreign_conflicts: AtomicU64,
    foreign_calls: AtomicU64,
    queries: AtomicU64,
    writes: AtomicU64,
    reads: AtomicU64,
}

static STATS: Stats = Stats {
    cases: AtomicU64::new(0),
    steps: AtomicU64::new(0),
    calls: AtomicU64::new(0),
    succeeded: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    undetermined: AtomicU64::new(0),
    unreachable: AtomicU64::new(0),
    foreign_conflicts: AtomicU64::new(0),
    foreign_calls: AtomicU64::new(0),
    queries: AtomicU64::new(0),
    writes: AtomicU64::new(0),
    reads: AtomicU64::new(0),
};

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The statistics so far, and how often each kind of call ended how (the
/// coverage of the run), one line each.
pub fn summary() -> String {
    let s = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let st = &STATS;
    let mut text = format!(
        "{} sequence runs: {} steps, {} engine calls ({} succeeded, {} failed as expected), \
         {} skipped as undetermined, {} skipped as unreachable, {} fixed reservations blocked \
         by foreign mappings, {} foreign calls, {} queries, {} writes, {} sampled reads",
        s(&st.cases),
        s(&st.steps),
        s(&st.calls),
        s(&st.succeeded),
        s(&st.failed),
        s(&st.undetermined),
        s(&st.unreachable),
        s(&st.foreign_conflicts),
        s(&st.foreign_calls),
        s(&st.queries),
        s(&st.writes),
        s(&st.reads),
    );
    for (what, n) in COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        text.push_str(&format!("\n  {n:>8}  {what}"));
    }
    text
}

/// How often each kind of call ended how: the coverage of the run.
static COVERAGE: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn cover(call: &Call, outcome: &Outcome) {
    let kind = match *call {
        Call::Alloc { address, ty, .. } => {
            let t = ty.bits();
            let name = match t & !TOP_DOWN {
                RESERVE => "reserve",
                x if x == RESERVE | COMMIT => "reserve+commit",
                COMMIT if address == 0 => "reserve+commit",
                COMMIT => "commit",
                _ if t == RESET => "reset",
                _ if t == RESET_UNDO => "reset-undo",
                _ => "alloc(bad type)",
            };
            let at = if address == 0 { "@NULL" } else { "" };
            format!("VirtualAlloc {name}{at}")
        }
        Call::Free { ty, .. } => match ty.bits() {
            DECOMMIT => "VirtualFree decommit".to_string(),
            RELEASE => "VirtualFree release".to_string(),
            _ => "VirtualFree (bad type)".to_string(),
        },
        Call::Protect { .. } => "VirtualProtect".to_string(),
        Call::GetWriteWatch { flags, .. } => match flags {
            0 => "GetWriteWatch".to_string(),
            1 => "GetWriteWatch reset".to_string(),
            _ => "GetWriteWatch (bad flags)".to_string(),
        },
        Call::ResetWriteWatch { .. } => "ResetWriteWatch".to_string(),
    };
    let how = match outcome {
        Outcome::Addr(Err(e))
        | Outcome::Unit(Err(e))
        | Outcome::Prot(Err(e))
        | Outcome::Pages(Err(e)) => format!("{e:?}"),
        Outcome::Pages(Ok((0, _))) => "ok, none written".to_string(),
        _ => "ok".to_string(),
    };
    let mut map = COVERAGE.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(format!("{kind}: {how}")).or_default() += 1;
}

// ---------------------------------------------------------------------------
// Abstract operations (what the property test generates and shrinks, and
// what the fuzzer decodes its input into).

/// Where an operation aims. Reservations are named by recency: `idx` 0
/// is the most recently made live one (modulo their number), so that
/// deleting an unrelated earlier operation while shrinking keeps the
/// meaning of the later ones.
#[derive(Clone, Copy, Debug)]
pub enum Loc {
    /// Reservation `idx`, page `page` modulo (its pages + 2) — so a few
    /// land at or past the end — plus `byte`. With no live reservation:
    /// arena slot `idx`.
    Live {
        idx: usize,
        page: usize,
        byte: usize,
    },
    /// Reservation `idx`, the start of its page run `run` (modulo their
    /// number), plus `byte`.
    Run { idx: usize, run: usize, byte: usize },
    /// Arena granule `slot`, plus `byte`.
    Arena { slot: usize, byte: usize },
}

/// A size.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    Pages(usize),
    Bytes(usize),
    Zero,
    /// Up to the end of the reservation holding the address.
    ToEnd,
    /// Up to the end of the page run holding the address.
    RunEnd,
}

/// The valid base protections for private memory.
pub const BASES: [u32; 6] = [0x01, 0x02, 0x04, 0x10, 0x20, 0x40];
/// `PAGE_NOCACHE`, `PAGE_WRITECOMBINE`.
pub const MODIFIERS: [u32; 2] = [0x200, 0x400];
/// The allocation-type bits the grammars combine: `MEM_COMMIT` ..
/// `MEM_LARGE_PAGES`, and `AT_ROUND_TO_PAGE` (0x40000000).
pub const ALLOCATION_TYPE_BITS: [u32; 12] = [
    0x1000,
    0x2000,
    0x4000,
    0x8000,
    0x1_0000,
    0x8_0000,
    0x10_0000,
    0x20_0000,
    0x40_0000,
    0x100_0000,
    0x2000_0000,
    0x4000_0000,
];
/// The free types the grammars pick most: the valid ones, their
/// combinations and near misses.
pub const FREE_TYPES: [u32; 10] = [
    0, 0x4000, 0x8000, 0xC000, 0x1_0000, 0x1000, 0x2000, 0x4001, 0x8001, 0x8002,
];

/// A protection.
#[derive(Clone, Copy, Debug)]
pub enum Prot {
    /// `BASES[i]`.
    Base(usize),
    /// `BASES[i]` with the target allocation's modifier (if any).
    Inherit(usize),
    /// `BASES[i] | MODIFIERS[m]`.
    Modified(usize, usize),
    /// Any bits.
    Raw(u32),
}

/// A target that is not the engine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    Stack,
    Heap,
    Static,
    Code,
    GuardMap,
    RwMap,
    /// Address 0 (queries only).
    Null,
    /// Above the user address space (queries only).
    Kernel,
}

/// A call at a foreign target; all parameters valid.
#[derive(Clone, Copy, Debug)]
pub enum ForeignCall {
    Query,
    Reserve { size: usize, commit: bool },
    Commit { size: usize, base: usize },
    Reset { size: usize },
    ResetUndo { size: usize },
    Decommit { size: usize },
    Release,
    Protect { size: usize, base: usize },
}

#[derive(Clone, Debug)]
pub enum Op {
    ReserveNull {
        len: Len,
        commit: bool,
        top_down: bool,
        prot: Prot,
    },
    ReserveFixed {
        loc: Loc,
        len: Len,
        commit: bool,
        prot: Prot,
    },
    Commit {
        loc: Loc,
        len: Len,
        prot: Prot,
        top_down: bool,
    },
    Reset {
        loc: Loc,
        len: Len,
        prot: Prot,
    },
    ResetUndo {
        loc: Loc,
        len: Len,
    },
    Decommit {
        loc: Loc,
        len: Len,
    },
    Release {
        idx: usize,
        offset: usize,
        size: usize,
    },
    Protect {
        loc: Loc,
        len: Len,
        prot: Prot,
    },
    Query {
        loc: Loc,
    },
    /// Write `value` at sample `sample` of the `pick`-th writable
    /// committed page.
    Write {
        pick: usize,
        sample: usize,
        value: u8,
    },
    /// `VirtualAlloc` with any type and protection bits (NULL if no loc).
    RawAlloc {
        loc: Option<Loc>,
        len: Len,
        ty: u32,
        prot: u32,
    },
    /// `VirtualFree` with any type bits.
    RawFree {
        loc: Loc,
        len: Len,
        ty: u32,
    },
    Foreign {
        target: Foreign,
        call: ForeignCall,
    },
    /// `VirtualAlloc(NULL, len, MEM_RESERVE [| MEM_COMMIT] |
    /// MEM_WRITE_WATCH, prot)`.
    ReserveWatched {
        len: Len,
        commit: bool,
        prot: Prot,
    },
    /// `GetWriteWatch(flags, loc, len, ..., &count)` with `count = max`
    /// (1..=[`MAX_WATCH`]); `flags` 0, `WRITE_WATCH_FLAG_RESET` or raw bits.
    GetWriteWatch {
        loc: Loc,
        len: Len,
        max: usize,
        flags: u32,
    },
    /// `ResetWriteWatch(loc, len)`.
    ResetWriteWatch {
        loc: Loc,
        len: Len,
    },
}

/// The most pages one generated `GetWriteWatch` asks for.
pub const MAX_WATCH: usize = 8;

/// The answer of a `GetWriteWatch`: how many pages, and the pages.
pub type WatchList = (usize, [usize; MAX_WATCH]);

fn watch_list(pages: &[usize]) -> WatchList {
    let mut list = [0; MAX_WATCH];
    list[..pages.len()].copy_from_slice(pages);
    (pages.len(), list)
}

// ---------------------------------------------------------------------------
// Concrete calls.

#[derive(Clone, Copy, Debug)]
enum Call {
    Alloc {
        address: usize,
        size: usize,
        ty: AllocationType,
        protect: Protection,
    },
    Free {
        address: usize,
        size: usize,
        ty: FreeType,
    },
    Protect {
        address: usize,
        size: usize,
        new: Protection,
    },
    GetWriteWatch {
        flags: u32,
        address: usize,
        size: usize,
        max: usize,
    },
    ResetWriteWatch {
        address: usize,
        size: usize,
    },
}

/// A result of either kind, for comparing and printing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Addr(Result<usize, Win32Error>),
    Unit(Result<(), Win32Error>),
    Prot(Result<Protection, Win32Error>),
    Pages(Result<WatchList, Win32Error>),
}

impl Outcome {
    fn is_ok(&self) -> bool {
        match self {
            Outcome::Addr(r) => r.is_ok(),
            Outcome::Unit(r) => r.is_ok(),
            Outcome::Prot(r) => r.is_ok(),
            Outcome::Pages(r) => r.is_ok(),
        }
    }
}

/// A [`Verdict`] of any call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Judged {
    Expect(Outcome),
    Undetermined(&'static str),
    Violation(String),
}

fn map_verdict<T>(v: Verdict<T>, f: impl FnOnce(Result<T, Win32Error>) -> Outcome) -> Judged {
    match v {
        Verdict::Expect(r) => Judged::Expect(f(r)),
        Verdict::Undetermined(why) => Judged::Undetermined(why),
        Verdict::Violation(why) => Judged::Violation(why),
    }
}

fn model_call(model: &mut Model, call: &Call, observed: Option<&Outcome>) -> Judged {
    match *call {
        Call::Alloc {
            address,
            size,
            ty,
            protect,
        } => {
            let observed = match observed {
                Some(Outcome::Addr(r)) => Some(r),
                _ => None,
            };
            map_verdict(
                model.virtual_alloc(address, size, ty, protect, observed),
                Outcome::Addr,
            )
        }
        Call::Free { address, size, ty } => {
            map_verdict(model.virtual_free(address, size, ty), Outcome::Unit)
        }
        Call::Protect { address, size, new } => {
            map_verdict(model.virtual_protect(address, size, new), Outcome::Prot)
        }
        Call::GetWriteWatch {
            flags,
            address,
            size,
            max,
        } => map_verdict(model.get_write_watch(flags, address, size, max), |r| {
            Outcome::Pages(r.map(|pages| watch_list(&pages)))
        }),
        Call::ResetWriteWatch { address, size } => {
            map_verdict(model.reset_write_watch(address, size), Outcome::Unit)
        }
    }
}

fn engine_call(space: &mut AddressSpace, call: &Call) -> Outcome {
    match *call {
        Call::Alloc {
            address,
            size,
            ty,
            protect,
        } => Outcome::Addr(space.virtual_alloc(address, size, ty, protect)),
        Call::Free { address, size, ty } => Outcome::Unit(space.virtual_free(address, size, ty)),
        Call::Protect { address, size, new } => {
            Outcome::Prot(space.virtual_protect(address, size, new))
        }
        Call::GetWriteWatch {
            flags,
            address,
            size,
            max,
        } => {
            let mut pages = Vec::new();
            Outcome::Pages(
                space
                    .get_write_watch(flags, address, size, max, &mut pages)
                    .map(|()| watch_list(&pages)),
            )
        }
        Call::ResetWriteWatch { address, size } => {
            Outcome::Unit(space.reset_write_watch(address, size))
        }
    }
}

fn alloc_call(address: usize, size: usize, ty: u32, protect: u32) -> Call {
    Call::Alloc {
        address,
        size,
        ty: AllocationType::from_bits_retain(ty),
        protect: Protection::from_bits_retain(protect),
    }
}

fn free_call(address: usize, size: usize, ty: u32) -> Call {
    Call::Free {
        address,
        size,
        ty: FreeType::from_bits_retain(ty),
    }
}

const RESERVE: u32 = 0x2000;
const COMMIT: u32 = 0x1000;
const TOP_DOWN: u32 = 0x10_0000;
const RESET: u32 = 0x8_0000;
const RESET_UNDO: u32 = 0x100_0000;
const WRITE_WATCH: u32 = 0x20_0000;
const DECOMMIT: u32 = 0x4000;
const RELEASE: u32 = 0x8000;
const INVALID_ADDRESS: Win32Error = Win32Error(487);
const INVALID_PARAMETER: Win32Error = Win32Error(87);

/// Above the user address space on every Linux (canonical kernel half).
const KERNEL_ADDRESS: usize = 0xffff_8000_0000_1000;

// ---------------------------------------------------------------------------
// One case.

struct Case<'a> {
    space: AddressSpace,
    model: Model,
    fx: &'static Fixtures,
    stack: &'a [u8; 256],
    heap: &'a [u8; 256],
    /// Ranges released by the current step: nothing may be mapped there.
    released: Vec<(usize, usize)>,
    trace: Option<Vec<String>>,
}

fn fail(msg: String) -> Failure {
    msg
}

impl Case<'_> {
    fn log(&mut self, line: impl FnOnce(&Self) -> String) {
        if self.trace.is_some() {
            let text = line(self);
            if let Some(t) = self.trace.as_mut() {
                t.push(text);
            }
        }
    }

    /// An address as `R<id>+off`, `arena+off` or hex.
    fn name(&self, address: usize) -> String {
        if let Some(r) = self.model.owner(address) {
            return format!("R{}+{:#x}", r.id, address - r.base);
        }
        if let Some(r) = self
            .model
            .reservations()
            .find(|r| address >= r.base && address < r.end() + 2 * GRANULE)
        {
            return format!("R{}+{:#x}", r.id, address - r.base);
        }
        let arena = self.fx.arena;
        if (arena..arena + ARENA_SIZE).contains(&address) {
            return format!("arena+{:#x}", address - arena);
        }
        format!("{address:#x}")
    }

    fn describe(&self, call: &Call) -> String {
        match *call {
            Call::Alloc {
                address,
                size,
                ty,
                protect,
            } => format!(
                "VirtualAlloc({}, {size:#x}, {:#x}, {:#x})",
                self.name(address),
                ty.bits(),
                protect.bits()
            ),
            Call::Free { address, size, ty } => format!(
                "VirtualFree({}, {size:#x}, {:#x})",
                self.name(address),
                ty.bits()
            ),
            Call::Protect { address, size, new } => format!(
                "VirtualProtect({}, {size:#x}, {:#x})",
                self.name(address),
                new.bits()
            ),
            Call::GetWriteWatch {
                flags,
                address,
                size,
                max,
            } => format!(
                "GetWriteWatch({flags:#x}, {}, {size:#x}, count {max})",
                self.name(address)
            ),
            Call::ResetWriteWatch { address, size } => {
                format!("ResetWriteWatch({}, {size:#x})", self.name(address))
            }
        }
    }

    fn arena_slot(&self, slot: usize, byte: usize) -> usize {
        self.fx.arena + (slot % ARENA_SLOTS) * GRANULE + byte
    }

    /// Live reservation `idx` by recency (0: the newest), if any.
    fn live(&self, idx: usize) -> Option<&reference::Reservation> {
        let mut live: Vec<_> = self.model.reservations().collect();
        live.sort_by_key(|r| std::cmp::Reverse(r.id));
        (!live.is_empty()).then(|| live[idx % live.len()])
    }

    /// The address `loc` stands for now.
    fn resolve(&self, loc: Loc) -> usize {
        match loc {
            Loc::Live { idx, page, byte } => match self.live(idx) {
                Some(r) => r.base + (page % (r.pages.len() + 2)) * PAGE + byte,
                None => self.arena_slot(idx, byte),
            },
            Loc::Run { idx, run, byte } => match self.live(idx) {
                Some(r) => {
                    let runs = r.runs();
                    r.base + runs[run % runs.len()].0 * PAGE + byte
                }
                None => self.arena_slot(idx, byte),
            },
            Loc::Arena { slot, byte } => self.arena_slot(slot, byte),
        }
    }

    fn size(&self, len: Len, address: usize) -> usize {
        match len {
            Len::Pages(n) => n * PAGE,
            Len::Bytes(n) => n,
            Len::Zero => 0,
            Len::ToEnd => self
                .model
                .owner(address)
                .map(|r| r.end() - address)
                .unwrap_or(PAGE),
            Len::RunEnd => self
                .model
                .virtual_query(address)
                .map(|m| m.base_address + m.region_size - address)
                .unwrap_or(PAGE),
        }
    }

    fn protection(&self, prot: Prot, address: usize) -> u32 {
        match prot {
            Prot::Base(i) => BASES[i],
            Prot::Inherit(i) => {
                let modifier = self
                    .model
                    .owner(address)
                    .map_or(0, |r| r.alloc_protect.bits() & 0x700);
                if BASES[i] == 0x01 {
                    BASES[i]
                } else {
                    BASES[i] | modifier
                }
            }
            Prot::Modified(i, m) => BASES[i] | MODIFIERS[m],
            Prot::Raw(bits) => bits,
        }
    }

    /// Whether every page of `[start, end)` is in the arena, in a live
    /// reservation, or unmapped in the last 64 KiB granule of one: the
    /// memory generated calls may reach.
    fn reachable(&self, start: usize, end: usize) -> bool {
        let arena = self.fx.arena..self.fx.arena + ARENA_SIZE;
        let end = end.max(start + 1);
        let mut maps: Option<Vec<Vma>> = None;
        let mut page = start & !(PAGE - 1);
        while page < end {
            if !arena.contains(&page) && self.model.owner(page).is_none() {
                let in_tail = self.model.reservations().any(|r| {
                    let granules_end = (r.end() + GRANULE - 1) & !(GRANULE - 1);
                    (r.end()..granules_end).contains(&page)
                });
                let maps = maps.get_or_insert_with(read_maps);
                if !in_tail || vma_at(maps, page).is_some() {
                    return false;
                }
            }
            page = match page.checked_add(PAGE) {
                Some(p) => p,
                None => return false,
            };
        }
        true
    }

    /// The range a call may touch, for `reachable`.
    fn reach(&self, call: &Call) -> Option<(usize, usize)> {
        match *call {
            Call::Alloc { address: 0, .. } => None,
            Call::Alloc { address, size, .. } => {
                Some((address & !(GRANULE - 1), address.checked_add(size.max(1))?))
            }
            Call::Free { address, size, .. } => Some((address, address.checked_add(size.max(1))?)),
            Call::Protect { address, size, .. } => {
                Some((address, address.checked_add(size.max(1))?))
            }
            // Read only of the engine's own map: any address is harmless.
            Call::GetWriteWatch { .. } | Call::ResetWriteWatch { .. } => None,
        }
    }

    fn step(&mut self, index: usize, op: &Op) -> Result<(), Failure> {
        bump(&STATS.steps, 1);
        self.log(|_| format!("#{index} {op:?}"));
        let call = match *op {
            Op::ReserveNull {
                len,
                commit,
                top_down,
                prot,
            } => {
                let ty =
                    RESERVE | if commit { COMMIT } else { 0 } | if top_down { TOP_DOWN } else { 0 };
                alloc_call(0, self.size(len, 0), ty, self.protection(prot, 0))
            }
            Op::ReserveFixed {
                loc,
                len,
                commit,
                prot,
            } => {
                let a = self.resolve(loc);
                let ty = RESERVE | if commit { COMMIT } else { 0 };
                alloc_call(a, self.size(len, a), ty, self.protection(prot, a))
            }
            Op::Commit {
                loc,
                len,
                prot,
                top_down,
            } => {
                let a = self.resolve(loc);
                let ty = COMMIT | if top_down { TOP_DOWN } else { 0 };
                alloc_call(a, self.size(len, a), ty, self.protection(prot, a))
            }
            Op::Reset { loc, len, prot } => {
                let a = self.resolve(loc);
                alloc_call(a, self.size(len, a), RESET, self.protection(prot, a))
            }
            Op::ResetUndo { loc, len } => {
                let a = self.resolve(loc);
                alloc_call(a, self.size(len, a), RESET_UNDO, 0x04)
            }
            Op::Decommit { loc, len } => {
                let a = self.resolve(loc);
                free_call(a, self.size(len, a), DECOMMIT)
            }
            Op::Release { idx, offset, size } => {
                let a = match self.live(idx) {
                    Some(r) => r.base + offset,
                    None => self.arena_slot(idx, offset),
                };
                free_call(a, size, RELEASE)
            }
            Op::Protect { loc, len, prot } => {
                let a = self.resolve(loc);
                Call::Protect {
                    address: a,
                    size: self.size(len, a),
                    new: Protection::from_bits_retain(self.protection(prot, a)),
                }
            }
            Op::Query { loc } => {
                let a = self.resolve(loc);
                let maps = read_maps();
                return self.compare_query(a, &maps);
            }
            Op::Write {
                pick,
                sample,
                value,
            } => return self.write(pick, sample, value),
            Op::RawAlloc { loc, len, ty, prot } => {
                let a = loc.map_or(0, |l| self.resolve(l));
                alloc_call(a, self.size(len, a), ty, prot)
            }
            Op::RawFree { loc, len, ty } => {
                let a = self.resolve(loc);
                free_call(a, self.size(len, a), ty)
            }
            Op::Foreign { target, call } => return self.foreign(target, call),
            Op::ReserveWatched { len, commit, prot } => {
                let ty = RESERVE | WRITE_WATCH | if commit { COMMIT } else { 0 };
                alloc_call(0, self.size(len, 0), ty, self.protection(prot, 0))
            }
            Op::GetWriteWatch {
                loc,
                len,
                max,
                flags,
            } => {
                let a = self.resolve(loc);
                Call::GetWriteWatch {
                    flags,
                    address: a,
                    size: self.size(len, a),
                    max: max.min(MAX_WATCH),
                }
            }
            Op::ResetWriteWatch { loc, len } => {
                let a = self.resolve(loc);
                Call::ResetWriteWatch {
                    address: a,
                    size: self.size(len, a),
                }
            }
        };
        self.call(&call)
    }

    fn call(&mut self, call: &Call) -> Result<(), Failure> {
        if let Some((start, end)) = self.reach(call)
            && !self.reachable(start, end)
        {
            bump(&STATS.unreachable, 1);
            self.log(|c| {
                format!(
                    "    {} skipped: would reach foreign memory",
                    c.describe(call)
                )
            });
            return Ok(());
        }
        if let Judged::Undetermined(why) = model_call(&mut self.model.clone(), call, None) {
            bump(&STATS.undetermined, 1);
            *COVERAGE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(format!("skipped, undetermined: {why}"))
                .or_default() += 1;
            self.log(|c| format!("    {} skipped: undetermined ({why})", c.describe(call)));
            return Ok(());
        }
        let described = self.trace.is_some().then(|| self.describe(call));
        bump(&STATS.calls, 1);
        let got = engine_call(&mut self.space, call);
        let mut next = self.model.clone();
        let verdict = model_call(&mut next, call, Some(&got));
        let expected = match verdict {
            Judged::Expect(e) => e,
            Judged::Violation(why) => {
                return Err(fail(format!(
                    "{}: engine gave {got:?}: {why}",
                    self.describe(call)
                )));
            }
            Judged::Undetermined(why) => {
                return Err(fail(format!(
                    "model: undetermined only after the call: {why}"
                )));
            }
        };
        self.log(|_| {
            format!(
                "    {} -> engine {got:?}, model {expected:?}",
                described.unwrap_or_default()
            )
        });
        if got != expected {
            if let (
                Call::Alloc {
                    address, size, ty, ..
                },
                Outcome::Addr(Err(INVALID_ADDRESS)),
                Outcome::Addr(Ok(_)),
            ) = (call, got, expected)
                && *address != 0
                && ty.bits() & RESERVE != 0
            {
                // A fixed reservation refused: right if something that is
                // not the engine's is mapped in the range.
                let start = address & !(GRANULE - 1);
                let end = address + size;
                let maps = read_maps();
                let foreign = overlapping(&maps, start, end)
                    .into_iter()
                    .any(|v| !self.model.overlaps(v.start.max(start), v.end.min(end)));
                if foreign {
                    bump(&STATS.foreign_conflicts, 1);
                    self.log(|_| "    (a foreign mapping is in the range: skipped)".to_string());
                    return Ok(());
                }
            }
            let what = if expected == Outcome::Addr(Ok(reference::ANY_BASE)) {
                " (success at a base of the system's choosing)".to_string()
            } else {
                String::new()
            };
            return Err(fail(format!(
                "{}: engine returned {got:?}, the model expects {expected:?}{what}",
                self.describe(call)
            )));
        }
        cover(call, &got);
        if got.is_ok() {
            bump(&STATS.succeeded, 1);
        } else {
            bump(&STATS.failed, 1);
        }
        if let (Call::Free { address, ty, .. }, true) = (call, got.is_ok())
            && ty.bits() == RELEASE
            && let Some(r) = self.model.owner(*address)
        {
            self.released.push((r.base, r.end()));
        }
        self.model = next;
        Ok(())
    }

    fn write(&mut self, pick: usize, sample: usize, value: u8) -> Result<(), Failure> {
        let pages: Vec<usize> = self
            .model
            .reservations()
            .flat_map(|r| {
                r.pages.iter().enumerate().filter_map(move |(i, p)| {
                    p.protect()
                        .filter(|&p| writable(p))
                        .map(|_| r.base + i * PAGE)
                })
            })
            .collect();
        if pages.is_empty() {
            return Ok(());
        }
        let page = pages[pick % pages.len()];
        let index = sample % SAMPLES;
        let maps = read_maps();
        match vma_at(&maps, page) {
            Some(v) if v.perms.starts_with("rw") => {}
            other => {
                return Err(fail(format!(
                    "kernel: {} should be writable, the kernel shows {other:?}",
                    self.name(page)
                )));
            }
        }
        self.log(|c| {
            format!(
                "    write {value:#x} at {}",
                c.name(page + SAMPLE_OFFSETS[index])
            )
        });
        // SAFETY: the page is committed read-write in this case's
        // AddressSpace (the model and the kernel's view agree), it stays
        // mapped during the write, and no Rust reference points into it.
        unsafe { ((page + SAMPLE_OFFSETS[index]) as *mut u8).write_volatile(value) };
        bump(&STATS.writes, 1);
        self.model.write_sample(page, index, value);
        Ok(())
    }

    fn foreign_address(&self, target: Foreign) -> usize {
        match target {
            Foreign::Stack => self.stack.as_ptr() as usize + 100,
            Foreign::Heap => self.heap.as_ptr() as usize + 100,
            Foreign::Static => RODATA.as_ptr() as usize + 100,
            Foreign::Code => {
                run_case as fn(&[Op], bool) -> (Result<(), Failure>, Vec<String>) as usize
            }
            Foreign::GuardMap => self.fx.guard_map + 0x1234,
            Foreign::RwMap => self.fx.rw_map + 0x1234,
            Foreign::Null => 0,
            Foreign::Kernel => KERNEL_ADDRESS,
        }
    }

    /// The foreign memory's bytes and the kernel's protections around it.
    fn foreign_snapshot(&self, target: Foreign, address: usize) -> (Vec<u8>, Vec<String>) {
        let bytes = match target {
            Foreign::Stack => self.stack.to_vec(),
            Foreign::Heap => self.heap.to_vec(),
            Foreign::Static => RODATA.to_vec(),
            // SAFETY: the test's own read-write mapping, alive for the
            // whole process; nothing holds a reference into it.
            Foreign::RwMap => unsafe {
                std::slice::from_raw_parts(self.fx.rw_map as *const u8, FOREIGN_MAP).to_vec()
            },
            // SAFETY: 64 bytes of the test binary's own code, mapped
            // readable and executable for the life of the process.
            Foreign::Code => unsafe {
                std::slice::from_raw_parts(address as *const u8, 64).to_vec()
            },
            Foreign::GuardMap | Foreign::Null | Foreign::Kernel => Vec::new(),
        };
        let maps = read_maps();
        let perms = [
            address.saturating_sub(GRANULE),
            address,
            address.saturating_add(0x4000),
        ]
        .iter()
        .map(|&a| {
            vma_at(&maps, a)
                .map(|v| v.perms.clone())
                .unwrap_or_default()
        })
        .collect();
        (bytes, perms)
    }

    fn foreign(&mut self, target: Foreign, call: ForeignCall) -> Result<(), Failure> {
        bump(&STATS.foreign_calls, 1);
        let a = self.foreign_address(target);
        if matches!(call, ForeignCall::Query) || matches!(target, Foreign::Null | Foreign::Kernel) {
            return self.foreign_query(target, a);
        }
        let call = match call {
            ForeignCall::Query => unreachable!("handled above"),
            ForeignCall::Reserve { size, commit } => {
                alloc_call(a, size, RESERVE | if commit { COMMIT } else { 0 }, 0x04)
            }
            ForeignCall::Commit { size, base } => alloc_call(a, size, COMMIT, BASES[base]),
            ForeignCall::Reset { size } => alloc_call(a, size, RESET, 0x04),
            ForeignCall::ResetUndo { size } => alloc_call(a, size, RESET_UNDO, 0x04),
            ForeignCall::Decommit { size } => free_call(a, size, DECOMMIT),
            ForeignCall::Release => free_call(a, 0, RELEASE),
            ForeignCall::Protect { size, base } => Call::Protect {
                address: a,
                size,
                new: Protection::from_bits_retain(BASES[base]),
            },
        };
        // The model, which does not know this memory, agrees that every
        // call but a fixed reservation fails with ERROR_INVALID_ADDRESS.
        if !matches!(call, Call::Alloc { ty, .. } if ty.bits() & RESERVE != 0) {
            let verdict = model_call(&mut self.model.clone(), &call, None);
            let want = match call {
                Call::Alloc { .. } => Outcome::Addr(Err(INVALID_ADDRESS)),
                Call::Free { .. } => Outcome::Unit(Err(INVALID_ADDRESS)),
                Call::Protect { .. } => Outcome::Prot(Err(INVALID_ADDRESS)),
                Call::GetWriteWatch { .. } | Call::ResetWriteWatch { .. } => {
                    unreachable!("foreign calls are the Virtual* functions")
                }
            };
            if verdict != Judged::Expect(want) {
                return Err(fail(format!(
                    "model: {target:?}: {call:?} gives {verdict:?}"
                )));
            }
        }
        let before = self.foreign_snapshot(target, a);
        bump(&STATS.calls, 1);
        let got = engine_call(&mut self.space, &call);
        let after = self.foreign_snapshot(target, a);
        self.log(|c| format!("    {:?}: {} -> engine {got:?}", target, c.describe(&call)));
        let refused = matches!(
            got,
            Outcome::Addr(Err(INVALID_ADDRESS))
                | Outcome::Unit(Err(INVALID_ADDRESS))
                | Outcome::Prot(Err(INVALID_ADDRESS))
        );
        if !refused {
            return Err(fail(format!(
                "{target:?} memory: {} returned {got:?}, expected ERROR_INVALID_ADDRESS",
                self.describe(&call)
            )));
        }
        if before != after {
            return Err(fail(format!(
                "{target:?} memory changed by {}: {before:?} -> {after:?}",
                self.describe(&call)
            )));
        }
        cover(&call, &got);
        bump(&STATS.failed, 1);
        Ok(())
    }

    fn foreign_query(&mut self, target: Foreign, a: usize) -> Result<(), Failure> {
        bump(&STATS.queries, 1);
        let got = self.space.virtual_query(a);
        let maps = read_maps();
        self.log(|_| format!("    query {target:?} {a:#x} -> {got:?}"));
        let page = a & !(PAGE - 1);
        if target == Foreign::Kernel {
            return if got == Err(INVALID_PARAMETER) {
                Ok(())
            } else {
                Err(fail(format!(
                    "VirtualQuery({a:#x}) above the user address space: {got:?}, expected ERROR_INVALID_PARAMETER"
                )))
            };
        }
        if target == Foreign::Null {
            return self.compare_query(a, &maps);
        }
        let mbi =
            got.map_err(|e| fail(format!("VirtualQuery({target:?} {a:#x}) failed: {e:?}")))?;
        let (state, protect, ty) = match target {
            Foreign::Stack | Foreign::Heap | Foreign::RwMap => {
                (MemoryState::COMMIT, Some(0x04), Some(MemoryType::PRIVATE))
            }
            Foreign::Static => (MemoryState::COMMIT, Some(0x02), None),
            Foreign::Code => (MemoryState::COMMIT, Some(0x20), Some(MemoryType::IMAGE)),
            _ => (MemoryState::RESERVE, Some(0), Some(MemoryType::PRIVATE)),
        };
        let ok = mbi.base_address == page
            && mbi.region_size > 0
            && mbi.region_size.is_multiple_of(PAGE)
            && mbi.state == state
            && protect.is_none_or(|p| mbi.protect.bits() == p)
            && ty.is_none_or(|t| mbi.type_ == t);
        if !ok {
            return Err(fail(format!(
                "VirtualQuery of {target:?} memory at {a:#x} (kernel: {:?}): {mbi:?}; expected base {page:#x}, \
                 {state:?}, protect {protect:x?}, type {ty:?}",
                vma_at(&maps, a)
            )));
        }
        Ok(())
    }

    /// `VirtualQuery(a)` on the engine against the model (in a
    /// reservation) or the kernel's view (free memory).
    fn compare_query(&mut self, a: usize, maps: &[Vma]) -> Result<(), Failure> {
        bump(&STATS.queries, 1);
        let got = self.space.virtual_query(a);
        let page = a & !(PAGE - 1);
        let want = match self.model.virtual_query(a) {
            Some(want) => want,
            None => {
                if vma_at(maps, a).is_some() {
                    // Foreign memory (possible only past a reservation at
                    // NULL): the engine must answer, nothing more.
                    return match got {
                        Ok(m) if m.base_address == page && m.state != MemoryState::FREE => Ok(()),
                        other => Err(fail(format!(
                            "VirtualQuery({}) of mapped memory {:?}: {other:?}",
                            self.name(a),
                            vma_at(maps, a)
                        ))),
                    };
                }
                let Some(next) = next_vma_start(maps, a) else {
                    return Ok(());
                };
                MemoryBasicInformation {
                    base_address: page,
                    allocation_base: 0,
                    allocation_protect: Protection::empty(),
                    region_size: next - page,
                    state: MemoryState::FREE,
                    protect: Protection::NOACCESS,
                    type_: MemoryType::empty(),
                    ..MemoryBasicInformation::default()
                }
            }
        };
        if got != Ok(want) {
            return Err(fail(format!(
                "VirtualQuery({}): engine {got:?}, expected {want:?}",
                self.name(a)
            )));
        }
        Ok(())
    }

    /// The light check: `VirtualQuery` at the start, inside and at the
    /// last byte of every page run of every live reservation, against the
    /// model (no kernel view, no data, no `/proc/self/maps`).
    fn check_queries(&mut self) -> Result<(), Failure> {
        let runs: Vec<usize> = self
            .model
            .reservations()
            .flat_map(|r| {
                r.runs().into_iter().flat_map(move |(first, count)| {
                    let start = r.base + first * PAGE;
                    [start, start + 0x801, start + count * PAGE - 1]
                })
            })
            .collect();
        for a in runs {
            // In a reservation: the model answers, the kernel's view is
            // not needed.
            self.compare_query(a, &[])?;
        }
        Ok(())
    }

    /// The full check.
    fn check(&mut self) -> Result<(), Failure> {
        let maps = read_maps();
        let reservations: Vec<_> = self.model.reservations().cloned().collect();
        // The kernel's view, before any memory is read.
        for r in &reservations {
            for (i, page) in r.pages.iter().enumerate() {
                let a = r.base + i * PAGE;
                let want = kernel_perms(page.protect());
                match vma_at(&maps, a) {
                    Some(v) if v.perms == want => {}
                    other => {
                        return Err(fail(format!(
                            "kernel: page {} ({page:?}) should be {want}, /proc/self/maps has {other:?}",
                            self.name(a)
                        )));
                    }
                }
            }
        }
        for (start, end) in std::mem::take(&mut self.released) {
            let left = overlapping(&maps, start, end);
            if !left.is_empty() {
                return Err(fail(format!(
                    "kernel: released [{start:#x}, {end:#x}) is still mapped: {left:?}"
                )));
            }
        }
        for r in &reservations {
            for (first, count) in r.runs() {
                let start = r.base + first * PAGE;
                for a in [start, start + 0x801, start + count * PAGE - 1] {
                    self.compare_query(a, &maps)?;
                }
            }
            self.compare_query(r.end(), &maps)?;
        }
        // The data.
        for r in &reservations {
            for (i, page) in r.pages.iter().enumerate() {
                let Page::Committed {
                    protect, samples, ..
                } = page
                else {
                    continue;
                };
                if !readable(*protect) {
                    continue;
                }
                let a = r.base + i * PAGE;
                for (k, sample) in samples.iter().enumerate() {
                    // SAFETY: the kernel's view, read above with no call
                    // since, maps this page of the engine's reservation
                    // readable; no Rust reference points into it.
                    let value = unsafe { ((a + SAMPLE_OFFSETS[k]) as *const u8).read_volatile() };
                    bump(&STATS.reads, 1);
                    if !sample.accepts(value) {
                        return Err(fail(format!(
                            "data: byte {} reads {value:#x}, the model says {sample:?}",
                            self.name(a + SAMPLE_OFFSETS[k])
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How often a case is checked in full (the kernel's view of every page,
/// the sampled bytes, `VirtualQuery` around every page run and past every
/// reservation, released ranges unmapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// After every step (the property test).
    EveryStep,
    /// After every `n`th step, after every step that released a
    /// reservation, and after the last; the other steps have only the
    /// light check (`VirtualQuery` of every page run against the model).
    /// The full check reads `/proc/self/maps` and every sampled byte,
    /// which is most of a step's time: the fuzzer trades it for
    /// executions.
    Every(usize),
}

/// Runs `ops` against a fresh `AddressSpace` and a fresh model, checking
/// everything after every step; with `trace`, also returns a line for
/// every step and concrete call.
pub fn run_case(ops: &[Op], trace: bool) -> (Result<(), Failure>, Vec<String>) {
    run_case_with(ops, trace, Checks::EveryStep)
}

/// [`run_case`] with the full check only as often as `checks` says.
pub fn run_case_with(
    ops: &[Op],
    trace: bool,
    checks: Checks,
) -> (Result<(), Failure>, Vec<String>) {
    bump(&STATS.cases, 1);
    let stack = std::hint::black_box([CANARY; 256]);
    let heap = Box::new([CANARY; 256]);
    let mut case = Case {
        space: AddressSpace::new(),
        model: Model::new(),
        fx: fixtures(),
        stack: &stack,
        heap: &heap,
        released: Vec::new(),
        trace: trace.then(Vec::new),
    };
    let mut result = Ok(());
    for (i, op) in ops.iter().enumerate() {
        result = case.step(i, op).and_then(|()| {
            let full = match checks {
                Checks::EveryStep => true,
                Checks::Every(n) => {
                    (i + 1) % n.max(1) == 0 || i + 1 == ops.len() || !case.released.is_empty()
                }
            };
            if full {
                case.check()
            } else {
                case.check_queries()
            }
        });
        if let Err(e) = &result {
            case.log(|_| format!("FAILED: {e}"));
            break;
        }
    }
    // Dropping the address space releases every reservation.
    let live: Vec<(usize, usize)> = case
        .model
        .reservations()
        .map(|r| (r.base, r.end()))
        .collect();
    let trace = case.trace.take().unwrap_or_default();
    drop(case);
    if result.is_ok() {
        let maps = read_maps();
        for (start, end) in live {
            let left = overlapping(&maps, start, end);
            if !left.is_empty() {
                result = Err(fail(format!(
                    "dropping the AddressSpace left [{start:#x}, {end:#x}) mapped: {left:?}"
                )));
            }
        }
    }
    (result, trace)
}

/// Deletes operations from a failing sequence while it still fails, until
/// no single deletion keeps it failing (proptest's own shrinking does not
/// go back to deletions after shrinking elements).
pub fn minimize(mut ops: Vec<Op>) -> Vec<Op> {
    loop {
        let mut changed = false;
        for i in (0..ops.len()).rev() {
            let mut fewer = ops.clone();
            fewer.remove(i);
            if !fewer.is_empty() && run_case(&fewer, false).0.is_err() {
                ops = fewer;
                changed = true;
            }
        }
        if !changed {
            return ops;
        }
    }
}
