//! Loading kernels from a pack (`tile_ir::pack` defines and validates the format).

use crate::{Device, Kernel, RuntimeError};
use std::path::Path;
use tile_ir::pack::{PackError, PackManifest, PackedKernel, Variant};
use tile_ir::Config;

/// A validated kernel pack.
pub struct Pack {
    manifest: PackManifest,
}

impl Pack {
    /// Read and validate a pack (magic, format version, length, hash, compiler
    /// version). A pack compiled from other compiler sources than this binary's
    /// (`tile_ir::VERSION` ends in their fingerprint) is refused with
    /// [`PackError::StaleCompiler`], naming both versions and `scripts/packs`;
    /// `TILE_ALLOW_FOREIGN_PACK=1` loads it anyway with a warning.
    pub fn load(path: &Path) -> Result<Pack, PackError> {
        Ok(Pack {
            manifest: PackManifest::read(path)?,
        })
    }

    pub fn manifest(&self) -> &PackManifest {
        &self.manifest
    }

    pub fn kernel(&self, name: &str) -> Result<&PackedKernel, RuntimeError> {
        self.manifest.kernel(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .manifest
                .kernels
                .iter()
                .map(|k| k.name.as_str())
                .collect();
            RuntimeError::Launch {
                kernel: name.into(),
                message: format!("not in the pack (it holds: {})", names.join(", ")),
            }
        })
    }

    /// The variant of `name` with exactly these meta-parameter values and warps.
    pub fn variant(&self, name: &str, config: &Config) -> Result<&Variant, RuntimeError> {
        let k = self.kernel(name)?;
        k.variants
            .iter()
            .find(|v| &v.config == config)
            .ok_or_else(|| RuntimeError::Launch {
                kernel: name.into(),
                message: format!(
                    "config {} is not in the pack (it holds {} configs, e.g. {})",
                    describe(config),
                    k.variants.len(),
                    k.variants
                        .first()
                        .map(|v| describe(&v.config))
                        .unwrap_or_default()
                ),
            })
    }

    /// Load one variant onto a device: PTX for the device's architecture on a GPU, TIR on the CPU.
    pub fn load_kernel(
        &self,
        device: &Device,
        name: &str,
        config: &Config,
    ) -> Result<Kernel, RuntimeError> {
        let v = self.variant(name, config)?;
        let sig = v.tir.signature();
        match device {
            Device::Cuda(_) => {
                let arch = device.arch()?;
                let ptx = v.ptx.get(&arch).ok_or_else(|| RuntimeError::Launch {
                    kernel: name.into(),
                    message: format!(
                        "the pack has no PTX for {arch} (it has: {})",
                        v.ptx.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                })?;
                let shared = v.shared_bytes.get(&arch).copied().unwrap_or(0);
                let tma = v.tma.get(&arch).cloned().unwrap_or_default();
                device.load_ptx(ptx, sig, config.warps, shared, tma)
            }
            Device::Cpu => device.load_tir(v.tir.clone(), config.warps),
        }
    }
}

/// `BLOCK=1024, warps=4`.
pub fn describe(c: &Config) -> String {
    c.describe()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::pack::ALLOW_FOREIGN_PACK;

    /// Issue 22 item 10: a pack from another compiler does not load.
    #[test]
    fn a_pack_from_another_compiler_is_refused() {
        if std::env::var_os(ALLOW_FOREIGN_PACK).is_some() {
            eprintln!("SKIPPED: {ALLOW_FOREIGN_PACK} is set");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.tpack");
        let mut m = PackManifest {
            compiler_version: "0.1.0+0123456789abcdef".into(),
            kernels: vec![],
        };
        m.write(&path).unwrap();
        let msg = match Pack::load(&path) {
            Err(e @ PackError::StaleCompiler { .. }) => e.to_string(),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a pack of another compiler loaded"),
        };
        assert!(msg.contains("0123456789abcdef") && msg.contains(tile_ir::COMPILER_FINGERPRINT));
        assert!(msg.contains("scripts/packs"), "{msg}");
        m.compiler_version = tile_ir::VERSION.into();
        m.write(&path).unwrap();
        assert!(Pack::load(&path).is_ok());
    }
}
