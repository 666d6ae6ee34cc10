//! The interpreter's elementwise ops against straightforward Rust references
//! on fresh random inputs (seed printed; set TILE_TEST_SEED to replay) and
//! edge values: math functions within their ulp bounds, float and integer
//! arithmetic in every dtype, bf16 rounding, division and shifts with defined
//! results, comparisons, selects and every cast. Outputs are NaN-poisoned
//! first and checked element by element (masked-off tails must stay
//! poisoned).

mod common;

use common::*;
use half::{bf16, f16};
use rand::Rng;
use tile_interp::{self as interp, Buffer};
use tile_ir::{BinaryOp, CmpOp, Op, Scalar, UnaryOp};
use tile_testkit::assert_bits_eq;

/// The op in f64: the oracle the interpreter's f32 results are compared with
/// (not a copy of the interpreter's own f32 formulas).
fn unary_f64(op: UnaryOp, a: f64) -> f64 {
    match op {
        UnaryOp::Neg => -a,
        UnaryOp::Exp => a.exp(),
        UnaryOp::Exp2 => a.exp2(),
        UnaryOp::Log => a.ln(),
        UnaryOp::Sqrt => a.sqrt(),
        UnaryOp::Rsqrt => 1.0 / a.sqrt(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Tanh => a.tanh(),
        UnaryOp::Abs => a.abs(),
        UnaryOp::Sin => a.sin(),
        UnaryOp::Cos => a.cos(),
        // std has no erf: the interpreter's f64 series, checked against
        // mpmath in tile_interp::math's unit tests.
        UnaryOp::Erf => interp::math::erf_f64(a),
        UnaryOp::Log1p => a.ln_1p(),
        UnaryOp::Expm1 => a.exp_m1(),
        UnaryOp::Not => unreachable!(),
    }
}

/// How many ulps of the f32 result the interpreter may be from the f64 value
/// rounded to f32: 0 for the exact ops (neg, abs, and sqrt, which IEEE
/// requires correctly rounded); rsqrt is 1/sqrt, two roundings: 1; exp, exp2,
/// ln, tanh from Rust's libm are within 1 ulp of the exact value, so 2 of its
/// rounding; sigmoid = 1/(1 + exp(−x)): exp's ulp, the add and the division: 3.
/// `sin cos erf log1p expm1` compute in f64 and round once: 0 but for a
/// double rounding, 1.
fn unary_ulps(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt => 0,
        UnaryOp::Sin | UnaryOp::Cos | UnaryOp::Erf | UnaryOp::Log1p | UnaryOp::Expm1 => 1,
        UnaryOp::Rsqrt => 1,
        UnaryOp::Sigmoid => 3,
        _ => 2,
    }
}

/// Distance in representable values between two floats of `bits` width given
/// as their sign-magnitude encodings (so −0 and +0 are 0 apart; NaN is the
/// caller's business).
fn ulp_distance(a: u32, b: u32, bits: u32) -> u64 {
    let sign = 1u32 << (bits - 1);
    let ordered = |x: u32| -> i64 {
        if x & sign != 0 {
            -((x & !sign) as i64)
        } else {
            x as i64
        }
    };
    (ordered(a) - ordered(b)).unsigned_abs()
}

/// Every element of `got` within `ulps` of `want` (NaN only with NaN,
/// infinities equal); `bits` the element width, `to_bits` their encoding.
#[track_caller]
fn assert_ulps(
    what: &str,
    got: &[f32],
    want: &[f32],
    ulps: u32,
    bits: u32,
    to_bits: impl Fn(f32) -> u32,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else {
            ulp_distance(to_bits(g), to_bits(w), bits) <= ulps as u64
        };
        assert!(
            ok,
            "{what}: element {i}: got {g:e}, want {w:e} (≤ {ulps} ulps)"
        );
    }
}

const FLOAT_UNARY: &[UnaryOp] = &[
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Exp2,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Sigmoid,
    UnaryOp::Tanh,
    UnaryOp::Abs,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Erf,
    UnaryOp::Log1p,
    UnaryOp::Expm1,
];

