//! The memory plan (`mhc_train::train::memory`) against what the model
//! really keeps: for every residual mode, both attention paths (head dim 64:
//! fused, bf16 heads; 48: materialised scores) and the recompute settings,
//! the plan's saved activations equal the bytes of the buffers the forward
//! keeps (`Step::saved_bytes`, counted from the buffers themselves) and its
//! parameter count the model's. Then the refusals: a plan larger than the
//! free memory stops with hints that fit, and a tensor past 2³¹ elements is
//! no reason to stop.

mod train_common;

use mhc_train::train::config::{ModelConfig, Precision, ResidualMode};
use mhc_train::train::data::Dataset;
use mhc_train::train::memory::MemoryPlan;
use train_common::cpu_model;

fn cfg(residual: ResidualMode, width: usize, heads: usize, streams: usize) -> ModelConfig {
    ModelConfig {
        vocab: 256,
        layers: 3,
        width,
        heads,
        context: 16,
        mlp_ratio: 4,
        residual,
        streams,
        precision: Default::default(),
        attention_backward: Default::default(),
        mlp_gemm: Default::default(),
    }
}

/// `--precision f32`.
fn f32(mut cfg: ModelConfig) -> ModelConfig {
    cfg.precision = Precision::F32;
    cfg
}

/// One forward + backward on the CPU: (saved bytes, parameter count).
fn measure(cfg: &ModelConfig, batch: usize, recompute: Option<usize>) -> (usize, usize) {
    let (_, mut model) = cpu_model(cfg, batch, recompute, 1, 7);
    let data = Dataset::load(None, 0.1, cfg.context).unwrap();
    let b = data.train_batch(3, 0, batch, cfg.context);
    let step = model
        .forward_backward(&b.inputs, &b.targets, None, None)
        .unwrap();
    (step.saved_bytes, model.parameter_count())
}

#[test]
fn the_plan_counts_what_the_model_keeps() {
    use ResidualMode::*;
    let cases = [
        (cfg(Plain, 128, 2, 1), None), // fused attention
        (cfg(Plain, 96, 2, 1), None),  // materialised scores
        (cfg(Hc, 128, 2, 2), None),
        (cfg(Hc, 96, 2, 4), Some(2)),
        (cfg(Mhc, 128, 2, 4), None),
        (cfg(Mhc, 128, 2, 4), Some(0)), // memory-optimal block length
        (cfg(Mhc, 96, 2, 2), Some(4)),  // a block length not dividing the 6 sites
        (f32(cfg(Plain, 128, 2, 1)), None), // f32: materialised scores, no bf16 copies
        (f32(cfg(Mhc, 128, 2, 4)), Some(0)),
    ];
    for (cfg, recompute) in cases {
        let batch = 3;
        let plan = MemoryPlan::new(&cfg, batch, recompute);
        let (saved, params) = measure(&cfg, batch, recompute);
        let what = format!(
            "{:?} {:?} width {} streams {} recompute {recompute:?}",
            cfg.residual, cfg.precision, cfg.width, cfg.streams
        );
        assert_eq!(
            plan.saved(),
            saved,
            "{what}: saved activations, plan vs model\n{}",
            plan.summary()
        );
        assert_eq!(plan.parameters, params, "{what}: parameters");
        assert!(
            plan.total() > plan.saved() + 16 * params,
            "{what}: the total adds a working set"
        );
    }
}

/// The first `--batch N` of a refusal's hint.
fn hinted_batch(err: &str) -> usize {
    err.split("hint: --batch ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no --batch hint: {err}"))
}

/// Issue 31's configuration: 128 · 2048 · 4 · 2048 = 2³¹ stream elements,
/// past i32. The kernels take 64-bit offsets, so only memory can refuse it:
/// it passes with room to spare and stops, with a batch that fits, on a
/// device of 141 GB (an H200's).
#[test]
fn a_tensor_past_2_31_elements_is_refused_only_for_memory() {
    let cfg = ModelConfig {
        layers: 24,
        width: 2048,
        heads: 16,
        context: 2048,
        ..cfg(ResidualMode::Mhc, 2048, 16, 4)
    };
    let plan = MemoryPlan::new(&cfg, 128, None);
    assert_eq!(plan.largest.1, 128 * 2048 * 4 * 2048);
    assert!(plan.largest.1 > i32::MAX as usize);
    assert!(plan.check(&cfg, 128, None, None).is_ok());
    assert!(plan.check(&cfg, 128, None, Some(plan.total())).is_ok());
    let h200 = 141_000_000_000;
    let err = plan
        .check(&cfg, 128, None, Some(h200))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("largest tensor") && err.contains("residual streams"),
        "{err}"
    );
    let hint = hinted_batch(&err);
    assert!(hint < 128, "{err}");
    assert!(MemoryPlan::new(&cfg, hint, None).total() <= h200, "{err}");
}

#[test]
fn a_plan_larger_than_free_memory_stops_with_settings_that_fit() {
    let cfg = ModelConfig {
        layers: 12,
        context: 1024,
        ..cfg(ResidualMode::Mhc, 768, 12, 4)
    };
    let plan = MemoryPlan::new(&cfg, 16, None);
    let free = plan.total() / 2;
    assert!(plan.check(&cfg, 16, None, Some(plan.total())).is_ok());
    let err = plan
        .check(&cfg, 16, None, Some(free))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(" free") && err.contains("hint: --batch"),
        "{err}"
    );
    let batch = hinted_batch(&err);
    assert!(
        batch < 16 && MemoryPlan::new(&cfg, batch, None).total() <= free,
        "{err}"
    );
    assert!(
        MemoryPlan::new(&cfg, batch + 1, None).total() > free,
        "the largest batch that fits: {err}"
    );
    // mhc without --recompute: recompute is offered too, and fits as offered.
    assert!(err.contains("--recompute 0"), "{err}");
    assert!(MemoryPlan::new(&cfg, 16, Some(0)).total() < plan.total());
}
