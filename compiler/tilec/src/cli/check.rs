//! `tilec check`: parse and type-check a .tile file, every kernel for every
//! configuration of its tune space (or the `-D` values / defaults), and report
//! every error. `--emit tokens|ast|tir` prints that stage to stdout.

use super::{parse_define, Define};
use anyhow::Context;
use std::process::ExitCode;
use tile_front::frontend::{self, Program, SourceFile};
use tile_front::syntax;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Tokens,
    Ast,
    Tir,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .tile source file.
    pub file: std::path::PathBuf,
    /// Meta-parameter value, e.g. -D BLOCK=1024 (replaces the tune space).
    #[arg(short = 'D', value_parser = parse_define)]
    pub defines: Vec<Define>,
    /// Check only this kernel.
    #[arg(long)]
    pub kernel: Option<String>,
    /// Print a stage to stdout: tokens, ast, or tir (one per specialisation).
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// With `--emit tir`: print the checker's output before the passes.
    #[arg(long)]
    pub no_opt: bool,
    /// Render diagnostics with miette's graphical handler instead of rustc style.
    #[arg(long)]
    pub fancy: bool,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let src = SourceFile::load(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    if args.emit == Some(Emit::Tokens) {
        if let Some(d) = frontend::encoding_error(&src) {
            let d = tile_front::diag::Diagnostics::from(d);
            eprint!("{}", render(&d, &src, args.fancy));
            return Ok(ExitCode::FAILURE);
        }
        let (tokens, diags) = syntax::lexer::lex(&src.text);
        for t in &tokens {
            println!("{}..{} {:?}", t.span.start, t.span.end, t.tok);
        }
        if !diags.is_empty() {
            eprint!("{}", tile_front::diag::Diagnostics(diags).render(&src));
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let program = match frontend::parse_program(&src) {
        Ok(p) => p,
        Err(d) => {
            eprint!("{}", render(&d, &src, args.fancy));
            eprintln!(
                "error: {} error{} in {}",
                d.len(),
                if d.len() == 1 { "" } else { "s" },
                src.name
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    // Warnings (W…) are printed first and do not fail the check.
    if !program.warnings().is_empty() {
        eprint!("{}", render(program.warnings(), &src, args.fancy));
    }
    if args.emit == Some(Emit::Ast) {
        println!("{:#?}", program.module());
    }
    let kernels = match &args.kernel {
        Some(k) if !program.kernel_names().contains(k) => {
            anyhow::bail!("{} has no kernel `{k}`", src.name)
        }
        Some(k) => vec![k.clone()],
        None => program.kernel_names(),
    };
    for d in &args.defines {
        if !kernels
            .iter()
            .any(|k| program.meta_params(k).iter().any(|(n, _)| *n == d.name))
        {
            anyhow::bail!(
                "-D {}: no checked kernel has a meta-parameter `{}`",
                d.name,
                d.name
            );
        }
    }
    let mut all = tile_front::diag::Diagnostics::new();
    let mut count = 0;
    for k in &kernels {
        let mut runs = Vec::new();
        for meta in configs(&program, k, &args.defines) {
            count += 1;
            let r = if args.no_opt {
                program.specialize_unoptimized(k, &meta)
            } else {
                program.specialize(k, &meta)
            };
            match r {
                Ok(tir) => {
                    if args.emit == Some(Emit::Tir) {
                        println!("{}", tile_ir::print_kernel(&tir));
                    }
                    runs.push((meta, Default::default()));
                }
                // The same error in several configurations is reported once,
                // naming the configuration when not all of them have it.
                Err(d) => runs.push((meta, d)),
            }
        }
        all.extend(tile_front::frontend::merge_config_diagnostics(runs));
    }
    if !all.is_empty() {
        eprint!("{}", render(&all, &src, args.fancy));
        eprintln!(
            "error: {} error{} in {}",
            all.len(),
            if all.len() == 1 { "" } else { "s" },
            src.name
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "ok: {} kernel{}, {count} specialisation{} checked",
        kernels.len(),
        plural(kernels.len()),
        plural(count)
    );
    Ok(ExitCode::SUCCESS)
}

fn render(d: &tile_front::diag::Diagnostics, src: &SourceFile, fancy: bool) -> String {
    if fancy {
        d.render_fancy(src)
    } else {
        d.render(src)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Meta-parameter assignments to check: `-D` values (with defaults), else
/// [`Program::check_configs`].
fn configs(program: &Program, kernel: &str, defines: &[Define]) -> Vec<Vec<(String, i64)>> {
    let metas = program.meta_params(kernel);
    if defines.is_empty() {
        return program.check_configs(kernel);
    }
    vec![defines
        .iter()
        .filter(|d| metas.iter().any(|(n, _)| *n == d.name))
        .map(|d| (d.name.clone(), d.value))
        .collect()]
}
