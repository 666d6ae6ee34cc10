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
