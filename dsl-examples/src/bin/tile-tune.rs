//! Autotune example kernels from a pack on the GPU, with the persistent cache,
//! and print the tuning report: per config its time, achieved GB/s and FLOP/s,
//! their fractions of this device's ceilings (copy bandwidth and cuBLAS bf16,
//! measured once and cached), and which limit binds.
//!
//! `tile-tune --pack target/packs/dsl-examples.tpack softmax rmsnorm matmul --report`

use anyhow::{bail, Context, Result};
use clap::Parser;
use dsl_examples::Problem;
use std::path::PathBuf;
use tile_runtime::baseline::Cublas;
use tile_runtime::bench::time;
use tile_runtime::tune::{default_cache_path, Autotuner};
use tile_runtime::{describe, Device, Pack, Scalar};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/packs/dsl-examples.tpack")]
    pack: PathBuf,
    /// Kernels to tune (softmax, rmsnorm, matmul, vector_add).
    #[arg(required = true)]
    kernels: Vec<String>,
    /// Print the per-config report (from the cache when it is warm).
    #[arg(long)]
    report: bool,
    /// Cache file (default: $XDG_CACHE_HOME/tile/autotune-v1.json).
    #[arg(long)]
    cache: Option<PathBuf>,
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

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = Device::cuda(0).context("tile-tune needs a GPU")?;
    let pack = Pack::load(&args.pack)?;
    let cache = args.cache.unwrap_or_else(default_cache_path);
    let tuner = Autotuner::new(cache.clone());
    let ceil = ceilings(&dev, &cache.with_file_name("ceilings-v1.json"))?;
    println!(
        "device: {} — ceilings: copy {:.0} GB/s, cuBLAS bf16 {:.0} TFLOP/s; cache {}",
        dev.name(),
        ceil.copy_gbs,
        ceil.cublas_tflops,
        cache.display()
    );
    for name in &args.kernels {
        let Some(p) = Problem::for_kernel(&dev, name)? else {
            bail!("tile-tune has no problem sizes for `{name}` (softmax, rmsnorm, matmul, vector_add)")
        };
        let started = std::time::Instant::now();
        let (kernel, key) = (p.kernel, p.key.clone());
        let p = std::cell::RefCell::new(p);
        let tuned = tuner.tune(
            &dev,
            &pack,
            kernel,
            &key,
            &mut |k, cfg| {
                let p = p.borrow();
                dev.launch(k, (p.grid)(cfg, &p.dims), &p.launch_args())
            },
            &mut |k, cfg| p.borrow_mut().check(&dev, k, cfg),
        )?;
        let p = p.into_inner();
        println!(
            "\n{} {}: best [{}] — {} in {:.1} s",
            p.kernel,
            p.label,
            describe(&tuned.entry.best),
            if tuned.from_cache {
                "from the cache, nothing timed"
            } else {
                "tuned"
            },
            started.elapsed().as_secs_f64()
        );
        if args.report {
            println!("| config | median ms | GB/s | % copy | TFLOP/s | % cuBLAS | binds |");
            println!("|---|---|---|---|---|---|---|");
            for t in &tuned.entry.trials {
                match &t.result {
                    Ok(r) => {
                        let gbs = p.bytes / r.median_ms / 1e6;
                        let tf = p.flops / r.median_ms / 1e9;
                        let (fm, fc) = (gbs / ceil.copy_gbs, tf / ceil.cublas_tflops);
                        println!(
                            "| {} | {:.3} | {:.0} | {:.1}% | {:.1} | {:.1}% | {} |",
                            describe(&t.config),
                            r.median_ms,
                            gbs,
                            100.0 * fm,
                            tf,
                            100.0 * fc,
                            if fm >= fc { "memory" } else { "compute" }
                        );
                    }
                    Err(e) => println!("| {} | failed: {e} | | | | | |", describe(&t.config)),
                }
            }
        }
    }
    Ok(())
}
