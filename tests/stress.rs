//! Stress: 8 threads for a bounded time (3 s; `HOSTMEM_STRESS_SECS` sets
//! more) doing random reserve / commit / decommit / protect / query /
//! release on their own regions and on each other's (a shared registry of
//! live regions; a thread may release another's region, after which the
//! owner's calls on it must fail with `HOST_E_INVALIDOPERATION`), plus
//! `IHostMalloc` traffic on one thread-safe heap shared by all threads
//! (each block filled with its own pattern, checked before it is freed,
//! some blocks freed by another thread than the one that allocated them).
//!
//! At the end: no crash; no lost or doubled region (the registry's regions
//! and the heap's reservations are exactly the manager's, by
//! `statistics().regions` and by a walk of the address space); the
//! statistics equal the sum of what the threads did (calls per method,
//! failures per method and HRESULT); the committed bytes equal the
//! kernel's view of the manager's reservations; and once everything is
//! released (the heap and the manager dropped, every thread joined) the
//! process has as many mappings (`/proc/self/maps` lines) as at the start.
//! That run happens in a process of its own (this test binary re-executed
//! with a filter), so that no other test maps memory while it looks.
//!
//! The same test runs once more under valgrind's memcheck
//! (`eight_threads_are_clean_under_valgrind`: this test binary, re-executed
//! with a filter, for `HOSTMEM_STRESS_VALGRIND_SECS`, 2 s by default): no
//! invalid access, no use of uninitialised memory, no definitely lost
//! block. Under valgrind the mapping count is not compared (valgrind's own
//! `malloc` maps its arenas as the program runs); the native run compares it.
//!
//! Regions are released and reserved under the registry's write lock and
//! changed under its read lock, so a region a thread works on cannot be
//! released and its address handed to someone else (a heap chunk) under
//! its feet.

use hostmem::heap::{HostMalloc, MallocType};
use hostmem::host::{
    HResult, HostConfig, HostError, HostMemoryManager, MemoryCriticalLevel, Method,
};
use hostmem::win32::{AllocationType, FreeType, PAGE_SIZE, Protection};
use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Set (to 1) in the environment of the run under valgrind.
const UNDER_VALGRIND: &str = "HOSTMEM_STRESS_UNDER_VALGRIND";
/// Set (to 1) in the environment of the native run in a process of its
/// own.
const ALONE: &str = "HOSTMEM_STRESS_ALONE";

const THREADS: usize = 8;
const LEVEL: MemoryCriticalLevel = MemoryCriticalLevel::TaskCritical;
const STACK: usize = 256 * 1024;

/// Protections the test commits with: never `PAGE_NOACCESS`, whose
/// committed pages the kernel shows as it shows reserved ones.
const PROTECTIONS: [Protection; 4] = [
    Protection::READONLY,
    Protection::READWRITE,
    Protection::EXECUTE_READ,
    Protection::EXECUTE_READWRITE,
];

#[derive(Clone, Copy, Debug)]
struct Region {
    id: u64,
    owner: usize,
    size: usize,
}

#[derive(Default)]
struct Registry {
    live: HashMap<usize, Region>,
    next_id: u64,
}

/// What a thread did: calls per method, failures per method and HRESULT.
#[derive(Default)]
struct Tally {
    calls: BTreeMap<Method, u64>,
    failures: BTreeMap<(Method, HResult), u64>,
    ops: u64,
    stale_checks: u64,
    foreign_releases: u64,
}

