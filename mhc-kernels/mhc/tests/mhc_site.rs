//! One mHC / HC site on the CPU interpreter against the f64 reference
//! (`mhc::reference`): the forward's coefficients and outputs, the backward
//! against central finite differences, Sinkhorn-Knopp's row and column sums,
//! and the recompute path against the stored one. Fresh random inputs every
//! run (the seed is printed; `TILE_TEST_SEED` replays one); outputs start NaN.

mod common;

use common::*;
use mhc::layer::{Mixing, Params};
use mhc::reference::{finite_difference, Wrt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tile_runtime::Scalar;

const CASES: &[(Mixing, usize, usize, usize)] = &[
    (Mixing::Mhc, 5, 4, 100),
    (Mixing::Mhc, 3, 2, 70),
    (Mixing::Mhc, 2, 8, 40),
    (Mixing::Mhc, 67, 4, 24),
    (Mixing::Hc, 4, 4, 100),
    (Mixing::Hc, 3, 2, 50),
    (Mixing::Hc, 2, 8, 33),
];

#[test]
fn forward_matches_f64_reference() {
    let mut rng = StdRng::seed_from_u64(seed());
    let ks = cpu_kernels();
    for &(mixing, t, n, c) in CASES {
        eprintln!("-- {mixing:?} T={t} n={n} C={c}");
        let site = random_site(mixing, t, n, c, &mut rng);
        let run = Run::new(&ks, site);
        let dev = run.dev();
        let mut saved = nan_saved(&run.layer, t);
        let mut h_in = nan_buffer(dev, Scalar::BF16, t * c);
        run.layer
            .pre_into(&run.p, &run.x, &mut saved, &mut h_in)
            .unwrap();
        let mut x_out = nan_buffer(dev, Scalar::BF16, t * n * c);
        run.layer
            .post_into(&saved, &run.x, &run.y, &mut x_out)
            .unwrap();
        let want = run.site.forward();
        // Coefficients are f32 from an f32 projection (bf16 hi+lo split of φ,
        // relative error ~2^-16) and f32 gates/Sinkhorn: 2e-5·|h| + 1e-5 of the largest.
        assert_close("h", &download(dev, &saved.h), &want.h, 2e-5, 1e-5);
        // bf16 outputs: one rounding (2^-9 relative, doubled for ties flipped by
        // f32-vs-f64 differences) plus the coefficients' error.
        assert_close(
            "h_in",
            &download(dev, &h_in),
            &want.h_in,
            2f64.powi(-8),
            1e-4,
        );
        assert_close(
            "x_out",
            &download(dev, &x_out),
            &want.x_out,
            2f64.powi(-8),
            1e-4,
        );
        if mixing == Mixing::Mhc {
            let h = download(dev, &saved.h);
            let r = n * n + 2 * n;
            let (mut row_dev, mut col_dev, mut col_vs_ref) = (0.0f64, 0.0f64, 0.0f64);
            for tok in 0..t {
                let res = &h[tok * r + 2 * n..(tok + 1) * r];
                let res_ref = &want.h[tok * r + 2 * n..(tok + 1) * r];
                for k in 0..n {
                    let row: f64 = (0..n).map(|i| res[k * n + i]).sum();
                    let col: f64 = (0..n).map(|j| res[j * n + k]).sum();
                    let col_ref: f64 = (0..n).map(|j| res_ref[j * n + k]).sum();
                    row_dev = row_dev.max((row - 1.0).abs());
                    col_dev = col_dev.max((col - 1.0).abs());
                    col_vs_ref = col_vs_ref.max((col - col_ref).abs());
                }
            }
            eprintln!(
                "Sinkhorn: max |row sum - 1| {row_dev:.2e}, max |column sum - 1| {col_dev:.2e} \
                 (f64 reference after the same 20 iterations: column sums within {col_vs_ref:.2e})"
            );
            assert!(
                row_dev <= 1e-5,
                "rows of H_res must sum to 1 within 1e-5, got {row_dev:e}"
            );
            // Columns sum to 1 only as far as 20 iterations converge (the last
            // step normalises rows): they must match the f64 iteration's sums.
            assert!(
                col_vs_ref <= 1e-5,
                "column sums differ from the f64 iteration's by {col_vs_ref:e}"
            );
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(seed());
    let ks = cpu_kernels();
    for &(mixing, t, n, c) in CASES {
        eprintln!("-- {mixing:?} T={t} n={n} C={c}");
        let site = random_site(mixing, t, n, c, &mut rng);
        let run = Run::new(&ks, site);
        let dev = run.dev();
        let site = &run.site;
        let g_out = round_bf16(gaussian(&mut rng, t * n * c, 1.0));
        let g_h = round_bf16(gaussian(&mut rng, t * c, 1.0));
        let (h_in, saved) = run.layer.pre(&run.p, &run.x, t).unwrap();
        drop(h_in);
        let mut g_x = nan_buffer(dev, Scalar::BF16, t * n * c);
        let mut dy = nan_buffer(dev, Scalar::BF16, t * c);
        let mut dh = nan_buffer(dev, Scalar::F32, t * (n * n + 2 * n));
        let g_out_b = upload_bf16(dev, &g_out);
        run.layer
            .post_backward_into(&saved, &run.x, &run.y, &g_out_b, &mut g_x, &mut dy, &mut dh)
            .unwrap();
        // Gradients accumulate: start from random values and subtract them.
        let g0 = |len: usize, rng: &mut StdRng| gaussian(rng, len, 1.0);
        let (p0, a0, b0) = (
            g0(site.phi.len(), &mut rng),
            g0(3, &mut rng),
            g0(site.b.len(), &mut rng),
        );
        let mut grads = Params {
            proj: dev.upload(&p0).unwrap(),
            alpha: dev.upload(&a0).unwrap(),
            b: dev.upload(&b0).unwrap(),
        };
        let g_h_b = upload_bf16(dev, &g_h);
        run.layer
            .pre_backward(
                &run.p, &saved, &run.x, &g_h_b, &mut g_x, &mut dh, &mut grads,
            )
            .unwrap();
        let minus = |got: Vec<f64>, start: &[f32]| -> Vec<f64> {
            got.iter().zip(start).map(|(g, s)| g - *s as f64).collect()
        };
        let grads_of = [
            (Wrt::X, download(dev, &g_x)),
            (Wrt::Y, download(dev, &dy)),
            (Wrt::Phi, minus(download(dev, &grads.proj), &p0)),
            (Wrt::Alpha, minus(download(dev, &grads.alpha), &a0)),
            (Wrt::B, minus(download(dev, &grads.b), &b0)),
        ];
        for (wrt, got) in grads_of {
            // Sampled coordinates (all of them for the small tensors).
            let idx: Vec<usize> = if got.len() <= 32 {
                (0..got.len()).collect()
            } else {
                (0..32).map(|_| rng.random_range(0..got.len())).collect()
            };
            let fd: Vec<f64> = idx
                .iter()
                .map(|&i| finite_difference(site, wrt, i, &g_out, &g_h))
                .collect();
            let picked: Vec<f64> = idx.iter().map(|&i| got[i]).collect();
            // dx and dy are bf16 buffers (dx rounded after each of its three
            // accumulations: ≤ 3·2^-9 of its magnitude); φ, α, b are f32 sums of
            // f32 products with dz split into bf16 high+low parts (~2^-16).
            let (rel, abs) = match wrt {
                Wrt::X | Wrt::Y => (2f64.powi(-7), 4e-3),
                _ => (1e-3, 1e-4),
            };
            let scale = max_abs(&got).max(max_abs(&fd));
            for ((i, g), f) in idx.iter().zip(&picked).zip(&fd) {
                let tol = rel * f.abs() + abs * scale;
                assert!(
                    (g - f).abs() <= tol,
                    "{mixing:?} d{wrt:?}[{i}]: kernel {g}, finite difference {f} (tol {tol:.2e})"
                );
            }
            let worst = picked
                .iter()
                .zip(&fd)
                .map(|(g, f)| (g - f).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "d{wrt:?}: {} coords, max |kernel - fd| {worst:.2e} (scale {scale:.2e})",
                idx.len()
            );
        }
    }
}
