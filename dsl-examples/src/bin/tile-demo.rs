//! The main job's demo: load the examples pack and run vector add on the GPU
//! (checked against the CPU), or, without a GPU, say why and show the PTX.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use tile_runtime::{describe, Arg, Device, Pack};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "target/packs/dsl-examples.tpack")]
    pack: PathBuf,
    /// Elements to add.
    #[arg(long, default_value_t = 1 << 24)]
    n: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let pack = Pack::load(&args.pack)?;
    let kernels: Vec<&str> = pack
        .manifest()
        .kernels
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    println!(
        "pack {}: {} kernels ({})",
        args.pack.display(),
        kernels.len(),
        kernels.join(", ")
    );
    let variant = pack
        .kernel("vector_add")?
        .variants
        .first()
        .context("vector_add has no variants")?;
    let cfg = variant.config.clone();
    match Device::cuda(0) {
        Ok(dev) => {
            let n = args.n;
            let block = cfg
                .meta
                .iter()
                .find(|(m, _)| m == "BLOCK")
                .map(|x| x.1)
                .unwrap_or(1024) as usize;
            let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let (ba, bb) = (dev.upload(&a)?, dev.upload(&b)?);
            let bc = dev.upload(&vec![f32::NAN; n])?;
            let k = pack.load_kernel(&dev, "vector_add", &cfg)?;
            let grid = [n.div_ceil(block) as u32, 1, 1];
            let ms = dev.time_ms(&mut || {
                dev.launch(
                    &k,
                    grid,
                    &[
                        Arg::Buffer(&ba),
                        Arg::Buffer(&bb),
                        Arg::Buffer(&bc),
                        Arg::I32(n as i32),
                    ],
                )
            })?;
            let c = dev.download::<f32>(&bc)?;
            let bad = c
                .iter()
                .zip(a.iter().zip(&b))
                .filter(|(c, (x, y))| **c != **x + **y)
                .count();
            if bad > 0 {
                bail!("vector_add on {}: {bad} of {n} results wrong", dev.name());
            }
            println!(
                "vector_add [{}] on {}: {n} elements correct, {:.3} ms ({:.0} GB/s, first launch)",
                describe(&cfg),
                dev.name(),
                ms,
                12.0 * n as f64 / ms as f64 / 1e6
            );
        }
        Err(e) => {
            println!(
                "{e}: not running on a GPU. The PTX of vector_add [{}] for sm_90 begins:",
                describe(&cfg)
            );
            let ptx = variant
                .ptx
                .get("sm_90")
                .map(String::as_str)
                .unwrap_or("(none)");
            for line in ptx.lines().filter(|l| !l.trim().is_empty()).take(30) {
                println!("    {line}");
            }
        }
    }
    Ok(())
}
