//! Every kernel of dsl-examples/*.tile, parsed and specialised by the front end,
//! run on the interpreter at sizes that are not multiples of the block, against
//! straightforward f64 Rust references. Outputs are NaN-poisoned first and
//! checked element by element, padding included (seed printed; TILE_TEST_SEED replays).

use half::bf16;
use tile_front::frontend::{parse_program, SourceFile};
use tile_interp::{self as interp, Arg, Buffer};
use tile_ir::{Kernel, Scalar};
use tile_testkit::{assert_close, random_bf16, random_f32, Tolerance};

fn seed() -> u64 {
    tile_testkit::seed("")
}

fn kernel(file: &str, name: &str, meta: &[(&str, i64)]) -> Kernel {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dsl-examples")
        .join(file);
    let src = SourceFile::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    let meta: Vec<(String, i64)> = meta.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    program
        .specialize(name, &meta)
        .unwrap_or_else(|d| panic!("{}", d.render(&src)))
}

/// A poisoned output buffer of `len` elements plus `pad` guard elements.
fn poisoned(s: Scalar, len: usize, pad: usize) -> Buffer {
    let b = Buffer::zeros(s, len + pad);
    b.fill_f32(f32::NAN);
    b
}

/// The first `len` elements as f32, after checking the guard elements are still NaN.
fn checked(b: &Buffer, len: usize) -> Vec<f32> {
    let v = b.to_f32_vec();
    assert!(
        v[len..].iter().all(|x| x.is_nan()),
        "a guard element past {len} was written"
    );
    v[..len].to_vec()
}

fn f32s(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn bf16_round(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f64(x).to_f32()).collect()
}

#[test]
fn vector_add_f32_and_bf16() {
    let mut rng = tile_testkit::rng(seed());
    let n = 5003;
    let (a, b) = (
        random_f32(&mut rng, n, -10.0, 10.0),
        random_f32(&mut rng, n, -10.0, 10.0),
    );
    let k = kernel("vector_add.tile", "vector_add", &[("BLOCK", 1024)]);
    let c = poisoned(Scalar::F32, n, 3);
    let args = [
        Arg::Buffer(&Buffer::from_f32(&a)),
        Arg::Buffer(&Buffer::from_f32(&b)),
        Arg::Buffer(&c),
        Arg::I32(n as i32),
    ];
    interp::run(&k, [5, 1, 1], &args).unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(checked(&c, n), want);

    let (a, b) = (
        random_bf16(&mut rng, n, -10.0, 10.0),
        random_bf16(&mut rng, n, -10.0, 10.0),
    );
    let k = kernel("vector_add.tile", "vector_add_bf16", &[("BLOCK", 2048)]);
    let c = poisoned(Scalar::BF16, n, 3);
    let args = [
        Arg::Buffer(&Buffer::from_bf16(&a)),
        Arg::Buffer(&Buffer::from_bf16(&b)),
        Arg::Buffer(&c),
        Arg::I32(n as i32),
    ];
    interp::run(&k, [3, 1, 1], &args).unwrap();
    // one rounding of the exact f32 sum
    let want: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| bf16::from_f32(x.to_f32() + y.to_f32()).to_f32())
        .collect();
    assert_eq!(checked(&c, n), want);
}

