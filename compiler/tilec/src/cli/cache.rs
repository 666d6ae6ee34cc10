//! `tilec cache`: where the compile cache is, how many entries and bytes it
//! holds; `tilec cache clear` deletes every entry (see `tilec::cache`).

use anyhow::{Context, Result};
use std::process::ExitCode;
use tilec::cache::Cache;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Delete every entry of the compile cache.
    Clear,
}

pub fn main(args: Args) -> Result<ExitCode> {
    let Some(dir) = Cache::default_dir() else {
        anyhow::bail!("no cache directory: set TILE_CACHE_DIR, XDG_CACHE_HOME or HOME");
    };
    let cache = Cache::at(&dir, Cache::default_max_bytes());
    match args.action {
        None => {
            let u = cache
                .usage()
                .with_context(|| format!("cannot read the cache {}", dir.display()))?;
            println!("path: {}", dir.display());
            println!("entries: {}", u.entries);
            println!(
                "bytes: {} ({:.1} MiB of at most {:.1} MiB)",
                u.bytes,
                u.bytes as f64 / (1 << 20) as f64,
                cache.max_bytes() as f64 / (1 << 20) as f64
            );
            if Cache::disabled_by_env() {
                println!("disabled: TILE_CACHE=0");
            }
        }
        Some(Action::Clear) => {
            let gone = cache
                .clear()
                .with_context(|| format!("cannot clear the cache {}", dir.display()))?;
            println!(
                "cleared {}: {} entries, {} bytes",
                dir.display(),
                gone.entries,
                gone.bytes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
