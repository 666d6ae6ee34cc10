//! `tile-testkit`: what the tests of the workspace share, so that every test
//! gets a GPU, a seed, a pack or a comparison the same way.
//!
//! - [`gpu_or_skip`]: the first GPU, or a printed `SKIPPED` line; with
//!   `TILE_REQUIRE_GPU=1` (set by `scripts/gpu-run.sh`) a missing GPU fails
//!   the test instead, so a GPU machine whose driver is broken is never green.
//! - [`seed`]: one variable, `TILE_TEST_SEED`, replays any randomised test.
//! - [`packs_dir`], [`examples_pack`], [`pack_named`]: the packs `scripts/test`
//!   builds before the tests run.
//! - [`Tolerance`], [`mismatches`]: comparisons with named tolerance fields.
//! - [`ptxas`], [`run_ptxas`]: the assembler check of generated PTX.

use half::bf16;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use tile_runtime::{Buffer, Device, Pack, Scalar};

/// Workspace root.
pub fn root() -> PathBuf {
    let r = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    r.canonicalize().unwrap_or(r)
}

/// Where the packs are: `$TILE_PACK_DIR`, else `target/packs` (both made by
/// `scripts/test`, or `bash scripts/packs [DIR]` for the mHC packs).
pub fn packs_dir() -> PathBuf {
    std::env::var_os("TILE_PACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/packs"))
}

/// The variable that replays a randomised test.
pub const SEED_VAR: &str = "TILE_TEST_SEED";

/// A fresh random seed, or the one in `$TILE_TEST_SEED`, printed after `label`
/// so that a failure can be replayed.
pub fn seed(label: &str) -> u64 {
    let s = std::env::var(SEED_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{label}{SEED_VAR}={s}");
    s
}

/// A tolerance `|got - want| <= rel·|want| + abs`, written beside the test
/// with the reason for each value (dtype, reduction length).
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

impl Tolerance {
    /// Whether `got` is within the tolerance of `want` (NaN never is).
    pub fn accepts(&self, got: f64, want: f64) -> bool {
        (got - want).abs() <= self.rel * want.abs() + self.abs
    }
}

/// A buffer of `len` NaNs (bf16 or f32), so an output the kernel never writes fails.
pub fn nan_buffer(dev: &Device, dtype: Scalar, len: usize) -> Buffer {
    let bytes: Vec<u8> = match dtype {
        Scalar::BF16 => (0..len).flat_map(|_| bf16::NAN.to_le_bytes()).collect(),
        _ => (0..len).flat_map(|_| f32::NAN.to_le_bytes()).collect(),
    };
    dev.upload_bytes(dtype, &bytes).expect("upload")
}

/// A bf16 or f32 buffer's values as f64.
pub fn download(dev: &Device, b: &Buffer) -> Vec<f64> {
    match b.dtype() {
        Scalar::BF16 => dev
            .download::<bf16>(b)
            .expect("download")
            .iter()
            .map(|v| v.to_f64())
            .collect(),
        _ => dev
            .download::<f32>(b)
            .expect("download")
            .iter()
            .map(|v| *v as f64)
            .collect(),
    }
}

/// The pack of dsl-examples: `$TILE_EXAMPLES_PACK`, else `target/packs/dsl-examples.tpack`
/// (made by `scripts/test` with `tilec pack dsl-examples -o ...`).
pub fn examples_pack() -> Pack {
    let path = std::env::var_os("TILE_EXAMPLES_PACK")
        .map(PathBuf::from)
        .unwrap_or_else(|| packs_dir().join("dsl-examples.tpack"));
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
    let path = packs_dir().join(file);
    match Pack::load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n(scripts/test builds it: `bash scripts/test-packs`)"),
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

/// Set to `1` to make every GPU skip a failure (`scripts/gpu-run.sh` does).
pub const REQUIRE_GPU_VAR: &str = "TILE_REQUIRE_GPU";

/// The first GPU, or `None` after printing why the test is skipped; a panic
/// instead when `TILE_REQUIRE_GPU=1`.
pub fn gpu_or_skip(test: &str) -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var(REQUIRE_GPU_VAR).is_ok_and(|v| v == "1") {
                panic!("{test}: no usable GPU but {REQUIRE_GPU_VAR}=1: {e}");
            }
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

/// Indices where `got` and `want` differ by more than `rtol·|want| + atol`, or either is NaN.
pub fn mismatches(got: &[f32], want: &[f32], rtol: f32, atol: f32) -> Vec<usize> {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| {
            let within = (**g - **w).abs() <= rtol * w.abs() + atol;
            !within // NaN on either side is never within
        })
        .map(|(i, _)| i)
        .collect()
}

// Host data for tests and benchmarks that run kernels on the interpreter or
// compare downloads: seeded random inputs and element-wise comparisons.

/// A seeded RNG (tests are reproducible; change the seed to explore).
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `[lo, hi)`.
pub fn random_f32(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `n` values uniform in `[lo, hi)`, rounded to bf16.
pub fn random_bf16(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<half::bf16> {
    (0..n)
        .map(|_| half::bf16::from_f32(rng.random_range(lo..hi)))
        .collect()
}

/// `n` values uniform in `[lo, hi)`.
pub fn random_i32(rng: &mut impl Rng, n: usize, lo: i32, hi: i32) -> Vec<i32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Check every element: `|got - want| <= tol.abs + tol.rel * |want|` (in f64), NaN only where
/// `want` is NaN, infinities equal. Panics with the first mismatches.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            tol.accepts(g as f64, w as f64)
        };
        if !ok {
            bad.push(i);
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(8)
            .map(|&i| format!("[{i}] got {} want {}", got[i], want[i]))
            .collect();
        panic!(
            "{what}: {} of {} elements differ ({tol:?}): {}",
            bad.len(),
            got.len(),
            first.join(", ")
        );
    }
}

/// Bit-exact comparison of f32 slices (NaN == NaN of any payload; -0.0 != 0.0).
#[track_caller]
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let same = (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits();
        assert!(
            same,
            "{what}: element {i}: got {g:?} ({:#x}), want {w:?} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}
