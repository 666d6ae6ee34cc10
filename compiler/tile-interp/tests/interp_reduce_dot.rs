//! The interpreter's reductions, `dot` and layout ops against Rust
//! references on fresh random inputs (seed printed; set TILE_TEST_SEED to
//! replay): reductions along each axis with edge values and NaN, matmul in
//! every operand dtype, TF32 rounding, transposes, broadcasts and `if`.

mod common;

use common::*;
use rand::Rng;
use tile_interp::{self as interp, Arg, Buffer};
use tile_ir::builder::Builder;
use tile_ir::{self as tir, BinaryOp, CmpOp, Const, Op, ReduceOp, Scalar, Span, Type};
use tile_testkit::{assert_bits_eq, assert_close, Tolerance};

/// Reference tree sum (see the interpreter's documented order).
fn tree_sum(v: &[f32]) -> f32 {
    if v.len() == 1 {
        return v[0];
    }
    let h = v.len().div_ceil(2);
    let w: Vec<f32> = (0..h)
        .map(|i| {
            if i + h < v.len() {
                v[i] + v[i + h]
            } else {
                v[i]
            }
        })
        .collect();
    tree_sum(&w)
}

#[test]
fn reductions_along_each_axis() {
    let mut rng = tile_testkit::rng(seed());
    let (r, c, rows, cols) = (16u32, 64u32, 13usize, 50usize);
    let x: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-3.0f32..3.0))
        .collect();
    for axis in [0u32, 1] {
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            let other = match op {
                ReduceOp::Sum => 0.0,
                ReduceOp::Max => f64::NEG_INFINITY,
                ReduceOp::Min => f64::INFINITY,
            };
            let pad = |v: &[f32]| -> Vec<f32> {
                // pad a lane to the tile's length with `other`, as the masked load does
                let mut w = v.to_vec();
                w.resize(
                    if axis == 0 { r as usize } else { c as usize },
                    other as f32,
                );
                w
            };
            let lanes: Vec<Vec<f32>> = if axis == 0 {
                (0..cols)
                    .map(|j| (0..rows).map(|i| x[i * cols + j]).collect())
                    .collect()
            } else {
                (0..rows)
                    .map(|i| x[i * cols..(i + 1) * cols].to_vec())
                    .collect()
            };
            let fold = |v: &[f32]| -> f32 {
                let v = pad(v);
                match op {
                    ReduceOp::Sum => tree_sum(&v),
                    ReduceOp::Max => v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    ReduceOp::Min => v.iter().copied().fold(f32::INFINITY, f32::min),
                }
            };
            for s in [Scalar::F32, Scalar::BF16] {
                let k = reduce_kernel(op, s, r, c, axis, other);
                let xin = Buffer::from_f32_as(s, &x);
                let xr = xin.to_f32_vec(); // the values as stored (bf16-rounded)
                let lanes: Vec<Vec<f32>> = lanes
                    .iter()
                    .enumerate()
                    .map(|(li, l)| {
                        l.iter()
                            .enumerate()
                            .map(|(ei, _)| {
                                if axis == 0 {
                                    xr[ei * cols + li]
                                } else {
                                    xr[li * cols + ei]
                                }
                            })
                            .collect()
                    })
                    .collect();
                let n_out = lanes.len();
                let y = Buffer::zeros(s, n_out + 3);
                y.fill_f32(f32::NAN);
                interp::run(
                    &k,
                    [1, 1, 1],
                    &[
                        Arg::Buffer(&xin),
                        Arg::Buffer(&y),
                        Arg::I32(rows as i32),
                        Arg::I32(cols as i32),
                    ],
                )
                .unwrap();
                let got = y.to_f32_vec();
                assert!(got[n_out..].iter().all(|v| v.is_nan()));
                let want: Vec<f32> = lanes
                    .iter()
                    .map(|l| Buffer::from_f32_as(s, &[fold(l)]).to_f32_vec()[0])
                    .collect();
                assert_bits_eq(&format!("{op:?} axis {axis} {s:?}"), &got[..n_out], &want);
                if op == ReduceOp::Sum {
                    let want64: Vec<f32> = lanes
                        .iter()
                        .map(|l| l.iter().map(|&v| v as f64).sum::<f64>() as f32)
                        .collect();
                    let tol = if s == Scalar::BF16 { 2e-2 } else { 1e-5 };
                    assert_close(
                        "sum vs f64",
                        &got[..n_out],
                        &want64,
                        Tolerance {
                            abs: 1e-4,
                            rel: tol,
                        },
                    );
                }
            }
        }
    }
}