/// The special values of `sin cos erf log1p expm1` (C99 Annex F), bit for
/// bit (signed zeros) on f32.
#[test]
fn math_function_special_values() {
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let tiny = f32::from_bits(1);
    let cases: &[(UnaryOp, f32, f32)] = &[
        (UnaryOp::Sin, 0.0, 0.0),
        (UnaryOp::Sin, -0.0, -0.0),
        (UnaryOp::Sin, inf, nan),
        (UnaryOp::Sin, -inf, nan),
        (UnaryOp::Sin, nan, nan),
        (UnaryOp::Sin, tiny, tiny),
        (UnaryOp::Sin, 1.0e30, -0.791_163_44),
        (UnaryOp::Cos, -0.0, 1.0),
        (UnaryOp::Cos, inf, nan),
        (UnaryOp::Cos, nan, nan),
        (UnaryOp::Erf, 0.0, 0.0),
        (UnaryOp::Erf, -0.0, -0.0),
        (UnaryOp::Erf, inf, 1.0),
        (UnaryOp::Erf, -inf, -1.0),
        (UnaryOp::Erf, nan, nan),
        (UnaryOp::Erf, 5.0, 1.0),
        (UnaryOp::Log1p, 0.0, 0.0),
        (UnaryOp::Log1p, -0.0, -0.0),
        (UnaryOp::Log1p, -1.0, -inf),
        (UnaryOp::Log1p, -2.0, nan),
        (UnaryOp::Log1p, -inf, nan),
        (UnaryOp::Log1p, inf, inf),
        (UnaryOp::Log1p, nan, nan),
        (UnaryOp::Log1p, -tiny, -tiny),
        (UnaryOp::Expm1, 0.0, 0.0),
        (UnaryOp::Expm1, -0.0, -0.0),
        (UnaryOp::Expm1, inf, inf),
        (UnaryOp::Expm1, -inf, -1.0),
        (UnaryOp::Expm1, nan, nan),
        (UnaryOp::Expm1, 89.0, inf),
        (UnaryOp::Expm1, tiny, tiny),
        (UnaryOp::Expm1, 1.0e-20, 1.0e-20),
    ];
    for &(op, x, want) in cases {
        let k = elementwise(&[Scalar::F32], Scalar::F32, 4, |b, v| b.unary(op, v[0]));
        let got = run_ew(&k, &[&Buffer::from_f32(&[x])], Scalar::F32, 1, 4).to_f32_vec()[0];
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{op:?}({x:e}) = {got:e}, want {want:e}"
        );
    }
}

/// `pow` against f64 `powf` (C's `pow`) on random and special operands, and
/// C's `powf` special values bit for bit.
#[test]
fn pow_values_and_special_cases() {
    let mut rng = tile_testkit::rng(seed());
    let n = 1000;
    let a: Vec<f32> = inputs(&mut rng, n);
    let mut b: Vec<f32> = inputs(&mut rng, n);
    b.reverse();
    let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::F32, 128, |bb, v| {
        bb.binary(BinaryOp::Pow, v[0], v[1])
    });
    let y = run_ew(
        &k,
        &[&Buffer::from_f32(&a), &Buffer::from_f32(&b)],
        Scalar::F32,
        n,
        128,
    );
    let want: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(&x, &e)| (x as f64).powf(e as f64) as f32)
        .collect();
    assert_ulps("pow f32", &y.to_f32_vec(), &want, 1, 32, f32::to_bits);
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let cases: &[(f32, f32, f32)] = &[
        (nan, 0.0, 1.0),
        (1.0, nan, 1.0),
        (-1.0, inf, 1.0),
        (-1.0, -inf, 1.0),
        (2.0, nan, nan),
        (-2.0, 0.5, nan),
        (-0.0, -3.0, -inf),
        (0.0, -2.0, inf),
        (-0.0, 3.0, -0.0),
        (-0.0, 2.0, 0.0),
        (0.5, -inf, inf),
        (2.0, -inf, 0.0),
        (-inf, -3.0, -0.0),
        (-inf, 3.0, -inf),
        (-inf, 0.5, inf),
        (-2.0, 3.0, -8.0),
        (2.0, 128.0, inf),
        (2.0, -149.0, f32::from_bits(1)),
    ];
    let (xa, xb, xw): (Vec<f32>, Vec<f32>, Vec<f32>) = (
        cases.iter().map(|c| c.0).collect(),
        cases.iter().map(|c| c.1).collect(),
        cases.iter().map(|c| c.2).collect(),
    );
    let y = run_ew(
        &k,
        &[&Buffer::from_f32(&xa), &Buffer::from_f32(&xb)],
        Scalar::F32,
        cases.len(),
        128,
    )
    .to_f32_vec();
    for (i, (&got, &want)) in y.iter().zip(&xw).enumerate() {
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "pow({:e}, {:e}) = {got:e}, want {want:e}",
            xa[i],
            xb[i]
        );
    }
}

