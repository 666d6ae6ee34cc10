//! The training loop: builds the device, kernels, data and model, resumes from
//! a checkpoint when asked, runs the steps with a progress bar, writes metrics,
//! checkpoints and plots, and stops cleanly on an interrupt or a non-finite
//! loss or gradient. The same loop runs each rank of a data-parallel run
//! ([`super::parallel`]).

use super::checkpoint::{checkpoint_path, Checkpoint, DataRecord, Tensor};
use super::config::{ModelConfig, ResidualMode, TrainConfig};
use super::data::Dataset;
use super::memory::MemoryPlan;
use super::metrics::{amax_gain, metrics_path, AmaxGain, MetricsWriter, Record};
use super::model::Model;
use super::optim::AdamW;
use super::parallel::{self, Plan, Rank};
use super::plot::{plot_runs, Run};
use super::residual::{new_residual, ResidualConfig};
use crate::ops::Ops;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mhc::kernels::KernelSet;
use mhc::profile::Profiler;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tile_runtime::{Device, Element, HostCopy, Mark};

/// A line on stderr; a closed stderr (`mhc-train … 2>&1 | head`) is not an
/// error worth a panic, so a failed write is dropped.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The first GPU when one is usable, else the CPU.
    Auto,
    Cpu,
    Gpu,
}

/// How the ranks of a data-parallel run sum their gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CollectiveChoice {
    /// NCCL on GPUs and the host stand-in on the CPU when --ranks > 1; with
    /// one rank, none (the single-device code path).
    Auto,
    /// NCCL all-reduce, overlapped with the backward (GPUs only).
    Nccl,
    /// The host stand-in: rank-ordered sums through host memory (any device).
    Host,
}