#[test]
fn reduction_edge_values() {
    // NaN is ignored by max/min unless all are NaN; sum propagates NaN and inf.
    let x = [
        f32::NAN,
        1.0,
        -2.0,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
        f32::NAN,
    ];
    let k = reduce_kernel(ReduceOp::Max, Scalar::F32, 2, 4, 1, f64::NEG_INFINITY);
    let y = Buffer::zeros(Scalar::F32, 2);
    interp::run(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&Buffer::from_f32(&x)),
            Arg::Buffer(&y),
            Arg::I32(2),
            Arg::I32(4),
        ],
    )
    .unwrap();
    let got = y.to_f32_vec();
    assert_eq!(got[0], 1.0);
    assert!(got[1].is_nan());
    let x = [
        1.0,
        f32::INFINITY,
        2.0,
        3.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
    ];
    let k = reduce_kernel(ReduceOp::Sum, Scalar::F32, 2, 4, 1, 0.0);
    interp::run(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&Buffer::from_f32(&x)),
            Arg::Buffer(&y),
            Arg::I32(2),
            Arg::I32(4),
        ],
    )
    .unwrap();
    let got = y.to_f32_vec();
    assert_eq!(got[0], f32::INFINITY);
    assert!(got[1].is_nan());
}

/// max/min reductions are maxNum/minNum (docs/LANGUAGE.md): NaN elements are
/// ignored, a lane of only NaN reduces to NaN (not to ±inf, what the GPU's
/// replicated threads once contributed: fz_1796224093_{25,83,251}), along
/// either axis, for every float type.
#[test]
fn max_min_reductions_ignore_nan_unless_all_nan() {
    let nan = f32::NAN;
    // 4 × 4: row 0 all NaN, row 1 one number, row 2 ±inf among NaN, row 3 numbers.
    #[rustfmt::skip]
    let x = [
        nan, nan, nan, nan,
        nan, -3.0, nan, nan,
        f32::NEG_INFINITY, nan, f32::INFINITY, nan,
        1.0, -2.0, 0.5, 4.0,
    ];
    let (ninf, inf) = (f32::NEG_INFINITY, f32::INFINITY);
    for s in [Scalar::F32, Scalar::BF16, Scalar::F16] {
        for (op, axis, want) in [
            (ReduceOp::Max, 1, [nan, -3.0, inf, 4.0]),
            (ReduceOp::Min, 1, [nan, -3.0, ninf, -2.0]),
            (ReduceOp::Max, 0, [1.0, -2.0, inf, 4.0]),
            (ReduceOp::Min, 0, [ninf, -3.0, 0.5, 4.0]),
        ] {
            // `other` (the masked-off value) is never read: the whole tile is in bounds.
            let k = reduce_kernel(op, s, 4, 4, axis, 0.0);
            let y = Buffer::zeros(s, 4);
            interp::run(
                &k,
                [1, 1, 1],
                &[
                    Arg::Buffer(&Buffer::from_f32_as(s, &x)),
                    Arg::Buffer(&y),
                    Arg::I32(4),
                    Arg::I32(4),
                ],
            )
            .unwrap();
            assert_bits_eq(&format!("{op:?} axis {axis} {s:?}"), &y.to_f32_vec(), &want);
        }
        // A whole column of NaN, along axis 0.
        let k = reduce_kernel(ReduceOp::Max, s, 4, 4, 0, 0.0);
        let y = Buffer::zeros(s, 4);
        let col_nan: Vec<f32> = (0..16)
            .map(|i| if i % 4 == 1 { nan } else { i as f32 })
            .collect();
        interp::run(
            &k,
            [1, 1, 1],
            &[
                Arg::Buffer(&Buffer::from_f32_as(s, &col_nan)),
                Arg::Buffer(&y),
                Arg::I32(4),
                Arg::I32(4),
            ],
        )
        .unwrap();
        assert_bits_eq(
            &format!("Max axis 0 {s:?}, a NaN column"),
            &y.to_f32_vec(),
            &[12.0, nan, 14.0, 15.0],
        );
    }
}

