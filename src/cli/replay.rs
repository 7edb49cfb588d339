//! Reading traces for `replay` and `map`: the built-in default, errors
//! that name the file and the line, and replaying up to a moment to map it.

use super::CliResult;
use super::map::{AddressMap, MapMapping};
use hostmem::trace::{Call, Maker, Replayer, Speed, Sym, Trace};
use std::collections::HashMap;
use std::path::Path;

/// The trace replayed when `hostmem replay` is given none: recorded by
/// `hostmem simulate --seed 42 --steps 400 --threads 2 --budget 64MiB
/// --think 0` (see traces/README.md).
const DEFAULT_TRACE: &str = include_str!("../../traces/simulate-seed42.trace");
const DEFAULT_TRACE_NAME: &str = "traces/simulate-seed42.trace (built in)";

/// The moment of a trace `hostmem map` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum At {
    /// After the last call at the peak of committed memory.
    Peak,
    /// At the end, or just before the first shutdown.
    End,
    /// After the call with this sequence number.
    Seq(u64),
}

pub(super) fn parse_at(text: &str) -> Result<At, String> {
    match text {
        "peak" => Ok(At::Peak),
        "end" => Ok(At::End),
        n => n
            .parse()
            .map(At::Seq)
            .map_err(|_| format!("`{n}` is not a sequence number, `peak` or `end`")),
    }
}

/// Reads and parses a trace; errors name the file and the line.
pub(super) fn load_trace(path: Option<&Path>) -> CliResult<(String, Trace)> {
    let (name, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the trace {}: {e}", p.display()))?,
        ),
        None => (DEFAULT_TRACE_NAME.to_owned(), DEFAULT_TRACE.to_owned()),
    };
    let trace = Trace::parse(&text).map_err(|e| {
        // A recording cut short (a process killed mid-write, a copy
        // interrupted) ends in the middle of a line.
        let last_line = text.lines().count();
        if e.line == last_line && !text.ends_with('\n') {
            format!("{name}: {e}: the trace looks truncated (its last line is incomplete)")
        } else {
            format!("{name}: {e}")
        }
    })?;
    Ok((name, trace))
}

/// A note when a trace looks cut short: a manager it creates never shuts
/// down (the recording stopped before the process let its managers go, or
/// the process kept one alive to its exit, as the flat C API's default
/// manager is).
pub(super) fn truncation_note(trace: &Trace) -> Option<String> {
    let mut open = std::collections::BTreeSet::new();
    for (_, record) in &trace.records {
        match record.call {
            Call::CreateManager(_) => {
                open.insert(record.manager);
            }
            Call::Shutdown => {
                open.remove(&record.manager);
            }
            _ => {}
        }
    }
    if open.is_empty() {
        return None;
    }
    let managers: Vec<String> = open.iter().map(|m| format!("m{m}")).collect();
    let last = trace.records.last().map_or(0, |(_, r)| r.seq);
    Some(format!(
        "note: the trace looks truncated: {} never {} down (it ends at seq {last})",
        managers.join(", "),
        if open.len() == 1 { "shuts" } else { "shut" },
    ))
}

/// The sequence number of the last call after which the trace's managers
/// held the most committed memory between them (before any shutdown).
pub(super) fn peak_of(trace: &Trace) -> Option<u64> {
    let mut replayer = Replayer::new(Speed::Fast);
    let mut peak: Option<(usize, u64)> = None;
    for (line, record) in &trace.records {
        if matches!(record.call, Call::Shutdown) {
            break;
        }
        replayer.step(*line, record);
        let committed = replayer
            .managers()
            .map(|m| m.host.statistics().committed_bytes)
            .sum::<usize>();
        if peak.is_none_or(|(most, _)| committed >= most) {
            peak = Some((committed, record.seq));
        }
    }
    peak.map(|(_, seq)| seq)
}

/// Replays `trace` up to `at` and maps each manager.
pub(super) fn map_of_trace(trace: &Trace, at: At) -> Vec<(u32, AddressMap)> {
    let last = match at {
        At::Peak => peak_of(trace),
        At::End => None,
        At::Seq(seq) => Some(seq),
    };
    let mut replayer = Replayer::new(Speed::Fast);
    for (line, record) in &trace.records {
        let stop = match last {
            Some(seq) => record.seq > seq,
            None => matches!(record.call, Call::Shutdown),
        };
        if stop {
            break;
        }
        replayer.step(*line, record);
    }
    replayer
        .managers()
        .map(|m| {
            let names: HashMap<usize, Sym> = m
                .table
                .live_reservations()
                .map(|(sym, base, _)| (base, sym))
                .collect();
            let owner = |sym: Option<&Sym>| {
                sym.and_then(|s| m.makers.get(s))
                    .map_or_else(|| "unknown".to_owned(), Maker::to_string)
            };
            let mut map = AddressMap::capture(&m.host, |r| {
                let sym = names.get(&r.base());
                (sym.map(ToString::to_string), owner(sym))
            })
            .unwrap_or_default();
            map.mappings = m
                .table
                .live_acquired()
                .map(|(sym, base, size)| MapMapping {
                    name: Some(sym.to_string()),
                    base: base as u64,
                    size: size as u64,
                    owner: owner(Some(&sym)),
                })
                .collect();
            (m.id, map)
        })
        .collect()
}
