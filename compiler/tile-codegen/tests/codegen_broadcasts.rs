//! A vector broadcast over a blocked tile (`s[:, None] * x`, `x + w[None, :]`)
//! is loaded or computed by the threads that use it, in the tile's layout with
//! the broadcast dimension collapsed (`layout::Reduced`), instead of in its
//! own 1-D layout and moved through shared memory between two barriers: a
//! per-row scale or a per-token coefficient costs no barrier. Counted in the
//! PTX.

mod common;

use common::{count, innermost_loop};

const SCALE_ROWS: &str = r#"
kernel scale_rows<const BR: i32, const BC: i32>(x: *bf16, s: *f32, w: *f32, y: *bf16, R: i32, C: i32) {
    let r = program_id(0) * BR + arange(0, BR);
    let c = program_id(1) * BC + arange(0, BC);
    let rm = r < R;
    let m = rm[:, None] && (c < C)[None, :];
    let offs = r[:, None] * C + c[None, :];
    let sr = load(s + r, rm, 0.0) * 2.0;
    let wc = load(w + c, c < C, 0.0);
    let v = load(x + offs, m, 0.0) as f32;
    store(y + offs, (v * sr[:, None] + wc[None, :]) as bf16, m);
}
"#;

#[test]
fn a_broadcast_vector_moves_through_no_shared_memory() {
    // Rows across warps, columns across lanes and warps, one warp.
    for (br, bc, warps) in [
        (64, 64, 4),
        (16, 256, 4),
        (128, 32, 8),
        (4, 1024, 8),
        (8, 64, 1),
    ] {
        let what = format!("BR={br} BC={bc}, {warps} warps");
        let ptx = common::ptx_of(
            "broadcasts.tile",
            SCALE_ROWS,
            "scale_rows",
            &[("BR", br), ("BC", bc)],
            warps,
        );
        let lines: Vec<&str> = ptx.lines().collect();
        assert_eq!(count(&lines, "bar.sync"), 0, "{what}: barrier");
        assert_eq!(count(&lines, "st.shared"), 0, "{what}: scratch");
        // Both vectors are still read from global memory.
        assert!(count(&lines, "ld.global") >= 3, "{what}");
    }
}

/// mHC's streaming backward kernels broadcast a token's coefficients over
/// its [N, BC] tiles: the C loop of `mhc_pre_bwd` has no barrier, and
/// neither has `mhc_post_bwd`'s at N <= 4, where `d_res` is a loop-carried
/// sum of an [N, N, BC] product (per-thread partials); at N = 8 it keeps
/// the two of each of its N row updates (a sum over C placed into an
/// [N, N] tile).
#[test]
fn mhc_stream_backward_loops_broadcast_without_barriers() {
    for n in [2, 4, 8] {
        let post_bars = if n <= 4 { 0 } else { 2 * n };
        for (kernel, warps, bars) in [("mhc_post_bwd", 1, post_bars), ("mhc_pre_bwd", 4, 0)] {
            let ptx = common::file_ptx(
                "mhc-kernels/kernels/mhc/mhc.tile",
                kernel,
                &[("N", n), ("BC", 256)],
                warps,
            );
            let body = innermost_loop(&ptx, "ld.global");
            assert_eq!(
                count(&body, "bar.sync"),
                bars as usize,
                "{kernel} N={n}: barriers in the loop"
            );
        }
    }
}

/// A `dot` result that no loop carries, combined with loaded tiles, is
/// converted once into the tiles' blocked layout, where the loads and stores
/// are 16 bytes wide, instead of each loaded tile being converted into the
/// accumulator's layout and the sum back for its store: `linear_gelu_bwd`'s
/// `dg · gelu'(u)` and `gelu(u)` after its loop (17 barriers and 255
/// registers before, 5 and 172 after) and `mhc_proj_bwd`'s
/// `gx - q·x + dz·φ` in its loop (the accumulator's reduction after the loop
/// is the other conversion there).
#[test]
fn an_epilogue_converts_the_accumulator_once() {
    // (conversions after loops, conversions in loops)
    for (file, kernel, meta, warps, expected) in [
        (
            "mhc-kernels/kernels/mhc/mhc.tile",
            "mhc_proj_bwd",
            &[("RP", 32), ("BT", 64), ("BK", 64)][..],
            4,
            (1, 1),
        ),
        (
            "mhc-kernels/kernels/model/elementwise.tile",
            "linear_gelu_bwd",
            &[("BM", 64), ("BN", 128), ("BK", 64)][..],
            8,
            (1, 0),
        ),
    ] {
        let art = common::file_artifacts(file, kernel, meta, warps);
        let conversions = art
            .moves
            .iter()
            .filter(|m| m.kind == tile_codegen::MoveKind::Conversion && m.loop_depth == 0)
            .count();
        let in_loops = art
            .moves
            .iter()
            .filter(|m| m.kind == tile_codegen::MoveKind::Conversion && m.loop_depth > 0)
            .count();
        assert_eq!(
            (conversions, in_loops),
            expected,
            "{kernel}: {:?}",
            art.moves
        );
    }
}

