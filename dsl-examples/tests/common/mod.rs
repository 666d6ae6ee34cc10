//! A TIR-only pack of `.tile` files (every kernel, every config of its tune
//! block, no PTX): what the CPU interpreter runs, so the CLI tests of
//! `tile-tune` and `tile-bench` run anywhere.

use std::path::{Path, PathBuf};
use tile_front::frontend::{parse_program, SourceFile};
use tile_ir::pack::PackManifest;

/// The kernels of `sources` (paths from the repository root) in a pack at
/// `dir/name`.
pub fn tir_pack(dir: &Path, name: &str, sources: &[&str]) -> PathBuf {
    let mut kernels = Vec::new();
    for rel in sources {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
        let src = SourceFile::load(&path).unwrap();
        let program = parse_program(&src).unwrap();
        kernels.extend(program.tir_pack_kernels(&src).unwrap());
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
