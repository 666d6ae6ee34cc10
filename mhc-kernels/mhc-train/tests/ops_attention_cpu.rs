//! The attention ops of `mhc_train::ops` (materialised and flash attention,
//! the head permutes) on the CPU device against f64 references, as
//! ops_cpu.rs checks the others (tolerances and protocol there).

mod ops_common;
use ops_common::*;

use mhc::kernels::KernelSet;
use mhc_train::ops::Ops;
use std::sync::Arc;
use tile_runtime::{Device, Scalar};
use tile_testkit::attention::{head_major, token_major, Shape};

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
/// bf16 values, at a length that is no multiple of the blocks (64 and 128),
/// both head dimensions the kernels have, and several sequences and heads
/// in the token-major tensors the kernels read and write. Bounds: P and dS
/// are rounded to bf16 before their second dots (relative 2⁻⁸ of each term,
/// so 2⁻⁸ of the sum of |terms|, `abs`), delta = rowsum(dO ∘ O) reads the
/// bf16 output (2⁻⁸ of Σ|dO·O| in every dS of the row, in `abs` too), and
/// the bf16 result rounds once more (2⁻⁸ of |want|); 2⁻⁷ of both covers
/// them with f32 accumulation to spare. The f64 gradients are checked
/// against finite differences of the forward.
#[test]
fn flash_attention_forward_and_backward() {
    let o = ops();
    let mut rng = rng("flash_attention");
    for (batch, heads, t, d) in [(2, 2, 70, 64), (1, 2, 130, 128)] {
        assert!(Ops::has_flash_attention(d));
        let bh = batch * heads;
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
        let shape = Shape { seq: t, d };
        let qkv = up16(&token_major(&[&q[..], &k, &v], batch, heads, shape));
        let dob = up16(&token_major(&[&d_o[..]], batch, heads, shape));
        let (mut out, mut lse) = (nan(&o, Scalar::BF16, n), nan(&o, Scalar::F32, bh * t));
        o.flash_attention_fwd(&qkv, &mut out, &mut lse, batch, t, heads, d, scale as f32)
            .unwrap();
        let want = attention_ref(&q, &k, &v, bh, t, d, scale);
        let vmax = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let got = head_major(&down(&o, &out), 1, 0, batch, heads, shape);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = 2.0 * BF16_TOL * (vmax + w.abs());
            assert!(
                (g - w).abs() <= tol,
                "o[{i}] (t={t} d={d}): got {g}, want {w}"
            );
        }
        let [wq, wk, wv, aq, ak, av] = attention_grads_ref([&q, &k, &v, &d_o], bh, t, d, scale);
        // The deterministic backward, then the fused one (dQ added into an
        // f32 workspace).
        for fused in [false, true] {
            let mut dqkv = nan(&o, Scalar::BF16, 3 * n);
            let mut delta = nan(&o, Scalar::F32, bh * t);
            let mut dq_acc = fused.then(|| nan(&o, Scalar::F32, n));
            o.flash_attention_bwd(
                &qkv,
                &out,
                &lse,
                &dob,
                &mut delta,
                &mut dqkv,
                dq_acc.as_mut(),
                batch,
                t,
                heads,
                d,
                scale as f32,
            )
            .unwrap();
            let dqkv = down(&o, &dqkv);
            for (slot, (name, want, abs)) in [("dq", &wq, &aq), ("dk", &wk, &ak), ("dv", &wv, &av)]
                .into_iter()
                .enumerate()
            {
                let got = head_major(&dqkv, 3, slot, batch, heads, shape);
                for (i, g) in got.iter().enumerate() {
                    let tol = 2.0 * BF16_TOL * (abs[i] + want[i].abs()) + 1e-6;
                    assert!(
                        (g - want[i]).abs() <= tol,
                        "{name}[{i}] (t={t} d={d}, fused {fused}): got {g}, want {}, tol {tol:.2e}",
                        want[i]
                    );
                }
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

/// Head dimensions without fused kernels are refused, and buffers of the
/// wrong size, not run wrong.
#[test]
fn flash_attention_refuses_other_head_dims_and_short_buffers() {
    let o = ops();
    let (batch, t, heads, d) = (1, 4, 2, 32);
    let qkv = nan(&o, Scalar::BF16, batch * t * 3 * heads * d);
    let (mut out, mut lse) = (
        nan(&o, Scalar::BF16, batch * t * heads * d),
        nan(&o, Scalar::F32, batch * heads * t),
    );
    let err = o
        .flash_attention_fwd(&qkv, &mut out, &mut lse, batch, t, heads, d, 0.1)
        .unwrap_err();
    assert!(err.to_string().contains("head dimension 32"), "{err}");
    // q, k, v of two heads need 3·2·64 columns a token.
    let d = 64;
    let short = nan(&o, Scalar::BF16, batch * t * heads * d);
    let mut out = nan(&o, Scalar::BF16, batch * t * heads * d);
    let err = o
        .flash_attention_fwd(&short, &mut out, &mut lse, batch, t, heads, d, 0.1)
        .unwrap_err();
    assert!(err.to_string().contains("`qkv` holds"), "{err}");
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
