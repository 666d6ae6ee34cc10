//! `--precision bf16` (the default: bf16 GEMM operands and saved
//! activations) against `--precision f32` on the CPU: the loss curves of the
//! tiny model agree within the run-to-run noise of f32 itself.

mod train_common;

use mhc_train::train::config::{Precision, ResidualMode};
use mhc_train::train::run::train;
use train_common::*;

/// The mean loss over the last `k` of `steps` steps of the tiny model.
fn tail_loss(residual: ResidualMode, precision: Precision, seed: u64, steps: u64, k: usize) -> f64 {
    let out = temp_dir(&format!("precision-{residual:?}-{precision:?}-{seed}"));
    let mut opts = tiny(residual, steps, out.clone());
    opts.model.precision = precision;
    opts.train.seed = seed;
    let s = train(&opts, no_interrupt()).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let tail = &s.losses[s.losses.len() - k..];
    tail.iter().map(|&l| l as f64).sum::<f64>() / k as f64
}

fn agrees(residual: ResidualMode) {
    let (steps, k) = (40, 10);
    let bf16 = tail_loss(residual, Precision::Bf16, 7, steps, k);
    let f32a = tail_loss(residual, Precision::F32, 7, steps, k);
    let f32b = tail_loss(residual, Precision::F32, 8, steps, k);
    // Run-to-run noise: two f32 runs whose seeds (initial weights, batches)
    // differ. bf16 rounding is a smaller perturbation than a new seed, so the
    // bf16 run must stay as close to its f32 twin as the twins' noise (with
    // a floor of 1% of the loss, for seeds that happen to land close).
    let noise = (f32a - f32b).abs().max(0.01 * f32a);
    eprintln!("{residual:?}: last {k} of {steps} steps: bf16 {bf16:.4}, f32 {f32a:.4}, f32 (seed 8) {f32b:.4}");
    assert!(
        (bf16 - f32a).abs() <= noise,
        "{residual:?}: bf16 tail loss {bf16:.4} against f32's {f32a:.4} (noise {noise:.4})"
    );
    assert!(bf16 < 5.0 && f32a < 5.0, "the loss fell from ln 256 = 5.55");
}

#[test]
fn bf16_loss_curve_agrees_with_f32_plain() {
    agrees(ResidualMode::Plain);
}

#[test]
fn bf16_loss_curve_agrees_with_f32_mhc() {
    agrees(ResidualMode::Mhc);
}
