//! The `mhc-train` reference trainer: a byte-level GPT whose blocks are
//! connected by a plain residual, hyper-connections (`hc`) or mHC, trained with
//! AdamW on the GPU or on the CPU interpreter. See docs/TRAINER.md.
//!
//! - [`config`]: model and optimiser settings, the learning-rate schedule.
//! - [`data`]: the synthetic corpus, text files, deterministic batches.
//! - [`metrics`]: the JSONL records and the Amax gain of H_res.
//! - [`checkpoint`]: atomic, validated safetensors checkpoints.
//! - [`plot`]: PNG/SVG plots of one or several runs.
//! - [`params`]: parameters as the optimiser and checkpoints see them.
//! - [`residual`]: the `plain`, `hc` and `mhc` residual modes behind one trait.
//! - [`model`]: the GPT, forward and backward.
//! - [`memory`]: the memory plan, checked before the first allocation.
//! - [`optim`]: AdamW and gradient clipping.
//! - [`run`]: the training loop and `mhc-train plot`.
//! - [`parallel`]: data-parallel runs, one thread per rank (GPU), gradients
//!   summed through NCCL or a host stand-in.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod plot;
pub mod residual;
pub mod run;
