//! `tilec pack DIR -o FILE`: compile every kernel of every `.tile` file in DIR
//! for every config of its tune space and every architecture, in parallel,
//! into one pack file (written atomically, only when everything compiled).

use anyhow::Result;
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
        let manifest = match tilec::compile_dir(&args.dir, &arches, !args.quiet)? {
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
        manifest.write(&args.output)?;
        if !args.quiet {
            let n_variants: usize = manifest.kernels.iter().map(|k| k.variants.len()).sum();
            eprintln!(
                "wrote {}: {} kernels, {n_variants} configs, {} arch(es)",
                args.output.display(),
                manifest.kernels.len(),
                arches.len()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
