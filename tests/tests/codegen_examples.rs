//! Codegen tier: every kernel × tune config of `dsl-examples/*.tile` compiles
//! for sm_90 and sm_80, `ptxas` accepts every PTX, and the result is written as
//! `target/packs/dsl-examples.tpack` for the GPU tier.
#![cfg(feature = "codegen")]

use integration_tests::*;
use tilec::codegen::Arch;
use tilec::driver::pack::compile_dir;

#[test]
fn every_example_compiles_and_passes_ptxas() {
    let manifest = match compile_dir(
        &root().join("dsl-examples"),
        &[Arch::Sm90, Arch::Sm80],
        false,
    )
    .unwrap()
    {
        Ok(m) => m,
        Err(errors) => panic!("{}", errors.join("\n")),
    };
    let ptxas = ptxas();
    if ptxas.is_none() {
        eprintln!("SKIPPED ptxas: not installed (scripts/setup puts it in .tools/cuda/bin)");
    }
    let mut checked = 0;
    for k in &manifest.kernels {
        for v in &k.variants {
            for (arch, ptx) in &v.ptx {
                if let Some(p) = &ptxas {
                    if let Err(log) = run_ptxas(p, ptx, arch) {
                        panic!(
                            "ptxas -arch={arch} rejected {} [{}]:\n{log}",
                            k.name,
                            tile_runtime::describe(&v.config)
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("ptxas accepted {checked} PTX files");
    // Code-generation properties the benchmarks rely on (docs/BENCHMARKS.md):
    // the matmul K loop copies its operands with cp.async, and the f32 softmax,
    // whose loads sit inside `if row < rows`, gets vector accesses.
    for (kernel, needle) in [
        ("matmul", "cp.async.cg.shared.global"),
        ("softmax", "ld.global.v"),
    ] {
        let k = manifest.kernels.iter().find(|k| k.name == kernel).unwrap();
        for v in &k.variants {
            assert!(
                v.ptx["sm_90"].contains(needle),
                "{kernel} [{}]: no `{needle}` in its PTX",
                tile_runtime::describe(&v.config)
            );
        }
    }
    // Hopper's warpgroup MMA where the tile allows it (sm_90: 128×128 tiles
    // always do), mma.sync on sm_80.
    let k = manifest
        .kernels
        .iter()
        .find(|k| k.name == "matmul")
        .unwrap();
    for v in &k.variants {
        let big = ["BM", "BN"]
            .iter()
            .all(|m| v.config.meta.iter().any(|(n, x)| n == m && *x == 128));
        if big {
            assert!(
                v.ptx["sm_90"].contains("wgmma.mma_async"),
                "matmul [{}]: no wgmma",
                tile_runtime::describe(&v.config)
            );
        }
        assert!(v.ptx["sm_80"].contains("mma.sync.aligned") && !v.ptx["sm_80"].contains("wgmma"));
    }
    let dir = root().join("target/packs");
    std::fs::create_dir_all(&dir).unwrap();
    manifest.write(&dir.join("dsl-examples.tpack")).unwrap();
}
