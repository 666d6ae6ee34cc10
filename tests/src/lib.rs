//! Shared helpers of the integration tests: finding the example pack, getting a
//! GPU or skipping with a printed reason, random data and comparisons.

use rand::Rng;
use std::path::PathBuf;
use tile_runtime::{Device, Pack};

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pack of dsl-examples: `$TILE_EXAMPLES_PACK`, else `target/packs/dsl-examples.tpack`
/// (made by `scripts/test` with `tilec pack dsl-examples -o ...`).
pub fn examples_pack() -> Pack {
    let path = std::env::var_os("TILE_EXAMPLES_PACK")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/packs/dsl-examples.tpack"));
    match Pack::load(&path) {
        Ok(p) => p,
        Err(e) => panic!(
            "{e}\n(build it with `tilec pack dsl-examples -o {}`)",
            path.display()
        ),
    }
}

/// A pack under `target/packs/` (or `$TILE_PACK_DIR`) by file name.
pub fn pack_named(file: &str) -> Pack {
    let dir = std::env::var_os("TILE_PACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/packs"));
    let path = dir.join(file);
    match Pack::load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n(the codegen tier writes it: `cargo test -p integration-tests --test codegen_pack`)"),
    }
}

/// `ptxas` from `.tools/cuda/bin` (installed by scripts/setup) or the PATH.
pub fn ptxas() -> Option<PathBuf> {
    let local = root().join(".tools/cuda/bin/ptxas");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("ptxas"))
            .find(|p| p.exists())
    })
}

/// Run `ptxas` on PTX text for the target its `.target` line names (a pack's
/// `sm_90` PTX targets sm_90a), else `arch`; Err with its output on failure,
/// and when ptxas had to serialize `wgmma` (its note C7515: accumulators
/// touched while a multiply runs, which cost the matmul a sixth of its speed).
pub fn run_ptxas(ptxas: &std::path::Path, ptx: &str, arch: &str) -> Result<String, String> {
    let arch = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target "))
        .map(|t| t.split(',').next().unwrap_or(arch).trim())
        .unwrap_or(arch);
    let dir = std::env::temp_dir().join(format!("tile-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let input = dir.join(format!("{:x}.ptx", ptx.len() ^ (ptx.as_ptr() as usize)));
    std::fs::write(&input, ptx).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(ptxas)
        .args([&format!("-arch={arch}"), "-v", "-o"])
        .arg(input.with_extension("cubin"))
        .arg(&input)
        .output()
        .map_err(|e| e.to_string())?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !text.contains("C7515") {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The first GPU, or `None` after printing why the test is skipped.
pub fn gpu_or_skip(test: &str) -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

pub fn random_f32(n: usize, seed_rng: &mut impl Rng) -> Vec<f32> {
    (0..n)
        .map(|_| seed_rng.random_range(-4.0f32..4.0))
        .collect()
}

/// Indices where `got` and `want` differ by more than `rtol·|want| + atol`, or either is NaN.
pub fn mismatches(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Vec<usize> {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| !((**g - **w).abs() <= rtol * w.abs() + atol))
        .map(|(i, _)| i)
        .collect()
}
