//! Codegen tier: the TIR-built kernels of `integration_tests::kernels` compile
//! to PTX that `ptxas -arch=sm_90` accepts, and go into
//! `target/packs/codegen-tests.tpack` for the GPU tier.
#![cfg(feature = "codegen")]

use integration_tests::*;
use std::collections::BTreeMap;
use tilec::codegen::{compile, Arch, Options};
use tilec::pack::{sha256_hex, PackManifest, PackedKernel, Variant};
use tilec::tir::{Config, TuneSpace};

#[test]
fn builder_kernels_compile_pass_ptxas_and_pack() {
    let ptxas = ptxas();
    if ptxas.is_none() {
        eprintln!("SKIPPED ptxas check: no ptxas (scripts/setup installs it into .tools/)");
    }
    let mut packed: Vec<PackedKernel> = Vec::new();
    for (mut k, meta, warps) in kernels::all() {
        k.meta = meta.clone();
        tilec::tir::verify(&k).unwrap();
        let art = compile(
            &k,
            &Options {
                arch: Arch::Sm90,
                warps,
                dump_passes: false,
            },
        )
        .unwrap_or_else(|e| panic!("{} {meta:?}: {e}", k.name));
        if let Some(p) = &ptxas {
            if let Err(log) = run_ptxas(p, &art.ptx, "sm_90") {
                panic!("ptxas rejected {} {meta:?}:\n{log}", k.name);
            }
        }
        let config = Config { meta, warps };
        let v = Variant {
            config,
            tir: k.clone(),
            ptx: BTreeMap::from([("sm_90".into(), art.ptx)]),
            shared_bytes: art.shared_bytes,
        };
        match packed.iter_mut().find(|p| p.name == k.name) {
            Some(p) => p.variants.push(v),
            None => packed.push(PackedKernel {
                name: k.name.clone(),
                signature: k.signature(),
                tune: TuneSpace::default(),
                source_hash: sha256_hex(k.name.as_bytes()),
                variants: vec![v],
            }),
        }
    }
    let dir = root().join("target/packs");
    std::fs::create_dir_all(&dir).unwrap();
    PackManifest {
        compiler_version: tilec::VERSION.into(),
        kernels: packed,
    }
    .write(&dir.join("codegen-tests.tpack"))
    .unwrap();
}
