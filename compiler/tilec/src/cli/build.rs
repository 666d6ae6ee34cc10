//! `tilec build`: compile one kernel specialisation and write one stage of the
//! pipeline (TIR, MLIR before or after the passes, LLVM IR or PTX), and say
//! how to launch it: block, grid, dynamic shared memory and hidden parameters
//! (on stderr with the PTX or LLVM IR, or as JSON with `--emit launch-json`).

use super::{parse_define, Define};
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use tile_front::frontend::{self, Program, SourceFile};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Tir,
    Mlir,
    MlirLowered,
    Llvm,
    Ptx,
    /// How to launch the PTX, as JSON: block, grid, shared memory, hidden parameters.
    LaunchJson,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .tile source file.
    pub file: PathBuf,
    /// Kernel to compile (default: the file's only or first kernel).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Meta-parameter value, e.g. -D BLOCK=1024 (default: from the tune
    /// space's first configuration that agrees with what is given, so that
    /// its `where:` holds; else the declaration's default, else the tune
    /// block's first value).
    #[arg(short = 'D', value_parser = parse_define)]
    pub defines: Vec<Define>,
    /// Warps per CTA (default: from that configuration, else 4).
    #[arg(long)]
    pub warps: Option<u32>,
    /// The most shared-memory buffers a pipelined loop gets, 2 to 8 (fewer
    /// where they do not fit; default: from that configuration, else 4).
    #[arg(long)]
    pub stages: Option<u32>,
    /// CTAs per multiprocessor ptxas must make room for, 1 to 32 (a
    /// register budget; default: from that configuration, else the
    /// compiler's own choice).
    #[arg(long)]
    pub ctas: Option<u32>,
    /// Stage to write.
    #[arg(long, value_enum, default_value = "ptx")]
    pub emit: Emit,
    /// Output file (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Target architecture: sm_90 or sm_80.
    #[arg(long, default_value = "sm_90")]
    pub arch: String,
    /// Write the MLIR after every pass into this directory.
    #[arg(long)]
    pub dump_passes: Option<PathBuf>,
    /// Print the time of each compilation stage and of every pass and step in
    /// it on stderr (compiles afresh: the compile cache is not used).
    #[arg(long)]
    pub time: bool,
    /// List on stderr every op whose data moves between threads through
    /// shared memory (layout conversions, reductions across warps, staged
    /// `dot` operands), with its source line and whether it runs in a loop
    /// (compiles afresh: the compile cache is not used).
    #[arg(long)]
    pub explain_moves: bool,
}

/// The meta-parameter values and warps of one build. What is given (-D,
/// `--warps`, `--stages`, `--ctas`) is taken as it is; the rest comes from
/// the first configuration of the tune space that agrees with it (and with
/// the declarations' defaults, where one does), so that its `where:`
/// conditions hold, e.g. the `ctas` a tune block pairs with each `N`. Where
/// none agrees (a value outside the tune space), each missing value is the
/// declaration's default, else the tune block's first candidate.
pub(crate) fn resolve_config(
    program: &Program,
    kernel: &str,
    defines: &[Define],
    warps: Option<u32>,
    stages: Option<u32>,
    ctas: Option<u32>,
) -> Result<tile_ir::Config> {
    let tune = program.tune_space(kernel);
    let params = program.meta_params(kernel);
    for d in defines {
        if !params.iter().any(|(n, _)| *n == d.name) {
            bail!(
                "kernel `{kernel}` has no meta-parameter `{}` (given with -D)",
                d.name
            );
        }
    }
    let defined = |name: &str| defines.iter().find(|d| d.name == name).map(|d| d.value);
    let agrees = |c: &tile_ir::Config, with_defaults: bool| {
        params.iter().all(|(name, default)| {
            let want = defined(name).or(if with_defaults { *default } else { None });
            want.is_none() || c.value(name).is_none() || c.value(name) == want
        }) && warps.is_none_or(|w| c.warps == w)
            && stages.is_none_or(|s| c.stages == Some(s))
            && ctas.is_none_or(|n| c.ctas == Some(n))
    };
    let first = tune.as_ref().and_then(|t| {
        let configs = t.configs();
        let pick = configs
            .iter()
            .find(|c| agrees(c, true))
            .or_else(|| configs.iter().find(|c| agrees(c, false)));
        pick.cloned()
    });
    let mut meta = Vec::new();
    for (name, default) in params {
        let v = defined(&name)
            .or_else(|| first.as_ref().and_then(|c| c.value(&name)))
            .or(default)
            .or_else(|| tune.as_ref().and_then(|t| t.params.iter().find(|(n, _)| *n == name)).and_then(|(_, v)| v.first().copied()))
            .ok_or_else(|| anyhow!("meta-parameter `{name}` of kernel `{kernel}` has no value\n  hint: pass -D {name}=VALUE"))?;
        meta.push((name, v));
    }
    let warps = warps
        .or_else(|| first.as_ref().map(|c| c.warps))
        .or_else(|| tune.as_ref().and_then(|t| t.warps.first().copied()))
        .unwrap_or(4);
    let stages = stages
        .or_else(|| first.as_ref().and_then(|c| c.stages))
        .or_else(|| tune.as_ref().and_then(|t| t.stages.first().copied()));
    let ctas = ctas
        .or_else(|| first.as_ref().and_then(|c| c.ctas))
        .or_else(|| tune.as_ref().and_then(|t| t.ctas.first().copied()));
    Ok(tile_ir::Config {
        meta,
        warps,
        stages,
        ctas,
    })
}

