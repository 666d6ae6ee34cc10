//! Helpers of the interpreter's op-by-op tests: test kernels built with
//! `tile_ir::builder`, the edge values every float op meets, and an
//! elementwise harness that poisons the output and checks that masked-off
//! elements stay poisoned.
#![allow(dead_code)]

use rand::Rng;
use tile_interp::{self as interp, Arg, Buffer};
use tile_ir::builder::Builder;
use tile_ir::{self as tir, CmpOp, Kernel, ReduceOp, Scalar, Type, ValueId};

pub fn seed() -> u64 {
    tile_testkit::seed("")
}

pub fn finish(b: Builder) -> Kernel {
    let k = b.finish();
    tir::verify(&k).unwrap_or_else(|e| {
        panic!(
            "test kernel does not verify: {e}\n{}",
            tir::print_kernel(&k)
        )
    });
    k
}

pub fn cdiv(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

pub const EDGE_F32: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.5,
    3.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    1e-40,  // subnormal
    -1e-45, // smallest subnormal
    f32::MIN_POSITIVE,
    f32::MAX,
    f32::MIN,
    1e30,
    -1e30,
    88.5,
    -104.0,
    3.0e9,
    -3.0e9,
    1.0 + 1.0 / 256.0, // a bf16 tie
    1.0 + 3.0 / 256.0, // a bf16 tie rounding up
];

/// Random values in [-4, 4) followed by the edge values.
pub fn inputs(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect();
    for (i, &e) in EDGE_F32.iter().enumerate() {
        if i < n {
            v[n - 1 - i] = e;
        }
    }
    v
}

/// `y[i] = f(x0[i], x1[i], …)` for `i < n`, one BLOCK per program instance.
pub fn elementwise(
    ins: &[Scalar],
    out: Scalar,
    block: u32,
    f: impl FnOnce(&mut Builder, &[ValueId]) -> ValueId,
) -> Kernel {
    let mut b = Builder::new("ew");
    let xs: Vec<ValueId> = ins
        .iter()
        .enumerate()
        .map(|(i, &s)| b.ptr_param(&format!("x{i}"), s))
        .collect();
    let y = b.ptr_param("y", out);
    let n = b.param("n", Type::scalar(Scalar::I32));
    let pid = b.program_id(0);
    let bs = b.i32(block as i64);
    let start = b.mul(pid, bs);
    let ar = b.arange(block);
    let offs = b.add(start, ar);
    let mask = b.cmp(CmpOp::Lt, offs, n);
    let vals: Vec<ValueId> = xs
        .iter()
        .zip(ins)
        .map(|(&x, &s)| {
            let p = b.add_ptr(x, offs);
            // float loads fill masked lanes with an explicit 0.0, others with the default zero
            b.load(p, Some(mask), s.is_float().then_some(0.0))
        })
        .collect();
    let r = f(&mut b, &vals);
    let p = b.add_ptr(y, offs);
    b.store(p, r, Some(mask));
    finish(b)
}

/// `y = x as to` elementwise over `n` elements of `from` (BLOCK 128).
pub fn run_cast(src: &Buffer, from: Scalar, to: Scalar, n: usize) -> Buffer {
    run_ew(
        &elementwise(&[from], to, 128, |b, v| b.cast(v[0], to)),
        &[src],
        to,
        n,
        128,
    )
}

/// Run an elementwise kernel over `n` elements; the output is poisoned first
/// and must stay poisoned beyond `n`.
pub fn run_ew(k: &Kernel, ins: &[&Buffer], out: Scalar, n: usize, block: u32) -> Buffer {
    let y = Buffer::zeros(out, n + 5);
    // poison (i1 can only be poisoned with `true`)
    y.fill_f32(if out.is_float() { f32::NAN } else { -7.0 });
    let poison = y.to_bytes()[..out.size_bytes()].to_vec();
    let mut args: Vec<Arg> = ins.iter().map(|b| Arg::Buffer(b)).collect();
    args.push(Arg::Buffer(&y));
    args.push(Arg::I32(n as i32));
    interp::run(k, [cdiv(n, block as usize), 1, 1], &args).unwrap();
    let bytes = y.to_bytes();
    for (i, e) in bytes.chunks(out.size_bytes()).enumerate().skip(n) {
        assert_eq!(e, poison, "masked-off element {i} was written");
    }
    Buffer::from_bytes(out, &y.to_bytes()[..n * out.size_bytes()]).unwrap()
}