/// Everything a run is told.
#[derive(Clone, Debug)]
pub struct Options {
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Text to train on (the built-in corpus when `None`).
    pub data: Option<PathBuf>,
    pub val_fraction: f64,
    /// The run directory: metrics, checkpoint, plots.
    pub out: PathBuf,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Start over in an `out` that already holds a run (its checkpoint,
    /// metrics, config and plots are removed first).
    pub overwrite: bool,
    pub device: DeviceChoice,
    /// Directory of compiled packs: needed on a GPU (default `target/packs`);
    /// without it the CPU runs the embedded kernel sources.
    pub packs: Option<PathBuf>,
    /// Stop (with a checkpoint) after this step, as an interrupt would.
    pub stop_after: Option<u64>,
    /// hc/mhc: recompute the streams in blocks of this many sites in the
    /// backward (0: the memory-optimal length); `None`: keep every site's input.
    pub recompute: Option<usize>,
    /// Compute the Amax gain of H_res every this many steps (hc, mhc).
    pub amax_every: u64,
    /// Print a line every this many steps when there is no progress bar.
    pub log_every: u64,
    /// Time every kernel and GEMM of this many steps (see [`ProfileWindow`]).
    pub profile: Option<u64>,
    pub progress: bool,
    /// Data-parallel ranks (threads; one GPU each on a GPU), each taking
    /// `train.batch / ranks` sequences of every batch.
    pub ranks: usize,
    pub collective: CollectiveChoice,
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Finished,
    /// Interrupted (Ctrl-C) or `stop_after`: a checkpoint was written.
    Paused,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub stop: Stop,
    /// The pause came from the interrupt flag (Ctrl-C, SIGTERM), not from
    /// `stop_after`.
    pub interrupted: bool,
    pub first_step: u64,
    /// Steps `first_step..next_step` ran.
    pub next_step: u64,
    pub losses: Vec<f32>,
    pub last_val_loss: Option<f32>,
    pub tokens_per_s: f64,
}

/// Host copies of every parameter and moment, as checkpoint tensors.
fn snapshot(
    model: &mut Model,
    opt: &AdamW,
    step: u64,
    setup: &Setup,
    device: &Device,
) -> Result<Checkpoint> {
    let (model_cfg, train) = (&setup.opts.model, &setup.opts.train);
    let mut tensors = Vec::new();
    for (s, (m, v)) in model.slots().iter().zip(&opt.moments) {
        for (prefix, buf) in [("param.", &*s.value), ("adam_m.", m), ("adam_v.", v)] {
            tensors.push(Tensor {
                name: format!("{prefix}{}", s.name),
                shape: s.shape.clone(),
                data: device.download(buf)?,
            });
        }
    }
    Ok(Checkpoint {
        model: model_cfg.clone(),
        train: train.clone(),
        step,
        data: Some(setup.data_record.clone()),
        tensors,
    })
}

/// Load parameters and moments from `ck` into the model and optimiser.
fn restore(model: &mut Model, opt: &mut AdamW, ck: &Checkpoint, device: &Device) -> Result<()> {
    let mut used = HashSet::new();
    for (s, (m, v)) in model.slots().into_iter().zip(opt.moments.iter_mut()) {
        for (prefix, buf) in [("param.", s.value), ("adam_m.", m), ("adam_v.", v)] {
            let name = format!("{prefix}{}", s.name);
            let data = ck.get(&name, &s.shape)?;
            device.write(buf, &f32::to_bytes(data))?;
            used.insert(name);
        }
    }
    ck.check_used(&used)
}

/// What every rank of a run shares.
struct Setup {
    opts: Options,
    data: Dataset,
    /// What the checkpoint records of `data`.
    data_record: DataRecord,
    /// The checkpoint to continue from (`--resume`), already checked; dropped
    /// once every rank has restored from it.
    resume_from: RwLock<Option<Checkpoint>>,
    ck_path: PathBuf,
    interrupt: Arc<AtomicBool>,
}

/// Train as `opts` says; `interrupt` (set by a Ctrl-C handler) pauses the run
/// with a checkpoint at the next step boundary. With `opts.ranks` > 1 (or a
/// collective asked for) the run is data-parallel (see [`super::parallel`]).
pub fn train(opts: &Options, interrupt: Arc<AtomicBool>) -> Result<Summary> {
    let (mcfg, tcfg) = (&opts.model, &opts.train);
    mcfg.validate()?;
    tcfg.validate()?;
    check_options(opts)?;
    let plan = Plan::new(opts)?;
    let data = Dataset::load(opts.data.as_deref(), opts.val_fraction, mcfg.context)?;
    let data_record = DataRecord {
        source: data.source.clone(),
        sha256: data.sha256.clone(),
        val_fraction: opts.val_fraction,
    };
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create the run directory `{}`", opts.out.display()))?;
    let ck_path = checkpoint_path(&opts.out);
    let resume_from = if opts.resume {
        let ck = Checkpoint::load(&ck_path)?;
        ck.check_against(mcfg, tcfg, &data_record)?;
        if let Some(s) = opts.stop_after.filter(|&s| s <= ck.step) {
            bail!(
                "--stop-after {s} is not after the checkpoint's step {}: the run would never \
                 stop there",
                ck.step
            );
        }
        Some(ck)
    } else {
        let held: Vec<PathBuf> = run_files(&opts.out)
            .into_iter()
            .filter(|f| f.exists())
            .collect();
        if ck_path.exists() && !opts.overwrite {
            bail!(
                "`{}` already holds a checkpoint: pass --resume to continue that run, \
                 --overwrite to start over, or choose another --out",
                opts.out.display()
            );
        }
        if !held.is_empty() && !opts.overwrite {
            bail!(
                "`{}` already holds a run (`{}`) without a checkpoint: pass --overwrite to \
                 start over, or choose another --out",
                opts.out.display(),
                held[0].display()
            );
        }
        for f in &held {
            std::fs::remove_file(f)
                .with_context(|| format!("--overwrite: cannot remove `{}`", f.display()))?;
        }
        None
    };
    check_writable(&opts.out)?;
    let setup = Arc::new(Setup {
        opts: opts.clone(),
        data,
        data_record,
        resume_from: RwLock::new(resume_from),
        ck_path,
        interrupt,
    });
    if plan.reduction.is_none() {
        return run_rank(&setup, plan.open_device(0)?, None);
    }
    let body = move |rank: Rank| -> Result<Summary> {
        let device = plan.open_device(rank.rank)?;
        run_rank(&setup, device, Some(rank))
    };
    parallel::run_ranks(&plan, Arc::new(body))
}

/// What a run writes into its directory.
fn run_files(dir: &Path) -> Vec<PathBuf> {
    vec![
        checkpoint_path(dir),
        metrics_path(dir),
        dir.join("config.json"),
        dir.join("plot.png"),
        dir.join("plot.svg"),
    ]
}

/// Settings that are valid alone but not together, or name missing files.
fn check_options(opts: &Options) -> Result<()> {
    if let Some(dir) = &opts.packs {
        if !dir.is_dir() {
            bail!("--packs `{}` is not a directory", dir.display());
        }
    }
    match opts.stop_after {
        Some(0) => bail!("--stop-after must be at least 1 (the step after which to pause)"),
        Some(s) if s > opts.train.steps => {
            bail!("--stop-after {s} is past --steps {}", opts.train.steps)
        }
        _ => {}
    }
    if opts.recompute.is_some() && opts.model.residual == ResidualMode::Plain {
        bail!("--recompute applies to --residual hc and mhc only (plain keeps one stream)");
    }
    if opts.resume && opts.overwrite {
        bail!("--resume and --overwrite contradict each other: give one");
    }
    Ok(())
}

/// Fail early, naming the directory, when the run could not write its files.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(".mhc-train-write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .with_context(|| {
            format!(
                "the run directory `{}` is not writable (tried `{}`)",
                dir.display(),
                probe.display()
            )
        })
}

