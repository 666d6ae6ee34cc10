//! `sin cos erf log1p expm1 pow` in f32 without libdevice: range reduction
//! and polynomials written once, generically over [`Arith`], the f32/i32
//! instructions they need. The code generator instantiates them with MLIR
//! ops (`lower::elementwise`: `llvm.fma.f32` → `fma.rn.f32`, `arith.addf` →
//! `add.rn.f32`, …, no approximate instructions), and [`Cpu`] with Rust's
//! f32 arithmetic, which is the same IEEE arithmetic: `Cpu` computes
//! bit-for-bit what the GPU computes, so the error bounds of
//! docs/LANGUAGE.md ("Math functions") can be checked here without a GPU and
//! measured on one with the same numbers expected.
//!
//! The methods (bounds and measured errors: docs/LANGUAGE.md; polynomial
//! coefficients are Chebyshev fits, rounded to f32):
//! - `sin`, `cos`: Cody–Waite reduction by π/2 with a three-part constant
//!   for |x| ≤ 105615 (exact first step with FMA, the second split exactly,
//!   r kept as a double-f32), beyond it Payne–Hanek reduction with 2/π to 224
//!   bits (integer arithmetic); polynomials on [-π/4, π/4] with r's low part
//!   added to first order. Infinities and NaN give NaN.
//! - `erf`: `x + x·R(x²)` for |x| < 0.921875; above, `1 - exp(Q(|x|))` with
//!   `Q ≈ log(erfc)` and an exp accurate to double-f32 input; ±1 from |x| = 4.
//! - `log1p`: `u = 1 + x` with its rounding error `c` kept,
//!   `ln(u) + c/u`, `ln` from a double-f32 `log2` (below).
//! - `expm1`: `x = j·ln2 + r`, `2^j·expm1(r) + (2^j - 1)` in one FMA (for
//!   j ≥ 25, where 2^j - 1 is inexact, `2^j·expm1(r) + 2^j` as a two-sum, then
//!   `- 1`).
//! - `fmod(x, y)` (float `%`): exact, by long division in 12 steps of up to
//!   23 quotient bits, each one FMA (below).
//! - `pow(a, b)`: `exp2(b·log2|a|)` with `log2` as a double-f32 (about 2^-40
//!   relative) and the product kept as double-f32, so the error does not grow
//!   with |b·log2 a|; C's `powf` special values.

