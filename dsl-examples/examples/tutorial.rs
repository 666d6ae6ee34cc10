//! The last step of docs/TUTORIAL.md: load the tutorial's pack, autotune
//! `bias_gelu` with `tile_runtime::tune::Autotuner` (every config checked
//! against a Rust reference before it is timed), then launch the best config
//! and check it once more. On a GPU when there is one, else on the CPU
//! interpreter (`Device::cpu()`, a smaller problem).
//!
//! ```sh
//! tilec pack docs/tutorial -o target/tutorial.tpack
//! cargo run --release -p dsl-examples --example tutorial -- target/tutorial.tpack
//! ```

use anyhow::{Context, Result};
use half::bf16;
use tile_ir::Config;
use tile_runtime::tune::{default_cache_path, Autotuner};
use tile_runtime::{describe, Arg, Buffer, Device, Kernel, Pack, RuntimeError};

/// erf to about 1e-7 (Abramowitz and Stegun 7.1.26 is not enough for the
/// tails; this is the series below 2 and the continued fraction above).
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 2.0 {
        // erf(a) = 2/sqrt(pi) * sum_n (-1)^n a^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, mut n) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -a * a / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

/// What the kernel computes, in f64: y = gelu(x + b[col]).
fn reference(x: &[bf16], b: &[bf16], cols: usize) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, xv)| {
            let v = xv.to_f64() + b[i % cols].to_f64();
            0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))
        })
        .collect()
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/tutorial.tpack".into());
    let pack = Pack::load(path.as_ref()).with_context(|| format!("loading {path}"))?;
    let dev = Device::cuda(0).unwrap_or_else(|e| {
        println!("no GPU ({e}); running on the CPU interpreter");
        Device::cpu()
    });
    let (rows, cols) = if dev.is_gpu() {
        (8192, 8192)
    } else {
        (64, 1000)
    };
    println!("device: {}, problem: {rows} x {cols} bf16", dev.name());

    let x: Vec<bf16> = (0..rows * cols)
        .map(|i| bf16::from_f32(((i * 7919) % 4001) as f32 / 1000.0 - 2.0))
        .collect();
    let b: Vec<bf16> = (0..cols)
        .map(|i| bf16::from_f32((i % 17) as f32 / 8.0 - 1.0))
        .collect();
    let want = reference(&x, &b, cols);
    let (bx, bb) = (dev.upload(&x)?, dev.upload(&b)?);
    let by = std::cell::RefCell::new(dev.upload(&vec![bf16::NAN; rows * cols])?);

    // The grid comes from the tune block's `grid: [cdiv(rows, BR),
    // cdiv(cols, BC)]`, evaluated for each config's BR and BC.
    let launch = |k: &Kernel, _cfg: &Config, y: &Buffer| -> Result<(), RuntimeError> {
        let args = [
            Arg::Buffer(&bx),
            Arg::Buffer(&bb),
            Arg::Buffer(y),
            Arg::I32(rows as i32),
            Arg::I32(cols as i32),
        ];
        dev.launch(k, k.grid(&args)?, &args)
    };
    // y within 1 bf16 rounding (2^-8 relative) of the f64 reference, plus a
    // little for the f32 math on the GPU.
    let check = |dev: &Device, y: &mut Buffer| -> Result<(), String> {
        let got: Vec<bf16> = dev.download(y).map_err(|e| e.to_string())?;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if (g.to_f64() - w).abs() > 1e-5 + w.abs() / 128.0 {
                return Err(format!("y[{i}] = {g}, expected {w:.6}"));
            }
        }
        dev.write(y, &vec![0xffu8; 2 * rows * cols]) // poison (NaN) for the next config
            .map_err(|e| e.to_string())
    };

    let tuner = Autotuner::new(default_cache_path());
    let key = [("cols".to_string(), cols as i64)];
    let tuned = tuner.tune(
        &dev,
        &pack,
        "bias_gelu",
        &key,
        &mut |k, cfg| launch(k, cfg, &by.borrow()),
        &mut |k, cfg| {
            launch(k, cfg, &by.borrow()).map_err(|e| e.to_string())?;
            check(&dev, &mut by.borrow_mut())
        },
    )?;
    println!(
        "best: {} ({}; cache {})",
        describe(&tuned.entry.best),
        if tuned.from_cache {
            "from the cache"
        } else {
            "tuned"
        },
        tuner.cache_path().display()
    );
    let bytes = 2.0 * 2.0 * (rows * cols) as f64; // read x, write y (b is small)
    for t in &tuned.entry.trials {
        match &t.result {
            Ok(r) => println!(
                "  {:<28} {:>9.3} ms  {:>8.2} GB/s",
                describe(&t.config),
                r.median_ms,
                bytes / r.median_ms / 1e6
            ),
            Err(why) => println!("  {:<28} failed: {why}", describe(&t.config)),
        }
    }

    // Use the winner.
    let best = tuned.entry.best;
    let k = pack.load_kernel(&dev, "bias_gelu", &best)?;
    launch(&k, &best, &by.borrow())?;
    dev.synchronize()?;
    check(&dev, &mut by.borrow_mut()).map_err(anyhow::Error::msg)?;
    println!("bias_gelu [{}] matches the reference", describe(&best));
    Ok(())
}
