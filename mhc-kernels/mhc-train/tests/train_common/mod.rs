//! The tiny model and run options shared by the trainer tests (CPU
//! interpreter by default; tests override fields as they need).
#![allow(dead_code)]

use mhc::kernels::KernelSet;
use mhc_train::ops::Ops;
use mhc_train::train::checkpoint::Checkpoint;
use mhc_train::train::config::{ModelConfig, ResidualMode, TrainConfig};
use mhc_train::train::model::Model;
use mhc_train::train::residual::{new_residual, ResidualConfig};
use mhc_train::train::run::{train, CollectiveChoice, DeviceChoice, Options, Summary};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tile_runtime::Device;

/// A fresh, empty directory under the system temp dir for run `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mhc-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// One layer, width 32, context 16, batch 4: a few seconds per step on the
/// interpreter, enough for the loss to fall within tens of steps.
pub fn tiny(residual: ResidualMode, steps: u64, out: PathBuf) -> Options {
    Options {
        model: ModelConfig {
            vocab: 256,
            layers: 1,
            width: 32,
            heads: 2,
            context: 16,
            mlp_ratio: 2,
            residual,
            streams: if residual == ResidualMode::Plain {
                1
            } else {
                4
            },
            precision: Default::default(),
            attention_backward: Default::default(),
            mlp_gemm: Default::default(),
        },
        train: TrainConfig {
            steps,
            batch: 4,
            lr: 1e-2,
            min_lr: 1e-3,
            warmup: 2,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip: 1.0,
            seed: 7,
            eval_every: steps,
            eval_batches: 1,
            checkpoint_every: 0,
            dynamic_lr_scale: mhc_train::train::config::DYNAMIC_LR_SCALE,
            site_weight_decay: true,
        },
        data: None,
        val_fraction: 0.1,
        out,
        resume: false,
        overwrite: false,
        device: DeviceChoice::Cpu,
        packs: None,
        stop_after: None,
        recompute: None,
        amax_every: 1,
        log_every: 1000,
        profile: None,
        progress: false,
        ranks: 1,
        collective: CollectiveChoice::Auto,
    }
}

pub fn no_interrupt() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Whether two runs are the same bit for bit: every loss, the last
/// validation loss and every tensor of the final checkpoint.
pub fn same_bits(a: &Summary, ca: &Checkpoint, b: &Summary, cb: &Checkpoint) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    bits(&a.losses) == bits(&b.losses)
        && a.last_val_loss.map(f32::to_bits) == b.last_val_loss.map(f32::to_bits)
        && ca.tensors.len() == cb.tensors.len()
        && ca
            .tensors
            .iter()
            .zip(&cb.tensors)
            .all(|(x, y)| x.name == y.name && bits(&x.data) == bits(&y.data))
}

/// Trains `opts` (checkpointing every step) with a learning rate that
/// overflows the weights within a step or two, and checks that the run
/// stops at the first non-finite loss, naming that step, with the last
/// good, finite checkpoint kept.
pub fn assert_stops_at_the_first_non_finite_loss(mut opts: Options) {
    (
        opts.train.lr,
        opts.train.min_lr,
        opts.train.warmup,
        opts.train.clip,
    ) = (1e30, 1e30, 0, 0.0);
    opts.train.checkpoint_every = 1;
    let err = train(&opts, no_interrupt()).unwrap_err().to_string();
    assert!(
        err.contains("non-finite") && err.contains("is kept"),
        "{err}"
    );
    let ck = Checkpoint::load(&opts.out.join("checkpoint.safetensors")).unwrap();
    assert!(
        ck.step >= 1 && err.starts_with(&format!("step {}:", ck.step)),
        "{err} (checkpoint at {})",
        ck.step
    );
    assert!(ck
        .tensors
        .iter()
        .all(|t| t.data.iter().all(|x| x.is_finite())));
    std::fs::remove_dir_all(&opts.out).unwrap();
}

/// A model of `cfg` for `batch` sequences on a fresh CPU device (embedded
/// kernel sources): its residual (`cfg.residual`, `2 · layers` sites,
/// `recompute`) seeded `residual_seed`, its parameters seeded `seed`.
pub fn cpu_model(
    cfg: &ModelConfig,
    batch: usize,
    recompute: Option<usize>,
    residual_seed: u64,
    seed: u64,
) -> (Arc<Device>, Model) {
    let device = Arc::new(Device::cpu());
    let kernels = Arc::new(KernelSet::open(device.clone(), None).unwrap());
    let ops = Arc::new(Ops::new(kernels.clone()).unwrap());
    let res = new_residual(
        cfg.residual,
        ops.clone(),
        kernels,
        &ResidualConfig {
            streams: cfg.streams,
            width: cfg.width,
            tokens: batch * cfg.context,
            sites: 2 * cfg.layers,
            recompute,
            seed: residual_seed,
            dynamic_lr_scale: 1.0,
            projection_decay: true,
        },
    )
    .unwrap();
    let model = Model::new(cfg.clone(), device.clone(), ops, res, batch, seed).unwrap();
    (device, model)
}