/// The instructions the functions are written in. `F` is an f32 value, `I`
/// an i32, `B` a bool (i1). Every float operation rounds to nearest even
/// once, like PTX `.rn`; nothing flushes subnormals.
pub trait Arith {
    type F: Copy;
    type I: Copy;
    type B: Copy;
    type E;
    fn cf(&mut self, x: f32) -> Result<Self::F, Self::E>;
    fn ci(&mut self, x: i32) -> Result<Self::I, Self::E>;
    fn add(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    fn sub(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    fn mul(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    fn div(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    /// `a·b + c`, rounded once.
    fn fma(&mut self, a: Self::F, b: Self::F, c: Self::F) -> Result<Self::F, Self::E>;
    fn neg(&mut self, a: Self::F) -> Result<Self::F, Self::E>;
    fn abs(&mut self, a: Self::F) -> Result<Self::F, Self::E>;
    /// IEEE maxNum / minNum.
    fn max(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    fn min(&mut self, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    /// Ordered comparisons (false with a NaN).
    fn lt(&mut self, a: Self::F, b: Self::F) -> Result<Self::B, Self::E>;
    fn eq(&mut self, a: Self::F, b: Self::F) -> Result<Self::B, Self::E>;
    /// Unordered: true when either is NaN.
    fn is_nan(&mut self, a: Self::F) -> Result<Self::B, Self::E>;
    fn sel(&mut self, c: Self::B, a: Self::F, b: Self::F) -> Result<Self::F, Self::E>;
    fn or(&mut self, a: Self::B, b: Self::B) -> Result<Self::B, Self::E>;
    fn and(&mut self, a: Self::B, b: Self::B) -> Result<Self::B, Self::E>;
    fn not(&mut self, a: Self::B) -> Result<Self::B, Self::E>;
    fn xor_b(&mut self, a: Self::B, b: Self::B) -> Result<Self::B, Self::E>;
    fn bits(&mut self, a: Self::F) -> Result<Self::I, Self::E>;
    fn bits_to_f(&mut self, a: Self::I) -> Result<Self::F, Self::E>;
    fn iadd(&mut self, a: Self::I, b: Self::I) -> Result<Self::I, Self::E>;
    fn isub(&mut self, a: Self::I, b: Self::I) -> Result<Self::I, Self::E>;
    fn iand(&mut self, a: Self::I, b: Self::I) -> Result<Self::I, Self::E>;
    fn shl(&mut self, a: Self::I, n: u32) -> Result<Self::I, Self::E>;
    /// Arithmetic shift right.
    fn shr(&mut self, a: Self::I, n: u32) -> Result<Self::I, Self::E>;
    fn ieq(&mut self, a: Self::I, b: Self::I) -> Result<Self::B, Self::E>;
    /// Signed `a < b`.
    fn ilt(&mut self, a: Self::I, b: Self::I) -> Result<Self::B, Self::E>;
    /// Unsigned `a < b`.
    fn ult(&mut self, a: Self::I, b: Self::I) -> Result<Self::B, Self::E>;
    fn sel_i(&mut self, c: Self::B, a: Self::I, b: Self::I) -> Result<Self::I, Self::E>;
    fn ior(&mut self, a: Self::I, b: Self::I) -> Result<Self::I, Self::E>;
    fn inot(&mut self, a: Self::I) -> Result<Self::I, Self::E>;
    /// The low and high 32 bits of the unsigned 64-bit product.
    fn umul_wide(&mut self, a: Self::I, b: Self::I) -> Result<(Self::I, Self::I), Self::E>;
    /// Shifts by a value in 0..32 (logical right shift).
    fn shl_v(&mut self, a: Self::I, n: Self::I) -> Result<Self::I, Self::E>;
    fn lshr_v(&mut self, a: Self::I, n: Self::I) -> Result<Self::I, Self::E>;
    /// f32 → i32, truncating, saturating, NaN → 0.
    fn to_int(&mut self, a: Self::F) -> Result<Self::I, Self::E>;
    fn to_float(&mut self, a: Self::I) -> Result<Self::F, Self::E>;
    /// `body` applied `n` times to `init`, `n` known only at run time: on the
    /// GPU a loop, so the body's code is emitted once (unrolled, a function
    /// that repeats a long step made NVPTX's code generation superlinear).
    fn repeat(
        &mut self,
        n: Self::I,
        init: Self::F,
        body: &mut Step<'_, Self>,
    ) -> Result<Self::F, Self::E>;
}

/// One trip of [`Arith::repeat`]: the carried value in, the next out.
pub type Step<'a, A> =
    dyn FnMut(&mut A, <A as Arith>::F) -> Result<<A as Arith>::F, <A as Arith>::E> + 'a;

/// `Arith` on the CPU: bit-identical to the GPU code.
pub struct Cpu;

impl Arith for Cpu {
    type F = f32;
    type I = i32;
    type B = bool;
    type E = std::convert::Infallible;
    fn cf(&mut self, x: f32) -> Result<f32, Self::E> {
        Ok(x)
    }
    fn ci(&mut self, x: i32) -> Result<i32, Self::E> {
        Ok(x)
    }
    fn add(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a + b)
    }
    fn sub(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a - b)
    }
    fn mul(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a * b)
    }
    fn div(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a / b)
    }
    fn fma(&mut self, a: f32, b: f32, c: f32) -> Result<f32, Self::E> {
        Ok(a.mul_add(b, c))
    }
    fn neg(&mut self, a: f32) -> Result<f32, Self::E> {
        Ok(-a)
    }
    fn abs(&mut self, a: f32) -> Result<f32, Self::E> {
        Ok(a.abs())
    }
    fn max(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a.max(b))
    }
    fn min(&mut self, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(a.min(b))
    }
    fn lt(&mut self, a: f32, b: f32) -> Result<bool, Self::E> {
        Ok(a < b)
    }
    fn eq(&mut self, a: f32, b: f32) -> Result<bool, Self::E> {
        Ok(a == b)
    }
    fn is_nan(&mut self, a: f32) -> Result<bool, Self::E> {
        Ok(a.is_nan())
    }
    fn sel(&mut self, c: bool, a: f32, b: f32) -> Result<f32, Self::E> {
        Ok(if c { a } else { b })
    }
    fn or(&mut self, a: bool, b: bool) -> Result<bool, Self::E> {
        Ok(a || b)
    }
    fn and(&mut self, a: bool, b: bool) -> Result<bool, Self::E> {
        Ok(a && b)
    }
    fn not(&mut self, a: bool) -> Result<bool, Self::E> {
        Ok(!a)
    }
    fn xor_b(&mut self, a: bool, b: bool) -> Result<bool, Self::E> {
        Ok(a != b)
    }
    fn bits(&mut self, a: f32) -> Result<i32, Self::E> {
        Ok(a.to_bits() as i32)
    }
    fn bits_to_f(&mut self, a: i32) -> Result<f32, Self::E> {
        Ok(f32::from_bits(a as u32))
    }
    fn iadd(&mut self, a: i32, b: i32) -> Result<i32, Self::E> {
        Ok(a.wrapping_add(b))
    }
    fn isub(&mut self, a: i32, b: i32) -> Result<i32, Self::E> {
        Ok(a.wrapping_sub(b))
    }
    fn iand(&mut self, a: i32, b: i32) -> Result<i32, Self::E> {
        Ok(a & b)
    }
    fn shl(&mut self, a: i32, n: u32) -> Result<i32, Self::E> {
        Ok(a << n)
    }
    fn shr(&mut self, a: i32, n: u32) -> Result<i32, Self::E> {
        Ok(a >> n)
    }
    fn ieq(&mut self, a: i32, b: i32) -> Result<bool, Self::E> {
        Ok(a == b)
    }
    fn ilt(&mut self, a: i32, b: i32) -> Result<bool, Self::E> {
        Ok(a < b)
    }
    fn ult(&mut self, a: i32, b: i32) -> Result<bool, Self::E> {
        Ok((a as u32) < (b as u32))
    }
    fn sel_i(&mut self, c: bool, a: i32, b: i32) -> Result<i32, Self::E> {
        Ok(if c { a } else { b })
    }
    fn ior(&mut self, a: i32, b: i32) -> Result<i32, Self::E> {
        Ok(a | b)
    }
    fn inot(&mut self, a: i32) -> Result<i32, Self::E> {
        Ok(!a)
    }
    fn umul_wide(&mut self, a: i32, b: i32) -> Result<(i32, i32), Self::E> {
        let p = (a as u32 as u64) * (b as u32 as u64);
        Ok((p as u32 as i32, (p >> 32) as u32 as i32))
    }
    fn shl_v(&mut self, a: i32, n: i32) -> Result<i32, Self::E> {
        Ok(((a as u32) << n) as i32)
    }
    fn lshr_v(&mut self, a: i32, n: i32) -> Result<i32, Self::E> {
        Ok(((a as u32) >> n) as i32)
    }
    fn to_int(&mut self, a: f32) -> Result<i32, Self::E> {
        Ok(a as i32)
    }
    fn to_float(&mut self, a: i32) -> Result<f32, Self::E> {
        Ok(a as f32)
    }
    fn repeat(&mut self, n: i32, init: f32, body: &mut Step<'_, Self>) -> Result<f32, Self::E> {
        let mut r = init;
        for _ in 0..n {
            r = body(self, r)?;
        }
        Ok(r)
    }
}

/// The CPU instance of each function (what the GPU computes, bit for bit).
pub mod cpu {
    use super::Cpu;
    macro_rules! unwrap {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => match e {},
            }
        };
    }
    pub fn sin(x: f32) -> f32 {
        unwrap!(super::sin(&mut Cpu, x))
    }
    pub fn cos(x: f32) -> f32 {
        unwrap!(super::cos(&mut Cpu, x))
    }
    pub fn erf(x: f32) -> f32 {
        unwrap!(super::erf(&mut Cpu, x))
    }
    pub fn log1p(x: f32) -> f32 {
        unwrap!(super::log1p(&mut Cpu, x))
    }
    pub fn expm1(x: f32) -> f32 {
        unwrap!(super::expm1(&mut Cpu, x))
    }
    pub fn pow(a: f32, b: f32) -> f32 {
        unwrap!(super::pow(&mut Cpu, a, b))
    }
    pub fn fmod(x: f32, y: f32) -> f32 {
        unwrap!(super::fmod(&mut Cpu, x, y))
    }
}

