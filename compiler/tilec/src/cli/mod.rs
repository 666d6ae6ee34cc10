//! The `tilec` command-line driver: argument parsing and one module per subcommand.
//! Every failure is reported on stderr with a non-zero exit code, never a panic.

mod build;
mod cache;
mod check;
pub mod pack;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "tilec",
    version = tile_ir::VERSION,
    about = "Compiler for the .tile GPU kernel language"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `-D NAME=VALUE` meta-parameter assignment.
#[derive(Clone, Debug)]
pub struct Define {
    pub name: String,
    pub value: i64,
}

fn parse_define(s: &str) -> Result<Define, String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE (e.g. -D BLOCK=1024)"))?;
    let value = value
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("meta-parameter `{name}` needs an integer value, got `{value}`"))?;
    Ok(Define {
        name: name.trim().to_string(),
        value,
    })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and type-check a .tile file; report every error.
    Check(check::Args),
    /// Compile a .tile file and write one stage of the pipeline.
    Build(build::Args),
    /// Run a kernel on the CPU interpreter with given or random inputs.
    Run(run::Args),
    /// Compile every kernel × tune config of a directory into one pack file.
    Pack(pack::Args),
    /// Show the compile cache (path, entries, bytes) or clear it.
    Cache(cache::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check::main(a),
        Command::Build(a) => build::main(a),
        Command::Run(a) => run::main(a),
        Command::Pack(a) => pack::main(a),
        Command::Cache(a) => cache::main(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
