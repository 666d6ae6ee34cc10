//! GPU benchmarks of compiled kernels, each beside its ceiling measured in the
//! same run: device-to-device copy bandwidth for memory-bound kernels, cuBLAS
//! (the named baseline) for matmul, PyTorch SDPA (`--sdpa`, the output of
//! `scripts/sdpa-baseline.py`) for attention. Prints a markdown table.
//!
//! `tile-bench --pack target/packs/dsl-examples.tpack --pack target/packs/codegen-tests.tpack`
//!
//! `--dry-run` runs only the attention rows, at small shapes, on the CPU
//! interpreter (the packs' TIR): no GPU needed, it checks their launches
//! (arguments, grids: every output element written) before a GPU run.

use anyhow::{Context, Result};
use clap::Parser;
use dsl_examples::random_bytes;
use half::bf16;
use std::collections::HashMap;
use std::path::PathBuf;
use tile_runtime::baseline::Cublas;
use tile_runtime::bench::{time, Timing};
use tile_runtime::{describe, Arg, Buffer, Config, Device, Kernel, Pack, RuntimeError, Scalar};

#[derive(Parser)]
struct Args {
    /// Packs to take kernels from (every known benchmark whose kernel is present runs).
    #[arg(long, required = true)]
    pack: Vec<PathBuf>,
    /// log2 of the element count of the streaming benchmarks.
    #[arg(long, default_value_t = 28)]
    log2n: u32,
    /// Only the best config of each kernel in the table.
    #[arg(long)]
    best_only: bool,
    /// The output of `scripts/sdpa-baseline.py` from the same machine
    /// session: PyTorch SDPA's TFLOP/s, the attention rows' ceiling.
    #[arg(long)]
    sdpa: Option<PathBuf>,
    /// Only the attention rows, once each at small shapes, on the CPU
    /// interpreter (no GPU): checks the launches, not a benchmark.
    #[arg(long)]
    dry_run: bool,
    /// Only the rows whose benchmark and config contain this text (e.g.
    /// "1×32h×4096×64 bf16 BM=128, BN=64, D=64, CAUSAL=0, warps=8": one
    /// kernel to profile with ncu; "attention": the attention rows alone).
    /// The copy ceiling always runs, and cuBLAS where a matmul row does.
    #[arg(long)]
    only: Option<String>,
    /// The matmul's M = N = K, one row set each, cuBLAS beside each: a size
    /// that is not a multiple of the blocks (4000) times the programs at the
    /// edges, where TMA cannot fetch a whole box.
    #[arg(long, value_delimiter = ',', default_value = "4096")]
    matmul_sizes: Vec<usize>,
}

/// The attention shapes (batch, heads, seq, head dim) of issue 17's
/// acceptance, also scripts/sdpa-baseline.py's: 32 heads × 4096 × {64, 128},
/// and the trainer's, batch 8 × 12 heads × 1024 × 64. Each causal and not,
/// forward and forward + backward.
const ATTN_SHAPES: [(usize, usize, usize, usize); 3] =
    [(1, 32, 4096, 64), (1, 32, 4096, 128), (8, 12, 1024, 64)];
/// `--dry-run`'s: sequence lengths that no block size divides (the masks),
/// more than one (batch × head) slice, both head dimensions.
const DRY_SHAPES: [(usize, usize, usize, usize); 3] =
    [(1, 2, 200, 64), (1, 2, 200, 128), (2, 3, 130, 64)];

/// One attention problem of the table.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Attn {
    batch: usize,
    heads: usize,
    seq: usize,
    d: usize,
    causal: bool,
    /// Forward + backward (else the forward alone).
    backward: bool,
}

impl Attn {
    /// `fwd 1×32h×4096×64 bf16`, `fwd+bwd causal 8×12h×1024×64 bf16`: the
    /// row's name after `attention ` here and after `SDPA ` in
    /// scripts/sdpa-baseline.py (which writes the same string).
    fn label(&self) -> String {
        format!(
            "{}{} {}×{}h×{}×{} bf16",
            if self.backward { "fwd+bwd" } else { "fwd" },
            if self.causal { " causal" } else { "" },
            self.batch,
            self.heads,
            self.seq,
            self.d
        )
    }

    /// FlashAttention's convention, also scripts/sdpa-baseline.py's: the
    /// forward is 4·B·H·S²·D (two matmuls of 2·S²·D per slice), halved when
    /// causal; the backward 2.5 × the forward, so forward + backward is
    /// 3.5 × the forward.
    fn flops(&self) -> f64 {
        let fwd = 4.0 * (self.batch * self.heads * self.seq * self.seq * self.d) as f64;
        let fwd = if self.causal { fwd / 2.0 } else { fwd };
        if self.backward {
            3.5 * fwd
        } else {
            fwd
        }
    }
}

