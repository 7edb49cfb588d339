//! Recording: a [`TraceSink`] (one file a process, one line a call) and
//! a [`Tracer`] for each manager that writes to it.
//!
//! A call's sequence number is taken while the manager's lock is held
//! ([`Tracer::stamp`]), so the numbers give the order in which the manager
//! really took the calls even when threads write their lines out of that
//! order; a replay in sequence order meets the same states.

use super::record::{Call, ManagerSettings, Outcome, Record, TRACE_HEADER};
use super::symbols::SymbolTable;
use crate::host::{HostConfig, HostError, MemoryAvailable, MemoryLoad, MemoryNotificationCallback};
use crate::sync::thread_slot;
use crate::win32::{MemoryBasicInformation, Protection};
use parking_lot::Mutex;
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The environment variable that turns recording on: the path of the
/// trace to write.
pub const TRACE_ENV: &str = "HOSTMEM_TRACE";

/// Says `message` on stderr, as one line, if stderr takes it: a closed or
/// full stderr (`2>/dev/full`) is no reason to fail, let alone panic.
fn report(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "hostmem: {message}");
}

/// A trace being written: where the lines go, the clock, the sequence
/// numbers and the manager numbers of every manager that writes to it.
///
/// Tracing never fails a call: the first line that cannot be written
/// (a full disk, a closed file) breaks the trace, which is said once on
/// stderr (if stderr can be written) and kept in [`status`](Self::status);
/// no line is written after it.
pub struct TraceSink {
    out: Mutex<Box<dyn Write + Send>>,
    path: PathBuf,
    start: Instant,
    seq: AtomicU64,
    managers: AtomicU32,
    broken: AtomicBool,
    /// Why the trace broke, once it has.
    error: OnceLock<String>,
}

/// The `HOSTMEM_TRACE` sink: none asked for, made, or the path and the
/// error of one that could not be created.
type EnvSink = Result<Option<Arc<TraceSink>>, (PathBuf, String)>;

/// Whether a trace is being written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceStatus {
    /// No trace was asked for (`HOSTMEM_TRACE` unset or empty).
    Off,
    /// Every call is being recorded to this path.
    Recording(PathBuf),
    /// The trace at this path could not be created, or a line could not
    /// be written to it; nothing more is recorded. The calls themselves
    /// are unaffected.
    Failed {
        /// The trace's path.
        path: PathBuf,
        /// What went wrong, as the OS said it.
        error: String,
    },
}

impl TraceSink {
    /// Creates (or truncates) the trace at `path` and writes its header.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Arc<Self>> {
        let path = path.as_ref();
        Self::with_writer(path, File::create(path)?)
    }

    /// A trace written to `out` (any writer: a file, a pipe, a buffer),
    /// named `path` in reports; writes its header.
    pub fn with_writer(
        path: impl Into<PathBuf>,
        mut out: impl Write + Send + 'static,
    ) -> io::Result<Arc<Self>> {
        writeln!(out, "{TRACE_HEADER}")?;
        writeln!(
            out,
            "# seq time thread manager method arguments => result (hostmem {}, pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        )?;
        Ok(Arc::new(Self {
            out: Mutex::new(Box::new(out)),
            path: path.into(),
            start: Instant::now(),
            seq: AtomicU64::new(0),
            managers: AtomicU32::new(0),
            broken: AtomicBool::new(false),
            error: OnceLock::new(),
        }))
    }

    /// The process's sink named by `HOSTMEM_TRACE`, created on first use;
    /// `None` when the variable is unset or empty, or the file cannot be
    /// created (said once on stderr, if stderr can be written, and kept
    /// for [`env_status`](Self::env_status)).
    pub fn from_env() -> Option<Arc<Self>> {
        Self::env_sink().as_ref().ok().cloned().flatten()
    }

    /// The `HOSTMEM_TRACE` sink: `Ok(None)` when none is asked for, the
    /// path and the error when it cannot be created.
    fn env_sink() -> &'static EnvSink {
        static SINK: OnceLock<EnvSink> = OnceLock::new();
        SINK.get_or_init(|| {
            let Some(path) = std::env::var_os(TRACE_ENV).filter(|p| !p.is_empty()) else {
                return Ok(None);
            };
            let path = PathBuf::from(path);
            Self::create(&path).map(Some).map_err(|e| {
                report(format_args!(
                    "{TRACE_ENV}={}: cannot create the trace: {e}",
                    path.display()
                ));
                (path, e.to_string())
            })
        })
    }

    /// Whether the process's `HOSTMEM_TRACE` trace is being written
    /// (creating it now if no manager did yet): for a program that must
    /// not go on when the trace it was asked for cannot be written.
    pub fn env_status() -> TraceStatus {
        match Self::env_sink() {
            Ok(None) => TraceStatus::Off,
            Ok(Some(sink)) => sink.status(),
            Err((path, error)) => TraceStatus::Failed {
                path: path.clone(),
                error: error.clone(),
            },
        }
    }

    /// Whether this trace is still being written.
    pub fn status(&self) -> TraceStatus {
        match self.error.get() {
            None => TraceStatus::Recording(self.path.clone()),
            Some(error) => TraceStatus::Failed {
                path: self.path.clone(),
                error: error.clone(),
            },
        }
    }

    /// The trace's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Appends one line (a single write, so lines never mix). The first
    /// failure breaks the trace: said once, and nothing written after it.
    fn write(&self, record: &Record) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let line = format!("{record}\n");
        let mut out = self.out.lock();
        // Checked again under the lock: no write after the one that failed.
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = out.write_all(line.as_bytes()) {
            self.break_trace(&e.to_string());
        }
    }

    /// Marks the trace broken (the first time: keeps `error` and says it).
    fn break_trace(&self, error: &str) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            let _ = self.error.set(error.to_owned());
            report(format_args!(
                "{}: cannot write the trace, recording stopped: {error}",
                self.path.display()
            ));
        }
    }
}