fn softmax_ref(x: &[f32], n: usize) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|r| {
            let m = r
                .iter()
                .map(|&v| v as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect()
}

#[test]
fn softmax_rows_guarded_and_bf16() {
    let mut rng = tile_testkit::rng(seed());
    let (rows, n) = (7usize, 1000usize);
    let x = random_f32(&mut rng, rows * n, -8.0, 8.0);
    let k = kernel("softmax.tile", "softmax", &[("BLOCK", 1024)]);
    let y = poisoned(Scalar::F32, rows * n, 5);
    // two extra program instances: `if row < rows` must keep them out
    let args = [
        Arg::Buffer(&Buffer::from_f32(&x)),
        Arg::Buffer(&y),
        Arg::I32(rows as i32),
        Arg::I32(n as i32),
    ];
    interp::run(&k, [rows as u32 + 2, 1, 1], &args).unwrap();
    let want: Vec<f32> = softmax_ref(&x, n).iter().map(|&v| v as f32).collect();
    assert_close(
        "softmax",
        &checked(&y, rows * n),
        &want,
        Tolerance {
            abs: 1e-8,
            rel: 1e-5,
        },
    );

    let n = 777;
    let xb = random_bf16(&mut rng, rows * n, -8.0, 8.0);
    let k = kernel("softmax.tile", "softmax_bf16", &[]);
    let y = poisoned(Scalar::BF16, rows * n, 5);
    interp::run(
        &k,
        [rows as u32, 1, 1],
        &[
            Arg::Buffer(&Buffer::from_bf16(&xb)),
            Arg::Buffer(&y),
            Arg::I32(n as i32),
        ],
    )
    .unwrap();
    let want = bf16_round(&softmax_ref(&f32s(&xb), n));
    assert_close(
        "softmax_bf16",
        &checked(&y, rows * n),
        &want,
        Tolerance {
            abs: 1e-6,
            rel: 8e-3,
        },
    );
}

#[test]
fn sinkhorn_static_loop() {
    let mut rng = tile_testkit::rng(seed());
    let batch = 6;
    let x = random_f32(&mut rng, batch * 16, -1.0, 1.0);
    let k = kernel("softmax.tile", "sinkhorn", &[]);
    let y = poisoned(Scalar::F32, batch * 16, 2);
    interp::run(
        &k,
        [batch as u32, 1, 1],
        &[Arg::Buffer(&Buffer::from_f32(&x)), Arg::Buffer(&y)],
    )
    .unwrap();
    let mut want = Vec::new();
    for b in 0..batch {
        let mut p: Vec<f64> = x[b * 16..(b + 1) * 16]
            .iter()
            .map(|&v| (v as f64).exp())
            .collect();
        for _ in 0..20 {
            for r in 0..4 {
                let s: f64 = p[r * 4..r * 4 + 4].iter().sum();
                p[r * 4..r * 4 + 4].iter_mut().for_each(|v| *v /= s);
            }
            for c in 0..4 {
                let s: f64 = (0..4).map(|r| p[r * 4 + c]).sum();
                (0..4).for_each(|r| p[r * 4 + c] /= s);
            }
        }
        want.extend(p.iter().map(|&v| v as f32));
    }
    assert_close(
        "sinkhorn",
        &checked(&y, batch * 16),
        &want,
        Tolerance {
            abs: 1e-6,
            rel: 1e-5,
        },
    );
}

fn rmsnorm_ref(x: &[bf16], w: &[bf16], n: usize, eps: f64) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|r| {
            let ms = r.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>() / n as f64;
            let rs = 1.0 / (ms + eps).sqrt();
            r.iter()
                .zip(w)
                .map(move |(a, b)| a.to_f64() * rs * b.to_f64())
        })
        .collect()
}

#[test]
fn rmsnorm_single_block_and_looped() {
    let mut rng = tile_testkit::rng(seed());
    let (rows, n, eps) = (5usize, 1000usize, 1e-5f32);
    let x = random_bf16(&mut rng, rows * n, -3.0, 3.0);
    let w = random_bf16(&mut rng, n, -1.0, 1.0);
    let want = bf16_round(&rmsnorm_ref(&x, &w, n, eps as f64));
    for (name, meta) in [
        ("rmsnorm", vec![("BLOCK", 1024)]),
        ("rmsnorm_looped", vec![("BLOCK", 256)]),
    ] {
        let k = kernel("rmsnorm.tile", name, &meta);
        let y = poisoned(Scalar::BF16, rows * n, 4);
        let args = [
            Arg::Buffer(&Buffer::from_bf16(&x)),
            Arg::Buffer(&Buffer::from_bf16(&w)),
            Arg::Buffer(&y),
            Arg::I32(n as i32),
            Arg::F32(eps),
        ];
        interp::run(&k, [rows as u32, 1, 1], &args).unwrap();
        assert_close(
            name,
            &checked(&y, rows * n),
            &want,
            Tolerance {
                abs: 1e-6,
                rel: 8e-3,
            },
        );
    }
}

