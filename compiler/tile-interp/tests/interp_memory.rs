//! The interpreter's memory and launch semantics: out-of-bounds accesses
//! reported (the lowest failing program, deterministically), argument
//! errors, aliased arguments, atomics under parallel program instances, loop
//! bounds, 3-D grids, sequential and parallel runs agreeing, traces and
//! buffer conversions.

mod common;

use common::*;
use rand::Rng;
use tile_interp::{self as interp, Arg, Buffer, InterpError};
use tile_ir::builder::Builder;
use tile_ir::{BinaryOp, CmpOp, Const, Kernel, Op, ReduceOp, Scalar, Type, ValueId};
use tile_testkit::{assert_bits_eq, assert_close, Tolerance};

/// `x[offs] (load) → y[offs] (store)` with no mask; optionally with a fixed extra offset.
fn copy_kernel(block: u32, masked: bool) -> Kernel {
    let mut b = Builder::new("copy");
    let x = b.ptr_param("x", Scalar::F32);
    let y = b.ptr_param("y", Scalar::F32);
    let n = b.param("n", Type::scalar(Scalar::I32));
    let pid = b.program_id(0);
    let bs = b.i32(block as i64);
    let start = b.mul(pid, bs);
    let ar = b.arange(block);
    let offs = b.add(start, ar);
    let mask = if masked {
        Some(b.cmp(CmpOp::Lt, offs, n))
    } else {
        None
    };
    let p = b.add_ptr(x, offs);
    let v = b.load(p, mask, None);
    let two = b.f32(2.0);
    let v = b.mul(v, two);
    let q = b.add_ptr(y, offs);
    b.store(q, v, mask);
    finish(b)
}

#[test]
fn out_of_bounds_load_and_store_are_reported() {
    let k = copy_kernel(64, false);
    let x = Buffer::from_f32(&vec![1.0; 100]);
    let y = Buffer::zeros(Scalar::F32, 200);
    let e = interp::run(
        &k,
        [4, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(100)],
    )
    .unwrap_err();
    // program 1 reads elements 64..128 of a 100-element buffer: lane 36 is index 100
    match &e {
        InterpError::OutOfBounds {
            op,
            program_id,
            index,
            len,
            param,
            lane,
            ..
        } => {
            assert_eq!(
                (*op, *program_id, *index, *len, param.as_deref(), *lane),
                ("load", [1, 0, 0], 100, 100, Some("x"), 36)
            );
        }
        e => panic!("{e}"),
    }
    assert!(e.to_string().contains("out-of-bounds load"), "{e}");
    // a store past the end of y (x big enough)
    let x = Buffer::from_f32(&vec![1.0; 300]);
    let y = Buffer::zeros(Scalar::F32, 130);
    let e = interp::run(
        &k,
        [3, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(100)],
    )
    .unwrap_err();
    match e {
        InterpError::OutOfBounds {
            op: "store",
            program_id: [2, 0, 0],
            index: 130,
            len: 130,
            ..
        } => {}
        e => panic!("{e}"),
    }
    // the masked kernel is fine on the same sizes, and never touches the tail
    let k = copy_kernel(64, true);
    let x = Buffer::from_f32(&(0..100).map(|i| i as f32).collect::<Vec<_>>());
    let y = Buffer::zeros(Scalar::F32, 100);
    interp::run(
        &k,
        [2, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(100)],
    )
    .unwrap();
    assert_eq!(
        y.to_f32_vec(),
        (0..100).map(|i| 2.0 * i as f32).collect::<Vec<_>>()
    );
}

#[test]
fn negative_offsets_are_out_of_bounds() {
    let mut b = Builder::new("neg");
    let x = b.ptr_param("x", Scalar::F32);
    let ar = b.arange(4);
    let m3 = b.i32(-3);
    let offs = b.add(ar, m3);
    let p = b.add_ptr(x, offs);
    let v = b.load(p, None, None);
    let q = b.add_ptr(x, ar);
    b.store(q, v, None);
    let k = finish(b);
    let x = Buffer::from_f32(&[1.0, 2.0, 3.0, 4.0]);
    let e = interp::run(&k, [1, 1, 1], &[Arg::Buffer(&x)]).unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::OutOfBounds {
                index: -3,
                lane: 0,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        x.to_f32_vec(),
        [1.0, 2.0, 3.0, 4.0],
        "nothing is written by a failing op"
    );
}

