//! Kernel packs: one versioned file holding, per kernel, its signature, tune
//! space, and for every config of the tune space its TIR (for the CPU backend)
//! and PTX per target architecture.
//!
//! File layout (all integers little-endian):
//! ```text
//! 0   8   magic "TILEPACK"
//! 8   4   format version
//! 12  8   payload length N
//! 20  N   payload: JSON of `PackManifest`
//! 20+N 32 SHA-256 of the payload
//! ```
//! Writing is atomic (temporary file in the same directory, fsync, rename), so a
//! reader never sees a half-written pack. Reading validates magic, version,
//! length, hash and the compiler version, each failure with its own error.
//!
//! The compiler version is [`crate::VERSION`], which ends in a fingerprint of
//! the compiler's sources (tile-ir's build.rs): a pack is read only by a binary
//! built from the sources that compiled it, so a pack left behind by an older
//! code generator is refused ([`PackError::StaleCompiler`]) instead of running
//! stale code. Setting [`ALLOW_FOREIGN_PACK`]`=1` downgrades the refusal to a
//! warning on stderr (for someone who knows the difference does not matter).

use crate::{Config, Kernel, Signature, TuneSpace};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"TILEPACK";
pub const FORMAT_VERSION: u32 = 2;

/// The environment variable that, set to `1`, loads a pack from another
/// compiler with a warning instead of refusing it.
pub const ALLOW_FOREIGN_PACK: &str = "TILE_ALLOW_FOREIGN_PACK";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackManifest {
    /// [`crate::VERSION`] of the `tilec` that compiled the pack: crate
    /// version `+` compiler fingerprint.
    pub compiler_version: String,
    pub kernels: Vec<PackedKernel>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedKernel {
    pub name: String,
    pub signature: Signature,
    pub tune: TuneSpace,
    /// SHA-256 (hex) of the kernel's source file, part of autotuning cache keys.
    pub source_hash: String,
    pub variants: Vec<Variant>,
}

/// One config of a kernel: its specialised TIR and PTX per architecture (`"sm_90"`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub config: Config,
    pub tir: Kernel,
    pub ptx: BTreeMap<String, String>,
    /// Per architecture: dynamic shared memory per CTA (bytes) that the PTX
    /// expects at launch.
    pub shared_bytes: BTreeMap<String, u32>,
    /// Per architecture: the tensors the host describes for the kernel's TMA
    /// copies, one hidden parameter each (see `launch`).
    #[serde(default)]
    pub tma: BTreeMap<String, Vec<crate::launch::TmaOperand>>,
    /// The architectures whose PTX waits at entry for the grid launched
    /// before it (`griddepcontrol.wait`): the runtime may launch those as
    /// programmatic dependents. Absent in older packs: launched plainly.
    #[serde(default)]
    pub waits_for_prior_grid: std::collections::BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot read pack `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` is not a kernel pack (bad magic bytes); hint: build one with `tilec pack DIR -o FILE`")]
    Foreign { path: String },
    #[error("pack `{path}` has format version {found}, this runtime reads version {expected}; hint: rebuild the pack")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("pack `{path}` is truncated ({actual} bytes, the header promises {expected}); hint: rebuild the pack")]
    Truncated {
        path: String,
        actual: u64,
        expected: u64,
    },
    #[error("pack `{path}` is corrupted (content hash mismatch); hint: rebuild the pack")]
    Corrupted { path: String },
    #[error("pack `{path}` was compiled by another compiler: tilec {found}, but this binary was built with tilec {expected} (after the `+`: the fingerprint of the compiler's sources); hint: rebuild the packs with `scripts/packs` (or `tilec pack DIR -o FILE`), or set {ALLOW_FOREIGN_PACK}=1 to load it anyway")]
    StaleCompiler {
        path: String,
        found: String,
        expected: String,
    },
    #[error("pack `{path}` has an invalid manifest: {message}")]
    Manifest { path: String, message: String },
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PackManifest {
    pub fn kernel(&self, name: &str) -> Option<&PackedKernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Serialise to the file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).expect("manifest serialises");
        let mut out = Vec::with_capacity(payload.len() + 52);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&Sha256::digest(&payload));
        out
    }

    /// Write atomically: a reader sees the old file or the new one, never a mix.
    pub fn write(&self, path: &Path) -> Result<(), PackError> {
        write_atomic(path, &self.to_bytes()).map_err(|source| PackError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parse and validate a pack's bytes (`path` only names it in errors). A
    /// pack from another compiler is refused unless [`ALLOW_FOREIGN_PACK`] is `1`.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<PackManifest, PackError> {
        let allow_foreign = std::env::var_os(ALLOW_FOREIGN_PACK).is_some_and(|v| v == "1");
        Self::parse(bytes, path, allow_foreign)
    }

    fn parse(bytes: &[u8], path: &str, allow_foreign: bool) -> Result<PackManifest, PackError> {
        let path = path.to_string();
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            return Err(PackError::Foreign { path });
        }
        if bytes.len() < 20 {
            return Err(PackError::Truncated {
                path,
                actual: bytes.len() as u64,
                expected: 20,
            });
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(PackError::Version {
                path,
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let n = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let expected = 20u64.saturating_add(n).saturating_add(32);
        if (bytes.len() as u64) != expected {
            if (bytes.len() as u64) < expected {
                return Err(PackError::Truncated {
                    path,
                    actual: bytes.len() as u64,
                    expected,
                });
            }
            return Err(PackError::Corrupted { path });
        }
        let payload = &bytes[20..20 + n as usize];
        if Sha256::digest(payload).as_slice() != &bytes[20 + n as usize..] {
            return Err(PackError::Corrupted { path });
        }
        let m: PackManifest = serde_json::from_slice(payload).map_err(|e| PackError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if m.compiler_version != crate::VERSION {
            if !allow_foreign {
                return Err(PackError::StaleCompiler {
                    path,
                    found: m.compiler_version,
                    expected: crate::VERSION.into(),
                });
            }
            eprintln!(
                "warning: pack `{path}` was compiled by tilec {}, not by this binary's tilec {}; \
                 loading it anyway ({ALLOW_FOREIGN_PACK}=1)",
                m.compiler_version,
                crate::VERSION
            );
        }
        for k in &m.kernels {
            for v in &k.variants {
                crate::verify(&v.tir).map_err(|e| PackError::Manifest {
                    path: path.clone(),
                    message: format!("kernel `{}`: {e}", k.name),
                })?;
            }
        }
        Ok(m)
    }

    pub fn read(path: &Path) -> Result<PackManifest, PackError> {
        let bytes = std::fs::read(path).map_err(|source| PackError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

/// Write `data` to `path` atomically (temp file in the same directory, fsync,
/// rename), creating the directory if needed. A path that is not a regular
/// file (`/dev/null`, `/dev/stdout`, a FIFO) is written to directly: renaming
/// over it would replace the device node with a file (`-o /dev/null` once
/// turned the machine's /dev/null into a regular file). Through a symlink,
/// the file it points to is replaced, not the link.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is a directory",
                path.display()
            )));
        }
        if !m.is_file() {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            return f.write_all(data);
        }
    }
    let resolved;
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            resolved = std::fs::canonicalize(path)?;
            resolved.as_path()
        }
        _ => path,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        // tempfile creates 0600; the result is an ordinary file.
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The build script's hashing, compiled again for its tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../build.rs"]
mod build_script;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PackManifest {
        PackManifest {
            compiler_version: crate::VERSION.into(),
            kernels: vec![PackedKernel {
                name: "k".into(),
                signature: Signature {
                    name: "k".into(),
                    params: vec![],
                },
                tune: TuneSpace::default(),
                source_hash: sha256_hex(b"src"),
                variants: vec![Variant {
                    config: Config {
                        meta: vec![("BLOCK".into(), 128)],
                        warps: 4,
                        stages: None,
                        ctas: None,
                    },
                    tir: Kernel {
                        name: "k".into(),
                        params: vec![],
                        meta: vec![],
                        body: Default::default(),
                        values: vec![],
                    },
                    ptx: [("sm_90".to_string(), ".version 8.0".to_string())].into(),
                    shared_bytes: [("sm_90".to_string(), 0)].into(),
                    tma: BTreeMap::new(),
                    waits_for_prior_grid: ["sm_90".to_string()].into(),
                }],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(PackManifest::from_bytes(&m.to_bytes(), "p").unwrap(), m);
    }

    #[test]
    fn every_corruption_is_reported() {
        let good = sample().to_bytes();
        let err = |b: &[u8]| PackManifest::from_bytes(b, "p").unwrap_err();
        assert!(matches!(
            err(b"not a pack at all"),
            PackError::Foreign { .. }
        ));
        assert!(matches!(
            err(&good[..good.len() - 10]),
            PackError::Truncated { .. }
        ));
        assert!(matches!(err(&good[..12]), PackError::Truncated { .. }));
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        assert!(matches!(err(&flipped), PackError::Corrupted { .. }));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(err(&longer), PackError::Corrupted { .. }));
        let mut v2 = good.clone();
        v2[8] = 99;
        assert!(matches!(err(&v2), PackError::Version { .. }));
        let mut stale = sample();
        stale.compiler_version = "0.0.0-old".into();
        assert!(matches!(
            err(&stale.to_bytes()),
            PackError::StaleCompiler { .. }
        ));
    }

    /// Issue 22 item 10: a pack from another compiler (other sources, hence
    /// another fingerprint) is refused, including one from before packs had
    /// fingerprints (its version was the bare crate version).
    #[test]
    fn a_pack_from_another_compiler_is_refused() {
        for other in [
            env!("CARGO_PKG_VERSION").to_string(),
            format!("{}+0123456789abcdef", env!("CARGO_PKG_VERSION")),
        ] {
            let mut m = sample();
            m.compiler_version = other.clone();
            match PackManifest::parse(&m.to_bytes(), "p", false) {
                Err(PackError::StaleCompiler {
                    found, expected, ..
                }) => {
                    assert_eq!(found, other);
                    assert_eq!(expected, crate::VERSION);
                }
                r => panic!("a pack of tilec {other} was not refused: {r:?}"),
            }
        }
        assert_eq!(
            PackManifest::parse(&sample().to_bytes(), "p", false).unwrap(),
            sample()
        );
    }

    #[test]
    fn the_stale_compiler_error_names_both_fingerprints_and_the_fix() {
        let mut m = sample();
        m.compiler_version = "0.1.0+0123456789abcdef".into();
        let msg = PackManifest::parse(&m.to_bytes(), "old.tpack", false)
            .unwrap_err()
            .to_string();
        for part in [
            "old.tpack",
            "0123456789abcdef",
            crate::COMPILER_FINGERPRINT,
            "scripts/packs",
            "TILE_ALLOW_FOREIGN_PACK=1",
        ] {
            assert!(msg.contains(part), "`{part}` missing from: {msg}");
        }
    }

    #[test]
    fn a_foreign_pack_loads_when_allowed() {
        let mut m = sample();
        m.compiler_version = "0.1.0+0123456789abcdef".into();
        assert_eq!(PackManifest::parse(&m.to_bytes(), "p", true).unwrap(), m);
    }

    #[test]
    fn the_version_carries_the_fingerprint() {
        let fp = crate::COMPILER_FINGERPRINT;
        assert_eq!(fp.len(), 16);
        assert!(fp
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(
            crate::VERSION,
            format!("{}+{fp}", env!("CARGO_PKG_VERSION"))
        );
    }

    /// The fingerprint hashes relative paths and contents in a sorted walk:
    /// the same tree elsewhere or with other times gives the same value; any
    /// content, name or new file changes it; hidden files and backups do not count.
    #[test]
    fn fingerprint_is_deterministic_and_content_only() {
        let fp = |root: &Path| {
            let mut watched = Vec::new();
            let f = build_script::fingerprint(root, &["c/Cargo.toml", "c/src"], &mut |p| {
                watched.push(p.to_path_buf())
            });
            assert_eq!(watched, [root.join("c/Cargo.toml"), root.join("c/src")]);
            f
        };
        let tree = |files: &[(&str, &str)]| {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                let p = dir.path().join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            dir
        };
        let base: &[(&str, &str)] = &[
            ("c/Cargo.toml", "[package]"),
            ("c/src/lib.rs", "mod a;"),
            ("c/src/a/mod.rs", "fn f() {}"),
            ("c/src/z.rs", ""),
        ];
        let a = tree(base);
        let first = fp(a.path());
        assert_eq!(first.len(), 16);
        assert_eq!(
            fp(tree(base).path()),
            first,
            "another directory, same sources"
        );
        let file = std::fs::File::options()
            .write(true)
            .open(a.path().join("c/src/lib.rs"))
            .unwrap();
        file.set_modified(std::time::UNIX_EPOCH).unwrap();
        drop(file);
        assert_eq!(fp(a.path()), first, "times do not count");
        std::fs::write(a.path().join("c/src/.lib.rs.swp"), "x").unwrap();
        std::fs::write(a.path().join("c/src/lib.rs~"), "x").unwrap();
        assert_eq!(fp(a.path()), first, "hidden files and backups do not count");
        let mut changed = base.to_vec();
        changed[2].1 = "fn f() { }";
        assert_ne!(fp(tree(&changed).path()), first, "a content change counts");
        changed = base.to_vec();
        changed[3].0 = "c/src/y.rs";
        assert_ne!(fp(tree(&changed).path()), first, "a rename counts");
        changed = base.to_vec();
        changed.push(("c/src/new.rs", ""));
        assert_ne!(fp(tree(&changed).path()), first, "a new file counts");
        assert_ne!(fp(tree(&base[1..]).path()), first, "a missing file counts");
    }

    #[test]
    #[cfg(unix)]
    fn atomic_write_leaves_special_files_and_symlinks_in_place() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        // A FIFO (like /dev/null, not a regular file) is written to, not replaced.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    std::fs::File::open(fifo)
                        .unwrap()
                        .read_to_end(&mut got)
                        .unwrap();
                    got
                })
            };
            write_atomic(&fifo, b"through the pipe").unwrap();
            // Checked before joining: a replaced FIFO leaves the reader waiting.
            use std::os::unix::fs::FileTypeExt;
            let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
            assert!(kind.is_fifo(), "the FIFO was replaced by a {kind:?}");
            assert_eq!(reader.join().unwrap(), b"through the pipe");
        }
        // Through a symlink, the target is replaced and the link stays.
        let target = dir.path().join("target.txt");
        std::fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A directory is an error, not replaced.
        assert!(write_atomic(dir.path(), b"x").is_err());
    }

    #[test]
    fn atomic_write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.tpack");
        sample().write(&p).unwrap();
        assert_eq!(PackManifest::read(&p).unwrap(), sample());
        assert!(matches!(
            PackManifest::read(&dir.path().join("missing")),
            Err(PackError::Io { .. })
        ));
    }
}
