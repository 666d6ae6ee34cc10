//! Code generation of a hand-built TIR kernel, independent of the front end.

use tile_codegen::{compile, Options};
use tile_ir::*;

/// `c[i] = a[i] + b[i]` for one BLOCK-sized slice per program, as the checker would emit it.
fn vector_add(block: u32, dt: Scalar) -> Kernel {
    let mut k = Kernel {
        name: "vector_add".into(),
        params: vec![],
        meta: vec![("BLOCK".into(), block as i64)],
        body: Block::default(),
        values: vec![],
    };
    let ptr = Type {
        elem: Elem::Ptr(dt),
        shape: vec![],
    };
    for name in ["a", "b", "c"] {
        let v = k.new_value(ptr.clone());
        k.params.push(Param {
            name: name.into(),
            value: v,
            ty: ptr.clone(),
        });
    }
    let n = k.new_value(Type::scalar(Scalar::I32));
    k.params.push(Param {
        name: "n".into(),
        value: n,
        ty: Type::scalar(Scalar::I32),
    });
    let (a, b, c) = (k.params[0].value, k.params[1].value, k.params[2].value);
    let mut insts = vec![];
    let mut emit = |k: &mut Kernel, op: Op, ty: Option<Type>| -> ValueId {
        let r = ty.map(|t| k.new_value(t));
        insts.push(Inst {
            results: r.into_iter().collect(),
            op,
            span: Span::default(),
        });
        r.unwrap_or(ValueId(u32::MAX))
    };
    let i32s = Type::scalar(Scalar::I32);
    let ti = Type::tile(Scalar::I32, vec![block]);
    let pid = emit(&mut k, Op::ProgramId(0), Some(i32s.clone()));
    let bl = emit(
        &mut k,
        Op::Const(Const::Int(block as i64)),
        Some(i32s.clone()),
    );
    let base = emit(
        &mut k,
        Op::Binary(BinaryOp::Mul, pid, bl),
        Some(i32s.clone()),
    );
    let base_t = emit(&mut k, Op::Splat(base), Some(ti.clone()));
    let ar = emit(
        &mut k,
        Op::Arange {
            start: 0,
            end: block as i64,
        },
        Some(ti.clone()),
    );
    let offs = emit(
        &mut k,
        Op::Binary(BinaryOp::Add, base_t, ar),
        Some(ti.clone()),
    );
    let n_t = emit(&mut k, Op::Splat(n), Some(ti.clone()));
    let mask = emit(
        &mut k,
        Op::Cmp(CmpOp::Lt, offs, n_t),
        Some(Type::tile(Scalar::I1, vec![block])),
    );
    let pt = Type {
        elem: Elem::Ptr(dt),
        shape: vec![block],
    };
    let z = emit(&mut k, Op::Const(Const::Float(0.0)), Some(Type::scalar(dt)));
    let zt = emit(&mut k, Op::Splat(z), Some(Type::tile(dt, vec![block])));
    let mut load = |k: &mut Kernel, p: ValueId| {
        let ps = emit(k, Op::Splat(p), Some(pt.clone()));
        let pp = emit(
            k,
            Op::AddPtr {
                ptr: ps,
                offset: offs,
            },
            Some(pt.clone()),
        );
        (
            pp,
            emit(
                k,
                Op::Load {
                    ptr: pp,
                    mask: Some(mask),
                    other: Some(zt),
                },
                Some(Type::tile(dt, vec![block])),
            ),
        )
    };
    let (_, x) = load(&mut k, a);
    let (_, y) = load(&mut k, b);
    let (pc, _) = {
        let ps = emit(&mut k, Op::Splat(c), Some(pt.clone()));
        (
            emit(
                &mut k,
                Op::AddPtr {
                    ptr: ps,
                    offset: offs,
                },
                Some(pt.clone()),
            ),
            (),
        )
    };
    let s = emit(
        &mut k,
        Op::Binary(BinaryOp::Add, x, y),
        Some(Type::tile(dt, vec![block])),
    );
    emit(
        &mut k,
        Op::Store {
            ptr: pc,
            value: s,
            mask: Some(mask),
        },
        None,
    );
    k.body.insts = insts;
    k
}

#[test]
fn vector_add_compiles_to_ptx() {
    for dt in [Scalar::F32, Scalar::BF16] {
        for block in [256, 1024, 4096] {
            let art = compile(&vector_add(block, dt), &Options::default()).expect("compiles");
            assert!(art.ptx.contains(".entry vector_add"), "{}", art.ptx);
            assert!(art.ptx.contains(".target sm_90"));
            // 16-byte vector accesses on the fast path once a thread holds 16 bytes.
            if block >= 1024 {
                assert!(
                    art.ptx.contains("ld.global.v4"),
                    "{dt:?} {block}: no 16-byte loads:\n{}",
                    art.ptx
                );
                assert!(
                    art.ptx.contains("st.global.v4"),
                    "{dt:?} {block}: no 16-byte stores:\n{}",
                    art.ptx
                );
            }
        }
    }
}

#[test]
#[ignore]
fn dump_vector_add() {
    let art = compile(&vector_add(1024, Scalar::F32), &Options::default()).unwrap();
    std::fs::write("/tmp/va.mlir", &art.mlir).unwrap();
    std::fs::write("/tmp/va.ll", &art.llvm_ir).unwrap();
    std::fs::write("/tmp/va.ptx", &art.ptx).unwrap();
    let art = compile(&vector_add(1024, Scalar::BF16), &Options::default()).unwrap();
    std::fs::write("/tmp/vab.ptx", &art.ptx).unwrap();
}
