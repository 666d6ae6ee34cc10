//! Every op of `mhc_train::ops` on the CPU device (the interpreter running the
//! `model` kernels from the embedded sources) against f64 references, on
//! fresh random inputs (the seed is printed; `TILE_TEST_SEED=N` repeats a run) with
//! NaN-filled outputs, at ragged sizes. Every backward is checked against
//! central finite differences of the f64 reference forward. With
//! `TILE_PACK_DIR=DIR` the kernels come from the packs there (their TIR).
//!
//! Tolerances: f32 kernels are held to 8·√1024·2⁻²⁴ ≈ 1.5e-5 of the output's
//! scale (`F32_TOL`: reduction stages here are ≤ 1024 terms, so summation
//! error is ≲ √n·2⁻²⁴ ≈ 2e-6, and the interpreter's exp/log/tanh/rsqrt are
//! f32-accurate); finite differences in f64 with h = 1e-5 add ≈1e-9. Results
//! rounded to bf16 are held to one bf16 rounding, 2⁻⁸ relative.

use mhc::kernels::KernelSet;
use mhc_train::ops::{AdamW, Ops, OpsError, Out};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::blas::GemmOp;
use tile_runtime::{Buffer, Device, Scalar};
use tile_testkit::seed;

/// f32 kernels against f64: every reduction stage here sums ≤ 1024 terms
/// (rows, heads, K; the global sums go in stages), so the typical rounding
/// walk is √1024·2^-24 ≈ 1.9e-6 of the scale; ×8 for a tail over ~10^4
/// checked values and partial sums larger than the result: 8·32·2^-24 ≈
/// 1.5e-5 (was 1e-4; observed errors are ~1e-7–3e-7 of the scale).
const F32_TOL: f64 = 8.0 * 32.0 / 16_777_216.0;
const BF16_TOL: f64 = 1.0 / 256.0;

/// Ops on the CPU: kernels from the packs in `$TILE_PACK_DIR` when it holds
/// them (which checks that the packs cover every configuration the ops pick),
/// else from the embedded sources.
fn ops() -> Ops {
    let dir = std::env::var_os("TILE_PACK_DIR").map(std::path::PathBuf::from);
    let ks = KernelSet::open(Arc::new(Device::cpu()), dir.as_deref()).unwrap();
    Ops::new(Arc::new(ks)).unwrap()
}

/// A fresh seeded RNG per test, printed so that a failure can be replayed.
fn rng(test: &str) -> StdRng {
    StdRng::seed_from_u64(seed(&format!("{test}: ")))
}