/// 1.5·2^23: adding it rounds an f32 of magnitude < 2^22 to an integer,
/// which then sits in the low bits of the sum's representation.
const MAGIC: f32 = 12582912.0;
const MAGIC_BITS: i32 = 0x4B40_0000;

/// `c[0] + x·(c[1] + x·(c[2] + …))` by FMA (Horner), coefficients from the
/// constant term up.
fn horner<A: Arith>(a: &mut A, x: A::F, c: &[f32]) -> Result<A::F, A::E> {
    let mut acc = a.cf(c[c.len() - 1])?;
    for &k in c[..c.len() - 1].iter().rev() {
        let kk = a.cf(k)?;
        acc = a.fma(acc, x, kk)?;
    }
    Ok(acc)
}

/// `2^j` for an i32 `j` in -126..=127 (built from its exponent bits).
fn pow2i<A: Arith>(a: &mut A, j: A::I) -> Result<A::F, A::E> {
    let bias = a.ci(127)?;
    let e = a.iadd(j, bias)?;
    let b = a.shl(e, 23)?;
    a.bits_to_f(b)
}

/// Round `t` (|t| < 2^22) to the nearest integer: (as f32, as i32).
fn round_int<A: Arith>(a: &mut A, k: A::F) -> Result<(A::F, A::I), A::E> {
    // `k` is `t + MAGIC`, already rounded to an integer by the addition.
    let m = a.cf(MAGIC)?;
    let jf = a.sub(k, m)?;
    let kb = a.bits(k)?;
    let mb = a.ci(MAGIC_BITS)?;
    let ji = a.isub(kb, mb)?;
    Ok((jf, ji))
}

// Minimax-like (Chebyshev) fits, f32 coefficients, constant term first.
/// sin(r) = r + r·s·S(s), s = r², |r| ≤ π/4 + 0.01.
const SIN: [f32; 4] = [
    -0.166_666_67,
    0.008_333_332,
    -0.000_198_400_26,
    2.724_209_3e-6,
];
/// cos(r) = 1 + s·C(s).
const COS: [f32; 5] = [
    -0.5,
    0.041_666_668,
    -0.001_388_888_5,
    2.479_977_2e-5,
    -2.722_898e-7,
];
/// π/2 in three parts: P1 + P2 + P3 (P1 = RN(π/2), then the remainders).
const PIO2: [f32; 3] = [
    f32::from_bits(0x3FC9_0FDB),
    f32::from_bits(0xB33B_BD2E),
    f32::from_bits(0xA6F7_2CED),
];
const TWO_OVER_PI: f32 = std::f32::consts::FRAC_2_PI;

/// The largest |x| reduced by the three-part π/2 (beyond it, Payne–Hanek).
const SINCOS_FAST_MAX: f32 = 105_615.0;

/// 2/π to 224 bits, most significant word first.
const TWO_OVER_PI_BITS: [u32; 7] = [
    0xA2F9_836E,
    0x4E44_1529,
    0xFC27_57D1,
    0xF534_DDC0,
    0xDB62_9599,
    0x3C43_9041,
    0xFE51_63AB,
];

/// `a + b` as `(s, e)` with `s = RN(a + b)` and `e` its exact error (Knuth).
fn two_sum<A: Arith>(a: &mut A, x: A::F, y: A::F) -> Result<(A::F, A::F), A::E> {
    let s = a.add(x, y)?;
    let bb = a.sub(s, x)?;
    let ab = a.sub(s, bb)?;
    let ea = a.sub(x, ab)?;
    let eb = a.sub(y, bb)?;
    let e = a.add(ea, eb)?;
    Ok((s, e))
}

/// A reduced argument: `r` as a double-f32 `(rh, rl)` and the quadrant.
type Reduced<A> = (<A as Arith>::F, <A as Arith>::F, <A as Arith>::I);

