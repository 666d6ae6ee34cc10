//! The PTX rewritten, after LLVM, around defects of NVIDIA's PTX compiler
//! (ptxas, and the driver's JIT built from it) that the differential test
//! found: each rewrite computes the same value with instructions ptxas does
//! not fuse into the wrong machine code. LLVM would fold them back, so they
//! are made on the PTX text. docs/ARCHITECTURE.md, "Below our PTX", has the
//! evidence (`TILE_PTXAS` at -O0 against -O3, and the SASS).
//!
//! - `neg.s32 d, a` → `not.b32 d, a; add.s32 d, d, 1`: ptxas before 13.4
//!   drops the negation when it folds it into a three-input `VIMNMX3`
//!   (differential/neg_in_max3.tile, row_max_of_negations.tile).
//! - `neg.s64 d, a` → `not.b64 d, a; add.s64 d, d, 1`, and `sub.s64 d, a, b`
//!   → `not.b64 d, a; add.s64 d, d, b; not.b64 d, d` (= a - b; where `d` is
//!   `b`, `not.b64 d, b; add.s64 d, d, a; add.s64 d, d, 1`): ptxas (12.9 to
//!   13.4) fuses a 64-bit negation into the addend of an `IMAD.HI.U32` as
//!   (-lo, ~hi), dropping the carry, so `(pm as i64) / 3 - x` came out
//!   2^32 too small wherever x's low word was 0
//!   (differential/sub_i64_after_mulhi.tile).
//!
//! Only register operands are rewritten; a line it does not recognise is
//! kept as it is.

/// `ptx` with the instructions above respelt.
pub(crate) fn avoid_ptxas_defects(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len() + 256);
    for line in ptx.split_inclusive('\n') {
        match respell(line) {
            Some(lines) => out.push_str(&lines),
            None => out.push_str(line),
        }
    }
    out
}

/// The replacement of one PTX line, or `None` to keep it.
fn respell(line: &str) -> Option<String> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    // An optional guard, `@%p1 ` or `@!%p1 `, applies to every replacement.
    let (guard, rest) = match body.strip_prefix('@') {
        Some(r) => {
            let (p, rest) = r.split_once(char::is_whitespace)?;
            (format!("@{p} "), rest.trim_start())
        }
        None => (String::new(), body),
    };
    let (opcode, operands) = rest.split_once(char::is_whitespace)?;
    let operands: Vec<&str> = operands
        .trim()
        .strip_suffix(';')?
        .split(',')
        .map(str::trim)
        .collect();
    if !operands.iter().all(|o| o.starts_with('%')) {
        return None;
    }
    let ins = |text: String| format!("{indent}{guard}{text};\n");
    let lines = match (opcode, operands.as_slice()) {
        ("neg.s32", [d, a]) => [
            ins(format!("not.b32 \t{d}, {a}")),
            ins(format!("add.s32 \t{d}, {d}, 1")),
        ]
        .concat(),
        ("neg.s64", [d, a]) => [
            ins(format!("not.b64 \t{d}, {a}")),
            ins(format!("add.s64 \t{d}, {d}, 1")),
        ]
        .concat(),
        ("sub.s64", [d, a, b]) if d == a && a == b => ins(format!("mov.b64 \t{d}, 0")),
        ("sub.s64", [d, a, b]) if d != b => [
            ins(format!("not.b64 \t{d}, {a}")),
            ins(format!("add.s64 \t{d}, {d}, {b}")),
            ins(format!("not.b64 \t{d}, {d}")),
        ]
        .concat(),
        ("sub.s64", [d, a, b]) => [
            ins(format!("not.b64 \t{d}, {b}")),
            ins(format!("add.s64 \t{d}, {d}, {a}")),
            ins(format!("add.s64 \t{d}, {d}, 1")),
        ]
        .concat(),
        _ => return None,
    };
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::avoid_ptxas_defects;

    #[test]
    fn negations_and_64_bit_subtractions_are_respelt() {
        let ptx = "\tneg.s32 \t%r6, %r3;\n\
                   \t@%p2 neg.s32 \t%r7, %r7;\n\
                   \tneg.s64 \t%rd1, %rd2;\n\
                   \tsub.s64 \t%rd3, %rd4, %rd5;\n\
                   \tsub.s64 \t%rd4, %rd4, %rd5;\n\
                   \t@!%p1 sub.s64 \t%rd5, %rd4, %rd5;\n\
                   \tsub.s64 \t%rd6, %rd6, %rd6;\n\
                   \tneg.f32 \t%f1, %f2;\n\
                   \tsub.s32 \t%r1, %r2, %r3;\n\
                   \tsub.s64 \t%rd7, %rd8, 16;\n";
        let want = "\tnot.b32 \t%r6, %r3;\n\tadd.s32 \t%r6, %r6, 1;\n\
                    \t@%p2 not.b32 \t%r7, %r7;\n\t@%p2 add.s32 \t%r7, %r7, 1;\n\
                    \tnot.b64 \t%rd1, %rd2;\n\tadd.s64 \t%rd1, %rd1, 1;\n\
                    \tnot.b64 \t%rd3, %rd4;\n\tadd.s64 \t%rd3, %rd3, %rd5;\n\tnot.b64 \t%rd3, %rd3;\n\
                    \tnot.b64 \t%rd4, %rd4;\n\tadd.s64 \t%rd4, %rd4, %rd5;\n\tnot.b64 \t%rd4, %rd4;\n\
                    \t@!%p1 not.b64 \t%rd5, %rd5;\n\t@!%p1 add.s64 \t%rd5, %rd5, %rd4;\n\t@!%p1 add.s64 \t%rd5, %rd5, 1;\n\
                    \tmov.b64 \t%rd6, 0;\n\
                    \tneg.f32 \t%f1, %f2;\n\
                    \tsub.s32 \t%r1, %r2, %r3;\n\
                    \tsub.s64 \t%rd7, %rd8, 16;\n";
        assert_eq!(avoid_ptxas_defects(ptx), want);
    }

    /// a - b as the rewrite computes it, on 64-bit integers: the identities
    /// `~(~a + b) = a - b` and `~b + a + 1 = a - b` in wrapping arithmetic.
    #[test]
    fn the_respelt_subtraction_is_a_minus_b() {
        let cases = [
            0u64,
            1,
            2,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
            0x8000_0000_0000_0000,
        ];
        for &a in &cases {
            for &b in &cases {
                let want = a.wrapping_sub(b);
                assert_eq!(!((!a).wrapping_add(b)), want);
                assert_eq!((!b).wrapping_add(a).wrapping_add(1), want);
            }
        }
    }
}