fn randv(rng: &mut StdRng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn up(o: &Ops, v: &[f64]) -> Buffer {
    o.device()
        .upload(&v.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .unwrap()
}

/// f64 values exactly as the f32 buffer will hold them.
fn as_f32(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

fn up_i32(o: &Ops, v: &[i32]) -> Buffer {
    o.device().upload(v).unwrap()
}

fn nan(o: &Ops, dtype: Scalar, n: usize) -> Buffer {
    let b = match dtype {
        Scalar::BF16 => o.device().upload(&vec![half::bf16::NAN; n]),
        _ => o.device().upload(&vec![f32::NAN; n]),
    };
    b.unwrap()
}

fn down(o: &Ops, b: &Buffer) -> Vec<f64> {
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
fn close(what: &str, got: &[f64], want: &[f64], tol: f64) {
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

/// Bit-for-bit equality (NaN fails), reporting the first difference.
#[track_caller]
fn same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}[{i}]: got {}, want {}", got[i], want[i]);
    }
}

/// Central finite differences of `f` at `x` in the coordinates `idx`.
fn fd(f: &dyn Fn(&[f64]) -> f64, x: &[f64], idx: &[usize]) -> Vec<f64> {
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
fn sample(rng: &mut StdRng, n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    rand::seq::index::sample(rng, n, k).into_vec()
}

/// Check a gradient against finite differences of `loss` at `x` on a sample.
#[track_caller]
fn check_grad(what: &str, rng: &mut StdRng, loss: &dyn Fn(&[f64]) -> f64, x: &[f64], got: &[f64]) {
    let idx = sample(rng, x.len(), 120);
    let want = fd(loss, x, &idx);
    let got: Vec<f64> = idx.iter().map(|&i| got[i]).collect();
    close(what, &got, &want, F32_TOL);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------- references

fn rmsnorm_ref(x: &[f64], w: &[f64], n: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; x.len()];
    let mut rstd = vec![];
    for (r, row) in x.chunks(n).enumerate() {
        let rs = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
        for j in 0..n {
            y[r * n + j] = row[j] * rs * w[j];
        }
        rstd.push(rs);
    }
    (y, rstd)
}

fn softmax_ref(s: &[f64], t: usize, scale: f64) -> Vec<f64> {
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

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

fn xent_ref(logits: &[f64], targets: &[i32], v: usize) -> Vec<f64> {
    logits
        .chunks(v)
        .zip(targets)
        .map(|(row, &t)| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - row[t as usize]
        })
        .collect()
}

/// The causal softmax P [t, t] of head `b`'s scores scale·q·kᵀ.
fn attention_probs(q: &[f64], k: &[f64], b: usize, t: usize, d: usize, scale: f64) -> Vec<f64> {
    let at = |m: &[f64], i: usize, j: usize| m[(b * t + i) * d + j];
    let mut s = vec![0.0; t * t];
    for i in 0..t {
        for j in 0..t {
            s[i * t + j] = (0..d).map(|e| at(q, i, e) * at(k, j, e)).sum();
        }
    }
    softmax_ref(&s, t, scale)
}

/// Causal attention of [bh, t, d] q, k, v.
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bh: usize,
    t: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let mut o = vec![0.0; bh * t * d];
    for b in 0..bh {
        let at = |m: &[f64], i: usize, j: usize| m[(b * t + i) * d + j];
        let p = attention_probs(q, k, b, t, d, scale);
        for i in 0..t {
            for e in 0..d {
                o[(b * t + i) * d + e] = (0..t).map(|j| p[i * t + j] * at(v, j, e)).sum();
            }
        }
    }
    o
}

// ---------------------------------------------------------------- tests

#[test]
fn gemm_through_ops() {
    let o = ops();
    let mut rng = rng("gemm_through_ops");
    let (m, n, k) = (13, 7, 29);
    let (a, b) = (randv(&mut rng, k * m, 1.0), randv(&mut rng, n * k, 1.0));
    let mut c = nan(&o, Scalar::F32, m * n);
    o.gemm(
        &GemmOp::new(m, n, k).trans_a(true).trans_b(true).alpha(0.5),
        &up(&o, &a),
        &up(&o, &b),
        &mut c,
    )
    .unwrap();
    let (a, b) = (as_f32(&a), as_f32(&b));
    let want: Vec<f64> = (0..m * n)
        .map(|ij| {
            0.5 * (0..k)
                .map(|p| a[p * m + ij / n] * b[(ij % n) * k + p])
                .sum::<f64>()
        })
        .collect();
    close("c", &down(&o, &c), &want, F32_TOL);
}

#[test]
fn embedding_forward_and_backward() {
    let o = ops();
    let mut rng = rng("embedding");
    for (b, t, vocab, c) in [(2, 5, 11, 37), (3, 4, 7, 300)] {
        let rows = b * t;
        let toks: Vec<i32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as i32))
            .collect();
        let (wte, wpe) = (randv(&mut rng, vocab * c, 1.0), randv(&mut rng, t * c, 1.0));
        let (tb, wteb, wpeb) = (up_i32(&o, &toks), up(&o, &wte), up(&o, &wpe));
        let (wte, wpe) = (as_f32(&wte), as_f32(&wpe));
        let fwd = |wte: &[f64], wpe: Option<&[f64]>| -> Vec<f64> {
            (0..rows * c)
                .map(|i| {
                    wte[toks[i / c] as usize * c + i % c]
                        + wpe.map_or(0.0, |p| p[(i / c % t) * c + i % c])
                })
                .collect()
        };
        for pos in [false, true] {
            let mut out = nan(&o, Scalar::F32, rows * c);
            o.embed_fwd(
                &tb,
                &wteb,
                pos.then_some(&wpeb),
                &mut out,
                rows,
                t,
                vocab,
                c,
            )
            .unwrap();
            close(
                "embed out",
                &down(&o, &out),
                &fwd(&wte, pos.then_some(&wpe)),
                1e-7,
            );
        }
        let dout = randv(&mut rng, rows * c, 1.0);
        let doutb = up(&o, &dout);
        let dout = as_f32(&dout);
        for mode in [Out::Write, Out::Add] {
            let prev = randv(&mut rng, vocab * c, 1.0);
            let mut dwte = if mode == Out::Add {
                up(&o, &prev)
            } else {
                nan(&o, Scalar::F32, vocab * c)
            };
            o.embed_bwd(&toks, &doutb, &mut dwte, vocab, c, mode)
                .unwrap();
            let mut got = down(&o, &dwte);
            if mode == Out::Add {
                got.iter_mut().zip(as_f32(&prev)).for_each(|(g, p)| *g -= p);
            }
            check_grad("dwte", &mut rng, &|w| dot(&dout, &fwd(w, None)), &wte, &got);
            let mut dwpe = nan(&o, Scalar::F32, t * c);
            o.embed_pos_bwd(&doutb, &mut dwpe, rows, t, c, Out::Write)
                .unwrap();
            check_grad(
                "dwpe",
                &mut rng,
                &|p| dot(&dout, &fwd(&wte, Some(p))),
                &wpe,
                &down(&o, &dwpe),
            );
        }
    }
    // A token outside the table gives a NaN row, not an out-of-bounds read.
    let mut out = nan(&o, Scalar::F32, 2 * 3);
    o.embed_fwd(
        &up_i32(&o, &[1, 9]),
        &up(&o, &[0.5; 6]),
        None,
        &mut out,
        2,
        2,
        2,
        3,
    )
    .unwrap();
    let got = down(&o, &out);
    assert!(
        got[..3].iter().all(|&x| x == 0.5) && got[3..].iter().all(|x| x.is_nan()),
        "{got:?}"
    );
}

#[test]
fn rmsnorm_forward_and_backward() {
    let mut rng = rng("rmsnorm");
    // (rows, n, row block cap): ragged widths, chunked rows, and enough rows
    // for the two-stage dw reduction (more than 64 rows).
    for (rows, n, cap) in [
        (5, 37, 2048),
        (3, 300, 64),
        (150, 19, 2048),
        (2, 2100, 2048),
    ] {
        let o = ops().with_row_block_cap(cap);
        let eps = 1e-5;
        let (x, w, dy) = (
            randv(&mut rng, rows * n, 2.0),
            randv(&mut rng, n, 1.0),
            randv(&mut rng, rows * n, 1.0),
        );
        let (xb, wb, dyb) = (up(&o, &x), up(&o, &w), up(&o, &dy));
        let (x, w, dy) = (as_f32(&x), as_f32(&w), as_f32(&dy));
        let (mut y, mut rstd) = (nan(&o, Scalar::F32, rows * n), nan(&o, Scalar::F32, rows));
        o.rmsnorm_fwd(&xb, &wb, &mut y, &mut rstd, rows, n, eps as f32)
            .unwrap();
        let (y_ref, rstd_ref) = rmsnorm_ref(&x, &w, n, eps);
        close("y", &down(&o, &y), &y_ref, F32_TOL);
        close("rstd", &down(&o, &rstd), &rstd_ref, F32_TOL);
        for mode in [Out::Write, Out::Add] {
            let (px, pw) = (randv(&mut rng, rows * n, 1.0), randv(&mut rng, n, 1.0));
            let (mut dx, mut dw) = match mode {
                Out::Add => (up(&o, &px), up(&o, &pw)),
                Out::Write => (nan(&o, Scalar::F32, rows * n), nan(&o, Scalar::F32, n)),
            };
            o.rmsnorm_bwd(&xb, &wb, &rstd, &dyb, &mut dx, mode, &mut dw, mode, rows, n)
                .unwrap();
            let (mut gdx, mut gdw) = (down(&o, &dx), down(&o, &dw));
            if mode == Out::Add {
                gdx.iter_mut().zip(as_f32(&px)).for_each(|(g, p)| *g -= p);
                gdw.iter_mut().zip(as_f32(&pw)).for_each(|(g, p)| *g -= p);
            }
            check_grad(
                "dx",
                &mut rng,
                &|x| dot(&dy, &rmsnorm_ref(x, &w, n, eps).0),
                &x,
                &gdx,
            );
            check_grad(
                "dw",
                &mut rng,
                &|w| dot(&dy, &rmsnorm_ref(&x, w, n, eps).0),
                &w,
                &gdw,
            );
        }
    }
}