/// `x = j·π/2 + r` for a finite |x| ≥ 2^16 (used beyond 105615): the
/// 24-bit significand times 2/π as a 248-bit integer product, the 2 integer
/// and 64 fraction bits at x's exponent taken out, the fraction rounded to
/// [-1/2, 1/2) and times π/2 in double-f32. Returns (rh, rl, j mod 4 as i32).
fn payne_hanek<A: Arith>(a: &mut A, x: A::F) -> Result<Reduced<A>, A::E> {
    let xb = a.bits(x)?;
    let ex = a.shr(xb, 23)?;
    let ff = a.ci(0xFF)?;
    let ex = a.iand(ex, ff)?;
    let mm = a.ci(0x7F_FFFF)?;
    let m = a.iand(xb, mm)?;
    let hidden = a.ci(0x80_0000)?;
    let m = a.ior(m, hidden)?;
    // p = m · W, W = Σ w_i·2^(32(6-i)): eight 32-bit words, least significant first
    let mut p = Vec::with_capacity(9);
    let mut carry = a.ci(0)?;
    for &w in TWO_OVER_PI_BITS.iter().rev() {
        let wc = a.ci(w as i32)?;
        let (lo, hi) = a.umul_wide(m, wc)?;
        let sum = a.iadd(lo, carry)?;
        let c = a.ult(sum, lo)?;
        let one = a.ci(1)?;
        let zero = a.ci(0)?;
        let ci = a.sel_i(c, one, zero)?;
        p.push(sum);
        carry = a.iadd(hi, ci)?;
    }
    p.push(carry);
    let zero = a.ci(0)?;
    p.push(zero);
    // x·2/π = p·2^(ex - 374): the units bit is bit 374 - ex; take the 96 bits
    // from bit s = 310 - ex (k = s/32 in 1..=5 for ex in 143..=254).
    let c310 = a.ci(310)?;
    let sft = a.isub(c310, ex)?;
    let k = a.shr(sft, 5)?;
    let c31 = a.ci(31)?;
    let b = a.iand(sft, c31)?;
    let mut w = Vec::with_capacity(4);
    for off in 0..4 {
        // w[off] = p[k + off], k in 1..=5
        let mut v = p[1 + off];
        for kk in 2..=5usize {
            let kc = a.ci(kk as i32)?;
            let is = a.ieq(k, kc)?;
            v = a.sel_i(is, p[kk + off], v)?;
        }
        w.push(v);
    }
    let c32 = a.ci(32)?;
    let nb = a.isub(c32, b)?;
    let b0 = a.ieq(b, zero)?;
    let mut r = Vec::with_capacity(3);
    for i in 0..3 {
        let lo = a.lshr_v(w[i], b)?;
        // (32 - b) is 32 when b = 0: shift by 0 instead and drop it
        let nb_safe = a.sel_i(b0, zero, nb)?;
        let hi = a.shl_v(w[i + 1], nb_safe)?;
        let hi = a.sel_i(b0, zero, hi)?;
        r.push(a.ior(lo, hi)?);
    }
    // r[2] bits 0, 1: the quadrant; r[1]:r[0]: the fraction
    let three = a.ci(3)?;
    let q = a.iand(r[2], three)?;
    let half = a.ilt(r[1], zero)?; // fraction ≥ 1/2
    let one = a.ci(1)?;
    let q1 = a.iadd(q, one)?;
    let q = a.sel_i(half, q1, q)?;
    let n1 = a.inot(r[1])?;
    let n0 = a.inot(r[0])?;
    let f1 = a.sel_i(half, n1, r[1])?;
    let f0 = a.sel_i(half, n0, r[0])?;
    // |fraction| = c0·2^-24 + c1·2^-48 + c2·2^-64 (chunks exact in f32)
    let c0 = a.shr(f1, 8)?;
    let m24 = a.ci(0xFF_FFFF)?;
    let c0 = a.iand(c0, m24)?;
    let lo8 = a.iand(f1, ff)?;
    let lo8 = a.shl(lo8, 16)?;
    let mid = a.shr(f0, 16)?;
    let m16 = a.ci(0xFFFF)?;
    let mid = a.iand(mid, m16)?;
    let c1 = a.ior(lo8, mid)?;
    let c2 = a.iand(f0, m16)?;
    let fc0 = a.to_float(c0)?;
    let fc1 = a.to_float(c1)?;
    let fc2 = a.to_float(c2)?;
    let s24 = a.cf(5.960_464_5e-8)?; // 2^-24
    let s48 = a.cf(3.552_713_7e-15)?; // 2^-48
    let s64 = a.cf(5.421_011e-20)?; // 2^-64
    let fh = a.mul(fc0, s24)?;
    let t1 = a.mul(fc1, s48)?;
    let t2 = a.mul(fc2, s64)?;
    let fl = a.add(t1, t2)?;
    // (fh + fl)·π/2 in double-f32
    let ph = a.cf(PIO2[0])?;
    let pl = a.cf(PIO2[1])?;
    let rh = a.mul(fh, ph)?;
    let nrh = a.neg(rh)?;
    let re = a.fma(fh, ph, nrh)?;
    let u = a.mul(fl, ph)?;
    let u = a.fma(fh, pl, u)?;
    let rl = a.add(re, u)?;
    let rr = a.add(rh, rl)?;
    let d = a.sub(rr, rh)?;
    let rl = a.sub(rl, d)?;
    // sign: negative fraction, negative x
    let neg = a.ilt(xb, zero)?;
    let neg = a.xor_b(neg, half)?;
    let nr = a.neg(rr)?;
    let rr = a.sel(neg, nr, rr)?;
    let nl = a.neg(rl)?;
    let rl = a.sel(neg, nl, rl)?;
    let xneg = a.ilt(xb, zero)?;
    let nq = a.isub(zero, q)?;
    let q = a.sel_i(xneg, nq, q)?;
    Ok((rr, rl, q))
}

/// sin (`cos_shift` 0) or cos (`cos_shift` 1): the quadrant `j` of
/// `x ≈ j·π/2 + r` selects ±sin(r) or ±cos(r).
fn sincos<A: Arith>(a: &mut A, x: A::F, cos_shift: i32) -> Result<A::F, A::E> {
    let c2pi = a.cf(TWO_OVER_PI)?;
    let m = a.cf(MAGIC)?;
    let k = a.fma(x, c2pi, m)?;
    let (jf, ji) = round_int(a, k)?;
    let nj = a.neg(jf)?;
    // r = x - j·(P1 + P2 + P3) as a double-f32 (rh, rl): x - j·P1 is exact,
    // j·P2 is split exactly (FMA) and subtracted with a two-sum.
    let p1 = a.cf(PIO2[0])?;
    let r1 = a.fma(nj, p1, x)?;
    let p2 = a.cf(PIO2[1])?;
    let th = a.mul(jf, p2)?;
    let nth = a.neg(th)?;
    let tl = a.fma(jf, p2, nth)?;
    let (r2, e2) = two_sum(a, r1, nth)?;
    let p3 = a.cf(PIO2[2])?;
    let t3 = a.mul(jf, p3)?;
    let lo = a.sub(e2, tl)?;
    let lo = a.sub(lo, t3)?;
    let rh = a.add(r2, lo)?;
    let d = a.sub(rh, r2)?;
    let rl = a.sub(lo, d)?;
    // |x| > 105615: Payne–Hanek (the quadrant and r from 2/π to 224 bits).
    let (sh, sl, js) = payne_hanek(a, x)?;
    let ax = a.abs(x)?;
    let lim = a.cf(SINCOS_FAST_MAX)?;
    let slow = a.lt(lim, ax)?;
    let r = a.sel(slow, sh, rh)?;
    let rl = a.sel(slow, sl, rl)?;
    let ji = a.sel_i(slow, js, ji)?;
    let s = a.mul(r, r)?;
    // sin(r + rl) = r + (rl + r·s·S(s))
    let ps = horner(a, s, &SIN)?;
    let rs = a.mul(r, s)?;
    let u = a.fma(rs, ps, rl)?;
    let sn = a.add(r, u)?;
    // cos(r + rl) = 1 + (s·C(s) - r·rl)
    let pc = horner(a, s, &COS)?;
    let one = a.cf(1.0)?;
    let q = a.mul(r, rl)?;
    let nq = a.neg(q)?;
    let w = a.fma(s, pc, nq)?;
    let cs = a.add(one, w)?;
    // Quadrant q = (j + shift) mod 4: 0 sin, 1 cos, 2 -sin, 3 -cos.
    let sh = a.ci(cos_shift)?;
    let q = a.iadd(ji, sh)?;
    let one_i = a.ci(1)?;
    let two_i = a.ci(2)?;
    let zero_i = a.ci(0)?;
    let q1 = a.iand(q, one_i)?;
    let q2 = a.iand(q, two_i)?;
    let odd = a.ieq(q1, one_i)?;
    let v = a.sel(odd, cs, sn)?;
    let nv = a.neg(v)?;
    let pos = a.ieq(q2, zero_i)?;
    let y = a.sel(pos, v, nv)?;
    // sin(±0) = ±0 (the sum r + … above gives +0).
    let y = if cos_shift == 0 {
        let zero = a.cf(0.0)?;
        let z = a.eq(x, zero)?;
        a.sel(z, x, y)?
    } else {
        y
    };
    // ±inf and NaN give NaN.
    let ax = a.abs(x)?;
    let inf = a.cf(f32::INFINITY)?;
    let fin = a.lt(ax, inf)?;
    let nan = a.cf(f32::NAN)?;
    a.sel(fin, y, nan)
}

