//! `mhc-plan`: the kernel launches of one site's forward (`pre`, `post`) and
//! backward (`post_backward`, `pre_backward`), as the Rust layer makes them,
//! without running them (a dry run of the CPU device's kernel set). The
//! Python package mirrors the layer kernel for kernel (`tile.mhc.SitePlan`);
//! its test compares the two (python/tests/test_mhc_cpu.py).
//!
//! `mhc-plan [--mixing mhc|hc] [--streams N] [--width C] [--tokens T]`
//!
//! Prints `parallelism P` (what the layer sized its grids for), then a line
//! `# PHASE` before each phase's launches, one a line:
//! `NAME META WARPS GRID ARGS`, with META `N=4,BC=256` (as the layer gives
//! them; `-` when none), GRID `x,y,z` and ARGS the arguments in order
//! (`*` a pointer, else the scalar's value).

use anyhow::{bail, Context, Result};
use mhc::kernels::{KernelSet, Launch};
use mhc::layer::{Layer, Mixing, SiteConfig};
use std::sync::Arc;
use tile_runtime::{Device, Scalar};

fn parse_args() -> Result<(SiteConfig, usize)> {
    let (mut mixing, mut n, mut c, mut t) = (Mixing::Mhc, 4, 64, 3);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mixing" => {
                mixing = match value()?.as_str() {
                    "mhc" => Mixing::Mhc,
                    "hc" => Mixing::Hc,
                    other => bail!("--mixing: `{other}` is not mhc or hc"),
                }
            }
            "--streams" => n = value()?.parse().context("--streams")?,
            "--width" => c = value()?.parse().context("--width")?,
            "--tokens" => t = value()?.parse().context("--tokens")?,
            "-h" | "--help" => {
                println!(
                    "usage: mhc-plan [--mixing mhc|hc] [--streams N] [--width C] [--tokens T]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag `{other}` (see --help)"),
        }
    }
    if t == 0 {
        bail!("--tokens must be positive");
    }
    Ok((SiteConfig::new(mixing, n, c), t))
}

fn line(l: &Launch) -> String {
    let meta = if l.meta.is_empty() {
        "-".to_string()
    } else {
        let m: Vec<String> = l.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
        m.join(",")
    };
    let args: Vec<String> = l
        .scalars
        .iter()
        .map(|a| a.map_or("*".to_string(), |v| format!("{v:?}")))
        .collect();
    let [x, y, z] = l.grid;
    format!(
        "{} {meta} {} {x},{y},{z} {}",
        l.name,
        l.warps,
        args.join(",")
    )
}

fn main() -> Result<()> {
    let (cfg, t) = parse_args()?;
    let (n, c) = (cfg.n, cfg.c);
    let dev = Arc::new(Device::cpu());
    let kernels = Arc::new(KernelSet::from_sources(dev.clone())?);
    let layer = Layer::new(kernels.clone(), cfg)?;
    let params = layer.init_params(1, 0)?;
    let mut grads = layer.zero_grads()?;
    let x = dev.alloc(Scalar::BF16, t * n * c)?;
    let y = dev.alloc(Scalar::BF16, t * c)?;
    let g_out = dev.alloc(Scalar::BF16, t * n * c)?;
    let g_h = dev.alloc(Scalar::BF16, t * c)?;
    println!("parallelism {}", dev.parallelism());
    kernels.dry_run(true);
    let phase = |name: &str| {
        println!("# {name}");
        for l in kernels.take_launches() {
            println!("{}", line(&l));
        }
    };
    let (_, saved) = layer.pre(&params, &x, t)?;
    phase("pre");
    layer.post(&saved, &x, &y)?;
    phase("post");
    let (mut g_x, _, mut dh) = layer.post_backward(&saved, &x, &y, &g_out)?;
    phase("post_backward");
    layer.pre_backward(&params, &saved, &x, &g_h, &mut g_x, &mut dh, &mut grads)?;
    phase("pre_backward");
    kernels.dry_run(false);
    Ok(())
}
