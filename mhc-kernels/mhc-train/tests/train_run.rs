//! Training on the CPU interpreter with a tiny model: the loss falls in every
//! residual mode, a paused and resumed run reproduces an uninterrupted one
//! exactly, and the run directory holds what docs/TRAINER.md promises.

mod train_common;

use mhc_train::train::config::ResidualMode;
use mhc_train::train::metrics::{metrics_path, read_records};
use mhc_train::train::run::{train, Stop};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use train_common::*;

/// Mean of the first and of the last `k` losses.
fn ends(losses: &[f32], k: usize) -> (f32, f32) {
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    (mean(&losses[..k]), mean(&losses[losses.len() - k..]))
}

fn loss_falls(residual: ResidualMode) {
    let out = temp_dir(residual.name());
    let s = train(&tiny(residual, 24, out.clone()), no_interrupt()).unwrap();
    assert_eq!(s.stop, Stop::Finished);
    assert_eq!(s.losses.len(), 24);
    let (first, last) = ends(&s.losses, 4);
    // Uniform over 256 bytes is ln 256 = 5.55 nats; byte frequencies alone
    // give well under 4 on this corpus.
    assert!(first > 4.5, "{residual:?}: first losses {first}");
    assert!(last < first - 1.0, "{residual:?}: loss {first} → {last}");
    assert!(s.last_val_loss.is_some_and(|v| v < first));
    let records = read_records(&metrics_path(&out)).unwrap();
    assert_eq!(records.len(), 24);
    assert!(records
        .iter()
        .all(|r| r.grad_norm.is_finite() && r.grad_norm > 0.0 && r.lr > 0.0));
    if residual == ResidualMode::Plain {
        assert!(records.iter().all(|r| r.amax.is_none()));
    } else {
        let a = records[0].amax.as_ref().expect("Amax gain for hc and mhc");
        assert_eq!(a.sites_forward.len(), 2);
        // Both start near the identity.
        assert!((0.9..1.5).contains(&a.composite_forward), "{a:?}");
    }
    for f in [
        "checkpoint.safetensors",
        "config.json",
        "plot.png",
        "plot.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn loss_falls_plain() {
    loss_falls(ResidualMode::Plain);
}

#[test]
fn loss_falls_hc() {
    loss_falls(ResidualMode::Hc);
}

#[test]
fn loss_falls_mhc() {
    loss_falls(ResidualMode::Mhc);
}

/// With a head dimension of 64 the attention runs the fused kernels
/// (bf16 heads, no scores kept): the loss falls as with the GEMM path.
#[test]
fn loss_falls_with_fused_attention() {
    let out = temp_dir("fused-attention");
    let mut opts = tiny(ResidualMode::Mhc, 24, out.clone());
    (opts.model.width, opts.model.heads) = (64, 1);
    assert!(mhc_train::ops::Ops::has_flash_attention(
        opts.model.head_dim()
    ));
    let s = train(&opts, no_interrupt()).unwrap();
    assert_eq!(s.stop, Stop::Finished);
    let (first, last) = ends(&s.losses, 4);
    assert!(first > 4.5, "first losses {first}");
    assert!(last < first - 1.0, "loss {first} → {last}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let steps = 8;
    let whole = temp_dir("whole");
    let full = train(
        &tiny(ResidualMode::Mhc, steps, whole.clone()),
        no_interrupt(),
    )
    .unwrap();

    let parts = temp_dir("parts");
    let mut first = tiny(ResidualMode::Mhc, steps, parts.clone());
    first.stop_after = Some(3);
    let a = train(&first, no_interrupt()).unwrap();
    assert_eq!((a.stop, a.next_step), (Stop::Paused, 3));
    // Not resuming over an existing checkpoint is refused.
    let again = train(
        &tiny(ResidualMode::Mhc, steps, parts.clone()),
        no_interrupt(),
    );
    assert!(again.unwrap_err().to_string().contains("--resume"));
    // Resuming with other settings is refused, naming the setting.
    let mut other = tiny(ResidualMode::Mhc, steps, parts.clone());
    other.resume = true;
    other.train.lr *= 2.0;
    let err = train(&other, no_interrupt()).unwrap_err().to_string();
    assert!(err.contains("--lr differs"), "{err}");

    let mut second = tiny(ResidualMode::Mhc, steps, parts.clone());
    second.resume = true;
    let b = train(&second, no_interrupt()).unwrap();
    assert_eq!(
        (b.first_step, b.next_step, b.stop),
        (3, steps, Stop::Finished)
    );
    let resumed: Vec<f32> = a.losses.iter().chain(&b.losses).copied().collect();
    assert_eq!(
        resumed, full.losses,
        "resumed losses differ from the uninterrupted run"
    );
    assert_eq!(b.last_val_loss, full.last_val_loss);
    // The metrics files agree too, step for step.
    let (ra, rb) = (
        read_records(&metrics_path(&whole)).unwrap(),
        read_records(&metrics_path(&parts)).unwrap(),
    );
    let key =
        |r: &mhc_train::train::metrics::Record| (r.step, r.loss, r.val_loss, r.grad_norm, r.lr);
    assert_eq!(
        ra.iter().map(key).collect::<Vec<_>>(),
        rb.iter().map(key).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&parts).unwrap();
}

#[test]
fn interrupt_pauses_with_a_checkpoint() {
    let out = temp_dir("interrupt");
    let opts = tiny(ResidualMode::Plain, 4, out.clone());
    let s = train(&opts, Arc::new(AtomicBool::new(true))).unwrap();
    assert_eq!((s.stop, s.next_step), (Stop::Paused, 0));
    let ck = mhc_train::train::checkpoint::Checkpoint::load(&out.join("checkpoint.safetensors"))
        .unwrap();
    assert_eq!(ck.step, 0);
    let mut resume = opts;
    resume.resume = true;
    let s = train(&resume, no_interrupt()).unwrap();
    assert_eq!((s.stop, s.first_step, s.next_step), (Stop::Finished, 0, 4));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    assert_stops_at_the_first_non_finite_loss(tiny(ResidualMode::Plain, 6, temp_dir("nan")));
}

#[test]
fn recompute_gives_the_same_losses() {
    let run = |recompute: Option<usize>, name: &str| {
        let out = temp_dir(name);
        let mut opts = tiny(ResidualMode::Mhc, 3, out.clone());
        opts.model.layers = 2;
        opts.recompute = recompute;
        let s = train(&opts, no_interrupt()).unwrap();
        std::fs::remove_dir_all(&out).unwrap();
        s.losses
    };
    // Four sites in blocks of two: the backward rebuilds the second site's streams.
    assert_eq!(run(Some(2), "recompute"), run(None, "stored"));
}