#[test]
fn causal_softmax_forward_and_backward() {
    let mut rng = rng("softmax");
    for (bh, t, cap) in [(3, 37, 2048), (2, 150, 64), (1, 1, 2048)] {
        let o = ops().with_row_block_cap(cap);
        let scale = 0.37;
        let (s, dp) = (
            randv(&mut rng, bh * t * t, 4.0),
            randv(&mut rng, bh * t * t, 1.0),
        );
        let (sb, dpb) = (up(&o, &s), up(&o, &dp));
        let (s, dp) = (as_f32(&s), as_f32(&dp));
        let mut p = nan(&o, Scalar::F32, bh * t * t);
        o.attn_softmax_fwd(&sb, &mut p, bh, t, scale as f32)
            .unwrap();
        close("p", &down(&o, &p), &softmax_ref(&s, t, scale), F32_TOL);
        let mut ds = nan(&o, Scalar::F32, bh * t * t);
        o.attn_softmax_bwd(&p, &dpb, &mut ds, bh, t, scale as f32)
            .unwrap();
        check_grad(
            "ds",
            &mut rng,
            &|s| dot(&dp, &softmax_ref(s, t, scale)),
            &s,
            &down(&o, &ds),
        );
    }
}

#[test]
fn attention_forward_and_backward() {
    let o = ops();
    let mut rng = rng("attention");
    let (bh, t, d) = (3, 13, 8);
    let scale = 1.0 / (d as f64).sqrt();
    let n = bh * t * d;
    let (q, k, v, d_o) = (
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
        randv(&mut rng, n, 1.0),
    );
    let (qb, kb, vb, dob) = (up(&o, &q), up(&o, &k), up(&o, &v), up(&o, &d_o));
    let (q, k, v, d_o) = (as_f32(&q), as_f32(&k), as_f32(&v), as_f32(&d_o));
    let (mut p, mut out) = (nan(&o, Scalar::F32, bh * t * t), nan(&o, Scalar::F32, n));
    o.attention_fwd(&qb, &kb, &vb, &mut p, &mut out, bh, t, d, scale as f32)
        .unwrap();
    close(
        "o",
        &down(&o, &out),
        &attention_ref(&q, &k, &v, bh, t, d, scale),
        F32_TOL,
    );
    let [mut dq, mut dk, mut dv] = [0; 3].map(|_| nan(&o, Scalar::F32, n));
    let mut ws = nan(&o, Scalar::F32, bh * t * t);
    o.attention_bwd(
        &qb,
        &kb,
        &vb,
        &p,
        &dob,
        &mut dq,
        &mut dk,
        &mut dv,
        &mut ws,
        bh,
        t,
        d,
        scale as f32,
    )
    .unwrap();
    let att = |q: &[f64], k: &[f64], v: &[f64]| dot(&d_o, &attention_ref(q, k, v, bh, t, d, scale));
    check_grad("dq", &mut rng, &|x| att(x, &k, &v), &q, &down(&o, &dq));
    check_grad("dk", &mut rng, &|x| att(&q, x, &v), &k, &down(&o, &dk));
    check_grad("dv", &mut rng, &|x| att(&q, &k, x), &v, &down(&o, &dv));
}

/// The gradients of causal attention in f64 (loss Σ O ∘ dO), and their
/// absolute-value counterparts (the same sums over |terms|, which bound the
/// rounding of the bf16 operands; |dS| with delta's rounding added):
/// (dq, dk, dv, |dq|, |dk|, |dv|).
#[allow(clippy::type_complexity)]
fn attention_grads_ref(
    [q, k, v, d_o]: [&[f64]; 4],
    bh: usize,
    t: usize,
    d: usize,
    scale: f64,
) -> [Vec<f64>; 6] {
    let n = bh * t * d;
    let mut g = [0; 6].map(|_| vec![0.0; n]);
    for b in 0..bh {
        let at = |m: &[f64], i: usize, j: usize| m[(b * t + i) * d + j];
        let p = attention_probs(q, k, b, t, d, scale);
        for i in 0..t {
            let dp: Vec<f64> = (0..t)
                .map(|j| (0..d).map(|e| at(d_o, i, e) * at(v, j, e)).sum())
                .collect();
            let delta: f64 = (0..t).map(|j| p[i * t + j] * dp[j]).sum();
            // delta from the bf16-rounded output: off by 2^-8 of Σ|dO·O|,
            // which every dS of the row carries (times P).
            let delta_abs: f64 = (0..d)
                .map(|e| {
                    let o: f64 = (0..t).map(|j| p[i * t + j] * at(v, j, e)).sum();
                    (at(d_o, i, e) * o).abs()
                })
                .sum();
            for j in 0..=i {
                let (pij, ds) = (p[i * t + j], p[i * t + j] * (dp[j] - delta));
                let ds_abs = ds.abs() + pij * delta_abs;
                for e in 0..d {
                    let (x, y) = ((b * t + i) * d + e, (b * t + j) * d + e);
                    g[0][x] += scale * ds * at(k, j, e);
                    g[1][y] += scale * ds * at(q, i, e);
                    g[2][y] += pij * at(d_o, i, e);
                    g[3][x] += scale * ds_abs * at(k, j, e).abs();
                    g[4][y] += scale * ds_abs * at(q, i, e).abs();
                    g[5][y] += pij * at(d_o, i, e).abs();
                }
            }
        }
    }
    g
}

