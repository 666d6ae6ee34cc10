//! Property tests of the interpreter's shape ops on random 1-D to 4-D shapes:
//! `trans`, `broadcast` and `reduce` against naive index arithmetic.

use proptest::prelude::*;
use tile_interp::{self as interp, Arg, Buffer};
use tile_ir::builder::Builder;
use tile_ir::{self as tir, Elem, Op, ReduceOp, Scalar, Type};

fn strides(shape: &[u32]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as usize;
    }
    s
}

/// Multi-index of flat index `i` in `shape`.
fn unflatten(mut i: usize, shape: &[u32]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d] as usize;
        i /= shape[d] as usize;
    }
    idx
}

/// A kernel that loads `n_in` f32 as `in_shape`, applies `f`, and stores the
/// flattened result of `out_numel` elements.
fn shape_kernel(
    in_shape: &[u32],
    f: impl FnOnce(&mut Builder, tir::ValueId) -> tir::ValueId,
) -> tir::Kernel {
    let n_in: u32 = in_shape.iter().product();
    let mut b = Builder::new("shapes");
    let x = b.ptr_param("x", Scalar::F32);
    let y = b.ptr_param("y", Scalar::F32);
    let ar = b.arange(n_in);
    let p = b.add_ptr(x, ar);
    let v = b.load(p, None, None);
    let t = b.op(Op::Reshape(v), Type::tile(Scalar::F32, in_shape.to_vec()));
    let r = f(&mut b, t);
    let out_n = b.ty(r).numel() as u32;
    let flat = if b.ty(r).shape.len() == 1 {
        r
    } else {
        b.op(Op::Reshape(r), Type::tile(Scalar::F32, vec![out_n]))
    };
    let ao = b.arange(out_n);
    let ys = b.op(
        Op::Splat(y),
        Type {
            elem: Elem::Ptr(Scalar::F32),
            shape: vec![out_n],
        },
    );
    let q = b.op(
        Op::AddPtr {
            ptr: ys,
            offset: ao,
        },
        Type {
            elem: Elem::Ptr(Scalar::F32),
            shape: vec![out_n],
        },
    );
    b.store(q, flat, None);
    let k = b.finish();
    tir::verify(&k).unwrap_or_else(|e| panic!("{e}\n{}", tir::print_kernel(&k)));
    k
}

fn run(k: &tir::Kernel, x: &[f32], out_n: usize) -> Vec<f32> {
    let y = Buffer::zeros(Scalar::F32, out_n);
    y.fill_f32(f32::NAN);
    interp::run(
        k,
        [1, 1, 1],
        &[Arg::Buffer(&Buffer::from_f32(x)), Arg::Buffer(&y)],
    )
    .unwrap();
    y.to_f32_vec()
}

fn shape_strategy() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..4, 1..=4).prop_map(|v| v.into_iter().map(|e| 1 << e).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn trans_permutes(shape in shape_strategy(), seed in any::<u64>()) {
        let rank = shape.len();
        let mut perm: Vec<u32> = (0..rank as u32).collect();
        // a seeded shuffle
        let mut s = seed;
        for i in (1..rank).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            perm.swap(i, (s >> 33) as usize % (i + 1));
        }
        let out_shape: Vec<u32> = perm.iter().map(|&p| shape[p as usize]).collect();
        let k = shape_kernel(&shape, |b, t| {
            b.op(Op::Trans { value: t, perm: perm.clone() }, Type::tile(Scalar::F32, out_shape.clone()))
        });
        let n: usize = shape.iter().map(|&d| d as usize).product();
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let got = run(&k, &x, n);
        let st = strides(&shape);
        let want: Vec<f32> = (0..n)
            .map(|o| {
                let oi = unflatten(o, &out_shape);
                // out[oi] = in[j] with j[perm[d]] = oi[d]
                let src: usize = (0..rank).map(|d| oi[d] * st[perm[d] as usize]).sum();
                x[src]
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn broadcast_repeats(out_shape in shape_strategy(), ones in any::<u8>()) {
        let src: Vec<u32> = out_shape.iter().enumerate().map(|(d, &s)| if ones >> d & 1 == 1 { 1 } else { s }).collect();
        let k = shape_kernel(&src, |b, t| b.op(Op::Broadcast(t), Type::tile(Scalar::F32, out_shape.clone())));
        let n_in: usize = src.iter().map(|&d| d as usize).product();
        let n: usize = out_shape.iter().map(|&d| d as usize).product();
        let x: Vec<f32> = (0..n_in).map(|i| i as f32 + 0.5).collect();
        let got = run(&k, &x, n);
        let st = strides(&src);
        let want: Vec<f32> = (0..n)
            .map(|o| {
                let oi = unflatten(o, &out_shape);
                x[(0..src.len()).map(|d| if src[d] == 1 { 0 } else { oi[d] * st[d] }).sum::<usize>()]
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn reduce_any_axis(shape in shape_strategy().prop_filter("rank >= 2", |s| s.len() >= 2), axis_seed in any::<usize>(), op in 0usize..3) {
        let axis = axis_seed % shape.len();
        let op = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min][op];
        let mut out_shape = shape.clone();
        out_shape.remove(axis);
        let k = shape_kernel(&shape, |b, t| b.reduce(op, t, axis as u32));
        let n: usize = shape.iter().map(|&d| d as usize).product();
        // small integers: every order of summation is exact
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let n_out: usize = out_shape.iter().map(|&d| d as usize).product();
        let got = run(&k, &x, n_out);
        let st = strides(&shape);
        let want: Vec<f32> = (0..n_out)
            .map(|o| {
                let oi = unflatten(o, &out_shape);
                let vals = (0..shape[axis] as usize).map(|a| {
                    let mut idx = oi.clone();
                    idx.insert(axis, a);
                    x[(0..shape.len()).map(|d| idx[d] * st[d]).sum::<usize>()]
                });
                match op {
                    ReduceOp::Sum => vals.sum(),
                    ReduceOp::Max => vals.fold(f32::NEG_INFINITY, f32::max),
                    ReduceOp::Min => vals.fold(f32::INFINITY, f32::min),
                }
            })
            .collect();
        prop_assert_eq!(got, want);
    }
}