#[test]
fn float_unary_ops_all_dtypes() {
    let mut rng = tile_testkit::rng(seed());
    let n = 1000;
    let x = inputs(&mut rng, n);
    for &op in FLOAT_UNARY {
        let ulps = unary_ulps(op);
        // f32: within a few ulps of the f64 value (edge values included:
        // infinities, NaN, subnormals, overflow and underflow of exp).
        let k = elementwise(&[Scalar::F32], Scalar::F32, 128, |b, v| b.unary(op, v[0]));
        let y = run_ew(&k, &[&Buffer::from_f32(&x)], Scalar::F32, n, 128);
        let want: Vec<f32> = x.iter().map(|&a| unary_f64(op, a as f64) as f32).collect();
        assert_ulps(
            &format!("{op:?} f32"),
            &y.to_f32_vec(),
            &want,
            ulps,
            32,
            f32::to_bits,
        );
        // bf16 / f16: computed in f32, rounded once more: the f32 result's
        // few ulps are far below half a 16-bit ulp, so the result is the f64
        // value rounded to the type, or (when the f32 value and the exact one
        // straddle a tie) its neighbour: 1 ulp; exact ops 0.
        let narrow = ulps.min(1);
        let xb: Vec<bf16> = x.iter().map(|&a| bf16::from_f32(a)).collect();
        let k = elementwise(&[Scalar::BF16], Scalar::BF16, 64, |b, v| b.unary(op, v[0]));
        let y = run_ew(&k, &[&Buffer::from_bf16(&xb)], Scalar::BF16, n, 64);
        let want: Vec<f32> = xb
            .iter()
            .map(|&a| bf16::from_f64(unary_f64(op, a.to_f64())).to_f32())
            .collect();
        assert_ulps(
            &format!("{op:?} bf16"),
            &y.to_f32_vec(),
            &want,
            narrow,
            16,
            |v| bf16::from_f32(v).to_bits() as u32,
        );
        let xh: Vec<f16> = x.iter().map(|&a| f16::from_f32(a)).collect();
        let k = elementwise(&[Scalar::F16], Scalar::F16, 256, |b, v| b.unary(op, v[0]));
        let y = run_ew(&k, &[&Buffer::from_f16(&xh)], Scalar::F16, n, 256);
        let want: Vec<f32> = xh
            .iter()
            .map(|&a| f16::from_f64(unary_f64(op, a.to_f64())).to_f32())
            .collect();
        assert_ulps(
            &format!("{op:?} f16"),
            &y.to_f32_vec(),
            &want,
            narrow,
            16,
            |v| f16::from_f32(v).to_bits() as u32,
        );
    }
}

#[test]
fn integer_unary_ops() {
    let mut rng = tile_testkit::rng(seed());
    let n = 777;
    let mut x: Vec<i32> = (0..n).map(|_| rng.random()).collect();
    x[..4].copy_from_slice(&[i32::MIN, i32::MAX, 0, -1]);
    for (op, f) in [
        (UnaryOp::Neg, (|a: i32| a.wrapping_neg()) as fn(i32) -> i32),
        (UnaryOp::Not, |a: i32| !a),
        (UnaryOp::Abs, |a: i32| a.wrapping_abs()),
    ] {
        let k = elementwise(&[Scalar::I32], Scalar::I32, 128, |b, v| b.unary(op, v[0]));
        let y = run_ew(&k, &[&Buffer::from_i32(&x)], Scalar::I32, n, 128);
        let want: Vec<i32> = x.iter().map(|&a| f(a)).collect();
        assert_eq!(y.to_i32_vec(), want, "{op:?} i32");
    }
    let x64: Vec<i64> = (0..n).map(|_| rng.random()).collect();
    let k = elementwise(&[Scalar::I64], Scalar::I64, 128, |b, v| {
        b.unary(UnaryOp::Neg, v[0])
    });
    let y = run_ew(&k, &[&Buffer::from_i64(&x64)], Scalar::I64, n, 128);
    assert_eq!(
        y.to_i64_vec(),
        x64.iter().map(|a| a.wrapping_neg()).collect::<Vec<_>>()
    );
}

fn float_binary_ref(op: BinaryOp, a: f32, b: f32) -> f32 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Rem => a % b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        _ => unreachable!(),
    }
}

const FLOAT_BINARY: &[BinaryOp] = &[
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
    BinaryOp::Max,
    BinaryOp::Min,
];

#[test]
fn float_binary_ops_all_dtypes() {
    let mut rng = tile_testkit::rng(seed());
    let n = 1500;
    let x = inputs(&mut rng, n);
    let mut y: Vec<f32> = inputs(&mut rng, n);
    y.reverse(); // edge values meet other edge values and random ones
    for &op in FLOAT_BINARY {
        let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::F32, 256, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_f32(&x), &Buffer::from_f32(&y)],
            Scalar::F32,
            n,
            256,
        );
        let want: Vec<f32> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| float_binary_ref(op, a, b))
            .collect();
        assert_bits_eq(&format!("{op:?} f32"), &r.to_f32_vec(), &want);

        let (xb, yb): (Vec<bf16>, Vec<bf16>) = (
            x.iter().map(|&a| bf16::from_f32(a)).collect(),
            y.iter().map(|&a| bf16::from_f32(a)).collect(),
        );
        let k = elementwise(&[Scalar::BF16, Scalar::BF16], Scalar::BF16, 128, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_bf16(&xb), &Buffer::from_bf16(&yb)],
            Scalar::BF16,
            n,
            128,
        );
        let want: Vec<f32> = xb
            .iter()
            .zip(&yb)
            .map(|(&a, &b)| bf16::from_f32(float_binary_ref(op, a.to_f32(), b.to_f32())).to_f32())
            .collect();
        assert_bits_eq(&format!("{op:?} bf16"), &r.to_f32_vec(), &want);

        let (xh, yh): (Vec<f16>, Vec<f16>) = (
            x.iter().map(|&a| f16::from_f32(a)).collect(),
            y.iter().map(|&a| f16::from_f32(a)).collect(),
        );
        let k = elementwise(&[Scalar::F16, Scalar::F16], Scalar::F16, 128, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_f16(&xh), &Buffer::from_f16(&yh)],
            Scalar::F16,
            n,
            128,
        );
        let want: Vec<f32> = xh
            .iter()
            .zip(&yh)
            .map(|(&a, &b)| f16::from_f32(float_binary_ref(op, a.to_f32(), b.to_f32())).to_f32())
            .collect();
        assert_bits_eq(&format!("{op:?} f16"), &r.to_f32_vec(), &want);
    }
}

