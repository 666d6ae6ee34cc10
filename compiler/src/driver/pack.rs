//! `tilec pack DIR -o FILE`: compile every kernel of every `.tile` file in DIR
//! for every config of its tune space and every architecture, in parallel,
//! into one pack file (written atomically, only when everything compiled).

use crate::tir::Config;
use anyhow::{bail, Result};
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

#[allow(dead_code)]
struct Job {
    file: usize,
    kernel: String,
    config: Config,
}

pub fn main(args: Args) -> Result<ExitCode> {
    #[cfg(not(feature = "codegen"))]
    {
        let _ = args;
        bail!("this tilec was built without code generation (feature `codegen`), which `tilec pack` needs");
    }
    #[cfg(feature = "codegen")]
    {
        use anyhow::anyhow;
        let arches: Vec<crate::codegen::Arch> = args
            .arch
            .iter()
            .map(|a| {
                crate::codegen::Arch::parse(a.trim())
                    .ok_or_else(|| anyhow!("unknown architecture `{a}`; hint: sm_90 or sm_80"))
            })
            .collect::<Result<_>>()?;
        let manifest = match compile_dir(&args.dir, &arches, !args.quiet)? {
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

/// Compile every kernel × tune config of the `.tile` files in `dir` for `arches`,
/// in parallel. The outer error is an I/O or setup failure; the inner one lists
/// every rendered compile error (nothing is returned unless everything compiled).
#[cfg(feature = "codegen")]
pub fn compile_dir(
    dir: &std::path::Path,
    arches: &[crate::codegen::Arch],
    progress: bool,
) -> Result<Result<crate::pack::PackManifest, Vec<String>>> {
    use crate::codegen::{compile, Options};
    use crate::frontend::{self, SourceFile};
    use crate::pack::{sha256_hex, PackManifest, PackedKernel, Variant};
    use crate::tir::TuneSpace;
    use anyhow::Context;
    use rayon::prelude::*;
    use std::collections::BTreeMap;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .tile files in {}", dir.display());
    }
    let mut sources = Vec::new();
    let mut programs = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        let src = SourceFile::load(f).with_context(|| format!("cannot read {}", f.display()))?;
        match frontend::parse_program(&src) {
            Ok(p) => programs.push(p),
            Err(d) => errors.push(d.render(&src)),
        }
        sources.push(src);
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let mut jobs = Vec::new();
    let mut kernels = Vec::new();
    for (i, p) in programs.iter().enumerate() {
        for name in p.kernel_names() {
            let tune = p.tune_space(&name).unwrap_or_else(|| TuneSpace {
                key: vec![],
                params: vec![],
                warps: vec![4],
            });
            // Meta-parameters the tune block leaves out take their declared defaults.
            let mut defaults = Vec::new();
            for (n, d) in p.meta_params(&name) {
                if tune.params.iter().any(|(t, _)| *t == n) {
                    continue;
                }
                match d {
                    Some(d) => defaults.push((n, d)),
                    None => errors.push(format!(
                        "error: {}: meta-parameter `{n}` of `{name}` has no default and is not in its tune block\n",
                        sources[i].name
                    )),
                }
            }
            for mut c in tune.configs() {
                c.meta.extend(defaults.iter().cloned());
                jobs.push(Job {
                    file: i,
                    kernel: name.clone(),
                    config: c,
                });
            }
            kernels.push((i, name, tune));
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let bar = if progress {
        indicatif::ProgressBar::new(jobs.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} compiling [{bar:30}] {pos}/{len} kernel configs ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let results: Vec<Result<Variant, String>> = jobs
        .par_iter()
        .map(|j| {
            let src = &sources[j.file];
            let tir = programs[j.file]
                .specialize(&j.kernel, &j.config.meta)
                .map_err(|d| d.render(src))?;
            let (mut ptx, mut shared_bytes, mut tma) =
                (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
            for &arch in arches {
                let art = compile(
                    &tir,
                    &Options {
                        arch,
                        warps: j.config.warps,
                        dump_passes: false,
                    },
                )
                .map_err(|e| {
                    let what = format!(
                        "kernel `{}` [{}] for {}: {e}",
                        j.kernel,
                        j.config.describe(),
                        arch.name()
                    );
                    match e.span() {
                        Some(span) => super::build::render_span(src, span, &what),
                        None => format!("error: {what}\n"),
                    }
                })?;
                let name = arch.name().to_string();
                shared_bytes.insert(name.clone(), art.shared_bytes);
                if !art.tma.is_empty() {
                    tma.insert(name.clone(), art.tma);
                }
                ptx.insert(name, art.ptx);
            }
            bar.inc(1);
            Ok(Variant {
                config: j.config.clone(),
                tir,
                ptx,
                shared_bytes,
                tma,
            })
        })
        .collect();
    bar.finish_and_clear();
    let mut variants: Vec<Option<Variant>> = Vec::new();
    for r in results {
        match r {
            Ok(v) => variants.push(Some(v)),
            Err(e) => {
                errors.push(e);
                variants.push(None);
            }
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let mut packed = Vec::new();
    for (file, name, tune) in kernels {
        let vs: Vec<Variant> = jobs
            .iter()
            .zip(variants.iter_mut())
            .filter(|(j, _)| j.file == file && j.kernel == name)
            .filter_map(|(_, v)| v.take())
            .collect();
        let signature = vs[0].tir.signature();
        packed.push(PackedKernel {
            name,
            signature,
            tune,
            source_hash: sha256_hex(sources[file].text.as_bytes()),
            variants: vs,
        });
    }
    Ok(Ok(PackManifest {
        compiler_version: crate::VERSION.into(),
        kernels: packed,
    }))
}