/// The CLI's common front half: read FILE, parse it, pick the kernel (the
/// only or first one unless named), resolve its config and specialise it.
/// Diagnostics are printed; the inner `Err` is the exit code to return then.
pub(crate) fn specialize_from_cli(
    file: &std::path::Path,
    kernel: Option<&str>,
    defines: &[Define],
    warps: Option<u32>,
    stages: Option<u32>,
    ctas: Option<u32>,
) -> Result<Result<(SourceFile, tile_ir::Kernel, tile_ir::Config), ExitCode>> {
    let src = SourceFile::load(file).with_context(|| format!("cannot read {}", file.display()))?;
    let program = match frontend::parse_program(&src) {
        Ok(p) => p,
        Err(d) => {
            eprint!("{}", d.render(&src));
            return Ok(Err(ExitCode::FAILURE));
        }
    };
    let names = program.kernel_names();
    let kernel = match kernel {
        Some(k) if names.iter().any(|n| n == k) => k.to_string(),
        Some(k) => bail!(
            "no kernel `{k}` in {} (kernels: {})",
            src.name,
            names.join(", ")
        ),
        None => names
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("{} defines no kernel", src.name))?,
    };
    let config = resolve_config(&program, &kernel, defines, warps, stages, ctas)?;
    match program.specialize(&kernel, &config.meta) {
        Ok(t) => Ok(Ok((src, t, config))),
        Err(d) => {
            eprint!("{}", d.render(&src));
            Ok(Err(ExitCode::FAILURE))
        }
    }
}