#[test]
fn max_min_ignore_nan() {
    let x = [f32::NAN, 1.0, f32::NAN, -0.0, f32::NEG_INFINITY];
    let y = [2.0, f32::NAN, f32::NAN, 5.0, -3.0];
    let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::F32, 8, |b, v| {
        b.binary(BinaryOp::Max, v[0], v[1])
    });
    let r = run_ew(
        &k,
        &[&Buffer::from_f32(&x), &Buffer::from_f32(&y)],
        Scalar::F32,
        5,
        8,
    )
    .to_f32_vec();
    assert_eq!(r[0], 2.0);
    assert_eq!(r[1], 1.0);
    assert!(r[2].is_nan());
    assert_eq!(r[3], 5.0);
    assert_eq!(r[4], -3.0);
    let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::F32, 8, |b, v| {
        b.binary(BinaryOp::Min, v[0], v[1])
    });
    let r = run_ew(
        &k,
        &[&Buffer::from_f32(&x), &Buffer::from_f32(&y)],
        Scalar::F32,
        5,
        8,
    )
    .to_f32_vec();
    assert_eq!(&r[..2], &[2.0, 1.0]);
    assert_eq!(r[4], f32::NEG_INFINITY);
}

#[test]
fn bf16_rounds_ties_to_even() {
    // Every sum below is exact in f32 and lies exactly halfway between two bf16 values.
    let cases: &[(f32, f32, f32)] = &[
        (1.0, 1.0 / 256.0, 1.0),                       // 1 + 2^-8: tie → 1.0 (even)
        (1.0078125, 1.0 / 256.0, 1.015625),            // (1 + 2^-7) + 2^-8: tie → 1 + 2^-6 (even)
        (-1.0, -1.0 / 256.0, -1.0),                    // negative tie
        (256.0, 1.0, 256.0),                           // 257: tie between 256 and 258
        (258.0, 1.0, 260.0),                           // 259: tie between 258 and 260 → 260
        (1.0, 1.0 / 256.0 + 1.0 / 32768.0, 1.0078125), // just above the tie → up
    ];
    let xs: Vec<bf16> = cases.iter().map(|c| bf16::from_f32(c.0)).collect();
    let ys: Vec<bf16> = cases.iter().map(|c| bf16::from_f32(c.1)).collect();
    // the inputs must be exact bf16 values for the cases to mean anything
    for (c, (x, y)) in cases.iter().zip(xs.iter().zip(&ys)) {
        assert_eq!((x.to_f32(), y.to_f32()), (c.0, c.1));
    }
    let k = elementwise(&[Scalar::BF16, Scalar::BF16], Scalar::BF16, 8, |b, v| {
        b.add(v[0], v[1])
    });
    let r = run_ew(
        &k,
        &[&Buffer::from_bf16(&xs), &Buffer::from_bf16(&ys)],
        Scalar::BF16,
        cases.len(),
        8,
    );
    let want: Vec<f32> = cases.iter().map(|c| c.2).collect();
    assert_eq!(r.to_f32_vec(), want);
    // f32 → bf16 cast of a tie and of a value just above it
    let x = [
        1.0f32 + 1.0 / 256.0,
        f32::from_bits(0x3F80_8001),
        1.0 + 3.0 / 256.0,
        f32::MAX,
        3.3895314e38,
        -0.0,
        1e-40,
    ];
    let k = elementwise(&[Scalar::F32], Scalar::BF16, 8, |b, v| {
        b.cast(v[0], Scalar::BF16)
    });
    let r = run_ew(&k, &[&Buffer::from_f32(&x)], Scalar::BF16, x.len(), 8).to_bf16_vec();
    assert_eq!(r[0].to_f32(), 1.0);
    assert_eq!(r[1].to_f32(), 1.0078125);
    assert_eq!(r[2].to_f32(), 1.015625);
    assert_eq!(r[3].to_f32(), f32::INFINITY); // rounds up past the largest bf16
    assert_eq!(r[4].to_f32(), 3.3895314e38); // the largest bf16 itself
    assert_eq!(r[5].to_bits(), 0x8000); // -0.0 keeps its sign
    assert_eq!(r[6].to_f32(), bf16::from_f32(1e-40).to_f32()); // subnormal
    assert!(r[6].to_f32() > 0.0);
}

