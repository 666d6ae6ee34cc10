//! Where the pack's kernels come from and how they are launched.
//!
//! A [`KernelSet`] serves kernels by name and meta-parameters on one device,
//! from compiled packs (`mhc.tpack`, `model.tpack`: PTX for the GPU, TIR for the
//! CPU) or, on the CPU only, from the `.tile` sources embedded in this crate
//! (checked and specialised on first use, so tests and CPU runs need no LLVM).
//! Loaded kernels are cached per configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tile_front::frontend::{parse_program, Program, SourceFile};
use tile_runtime::{Arg, Config, Device, Kernel, Pack, RuntimeError};

/// The `.tile` sources of this crate: (pack, file name, text).
pub const SOURCES: &[(&str, &str, &str)] = &[
    (
        "mhc",
        "mhc.tile",
        include_str!("../../kernels/mhc/mhc.tile"),
    ),
    (
        "model",
        "attention.tile",
        include_str!("../../kernels/model/attention.tile"),
    ),
    (
        "model",
        "elementwise.tile",
        include_str!("../../kernels/model/elementwise.tile"),
    ),
    (
        "model",
        "embed.tile",
        include_str!("../../kernels/model/embed.tile"),
    ),
    (
        "model",
        "loss.tile",
        include_str!("../../kernels/model/loss.tile"),
    ),
    (
        "model",
        "norm.tile",
        include_str!("../../kernels/model/norm.tile"),
    ),
    (
        "model",
        "reduce.tile",
        include_str!("../../kernels/model/reduce.tile"),
    ),
    (
        "model",
        "streams.tile",
        include_str!("../../kernels/model/streams.tile"),
    ),
];

/// The pack directories (relative to this crate) that `tilec pack` compiles:
/// `mhc-kernels/kernels/<name>` → `<name>.tpack`.
pub const PACKS: &[&str] = &["mhc", "model"];

/// The directory holding the pack sources of `pack` (for `tilec pack DIR`).
pub fn source_dir(pack: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels")
        .join(pack)
}

/// Errors of loading or launching pack kernels.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pack(#[from] tile_runtime::PackError),
    #[error("embedded kernel source `{file}` does not compile:\n{message}")]
    Source { file: String, message: String },
    #[error("kernel `{0}` is in no pack and no embedded source")]
    Unknown(String),
    #[error("{0}")]
    NoPack(String),
}

enum Origin {
    Packs(Vec<Pack>),
    /// Parsed embedded programs (CPU only).
    Sources(Vec<(String, Program)>),
}

/// Kernels by name and meta-parameters on one device (see the module doc).
/// A loaded kernel's identity: name, meta-parameter values, warps.
type KernelKey = (String, Vec<(String, i64)>, u32);

