//! `sin cos erf log1p expm1 pow` lower to plain PTX: no libdevice call (no
//! `call` at all, no `__nv_` symbol), no approximate instruction, `fma.rn`
//! for the polynomials; for f32 and bf16 (tests/kernels/math.tile, the
//! kernels gpu_math.rs runs).

use tile_codegen::{compile, Options};
use tile_front::frontend::{parse_program, SourceFile};

fn ptx_of(kernel: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/kernels/math.tile");
    let text = std::fs::read_to_string(path).unwrap();
    let src = SourceFile::new(path, &text);
    let program = parse_program(&src).map_err(|d| d.render(&src)).unwrap();
    let meta = program
        .check_configs(kernel)
        .into_iter()
        .next()
        .unwrap_or_default();
    let tir = program
        .specialize(kernel, &meta)
        .map_err(|d| d.render(&src))
        .unwrap();
    compile(
        &tir,
        &Options {
            warps: 4,
            ..Options::default()
        },
    )
    .unwrap()
    .ptx
}

#[test]
fn math_functions_need_no_libdevice() {
    for kernel in ["math_ext", "math_ext_bf16"] {
        let ptx = ptx_of(kernel);
        for bad in ["call", "__nv_", ".approx", ".ftz"] {
            assert!(
                !ptx.contains(bad),
                "`{kernel}`: PTX contains `{bad}`:\n{}",
                ptx.lines()
                    .filter(|l| l.contains(bad))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        assert!(ptx.contains("fma.rn.f32"), "`{kernel}`: no fma.rn.f32");
        // Plain multiplies and adds keep their rounding (not contracted).
        assert!(
            ptx.contains("mul.rn.f32") || !ptx.contains("mul.f32"),
            "`{kernel}`: mul.f32 without .rn"
        );
    }
}
