//! Reading a trace: every line checked, every error with its line number.

use super::names::{
    available_from_str, flags_from_str, hresult_from_str, level_from_str, parse_number,
};
use super::record::{Addr, Call, ManagerSettings, Outcome, QueryAnswer, Record, Sym, TRACE_HEADER};
use crate::host::HResult;
use crate::win32::AllocationType;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A parsed trace: its records in sequence order, each with the number of
/// the line it came from.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// `(line number, record)`, sorted by sequence number.
    pub records: Vec<(usize, Record)>,
}

/// Why a trace could not be read.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TraceErrorKind {
    /// The first line is not `hostmem-trace 1`.
    MissingHeader,
    /// The header names a version this hostmem does not read.
    UnsupportedVersion(String),
    /// A line ends before a field it needs.
    MissingField(&'static str),
    /// A field that is not what it should be (`field`, the text).
    BadField(&'static str, String),
    /// Two lines with one sequence number (the other line's number).
    DuplicateSequence(u64, usize),
    /// A method the trace format does not have.
    UnknownMethod(String),
    /// An argument the method needs is missing.
    MissingArgument(&'static str),
    /// An argument the method does not take, or one given twice.
    UnexpectedArgument(String),
    /// An argument whose value cannot be read (name, value).
    BadValue(String, String),
    /// A call without `=> result`.
    MissingResult,
    /// A result that cannot be read, or one the method cannot have.
    BadResult(String),
    /// A call on a manager no earlier line created.
    UnknownManager(u32),
    /// A second `CreateManager` for one manager.
    ManagerCreatedTwice(u32),
    /// A region name used before any earlier line made it.
    UnknownRegion(Sym),
    /// A region name given to two regions.
    RegionNamedTwice(Sym),
}

/// A trace error and the line it is on.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: TraceErrorKind,
}

impl fmt::Display for TraceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHeader => write!(f, "not a hostmem trace (expected `{TRACE_HEADER}`)"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported trace version `{v}`"),
            Self::MissingField(field) => write!(f, "the line ends before the {field}"),
            Self::BadField(field, text) => write!(f, "bad {field} `{text}`"),
            Self::DuplicateSequence(seq, other) => {
                write!(f, "sequence number {seq} is used on line {other} too")
            }
            Self::UnknownMethod(m) => write!(f, "unknown method `{m}`"),
            Self::MissingArgument(a) => write!(f, "missing argument `{a}=`"),
            Self::UnexpectedArgument(a) => write!(f, "unexpected argument `{a}`"),
            Self::BadValue(name, value) => write!(f, "bad value `{value}` for `{name}`"),
            Self::MissingResult => f.write_str("missing `=> result`"),
            Self::BadResult(r) => write!(f, "bad result `{r}`"),
            Self::UnknownManager(m) => write!(f, "manager m{m} is used before it is created"),
            Self::ManagerCreatedTwice(m) => write!(f, "manager m{m} is created twice"),
            Self::UnknownRegion(s) => write!(f, "region `{s}` is used before a call made it"),
            Self::RegionNamedTwice(s) => write!(f, "region `{s}` is made twice"),
        }
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for TraceError {}

type Result<T> = std::result::Result<T, TraceErrorKind>;

fn parse_sym(text: &str) -> Option<Sym> {
    let (kind, n) = text.split_at_checked(1)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = n.parse().ok()?;
    match kind {
        "r" => Some(Sym::Reservation(n)),
        "a" => Some(Sym::Acquired(n)),
        _ => None,
    }
}

fn parse_addr(text: &str) -> Option<Addr> {
    if let Some(n) = parse_number(text) {
        return usize::try_from(n).ok().map(Addr::Abs);
    }
    let (sym, off) = match text.split_once('+') {
        Some((sym, off)) => (sym, usize::try_from(parse_number(off)?).ok()?),
        None => (text, 0),
    };
    Some(Addr::Rel(parse_sym(sym)?, off))
}

/// `key=value` pairs, each to be taken once.
struct Args<'a>(Vec<(&'a str, &'a str, bool)>);

impl<'a> Args<'a> {
    fn new(tokens: &[&'a str]) -> Result<Self> {
        let mut pairs: Vec<(&str, &str, bool)> = Vec::new();
        for t in tokens {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| TraceErrorKind::UnexpectedArgument((*t).to_owned()))?;
            if pairs.iter().any(|(seen, _, _)| *seen == k) {
                return Err(TraceErrorKind::UnexpectedArgument((*t).to_owned()));
            }
            pairs.push((k, v, false));
        }
        Ok(Self(pairs))
    }

    fn take<T>(&mut self, name: &'static str, read: impl FnOnce(&str) -> Option<T>) -> Result<T> {
        let pair = self
            .0
            .iter_mut()
            .find(|(k, _, _)| *k == name)
            .ok_or(TraceErrorKind::MissingArgument(name))?;
        pair.2 = true;
        read(pair.1).ok_or_else(|| TraceErrorKind::BadValue(name.to_owned(), pair.1.to_owned()))
    }

    fn addr(&mut self, name: &'static str) -> Result<Addr> {
        self.take(name, parse_addr)
    }

    fn size(&mut self, name: &'static str) -> Result<usize> {
        self.take(name, |v| {
            parse_number(v).and_then(|n| usize::try_from(n).ok())
        })
    }

    fn percent(&mut self, name: &'static str) -> Result<u32> {
        self.take(name, |v| {
            parse_number(v).and_then(|n| u32::try_from(n).ok())
        })
    }

    /// Fails on any argument not taken.
    fn finish(self) -> Result<()> {
        match self.0.iter().find(|(_, _, taken)| !taken) {
            Some((k, v, _)) => Err(TraceErrorKind::UnexpectedArgument(format!("{k}={v}"))),
            None => Ok(()),
        }
    }
}

fn parse_call(method: &str, tokens: &[&str]) -> Result<Call<Addr>> {
    let mut args = Args::new(tokens)?;
    let heap = method.starts_with("Heap.");
    let call = match method {
        "CreateManager" => Call::CreateManager(ManagerSettings {
            budget: args.take("budget", |v| match v {
                "none" => Some(None),
                v => parse_number(v).map(Some),
            })?,
            low_percent: args.percent("low")?,
            high_percent: args.percent("high")?,
            level_percent: args.take("levels", |v| {
                let mut it = v
                    .split(',')
                    .map(|p| parse_number(p).and_then(|n| u32::try_from(n).ok()));
                let levels = [it.next()??, it.next()??, it.next()??];
                it.next().is_none().then_some(levels)
            })?,
        }),
        "VirtualAlloc" | "Heap.VirtualAlloc" => Call::VirtualAlloc {
            heap,
            address: args.addr("addr")?,
            size: args.size("size")?,
            allocation_type: args.take("type", |v| flags_from_str(v, "MEM_"))?,
            protect: args.take("protect", |v| flags_from_str(v, "PAGE_"))?,
            level: args.take("level", level_from_str)?,
        },
        "VirtualFree" | "Heap.VirtualFree" => Call::VirtualFree {
            heap,
            address: args.addr("addr")?,
            size: args.size("size")?,
            free_type: args.take("type", |v| flags_from_str(v, "MEM_"))?,
        },
        "VirtualQuery" => Call::VirtualQuery {
            address: args.addr("addr")?,
        },
        "VirtualProtect" => Call::VirtualProtect {
            address: args.addr("addr")?,
            size: args.size("size")?,
            protect: args.take("protect", |v| flags_from_str(v, "PAGE_"))?,
        },
        "GetMemoryLoad" => Call::GetMemoryLoad,
        "RegisterMemoryNotificationCallback" => Call::RegisterMemoryNotificationCallback {
            set: args.take("callback", |v| match v {
                "set" => Some(true),
                "none" => Some(false),
                _ => None,
            })?,
        },
        "NeedsVirtualAddressSpace" => Call::NeedsVirtualAddressSpace {
            address: args.addr("addr")?,
            size: args.size("size")?,
        },
        "AcquiredVirtualAddressSpace" => Call::AcquiredVirtualAddressSpace {
            address: args.addr("addr")?,
            size: args.size("size")?,
        },
        "ReleasedVirtualAddressSpace" => Call::ReleasedVirtualAddressSpace {
            address: args.addr("addr")?,
        },
        "Shutdown" => Call::Shutdown,
        "OnMemoryNotification" => Call::OnMemoryNotification {
            state: args.take("state", available_from_str)?,
        },
        other => return Err(TraceErrorKind::UnknownMethod(other.to_owned())),
    };
    args.finish()?;
    Ok(call)
}

fn parse_outcome(call: &Call<Addr>, tokens: &[&str]) -> Result<Outcome<Addr>> {
    let bad = || TraceErrorKind::BadResult(tokens.join(" "));
    let (&first, rest) = tokens.split_first().ok_or_else(bad)?;
    let hr = hresult_from_str(first).ok_or_else(bad)?;
    if hr != HResult::S_OK {
        return if rest.is_empty() && !hr.is_success() {
            Ok(Outcome::Failed(hr))
        } else {
            Err(bad())
        };
    }
    let outcome = match call {
        Call::VirtualAlloc { .. } => match rest {
            [a] => Outcome::Address(parse_addr(a).ok_or_else(bad)?),
            _ => return Err(bad()),
        },
        Call::AcquiredVirtualAddressSpace { .. } => match rest {
            [s] => match parse_sym(s) {
                Some(s @ Sym::Acquired(_)) => Outcome::Named(s),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        },
        Call::VirtualQuery { .. } => {
            let mut a = Args::new(rest).map_err(|_| bad())?;
            let answer = (|| {
                Ok(QueryAnswer {
                    base: a.addr("base")?,
                    allocation_base: a.addr("alloc")?,
                    allocation_protect: a.take("alloc_protect", |v| flags_from_str(v, "PAGE_"))?,
                    size: a.size("size")?,
                    state: a.take("state", |v| flags_from_str(v, "MEM_"))?,
                    protect: a.take("protect", |v| flags_from_str(v, "PAGE_"))?,
                    type_: a.take("type", |v| flags_from_str(v, "MEM_"))?,
                })
            })()
            .map_err(|_: TraceErrorKind| bad())?;
            a.finish().map_err(|_| bad())?;
            Outcome::Query(answer)
        }
        Call::VirtualProtect { .. } => {
            let mut a = Args::new(rest).map_err(|_| bad())?;
            let old = a
                .take("old", |v| flags_from_str(v, "PAGE_"))
                .map_err(|_| bad())?;
            a.finish().map_err(|_| bad())?;
            Outcome::OldProtect(old)
        }
        Call::GetMemoryLoad => {
            let mut a = Args::new(rest).map_err(|_| bad())?;
            let used = a.take("used", parse_number).map_err(|_| bad())?;
            let total = a.take("total", parse_number).map_err(|_| bad())?;
            a.finish().map_err(|_| bad())?;
            Outcome::Load { used, total }
        }
        _ if rest.is_empty() => Outcome::Ok,
        _ => return Err(bad()),
    };
    Ok(outcome)
}

fn parse_prefixed(text: &str, prefix: char, field: &'static str) -> Result<u32> {
    text.strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| TraceErrorKind::BadField(field, text.to_owned()))
}

fn parse_time(text: &str) -> Result<u64> {
    let bad = || TraceErrorKind::BadField("time", text.to_owned());
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(frac) || frac.len() > 6 {
        return Err(bad());
    }
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let micros: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    secs.checked_mul(1_000_000)
        .and_then(|s| s.checked_add(micros))
        .ok_or_else(bad)
}

/// Parses one record line (not the header, not a comment).
pub fn parse_record(line: &str) -> Result<Record> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let (head, result) = match tokens.iter().position(|t| *t == "=>") {
        Some(i) => (&tokens[..i], Some(&tokens[i + 1..])),
        None => (&tokens[..], None),
    };
    let field = |i: usize, name: &'static str| {
        head.get(i)
            .copied()
            .ok_or(TraceErrorKind::MissingField(name))
    };
    let seq_text = field(0, "sequence number")?;
    let seq = seq_text
        .parse()
        .ok()
        .filter(|_| seq_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| TraceErrorKind::BadField("sequence number", seq_text.to_owned()))?;
    let time_us = parse_time(field(1, "time")?)?;
    let thread = parse_prefixed(field(2, "thread")?, 't', "thread")?;
    let manager = parse_prefixed(field(3, "manager")?, 'm', "manager")?;
    let call = parse_call(field(4, "method")?, &head[5..])?;
    let outcome = match (call.is_event(), result) {
        (true, None) => Outcome::Event,
        (true, Some(r)) => return Err(TraceErrorKind::BadResult(r.join(" "))),
        (false, None) => return Err(TraceErrorKind::MissingResult),
        (false, Some(r)) => parse_outcome(&call, r)?,
    };
    Ok(Record {
        seq,
        time_us,
        thread,
        manager,
        call,
        outcome,
    })
}