pub fn sin<A: Arith>(a: &mut A, x: A::F) -> Result<A::F, A::E> {
    sincos(a, x, 0)
}

pub fn cos<A: Arith>(a: &mut A, x: A::F) -> Result<A::F, A::E> {
    sincos(a, x, 1)
}

/// exp2 of the double-f32 `zh + zl` (|zl| ≤ ulp(zh), any zh, NaN excepted):
/// `2^j · 2^r` with `j = round(zh)`, the scaling split in two factors so the
/// result rounds once, also when subnormal; ±inf and 0 beyond the range.
fn exp2_dd<A: Arith>(a: &mut A, zh: A::F, zl: A::F) -> Result<A::F, A::E> {
    let lim = a.cf(200.0)?;
    let nlim = a.cf(-200.0)?;
    let az = a.abs(zh)?;
    let inside = a.lt(az, lim)?;
    let zero = a.cf(0.0)?;
    let zl = a.sel(inside, zl, zero)?;
    let zh = a.min(zh, lim)?;
    let zh = a.max(zh, nlim)?;
    let m = a.cf(MAGIC)?;
    let k = a.add(zh, m)?;
    let (jf, ji) = round_int(a, k)?;
    let d = a.sub(zh, jf)?; // exact
                            // 2^(d + zl) = 2^d·(1 + zl·ln2 + …)
    let e = horner(a, d, &EXP2)?;
    let one = a.cf(1.0)?;
    let p = a.fma(d, e, one)?;
    let ln2 = a.cf(std::f32::consts::LN_2)?;
    let pl = a.mul(p, ln2)?;
    let p = a.fma(pl, zl, p)?;
    let j1 = a.shr(ji, 1)?;
    let j2 = a.isub(ji, j1)?;
    let s1 = pow2i(a, j1)?;
    let s2 = pow2i(a, j2)?;
    let t = a.mul(p, s1)?;
    a.mul(t, s2)
}

/// 2^r = 1 + r·E(r), |r| ≤ 0.5005.
const EXP2: [f32; 7] = [
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_056,
    0.001_333_350_2,
    0.000_154_615_61,
    1.529_741_3e-5,
];

/// `log2(x) - ebias` for a positive, finite, normal `x` and an integer
/// `ebias` (|ebias| ≤ 64) as a double-f32 `(h, l)`, about 2^-40 relative:
/// `x = 2^e·m`, m in [√2/2, √2), `s = (m-1)/(m+1)` as a double-f32,
/// `log2 m = (2/ln2)·s + s³·T(s²)`.
fn log2_dd<A: Arith>(a: &mut A, x: A::F, ebias: A::F) -> Result<(A::F, A::F), A::E> {
    let xb = a.bits(x)?;
    let c = a.ci(0x3F35_04F3)?; // bits of √2/2
    let t = a.isub(xb, c)?;
    let e = a.shr(t, 23)?;
    let es = a.shl(e, 23)?;
    let mb = a.isub(xb, es)?;
    let m = a.bits_to_f(mb)?;
    let ef = a.to_float(e)?;
    let ef = a.sub(ef, ebias)?; // exact: small integers
    let one = a.cf(1.0)?;
    let f = a.sub(m, one)?; // exact
    let d = a.add(m, one)?;
    let d1 = a.sub(d, one)?; // exact
    let dl = a.sub(m, d1)?; // exact: d + dl = m + 1
    let sh = a.div(f, d)?;
    let nsh = a.neg(sh)?;
    let r1 = a.fma(nsh, d, f)?; // exact remainder
    let r = a.fma(nsh, dl, r1)?;
    let sl = a.div(r, d)?;
    // (2/ln2)·(sh + sl) as double-f32
    let ch = a.cf(2.885_39)?;
    let cl = a.cf(3.851_926e-8)?;
    let ph = a.mul(sh, ch)?;
    let nph = a.neg(ph)?;
    let pe = a.fma(sh, ch, nph)?;
    let x1 = a.mul(sl, ch)?;
    let x2 = a.fma(sh, cl, x1)?;
    let pl = a.add(pe, x2)?;
    // tail s³·A(s²), A = c1 + z·Q(z), in double-f32 where it matters
    let zh = a.mul(sh, sh)?;
    let nzh = a.neg(zh)?;
    let zl = a.fma(sh, sh, nzh)?;
    let s3h = a.mul(sh, zh)?;
    let ns3h = a.neg(s3h)?;
    let e3 = a.fma(sh, zh, ns3h)?;
    let three = a.cf(3.0)?;
    let z3 = a.mul(zh, three)?;
    let u = a.mul(z3, sl)?;
    let u = a.fma(sh, zl, u)?;
    let s3l = a.add(e3, u)?;
    let q = horner(a, zh, &LOG2_TAIL)?;
    let zq = a.mul(zh, q)?;
    let c1h = a.cf(0.961_796_7)?;
    let c1l = a.cf(-7.028_462e-9)?;
    let ah = a.add(c1h, zq)?;
    let ad = a.sub(c1h, ah)?;
    let al = a.add(ad, zq)?;
    let al = a.add(al, c1l)?;
    let th = a.mul(s3h, ah)?;
    let nth = a.neg(th)?;
    let te = a.fma(s3h, ah, nth)?;
    let tl = a.mul(s3l, ah)?;
    let tl = a.fma(s3h, al, tl)?;
    let tl = a.add(te, tl)?;
    // (ph + th) exactly, then the small parts
    let sum = a.add(ph, th)?;
    let sd = a.sub(sum, ph)?;
    let se = a.sub(th, sd)?;
    let lo = a.add(pl, tl)?;
    let lo = a.add(lo, se)?;
    // e + sum + lo
    let hi = a.add(ef, sum)?;
    let hd = a.sub(hi, ef)?;
    let lo0 = a.sub(sum, hd)?;
    let lo = a.add(lo0, lo)?;
    let h = a.add(hi, lo)?;
    let hd = a.sub(h, hi)?;
    let l = a.sub(lo, hd)?;
    Ok((h, l))
}

