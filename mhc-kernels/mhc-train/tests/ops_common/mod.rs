//! Helpers of the CPU op tests (ops_cpu.rs, ops_attention_cpu.rs): the
//! device, seeded inputs, NaN-filled outputs, comparisons with tolerances
//! and finite differences.
#![allow(dead_code)]

use mhc::kernels::KernelSet;
use mhc_train::ops::Ops;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::{Buffer, Device, Scalar};
use tile_testkit::seed;

/// f32 kernels against f64: every reduction stage here sums ≤ 1024 terms
/// (rows, heads, K; the global sums go in stages), so the typical rounding
/// walk is √1024·2^-24 ≈ 1.9e-6 of the scale; ×8 for a tail over ~10^4
/// checked values and partial sums larger than the result: 8·32·2^-24 ≈
/// 1.5e-5 (was 1e-4; observed errors are ~1e-7–3e-7 of the scale).
pub const F32_TOL: f64 = 8.0 * 32.0 / 16_777_216.0;
pub const BF16_TOL: f64 = 1.0 / 256.0;

/// Ops on the CPU: kernels from the packs in `$TILE_PACK_DIR` when it holds
/// them (which checks that the packs cover every configuration the ops pick),
/// else from the embedded sources.
pub fn ops() -> Ops {
    let dir = std::env::var_os("TILE_PACK_DIR").map(std::path::PathBuf::from);
    let ks = KernelSet::open(Arc::new(Device::cpu()), dir.as_deref()).unwrap();
    Ops::new(Arc::new(ks)).unwrap()
}

/// A fresh seeded RNG per test, printed so that a failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    StdRng::seed_from_u64(seed(&format!("{test}: ")))
}

pub fn randv(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

pub fn up(o: &Ops, v: &[f64]) -> Buffer {
    o.device()
        .upload(&v.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .unwrap()
}

/// f64 values exactly as the f32 buffer will hold them.
pub fn as_f32(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

pub fn up_i32(o: &Ops, v: &[i32]) -> Buffer {
    o.device().upload(v).unwrap()
}

pub fn nan(o: &Ops, dtype: Scalar, n: usize) -> Buffer {
    let b = match dtype {
        Scalar::BF16 => o.device().upload(&vec![half::bf16::NAN; n]),
        _ => o.device().upload(&vec![f32::NAN; n]),
    };
    b.unwrap()
}

pub fn down(o: &Ops, b: &Buffer) -> Vec<f64> {
    match b.dtype() {
        Scalar::BF16 => o
            .device()
            .download::<half::bf16>(b)
            .unwrap()
            .iter()
            .map(|x| x.to_f64())
            .collect(),
        _ => o
            .device()
            .download::<f32>(b)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect(),
    }
}

/// |got − want| ≤ tol·(|want| + rms(want)) everywhere (NaN fails).
#[track_caller]
pub fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|w| w * w).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (w.abs() + rms);
        assert!(
            ok,
            "{what}[{i}]: got {g}, want {w} (rms {rms:.3e}, tol {tol:.1e})"
        );
    }
}

/// Bit-for-bit equality (NaN fails, and -0 is not +0), reporting the first
/// difference.
#[track_caller]
pub fn same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let differ = |i: usize| got[i] != want[i] || got[i].to_bits() != want[i].to_bits();
    if let Some(i) = (0..got.len()).find(|&i| differ(i)) {
        panic!("{what}[{i}]: got {}, want {}", got[i], want[i]);
    }
}

/// Central finite differences of `f` at `x` in the coordinates `idx`.
pub fn fd(f: &dyn Fn(&[f64]) -> f64, x: &[f64], idx: &[usize]) -> Vec<f64> {
    let h = 1e-5;
    idx.iter()
        .map(|&i| {
            let mut xp = x.to_vec();
            xp[i] += h;
            let mut xm = x.to_vec();
            xm[i] -= h;
            (f(&xp) - f(&xm)) / (2.0 * h)
        })
        .collect()
}

/// Up to `k` distinct coordinates of `n` to check by finite differences.
pub fn sample(rng: &mut StdRng, n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    rand::seq::index::sample(rng, n, k).into_vec()
}

/// Check a gradient against finite differences of `loss` at `x` on a sample.
#[track_caller]
pub fn check_grad(
    what: &str,
    rng: &mut StdRng,
    loss: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    got: &[f64],
) {
    let idx = sample(rng, x.len(), 120);
    let want = fd(loss, x, &idx);
    let got: Vec<f64> = idx.iter().map(|&i| got[i]).collect();
    close(what, &got, &want, F32_TOL);
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `x` rounded to f32, then to bf16 to nearest even, computed on the bits
/// (an independent reference: `half::bf16::from_f64` is not correctly
/// rounded for some inputs).
pub fn bf16_round(x: f64) -> f64 {
    let b = (x as f32).to_bits();
    f32::from_bits(((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16) as f64
}

pub fn as_bf16(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| bf16_round(x)).collect()
}

pub fn up_bf16(o: &Ops, v: &[f64]) -> Buffer {
    o.device()
        .upload(
            &v.iter()
                .map(|&x| half::bf16::from_f32(x as f32))
                .collect::<Vec<_>>(),
        )
        .unwrap()
}

pub fn softmax_ref(s: &[f64], t: usize, scale: f64) -> Vec<f64> {
    let mut p = vec![0.0; s.len()];
    for (r, row) in s.chunks(t).enumerate() {
        let len = r % t + 1;
        let m = row[..len]
            .iter()
            .map(|v| v * scale)
            .fold(f64::MIN, f64::max);
        let z: f64 = row[..len].iter().map(|v| (v * scale - m).exp()).sum();
        for j in 0..len {
            p[r * t + j] = (row[j] * scale - m).exp() / z;
        }
    }
    p
}