impl Tally {
    fn count<T>(&mut self, method: Method, r: &Result<T, HostError>) {
        *self.calls.entry(method).or_default() += 1;
        if let Err(e) = r {
            *self.failures.entry((method, e.hresult())).or_default() += 1;
        }
        self.ops += 1;
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A live heap block and the byte it is filled with.
#[derive(Clone, Copy)]
struct Block {
    addr: usize,
    size: usize,
    fill: u8,
}

fn fill(b: Block) {
    // SAFETY: the heap handed out `size` writable bytes at `addr`.
    unsafe { std::ptr::write_bytes(b.addr as *mut u8, b.fill, b.size) };
}

fn verify(b: Block) {
    // SAFETY: a live block of `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(b.addr as *const u8, b.size) };
    if let Some(i) = bytes.iter().position(|&x| x != b.fill) {
        panic!(
            "heap block {:#x} ({} bytes) corrupted at +{i}: {:#x}, want {:#x}",
            b.addr, b.size, bytes[i], b.fill
        );
    }
}

struct Shared {
    m: Arc<HostMemoryManager>,
    heap: Arc<HostMalloc>,
    registry: RwLock<Registry>,
    /// Heap blocks handed from one thread to another (freed by the taker).
    exchange: Mutex<Vec<Block>>,
    stop: AtomicBool,
    fills: AtomicU64,
}

fn worker(s: &Shared, me: usize) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((me as u64 + 1) * 0x1234_5678_9abc_def1));
    let mut mine: Vec<(usize, u64)> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let m = &*s.m;
    while !s.stop.load(Ordering::Relaxed) {
        match rng.below(20) {
            // Reserve (sometimes committed at once), registered atomically.
            0..=2 => {
                if mine.len() >= 24 {
                    continue;
                }
                let size = (1 + rng.below(8)) * 0x1_0000 - rng.below(2) * 0x800;
                let commit = rng.below(3) == 0;
                let kind = if commit {
                    AllocationType::RESERVE | AllocationType::COMMIT
                } else {
                    AllocationType::RESERVE
                };
                let p = PROTECTIONS[rng.below(4)];
                let mut reg = s.registry.write().unwrap();
                let r = m.virtual_alloc(0, size, kind, p, LEVEL);
                t.count(Method::VirtualAlloc, &r);
                let base = r.expect("reserve");
                reg.next_id += 1;
                let id = reg.next_id;
                let region = Region {
                    id,
                    owner: me,
                    size: size.div_ceil(PAGE_SIZE) * PAGE_SIZE,
                };
                assert!(
                    reg.live.insert(base, region).is_none(),
                    "{base:#x} handed out twice"
                );
                mine.push((base, id));
            }
            // Commit, decommit, protect, query a random range of a region:
            // one of mine mostly, anyone's sometimes.
            3..=10 => {
                let reg = s.registry.read().unwrap();
                let pick = if !mine.is_empty() && rng.below(4) != 0 {
                    let (base, _) = mine[rng.below(mine.len())];
                    reg.live.get(&base).map(|r| (base, *r))
                } else if !reg.live.is_empty() {
                    let i = rng.below(reg.live.len());
                    reg.live.iter().nth(i).map(|(&b, r)| (b, *r))
                } else {
                    None
                };
                let Some((base, region)) = pick else { continue };
                let pages = region.size / PAGE_SIZE;
                let first = rng.below(pages);
                let count = 1 + rng.below(pages - first);
                let (addr, len) = (base + first * PAGE_SIZE, count * PAGE_SIZE);
                let p = PROTECTIONS[rng.below(4)];
                match rng.below(4) {
                    0 => {
                        let r = m.virtual_alloc(addr, len, AllocationType::COMMIT, p, LEVEL);
                        t.count(Method::VirtualAlloc, &r);
                        assert_eq!(r, Ok(addr), "commit of a live region");
                    }
                    1 => {
                        let r = m.virtual_free(addr, len, FreeType::DECOMMIT);
                        t.count(Method::VirtualFree, &r);
                        assert_eq!(r, Ok(()), "decommit of a live region");
                    }
                    2 => {
                        // Fails where a page is not committed.
                        let r = m.virtual_protect(addr, len, p);
                        t.count(Method::VirtualProtect, &r);
                        if let Err(e) = r {
                            assert_eq!(e.hresult().bits(), 0x8007_01E7, "protect: {e:?}");
                        }
                    }
                    _ => {
                        let r = m.virtual_query(addr);
                        t.count(Method::VirtualQuery, &r);
                        let info = r.expect("query");
                        assert_eq!(info.allocation_base, base);
                        assert!(info.base_address + info.region_size <= base + region.size);
                    }
                }
            }
            // Release one of mine, or someone else's.
            11 => {
                let mut reg = s.registry.write().unwrap();
                let target = if rng.below(3) == 0 && !reg.live.is_empty() {
                    let i = rng.below(reg.live.len());
                    reg.live.iter().nth(i).map(|(&b, r)| (b, *r))
                } else if !mine.is_empty() {
                    let (base, _) = mine[rng.below(mine.len())];
                    reg.live.get(&base).map(|r| (base, *r))
                } else {
                    None
                };
                let Some((base, region)) = target else {
                    continue;
                };
                let r = m.virtual_free(base, 0, FreeType::RELEASE);
                t.count(Method::VirtualFree, &r);
                assert_eq!(r, Ok(()), "release of a live region {base:#x}");
                reg.live.remove(&base);
                if region.owner == me {
                    mine.retain(|&(b, _)| b != base);
                } else {
                    t.foreign_releases += 1;
                }
            }
            // Notice a region another thread released: calls on it fail
            // with HOST_E_INVALIDOPERATION (unless its address was given to
            // one of the heap's reservations meanwhile). The write lock
            // keeps the other threads from reserving during the check.
            12 => {
                #[allow(clippy::readonly_write_lock)]
                let reg = s.registry.write().unwrap();
                let Some(i) = mine
                    .iter()
                    .position(|&(b, id)| reg.live.get(&b).is_none_or(|r| r.id != id))
                else {
                    continue;
                };
                let (base, _) = mine.swap_remove(i);
                if reg.live.contains_key(&base) || m.owns(base) {
                    continue; // the address is someone else's now
                }
                let r = m.virtual_protect(base, PAGE_SIZE, Protection::READWRITE);
                t.count(Method::VirtualProtect, &r);
                let r2 = m.virtual_alloc(
                    base,
                    PAGE_SIZE,
                    AllocationType::COMMIT,
                    Protection::READWRITE,
                    LEVEL,
                );
                t.count(Method::VirtualAlloc, &r2);
                let r3 = m.virtual_free(base, PAGE_SIZE, FreeType::DECOMMIT);
                t.count(Method::VirtualFree, &r3);
                if !m.owns(base) {
                    let want = Err(HResult::HOST_E_INVALIDOPERATION);
                    assert_eq!(r.map(drop).map_err(HostError::hresult), want);
                    assert_eq!(r2.map(drop).map_err(HostError::hresult), want);
                    assert_eq!(r3.map_err(HostError::hresult), want);
                    t.stale_checks += 1;
                }
            }
            // The heap: allocate and fill, or check and free.
            _ => {
                if blocks.len() < 64 && rng.below(2) == 0 {
                    let size = match rng.below(16) {
                        0 => 16 * 1024 + rng.below(64 * 1024),
                        1 => 0,
                        _ => 1 + rng.below(2048),
                    };
                    let r = s.heap.alloc(size, LEVEL);
                    t.count(Method::MallocAlloc, &r);
                    let addr = r.expect("heap alloc");
                    assert_eq!(addr % 16, 0);
                    let b = Block {
                        addr,
                        size,
                        fill: (s.fills.fetch_add(1, Ordering::Relaxed) % 251) as u8 + 1,
                    };
                    fill(b);
                    if rng.below(8) == 0 {
                        s.exchange.lock().unwrap().push(b);
                    } else {
                        blocks.push(b);
                    }
                } else {
                    let b = if rng.below(4) == 0 {
                        s.exchange.lock().unwrap().pop()
                    } else if !blocks.is_empty() {
                        Some(blocks.swap_remove(rng.below(blocks.len())))
                    } else {
                        None
                    };
                    let Some(b) = b else { continue };
                    verify(b);
                    let r = s.heap.free(b.addr);
                    t.count(Method::MallocFree, &r);
                    assert_eq!(r, Ok(()));
                }
            }
        }
    }
    for b in blocks {
        verify(b);
        let r = s.heap.free(b.addr);
        t.count(Method::MallocFree, &r);
        assert_eq!(r, Ok(()));
    }
    t
}

