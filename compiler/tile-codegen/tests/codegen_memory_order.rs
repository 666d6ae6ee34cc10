//! A program's loads see its earlier stores on the GPU too: where a load
//! reads elements other threads stored (or a store overwrites elements
//! other threads have yet to load), the lowering puts a CTA barrier between
//! them (`lower/global_order.rs`); an in-place update through one pointer
//! tile needs none. The GPU tier runs these kernels against a reference
//! (`gpu_codegen`'s `gpu_scratch_transpose`).

mod common;
use common::*;

const FILE: &str = "tests/kernels/scratch_transpose.tile";

/// The lines from the first `st.global` on, up to and including the first
/// `ld.global` after it.
fn store_to_next_load(ptx: &str) -> Vec<&str> {
    let lines: Vec<&str> = ptx.lines().map(str::trim).collect();
    let first_store = lines
        .iter()
        .position(|l| l.starts_with("st.global"))
        .expect("a store");
    let load = first_store
        + lines[first_store..]
            .iter()
            .position(|l| l.starts_with("ld.global"))
            .expect("a load after the store");
    lines[first_store..=load].to_vec()
}

#[test]
fn a_transposed_read_back_waits_for_the_other_threads_stores() {
    for warps in [1, 4] {
        let ptx = file_ptx(FILE, "scratch_transpose", &[("B", 32)], warps);
        let between = store_to_next_load(&ptx);
        assert_eq!(
            count(&between, "bar.sync"),
            1,
            "{warps} warps: one barrier between tmp's stores and its transposed loads:\n{}",
            between.join("\n")
        );
    }
}

#[test]
fn a_loop_orders_its_read_back_and_the_next_iterations_store() {
    let ptx = file_ptx(FILE, "scratch_transpose_loop", &[("B", 32)], 4);
    let body = innermost_loop(&ptx, "st.global");
    // One between this iteration's store and its load, one between its
    // load and the next iteration's store.
    assert_eq!(count(&body, "bar.sync"), 2, "{}", body.join("\n"));
}

#[test]
fn an_in_place_update_needs_no_barrier() {
    let src = r#"
kernel scale_in_place(p: *f32, n: i32) {
    let offs = program_id(0) * 1024 + arange(0, 1024);
    let m = offs < n;
    let v = load(p + offs, m, 0.0);
    store(p + offs, v * 2.0, m);
    let w = load(p + offs, m, 0.0);
    store(p + offs, w + 1.0, m);
}
"#;
    let ptx = ptx_of("in_place.tile", src, "scale_in_place", &[], 4);
    assert_eq!(
        count(&ptx.lines().collect::<Vec<_>>(), "bar.sync"),
        0,
        "{ptx}"
    );
}

/// The read-back in an `if` branch waits for the stores before the `if`.
#[test]
fn a_branch_waits_for_the_stores_before_it() {
    let src = r#"
kernel in_branch(x: *f32, tmp: *f32, y: *f32, flag: i32) {
    let i = arange(0, 32);
    store(tmp + i[:, None] * 32 + i[None, :], load(x + i[:, None] * 32 + i[None, :]));
    if flag > 0 {
        store(y + i[:, None] * 32 + i[None, :], load(tmp + i[None, :] * 32 + i[:, None]));
    }
}
"#;
    let ptx = ptx_of("in_branch.tile", src, "in_branch", &[], 4);
    let between = store_to_next_load(&ptx);
    assert_eq!(count(&between, "bar.sync"), 1, "{}", between.join("\n"));
}