/// H_res at the sampled tokens of the global batch, gathered from the ranks
/// that hold them (each rank's `local` covers its own sampled tokens, in
/// order): a rank-ordered sum in which every value has one owner and zeros
/// elsewhere, so the values arrive unchanged.
fn gather_h_res(
    rank: &Rank,
    sample: &[usize],
    owned: std::ops::Range<usize>,
    local: &[Vec<Vec<f32>>],
    sites: usize,
    n: usize,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let (nn, per) = (n * n, sites * n * n);
    let mut flat = vec![0.0f64; sample.len() * per];
    let mut mine = local.iter();
    for (i, t) in sample.iter().enumerate() {
        if owned.contains(t) {
            let h = mine
                .next()
                .ok_or_else(|| anyhow!("H_res: fewer sampled tokens than expected"))?;
            for (s, m) in h.iter().enumerate() {
                for (j, &x) in m.iter().enumerate() {
                    flat[i * per + s * nn + j] = x as f64;
                }
            }
        }
    }
    let sum = rank.share(&flat)?;
    Ok((0..sample.len())
        .map(|i| {
            (0..sites)
                .map(|s| {
                    sum[i * per + s * nn..][..nn]
                        .iter()
                        .map(|&x| x as f32)
                        .collect()
                })
                .collect()
        })
        .collect())
}

/// One rank's run (the whole run when `par` is `None`): builds its kernels,
/// model and optimiser, trains on its share of every batch and, on rank 0,
/// writes metrics, checkpoints, logs and plots. The steps: [`RankRun::new`]
/// (setup), per step [`RankRun::interrupted`], [`RankRun::launch_step`],
/// [`RankRun::settle`] of the step before (its outcome, the evaluation when
/// due, metrics and log) and [`RankRun::checkpoint`] when due; then
/// [`RankRun::finish`].
fn run_rank(setup: &Setup, device: Device, par: Option<Rank>) -> Result<Summary> {
    let (opts, tcfg) = (&setup.opts, &setup.opts.train);
    let mut run = RankRun::new(setup, device, par)?;
    let start = Instant::now();
    let mut totals = Totals::default();
    let mut stop = Stop::Finished;
    let mut step = run.first_step;
    let mut profile = opts
        .profile
        .filter(|_| run.lead)
        .map(|n| ProfileWindow::new(run.first_step, n));
    if let Some(p) = &profile {
        let end = p.start + 2 * p.n;
        if end > tcfg.steps {
            run.log(format!(
                "--profile {}: the profile needs --steps {end} or more, the run has {}; no profile",
                p.n, tcfg.steps
            ));
        }
    }
    // The host queues step k + 1 before it reads step k's outcome, so the
    // device never waits for the host between steps; a step after which the
    // host needs the device's state (evaluation, checkpoint, the end, a
    // profile's last step) is completed at once.
    let mut pending: Option<LaunchedStep> = None;
    while step < tcfg.steps {
        if run.interrupted()? {
            stop = Stop::Paused;
            totals.interrupted = true;
            break;
        }
        if let Some(p) = profile.as_mut() {
            p.before(step, &run.ops);
        }
        let launched = run.launch_step(step)?;
        let profile_ends = profile.as_mut().is_some_and(|p| p.launched(step, &run.ops));
        if let Some(prev) = pending.take() {
            run.settle(prev, &mut totals, profile.as_mut())?;
        }
        step += 1;
        let checkpoint_due = tcfg.checkpoint_every > 0 && step % tcfg.checkpoint_every == 0;
        let stop_due = opts.stop_after == Some(step);
        if !(eval_due(step, tcfg) || checkpoint_due || stop_due || profile_ends) {
            pending = Some(launched);
            continue;
        }
        run.settle(launched, &mut totals, profile.as_mut())?;
        if stop_due {
            stop = Stop::Paused;
            break;
        }
        if checkpoint_due {
            run.checkpoint(step)?;
        }
    }
    if let Some(prev) = pending.take() {
        run.settle(prev, &mut totals, profile.as_mut())?;
    }
    run.finish(stop, step, start, totals)
}

/// `--profile N`: after two steps of warm-up (kernel loading, cuBLAS's
/// heuristics), N steps timed as they run, then N steps with every kernel
/// launch and GEMM timed between CUDA events (wall clock on the CPU) by
/// phase; the table (`mhc::profile::report`) gives each phase and the
/// costliest operations per step as shares of the unprofiled steps' median
/// step time, the rest being time the device waited for the host.
struct ProfileWindow {
    /// Unprofiled steps `start..start + n`, profiled ones after.
    start: u64,
    n: u64,
    /// The unprofiled steps' times (device time on a GPU).
    step_ms: Vec<f64>,
    profiler: Option<Arc<Profiler>>,
}