fn map_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count()
}

/// The kernel's bytes with some access in `[start, end)`.
fn kernel_accessible(maps: &str, start: usize, end: usize) -> usize {
    let mut n = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let (s, e) = range.split_once('-').unwrap();
        let s = usize::from_str_radix(s, 16).unwrap();
        let e = usize::from_str_radix(e, 16).unwrap();
        let (lo, hi) = (s.max(start), e.min(end));
        if lo < hi && !perms.starts_with("---") {
            n += hi - lo;
        }
    }
    n
}

/// Uses the C heap from many threads at once, so that the C library sets
/// up its per-thread arenas before the mapping count is taken.
fn churn_c_heap(barrier: &std::sync::Barrier) -> usize {
    barrier.wait();
    let mut total = 0;
    for i in 0..2000 {
        let v = vec![i as u8; 64 + i % 4096];
        total += std::hint::black_box(v).len();
    }
    barrier.wait();
    total
}

fn spawn_all<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + Clone + 'static) -> Vec<T> {
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let f = f.clone();
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || f(i))
                .unwrap()
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect()
}

/// Runs [`stress_run`] in a process of its own: this test binary,
/// re-executed with a filter that runs this test alone. The mapping count
/// at the end is a process-wide measure, and the other test of this binary
/// maps memory while it runs: it starts valgrind with `posix_spawn`, whose
/// child runs on a 36 KiB stack the C library maps for the spawn and
/// unmaps after it (and that merges with an adjacent thread stack), and
/// its thread's start and exit, the harness's bookkeeping when it
/// finishes, map and unmap memory too. Such a mapping caught by the first
/// or the last look at `/proc/self/maps` is no leak of hostmem's, yet
/// cannot be told from one by its shape; in a process that runs nothing
/// else there is none.
#[test]
fn eight_threads_lose_nothing() {
    if std::env::var_os(UNDER_VALGRIND).is_some() || std::env::var_os(ALONE).is_some() {
        stress_run();
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "eight_threads_lose_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        .env("RUST_BACKTRACE", "1");
    let output = command.output().expect("running the stress test alone");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "the stress run in a process of its own failed:\n{command:?}\nstatus: {}\n\
         --- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        output.status
    );
    for line in stderr.lines().filter(|l| l.starts_with("stress: ")) {
        eprintln!("{line}");
    }
}

