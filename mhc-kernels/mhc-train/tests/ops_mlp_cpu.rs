//! The MLP's GEMMs with GELU in their epilogue (`Ops::linear_gelu`,
//! `Ops::linear_gelu_bwd`) on the CPU interpreter, at ragged sizes that
//! leave every tile partly masked, on fresh random bf16 inputs with
//! NaN-filled outputs: the GEMM against an f64 reference, GELU against the
//! unfused ops applied to the same rounded values (bit for bit).
//!
//! Tolerance of a GEMM rounded to bf16, against the f64 value rounded the
//! same way: the f32 accumulation's error over k terms (k·2⁻²⁴·Σ|a·w|, a
//! bound, not a typical walk) can move the result across a rounding
//! boundary, one bf16 ulp (≤ 2⁻⁷ relative), and through GELU's slope and a
//! second rounding another: 2⁻⁶ relative. Crossing a boundary is rare, so
//! at least 90% of the elements must also agree bit for bit (a 1% error in
//! every element fails that).

mod ops_common;
use ops_common::*;

use tile_runtime::Scalar;

/// |got − want| ≤ 2⁻⁶·|want| + k·2⁻²⁴·scale element by element, and at
/// least 90% of them equal.
fn close_gemm(what: &str, got: &[f64], want: &[f64], scale: &[f64], k: usize) {
    assert_eq!(got.len(), want.len());
    let mut equal = 0;
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = w.abs() / 64.0 + k as f64 / 16_777_216.0 * s;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (tolerance {tol:e})"
        );
        equal += (g.to_bits() == w.to_bits()) as usize;
    }
    assert!(
        equal * 10 >= got.len() * 9,
        "{what}: only {equal} of {} elements as the reference rounds them",
        got.len()
    );
}

/// c = a · b (a [m, k], b [k, n]) in f64, and Σ|a·b| per element (the scale
/// of the accumulation's error).
fn matmul_ref(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut s) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for l in 0..k {
                c[i * n + j] += a[i * k + l] * b[l * n + j];
                s[i * n + j] += (a[i * k + l] * b[l * n + j]).abs();
            }
        }
    }
    (c, s)
}

fn transpose(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols)
        .map(|i| x[(i % rows) * cols + i / rows])
        .collect()
}

#[test]
fn linear_gelu_is_the_gemm_then_gelu() {
    let o = ops();
    let mut rng = rng("linear_gelu_is_the_gemm_then_gelu");
    // Past one 128 × 256 tile in m, not a multiple of 64 in k.
    let (m, n, k) = (131, 70, 100);
    let a = as_bf16(&randv(&mut rng, m * k, 1.0));
    let w = as_bf16(&randv(&mut rng, k * n, 0.3));
    let (mut u, mut g) = (nan(&o, Scalar::BF16, m * n), nan(&o, Scalar::BF16, m * n));
    o.linear_gelu(&up_bf16(&o, &a), &up_bf16(&o, &w), &mut u, &mut g, m, n, k)
        .unwrap();
    let (want, scale) = matmul_ref(&a, &w, m, n, k);
    let got_u = down(&o, &u);
    close_gemm("u", &got_u, &as_bf16(&want), &scale, k);
    // g is GELU of the rounded u, as the unfused gelu_fwd computes it.
    let mut g_want = nan(&o, Scalar::BF16, m * n);
    o.gelu_fwd(&u, &mut g_want, m * n).unwrap();
    same("g", &down(&o, &g), &down(&o, &g_want));
}

#[test]
fn linear_gelu_bwd_is_the_gemm_then_gelus_backward() {
    let o = ops();
    let mut rng = rng("linear_gelu_bwd_is_the_gemm_then_gelus_backward");
    let (m, n, k) = (131, 150, 72);
    let dy = as_bf16(&randv(&mut rng, m * k, 1.0));
    let w = as_bf16(&randv(&mut rng, n * k, 0.3));
    let u = as_bf16(&randv(&mut rng, m * n, 3.0));
    let ub = up_bf16(&o, &u);
    let (mut du, mut g) = (nan(&o, Scalar::BF16, m * n), nan(&o, Scalar::BF16, m * n));
    o.linear_gelu_bwd(
        &up_bf16(&o, &dy),
        &up_bf16(&o, &w),
        &ub,
        &mut du,
        &mut g,
        m,
        n,
        k,
    )
    .unwrap();
    // dg = dy · wᵀ (w is [n, k]), rounded to bf16, then the unfused pass.
    let (dg, scale) = matmul_ref(&dy, &transpose(&w, n, k), m, n, k);
    let (mut du_want, mut g_want) = (nan(&o, Scalar::BF16, m * n), nan(&o, Scalar::BF16, m * n));
    o.gelu_bwd_regen(
        &ub,
        &up_bf16(&o, &as_bf16(&dg)),
        &mut du_want,
        &mut g_want,
        m * n,
    )
    .unwrap();
    same("g", &down(&o, &g), &down(&o, &g_want));
    // GELU's slope is at most 1.13: the GEMM's tolerance scaled by it.
    let slope_scale: Vec<f64> = scale.iter().map(|s| 1.13 * s).collect();
    close_gemm("du", &down(&o, &du), &down(&o, &du_want), &slope_scale, k);
}

#[test]
fn fused_mlp_gemms_refuse_bad_buffers() {
    let o = ops();
    let (m, n, k) = (4, 8, 16);
    let a16 = nan(&o, Scalar::BF16, m * k);
    let a32 = nan(&o, Scalar::F32, m * k);
    let w = nan(&o, Scalar::BF16, k * n);
    let (mut u, mut g) = (nan(&o, Scalar::BF16, m * n), nan(&o, Scalar::BF16, m * n));
    let err = o
        .linear_gelu(&a32, &w, &mut u, &mut g, m, n, k)
        .unwrap_err();
    assert!(
        err.to_string().contains("`a` must be a bf16 buffer"),
        "{err}"
    );
    let short = nan(&o, Scalar::BF16, k * n - 1);
    let err = o
        .linear_gelu(&a16, &short, &mut u, &mut g, m, n, k)
        .unwrap_err();
    assert!(err.to_string().contains("`w`"), "{err}");
    let (mut du, mut g32) = (nan(&o, Scalar::BF16, m * n), nan(&o, Scalar::F32, m * n));
    let err = o
        .linear_gelu_bwd(&a16, &w, &u, &mut du, &mut g32, m, n, k)
        .unwrap_err();
    assert!(
        err.to_string().contains("`g` must be a bf16 buffer"),
        "{err}"
    );
}
