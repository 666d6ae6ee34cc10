//! The interpreter's math functions beyond Rust's f32 ones: `sin cos erf
//! log1p expm1 pow` compute in f64 and round once to f32 (so they are
//! correctly rounded but for rare double-rounding cases); the GPU computes
//! its own f32 approximations within the bounds of docs/LANGUAGE.md ("Math
//! functions").

/// `sin(x)`, computed in f64.
pub fn sin(x: f32) -> f32 {
    (x as f64).sin() as f32
}

/// `cos(x)`, computed in f64.
pub fn cos(x: f32) -> f32 {
    (x as f64).cos() as f32
}

/// `ln(1 + x)`, computed in f64.
pub fn log1p(x: f32) -> f32 {
    (x as f64).ln_1p() as f32
}

/// `exp(x) - 1`, computed in f64.
pub fn expm1(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// `a` to the power `b`, computed in f64 (C's `pow`, whose special values
/// are those of `powf`: `pow(x, 0) == 1` and `pow(1, y) == 1` even for NaN,
/// a negative finite base with a finite non-integer exponent gives NaN,
/// `pow(±0, y < 0)` is +inf (±inf for odd integers), …).
pub fn pow(a: f32, b: f32) -> f32 {
    (a as f64).powf(b as f64) as f32
}

/// `erf(x)`, computed in f64.
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// The error function in f64, relative error below 1e-14 (a series of
/// positive terms, so no cancellation):
/// `erf(x) = 2/√π · e^(-x²) · Σ 2^n x^(2n+1) / (1·3·…·(2n+1))`; |x| ≥ 6
/// gives ±1 (erfc(6) ≈ 2e-17 is below half an ulp of 1).
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() >= 6.0 {
        return x.signum();
    }
    if x == 0.0 {
        return x; // keeps the sign of zero
    }
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    loop {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
        if term.abs() <= sum.abs() * 1e-17 {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// Error of `got` against the exact `want`, in ulp of f32 at `want`
/// (subnormal spacing below 2^-126): NaN is right only against NaN, an
/// infinity only where the exact value rounds to it (f32::MAX for a value
/// just beyond counts as one ulp). What the math functions' error tables
/// (LANGUAGE.md) are measured in, on the CPU emulation and on the GPU.
pub fn f32_ulp_error(got: f32, want: f64) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if got.is_infinite() || (want as f32).is_infinite() {
        return if got == want as f32 {
            0.0
        } else if got.abs() == f32::MAX {
            1.0
        } else {
            f64::INFINITY
        };
    }
    let e = want.abs().max(f32::MIN_POSITIVE as f64).log2().floor();
    (got as f64 - want).abs() / 2f64.powf(e - 23.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // mpmath's digits as printed (more than an f64 holds; the literal rounds).
    #[allow(clippy::excessive_precision)]
    fn erf_matches_reference_values() {
        // mpmath, 30 digits.
        let cases = [
            (1e-30, 1.1283791670955126e-30),
            (1e-3, 0.0011283787909692364),
            (0.1, 0.11246291601828489),
            (0.5, 0.52049987781304654),
            (1.0, 0.84270079294971487),
            (2.0, 0.99532226501895273),
            (3.0, 0.99997790950300141),
            (4.0, 0.9999999845827421),
            (5.5, 0.99999999999999264),
        ];
        for (x, want) in cases {
            for (x, want) in [(x, want), (-x, -want)] {
                let got = erf_f64(x);
                assert!(
                    ((got - want) / want).abs() < 1e-14,
                    "erf({x}) = {got}, want {want}"
                );
            }
        }
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
        assert!(erf_f64(f64::NAN).is_nan());
        assert!(erf_f64(-0.0).is_sign_negative());
    }
}