/// The stress run itself (see the module's documentation), in a process
/// that runs nothing else.
fn stress_run() {
    let secs: u64 = std::env::var("HOSTMEM_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // Warm up: threads of the same stack size, each using the C heap, so
    // that the C library's cached thread stacks and malloc arenas exist
    // before the mapping count is taken (they outlive their threads).
    {
        let barrier = Arc::new(std::sync::Barrier::new(THREADS + 1));
        let b = barrier.clone();
        let extra = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || churn_c_heap(&b))
            .unwrap();
        spawn_all(move |_| churn_c_heap(&barrier));
        extra.join().unwrap();
    }
    let start_lines = map_lines();
    let start_text = std::fs::read_to_string("/proc/self/maps").unwrap();

    let m = HostMemoryManager::new(HostConfig::default()).unwrap();
    let heap = m.create_malloc(MallocType::THREADSAFE).expect("heap");
    let shared = Arc::new(Shared {
        m: m.clone(),
        heap,
        registry: RwLock::default(),
        exchange: Mutex::default(),
        stop: AtomicBool::new(false),
        fills: AtomicU64::new(0),
    });
    let stopper = {
        let s = shared.clone();
        std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                std::thread::sleep(Duration::from_secs(secs));
                s.stop.store(true, Ordering::Relaxed);
            })
            .unwrap()
    };
    let began = Instant::now();
    let tallies = {
        let s = shared.clone();
        spawn_all(move |i| worker(&s, i))
    };
    stopper.join().unwrap();
    let elapsed = began.elapsed();

    // Blocks left in the exchange.
    let mut expected_calls: BTreeMap<Method, u64> = BTreeMap::new();
    let mut expected_failures: BTreeMap<(Method, HResult), u64> = BTreeMap::new();
    let mut ops = 0;
    let (mut stale, mut foreign) = (0, 0);
    *expected_calls.entry(Method::CreateMalloc).or_default() += 1;
    for t in &tallies {
        for (&k, &n) in &t.calls {
            *expected_calls.entry(k).or_default() += n;
        }
        for (&k, &n) in &t.failures {
            *expected_failures.entry(k).or_default() += n;
        }
        ops += t.ops;
        stale += t.stale_checks;
        foreign += t.foreign_releases;
    }
    for b in std::mem::take(&mut *shared.exchange.lock().unwrap()) {
        verify(b);
        let r = shared.heap.free(b.addr);
        assert_eq!(r, Ok(()));
        *expected_calls.entry(Method::MallocFree).or_default() += 1;
        ops += 1;
    }

    // No region lost or doubled.
    let registry: BTreeMap<usize, Region> = shared
        .registry
        .read()
        .unwrap()
        .live
        .iter()
        .map(|(&b, &r)| (b, r))
        .collect();
    let usage = shared.heap.usage();
    let stats = m.statistics();
    let heap_regions = usage.chunks + usage.large_blocks;
    assert_eq!(
        stats.regions,
        registry.len() + heap_regions,
        "regions: manager {}, registry {}, heap {heap_regions}",
        stats.regions,
        registry.len()
    );
    let walk: Vec<(usize, usize)> = m
        .with_address_space(|s| s.reservations().map(|r| (r.base(), r.size())).collect())
        .unwrap();
    assert_eq!(walk.len(), stats.regions);
    for (&base, r) in &registry {
        assert!(
            walk.contains(&(base, r.size)),
            "registry region {base:#x}+{:#x} is not the manager's",
            r.size
        );
    }
    let not_registered = walk
        .iter()
        .filter(|(b, _)| !registry.contains_key(b))
        .count();
    assert_eq!(
        not_registered, heap_regions,
        "reservations nobody accounts for"
    );

    // Statistics equal the sum of what the threads did.
    assert_eq!(stats.calls, expected_calls, "calls per method");
    assert_eq!(
        stats.failures, expected_failures,
        "failures per method and HRESULT"
    );

    // Committed bytes equal the kernel's view of the manager's reservations.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let kernel: usize = walk
        .iter()
        .map(|&(b, n)| kernel_accessible(&maps, b, b + n))
        .sum();
    assert_eq!(
        stats.committed_bytes, kernel,
        "committed bytes vs the kernel"
    );
    let reserved: usize = walk.iter().map(|&(_, n)| n).sum();
    assert_eq!(stats.reserved_bytes, reserved);

    // Release everything.
    for &base in registry.keys() {
        assert_eq!(m.virtual_free(base, 0, FreeType::RELEASE), Ok(()));
    }
    drop(tallies);
    let heap = Arc::try_unwrap(shared).ok().expect("threads joined").heap;
    drop(heap);
    let stats = m.statistics();
    assert_eq!(
        (stats.regions, stats.committed_bytes, stats.reserved_bytes),
        (0, 0, 0)
    );
    drop(m);
    let end_lines = map_lines();
    eprintln!(
        "stress: {THREADS} threads, {:.1} s, {ops} operations ({} calls counted by the manager), \
         {foreign} regions released by another thread, {stale} stale-region checks; \
         mappings {start_lines} at the start, {end_lines} at the end",
        elapsed.as_secs_f64(),
        stats.calls.values().sum::<u64>()
    );
    // The slack allowed: the C library's malloc arenas that outlive the
    // threads and that the warm-up did not happen to create, or whose
    // heap grew (64 MiB-aligned, 64 MiB in all: a read-write head and a
    // PROT_NONE tail, both new lines). No thread stack is new: the
    // warm-up ran as many `STACK`-sized threads at once as the run does,
    // and the C library hands their cached stacks (all of one size) to
    // the run's threads. Anything else new is a leak: this process runs
    // nothing but this test (see `eight_threads_lose_nothing`), so
    // nothing else maps memory meanwhile.
    let end_text = std::fs::read_to_string("/proc/self/maps").unwrap();
    fn parse(l: &str) -> (usize, usize, &str) {
        let mut f = l.split_whitespace();
        let (a, b) = f.next().unwrap().split_once('-').unwrap();
        let a = usize::from_str_radix(a, 16).unwrap();
        let b = usize::from_str_radix(b, 16).unwrap();
        (a, b, f.next().unwrap())
    }
    let new: Vec<(usize, usize, &str)> = end_text
        .lines()
        .filter(|l| !start_text.lines().any(|s| s == *l))
        .map(parse)
        .collect();
    const ARENA: usize = 64 << 20;
    let explained = |&(a, b, perms): &(usize, usize, &str)| {
        let arena_head = perms == "rw-p"
            && a.is_multiple_of(ARENA)
            && new
                .iter()
                .any(|&(c, d, p)| c == b && p == "---p" && d == a + ARENA);
        let arena_tail = perms == "---p"
            && b.is_multiple_of(ARENA)
            && new
                .iter()
                .any(|&(c, d, p)| d == a && p == "rw-p" && c == b - ARENA);
        arena_head || arena_tail
    };
    let unexplained: Vec<String> = new
        .iter()
        .filter(|m| !explained(m))
        .map(|&(a, b, p)| format!("{a:#x}-{b:#x} {p}"))
        .collect();
    let slack = new.len() - unexplained.len();
    if std::env::var_os(UNDER_VALGRIND).is_some() {
        eprintln!(
            "stress: under valgrind, whose malloc maps arenas of its own: {} new mappings not \
             compared",
            unexplained.len()
        );
        return;
    }
    eprintln!(
        "stress: mappings {start_lines} at the start, {end_lines} at the end \
         ({slack} of them C-library malloc arenas)"
    );
    assert!(
        unexplained.is_empty(),
        "mappings left behind: {unexplained:#?}"
    );
    assert!(end_lines <= start_lines + slack, "mappings left behind");
}

