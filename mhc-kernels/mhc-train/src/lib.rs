//! `mhc-train`: the reference trainer of a byte-level GPT with `plain`, `hc` or
//! `mhc` residuals (docs/TRAINER.md), on the GPU or the CPU interpreter.
//!
//! - [`ops`]: the model's operations (norms, attention softmax, GELU,
//!   cross-entropy, AdamW, GEMM) on a device, the `model` pack's kernels.
//! - [`train`]: model, residual modes, optimiser, data, checkpoints, metrics,
//!   plots, data-parallel ranks and the training loop.

pub mod ops;
pub mod train;