/// SDPA TFLOP/s per row name ([`Attn::label`]), from
/// `scripts/sdpa-baseline.py`'s table rows
/// (`| SDPA fwd causal 1×32h×4096×64 bf16 | 0.292 | 471 |`). The older
/// script's rows (`| SDPA 32h×4096×64 bf16 | … |`, forward, batch 1, not
/// causal) are read as `fwd 1×32h×4096×64 bf16`.
fn parse_sdpa(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("SDPA ")?.trim();
            let name = if name.starts_with("fwd") {
                name.to_string()
            } else {
                format!("fwd 1×{name}")
            };
            Some((name, cells.get(3)?.parse().ok()?))
        })
        .collect()
}

fn read_sdpa(path: &std::path::Path) -> Result<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the SDPA baseline {}", path.display()))?;
    let rows = parse_sdpa(&text);
    anyhow::ensure!(
        !rows.is_empty(),
        "{} has no `| SDPA fwd … bf16 | ms | TFLOP/s |` rows; hint: pass the output of scripts/sdpa-baseline.py",
        path.display()
    );
    Ok(rows)
}

struct Row {
    bench: String,
    config: String,
    t: Timing,
    /// Bytes moved (each input read once, each output written once) or FLOPs.
    work: f64,
    unit: &'static str,
    ceiling: f64,
    ceiling_name: &'static str,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.dry_run {
        return dry_run(&args);
    }
    let dev = Device::cuda(0).context("tile-bench needs a GPU")?;
    let packs: Vec<Pack> = args
        .pack
        .iter()
        .map(|p| Pack::load(p))
        .collect::<Result<_, _>>()?;
    // Kernels are looked up by name, preferring the examples pack.
    let find = |name: &str| packs.iter().find(|p| p.kernel(name).is_ok());
    let _ = &find;
    let find_sig = |name: &str, nparams: usize| {
        packs.iter().find(|p| {
            p.kernel(name)
                .map(|k| k.signature.params.len() == nparams)
                .unwrap_or(false)
        })
    };
    let sdpa = args.sdpa.as_deref().map(read_sdpa).transpose()?;
    let mut rows: Vec<Row> = Vec::new();
    let wanted = |bench: &str, config: &str| wanted(args.only.as_deref(), bench, config);

    // Ceiling 1: device-to-device copy (bytes read + written), 2^log2n f32.
    let n = 1usize << args.log2n;
    let copy_gbs = {
        let src = dev.alloc(Scalar::F32, n)?;
        let mut dst = dev.alloc(Scalar::F32, n)?;
        let t = time(&dev, 200.0, 50, 3000.0, &mut || dev.copy(&src, &mut dst))?;
        let bytes = 8.0 * n as f64;
        let gbs = bytes / t.median_ms / 1e6;
        rows.push(Row {
            bench: format!("device copy 2^{} f32", args.log2n),
            config: "cuMemcpyDtoD".into(),
            t,
            work: bytes,
            unit: "GB/s",
            ceiling: gbs,
            ceiling_name: "copy",
        });
        gbs
    };

    for (name, dt) in [
        ("vector_add", Scalar::F32),
        ("vector_add_bf16", Scalar::BF16),
    ] {
        let Some(pack) = find(name) else { continue };
        let a = dev.upload_bytes(dt, &random_bytes(n, dt, 1))?;
        let b = dev.upload_bytes(dt, &random_bytes(n, dt, 2))?;
        let c = dev.alloc(dt, n)?;
        for v in &pack.kernel(name)?.variants {
            let (bench, config) = (format!("{name} 2^{}", args.log2n), describe(&v.config));
            if !wanted(&bench, &config) {
                continue;
            }
            let k = pack.load_kernel(&dev, name, &v.config)?;
            let grid = [n.div_ceil(meta(&v.config, "BLOCK")) as u32, 1, 1];
            let t = time(&dev, 100.0, 30, 2000.0, &mut || {
                dev.launch(
                    &k,
                    grid,
                    &[
                        Arg::Buffer(&a),
                        Arg::Buffer(&b),
                        Arg::Buffer(&c),
                        Arg::I32(n as i32),
                    ],
                )
            })?;
            rows.push(Row {
                bench,
                config,
                t,
                work: 3.0 * (dt.size_bytes() * n) as f64,
                unit: "GB/s",
                ceiling: copy_gbs,
                ceiling_name: "copy",
            });
        }
    }

    if let Some(pack) = find_sig("rmsnorm", 5) {
        let (r, c) = (65536usize, 4096usize);
        let x = dev.upload_bytes(Scalar::BF16, &random_bytes(r * c, Scalar::BF16, 6))?;
        let w = dev.upload_bytes(Scalar::BF16, &random_bytes(c, Scalar::BF16, 7))?;
        let y = dev.alloc(Scalar::BF16, r * c)?;
        for v in &pack.kernel("rmsnorm")?.variants {
            if meta(&v.config, "BLOCK") < c
                || !wanted(&format!("rmsnorm {r}×{c} bf16"), &describe(&v.config))
            {
                continue;
            }
            let k = pack.load_kernel(&dev, "rmsnorm", &v.config)?;
            let t = time(&dev, 100.0, 30, 2000.0, &mut || {
                dev.launch(
                    &k,
                    [r as u32, 1, 1],
                    &[
                        Arg::Buffer(&x),
                        Arg::Buffer(&w),
                        Arg::Buffer(&y),
                        Arg::I32(c as i32),
                        Arg::F32(1e-6),
                    ],
                )
            })?;
            rows.push(Row {
                bench: format!("rmsnorm {r}×{c} bf16"),
                config: describe(&v.config),
                t,
                work: 2.0 * 2.0 * (r * c) as f64 + 2.0 * c as f64,
                unit: "GB/s",
                ceiling: copy_gbs,
                ceiling_name: "copy",
            });
        }
    }

    attention_rows(
        &dev,
        &packs,
        &ATTN_SHAPES,
        sdpa.as_deref(),
        false,
        args.only.as_deref(),
        &mut rows,
    )?;

    // Two softmax layouts: bf16 rows of length n (tests/kernels, 3 params)
    // and f32 with rows and columns (dsl-examples, 4 params).
    for (params, dtype, name, seed) in [(3, Scalar::BF16, "bf16", 3), (4, Scalar::F32, "f32", 11)] {
        let Some(pack) = find_sig("softmax", params) else {
            continue;
        };
        let (r, c) = (65536usize, 4096usize);
        let x = dev.upload_bytes(dtype, &random_bytes(r * c, dtype, seed))?;
        let y = dev.alloc(dtype, r * c)?;
        for v in &pack.kernel("softmax")?.variants {
            if meta(&v.config, "BLOCK") < c
                || !wanted(&format!("softmax {r}×{c} {name}"), &describe(&v.config))
            {
                continue;
            }
            let k = pack.load_kernel(&dev, "softmax", &v.config)?;
            let mut args = vec![Arg::Buffer(&x), Arg::Buffer(&y)];
            if params == 4 {
                args.push(Arg::I32(r as i32));
            }
            args.push(Arg::I32(c as i32));
            let t = time(&dev, 100.0, 30, 2000.0, &mut || {
                dev.launch(&k, [r as u32, 1, 1], &args)
            })?;
            rows.push(Row {
                bench: format!("softmax {r}×{c} {name}"),
                config: describe(&v.config),
                t,
                work: 2.0 * dtype.size_bytes() as f64 * (r * c) as f64,
                unit: "GB/s",
                ceiling: copy_gbs,
                ceiling_name: "copy",
            });
        }
    }

    for &size in args
        .matmul_sizes
        .iter()
        .filter(|_| find_sig("matmul", 6).is_some())
    {
        // The matmul rows of this size that are wanted (by pack and config).
        let matmul_wanted = |p: &Pack, c: &Config| {
            p.kernel("matmul").is_ok_and(|kp| {
                let out_ty = if f32_out(kp) { "f32" } else { "bf16" };
                wanted(&format!("matmul {size}³ bf16→{out_ty}"), &describe(c))
            })
        };
        let any = packs.iter().any(|p| {
            p.kernel("matmul")
                .is_ok_and(|kp| kp.variants.iter().any(|v| matmul_wanted(p, &v.config)))
        });
        if !any && !wanted(&format!("matmul {size}³ bf16→f32"), "cuBLAS (baseline)") {
            continue;
        }
        let (m, nn, k) = (size, size, size);
        let a = dev.upload_bytes(Scalar::BF16, &random_bytes(m * k, Scalar::BF16, 4))?;
        let b = dev.upload_bytes(Scalar::BF16, &random_bytes(k * nn, Scalar::BF16, 5))?;
        let mut c = dev.alloc(Scalar::F32, m * nn)?;
        let flops = 2.0 * (m * nn * k) as f64;
        let blas = Cublas::new(&dev)?;
        let t = time(&dev, 200.0, 30, 3000.0, &mut || {
            blas.gemm_bf16_f32(&dev, &a, &b, &mut c, m, nn, k)
        })?;
        let cublas_tf = flops / t.median_ms / 1e9;
        rows.push(Row {
            bench: format!("matmul {size}³ bf16→f32"),
            config: "cuBLAS (baseline)".into(),
            t,
            work: flops,
            unit: "TFLOP/s",
            ceiling: cublas_tf,
            ceiling_name: "cuBLAS",
        });
        let c16 = dev.alloc(Scalar::BF16, m * nn)?;
        for p in &packs {
            let Ok(kp) = p.kernel("matmul") else { continue };
            // Two layouts of the example: bf16 out on a 1-D grid (dsl-examples), f32 out on a 2-D grid (tests/kernels).
            let f32_out = f32_out(kp);
            for v in kp.variants.iter().filter(|v| matmul_wanted(p, &v.config)) {
                let kern = p.load_kernel(&dev, "matmul", &v.config)?;
                let (gm, gn) = (
                    m.div_ceil(meta(&v.config, "BM")),
                    nn.div_ceil(meta(&v.config, "BN")),
                );
                let grid = if f32_out {
                    [gm as u32, gn as u32, 1]
                } else {
                    [(gm * gn) as u32, 1, 1]
                };
                let out = if f32_out { &c } else { &c16 };
                let t = time(&dev, 100.0, 20, 3000.0, &mut || {
                    dev.launch(
                        &kern,
                        grid,
                        &[
                            Arg::Buffer(&a),
                            Arg::Buffer(&b),
                            Arg::Buffer(out),
                            Arg::I32(m as i32),
                            Arg::I32(nn as i32),
                            Arg::I32(k as i32),
                        ],
                    )
                })?;
                let out_ty = if f32_out { "f32" } else { "bf16" };
                rows.push(Row {
                    bench: format!("matmul {size}³ bf16→{out_ty}"),
                    config: describe(&v.config),
                    t,
                    work: flops,
                    unit: "TFLOP/s",
                    ceiling: cublas_tf,
                    ceiling_name: "cuBLAS",
                });
            }
        }
    }

    print_table(&dev, rows, args.best_only);
    Ok(())
}

