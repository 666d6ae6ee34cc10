//! GPU benchmarks of compiled kernels, each beside its ceiling measured in the
//! same run: device-to-device copy bandwidth for memory-bound kernels, cuBLAS
//! (the named baseline) for matmul. Prints a markdown table.
//!
//! `tile-bench --pack target/packs/dsl-examples.tpack --pack target/packs/codegen-tests.tpack`

use anyhow::{Context, Result};
use clap::Parser;
use dsl_examples::random_bytes;
use std::path::PathBuf;
use tile_runtime::baseline::Cublas;
use tile_runtime::bench::{time, Timing};
use tile_runtime::{describe, Arg, Device, Pack, Scalar};

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
}

/// SDPA TFLOP/s per head dimension, from `scripts/sdpa-baseline.py`'s table
/// rows (`| SDPA 32h×4096×64 bf16 | 0.292 | 471 |`).
fn read_sdpa(path: &std::path::Path) -> Result<Vec<(usize, f64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the SDPA baseline {}", path.display()))?;
    let rows: Vec<(usize, f64)> = text
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("SDPA ")?;
            let d = name.split('×').nth(2)?.split(' ').next()?.parse().ok()?;
            Some((d, cells.get(3)?.parse().ok()?))
        })
        .collect();
    anyhow::ensure!(
        !rows.is_empty(),
        "{} has no `| SDPA …×D bf16 | ms | TFLOP/s |` rows; hint: pass the output of scripts/sdpa-baseline.py",
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
                bench: format!("{name} 2^{}", args.log2n),
                config: describe(&v.config),
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
            if meta(&v.config, "BLOCK") < c {
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

    if let Some(pack) = find_sig("attention", 6) {
        // Shapes of the PyTorch SDPA baseline (scripts/sdpa-baseline.py): 32 heads × 4096 × D, not causal.
        let (heads, seq) = (32usize, 4096usize);
        for v in &pack.kernel("attention")?.variants {
            let d = meta(&v.config, "D");
            if meta(&v.config, "CAUSAL") != 0 {
                continue;
            }
            let n = heads * seq * d;
            let q = dev.upload_bytes(Scalar::BF16, &random_bytes(n, Scalar::BF16, 8))?;
            let kk = dev.upload_bytes(Scalar::BF16, &random_bytes(n, Scalar::BF16, 9))?;
            let vv = dev.upload_bytes(Scalar::BF16, &random_bytes(n, Scalar::BF16, 10))?;
            let o = dev.alloc(Scalar::BF16, n)?;
            let k = pack.load_kernel(&dev, "attention", &v.config)?;
            let grid = [seq.div_ceil(meta(&v.config, "BM")) as u32, heads as u32, 1];
            let t = time(&dev, 100.0, 10, 3000.0, &mut || {
                dev.launch(
                    &k,
                    grid,
                    &[
                        Arg::Buffer(&q),
                        Arg::Buffer(&kk),
                        Arg::Buffer(&vv),
                        Arg::Buffer(&o),
                        Arg::I32(seq as i32),
                        Arg::F32(1.0 / (d as f32).sqrt()),
                    ],
                )
            })?;
            let flops = 4.0 * (heads * seq * seq * d) as f64;
            let ceiling = sdpa
                .as_ref()
                .and_then(|s| s.iter().find(|(sd, _)| *sd == d))
                .map(|(_, tf)| *tf);
            rows.push(Row {
                bench: format!("attention {heads}h×{seq}×{d} bf16"),
                config: describe(&v.config),
                t,
                work: flops,
                unit: "TFLOP/s",
                ceiling: ceiling.unwrap_or(0.0),
                ceiling_name: if ceiling.is_some() {
                    "SDPA"
                } else {
                    "SDPA (not measured; --sdpa)"
                },
            });
        }
    }

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
            if meta(&v.config, "BLOCK") < c {
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

    if find_sig("matmul", 6).is_some() {
        let (m, nn, k) = (4096usize, 4096usize, 4096usize);
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
            bench: "matmul 4096³ bf16→f32".into(),
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
            let f32_out = kp.signature.params[2].kind == tile_runtime::ParamKind::Ptr(Scalar::F32);
            for v in &kp.variants {
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
                let label = if f32_out {
                    "matmul 4096³ bf16→f32"
                } else {
                    "matmul 4096³ bf16→bf16"
                };
                rows.push(Row {
                    bench: label.into(),
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

    if args.best_only {
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
    Ok(())
}

fn meta(c: &tile_runtime::Config, name: &str) -> usize {
    dsl_examples::meta(c, name) as usize
}
