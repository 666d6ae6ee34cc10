//! Codegen tier: the code-generation stress kernels of `tests/kernels/*.tile`
//! (2-D reductions along both axes with atomics, a bf16 softmax, a tensor-core
//! matmul on a 2-D grid with an f32 result) compile for every tune config,
//! `ptxas -arch=sm_90` accepts every PTX, and they are written to
//! `target/packs/codegen-tests.tpack` for the GPU tier (`gpu_codegen`).
#![cfg(feature = "codegen")]

use integration_tests::*;
use tilec::codegen::Arch;
use tilec::driver::pack::compile_dir;

#[test]
fn stress_kernels_compile_pass_ptxas_and_pack() {
    let manifest = match compile_dir(&root().join("tests/kernels"), &[Arch::Sm90], false).unwrap() {
        Ok(m) => m,
        Err(errors) => panic!("{}", errors.join("\n")),
    };
    match ptxas() {
        Some(p) => {
            for k in &manifest.kernels {
                for v in &k.variants {
                    if let Err(log) = run_ptxas(&p, &v.ptx["sm_90"], "sm_90") {
                        panic!(
                            "ptxas rejected {} [{}]:\n{log}",
                            k.name,
                            v.config.describe()
                        );
                    }
                }
            }
        }
        None => eprintln!("SKIPPED ptxas check: no ptxas (scripts/setup installs it into .tools/)"),
    }
    let dir = root().join("target/packs");
    std::fs::create_dir_all(&dir).unwrap();
    manifest.write(&dir.join("codegen-tests.tpack")).unwrap();
}
