//! `sin cos erf log1p expm1 pow` lower to plain PTX: no libdevice call (no
//! `call` at all, no `__nv_` symbol), no approximate instruction, `fma.rn`
//! for the polynomials; for f32 and bf16 (tests/kernels/math.tile, the
//! kernels gpu_math.rs runs).

mod common;

fn ptx_of(kernel: &str) -> String {
    common::file_ptx("tests/kernels/math.tile", kernel, &[], 4)
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
