//! Autotune a kernel of any pack on the GPU, with the persistent cache, and
//! print the tuning report: per config its time, achieved GB/s and TFLOP/s,
//! their fractions of this device's ceilings (copy bandwidth and cuBLAS bf16,
//! measured once and cached), and which limit binds. A command line over
//! `tile_runtime::tune::{plan_args, tune_args}`.
//!
//! ```text
//! tile-tune --pack target/tutorial.tpack bias_gelu --report \
//!     --arg x=rand:bf16:8192x8192 --arg b=rand:bf16:8192 --arg y=nan:bf16:8192x8192 \
//!     --arg rows=8192 --arg cols=8192 \
//!     --check-arg x=rand:bf16:64x8192 --check-arg y=nan:bf16:64x8192 --check-arg rows=64
//! tile-tune --pack target/packs/dsl-examples.tpack softmax rmsnorm matmul --report
//! ```

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use tile_ir::launch::GridExpr;
use tile_runtime::argspec::{describe_signature, ARG_HELP};
use tile_runtime::baseline::Cublas;
use tile_runtime::bench::time;
use tile_runtime::tune::{
    default_cache_path, plan_args, tune_args, ArgTunePlan, ArgTuneRequest, Autotuner, Tuned,
};
use tile_runtime::{describe, Device, Pack, Scalar};

const AFTER_HELP: &str = "\
Each config of the kernel is first run on a reduced problem on the CPU
interpreter (the pack's TIR) and on the GPU, and the outputs compared within
the tolerance of their dtype; a config that disagrees, leaves part of a
NaN-poisoned output unwritten, disagrees with the configs before it, or fails
to launch is rejected (the report says why) and not timed. The others are
timed on the full problem (warm-up, L2 flush, CUDA events, median) and the
best is cached (--cache): a second run with the same kernel, code, device and
key values times nothing.

Outputs: the buffers given as nan:LEN, or those named with --out.
Reduced problem: --check-arg NAME=SPEC replaces that --arg for the check
(e.g. --check-arg x=rand:bf16:64x4096 --check-arg rows=64); without it the
full problem is checked if its buffers hold at most 2^22 elements.
Grid: the kernel's declared `grid:` (tune block), else --grid/--check-grid
(numbers or expressions over its parameters and meta-parameters, e.g.
--grid 8192,cdiv(C,BC): each config gets the grid of its tile).
Without --arg, KERNELs are example kernels with built-in sizes (softmax,
rmsnorm, matmul, vector_add).";

#[derive(Parser)]
#[command(about = "Autotune kernels of a pack on the GPU", after_help = AFTER_HELP)]
struct Args {
    #[arg(long, default_value = "target/packs/dsl-examples.tpack")]
    pack: PathBuf,
    /// Kernels to tune: one with --arg, or example kernels with built-in sizes.
    #[arg(required = true)]
    kernels: Vec<String>,
    /// Argument of the full-size problem, as for `tilec run` (see --help).
    #[arg(long = "arg", value_name = "NAME=SPEC", long_help = ARG_HELP)]
    args: Vec<String>,
    /// An output to check (default: the buffers given as nan:LEN).
    #[arg(long = "out", value_name = "NAME")]
    outputs: Vec<String>,
    /// Argument of the reduced problem the check runs, replacing that --arg.
    #[arg(long = "check-arg", value_name = "NAME=SPEC")]
    check_args: Vec<String>,
    /// Launch grid X[,Y[,Z]] of a kernel that declares none: numbers, or
    /// expressions over its integer parameters and meta-parameters that
    /// follow each config's tile (`8192,cdiv(C,BC)`).
    #[arg(long, value_parser = parse_grid)]
    grid: Option<Grid>,
    /// Launch grid of the reduced problem (with --grid and --check-arg;
    /// not needed when --grid reads the parameters).
    #[arg(long, value_parser = parse_grid)]
    check_grid: Option<Grid>,
    /// Bytes one launch moves, an expression over scalar arguments
    /// (`2*rows*cols*2`); default: the sum of the buffer arguments' sizes.
    #[arg(long, value_name = "EXPR")]
    bytes: Option<String>,
    /// Floating-point operations of one launch, an expression (`2*M*N*K`).
    #[arg(long, value_name = "EXPR")]
    flops: Option<String>,
    /// Seed of the random buffers (as `tilec run --seed`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the per-config report (from the cache when it is warm).
    #[arg(long)]
    report: bool,
    /// Cache file (default: $XDG_CACHE_HOME/tile/autotune-v1.json).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Hold a meta-parameter (or warps, stages, ctas) at a value, as
    /// `tilec build -D`: the other configs are left out (for one that changes
    /// what the kernel computes, e.g. a padded size that must cover an
    /// argument).
    #[arg(short = 'D', value_name = "NAME=VALUE", value_parser = parse_pin)]
    pins: Vec<(String, i64)>,
}

fn parse_pin(s: &str) -> Result<(String, i64), String> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE, e.g. -D RP=32"))?;
    let v = v
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: the value of {n} must be an integer"))?;
    Ok((n.trim().to_string(), v))
}