/// `--dry-run`: the attention rows on the CPU interpreter, at small shapes.
fn dry_run(args: &Args) -> Result<()> {
    let dev = Device::cpu();
    let packs: Vec<Pack> = args
        .pack
        .iter()
        .map(|p| Pack::load(p))
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    attention_rows(
        &dev,
        &packs,
        &DRY_SHAPES,
        None,
        true,
        args.only.as_deref(),
        &mut rows,
    )?;
    anyhow::ensure!(
        !rows.is_empty(),
        "no attention kernels in the packs; hint: --pack target/packs/dsl-examples.tpack"
    );
    print_table(&dev, rows, args.best_only);
    eprintln!("dry run: every attention launch wrote all its outputs (CPU interpreter, small shapes; the times mean nothing)");
    Ok(())
}

fn print_table(dev: &Device, mut rows: Vec<Row>, best_only: bool) {
    if best_only {
        let mut best: Vec<Row> = Vec::new();
        for r in rows {
            match best.iter_mut().find(|b| {
                b.bench == r.bench
                    && (b.config.contains("baseline") == r.config.contains("baseline"))
            }) {
                Some(b) if b.t.median_ms > r.t.median_ms => *b = r,
                Some(_) => {}
                None => best.push(r),
            }
        }
        rows = best;
    }
    println!(
        "device: {} (driver CUDA {})",
        dev.name(),
        dev.driver_version()
    );
    println!("| benchmark | config | median ms (p20–p80, runs) | rate | ceiling | % of ceiling |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        let rate = if r.unit == "GB/s" {
            r.work / r.t.median_ms / 1e6
        } else {
            r.work / r.t.median_ms / 1e9
        };
        let share = if r.ceiling > 0.0 {
            format!("{:.1}%", 100.0 * rate / r.ceiling)
        } else {
            "–".into()
        };
        println!(
            "| {} | {} | {:.3} ({:.3}–{:.3}, {}) | {:.0} {} | {} {:.0} {} | {share} |",
            r.bench,
            r.config,
            r.t.median_ms,
            r.t.p20_ms,
            r.t.p80_ms,
            r.t.samples,
            rate,
            r.unit,
            r.ceiling_name,
            r.ceiling,
            r.unit,
        );
    }
}

