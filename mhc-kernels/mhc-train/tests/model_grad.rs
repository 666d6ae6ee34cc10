//! The model's backward against finite differences, on the CPU interpreter,
//! for every residual mode: along a random direction d over every parameter
//! at once, (L(θ + εd) − L(θ − εd)) / 2ε against Σ ∇L·d from one
//! forward_backward, for four directions. Each checks every gradient path
//! together (a lost residual sum moves it by about the slope's spread over
//! random directions, ten times the tolerance); with the GEMM operands in
//! bf16 the loss is only smooth to bf16 rounding, so the steps are large
//! (up to 1/4 of each parameter's scale) and the slope is a least-squares
//! fit over eight of them. The model at width 128 of 2 heads runs the fused
//! attention kernels (head dimension 64, token-major q, k, v), with both
//! backwards.

mod train_common;

use mhc_train::train::config::{AttentionBackward, ModelConfig, ResidualMode};
use mhc_train::train::data::Dataset;
use mhc_train::train::model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use tile_runtime::Device;
use train_common::cpu_model;

fn model(cfg: &ModelConfig, batch: usize) -> (Arc<Device>, Model) {
    cpu_model(cfg, batch, None, 11, 5)
}

/// Two layers of `width` in 2 heads (the fused attention at width 128).
fn config(
    residual: ResidualMode,
    width: usize,
    attention_backward: AttentionBackward,
) -> ModelConfig {
    ModelConfig {
        vocab: 256,
        layers: 2,
        width,
        heads: 2,
        context: 8,
        mlp_ratio: 4,
        residual,
        streams: 4,
        precision: Default::default(),
        attention_backward,
        mlp_gemm: Default::default(),
    }
}

fn directional_check(residual: ResidualMode) {
    directional_check_of(&config(residual, 32, Default::default()), 1.0);
}