/// One `--grid` value: its axes. A type of its own because clap reads an
/// `Option<Vec<_>>` field as a flag taking many values, each parsed alone.
#[derive(Clone, Debug)]
struct Grid(Vec<GridExpr>);

fn parse_grid(s: &str) -> Result<Grid, String> {
    // Axes split at the commas outside parentheses (`cdiv(a, b)` keeps its own).
    let (mut axes, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                axes.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    axes.push(&s[start..]);
    if axes.len() > 3 {
        return Err(format!("`{s}` is not X[,Y[,Z]]"));
    }
    let axes = axes
        .into_iter()
        .map(GridExpr::parse)
        .collect::<Result<Vec<_>, _>>()?;
    for e in &axes {
        if let Ok(v) = e.eval(&|_| None, &|_| None) {
            if v <= 0 {
                return Err(format!("`{e}` in `{s}` is not a positive integer"));
            }
        }
    }
    Ok(Grid(axes))
}

/// The request for each kernel: from the command line's arguments, or the
/// example's built-in sizes, with the command line's options on top.
fn requests(args: &Args, pack: &Pack) -> Result<Vec<ArgTuneRequest>> {
    if !args.args.is_empty() && args.kernels.len() > 1 {
        bail!(
            "--arg gives one kernel's arguments, and {} kernels are named ({})",
            args.kernels.len(),
            args.kernels.join(", ")
        );
    }
    let mut out = Vec::new();
    for name in &args.kernels {
        let sig = describe_signature(&pack.kernel(name)?.signature);
        let mut req = if !args.args.is_empty() {
            ArgTuneRequest {
                kernel: name.clone(),
                args: args.args.clone(),
                ..Default::default()
            }
        } else if let Some(p) = dsl_examples::preset(name) {
            p
        } else {
            bail!(
                "no arguments for `{name}`: give them with --arg NAME=SPEC as for `tilec run` (e.g. --arg x=rand:bf16:4096 --arg n=4096); only {} have built-in sizes\n  signature: {sig}",
                dsl_examples::PRESETS.join(", ")
            );
        };
        if !args.check_args.is_empty() {
            req.check_args = args.check_args.clone();
        }
        if !args.outputs.is_empty() {
            req.outputs = args.outputs.clone();
        }
        req.grid = args.grid.clone().map(|g| g.0).or(req.grid);
        req.check_grid = args.check_grid.clone().map(|g| g.0).or(req.check_grid);
        req.bytes = args.bytes.clone().or(req.bytes);
        req.flops = args.flops.clone().or(req.flops);
        req.seed = args.seed;
        req.pins = args.pins.clone();
        out.push(req);
    }
    Ok(out)
}

/// Ceilings of this device, measured once and cached beside the tuning cache.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ceilings {
    device: String,
    copy_gbs: f64,
    cublas_tflops: f64,
}

