//! GPU benchmarks of the example kernels, each beside its ceiling measured in
//! the same run (device-to-device copy bandwidth). Prints a markdown table.
//!
//! `tile-bench --pack target/packs/dsl-examples.tpack`

use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use tile_runtime::bench::{time, Timing};
use tile_runtime::{describe, Arg, Device, Pack, Scalar};

#[derive(Parser)]
struct Args {
    /// The examples pack.
    #[arg(long, default_value = "target/packs/dsl-examples.tpack")]
    pack: PathBuf,
    /// log2 of the element count of the streaming benchmarks.
    #[arg(long, default_value_t = 28)]
    log2n: u32,
}

struct Row {
    name: String,
    config: String,
    t: Timing,
    bytes: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = Device::cuda(0).context("tile-bench needs a GPU")?;
    let pack = Pack::load(&args.pack)?;
    let n = 1usize << args.log2n;
    let mut rows = Vec::new();

    // Ceiling: device-to-device copy of n f32 (bytes read + written).
    let src = dev.alloc(Scalar::F32, n)?;
    let mut dst = dev.alloc(Scalar::F32, n)?;
    let t = time(&dev, 200.0, 50, 3000.0, &mut || dev.copy(&src, &mut dst))?;
    rows.push(Row { name: format!("device copy (2^{} f32)", args.log2n), config: "cuMemcpyDtoD".into(), t, bytes: 2.0 * 4.0 * n as f64 });

    // vector add, f32 and bf16, every packed config.
    for (name, dt) in [("vector_add", Scalar::F32), ("vector_add_bf16", Scalar::BF16)] {
        let a = dev.upload_bytes(dt, &random_bytes(n, dt))?;
        let b = dev.upload_bytes(dt, &random_bytes(n, dt))?;
        let c = dev.alloc(dt, n)?;
        for v in &pack.kernel(name)?.variants {
            let k = pack.load_kernel(&dev, name, &v.config)?;
            let block = v.config.meta.iter().find(|(m, _)| m == "BLOCK").map(|x| x.1).unwrap_or(1024) as usize;
            let grid = [n.div_ceil(block) as u32, 1, 1];
            let t = time(&dev, 100.0, 30, 2000.0, &mut || {
                dev.launch(&k, grid, &[Arg::Buffer(&a), Arg::Buffer(&b), Arg::Buffer(&c), Arg::I32(n as i32)])
            })?;
            rows.push(Row { name: format!("{name} (2^{})", args.log2n), config: describe(&v.config), t, bytes: 3.0 * (dt.size_bytes() * n) as f64 });
        }
    }

    let copy_gbs = rows[0].bytes / rows[0].t.median_ms / 1e6;
    println!("device: {}", dev.name());
    println!("| kernel | config | median ms (p20–p80, n) | GB/s | vs copy |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let gbs = r.bytes / r.t.median_ms / 1e6;
        println!(
            "| {} | {} | {:.3} ({:.3}–{:.3}, {}) | {:.0} | {:.1}% |",
            r.name, r.config, r.t.median_ms, r.t.p20_ms, r.t.p80_ms, r.t.samples, gbs, 100.0 * gbs / copy_gbs
        );
    }
    Ok(())
}

/// Random values in [-1, 1) as raw bytes of `dt` (never zeros: they can run faster).
fn random_bytes(n: usize, dt: Scalar) -> Vec<u8> {
    let mut state = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    match dt {
        Scalar::BF16 => (0..n).flat_map(|_| half::bf16::from_f32(next()).to_le_bytes()).collect(),
        _ => (0..n).flat_map(|_| next().to_le_bytes()).collect(),
    }
}