/// Q(z) = Σ 2/((2k+1)·ln2)·z^(k-2), k = 2..=7 (log2 m = (2/ln2)·s +
/// s³·(2/(3 ln2) + z·Q(z)), z = s² ≤ 0.0295).
const LOG2_TAIL: [f32; 6] = [
    0.577_078_04,
    0.412_198_57,
    0.320_598_9,
    0.262_308_18,
    0.221_953_08,
    0.192_359_34,
];

pub fn log1p<A: Arith>(a: &mut A, x: A::F) -> Result<A::F, A::E> {
    let one = a.cf(1.0)?;
    let two = a.cf(2.0)?;
    let u = a.add(x, one)?;
    // c = (1 + x) - u exactly.
    let ux = a.sub(u, x)?;
    let c_big = a.sub(one, ux)?;
    let u1 = a.sub(u, one)?;
    let c_small = a.sub(x, u1)?;
    let big = a.lt(two, u)?;
    let c = a.sel(big, c_big, c_small)?;
    let cu = a.div(c, u)?;
    // Keep log2_dd's input positive, finite and normal; the special cases
    // are selected below.
    let tiny = a.cf(f32::MIN_POSITIVE)?;
    let huge = a.cf(f32::MAX)?;
    let uc = a.max(u, tiny)?;
    let uc = a.min(uc, huge)?;
    let zero = a.cf(0.0)?;
    let (h, l) = log2_dd(a, uc, zero)?;
    let lh = a.cf(std::f32::consts::LN_2)?;
    let ll = a.cf(-1.904_654_2e-9)?;
    let ph = a.mul(h, lh)?;
    let nph = a.neg(ph)?;
    let pe = a.fma(h, lh, nph)?;
    let x1 = a.mul(l, lh)?;
    let x2 = a.fma(h, ll, x1)?;
    let pl = a.add(pe, x2)?;
    let pl = a.add(pl, cu)?;
    let y = a.add(ph, pl)?;
    // Special values: ±0 → ±0, -1 → -inf, < -1 → NaN, +inf → +inf, NaN → NaN.
    let z = a.eq(x, zero)?;
    let y = a.sel(z, x, y)?;
    let m1 = a.cf(-1.0)?;
    let ninf = a.cf(f32::NEG_INFINITY)?;
    let is_m1 = a.eq(x, m1)?;
    let y = a.sel(is_m1, ninf, y)?;
    let nan = a.cf(f32::NAN)?;
    let below = a.lt(x, m1)?;
    let y = a.sel(below, nan, y)?;
    let inf = a.cf(f32::INFINITY)?;
    let is_inf = a.eq(x, inf)?;
    let y = a.sel(is_inf, inf, y)?;
    let xn = a.is_nan(x)?;
    a.sel(xn, x, y)
}

/// expm1(r) = r + r²·M(r), |r| ≤ ln2/2 + 0.0005.
const EXPM1: [f32; 7] = [
    0.5,
    0.166_666_67,
    0.041_666_668,
    0.008_333_298,
    0.001_388_885_4,
    0.000_198_994_41,
    2.485_974_6e-5,
];

pub fn expm1<A: Arith>(a: &mut A, x: A::F) -> Result<A::F, A::E> {
    // Beyond [-80, 89] the result is -1 or +inf; clamping keeps 2^(j-1) normal.
    let lo = a.cf(-80.0)?;
    let hi = a.cf(89.0)?;
    let xc = a.max(x, lo)?;
    let xc = a.min(xc, hi)?;
    let l2e = a.cf(std::f32::consts::LOG2_E)?;
    let m = a.cf(MAGIC)?;
    let k = a.fma(xc, l2e, m)?;
    let (jf, ji) = round_int(a, k)?;
    let nj = a.neg(jf)?;
    let ln2h = a.cf(0.693_145_75)?; // 0x3F317200: j·ln2h is exact
    let ln2l = a.cf(1.428_606_8e-6)?;
    let r = a.fma(nj, ln2h, xc)?;
    let r = a.fma(nj, ln2l, r)?;
    let r2 = a.mul(r, r)?;
    let q = horner(a, r, &EXPM1)?;
    let p = a.fma(r2, q, r)?;
    // 2·(2^(j-1)·p + (2^(j-1) - 1/2)): 2^(j-1) - 1/2 is exact for j ≤ 25.
    let one_i = a.ci(1)?;
    let jm1 = a.isub(ji, one_i)?;
    let s = pow2i(a, jm1)?;
    let half = a.cf(0.5)?;
    let sm = a.sub(s, half)?;
    let t = a.fma(s, p, sm)?;
    let y = a.add(t, t)?;
    // 25 ≤ j ≤ 126, where 2^(j-1) - 1/2 is inexact: 2^j·p + 2^j as S + e
    // (fast two-sum: |2^j·p| < 2^j), then S + (e - 1), one rounding.
    let s2 = a.add(s, s)?;
    let sp = a.mul(s2, p)?; // exact
    let big_s = a.add(s2, sp)?;
    let bd = a.sub(big_s, s2)?;
    let e = a.sub(sp, bd)?;
    let one = a.cf(1.0)?;
    let em1 = a.sub(e, one)?;
    let y_big = a.add(big_s, em1)?;
    let c25 = a.ci(25)?;
    let c127 = a.ci(127)?;
    let lt25 = a.ilt(ji, c25)?;
    let ge25 = a.not(lt25)?;
    let lt127 = a.ilt(ji, c127)?;
    let big = a.and(ge25, lt127)?;
    let y = a.sel(big, y_big, y)?;
    // j = 0: p itself (2·(p/2) would lose the last bit of a subnormal p).
    let zero_i = a.ci(0)?;
    let j0 = a.ieq(ji, zero_i)?;
    let y = a.sel(j0, p, y)?;
    // ±0 → ±0, NaN → NaN.
    let zero = a.cf(0.0)?;
    let z = a.eq(x, zero)?;
    let y = a.sel(z, x, y)?;
    let xn = a.is_nan(x)?;
    a.sel(xn, x, y)
}

