//! Replaying a trace against fresh managers, in sequence order on one
//! thread, and checking every result against the recorded one.
//!
//! Addresses are compared by name: a reservation the trace calls `r3` is
//! whatever this run's third reservation is, and the ranges the runtime
//! reported (`a2`) are stood in for by fresh address space of the same
//! size. What depends on the machine rather than on the manager is
//! compared by HRESULT only: `VirtualQuery` answers about memory the
//! manager does not hold, and `GetMemoryLoad` without a budget.
//! Notifications are compared as the sequence of states each manager
//! delivered.

use super::names::available_name;
use super::parse::Trace;
use super::record::{Addr, Call, ManagerSettings, Outcome, Record, Sym};
use super::symbols::SymbolTable;
use super::writer::Traced;
use crate::engine::AddressSpace;
use crate::host::{HostConfig, HostMemoryManager, MemoryAvailable, MemoryNotificationCallback};
use crate::win32::{AllocationType, FreeType, Protection};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How fast a replay goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Speed {
    /// As fast as possible.
    #[default]
    Fast,
    /// Each call at the time it was recorded (relative to the start).
    Realtime,
}

/// A result that differs from the recorded one.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Difference {
    /// The trace line.
    pub line: usize,
    /// The sequence number.
    pub seq: u64,
    /// The call, as the trace wrote it.
    pub call: String,
    /// The recorded result.
    pub recorded: String,
    /// This run's result.
    pub replayed: String,
}

/// What a replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayReport {
    /// Records read.
    pub records: usize,
    /// Calls made.
    pub calls: usize,
    /// Managers created.
    pub managers: usize,
    /// Results compared in full (addresses by name).
    pub compared_in_full: usize,
    /// Results compared by HRESULT only (the rest depends on the machine).
    pub compared_by_hresult: usize,
    /// Calls by method.
    pub calls_by_method: BTreeMap<String, u64>,
    /// Notifications the trace recorded.
    pub notifications_recorded: usize,
    /// Notifications delivered during the replay.
    pub notifications_replayed: usize,
    /// The results that differ.
    pub differences: Vec<Difference>,
    /// Seconds the trace spans.
    pub trace_seconds: f64,
    /// Seconds the replay took.
    pub wall_seconds: f64,
}

impl ReplayReport {
    /// Whether every result matched.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {} records ({} calls) on {} manager{} in {:.3} s (recorded over {:.3} s)",
            self.records,
            self.calls,
            self.managers,
            if self.managers == 1 { "" } else { "s" },
            self.wall_seconds,
            self.trace_seconds
        )?;
        writeln!(f)?;
        writeln!(f, "  {:<38} {:>8}", "method", "calls")?;
        for (method, n) in &self.calls_by_method {
            writeln!(f, "  {method:<38} {n:>8}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  results compared in full            {:>8}",
            self.compared_in_full
        )?;
        writeln!(
            f,
            "  results compared by HRESULT only    {:>8}  (foreign memory, machine load)",
            self.compared_by_hresult
        )?;
        writeln!(
            f,
            "  notifications recorded / replayed   {:>8} / {}",
            self.notifications_recorded, self.notifications_replayed
        )?;
        writeln!(f)?;
        if self.differences.is_empty() {
            return writeln!(f, "no differences");
        }
        writeln!(f, "{} differences:", self.differences.len())?;
        const SHOWN: usize = 20;
        for d in self.differences.iter().take(SHOWN) {
            writeln!(f, "  line {} (seq {}): {}", d.line, d.seq, d.call)?;
            writeln!(f, "      recorded: {}", d.recorded)?;
            writeln!(f, "      replayed: {}", d.replayed)?;
        }
        if self.differences.len() > SHOWN {
            writeln!(f, "  … and {} more", self.differences.len() - SHOWN)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<MemoryAvailable>>);

impl MemoryNotificationCallback for Recorder {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        self.0.lock().push(state);
    }
}

