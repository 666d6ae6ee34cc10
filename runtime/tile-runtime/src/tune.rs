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
//!
//! [`tune_args`] tunes a kernel of any pack from arguments written as for
//! `tilec run` ([`crate::argspec`]): each config is checked against the
//! interpreter's result on a reduced problem, then timed at full size
//! (`tile-tune` is its command line).

use crate::argspec::{ArgSpecs, DeviceArgs, HostArgs, Make, Spec};
use crate::bench::{time, Timing};
use crate::{describe, Arg, Config, Device, Kernel, Pack, RuntimeError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tile_ir::launch::GridExpr;
use tile_ir::pack::PackedKernel;
use tile_ir::{ParamKind, Scalar};

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

/// A kernel of a pack and its arguments written as for `tilec run`
/// ([`crate::argspec`]): what [`tune_args`] tunes, with no problem written by
/// hand. `tile-tune` is a command line over it.
#[derive(Clone, Debug, Default)]
pub struct ArgTuneRequest {
    pub kernel: String,
    /// `NAME=SPEC` for every parameter: the full-size problem that is timed.
    pub args: Vec<String>,
    /// The outputs the check compares; empty: the `nan:` buffers.
    pub outputs: Vec<String>,
    /// `NAME=SPEC` replacing some of `args` for the check problem, which runs
    /// on the interpreter for every config; empty: the full problem, if it
    /// has at most [`CHECK_LIMIT_ELEMENTS`] buffer elements.
    pub check_args: Vec<String>,
    /// The grid of a kernel that declares none (`grid:` in the tune block):
    /// one to three axes, each a number or an expression over the kernel's
    /// integer parameters and meta-parameters ([`GridExpr::parse`]), so that
    /// it follows each config's tile (`cdiv(C, BC)`).
    pub grid: Option<Vec<GridExpr>>,
    /// The check problem's grid (needed with `grid` and `check_args` unless
    /// `grid` reads the parameters, which the check problem then values).
    pub check_grid: Option<Vec<GridExpr>>,
    /// Bytes one launch moves, an expression over the scalar arguments;
    /// `None`: the sum of the buffer arguments' sizes.
    pub bytes: Option<String>,
    /// Floating-point operations of one launch, an expression likewise.
    pub flops: Option<String>,
    /// Seed of the random buffers (as `tilec run --seed`).
    pub seed: u64,
    /// Meta-parameters (or `warps`, `stages`, `ctas`) held at a value
    /// (`tile-tune -D RP=32`): the other configs are left out, neither
    /// checked nor timed. For a meta-parameter that changes what the kernel
    /// computes (a padded size that must cover an argument), which would
    /// otherwise make the first config a wrong reference for the others.
    pub pins: Vec<(String, i64)>,
}

/// Buffer elements up to which the full problem also serves as the check
/// problem: the interpreter runs it once per config, so it must stay small
/// (2^22 elements of an elementwise kernel take about a second there).
pub const CHECK_LIMIT_ELEMENTS: u64 = 1 << 22;

/// An [`ArgTuneRequest`] validated against its pack without a GPU: every
/// argument parsed against the signature, the grid known, the cache key
/// values, bytes and FLOPs evaluated.
#[derive(Clone, Debug)]
pub struct ArgTunePlan {
    pub kernel: String,
    pub full: ArgSpecs,
    pub check: ArgSpecs,
    /// Parameter indices of the outputs.
    pub outputs: Vec<usize>,
    /// [`ArgTuneRequest::grid`], its names resolved against the signature.
    pub grid: Option<Vec<GridExpr>>,
    pub check_grid: Option<Vec<GridExpr>>,
    /// The kernel's tune `key:` parameters with their values (every integer
    /// scalar when it declares none).
    pub key_values: Vec<(String, i64)>,
    pub bytes: f64,
    /// Where `bytes` came from, for the report.
    pub bytes_from: String,
    pub flops: Option<f64>,
    pub seed: u64,
    /// [`ArgTuneRequest::pins`]; also in `key_values` (as `-D NAME`), so a
    /// pinned tuning is cached apart from the unpinned one.
    pub pins: Vec<(String, i64)>,
}

/// Validate `req` against `pack` (no GPU needed): unknown kernel, parameter
/// or dtype, bad shapes and expressions, a missing grid or output, and a
/// check problem too large for the interpreter are errors here.
pub fn plan_args(pack: &Pack, req: &ArgTuneRequest) -> anyhow::Result<ArgTunePlan> {
    use anyhow::{bail, Context};
    let packed = pack.kernel(&req.kernel)?;
    let full = ArgSpecs::parse(&packed.signature, &req.args)?;
    let outputs = full.outputs(&req.outputs)?;
    for (p, s) in packed.signature.params.iter().zip(full.specs()) {
        if let Spec::Scalar(v) = s {
            v.to_arg()
                .with_context(|| format!("parameter `{}`", p.name))?;
        }
    }
    let check = if req.check_args.is_empty() {
        let n = full.buffer_elements()?;
        if n > CHECK_LIMIT_ELEMENTS {
            bail!(
                "the problem's buffers hold {n} elements, too many to run on the interpreter for every config (at most {CHECK_LIMIT_ELEMENTS}): give a reduced problem for the check with --check-arg, which replaces that --arg there (e.g. --check-arg x=rand:bf16:64x4096 --check-arg rows=64)"
            );
        }
        full.clone()
    } else {
        full.with_replaced(&req.check_args).context("--check-arg")?
    };
    for &o in &outputs {
        if !matches!(check.specs()[o], Spec::Buffer { .. } | Spec::File(_)) {
            bail!(
                "--check-arg: output `{}` needs a buffer of its own in the check problem",
                packed.signature.params[o].name
            );
        }
    }
    let declared = packed.tune.grid.is_some();
    if req.grid.is_none() && !declared {
        bail!(
            "kernel `{}` declares no launch grid (no `grid:` in its tune block): give one with --grid X[,Y[,Z]]",
            req.kernel
        );
    }
    let params = &packed.signature.params;
    let is_param = |n: &str| {
        params
            .iter()
            .any(|p| p.name == n && matches!(p.kind, ParamKind::Scalar(Scalar::I32 | Scalar::I64)))
    };
    let resolve =
        |g: &Option<Vec<GridExpr>>, flag: &str| -> anyhow::Result<Option<Vec<GridExpr>>> {
            let Some(axes) = g else { return Ok(None) };
            if axes.is_empty() || axes.len() > 3 {
                bail!("{flag} takes one to three axes, X[,Y[,Z]]");
            }
            Ok(Some(
                axes.iter().map(|e| e.clone().resolve(&is_param)).collect(),
            ))
        };
    let grid = resolve(&req.grid, "--grid")?;
    let check_grid = match (resolve(&req.check_grid, "--check-grid")?, grid.clone()) {
        (Some(g), _) => Some(g),
        (None, Some(g)) if req.check_args.is_empty() || g.iter().any(GridExpr::reads_params) => {
            Some(g)
        }
        (None, Some(_)) => bail!(
            "--grid fixes the full problem's grid; the reduced problem of --check-arg needs its own, --check-grid X[,Y[,Z]] (or a --grid over the parameters, e.g. cdiv(n, BLOCK))"
        ),
        (None, None) => None,
    };
    let names: Vec<String> = if packed.tune.key.is_empty() {
        packed
            .signature
            .params
            .iter()
            .filter(|p| matches!(p.kind, ParamKind::Scalar(Scalar::I32 | Scalar::I64)))
            .map(|p| p.name.clone())
            .collect()
    } else {
        packed.tune.key.clone()
    };
    let mut key_values = Vec::new();
    for n in names {
        let Some(v) = full.scalar(&n).and_then(|v| v.as_i64()) else {
            bail!(
                "kernel `{}` is tuned by `{n}` (its tune block's key), which is not an integer argument",
                req.kernel
            );
        };
        key_values.push((n, v));
    }
    for (n, v) in &req.pins {
        if !packed.variants.iter().any(|x| x.config.value(n).is_some()) {
            let names: Vec<&str> = packed.variants[0]
                .config
                .meta
                .iter()
                .map(|(m, _)| m.as_str())
                .collect();
            bail!(
                "-D {n}={v}: kernel `{}` has no meta-parameter `{n}` (it has {}, warps, and stages or ctas where its tune block lists them)",
                req.kernel,
                names.join(", ")
            );
        }
        key_values.push((format!("-D {n}"), *v));
    }
    if !packed.variants.iter().any(|x| pinned(&x.config, &req.pins)) {
        bail!(
            "{}: no configuration of kernel `{}` has these values together (its tune block lists them)",
            describe_pins(&req.pins),
            req.kernel
        );
    }
    let (bytes, bytes_from) = match &req.bytes {
        Some(e) => (full.eval(e).context("--bytes")?, format!("--bytes {e}")),
        None => (
            full.buffer_bytes()? as f64,
            "the sum of the buffer arguments' sizes; --bytes EXPR to say otherwise".to_string(),
        ),
    };
    let flops = match &req.flops {
        Some(e) => Some(full.eval(e).context("--flops")?),
        None => None,
    };
    Ok(ArgTunePlan {
        kernel: req.kernel.clone(),
        full,
        check,
        outputs,
        grid,
        check_grid,
        key_values,
        bytes,
        bytes_from,
        flops,
        seed: req.seed,
        pins: req.pins.clone(),
    })
}

/// Whether `config` has every pinned value.
fn pinned(config: &Config, pins: &[(String, i64)]) -> bool {
    pins.iter().all(|(n, v)| config.value(n) == Some(*v))
}

/// The pins as given on the command line: `-D BR=16 -D S=2`.
fn describe_pins(pins: &[(String, i64)]) -> String {
    let pins: Vec<String> = pins.iter().map(|(n, v)| format!("-D {n}={v}")).collect();
    pins.join(" ")
}

/// Tune `plan`'s kernel on `dev`: from the cache when it knows the key (no
/// buffer is made then); else every config is first run on the check problem
/// on the interpreter and on `dev` and compared ([`check_outputs`]; configs
/// that disagree or fail are rejected, their reasons kept, and not timed),
/// then timed on the full problem with the benchmark protocol and cached.
pub fn tune_args(
    dev: &Device,
    pack: &Pack,
    plan: &ArgTunePlan,
    tuner: &Autotuner,
) -> anyhow::Result<Tuned> {
    let key = Autotuner::key(dev, pack, &plan.kernel, &plan.key_values)?;
    if let Some(entry) = tuner.lookup(&key) {
        return Ok(Tuned {
            entry,
            from_cache: true,
        });
    }
    let sig = plan.full.signature();
    let cpu = Device::cpu();
    let host_check = plan.check.make_host(plan.seed)?;
    let mut checker = Checker {
        cpu_args: DeviceArgs::upload(&cpu, &host_check, sig)?,
        dev_args: DeviceArgs::upload(dev, &host_check, sig)?,
        host: host_check,
        cpu,
        reference: None,
    };
    let full = {
        let host = plan.full.make_host(plan.seed)?;
        DeviceArgs::upload(dev, &host, sig)?
    };
    Ok(tuner.tune(
        dev,
        pack,
        &plan.kernel,
        &plan.key_values,
        &mut |k, _| {
            let args = full.args();
            dev.launch(k, launch_grid(k, plan.grid.as_deref(), &args)?, &args)
        },
        &mut |k, cfg| {
            if !pinned(cfg, &plan.pins) {
                return Err(format!("left out by {}", describe_pins(&plan.pins)));
            }
            checker.check(dev, pack, plan, k, cfg)
        },
    )?)
}

fn launch_grid(
    k: &Kernel,
    given: Option<&[GridExpr]>,
    args: &[Arg],
) -> Result<[u32; 3], RuntimeError> {
    match given {
        Some(axes) => k.grid_of(axes, args),
        None => k.grid(args),
    }
}

/// The check of [`tune_args`]: the check problem on the interpreter and on the
/// device, and the interpreter's outputs of the first config that passed.
struct Checker {
    cpu: Device,
    host: HostArgs,
    cpu_args: DeviceArgs,
    dev_args: DeviceArgs,
    reference: Option<(Config, Vec<Vec<f64>>)>,
}

impl Checker {
    fn check(
        &mut self,
        dev: &Device,
        pack: &Pack,
        plan: &ArgTunePlan,
        k: &Kernel,
        cfg: &Config,
    ) -> Result<(), String> {
        let e = |e: anyhow::Error| format!("{e:#}");
        let r = |e: RuntimeError| e.to_string();
        let cpu_kernel = pack.load_kernel(&self.cpu, &plan.kernel, cfg).map_err(r)?;
        self.cpu_args.restore(&self.cpu, &self.host).map_err(e)?;
        let args = self.cpu_args.args();
        let grid = launch_grid(&cpu_kernel, plan.check_grid.as_deref(), &args).map_err(r)?;
        self.cpu
            .launch(&cpu_kernel, grid, &args)
            .map_err(|e| format!("on the interpreter: {e}"))?;
        let want = outputs(&self.cpu, &self.cpu_args, &plan.outputs).map_err(r)?;
        self.dev_args.restore(dev, &self.host).map_err(e)?;
        let args = self.dev_args.args();
        dev.launch(k, grid, &args).map_err(r)?;
        dev.synchronize().map_err(r)?;
        let got = outputs(dev, &self.dev_args, &plan.outputs).map_err(r)?;
        let params = &plan.check.signature().params;
        for (j, &o) in plan.outputs.iter().enumerate() {
            let name = &params[o].name;
            let ParamKind::Ptr(dtype) = params[o].kind else {
                continue;
            };
            let poisoned = matches!(
                plan.check.specs()[o],
                Spec::Buffer {
                    make: Make::Nan,
                    ..
                }
            );
            if poisoned && dtype.is_float() {
                let left = want[j].iter().filter(|v| v.is_nan()).count();
                if left > 0 {
                    let first = want[j].iter().position(|v| v.is_nan()).unwrap_or(0);
                    return Err(format!(
                        "`{name}` keeps the NaN poison at {left} of {} elements on the interpreter (first: {name}[{first}]): this config does not write all of it (a block or grid too small for the problem?)",
                        want[j].len()
                    ));
                }
            }
            check_outputs(name, dtype, &got[j], &want[j])
                .map_err(|m| format!("{m}, on the device against the interpreter"))?;
        }
        // Every config of a tuned kernel must compute the same thing (the
        // tuner may pick any): each is held against the first that passed.
        match &self.reference {
            None => self.reference = Some((cfg.clone(), want)),
            Some((rc, rwant)) => {
                for (j, &o) in plan.outputs.iter().enumerate() {
                    let ParamKind::Ptr(dtype) = params[o].kind else {
                        continue;
                    };
                    check_outputs(&params[o].name, dtype, &want[j], &rwant[j]).map_err(|m| {
                        format!(
                            "{m}, on the interpreter against config {} (configs must agree)",
                            describe(rc)
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The outputs' contents as f64.
fn outputs(dev: &Device, args: &DeviceArgs, outs: &[usize]) -> Result<Vec<Vec<f64>>, RuntimeError> {
    outs.iter()
        .map(|&o| {
            let b = args
                .buffer(o)
                .ok_or_else(|| RuntimeError::Buffer("an output has no buffer".into()))?;
            let bytes = dev.download_bytes(b)?;
            tile_interp::Buffer::from_bytes(b.dtype(), &bytes)
                .map(|h| h.to_f64_vec())
                .ok_or_else(|| RuntimeError::Buffer("bad buffer bytes".into()))
        })
        .collect()
}

/// How far an output of `dtype` may be from the interpreter's: `(rtol,
/// atol)`, `atol` relative to the largest magnitude of the reference (so
/// values that cancel to near zero are judged on the output's scale).
/// Integers are exact. Floats: two units in the last place of the dtype,
/// because the device and the interpreter each round a nearly equal f32 (the
/// GPU's approximate exp/erf/rsqrt and another summation order differ in the
/// last f32 bits) and may land on neighbours, once more for a rounded
/// intermediate; f32 allows 1e-4, far above those differences and far below
/// a config that computes something else.
pub fn tolerance(dtype: Scalar) -> (f64, f64) {
    match dtype {
        Scalar::F32 => (1e-4, 1e-5),
        Scalar::BF16 => (1.0 / 64.0, 1.0 / 256.0),
        Scalar::F16 => (1.0 / 512.0, 1.0 / 2048.0),
        Scalar::I1 | Scalar::I32 | Scalar::I64 => (0.0, 0.0),
    }
}

/// Compare output `name` (`got`) with the reference (`want`) within
/// [`tolerance`]; NaN must meet NaN and infinities the same infinity. The
/// error names the first element outside and how many are.
pub fn check_outputs(name: &str, dtype: Scalar, got: &[f64], want: &[f64]) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "`{name}` has {} elements, the reference {}",
            got.len(),
            want.len()
        ));
    }
    let (rtol, atol) = tolerance(dtype);
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let atol = atol * scale;
    let ok = |g: f64, w: f64| {
        if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        }
    };
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !ok(got[i], want[i])).collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "wrong result: {name}[{i}] = {} where the reference has {} ({} of {} elements outside the {} tolerance |diff| <= {atol:.3e} + {rtol:.3e}·|ref|)",
            got[i],
            want[i],
            bad.len(),
            got.len(),
            dtype.name()
        )),
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
            stages: None,
            ctas: None,
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

    #[test]
    fn outputs_are_compared_within_the_dtype_tolerance() {
        let one_ulp = 1.0 + 1.0 / 128.0; // bf16 neighbours of 1.0
        assert_eq!(
            check_outputs("y", Scalar::BF16, &[one_ulp, 0.5], &[1.0, 0.5]),
            Ok(())
        );
        let e = check_outputs("y", Scalar::BF16, &[1.0, 0.55], &[1.0, 0.5]).unwrap_err();
        assert!(e.contains("wrong result: y[1] = 0.55 where the reference has 0.5 (1 of 2 elements outside the bf16 tolerance"), "{e}");
        // Near zero the output's scale decides, not the element's.
        assert_eq!(
            check_outputs("y", Scalar::BF16, &[1e-3, 1.0], &[0.0, 1.0]),
            Ok(())
        );
        assert!(check_outputs("y", Scalar::F32, &[1.0 + 1e-3], &[1.0]).is_err());
        assert!(check_outputs("n", Scalar::I32, &[3.0], &[4.0]).is_err());
        assert_eq!(
            check_outputs(
                "y",
                Scalar::F32,
                &[f64::NAN, f64::INFINITY],
                &[f64::NAN, f64::INFINITY]
            ),
            Ok(())
        );
        assert!(check_outputs("y", Scalar::F32, &[0.0], &[f64::NAN]).is_err());
        assert!(check_outputs("y", Scalar::F32, &[f64::NAN], &[0.0]).is_err());
        assert!(check_outputs("y", Scalar::F32, &[0.0], &[0.0, 1.0])
            .unwrap_err()
            .contains("has 1 elements, the reference 2"));
    }

    /// A pack of one kernel `k` whose only variant has this PTX for sm_90,
    /// from the same source every time.
    fn pack_with_ptx(dir: &Path, ptx: &str) -> Pack {
        use tile_ir::pack::{sha256_hex, PackManifest, Variant};
        let config = Config {
            meta: vec![("BLOCK".into(), 128)],
            warps: 4,
            stages: None,
            ctas: None,
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
                    waits_for_prior_grid: Default::default(),
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
