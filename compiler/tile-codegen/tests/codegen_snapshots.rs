//! Snapshots of every stage for the vector-add example: MLIR as built, MLIR
//! after the pass pipeline, and the PTX kernel signature. `cargo insta review`
//! after an intended change.

use tile_codegen::{compile, Options};
use tile_front::frontend::{parse_program, SourceFile};

fn vector_add(kernel: &str) -> tile_codegen::Artifacts {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dsl-examples/vector_add.tile");
    let src = SourceFile::load(&path).unwrap();
    let program = parse_program(&src).unwrap_or_else(|d| panic!("{}", d.render(&src)));
    // A small block keeps the snapshots reviewable: 2 elements per thread.
    let tir = program
        .specialize(kernel, &[("BLOCK".into(), 256)])
        .unwrap_or_else(|d| panic!("{}", d.render(&src)));
    compile(
        &tir,
        &Options {
            warps: 4,
            ..Options::default()
        },
    )
    .unwrap()
}

/// The `.entry` line and its parameter list.
fn ptx_signature(ptx: &str) -> String {
    let start = ptx.find(".visible .entry").expect("an entry");
    let end = start + ptx[start..].find(')').unwrap() + 1;
    let header: Vec<&str> = ptx
        .lines()
        .filter(|l| {
            l.starts_with(".version") || l.starts_with(".target") || l.starts_with(".address_size")
        })
        .collect();
    format!("{}\n{}", header.join("\n"), &ptx[start..end])
}

#[test]
fn vector_add_mlir_before_lowering() {
    insta::assert_snapshot!(vector_add("vector_add").mlir);
}

#[test]
fn vector_add_mlir_after_lowering() {
    insta::assert_snapshot!(vector_add("vector_add").mlir_lowered);
}

#[test]
fn vector_add_ptx_signatures() {
    insta::assert_snapshot!(format!(
        "{}\n\n{}",
        ptx_signature(&vector_add("vector_add").ptx),
        ptx_signature(&vector_add("vector_add_bf16").ptx)
    ));
}
