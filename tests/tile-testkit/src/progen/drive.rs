//! Driving a generated kernel (the signature [`super`] documents): sizes,
//! random inputs in the ranges the generator's tolerances assume, outputs
//! pre-filled with a sentinel, one launch, every buffer read back.

use crate::progen::{F16_INPUT_MAX, F_INPUT_MAX, LOOP_MAX};
use half::{bf16, f16};
use rand::Rng;
use tile_runtime::{Arg, Config, Device, Kernel, ParamKind, RuntimeError, Scalar, Signature};

/// The `i32` an output element holds until a kernel writes it (`i64`: both halves).
pub const INT_SENTINEL: i32 = 0x5EED_5EED;

/// One launch of a generated kernel: scalar arguments, grid, and the initial
/// bytes of every pointer parameter (in signature order).
#[derive(Clone, Debug)]
pub struct Case {
    pub m: i32,
    pub n: i32,
    pub q: i32,
    pub s: i32,
    pub f: f32,
    pub grid: [u32; 3],
    /// `(parameter, dtype, bytes)` per pointer parameter.
    pub buffers: Vec<(String, Scalar, Vec<u8>)>,
}

impl Case {
    pub fn describe(&self) -> String {
        format!(
            "m={} n={} q={} s={} f={:e} grid={:?}",
            self.m, self.n, self.q, self.s, self.f, self.grid
        )
    }
}

fn meta(config: &Config, name: &str) -> i64 {
    config
        .meta
        .iter()
        .find(|(n, _)| n == name)
        .map_or(1, |(_, v)| *v)
}

/// An integer drawn to exercise wrapping, shifts and division: small values
/// (divisors 0 and -1, shift amounts around the width), the extremes, and the
/// whole range.
pub fn random_int(rng: &mut impl Rng, bits: u32) -> i64 {
    let (min, max) = if bits == 64 {
        (i64::MIN, i64::MAX)
    } else {
        (i32::MIN as i64, i32::MAX as i64)
    };
    match rng.random_range(0..10) {
        0..=2 => rng.random_range(-8..=8),
        3 => rng.random_range(0..=(bits as i64 + 8)),
        4 => [min, min + 1, max, max - 1, -1, 0, 1][rng.random_range(0..7)],
        5 | 6 => rng.random_range(-1000..=1000),
        _ => rng.random_range(min..=max),
    }
}

/// A float within `bound`: mostly moderate values of both signs, some small,
/// some large, some small integers, zeros and ±1.
pub fn random_float(rng: &mut impl Rng, bound: f64) -> f64 {
    let sign = if rng.random_range(0..2) == 0 {
        -1.0
    } else {
        1.0
    };
    match rng.random_range(0..10) {
        0..=4 => rng.random_range(-2.0..2.0),
        5 => sign * 10f64.powf(rng.random_range(-6.0..-2.0)),
        6 => sign * rng.random_range(0.0..bound),
        7 | 8 => rng.random_range(-8..=8) as f64,
        _ => [0.0, -0.0, 1.0, -1.0][rng.random_range(0..4)],
    }
}

/// `len` random elements of `dtype` as bytes ([`random_int`], [`random_float`]).
pub fn random_bytes(rng: &mut impl Rng, dtype: Scalar, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len * dtype.size_bytes());
    for _ in 0..len {
        match dtype {
            Scalar::I32 => out.extend((random_int(rng, 32) as i32).to_le_bytes()),
            Scalar::I64 => out.extend(random_int(rng, 64).to_le_bytes()),
            Scalar::F32 => out.extend((random_float(rng, F_INPUT_MAX) as f32).to_le_bytes()),
            Scalar::BF16 => {
                out.extend(bf16::from_f64(random_float(rng, F_INPUT_MAX)).to_le_bytes())
            }
            Scalar::F16 => {
                out.extend(f16::from_f64(random_float(rng, F16_INPUT_MAX)).to_le_bytes())
            }
            _ => out.extend(vec![rng.random_range(0..2u8); dtype.size_bytes()]),
        }
    }
    out
}

/// `len` elements no kernel computes by chance: NaN for floats, [`INT_SENTINEL`] for integers.
pub fn sentinel_bytes(dtype: Scalar, len: usize) -> Vec<u8> {
    let one: Vec<u8> = match dtype {
        Scalar::F32 => f32::NAN.to_le_bytes().to_vec(),
        Scalar::BF16 => bf16::NAN.to_le_bytes().to_vec(),
        Scalar::F16 => f16::NAN.to_le_bytes().to_vec(),
        Scalar::I64 => (((INT_SENTINEL as i64) << 32) | INT_SENTINEL as i64)
            .to_le_bytes()
            .to_vec(),
        _ => INT_SENTINEL.to_le_bytes()[..dtype.size_bytes()].to_vec(),
    };
    one.repeat(len)
}

