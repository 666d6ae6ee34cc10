//! `mhc-bench`: every kernel of the mHC pack, the whole layer forward and
//! forward + backward (F excluded), each beside the device copy bandwidth
//! measured in the same run; then the activation memory of a stack of sites
//! with and without recompute. Ideal bytes count each input read once and
//! each output written once (mhc-spec.md); GB/s = ideal bytes / median time.
//!
//! `mhc-bench --pack-dir DIR [--tokens 16384,65536] [--width 2560,4096,7168] [--streams 4]`

use anyhow::{bail, Context, Result};
use half::bf16;
use mhc::kernels::KernelSet;
use mhc::layer::{Layer, LayerError, Mixing, SiteConfig};
use mhc::stack::{default_block_len, Stack, Sublayer};
use std::path::PathBuf;
use std::sync::Arc;
use tile_runtime::bench::{time, Timing};
use tile_runtime::{Buffer, Device, RuntimeError, Scalar};

struct Args {
    pack_dir: PathBuf,
    tokens: Vec<usize>,
    widths: Vec<usize>,
    streams: usize,
    sites: usize,
}

fn parse_list(v: &str, flag: &str) -> Result<Vec<usize>> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .with_context(|| format!("{flag}: `{x}` is not a number"))
        })
        .collect()
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        pack_dir: PathBuf::from("target/packs"),
        tokens: vec![16384, 65536],
        widths: vec![2560, 4096, 7168],
        streams: 4,
        sites: 24,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pack-dir" => a.pack_dir = PathBuf::from(value()?),
            "--tokens" => a.tokens = parse_list(&value()?, "--tokens")?,
            "--width" => a.widths = parse_list(&value()?, "--width")?,
            "--streams" => a.streams = value()?.parse().context("--streams")?,
            "--sites" => a.sites = value()?.parse().context("--sites")?,
            "-h" | "--help" => {
                println!("usage: mhc-bench [--pack-dir DIR] [--tokens T,..] [--width C,..] [--streams N] [--sites L]");
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}` (see --help)"),
        }
    }
    Ok(a)
}

/// A bf16 buffer of `len` pseudo-random values in about [-2, 2] (a cheap
/// generator: the values only need to be ordinary numbers, never zeros).
fn random_bf16(dev: &Device, len: usize, seed: u64) -> Result<Buffer> {
    let mut s = seed | 1;
    let v: Vec<bf16> = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0)
        })
        .collect();
    Ok(dev.upload(&v)?)
}

fn timed(dev: &Device, f: &mut dyn FnMut() -> Result<(), LayerError>) -> Result<Timing> {
    let mut err = None;
    let t = time(dev, 50.0, 20, 1000.0, &mut || {
        f().map_err(|e| {
            let msg = e.to_string();
            err = Some(e);
            RuntimeError::Unsupported(msg)
        })
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(t?)
}

struct Row {
    bench: String,
    t: Timing,
    bytes: f64,
}

/// The sublayer stand-in of the memory measurement: F(h) = h (a device copy).
struct Identity<'d>(&'d Device);

impl Sublayer for Identity<'_> {
    fn forward(&mut self, _: usize, h_in: &Buffer) -> Result<Buffer, LayerError> {
        let mut y = self.0.alloc(h_in.dtype(), h_in.len())?;
        self.0.copy(h_in, &mut y)?;
        Ok(y)
    }
    fn backward(&mut self, _: usize, _: &Buffer, dy: &Buffer) -> Result<Buffer, LayerError> {
        self.forward(0, dy)
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dev = Arc::new(Device::cuda(0).context("mhc-bench measures GPU kernels")?);
    let pack = args.pack_dir.join("mhc.tpack");
    let ks = Arc::new(
        KernelSet::from_packs(dev.clone(), std::slice::from_ref(&pack)).with_context(|| {
            format!(
                "loading {} (build it with `bash scripts/packs`)",
                pack.display()
            )
        })?,
    );
    println!(
        "device: {} (driver CUDA {})",
        dev.name(),
        dev.driver_version()
    );

    // Ceiling: device-to-device copy of 2^28 f32 (bytes read + written).
    let copy_gbs = {
        let n = 1usize << 28;
        let src = dev.alloc(Scalar::F32, n)?;
        let mut dst = dev.alloc(Scalar::F32, n)?;
        let t = time(&dev, 200.0, 50, 3000.0, &mut || dev.copy(&src, &mut dst))?;
        let gbs = 2.0 * 4.0 * n as f64 / (t.median_ms * 1e6);
        println!("device copy 2^28 f32: {:.3} ms, {gbs:.0} GB/s", t.median_ms);
        gbs
    };

    let n = args.streams;
    let mut rows: Vec<Row> = Vec::new();
    for &t in &args.tokens {
        for &c in &args.widths {
            let layer = Layer::new(ks.clone(), SiteConfig::new(Mixing::Mhc, n, c))?;
            let cfg = layer.config().clone();
            let r = cfg.coeffs();
            let p = layer.init_params(7, 0)?;
            let x = random_bf16(&dev, t * n * c, 1)?;
            let y = random_bf16(&dev, t * c, 2)?;
            let g_out = random_bf16(&dev, t * n * c, 3)?;
            let g_h = random_bf16(&dev, t * c, 4)?;
            let mut saved = layer.alloc_saved(t)?;
            let mut h_in = dev.alloc(Scalar::BF16, t * c)?;
            let mut x_out = dev.alloc(Scalar::BF16, t * n * c)?;
            let mut g_x = dev.alloc(Scalar::BF16, t * n * c)?;
            let mut dy = dev.alloc(Scalar::BF16, t * c)?;
            let mut dh = dev.alloc(Scalar::F32, t * r)?;
            let mut gg = layer.alloc_gate_grads(t)?;
            let mut part = layer.alloc_partials(t)?;
            let mut grads = layer.zero_grads()?;
            // Fill every intermediate once so each kernel reads real values.
            layer.pre_into(&p, &x, &mut saved, &mut h_in)?;
            layer.post_backward_into(&saved, &x, &y, &g_out, &mut g_x, &mut dy, &mut dh)?;
            layer.pre_backward(&p, &saved, &x, &g_h, &mut g_x, &mut dh, &mut grads)?;

            let (tf, nc, cf, rf) = (t as f64, (n * c) as f64, c as f64, r as f64);
            let (b16, f32b) = (2.0, 4.0);
            let stream = tf * nc * b16; // one pass over x-sized bf16 data
            let row = tf * cf * b16; // one pass over a [T, C] bf16 tensor
            let coef = tf * rf * f32b; // per-token coefficients
            let proj_bytes = cfg.proj_rows() as f64 * nc * f32b;
            let label = |k: &str| format!("{k} T={t} C={c}");
            let mut bench = |name: &str,
                             bytes: f64,
                             f: &mut dyn FnMut() -> Result<(), LayerError>|
             -> Result<()> {
                let tm = timed(&dev, f)?;
                rows.push(Row {
                    bench: label(name),
                    t: tm,
                    bytes,
                });
                Ok(())
            };
            bench(
                "mhc_proj",
                stream + proj_bytes + coef + tf * f32b,
                &mut || layer.project(&p, &x, &mut saved),
            )?;
            bench("mhc_coeffs", 2.0 * coef + tf * f32b, &mut || {
                layer.gates(&p, &mut saved)
            })?;
            bench(
                "mhc_pre_apply",
                stream + row + tf * n as f64 * f32b,
                &mut || layer.apply_pre(&x, &saved.h, &mut h_in, t),
            )?;
            bench("mhc_post", 2.0 * stream + row + coef, &mut || {
                layer.post_into(&saved, &x, &y, &mut x_out)
            })?;
            bench(
                "mhc_post_bwd",
                3.0 * stream + 2.0 * row + 2.0 * coef,
                &mut || {
                    layer.post_backward_into(&saved, &x, &y, &g_out, &mut g_x, &mut dy, &mut dh)
                },
            )?;
            bench("mhc_pre_bwd", 3.0 * stream + row + 2.0 * coef, &mut || {
                layer.apply_pre_backward(&saved, &x, &g_h, &mut g_x, &mut dh)
            })?;
            bench("mhc_coeffs_bwd", 5.0 * coef + 2.0 * tf * f32b, &mut || {
                layer.gates_backward_into(&p, &saved, &dh, &mut gg)
            })?;
            bench(
                "mhc_proj_bwd",
                3.0 * stream + coef + proj_bytes,
                &mut || layer.project_backward_into(&x, &gg, &mut g_x, &mut part),
            )?;
            bench(
                "reduce (dφ, db, dα)",
                proj_bytes + 2.0 * coef,
                &mut || layer.reduce_grads(&gg, &part, &dh, &mut grads),
            )?;
            // The whole layer (F excluded): ideal traffic of mhc-spec.md, pre reads
            // x once, post reads x and y, writes h_in and x'.
            let fwd_ideal = stream + row + (stream + row) + stream;
            bench("layer forward", fwd_ideal, &mut || {
                layer.pre_into(&p, &x, &mut saved, &mut h_in)?;
                layer.post_into(&saved, &x, &y, &mut x_out)
            })?;
            // Backward ideal: read x, g', y, g_h; write g_x, dy.
            let bwd_ideal = 2.0 * stream + 2.0 * row + stream + row;
            bench("layer forward+backward", fwd_ideal + bwd_ideal, &mut || {
                layer.pre_into(&p, &x, &mut saved, &mut h_in)?;
                layer.post_into(&saved, &x, &y, &mut x_out)?;
                layer.post_backward_into(&saved, &x, &y, &g_out, &mut g_x, &mut dy, &mut dh)?;
                layer.pre_backward(&p, &saved, &x, &g_h, &mut g_x, &mut dh, &mut grads)
            })?;
        }
    }

    println!();
    println!("| benchmark | median ms (p20–p80, runs) | ideal MB | GB/s | % of copy ({copy_gbs:.0} GB/s) |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let gbs = r.bytes / (r.t.median_ms * 1e6);
        println!(
            "| {} | {:.3} ({:.3}–{:.3}, {}) | {:.1} | {gbs:.0} | {:.1}% |",
            r.bench,
            r.t.median_ms,
            r.t.p20_ms,
            r.t.p80_ms,
            r.t.samples,
            r.bytes / 1e6,
            100.0 * gbs / copy_gbs
        );
    }

    // Activation memory of a stack of sites, with and without recompute.
    let (t, c) = (
        args.tokens[0],
        args.widths
            .iter()
            .copied()
            .find(|&c| c == 4096)
            .unwrap_or(args.widths[0]),
    );
    let block = default_block_len(n, args.sites);
    println!();
    println!(
        "activation memory, {} sites, T={t}, n={n}, C={c} (F = identity, y kept per site):",
        args.sites
    );
    println!("| path | kept by the stack (GB) | device memory in use after forward (GB) |");
    println!("|---|---|---|");
    for block_len in [None, Some(block)] {
        let layers: Vec<Layer> = (0..args.sites)
            .map(|_| Layer::new(ks.clone(), SiteConfig::new(Mixing::Mhc, n, c)))
            .collect::<Result<_, _>>()?;
        let params: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(l, la)| la.init_params(l as u64, l))
            .collect::<Result<_, _>>()?;
        let mut stack = Stack::new(layers, block_len)?;
        dev.synchronize()?;
        let before = dev.memory_info().map(|(free, _)| free).unwrap_or(0);
        let out = stack.forward(
            &params,
            random_bf16(&dev, t * n * c, 9)?,
            t,
            &mut Identity(&dev),
        )?;
        dev.synchronize()?;
        let after = dev.memory_info().map(|(free, _)| free).unwrap_or(0);
        let path = match block_len {
            None => "stored (every site's x and h_in)".to_string(),
            Some(b) => format!("recompute, L_r = {b}"),
        };
        println!(
            "| {path} | {:.2} | {:.2} |",
            stack.activation_bytes() as f64 / 1e9,
            before.saturating_sub(after) as f64 / 1e9
        );
        drop(out);
    }
    Ok(())
}
