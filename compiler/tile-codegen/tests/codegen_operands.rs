//! Values read only in a `dot`'s layouts are computed in them
//! (`pull_layouts`): inside a loop, an `mma.sync` operand computed from
//! a load goes straight into its fragments, and the epilogue's loads and
//! store run in the accumulator layout, so the loop needs no shared memory
//! and no barrier (the row loop of mHC's projection backward as it was
//! until session 15). An operand with another reader stays staged, a store
//! after the loop (a matmul's epilogue) keeps its 16-byte accesses, and so
//! does a step whose tiles a pipelined loop holds in shared memory (the
//! projection backward's row loop since session 33). Counted in the PTX.

mod common;

use common::{count, file_ptx, innermost_loop, ptx_of};

/// `gx += φᵀ·dz − q·x` over a column block, 32 rows a step: φ split once,
/// dz split every step, both halves fed to `mma.sync` from registers.
const ROW_LOOP_PROJECTION: &str = r#"
kernel row_loop_projection<const RP: i32, const BT: i32, const BK: i32, const RB: i32>(x: *bf16, phi: *f32, dz: *f32, q: *f32, gx: *bf16, rows: i32, K: i32, R: i32) {
    let j = program_id(1) * BK + arange(0, BK);
    let jmask = j < K;
    let kc = arange(0, RP);
    let kmask = kc < R;
    let pt = load(phi + kc[:, None] * K + j[None, :], kmask[:, None] && jmask[None, :], 0.0);
    let ph = pt as bf16;
    let pl = (pt - ph as f32) as bf16;
    for r0 in 0..RB step BT {
        let rr = program_id(0) * RB + r0 + arange(0, BT);
        let rmask = rr < rows;
        let dzt = load(dz + rr[:, None] * R + kc[None, :], rmask[:, None] && kmask[None, :], 0.0);
        let dzh = dzt as bf16;
        let dzl = (dzt - dzh as f32) as bf16;
        let mut dx = dot(dzh, ph);
        dx = dot(dzl, ph, dx);
        dx = dot(dzh, pl, dx);
        let xm = rmask[:, None] && jmask[None, :];
        let offs = (rr as i64)[:, None] * (K as i64) + j[None, :];
        let xb = load(x + offs, xm, 0.0) as f32;
        // q per element (L1 hits): a [BT, BK] load computes in the dot's
        // accumulator layout, a broadcast [BT] one would cross threads.
        let qs = load(q + rr[:, None] + 0 * j[None, :], xm, 0.0);
        let old = load(gx + offs, xm, 0.0) as f32;
        store(gx + offs, (old + dx - qs * xb) as bf16, xm);
    }
}
"#;

#[test]
fn the_projection_backward_loop_reads_operands_from_registers() {
    let ptx = ptx_of(
        "row_loop_projection.tile",
        ROW_LOOP_PROJECTION,
        "row_loop_projection",
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

/// mHC's projection backward (`mhc_proj_bwd`) adds `dz · φ` to a tile of
/// g_x in every step of its row loop, where the dot result is fresh each
/// step: the memory-bound part of the step runs in the blocked layout, each
/// thread moving 8 contiguous bf16 of g_x per access (16 bytes), not the
/// accumulator's 4-byte column pairs (1.5× slower on the H200).
#[test]
fn the_projection_backward_step_is_vectorised() {
    let ptx = file_ptx(
        "mhc-kernels/kernels/mhc/mhc.tile",
        "mhc_proj_bwd",
        &[("RP", 32), ("BT", 64), ("BK", 64)],
        4,
    );
    let body = innermost_loop(&ptx, "mbarrier.try_wait");
    // [64, 64] bf16 on 128 threads: 4 vectors of 8 a thread for the old
    // g_x (and the masked edge's slow path element by element); none of
    // the accumulator layout's bf16 pairs.
    assert_eq!(count(&body, "ld.global.v4.b32"), 4, "{body:#?}");
    assert!(count(&body, "st.global.v4.b32") >= 1, "{body:#?}");
    assert_eq!(count(&body, ".v2.b16"), 0, "{body:#?}");
}