/// A random launch of a kernel with the generated signature in `config`
/// (meta-parameters `BM`, `BN`): ragged sizes up to about two tiles a side
/// and 4096 elements, inputs `x*` random, outputs `y*` sentinels.
pub fn case(rng: &mut impl Rng, sig: &Signature, config: &Config) -> Case {
    let (bm, bn) = (meta(config, "BM"), meta(config, "BN"));
    let m = rng.random_range(1..=(2 * bm + 1).min(64)) as i32;
    let n = rng.random_range(1..=(2 * bn + 3).min(4096 / m as i64)) as i32;
    let len = (m * n) as usize;
    let buffers = sig
        .params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Ptr(d) => Some((
                p.name.clone(),
                d,
                if p.name.starts_with('y') {
                    sentinel_bytes(d, len)
                } else {
                    random_bytes(rng, d, len)
                },
            )),
            _ => None,
        })
        .collect();
    Case {
        m,
        n,
        q: rng.random_range(0..=LOOP_MAX),
        s: random_int(rng, 32) as i32,
        f: random_float(rng, F_INPUT_MAX) as f32,
        grid: [
            (m as u64).div_ceil(bm as u64) as u32,
            (n as u64).div_ceil(bn as u64) as u32,
            1,
        ],
        buffers,
    }
}

/// Upload the case's buffers to `dev`, launch, and read every buffer back
/// (same order as [`Case::buffers`]).
pub fn run(dev: &Device, k: &Kernel, c: &Case) -> Result<Vec<Vec<u8>>, RuntimeError> {
    let bufs = c
        .buffers
        .iter()
        .map(|(_, d, b)| dev.upload_bytes(*d, b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut next = bufs.iter();
    let args: Vec<Arg> = k
        .signature()
        .params
        .iter()
        .map(|p| match (p.kind, p.name.as_str()) {
            (ParamKind::Ptr(_), _) => Arg::Buffer(next.next().expect("a buffer per pointer")),
            (_, "m") => Arg::I32(c.m),
            (_, "n") => Arg::I32(c.n),
            (_, "q") => Arg::I32(c.q),
            (_, "s") => Arg::I32(c.s),
            (ParamKind::Scalar(Scalar::F32), _) => Arg::F32(c.f),
            (ParamKind::Scalar(Scalar::I64), _) => Arg::I64(c.s as i64),
            _ => Arg::I32(c.s),
        })
        .collect();
    dev.launch(k, c.grid, &args)?;
    dev.synchronize()?;
    bufs.iter().map(|b| dev.download_bytes(b)).collect()
}

/// Element `i` of a buffer's bytes as f64 (integers exactly up to 2^53;
/// compare integers with [`int_at`]).
pub fn float_at(dtype: Scalar, b: &[u8], i: usize) -> f64 {
    let s = dtype.size_bytes();
    let c = &b[i * s..(i + 1) * s];
    match dtype {
        Scalar::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
        Scalar::BF16 => bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
        Scalar::F16 => f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
        _ => int_at(dtype, b, i) as f64,
    }
}

/// Element `i` of an integer buffer.
pub fn int_at(dtype: Scalar, b: &[u8], i: usize) -> i64 {
    let s = dtype.size_bytes();
    let c = &b[i * s..(i + 1) * s];
    match dtype {
        Scalar::I64 => i64::from_le_bytes(c.try_into().unwrap()),
        Scalar::I32 => i32::from_le_bytes(c.try_into().unwrap()) as i64,
        _ => c[0] as i64,
    }
}

/// Whether element values `got` and `want` agree under `tol` (see
/// [`super::OutputSpec::tol`]): `None` is equality (NaN matches NaN, and
/// `-0.0` matches `0.0`); infinities must be equal either way.
pub fn agree(got: f64, want: f64, tol: Option<(f64, f64)>) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got == want {
        return true;
    }
    match tol {
        Some((abs, rel)) if got.is_finite() && want.is_finite() => {
            (got - want).abs() <= abs + rel * got.abs().max(want.abs())
        }
        _ => false,
    }
}

/// The indices where two buffers' elements disagree: integers bit for bit,
/// floats by [`agree`] with `tol`.
pub fn disagreements(
    dtype: Scalar,
    got: &[u8],
    want: &[u8],
    tol: Option<(f64, f64)>,
) -> Vec<usize> {
    let n = want.len() / dtype.size_bytes();
    (0..n)
        .filter(|&i| {
            if dtype.is_float() {
                !agree(float_at(dtype, got, i), float_at(dtype, want, i), tol)
            } else {
                int_at(dtype, got, i) != int_at(dtype, want, i)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_fail_where_they_must() {
        assert!(agree(f64::NAN, f64::NAN, None));
        assert!(!agree(f64::NAN, 1.0, Some((1.0, 1.0))));
        assert!(agree(-0.0, 0.0, None));
        assert!(!agree(1.0, 1.0 + 1e-12, None));
        assert!(agree(1.0, 1.0 + 1e-6, Some((0.0, 2e-6))));
        assert!(!agree(1.0, 1.0 + 1e-5, Some((0.0, 2e-6))));
        assert!(!agree(f64::INFINITY, 3e38, Some((1e38, 1.0))));
        let a = sentinel_bytes(Scalar::I64, 3);
        let mut b = a.clone();
        b[9] ^= 1;
        assert_eq!(disagreements(Scalar::I64, &b, &a, None), vec![1]);
        let x = sentinel_bytes(Scalar::BF16, 4);
        assert!(disagreements(Scalar::BF16, &x, &x, None).is_empty());
    }
}
