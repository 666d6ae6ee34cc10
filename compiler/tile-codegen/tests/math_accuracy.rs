//! The f32 math functions of `tile_codegen::math` (what the GPU computes, bit
//! for bit, through `math::cpu`) against f64 references: maximum error in
//! ulp over a sweep of each documented domain, and the special values.
//! docs/LANGUAGE.md ("Math functions") lists the bounds asserted here;
//! `tests/integration-tests/tests/gpu_math.rs` measures the same on the GPU.
//! `TILE_MATH_SWEEP=<log2 points>` makes the sweep denser (default 2^16).

use tile_codegen::math::cpu;
use tile_interp::math::{erf_f64, f32_ulp_error};

fn points() -> u32 {
    std::env::var("TILE_MATH_SWEEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

/// `n` f32 values evenly spaced in bit pattern over [lo, hi] (both ≥ 0),
/// with both signs when `signed`.
fn sweep(lo: f32, hi: f32, n: u32, signed: bool) -> Vec<f32> {
    let (a, b) = (lo.to_bits() as u64, hi.to_bits() as u64);
    let mut v = Vec::new();
    for i in 0..n as u64 {
        let x = f32::from_bits((a + (b - a) * i / (n as u64 - 1)) as u32);
        v.push(x);
        if signed {
            v.push(-x);
        }
    }
    v
}

fn worst(name: &str, xs: &[f32], f: fn(f32) -> f32, r: fn(f64) -> f64) -> (f64, f32) {
    let mut w = (0.0, 0.0);
    for &x in xs {
        let e = f32_ulp_error(f(x), r(x as f64));
        if e > w.0 {
            w = (e, x);
        }
    }
    println!("{name:6} max {:.3} ulp at x = {:e}", w.0, w.1);
    w
}

#[test]
fn sin_cos_within_bound() {
    let n = 1 << points();
    let mut xs = sweep(0.0, 105615.0, n, true);
    // Near multiples of π/2, where the reduction cancels.
    for k in (1..67_000).step_by(7) {
        let x = (k as f64 * std::f64::consts::FRAC_PI_2) as f32;
        xs.extend([
            x,
            f32::from_bits(x.to_bits() + 1),
            f32::from_bits(x.to_bits() - 1),
        ]);
    }
    let (s, _) = worst("sin", &xs, cpu::sin, f64::sin);
    let (c, _) = worst("cos", &xs, cpu::cos, f64::cos);
    assert!(s <= 1.5, "sin: {s} ulp");
    assert!(c <= 1.5, "cos: {c} ulp");
}

#[test]
fn erf_within_bound() {
    let xs = sweep(0.0, 4.5, 1 << points(), true);
    let (e, _) = worst("erf", &xs, cpu::erf, erf_f64);
    assert!(e <= 1.5, "erf: {e} ulp");
}

#[test]
fn log1p_within_bound() {
    let mut xs = sweep(0.0, f32::MAX, 1 << points(), false);
    xs.extend(
        sweep(0.0, 0.999_999_94, 1 << points(), false)
            .iter()
            .map(|x| -x),
    );
    let (e, _) = worst("log1p", &xs, cpu::log1p, f64::ln_1p);
    assert!(e <= 1.0, "log1p: {e} ulp");
}

#[test]
fn expm1_within_bound() {
    let mut xs = sweep(0.0, 88.72, 1 << points(), false);
    xs.extend(sweep(0.0, 104.0, 1 << points(), false).iter().map(|x| -x));
    let (e, _) = worst("expm1", &xs, cpu::expm1, f64::exp_m1);
    assert!(e <= 1.5, "expm1: {e} ulp");
}

#[test]
fn pow_within_bound() {
    // a over every binade, b over ±[2^-10, 200] (results far beyond the
    // range are exact zeros and infinities), and negative bases with
    // integer exponents.
    let n = 1 << (points() / 2 + 1);
    let aa = sweep(f32::from_bits(1), f32::MAX, n, false);
    let mut bb = sweep(1.0 / 1024.0, 200.0, n / 2, true);
    bb.extend((-40..=40).map(|i| i as f32));
    // bases next to 1 with large exponents, tiny exponents
    let mut aa = aa;
    for k in 1..200u32 {
        aa.push(f32::from_bits(1.0f32.to_bits() + k * 997));
        aa.push(f32::from_bits(1.0f32.to_bits() - k * 997));
    }
    bb.extend(sweep(200.0, 1.0e9, n / 4, true));
    bb.extend(sweep(1.0e-30, 1.0 / 1024.0, n / 8, true));
    let mut w = (0.0f64, 0.0f32, 0.0f32);
    for &a in &aa {
        for &b in &bb {
            for a in [a, -a] {
                if a < 0.0 && b.fract() != 0.0 {
                    continue;
                }
                let e = f32_ulp_error(cpu::pow(a, b), (a as f64).powf(b as f64));
                if e > w.0 {
                    w = (e, a, b);
                }
            }
        }
    }
    println!("pow    max {:.3} ulp at ({:e}, {:e})", w.0, w.1, w.2);
    assert!(w.0 <= 1.5, "pow: {} ulp at ({:e}, {:e})", w.0, w.1, w.2);
}

fn same(got: f32, want: f32) -> bool {
    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
}

#[test]
fn special_values() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let tiny = f32::from_bits(1);
    type Cases<'a> = (&'a str, fn(f32) -> f32, &'a [(f32, f32)]);
    let unary: [Cases; 5] = [
        (
            "sin",
            cpu::sin,
            &[
                (0.0, 0.0),
                (-0.0, -0.0),
                (inf, nan),
                (-inf, nan),
                (nan, nan),
                (tiny, tiny),
                (-tiny, -tiny),
            ],
        ),
        (
            "cos",
            cpu::cos,
            &[
                (0.0, 1.0),
                (-0.0, 1.0),
                (inf, nan),
                (-inf, nan),
                (nan, nan),
                (tiny, 1.0),
            ],
        ),
        (
            "erf",
            cpu::erf,
            &[
                (0.0, 0.0),
                (-0.0, -0.0),
                (inf, 1.0),
                (-inf, -1.0),
                (nan, nan),
                (tiny, 0.0f32.max(tiny * 1.0)),
                (10.0, 1.0),
                (-10.0, -1.0),
            ],
        ),
        (
            "log1p",
            cpu::log1p,
            &[
                (0.0, 0.0),
                (-0.0, -0.0),
                (inf, inf),
                (-inf, nan),
                (nan, nan),
                (-1.0, -inf),
                (-2.0, nan),
                (tiny, tiny),
                (-tiny, -tiny),
                (f32::MAX, 88.72284),
            ],
        ),
        (
            "expm1",
            cpu::expm1,
            &[
                (0.0, 0.0),
                (-0.0, -0.0),
                (inf, inf),
                (-inf, -1.0),
                (nan, nan),
                (tiny, tiny),
                (-tiny, -tiny),
                (89.0, inf),
                (-200.0, -1.0),
            ],
        ),
    ];
    for (name, f, cases) in unary {
        for &(x, want) in cases {
            // erf of the smallest subnormal is 2/√π·2^-149 → 2^-149 (x itself)
            let want = if name == "erf" && x == tiny {
                tiny
            } else {
                want
            };
            assert!(
                same(f(x), want),
                "{name}({x:e}) = {:e}, want {want:e}",
                f(x)
            );
        }
    }
    // C99 F.9.4.4 (powf).
    let pow_cases: &[(f32, f32, f32)] = &[
        (nan, 0.0, 1.0),
        (nan, -0.0, 1.0),
        (1.0, nan, 1.0),
        (1.0, inf, 1.0),
        (-1.0, inf, 1.0),
        (-1.0, -inf, 1.0),
        (nan, 1.0, nan),
        (2.0, nan, nan),
        (-1.0, nan, nan),
        (-2.0, 0.5, nan),
        (-8.0, 1.0 / 3.0, nan),
        (0.0, -3.0, inf),
        (-0.0, -3.0, -inf),
        (0.0, -2.0, inf),
        (-0.0, -2.0, inf),
        (-0.0, -0.5, inf),
        (0.0, -inf, inf),
        (-0.0, -inf, inf),
        (0.0, 3.0, 0.0),
        (-0.0, 3.0, -0.0),
        (-0.0, 2.0, 0.0),
        (-0.0, 0.5, 0.0),
        (0.0, inf, 0.0),
        (0.5, -inf, inf),
        (2.0, -inf, 0.0),
        (0.5, inf, 0.0),
        (2.0, inf, inf),
        (-0.5, inf, 0.0),
        (-2.0, inf, inf),
        (-inf, -3.0, -0.0),
        (-inf, -2.0, 0.0),
        (-inf, -0.5, 0.0),
        (-inf, 3.0, -inf),
        (-inf, 2.0, inf),
        (-inf, 0.5, inf),
        (inf, -1.0, 0.0),
        (inf, 0.5, inf),
        (-2.0, 3.0, -8.0),
        (-2.0, 2.0, 4.0),
        (2.0, 0.5, std::f32::consts::SQRT_2),
        (2.0, 128.0, inf),
        (2.0, -149.0, tiny),
        (2.0, -150.0, 0.0),
        (-2.0, -149.0, -tiny),
        (tiny, 1.0, tiny),
        (tiny, 0.5, 3.743_392e-23),
        (3.0, 1e10, inf),
        (-3.0, 1e10, inf),
        (-3.0, -1e10, 0.0),
        (-1.0, 16777217.0, 1.0),
    ];
    for &(a, b, want) in pow_cases {
        let got = cpu::pow(a, b);
        assert!(
            same(got, want),
            "pow({a:e}, {b:e}) = {got:e}, want {want:e}"
        );
    }
}

/// Beyond 105615 (Payne–Hanek): every binade up to f32::MAX, and the f32
/// values closest to multiples of π/2 known to be hard (x = 16367173·2^72
/// and others are in the sweep's neighbourhood).
#[test]
fn sin_cos_large_arguments() {
    let mut xs = sweep(105616.0, f32::MAX, 1 << points(), true);
    xs.extend([
        1.0e30,
        -1.0e30,
        f32::MAX,
        -f32::MAX,
        1.6367173e7 * 2f32.powi(72),
        2.0f32.powi(100),
        3.0e38,
        123456.79,
    ]);
    let (s, _) = worst("sin", &xs, cpu::sin, f64::sin);
    let (c, _) = worst("cos", &xs, cpu::cos, f64::cos);
    assert!(s <= 1.5, "sin: {s} ulp");
    assert!(c <= 1.5, "cos: {c} ulp");
}

/// What gpu_math.rs's bf16 test asserts, on the CPU: every bf16 with
/// 1e-3 ≤ |x| ≤ 3 through the f32 code, rounded to bf16, is the f64 value
/// rounded to bf16 or its neighbour.
#[test]
fn bf16_results_within_one_bf16_ulp() {
    use half::bf16;
    type F = (&'static str, fn(f32) -> f32, fn(f64) -> f64);
    let funcs: [F; 6] = [
        ("sin", cpu::sin, f64::sin),
        ("cos", cpu::cos, f64::cos),
        ("erf", cpu::erf, erf_f64),
        ("log1p(|x|)", |v| cpu::log1p(v.abs()), |v| v.abs().ln_1p()),
        ("expm1", cpu::expm1, f64::exp_m1),
        ("pow(|x|, x)", |v| cpu::pow(v.abs(), v), |v| v.abs().powf(v)),
    ];
    for (name, f, exact) in funcs {
        for b in 0u16..=u16::MAX {
            let x = bf16::from_bits(b).to_f32();
            if !(1e-3..=3.0).contains(&x.abs()) {
                continue;
            }
            let got = bf16::from_f32(f(x));
            let want = bf16::from_f64(exact(x as f64));
            let ulps = (got.to_bits() as i32 - want.to_bits() as i32).abs();
            assert!(
                got == want || (got.to_f32().signum() == want.to_f32().signum() && ulps <= 1),
                "{name}({x}) = {got}, want {want}"
            );
        }
    }
}

/// Float `%` is C's `fmodf`, which is exact: `math::fmod` must equal Rust's
/// `%` (the interpreter's, also exact) bit for bit — on the extreme pairs
/// (largest over the smallest subnormal: the longest division), the special
/// values, and 2^k random bit patterns over every exponent, subnormals,
/// infinities and NaN included (`TILE_MATH_SWEEP`, default 2^16 → 2^20 pairs).
#[test]
fn fmod_is_exact() {
    let (inf, nan, tiny, max) = (f32::INFINITY, f32::NAN, f32::from_bits(1), f32::MAX);
    let mut pairs = vec![
        (max, tiny),
        (max, f32::MIN_POSITIVE),
        (tiny, max),
        (max, 3.0),
        (max, 1.0 + f32::EPSILON),
        (16_777_217.0, 1.0),
        (7.0, 7.0),
        (21.0, 7.0),
        (-21.0, 7.0),
        (5.5, -2.0),
        (-5.5, 2.0),
        (0.0, 2.0),
        (-0.0, 2.0),
        (3.0, 0.0),
        (3.0, -0.0),
        (inf, 2.0),
        (-inf, 2.0),
        (3.0, inf),
        (-3.0, -inf),
        (inf, inf),
        (nan, 2.0),
        (2.0, nan),
        (0.1, 0.01),
        (1e-40, 3e-42),
        (f32::MIN_POSITIVE, tiny),
    ];
    // xorshift64*: every bit pattern is as likely, so every exponent gap is met.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    };
    for _ in 0..(1u64 << (points() + 4)) {
        pairs.push((f32::from_bits(next()), f32::from_bits(next())));
    }
    let mut bad = Vec::new();
    for &(x, y) in &pairs {
        let (got, want) = (cpu::fmod(x, y), x % y);
        if !same(got, want) {
            bad.push(format!("{x:e} % {y:e}: got {got:e}, want {want:e}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} wrong, e.g.\n{}",
        bad.len(),
        pairs.len(),
        bad[..bad.len().min(8)].join("\n")
    );
}
