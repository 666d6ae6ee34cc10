//! Helpers for tests and benchmarks that run kernels on the interpreter:
//! seeded random inputs and element-by-element comparison with a reference.

use rand::{Rng, SeedableRng};

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

/// Check every element: `|got - want| <= atol + rtol * |want|`, NaN only where
/// `want` is NaN, infinities equal. Panics with the first mismatches.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
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
            "{what}: {} of {} elements differ (atol {atol}, rtol {rtol}): {}",
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