// One test per operand dtype (a failure names it: `…::BF16`).
tile_testkit::dtype_tests!(dot_in_a_k_loop_matches_reference, [BF16, F16, F32], |s| {
    let mut rng = tile_testkit::rng(seed());
    let (m, n, k) = (37usize, 45usize, 70usize);
    let a = Buffer::from_f32_as(
        s,
        &(0..m * k)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect::<Vec<_>>(),
    );
    let bb = Buffer::from_f32_as(
        s,
        &(0..k * n)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect::<Vec<_>>(),
    );
    let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let c = Buffer::from_f32(&c0);
    let kern = matmul_kernel(s, 16, 32, 16);
    let grid = [cdiv(m, 16), cdiv(n, 32), 1];
    interp::run(
        &kern,
        grid,
        &[
            Arg::Buffer(&a),
            Arg::Buffer(&bb),
            Arg::Buffer(&c),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
        ],
    )
    .unwrap();
    let (af, bf) = (a.to_f32_vec(), bb.to_f32_vec());
    let tf = |x: f32| {
        if s == Scalar::F32 {
            interp::round_tf32(x)
        } else {
            x
        }
    };
    // same order as documented: acc, then k = 0, 1, … (the K loop pads with zeros, which add exactly 0)
    let want: Vec<f32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            let mut acc = c0[idx];
            for p in 0..k {
                acc += tf(af[i * k + p]) * tf(bf[p * n + j]);
            }
            acc
        })
        .collect();
    assert_bits_eq(&format!("matmul {s:?}"), &c.to_f32_vec(), &want);
    let want64: Vec<f32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            c0[idx] as f64
                + (0..k)
                    .map(|p| af[i * k + p] as f64 * bf[p * n + j] as f64)
                    .sum::<f64>()
        } as f32)
        .collect();
    let tol = if s == Scalar::F32 { 3e-2 } else { 1e-4 };
    assert_close(
        &format!("matmul {s:?} vs f64"),
        &c.to_f32_vec(),
        &want64,
        Tolerance { abs: tol, rel: tol },
    );
});

#[test]
fn tf32_rounding() {
    assert_eq!(interp::round_tf32(1.0), 1.0);
    // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: rounds to even (1.0)
    assert_eq!(interp::round_tf32(1.0 + 2f32.powi(-11)), 1.0);
    assert_eq!(
        interp::round_tf32(1.0 + 3.0 * 2f32.powi(-11)),
        1.0 + 2.0 * 2f32.powi(-10)
    );
    assert_eq!(
        interp::round_tf32(1.0 + 2f32.powi(-11) + 2f32.powi(-20)),
        1.0 + 2f32.powi(-10)
    );
    assert!(interp::round_tf32(f32::NAN).is_nan());
    assert_eq!(interp::round_tf32(f32::INFINITY), f32::INFINITY);
    assert_eq!(interp::round_tf32(f32::MAX), f32::INFINITY);
}

