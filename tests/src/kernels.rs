//! Kernels built directly as TIR (no parser), exercising code generation's
//! hard parts: 2-D reductions along either axis, broadcasts through shared
//! memory, runtime loops with carried tiles, and `dot` on tensor cores.

use tilec::tir::builder::Builder;
use tilec::tir::{BinaryOp, CmpOp, Kernel, ReduceOp, Scalar, UnaryOp};

/// `out[r] = Σ_c x[r, c]` (axis 1) and `col[c] = Σ_r x[r, c]` over an `R×C` f32 matrix;
/// each program handles ROWS rows with all C ≤ BC columns.
pub fn row_col_sum(rows: u32, bc: u32) -> Kernel {
    let mut b = Builder::new("row_col_sum");
    let x = b.ptr_param("x", Scalar::F32);
    let out = b.ptr_param("out", Scalar::F32);
    let col = b.ptr_param("col", Scalar::F32);
    let nr = b.param("n_rows", tilec::tir::Type::scalar(Scalar::I32));
    let nc = b.param("n_cols", tilec::tir::Type::scalar(Scalar::I32));
    let pid = b.program_id(0);
    let rows_c = b.i32(rows as i64);
    let r0 = b.mul(pid, rows_c);
    let ar = b.arange(rows);
    let r = b.add(r0, ar); // [ROWS]
    let c = b.arange(bc); // [BC]
    let r2 = b.expand(r, 1); // [ROWS, 1]
    let c2 = b.expand(c, 0); // [1, BC]
    let rm = b.cmp(CmpOp::Lt, r2, nr);
    let cm = b.cmp(CmpOp::Lt, c2, nc);
    let mask = b.and(rm, cm); // [ROWS, BC]
    let off = b.mul(r2, nc);
    let off = b.add(off, c2);
    let p = b.add_ptr(x, off);
    let v = b.load(p, Some(mask), Some(0.0));
    let s = b.reduce(ReduceOp::Sum, v, 1); // [ROWS]
    let po = b.add_ptr(out, r);
    let rmask = b.cmp(CmpOp::Lt, r, nr);
    b.store(po, s, Some(rmask));
    // Column sums of this block of rows, accumulated with atomics.
    let cs = b.reduce(ReduceOp::Sum, v, 0); // [BC]
    let pc = b.add_ptr(col, c);
    let cmask = b.cmp(CmpOp::Lt, c, nc);
    let t = b.ty(cs);
    b.op(
        tilec::tir::Op::AtomicAdd {
            ptr: pc,
            value: cs,
            mask: Some(cmask),
        },
        t,
    );
    b.finish()
}

/// Row softmax of a bf16 matrix in f32, one row per program (n ≤ BLOCK).
pub fn softmax(block: u32) -> Kernel {
    let mut b = Builder::new("softmax");
    let x = b.ptr_param("x", Scalar::BF16);
    let y = b.ptr_param("y", Scalar::BF16);
    let n = b.param("n", tilec::tir::Type::scalar(Scalar::I32));
    let row = b.program_id(0);
    let cols = b.arange(block);
    let mask = b.cmp(CmpOp::Lt, cols, n);
    let base = b.mul(row, n);
    let off = b.add(base, cols);
    let px = b.add_ptr(x, off);
    let v = b.load(px, Some(mask), Some(f64::NEG_INFINITY));
    let v = b.cast(v, Scalar::F32);
    let m = b.reduce(ReduceOp::Max, v, 0);
    let d = b.binary(BinaryOp::Sub, v, m);
    let e = b.unary(UnaryOp::Exp, d);
    let s = b.reduce(ReduceOp::Sum, e, 0);
    let o = b.binary(BinaryOp::Div, e, s);
    let o = b.cast(o, Scalar::BF16);
    let py = b.add_ptr(y, off);
    b.store(py, o, Some(mask));
    b.finish()
}