thread_local! {
    /// The sequence number of the call this thread is in, taken under the
    /// manager's lock.
    static STAMP: Cell<Option<u64>> = const { Cell::new(None) };
}

/// A call's result as a trace records it.
pub trait Traced: Sized {
    /// The outcome of `result`, with addresses as they are.
    fn outcome(result: &Result<Self, HostError>) -> Outcome<usize> {
        match result {
            Ok(value) => value.success(),
            Err(e) => Outcome::Failed(e.hresult()),
        }
    }

    /// The outcome of a success returning `self`.
    fn success(&self) -> Outcome<usize>;
}

impl Traced for () {
    fn success(&self) -> Outcome<usize> {
        Outcome::Ok
    }
}

impl Traced for usize {
    fn success(&self) -> Outcome<usize> {
        Outcome::Address(*self)
    }
}

impl Traced for MemoryBasicInformation {
    fn success(&self) -> Outcome<usize> {
        Outcome::Query((*self).into())
    }
}

impl Traced for Protection {
    fn success(&self) -> Outcome<usize> {
        Outcome::OldProtect(*self)
    }
}

impl Traced for MemoryLoad {
    fn success(&self) -> Outcome<usize> {
        Outcome::Load {
            used: self.used_bytes,
            total: self.total_bytes,
        }
    }
}

impl From<&HostConfig> for ManagerSettings {
    fn from(c: &HostConfig) -> Self {
        Self {
            budget: c.budget_bytes,
            low_percent: c.low_memory_percent,
            high_percent: c.high_memory_percent,
            level_percent: c.critical_level_percent,
        }
    }
}

/// What one manager records: its number in the trace and the regions it
/// named.
pub struct Tracer {
    sink: Arc<TraceSink>,
    manager: u32,
    table: Mutex<SymbolTable>,
}

impl Tracer {
    /// A tracer for a new manager with `config`, writing to `sink`; writes
    /// the `CreateManager` line.
    pub fn new(sink: Arc<TraceSink>, config: &HostConfig) -> Self {
        let manager = sink.managers.fetch_add(1, Ordering::Relaxed) + 1;
        let tracer = Self {
            sink,
            manager,
            table: Mutex::new(SymbolTable::new()),
        };
        let time_us = tracer.sink.now_us();
        let seq = tracer.sink.next_seq();
        tracer.write(
            seq,
            time_us,
            Call::CreateManager(config.into()),
            Outcome::Ok,
        );
        tracer
    }

    /// A tracer on the process's `HOSTMEM_TRACE` sink, if recording is on.
    pub fn from_env(config: &HostConfig) -> Option<Self> {
        TraceSink::from_env().map(|sink| Self::new(sink, config))
    }

    /// The manager's number in the trace.
    pub fn manager(&self) -> u32 {
        self.manager
    }

