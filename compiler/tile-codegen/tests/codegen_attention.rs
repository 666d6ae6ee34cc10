//! The structure of the attention forward's inner loop (dsl-examples/
//! attention.tile) on Hopper, counted in its PTX, so that the shared-memory
//! round trips that layout slices and register operands removed cannot come
//! back unnoticed (the numbers the H200 ran and passed gpu_examples with):
//!
//! - the row max and row sum of the scores are quad shuffles on the `wgmma`
//!   accumulator (`Slice`): no shared-memory conversion, no barrier;
//! - `exp(s - m[:, None])` and `acc * alpha[:, None]` select registers;
//! - `trans(k)` is staged as it is and read K-major (no transpose through
//!   shared memory);
//! - `dot(p, v)` takes P from registers (wgmma's register A);
//! - K and V stream through the software pipeline (`cp.async` into a ring of
//!   stages, `prefetch`), `trans(k)` read K-major from its stage, and Q is
//!   staged once before the loop (a resident operand).
//!
//! What remains per iteration is the pipeline's wait for its stage: one
//! barrier, no store to and no load from shared memory by the threads; and
//! the loop over whole blocks of keys selects no score (only the blocks at
//! the sequence's end and on the causal diagonal are masked, in a loop of
//! their own).

mod common;

use common::{count, file_artifacts, file_ptx, innermost_loop, ptx_of};

fn attention_ptx(meta: &[(&str, i64)], warps: u32) -> String {
    example_ptx("attention.tile", "attention", meta, warps)
}

/// PTX of `kernel` of dsl-examples/`file` on Hopper.
fn example_ptx(file: &str, kernel: &str, meta: &[(&str, i64)], warps: u32) -> String {
    file_ptx(&format!("dsl-examples/{file}"), kernel, meta, warps)
}

/// K and V stream through the software pipeline (one wait for a stage),
/// and no thread stores to or loads from shared memory in the loop (no
/// conversion, no operand staged from registers).
fn assert_streams_through_the_pipeline(body: &[&str], what: &str) {
    assert_eq!(
        count(body, "cp.async.wait_group"),
        1,
        "{what}: K and V are not pipelined"
    );
    assert_eq!(
        count(body, "ld.shared"),
        0,
        "{what}: a conversion through shared memory is in the loop"
    );
    assert_eq!(
        count(body, "st.shared"),
        0,
        "{what}: an operand is staged from registers in the loop"
    );
}

/// How many of `lines` are `wgmma`s that read A from registers.
fn register_a_wgmmas(lines: &[&str]) -> usize {
    lines
        .iter()
        .filter(|l| l.contains("wgmma.mma_async") && l.contains("}, {%r"))
        .count()
}

/// The lines of the innermost loop that holds a `wgmma`.
fn wgmma_loop(ptx: &str) -> Vec<&str> {
    innermost_loop(ptx, "wgmma.mma_async")
}

#[test]
fn the_attention_loop_keeps_softmax_statistics_and_p_in_registers() {
    for (d, warps) in [(64, 4), (64, 8), (128, 4), (128, 8)] {
        let meta = [("BM", 128), ("BN", 64), ("D", d)];
        let ptx = attention_ptx(&meta, warps);
        let body = wgmma_loop(&ptx);
        let what = format!("attention BM=128 BN=64 D={d}, {warps} warps");
        let barriers = count(&body, "bar.sync") + count(&body, "barrier.sync");
        assert_eq!(
            barriers, 1,
            "{what}: barriers in the loop (the wait for the pipeline's stage)"
        );
        assert_streams_through_the_pipeline(&body, &what);
        // Row max and row sum: two butterfly rounds over a quad for each of
        // a thread's rows (2 per 64-row block it covers).
        let rows = 2 * 128 / (64 * (warps / 4));
        assert_eq!(
            count(&body, "shfl.sync.bfly"),
            2 * 2 * rows as usize,
            "{what}: row reductions"
        );
        // Q @ Kᵀ, then P @ V with A from four registers: one wgmma per
        // 16-wide k step per 64-row block of the warpgroup.
        let blocks = 128 / (64 * (warps as usize / 4));
        let register_a = register_a_wgmmas(&body);
        assert_eq!(register_a, blocks * 64 / 16, "{what}: P @ V from registers");
        assert_eq!(
            count(&body, "wgmma.mma_async"),
            blocks * (d as usize + 64) / 16,
            "{what}: wgmma in the loop"
        );
        // The loop over whole blocks masks nothing (the ragged end and the
        // diagonal have a loop of their own).
        assert_eq!(count(&body, "selp.f32"), 0, "{what}: masked scores");
    }
}

