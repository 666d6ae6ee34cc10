//! TIR snapshots of every example kernel (`dsl-examples/*.tile` and the packs'
//! sources, `mhc-kernels/kernels/<pack>/*.tile`, found recursively): each file
//! must parse and check for every configuration of its tune spaces; the
//! optimised TIR of each kernel's first configuration is snapshotted, named
//! after the root and the path below it (`mhc__model__norm`).

use std::path::{Path, PathBuf};
use tile_front::frontend::{parse_program, SourceFile};

fn corpus() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for (prefix, dir) in [("examples", "dsl-examples"), ("mhc", "mhc-kernels/kernels")] {
        let dir = root.join(dir);
        let files = tile_testkit::files_below(&dir, &["tile"]);
        assert!(!files.is_empty(), "no .tile files under {}", dir.display());
        for f in files {
            let rel = f.strip_prefix(&dir).unwrap_or(&f).with_extension("");
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((format!("{prefix}__{}", parts.join("__")), f));
        }
    }
    out
}

#[test]
fn corpus_checks_and_snapshots() {
    let files = corpus();
    assert!(
        files.iter().any(|(n, _)| n == "examples__vector_add"),
        "dsl-examples/vector_add.tile not found"
    );
    for (name, path) in files {
        let src = SourceFile::load(&path).expect("readable");
        let program = match parse_program(&src) {
            Ok(p) => p,
            Err(d) => panic!("{}", d.render(&src)),
        };
        let mut text = String::new();
        for k in program.kernel_names() {
            for (i, meta) in program.check_configs(&k).into_iter().enumerate() {
                let tir = match program.specialize(&k, &meta) {
                    Ok(t) => t,
                    Err(d) => panic!("{} {meta:?}:\n{}", k, d.render(&src)),
                };
                tile_ir::verify(&tir).expect("verified TIR");
                if i == 0 {
                    text.push_str(&tile_ir::print_kernel(&tir));
                    text.push('\n');
                }
            }
        }
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("snapshots/corpus");
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(name, text));
    }
}

/// The checker's own output (before the passes) verifies too, and the passes
/// only ever shrink the kernel.
#[test]
fn unoptimised_tir_verifies() {
    for (_, path) in corpus() {
        let src = SourceFile::load(&path).expect("readable");
        let Ok(program) = parse_program(&src) else {
            continue;
        };
        for k in program.kernel_names() {
            for meta in program.check_configs(&k) {
                let raw = program.specialize_unoptimized(&k, &meta).expect("checks");
                tile_ir::verify(&raw).expect("checker output verifies");
                let opt = program.specialize(&k, &meta).expect("checks");
                let count = |k: &tile_ir::Kernel| {
                    let mut n = 0;
                    tile_ir::walk_insts(&k.body, &mut |_| n += 1);
                    n
                };
                let has_static = std::cell::Cell::new(false);
                tile_ir::walk_insts(&raw.body, &mut |i| {
                    if matches!(i.op, tile_ir::Op::For { unroll: true, .. }) {
                        has_static.set(true)
                    }
                });
                if !has_static.get() {
                    assert!(count(&opt) <= count(&raw), "{k}: passes grew the kernel");
                }
            }
        }
    }
}