fn int_binary_ref_i32(op: BinaryOp, a: i32, b: i32) -> i32 {
    match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => a
            .checked_div(b)
            .unwrap_or(if b == 0 { -1 } else { a.wrapping_div(b) }),
        BinaryOp::Rem => a.checked_rem(b).unwrap_or(if b == 0 { a } else { 0 }),
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::And => a & b,
        BinaryOp::Or => a | b,
        BinaryOp::Xor => a ^ b,
        BinaryOp::Shl => {
            if (0..32).contains(&b) {
                a << b
            } else {
                0
            }
        }
        BinaryOp::Shr => {
            if (0..32).contains(&b) {
                a >> b
            } else if a < 0 {
                -1
            } else {
                0
            }
        }
        BinaryOp::Pow => unreachable!("pow is float-only"),
    }
}

const INT_BINARY: &[BinaryOp] = &[
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::And,
    BinaryOp::Or,
    BinaryOp::Xor,
    BinaryOp::Shl,
    BinaryOp::Shr,
];

#[test]
fn integer_binary_ops() {
    let mut rng = tile_testkit::rng(seed());
    let n = 999;
    let mut x: Vec<i32> = (0..n).map(|_| rng.random()).collect();
    let mut y: Vec<i32> = (0..n)
        .map(|_| {
            if rng.random() {
                rng.random_range(-40..40)
            } else {
                rng.random()
            }
        })
        .collect();
    x[..4].copy_from_slice(&[i32::MIN, i32::MIN, i32::MAX, -7]);
    y[..4].copy_from_slice(&[-1, 1, 2, 2]);
    for &op in INT_BINARY {
        let k = elementwise(&[Scalar::I32, Scalar::I32], Scalar::I32, 128, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_i32(&x), &Buffer::from_i32(&y)],
            Scalar::I32,
            n,
            128,
        );
        let want: Vec<i32> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| int_binary_ref_i32(op, a, b))
            .collect();
        assert_eq!(r.to_i32_vec(), want, "{op:?} i32");
    }
    // i64 with a few ops
    let x64: Vec<i64> = (0..n).map(|_| rng.random()).collect();
    let y64: Vec<i64> = (0..n)
        .map(|_| rng.random_range(1..1_000_000_000_000))
        .collect();
    for (op, f) in [
        (
            BinaryOp::Add,
            (|a: i64, b: i64| a.wrapping_add(b)) as fn(i64, i64) -> i64,
        ),
        (BinaryOp::Mul, |a, b| a.wrapping_mul(b)),
        (BinaryOp::Div, |a, b| a / b),
        (BinaryOp::Rem, |a, b| a % b),
        (BinaryOp::Shr, |a, b| a >> (b % 64)),
    ] {
        let yy: Vec<i64> = if op == BinaryOp::Shr {
            y64.iter().map(|b| b % 64).collect()
        } else {
            y64.clone()
        };
        let k = elementwise(&[Scalar::I64, Scalar::I64], Scalar::I64, 128, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_i64(&x64), &Buffer::from_i64(&yy)],
            Scalar::I64,
            n,
            128,
        );
        let want: Vec<i64> = x64.iter().zip(&yy).map(|(&a, &b)| f(a, b)).collect();
        assert_eq!(r.to_i64_vec(), want, "{op:?} i64");
    }
}

#[test]
fn integer_division_by_zero_has_defined_results() {
    // x / 0 == -1 and x % 0 == x (RISC-V semantics): masked-off lanes of a tile
    // routinely divide by the zero that a masked load returned.
    let x = vec![5i32, -5, 0, i32::MIN, i32::MIN, 7];
    let y = vec![0i32, 0, 0, 0, -1, -1];
    for (op, want) in [
        (BinaryOp::Div, [-1, -1, -1, -1, i32::MIN, -7]),
        (BinaryOp::Rem, [5, -5, 0, i32::MIN, 0, 0]),
    ] {
        let k = elementwise(&[Scalar::I32, Scalar::I32], Scalar::I32, 4, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_i32(&x), &Buffer::from_i32(&y)],
            Scalar::I32,
            6,
            4,
        );
        assert_eq!(r.to_i32_vec(), want, "{op:?}");
        let k = elementwise(&[Scalar::I64, Scalar::I64], Scalar::I64, 4, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let (x64, y64): (Vec<i64>, Vec<i64>) = (
            x.iter().map(|&a| a as i64).collect(),
            y.iter().map(|&a| a as i64).collect(),
        );
        let r = run_ew(
            &k,
            &[&Buffer::from_i64(&x64), &Buffer::from_i64(&y64)],
            Scalar::I64,
            6,
            4,
        );
        let want64: Vec<i64> = x64
            .iter()
            .zip(&y64)
            .map(|(&a, &b)| match (op, b) {
                (BinaryOp::Div, 0) => -1,
                (BinaryOp::Rem, 0) => a,
                (BinaryOp::Div, _) => a / b,
                _ => a % b,
            })
            .collect();
        assert_eq!(r.to_i64_vec(), want64, "{op:?} i64");
    }
}