/// The grid of every attention kernel of dsl-examples/attention.tile and
/// attention_bwd.tile: one (batch × head) slice per program_id(1) (slice
/// b·heads + h; attention.tile's are [slices, seq, D] tensors,
/// attention_bwd.tile's token-major ones), one block of `block` rows per
/// program_id(0) — queries (BM) for the forwards, delta and dQ, keys (BN)
/// for dK/dV.
fn slice_grid(seq: usize, block: usize, slices: usize) -> [u32; 3] {
    [seq.div_ceil(block) as u32, slices as u32, 1]
}

/// The packed configs of `kernel` with head dimension `d` and, where given,
/// CAUSAL = `causal` (the pack fills in defaults: `attention`'s are CAUSAL=0).
fn attn_configs(pack: &Pack, kernel: &str, d: usize, causal: Option<bool>) -> Vec<Config> {
    let Ok(k) = pack.kernel(kernel) else {
        return Vec::new();
    };
    k.variants
        .iter()
        .map(|v| v.config.clone())
        .filter(|c| meta(c, "D") == d && causal.is_none_or(|x| meta(c, "CAUSAL") == x as usize))
        .collect()
}

/// A config without D and CAUSAL (the row's name has them).
/// Whether `--only` (`only`) keeps the row of `bench` at `config`.
fn wanted(only: Option<&str>, bench: &str, config: &str) -> bool {
    only.is_none_or(|o| format!("{bench} {config}").contains(o))
}

