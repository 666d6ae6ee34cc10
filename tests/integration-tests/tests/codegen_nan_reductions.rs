//! Float `max`/`min` reductions follow maxNum/minNum on the GPU as on the
//! interpreter (docs/LANGUAGE.md, "Integer and float semantics": a NaN
//! operand yields the other, so a row that is all NaN reduces to NaN), pinned
//! on the PTX without a GPU.
//!
//! When a tile has fewer elements along the reduced axis than the threads
//! laid over it (a [2, 2] tile over 2 warps), the threads that replicate
//! elements contribute a neutral value instead of theirs
//! (`lower/reduce.rs`, `identity`). That value was -inf for `max` and +inf for
//! `min`, which is not neutral for maxNum: maxNum(NaN, -inf) is -inf, so a row
//! of NaN reduced to -inf on the GPU and to NaN on the interpreter (the
//! differential test's fz_1796224093_{25,83,251}; regression cases in
//! tests/integration-tests/differential/). The neutral value of maxNum/minNum
//! is NaN; that of a float sum is -0.0 (`-0.0 + x == x` for every x, -0.0
//! included; `0.0 + -0.0` is +0.0).
#![cfg(feature = "codegen")]

use tile_codegen::{compile, Options};
use tile_front::frontend::{parse_program, SourceFile};

/// PTX of `kernel k` in `text` for `BM`, `BN` and `warps`.
fn ptx(text: &str, bm: i64, bn: i64, warps: u32) -> String {
    let src = SourceFile::new("nan_reductions.tile", text);
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    let tir = program
        .specialize("k", &[("BM".into(), bm), ("BN".into(), bn)])
        .unwrap_or_else(|d| panic!("{}", d.render(&src)));
    compile(
        &tir,
        &Options {
            warps,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"))
    .ptx
}

/// A `[BM, BN]` tile of `dt` reduced by `op` along `axis` (or, for `None`, a
/// `[BN]` tile reduced whole), stored.
fn kernel(op: &str, dt: &str, axis: Option<u32>) -> String {
    let body = match axis {
        Some(1) => "let t = load(x + r * BN + c);\n    store(y + arange(0, BM), OP(t, 1));",
        Some(_) => "let t = load(x + r * BN + c);\n    store(y + arange(0, BN), OP(t, 0));",
        None => "let t = load(x + arange(0, BN));\n    store(y, OP(t));",
    };
    format!(
        "kernel k<const BM: i32, const BN: i32>(x: *{dt}, y: *{dt}) {{
    let r = arange(0, BM)[:, None];
    let c = arange(0, BN)[None, :];
    {}
}}
",
        body.replace("OP", op)
    )
}

/// The `selp.f32` lines of `ptx` (where replicas get the neutral value).
fn selects(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter(|l| l.trim_start().starts_with("selp.f32"))
        .collect()
}

/// (BM, BN, warps) with more threads than elements along axis 1, and so
/// replicas along it, for the canonical (blocked) layout: [1, 32] over 8 warps,
/// [2, 2] over 2, [4, 2] over 4, [4, 32] over 8 (fz_1796224093_{83,25,251}).
const REPLICATED: &[(i64, i64, u32)] = &[(1, 32, 8), (2, 2, 2), (4, 2, 4), (4, 32, 8)];

#[test]
fn max_min_reductions_give_replicas_nan_and_combine_with_maxnum() {
    for op in ["max", "min"] {
        for dt in ["f32", "bf16", "f16"] {
            for axis in [Some(1), Some(0), None] {
                for &(bm, bn, warps) in REPLICATED {
                    let text = kernel(op, dt, axis);
                    let p = ptx(&text, bm, bn, warps);
                    let what =
                        format!("{op} of {dt} along {axis:?}, BM={bm} BN={bn} warps={warps}");
                    // maxNum/minNum: `max.f32`/`min.f32` (none where one
                    // element is reduced); `.NaN` would propagate NaN.
                    assert!(
                        (axis == Some(0) && bm == 1) || p.contains(&format!("{op}.f32")),
                        "{what}: no {op}.f32\n{p}"
                    );
                    assert!(
                        !p.contains(".NaN"),
                        "{what}: a NaN-propagating max/min\n{p}"
                    );
                    // No ±inf start value: maxNum(NaN, -inf) is -inf, not NaN.
                    for inf in ["0fFF800000", "0f7F800000"] {
                        assert!(
                            !p.contains(inf),
                            "{what}: an infinity ({inf}) in the PTX\n{p}"
                        );
                    }
                    let sel = selects(&p);
                    if axis == Some(0) {
                        // Axis 0 is never replicated in the canonical layout.
                        continue;
                    }
                    assert!(
                        !sel.is_empty() && sel.iter().all(|l| l.contains("0f7FC00000")),
                        "{what}: the replicas are not given NaN: {sel:?}\n{p}"
                    );
                }
            }
        }
    }
}

#[test]
fn sum_reductions_give_replicas_negative_zero() {
    for dt in ["f32", "bf16", "f16"] {
        for axis in [Some(1), None] {
            for &(bm, bn, warps) in REPLICATED {
                let p = ptx(&kernel("sum", dt, axis), bm, bn, warps);
                let what = format!("sum of {dt} along {axis:?}, BM={bm} BN={bn} warps={warps}");
                let sel = selects(&p);
                assert!(
                    !sel.is_empty() && sel.iter().all(|l| l.contains("0f80000000")),
                    "{what}: the replicas are not given -0.0: {sel:?}\n{p}"
                );
            }
        }
    }
}