/// `c = a @ b` (bf16 in, f32 out), BM×BN tiles per program, a K loop of BK steps, ragged edges masked.
pub fn matmul(bm: u32, bn: u32, bk: u32) -> Kernel {
    let mut b = Builder::new("matmul");
    let a = b.ptr_param("a", Scalar::BF16);
    let bb = b.ptr_param("b", Scalar::BF16);
    let c = b.ptr_param("c", Scalar::F32);
    let i32t = tilec::tir::Type::scalar(Scalar::I32);
    let m = b.param("m", i32t.clone());
    let n = b.param("n", i32t.clone());
    let k = b.param("k", i32t);
    let pm = b.program_id(0);
    let pn = b.program_id(1);
    let bmc = b.i32(bm as i64);
    let bnc = b.i32(bn as i64);
    let rm0 = b.mul(pm, bmc);
    let rn0 = b.mul(pn, bnc);
    let am = b.arange(bm);
    let an = b.arange(bn);
    let ak = b.arange(bk);
    let rm = b.add(rm0, am); // [BM]
    let rn = b.add(rn0, an); // [BN]
    let rm2 = b.expand(rm, 1); // [BM,1]
    let rn2 = b.expand(rn, 0); // [1,BN]
    let rk_row = b.expand(ak, 0); // [1,BK]
    let rk_col = b.expand(ak, 1); // [BK,1]
    let zero = b.f32(0.0);
    let acc0 = b.splat(zero, &[bm, bn]);
    let lb = b.i32(0);
    let step = b.i32(bk as i64);
    let res = b.for_loop(lb, k, step, &[acc0], |b, k0, carried| {
        // a tile [BM, BK]
        let kk_r = b.add(rk_row, k0);
        let a_off = b.mul(rm2, k);
        let a_off = b.add(a_off, kk_r);
        let a_m1 = b.cmp(CmpOp::Lt, rm2, m);
        let a_m2 = b.cmp(CmpOp::Lt, kk_r, k);
        let a_mask = b.and(a_m1, a_m2);
        let pa = b.add_ptr(a, a_off);
        let ta = b.load(pa, Some(a_mask), Some(0.0));
        // b tile [BK, BN]
        let kk_c = b.add(rk_col, k0);
        let b_off = b.mul(kk_c, n);
        let b_off = b.add(b_off, rn2);
        let b_m1 = b.cmp(CmpOp::Lt, kk_c, k);
        let b_m2 = b.cmp(CmpOp::Lt, rn2, n);
        let b_mask = b.and(b_m1, b_m2);
        let pb = b.add_ptr(bb, b_off);
        let tb = b.load(pb, Some(b_mask), Some(0.0));
        vec![b.dot(ta, tb, carried[0])]
    });
    let c_off = b.mul(rm2, n);
    let c_off = b.add(c_off, rn2);
    let c_m1 = b.cmp(CmpOp::Lt, rm2, m);
    let c_m2 = b.cmp(CmpOp::Lt, rn2, n);
    let c_mask = b.and(c_m1, c_m2);
    let pc = b.add_ptr(c, c_off);
    b.store(pc, res[0], Some(c_mask));
    b.finish()
}

/// Every kernel of this module with the configs the GPU test runs: (kernel, meta, warps).
pub fn all() -> Vec<(Kernel, Vec<(String, i64)>, u32)> {
    let mut v = Vec::new();
    for (rows, bc, w) in [(4, 256, 4), (16, 64, 4), (1, 1024, 8), (32, 32, 2)] {
        v.push((
            row_col_sum(rows, bc),
            vec![("ROWS".into(), rows as i64), ("BC".into(), bc as i64)],
            w,
        ));
    }
    for (blk, w) in [(1024, 4), (4096, 8), (128, 4)] {
        v.push((softmax(blk), vec![("BLOCK".into(), blk as i64)], w));
    }
    for (bm, bn, bk, w) in [
        (64, 64, 32, 4),
        (128, 128, 32, 8),
        (16, 16, 16, 1),
        (128, 64, 64, 4),
    ] {
        v.push((
            matmul(bm, bn, bk),
            vec![
                ("BM".into(), bm as i64),
                ("BN".into(), bn as i64),
                ("BK".into(), bk as i64),
            ],
            w,
        ));
    }
    v
}