#[test]
fn trans_broadcast_and_if() {
    // y[j, i] = x[i, j] * (flag ? 2 : 3) + colsum-broadcast, for an [8, 16] tile
    let mut b = Builder::new("tb");
    let x = b.ptr_param("x", Scalar::F32);
    let y = b.ptr_param("y", Scalar::F32);
    let flag = b.param("flag", Type::scalar(Scalar::I32));
    let ri = b.arange(8);
    let ri = b.expand(ri, 1);
    let ci = b.arange(16);
    let ci = b.expand(ci, 0);
    let c16 = b.i32(16);
    let ro = b.mul(ri, c16);
    let offs = b.add(ro, ci);
    let p = b.add_ptr(x, offs);
    let v = b.load(p, None, None);
    let zero = b.i32(0);
    let cond = b.cmp(CmpOp::Ne, flag, zero);
    let two = b.kernel.new_value(Type::scalar(Scalar::F32));
    let three = b.kernel.new_value(Type::scalar(Scalar::F32));
    let then_body = tir::Block {
        args: vec![],
        insts: vec![
            tir::Inst {
                results: vec![two],
                op: Op::Const(Const::Float(2.0)),
                span: Span::default(),
            },
            tir::Inst {
                results: vec![],
                op: Op::Yield(vec![two]),
                span: Span::default(),
            },
        ],
    };
    let else_body = tir::Block {
        args: vec![],
        insts: vec![
            tir::Inst {
                results: vec![three],
                op: Op::Const(Const::Float(3.0)),
                span: Span::default(),
            },
            tir::Inst {
                results: vec![],
                op: Op::Yield(vec![three]),
                span: Span::default(),
            },
        ],
    };
    let scale = b.op(
        Op::If {
            cond,
            then_body,
            else_body,
        },
        Type::scalar(Scalar::F32),
    );
    let vs = b.op(Op::Splat(scale), Type::tile(Scalar::F32, vec![8, 16]));
    let sc = b.op(
        Op::Binary(BinaryOp::Mul, v, vs),
        Type::tile(Scalar::F32, vec![8, 16]),
    );
    let colsum = b.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            value: sc,
            axis: 0,
        },
        Type::tile(Scalar::F32, vec![16]),
    );
    let cs = b.op(
        Op::ExpandDims {
            value: colsum,
            axis: 0,
        },
        Type::tile(Scalar::F32, vec![1, 16]),
    );
    let csb = b.op(Op::Broadcast(cs), Type::tile(Scalar::F32, vec![8, 16]));
    let sum = b.op(
        Op::Binary(BinaryOp::Add, sc, csb),
        Type::tile(Scalar::F32, vec![8, 16]),
    );
    let t = b.op(
        Op::Trans {
            value: sum,
            perm: vec![1, 0],
        },
        Type::tile(Scalar::F32, vec![16, 8]),
    );
    let flat = b.op(Op::Reshape(t), Type::tile(Scalar::F32, vec![128]));
    let ar = b.arange(128);
    let yp = b.add_ptr(y, ar);
    b.store(yp, flat, None);
    let k = finish(b);
    let mut rng = tile_testkit::rng(seed());
    let xv: Vec<f32> = (0..128).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for flag in [0, 5] {
        let yb = Buffer::zeros(Scalar::F32, 128);
        yb.fill_f32(f32::NAN);
        interp::run(
            &k,
            [1, 1, 1],
            &[
                Arg::Buffer(&Buffer::from_f32(&xv)),
                Arg::Buffer(&yb),
                Arg::I32(flag),
            ],
        )
        .unwrap();
        let s = if flag != 0 { 2.0 } else { 3.0 };
        let scaled: Vec<f32> = xv.iter().map(|v| v * s).collect();
        let colsum: Vec<f32> = (0..16)
            .map(|j| tree_sum(&(0..8).map(|i| scaled[i * 16 + j]).collect::<Vec<_>>()))
            .collect();
        let want: Vec<f32> = (0..128)
            .map(|o| {
                let (j, i) = (o / 8, o % 8); // y is [16, 8] = transpose
                scaled[i * 16 + j] + colsum[j]
            })
            .collect();
        assert_bits_eq("trans/broadcast/if", &yb.to_f32_vec(), &want);
    }
}