/// erf(x) = x + x·R(x²) for |x| < ERF_SPLIT.
const ERF_SMALL: [f32; 7] = [
    0.128_379_17,
    -0.376_126_35,
    0.112_836_994,
    -0.026_859_593,
    0.005_201_467,
    -0.000_814_720_2,
    8.387_591e-5,
];
/// log(erfc(t)) = -t² + Q(t) for ERF_SPLIT ≤ t ≤ 4.
const ERF_LARGE: [f32; 13] = [
    3.817_308_6e-5,
    -1.128_635_8,
    0.364_150_1,
    -0.104_126_774,
    0.020_658_754,
    -0.000_913_811_96,
    -0.001_219_586_5,
    0.000_566_613_57,
    -0.000_145_161_07,
    2.443_956_5e-5,
    -2.693_978_8e-6,
    1.774_006_8e-7,
    -5.308_948_4e-9,
];
const ERF_SPLIT: f32 = 0.921_875;

pub fn erf<A: Arith>(a: &mut A, x: A::F) -> Result<A::F, A::E> {
    let t = a.abs(x)?;
    // small
    let s = a.mul(x, x)?;
    let rs = horner(a, s, &ERF_SMALL)?;
    let small = a.fma(x, rs, x)?;
    // large: 1 - exp(-t² + Q(t)), t clamped to 4 (erf rounds to 1 from 3.92)
    let four = a.cf(4.0)?;
    let tc = a.min(t, four)?;
    let q = horner(a, tc, &ERF_LARGE)?;
    let ntc = a.neg(tc)?;
    let lg = a.fma(ntc, tc, q)?;
    // exp(lg) = exp2(lg·log2 e) with the product as double-f32
    let l2h = a.cf(std::f32::consts::LOG2_E)?;
    let l2l = a.cf(1.925_963e-8)?;
    let zh = a.mul(lg, l2h)?;
    let nzh = a.neg(zh)?;
    let ze = a.fma(lg, l2h, nzh)?;
    let zl = a.fma(lg, l2l, ze)?;
    let e = exp2_dd(a, zh, zl)?;
    let one = a.cf(1.0)?;
    let big = a.sub(one, e)?;
    let nbig = a.neg(big)?;
    let zero = a.cf(0.0)?;
    let neg = a.lt(x, zero)?;
    let big = a.sel(neg, nbig, big)?;
    let split = a.cf(ERF_SPLIT)?;
    let is_small = a.lt(t, split)?;
    let y = a.sel(is_small, small, big)?;
    let xn = a.is_nan(x)?;
    a.sel(xn, x, y)
}

/// `a^b` with C's `powf` special values.
pub fn pow<A: Arith>(a: &mut A, x: A::F, y: A::F) -> Result<A::F, A::E> {
    let zero = a.cf(0.0)?;
    let one = a.cf(1.0)?;
    let ax = a.abs(x)?;
    // Subnormal |x|: scale by 2^24 first.
    let min_normal = a.cf(f32::MIN_POSITIVE)?;
    let sub = a.lt(ax, min_normal)?;
    let two24 = a.cf(16_777_216.0)?;
    let scaled = a.mul(ax, two24)?;
    let axn = a.sel(sub, scaled, ax)?;
    let c24 = a.cf(24.0)?;
    let adj = a.sel(sub, c24, zero)?;
    // Keep log2_dd's input finite and positive; 0 and inf are selected below.
    let huge = a.cf(f32::MAX)?;
    let axc = a.max(axn, min_normal)?;
    let axc = a.min(axc, huge)?;
    let (h0, l) = log2_dd(a, axc, adj)?;
    let inf = a.cf(f32::INFINITY)?;
    let ninf = a.cf(f32::NEG_INFINITY)?;
    let is0 = a.eq(ax, zero)?;
    let isinf = a.eq(ax, inf)?;
    let special = a.or(is0, isinf)?;
    let h1 = a.sel(is0, ninf, h0)?;
    let h = a.sel(isinf, inf, h1)?;
    let l = a.sel(special, zero, l)?;
    // z = y·(h + l) as double-f32
    let zh = a.mul(y, h)?;
    let nzh = a.neg(zh)?;
    let ze = a.fma(y, h, nzh)?;
    let zl = a.fma(y, l, ze)?;
    let zfin = a.abs(zh)?;
    let zfin = a.lt(zfin, inf)?;
    let zl = a.sel(zfin, zl, zero)?;
    let mag = exp2_dd(a, zh, zl)?;
    // |x| = 1: 1, also for y = ±inf (where y·0 is NaN).
    let ax1 = a.eq(ax, one)?;
    let mag = a.sel(ax1, one, mag)?;
    // y an integer? odd?
    let ay = a.abs(y)?;
    let two23 = a.cf(8_388_608.0)?;
    let two24 = a.cf(16_777_216.0)?;
    let yi = a.to_int(y)?;
    let yt = a.to_float(yi)?;
    let exact = a.eq(yt, y)?;
    let small_y = a.lt(ay, two23)?;
    let big_y = a.not(small_y)?;
    let is_int = a.or(big_y, exact)?;
    let one_i = a.ci(1)?;
    let low = a.iand(yi, one_i)?;
    let low1 = a.ieq(low, one_i)?;
    let below24 = a.lt(ay, two24)?;
    let odd = a.and(low1, below24)?;
    let odd = a.and(odd, exact)?;
    // sign: x negative (or -0) and y odd
    let xb = a.bits(x)?;
    let izero = a.ci(0)?;
    let xb_neg = a.ilt(xb, izero)?;
    let neg = a.and(xb_neg, odd)?;
    let nmag = a.neg(mag)?;
    let r = a.sel(neg, nmag, mag)?;
    // x < 0 and y not an integer: NaN
    let nan = a.cf(f32::NAN)?;
    let xlt0 = a.lt(x, zero)?;
    let ninf = a.cf(f32::NEG_INFINITY)?;
    let xfin = a.lt(ninf, x)?;
    let xlt0 = a.and(xlt0, xfin)?;
    let not_int = a.not(is_int)?;
    let bad = a.and(xlt0, not_int)?;
    let r = a.sel(bad, nan, r)?;
    let xn = a.is_nan(x)?;
    let yn = a.is_nan(y)?;
    let anynan = a.or(xn, yn)?;
    let r = a.sel(anynan, nan, r)?;
    let x1 = a.eq(x, one)?;
    let r = a.sel(x1, one, r)?;
    let y0 = a.eq(y, zero)?;
    a.sel(y0, one, r)
}

