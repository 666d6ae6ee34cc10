//! `tilec`: the compiler of the `.tile` kernel language as one library call per
//! job, and (in `main.rs`, module `cli`) the command line.
//!
//! The stages live in their own crates: `tile-ir` (the IR, spans, launch ABI,
//! pack format), `tile-front` (syntax, checker, passes), `tile-interp` (the CPU
//! interpreter), `tile-codegen` (MLIR/LLVM → PTX). This crate strings them
//! together: [`compile_dir`] builds a pack from a directory of sources,
//! [`compile_dir_cached`] the same through the compile [`cache`].
//! See docs/ARCHITECTURE.md.

pub mod cache;

use anyhow::{bail, Result};
use std::path::PathBuf;
use tile_ir::{Config, SourceFile};

struct Job {
    file: usize,
    kernel: String,
    config: Config,
}

/// `file:line:col` and the source line with a caret under `span`.
pub fn render_span(src: &SourceFile, span: tile_ir::Span, message: &str) -> String {
    render_span_as(src, span, "error", message)
}

/// [`render_span`] with another severity (`warning`, `note`).
pub fn render_span_as(
    src: &SourceFile,
    span: tile_ir::Span,
    severity: &str,
    message: &str,
) -> String {
    let start = (span.start as usize).min(src.text.len());
    let line_start = src.text[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = src.text[start..]
        .find('\n')
        .map(|i| start + i)
        .unwrap_or(src.text.len());
    let line_no = src.text[..start].matches('\n').count() + 1;
    let col = src.text[line_start..start].chars().count() + 1;
    let width = (span.end as usize).clamp(start + 1, line_end.max(start + 1)) - start;
    format!(
        "{severity}: {message}\n --> {}:{line_no}:{col}\n  |\n  | {}\n  | {}{}\n",
        src.name,
        &src.text[line_start..line_end],
        " ".repeat(col - 1),
        "^".repeat(width.max(1))
    )
}

/// Compile every kernel × tune config of the `.tile` files in `dir` for `arches`,
/// in parallel. The outer error is an I/O or setup failure; the inner one lists
/// every rendered compile error (nothing is returned unless everything compiled).
pub fn compile_dir(
    dir: &std::path::Path,
    arches: &[tile_codegen::Arch],
    progress: bool,
) -> Result<Result<tile_ir::pack::PackManifest, Vec<String>>> {
    Ok(compile_dir_cached(dir, arches, progress, None)?.map(|(m, _)| m))
}

/// What [`compile_dir_cached`] did: of `configs` (kernel, config) pairs,
/// `compiled` needed the code generator for at least one architecture and
/// `cached` were taken from the cache for every architecture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileStats {
    pub configs: usize,
    pub compiled: usize,
    pub cached: usize,
}

/// [`compile_dir`] through `cache` (none: compile everything): an unchanged
/// (kernel, config, arch) is taken from the cache, byte-identical to a fresh
/// compile; new ones are stored, and the cache is trimmed to its bound after.
pub fn compile_dir_cached(
    dir: &std::path::Path,
    arches: &[tile_codegen::Arch],
    progress: bool,
    cache: Option<&cache::Cache>,
) -> Result<Result<(tile_ir::pack::PackManifest, CompileStats), Vec<String>>> {
    use anyhow::Context;
    use rayon::prelude::*;
    use std::collections::BTreeMap;
    use tile_codegen::Options;
    use tile_front::frontend;
    use tile_ir::pack::{sha256_hex, PackManifest, PackedKernel, Variant};
    use tile_ir::TuneSpace;
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
                warps: vec![4],
                ..TuneSpace::default()
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
    let results: Vec<Result<(Variant, bool), String>> = jobs
        .par_iter()
        .map(|j| {
            let src = &sources[j.file];
            let tir = programs[j.file]
                .specialize(&j.kernel, &j.config.meta)
                .map_err(|d| d.render(src))?;
            let (mut ptx, mut shared_bytes, mut tma) =
                (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
            let mut waits_for_prior_grid = std::collections::BTreeSet::new();
            let mut all_cached = true;
            for &arch in arches {
                let (art, hit) = cache::compile(
                    cache,
                    &tir,
                    &Options {
                        arch,
                        warps: j.config.warps,
                        stages: j.config.stages,
                        ctas: j.config.ctas,
                        dump_passes: false,
                        keep_ir: false,
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
                        Some(span) => render_span(src, span, &what),
                        None => format!("error: {what}\n"),
                    }
                })?;
                all_cached &= hit;
                let name = arch.name().to_string();
                shared_bytes.insert(name.clone(), art.shared_bytes);
                if art.waits_for_prior_grid {
                    waits_for_prior_grid.insert(name.clone());
                }
                if !art.tma.is_empty() {
                    tma.insert(name.clone(), art.tma);
                }
                ptx.insert(name, art.ptx);
            }
            bar.inc(1);
            let v = Variant {
                config: j.config.clone(),
                tir,
                ptx,
                shared_bytes,
                tma,
                waits_for_prior_grid,
            };
            Ok((v, all_cached))
        })
        .collect();
    bar.finish_and_clear();
    if let Some(c) = cache {
        c.evict_after_writes();
    }
    let mut stats = CompileStats {
        configs: jobs.len(),
        ..CompileStats::default()
    };
    let mut variants: Vec<Option<Variant>> = Vec::new();
    for r in results {
        match r {
            Ok((v, hit)) => {
                if hit {
                    stats.cached += 1;
                } else {
                    stats.compiled += 1;
                }
                variants.push(Some(v));
            }
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
    let manifest = PackManifest {
        compiler_version: tile_ir::VERSION.into(),
        kernels: packed,
    };
    Ok(Ok((manifest, stats)))
}
