//! Values read only in a `dot`'s layouts are computed in them
//! (`pull_mma_layouts`): inside a loop, an `mma.sync` operand computed from
//! a load goes straight into its fragments, and the epilogue's loads and
//! store run in the accumulator layout, so the loop needs no shared memory
//! and no barrier (mHC's projection backward, `mhc_proj_bwd_dx`). An operand
//! with another reader stays staged, and a store after the loop (a matmul's
//! epilogue) keeps its 16-byte accesses. Counted in the PTX.

mod common;

use common::{count, file_ptx, innermost_loop, ptx_of};

#[test]
fn the_projection_backward_loop_reads_operands_from_registers() {
    let ptx = file_ptx(
        "mhc-kernels/kernels/mhc/mhc.tile",
        "mhc_proj_bwd_dx",
        &[("RP", 32), ("BT", 32), ("BK", 64), ("RB", 256)],
        8,
    );
    let body = innermost_loop(&ptx, "mma.sync");
    // Three dots of [32, 32] @ [32, 64] over 2 × 4 warps: 2 k steps × 2
    // n tiles each.
    assert_eq!(count(&body, "mma.sync"), 12, "{}", body.join("\n"));
    for what in ["bar.sync", "ldmatrix", "st.shared", "ld.shared"] {
        assert_eq!(
            count(&body, what),
            0,
            "`{what}` in the loop:\n{}",
            body.join("\n")
        );
    }
}

const SHARED_OPERAND: &str = r#"
kernel shared_operand<const BM: i32, const BK: i32>(a: *bf16, b: *bf16, y: *f32, s: *f32, n: i32) {
    let r = program_id(0) * BM + arange(0, BM);
    let k = arange(0, BK);
    let bt = load(b + k[:, None] * BK + k[None, :]) as f32;
    let mut acc = zeros([BM, BK], f32);
    let mut tot = zeros([BM], f32);
    for i in 0..n {
        let x = load(a + (i * BM + r)[:, None] * BK + k[None, :]) as f32;
        let xh = (x * 2.0) as bf16;
        tot += sum(xh as f32, 1);
        acc = dot(xh, (bt * 0.5) as bf16, acc);
    }
    store(y + r[:, None] * BK + k[None, :], acc);
    store(s + r, tot);
}
"#;

/// `xh` is also summed, in the canonical layout: it is staged for the dot
/// as before, while the loop-invariant `b` operand converts once, before
/// the loop.
#[test]
fn an_operand_with_another_reader_stays_staged() {
    let ptx = ptx_of(
        "operands.tile",
        SHARED_OPERAND,
        "shared_operand",
        &[("BM", 32), ("BK", 32)],
        4,
    );
    let body = innermost_loop(&ptx, "mma.sync");
    assert!(count(&body, "ldmatrix") > 0, "{}", body.join("\n"));
    let before_loop = ptx.split(body[0]).next().unwrap();
    assert!(
        before_loop.contains("bar.sync"),
        "b converts before the loop"
    );
}

/// After the K loop, the accumulator converts once for 16-byte stores.
#[test]
fn a_store_after_the_loop_stays_vectorised() {
    let ptx = file_ptx("dsl-examples/matmul.tile", "matmul", &[], 4);
    let body = innermost_loop(&ptx, "mbarrier.try_wait");
    let after = ptx.rsplit(body[body.len() - 1]).next().unwrap();
    assert!(after.contains("st.global.v4.b32"), "{after}");
}