/// The fused (flash) attention on bf16 heads against f64 on the same
/// bf16 values, at a length that is no multiple of the blocks (64 and 128)
/// and both head dimensions the kernels have. Bounds: P and dS are rounded
/// to bf16 before their second dots (relative 2⁻⁸ of each term, so 2⁻⁸ of
/// the sum of |terms|, `abs`), delta = rowsum(dO ∘ O) reads the bf16
/// output (2⁻⁸ of Σ|dO·O| in every dS of the row, in `abs` too), and the
/// bf16 result rounds once more (2⁻⁸ of |want|); 2⁻⁷ of both covers them
/// with f32 accumulation to spare. The
/// f64 gradients are checked against finite differences of the forward.
#[test]
fn flash_attention_forward_and_backward() {
    let o = ops();
    let mut rng = rng("flash_attention");
    for (bh, t, d) in [(2, 70, 64), (1, 130, 128)] {
        assert!(Ops::has_flash_attention(d));
        let scale = 1.0 / (d as f64).sqrt();
        let n = bh * t * d;
        let bf = |v: Vec<f64>| -> Vec<f64> {
            v.iter()
                .map(|&x| half::bf16::from_f64(x).to_f64())
                .collect()
        };
        let [q, k, v, d_o] = [0; 4].map(|_| bf(randv(&mut rng, n, 2.0)));
        let up16 = |x: &[f64]| {
            o.device()
                .upload(
                    &x.iter()
                        .map(|&y| half::bf16::from_f64(y))
                        .collect::<Vec<_>>(),
                )
                .unwrap()
        };
        let (qb, kb, vb, dob) = (up16(&q), up16(&k), up16(&v), up16(&d_o));
        let (mut out, mut lse) = (nan(&o, Scalar::BF16, n), nan(&o, Scalar::F32, bh * t));
        o.flash_attention_fwd(&qb, &kb, &vb, &mut out, &mut lse, bh, t, d, scale as f32)
            .unwrap();
        let want = attention_ref(&q, &k, &v, bh, t, d, scale);
        let vmax = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let got = down(&o, &out);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = 2.0 * BF16_TOL * (vmax + w.abs());
            assert!(
                (g - w).abs() <= tol,
                "o[{i}] (t={t} d={d}): got {g}, want {w}"
            );
        }
        let [mut dq, mut dk, mut dv] = [0; 3].map(|_| nan(&o, Scalar::BF16, n));
        let mut delta = nan(&o, Scalar::F32, bh * t);
        o.flash_attention_bwd(
            &qb,
            &kb,
            &vb,
            &out,
            &lse,
            &dob,
            &mut delta,
            &mut dq,
            &mut dk,
            &mut dv,
            bh,
            t,
            d,
            scale as f32,
        )
        .unwrap();
        let [wq, wk, wv, aq, ak, av] = attention_grads_ref([&q, &k, &v, &d_o], bh, t, d, scale);
        for (name, got, want, abs) in [
            ("dq", &dq, &wq, &aq),
            ("dk", &dk, &wk, &ak),
            ("dv", &dv, &wv, &av),
        ] {
            let got = down(&o, got);
            for (i, g) in got.iter().enumerate() {
                let tol = 2.0 * BF16_TOL * (abs[i] + want[i].abs()) + 1e-6;
                assert!(
                    (g - want[i]).abs() <= tol,
                    "{name}[{i}] (t={t} d={d}): got {g}, want {}, tol {tol:.2e}",
                    want[i]
                );
            }
        }
        // The f64 reference's gradients against its forward.
        let att =
            |q: &[f64], k: &[f64], v: &[f64]| dot(&d_o, &attention_ref(q, k, v, bh, t, d, scale));
        check_grad("dq (f64)", &mut rng, &|x| att(x, &k, &v), &q, &wq);
        check_grad("dk (f64)", &mut rng, &|x| att(&q, x, &v), &k, &wk);
        check_grad("dv (f64)", &mut rng, &|x| att(&q, &k, x), &v, &wv);
    }
}

/// Head dimensions without fused kernels are refused, not run wrong.
#[test]
fn flash_attention_refuses_other_head_dims() {
    let o = ops();
    let (bh, t, d) = (1, 4, 32);
    let x = nan(&o, Scalar::BF16, bh * t * d);
    let (mut out, mut lse) = (
        nan(&o, Scalar::BF16, bh * t * d),
        nan(&o, Scalar::F32, bh * t),
    );
    let err = o
        .flash_attention_fwd(&x, &x, &x, &mut out, &mut lse, bh, t, d, 0.1)
        .unwrap_err();
    assert!(err.to_string().contains("head dimension 32"), "{err}");
}

/// Shapes with one tile of heads, with more heads than a tile holds (20 >
/// 16: two tiles, the second ragged), and head dimensions past 128 (tiles
/// of 4 heads); every BLOCK the permutes take (64, 128, 256, 1024).
#[test]
fn head_permutes_round_trip() {
    head_permutes(&ops());
}

/// The same through the compiled packs' variants (`target/packs`, or
/// `$TILE_PACK_DIR`): the permutes' tune blocks keep only the (BLOCK, HB)
/// pairs `Ops::permute` launches (`where:`), so a pair it picks outside them
/// fails here, not first on a GPU.
#[test]
fn head_permutes_from_the_packs() {
    let paths = ["mhc", "model"].map(tile_testkit::current_pack_path);
    let ks = KernelSet::from_packs(Arc::new(Device::cpu()), &paths)
        .unwrap_or_else(|e| panic!("{e} (build the packs with `bash scripts/packs`)"));
    head_permutes(&Ops::new(Arc::new(ks)).unwrap());
}

fn head_permutes(o: &Ops) {
    let mut rng = rng("permutes");
    for (b, t, h, d) in [
        (2, 5, 3, 7),
        (1, 3, 20, 64),
        (1, 2, 17, 100),
        (1, 2, 9, 130),
        (1, 1, 5, 1000),
    ] {
        let qkv = randv(&mut rng, b * t * 3 * h * d, 1.0);
        let qkvb = up(o, &qkv);
        let qkv = as_f32(&qkv);
        let mut back = nan(o, Scalar::F32, qkv.len());
        for slot in 0..3 {
            let mut x = nan(o, Scalar::F32, b * h * t * d);
            o.split_heads(&qkvb, &mut x, b, t, h, d, 3, slot).unwrap();
            let got = down(o, &x);
            for (i, g) in got.iter().enumerate() {
                let (bi, hi, ti, di) = (i / (h * t * d), i / (t * d) % h, i / d % t, i % d);
                assert_eq!(
                    *g,
                    qkv[(((bi * t + ti) * 3 + slot) * h + hi) * d + di],
                    "{h} heads of {d}: slot {slot} [{i}]"
                );
            }
            o.merge_heads(&x, &mut back, b, t, h, d, 3, slot).unwrap();
        }
        same("merge", &down(o, &back), &qkv);
    }
}

