//! Compile-time evaluation of scalar ops: the IR's constant semantics, shared by
//! the checker (meta-parameter arithmetic) and the passes (folding, unrolling).
//! Results match the interpreter: integers wrap at their width, floats round to
//! their type after each op.

use crate::{BinaryOp, CmpOp, Const, Scalar, UnaryOp};

/// Bring a constant into the canonical form of type `s` (wrap ints, round floats).
pub fn normalize(c: Const, s: Scalar) -> Const {
    match s {
        Scalar::I1 => Const::Bool(truthy(c)),
        Scalar::I32 => Const::Int(as_i64(c) as i32 as i64),
        Scalar::I64 => Const::Int(as_i64(c)),
        Scalar::F32 => Const::Float(odd_f64(c) as f32 as f64),
        Scalar::F16 => Const::Float(half::f16::from_f32(f64_to_f32_odd(odd_f64(c))).to_f64()),
        Scalar::BF16 => Const::Float(half::bf16::from_f32(f64_to_f32_odd(odd_f64(c))).to_f64()),
    }
}

/// The constant as an f64, an integer beyond 2^53 rounded to odd; with
/// [`f64_to_f32_odd`] the conversion to a float type rounds once to nearest
/// even, like the interpreter's casts (`as f64` first would round twice:
/// `2^60 + 2^36 + 1` as f32 gave 2^60 instead of `2^60 + 2^37`).
fn odd_f64(c: Const) -> f64 {
    match c {
        Const::Int(x) => i64_to_f64_odd(x),
        c => as_f64(c),
    }
}

/// An i64 as f64 rounded to odd (exact up to 2^53): with [`f64_to_f32_odd`]
/// after it, one rounding to nearest even to f32, bf16 or f16 is the only
/// one (`x as f64` alone rounds to nearest first). Shared with the
/// interpreter, so folding and run time round alike.
pub fn i64_to_f64_odd(x: i64) -> f64 {
    let r = x as f64;
    let back = r as i128; // exact: |r| ≤ 2^63
    if back == x as i128 {
        return r;
    }
    let mut bits = r.to_bits();
    if back.abs() > (x as i128).abs() {
        bits -= 1; // step toward zero (sign-magnitude)
    }
    f64::from_bits(bits | 1)
}

/// f64 → f32 rounded to odd, so that f32 → f16/bf16 (nearest even) is one
/// correct rounding of the f64 (`half`'s `from_f64` ignores the low 32
/// significand bits of a bf16 tie).
pub fn f64_to_f32_odd(x: f64) -> f32 {
    let r = x as f32;
    if !x.is_finite() || r as f64 == x {
        return r;
    }
    let mut bits = r.to_bits();
    if (r as f64).abs() > x.abs() {
        bits -= 1; // step toward zero; inf → MAX
    }
    f32::from_bits(bits | 1)
}

fn truthy(c: Const) -> bool {
    match c {
        Const::Bool(b) => b,
        Const::Int(v) => v != 0,
        Const::Float(v) => v != 0.0,
    }
}

/// Integer view: floats truncate toward zero, saturating, NaN → 0 (Rust `as`).
pub fn as_i64(c: Const) -> i64 {
    match c {
        Const::Bool(b) => b as i64,
        Const::Int(v) => v,
        Const::Float(v) => v as i64,
    }
}

pub fn as_f64(c: Const) -> f64 {
    match c {
        Const::Bool(b) => b as i64 as f64,
        Const::Int(v) => v as f64,
        Const::Float(v) => v,
    }
}

/// `Cast` of a constant from `from` to `to`.
pub fn cast(c: Const, from: Scalar, to: Scalar) -> Const {
    if from.is_float() && to.is_int() && to != Scalar::I1 {
        // Float → int truncates toward zero and saturates at the target's range.
        let v = as_f64(c);
        return Const::Int(match to {
            Scalar::I32 => v as i32 as i64,
            _ => v as i64,
        });
    }
    normalize(c, to)
}

/// A unary op on a constant of type `s`; `None` when not foldable.
pub fn unary(op: UnaryOp, c: Const, s: Scalar) -> Option<Const> {
    if s.is_int() {
        let v = as_i64(c);
        let r = match op {
            UnaryOp::Neg => v.wrapping_neg(),
            UnaryOp::Not if s == Scalar::I1 => return Some(Const::Bool(!truthy(c))),
            UnaryOp::Not => !v,
            UnaryOp::Abs => v.wrapping_abs(),
            _ => return None,
        };
        return Some(normalize(Const::Int(r), s));
    }
    let x = as_f64(c);
    // Evaluate in f32 like the interpreter, then round to the type.
    let xf = x as f32;
    let r = match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => xf.exp() as f64,
        UnaryOp::Exp2 => xf.exp2() as f64,
        UnaryOp::Log => xf.ln() as f64,
        UnaryOp::Sqrt => xf.sqrt() as f64,
        UnaryOp::Rsqrt => (1.0 / xf.sqrt()) as f64,
        UnaryOp::Sigmoid => (1.0 / (1.0 + (-xf).exp())) as f64,
        UnaryOp::Tanh => xf.tanh() as f64,
        // Not folded: computed where the kernel runs (docs/LANGUAGE.md, "Math functions").
        UnaryOp::Not
        | UnaryOp::Sin
        | UnaryOp::Cos
        | UnaryOp::Erf
        | UnaryOp::Log1p
        | UnaryOp::Expm1 => return None,
    };
    Some(normalize(Const::Float(r), s))
}