fn ceilings(dev: &Device, path: &std::path::Path) -> Result<Ceilings> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(c) = serde_json::from_slice::<Ceilings>(&bytes) {
            if c.device == dev.name() {
                return Ok(c);
            }
        }
    }
    eprintln!("measuring this device's ceilings (once)…");
    let n = 1usize << 28;
    let src = dev.alloc(Scalar::F32, n)?;
    let mut dst = dev.alloc(Scalar::F32, n)?;
    let t = time(dev, 200.0, 30, 2000.0, &mut || dev.copy(&src, &mut dst))?;
    let copy_gbs = 8.0 * n as f64 / t.median_ms / 1e6;
    let s = 4096usize;
    let a = dev.upload_bytes(
        Scalar::BF16,
        &dsl_examples::random_bytes(s * s, Scalar::BF16, 11),
    )?;
    let b = dev.upload_bytes(
        Scalar::BF16,
        &dsl_examples::random_bytes(s * s, Scalar::BF16, 12),
    )?;
    let mut c = dev.alloc(Scalar::F32, s * s)?;
    let blas = Cublas::new(dev)?;
    let t = time(dev, 200.0, 30, 2000.0, &mut || {
        blas.gemm_bf16_f32(dev, &a, &b, &mut c, s, s, s)
    })?;
    let c = Ceilings {
        device: dev.name(),
        copy_gbs,
        cublas_tflops: 2.0 * (s * s * s) as f64 / t.median_ms / 1e9,
    };
    tile_ir::pack::write_atomic(path, &serde_json::to_vec_pretty(&c)?)?;
    Ok(c)
}

fn report(plan: &ArgTunePlan, tuned: &Tuned, ceil: &Ceilings) {
    println!(
        "bytes per launch: {:.0} ({}); FLOPs: {}",
        plan.bytes,
        plan.bytes_from,
        match plan.flops {
            Some(f) => format!("{f:.0}"),
            None => "not given (--flops)".into(),
        }
    );
    println!("| config | median ms | GB/s | % copy | TFLOP/s | % cuBLAS | binds |");
    println!("|---|---|---|---|---|---|---|");
    for t in &tuned.entry.trials {
        match &t.result {
            Ok(r) => {
                let gbs = plan.bytes / r.median_ms / 1e6;
                let fm = gbs / ceil.copy_gbs;
                let (tf, fc) = match plan.flops {
                    Some(f) => {
                        let tf = f / r.median_ms / 1e9;
                        (format!("{tf:.1}"), Some(tf / ceil.cublas_tflops))
                    }
                    None => ("-".into(), None),
                };
                println!(
                    "| {} | {:.3} | {:.0} | {:.1}% | {tf} | {} | {} |",
                    describe(&t.config),
                    r.median_ms,
                    gbs,
                    100.0 * fm,
                    fc.map_or("-".into(), |fc| format!("{:.1}%", 100.0 * fc)),
                    if fc.is_some_and(|fc| fc > fm) {
                        "compute"
                    } else {
                        "memory"
                    }
                );
            }
            Err(e) => println!("| {} | rejected: {e} | | | | | |", describe(&t.config)),
        }
    }
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let pack =
        Pack::load(&args.pack).with_context(|| format!("loading {}", args.pack.display()))?;
    // Everything that can be wrong with the arguments is found before the GPU.
    let plans = requests(&args, &pack)?
        .iter()
        .map(|r| plan_args(&pack, r).with_context(|| format!("`{}`", r.kernel)))
        .collect::<Result<Vec<_>>>()?;
    let dev = Device::cuda(0).context(
        "tile-tune needs a GPU (configs are timed with CUDA events); the arguments are valid",
    )?;
    let cache = args.cache.clone().unwrap_or_else(default_cache_path);
    let tuner = Autotuner::new(cache.clone());
    let ceil = ceilings(&dev, &cache.with_file_name("ceilings-v1.json"))?;
    println!(
        "device: {} — ceilings: copy {:.0} GB/s, cuBLAS bf16 {:.0} TFLOP/s; cache {}",
        dev.name(),
        ceil.copy_gbs,
        ceil.cublas_tflops,
        cache.display()
    );
    for plan in &plans {
        let started = std::time::Instant::now();
        let tuned = tune_args(&dev, &pack, plan, &tuner)
            .with_context(|| format!("tuning `{}`", plan.kernel))?;
        println!("\n{} {}", plan.kernel, plan.full.label());
        if !tuned.from_cache {
            let check = plan.check.label();
            println!(
                "checked against the interpreter on {}",
                if check == plan.full.label() {
                    "the same problem".to_string()
                } else {
                    check
                }
            );
        }
        println!(
            "best [{}] — {} in {:.1} s",
            describe(&tuned.entry.best),
            if tuned.from_cache {
                "from the cache, nothing timed"
            } else {
                "tuned"
            },
            started.elapsed().as_secs_f64()
        );
        if args.report {
            report(plan, &tuned, &ceil);
        }
    }
    Ok(())
}
