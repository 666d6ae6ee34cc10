//! The optimisation passes keep every effect: a store nested in loops and
//! ifs that produce no values survives dead-code elimination at any depth.
//! (cargo mutants: treating a nested `for` or `if` as effect-free passed
//! every other test of the crate, and would delete the stores.)

use tile_front::frontend::{parse_program, SourceFile};

fn stores_after_optimisation(text: &str) -> usize {
    let src = SourceFile::new("effects.tile", text);
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    let kernel = program
        .specialize("k", &[])
        .unwrap_or_else(|d| panic!("{}", d.render(&src)));
    tile_ir::print_kernel(&kernel).matches("store ").count()
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
