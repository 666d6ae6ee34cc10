//! GPU tier: `sin cos erf log1p expm1 pow` (tile_codegen::math, no
//! libdevice) on the GPU against f64, kernel `math_ext` of
//! tests/kernels/math.tile. Per function 2^20 inputs (a sweep of the
//! documented domain evenly spaced in bit pattern, both signs where the
//! domain has them, so every binade is covered, then the special values;
//! sin/cos: half within ±105615, half beyond, up to f32::MAX);
//! `pow` on pairs of a base from every binade and an exponent in
//! ±[2^-10, 200] or a small integer (negative bases too). Prints the table of
//! docs/LANGUAGE.md ("Math functions"): the maximum error in ulp of the f32
//! result and where; asserts the documented bounds, and the special values
//! (C99 Annex F) bit for bit. NaN-poisoned output.
#![cfg(feature = "gpu")]

use rand::{Rng, SeedableRng};
use tile_interp::math::{erf_f64, f32_ulp_error};
use tile_runtime::Arg;
use tile_testkit::*;

fn small() -> bool {
    std::env::var_os("TILE_SANITIZER_RUN").is_some()
}

/// `n` values evenly spaced in bit pattern over [lo, hi] (lo, hi ≥ 0),
/// alternating signs when `signed`.
fn sweep(lo: f32, hi: f32, n: usize, signed: bool) -> Vec<f32> {
    let (a, b) = (lo.to_bits() as u64, hi.to_bits() as u64);
    (0..n as u64)
        .map(|i| {
            let x = f32::from_bits((a + (b - a) * i / (n as u64 - 1)) as u32);
            if signed && i % 2 == 1 {
                -x
            } else {
                x
            }
        })
        .collect()
}