#[test]
fn layernorm_forward_and_backward() {
    let mut rng = tile_testkit::rng(seed());
    let (rows, n, eps) = (6usize, 1000usize, 1e-5f32);
    let x = random_f32(&mut rng, rows * n, -2.0, 3.0);
    let w = random_f32(&mut rng, n, 0.5, 1.5);
    let bias = random_f32(&mut rng, n, -0.5, 0.5);
    let dy = random_f32(&mut rng, rows * n, -1.0, 1.0);
    // f64 reference
    let (mut mu, mut rs, mut yr) = (vec![0f64; rows], vec![0f64; rows], vec![0f64; rows * n]);
    let (mut dx, mut dw, mut db) = (vec![0f64; rows * n], vec![0f64; n], vec![0f64; n]);
    for r in 0..rows {
        let xr: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
        mu[r] = xr.iter().sum::<f64>() / n as f64;
        let var = xr.iter().map(|v| (v - mu[r]).powi(2)).sum::<f64>() / n as f64;
        rs[r] = 1.0 / (var + eps as f64).sqrt();
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mu[r]) * rs[r]).collect();
        let wdy: Vec<f64> = (0..n).map(|i| w[i] as f64 * dy[r * n + i] as f64).collect();
        let c1 = xhat.iter().zip(&wdy).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        let c2 = wdy.iter().sum::<f64>() / n as f64;
        for i in 0..n {
            yr[r * n + i] = xhat[i] * w[i] as f64 + bias[i] as f64;
            dx[r * n + i] = (wdy[i] - (xhat[i] * c1 + c2)) * rs[r];
            dw[i] += dy[r * n + i] as f64 * xhat[i];
            db[i] += dy[r * n + i] as f64;
        }
    }
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();

    let k = kernel("layernorm.tile", "layernorm_fwd", &[("BLOCK", 1024)]);
    let (y, mean, rstd) = (
        poisoned(Scalar::F32, rows * n, 3),
        poisoned(Scalar::F32, rows, 1),
        poisoned(Scalar::F32, rows, 1),
    );
    let xb = Buffer::from_f32(&x);
    let wb = Buffer::from_f32(&w);
    let args = [
        Arg::Buffer(&xb),
        Arg::Buffer(&wb),
        Arg::Buffer(&Buffer::from_f32(&bias)),
        Arg::Buffer(&y),
        Arg::Buffer(&mean),
        Arg::Buffer(&rstd),
        Arg::I32(n as i32),
        Arg::F32(eps),
    ];
    interp::run(&k, [rows as u32, 1, 1], &args).unwrap();
    assert_close(
        "layernorm y",
        &checked(&y, rows * n),
        &f(&yr),
        Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        },
    );
    assert_close(
        "layernorm mean",
        &checked(&mean, rows),
        &f(&mu),
        Tolerance {
            abs: 1e-6,
            rel: 1e-5,
        },
    );
    assert_close(
        "layernorm rstd",
        &checked(&rstd, rows),
        &f(&rs),
        Tolerance {
            abs: 1e-6,
            rel: 1e-5,
        },
    );

    let k = kernel("layernorm.tile", "layernorm_bwd", &[("BLOCK", 1024)]);
    let dxb = poisoned(Scalar::F32, rows * n, 3);
    let (dwb, dbb) = (Buffer::zeros(Scalar::F32, n), Buffer::zeros(Scalar::F32, n));
    let args = [
        Arg::Buffer(&xb),
        Arg::Buffer(&wb),
        Arg::Buffer(&Buffer::from_f32(&dy)),
        Arg::Buffer(&mean),
        Arg::Buffer(&rstd),
        Arg::Buffer(&dxb),
        Arg::Buffer(&dwb),
        Arg::Buffer(&dbb),
        Arg::I32(n as i32),
    ];
    interp::run(&k, [rows as u32, 1, 1], &args).unwrap();
    assert_close(
        "layernorm dx",
        &checked(&dxb, rows * n),
        &f(&dx),
        Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        },
    );
    assert_close(
        "layernorm dw",
        &dwb.to_f32_vec(),
        &f(&dw),
        Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        },
    );
    assert_close(
        "layernorm db",
        &dbb.to_f32_vec(),
        &f(&db),
        Tolerance {
            abs: 1e-5,
            rel: 1e-4,
        },
    );
}

