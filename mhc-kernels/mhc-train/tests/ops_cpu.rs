//! Every op of `mhc_train::ops` but attention (ops_attention_cpu.rs) on the
//! CPU device (the interpreter running the `model` kernels from the embedded
//! sources) against f64 references, on fresh random inputs (the seed is
//! printed; `TILE_TEST_SEED=N` repeats a run) with NaN-filled outputs, at
//! ragged sizes. Every backward is checked against central finite differences
//! of the f64 reference forward. With `TILE_PACK_DIR=DIR` the kernels come from
//! the packs there (their TIR).
//!
//! Tolerances: f32 kernels are held to 8·√1024·2⁻²⁴ ≈ 1.5e-5 of the output's
//! scale (`F32_TOL`: reduction stages here are ≤ 1024 terms, so summation
//! error is ≲ √n·2⁻²⁴ ≈ 2e-6, and the interpreter's exp/log/tanh/rsqrt are
//! f32-accurate); finite differences in f64 with h = 1e-5 add ≈1e-9. Results
//! rounded to bf16 are held to one bf16 rounding, 2⁻⁸ relative.

mod ops_common;
use ops_common::*;

use mhc_train::ops::{AdamW, Ops, OpsError, Out};
use rand::Rng;
use tile_runtime::blas::GemmOp;
use tile_runtime::{Buffer, Scalar};

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
    // (rows, n, row block cap): ragged widths, chunked rows, enough rows for
    // the two-stage dw reduction (more than 64 rows), and a row of more
    // blocks than one.
    for (rows, n, cap) in [
        (5, 37, 2048),
        (3, 300, 64),
        (150, 19, 2048),
        (2, 2100, 2048),
        (70, 4500, 2048),
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
        // f32 dy; then a bf16 run's form: dy in bf16, dx also rounded into
        // dx16 (NaN before).
        let dy16 = as_bf16(&dy);
        let dyb16 = up_bf16(&o, &dy16);
        for (mode, half) in [
            (Out::Write, false),
            (Out::Add, false),
            (Out::Write, true),
            (Out::Add, true),
        ] {
            let (dy, dyb) = if half { (&dy16, &dyb16) } else { (&dy, &dyb) };
            let (px, pw) = (randv(&mut rng, rows * n, 1.0), randv(&mut rng, n, 1.0));
            let (mut dx, mut dw) = match mode {
                Out::Add => (up(&o, &px), up(&o, &pw)),
                Out::Write => (nan(&o, Scalar::F32, rows * n), nan(&o, Scalar::F32, n)),
            };
            let mut dx16 = half.then(|| nan(&o, Scalar::BF16, rows * n));
            o.rmsnorm_bwd(
                &xb,
                &wb,
                &rstd,
                dyb,
                &mut dx,
                mode,
                dx16.as_mut(),
                &mut dw,
                mode,
                rows,
                n,
            )
            .unwrap();
            let (mut gdx, mut gdw) = (down(&o, &dx), down(&o, &dw));
            if let Some(dx16) = &dx16 {
                same("dx16", &down(&o, dx16), &as_bf16(&gdx));
            }
            if mode == Out::Add {
                gdx.iter_mut().zip(as_f32(&px)).for_each(|(g, p)| *g -= p);
                gdw.iter_mut().zip(as_f32(&pw)).for_each(|(g, p)| *g -= p);
            }
            check_grad(
                "dx",
                &mut rng,
                &|x| dot(dy, &rmsnorm_ref(x, &w, n, eps).0),
                &x,
                &gdx,
            );
            check_grad(
                "dw",
                &mut rng,
                &|w| dot(dy, &rmsnorm_ref(&x, w, n, eps).0),
                &w,
                &gdw,
            );
        }
        // dy's dtype must match the form.
        let mut dx = nan(&o, Scalar::F32, rows * n);
        let mut dw = nan(&o, Scalar::F32, n);
        let mut dx16 = nan(&o, Scalar::BF16, rows * n);
        let w32 = Out::Write;
        assert!(o
            .rmsnorm_bwd(
                &xb,
                &wb,
                &rstd,
                &dyb,
                &mut dx,
                w32,
                Some(&mut dx16),
                &mut dw,
                w32,
                rows,
                n
            )
            .is_err());
        assert!(o
            .rmsnorm_bwd(&xb, &wb, &rstd, &dyb16, &mut dx, w32, None, &mut dw, w32, rows, n)
            .is_err());
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
            None,
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

/// AdamW's hyper-parameters, a random state (p, m, v ≥ 0, f32 values) and a
/// gradient on the device.
fn adamw_case(o: &Ops, rng: &mut rand::rngs::StdRng, n: usize) -> (AdamW, [Vec<f64>; 3], Buffer) {
    let hp = AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let (p, m, g) = (
        as_f32(&randv(rng, n, 1.0)),
        as_f32(&randv(rng, n, 0.1)),
        up(o, &randv(rng, n, 1.0)),
    );
    let v = as_f32(&randv(rng, n, 0.1).iter().map(|x| x * x).collect::<Vec<_>>());
    (hp, [p, m, v], g)
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
    let (hp, [p, m, v], g) = adamw_case(&o, &mut rng, n);
    for stats in [[f32::NAN, 1.0], [1.0, f32::INFINITY], [f32::INFINITY, 1.0]] {
        let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
        let sb = o.device().upload(&stats).unwrap();
        o.adamw(&mut pb, &g, &mut mb, &mut vb, None, n, &hp, 3, &sb, 1.0)
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
        o.adamw(&mut pb, &g, &mut mb, &mut vb, None, n, &hp, 3, &sb, clip)
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

/// `adamw` with a bf16 copy: p, m and v bit for bit as without it, and the
/// copy (NaN before) p after the step rounded to nearest even; on a skipped
/// step the copy is p as it was, rounded.
#[test]
fn adamw_writes_the_bf16_copy_of_the_updated_value() {
    let o = ops();
    let mut rng = rng("adamw_bf16");
    let n = 2053;
    let (hp, [p, m, v], g) = adamw_case(&o, &mut rng, n);
    for stats in [[2.0f32, 9.0], [f32::NAN, 1.0]] {
        let sb = o.device().upload(&stats).unwrap();
        let run = |copy: bool| {
            let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
            let mut p16 = nan(&o, Scalar::BF16, n);
            let p16_arg = copy.then_some(&mut p16);
            o.adamw(&mut pb, &g, &mut mb, &mut vb, p16_arg, n, &hp, 2, &sb, 1.5)
                .unwrap();
            [&pb, &mb, &vb, &p16].map(|b| down(&o, b))
        };
        let ([p1, m1, v1, p16], [p0, m0, v0, _]) = (run(true), run(false));
        same("p", &p1, &p0);
        same("m", &m1, &m0);
        same("v", &v1, &v0);
        same("bf16 copy", &p16, &as_bf16(&p1));
        if stats[0].is_nan() {
            same("p of a skipped step", &p1, &p);
        }
    }
    let mut short = nan(&o, Scalar::BF16, n - 1);
    let (mut pb, mut mb, mut vb) = (up(&o, &p), up(&o, &m), up(&o, &v));
    let sb = o.device().upload(&[1.0f32, 1.0]).unwrap();
    let err = o.adamw(
        &mut pb,
        &g,
        &mut mb,
        &mut vb,
        Some(&mut short),
        n,
        &hp,
        1,
        &sb,
        0.0,
    );
    assert!(err.is_err(), "a bf16 copy of the wrong length was taken");
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
            None,
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
    same("rmsnorm y", &down(&o, &y16), &rounded(down(&o, &y32)));
    same("rmsnorm rstd", &down(&o, &r16), &down(&o, &r32));
    // x = a + b written, and the norm of it: the same bits as an add and a
    // norm, with y (and b) in f32 and in bf16. b's values are bf16's, so
    // both sums are the same.
    let b_term = rounded(randv(&mut rng, rows * n, 1.0));
    let (ab, bb, bb16) = (up(&o, &as_f32(&x)), up(&o, &b_term), up_bf16(&o, &b_term));
    let mut sum_want = nan(&o, Scalar::F32, rows * n);
    o.add(&ab, &bb, &mut sum_want, rows * n).unwrap();
    // A bf16 y with an f32 b (or the reverse) is refused.
    let mut y_mixed = nan(&o, Scalar::BF16, rows * n);
    let mut sum_mixed = nan(&o, Scalar::F32, rows * n);
    let mut r_mixed = nan(&o, Scalar::F32, rows);
    let err = o
        .add_rmsnorm_fwd(
            &ab,
            &bb,
            &mut sum_mixed,
            &wb,
            &mut y_mixed,
            &mut r_mixed,
            rows,
            n,
            1e-5,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("`b` must be a bf16 buffer"), "{err}");
    for (dtype, bb) in [(Scalar::F32, &bb), (Scalar::BF16, &bb16)] {
        let (mut y_want, mut r_want) = (nan(&o, dtype, rows * n), nan(&o, Scalar::F32, rows));
        o.rmsnorm_fwd(&sum_want, &wb, &mut y_want, &mut r_want, rows, n, 1e-5)
            .unwrap();
        let mut sum = nan(&o, Scalar::F32, rows * n);
        let (mut y, mut r) = (nan(&o, dtype, rows * n), nan(&o, Scalar::F32, rows));
        o.add_rmsnorm_fwd(&ab, bb, &mut sum, &wb, &mut y, &mut r, rows, n, 1e-5)
            .unwrap();
        same("add_rmsnorm x", &down(&o, &sum), &down(&o, &sum_want));
        same("add_rmsnorm y", &down(&o, &y), &down(&o, &y_want));
        same("add_rmsnorm rstd", &down(&o, &r), &down(&o, &r_want));
    }

    let m = 5003;
    let (u, dy) = (randv(&mut rng, m, 5.0), randv(&mut rng, m, 1.0));
    let (ub, dyb) = (up(&o, &u), up(&o, &dy));
    let (mut g32, mut g16) = (nan(&o, Scalar::F32, m), nan(&o, Scalar::BF16, m));
    o.gelu_fwd(&ub, &mut g32, m).unwrap();
    o.gelu_fwd(&ub, &mut g16, m).unwrap();
    same("gelu", &down(&o, &g16), &rounded(down(&o, &g32)));
    let (mut d32, mut d16) = (nan(&o, Scalar::F32, m), nan(&o, Scalar::BF16, m));
    o.gelu_bwd(&ub, &dyb, &mut d32, m).unwrap();
    o.gelu_bwd(&ub, &dyb, &mut d16, m).unwrap();
    same("gelu_bwd", &down(&o, &d16), &rounded(down(&o, &d32)));
    // From a bf16 input (the first MLP GEMM's bf16 output): the same bits as
    // from the f32 buffer of the same (rounded) values.
    let u16 = rounded(as_f32(&u));
    let (ub16, ubr) = (up_bf16(&o, &u16), up(&o, &u16));
    let (mut g_from16, mut g_fromr) = (nan(&o, Scalar::BF16, m), nan(&o, Scalar::BF16, m));
    o.gelu_fwd(&ub16, &mut g_from16, m).unwrap();
    o.gelu_fwd(&ubr, &mut g_fromr, m).unwrap();
    same("gelu from bf16", &down(&o, &g_from16), &down(&o, &g_fromr));
    let (mut d_from16, mut d_fromr) = (nan(&o, Scalar::BF16, m), nan(&o, Scalar::BF16, m));
    o.gelu_bwd(&ub16, &dyb, &mut d_from16, m).unwrap();
    o.gelu_bwd(&ubr, &dyb, &mut d_fromr, m).unwrap();
    same(
        "gelu_bwd from bf16",
        &down(&o, &d_from16),
        &down(&o, &d_fromr),
    );
    // The backward that makes GELU's output again: from a bf16 dy of the
    // same values, dx as gelu_bwd gives it and y as gelu_fwd did.
    let dy16 = rounded(as_f32(&dy));
    let (dyb16, dybr) = (up_bf16(&o, &dy16), up(&o, &dy16));
    let (mut dx_regen, mut y_regen) = (nan(&o, Scalar::BF16, m), nan(&o, Scalar::BF16, m));
    o.gelu_bwd_regen(&ub16, &dyb16, &mut dx_regen, &mut y_regen, m)
        .unwrap();
    let mut dx_want = nan(&o, Scalar::BF16, m);
    o.gelu_bwd(&ub16, &dybr, &mut dx_want, m).unwrap();
    same(
        "gelu_bwd_regen dx",
        &down(&o, &dx_regen),
        &down(&o, &dx_want),
    );
    same(
        "gelu_bwd_regen y",
        &down(&o, &y_regen),
        &down(&o, &g_from16),
    );
    // Anything but bf16 is refused.
    assert!(o
        .gelu_bwd_regen(&ub16, &dybr, &mut dx_regen, &mut y_regen, m)
        .is_err());

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
