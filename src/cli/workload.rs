//! The built-in workload: what a managed runtime asks of its host.
//!
//! Each thread plays a runtime thread with a heap of its own (server-GC
//! style): the garbage collector reserves 256 MiB segments and commits
//! them in 64 KiB–1 MiB steps as allocation proceeds; a commit the budget
//! refuses triggers a collection (survivors kept, the rest decommitted,
//! old segments shrunk and released once empty) and a retry at a more
//! critical level. Beside it: the loader heap and the JIT's code heap
//! (`IHostMalloc`, the code heap executable), stubs flipped between
//! read-write and execute-read, the runtime's own file mappings (reported
//! with Needs/Acquired/ReleasedVirtualAddressSpace), load checks and
//! queries. A Low notification makes every thread collect.

use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{
    HResult, HostError, HostMemoryManager, MemoryAvailable, MemoryCriticalLevel,
    MemoryNotificationCallback,
};
use hostmem::unstable::engine::AddressSpace;
use hostmem::win32::{AllocationType, FreeType, PAGE_SIZE, Protection};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The size of a GC segment.
pub const SEGMENT_SIZE: usize = 256 << 20;
const STEP: usize = 64 << 10;
const STUBS_SIZE: usize = 64 << 10;

/// A small, fast, seedable generator (SplitMix64): the workload's only
/// source of choices.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A request the budget refused.
#[derive(Clone, Copy, Debug)]
pub struct Refusal {
    /// Seconds since the start.
    pub t: f64,
    /// The critical level asked for.
    pub level: MemoryCriticalLevel,
    /// What asked.
    pub source: &'static str,
}

/// The runtime's notification callback: logs each state and counts the
/// Low ones, which every thread answers with a collection.
pub struct Pressure {
    start: Instant,
    lows: AtomicU64,
    log: Mutex<Vec<(f64, MemoryAvailable)>>,
}

