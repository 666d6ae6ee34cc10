//! `tile-testkit`: what the tests of the workspace share, so that every test
//! gets a GPU, a seed, a pack or a comparison the same way.
//!
//! - [`gpu_or_skip`]: the first GPU, or a printed `SKIPPED` line; with
//!   `TILE_REQUIRE_GPU=1` (set by `scripts/gpu-run.sh`) a missing GPU fails
//!   the test instead, so a GPU machine whose driver is broken is never green.
//! - [`seed`]: one variable, `TILE_TEST_SEED`, replays any randomised test.
//! - [`packs_dir`], [`examples_pack`], [`pack_named`], [`current_pack`],
//!   [`current_pack_path`]: the packs `scripts/test` builds before the tests
//!   run, refused when a kernel's `source_hash` is not the SHA-256 of a `.tile`
//!   file in its source folder now (a stale pack would agree with itself).
//! - [`Tolerance`], [`mismatches`]: comparisons with named tolerance fields.
//! - [`ptxas`], [`run_ptxas`]: the assembler check of generated PTX.
//! - [`progen`]: random well-typed kernels for the fuzz and differential tests.
//! - [`attention`]: attention in f64 with the bounds of its bf16 kernels.

pub mod attention;
pub mod progen;

use half::bf16;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tile_ir::pack::{sha256_hex, PackManifest};
use tile_runtime::{Buffer, Device, Pack, Scalar};

/// The runtime, for tests whose crate does not depend on it (the front end's
/// fuzz runs accepted kernels on the interpreter through it).
pub use tile_runtime;

/// The dtype type the [`dtype_tests!`] matrix names.
pub use tile_runtime::Scalar as Dtype;

/// A test matrix written once (CubeCL's `testgen`): one `#[test]` per dtype,
/// so a failure names the dtype and the others still run.
/// `dtype_tests!(dot_matches, [BF16, F32], |s| { ... })` expands to
/// `mod dot_matches { #[test] fn BF16() { let s = Scalar::BF16; ... } ... }`
/// (the body sees the enclosing module's items).
#[macro_export]
macro_rules! dtype_tests {
    ($name:ident, [$($dtype:ident),+ $(,)?], |$s:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                #[allow(non_snake_case)]
                fn $dtype() {
                    let $s = $crate::Dtype::$dtype;
                    $body
                }
            )+
        }
    };
}

/// Workspace root: `$TILE_SOURCE_ROOT`, else the checkout this crate was built
/// in, else (a test binary carried to another machine, run from the
/// repository root as `scripts/gpu-run.sh` does) the current directory.
pub fn root() -> PathBuf {
    if let Some(r) = std::env::var_os("TILE_SOURCE_ROOT") {
        return PathBuf::from(r);
    }
    let r = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match r.canonicalize() {
        Ok(r) if r.join("Cargo.toml").exists() => r,
        _ => std::env::current_dir().unwrap_or(r),
    }
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

/// The source folder (relative to [`root`]) each pack of `scripts/packs` is
/// compiled from.
pub fn pack_source_dir(pack: &str) -> Option<String> {
    match pack {
        "dsl-examples" => Some("dsl-examples".into()),
        "codegen-tests" => Some("tests/kernels".into()),
        "mhc" | "model" => Some(format!("mhc-kernels/kernels/{pack}")),
        _ => None,
    }
}

/// Every file below `dir`, recursively, whose extension is one of `exts`,
/// sorted by path. Panics when a directory cannot be read: a corpus that
/// vanished must fail its test, not shrink it.
pub fn files_below(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, exts, out);
            } else if p.extension().is_some_and(|x| exts.iter().any(|e| x == *e)) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, exts, &mut out);
    out
}

/// SHA-256 (hex) of the text of every `.tile` file in `dir`.
pub fn source_hashes(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the pack's sources must be here)", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tile"))
        .map(|p| sha256_hex(std::fs::read_to_string(p).unwrap().as_bytes()))
        .collect()
}