const DIVIDE_ROWS: &str = r#"
kernel divide_rows<const BR: i32, const BC: i32>(x: *f32, s: *f32, w: *f32, y: *f32, z: *f32, C: i32) {
    let r = program_id(0) * BR + arange(0, BR);
    let c = arange(0, BC);
    let offs = r[:, None] * C + c[None, :];
    let v = load(x + offs);
    let sr = load(s + r);
    let wc = load(w + c);
    store(y + offs, v / sr[:, None] + v / wc[None, :]);
    store(z + offs, v / (sr[:, None] + wc[None, :]));
}
"#;

/// A float tile divided by a broadcast row or column (a normalisation) is
/// multiplied by reciprocals, one for each distinct divisor a thread holds;
/// a divisor that is a tile of its own (`z`) keeps a division an element.
#[test]
fn a_division_by_a_broadcast_vector_takes_one_reciprocal_a_divisor() {
    for (br, bc, warps) in [(64, 64, 4), (16, 256, 4), (8, 64, 1)] {
        let what = format!("BR={br} BC={bc}, {warps} warps");
        let ptx = common::ptx_of(
            "divide.tile",
            DIVIDE_ROWS,
            "divide_rows",
            &[("BR", br), ("BC", bc)],
            warps,
        );
        let lines: Vec<&str> = ptx.lines().collect();
        let per_thread = (br * bc) as usize / (32 * warps as usize);
        let divisions = count(&lines, "div.rn.f32");
        // z's divisions, one an element, and at most half as many again for
        // the reciprocals of y's rows and columns.
        assert!(divisions >= per_thread, "{what}: {divisions} divisions");
        assert!(
            divisions <= per_thread + per_thread / 2,
            "{what}: {divisions} divisions for {per_thread} elements a thread"
        );
    }
}

const FMA_ROWS: &str = r#"
kernel fma_rows<const BR: i32, const BC: i32>(x: *f32, s: *f32, y: *bf16, z: *bf16, C: i32) {
    let r = program_id(0) * BR + arange(0, BR);
    let c = arange(0, BC);
    let offs = r[:, None] * C + c[None, :];
    let v = load(x + offs);
    let m = load(s + r);
    store(y + offs, fma(v, 0.5, -m[:, None]) as bf16);
    let w = load(y + offs);
    store(z + offs, fma(w, w, w));
}
"#;

/// `fma(a, b, c)` is one `fma.rn.f32` an element, its broadcast addend read
/// in the tile's layout like any broadcast operand (no shared memory), and
/// in bf16 computed in f32 (one `fma.rn.f32`, then a rounding to bf16).
#[test]
fn fma_is_one_fused_instruction_an_element() {
    for (br, bc, warps) in [(64, 64, 4), (8, 64, 1)] {
        let what = format!("BR={br} BC={bc}, {warps} warps");
        let ptx = common::ptx_of(
            "fma.tile",
            FMA_ROWS,
            "fma_rows",
            &[("BR", br), ("BC", bc)],
            warps,
        );
        let lines: Vec<&str> = ptx.lines().collect();
        let per_thread = (br * bc) as usize / (32 * warps as usize);
        assert_eq!(count(&lines, "fma.rn.f32"), 2 * per_thread, "{what}: fma");
        assert_eq!(count(&lines, "mul.rn.f32"), 0, "{what}: an unfused product");
        assert_eq!(count(&lines, "st.shared"), 0, "{what}: scratch");
    }
}
