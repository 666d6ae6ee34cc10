//! `tilec pack DIR -o FILE`: compile every kernel of every `.tile` file in DIR
//! for every config of its tune space and every architecture, in parallel,
//! into one pack file (written atomically, only when everything compiled and
//! only when its bytes changed). Configurations already compiled come from the
//! compile cache (`tilec::cache`); without `--quiet` it says how many.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of .tile files.
    pub dir: PathBuf,
    /// The pack file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Architectures, comma-separated.
    #[arg(long, default_value = "sm_90,sm_80", value_delimiter = ',')]
    pub arch: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn main(args: Args) -> Result<ExitCode> {
    {
        use anyhow::anyhow;
        let arches: Vec<tile_codegen::Arch> = args
            .arch
            .iter()
            .map(|a| {
                tile_codegen::Arch::parse(a.trim())
                    .ok_or_else(|| anyhow!("unknown architecture `{a}`; hint: sm_90 or sm_80"))
            })
            .collect::<Result<_>>()?;
        let cache = tilec::cache::Cache::from_env();
        let (manifest, stats) =
            match tilec::compile_dir_cached(&args.dir, &arches, !args.quiet, cache.as_ref())? {
                Ok(m) => m,
                Err(errors) => {
                    for e in &errors {
                        eprint!("{e}");
                    }
                    eprintln!(
                        "error: {} kernel configs failed to compile; no pack written",
                        errors.len()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            };
        // An unchanged pack is not rewritten: its mtime stays, and so does
        // anything that depends on it.
        let bytes = manifest.to_bytes();
        let unchanged = std::fs::read(&args.output).is_ok_and(|old| old == bytes);
        if !unchanged {
            tile_ir::pack::write_atomic(&args.output, &bytes)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
        }
        if !args.quiet {
            eprintln!(
                "{} {}: {} kernels, {} configs, {} arch(es)",
                if unchanged { "unchanged" } else { "wrote" },
                args.output.display(),
                manifest.kernels.len(),
                stats.configs,
                arches.len()
            );
            match &cache {
                Some(c) => eprintln!(
                    "{} configs compiled, {} from the cache ({})",
                    stats.compiled,
                    stats.cached,
                    c.dir().display()
                ),
                None => eprintln!("{} configs compiled (cache off)", stats.compiled),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