#[test]
fn gelu_forward_and_backward() {
    let o = ops();
    let mut rng = rng("gelu");
    let n = 5000;
    let (x, dy) = (randv(&mut rng, n, 5.0), randv(&mut rng, n, 1.0));
    let (xb, dyb) = (up(&o, &x), up(&o, &dy));
    let (x, dy) = (as_f32(&x), as_f32(&dy));
    let mut y = nan(&o, Scalar::F32, n);
    o.gelu_fwd(&xb, &mut y, n).unwrap();
    close(
        "y",
        &down(&o, &y),
        &x.iter().map(|&v| gelu_ref(v)).collect::<Vec<_>>(),
        F32_TOL,
    );
    let mut dx = nan(&o, Scalar::F32, n);
    o.gelu_bwd(&xb, &dyb, &mut dx, n).unwrap();
    let loss = |x: &[f64]| {
        x.iter()
            .zip(&dy)
            .map(|(&v, g)| gelu_ref(v) * g)
            .sum::<f64>()
    };
    check_grad("dx", &mut rng, &loss, &x, &down(&o, &dx));
}

#[test]
fn cross_entropy_loss_and_gradient() {
    let mut rng = rng("cross_entropy");
    for (rows, vocab, cap) in [(7, 37, 2048), (4, 300, 64), (3, 2100, 2048)] {
        let o = ops().with_row_block_cap(cap);
        let logits = randv(&mut rng, rows * vocab, 5.0);
        let targets: Vec<i32> = (0..rows)
            .map(|_| rng.random_range(0..vocab as i32))
            .collect();
        let (lb, tb) = (up(&o, &logits), up_i32(&o, &targets));
        let logits = as_f32(&logits);
        let scale = 1.0 / rows as f64;
        let mut loss = nan(&o, Scalar::F32, rows);
        let mut dl = nan(&o, Scalar::F32, rows * vocab);
        o.cross_entropy(
            &lb,
            &tb,
            &mut loss,
            Some(&mut dl),
            rows,
            vocab,
            scale as f32,
        )
        .unwrap();
        let want = xent_ref(&logits, &targets, vocab);
        close("loss", &down(&o, &loss), &want, F32_TOL);
        let mean = |l: &[f64]| xent_ref(l, &targets, vocab).iter().sum::<f64>() * scale;
        check_grad("dlogits", &mut rng, &mean, &logits, &down(&o, &dl));
        // The mean loss, and the loss alone (no gradient written).
        let mut m = nan(&o, Scalar::F32, 3);
        o.sum(&loss, rows, &mut m, 1, scale as f32, Out::Write)
            .unwrap();
        close("mean", &down(&o, &m)[1..2], &[mean(&logits)], F32_TOL);
        let mut loss2 = nan(&o, Scalar::F32, rows);
        o.cross_entropy(&lb, &tb, &mut loss2, None, rows, vocab, 1.0)
            .unwrap();
        same("loss without gradient", &down(&o, &loss2), &down(&o, &loss));
    }
    // A target outside [0, vocab) makes its row's loss and gradient NaN.
    let o = ops();
    let (mut loss, mut dl) = (nan(&o, Scalar::F32, 2), nan(&o, Scalar::F32, 6));
    o.cross_entropy(
        &up(&o, &[0.0; 6]),
        &up_i32(&o, &[1, 3]),
        &mut loss,
        Some(&mut dl),
        2,
        3,
        1.0,
    )
    .unwrap();
    let (l, d) = (down(&o, &loss), down(&o, &dl));
    assert!((l[0] - 3f64.ln()).abs() < 1e-6 && l[1].is_nan(), "{l:?}");
    assert!(
        d[..3].iter().all(|x| x.is_finite()) && d[3..].iter().all(|x| x.is_nan()),
        "{d:?}"
    );
}

#[test]
fn adamw_steps() {
    let o = ops();
    let mut rng = rng("adamw");
    let n = 5000;
    let hp = AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut p = as_f32(&randv(&mut rng, n, 1.0));
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
    for step in 1..=3u64 {
        let g = as_f32(&randv(&mut rng, n, 1.0));
        // A squared norm of 9 clipped to 1.5: the gradients scaled by 0.5.
        let gs = 0.5;
        let stats = o.device().upload(&[2.0f32, 9.0]).unwrap();
        o.adamw(
            &mut pb,
            &up(&o, &g),
            &mut mb,
            &mut vb,
            n,
            &hp,
            step,
            &stats,
            1.5,
        )
        .unwrap();
        let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
        for i in 0..n {
            let gi = g[i] * gs;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let (mh, vh) = (
                m[i] / (1.0 - b1.powi(step as i32)),
                v[i] / (1.0 - b2.powi(step as i32)),
            );
            p[i] -=
                hp.lr as f64 * (mh / (vh.sqrt() + hp.eps as f64) + hp.weight_decay as f64 * p[i]);
        }
        close("m", &down(&o, &mb), &m, F32_TOL);
        close("v", &down(&o, &vb), &v, F32_TOL);
        close("p", &down(&o, &pb), &p, F32_TOL);
    }
}

