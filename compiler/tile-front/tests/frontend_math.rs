//! The math builtins `sin cos erf log1p expm1 pow`: their TIR, type rules
//! and errors.

use tile_front::frontend::{parse_program, SourceFile};
use tile_ir as tir;

/// The first kernel's TIR, or the codes of its errors.
fn check(src: &str) -> Result<String, Vec<&'static str>> {
    let s = SourceFile::new("t.tile", src);
    let p = parse_program(&s).map_err(|d| d.iter().map(|d| d.code.as_str()).collect::<Vec<_>>())?;
    let name = p.kernel_names()[0].clone();
    p.specialize(&name, &[])
        .map(|k| tir::print_kernel(&k))
        .map_err(|d| d.iter().map(|d| d.code.as_str()).collect())
}

fn body(expr: &str, ty: &str) -> String {
    format!(
        "kernel k(x: *{ty}, e: *{ty}, y: *{ty}) {{
            let v = load(x + arange(0, 16));
            let w = load(e + arange(0, 16));
            store(y + arange(0, 16), {expr});
        }}"
    )
}

#[test]
fn unary_math_keeps_the_float_type() {
    for f in ["sin", "cos", "erf", "log1p", "expm1"] {
        for ty in ["f32", "bf16", "f16"] {
            let t = check(&body(&format!("{f}(v)"), ty)).unwrap();
            assert!(t.contains(&format!("= {f} %")), "{f} {ty}:\n{t}");
            assert!(t.contains(&format!(": {ty}[16]")), "{f} {ty}:\n{t}");
        }
    }
}

#[test]
fn pow_promotes_and_broadcasts_like_arithmetic() {
    // tile ^ tile, tile ^ literal, literal ^ tile, a scalar exponent
    for expr in [
        "pow(v, w)",
        "pow(v, 3)",
        "pow(2.0, v)",
        "pow(v, 0.5)",
        "pow(v, load(e))",
    ] {
        let t = check(&body(expr, "bf16")).unwrap();
        assert!(t.contains("= pow %"), "{expr}:\n{t}");
        assert!(
            t.contains("pow") && t.contains(": bf16[16]"),
            "{expr}:\n{t}"
        );
    }
    // bf16 with f32 gives f32; an integer tile with a float converts
    let t = check(
        "kernel k(x: *bf16, e: *f32, y: *f32) {
            store(y + arange(0, 16), pow(load(x + arange(0, 16)), load(e + arange(0, 16))));
            store(y + arange(0, 16), pow(arange(0, 16), 0.5));
        }",
    )
    .unwrap();
    assert_eq!(t.matches("= pow %").count(), 2, "{t}");
    assert!(!t.contains("pow") || t.contains(": f32[16]"), "{t}");
}

#[test]
fn math_on_integers_is_e0035() {
    for f in ["sin", "cos", "erf", "log1p", "expm1"] {
        let e = check(&body(&format!("{f}(arange(0, 16)) as i32"), "i32")).unwrap_err();
        assert_eq!(e, ["E0035"], "{f}");
    }
    let e = check(&body("pow(v, w)", "i32")).unwrap_err();
    assert_eq!(e, ["E0035"]);
    let e = check(&body("pow(v, 2) as i32", "i32")).unwrap_err();
    assert_eq!(e, ["E0035"]);
}

#[test]
fn wrong_argument_counts_are_e0011() {
    for expr in [
        "sin(v, v)",
        "cos()",
        "erf(v, 1)",
        "log1p()",
        "expm1(v, v)",
        "pow(v)",
        "pow(v, w, w)",
    ] {
        let e = check(&body(expr, "f32")).unwrap_err();
        assert_eq!(e, ["E0011"], "{expr}");
    }
}

#[test]
fn math_names_are_reserved() {
    // helpers may not reuse builtin names
    let e = check(
        "fn pow(a, b) { a * b }
         kernel k(y: *f32) { store(y, 1.0); }",
    )
    .unwrap_err();
    assert!(!e.is_empty());
}

#[test]
fn fma_promotes_and_broadcasts_like_a_product_plus_an_addend() {
    for expr in [
        "fma(v, w, v)",
        "fma(v, 2.0, w)",
        "fma(v, w, 1.0)",
        "fma(v, load(e), w)",
    ] {
        let t = check(&body(expr, "bf16")).unwrap();
        assert!(t.contains("= fma %"), "{expr}:\n{t}");
        assert!(t.contains(": bf16[16]"), "{expr}:\n{t}");
    }
    // bf16 and f32 give f32; a row broadcast against a column
    let t = check(
        "kernel k(x: *bf16, e: *f32, y: *f32) {
            let r = arange(0, 16);
            let a = load(x + r);
            let b = load(e + r);
            store(y + r[:, None] * 16 + r[None, :], fma(a[:, None], 2.0, b[None, :]));
        }",
    )
    .unwrap();
    assert!(t.contains("= fma %") && t.contains(": f32[16, 16]"), "{t}");
    // integers: E0035; the wrong count: E0011
    assert_eq!(check(&body("fma(v, w, v)", "i32")).unwrap_err(), ["E0035"]);
    assert_eq!(check(&body("fma(v, w)", "f32")).unwrap_err(), ["E0011"]);
}