/// Whether a `matmul` writes f32 (tests/kernels, a 2-D grid) rather than
/// bf16 (dsl-examples, a 1-D grid).
fn f32_out(kp: &tile_ir::pack::PackedKernel) -> bool {
    kp.signature.params[2].kind == tile_runtime::ParamKind::Ptr(Scalar::F32)
}

fn short(c: &Config) -> String {
    let mut parts: Vec<String> = c
        .meta
        .iter()
        .filter(|(n, _)| n != "D" && n != "CAUSAL")
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    parts.push(format!("warps={}", c.warps));
    parts.join(", ")
}

/// Loads each (kernel, config) once: the shapes of a head dimension share them.
fn load<'c>(
    cache: &'c mut HashMap<(&'static str, Config), Kernel>,
    dev: &Device,
    pack: &Pack,
    name: &'static str,
    c: &Config,
) -> Result<&'c Kernel> {
    let key = (name, c.clone());
    if !cache.contains_key(&key) {
        let k = pack.load_kernel(dev, name, c)?;
        cache.insert(key.clone(), k);
    }
    Ok(&cache[&key])
}

/// A buffer of NaN: what a launch leaves of it shows where its grid did not reach.
fn poisoned(dev: &Device, dt: Scalar, n: usize) -> Result<Buffer> {
    Ok(match dt {
        Scalar::BF16 => dev.upload(&vec![bf16::NAN; n])?,
        _ => dev.upload(&vec![f32::NAN; n])?,
    })
}

/// Fails where an output still holds NaN (or any non-finite value): its
/// kernels' grids did not cover it, or they computed garbage.
fn check_written(dev: &Device, what: &str, outputs: &[(&str, &Buffer)]) -> Result<()> {
    for (name, b) in outputs {
        let bad = match b.dtype() {
            Scalar::BF16 => dev
                .download::<bf16>(b)?
                .iter()
                .filter(|x| !x.is_finite())
                .count(),
            _ => dev
                .download::<f32>(b)?
                .iter()
                .filter(|x| !x.is_finite())
                .count(),
        };
        anyhow::ensure!(
            bad == 0,
            "{what}: {bad} of {} elements of {name} not written or not finite",
            b.len()
        );
    }
    Ok(())
}

/// Benchmark timing, or with `dry` a single run (checks, not times).
fn timed(
    dev: &Device,
    dry: bool,
    f: &mut dyn FnMut() -> Result<(), RuntimeError>,
) -> Result<Timing> {
    if dry {
        let t0 = std::time::Instant::now();
        f()?;
        dev.synchronize()?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        return Ok(Timing {
            median_ms: ms,
            p20_ms: ms,
            p80_ms: ms,
            samples: 1,
        });
    }
    Ok(time(dev, 100.0, 10, 3000.0, f)?)
}