/// The check on `cfg`, with the QKV projections scaled by `qkv_gain` first
/// (at initialisation the scores are nearly uniform, so the gradients that
/// pass through the softmax — dQ, dK — are too small to tell apart).
fn directional_check_of(cfg: &ModelConfig, qkv_gain: f32) {
    let residual = cfg.residual;
    let batch = 2;
    let (device, mut m) = model(cfg, batch);
    for s in m.slots().into_iter().filter(|s| s.name.ends_with(".wqkv")) {
        let v: Vec<f32> = device.download(s.value).unwrap();
        let scaled: Vec<u8> = v
            .iter()
            .flat_map(|x| (x * qkv_gain).to_le_bytes())
            .collect();
        device.write(s.value, &scaled).unwrap();
    }
    let context = 8;
    let data = Dataset::load(None, 0.1, context).unwrap();
    let b = data.train_batch(3, 0, batch, context);
    m.forward_backward(&b.inputs, &b.targets, None, None)
        .unwrap();
    let seed = tile_testkit::seed(&format!("model_grad {residual:?} width {}", cfg.width));
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut theta, mut grads, mut scales, mut names) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for s in m.slots() {
        let v: Vec<f32> = device.download(s.value).unwrap();
        let rms = (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        // Each parameter moves by its own scale (gains 1, matrices 0.02).
        scales.push(if rms > 0.0 { rms } else { 0.02 });
        grads.push(device.download::<f32>(s.grad).unwrap());
        names.push(s.name.clone());
        theta.push(v);
    }
    // Four random directions over every parameter at once, then each
    // block's matrices alone along their own gradient: there the slope
    // is |g|·|d|, and a matrix's gradient wrong by a fraction moves it by
    // that fraction (the random directions see one matrix's error only
    // against the spread of all of them).
    let mut checks: Vec<(String, Vec<Vec<f64>>)> = (0..4)
        .map(|k| {
            let dirs = theta
                .iter()
                .zip(&scales)
                .map(|(v, s)| {
                    (0..v.len())
                        .map(|_| rng.random_range(-1.0..1.0) * s)
                        .collect()
                })
                .collect();
            (format!("random direction {k}"), dirs)
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        if !(name.starts_with("block") && name.contains(".w")) {
            continue;
        }
        let norm = grads[i]
            .iter()
            .map(|g| (*g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let k = scales[i] * (grads[i].len() as f64).sqrt() / norm.max(1e-30);
        let dirs = theta
            .iter()
            .enumerate()
            .map(|(j, v)| match j == i {
                true => grads[i].iter().map(|g| *g as f64 * k).collect(),
                false => vec![0.0; v.len()],
            })
            .collect();
        checks.push((format!("{name} along its gradient"), dirs));
    }
    let eps: f64 = 1.0 / 16.0;
    for (what, dirs) in checks {
        let random = what.starts_with("random");
        // The slope Σ g·d, and its spread over random d, sqrt(Σ (g·d)²): a
        // gradient wrong by e is off by ~|e|/|g| of the spread.
        let (mut slope, mut spread) = (0.0f64, 0.0f64);
        for (g, d) in grads.iter().zip(&dirs) {
            for (g, d) in g.iter().zip(d) {
                slope += *g as f64 * d;
                spread += (*g as f64 * d).powi(2);
            }
        }
        let spread = spread.sqrt();
        let mut loss_at = |t: f64| -> f64 {
            for ((s, v), d) in m.slots().into_iter().zip(&theta).zip(&dirs) {
                let moved: Vec<u8> = v
                    .iter()
                    .zip(d)
                    .flat_map(|(v, d)| ((*v as f64 + t * d) as f32).to_le_bytes())
                    .collect();
                device.write(s.value, &moved).unwrap();
            }
            m.loss(&b.inputs, &b.targets).unwrap() as f64
        };
        // Along a gradient the slope can be large (scores of σ ≈ 1 move
        // fast): the step then shrinks so the loss moves by about 0.05,
        // keeping the third-order term small and the bf16 noise (~1e-3 of
        // the loss) within 2% of the slope.
        let numeric = if random {
            // The loss is rough at bf16 rounding (~1e-3 an evaluation: a
            // central difference over 2ε = 1/8 of every scale is off by ~0.08
            // of the spread, which with the curvature made one seed in
            // about 40 fail), so the slope is the least-squares b of
            // (L(t) − L(−t)) / 2 = b·t + c·t³ at t = ε/2, ε, …, 4ε: the cubic
            // term takes the curvature, eight points average the roughness
            // (max error 0.044 of the spread against 0.125, 42 directions
            // of seeds 1–10 and 15 at QKV ×3).
            let (mut s2, mut s4, mut s6, mut y1, mut y3) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for k in 1..=8 {
                let t = k as f64 * eps / 2.0;
                let y = (loss_at(t) - loss_at(-t)) / 2.0;
                (s2, s4, s6) = (s2 + t * t, s4 + t.powi(4), s6 + t.powi(6));
                (y1, y3) = (y1 + y * t, y3 + y * t.powi(3));
            }
            (y1 * s6 - y3 * s4) / (s2 * s6 - s4 * s4)
        } else {
            let eps = eps.min(0.05 / slope.abs().max(1e-30));
            (loss_at(eps) - loss_at(-eps)) / (2.0 * eps)
        };
        // A lost residual sum is off by about the whole spread, ten times
        // the random directions' tolerance; along a matrix's own gradient
        // the loss is smooth to ~2⁻⁹ relative per rounding and its
        // third-order term is ~ε² of the slope: 5% of the slope is twelve
        // times that ε².
        let tol = if random {
            0.1 * spread + 2e-3
        } else {
            0.05 * slope.abs() + 2e-3
        };
        assert!(
            (numeric - slope).abs() <= tol,
            "{residual:?} (seed {seed}), {what}: directional derivative {numeric:.6} \
             by finite differences, {slope:.6} from the backward (spread {spread:.6})"
        );
    }
}

#[test]
fn plain_backward_matches_finite_differences() {
    directional_check(ResidualMode::Plain);
}

#[test]
fn hc_backward_matches_finite_differences() {
    directional_check(ResidualMode::Hc);
}

#[test]
fn mhc_backward_matches_finite_differences() {
    directional_check(ResidualMode::Mhc);
}

/// The fused attention, both backwards, with scores far from uniform (QKV
/// ×3: the queries' and keys' σ ≈ 0.02·√128·3 ≈ 0.7), where a dQ lost or
/// written to the wrong columns moves the slope past the tolerance (×5
/// would show a smaller error, but the loss is then too curved for the
/// random directions' step).
#[test]
fn fused_attention_backward_matches_finite_differences() {
    for backward in [AttentionBackward::Deterministic, AttentionBackward::Fused] {
        let cfg = config(ResidualMode::Plain, 128, backward);
        assert!(cfg.fused_attention());
        directional_check_of(&cfg, 3.0);
    }
}
