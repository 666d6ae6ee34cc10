//! Codegen tier: the packs `scripts/packs` built before the tests (`scripts/test`
//! runs it first) are current, every PTX in them passes `ptxas` for its target,
//! and the code-generation properties the benchmarks rely on hold.
//!
//! The packs are build products, not test outputs: a test only reads them, so
//! no test depends on another having run first.
#![cfg(feature = "codegen")]

use tile_ir::pack::PackManifest;
use tile_testkit::*;

/// Every PTX of the pack through `ptxas` (skipped, saying so, without it).
fn check_ptxas(name: &str, m: &PackManifest) {
    let Some(p) = ptxas() else {
        eprintln!(
            "SKIPPED ptxas check of {name}: no ptxas (scripts/setup installs it into .tools/)"
        );
        return;
    };
    let mut checked = 0;
    for k in &m.kernels {
        for v in &k.variants {
            for (arch, ptx) in &v.ptx {
                if let Err(log) = run_ptxas(&p, ptx, arch) {
                    panic!(
                        "{name}: ptxas -arch={arch} rejected {} [{}]:\n{log}",
                        k.name,
                        v.config.describe()
                    );
                }
                checked += 1;
            }
        }
    }
    eprintln!("{name}: ptxas accepted {checked} PTX files");
    assert!(checked > 0, "{name}: no PTX in the pack");
}

#[test]
fn dsl_examples_pack_passes_ptxas_with_the_expected_instructions() {
    let m = current_pack("dsl-examples");
    for arch in ["sm_90", "sm_80"] {
        assert!(
            m.kernels
                .iter()
                .all(|k| k.variants.iter().all(|v| v.ptx.contains_key(arch))),
            "dsl-examples: some variant has no {arch} PTX"
        );
    }
    check_ptxas("dsl-examples", &m);
    // Code-generation properties the benchmarks rely on (docs/BENCHMARKS.md):
    // the matmul K loop copies its operands with cp.async, and the f32 softmax,
    // whose loads sit inside `if row < rows`, gets vector accesses.
    for (kernel, needle) in [
        ("matmul", "cp.async.cg.shared.global"),
        ("softmax", "ld.global.v"),
    ] {
        let k = m.kernel(kernel).unwrap();
        for v in &k.variants {
            assert!(
                v.ptx["sm_90"].contains(needle),
                "{kernel} [{}]: no `{needle}` in its PTX",
                v.config.describe()
            );
        }
    }
    // Hopper's warpgroup MMA where the tile allows it (sm_90: 128×128 tiles
    // always do), mma.sync on sm_80.
    for v in &m.kernel("matmul").unwrap().variants {
        let big = ["BM", "BN"]
            .iter()
            .all(|p| v.config.meta.iter().any(|(n, x)| n == p && *x == 128));
        if big {
            assert!(
                v.ptx["sm_90"].contains("wgmma.mma_async"),
                "matmul [{}]: no wgmma",
                v.config.describe()
            );
        }
        assert!(v.ptx["sm_80"].contains("mma.sync.aligned") && !v.ptx["sm_80"].contains("wgmma"));
    }
}

#[test]
fn mhc_and_model_packs_pass_ptxas() {
    for name in ["mhc", "model"] {
        let m = current_pack(name);
        check_ptxas(name, &m);
    }
}

#[test]
fn codegen_tests_pack_passes_ptxas() {
    let m = current_pack("codegen-tests");
    check_ptxas("codegen-tests", &m);
}