pub struct KernelSet {
    device: Arc<Device>,
    origin: Origin,
    cache: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl KernelSet {
    /// Kernels from compiled packs (every kernel must be in one of them).
    pub fn from_packs(device: Arc<Device>, paths: &[PathBuf]) -> Result<KernelSet, KernelError> {
        let packs = paths
            .iter()
            .map(|p| Pack::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KernelSet {
            device,
            origin: Origin::Packs(packs),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Kernels from the embedded `.tile` sources, for the CPU device only: a
    /// GPU needs PTX from a pack (`tilec pack`, see the README).
    pub fn from_sources(device: Arc<Device>) -> Result<KernelSet, KernelError> {
        if device.is_gpu() {
            return Err(KernelError::NoPack(
                "a GPU runs kernels from a compiled pack; build it with `bash scripts/packs` \
                 and pass its path"
                    .into(),
            ));
        }
        let mut programs = Vec::new();
        for (_, file, text) in SOURCES {
            let src = SourceFile::new(*file, *text);
            let program = parse_program(&src).map_err(|d| KernelError::Source {
                file: file.to_string(),
                message: d.render(&src),
            })?;
            programs.push((file.to_string(), program));
        }
        Ok(KernelSet {
            device,
            origin: Origin::Sources(programs),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The packs in `dir` named after [`PACKS`] when they are all there,
    /// else (CPU only) the embedded sources.
    pub fn open(device: Arc<Device>, dir: Option<&Path>) -> Result<KernelSet, KernelError> {
        if let Some(dir) = dir {
            let paths: Vec<PathBuf> = PACKS
                .iter()
                .map(|p| dir.join(format!("{p}.tpack")))
                .collect();
            if paths.iter().all(|p| p.exists()) || device.is_gpu() {
                return Self::from_packs(device, &paths);
            }
        }
        Self::from_sources(device)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The kernel `name` specialised with `meta` (any order) and `warps`.
    pub fn get(
        &self,
        name: &str,
        meta: &[(&str, i64)],
        warps: u32,
    ) -> Result<Arc<Kernel>, KernelError> {
        let mut key_meta: Vec<(String, i64)> =
            meta.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        key_meta.sort();
        let key = (name.to_string(), key_meta, warps);
        if let Some(k) = self.cache.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let kernel = Arc::new(self.load(name, meta, warps)?);
        self.cache.lock().unwrap().insert(key, kernel.clone());
        Ok(kernel)
    }

    fn load(&self, name: &str, meta: &[(&str, i64)], warps: u32) -> Result<Kernel, KernelError> {
        match &self.origin {
            Origin::Packs(packs) => {
                let pack = packs
                    .iter()
                    .find(|p| p.manifest().kernel(name).is_some())
                    .ok_or_else(|| KernelError::Unknown(name.into()))?;
                let packed = pack.kernel(name)?;
                // The pack's configs list meta-parameters in declaration order.
                let order: Vec<String> = packed
                    .variants
                    .first()
                    .map(|v| v.config.meta.iter().map(|(n, _)| n.clone()).collect())
                    .unwrap_or_default();
                if let Some((extra, _)) = meta.iter().find(|(m, _)| !order.iter().any(|n| n == m)) {
                    return Err(RuntimeError::Launch {
                        kernel: name.into(),
                        message: format!(
                            "meta-parameter `{extra}` is not in the pack's configs (only: {}); \
                             add it to the kernel's tune block and rebuild the pack",
                            order.join(", ")
                        ),
                    }
                    .into());
                }
                let config = Config {
                    meta: order
                        .iter()
                        .map(|n| {
                            let v = meta.iter().find(|(m, _)| m == n).map(|(_, v)| *v);
                            v.map(|v| (n.clone(), v))
                                .ok_or_else(|| RuntimeError::Launch {
                                    kernel: name.into(),
                                    message: format!("no value given for meta-parameter `{n}`"),
                                })
                        })
                        .collect::<Result<_, _>>()?,
                    warps,
                };
                Ok(pack.load_kernel(&self.device, name, &config)?)
            }
            Origin::Sources(programs) => {
                let (file, program) = programs
                    .iter()
                    .find(|(_, p)| p.kernel_names().iter().any(|k| k == name))
                    .ok_or_else(|| KernelError::Unknown(name.into()))?;
                let meta: Vec<(String, i64)> =
                    meta.iter().map(|(n, v)| (n.to_string(), *v)).collect();
                let tir = program.specialize(name, &meta).map_err(|d| {
                    let text = SOURCES
                        .iter()
                        .find(|s| s.1 == file)
                        .map(|s| s.2)
                        .unwrap_or("");
                    KernelError::Source {
                        file: file.clone(),
                        message: d.render(&SourceFile::new(file.clone(), text)),
                    }
                })?;
                Ok(self.device.load_tir(tir, warps)?)
            }
        }
    }

    /// Launch `name` (specialised with `meta`, `warps`) over `grid`.
    pub fn launch(
        &self,
        name: &str,
        meta: &[(&str, i64)],
        warps: u32,
        grid: [u32; 3],
        args: &[Arg],
    ) -> Result<(), KernelError> {
        let k = self.get(name, meta, warps)?;
        Ok(self.device.launch(&k, grid, args)?)
    }
}