#[test]
fn integer_shifts_out_of_range_have_defined_results() {
    // docs/LANGUAGE.md, "Integer and float semantics": the amount is read as
    // unsigned; ≥ the width gives 0 (`<<`) or the sign fill (`>>`). The GPU
    // code generator guards its shifts to give the same.
    let x = vec![5i32, -5, 1, -1, i32::MIN, 7, 3];
    let y = vec![32i32, 32, 40, 33, -1, 31, 0];
    for (op, want) in [
        (BinaryOp::Shl, [0, 0, 0, 0, 0, i32::MIN, 3]),
        (BinaryOp::Shr, [0, -1, 0, -1, -1, 0, 3]),
    ] {
        let k = elementwise(&[Scalar::I32, Scalar::I32], Scalar::I32, 8, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_i32(&x), &Buffer::from_i32(&y)],
            Scalar::I32,
            7,
            8,
        );
        assert_eq!(r.to_i32_vec(), want, "{op:?} i32");
    }
    let x = vec![5i64, -5, 1, i64::MIN, 3];
    let y = vec![64i64, 64, -1, 63, 32];
    for (op, want) in [
        (BinaryOp::Shl, [0, 0, 0, 0, 3 << 32]),
        (BinaryOp::Shr, [0, -1, 0, -1, 0]),
    ] {
        let k = elementwise(&[Scalar::I64, Scalar::I64], Scalar::I64, 8, |b, v| {
            b.binary(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_i64(&x), &Buffer::from_i64(&y)],
            Scalar::I64,
            5,
            8,
        );
        assert_eq!(r.to_i64_vec(), want, "{op:?} i64");
    }
}

#[test]
fn comparisons_and_select() {
    let mut rng = tile_testkit::rng(seed());
    let n = 600;
    let x = inputs(&mut rng, n);
    let mut y = inputs(&mut rng, n);
    y.reverse();
    for i in (0..n).step_by(7) {
        y[i] = x[i]; // equal pairs
    }
    for (op, f) in [
        (CmpOp::Eq, (|a: f32, b: f32| a == b) as fn(f32, f32) -> bool),
        (CmpOp::Ne, |a, b| a != b),
        (CmpOp::Lt, |a, b| a < b),
        (CmpOp::Le, |a, b| a <= b),
        (CmpOp::Gt, |a, b| a > b),
        (CmpOp::Ge, |a, b| a >= b),
    ] {
        // r = select(x op y, x, y) in f32, and the i1 stored through a cast to i32
        let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::F32, 128, |b, v| {
            let c = b.cmp(op, v[0], v[1]);
            let t = b.ty(v[0]);
            b.op(
                Op::Select {
                    cond: c,
                    a: v[0],
                    b: v[1],
                },
                t,
            )
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_f32(&x), &Buffer::from_f32(&y)],
            Scalar::F32,
            n,
            128,
        );
        let want: Vec<f32> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| if f(a, b) { a } else { b })
            .collect();
        assert_bits_eq(&format!("select {op:?}"), &r.to_f32_vec(), &want);
        let k = elementwise(&[Scalar::F32, Scalar::F32], Scalar::I1, 128, |b, v| {
            b.cmp(op, v[0], v[1])
        });
        let r = run_ew(
            &k,
            &[&Buffer::from_f32(&x), &Buffer::from_f32(&y)],
            Scalar::I1,
            n,
            128,
        );
        let want: Vec<bool> = x.iter().zip(&y).map(|(&a, &b)| f(a, b)).collect();
        assert_eq!(r.to_bool_vec(), want, "{op:?}");
    }
    // integer comparisons
    let xi: Vec<i32> = (0..n).map(|_| rng.random_range(-5..5)).collect();
    let yi: Vec<i32> = (0..n).map(|_| rng.random_range(-5..5)).collect();
    let k = elementwise(&[Scalar::I32, Scalar::I32], Scalar::I1, 64, |b, v| {
        b.cmp(CmpOp::Le, v[0], v[1])
    });
    let r = run_ew(
        &k,
        &[&Buffer::from_i32(&xi), &Buffer::from_i32(&yi)],
        Scalar::I1,
        n,
        64,
    );
    assert_eq!(
        r.to_bool_vec(),
        xi.iter().zip(&yi).map(|(a, b)| a <= b).collect::<Vec<_>>()
    );
}

