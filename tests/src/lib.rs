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
        Err(e) => panic!("{e}\n(build it with `tilec pack dsl-examples -o {}`)", path.display()),
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
    (0..n).map(|_| seed_rng.random_range(-4.0f32..4.0)).collect()
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
