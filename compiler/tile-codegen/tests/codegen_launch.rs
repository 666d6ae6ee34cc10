//! Programmatic dependent launch: the runtime may start an sm_90 grid while
//! the grid before it in the stream still runs (`Artifacts::
//! waits_for_prior_grid`), which is only sound while the kernel waits for
//! that grid (`griddepcontrol.wait`) before its first access to global
//! memory. sm_80 kernels neither wait nor get launched so.

mod common;

use common::{file_artifacts, file_artifacts_with};
use tile_codegen::{Arch, Options};

/// Instructions that read or write global memory (or start a copy from it).
const GLOBAL_ACCESS: [&str; 7] = [
    "ld.global",
    "st.global",
    "red.global",
    "atom.global",
    "cp.async",
    "prefetch.global",
    "ld.volatile.global",
];

/// A kernel of a repository file: path, name, meta-parameters, warps.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, i64)],
    u32,
);

/// Byte offset of the first global access in `ptx`, if any.
fn first_global_access(ptx: &str) -> Option<usize> {
    GLOBAL_ACCESS.iter().filter_map(|i| ptx.find(i)).min()
}

#[test]
fn sm90_kernels_wait_for_the_prior_grid_before_touching_global_memory() {
    // Plain loads and stores, a masked reduction, wgmma with TMA copies, an
    // attention loop with cp.async copies, the mHC gates' backward.
    let cases: [Case; 5] = [
        ("dsl-examples/vector_add.tile", "vector_add", &[], 4),
        ("dsl-examples/rmsnorm.tile", "rmsnorm", &[], 4),
        ("dsl-examples/matmul.tile", "matmul", &[], 8),
        ("dsl-examples/attention.tile", "attention", &[], 4),
        (
            "mhc-kernels/kernels/mhc/mhc.tile",
            "mhc_post",
            &[("N", 4), ("BC", 256)],
            1,
        ),
    ];
    for (file, kernel, meta, warps) in cases {
        let art = file_artifacts(file, kernel, meta, warps);
        assert!(art.waits_for_prior_grid, "{kernel}: not marked as waiting");
        let wait = art
            .ptx
            .find("griddepcontrol.wait;")
            .unwrap_or_else(|| panic!("{kernel}: no griddepcontrol.wait in its sm_90 PTX"));
        let access = first_global_access(&art.ptx)
            .unwrap_or_else(|| panic!("{kernel}: no global access found (test list stale?)"));
        assert!(
            wait < access,
            "{kernel}: global memory is accessed before griddepcontrol.wait"
        );
        // Triggered at entry, the next grid's waiting CTAs took SM slots
        // from this one's (func.rs): the trigger stays implicit, at exit.
        assert!(
            !art.ptx.contains("griddepcontrol.launch_dependents"),
            "{kernel}: launch_dependents is back"
        );
    }
}

#[test]
fn sm80_kernels_neither_wait_nor_are_marked() {
    let opts = Options {
        arch: Arch::Sm80,
        ..Options::default()
    };
    let art = file_artifacts_with("dsl-examples/vector_add.tile", "vector_add", &[], &opts);
    assert!(!art.waits_for_prior_grid);
    assert!(!art.ptx.contains("griddepcontrol"));
}
