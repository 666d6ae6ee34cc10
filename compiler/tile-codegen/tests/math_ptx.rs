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

/// Float `%` runs its long division as a loop, one division per element and
/// per `%` in the PTX (unrolled, its twelve steps per element made NVPTX take
/// 55 s on a fuzz kernel with 32 elements a thread: regression case
/// differential/fmod_many_elements_compiles.tile).
#[test]
fn float_remainder_is_a_loop() {
    const SRC: &str = r#"
kernel rem_loop<const BM: i32, const BN: i32>(x: *f32, y: *f32, out: *f32) {
    let r = arange(0, BM)[:, None] * BN + arange(0, BN)[None, :];
    store(out + r, load(x + r) % load(y + r));
}
"#;
    let ptx = common::ptx_of(
        "rem_loop.tile",
        SRC,
        "rem_loop",
        &[("BM", 16), ("BN", 64)],
        1,
    );
    // [16, 64] on one warp: 32 elements a thread, each one division.
    let divs = ptx.lines().filter(|l| l.contains("div.rn.f32")).count();
    assert_eq!(divs, 32, "{ptx}");
}
