//! The `tilec` command line: see `tilec --help`.
use std::process::ExitCode;

fn main() -> ExitCode {
    tilec::driver::main()
}