/// The attention rows: at each shape, causal and not, the forward (every
/// packed config of `attention`) and forward + backward (each chain of
/// `TRAINING_CHAINS`, timed together as one training step), each beside
/// SDPA's same row from `sdpa`. Outputs
/// are NaN-poisoned before and checked after: a grid that misses a row or a
/// slice fails the run instead of timing too little work.
fn attention_rows(
    dev: &Device,
    packs: &[Pack],
    shapes: &[(usize, usize, usize, usize)],
    sdpa: Option<&[(String, f64)]>,
    dry: bool,
    only: Option<&str>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let find_sig = |name: &str, nparams: usize| {
        packs.iter().find(|p| {
            p.kernel(name)
                .map(|k| k.signature.params.len() == nparams)
                .unwrap_or(false)
        })
    };
    let fwd_pack = find_sig("attention", 6);
    let lse_pack = find_sig("attention_lse", 6);
    if fwd_pack.is_none() && lse_pack.is_none() {
        return Ok(());
    }
    let mut cache = HashMap::new();
    for &(batch, heads, seq, d) in shapes {
        let slices = batch * heads;
        let n = slices * seq * d;
        let input = |seed| dev.upload_bytes(Scalar::BF16, &random_bytes(n, Scalar::BF16, seed));
        let (q, k, v, d_o) = (input(8)?, input(9)?, input(10)?, input(12)?);
        // attention_bwd.tile's q, k, v side by side, token-major.
        let qkv = dev.upload_bytes(Scalar::BF16, &random_bytes(3 * n, Scalar::BF16, 11))?;
        let scale = 1.0 / (d as f32).sqrt();
        for causal in [false, true] {
            let row = |a: Attn, config: String, t: Timing| {
                let ceiling = sdpa
                    .and_then(|s| s.iter().find(|(l, _)| *l == a.label()))
                    .map(|(_, tf)| *tf);
                Row {
                    bench: format!("attention {}", a.label()),
                    config,
                    t,
                    work: a.flops(),
                    unit: "TFLOP/s",
                    ceiling: ceiling.unwrap_or(0.0),
                    ceiling_name: if ceiling.is_some() {
                        "SDPA"
                    } else {
                        "SDPA (not measured; --sdpa)"
                    },
                }
            };
            let a = Attn {
                batch,
                heads,
                seq,
                d,
                causal,
                backward: false,
            };
            // The forward: `attention`'s configs of this mode; where the pack
            // has none (its tune block has no CAUSAL, so it is packed with
            // the default CAUSAL=0 only), attention_lse's, the same forward
            // that also writes each row's log-sum-exp (4 bytes a row).
            let mut fwd: Vec<(&Pack, &'static str, Config)> = Vec::new();
            for (pack, name) in [(fwd_pack, "attention"), (lse_pack, "attention_lse")] {
                if let (Some(p), true) = (pack, fwd.is_empty()) {
                    fwd.extend(
                        attn_configs(p, name, d, Some(causal))
                            .into_iter()
                            .map(|c| (p, name, c)),
                    );
                }
            }
            let lse = dev.alloc(Scalar::F32, slices * seq)?;
            for (pack, name, c) in &fwd {
                if !wanted(only, &format!("attention {}", a.label()), &describe(c)) {
                    continue;
                }
                let kern = load(&mut cache, dev, pack, name, c)?;
                let o = poisoned(dev, Scalar::BF16, n)?;
                let args = if *name == "attention_lse" {
                    vec![
                        Arg::Buffer(&qkv),
                        Arg::Buffer(&o),
                        Arg::Buffer(&lse),
                        Arg::I32(seq as i32),
                        Arg::I32(heads as i32),
                        Arg::F32(scale),
                    ]
                } else {
                    vec![
                        Arg::Buffer(&q),
                        Arg::Buffer(&k),
                        Arg::Buffer(&v),
                        Arg::Buffer(&o),
                        Arg::I32(seq as i32),
                        Arg::F32(scale),
                    ]
                };
                let grid = slice_grid(seq, meta(c, "BM"), slices);
                let t = timed(dev, dry, &mut || dev.launch(kern, grid, &args))?;
                let config = if *name == "attention" {
                    describe(c)
                } else {
                    format!("{name} {}", describe(c))
                };
                check_written(
                    dev,
                    &format!("attention {} [{config}]", a.label()),
                    &[("O", &o)],
                )?;
                rows.push(row(a, config, t));
            }

            // Forward + backward, as training runs it
            // (tests/integration-tests/tests/gpu_attention.rs): each chain
            // of TRAINING_CHAINS whose kernels the packs have.
            let a = Attn {
                backward: true,
                ..a
            };
            for chain in TRAINING_CHAINS {
                let Some(steps) = chain
                    .iter()
                    .map(|s| {
                        let p = find_sig(s.name, s.params)?;
                        let cs = attn_configs(p, s.name, d, s.causal.then_some(causal));
                        (!cs.is_empty()).then_some((s, p, cs))
                    })
                    .collect::<Option<Vec<_>>>()
                else {
                    continue;
                };
                // Every config of each kernel at least once, the others
                // cycled (two each in the pack today, 4 and 8 warps, so one
                // chain of 4-warp kernels and one of 8): a row per chain,
                // not a product.
                let count = steps.iter().map(|s| s.2.len()).max().unwrap_or(0);
                for r in 0..count {
                    let picked: Vec<_> = steps
                        .iter()
                        .map(|(s, p, cs)| (*s, *p, &cs[r % cs.len()]))
                        .collect();
                    let config = picked
                        .iter()
                        .map(|(s, _, c)| format!("{} {}", s.label, short(c)))
                        .collect::<Vec<_>>()
                        .join("; ");
                    if !wanted(only, &a.label(), &config) {
                        continue;
                    }
                    for (s, p, c) in &picked {
                        load(&mut cache, dev, p, s.name, c)?;
                    }
                    let bufs = ChainBufs {
                        qkv: &qkv,
                        d_o: &d_o,
                        o: poisoned(dev, Scalar::BF16, n)?,
                        lse: poisoned(dev, Scalar::F32, slices * seq)?,
                        delta: poisoned(dev, Scalar::F32, slices * seq)?,
                        dqkv: poisoned(dev, Scalar::BF16, 3 * n)?,
                        dq_acc: poisoned(dev, Scalar::F32, n)?,
                        seq: seq as i32,
                        heads: heads as i32,
                        scale,
                    };
                    let launches: Vec<_> = picked
                        .iter()
                        .map(|(s, _, c)| {
                            (
                                &cache[&(s.name, (*c).clone())],
                                slice_grid(seq, meta(c, s.grid_by), slices),
                                (s.args)(&bufs),
                            )
                        })
                        .collect();
                    let t = timed(dev, dry, &mut || {
                        for (kern, grid, args) in &launches {
                            dev.launch(kern, *grid, args)?;
                        }
                        Ok(())
                    })?;
                    check_written(
                        dev,
                        &format!("attention {} [{config}]", a.label()),
                        &[
                            ("O", &bufs.o),
                            ("lse", &bufs.lse),
                            ("delta", &bufs.delta),
                            ("dQKV", &bufs.dqkv),
                        ],
                    )?;
                    rows.push(row(a, config, t));
                }
            }
        }
    }
    Ok(())
}

/// The buffers of one timed training chain: the inputs, then every output
/// and workspace any chain's kernels write (NaN-poisoned).
struct ChainBufs<'a> {
    qkv: &'a Buffer,
    d_o: &'a Buffer,
    o: Buffer,
    lse: Buffer,
    delta: Buffer,
    dqkv: Buffer,
    dq_acc: Buffer,
    seq: i32,
    heads: i32,
    scale: f32,
}