/// The regions and managers made so far, to check a trace's names.
#[derive(Default)]
struct Names {
    managers: HashSet<u32>,
    regions: HashSet<(u32, Sym)>,
}

impl Names {
    fn check(&mut self, r: &Record) -> Result<()> {
        if let Call::CreateManager(_) = r.call {
            return if self.managers.insert(r.manager) {
                Ok(())
            } else {
                Err(TraceErrorKind::ManagerCreatedTwice(r.manager))
            };
        }
        if !self.managers.contains(&r.manager) {
            return Err(TraceErrorKind::UnknownManager(r.manager));
        }
        let made = match (r.call, r.outcome) {
            (
                Call::VirtualAlloc {
                    allocation_type, ..
                },
                Outcome::Address(Addr::Rel(s @ Sym::Reservation(_), 0)),
            ) if allocation_type.contains(AllocationType::RESERVE) => Some(s),
            (
                Call::VirtualAlloc {
                    allocation_type, ..
                },
                Outcome::Address(_),
            ) if allocation_type.contains(AllocationType::RESERVE) => {
                return Err(TraceErrorKind::BadResult(r.outcome.to_string()));
            }
            (_, Outcome::Named(s)) => Some(s),
            _ => None,
        };
        let mut used = Vec::new();
        r.call.map(|a| used.extend(a.sym()));
        if made.is_none() {
            r.outcome.map(|a| used.extend(a.sym()));
        }
        if let Some(s) = used
            .into_iter()
            .find(|s| !self.regions.contains(&(r.manager, *s)))
        {
            return Err(TraceErrorKind::UnknownRegion(s));
        }
        if let Some(s) = made
            && !self.regions.insert((r.manager, s))
        {
            return Err(TraceErrorKind::RegionNamedTwice(s));
        }
        Ok(())
    }
}