pub fn main(args: Args) -> Result<ExitCode> {
    let (src, tir, config) = match specialize_from_cli(
        &args.file,
        args.kernel.as_deref(),
        &args.defines,
        args.warps,
        args.stages,
        args.ctas,
    )? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    // The declared grid (`grid:` in the tune block), if any.
    let grid = frontend::parse_program(&src)
        .ok()
        .and_then(|p| p.tune_space(&tir.name))
        .and_then(|t| t.grid);
    let text = if args.emit == Emit::Tir {
        tile_ir::print_kernel(&tir)
    } else {
        let (text, shared_bytes, tma) = emit_codegen(&args, &src, &tir, &config)?;
        let launch = Launch {
            tir: &tir,
            config: &config,
            arch: &args.arch,
            grid: grid.as_deref(),
            shared_bytes,
            tma: &tma,
        };
        match args.emit {
            Emit::LaunchJson => launch.json(),
            Emit::Llvm | Emit::Ptx => {
                launch.note();
                text
            }
            _ => text,
        }
    };
    match &args.output {
        Some(p) => tile_ir::pack::write_atomic(p, text.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn emit_codegen(
    args: &Args,
    src: &SourceFile,
    tir: &tile_ir::Kernel,
    config: &tile_ir::Config,
) -> Result<(String, u32, Vec<tile_ir::launch::TmaOperand>)> {
    use tile_codegen::{compile, Arch, Options};
    let arch = Arch::parse(&args.arch)
        .ok_or_else(|| anyhow!("unknown architecture `{}`; hint: sm_90 or sm_80", args.arch))?;
    let opts = Options {
        arch,
        warps: config.warps,
        stages: config.stages,
        ctas: config.ctas,
        dump_passes: args.dump_passes.is_some(),
        // The text of the other stages only where it is written out.
        keep_ir: !matches!(args.emit, Emit::Ptx | Emit::LaunchJson) || args.dump_passes.is_some(),
    };
    // PTX alone comes through the compile cache; --time measures a fresh
    // compile, and the other stages are not cached.
    if matches!(args.emit, Emit::Ptx | Emit::LaunchJson)
        && args.dump_passes.is_none()
        && !args.time
        && !args.explain_moves
    {
        let cache = tilec::cache::Cache::from_env();
        let (entry, _hit) =
            tilec::cache::compile(cache.as_ref(), tir, &opts).map_err(|e| match e.span() {
                Some(span) => anyhow!("{}", tilec::render_span(src, span, &e.to_string())),
                None => anyhow!("{e}"),
            })?;
        if let Some(c) = &cache {
            c.evict_after_writes();
        }
        return Ok((entry.ptx, entry.shared_bytes, entry.tma));
    }
    let art = compile(tir, &opts).map_err(|e| match e.span() {
        Some(span) => anyhow!("{}", tilec::render_span(src, span, &e.to_string())),
        None => anyhow!("{e}"),
    })?;
    if let Some(dir) = &args.dump_passes {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("00-input.mlir"), &art.mlir)?;
        for (i, (pass, ir)) in art.pass_dumps.iter().enumerate() {
            let name: String = pass
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            std::fs::write(dir.join(format!("{:02}-{name}.mlir", i + 1)), ir)?;
        }
        std::fs::write(dir.join("90-llvm.ll"), &art.llvm_ir)?;
    }
    if args.time {
        print_timings(&art);
    }
    if args.explain_moves {
        eprint!("{}", explain_moves(src, &art.moves));
    }
    let text = match args.emit {
        Emit::Tir => unreachable!(),
        Emit::Mlir => art.mlir,
        Emit::MlirLowered => art.mlir_lowered,
        Emit::Llvm => art.llvm_ir,
        Emit::Ptx | Emit::LaunchJson => art.ptx,
    };
    Ok((text, art.shared_bytes, art.tma))
}

/// `--explain-moves`: each move as a note at its source, then a summary.
fn explain_moves(src: &SourceFile, moves: &[tile_codegen::SharedMove]) -> String {
    // The same op at the same place (a `static` loop's unrolled copies)
    // is one note with a count.
    let mut groups: Vec<(&tile_codegen::SharedMove, usize)> = Vec::new();
    for m in moves {
        match groups.iter_mut().find(|(g, _)| *g == m) {
            Some((_, n)) => *n += 1,
            None => groups.push((m, 1)),
        }
    }
    let mut out = String::new();
    for (m, n) in groups {
        let when = match m.loop_depth {
            0 => "once",
            _ => "every iteration of its loop",
        };
        let times = match n {
            1 => String::new(),
            n => format!(" ({n} copies: unrolled)"),
        };
        let msg = format!(
            "{}: {} bytes through shared memory between two barriers, {when}{times}",
            m.kind, m.bytes
        );
        out += &tilec::render_span_as(src, m.span, "note", &msg);
    }
    let in_loops = moves.iter().filter(|m| m.loop_depth > 0).count();
    out += &match (moves.len(), in_loops) {
        (0, _) => "no data moves between threads through shared memory\n".to_string(),
        (n, 0) => format!("{n} moves through shared memory, none in a loop\n"),
        (n, k) => format!(
            "{n} moves through shared memory, {k} in loops; hint: a value used in the layout it was computed in moves nothing (docs/LANGUAGE.md, \"Layouts and data movement\")\n"
        ),
    };
    out
}

/// What launching one compiled configuration takes.
struct Launch<'a> {
    tir: &'a tile_ir::Kernel,
    config: &'a tile_ir::Config,
    arch: &'a str,
    grid: Option<&'a [tile_ir::launch::GridExpr]>,
    shared_bytes: u32,
    tma: &'a [tile_ir::launch::TmaOperand],
}

impl Launch<'_> {
    fn param_names(&self) -> Vec<String> {
        self.tir.params.iter().map(|p| p.name.clone()).collect()
    }

    fn grid_text(&self) -> Option<Vec<String>> {
        self.grid.map(|g| g.iter().map(|e| e.to_string()).collect())
    }

    /// On stderr, for whoever launches the PTX without the runtime.
    fn note(&self) {
        let warps = self.config.warps;
        eprintln!(
            "launch `{}` ({}, {}):",
            self.tir.name,
            self.config.describe(),
            self.arch
        );
        eprintln!("  block: {} threads (32 × {warps} warps)", 32 * warps);
        match self.grid_text() {
            Some(axes) => eprintln!("  grid: [{}]", axes.join(", ")),
            None => eprintln!("  grid: not declared: the caller chooses"),
        }
        eprintln!("  dynamic shared memory: {} bytes", self.shared_bytes);
        if self.tma.is_empty() {
            eprintln!("  hidden parameters: none");
            return;
        }
        let names = self.param_names();
        eprintln!(
            "  hidden parameters after the kernel's own: {} TMA tensor maps by value (128 bytes, 64-byte aligned; the runtime encodes them), then an i32 whose bit k says map k was encoded (else that tensor is copied without TMA):",
            self.tma.len()
        );
        for (i, op) in self.tma.iter().enumerate() {
            eprintln!("    #{} {}", names.len() + i, op.describe(&names));
        }
        eprintln!("    #{} the mask", names.len() + self.tma.len());
    }

    /// `--emit launch-json`: the same, for tools.
    fn json(&self) -> String {
        let names = self.param_names();
        let meta: serde_json::Map<String, serde_json::Value> = self
            .config
            .meta
            .iter()
            .map(|(n, v)| (n.clone(), (*v).into()))
            .collect();
        let mut v = serde_json::json!({
            "kernel": self.tir.name,
            "arch": self.arch,
            "meta": meta,
            "warps": self.config.warps,
            "block": [32 * self.config.warps, 1, 1],
            "grid": self.grid_text(),
            "grid_exprs": self.grid,
            "shared_bytes": self.shared_bytes,
            "params": names,
            "hidden_params": tile_ir::launch::hidden_params(self.tma.len()).into_iter().enumerate().map(|(i, h)| match h {
                tile_ir::launch::HiddenParam::TensorMap(k) => serde_json::json!({
                    "index": names.len() + i,
                    "type": "tensor_map",
                    "bytes": tile_ir::launch::TENSOR_MAP_BYTES,
                    "align": tile_ir::launch::TENSOR_MAP_ALIGN,
                    "tma": self.tma[k],
                    "describe": self.tma[k].describe(&names),
                }),
                tile_ir::launch::HiddenParam::Described => serde_json::json!({
                    "index": names.len() + i,
                    "type": "i32",
                    "describe": "bit k set: tensor map k was encoded",
                }),
            }).collect::<Vec<_>>(),
        });
        if let Some(n) = self.config.stages {
            v["stages"] = n.into();
        }
        if let Some(n) = self.config.ctas {
            v["ctas"] = n.into();
        }
        let mut s = serde_json::to_string_pretty(&v).expect("launch JSON serialises");
        s.push('\n');
        s
    }
}

/// A pass pipeline as `--time` names it: `builtin.module(gpu.module(p{o}))` → `p`.
fn pass_name(pipeline: &str) -> &str {
    let mut p = pipeline;
    for anchor in ["builtin.module(", "gpu.module("] {
        if let Some(rest) = p.strip_prefix(anchor) {
            p = rest.trim_end_matches(')');
        }
    }
    p.split('{').next().unwrap_or(p)
}

/// `--time`: every stage, the passes and steps inside it, and the total.
fn print_timings(art: &tile_codegen::Artifacts) {
    let ms = |t: std::time::Duration| t.as_secs_f64() * 1e3;
    let mut total = std::time::Duration::ZERO;
    for (stage, t) in &art.timings {
        eprintln!("{stage:<30} {:>9.2} ms", ms(*t));
        for (_, step, t) in art.pass_timings.iter().filter(|(s, ..)| s == stage) {
            eprintln!("  {:<28} {:>9.2} ms", pass_name(step), ms(*t));
        }
        total += *t;
    }
    eprintln!("{:<30} {:>9.2} ms", "total", ms(total));
}