/// One kernel of a training chain: its name (and parameter count, which
/// tells it from a same-named kernel of another pack), its label in the
/// row's config, whether its configs carry CAUSAL, the meta-parameter its
/// grid's blocks are, and its arguments.
struct ChainStep {
    name: &'static str,
    params: usize,
    label: &'static str,
    causal: bool,
    grid_by: &'static str,
    args: for<'b> fn(&'b ChainBufs<'b>) -> Vec<Arg<'b>>,
}

/// The forward with lse, then a backward: the deterministic one (delta;
/// dK/dV; dQ) and the fused one (delta and dq_acc zeroed; dK/dV with dQ
/// added atomically; dQ to bf16).
const TRAINING_CHAINS: [[ChainStep; 4]; 2] = {
    const LSE: ChainStep = ChainStep {
        name: "attention_lse",
        params: 6,
        label: "lse",
        causal: true,
        grid_by: "BM",
        args: |b| {
            vec![
                Arg::Buffer(b.qkv),
                Arg::Buffer(&b.o),
                Arg::Buffer(&b.lse),
                Arg::I32(b.seq),
                Arg::I32(b.heads),
                Arg::F32(b.scale),
            ]
        },
    };
    [
        [
            LSE,
            ChainStep {
                name: "attention_bwd_delta",
                params: 5,
                label: "delta",
                causal: false,
                grid_by: "BM",
                args: |b| {
                    vec![
                        Arg::Buffer(&b.o),
                        Arg::Buffer(b.d_o),
                        Arg::Buffer(&b.delta),
                        Arg::I32(b.seq),
                        Arg::I32(b.heads),
                    ]
                },
            },
            ChainStep {
                name: "attention_bwd_dkdv",
                params: 8,
                label: "dkdv",
                causal: true,
                grid_by: "BN",
                args: |b| b.backward_args(&[]),
            },
            ChainStep {
                name: "attention_bwd_dq",
                params: 8,
                label: "dq",
                causal: true,
                grid_by: "BM",
                args: |b| b.backward_args(&[]),
            },
        ],
        [
            LSE,
            ChainStep {
                name: "attention_bwd_prep",
                params: 6,
                label: "prep",
                causal: false,
                grid_by: "BM",
                args: |b| {
                    vec![
                        Arg::Buffer(&b.o),
                        Arg::Buffer(b.d_o),
                        Arg::Buffer(&b.delta),
                        Arg::Buffer(&b.dq_acc),
                        Arg::I32(b.seq),
                        Arg::I32(b.heads),
                    ]
                },
            },
            ChainStep {
                name: "attention_bwd_fused",
                params: 9,
                label: "fused",
                causal: true,
                grid_by: "BN",
                args: |b| b.backward_args(&[&b.dq_acc]),
            },
            ChainStep {
                name: "attention_bwd_dq_cast",
                params: 4,
                label: "cast",
                causal: false,
                grid_by: "BM",
                args: |b| {
                    vec![
                        Arg::Buffer(&b.dq_acc),
                        Arg::Buffer(&b.dqkv),
                        Arg::I32(b.seq),
                        Arg::I32(b.heads),
                    ]
                },
            },
        ],
    ]
};