/// The update reads the step's stats on the device: a NaN loss or an
/// infinite gradient norm leaves p, m and v bit for bit as they were (the
/// trainer stops when it reads the stats); a norm below `clip`, or `clip`
/// 0, scales nothing.
#[test]
fn adamw_skips_a_non_finite_step_and_clips_only_above_the_norm() {
    let o = ops();
    let mut rng = rng("adamw_skip");
    let n = 1031;
    let hp = AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let (p, m, g) = (
        as_f32(&randv(&mut rng, n, 1.0)),
        as_f32(&randv(&mut rng, n, 0.1)),
        up(&o, &randv(&mut rng, n, 1.0)),
    );
    let v = as_f32(
        &randv(&mut rng, n, 0.1)
            .iter()
            .map(|x| x * x)
            .collect::<Vec<_>>(),
    );
    for stats in [[f32::NAN, 1.0], [1.0, f32::INFINITY], [f32::INFINITY, 1.0]] {
        let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
        let sb = o.device().upload(&stats).unwrap();
        o.adamw(&mut pb, &g, &mut mb, &mut vb, n, &hp, 3, &sb, 1.0)
            .unwrap();
        for (name, b, want) in [("p", &pb, &p), ("m", &mb, &m), ("v", &vb, &v)] {
            let got = down(&o, b);
            assert!(
                got.iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "stats {stats:?}: {name} changed"
            );
        }
    }
    // Norm 2: unclipped under clip 0 and clip 3, so both give the same bits.
    let run = |clip: f32| {
        let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
        let sb = o.device().upload(&[1.0f32, 4.0]).unwrap();
        o.adamw(&mut pb, &g, &mut mb, &mut vb, n, &hp, 3, &sb, clip)
            .unwrap();
        down(&o, &mb)
    };
    let (none, above) = (run(0.0), run(3.0));
    assert_eq!(none, above, "a norm below clip was scaled");
    let clipped = run(1.0);
    assert!(
        none.iter().zip(&clipped).any(|(a, b)| a != b),
        "clip 1 < norm 2 scaled nothing"
    );
}

#[test]
fn elementwise_glue() {
    let o = ops();
    let mut rng = rng("glue");
    let n = 4097 + 13;
    let (a, b) = (randv(&mut rng, n, 3.0), randv(&mut rng, n, 3.0));
    let (ab, bb) = (up(&o, &a), up(&o, &b));
    let (a, b) = (as_f32(&a), as_f32(&b));
    let mut out = nan(&o, Scalar::F32, n);
    o.add(&ab, &bb, &mut out, n).unwrap();
    close(
        "add",
        &down(&o, &out),
        &a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>(),
        1e-7,
    );
    let mut y = up(&o, &b);
    o.axpy(-0.75, &ab, &mut y, n).unwrap();
    close(
        "axpy",
        &down(&o, &y),
        &a.iter()
            .zip(&b)
            .map(|(x, y)| y - 0.75 * x)
            .collect::<Vec<_>>(),
        1e-7,
    );
    let mut x = up(&o, &a);
    o.scale(&mut x, 1.5, n).unwrap();
    close(
        "scale",
        &down(&o, &x),
        &a.iter().map(|x| 1.5 * x).collect::<Vec<_>>(),
        1e-7,
    );
    // fill and copy touch only their range.
    o.fill(&mut x, 2.5, n - 3).unwrap();
    let got = down(&o, &x);
    assert!(
        got[..n - 3].iter().all(|&v| v == 2.5)
            && got[n - 3..]
                .iter()
                .zip(&a[n - 3..])
                .all(|(g, w)| *g == (1.5 * w) as f32 as f64)
    );
    let mut dst = nan(&o, Scalar::F32, n);
    o.copy(&ab, 5, &mut dst, 2, n - 7).unwrap();
    let got = down(&o, &dst);
    assert!(got[..2].iter().all(|v| v.is_nan()) && got[n - 5..].iter().all(|v| v.is_nan()));
    same("copy", &got[2..n - 5], &a[5..n - 2]);
    // Casts round to nearest even exactly as `half` does.
    let mut h = nan(&o, Scalar::BF16, n);
    o.cast_f32_bf16(&ab, &mut h, n).unwrap();
    let want = as_bf16(&a);
    same("cast to bf16", &down(&o, &h), &want);
    let mut f = nan(&o, Scalar::F32, n);
    o.cast_bf16_f32(&h, &mut f, n).unwrap();
    same("cast to f32", &down(&o, &f), &want);
    // Bias over rows.
    let (rows, c) = (7, 300);
    let (xv, bv) = (randv(&mut rng, rows * c, 1.0), randv(&mut rng, c, 1.0));
    let mut xb = up(&o, &xv);
    o.add_bias(&mut xb, &up(&o, &bv), rows, c).unwrap();
    let (xv, bv) = (as_f32(&xv), as_f32(&bv));
    close(
        "add_bias",
        &down(&o, &xb),
        &(0..rows * c).map(|i| xv[i] + bv[i % c]).collect::<Vec<_>>(),
        1e-7,
    );
}

#[test]
fn deterministic_reductions() {
    let o = ops();
    let mut rng = rng("reductions");
    // Column sums: one stage (few rows) and two (more than 64 rows); bias gradients.
    for (rows, n) in [(5, 37), (300, 19), (200, 150)] {
        let x = randv(&mut rng, rows * n, 1.0);
        let xb = up(&o, &x);
        let x = as_f32(&x);
        let want: Vec<f64> = (0..n)
            .map(|j| (0..rows).map(|r| x[r * n + j]).sum())
            .collect();
        let mut out = nan(&o, Scalar::F32, n);
        o.col_sum(&xb, rows, n, &mut out, Out::Write).unwrap();
        let first = down(&o, &out);
        close("col_sum", &first, &want, F32_TOL);
        o.col_sum(&xb, rows, n, &mut out, Out::Add).unwrap();
        close(
            "col_sum add",
            &down(&o, &out),
            &want.iter().map(|w| 2.0 * w).collect::<Vec<_>>(),
            F32_TOL,
        );
        // Bit-identical when repeated.
        o.col_sum(&xb, rows, n, &mut out, Out::Write).unwrap();
        same("repeated col_sum", &down(&o, &out), &first);
    }
    // Global sums: one stage and two (more than 8192 elements), at an index, accumulated.
    for n in [1, 1000, 20000] {
        let x = randv(&mut rng, n, 1.0);
        let xb = up(&o, &x);
        let x = as_f32(&x);
        let mut out = nan(&o, Scalar::F32, 4);
        o.sum(&xb, n, &mut out, 2, 0.5, Out::Write).unwrap();
        o.sum_squares(&xb, n, &mut out, 3, Out::Write).unwrap();
        o.sum_squares(&xb, n, &mut out, 3, Out::Add).unwrap();
        let got = down(&o, &out);
        assert!(got[0].is_nan() && got[1].is_nan());
        let sq: f64 = x.iter().map(|v| v * v).sum();
        // A sum of n terms of either sign: error relative to Σ|x|.
        let abs: f64 = x.iter().map(|v| v.abs()).sum();
        assert!(
            (got[2] - 0.5 * x.iter().sum::<f64>()).abs() <= F32_TOL * abs,
            "sum {n}: {}",
            got[2]
        );
        close("sum_squares", &got[3..], &[2.0 * sq], F32_TOL);
    }
}