/// Who made a region, as far as a trace tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Maker {
    /// A hosting call on a thread of the trace.
    Thread(u32),
    /// An `IHostMalloc` heap's page call on a thread of the trace.
    Heap(u32),
    /// The runtime, which reported it.
    Runtime,
}

impl fmt::Display for Maker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Thread(t) => write!(f, "host call (t{t})"),
            Self::Heap(t) => write!(f, "IHostMalloc heap (t{t})"),
            Self::Runtime => f.write_str("runtime mapping"),
        }
    }
}

/// A manager of the replay.
pub struct ReplayedManager {
    /// The manager's number in the trace.
    pub id: u32,
    /// The fresh manager.
    pub host: Arc<HostMemoryManager>,
    /// Its settings.
    pub settings: ManagerSettings,
    /// The names the trace gave its regions, bound to this run's.
    pub table: SymbolTable,
    /// Who made each named region.
    pub makers: HashMap<Sym, Maker>,
    recorder: Arc<Recorder>,
    recorded: Vec<(usize, u64, MemoryAvailable)>,
    stand_ins: HashMap<Sym, usize>,
}

/// Replays a trace record by record.
pub struct Replayer {
    speed: Speed,
    start: Instant,
    managers: BTreeMap<u32, ReplayedManager>,
    /// Address space standing in for the runtime's own mappings.
    stand_in_space: AddressSpace,
    report: ReplayReport,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new(Speed::Fast)
    }
}

fn settings_config(s: &ManagerSettings) -> HostConfig {
    HostConfig {
        budget_bytes: s.budget,
        low_memory_percent: s.low_percent,
        high_memory_percent: s.high_percent,
        critical_level_percent: s.level_percent,
        ..HostConfig::default()
    }
}

fn execute(m: &ReplayedManager, call: Call<usize>) -> Outcome<usize> {
    let host = &m.host;
    match call {
        // A heap's page calls take the heap's path: uncounted, and not
        // refused by the lifecycle (the heap's own call was checked).
        Call::VirtualAlloc {
            heap,
            address,
            size,
            allocation_type,
            protect,
            level,
        } => usize::outcome(&if heap {
            crate::heap::replay_alloc_pages(host, address, size, allocation_type, protect, level)
        } else {
            host.virtual_alloc(address, size, allocation_type, protect, level)
        }),
        Call::VirtualFree {
            heap,
            address,
            size,
            free_type,
        } => <()>::outcome(&if heap {
            crate::heap::replay_free_pages(host, address, size, free_type)
        } else {
            host.virtual_free(address, size, free_type)
        }),
        Call::VirtualQuery { address } => Traced::outcome(&host.virtual_query(address)),
        Call::VirtualProtect {
            address,
            size,
            protect,
        } => Traced::outcome(&host.virtual_protect(address, size, protect)),
        Call::GetMemoryLoad => Traced::outcome(&host.get_memory_load()),
        Call::RegisterMemoryNotificationCallback { set } => {
            let callback = set.then(|| m.recorder.clone() as Arc<dyn MemoryNotificationCallback>);
            <()>::outcome(&host.register_memory_notification(callback))
        }
        Call::NeedsVirtualAddressSpace { address, size } => {
            <()>::outcome(&host.needs_virtual_address_space(address, size))
        }
        Call::AcquiredVirtualAddressSpace { address, size } => {
            <()>::outcome(&host.acquired_virtual_address_space(address, size))
        }
        Call::ReleasedVirtualAddressSpace { address } => {
            <()>::outcome(&host.released_virtual_address_space(address))
        }
        Call::Shutdown => {
            host.shutdown();
            Outcome::Ok
        }
        Call::CreateManager(_) | Call::OnMemoryNotification { .. } => Outcome::Event,
    }
}