/// A binary op on constants of type `s`; `None` when not foldable (division by zero,
/// shifts out of range).
pub fn binary(op: BinaryOp, a: Const, b: Const, s: Scalar) -> Option<Const> {
    if s.is_int() {
        let (x, y) = (as_i64(a), as_i64(b));
        let bits = if s == Scalar::I32 { 32 } else { 64 };
        let r = match op {
            BinaryOp::Add => x.wrapping_add(y),
            BinaryOp::Sub => x.wrapping_sub(y),
            BinaryOp::Mul => x.wrapping_mul(y),
            BinaryOp::Div if y == 0 => return None,
            BinaryOp::Div => {
                if s == Scalar::I32 {
                    (x as i32).wrapping_div(y as i32) as i64
                } else {
                    x.wrapping_div(y)
                }
            }
            BinaryOp::Rem if y == 0 => return None,
            BinaryOp::Rem => {
                if s == Scalar::I32 {
                    (x as i32).wrapping_rem(y as i32) as i64
                } else {
                    x.wrapping_rem(y)
                }
            }
            BinaryOp::Max => x.max(y),
            BinaryOp::Min => x.min(y),
            BinaryOp::And => x & y,
            BinaryOp::Or => x | y,
            BinaryOp::Xor => x ^ y,
            BinaryOp::Shl if !(0..bits).contains(&y) => return None,
            BinaryOp::Shl => {
                if s == Scalar::I32 {
                    ((x as i32) << y) as i64
                } else {
                    x << y
                }
            }
            BinaryOp::Shr if !(0..bits).contains(&y) => return None,
            BinaryOp::Pow => return None,
            BinaryOp::Shr => {
                if s == Scalar::I32 {
                    ((x as i32) >> y) as i64
                } else {
                    x >> y
                }
            }
        };
        return Some(normalize(Const::Int(r), s));
    }
    let (x, y) = (as_f64(a) as f32, as_f64(b) as f32);
    let r = match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Rem => x % y,
        BinaryOp::Max => max_num(x, y),
        BinaryOp::Min => min_num(x, y),
        _ => return None,
    };
    Some(normalize(Const::Float(r as f64), s))
}

/// IEEE 754-2019 maximumNumber on f32, the float `maximum`/`max` of
/// docs/LANGUAGE.md: a NaN operand yields the other, and -0.0 < +0.0, so
/// `max_num(-0.0, 0.0)` is +0.0 in either order (PTX `max`: "+0.0 > -0.0";
/// LLVM's `maxnum` folding). `f32::max` returns either zero.
pub fn max_num(x: f32, y: f32) -> f32 {
    if x == y {
        // Equal and not NaN: the same bits, or ±0 (+0.0 if either is).
        f32::from_bits(x.to_bits() & y.to_bits())
    } else {
        x.max(y)
    }
}

/// IEEE 754-2019 minimumNumber on f32 (see [`max_num`]): -0.0 if either
/// operand is a zero of that sign and the other a zero.
pub fn min_num(x: f32, y: f32) -> f32 {
    if x == y {
        f32::from_bits(x.to_bits() | y.to_bits())
    } else {
        x.min(y)
    }
}

/// A comparison of constants of type `s`.
pub fn cmp(op: CmpOp, a: Const, b: Const, s: Scalar) -> Const {
    let ord = if s.is_int() {
        as_i64(a).partial_cmp(&as_i64(b))
    } else {
        as_f64(a).partial_cmp(&as_f64(b))
    };
    use std::cmp::Ordering::*;
    let r = match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Equal,
        (CmpOp::Ne, Some(o)) => o != Equal,
        (CmpOp::Lt, Some(o)) => o == Less,
        (CmpOp::Le, Some(o)) => o != Greater,
        (CmpOp::Gt, Some(o)) => o == Greater,
        (CmpOp::Ge, Some(o)) => o != Less,
    };
    Const::Bool(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folded int → float cast rounds once to nearest even, as at run time.
    #[test]
    fn int_to_float_folds_round_once() {
        let f = |x: i64, s| match cast(Const::Int(x), Scalar::I64, s) {
            Const::Float(v) => v,
            c => panic!("{c:?}"),
        };
        let p = |e: i32| 2f64.powi(e);
        assert_eq!(f((1 << 60) + (1 << 36) + 1, Scalar::F32), p(60) + p(37));
        assert_eq!(f((1 << 60) + (1 << 52) + 1, Scalar::BF16), p(60) + p(53));
        assert_eq!(f(-1_203_765_247, Scalar::BF16), -1_199_570_944.0);
        assert_eq!(f(65519, Scalar::F16), 65504.0);
        assert_eq!(f(65520, Scalar::F16), f64::INFINITY);
    }

    /// Folded float max/min order -0.0 below +0.0 in either operand order
    /// (maximumNumber/minimumNumber, like PTX `max`/`min`), and ignore NaN.
    #[test]
    fn max_min_fold_order_signed_zeros() {
        let f = |op, a: f64, b: f64| match binary(op, Const::Float(a), Const::Float(b), Scalar::F32)
        {
            Some(Const::Float(v)) => v,
            c => panic!("{c:?}"),
        };
        for (a, b) in [(-0.0, 0.0), (0.0, -0.0)] {
            assert!(f(BinaryOp::Max, a, b).is_sign_positive(), "max({a}, {b})");
            assert!(f(BinaryOp::Min, a, b).is_sign_negative(), "min({a}, {b})");
        }
        assert_eq!(max_num(-0.0, -0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(min_num(0.0, 0.0).to_bits(), 0);
        assert_eq!(max_num(f32::NAN, -0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(min_num(2.0, f32::NAN), 2.0);
        assert!(max_num(f32::NAN, f32::NAN).is_nan());
        assert_eq!(max_num(-1.0, 3.0), 3.0);
        assert_eq!(min_num(-1.0, 3.0), -1.0);
    }
}