#[test]
fn residual_streams() {
    let o = ops();
    let mut rng = rng("streams");
    for (t, n, c) in [(3, 4, 37), (2, 2, 300), (2, 8, 5)] {
        let x = randv(&mut rng, t * c, 2.0);
        let xb = up(&o, &x);
        let x = as_f32(&x);
        let mut xs = nan(&o, Scalar::BF16, t * n * c);
        o.streams_expand(&xb, &mut xs, t, n, c).unwrap();
        let want: Vec<f64> = (0..t * n * c)
            .map(|i| bf16_round(x[(i / (n * c)) * c + i % c]))
            .collect();
        same("expand", &down(&o, &xs), &want);
        // Collapse: the mean of n different bf16 streams, in f32.
        let s = as_bf16(&randv(&mut rng, t * n * c, 2.0));
        let sb = up_bf16(&o, &s);
        let collapse = |s: &[f64]| -> Vec<f64> {
            (0..t * c)
                .map(|i| {
                    (0..n)
                        .map(|k| s[((i / c) * n + k) * c + i % c])
                        .sum::<f64>()
                        / n as f64
                })
                .collect()
        };
        let expand = |x: &[f64]| -> Vec<f64> {
            (0..t * n * c)
                .map(|i| x[(i / (n * c)) * c + i % c])
                .collect()
        };
        let mut xc = nan(&o, Scalar::F32, t * c);
        o.streams_collapse(&sb, &mut xc, t, n, c).unwrap();
        close("collapse", &down(&o, &xc), &collapse(&s), F32_TOL);
        // Backward of expand (bf16 stream gradients → f32), overwrite and add.
        let dxs = as_bf16(&randv(&mut rng, t * n * c, 1.0));
        let dxsb = up_bf16(&o, &dxs);
        let prev = as_f32(&randv(&mut rng, t * c, 1.0));
        for mode in [Out::Write, Out::Add] {
            let mut dx = if mode == Out::Add {
                up(&o, &prev)
            } else {
                nan(&o, Scalar::F32, t * c)
            };
            o.streams_expand_bwd(&dxsb, &mut dx, t, n, c, mode).unwrap();
            let mut got = down(&o, &dx);
            if mode == Out::Add {
                got.iter_mut().zip(&prev).for_each(|(g, p)| *g -= p);
            }
            check_grad("expand dx", &mut rng, &|x| dot(&dxs, &expand(x)), &x, &got);
        }
        // Backward of collapse (f32 → bf16 stream gradients): one bf16 rounding.
        let dx = as_f32(&randv(&mut rng, t * c, 1.0));
        let mut dsb = nan(&o, Scalar::BF16, t * n * c);
        o.streams_collapse_bwd(&up(&o, &dx), &mut dsb, t, n, c, Out::Write)
            .unwrap();
        let idx: Vec<usize> = (0..t * n * c).collect();
        let want = fd(&|s| dot(&dx, &collapse(s)), &s, &idx);
        close("collapse dxs", &down(&o, &dsb), &want, BF16_TOL);
        let before = down(&o, &dsb);
        o.streams_collapse_bwd(&up(&o, &dx), &mut dsb, t, n, c, Out::Add)
            .unwrap();
        close(
            "collapse dxs add",
            &down(&o, &dsb),
            &before
                .iter()
                .zip(&want)
                .map(|(b, w)| b + w)
                .collect::<Vec<_>>(),
            BF16_TOL,
        );
    }
}

/// `x` rounded to f32, then to bf16 to nearest even, computed on the bits
/// (an independent reference: `half::bf16::from_f64` is not correctly
/// rounded for some inputs).
fn bf16_round(x: f64) -> f64 {
    let b = (x as f32).to_bits();
    f32::from_bits(((b + 0x7fff + ((b >> 16) & 1)) >> 16) << 16) as f64
}

fn as_bf16(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| bf16_round(x)).collect()
}

fn up_bf16(o: &Ops, v: &[f64]) -> Buffer {
    o.device()
        .upload(
            &v.iter()
                .map(|&x| half::bf16::from_f32(x as f32))
                .collect::<Vec<_>>(),
        )
        .unwrap()
}

/// The trainer may share one `Ops` between threads.
#[test]
fn ops_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Ops>();
}

