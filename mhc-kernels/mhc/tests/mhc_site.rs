//! One mHC / HC site on the CPU interpreter against the f64 reference
//! (`mhc::reference`): the forward's coefficients and outputs, the backward
//! against central finite differences, Sinkhorn-Knopp's row and column sums,
//! and the recompute path against the stored one. Fresh random inputs every
//! run (the seed is printed; `TILE_TEST_SEED` replays one); outputs start NaN.

mod common;

use common::*;
use mhc::layer::Mixing;
use rand::rngs::StdRng;
use rand::SeedableRng;

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
    check_forward(&cpu_kernels(), CASES, &mut StdRng::seed_from_u64(seed()));
}

#[test]
fn backward_matches_finite_differences() {
    check_backward(&cpu_kernels(), CASES, &mut StdRng::seed_from_u64(seed()));
}

/// The backward check catches a backward with a term dropped or slightly
/// wrong (the h_in term of every gradient, zero or 1% off, given to the
/// kernels while the finite differences use the true one). Dropped: every
/// case fails in every gradient the h_in path reaches (dx, φ, α, b; not dy).
/// 1% off: the f32 parameter gradients (dx, a bf16 buffer held to 2^-7, is
/// not that precise) fail in at least 5 of the 7 cases each. Not all: a 1%
/// change hides under the tolerance when a gradient is near zero next to its
/// largest coordinate, as α's pre gradient, a sum over T·n·C terms of either
/// sign, sometimes is.
#[test]
fn backward_check_catches_a_dropped_or_wrong_term() {
    let ks = cpu_kernels();
    for factor in [0.0, 0.99] {
        let bad = backward_mismatches(&ks, CASES, &mut StdRng::seed_from_u64(seed()), factor);
        let (grads, at_least): (&[&str], usize) = if factor == 0.0 {
            (&["dX", "dPhi", "dAlpha", "dB"], CASES.len())
        } else {
            (&["dPhi", "dAlpha", "dB"], CASES.len() - 2)
        };
        for wrt in grads {
            let caught: Vec<String> = CASES
                .iter()
                .map(|&(mixing, t, n, c)| format!("{mixing:?} T={t} n={n} C={c} {wrt}["))
                .filter(|case| bad.iter().any(|b| b.starts_with(case)))
                .collect();
            assert!(
                caught.len() >= at_least,
                "h_in term ×{factor}: {wrt} caught in {} of {} cases (want {at_least}); caught:\n{}",
                caught.len(),
                CASES.len(),
                bad.join("\n")
            );
        }
        eprintln!(
            "h_in term ×{factor}: {} of {} (case, gradient) checks failed",
            bad.len(),
            CASES.len() * 5
        );
    }
}

/// The compiled pack (`target/packs/mhc.tpack`, or `$TILE_PACK_DIR`) holds
/// every configuration a site launches: its tune blocks pair choices with
/// `where:` (`N * BT == 32`, `BC == 128 * warps`, …), and a launch the layer
/// makes outside them would fail on the GPU. Run here through the pack's TIR
/// on the interpreter, for the wide (1024 | C) and narrow apply tiles, n = 2,
/// 4, 8, both mixings; each output bit-identical to the sources' kernels.
#[test]
fn the_pack_holds_every_configuration_a_site_launches() {
    let pack = tile_testkit::current_pack_path("mhc");
    let packed = std::sync::Arc::new(
        mhc::kernels::KernelSet::from_packs(
            std::sync::Arc::new(tile_runtime::Device::cpu()),
            &[pack],
        )
        .unwrap_or_else(|e| panic!("{e} (build it with `bash scripts/packs`)")),
    );
    let sources = cpu_kernels();
    let mut rng = StdRng::seed_from_u64(seed());
    for mixing in [Mixing::Mhc, Mixing::Hc] {
        for n in [2, 4, 8] {
            for c in [1024, 100] {
                let t = 3;
                let site = random_site(mixing, t, n, c, &mut rng);
                let g_out = round_bf16(gaussian(&mut rng, t * n * c, 1.0));
                let g_h = round_bf16(gaussian(&mut rng, t * c, 1.0));
                let got = site_outputs(&Run::new(&packed, site.clone()), &g_out, &g_h);
                let want = site_outputs(&Run::new(&sources, site), &g_out, &g_h);
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{mixing:?} n={n} C={c}: `{name}` differs between pack and sources"
                    );
                }
            }
        }
    }
}

