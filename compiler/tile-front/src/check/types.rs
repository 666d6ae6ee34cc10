//! Pure type rules: dtype promotion and shape broadcasting.

use tile_ir::Scalar;

/// Rank of a float type for promotion; mixed 16-bit floats meet at f32.
fn float_join(a: Scalar, b: Scalar) -> Scalar {
    if a == b {
        a
    } else {
        Scalar::F32
    }
}

/// Common element type of two typed operands (Triton-like):
/// same → same; int with int → the wider; int with float → the float;
/// f16 with bf16, or either with f32 → f32.
pub fn promote(a: Scalar, b: Scalar) -> Scalar {
    match (a.is_float(), b.is_float()) {
        (true, true) => float_join(a, b),
        (true, false) => a,
        (false, true) => b,
        (false, false) => {
            let rank = |s: Scalar| match s {
                Scalar::I1 => 0,
                Scalar::I32 => 1,
                _ => 2,
            };
            if rank(a) >= rank(b) {
                a
            } else {
                b
            }
        }
    }
}

/// The element type an untyped literal takes next to a typed operand of type `other`:
/// an integer literal adapts to the operand (i1 operands make it i32), a float
/// literal keeps a float operand's type and makes integer operands f32.
pub fn literal_meets(is_float_lit: bool, other: Scalar) -> Scalar {
    match (is_float_lit, other.is_float()) {
        (false, _) if other == Scalar::I1 => Scalar::I32,
        (false, _) => other,
        (true, true) => other,
        (true, false) => Scalar::F32,
    }
}

/// Numpy broadcasting: align trailing dimensions; each pair equal or one of them 1.
pub fn broadcast_shapes(a: &[u32], b: &[u32]) -> Option<Vec<u32>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// `[16, 32]` as text.
pub fn shape_str(s: &[u32]) -> String {
    let d: Vec<String> = s.iter().map(|x| x.to_string()).collect();
    format!("[{}]", d.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion() {
        assert_eq!(promote(Scalar::BF16, Scalar::BF16), Scalar::BF16);
        assert_eq!(promote(Scalar::BF16, Scalar::F16), Scalar::F32);
        assert_eq!(promote(Scalar::I32, Scalar::I64), Scalar::I64);
        assert_eq!(promote(Scalar::I32, Scalar::BF16), Scalar::BF16);
        assert_eq!(literal_meets(true, Scalar::I32), Scalar::F32);
        assert_eq!(literal_meets(true, Scalar::BF16), Scalar::BF16);
        assert_eq!(literal_meets(false, Scalar::I64), Scalar::I64);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes(&[16, 1], &[32]), Some(vec![16, 32]));
        assert_eq!(broadcast_shapes(&[], &[8]), Some(vec![8]));
        assert_eq!(broadcast_shapes(&[4], &[8]), None);
    }
}
