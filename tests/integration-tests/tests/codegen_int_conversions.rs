//! int → bf16/f16 casts and i64 shifts by a run-time amount keep their
//! documented results on the GPU (docs/LANGUAGE.md, "Integer and float
//! semantics"), pinned on the PTX without a GPU (differential cases
//! fz_1796225358_{496,943,211}; regression files int_to_bf16_rounds_once,
//! int_to_f16_overflow, shl_i64_amount_beyond_u32 in differential/).
#![cfg(feature = "codegen")]

use tile_codegen::{compile, Arch, Options};
use tile_front::frontend::{parse_program, SourceFile};

fn ptx(text: &str, arch: Arch) -> String {
    let src = SourceFile::new("int_conversions.tile", text);
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    let tir = program
        .specialize("k", &[("BM".into(), 32)])
        .unwrap_or_else(|d| panic!("{}", d.render(&src)));
    compile(
        &tir,
        &Options {
            arch,
            warps: 1,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
    .ptx
}

const ARCHS: [Arch; 2] = [Arch::Sm80, Arch::Sm90];

/// i32/i64 → bf16 rounds once: the integer is rounded to odd at 24 bits
/// (`clz`) before `cvt.rn.f32`, whose result `cvt.rn.bf16.f32` then rounds
/// once (i32 → f32 → bf16 alone rounds twice).
#[test]
fn int_to_bf16_is_rounded_to_odd_first() {
    for (t, clz) in [("i32", "clz.b32"), ("i64", "clz.b64")] {
        let k = format!(
            "kernel k<const BM: i32>(x: *{t}, y: *bf16) {{
    let r = arange(0, BM);
    store(y + r, load(x + r) as bf16);
}}"
        );
        for arch in ARCHS {
            let p = ptx(&k, arch);
            assert!(p.contains(clz), "{t} on {arch:?}:\n{p}");
            assert!(!p.contains(&format!("cvt.rn.bf16.s{}", &t[1..])), "{p}");
        }
    }
}

/// i32 → f16 clamps to ±65520 (→ ±inf) before the f32 step, so that LLVM's
/// fold of `fpext(sitofp x to half)` into `sitofp x to float` cannot keep a
/// finite value for `v << 27`.
#[test]
fn int_to_f16_keeps_overflow() {
    let k = "kernel k<const BM: i32>(x: *i32, y: *f16) {
    let r = arange(0, BM);
    let v = load(x + r) << 27;
    store(y + r, (v as f16) + (r as f16));
}";
    for arch in ARCHS {
        let p = ptx(k, arch);
        assert!(p.contains("65520"), "{arch:?}:\n{p}");
    }
}

/// An i64 `<<` by a run-time amount keeps its `< 64` guard (`selp.b64`
/// after the `shl.b64`): PTX reads a u32 amount, so clamping the shift
/// alone gives `x << (y mod 2^32)` for y ≥ 2^32.
#[test]
fn i64_shl_keeps_its_guard() {
    let k = "kernel k<const BM: i32>(x: *i64, a: *f32, y: *i64) {
    let r = arange(0, BM);
    store(y + r, load(x + r) << (load(a + r) as i64));
}";
    for arch in ARCHS {
        let p = ptx(k, arch);
        let lines: Vec<&str> = p.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("shl.b64") && l.contains("%r"))
            .unwrap_or_else(|| panic!("{p}"));
        assert!(
            lines[at - 1].contains("and.b32") && lines[at - 1].ends_with(", 63;"),
            "{p}"
        );
        assert!(
            lines[at + 1..]
                .iter()
                .take(3)
                .any(|l| l.contains("selp.b64")),
            "{p}"
        );
        assert!(p.contains("setp.lt.u64"), "{p}");
    }
}
