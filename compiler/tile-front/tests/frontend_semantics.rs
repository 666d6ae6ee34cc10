//! Targeted checks of the type rules, the SSA construction and the passes,
//! on small kernels (read through the printed TIR).

use tile_front::frontend::{parse_program, SourceFile};
use tile_ir::{self as tir, Op};

fn tir(src: &str, meta: &[(&str, i64)]) -> tir::Kernel {
    let s = SourceFile::new("t.tile", src);
    let p = match parse_program(&s) {
        Ok(p) => p,
        Err(d) => panic!("{}", d.render(&s)),
    };
    let meta: Vec<(String, i64)> = meta.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let name = p.kernel_names()[0].clone();
    match p.specialize(&name, &meta) {
        Ok(k) => k,
        Err(d) => panic!("{}", d.render(&s)),
    }
}

fn text(src: &str) -> String {
    tir::print_kernel(&tir(src, &[]))
}

fn count(k: &tir::Kernel, f: impl Fn(&Op) -> bool) -> usize {
    let mut n = 0;
    tir::walk_insts(&k.body, &mut |i| n += usize::from(f(&i.op)));
    n
}

#[test]
fn promotion_rules() {
    let t = text(
        "kernel k(a: *bf16, b: *f16, c: *f32, d: *i64, n: i32) {
            let x = load(a + arange(0, 16));
            store(a + arange(0, 16), x * 2.0);          // bf16 stays bf16
            let y = load(b + arange(0, 16));
            store(c + arange(0, 16), x + y);            // bf16 + f16 -> f32
            store(d + arange(0, 16), arange(0, 16) + load(d)); // i32 + i64 -> i64
            store(c + arange(0, 16), arange(0, 16) + 1.5);   // int tile + float literal -> f32
        }",
    );
    assert!(t.contains("mul") && t.contains(": bf16[16]"), "{t}");
    assert!(t.contains("cast %") && t.contains(": f32[16]"), "{t}");
    assert!(t.contains(": i64[16]"), "{t}");
}

#[test]
fn broadcasts_are_explicit() {
    let k = tir("kernel k(x: *f32) { let r = arange(0, 16); store(x + r[:, None] * 16 + r[None, :], 1.0); }", &[]);
    assert!(count(&k, |o| matches!(o, Op::ExpandDims { .. })) >= 2);
    assert!(count(&k, |o| matches!(o, Op::Broadcast(_))) >= 2);
    tir::verify(&k).expect("verifies");
}

#[test]
fn static_loops_are_unrolled_and_constant_ifs_folded() {
    let k = tir(
        "kernel k<const N: i32 = 4>(x: *f32) {
            let mut acc = zeros([16], f32);
            for i in static 0..N {
                if i == 0 { acc = acc + 1.0; } else { acc = acc * 2.0; }
            }
            store(x + arange(0, 16), acc);
        }",
        &[],
    );
    assert_eq!(count(&k, |o| matches!(o, Op::For { .. })), 0);
    assert_eq!(count(&k, |o| matches!(o, Op::If { .. })), 0);
}

#[test]
fn loops_carry_mutables_and_keep_stores() {
    let k = tir(
        "kernel k(x: *f32, y: *f32, n: i32) {
            let mut s = 0.0;
            for i in 0..n step 16 {
                let v = load(x + i + arange(0, 16));
                store(y + i + arange(0, 16), v);     // kept: side effect in a loop without results
                s += sum(v, 0);
            }
            for i in 0..n { let dead = i * 2; }      // removed: no effect, no result
            store(y, s);
        }",
        &[],
    );
    let fors: Vec<usize> = {
        let mut v = Vec::new();
        tir::walk_insts(&k.body, &mut |i| {
            if let Op::For { init, .. } = &i.op {
                v.push(init.len())
            }
        });
        v
    };
    assert_eq!(fors, vec![1], "one loop carrying `s`");
    assert_eq!(count(&k, |o| matches!(o, Op::Store { .. })), 2);
}

#[test]
fn helpers_are_inlined_per_shape() {
    let k = tir(
        "fn sq(v) { v * v }
        kernel k(x: *f32) {
            let a = sq(load(x));                      // scalar
            let b = sq(load(x + arange(0, 32)));      // tile
            store(x + arange(0, 32), b + a);
        }",
        &[],
    );
    assert_eq!(
        count(&k, |o| matches!(o, Op::Binary(tir::BinaryOp::Mul, ..))),
        2
    );
}

#[test]
fn meta_defaults_and_overrides() {
    let src = "kernel k<const B: i32 = 64>(x: *f32) { store(x + arange(0, B), 1.0); }";
    assert_eq!(tir(src, &[]).meta, vec![("B".to_string(), 64)]);
    assert_eq!(tir(src, &[("B", 128)]).meta, vec![("B".to_string(), 128)]);
    let s = SourceFile::new("t.tile", src);
    let p = parse_program(&s).expect("parses");
    assert!(
        p.specialize("k", &[("C".into(), 1)]).is_err(),
        "unknown meta-parameter is an error"
    );
    assert!(p.specialize("nope", &[]).is_err());
}

#[test]
fn if_expression_and_else_if() {
    let t = text(
        "kernel k(x: *f32, n: i32) {
            let v = if n > 10 { 1.0 } else if n > 5 { 2.0 } else { load(x) };
            store(x, v);
        }",
    );
    assert_eq!(t.matches("if %").count(), 2, "{t}");
}
