//! Fuzz target `engine_vs_model`: the input is decoded into a sequence of
//! abstract operations (`tests/model/grammar.rs`, the property test's
//! grammar) and run against a fresh `hostmem::unstable::engine::AddressSpace` and
//! the reference model (`tests/model/reference.rs`) by the property
//! test's own driver (`tests/model/harness.rs`): every result and error
//! after every step, `VirtualQuery` of every page run of every live
//! reservation after every step, and the full check (the kernel's view of
//! every page from `/proc/self/maps`, the sampled bytes, queries past
//! every reservation, released ranges unmapped) after every 8th step,
//! after every release and after the last step; the address space is
//! dropped (releasing everything) at the end of the input. Any
//! disagreement panics, which libFuzzer reports as a crash with the input
//! that caused it.
//!
//! The full check reads `/proc/self/maps` and every sampled byte, most of
//! a step's time; `HOSTMEM_FUZZ_FULL_EVERY=1` makes it run after every
//! step, as in the property test (about a quarter of the executions per
//! second). The replay of the findings (`tests/fuzz_regressions.rs`)
//! always checks every step.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/model/reference.rs"]
mod reference;

#[path = "../../tests/model/harness.rs"]
mod harness;

#[path = "../../tests/model/grammar.rs"]
mod grammar;

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// The full check's period unless `HOSTMEM_FUZZ_FULL_EVERY` says.
const FULL_EVERY: usize = 8;

fn checks() -> harness::Checks {
    static CHECKS: OnceLock<harness::Checks> = OnceLock::new();
    *CHECKS.get_or_init(|| {
        let n = std::env::var("HOSTMEM_FUZZ_FULL_EVERY")
            .map(|n| {
                n.parse()
                    .expect("HOSTMEM_FUZZ_FULL_EVERY: a number of steps")
            })
            .unwrap_or(FULL_EVERY);
        harness::Checks::Every(n)
    })
}

fuzz_target!(|data: &[u8]| {
    let ops = grammar::ops_from_bytes(data);
    if ops.is_empty() {
        return;
    }
    if let (Err(first), _) = harness::run_case_with(&ops, false, checks()) {
        // Again with a trace of every concrete call, for the report.
        let (again, trace) = harness::run_case(&ops, true);
        panic!(
            "the engine disagrees with the model: {first}\n(replayed with a trace: {again:?})\n\
             sequence ({} ops):\n{ops:#?}\ntrace:\n{}",
            ops.len(),
            trace.join("\n")
        );
    }
});