impl<'a> ChainBufs<'a> {
    /// A backward kernel's arguments: (qkv, d_o, lse, delta, dqkv,
    /// workspaces..., seq, heads, scale).
    fn backward_args<'b>(&'b self, work: &[&'b Buffer]) -> Vec<Arg<'b>> {
        let mut a = vec![
            Arg::Buffer(self.qkv),
            Arg::Buffer(self.d_o),
            Arg::Buffer(&self.lse),
            Arg::Buffer(&self.delta),
            Arg::Buffer(&self.dqkv),
        ];
        a.extend(work.iter().map(|&o| Arg::Buffer(o)));
        a.extend([
            Arg::I32(self.seq),
            Arg::I32(self.heads),
            Arg::F32(self.scale),
        ]);
        a
    }
}

fn meta(c: &tile_runtime::Config, name: &str) -> usize {
    dsl_examples::meta(c, name) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_flops_follow_the_sdpa_script() {
        let a = Attn {
            batch: 8,
            heads: 12,
            seq: 1024,
            d: 64,
            causal: true,
            backward: true,
        };
        assert_eq!(a.label(), "fwd+bwd causal 8×12h×1024×64 bf16");
        // 4·B·H·S²·D, halved when causal, × 3.5 with the backward.
        assert_eq!(
            a.flops(),
            3.5 * 4.0 * 8.0 * 12.0 * 1024.0 * 1024.0 * 64.0 / 2.0
        );
        let f = Attn {
            batch: 1,
            heads: 32,
            seq: 4096,
            d: 128,
            causal: false,
            backward: false,
        };
        assert_eq!(f.label(), "fwd 1×32h×4096×128 bf16");
        assert_eq!(f.flops(), 4.0 * 32.0 * 4096.0 * 4096.0 * 128.0);
    }

    #[test]
    fn sdpa_rows_new_and_old() {
        let text = "torch 2.11, NVIDIA H200\n| benchmark | median ms | TFLOP/s |\n|---|---|---|\n\
                    | SDPA fwd causal 1×32h×4096×64 bf16 | 0.200 | 344 |\n\
                    | SDPA fwd+bwd 8×12h×1024×64 bf16 | 1.000 | 101.5 |\n\
                    | SDPA 32h×4096×128 bf16 | 0.452 | 608 |\n";
        assert_eq!(
            parse_sdpa(text),
            vec![
                ("fwd causal 1×32h×4096×64 bf16".to_string(), 344.0),
                ("fwd+bwd 8×12h×1024×64 bf16".to_string(), 101.5),
                ("fwd 1×32h×4096×128 bf16".to_string(), 608.0),
            ]
        );
    }

    #[test]
    fn grids_cover_every_row_and_slice() {
        assert_eq!(slice_grid(4096, 128, 32), [32, 32, 1]);
        assert_eq!(slice_grid(1024, 64, 8 * 12), [16, 96, 1]);
        assert_eq!(slice_grid(200, 64, 6), [4, 6, 1]);
    }
}