/// The backward's loops stream their per-iteration tiles through the
/// software pipeline too: a loop-invariant operand (K, V in dK/dV; Q, dO in
/// dQ) is resident, `trans` of it read K-major, so the dots that read only
/// loads and invariants need no staging.
#[test]
fn the_attention_backward_loops_are_pipelined() {
    for (kernel, meta) in [
        ("attention_lse", &[("BM", 128), ("BN", 64), ("D", 64)][..]),
        ("attention_bwd_dq", &[("BM", 64), ("BN", 64), ("D", 64)][..]),
        (
            "attention_bwd_dkdv",
            &[("BM", 64), ("BN", 64), ("D", 64)][..],
        ),
    ] {
        let ptx = example_ptx("attention_bwd.tile", kernel, meta, 4);
        let body = wgmma_loop(&ptx);
        assert_eq!(
            count(&body, "cp.async.wait_group"),
            1,
            "{kernel}: the loop's loads are not pipelined"
        );
    }
}

/// dK/dV computes the scores transposed (Sᵀ = K Qᵀ, a row per key), so Pᵀ
/// and dSᵀ leave their dots in the accumulator layout and feed
/// `dot(pt, do)` and `dot(dst, q)` as wgmma's register A, and the
/// per-query `lse[None, :]` and `delta[None, :]` are loaded straight into
/// the accumulator's columns (column `Slice`s): the loop's only barrier is
/// the pipeline's, and no thread reads shared memory (it had 21 barriers
/// and 134 shared loads, and spilled at 255 registers).
#[test]
fn the_attention_dkdv_loop_moves_nothing_through_shared_memory() {
    for (d, bm, bn) in [(64, 64, 64), (64, 32, 64), (128, 64, 64)] {
        let meta = [("BM", bm), ("BN", bn), ("D", d)];
        let ptx = example_ptx("attention_bwd.tile", "attention_bwd_dkdv", &meta, 4);
        let body = wgmma_loop(&ptx);
        let what = format!("attention_bwd_dkdv BM={bm} BN={bn} D={d}");
        let barriers = count(&body, "bar.sync") + count(&body, "barrier.sync");
        assert_eq!(barriers, 1, "{what}: barriers in the loop");
        assert_eq!(
            count(&body, "ld.shared"),
            0,
            "{what}: a conversion through shared memory"
        );
        let register_a = register_a_wgmmas(&body);
        assert_eq!(
            register_a,
            2 * bm as usize / 16,
            "{what}: Pᵀ dO and dSᵀ Q from registers"
        );
    }
}

/// A mask applied only to some blocks, by a runtime `if` in the loop: P
/// comes out of the `if`, and still feeds `dot(p, v)` from registers, and V
/// still streams through the pipeline (`prefetch` follows an `if`'s results
/// into both branches, as it follows a carried value into its yield).
#[test]
fn a_mask_under_an_if_keeps_p_in_registers() {
    let text = r#"
kernel masked<const BM: i32, const BN: i32, const D: i32>(q: *bf16, k: *bf16, v: *bf16, o: *bf16, seq: i32) {
    let rm = program_id(0) * BM + arange(0, BM);
    let rd = arange(0, D);
    let qs = load(q + rm[:, None] * D + rd[None, :], rm[:, None] < seq, 0.0);
    let mut m = full([BM], -1.0e30, f32);
    let mut acc = zeros([BM, D], f32);
    let full = seq / BN * BN;
    for start in 0..seq step BN {
        let rn = start + arange(0, BN);
        let ks = load(k + rn[:, None] * D + rd[None, :], rn[:, None] < seq, 0.0);
        let vs = load(v + rn[:, None] * D + rd[None, :], rn[:, None] < seq, 0.0);
        let mut s = dot(qs, trans(ks));
        if start >= full {
            s = where(rn[None, :] < seq, s, -1.0e30);
        }
        let m_new = maximum(m, max(s, 1));
        let p = exp2(s - m_new[:, None]);
        acc = acc * exp2(m - m_new)[:, None] + dot(p as bf16, vs);
        m = m_new;
    }
    store(o + rm[:, None] * D + rd[None, :], acc as bf16, rm[:, None] < seq);
}
"#;
    let meta = [("BM", 128), ("BN", 64), ("D", 64)];
    let ptx = ptx_of("masked.tile", text, "masked", &meta, 4);
    let body = wgmma_loop(&ptx);
    let register_a = register_a_wgmmas(&body);
    assert_eq!(register_a, 2 * 64 / 16, "P @ V from registers");
    assert_streams_through_the_pipeline(&body, "attention with a mask under an if");
}

