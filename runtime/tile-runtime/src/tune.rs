//! Autotuning with a persistent cache.
//!
//! For an unseen key (device, driver, kernel source hash, hash of the compiled
//! code, candidate set, key values) every config of the kernel's pack variants is checked once and then
//! timed with the benchmark protocol (`bench::time`: warm-up, L2 flush, CUDA
//! events, median), the best is kept and written to an on-disk cache
//! (`$XDG_CACHE_HOME/tile/autotune-v1.json`). A second process with a warm cache
//! times nothing. The cache file is versioned, updated under an exclusive file
//! lock (read–merge–write, so concurrent tuners never drop each other's
//! entries) and replaced atomically; a corrupt file is reported and rebuilt.
//! Keying by the compiled code ([`code_hash`]: the PTX, TIR and launch data of
//! every variant) as well as the source means a code-generation change, with
//! the source untouched, tunes again instead of reusing stale answers.

use crate::bench::{time, Timing};
use crate::{describe, Config, Device, Kernel, Pack, RuntimeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tile_ir::pack::PackedKernel;

const CACHE_VERSION: u32 = 1;

/// One measured config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Trial {
    pub config: Config,
    /// Median milliseconds, or why the config could not run.
    pub result: Result<TrialTime, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrialTime {
    pub median_ms: f64,
    pub p20_ms: f64,
    pub p80_ms: f64,
    pub samples: usize,
}

impl From<Timing> for TrialTime {
    fn from(t: Timing) -> Self {
        TrialTime {
            median_ms: t.median_ms,
            p20_ms: t.p20_ms,
            p80_ms: t.p80_ms,
            samples: t.samples,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TuneEntry {
    pub best: Config,
    pub trials: Vec<Trial>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    entries: BTreeMap<String, TuneEntry>,
}

/// The result of [`Autotuner::tune`].
#[derive(Clone, Debug)]
pub struct Tuned {
    pub entry: TuneEntry,
    /// True when the answer came from the cache and nothing was timed.
    pub from_cache: bool,
}

pub struct Autotuner {
    path: PathBuf,
    /// Milliseconds of timed runs per config (after warm-up).
    pub budget_ms: f64,
}

/// Default cache location: `$XDG_CACHE_HOME/tile/autotune-v1.json` (or `~/.cache/...`).
pub fn default_cache_path() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("tile")
        .join(format!("autotune-v{CACHE_VERSION}.json"))
}

impl Autotuner {
    pub fn new(path: PathBuf) -> Autotuner {
        Autotuner {
            path,
            budget_ms: 300.0,
        }
    }

    pub fn cache_path(&self) -> &Path {
        &self.path
    }

    /// The cache key: device, driver, the kernel's source hash, the hash of its
    /// compiled code ([`code_hash`]: a code-generation change invalidates old
    /// answers), a hash of the candidate configs (adding a config invalidates
    /// old answers) and key values.
    pub fn key(
        device: &Device,
        pack: &Pack,
        kernel: &str,
        key_values: &[(String, i64)],
    ) -> Result<String, RuntimeError> {
        let k = pack.kernel(kernel)?;
        let candidates: Vec<String> = k.variants.iter().map(|v| describe(&v.config)).collect();
        let cand_hash = tile_ir::pack::sha256_hex(candidates.join(";").as_bytes());
        let keys: Vec<String> = key_values.iter().map(|(n, v)| format!("{n}={v}")).collect();
        Ok(format!(
            "{}|driver {}|{}|{}|code {}|{}|{}",
            device.name(),
            device.driver_version(),
            kernel,
            k.source_hash.get(..16).unwrap_or(&k.source_hash),
            &code_hash(k)[..16],
            &cand_hash[..16],
            keys.join(",")
        ))
    }

    /// Look the key up without timing anything.
    pub fn lookup(&self, key: &str) -> Option<TuneEntry> {
        self.read().ok().and_then(|c| c.entries.get(key).cloned())
    }

    /// Best config of `kernel` for these key values. `run` launches one config
    /// (it builds the grid from the config). `check` runs a config once and
    /// verifies its output against a reference before it is timed; a config
    /// that fails (wrong results, launch error) is skipped and its reason kept.
    pub fn tune(
        &self,
        device: &Device,
        pack: &Pack,
        kernel: &str,
        key_values: &[(String, i64)],
        run: &mut dyn FnMut(&Kernel, &Config) -> Result<(), RuntimeError>,
        check: &mut dyn FnMut(&Kernel, &Config) -> Result<(), String>,
    ) -> Result<Tuned, RuntimeError> {
        let key = Self::key(device, pack, kernel, key_values)?;
        if let Some(entry) = self.lookup(&key) {
            return Ok(Tuned {
                entry,
                from_cache: true,
            });
        }
        let mut trials = Vec::new();
        for v in &pack.kernel(kernel)?.variants {
            let result = (|| -> Result<TrialTime, String> {
                let k = pack
                    .load_kernel(device, kernel, &v.config)
                    .map_err(|e| e.to_string())?;
                check(&k, &v.config)?;
                device.synchronize().map_err(|e| e.to_string())?;
                let t = time(device, 50.0, 200, self.budget_ms, &mut || {
                    run(&k, &v.config)
                })
                .map_err(|e| e.to_string())?;
                Ok(t.into())
            })();
            trials.push(Trial {
                config: v.config.clone(),
                result,
            });
        }
        let best = trials
            .iter()
            .filter_map(|t| t.result.as_ref().ok().map(|r| (r.median_ms, &t.config)))
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
            .map(|(_, c)| c.clone())
            .ok_or_else(|| RuntimeError::Launch {
                kernel: kernel.into(),
                message: format!(
                    "no config ran: {}",
                    trials
                        .iter()
                        .filter_map(|t| t.result.as_ref().err().cloned())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })?;
        let entry = TuneEntry { best, trials };
        self.store(&key, &entry)?;
        Ok(Tuned {
            entry,
            from_cache: false,
        })
    }

    fn read(&self) -> Result<CacheFile, String> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CacheFile {
                    version: CACHE_VERSION,
                    ..Default::default()
                })
            }
            Err(e) => return Err(e.to_string()),
        };
        let c: CacheFile = serde_json::from_slice(&bytes)
            .map_err(|e| format!("corrupt autotune cache {}: {e}", self.path.display()))?;
        if c.version != CACHE_VERSION {
            return Err(format!(
                "autotune cache {} has version {}, expected {CACHE_VERSION}",
                self.path.display(),
                c.version
            ));
        }
        Ok(c)
    }

    /// Merge one entry into the cache file under an exclusive lock.
    fn store(&self, key: &str, entry: &TuneEntry) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| {
            RuntimeError::Buffer(format!("autotune cache {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _guard = lock.write().map_err(io)?;
        let mut cache = match self.read() {
            Ok(c) => c,
            Err(why) => {
                eprintln!("warning: {why}; rebuilding it");
                CacheFile {
                    version: CACHE_VERSION,
                    ..Default::default()
                }
            }
        };
        cache.entries.insert(key.to_string(), entry.clone());
        let bytes = serde_json::to_vec_pretty(&cache).expect("cache serialises");
        tile_ir::pack::write_atomic(&self.path, &bytes).map_err(io)
    }
}

/// SHA-256 (hex) of what was compiled for a kernel: per variant, its config,
/// TIR and, per architecture, its PTX, dynamic shared memory and TMA operands.
pub fn code_hash(k: &PackedKernel) -> String {
    let mut all = Vec::new();
    let mut field = |bytes: &[u8]| {
        all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        all.extend_from_slice(bytes);
    };
    for v in &k.variants {
        field(describe(&v.config).as_bytes());
        field(tile_ir::print_kernel(&v.tir).as_bytes());
        for (arch, ptx) in &v.ptx {
            field(arch.as_bytes());
            field(ptx.as_bytes());
            field(&v.shared_bytes.get(arch).copied().unwrap_or(0).to_le_bytes());
            field(format!("{:?}", v.tma.get(arch)).as_bytes());
        }
    }
    tile_ir::pack::sha256_hex(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(block: i64) -> TuneEntry {
        let config = Config {
            meta: vec![("BLOCK".into(), block)],
            warps: 4,
        };
        TuneEntry {
            best: config.clone(),
            trials: vec![Trial {
                config,
                result: Ok(TrialTime {
                    median_ms: 1.0,
                    p20_ms: 0.9,
                    p80_ms: 1.1,
                    samples: 9,
                }),
            }],
        }
    }

    #[test]
    fn miss_then_hit_then_rebuilt_when_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let t = Autotuner::new(dir.path().join("sub").join("cache.json"));
        assert!(t.lookup("k").is_none());
        t.store("k", &entry(128)).unwrap();
        assert_eq!(t.lookup("k"), Some(entry(128)));
        assert!(t.lookup("other").is_none());
        std::fs::write(t.cache_path(), b"{ not json").unwrap();
        assert!(t.lookup("k").is_none(), "a corrupt cache is never trusted");
        t.store("k2", &entry(256)).unwrap();
        assert_eq!(t.lookup("k2"), Some(entry(256)));
        // A cache from another format version is ignored too.
        let text = std::fs::read_to_string(t.cache_path())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 99");
        std::fs::write(t.cache_path(), text).unwrap();
        assert!(t.lookup("k2").is_none());
    }

    #[test]
    fn concurrent_writers_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = path.clone();
                s.spawn(move || {
                    Autotuner::new(path)
                        .store(&format!("key{i}"), &entry(i))
                        .unwrap()
                });
            }
        });
        let t = Autotuner::new(path);
        for i in 0..8 {
            assert_eq!(t.lookup(&format!("key{i}")), Some(entry(i)));
        }
    }

    /// A pack of one kernel `k` whose only variant has this PTX for sm_90,
    /// from the same source every time.
    fn pack_with_ptx(dir: &Path, ptx: &str) -> Pack {
        use tile_ir::pack::{sha256_hex, PackManifest, Variant};
        let config = Config {
            meta: vec![("BLOCK".into(), 128)],
            warps: 4,
        };
        let tir = tile_ir::Kernel {
            name: "k".into(),
            params: vec![],
            meta: vec![("BLOCK".into(), 128)],
            body: Default::default(),
            values: vec![],
        };
        let m = PackManifest {
            compiler_version: tile_ir::VERSION.into(),
            kernels: vec![PackedKernel {
                name: "k".into(),
                signature: tir.signature(),
                tune: Default::default(),
                source_hash: sha256_hex(b"kernel k<const BLOCK: i32>() {}"),
                variants: vec![Variant {
                    config,
                    tir,
                    ptx: [("sm_90".to_string(), ptx.to_string())].into(),
                    shared_bytes: [("sm_90".to_string(), 0)].into(),
                    tma: BTreeMap::new(),
                }],
            }],
        };
        let path = dir.join(format!("{}.tpack", sha256_hex(ptx.as_bytes())));
        m.write(&path).unwrap();
        Pack::load(&path).unwrap()
    }

    /// Issue 22 item 11: the same source compiled to other code gets another
    /// key, so tuned configs of the old code are not reused.
    #[test]
    fn the_key_changes_with_the_compiled_code() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = Device::cpu();
        let keys = [(String::from("n"), 4096)];
        let old = pack_with_ptx(dir.path(), ".version 8.0\n// old code generator");
        let new = pack_with_ptx(dir.path(), ".version 8.0\n// new code generator");
        assert_eq!(
            old.kernel("k").unwrap().source_hash,
            new.kernel("k").unwrap().source_hash
        );
        let key = |p: &Pack| Autotuner::key(&cpu, p, "k", &keys).unwrap();
        assert_ne!(key(&old), key(&new));
        // The same code gives the same key.
        let again = pack_with_ptx(dir.path(), ".version 8.0\n// old code generator");
        assert_eq!(key(&old), key(&again));
        assert_ne!(
            code_hash(old.kernel("k").unwrap()),
            code_hash(new.kernel("k").unwrap())
        );
    }
}