impl ProfileWindow {
    fn new(first_step: u64, n: u64) -> ProfileWindow {
        ProfileWindow {
            start: first_step + 2,
            n: n.max(1),
            step_ms: Vec::new(),
            profiler: None,
        }
    }

    /// Attach the profiler at the first profiled step.
    fn before(&mut self, step: u64, ops: &Ops) {
        if step == self.start + self.n {
            let p = Arc::new(Profiler::new());
            ops.kernels().set_profiler(Some(p.clone()));
            self.profiler = Some(p);
        }
    }

    /// After `step` was queued: detach the profiler from the last profiled
    /// step on, so that a step queued after it is not timed; true for that
    /// step (whose completion gives the table).
    fn launched(&mut self, step: u64, ops: &Ops) -> bool {
        let last = step + 1 == self.start + 2 * self.n;
        if last {
            ops.kernels().set_profiler(None);
        }
        last
    }

    /// Record an unprofiled step's time; after the last profiled step,
    /// return the table.
    fn after(&mut self, step: u64, step_ms: f64) -> Result<Option<String>> {
        if (self.start..self.start + self.n).contains(&step) {
            self.step_ms.push(step_ms);
        }
        if step + 1 != self.start + 2 * self.n {
            return Ok(None);
        }
        let Some(p) = self.profiler.take() else {
            return Ok(None);
        };
        let timings = p.take()?;
        self.step_ms.sort_by(f64::total_cmp);
        let median = self.step_ms[self.step_ms.len() / 2];
        Ok(Some(format!(
            "profile of steps {}..{} (device time per step; step time from steps {}..{}):\n{}",
            self.start + self.n,
            self.start + 2 * self.n,
            self.start,
            self.start + self.n,
            mhc::profile::report(&timings, self.n as usize, median, 25)
        )))
    }
}

/// What the loop of [`run_rank`] gathers for the [`Summary`].
#[derive(Default)]
struct Totals {
    interrupted: bool,
    losses: Vec<f32>,
    last_val: Option<f32>,
    peak_memory: Option<usize>,
}

/// A step queued on the device ([`RankRun::launch_step`]).
struct LaunchedStep {
    step: u64,
    /// Which of [`RankRun::stats_copies`] receives its loss and norm.
    copy: usize,
    /// Marks before its first and after its last work on the device.
    start: Mark,
    end: Mark,
    lr: f32,
    memory: Option<usize>,
    h_res: Option<Vec<Vec<Vec<f32>>>>,
}

/// Whether the validation loss is due after `done` steps.
fn eval_due(done: u64, tcfg: &TrainConfig) -> bool {
    done.is_multiple_of(tcfg.eval_every) || done == tcfg.steps
}

/// What one training step gave (from [`RankRun::complete_step`]).
struct StepOutcome {
    /// The global mean loss.
    loss: f32,
    /// Rank 0's gradient norm before clipping.
    grad_norm: f32,
    lr: f32,
    /// The step's time (device time on a GPU), in milliseconds.
    ms: f64,
    tokens_per_s: f64,
    memory: Option<usize>,
    amax: Option<AmaxGain>,
}

/// The tokens of the global batch whose H_res is read for the metrics.
struct Sampling {
    /// 64 tokens of the global batch.
    global: Vec<usize>,
    /// This rank's tokens of the global batch.
    owned: std::ops::Range<usize>,
    /// The sampled tokens in this rank's share, relative to its first token.
    local: Vec<usize>,
}

/// One rank's state between the steps of [`run_rank`].
struct RankRun<'s> {
    setup: &'s Setup,
    par: Option<Rank>,
    /// Rank 0: writes metrics, logs, checkpoints and plots.
    lead: bool,
    device: Arc<Device>,
    ops: Arc<Ops>,
    model: Model,
    opt: AdamW,
    /// Tokens of the global batch (of every rank).
    global_tokens: usize,
    sampling: Sampling,
    first_step: u64,
    metrics: Option<MetricsWriter>,
    bar: ProgressBar,
    /// Host memory for two steps' `[loss, squared gradient norm]`: one being
    /// read while the next step's is written.
    stats_copies: [HostCopy; 2],
    /// The memory plan's total, and the device memory in use before the run
    /// allocated anything (GPU), to set the measured peak beside the plan.
    plan_bytes: usize,
    memory_before: Option<usize>,
}

