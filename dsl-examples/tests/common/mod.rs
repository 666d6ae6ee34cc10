//! A TIR-only pack of `.tile` files (every kernel, every config of its tune
//! block, no PTX): what the CPU interpreter runs, so the CLI tests of
//! `tile-tune` and `tile-bench` run anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tile_front::frontend::{parse_program, SourceFile};
use tile_ir::pack::{sha256_hex, PackManifest, PackedKernel, Variant};

/// The kernels of `sources` (paths from the repository root) in a pack at
/// `dir/name`.
pub fn tir_pack(dir: &Path, name: &str, sources: &[&str]) -> PathBuf {
    let mut kernels = Vec::new();
    for rel in sources {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
        let src = SourceFile::load(&path).unwrap();
        let program = parse_program(&src).unwrap();
        for name in program.kernel_names() {
            let tune = program.tune_space(&name).unwrap();
            let variants: Vec<Variant> = tune
                .configs()
                .into_iter()
                .map(|config| Variant {
                    tir: program.specialize(&name, &config.meta).unwrap(),
                    config,
                    ptx: BTreeMap::new(),
                    shared_bytes: BTreeMap::new(),
                    tma: BTreeMap::new(),
                })
                .collect();
            kernels.push(PackedKernel {
                name,
                signature: variants[0].tir.signature(),
                tune,
                source_hash: sha256_hex(src.text.as_bytes()),
                variants,
            });
        }
    }
    let file = dir.join(name);
    PackManifest {
        compiler_version: tile_ir::VERSION.into(),
        kernels,
    }
    .write(&file)
    .unwrap();
    file
}