/// Whether the whole of a recorded outcome is the manager's to decide
/// (else only its HRESULT is).
fn decided_by_manager(call: &Call<Addr>, recorded: &Outcome<Addr>, s: &ManagerSettings) -> bool {
    match (call, recorded) {
        (Call::VirtualQuery { .. }, Outcome::Query(q)) => {
            matches!(q.allocation_base.sym(), Some(Sym::Reservation(_)))
        }
        (Call::GetMemoryLoad, _) => s.budget.is_some(),
        _ => true,
    }
}

impl Replayer {
    /// A replayer with no managers yet.
    pub fn new(speed: Speed) -> Self {
        Self {
            speed,
            start: Instant::now(),
            managers: BTreeMap::new(),
            stand_in_space: AddressSpace::new(),
            report: ReplayReport::default(),
        }
    }

    /// The managers so far, by number.
    pub fn managers(&self) -> impl Iterator<Item = &ReplayedManager> {
        self.managers.values()
    }

    fn differ(&mut self, line: usize, r: &Record, recorded: String, replayed: String) {
        self.report.differences.push(Difference {
            line,
            seq: r.seq,
            call: r.call.to_string(),
            recorded,
            replayed,
        });
    }

    /// A stand-in for a range the runtime mapped: fresh address space.
    fn stand_in(&mut self, size: usize) -> Option<usize> {
        self.stand_in_space
            .virtual_alloc(0, size, AllocationType::RESERVE, Protection::READONLY)
            .ok()
    }

    fn drop_stand_in(&mut self, base: usize) {
        let _ = self.stand_in_space.virtual_free(base, 0, FreeType::RELEASE);
    }

