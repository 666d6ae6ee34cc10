//! What the runtime's CPU tests share: packs built from `.tile` source.

use std::path::Path;
use tile_front::frontend::{parse_program, SourceFile};
use tile_ir::pack::PackManifest;
use tile_runtime::Pack;

/// A pack (TIR only, what the CPU device runs) of every kernel of `src`,
/// written to `dir` as `NAME.tpack`.
pub fn pack_of(dir: &Path, name: &str, src: &SourceFile) -> Pack {
    let kernels = parse_program(src).unwrap().tir_pack_kernels(src).unwrap();
    let file = dir.join(format!("{name}.tpack"));
    PackManifest {
        compiler_version: tile_ir::VERSION.into(),
        kernels,
    }
    .write(&file)
    .unwrap();
    Pack::load(&file).unwrap()
}