#[test]
fn matmul_bf16_ragged() {
    let mut rng = tile_testkit::rng(seed());
    let (m, n, k) = (100usize, 70usize, 90usize);
    let a = random_bf16(&mut rng, m * k, -1.0, 1.0);
    let b = random_bf16(&mut rng, k * n, -1.0, 1.0);
    let kern = kernel(
        "matmul.tile",
        "matmul",
        &[("BM", 64), ("BN", 64), ("BK", 32)],
    );
    let c = poisoned(Scalar::BF16, m * n, 4);
    let grid = (m.div_ceil(64) * n.div_ceil(64)) as u32;
    let args = [
        Arg::Buffer(&Buffer::from_bf16(&a)),
        Arg::Buffer(&Buffer::from_bf16(&b)),
        Arg::Buffer(&c),
        Arg::I32(m as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
    ];
    interp::run(&kern, [grid, 1, 1], &args).unwrap();
    let want: Vec<f64> = (0..m * n)
        .map(|idx| {
            (0..k)
                .map(|p| a[idx / n * k + p].to_f64() * b[p * n + idx % n].to_f64())
                .sum()
        })
        .collect();
    assert_close(
        "matmul",
        &checked(&c, m * n),
        &bf16_round(&want),
        Tolerance {
            abs: 1e-2,
            rel: 8e-3,
        },
    );
}

#[test]
fn attention_causal_and_not() {
    let mut rng = tile_testkit::rng(seed());
    let (seq, d, heads) = (100usize, 64usize, 2usize);
    let scale = 1.0 / (d as f32).sqrt();
    let q = random_bf16(&mut rng, heads * seq * d, -1.0, 1.0);
    let kk = random_bf16(&mut rng, heads * seq * d, -1.0, 1.0);
    let v = random_bf16(&mut rng, heads * seq * d, -1.0, 1.0);
    for causal in [0i64, 1] {
        let k = kernel(
            "attention.tile",
            "attention",
            &[("BM", 64), ("BN", 32), ("D", 64), ("CAUSAL", causal)],
        );
        let o = poisoned(Scalar::BF16, heads * seq * d, 4);
        let args = [
            Arg::Buffer(&Buffer::from_bf16(&q)),
            Arg::Buffer(&Buffer::from_bf16(&kk)),
            Arg::Buffer(&Buffer::from_bf16(&v)),
            Arg::Buffer(&o),
            Arg::I32(seq as i32),
            Arg::F32(scale),
        ];
        interp::run(&k, [seq.div_ceil(64) as u32, heads as u32, 1], &args).unwrap();
        let mut want = vec![0f64; heads * seq * d];
        // σ of the error from rounding p to bf16 before the second dot: each
        // p_j off by ε_j·p_j, |ε_j| ≤ 2^-8 (half a bf16 ulp), independent and
        // uniform (σ 2^-8/√3), so σ_out = 2^-8/√3 · √Σ(p_j·v_j)² / l; and its
        // worst case 2^-8 · Σ|p_j·v_j| / l.
        let mut sigma = vec![0f64; heads * seq * d];
        let mut worst = vec![0f64; heads * seq * d];
        for h in 0..heads {
            let at = |t: &[bf16], i: usize, j: usize| t[h * seq * d + i * d + j].to_f64();
            for i in 0..seq {
                let keys = if causal != 0 { i + 1 } else { seq };
                let s: Vec<f64> = (0..keys)
                    .map(|j| {
                        (0..d).map(|c| at(&q, i, c) * at(&kk, j, c)).sum::<f64>() * scale as f64
                    })
                    .collect();
                let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let l: f64 = p.iter().sum();
                for c in 0..d {
                    let o = h * seq * d + i * d + c;
                    want[o] = (0..keys).map(|j| p[j] * at(&v, j, c)).sum::<f64>() / l;
                    let sq: f64 = (0..keys).map(|j| (p[j] * at(&v, j, c)).powi(2)).sum();
                    sigma[o] = 2f64.powi(-8) / 3f64.sqrt() * sq.sqrt() / l;
                    worst[o] = 2f64.powi(-8)
                        * (0..keys).map(|j| (p[j] * at(&v, j, c)).abs()).sum::<f64>()
                        / l;
                }
            }
        }
        // Per output: the rounding of p (6σ: none of 12,800 outputs expected
        // past it; never more than its worst case), f32 scores (64-term sums,
        // exp: < 2^-20 absolute here), and the output's own bf16 rounding,
        // which may flip by one ulp (2^-7 relative) against the reference's.
        // (Was abs 1e-2 + rel 2e-2 on outputs of typical size 0.06.)
        let got = checked(&o, heads * seq * d);
        let rounded = bf16_round(&want);
        for (i, (&g, &w)) in got.iter().zip(&rounded).enumerate() {
            let bound =
                (6.0 * sigma[i]).min(worst[i]) + 2f64.powi(-20) + 2f64.powi(-7) * want[i].abs();
            assert!(
                ((g as f64) - w as f64).abs() <= bound,
                "attention causal={causal} [{i}]: got {g}, want {w} (bound {bound:.2e})"
            );
        }
    }
}
