//! What the fuzz target `trace_parser` checks of one input, shared with
//! the replay of its findings (`tests/fuzz_regressions.rs`):
//!
//! - neither `Trace::parse` nor `parse_record` panics, whatever the text;
//! - an error names a line the text has (line 1 for an empty text);
//! - a record `parse_record` reads is written back (`Display`, the
//!   format `HOSTMEM_TRACE` records in) to a line that reads as the same
//!   record, and that line is written back unchanged;
//! - a trace `Trace::parse` reads, written back as a recording is (the
//!   header, then one line a record), reads as the same records in the
//!   same order, and writing that again gives the same text.
//!
//! The input's bytes are taken as UTF-8, invalid sequences replaced, so
//! that every input reaches the parser.

use hostmem::trace::{TRACE_HEADER, Trace, parse_record};

/// Panics if the parser breaks one of the rules above on `data`.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count().max(1);
    for line in text.lines() {
        let line = line.trim();
        if let Ok(record) = parse_record(line) {
            let written = record.to_string();
            assert_eq!(
                parse_record(&written).as_ref(),
                Ok(&record),
                "`{line}` reads as a record that is written as `{written}`, which reads differently"
            );
            let again = parse_record(&written).map(|r| r.to_string());
            assert_eq!(
                again.as_ref(),
                Ok(&written),
                "`{written}` is not a fixed point"
            );
        }
    }
    match Trace::parse(&text) {
        Err(e) => {
            assert!(
                (1..=lines).contains(&e.line),
                "error on line {} of a {lines}-line text: {e}",
                e.line
            );
            let _ = e.to_string();
        }
        Ok(trace) => {
            let written = write(&trace);
            let reread = Trace::parse(&written).unwrap_or_else(|e| {
                panic!("a parsed trace, written back, does not parse: {e}\n{written}")
            });
            let records = |t: &Trace| t.records.iter().map(|(_, r)| *r).collect::<Vec<_>>();
            assert_eq!(
                records(&reread),
                records(&trace),
                "a parsed trace, written back, reads differently:\n{written}"
            );
            assert_eq!(
                write(&reread),
                written,
                "the written trace is not a fixed point"
            );
        }
    }
}

/// A trace as `HOSTMEM_TRACE` writes one: the header, then one line a
/// record.
fn write(trace: &Trace) -> String {
    let mut text = format!("{TRACE_HEADER}\n");
    for (_, record) in &trace.records {
        text.push_str(&record.to_string());
        text.push('\n');
    }
    text
}
