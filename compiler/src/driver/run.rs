//! `tilec run` (placeholder).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .tile source file.
    pub file: std::path::PathBuf,
}

pub fn main(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tilec run` is not implemented yet")
}
