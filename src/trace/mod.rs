//! Traces: a record of every call a manager took, and its replay.
//!
//! With `HOSTMEM_TRACE=path` set, every manager the process creates
//! appends one line per call to `path` — through any face, since the COM
//! and flat C faces call the manager — with the time, the thread, the
//! method, the arguments (addresses relative to the regions the trace
//! named: `r3+0x1000`) and the result; when it is unset, a manager pays
//! one branch on an empty `Option` a call. [`Trace::parse`] reads a trace
//! back, checking every line, and [`replay()`] runs it against fresh
//! managers and reports every result that differs.
//!
//! What is recorded: the `IHostMemoryManager` methods, `Shutdown`, the
//! notifications delivered (`OnMemoryNotification`), and the page calls
//! `IHostMalloc` heaps make (`Heap.VirtualAlloc`, `Heap.VirtualFree`) —
//! the heaps' own `Alloc`/`Free` are not, since their page calls are what
//! decides every later result (the budget, the map).
//!
//! Failures: recording never changes a call's result. A trace that
//! cannot be created, or a line that cannot be written (a full disk), is
//! said once on stderr — if stderr can be written; a closed or full stderr
//! is ignored — and recording stops; [`TraceSink::env_status`] tells a
//! program that needs its trace (the CLI) that it failed.
//!
//! Threads: each call's sequence number is taken under the manager's
//! lock, so replaying on one thread in sequence order meets the states the
//! manager met, whatever the interleaving was; the lines themselves may be
//! written out of order. What the kernel rather than the manager decides
//! (the exact addresses; queries of memory the manager does not hold; the
//! machine's load) is compared by name or by HRESULT only.
//!
//! - the line format: [`record`];
//! - the parser, with its errors by line: [`Trace`];
//! - naming addresses by region, both ways: [`SymbolTable`];
//! - recording: [`Tracer`] and [`TraceSink`]; whether it works:
//!   [`TraceStatus`];
//! - replay: [`Replayer`] and [`replay()`].
#![forbid(unsafe_code)]

mod names;
mod parse;
pub mod record;
mod replay;
mod symbols;
mod writer;

pub use names::{available_name, hresult_to_string, level_name};
pub use parse::{Trace, TraceError, TraceErrorKind, parse_record};
pub use record::{Addr, Call, ManagerSettings, Outcome, QueryAnswer, Record, Sym, TRACE_HEADER};
pub use replay::{Difference, Maker, ReplayReport, ReplayedManager, Replayer, Speed, replay};
pub use symbols::SymbolTable;
pub use writer::{TRACE_ENV, TraceSink, TraceStatus, Traced, Tracer};