#[test]
fn bad_arguments_are_errors() {
    let o = ops();
    let x = up(&o, &[1.0; 10]);
    let mut y = nan(&o, Scalar::F32, 10);
    let mut r = nan(&o, Scalar::F32, 2);
    let shape = |e: OpsError| assert!(matches!(e, OpsError::Shape { .. }), "{e}");
    shape(
        o.rmsnorm_fwd(&x, &x, &mut y, &mut r, 3, 5, 1e-5)
            .unwrap_err(),
    ); // x needs 15
    shape(
        o.rmsnorm_fwd(&x, &x, &mut y, &mut r, 2, 5, 1e-5)
            .map(|_| ())
            .and_then(|_| {
                let mut int = o.device().alloc(Scalar::I32, 10).unwrap();
                o.gelu_fwd(&x, &mut int, 10)
            })
            .unwrap_err(),
    ); // i32 output of a float op
    shape(o.copy(&x, 4, &mut y, 0, 7).unwrap_err()); // source range past the end
    shape(o.split_heads(&x, &mut y, 1, 1, 1, 1, 3, 3).unwrap_err()); // slot out of range
    shape(
        o.cross_entropy(&x, &x, &mut r, None, 2, 5, 1.0)
            .unwrap_err(),
    ); // f32 targets
    shape(
        o.adamw(
            &mut y,
            &x,
            &mut r,
            &mut nan(&o, Scalar::F32, 10),
            10,
            &AdamW {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.9,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            1,
            &nan(&o, Scalar::F32, 2),
            0.0,
        )
        .unwrap_err(),
    ); // m too short
       // Sizes whose product overflows are errors, not panics or wrapped checks.
    shape(o.gelu_fwd(&x, &mut y, usize::MAX).unwrap_err());
    shape(
        o.col_sum(&x, usize::MAX / 2, 3, &mut y, Out::Write)
            .unwrap_err(),
    );
    shape(o.copy(&x, usize::MAX, &mut y, 0, 2).unwrap_err());
    let e = o.gemm(&GemmOp::new(4, 4, 4), &x, &x, &mut y).unwrap_err();
    assert!(matches!(e, OpsError::Runtime(_)), "{e}");
}

/// The ops that round their output to bf16 for the trainer's GEMMs (the
/// norm, GELU forward and backward, merged bf16 heads) give exactly their
/// f32 result rounded to nearest even: the same arithmetic, one rounding.
#[test]
fn bf16_outputs_are_the_f32_outputs_rounded() {
    let o = ops();
    let mut rng = rng("bf16_outputs_are_the_f32_outputs_rounded");
    let rounded = |v: Vec<f64>| -> Vec<f64> {
        v.iter()
            .map(|&x| half::bf16::from_f32(x as f32).to_f64())
            .collect()
    };
    let same = |what: &str, got: Vec<f64>, want: Vec<f64>| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.to_bits() == w.to_bits(), "{what}[{i}]: {g} vs {w}");
        }
    };
    let (rows, n) = (37, 300);
    let (x, w) = (randv(&mut rng, rows * n, 3.0), randv(&mut rng, n, 2.0));
    let (xb, wb) = (up(&o, &x), up(&o, &w));
    let (mut y32, mut y16) = (
        nan(&o, Scalar::F32, rows * n),
        nan(&o, Scalar::BF16, rows * n),
    );
    let (mut r32, mut r16) = (nan(&o, Scalar::F32, rows), nan(&o, Scalar::F32, rows));
    o.rmsnorm_fwd(&xb, &wb, &mut y32, &mut r32, rows, n, 1e-5)
        .unwrap();
    o.rmsnorm_fwd(&xb, &wb, &mut y16, &mut r16, rows, n, 1e-5)
        .unwrap();
    same("rmsnorm y", down(&o, &y16), rounded(down(&o, &y32)));
    same("rmsnorm rstd", down(&o, &r16), down(&o, &r32));

    let m = 5003;
    let (u, dy) = (randv(&mut rng, m, 5.0), randv(&mut rng, m, 1.0));
    let (ub, dyb) = (up(&o, &u), up(&o, &dy));
    let (mut g32, mut g16) = (nan(&o, Scalar::F32, m), nan(&o, Scalar::BF16, m));
    o.gelu_fwd(&ub, &mut g32, m).unwrap();
    o.gelu_fwd(&ub, &mut g16, m).unwrap();
    same("gelu", down(&o, &g16), rounded(down(&o, &g32)));
    let (mut d32, mut d16) = (nan(&o, Scalar::F32, m), nan(&o, Scalar::BF16, m));
    o.gelu_bwd(&ub, &dyb, &mut d32, m).unwrap();
    o.gelu_bwd(&ub, &dyb, &mut d16, m).unwrap();
    same("gelu_bwd", down(&o, &d16), rounded(down(&o, &d32)));
    // From a bf16 input (the first MLP GEMM's bf16 output): the same bits as
    // from the f32 buffer of the same (rounded) values.
    let u16 = rounded(as_f32(&u));
    let (ub16, ubr) = (up_bf16(&o, &u16), up(&o, &u16));
    let (mut g_from16, mut g_fromr) = (nan(&o, Scalar::BF16, m), nan(&o, Scalar::BF16, m));
    o.gelu_fwd(&ub16, &mut g_from16, m).unwrap();
    o.gelu_fwd(&ubr, &mut g_fromr, m).unwrap();
    same("gelu from bf16", down(&o, &g_from16), down(&o, &g_fromr));
    let (mut d_from16, mut d_fromr) = (nan(&o, Scalar::BF16, m), nan(&o, Scalar::BF16, m));
    o.gelu_bwd(&ub16, &dyb, &mut d_from16, m).unwrap();
    o.gelu_bwd(&ubr, &dyb, &mut d_fromr, m).unwrap();
    same(
        "gelu_bwd from bf16",
        down(&o, &d_from16),
        down(&o, &d_fromr),
    );

    // bf16 heads [b, h, t, d] into slot 1 of 3 of [b, t, 3, h, d]: bf16 and
    // f32 destinations hold the same values (a move, no rounding).
    let (b, t, h, d) = (2, 5, 3, 8);
    let heads: Vec<half::bf16> = randv(&mut rng, b * h * t * d, 1.0)
        .iter()
        .map(|&x| half::bf16::from_f64(x))
        .collect();
    let hb = o.device().upload(&heads).unwrap();
    let (mut m32, mut m16) = (
        nan(&o, Scalar::F32, b * t * 3 * h * d),
        nan(&o, Scalar::BF16, b * t * 3 * h * d),
    );
    o.merge_heads(&hb, &mut m32, b, t, h, d, 3, 1).unwrap();
    o.merge_heads(&hb, &mut m16, b, t, h, d, 3, 1).unwrap();
    // Other slots stay NaN in both; compare the written ones (and NaN's bits).
    let (g16, g32) = (down(&o, &m16), down(&o, &m32));
    for (i, (a, c)) in g16.iter().zip(&g32).enumerate() {
        assert!(
            a.to_bits() == c.to_bits() || (a.is_nan() && c.is_nan()),
            "merge_heads[{i}]: {a} vs {c}"
        );
    }
    let written = g16.iter().filter(|v| !v.is_nan()).count();
    assert_eq!(written, b * t * h * d);
}