/// A 2-D tile [R, C] loaded from a row-major `rows × cols` matrix with masks,
/// reduced along `axis`, stored as a 1-D result (masked to the valid length).
pub fn reduce_kernel(op: ReduceOp, s: Scalar, r: u32, c: u32, axis: u32, other: f64) -> Kernel {
    let mut b = Builder::new("reduce");
    let x = b.ptr_param("x", s);
    let y = b.ptr_param("y", s);
    let rows = b.param("rows", Type::scalar(Scalar::I32));
    let cols = b.param("cols", Type::scalar(Scalar::I32));
    let ri = b.arange(r);
    let ri = b.expand(ri, 1);
    let ci = b.arange(c);
    let ci = b.expand(ci, 0);
    let rm = b.cmp(CmpOp::Lt, ri, rows);
    let cm = b.cmp(CmpOp::Lt, ci, cols);
    let mask = b.and(rm, cm);
    let ro = b.mul(ri, cols);
    let offs = b.add(ro, ci);
    let p = b.add_ptr(x, offs);
    let v = b.load(p, Some(mask), Some(other));
    let red = b.reduce(op, v, axis);
    let (idx, lim) = if axis == 0 {
        (b.arange(c), cols)
    } else {
        (b.arange(r), rows)
    };
    let m = b.cmp(CmpOp::Lt, idx, lim);
    let q = b.add_ptr(y, idx);
    b.store(q, red, Some(m));
    finish(b)
}

/// C[M×N] = A[M×K] @ B[K×N] (+ C0), one BM×BN tile per program, looping over K by BK.
pub fn matmul_kernel(s: Scalar, bm: u32, bn: u32, bk: u32) -> Kernel {
    let mut b = Builder::new("matmul");
    let a = b.ptr_param("a", s);
    let bp = b.ptr_param("b", s);
    let c = b.ptr_param("c", Scalar::F32);
    let m = b.param("m", Type::scalar(Scalar::I32));
    let n = b.param("n", Type::scalar(Scalar::I32));
    let kk = b.param("k", Type::scalar(Scalar::I32));
    let pm = b.program_id(0);
    let pn = b.program_id(1);
    let bmv = b.i32(bm as i64);
    let bnv = b.i32(bn as i64);
    let r0 = b.mul(pm, bmv);
    let c0 = b.mul(pn, bnv);
    let ar = b.arange(bm);
    let rows = b.add(r0, ar);
    let rows = b.expand(rows, 1); // [BM,1]
    let ac = b.arange(bn);
    let cols = b.add(c0, ac);
    let cols = b.expand(cols, 0); // [1,BN]
    let ak = b.arange(bk);
    let kr = b.expand(ak, 0); // [1,BK]
    let kc = b.expand(ak, 1); // [BK,1]
                              // acc starts from C (so dot's acc operand is exercised with real data)
    let rm = b.cmp(CmpOp::Lt, rows, m);
    let cm = b.cmp(CmpOp::Lt, cols, n);
    let cmask = b.and(rm, cm);
    let co = b.mul(rows, n);
    let co = b.add(co, cols);
    let cptr = b.add_ptr(c, co);
    let acc0 = b.load(cptr, Some(cmask), Some(0.0));
    let zero = b.i32(0);
    let step = b.i32(bk as i64);
    let res = b.for_loop(zero, kk, step, &[acc0], |b, k0, carried| {
        let kcol = b.add(k0, kr); // [1,BK]
        let krow = b.add(k0, kc); // [BK,1]
        let am1 = b.cmp(CmpOp::Lt, rows, m);
        let am2 = b.cmp(CmpOp::Lt, kcol, kk);
        let amask = b.and(am1, am2);
        let ao = b.mul(rows, kk);
        let ao = b.add(ao, kcol);
        let ap = b.add_ptr(a, ao);
        let at = b.load(ap, Some(amask), Some(0.0));
        let bm1 = b.cmp(CmpOp::Lt, krow, kk);
        let bm2 = b.cmp(CmpOp::Lt, cols, n);
        let bmask = b.and(bm1, bm2);
        let bo = b.mul(krow, n);
        let bo = b.add(bo, cols);
        let bpp = b.add_ptr(bp, bo);
        let bt = b.load(bpp, Some(bmask), Some(0.0));
        vec![b.dot(at, bt, carried[0])]
    });
    b.store(cptr, res[0], Some(cmask));
    finish(b)
}