/// Reference rounding of an f64 to bf16: the nearer of the two neighbours, ties to even.
fn ref_bf16(x: f64) -> f32 {
    // beyond the largest bf16 plus half an ulp (a tie, whose even neighbour is inf): overflow
    if x.abs() >= bf16::MAX.to_f64() + 2f64.powi(119) {
        return if x > 0.0 {
            f32::INFINITY
        } else {
            f32::NEG_INFINITY
        };
    }
    let b = bf16::from_f32(x as f32);
    let mut best = b;
    for bits in [
        b.to_bits().wrapping_sub(1),
        b.to_bits(),
        b.to_bits().wrapping_add(1),
    ] {
        let c = bf16::from_bits(bits);
        let (dc, db) = ((c.to_f64() - x).abs(), (best.to_f64() - x).abs());
        if dc < db || (dc == db && bits % 2 == 0) {
            best = c;
        }
    }
    best.to_f32()
}

#[test]
fn casts_between_every_pair() {
    let mut rng = tile_testkit::rng(seed());
    let n = 700;
    let mut x = inputs(&mut rng, n);
    for v in x.iter_mut().take(200) {
        *v *= 1e6; // beyond i32 precision in f32, and saturation
    }
    // float sources
    let src_f32 = Buffer::from_f32(&x);
    let to_i32 = run_cast(&src_f32, Scalar::F32, Scalar::I32, n);
    assert_eq!(
        to_i32.to_i32_vec(),
        x.iter().map(|&a| a as i32).collect::<Vec<_>>()
    );
    assert!(x
        .iter()
        .zip(to_i32.to_i32_vec())
        .any(|(a, b)| a.is_nan() && b == 0));
    let to_i64 = run_cast(&src_f32, Scalar::F32, Scalar::I64, n);
    assert_eq!(
        to_i64.to_i64_vec(),
        x.iter().map(|&a| a as i64).collect::<Vec<_>>()
    );
    let to_i1 = run_cast(&src_f32, Scalar::F32, Scalar::I1, n);
    assert_eq!(
        to_i1.to_bool_vec(),
        x.iter().map(|&a| a != 0.0).collect::<Vec<_>>()
    );
    let to_bf = run_cast(&src_f32, Scalar::F32, Scalar::BF16, n);
    assert_bits_eq(
        "f32→bf16",
        &to_bf.to_f32_vec(),
        &x.iter()
            .map(|&a| bf16::from_f32(a).to_f32())
            .collect::<Vec<_>>(),
    );
    assert_bits_eq(
        "f32→bf16 vs f64 reference",
        &to_bf.to_f32_vec(),
        &x.iter()
            .map(|&a| if a.is_nan() { a } else { ref_bf16(a as f64) })
            .collect::<Vec<_>>(),
    );
    let to_h = run_cast(&src_f32, Scalar::F32, Scalar::F16, n);
    assert_bits_eq(
        "f32→f16",
        &to_h.to_f32_vec(),
        &x.iter()
            .map(|&a| f16::from_f32(a).to_f32())
            .collect::<Vec<_>>(),
    );
    // bf16 → f16 → f32 round trip rounds once per cast
    let xb: Vec<bf16> = x.iter().map(|&a| bf16::from_f32(a)).collect();
    let k = elementwise(&[Scalar::BF16], Scalar::F16, 64, |b, v| {
        b.cast(v[0], Scalar::F16)
    });
    let r = run_ew(&k, &[&Buffer::from_bf16(&xb)], Scalar::F16, n, 64);
    assert_bits_eq(
        "bf16→f16",
        &r.to_f32_vec(),
        &xb.iter()
            .map(|a| f16::from_f32(a.to_f32()).to_f32())
            .collect::<Vec<_>>(),
    );
    let k = elementwise(&[Scalar::BF16], Scalar::I32, 64, |b, v| {
        b.cast(v[0], Scalar::I32)
    });
    let r = run_ew(&k, &[&Buffer::from_bf16(&xb)], Scalar::I32, n, 64);
    assert_eq!(
        r.to_i32_vec(),
        xb.iter().map(|a| a.to_f32() as i32).collect::<Vec<_>>()
    );

    // integer sources, including values whose f32 rounding would double-round to bf16
    let mut xi: Vec<i32> = (0..n).map(|_| rng.random()).collect();
    xi[..6].copy_from_slice(&[16842753, 257, 259, -16842753, i32::MIN, i32::MAX]);
    let src = Buffer::from_i32(&xi);
    let r = run_cast(&src, Scalar::I32, Scalar::BF16, n);
    let want: Vec<f32> = xi.iter().map(|&a| ref_bf16(a as f64)).collect();
    assert_bits_eq("i32→bf16", &r.to_f32_vec(), &want);
    assert_eq!(r.to_f32_vec()[0], 16908288.0);
    let r = run_cast(&src, Scalar::I32, Scalar::F32, n);
    assert_bits_eq(
        "i32→f32",
        &r.to_f32_vec(),
        &xi.iter().map(|&a| a as f32).collect::<Vec<_>>(),
    );
    let r = run_cast(&src, Scalar::I32, Scalar::I64, n);
    assert_eq!(
        r.to_i64_vec(),
        xi.iter().map(|&a| a as i64).collect::<Vec<_>>()
    );
    let r = run_cast(&src, Scalar::I32, Scalar::I1, n);
    assert_eq!(
        r.to_bool_vec(),
        xi.iter().map(|&a| a != 0).collect::<Vec<_>>()
    );
    let x64: Vec<i64> = (0..n).map(|_| rng.random()).collect();
    let r = run_ew(
        &elementwise(&[Scalar::I64], Scalar::I32, 128, |b, v| {
            b.cast(v[0], Scalar::I32)
        }),
        &[&Buffer::from_i64(&x64)],
        Scalar::I32,
        n,
        128,
    );
    assert_eq!(
        r.to_i32_vec(),
        x64.iter().map(|&a| a as i32).collect::<Vec<_>>()
    );
    // i1 → numbers
    let xb1: Vec<bool> = (0..n).map(|_| rng.random()).collect();
    let r = run_ew(
        &elementwise(&[Scalar::I1], Scalar::BF16, 128, |b, v| {
            b.cast(v[0], Scalar::BF16)
        }),
        &[&Buffer::from_bool(&xb1)],
        Scalar::BF16,
        n,
        128,
    );
    assert_eq!(
        r.to_f32_vec(),
        xb1.iter().map(|&a| a as u8 as f32).collect::<Vec<_>>()
    );
}