/// The fused backward adds dQ += dSᵀᵀ K from the same bf16 dSᵀ that feeds
/// dK: `trans(dst)` is staged as it is, straight from its accumulator
/// fragments, and read MN-major (wgmma's transposed A), K from its resident
/// buffer; the partial dQ is added atomically from the accumulator's
/// fragments, a pair per `red.global.add.v2.f32`. The loop still streams
/// Q and dO through the pipeline (its
/// atomic add goes to dq_acc, which it never loads), and the staging of
/// dSᵀ is its only traffic through shared memory by the threads: no load
/// back, two barriers around it beside the pipeline's one.
#[test]
fn the_fused_backward_reads_ds_transposed_from_its_fragments() {
    for (d, warps) in [(64, 4), (128, 4)] {
        let meta = [("BM", 64), ("BN", 64), ("D", d), ("CAUSAL", 0)];
        let ptx = example_ptx("attention_bwd.tile", "attention_bwd_fused", &meta, warps);
        let body = wgmma_loop(&ptx);
        let what = format!("attention_bwd_fused BM=64 BN=64 D={d}, {warps} warps");
        assert_eq!(
            count(&body, "cp.async.wait_group"),
            1,
            "{what}: Q and dO are not pipelined"
        );
        // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (k = D), dV and dK (k = BM), dQ (k = BN).
        let steps = (2 * d as usize + 3 * 64) / 16;
        assert_eq!(count(&body, "wgmma.mma_async"), steps, "{what}: wgmmas");
        assert_eq!(
            count(&body, "p, 1, 1, 1, 1;"),
            64 / 16,
            "{what}: dQ's A not read MN-major from the staged dSᵀ"
        );
        assert_eq!(
            count(&body, "ld.shared"),
            0,
            "{what}: a conversion in the loop"
        );
        let barriers = count(&body, "bar.sync") + count(&body, "barrier.sync");
        assert_eq!(barriers, 3, "{what}: barriers in the loop");
        // 64 × d partial sums over 128 threads, an accumulator pair per
        // vector add, each pair with its fallback of two atomic adds for a
        // masked-off query (in the kernel: those blocks may be placed after
        // the loop's).
        let all: Vec<&str> = ptx.lines().collect();
        let sums = 64 * d as usize / 128;
        assert_eq!(
            count(&all, "red.global.add.v2.f32"),
            sums / 2,
            "{what}: vector adds of dQ"
        );
        assert_eq!(
            count(&all, "atom.global.add.f32"),
            sums,
            "{what}: atomic adds of dQ"
        );
    }
}

