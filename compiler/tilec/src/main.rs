//! The `tilec` command line: see `tilec --help`.
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