/// `fma(a, b, c)`: `a · b + c` rounded once. The oracle is f64: the product
/// of two f32 values is exact in f64 (48 bits), so `a·b + c` in f64 is off
/// the exact value by one f64 rounding, and rounding that to f32 gives the
/// correctly rounded f32 result but for a double rounding (checked within 1
/// ulp); the edge case `(1 + 2^-12)² − (1 + 2^-11)` must be exactly 2^-24,
/// where a rounded product gives 0. In bf16 the f32 result is rounded once
/// more to bf16 (as every 16-bit op: computed in f32).
#[test]
fn fma_rounds_once() {
    let mut rng = tile_testkit::rng(seed());
    let n = 600;
    let mut a = inputs(&mut rng, n);
    let mut b = inputs(&mut rng, n);
    let mut c = inputs(&mut rng, n);
    let e = 1.0 + 2f32.powi(-12);
    (a[0], b[0], c[0]) = (e, e, -(1.0 + 2f32.powi(-11)));
    let fma_kernel = |s: Scalar| {
        elementwise(&[s, s, s], s, 128, |bl, v| {
            let t = bl.ty(v[0]);
            bl.op(
                Op::Fma {
                    a: v[0],
                    b: v[1],
                    c: v[2],
                },
                t,
            )
        })
    };
    let k = fma_kernel(Scalar::F32);
    let bufs = [
        Buffer::from_f32(&a),
        Buffer::from_f32(&b),
        Buffer::from_f32(&c),
    ];
    let got = run_ew(&k, &[&bufs[0], &bufs[1], &bufs[2]], Scalar::F32, n, 128).to_f32_vec();
    assert_eq!(got[0], 2f32.powi(-24), "fma rounded the product");
    for i in 0..n {
        let want = (a[i] as f64 * b[i] as f64 + c[i] as f64) as f32;
        let ulp = f32::EPSILON * want.abs().max(f32::MIN_POSITIVE);
        let same = got[i] == want || (got[i].is_nan() && want.is_nan());
        assert!(
            same || (got[i] - want).abs() <= ulp,
            "fma f32 [{i}]: {} * {} + {}: got {}, want {want}",
            a[i],
            b[i],
            c[i],
            got[i]
        );
    }
    // bf16: the operands rounded to bf16 first, the f32 fma, then bf16.
    let (ab, bb, cb): (Vec<bf16>, Vec<bf16>, Vec<bf16>) = (
        a.iter().map(|&x| bf16::from_f32(x)).collect(),
        b.iter().map(|&x| bf16::from_f32(x)).collect(),
        c.iter().map(|&x| bf16::from_f32(x)).collect(),
    );
    let k = fma_kernel(Scalar::BF16);
    let bufs = [
        Buffer::from_bf16(&ab),
        Buffer::from_bf16(&bb),
        Buffer::from_bf16(&cb),
    ];
    let got = run_ew(&k, &[&bufs[0], &bufs[1], &bufs[2]], Scalar::BF16, n, 128).to_f32_vec();
    let want: Vec<f32> = (0..n)
        .map(|i| bf16::from_f32(ab[i].to_f32().mul_add(bb[i].to_f32(), cb[i].to_f32())).to_f32())
        .collect();
    assert_bits_eq("fma bf16", &got, &want);
}