/// ⌊log2 v⌋ of a finite v ≥ 0 (subnormals scaled by 2^24 first; 0 gives −151).
fn ilogb<A: Arith>(a: &mut A, v: A::F) -> Result<A::I, A::E> {
    let min_normal = a.cf(f32::MIN_POSITIVE)?;
    let small = a.lt(v, min_normal)?;
    let two24 = a.cf(16_777_216.0)?;
    let scaled = a.mul(v, two24)?;
    let w = a.sel(small, scaled, v)?;
    let wb = a.bits(w)?;
    let e = a.shr(wb, 23)?;
    let mask = a.ci(0xff)?;
    let e = a.iand(e, mask)?;
    let (b_small, b_normal) = (a.ci(127 + 24)?, a.ci(127)?);
    let bias = a.sel_i(small, b_small, b_normal)?;
    a.isub(e, bias)
}

/// 2^j for j in 0..=127, from its bits.
fn pow2<A: Arith>(a: &mut A, j: A::I) -> Result<A::F, A::E> {
    let bias = a.ci(127)?;
    let e = a.iadd(j, bias)?;
    let b = a.shl(e, 23)?;
    a.bits_to_f(b)
}

/// `x % y` as C's `fmodf`: the remainder with the sign of x, exact (it is
/// always representable). Long division: r = |x| is reduced modulo
/// s = |y|·2^k with k = max(⌊log2 r⌋ − ⌊log2 |y|⌋ − 23, 0), so the quotient
/// r/s < 2^24 and q = trunc(r/s) is an exact integer; r − q·s (one FMA) is a
/// multiple of s's ulp in (−s, s), hence exact, and when the rounded
/// division overshot by one (r − q·s < 0) adding s back is exact too. Each
/// step lowers the exponent gap by 23, from at most 127 + 149 = 276, so
/// 1 + ⌈max(gap − 23, 0) / 23⌉ ≤ 12 steps end with k = 0 and 0 ≤ r < |y|;
/// a step after that leaves r as it is. The steps run as a loop of
/// 1 + ⌈max(gap − 23, 0) / 16⌉ trips, at most 12 (one for operands of
/// similar size). NaN for a NaN operand, y = 0 or an infinite x; x for an
/// infinite y.
pub fn fmod<A: Arith>(a: &mut A, x: A::F, y: A::F) -> Result<A::F, A::E> {
    let (ax, ay) = (a.abs(x)?, a.abs(y)?);
    let (zero_i, zero) = (a.ci(0)?, a.cf(0.0)?);
    let (bits23, max_k1) = (a.ci(23)?, a.ci(127)?);
    let ey = ilogb(a, ay)?;
    let gap = ilogb(a, ax)?;
    let gap = a.isub(gap, ey)?;
    let m = a.isub(gap, bits23)?;
    let neg = a.ilt(m, zero_i)?;
    let m = a.sel_i(neg, zero_i, m)?;
    let fifteen = a.ci(15)?;
    let m = a.iadd(m, fifteen)?;
    let m = a.shr(m, 4)?;
    let one = a.ci(1)?;
    let trips = a.iadd(m, one)?;
    let twelve = a.ci(12)?;
    let many = a.ilt(twelve, trips)?;
    let trips = a.sel_i(many, twelve, trips)?;
    // The loop body reads the values above from the enclosing scope.
    let r = a.repeat(trips, ax, &mut |a, r| {
        let er = ilogb(a, r)?;
        let gap = a.isub(er, ey)?;
        let k = a.isub(gap, bits23)?;
        let neg = a.ilt(k, zero_i)?;
        let k = a.sel_i(neg, zero_i, k)?;
        // s = |y|·2^k in two exact scalings (2^k may pass f32's range; s ≤ r does not).
        let big = a.ilt(max_k1, k)?;
        let k1 = a.sel_i(big, max_k1, k)?;
        let k2 = a.isub(k, k1)?;
        let (p1, p2) = (pow2(a, k1)?, pow2(a, k2)?);
        let s = a.mul(ay, p1)?;
        let s = a.mul(s, p2)?;
        let q = a.div(r, s)?;
        let q = a.to_int(q)?;
        let q = a.to_float(q)?;
        let nq = a.neg(q)?;
        let r1 = a.fma(nq, s, r)?;
        let over = a.lt(r1, zero)?;
        let back = a.add(r1, s)?;
        a.sel(over, back, r1)
    })?;
    let xb = a.bits(x)?;
    let negative = a.ilt(xb, zero_i)?;
    let nr = a.neg(r)?;
    let r = a.sel(negative, nr, r)?;
    let inf = a.cf(f32::INFINITY)?;
    let (xn, yn) = (a.is_nan(x)?, a.is_nan(y)?);
    let (y0, xinf, yinf) = (a.eq(ay, zero)?, a.eq(ax, inf)?, a.eq(ay, inf)?);
    let bad = a.or(xn, yn)?;
    let bad = a.or(bad, y0)?;
    let bad = a.or(bad, xinf)?;
    let r = a.sel(yinf, x, r)?;
    let nan = a.cf(f32::NAN)?;
    a.sel(bad, nan, r)
}