struct Func {
    name: &'static str,
    exact: fn(f64) -> f64,
    /// The documented domain: the sweep's [lo, hi] and whether negative.
    lo: f32,
    hi: f32,
    signed: bool,
    /// Negative inputs swept over [0, neg_hi] as well (log1p, expm1).
    neg_hi: f32,
    /// The documented bound in ulp.
    bound: f64,
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;
const TINY: f32 = f32::from_bits(1);

/// Special values appended to every function's inputs.
const SPECIAL: &[f32] = &[
    0.0,
    -0.0,
    INF,
    -INF,
    NAN,
    TINY,
    -TINY,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-30,
    -1e-30,
    1.0,
    -1.0,
    -2.0,
    f32::MAX,
    -f32::MAX,
];

#[test]
fn gpu_math_function_ulp_errors() {
    let Some(dev) = gpu_or_skip("gpu_math_function_ulp_errors") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let v = &pack.kernel("math_ext").unwrap().variants[0];
    let k = pack.load_kernel(&dev, "math_ext", &v.config).unwrap();
    let n: usize = if small() { 4096 } else { 1 << 20 };
    let funcs = [
        Func {
            name: "sin",
            exact: f64::sin,
            lo: 0.0,
            hi: 105615.0,
            signed: true,
            neg_hi: 0.0,
            bound: 1.5,
        },
        Func {
            name: "cos",
            exact: f64::cos,
            lo: 0.0,
            hi: 105615.0,
            signed: true,
            neg_hi: 0.0,
            bound: 1.5,
        },
        Func {
            name: "erf",
            exact: erf_f64,
            lo: 0.0,
            hi: 4.5,
            signed: true,
            neg_hi: 0.0,
            bound: 1.5,
        },
        Func {
            name: "log1p",
            exact: f64::ln_1p,
            lo: 0.0,
            hi: f32::MAX,
            signed: false,
            neg_hi: 0.999_999_94,
            bound: 1.0,
        },
        Func {
            name: "expm1",
            exact: f64::exp_m1,
            lo: 0.0,
            hi: 88.72,
            signed: false,
            neg_hi: 104.0,
            bound: 1.5,
        },
    ];
    let mut seed_rng = rand::rngs::StdRng::seed_from_u64(seed("gpu_math_function_ulp_errors"));
    let body = n - SPECIAL.len();
    let mut x = Vec::with_capacity(6 * n);
    for f in &funcs {
        let mut xs = if matches!(f.name, "sin" | "cos") {
            // half over [-105615, 105615] (Cody–Waite), half beyond
            // (Payne–Hanek), every binade up to f32::MAX
            let mut a = sweep(0.0, f.hi, body / 2, true);
            a.extend(sweep(f.hi, f32::MAX, body - body / 2, true));
            a
        } else if f.neg_hi > 0.0 {
            let mut a = sweep(f.lo, f.hi, body / 2, false);
            a.extend(
                sweep(0.0, f.neg_hi, body - body / 2, false)
                    .iter()
                    .map(|v| -v),
            );
            a
        } else {
            sweep(f.lo, f.hi, body, f.signed)
        };
        xs.extend_from_slice(SPECIAL);
        x.extend(xs);
    }
    // pow: row 5 holds the bases, `b` the exponents.
    let special_pow: &[(f32, f32)] = &[
        (NAN, 0.0),
        (NAN, -0.0),
        (1.0, NAN),
        (1.0, INF),
        (-1.0, INF),
        (-1.0, -INF),
        (NAN, 1.0),
        (2.0, NAN),
        (-2.0, 0.5),
        (0.0, -3.0),
        (-0.0, -3.0),
        (-0.0, -2.0),
        (0.0, -INF),
        (-0.0, 3.0),
        (-0.0, 2.0),
        (0.0, INF),
        (0.5, -INF),
        (2.0, -INF),
        (0.5, INF),
        (2.0, INF),
        (-INF, -3.0),
        (-INF, -2.0),
        (-INF, 3.0),
        (-INF, 0.5),
        (INF, -1.0),
        (INF, 0.5),
        (-2.0, 3.0),
        (2.0, 128.0),
        (2.0, -149.0),
        (2.0, -150.0),
        (TINY, 0.5),
    ];
    let mut bases = Vec::with_capacity(n);
    let mut exps = Vec::with_capacity(n);
    let pow_body = n - special_pow.len();
    let abase = sweep(TINY, f32::MAX, pow_body, false);
    for (i, &a) in abase.iter().enumerate() {
        let (a, b) = if i % 4 == 3 {
            // a negative base with an integer exponent
            (-a, seed_rng.random_range(-40i32..=40) as f32)
        } else {
            let e = 2f32.powf(seed_rng.random_range(-10.0f32..7.64));
            (a, if seed_rng.random::<bool>() { e } else { -e })
        };
        bases.push(a);
        exps.push(b);
    }
    for &(a, b) in special_pow {
        bases.push(a);
        exps.push(b);
    }
    x.extend(&bases);
    let bx = dev.upload(&x).unwrap();
    let bb = dev.upload(&exps).unwrap();
    let by = dev.upload(&vec![f32::NAN; 6 * n]).unwrap();
    dev.launch(
        &k,
        [n.div_ceil(1024) as u32, 1, 1],
        &[
            Arg::Buffer(&bx),
            Arg::Buffer(&bb),
            Arg::Buffer(&by),
            Arg::I32(n as i32),
        ],
    )
    .unwrap();
    let y = dev.download::<f32>(&by).unwrap();
    println!("| function | domain | max error (ulp) | at |");
    println!("|---|---|---|---|");
    let mut failures = Vec::new();
    let same = |g: f32, w: f32| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
    for (fi, f) in funcs.iter().enumerate() {
        let (mut worst, mut at) = (0f64, 0f32);
        for i in 0..n {
            let xi = x[fi * n + i];
            let got = y[fi * n + i];
            let want = (f.exact)(xi as f64);
            if i >= body {
                // special values: zeros, infinities, NaN and subnormals give
                // the f64 value rounded, bit for bit; others are within the
                // bound
                let exact = xi == 0.0 || !xi.is_finite() || xi.abs() < f32::MIN_POSITIVE;
                let ok = if exact {
                    same(got, want as f32)
                } else {
                    f32_ulp_error(got, want) <= f.bound
                };
                if !ok {
                    failures.push(format!(
                        "{}({xi:e}) = {got:e}, want {:e}",
                        f.name, want as f32
                    ));
                }
                continue;
            }
            let e = f32_ulp_error(got, want);
            if e > worst {
                (worst, at) = (e, xi);
            }
            if e > f.bound && failures.len() < 20 {
                failures.push(format!(
                    "{}({xi:e}) = {got:e}, want {want:e}: {e:.2} ulp > {}",
                    f.name, f.bound
                ));
            }
        }
        let dom = if matches!(f.name, "sin" | "cos") {
            "all finite x (half of the points in [-105615, 105615])".to_string()
        } else if f.neg_hi > 0.0 {
            format!("[-{:e}, {:e}]", f.neg_hi, f.hi)
        } else if f.signed {
            format!("[-{:e}, {:e}]", f.hi, f.hi)
        } else {
            format!("[{:e}, {:e}]", f.lo, f.hi)
        };
        println!("| {} | {dom} | {worst:.3} | x = {at:e} |", f.name);
    }
    let (mut worst, mut at) = (0f64, (0f32, 0f32));
    for i in 0..n {
        let (a, b) = (bases[i], exps[i]);
        let got = y[5 * n + i];
        let want = (a as f64).powf(b as f64);
        if i >= pow_body {
            if !same(got, want as f32) {
                failures.push(format!(
                    "pow({a:e}, {b:e}) = {got:e}, want {:e}",
                    want as f32
                ));
            }
            continue;
        }
        let e = f32_ulp_error(got, want);
        if e > worst {
            (worst, at) = (e, (a, b));
        }
        if e > 1.5 && failures.len() < 20 {
            failures.push(format!(
                "pow({a:e}, {b:e}) = {got:e}, want {want:e}: {e:.2} ulp > 1.5"
            ));
        }
    }
    println!(
        "| pow | a > 0 every binade, b in ±[2^-10, 200]; a < 0, b in -40..=40 | {worst:.3} | ({:e}, {:e}) |",
        at.0, at.1
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// bf16 in and out, every bf16 with 1e-3 ≤ |x| ≤ 3: computed in f32 and
/// rounded once, so the f64 value rounded to bf16 or (where the f32 result
/// and the exact value straddle a bf16 rounding boundary) its neighbour.
#[test]
fn gpu_math_functions_bf16() {
    use half::bf16;
    let Some(dev) = gpu_or_skip("gpu_math_functions_bf16") else {
        return;
    };
    let pack = pack_named("codegen-tests.tpack");
    let v = &pack.kernel("math_ext_bf16").unwrap().variants[0];
    let k = pack.load_kernel(&dev, "math_ext_bf16", &v.config).unwrap();
    let x: Vec<bf16> = (0u16..=u16::MAX)
        .map(bf16::from_bits)
        .filter(|v| v.to_f32().abs() <= 3.0 && v.to_f32().abs() >= 1e-3)
        .collect();
    let n = x.len();
    let bx = dev.upload(&x).unwrap();
    let by = dev.upload(&vec![bf16::NAN; 6 * n]).unwrap();
    dev.launch(
        &k,
        [n.div_ceil(1024) as u32, 1, 1],
        &[Arg::Buffer(&bx), Arg::Buffer(&by), Arg::I32(n as i32)],
    )
    .unwrap();
    let y = dev.download::<bf16>(&by).unwrap();
    type F = (&'static str, fn(f64) -> f64);
    let funcs: [F; 6] = [
        ("sin", f64::sin),
        ("cos", f64::cos),
        ("erf", erf_f64),
        ("log1p(|x|)", |v| v.abs().ln_1p()),
        ("expm1", f64::exp_m1),
        ("pow(|x|, x)", |v| v.abs().powf(v)),
    ];
    let mut bad = Vec::new();
    for (f, (name, exact)) in funcs.iter().enumerate() {
        for (i, &xv) in x.iter().enumerate() {
            let want = bf16::from_f64(exact(xv.to_f64()));
            let got = y[f * n + i];
            let ulps = (got.to_bits() as i32 - want.to_bits() as i32).abs();
            let ok = got == want || (got.to_f32().signum() == want.to_f32().signum() && ulps <= 1);
            if !ok && bad.len() < 10 {
                bad.push(format!("{name}({}) = {got}, want {want}", xv.to_f32()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
