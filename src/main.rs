//! `hostmem`: the command line — simulate a runtime's workload (the
//! default), replay a trace, show the address-space map, run the
//! benchmarks. Everything is in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
