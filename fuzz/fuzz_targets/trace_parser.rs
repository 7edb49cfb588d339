//! Fuzz target `trace_parser`: arbitrary bytes into the trace parser
//! (`hostmem::trace::Trace::parse`, and `parse_record` line by line). The
//! checks are in `fuzz/checks/trace_parser.rs`, shared with the replay of
//! the findings under plain `cargo test`.
#![no_main]

#[path = "../checks/trace_parser.rs"]
mod trace_parser;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trace_parser::check(data));
