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
