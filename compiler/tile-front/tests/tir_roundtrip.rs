//! The TIR text form reads back: for every kernel × tune configuration of the
//! example and pack kernels, `print(parse(print(k))) == print(k)` and the parsed
//! kernel verifies, both for the checker's output and after the passes.

use std::path::Path;
use tile_front::frontend::{parse_program, SourceFile};

#[test]
fn printed_tir_parses_back_to_the_same_text() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut kernels = 0;
    for dir in ["dsl-examples", "mhc-kernels/kernels", "tests/kernels"] {
        let files = tile_testkit::files_below(&root.join(dir), &["tile"]);
        assert!(!files.is_empty(), "no .tile files under {dir}");
        for path in files {
            let src = SourceFile::load(&path).expect("readable");
            let program = match parse_program(&src) {
                Ok(p) => p,
                Err(d) => panic!("{}", d.render(&src)),
            };
            for k in program.kernel_names() {
                for meta in program.check_configs(&k) {
                    let raw = program.specialize_unoptimized(&k, &meta).expect("checks");
                    let opt = program.specialize(&k, &meta).expect("checks");
                    for (stage, kernel) in [("checker", &raw), ("optimised", &opt)] {
                        let text = tile_ir::print_kernel(kernel);
                        let what = format!("{} {k} {meta:?} ({stage})", path.display());
                        let parsed = tile_ir::parse_kernel(&text)
                            .unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
                        assert_eq!(tile_ir::print_kernel(&parsed), text, "{what}");
                        tile_ir::verify(&parsed).unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert_eq!(parsed.params, kernel.params, "{what}");
                        assert_eq!(parsed.meta, kernel.meta, "{what}");
                    }
                    kernels += 1;
                }
            }
        }
    }
    assert!(kernels > 50, "only {kernels} kernel configurations");
}