    /// Takes the sequence number of the call the thread is in, if it has
    /// none yet. Call it with the manager's shared lock held.
    pub fn stamp(&self) {
        STAMP.with(|s| {
            if s.get().is_none() {
                s.set(Some(self.sink.next_seq()));
            }
        });
    }

    /// Takes a new sequence number for the call the thread is in, whether
    /// or not it had one. Call it with the manager's exclusive lock held: a
    /// call that looked under the shared lock first (a refusal pre-check)
    /// takes effect here, and other threads' calls may have run between
    /// the two, so its place in the order is this one.
    pub fn restamp(&self) {
        STAMP.set(Some(self.sink.next_seq()));
    }

    /// Runs a call and records it: `call` as the manager got it, and what
    /// `run` returned.
    pub fn trace<T: Traced>(
        &self,
        call: Call<usize>,
        run: impl FnOnce() -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        let time_us = self.sink.now_us();
        // A callback may call the manager again inside this call: keep the
        // outer call's number aside meanwhile.
        let outer = STAMP.take();
        let result = run();
        let seq = STAMP.take().unwrap_or_else(|| self.sink.next_seq());
        STAMP.set(outer);
        // The call is done: whatever recording it does, its result stands.
        self.write(seq, time_us, call, T::outcome(&result));
        result
    }

    /// Records one line; never fails and never panics (a panic while
    /// recording breaks the trace instead).
    fn write(&self, seq: u64, time_us: u64, call: Call<usize>, outcome: Outcome<usize>) {
        let write = AssertUnwindSafe(|| {
            let (call, outcome) = self.table.lock().record(seq, call, outcome, None);
            self.sink.write(&Record {
                seq,
                time_us,
                thread: thread_slot() as u32 + 1,
                manager: self.manager,
                call,
                outcome,
            });
        });
        if catch_unwind(write).is_err() {
            self.sink.break_trace("a panic while recording a call");
        }
    }

    /// The status of the trace this manager records to.
    pub fn status(&self) -> TraceStatus {
        self.sink.status()
    }

    /// `callback`, recording each notification it is given.
    pub fn wrap_callback(
        &self,
        callback: Arc<dyn MemoryNotificationCallback>,
    ) -> Arc<dyn MemoryNotificationCallback> {
        Arc::new(RecordingCallback {
            sink: self.sink.clone(),
            manager: self.manager,
            inner: callback,
        })
    }
}

struct RecordingCallback {
    sink: Arc<TraceSink>,
    manager: u32,
    inner: Arc<dyn MemoryNotificationCallback>,
}

impl MemoryNotificationCallback for RecordingCallback {
    fn on_memory_notification(&self, state: MemoryAvailable) {
        self.sink.write(&Record {
            seq: self.sink.next_seq(),
            time_us: self.sink.now_us(),
            thread: thread_slot() as u32 + 1,
            manager: self.manager,
            call: Call::OnMemoryNotification { state },
            outcome: Outcome::Event,
        });
        self.inner.on_memory_notification(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostConfig;
    use crate::trace::Trace;

    fn decommit(address: usize) -> Call<usize> {
        Call::VirtualFree {
            heap: false,
            address,
            size: 0x1000,
            free_type: crate::win32::FreeType::DECOMMIT,
        }
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A call that looked under the shared lock, then waited for the
    /// exclusive one while another thread's call ran, takes effect after
    /// that call: its sequence number must come after it, or a replay in
    /// sequence order applies the two the other way round.
    #[test]
    fn a_call_is_ordered_where_it_took_effect_not_where_it_first_looked() {
        let out = Shared::default();
        let sink = TraceSink::with_writer("test", out.clone()).unwrap();
        let tracer = Tracer::new(sink, &HostConfig::default());
        tracer
            .trace(decommit(0x1000), || {
                tracer.stamp(); // the shared pre-check
                std::thread::scope(|s| {
                    s.spawn(|| tracer.trace(decommit(0x2000), || Ok(())).unwrap());
                });
                tracer.restamp(); // the exclusive section
                Ok(())
            })
            .unwrap();
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let trace = Trace::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let order: Vec<String> = trace
            .records
            .iter()
            .map(|(_, r)| r.call.to_string())
            .collect();
        assert_eq!(order.len(), 3, "{text}");
        assert!(order[1].contains("addr=0x2000"), "{text}");
        assert!(order[2].contains("addr=0x1000"), "{text}");
    }
}
