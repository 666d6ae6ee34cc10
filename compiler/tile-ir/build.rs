//! The compiler fingerprint (`tile_ir::COMPILER_FINGERPRINT`, part of
//! `tile_ir::VERSION`, written into every pack and checked when one is read).
//!
//! It is the SHA-256 (first 16 hex digits) of the sources that decide what a
//! pack holds: this crate, the front end, the code generator (their manifests,
//! build scripts and every file under `src/`) and `tilec`'s library (the
//! code-generation options it passes and the manifest it builds). The walk is
//! sorted and hashes relative paths and contents only (never times), so the
//! same sources give the same fingerprint on every machine. The runtime links
//! this crate, so a binary knows which compiler its packs must come from
//! without linking the compiler.
//!
//! Not covered: the LLVM/MLIR libraries the code generator links and the
//! versions of its Rust dependencies (scripts/setup pins them).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What is hashed, relative to `compiler/` (directories: every file below them).
const INPUTS: &[&str] = &[
    "tile-ir/Cargo.toml",
    "tile-ir/build.rs",
    "tile-ir/src",
    "tile-front/Cargo.toml",
    "tile-front/src",
    "tile-codegen/Cargo.toml",
    "tile-codegen/build.rs",
    "tile-codegen/src",
    "tilec/src/lib.rs",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let compiler = manifest.join("..");
    let compiler = compiler.canonicalize().unwrap_or(compiler);
    let hex = fingerprint(&compiler, INPUTS, &mut |path| {
        // A directory is scanned recursively by cargo; a missing path is
        // watched too, so that creating it reruns this script.
        println!("cargo:rerun-if-changed={}", path.display());
    });
    println!("cargo:rustc-env=TILE_COMPILER_FINGERPRINT={hex}");
}

/// 16 hex digits of the SHA-256 of `inputs` (paths relative to `root`; a
/// directory stands for every file below it): per file in sorted order, its
/// path relative to `root` and its contents. `watch` is told each input.
pub(crate) fn fingerprint(root: &Path, inputs: &[&str], watch: &mut dyn FnMut(&Path)) -> String {
    let mut h = Sha256::new();
    for input in inputs {
        let path = root.join(input);
        watch(&path);
        let mut files = Vec::new();
        if path.is_dir() {
            walk(&path, &mut files);
            files.sort();
        } else {
            files.push(path.clone());
        }
        for f in files {
            let rel = f
                .strip_prefix(root)
                .unwrap_or(&f)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            match std::fs::read(&f) {
                Ok(bytes) => {
                    h.update(b"file\0");
                    h.update(rel.as_bytes());
                    h.update(b"\0");
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
                // A crate built outside this workspace (no sibling crates): the
                // fingerprint still differs from any workspace build.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    h.update(b"missing\0");
                    h.update(rel.as_bytes());
                    h.update(b"\0");
                }
                Err(e) => {
                    println!("cargo:warning=compiler fingerprint: cannot read {rel}: {e}");
                    h.update(b"unreadable\0");
                    h.update(rel.as_bytes());
                    h.update(b"\0");
                }
            }
        }
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file below `dir`, skipping hidden names (editor swap files, `.git`)
/// and backups ending in `~`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        println!(
            "cargo:warning=compiler fingerprint: cannot read {}",
            dir.display()
        );
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
