//! The model and optimiser settings of a run. Both are stored in every
//! checkpoint; resuming checks the model settings match exactly.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How each block's sublayers are connected to the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResidualMode {
    /// One stream, `x + F(x)`.
    Plain,
    /// Unconstrained hyper-connections (n streams, tanh-gated mixing).
    Hc,
    /// Manifold-constrained hyper-connections (doubly stochastic H_res).
    Mhc,
}

impl ResidualMode {
    pub fn name(self) -> &'static str {
        match self {
            ResidualMode::Plain => "plain",
            ResidualMode::Hc => "hc",
            ResidualMode::Mhc => "mhc",
        }
    }
}

/// What the model's GEMMs take and its activations are stored in; the
/// parameters, gradients and AdamW moments are f32 either way, and so are
/// norm statistics, softmax and loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 GEMM operands and saved activations (f32 accumulation); the
    /// fused attention where the head dimension has a kernel.
    #[default]
    Bf16,
    /// f32 throughout (TF32 GEMMs on a GPU); attention through the
    /// materialised scores. The reference the bf16 loss curves are held to.
    F32,
}

/// How the fused attention's backward gets dQ (`--attention-backward`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttentionBackward {
    /// dK/dV and dQ in two kernels, every output element with one writer:
    /// gradients are bit-reproducible run to run.
    #[default]
    Deterministic,
    /// One pass over the keys (FlashAttention-2's): dQ added atomically
    /// into an f32 buffer, five dots per block pair instead of seven. The
    /// order of those adds varies, so the last bits of dQ do too.
    Fused,
}

/// How a bf16 run on a GPU computes the MLP's GEMMs that meet GELU
/// (`--mlp-gemm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MlpGemm {
    /// cuBLAS GEMMs, and GELU's forward and backward as passes of their own.
    /// The default: faster today (H100, 86M at batch 8, session 30: 543k
    /// tokens/s against the fused kernels' 416k).
    #[default]
    Cublas,
    /// Our `dot` kernels with GELU in the epilogue (`Ops::linear_gelu`,
    /// `Ops::linear_gelu_bwd`): GELU's passes over the GEMMs' outputs are
    /// gone, but at the trainer's shapes the GEMMs themselves run at 57%
    /// (forward) and 21% (backward, W read transposed) of cuBLAS.
    Fused,
}

/// The shape of the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Bytes: 256.
    pub vocab: usize,
    pub layers: usize,
    /// Model width C.
    pub width: usize,
    pub heads: usize,
    /// Sequence length (also the size of the learned position table).
    pub context: usize,
    /// MLP hidden width as a multiple of `width`.
    pub mlp_ratio: usize,
    pub residual: ResidualMode,
    /// Residual streams n (1 for `plain`).
    pub streams: usize,
    /// Checkpoints from before the setting existed are bf16 runs.
    #[serde(default)]
    pub precision: Precision,
    /// Only read where attention is fused (`fused_attention`).
    #[serde(default)]
    pub attention_backward: AttentionBackward,
    /// Only read in bf16 runs on a GPU (the CPU's GEMMs are matrixmultiply's).
    #[serde(default)]
    pub mlp_gemm: MlpGemm,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        if self.layers == 0 || self.width == 0 || self.heads == 0 || self.context < 2 {
            bail!("--layers, --width and --heads must be positive and --context at least 2");
        }
        if self.mlp_ratio == 0 {
            bail!("--mlp-ratio must be positive (the MLP's hidden width is --mlp-ratio × --width)");
        }
        if !self.width.is_multiple_of(self.heads) {
            bail!(
                "--width ({}) must be a multiple of --heads ({})",
                self.width,
                self.heads
            );
        }
        // The pack has hyper-connection kernels for these stream counts.
        if self.residual != ResidualMode::Plain && ![2, 4, 8].contains(&self.streams) {
            bail!("--streams must be 2, 4 or 8, got {}", self.streams);
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    pub fn hidden(&self) -> usize {
        self.width * self.mlp_ratio
    }

    /// Whether attention runs through the fused kernels (bf16 heads, only
    /// the log-sum-exp saved) rather than materialised scores.
    pub fn fused_attention(&self) -> bool {
        self.precision == Precision::Bf16 && crate::ops::Ops::has_flash_attention(self.head_dim())
    }
}

/// Optimiser, schedule, data and logging settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: u64,
    /// Sequences per step.
    pub batch: usize,
    /// Peak learning rate, reached after `warmup` steps.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    pub warmup: u64,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Clip gradients to this global L2 norm (0: no clipping).
    pub clip: f32,
    pub seed: u64,
    /// Evaluate the validation loss every this many steps (and at the end).
    pub eval_every: u64,
    pub eval_batches: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// hc/mhc: the learning rate of each site's dynamic coefficients (the
    /// projection φ and the gates α) as a multiple of the schedule's. At 1,
    /// Adam moves α (initialised at 0.01) by about the learning rate per step,
    /// so the token-dependent part of H_pre/H_post/H_res grows a hundredfold
    /// within a few hundred steps and mhc trains worse than plain
    /// (docs/TRAINER.md, "mHC against plain"); 0.1 trains better than plain.
    /// Runs recorded before this setting existed trained at 1.
    #[serde(default = "one")]
    pub dynamic_lr_scale: f32,
    /// hc/mhc: whether AdamW decays each site's φ (as Megatron does; α and the
    /// biases never decay). Older runs: true.
    #[serde(default = "yes")]
    pub site_weight_decay: bool,
}

fn one() -> f32 {
    1.0
}

fn yes() -> bool {
    true
}

/// The default of [`TrainConfig::dynamic_lr_scale`] for new runs.
pub const DYNAMIC_LR_SCALE: f32 = 0.1;

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch == 0 {
            bail!("--steps and --batch must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            bail!("--lr must be positive and --min-lr between 0 and --lr");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            bail!("--beta1 and --beta2 must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            bail!(
                "--weight-decay must be a finite number >= 0, got {}",
                self.weight_decay
            );
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            bail!("--adam-eps must be a finite number > 0, got {}", self.eps);
        }
        if !(self.clip >= 0.0 && self.clip.is_finite()) {
            bail!(
                "--clip must be a finite number >= 0 (0: no clipping), got {}",
                self.clip
            );
        }
        if !(self.dynamic_lr_scale >= 0.0 && self.dynamic_lr_scale.is_finite()) {
            bail!(
                "--dynamic-lr-scale must be a finite number >= 0, got {}",
                self.dynamic_lr_scale
            );
        }
        if self.eval_every == 0 || self.eval_batches == 0 {
            bail!("--eval-every and --eval-batches must be positive");
        }
        Ok(())
    }

    /// Linear warm-up to `lr`, then cosine decay to `min_lr` at `steps`.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.lr * (step + 1) as f32 / self.warmup as f32;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        (self.min_lr as f64 + (self.lr - self.min_lr) as f64 * cos) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TrainConfig {
        TrainConfig {
            steps: 100,
            batch: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup: 10,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip: 1.0,
            seed: 0,
            eval_every: 10,
            eval_batches: 1,
            checkpoint_every: 0,
            dynamic_lr_scale: DYNAMIC_LR_SCALE,
            site_weight_decay: true,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = cfg();
        assert!(c.lr_at(0) < c.lr_at(5));
        assert!((c.lr_at(9) - c.lr).abs() < 1e-9);
        assert!(c.lr_at(50) < c.lr && c.lr_at(50) > c.min_lr);
        assert!((c.lr_at(100) - c.min_lr).abs() < 1e-9);
    }
}