    /// Replays one record (from line `line`).
    pub fn step(&mut self, line: usize, r: &Record) {
        if self.speed == Speed::Realtime {
            let due = self.start + Duration::from_micros(r.time_us);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        self.report.records += 1;
        self.report.trace_seconds = self.report.trace_seconds.max(r.time_us as f64 / 1e6);
        match r.call {
            Call::CreateManager(settings) => {
                let host = match HostMemoryManager::new(settings_config(&settings)) {
                    Ok(host) => host,
                    Err(e) => {
                        // Only a hand-edited trace gets here: a refused
                        // configuration was never recorded as created.
                        self.differ(line, r, "S_OK".into(), format!("refused: {e}"));
                        return;
                    }
                };
                self.report.managers += 1;
                self.managers.insert(
                    r.manager,
                    ReplayedManager {
                        id: r.manager,
                        host,
                        settings,
                        table: SymbolTable::new(),
                        makers: HashMap::new(),
                        recorder: Arc::default(),
                        recorded: Vec::new(),
                        stand_ins: HashMap::new(),
                    },
                );
                return;
            }
            Call::OnMemoryNotification { state } => {
                if let Some(m) = self.managers.get_mut(&r.manager) {
                    m.recorded.push((line, r.seq, state));
                }
                self.report.notifications_recorded += 1;
                return;
            }
            _ => {}
        }
        if !self.managers.contains_key(&r.manager) {
            let why = format!("no manager m{}", r.manager);
            self.differ(line, r, r.outcome.to_string(), why);
            return;
        }
        // The call's arguments in this run.
        let stand_in = match (r.call, r.outcome) {
            (Call::AcquiredVirtualAddressSpace { size, .. }, Outcome::Named(_)) => {
                match self.stand_in(size) {
                    Some(base) => Some(base),
                    None => {
                        self.differ(
                            line,
                            r,
                            r.outcome.to_string(),
                            "no address space to stand in for the mapping".into(),
                        );
                        return;
                    }
                }
            }
            _ => None,
        };
        let m = self.managers.get_mut(&r.manager).expect("checked above");
        let resolved = r.call.try_map(|a| m.table.resolve(a).ok_or(a));
        let call = match (resolved, stand_in) {
            (Ok(Call::AcquiredVirtualAddressSpace { size, .. }), Some(base)) => {
                Call::AcquiredVirtualAddressSpace {
                    address: base,
                    size,
                }
            }
            (Ok(call), _) => call,
            (Err(unbound), stand_in) => {
                if let Some(base) = stand_in {
                    self.drop_stand_in(base);
                }
                let why = format!(
                    "not replayed: {unbound} is not bound in this run (the call that made it differed)"
                );
                self.differ(line, r, r.outcome.to_string(), why);
                return;
            }
        };
        *self
            .report
            .calls_by_method
            .entry(r.call.method().to_owned())
            .or_default() += 1;
        self.report.calls += 1;
        let m = self.managers.get_mut(&r.manager).expect("checked above");
        let raw = execute(m, call);
        let name = match r.outcome {
            Outcome::Address(Addr::Rel(sym, 0)) => Some(sym),
            Outcome::Named(sym) => Some(sym),
            _ => None,
        };
        let (_, replayed) = m.table.record(r.seq, call, raw, name);
        // Who made what, and the stand-ins to give back.
        let mut unstand = Vec::new();
        match (r.call, replayed) {
            (Call::VirtualAlloc { heap, .. }, Outcome::Address(Addr::Rel(sym, 0))) => {
                let maker = if heap {
                    Maker::Heap(r.thread)
                } else {
                    Maker::Thread(r.thread)
                };
                m.makers.entry(sym).or_insert(maker);
            }
            (Call::AcquiredVirtualAddressSpace { .. }, Outcome::Named(sym)) => {
                m.makers.insert(sym, Maker::Runtime);
                if let Some(base) = stand_in {
                    m.stand_ins.insert(sym, base);
                }
            }
            (Call::AcquiredVirtualAddressSpace { .. }, _) => unstand.extend(stand_in),
            (
                Call::ReleasedVirtualAddressSpace {
                    address: Addr::Rel(sym, 0),
                },
                Outcome::Ok,
            ) => {
                unstand.extend(m.stand_ins.remove(&sym));
            }
            (Call::Shutdown, _) => unstand.extend(m.stand_ins.drain().map(|(_, b)| b)),
            _ => {}
        }
        let full = decided_by_manager(&r.call, &r.outcome, &m.settings);
        for base in unstand {
            self.drop_stand_in(base);
        }
        let same = if full {
            self.report.compared_in_full += 1;
            replayed == r.outcome
        } else {
            self.report.compared_by_hresult += 1;
            replayed.hresult() == r.outcome.hresult()
        };
        if !same {
            self.differ(line, r, r.outcome.to_string(), replayed.to_string());
        }
    }

    /// Ends the replay: compares the notifications and returns the report.
    pub fn finish(mut self) -> ReplayReport {
        let mut differences = Vec::new();
        for m in self.managers.values() {
            let replayed = m.recorder.0.lock().clone();
            self.report.notifications_replayed += replayed.len();
            let recorded: Vec<MemoryAvailable> = m.recorded.iter().map(|n| n.2).collect();
            if recorded != replayed {
                let at = recorded
                    .iter()
                    .zip(&replayed)
                    .position(|(a, b)| a != b)
                    .unwrap_or(recorded.len().min(replayed.len()));
                let (line, seq) = m
                    .recorded
                    .get(at)
                    .or(m.recorded.last())
                    .map_or((0, 0), |n| (n.0, n.1));
                let list = |v: &[MemoryAvailable]| {
                    v.iter()
                        .map(|s| available_name(*s))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                differences.push(Difference {
                    line,
                    seq,
                    call: format!(
                        "notifications of m{} (first difference at #{})",
                        m.id,
                        at + 1
                    ),
                    recorded: format!("[{}]", list(&recorded)),
                    replayed: format!("[{}]", list(&replayed)),
                });
            }
        }
        self.report.differences.extend(differences);
        self.report.wall_seconds = self.start.elapsed().as_secs_f64();
        self.report
    }
}

/// Replays `trace` against fresh managers and reports the differences.
pub fn replay(trace: &Trace, speed: Speed) -> ReplayReport {
    let mut replayer = Replayer::new(speed);
    for (line, record) in &trace.records {
        replayer.step(*line, record);
    }
    replayer.finish()
}
