//! `Ops::init_normal` (`kernels/model/init.tile`) on the CPU interpreter
//! against an independent Rust Philox4x32-10 (itself checked against
//! Random123's known-answer vectors): bit for bit, at ragged sizes, into
//! NaN-filled buffers; then the distribution's moments and the independence
//! of streams and seeds. `gpu_ops::gpu_init_normal` holds the GPU to the same
//! bits.

use mhc::kernels::KernelSet;
use mhc_train::ops::Ops;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::Device;
use tile_testkit::seed;

fn ops() -> Ops {
    let dir = std::env::var_os("TILE_PACK_DIR").map(std::path::PathBuf::from);
    let ks = KernelSet::open(Arc::new(Device::cpu()), dir.as_deref()).unwrap();
    Ops::new(Arc::new(ks)).unwrap()
}

/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
/// 3", SC'11), written from the paper's round function.
fn philox(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = c[0] as u64 * 0xD251_1F53;
        let p1 = c[2] as u64 * 0xCD9E_8D57;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [
            k[0].wrapping_add(0x9E37_79B9),
            k[1].wrapping_add(0xBB67_AE85),
        ];
    }
    c
}

/// Element i of stream s: the top 24 bits of the 12 words at counters
/// (i mod 2³², 0..3, s, i div 2³²), summed, centred on their mean
/// 12·(2²⁴−1)/2, scaled by 2⁻²⁴ (rounded once to f32), times std (rounded
/// again).
fn normal_ref(seed: u64, stream: u32, i: u64, std: f32) -> f32 {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut sum: i64 = 0;
    for d in 0..3 {
        for w in philox([i as u32, d, stream, (i >> 32) as u32], key) {
            sum += (w >> 8) as i64;
        }
    }
    ((sum - 6 * ((1 << 24) - 1)) as f32) * (1.0 / (1u32 << 24) as f32) * std
}

#[test]
fn philox_matches_random123_known_answers() {
    // Random123 tests/kat_vectors, the three "philox4x32 10" lines.
    assert_eq!(
        philox([0; 4], [0; 2]),
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    );
    assert_eq!(
        philox([u32::MAX; 4], [u32::MAX; 2]),
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    );
    assert_eq!(
        philox(
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0]
        ),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

fn draw(o: &Ops, n: usize, std: f32, seed: u64, stream: u32) -> Vec<f32> {
    let mut x = o.device().upload(&vec![f32::NAN; n]).unwrap();
    o.init_normal(&mut x, n, std, seed, stream).unwrap();
    o.device().download::<f32>(&x).unwrap()
}

/// `got[i]` is element `first + i` of the reference Philox draw, bit for bit.
fn assert_philox(got: &[f32], first: u64, std: f32, seed: u64, stream: u32) {
    for (i, g) in got.iter().enumerate() {
        let want = normal_ref(seed, stream, first + i as u64, std);
        assert!(
            g.to_bits() == want.to_bits(),
            "n={} first={first} seed={seed:#x} stream={stream} std={std}: x[{i}] = {g}, Philox gives {want}",
            got.len()
        );
    }
}

#[test]
fn init_normal_is_philox_bit_for_bit() {
    let o = ops();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("init_normal_is_philox_bit_for_bit: "));
    // Ragged sizes on both block sizes the op picks (1024 to 4096 elements,
    // 4096 beyond on the CPU), seeds with both key words non-zero.
    for n in [1usize, 1023, 5000 + rng.random_range(0..1000)] {
        let (seed, stream, std) = (
            rng.random::<u64>(),
            rng.random::<u32>(),
            rng.random_range(0.01f32..2.0),
        );
        assert_philox(&draw(&o, n, std, seed, stream), 0, std, seed, stream);
    }
}

/// A part drawn alone is that part of the whole tensor, wherever it lies:
/// past 2³¹ (an i32 index would wrap) and past 2³² (the index's high word
/// moves to the fourth counter).
#[test]
fn a_part_far_along_is_philox_at_its_own_indices() {
    let o = ops();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("a_part_far_along: "));
    let (seed, stream) = (rng.random::<u64>(), rng.random::<u32>());
    let n = 3000;
    for first in [(1u64 << 31) - 1000, (1u64 << 32) - 1000, 5u64 << 40] {
        let mut x = o.device().upload(&vec![f32::NAN; n]).unwrap();
        o.init_normal_part(&mut x, n, first, 1.0, seed, stream)
            .unwrap();
        let got = o.device().download::<f32>(&x).unwrap();
        assert_philox(&got, first, 1.0, seed, stream);
    }
}

#[test]
fn init_normal_has_the_moments_of_a_normal() {
    let o = ops();
    let n = 1 << 16;
    let x: Vec<f64> = draw(&o, n, 1.0, 0x5eed_0000_0001, 3)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mean = x.iter().sum::<f64>() / n as f64;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    let kurt = x.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
    // Standard errors at n = 65536: mean 1/√n ≈ 0.0039, variance √(2/n) ≈
    // 0.0055, kurtosis ≈ √(24/n) ≈ 0.019; 5 of each. Irwin–Hall(12)'s kurtosis
    // is 3 − 1.2/12 = 2.9 (a normal's 3).
    assert!(mean.abs() < 5.0 * 0.0039, "mean {mean}");
    assert!((var - 1.0).abs() < 5.0 * 0.0055, "variance {var}");
    assert!((kurt - 2.9).abs() < 5.0 * 0.019, "kurtosis {kurt}");
    assert!(x.iter().all(|v| v.abs() <= 6.0), "|x| ≤ 6 by construction");
}

#[test]
fn streams_and_seeds_are_independent() {
    let o = ops();
    let n = 1 << 14;
    let a = draw(&o, n, 1.0, 7, 0);
    let b = draw(&o, n, 1.0, 7, 1);
    let c = draw(&o, n, 1.0, 8, 0);
    // Correlation of independent draws: standard error 1/√n ≈ 0.0078; 5 of it.
    let corr = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(&p, &q)| p as f64 * q as f64)
            .sum::<f64>()
            / n as f64
    };
    for (what, r) in [
        ("streams 0 and 1", corr(&a, &b)),
        ("seeds 7 and 8", corr(&a, &c)),
    ] {
        assert!(r.abs() < 5.0 * 0.0078, "{what}: correlation {r}");
    }
    // A prefix is the same draw: the values do not depend on n.
    assert_eq!(draw(&o, 100, 1.0, 7, 0), a[..100]);
}