impl<'s> RankRun<'s> {
    /// Setup: kernels, ops, model and optimiser on `device` (restored from
    /// the checkpoint to resume from), the collective, and on rank 0 the
    /// run's config, metrics file, opening line and progress bar.
    fn new(setup: &'s Setup, device: Device, mut par: Option<Rank>) -> Result<RankRun<'s>> {
        let (opts, data) = (&setup.opts, &setup.data);
        let (mcfg, tcfg) = (&opts.model, &opts.train);
        let (rank, ranks) = par.as_ref().map_or((0, 1), |p| (p.rank, p.ranks));
        let lead = rank == 0;
        let device = Arc::new(device);
        // This rank's share of each step: sequences `rank·batch..(rank+1)·batch`.
        let batch = tcfg.batch / ranks;
        // Before the first allocation: a run that cannot fit stops here.
        let memory_before = device.memory_info().map(|(free, total)| total - free);
        // The allocator's high-water marks count from here: this run's buffers.
        device.memory_high_water(true);
        let plan = MemoryPlan::new(mcfg, batch, opts.recompute);
        plan.check(
            mcfg,
            batch,
            opts.recompute,
            match device.memory_info() {
                Some((free, _)) => Some(free),
                None => super::memory::host_available(),
            },
        )?;
        if lead {
            say!("{}", plan.summary());
        }
        let packs = match (&opts.packs, device.is_gpu()) {
            (Some(dir), _) => Some(dir.clone()),
            (None, true) => Some(PathBuf::from("target/packs")),
            (None, false) => None,
        };
        let kernels = KernelSet::open(device.clone(), packs.as_deref()).with_context(|| {
            let dir = packs.as_deref().unwrap_or(Path::new("(none)"));
            format!(
                "loading the kernels for {} from the packs in `{}` (build them with `bash scripts/packs`)",
                device.name(),
                dir.display()
            )
        })?;
        let kernels = Arc::new(kernels);
        let ops = Arc::new(Ops::new(kernels.clone())?);
        let tokens = batch * mcfg.context;
        let global_tokens = tcfg.batch * mcfg.context;
        let residual = new_residual(
            mcfg.residual,
            ops.clone(),
            kernels.clone(),
            &ResidualConfig {
                streams: mcfg.streams,
                width: mcfg.width,
                tokens,
                sites: 2 * mcfg.layers,
                recompute: opts.recompute,
                seed: tcfg.seed ^ 0x5eed,
                dynamic_lr_scale: tcfg.dynamic_lr_scale,
                projection_decay: tcfg.site_weight_decay,
            },
        )?;
        let mut model = Model::new(
            mcfg.clone(),
            device.clone(),
            ops.clone(),
            residual,
            batch,
            tcfg.seed,
        )?;
        let mut opt = {
            let mut slots = model.slots();
            AdamW::new(
                &device,
                &mut slots,
                device.is_gpu(),
                tcfg.beta1,
                tcfg.beta2,
                tcfg.eps,
                tcfg.weight_decay,
            )?
        };
        let first_step = match &*setup.resume_from.read().unwrap_or_else(|e| e.into_inner()) {
            Some(ck) => {
                restore(&mut model, &mut opt, ck, &device)?;
                ck.step
            }
            None => 0,
        };
        if let Some(p) = par.as_mut() {
            model.set_global_batch(tcfg.batch)?;
            // Also the point where every rank has restored its checkpoint.
            p.connect(&device)?;
        }
        if lead {
            setup
                .resume_from
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        }
        let parameters = model.parameter_count();
        let metrics = if lead {
            let config = opts.out.join("config.json");
            std::fs::write(
                &config,
                serde_json::to_string_pretty(&serde_json::json!({
                    "model": mcfg,
                    "train": tcfg,
                    "data": data.source,
                    "data_sha256": data.sha256,
                    "val_fraction": opts.val_fraction,
                    "ranks": ranks,
                }))?,
            )
            .with_context(|| format!("cannot write `{}`", config.display()))?;
            Some(MetricsWriter::open(
                &opts.out,
                opts.resume.then_some(first_step),
            )?)
        } else {
            None
        };
        if lead {
            let parallel = match par.as_mut() {
                Some(p) => format!(
                    " × {ranks} ranks ({} sequences each, {} all-reduce)",
                    batch,
                    if p.collective()?.is_nccl() {
                        "NCCL"
                    } else {
                        "host"
                    }
                ),
                None => String::new(),
            };
            // On a GPU: its compute capability and the PTX target loaded.
            let target = match (device.compute_capability()?, packs.as_deref()) {
                (Some((major, minor)), Some(dir)) => {
                    let pack = tile_runtime::Pack::load(&dir.join("mhc.tpack"))?;
                    let ptx = pack.ptx_target(&device)?.unwrap_or_else(|| "none".into());
                    format!(" (compute capability {major}.{minor}, PTX {ptx})")
                }
                _ => String::new(),
            };
            say!(
                "{} on {}{target}{parallel}: {} parameters, {} layers × width {}, {} residual{}, data {} ({} training bytes)",
                if first_step > 0 {
                    format!("resuming at step {first_step}")
                } else {
                    "training".into()
                },
                device.name(),
                parameters,
                mcfg.layers,
                mcfg.width,
                mcfg.residual.name(),
                if mcfg.residual == ResidualMode::Plain {
                    String::new()
                } else {
                    format!(" × {} streams", mcfg.streams)
                },
                data.source,
                data.train.len(),
            );
        }
        let bar = if lead && opts.progress {
            ProgressBar::new(tcfg.steps)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_position(first_step);
        let stats_copies = [device.host_copy(8)?, device.host_copy(8)?];
        Ok(RankRun {
            stats_copies,
            setup,
            par,
            lead,
            device,
            ops,
            model,
            opt,
            global_tokens,
            sampling: Sampling::new(global_tokens, rank * tokens..(rank + 1) * tokens),
            first_step,
            plan_bytes: plan.total(),
            memory_before,
            metrics,
            bar,
        })
    }

    /// Whether to pause before the next step: rank 0's reading of the
    /// interrupt flag decides for everyone.
    fn interrupted(&self) -> Result<bool> {
        let interrupted = self.setup.interrupt.load(Ordering::SeqCst);
        Ok(match &self.par {
            None => interrupted,
            Some(p) => p.share(&[if self.lead && interrupted { 1.0 } else { 0.0 }])?[0] > 0.0,
        })
    }

    /// This rank's tokens of a global batch's `all`.
    fn share(&self, all: &[i32]) -> Vec<i32> {
        all[self.sampling.owned.clone()].to_vec()
    }

    /// Queue one training step (`step` counts from 0) on the device and
    /// return without waiting for it: forward and backward on this rank's
    /// share of the batch, the gradient norm, the AdamW update (clipping
    /// and the skip of a non-finite step decided on the device) and a copy
    /// of the step's loss and norm to the host. The host waits only to read
    /// H_res when the Amax gain is due, and, data-parallel, to share the loss
    /// and norm. [`RankRun::complete_step`] reads the outcome.
    fn launch_step(&mut self, step: u64) -> Result<LaunchedStep> {
        let (opts, data) = (&self.setup.opts, &self.setup.data);
        let (mcfg, tcfg) = (&opts.model, &opts.train);
        let start = self.device.mark()?;
        let global = data.train_batch(tcfg.seed, step, tcfg.batch, mcfg.context);
        let (inputs, targets) = (self.share(&global.inputs), self.share(&global.targets));
        let want_amax = mcfg.residual != ResidualMode::Plain
            && (step.is_multiple_of(opts.amax_every) || step + 1 == tcfg.steps);
        let out = self.model.forward_backward(
            &inputs,
            &targets,
            want_amax.then_some(&self.sampling.local[..]),
            match self.par.as_mut() {
                Some(p) => Some(p.collective()?),
                None => None,
            },
        )?;
        self.ops.set_phase("optimiser");
        let mut stats = out.stats;
        self.opt
            .grad_sum_squares(&self.ops, &self.model.slots(), &mut stats)?;
        // Each rank's loss is its share of the global mean (its tokens' sum
        // over the global token count), and the gradients are now summed over
        // the ranks: the global mean loss and its gradient. Rank 0's gradient
        // norm is used everywhere, so every rank decides alike.
        if let Some(p) = &self.par {
            let local: Vec<f32> = self.device.download(&stats)?;
            let v = p.share(&[
                local[0] as f64,
                if self.lead { local[1] as f64 } else { 0.0 },
            ])?;
            let shared = f32::to_bytes(&[v[0] as f32, v[1] as f32]);
            self.device.write(&mut stats, &shared)?;
        }
        let lr = tcfg.lr_at(step);
        self.opt.update(
            &self.ops,
            &mut self.model.slots(),
            lr,
            &stats,
            tcfg.clip,
            step + 1,
        )?;
        let copy = (step % 2) as usize;
        self.device
            .copy_to_host(&stats, &mut self.stats_copies[copy])?;
        let end = self.device.mark()?;
        // H_res was read between this step's forward and backward.
        let h_res = match (out.h_res, &self.par) {
            (Some(local), Some(p)) => Some(gather_h_res(
                p,
                &self.sampling.global,
                self.sampling.owned.clone(),
                &local,
                2 * mcfg.layers,
                mcfg.streams,
            )?),
            (h, _) => h,
        };
        Ok(LaunchedStep {
            step,
            copy,
            start,
            end,
            lr,
            memory: out.memory,
            h_res,
        })
    }

    /// Wait for a step [`RankRun::launch_step`] queued and read what it gave;
    /// a non-finite loss or gradient norm (whose update the device skipped)
    /// stops the run.
    fn complete_step(&mut self, l: LaunchedStep) -> Result<StepOutcome> {
        let stats: Vec<f32> = self.stats_copies[l.copy].wait()?;
        let (loss, grad_norm) = (stats[0], stats[1].sqrt());
        let step = l.step;
        if !loss.is_finite() || !grad_norm.is_finite() {
            let ck_path = &self.setup.ck_path;
            let kept = if ck_path.exists() {
                format!("the last good checkpoint `{}` is kept", ck_path.display())
            } else {
                "no checkpoint was written yet".into()
            };
            self.bar.abandon();
            bail!(
                "step {step}: non-finite {} (loss {loss}, gradient norm {grad_norm}); stopping, {kept}",
                if loss.is_finite() { "gradient" } else { "loss" }
            );
        }
        // From the step's first mark to its last: on a GPU the device time
        // the step took, waiting for the host included.
        let ms = l.end.ms_since(&l.start)? as f64;
        let streams = self.setup.opts.model.streams;
        Ok(StepOutcome {
            loss,
            grad_norm,
            lr: l.lr,
            ms,
            tokens_per_s: self.global_tokens as f64 / (ms / 1e3).max(1e-9),
            memory: l.memory,
            amax: l.h_res.map(|h| amax_gain(&h, streams)),
        })
    }

    /// Complete a launched step and record it: totals, the evaluation when
    /// due (only when no later step was launched, which the loop ensures),
    /// the profile's timings, metrics and log.
    fn settle(
        &mut self,
        l: LaunchedStep,
        totals: &mut Totals,
        profile: Option<&mut ProfileWindow>,
    ) -> Result<()> {
        let (opts, tcfg) = (&self.setup.opts, &self.setup.opts.train);
        let step = l.step;
        let out = self.complete_step(l)?;
        if let Some(p) = profile {
            if let Some(table) = p.after(step, out.ms)? {
                let path = opts.out.join("profile.md");
                tile_ir::pack::write_atomic(&path, table.as_bytes())
                    .with_context(|| format!("cannot write `{}`", path.display()))?;
                self.log(table);
            }
        }
        totals.peak_memory = totals.peak_memory.max(out.memory);
        totals.losses.push(out.loss);
        let done = step + 1;
        let val_loss = if eval_due(done, tcfg) {
            let v = self.evaluate()?;
            totals.last_val = Some(v);
            Some(v)
        } else {
            None
        };
        self.report(done, out, val_loss)
    }

    /// The validation loss: the mean over `eval_batches` fixed batches (each
    /// rank its share, summed over the ranks).
    fn evaluate(&mut self) -> Result<f32> {
        let (opts, data) = (&self.setup.opts, &self.setup.data);
        let (mcfg, tcfg) = (&opts.model, &opts.train);
        let mut total = 0.0f64;
        for i in 0..tcfg.eval_batches {
            let b = data.val_batch(tcfg.seed, i, tcfg.batch, mcfg.context);
            let (inputs, targets) = (self.share(&b.inputs), self.share(&b.targets));
            total += self.model.loss(&inputs, &targets)? as f64;
        }
        if let Some(p) = &self.par {
            total = p.share(&[total])?[0];
        }
        Ok((total / tcfg.eval_batches as f64) as f32)
    }

    /// Metrics: the step's record (rank 0), the progress bar and, on the
    /// first, every `log_every`-th, the last and evaluation steps, a log line.
    /// `step` is the number of steps done.
    fn report(&mut self, step: u64, out: StepOutcome, val_loss: Option<f32>) -> Result<()> {
        let opts = &self.setup.opts;
        let StepOutcome {
            loss,
            grad_norm,
            lr,
            ms: _,
            tokens_per_s,
            memory,
            amax,
        } = out;
        let amax_note = amax
            .as_ref()
            .map(|a| {
                format!(
                    ", Amax {:.3}/{:.3}",
                    a.composite_forward, a.composite_backward
                )
            })
            .unwrap_or_default();
        if let Some(m) = self.metrics.as_mut() {
            m.write(&Record {
                step: step - 1,
                loss,
                val_loss,
                grad_norm,
                lr,
                tokens_per_s,
                memory_gb: memory.map(|b| b as f64 / 1e9),
                amax,
            })?;
        }
        self.bar.set_position(step);
        self.bar
            .set_message(format!("loss {loss:.4}, {tokens_per_s:.0} tok/s"));
        if step == self.first_step + 1
            || step.is_multiple_of(opts.log_every)
            || step == opts.train.steps
            || val_loss.is_some()
        {
            let val = val_loss
                .map(|v| format!(", val {v:.4}"))
                .unwrap_or_default();
            self.log(format!(
                "step {:>5}: loss {loss:.4}{val}, grad norm {grad_norm:.3}, lr {lr:.2e}, {tokens_per_s:.0} tok/s{amax_note}",
                step - 1
            ));
        }
        Ok(())
    }

    /// A line on rank 0's stderr (above the progress bar when there is one).
    fn log(&self, line: String) {
        match (self.lead, self.bar.is_hidden()) {
            (false, _) => {}
            (true, true) => say!("{line}"),
            (true, false) => self.bar.println(line),
        }
    }

    /// Rank 0 saves parameters and moments after `step` steps (every rank
    /// holds the same).
    fn checkpoint(&mut self, step: u64) -> Result<()> {
        if !self.lead {
            return Ok(());
        }
        snapshot(&mut self.model, &self.opt, step, self.setup, &self.device)?
            .save(&self.setup.ck_path)
    }

    /// After the loop (`step` steps done): close the collective and, on rank
    /// 0, the last checkpoint, the closing line and the plots.
    fn finish(mut self, stop: Stop, step: u64, start: Instant, totals: Totals) -> Result<Summary> {
        // Every rank is past its last update before the collective closes; the
        // parameters are the same on every rank, so rank 0's are saved.
        if let Some(p) = self.par.as_mut() {
            p.close()?;
        }
        let Totals {
            interrupted,
            losses,
            last_val,
            peak_memory,
        } = totals;
        let first_step = self.first_step;
        if !self.lead {
            return Ok(Summary {
                stop,
                interrupted,
                first_step,
                next_step: step,
                losses,
                last_val_loss: last_val,
                tokens_per_s: 0.0,
            });
        }
        self.checkpoint(step)?;
        self.bar.finish_and_clear();
        let (opts, ck_path) = (&self.setup.opts, &self.setup.ck_path);
        let elapsed = start.elapsed().as_secs_f64();
        let tokens_per_s =
            (step - first_step) as f64 * self.global_tokens as f64 / elapsed.max(1e-9);
        match stop {
            Stop::Paused => say!(
                "paused at step {step}: checkpoint `{}` (continue with the same flags and --resume)",
                ck_path.display()
            ),
            Stop::Finished => say!(
                "finished {step} steps ({tokens_per_s:.0} tokens/s on average{}{}), checkpoint `{}`",
                peak_memory
                    .map(|b| format!(
                        ", at most {:.2} GB of device memory in use: {:.2} GB by this run against a plan of {:.2} GB",
                        b as f64 / 1e9,
                        b.saturating_sub(self.memory_before.unwrap_or(0)) as f64 / 1e9,
                        self.plan_bytes as f64 / 1e9
                    ))
                    .unwrap_or_default(),
                // What the plan predicts is the buffers alive at once; the
                // allocator may hold more for reuse.
                self.device
                    .memory_high_water(false)
                    .map(|(used, reserved)| format!(
                        "; buffers alive at most {:.2} GB, the allocator held at most {:.2} GB",
                        used as f64 / 1e9,
                        reserved as f64 / 1e9
                    ))
                    .unwrap_or_default(),
                ck_path.display()
            ),
        }
        if let Ok(run) = Run::load(&opts.out) {
            plot_runs(&[run], &opts.out, "plot")?;
        }
        Ok(Summary {
            stop,
            interrupted,
            first_step,
            next_step: step,
            losses,
            last_val_loss: last_val,
            tokens_per_s,
        })
    }
}

impl Sampling {
    /// H_res is read at 64 tokens of the global batch; each rank reads those
    /// in its share `owned` (all of them without data parallelism).
    fn new(global_tokens: usize, owned: std::ops::Range<usize>) -> Sampling {
        let global: Vec<usize> = (0..global_tokens)
            .step_by((global_tokens / 64).max(1))
            .collect();
        let local = global
            .iter()
            .filter(|t| owned.contains(t))
            .map(|t| t - owned.start)
            .collect();
        Sampling {
            global,
            owned,
            local,
        }
    }
}

/// `mhc-train plot`: one figure of the runs in `dirs`, written into `out`.
pub fn plot(dirs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    if dirs.is_empty() {
        bail!("give at least one run directory");
    }
    let mut runs = dirs
        .iter()
        .map(|d| Run::load(d))
        .collect::<Result<Vec<_>>>()?;
    // Runs of the same name (`runs/a/plain`, `runs/b/plain`) are labelled by
    // their whole path.
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for (r, d) in runs.iter_mut().zip(dirs) {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            r.label = d.display().to_string();
        }
    }
    plot_runs(&runs, out, "compare")
}
