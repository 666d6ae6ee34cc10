//! GPU tier: the compiled mHC pack on the GPU against the f64 reference
//! (`mhc::reference`: the forward directly, the backward against central
//! finite differences of its loss, as mhc_site.rs does on the CPU, with the
//! same check functions), against the CPU interpreter on the same random
//! inputs (every forward and backward output of a site, for mHC and HC,
//! n = 2, 4, 8, ragged T and C), and the stack's recompute path bit-identical
//! to storing on the GPU. Prints `SKIPPED` and passes without a GPU (fails
//! under `TILE_REQUIRE_GPU=1`). The pack comes from `$TILE_PACK_DIR/mhc.tpack`
//! (default target/packs/) and is refused when its kernels' source hashes are
//! not those of `mhc-kernels/kernels/mhc/*.tile` now.

mod common;

use common::*;
use mhc::kernels::KernelSet;
use mhc::layer::Mixing;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

fn gpu_kernels(test: &str) -> Option<Arc<KernelSet>> {
    let dev = gpu_or_skip(test)?;
    let pack = tile_testkit::current_pack_path("mhc");
    Some(Arc::new(
        KernelSet::from_packs(Arc::new(dev), &[pack])
            .unwrap_or_else(|e| panic!("{e} (build it with `bash scripts/packs`)")),
    ))
}

/// The GPU cases against the f64 reference: mhc_site.rs's shapes plus larger
/// ragged ones (T, C not multiples of any tile), mHC and HC, n = 2, 4, 8.
const REFERENCE_CASES: &[(Mixing, usize, usize, usize)] = &[
    (Mixing::Mhc, 5, 4, 100),
    (Mixing::Mhc, 3, 2, 70),
    (Mixing::Mhc, 2, 8, 40),
    (Mixing::Mhc, 67, 4, 24),
    (Mixing::Mhc, 37, 4, 1000),
    (Mixing::Mhc, 9, 8, 1031),
    (Mixing::Hc, 4, 4, 100),
    (Mixing::Hc, 2, 8, 33),
    (Mixing::Hc, 29, 2, 3000),
];

#[test]
fn gpu_mhc_site_forward_matches_f64_reference() {
    let Some(gpu) = gpu_kernels("gpu_mhc_site_forward_matches_f64_reference") else {
        return;
    };
    check_forward(&gpu, REFERENCE_CASES, &mut StdRng::seed_from_u64(seed()));
}

#[test]
fn gpu_mhc_site_backward_matches_finite_differences() {
    let Some(gpu) = gpu_kernels("gpu_mhc_site_backward_matches_finite_differences") else {
        return;
    };
    check_backward(&gpu, REFERENCE_CASES, &mut StdRng::seed_from_u64(seed()));
}

/// The same check with the h_in term of the backward dropped (the kernels
/// get a zero upstream gradient of h_in; the finite differences the true
/// one): every case must fail in dx, φ, α and b, on the GPU too.
#[test]
fn gpu_mhc_backward_check_catches_a_dropped_term() {
    let Some(gpu) = gpu_kernels("gpu_mhc_backward_check_catches_a_dropped_term") else {
        return;
    };
    let bad = backward_mismatches(
        &gpu,
        REFERENCE_CASES,
        &mut StdRng::seed_from_u64(seed()),
        0.0,
    );
    for &(mixing, t, n, c) in REFERENCE_CASES {
        for wrt in ["dX", "dPhi", "dAlpha", "dB"] {
            let case = format!("{mixing:?} T={t} n={n} C={c} {wrt}[");
            assert!(
                bad.iter().any(|b| b.starts_with(&case)),
                "{case} not caught with the h_in term dropped"
            );
        }
    }
}

#[test]
fn gpu_mhc_site_matches_interpreter() {
    let Some(gpu) = gpu_kernels("gpu_mhc_site_matches_interpreter") else {
        return;
    };
    let cpu = cpu_kernels();
    let mut rng = StdRng::seed_from_u64(seed());
    let cases: &[(Mixing, usize, usize, usize)] = &[
        (Mixing::Mhc, 1, 4, 4096),
        (Mixing::Mhc, 131, 4, 1000),
        (Mixing::Mhc, 77, 2, 2567),
        (Mixing::Mhc, 40, 8, 1031),
        (Mixing::Hc, 131, 4, 1000),
        (Mixing::Hc, 29, 2, 3000),
        (Mixing::Hc, 40, 8, 700),
    ];
    let mut table = Vec::new();
    for &(mixing, t, n, c) in cases {
        let site = random_site(mixing, t, n, c, &mut rng);
        let g_out = round_bf16(gaussian(&mut rng, t * n * c, 1.0));
        let g_h = round_bf16(gaussian(&mut rng, t * c, 1.0));
        let got = site_outputs(&Run::new(&gpu, site.clone()), &g_out, &g_h);
        let cpu_run = Run::new(&cpu, site);
        let want = site_outputs(&cpu_run, &g_out, &g_h);
        let dh = &want.iter().find(|(k, _)| *k == "dh").unwrap().1;
        let (alpha_mag, b_mag) = gate_share_magnitudes(&cpu_run, dh);
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            // Same f32 math in another order, hardware exp/tanh approximations
            // (a few ulp): f32 outputs within 1e-4 of their largest value.
            // bf16 outputs may round the other way: one ulp (2^-8 relative) for
            // h_in, x_out and dy; g_x is rounded after each of its three
            // accumulations, each of which may flip by one ulp of the partial sum
            // (up to the largest value): 3·2^-8 of the largest.
            let (rel, abs) = match *name {
                "h_in" | "x_out" | "dy" => (2f64.powi(-7), 2e-3),
                "g_x" => (2f64.powi(-7), 3.0 * 2f64.powi(-8)),
                _ => (1e-4, 1e-4),
            };
            // Sums over tokens that cancel (d_alpha, d_b): 1e-5 of the sum
            // of |per-token shares| on top (f32 sums in two orders differ by
            // a few ulp of the magnitudes summed; seen: 1.9e-6 of it at
            // n = 8, T = 40).
            let extra: Vec<f64> = match *name {
                "d_alpha" => alpha_mag.iter().map(|m| 1e-5 * m).collect(),
                "d_b" => b_mag.iter().map(|m| 1e-5 * m).collect(),
                _ => Vec::new(),
            };
            assert_close_plus(
                &format!("{mixing:?} T={t} n={n} C={c} {name}"),
                g,
                w,
                rel,
                abs,
                &extra,
            );
        }
        table.push(format!("{mixing:?} T={t} n={n} C={c}: 11 outputs ok"));
    }
    for line in table {
        println!("{line}");
    }
}

#[test]
fn gpu_mhc_stack_recompute_is_bit_identical() {
    if let Some(gpu) = gpu_kernels("gpu_mhc_stack_recompute_is_bit_identical") {
        check_recompute(&gpu);
    }
}
