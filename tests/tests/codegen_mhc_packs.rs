//! Codegen tier: the mHC kernel packs (`mhc-kernels/kernels/<pack>/*.tile`)
//! compile for every tune config for sm_90 and sm_80, `ptxas` accepts every
//! PTX, and they are written to `target/packs/<pack>.tpack` (what
//! `bash scripts/packs` builds) for the GPU tests.
#![cfg(feature = "codegen")]

use integration_tests::*;
use tilec::codegen::Arch;
use tilec::driver::pack::compile_dir;

#[test]
fn mhc_packs_compile_pass_ptxas_and_pack() {
    let ptxas = ptxas();
    if ptxas.is_none() {
        eprintln!("SKIPPED ptxas check: no ptxas (scripts/setup installs it into .tools/)");
    }
    for entry in std::fs::read_dir(root().join("mhc-kernels/kernels")).unwrap() {
        let dir = entry.unwrap().path();
        let has_sources = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .any(|f| f.path().extension().is_some_and(|e| e == "tile"))
            })
            .unwrap_or(false);
        if !has_sources {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let manifest = match compile_dir(&dir, &[Arch::Sm90, Arch::Sm80], false).unwrap() {
            Ok(m) => m,
            Err(errors) => panic!("pack {name}:\n{}", errors.join("\n")),
        };
        if let Some(p) = &ptxas {
            for k in &manifest.kernels {
                for v in &k.variants {
                    for arch in ["sm_90", "sm_80"] {
                        if let Err(log) = run_ptxas(p, &v.ptx[arch], arch) {
                            panic!(
                                "ptxas -arch={arch} rejected {} [{}]:\n{log}",
                                k.name,
                                v.config.describe()
                            );
                        }
                    }
                }
            }
        }
        let out = root().join("target/packs");
        std::fs::create_dir_all(&out).unwrap();
        manifest.write(&out.join(format!("{name}.tpack"))).unwrap();
        eprintln!("pack {name}: {} kernels", manifest.kernels.len());
    }
}