impl MemoryNotificationCallback for Pressure {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        self.log
            .lock()
            .push((self.start.elapsed().as_secs_f64(), state));
        if state == MemoryAvailable::Low {
            self.lows.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Pressure {
    /// The notifications so far: seconds since the start, state.
    pub fn log(&self) -> Vec<(f64, MemoryAvailable)> {
        self.log.lock().clone()
    }
}

/// What the threads share: the manager, the runtime's heaps and mappings,
/// and what happened.
pub struct World {
    /// The manager under test.
    pub host: Arc<HostMemoryManager>,
    /// When the run began.
    pub start: Instant,
    /// The registered callback.
    pub pressure: Arc<Pressure>,
    loader: Mutex<Option<Arc<HostMalloc>>>,
    jit: Mutex<Option<Arc<HostMalloc>>>,
    /// The runtime's own mappings (stand-ins for mapped files).
    mapper: Mutex<AddressSpace>,
    /// Who made each reservation the workload made itself, by base.
    pub owners: Mutex<BTreeMap<usize, String>>,
    /// The runtime's own mappings: base → (size, owner).
    pub mappings: Mutex<BTreeMap<usize, (usize, String)>>,
    /// The refused requests.
    pub refusals: Mutex<Vec<Refusal>>,
    /// Steps done by all threads.
    pub steps: AtomicU64,
    /// Garbage collections.
    pub collections: AtomicU64,
    /// Allocations refused even at `eProcessCritical`.
    pub out_of_memory: AtomicU64,
    /// Failures other than the budget's (there should be none).
    pub unexpected: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl World {
    /// Sets the runtime up on `host`: registers the callback and creates
    /// the loader heap and the executable JIT heap.
    pub fn new(host: Arc<HostMemoryManager>) -> Result<Arc<Self>, String> {
        let start = Instant::now();
        let pressure = Arc::new(Pressure {
            start,
            lows: AtomicU64::new(0),
            log: Mutex::default(),
        });
        host.register_memory_notification(Some(pressure.clone()))
            .map_err(|e| format!("RegisterMemoryNotificationCallback failed: {}", e.hresult()))?;
        let heap = |t| {
            host.create_malloc(t)
                .map_err(|e| format!("CreateMalloc failed: {}", e.hresult()))
        };
        let loader = heap(MallocType::THREADSAFE)?;
        let jit = heap(MallocType::THREADSAFE | MallocType::EXECUTABLE)?;
        Ok(Arc::new(Self {
            host,
            start,
            pressure,
            loader: Mutex::new(Some(loader)),
            jit: Mutex::new(Some(jit)),
            mapper: Mutex::new(AddressSpace::new()),
            owners: Mutex::default(),
            mappings: Mutex::default(),
            refusals: Mutex::default(),
            steps: AtomicU64::new(0),
            collections: AtomicU64::new(0),
            out_of_memory: AtomicU64::new(0),
            unexpected: Mutex::default(),
            stop: AtomicBool::new(false),
        }))
    }

    /// Asks every thread to stop after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn refused(&self, level: MemoryCriticalLevel, source: &'static str) {
        self.refusals.lock().push(Refusal {
            t: self.now(),
            level,
            source,
        });
    }

    fn unexpected(&self, what: &str, e: HostError) {
        let mut list = self.unexpected.lock();
        if list.len() < 20 {
            list.push(format!("{what}: {}", e.hresult()));
        }
    }

    /// Lets the heaps go (their memory is released through the manager).
    pub fn drop_heaps(&self) {
        self.loader.lock().take();
        self.jit.lock().take();
    }
}

fn is_refusal(e: HostError) -> bool {
    e.hresult() == HResult::E_OUTOFMEMORY
}

struct Segment {
    base: usize,
    committed: usize,
}

/// One runtime thread's state.
pub struct Actor {
    id: usize,
    world: Arc<World>,
    rng: Rng,
    /// The GC's segments; the last one is allocated in.
    segments: Vec<Segment>,
    fresh_segment_due: bool,
    loader_blocks: Vec<usize>,
    jit_blocks: Vec<usize>,
    mappings: Vec<usize>,
    stubs: Option<usize>,
    lows_seen: u64,
}

const LEVELS: [MemoryCriticalLevel; 3] = [
    MemoryCriticalLevel::TaskCritical,
    MemoryCriticalLevel::AppDomainCritical,
    MemoryCriticalLevel::ProcessCritical,
];

impl Actor {
    /// Thread `id` (from 1) of the workload, its choices drawn from `seed`.
    pub fn new(world: Arc<World>, id: usize, seed: u64) -> Self {
        let mut mix = Rng::new(seed ^ (id as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        let rng = Rng::new(mix.next());
        Self {
            id,
            world,
            rng,
            segments: Vec::new(),
            fresh_segment_due: true,
            loader_blocks: Vec::new(),
            jit_blocks: Vec::new(),
            mappings: Vec::new(),
            stubs: None,
            lows_seen: 0,
        }
    }

    /// Runs up to `steps` steps (all if `None`), each followed by about
    /// `think` of mutator work, until the world is stopped.
    pub fn run(&mut self, steps: Option<u64>, think: Duration) {
        let mut done = 0u64;
        while steps.is_none_or(|n| done < n) && !self.world.stopped() {
            self.step();
            done += 1;
            self.world.steps.fetch_add(1, Ordering::Relaxed);
            if !think.is_zero() {
                // Mutator work: between half and one and a half `think`.
                let jitter = self.rng.between(50, 150);
                self.think(think * jitter as u32 / 100);
            }
        }
    }

    /// Sleeps `time` in slices short enough that a stopped world (the end
    /// of `--duration`) ends the wait within one slice.
    fn think(&self, time: Duration) {
        const SLICE: Duration = Duration::from_millis(5);
        let deadline = Instant::now() + time;
        while !self.world.stopped() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(SLICE));
        }
    }

    fn step(&mut self) {
        let lows = self.world.pressure.lows.load(Ordering::Relaxed);
        if lows != self.lows_seen {
            self.lows_seen = lows;
            self.collect(true);
        }
        match self.rng.below(100) {
            0..52 => self.allocate(),
            52..55 => self.allocate_large(),
            55..70 => self.loader(),
            70..78 => self.jit(),
            78..83 => self.map_file(),
            83..88 => self.check_load(),
            88..94 => self.query(),
            _ => self.stub(),
        }
    }

    fn host(&self) -> &HostMemoryManager {
        &self.world.host
    }

    fn current_segment(&mut self) -> Option<usize> {
        if self.fresh_segment_due {
            let level = MemoryCriticalLevel::TaskCritical;
            match self.host().virtual_alloc(
                0,
                SEGMENT_SIZE,
                AllocationType::RESERVE,
                Protection::READWRITE,
                level,
            ) {
                Ok(base) => {
                    self.world
                        .owners
                        .lock()
                        .insert(base, format!("GC segment (t{})", self.id));
                    self.segments.push(Segment { base, committed: 0 });
                    self.fresh_segment_due = false;
                }
                Err(e) => {
                    self.world.unexpected("reserving a GC segment", e);
                    return None;
                }
            }
        }
        Some(self.segments.len() - 1)
    }

    /// The GC's allocator needs more committed memory in its segment:
    /// 64 KiB–1 MiB. Refused: finish the allocation context as an app
    /// domain that must not fail (which takes the load into the Low zone);
    /// refused again: collect and retry; then collect everything and ask
    /// as a process that must not fail.
    fn allocate(&mut self) {
        let want = STEP * self.rng.between(1, 16) as usize;
        let plan = [
            (LEVELS[0], None),
            (LEVELS[1], Some(false)),
            (LEVELS[0], Some(true)),
            (LEVELS[2], None),
        ];
        self.grow(want, &plan, "GC segment commit");
    }

    /// A large object: 2–32 MiB committed at once, as an app domain that
    /// must not fail; refused, collect everything and ask as a process.
    fn allocate_large(&mut self) {
        let want = (2 << 20) * self.rng.between(1, 16) as usize;
        self.grow(
            want,
            &[(LEVELS[1], Some(true)), (LEVELS[2], None)],
            "large object",
        );
    }

    /// Commits `want` more bytes at the end of the current segment (or, if
    /// they do not fit, has the next allocation reserve a fresh segment),
    /// asking at each level of `plan` in turn until one is granted; after
    /// a refusal, collects if the plan says so (`Some(full)`).
    fn grow(
        &mut self,
        want: usize,
        plan: &[(MemoryCriticalLevel, Option<bool>)],
        source: &'static str,
    ) {
        let Some(i) = self.current_segment() else {
            return;
        };
        if self.segments[i].committed + want > SEGMENT_SIZE {
            self.fresh_segment_due = true;
            return;
        }
        for &(level, collect_after) in plan {
            let Some(seg) = self.segments.last() else {
                return;
            };
            let at = seg.base + seg.committed;
            match self.host().virtual_alloc(
                at,
                want,
                AllocationType::COMMIT,
                Protection::READWRITE,
                level,
            ) {
                Ok(_) => {
                    if let Some(seg) = self.segments.last_mut() {
                        seg.committed += want;
                    }
                    return;
                }
                Err(e) if is_refusal(e) => {
                    self.world.refused(level, source);
                    if let Some(full) = collect_after {
                        self.collect(full);
                    }
                }
                Err(e) => {
                    self.world.unexpected(source, e);
                    return;
                }
            }
        }
        self.world.out_of_memory.fetch_add(1, Ordering::Relaxed);
    }

    /// A garbage collection: survivors stay at the start of the current
    /// segment and the rest is decommitted; older segments shrink and are
    /// released once (nearly) empty; sometimes the current segment is
    /// promoted and the next allocation reserves a fresh one.
    fn collect(&mut self, full: bool) {
        self.world.collections.fetch_add(1, Ordering::Relaxed);
        let survive = if full {
            self.rng.between(5, 20)
        } else {
            self.rng.between(10, 40)
        } as usize;
        let n = self.segments.len();
        for i in 0..n {
            let current = i + 1 == n && !self.fresh_segment_due;
            let seg = &self.segments[i];
            let keep = if current {
                seg.committed * survive / 100
            } else if full {
                0
            } else {
                seg.committed / 4
            } / STEP
                * STEP;
            if keep < seg.committed {
                let (at, len) = (seg.base + keep, seg.committed - keep);
                match self.host().virtual_free(at, len, FreeType::DECOMMIT) {
                    Ok(()) => self.segments[i].committed = keep,
                    Err(e) => self.world.unexpected("decommitting after a collection", e),
                }
            }
        }
        // The GC no longer needs the contents of part of an old segment.
        if let Some(old) = self.segments.iter().rev().nth(1)
            && old.committed >= 2 * STEP
        {
            let _ = self.host().virtual_alloc(
                old.base,
                STEP,
                AllocationType::RESET,
                Protection::READWRITE,
                MemoryCriticalLevel::TaskCritical,
            );
        }
        // Release old segments that (nearly) emptied, keeping at most
        // three.
        let mut i = 0;
        while i + 1 < self.segments.len() {
            let seg = &self.segments[i];
            if seg.committed < 16 * STEP || self.segments.len() > 3 {
                let base = seg.base;
                match self.host().virtual_free(base, 0, FreeType::RELEASE) {
                    Ok(()) => {
                        self.world.owners.lock().remove(&base);
                        self.segments.remove(i);
                        continue;
                    }
                    Err(e) => self.world.unexpected("releasing a GC segment", e),
                }
            }
            i += 1;
        }
        if full || self.rng.chance(20) {
            self.fresh_segment_due = true;
        }
    }

    fn heap_op(
        &mut self,
        executable: bool,
        free_percent: u64,
        size: usize,
        level: MemoryCriticalLevel,
    ) {
        let heap = if executable {
            self.world.jit.lock().clone()
        } else {
            self.world.loader.lock().clone()
        };
        let Some(heap) = heap else {
            return;
        };
        let blocks = if executable {
            &mut self.jit_blocks
        } else {
            &mut self.loader_blocks
        };
        if !blocks.is_empty() && (blocks.len() > 400 || self.rng.chance(free_percent)) {
            let at = self.rng.below(blocks.len() as u64) as usize;
            let block = blocks.swap_remove(at);
            if let Err(e) = heap.free(block) {
                self.world.unexpected("IHostMalloc::Free", e);
            }
            return;
        }
        match heap.alloc(size, level) {
            Ok(p) => blocks.push(p),
            Err(e) if is_refusal(e) => self.world.refused(
                level,
                if executable {
                    "JIT code heap"
                } else {
                    "loader heap"
                },
            ),
            Err(e) => self.world.unexpected("IHostMalloc::Alloc", e),
        }
    }

    /// The loader allocates type data: mostly small, now and then a block
    /// with a reservation of its own.
    fn loader(&mut self) {
        let size = match self.rng.below(100) {
            0..80 => self.rng.between(16, 512),
            80..96 => self.rng.between(512, 4096),
            _ => self.rng.between(24 << 10, 96 << 10),
        } as usize;
        self.heap_op(false, 25, size, MemoryCriticalLevel::AppDomainCritical);
    }

    /// The JIT writes a method's code into the executable heap.
    fn jit(&mut self) {
        let size = self.rng.between(256, 16 << 10) as usize;
        self.heap_op(true, 15, size, MemoryCriticalLevel::TaskCritical);
    }

    /// The runtime maps a file by itself (an assembly), or unmaps one, and
    /// tells the host.
    fn map_file(&mut self) {
        if !self.mappings.is_empty() && (self.mappings.len() >= 4 || self.rng.chance(40)) {
            let at = self.rng.below(self.mappings.len() as u64) as usize;
            let base = self.mappings.swap_remove(at);
            if let Err(e) = self.host().released_virtual_address_space(base) {
                self.world.unexpected("ReleasedVirtualAddressSpace", e);
            }
            self.world.mappings.lock().remove(&base);
            let _ = self
                .world
                .mapper
                .lock()
                .virtual_free(base, 0, FreeType::RELEASE);
            return;
        }
        let size = STEP * self.rng.between(1, 64) as usize;
        match self.host().needs_virtual_address_space(0, size) {
            Ok(()) => {}
            Err(e) if is_refusal(e) => {
                self.world
                    .refused(MemoryCriticalLevel::ProcessCritical, "file mapping");
                return;
            }
            Err(e) => {
                self.world.unexpected("NeedsVirtualAddressSpace", e);
                return;
            }
        }
        let mapped = self.world.mapper.lock().virtual_alloc(
            0,
            size,
            AllocationType::RESERVE | AllocationType::COMMIT,
            Protection::READONLY,
        );
        let Ok(base) = mapped else {
            return;
        };
        match self.host().acquired_virtual_address_space(base, size) {
            Ok(()) => {
                self.mappings.push(base);
                self.world
                    .mappings
                    .lock()
                    .insert(base, (size, format!("file mapping (t{})", self.id)));
            }
            Err(e) => {
                self.world.unexpected("AcquiredVirtualAddressSpace", e);
                let _ = self
                    .world
                    .mapper
                    .lock()
                    .virtual_free(base, 0, FreeType::RELEASE);
            }
        }
    }

    /// The GC looks at the load and collects early when it is high.
    fn check_load(&mut self) {
        match self.host().get_memory_load() {
            Ok(load) if load.percent() >= 92 => self.collect(false),
            Ok(_) => {}
            Err(e) => self.world.unexpected("GetMemoryLoad", e),
        }
    }

    /// A question about one of the thread's addresses (now and then about
    /// a mapping the runtime made itself).
    fn query(&mut self) {
        let address = if !self.mappings.is_empty() && self.rng.chance(10) {
            self.mappings[self.rng.below(self.mappings.len() as u64) as usize]
        } else if let Some(seg) = self.segments.last() {
            seg.base + self.rng.below((SEGMENT_SIZE / PAGE_SIZE) as u64) as usize * PAGE_SIZE
        } else {
            return;
        };
        if let Err(e) = self.host().virtual_query(address) {
            self.world.unexpected("VirtualQuery", e);
        }
    }

    /// Stubs: a page of precode made writable to patch, executable to run.
    fn stub(&mut self) {
        let Some(base) = self.stubs else {
            let level = MemoryCriticalLevel::ProcessCritical;
            match self.host().virtual_alloc(
                0,
                STUBS_SIZE,
                AllocationType::RESERVE | AllocationType::COMMIT,
                Protection::READWRITE,
                level,
            ) {
                Ok(base) => {
                    self.stubs = Some(base);
                    self.world
                        .owners
                        .lock()
                        .insert(base, format!("stubs (t{})", self.id));
                }
                Err(e) if is_refusal(e) => self.world.refused(level, "stubs"),
                Err(e) => self.world.unexpected("reserving stubs", e),
            }
            return;
        };
        let pages = STUBS_SIZE / PAGE_SIZE;
        let first = self.rng.below(pages as u64) as usize;
        let count = (self.rng.between(1, 4) as usize).min(pages - first);
        let protect = if self.rng.chance(60) {
            Protection::EXECUTE_READ
        } else {
            Protection::READWRITE
        };
        if let Err(e) =
            self.host()
                .virtual_protect(base + first * PAGE_SIZE, count * PAGE_SIZE, protect)
        {
            self.world.unexpected("VirtualProtect", e);
        }
    }

    /// Gives back everything the thread holds.
    pub fn finish(mut self) {
        let loader = self.world.loader.lock().clone();
        let jit = self.world.jit.lock().clone();
        for (heap, blocks) in [
            (loader, &mut self.loader_blocks),
            (jit, &mut self.jit_blocks),
        ] {
            if let Some(heap) = heap {
                for block in blocks.drain(..) {
                    let _ = heap.free(block);
                }
            }
        }
        for base in std::mem::take(&mut self.mappings) {
            let _ = self.world.host.released_virtual_address_space(base);
            self.world.mappings.lock().remove(&base);
            let _ = self
                .world
                .mapper
                .lock()
                .virtual_free(base, 0, FreeType::RELEASE);
        }
        let bases = self
            .segments
            .drain(..)
            .map(|s| s.base)
            .chain(self.stubs.take());
        for base in bases.collect::<Vec<_>>() {
            let _ = self.world.host.virtual_free(base, 0, FreeType::RELEASE);
            self.world.owners.lock().remove(&base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_reproducible_and_spread() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!((0..10).all(|d| xs.contains(&d)));
        assert!((0..1000).all(|_| (3..=5).contains(&a.between(3, 5))));
    }
}