impl Trace {
    /// Reads a trace: the header, then one record a line (blank lines and
    /// lines starting with `#` are skipped). The records are put in
    /// sequence order and their names checked: managers created once and
    /// before use, regions made once and before use.
    pub fn parse(text: &str) -> std::result::Result<Self, TraceError> {
        let at = |line: usize| move |kind| TraceError { line, kind };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (n, header) = lines
            .by_ref()
            .find(|(_, l)| !l.trim().is_empty())
            .ok_or(TraceError {
                line: 1,
                kind: TraceErrorKind::MissingHeader,
            })?;
        match header.trim().split_once(' ') {
            Some(("hostmem-trace", "1")) => {}
            Some(("hostmem-trace", v)) => {
                return Err(at(n)(TraceErrorKind::UnsupportedVersion(
                    v.trim().to_owned(),
                )));
            }
            _ => return Err(at(n)(TraceErrorKind::MissingHeader)),
        }
        let mut records = Vec::new();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (n, line) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let record = parse_record(line).map_err(at(n))?;
            if let Some(&other) = seen.get(&record.seq) {
                return Err(at(n)(TraceErrorKind::DuplicateSequence(record.seq, other)));
            }
            seen.insert(record.seq, n);
            records.push((n, record));
        }
        records.sort_by_key(|(_, r)| r.seq);
        let mut names = Names::default();
        for (n, r) in &records {
            names.check(r).map_err(at(*n))?;
        }
        Ok(Self { records })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the trace has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_text() {
        let lines = [
            "1 0.000010 t1 m1 CreateManager budget=0x4000000 low=90 high=60 levels=90,95,100 => S_OK",
            "2 0.000020 t1 m1 VirtualAlloc addr=0 size=0x10000000 type=MEM_RESERVE protect=PAGE_READWRITE level=eTaskCritical => S_OK r1",
            "3 0.000031 t2 m1 VirtualAlloc addr=r1+0x10000 size=0x10000 type=MEM_COMMIT protect=PAGE_READWRITE level=eAppDomainCritical => E_OUTOFMEMORY",
            "4 1.500000 t2 m1 VirtualQuery addr=r1+0x1000 => S_OK base=r1+0x1000 alloc=r1 alloc_protect=PAGE_READWRITE size=0xf000 state=MEM_RESERVE protect=0 type=MEM_PRIVATE",
            "5 1.500001 t1 m1 VirtualFree addr=0x7f0000 size=0x0 type=MEM_RELEASE => HOST_E_INVALIDOPERATION",
            "6 2.000000 t1 m1 OnMemoryNotification state=eMemoryAvailableLow",
            "7 2.000001 t1 m1 AcquiredVirtualAddressSpace addr=0x7f0000 size=0x10000 => S_OK a1",
            "8 2.000002 t1 m1 GetMemoryLoad => S_OK used=0x10 total=0x4000000",
            "9 2.000003 t1 m1 VirtualProtect addr=r1 size=0x1000 protect=PAGE_EXECUTE_READ => HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)",
        ];
        for line in lines {
            let r = parse_record(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(r.to_string(), line);
        }
    }
}
