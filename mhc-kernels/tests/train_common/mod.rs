//! The tiny model and run options shared by the trainer tests (CPU
//! interpreter by default; tests override fields as they need).
#![allow(dead_code)]

use mhc::train::config::{ModelConfig, ResidualMode, TrainConfig};
use mhc::train::run::{CollectiveChoice, DeviceChoice, Options};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
        },
        data: None,
        val_fraction: 0.1,
        out,
        resume: false,
        device: DeviceChoice::Cpu,
        packs: None,
        stop_after: None,
        recompute: None,
        amax_every: 1,
        log_every: 1000,
        progress: false,
        ranks: 1,
        collective: CollectiveChoice::Auto,
    }
}

pub fn no_interrupt() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
