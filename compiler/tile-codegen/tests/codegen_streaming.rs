//! A configuration's `stages` on a loop without a `dot` pipelines the loop's
//! streaming loads (`prefetch`, "Streaming loads"): 2-D tiles of 16-bit
//! elements from parameters the loop does not write are copied with
//! `cp.async` into a ring of shared-memory stages iterations ahead and read
//! back where the body uses them. Without `stages` the loop is left as it
//! was, and a launch of a configuration with `stages` keeps the buffers the
//! loop writes apart from every buffer it loads (`tile_ir::aliasing`).

mod common;

use common::{count, file_artifacts_with, innermost_loop};
use tile_codegen::{Artifacts, Options};

const MHC: &str = "mhc-kernels/kernels/mhc/mhc.tile";

fn mhc_kernel(kernel: &str, bc: i64, warps: u32, stages: Option<u32>) -> Artifacts {
    let opts = Options {
        warps,
        stages,
        ..Options::default()
    };
    file_artifacts_with(MHC, kernel, &[("N", 4), ("BC", bc)], &opts)
}

/// Bytes of one `[4, bc]` bf16 tile in a stage (rows padded by 8 elements).
fn tile_bytes(bc: u32) -> u32 {
    4 * (bc + 8) * 2
}

#[test]
fn stages_pipeline_the_streams_of_a_loop_without_a_dot() {
    let plain = mhc_kernel("mhc_post_bwd", 256, 1, None);
    assert_eq!(
        plain.ptx.matches("cp.async").count(),
        0,
        "mhc_post_bwd without `stages` copies nothing ahead"
    );
    for stages in [2, 3] {
        let a = mhc_kernel("mhc_post_bwd", 256, 1, Some(stages));
        // g and x ([N, BC] bf16 each) a stage; y is 1-D and stays a load.
        assert_eq!(
            a.shared_bytes,
            stages * 2 * tile_bytes(256),
            "stages {stages}"
        );
        let body = innermost_loop(&a.ptx, "cp.async.wait_group");
        assert_eq!(count(&body, "cp.async.wait_group"), 1, "stages {stages}");
        assert!(
            count(&body, "cp.async.cg.shared.global") > 0,
            "stages {stages}: the loop issues no copy of a later iteration"
        );
        assert!(
            count(&body, "ld.shared") > 0,
            "stages {stages}: the streams are not read back from their stage"
        );
    }
}

/// `mhc_pre_bwd` adds to g_x in place: its g_x tile is a load from a
/// parameter the loop writes, so only x and g_h are copied ahead.
#[test]
fn a_buffer_the_loop_writes_is_not_copied_ahead() {
    let a = mhc_kernel("mhc_pre_bwd", 256, 4, Some(2));
    assert_eq!(a.shared_bytes, 2 * 2 * tile_bytes(256));
}

/// The launch rule follows the plan: with `stages`, the parameters a
/// streaming loop writes must not overlap the ones it loads (a copy issued
/// ahead would read what the loop had not yet written); without, nothing
/// is asked of the caller.
#[test]
fn a_launch_with_stages_keeps_written_and_loaded_buffers_apart() {
    use tile_front::frontend::{parse_program, SourceFile};
    let path = format!("{}/../../{MHC}", env!("CARGO_MANIFEST_DIR"));
    let src = SourceFile::new(&path, std::fs::read_to_string(&path).unwrap());
    let program = parse_program(&src).unwrap();
    let meta = vec![("N".to_string(), 4), ("BC".to_string(), 256)];
    let k = program.specialize("mhc_post_bwd", &meta).unwrap();
    let at = |name: &str| k.params.iter().position(|p| p.name == name).unwrap();
    let pairs = tile_ir::aliasing::disjoint_params(&k, true);
    for w in ["gx", "dy"] {
        for r in ["x", "y", "g", "h"] {
            assert!(
                pairs.contains(&(at(w), at(r))),
                "({w}, {r}) missing: {pairs:?}"
            );
        }
    }
    assert!(tile_ir::aliasing::disjoint_params(&k, false).is_empty());
}
