//! Reductions a loop accumulates (`acc += sum(x, 1)`) are carried as
//! per-thread partials and combined across lanes and warps once, after the
//! loop: the loop body has no shuffle and no barrier for them (mHC's
//! streaming backward kernels sum per-token products over C this way). A
//! reduction whose value is used in the loop itself must still be combined
//! there. Counted in the PTX of the loop.

mod common;

use common::{count, innermost_loop};

fn ptx(text: &str, kernel: &str, meta: &[(&str, i64)], warps: u32) -> String {
    common::ptx_of("reductions.tile", text, kernel, meta, warps)
}

/// The innermost loop that holds a global load.
fn load_loop(ptx: &str) -> Vec<&str> {
    innermost_loop(ptx, "ld.global")
}

const ROW_SUMS: &str = r#"
kernel row_sums<const BR: i32, const BC: i32>(x: *f32, xi: *i32, y: *f32, yi: *i32, C: i32) {
    let r = program_id(0) * BR + arange(0, BR);
    let mut acc = zeros([BR], f32);
    let mut big = full([BR], -1, i32);
    let mut total = 0.0;
    for c0 in 0..C step BC {
        let c = c0 + arange(0, BC);
        let m = c[None, :] < C;
        let v = load(x + r[:, None] * C + c[None, :], m, 0.0);
        acc += sum(v * v, 1);
        big = maximum(big, max(load(xi + r[:, None] * C + c[None, :], m, -1), 1));
        total += sum(load(x + c, c < C, 0.0), 0);
    }
    store(y + r, acc + total);
    store(yi + r, big);
}
"#;

#[test]
fn a_reduction_accumulated_in_a_loop_crosses_threads_after_it() {
    // Rows and columns across lanes and warps, rows replicated (BR = 1).
    for (br, bc, warps) in [(4, 256, 4), (1, 1024, 8), (16, 64, 4), (2, 32, 1)] {
        let what = format!("row sums BR={br} BC={bc}, {warps} warps");
        let ptx = ptx(ROW_SUMS, "row_sums", &[("BR", br), ("BC", bc)], warps);
        let body = load_loop(&ptx);
        assert_eq!(count(&body, "bar.sync"), 0, "{what}: barrier in the loop");
        assert_eq!(count(&body, "shfl.sync"), 0, "{what}: shuffle in the loop");
        assert_eq!(count(&body, "st.shared"), 0, "{what}: scratch in the loop");
        // The sums still cross lanes, after the loop.
        assert!(
            count(&ptx.lines().collect::<Vec<_>>(), "shfl.sync") > 0,
            "{what}"
        );
    }
}

#[test]
fn a_reduction_read_inside_the_loop_is_combined_there() {
    // `s` is stored every iteration as well as accumulated: each thread needs
    // the whole row's sum in the loop, so the loop keeps its shuffles.
    let src = r#"
kernel row_sums_used(x: *f32, y: *f32, z: *f32, C: i32) {
    let r = program_id(0) * 4 + arange(0, 4);
    let mut acc = zeros([4], f32);
    for c0 in 0..C step 256 {
        let c = c0 + arange(0, 256);
        let s = sum(load(x + r[:, None] * C + c[None, :], c[None, :] < C, 0.0), 1);
        store(z + r * C + c0, s);
        acc += s;
    }
    store(y + r, acc);
}
"#;
    let ptx = ptx(src, "row_sums_used", &[], 4);
    let body = load_loop(&ptx);
    assert!(
        count(&body, "shfl.sync") > 0,
        "the sum crosses lanes in the loop"
    );
    assert!(
        count(&body, "bar.sync") > 0,
        "the sum crosses warps in the loop"
    );
}

/// mHC's per-token Sinkhorn-Knopp iterations (`mhc_coeffs`, `mhc_coeffs_bwd`:
/// [32/n, n, n] tiles, one warp) reduce across lanes only: their results
/// stay where the shuffles leave them (layout `Reduced`) and broadcast back
/// by selecting registers, so no iteration has a barrier — the count does not
/// grow with the iterations (it did by 10 and 33 per iteration before).
#[test]
fn sinkhorn_iterations_have_no_barrier() {
    for (kernel, extra) in [
        ("mhc_coeffs", &[][..]),
        ("mhc_coeffs_bwd", &[("SEG", 2), ("HIST", 16)][..]),
    ] {
        for n in [2, 4, 8] {
            let bars = |iters: i64| {
                let mut meta = vec![("N", n), ("BT", 32 / n), ("ITERS", iters)];
                meta.extend_from_slice(extra);
                if kernel == "mhc_coeffs_bwd" {
                    // The projection's rows n² + 2n, padded (dz's bf16 parts).
                    meta.push(("RP", [16, 32, 128][n.ilog2() as usize - 1]));
                }
                let ptx = common::file_ptx("mhc-kernels/kernels/mhc/mhc.tile", kernel, &meta, 1);
                ptx.lines().filter(|l| l.contains("bar.sync")).count()
            };
            assert_eq!(bars(4), bars(20), "{kernel} N={n}");
        }
    }
}