/// A number after `label` in `text` ("<label>12,345"), commas allowed.
fn number_after(text: &str, label: &str) -> Option<u64> {
    let (_, rest) = text.split_once(label)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// [`eight_threads_lose_nothing`] under valgrind's memcheck: this test
/// binary, re-executed with a filter that runs that test alone, for
/// `HOSTMEM_STRESS_VALGRIND_SECS` (2 s by default; under valgrind a
/// thread does about a twentieth of its native work). It must pass, with
/// no memcheck error and no definitely lost byte. Skipped with a note when
/// valgrind is not installed or `HOSTMEM_TEST_VALGRIND=0`.
/// Says, where `cargo test`'s output shows it (stderr is not captured when
/// written directly), that a run was skipped.
fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}

#[test]
fn eight_threads_are_clean_under_valgrind() {
    if std::env::var_os("HOSTMEM_TEST_VALGRIND").is_some_and(|v| v == "0") {
        skipped("the stress run under valgrind (HOSTMEM_TEST_VALGRIND=0)");
        return;
    }
    if !Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        skipped("the stress run under valgrind (valgrind is not installed)");
        return;
    }
    let secs = std::env::var("HOSTMEM_STRESS_VALGRIND_SECS").unwrap_or_else(|_| "2".into());
    let exe = std::env::current_exe().expect("this test binary");
    let mut command = Command::new("valgrind");
    command
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "eight_threads_lose_nothing",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOSTMEM_STRESS_SECS", &secs)
        .env(UNDER_VALGRIND, "1")
        .env("RUST_BACKTRACE", "1");
    let output = command.output().expect("running valgrind");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let details = format!(
        "{command:?}\nstatus: {}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
        output.status
    );
    assert!(
        output.status.success(),
        "the stress run under valgrind failed:\n{details}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the stress test did not run:\n{details}"
    );
    let ops = stderr
        .lines()
        .find(|line| line.starts_with("stress: ") && line.contains(" operations"))
        .and_then(|line| number_after(line, " s, "))
        .unwrap_or_else(|| panic!("no operation count from the stress run:\n{details}"));
    let errors = number_after(&stderr, "ERROR SUMMARY: ")
        .unwrap_or_else(|| panic!("no ERROR SUMMARY from valgrind:\n{details}"));
    let definitely_lost = if stderr.contains("All heap blocks were freed") {
        0
    } else {
        number_after(&stderr, "definitely lost: ")
            .unwrap_or_else(|| panic!("no LEAK SUMMARY from valgrind:\n{details}"))
    };
    assert_eq!(errors, 0, "memcheck errors:\n{details}");
    assert_eq!(definitely_lost, 0, "definitely lost bytes:\n{details}");
    assert!(ops > 0, "the stress run did nothing:\n{details}");
    println!(
        "stress under valgrind: {THREADS} threads, {secs} s, {ops} operations, \
         {errors} memcheck errors, {definitely_lost} bytes definitely lost"
    );
}
