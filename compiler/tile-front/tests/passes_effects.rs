//! The optimisation passes keep every effect: a store nested in loops and
//! ifs that produce no values survives dead-code elimination at any depth.
//! (cargo mutants: treating a nested `for` or `if` as effect-free passed
//! every other test of the crate, and would delete the stores.)

use tile_front::frontend::{parse_program, SourceFile};

fn stores_after_optimisation(text: &str) -> usize {
    optimised(text).matches("store ").count()
}

#[test]
fn a_store_in_a_loop_in_a_loop_survives() {
    let n = stores_after_optimisation(
        r#"
kernel k(y: *f32, n: i32) {
    let r = arange(0, 16);
    for i in 0..n step 1 {
        for j in 0..n step 1 {
            store(y + i * n + j + r, zeros([16], f32), r < n);
        }
    }
}
"#,
    );
    assert_eq!(n, 1, "the store of the inner loop was removed");
}

#[test]
fn a_store_in_an_if_in_a_loop_survives() {
    let n = stores_after_optimisation(
        r#"
kernel k(y: *f32, n: i32) {
    let r = arange(0, 16);
    for i in 0..n step 1 {
        if i < 3 {
            store(y + i + r, zeros([16], f32), r < n);
        } else {
            store(y + i + r, full([16], 1.0, f32), r < n);
        }
    }
}
"#,
    );
    assert_eq!(n, 2, "a store of the if was removed");
}

#[test]
fn a_store_in_one_branch_of_an_if_survives() {
    // DCE keeps an `if` when either branch has effects (`then || else`).
    for (then, els) in [
        ("store(y + r, v, r < n);", ""),
        ("", "store(y + r, v, r < n);"),
    ] {
        let text = format!(
            r#"
kernel k(y: *f32, n: i32) {{
    let r = arange(0, 16);
    let v = full([16], 2.0, f32);
    if n > 3 {{
        {then}
    }} else {{
        {els}
    }}
}}
"#
        );
        assert_eq!(
            stores_after_optimisation(&text),
            1,
            "the store of one branch was removed:\n{text}"
        );
    }
}

/// The kernel after the passes, verified after each one (debug builds):
/// a use left pointing at a value a pass removed or never cloned fails.
fn optimised(text: &str) -> String {
    let src = SourceFile::new("nested.tile", text);
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    let kernel = program
        .specialize("k", &[])
        .unwrap_or_else(|d| panic!("{}", d.render(&src)));
    tile_ir::print_kernel(&kernel)
}

#[test]
fn cse_redirects_uses_inside_loop_and_if_bodies() {
    // `a` and `b` are the same expression: CSE keeps `a` and must point the
    // uses of `b` inside the loop and the if at it (util::substitute into
    // nested bodies), else they name a value that no longer exists.
    let tir = optimised(
        r#"
kernel k(y: *f32, n: i32) {
    let r = arange(0, 16);
    let a = exp(r as f32 * 0.5);
    let b = exp(r as f32 * 0.5);
    store(y + r, a, r < n);
    for i in 0..n step 1 {
        store(y + 16 * i + r, b * 2.0, r < n);
    }
    if n > 4 {
        store(y + 32 + r, b * 3.0, r < n);
    }
}
"#,
    );
    assert_eq!(
        tir.matches("= exp ").count(),
        1,
        "CSE did not merge:\n{tir}"
    );
}

#[test]
fn unroll_clones_the_bodies_nested_in_a_static_loop() {
    // Each unrolled copy clones the `if` and `for` inside it with their own
    // values (util::clone_insts into nested bodies), else the copies' inner
    // bodies name the removed loop's variable.
    let tir = optimised(
        r#"
kernel k(y: *f32, n: i32) {
    let r = arange(0, 16);
    for j in static 0..3 {
        if n > j {
            store(y + 16 * j + r, full([16], 1.0, f32), r < n);
        }
        for i in 0..n step 1 {
            store(y + 64 * i + j + r, full([16], 2.0, f32), r < n);
        }
    }
}
"#,
    );
    assert_eq!(
        tir.matches("store ").count(),
        6,
        "not 3 copies of both stores:\n{tir}"
    );
    assert!(
        !tir.contains("static"),
        "the static loop is still there:\n{tir}"
    );
}

#[test]
fn unroll_redirects_uses_of_a_static_loops_results_inside_later_bodies() {
    // The static loop's result becomes its last copy's value: its uses in
    // the later `for` and `if` bodies must be rewritten too
    // (util::substitute into nested bodies), else they name a value that no
    // longer exists. (cargo mutants: substitute without the recursion.)
    let tir = optimised(
        r#"
kernel k(x: *f32, y: *f32, n: i32) {
    let r = arange(0, 16);
    let mut acc = load(x + r, r < n, 0.0);
    for j in static 0..3 {
        acc = acc * acc + 1.0;
    }
    for i in 0..n step 1 {
        store(y + 16 * i + r, acc, r < n);
    }
    if n > 2 {
        store(y + r, acc * 2.0, r < n);
    }
}
"#,
    );
    assert_eq!(tir.matches("store ").count(), 2, "{tir}");
}