/// A configuration's `stages` bounds each pipelined loop's depth: the
/// forward's shared memory is Q (resident, 64 × 128 bf16 = 16 KiB) plus
/// one K block and one V block (2 × 64 × 128 bf16 = 32 KiB) a stage. By
/// default the compiler takes 4; 2 leave room for a second CTA on a
/// multiprocessor (228 KiB); 8 get what fits the largest budget (208 KiB:
/// 6). A depth out of range is an error, not a clamp.
#[test]
fn stages_bound_the_pipeline_depth() {
    use tile_codegen::{compile, CodegenError, Options};
    use tile_front::frontend::{parse_program, SourceFile};
    let path = format!(
        "{}/../../dsl-examples/attention.tile",
        env!("CARGO_MANIFEST_DIR")
    );
    let src = SourceFile::new(&path, std::fs::read_to_string(&path).unwrap());
    let program = parse_program(&src).unwrap();
    let meta: Vec<(String, i64)> = [("BM", 64), ("BN", 64), ("D", 128), ("CAUSAL", 0)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let tir = program.specialize("attention", &meta).unwrap();
    let shared = |stages: Option<u32>| {
        compile(
            &tir,
            &Options {
                warps: 4,
                stages,
                keep_ir: false,
                ..Options::default()
            },
        )
        .map(|a| a.shared_bytes)
    };
    const Q: u32 = 64 * 128 * 2;
    const STAGE: u32 = 2 * 64 * 128 * 2;
    assert_eq!(shared(None).unwrap(), Q + 4 * STAGE);
    assert_eq!(shared(Some(2)).unwrap(), Q + 2 * STAGE);
    assert_eq!(shared(Some(3)).unwrap(), Q + 3 * STAGE);
    assert!(matches!(shared(Some(1)), Err(CodegenError::Stages(1))));
    assert_eq!(shared(Some(8)).unwrap(), Q + 6 * STAGE);
    assert!(matches!(shared(Some(9)), Err(CodegenError::Stages(9))));
}

/// The report of data moved through shared memory (`tilec build
/// --explain-moves`) agrees with the PTX: the attention loops, forward and
/// backward, move nothing between threads through shared memory, and the
/// forward's only moves are once-per-kernel ones.
#[test]
fn the_attention_loops_report_no_shared_memory_moves() {
    for (file, kernel, meta) in [
        (
            "attention.tile",
            "attention",
            &[("BM", 128), ("BN", 64), ("D", 64)][..],
        ),
        (
            "attention_bwd.tile",
            "attention_bwd_dkdv",
            &[("BM", 32), ("BN", 64), ("D", 64)][..],
        ),
        (
            "attention_bwd.tile",
            "attention_bwd_dq",
            &[("BM", 64), ("BN", 64), ("D", 64)][..],
        ),
    ] {
        let art = file_artifacts(&format!("dsl-examples/{file}"), kernel, meta, 4);
        let in_loops: Vec<_> = art.moves.iter().filter(|m| m.loop_depth > 0).collect();
        assert!(in_loops.is_empty(), "{kernel} {meta:?}: {in_loops:?}");
    }
    // A kernel whose loop does convert reports it: mhc_post_bwd at N = 8
    // places a sum over C into a row of an [N, N] tile each step.
    let art = file_artifacts(
        "mhc-kernels/kernels/mhc/mhc.tile",
        "mhc_post_bwd",
        &[("N", 8), ("BC", 256)],
        1,
    );
    let in_loops = art.moves.iter().filter(|m| m.loop_depth > 0).count();
    assert_eq!(in_loops, 8, "{:?}", art.moves);
}

/// The epilogue's `acc / l[:, None]` divides by a row statistic broadcast
/// into the accumulator: one reciprocal a row a thread holds (`rcp`-like
/// `div.rn` of 1.0), then products, not a division an element (which was a
/// fifth of the kernel's SASS at D = 128, most of it the divisions' slow
/// paths). A thread holds two rows of each m64 block of the accumulator.
#[test]
fn the_epilogue_divides_by_one_reciprocal_a_row() {
    for (bm, d, warps) in [(128, 64, 4), (128, 128, 4), (128, 128, 8), (64, 64, 4)] {
        let ptx = attention_ptx(&[("BM", bm), ("BN", 64), ("D", d), ("CAUSAL", 0)], warps);
        let lines: Vec<&str> = ptx.lines().collect();
        let rows_a_thread = 2 * (bm / 64).max(1) as usize / (warps as usize / 4).max(1);
        let divisions = count(&lines, "div.rn.f32");
        assert!(
            divisions <= rows_a_thread,
            "BM={bm} D={d}, {warps} warps: {divisions} divisions for {rows_a_thread} rows a thread"
        );
    }
}