/// Err naming the first kernel of `m` whose `source_hash` is not that of a
/// `.tile` file in `src_dir` (relative to [`root`]) now; Err too when the
/// folder holds no `.tile` file (nothing to vouch for the pack).
pub fn check_current(m: &PackManifest, what: &str, src_dir: &str) -> Result<(), String> {
    let dir = root().join(src_dir);
    let hashes = source_hashes(&dir);
    if hashes.is_empty() {
        return Err(format!(
            "{what}: no .tile file in {} to check the pack against",
            dir.display()
        ));
    }
    if m.kernels.is_empty() {
        return Err(format!("{what}: the pack holds no kernel"));
    }
    match m.kernels.iter().find(|k| !hashes.contains(&k.source_hash)) {
        None => Ok(()),
        Some(k) => Err(format!(
            "{what}: kernel `{}` was compiled from a source that {src_dir} no longer has \
             (stale pack); rebuild with `bash scripts/packs`",
            k.name
        )),
    }
}

/// The pack `name` (`dsl-examples`, `codegen-tests`, `mhc`, `model`) from
/// [`packs_dir`], read and checked current against its sources; panics otherwise.
pub fn current_pack(name: &str) -> PackManifest {
    let path = current_pack_path(name);
    PackManifest::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path of the pack `name` under [`packs_dir`] after checking it is
/// current (for loaders that take a path, like `KernelSet::from_packs`).
pub fn current_pack_path(name: &str) -> PathBuf {
    let path = packs_dir().join(format!("{name}.tpack"));
    let m = PackManifest::read(&path)
        .unwrap_or_else(|e| panic!("{e}\n(build it with `bash scripts/packs`)"));
    checked(&m, &path, name);
    path
}

fn checked(m: &PackManifest, path: &Path, name: &str) {
    let dir = pack_source_dir(name).unwrap_or_else(|| {
        panic!("{name}: no source folder known for this pack (add it to pack_source_dir)")
    });
    if let Err(e) = check_current(m, &path.display().to_string(), &dir) {
        panic!("{e}");
    }
}

/// The pack of dsl-examples: `$TILE_EXAMPLES_PACK`, else `target/packs/dsl-examples.tpack`
/// (made by `scripts/test` with `tilec pack dsl-examples -o ...`), checked
/// current against `dsl-examples/*.tile`.
pub fn examples_pack() -> Pack {
    let path = std::env::var_os("TILE_EXAMPLES_PACK")
        .map(PathBuf::from)
        .unwrap_or_else(|| packs_dir().join("dsl-examples.tpack"));
    let p = match Pack::load(&path) {
        Ok(p) => p,
        Err(e) => panic!(
            "{e}\n(build it with `tilec pack dsl-examples -o {}`)",
            path.display()
        ),
    };
    checked(p.manifest(), &path, "dsl-examples");
    p
}

/// A pack under `target/packs/` (or `$TILE_PACK_DIR`) by file name, checked
/// current against its sources ([`pack_source_dir`]).
pub fn pack_named(file: &str) -> Pack {
    let path = packs_dir().join(file);
    let p = match Pack::load(&path) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n(scripts/test builds it: `bash scripts/packs`)"),
    };
    checked(p.manifest(), &path, file.trim_end_matches(".tpack"));
    p
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

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::pack::PackedKernel;
    use tile_ir::{Signature, TuneSpace};

    fn manifest(source_hash: String) -> PackManifest {
        PackManifest {
            compiler_version: tile_ir::VERSION.into(),
            kernels: vec![PackedKernel {
                name: "softmax".into(),
                signature: Signature {
                    name: "softmax".into(),
                    params: vec![],
                },
                tune: TuneSpace::default(),
                source_hash,
                variants: vec![],
            }],
        }
    }

    #[test]
    fn a_pack_is_current_only_when_every_source_hash_is_a_current_file() {
        let text = std::fs::read_to_string(root().join("dsl-examples/softmax.tile")).unwrap();
        check_current(&manifest(sha256_hex(text.as_bytes())), "t", "dsl-examples").unwrap();
        // One byte more: the pack was built from an edited (or older) source.
        let stale = manifest(sha256_hex(format!("{text} ").as_bytes()));
        let e = check_current(&stale, "t", "dsl-examples").unwrap_err();
        assert!(e.contains("`softmax`") && e.contains("stale"), "{e}");
        // A folder without sources vouches for nothing.
        let e = check_current(&stale, "t", "tests/tile-testkit/src").unwrap_err();
        assert!(e.contains("no .tile file"), "{e}");
        assert_eq!(
            pack_source_dir("mhc").as_deref(),
            Some("mhc-kernels/kernels/mhc")
        );
    }
}