/// A site's backward at the 86M trainer's shape (T = 8192, n = 4, C = 768)
/// runs 7 kernels: each launch costs the layer a few µs at that size
/// (BENCHMARKS.md, session 34), so one that comes back is a regression.
/// A dry run of the CPU device's kernel set records the launches.
#[test]
fn a_site_backward_at_the_trainers_shape_is_seven_launches() {
    use mhc::layer::{Layer, SiteConfig};
    use tile_runtime::Scalar;
    let ks = cpu_kernels();
    let dev = ks.device();
    let (t, n, c) = (8192, 4, 768);
    let layer = Layer::new(ks.clone(), SiteConfig::new(Mixing::Mhc, n, c)).unwrap();
    let p = layer.init_params(1, 0).unwrap();
    let mut grads = layer.zero_grads().unwrap();
    let x = dev.alloc(Scalar::BF16, t * n * c).unwrap();
    let y = dev.alloc(Scalar::BF16, t * c).unwrap();
    let g_h = dev.alloc(Scalar::BF16, t * c).unwrap();
    ks.dry_run(true);
    let (_, saved) = layer.pre(&p, &x, t).unwrap();
    ks.take_launches();
    let (mut g_x, _, mut dh) = layer.post_backward(&saved, &x, &y, &x).unwrap();
    layer
        .pre_backward(&p, &saved, &x, &g_h, &mut g_x, &mut dh, &mut grads)
        .unwrap();
    let names: Vec<String> = ks
        .take_launches()
        .iter()
        .map(|l| l.name.to_string())
        .collect();
    ks.dry_run(false);
    assert_eq!(
        names,
        [
            "mhc_post_bwd",
            "mhc_pre_bwd",
            "mhc_coeffs_bwd",
            "mhc_proj_bwd",
            "mhc_sum_rows",
            "mhc_sum_rows",
            "mhc_sum_rows"
        ]
    );
}

/// `Layer::sum_rows_into` (kernel `mhc_sum_rows`, one stage or two) adds
/// each column's sum over the rows to what the destinations hold, split
/// between two parameters at `split`: narrow (≤ 32 columns, 32 rows a step)
/// and wide sums, row counts on both sides of every stage boundary and
/// ragged against the tiles, against an f64 sum. Tolerance: an f32 sum of
/// p terms in any order is within p·2⁻²⁴·Σ|terms| of the exact one (plus
/// the destination's own rounding).
#[test]
fn sum_rows_adds_each_columns_sum_in_one_or_two_stages() {
    use mhc::layer::{Layer, SiteConfig};
    use rand::Rng;
    let ks = cpu_kernels();
    let dev = ks.device();
    let layer = Layer::new(ks.clone(), SiteConfig::new(Mixing::Mhc, 4, 64)).unwrap();
    let mut rng = StdRng::seed_from_u64(seed());
    for (p, l, split) in [
        (5, 27, 24),
        (256, 27, 24),
        (257, 27, 27),
        (1024, 27, 24),
        (2049, 3, 3),
        (64, 70, 70),
        (65, 70, 33),
        (600, 300, 300),
    ] {
        let src: Vec<f32> = (0..p * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let d0: Vec<f32> = (0..l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let s = dev.upload(&src).unwrap();
        let mut dst = dev.upload(&d0[..split]).unwrap();
        let mut rest = dev.upload(&d0[split..]).unwrap();
        let rest_arg = (split < l).then_some(&mut rest);
        layer.sum_rows_into(&s, p, l, &mut dst, rest_arg).unwrap();
        let mut got = download(dev, &dst);
        if split < l {
            got.extend(download(dev, &rest));
        }
        assert_eq!(got.len(), l);
        for (k, g) in got.iter().enumerate() {
            let col = (0..p).map(|i| f64::from(src[i * l + k]));
            let want = f64::from(d0[k]) + col.clone().sum::<f64>();
            let mag = f64::from(d0[k].abs()) + col.map(f64::abs).sum::<f64>();
            let tol = (p as f64 + 1.0) * 2f64.powi(-24) * mag;
            assert!(
                (g - want).abs() <= tol,
                "p={p} l={l} split={split} column {k}: {g} against {want} (tolerance {tol:e})"
            );
        }
    }
}