#[test]
fn lowest_failing_program_is_reported_deterministically() {
    let k = copy_kernel(16, false);
    let x = Buffer::from_f32(&vec![1.0; 1000]);
    let y = Buffer::zeros(Scalar::F32, 1000);
    for _ in 0..5 {
        // programs 62.. all fail (62*16 + 8 = 1000); 62 must be reported every time
        let e = interp::run(
            &k,
            [200, 1, 1],
            &[Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(1000)],
        )
        .unwrap_err();
        assert_eq!(e.program_id(), Some([62, 0, 0]), "{e}");
    }
}

#[test]
fn argument_errors() {
    let k = copy_kernel(16, true);
    let x = Buffer::zeros(Scalar::F32, 16);
    let xb = Buffer::zeros(Scalar::BF16, 16);
    let e = interp::run(&k, [1, 1, 1], &[Arg::Buffer(&x)]).unwrap_err();
    assert!(
        matches!(
            e,
            InterpError::ArgCount {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = interp::run(
        &k,
        [1, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&xb), Arg::I32(3)],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `copy`: argument `y` must be a *f32 buffer, got a *bf16 buffer"
    );
    let e = interp::run(
        &k,
        [1, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&x), Arg::I64(3)],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel `copy`: argument `n` must be an i32, got an i64"
    );
    let e = interp::run(&k, [1, 1, 1], &[Arg::I32(0), Arg::Buffer(&x), Arg::I32(3)]).unwrap_err();
    assert!(
        matches!(e, InterpError::ArgKind { ref param, .. } if param == "x"),
        "{e}"
    );
}

#[test]
fn aliased_arguments_update_in_place() {
    // y = 2x with x and y the same buffer: every element doubles exactly once
    let k = copy_kernel(64, true);
    let mut rng = tile_testkit::rng(seed());
    let v: Vec<f32> = (0..1001).map(|_| rng.random_range(-5.0f32..5.0)).collect();
    let buf = Buffer::from_f32(&v);
    interp::run(
        &k,
        [16, 1, 1],
        &[Arg::Buffer(&buf), Arg::Buffer(&buf), Arg::I32(1001)],
    )
    .unwrap();
    assert_eq!(
        buf.to_f32_vec(),
        v.iter().map(|a| 2.0 * a).collect::<Vec<_>>()
    );
}

/// `old = atomic_add(acc + (offs % buckets), x[offs])` masked to `n`; the old values go to `olds`.
fn atomic_kernel(s: Scalar, block: u32) -> Kernel {
    let mut b = Builder::new("atomics");
    let x = b.ptr_param("x", s);
    let acc = b.ptr_param("acc", s);
    let olds = b.ptr_param("olds", s);
    let n = b.param("n", Type::scalar(Scalar::I32));
    let buckets = b.param("buckets", Type::scalar(Scalar::I32));
    let pid = b.program_id(0);
    let bs = b.i32(block as i64);
    let start = b.mul(pid, bs);
    let ar = b.arange(block);
    let offs = b.add(start, ar);
    let mask = b.cmp(CmpOp::Lt, offs, n);
    let p = b.add_ptr(x, offs);
    let v = b.load(p, Some(mask), s.is_float().then_some(0.0));
    let bucket = b.binary(BinaryOp::Rem, offs, buckets);
    let q = b.add_ptr(acc, bucket);
    let t = b.ty(v);
    let old = b.op(
        Op::AtomicAdd {
            ptr: q,
            value: v,
            mask: Some(mask),
        },
        t,
    );
    let o = b.add_ptr(olds, offs);
    b.store(o, old, Some(mask));
    finish(b)
}

#[test]
fn atomic_add_under_parallel_programs() {
    let n = 100_003usize;
    let buckets = 7usize;
    let block = 64u32;
    let grid = [cdiv(n, block as usize), 1, 1];
    // f32: adding ones is exact, so the totals are exact whatever the order
    for s in [
        Scalar::F32,
        Scalar::I32,
        Scalar::I64,
        Scalar::BF16,
        Scalar::F16,
    ] {
        let k = atomic_kernel(s, block);
        let ones = Buffer::from_f32_as(s, &vec![1.0; n]);
        let acc = Buffer::zeros(s, buckets);
        let olds = Buffer::zeros(s, n);
        olds.fill_f32(-1.0);
        interp::run(
            &k,
            grid,
            &[
                Arg::Buffer(&ones),
                Arg::Buffer(&acc),
                Arg::Buffer(&olds),
                Arg::I32(n as i32),
                Arg::I32(buckets as i32),
            ],
        )
        .unwrap();
        let want: Vec<f32> = (0..buckets)
            .map(|b| ((n - b).div_ceil(buckets)) as f32)
            .collect();
        let got = acc.to_f32_vec();
        if matches!(s, Scalar::BF16 | Scalar::F16) {
            // 16-bit floats saturate their integer range: 256 + 1 == 256 in bf16, 2048 + 1 == 2048 in f16
            let cap = if s == Scalar::BF16 { 256.0 } else { 2048.0 };
            assert!(got.iter().all(|&g| g == cap), "{s:?}: {got:?}");
            continue;
        }
        assert_eq!(got, want, "{s:?}");
        // the old values of each bucket are exactly 0, 1, …, count-1 in some order
        let olds = olds.to_f32_vec();
        for bk in 0..buckets {
            let mut seen: Vec<f32> = (bk..n).step_by(buckets).map(|i| olds[i]).collect();
            seen.sort_by(f32::total_cmp);
            assert_eq!(
                seen,
                (0..seen.len()).map(|i| i as f32).collect::<Vec<_>>(),
                "{s:?} bucket {bk}"
            );
        }
    }
    // random f32 values: the total matches an f64 sum closely
    let mut rng = tile_testkit::rng(seed());
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let k = atomic_kernel(Scalar::F32, block);
    let acc = Buffer::zeros(Scalar::F32, 1);
    let olds = Buffer::zeros(Scalar::F32, n);
    interp::run(
        &k,
        grid,
        &[
            Arg::Buffer(&Buffer::from_f32(&v)),
            Arg::Buffer(&acc),
            Arg::Buffer(&olds),
            Arg::I32(n as i32),
            Arg::I32(1),
        ],
    )
    .unwrap();
    let want = v.iter().map(|&x| x as f64).sum::<f64>() as f32;
    assert_close(
        "atomic f32 total",
        &acc.to_f32_vec(),
        &[want],
        Tolerance {
            abs: 0.0,
            rel: 1e-4,
        },
    );
}

#[test]
fn for_loop_bounds_steps_and_errors() {
    // acc = sum over i in lb..ub step s of i, as an i64 loop; also the zero-trip loop
    let build = |iv_ty: Scalar| {
        let mut b = Builder::new("loop");
        let out = b.ptr_param("out", iv_ty);
        let lb = b.param("lb", Type::scalar(iv_ty));
        let ub = b.param("ub", Type::scalar(iv_ty));
        let st = b.param("st", Type::scalar(iv_ty));
        let z = b.constant(Const::Int(0), iv_ty);
        let r = b.for_loop(lb, ub, st, &[z], |b, iv, c| vec![b.add(c[0], iv)]);
        let zero = b.i32(0);
        let p = b.add_ptr(out, zero);
        b.store(p, r[0], None);
        finish(b)
    };
    let k = build(Scalar::I64);
    for (lb, ub, st) in [
        (0i64, 10, 1),
        (3, 100, 7),
        (5, 5, 1),
        (10, 0, 1),
        (-20, 20, 3),
        (0, 0, 0),
        (5, 1, -1),
    ] {
        let out = Buffer::zeros(Scalar::I64, 1);
        interp::run(
            &k,
            [1, 1, 1],
            &[Arg::Buffer(&out), Arg::I64(lb), Arg::I64(ub), Arg::I64(st)],
        )
        .unwrap();
        let want: i64 = if lb < ub {
            (lb..ub).step_by(st as usize).sum()
        } else {
            0
        };
        assert_eq!(out.to_i64_vec(), [want], "{lb}..{ub} step {st}");
    }
    let k = build(Scalar::I32);
    let out = Buffer::zeros(Scalar::I32, 1);
    let e = interp::run(
        &k,
        [1, 1, 1],
        &[Arg::Buffer(&out), Arg::I32(0), Arg::I32(10), Arg::I32(0)],
    )
    .unwrap_err();
    assert!(matches!(e, InterpError::BadStep { step: 0, .. }), "{e}");
    // an i32 loop up to i32::MAX terminates
    interp::run(
        &k,
        [1, 1, 1],
        &[
            Arg::Buffer(&out),
            Arg::I32(i32::MAX - 3),
            Arg::I32(i32::MAX),
            Arg::I32(2),
        ],
    )
    .unwrap();
    assert_eq!(
        out.to_i32_vec(),
        [(i32::MAX - 3).wrapping_add(i32::MAX - 1)]
    );
}

#[test]
fn program_ids_over_a_3d_grid() {
    // out[x + gx*(y + gy*z)] = x*10000 + y*100 + z, and num_programs is checked too
    let mut b = Builder::new("ids");
    let out = b.ptr_param("out", Scalar::I32);
    let ids: Vec<ValueId> = (0..3).map(|a| b.program_id(a)).collect();
    let nps: Vec<ValueId> = (0..3)
        .map(|a| b.op(Op::NumPrograms(a), Type::scalar(Scalar::I32)))
        .collect();
    let c1 = b.i32(10000);
    let c2 = b.i32(100);
    let v = b.mul(ids[0], c1);
    let w = b.mul(ids[1], c2);
    let v = b.add(v, w);
    let v = b.add(v, ids[2]);
    let lin = b.mul(ids[2], nps[1]);
    let lin = b.add(lin, ids[1]);
    let lin = b.mul(lin, nps[0]);
    let lin = b.add(lin, ids[0]);
    let p = b.add_ptr(out, lin);
    b.store(p, v, None);
    let k = finish(b);
    let (gx, gy, gz) = (5u32, 3u32, 4u32);
    let out = Buffer::zeros(Scalar::I32, (gx * gy * gz) as usize);
    out.fill_f32(-1.0);
    interp::run(&k, [gx, gy, gz], &[Arg::Buffer(&out)]).unwrap();
    let want: Vec<i32> = (0..gz)
        .flat_map(|z| {
            (0..gy).flat_map(move |y| (0..gx).map(move |x| (x * 10000 + y * 100 + z) as i32))
        })
        .collect();
    assert_eq!(out.to_i32_vec(), want);
}

#[test]
fn sequential_and_parallel_runs_agree() {
    let k = matmul_kernel(Scalar::BF16, 16, 16, 16);
    let mut rng = tile_testkit::rng(seed());
    let (m, n, kk) = (50, 40, 33);
    let a = Buffer::from_f32_as(
        Scalar::BF16,
        &(0..m * kk)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
    );
    let b = Buffer::from_f32_as(
        Scalar::BF16,
        &(0..kk * n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>(),
    );
    let outs: Vec<Vec<f32>> = [true, false]
        .iter()
        .map(|&parallel| {
            let c = Buffer::zeros(Scalar::F32, m * n);
            let args = [
                Arg::Buffer(&a),
                Arg::Buffer(&b),
                Arg::Buffer(&c),
                Arg::I32(m as i32),
                Arg::I32(n as i32),
                Arg::I32(kk as i32),
            ];
            interp::run_with(&k, [4, 3, 1], &args, &interp::Options { parallel }).unwrap();
            c.to_f32_vec()
        })
        .collect();
    assert_bits_eq("parallel vs sequential", &outs[0], &outs[1]);
}

#[test]
fn trace_records_values_of_one_program() {
    let k = copy_kernel(16, true);
    let x = Buffer::from_f32(&(0..40).map(|i| i as f32).collect::<Vec<_>>());
    let y = Buffer::zeros(Scalar::F32, 40);
    let t = interp::trace(
        &k,
        [3, 1, 1],
        &[Arg::Buffer(&x), Arg::Buffer(&y), Arg::I32(40)],
        [2, 0, 0],
    );
    assert_eq!(t.error, None);
    let t = t.entries;
    // only program 2 ran: elements 32..40 doubled, the rest untouched
    let got = y.to_f32_vec();
    assert!(got[..32].iter().all(|&v| v == 0.0));
    assert_eq!(
        &got[32..],
        &(32..40).map(|i| 2.0 * i as f32).collect::<Vec<_>>()[..]
    );
    let pid = t
        .iter()
        .find(|e| e.ty == Type::scalar(Scalar::I32) && e.summary == "[2]");
    assert!(pid.is_some(), "{t:#?}");
    let loaded = t
        .iter()
        .find(|e| e.summary.starts_with("[32.0"))
        .expect("the loaded tile");
    assert!(
        loaded.summary.contains("min 0.0"),
        "masked lanes load 0: {}",
        loaded.summary
    );
}

#[test]
fn buffer_conversions_round_trip() {
    let v = [1.5f32, -0.0, f32::NAN, 1e-40, 65504.0, 1e10];
    for s in [
        Scalar::F32,
        Scalar::BF16,
        Scalar::F16,
        Scalar::I32,
        Scalar::I64,
        Scalar::I1,
    ] {
        let b = Buffer::from_f32_as(s, &v);
        assert_eq!(b.len(), v.len());
        assert_eq!(b.dtype(), s);
        let bytes = b.to_bytes();
        assert_eq!(bytes.len(), v.len() * s.size_bytes());
        let c = Buffer::from_bytes(s, &bytes).unwrap();
        assert_eq!(c.to_bytes(), bytes);
        let d = b.clone();
        b.fill_f32(7.0);
        assert_eq!(d.to_bytes(), bytes, "clone is deep");
        assert!(b
            .to_f32_vec()
            .iter()
            .all(|&x| x == if s == Scalar::I1 { 1.0 } else { 7.0 }));
    }
    assert!(Buffer::from_bytes(Scalar::F32, &[0, 1, 2]).is_none());
    assert_eq!(
        Buffer::from_f32_as(Scalar::I32, &[f32::NAN, 1e20, -1e20]).to_i32_vec(),
        [0, i32::MAX, i32::MIN]
    );
}

/// Float `maximum`/`minimum` and `max`/`min` reductions order -0.0 below
/// +0.0 (IEEE 754-2019 maximumNumber/minimumNumber; docs/LANGUAGE.md), in
/// either operand order and along either axis, as PTX `max`/`min` do
/// ("+0.0 > -0.0"): fz_20261202_{2623,3526} divided by maximum(-0.0, +0.0)
/// and got -inf where the GPU got +inf.
#[test]
fn max_min_order_signed_zeros() {
    let (p, z) = (0.0f32, -0.0f32);
    let a = [z, p, z, p, f32::NAN, z];
    let b = [p, z, z, p, z, f32::NAN];
    for s in [Scalar::F32, Scalar::BF16, Scalar::F16] {
        for (op, want) in [
            (BinaryOp::Max, [p, p, z, p, z, z]),
            (BinaryOp::Min, [z, z, z, p, z, z]),
        ] {
            let k = elementwise(&[s, s], s, 8, |bl, v| bl.binary(op, v[0], v[1]));
            let (x0, x1) = (Buffer::from_f32_as(s, &a), Buffer::from_f32_as(s, &b));
            let y = run_ew(&k, &[&x0, &x1], s, a.len(), 8);
            assert_bits_eq(&format!("{op:?} {s:?}"), &y.to_f32_vec(), &want);
        }
        // 2 × 2 [[-0, +0], [+0, -0]]: every row and column holds both zeros.
        let x = [z, p, p, z];
        for (op, want) in [(ReduceOp::Max, [p, p]), (ReduceOp::Min, [z, z])] {
            for axis in [0, 1] {
                let k = reduce_kernel(op, s, 2, 2, axis, 0.0);
                let y = Buffer::zeros(s, 2);
                interp::run(
                    &k,
                    [1, 1, 1],
                    &[
                        Arg::Buffer(&Buffer::from_f32_as(s, &x)),
                        Arg::Buffer(&y),
                        Arg::I32(2),
                        Arg::I32(2),
                    ],
                )
                .unwrap();
                assert_bits_eq(&format!("{op:?} axis {axis} {s:?}"), &y.to_f32_vec(), &want);
            }
        }
    }
}
