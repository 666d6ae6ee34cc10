//! The memory plan of a run, made from the settings alone before anything is
//! allocated: parameters with their gradients and AdamW moments, the
//! activations the forward keeps for the backward (per sublayer, residual
//! mode and head), and the backward's largest working set. A run whose plan
//! exceeds the device's free memory (on the CPU, the host's available
//! memory) stops before the first allocation with the plan and the settings
//! that would fit. Tensors may pass 2³¹ elements: every kernel of the model
//! starts its rows, blocks or slices at 64-bit offsets.
//!
//! The saved activations are exact: [`Step::saved_bytes`](super::model::Step)
//! counts the buffers the forward really keeps, and the tests hold the two
//! equal for every residual mode, attention path and recompute setting. The
//! working set is an estimate of the largest transient buffers of one
//! sublayer's backward.

use super::config::{AttentionBackward, ModelConfig, Precision, ResidualMode};
use anyhow::{bail, Result};
use mhc::stack::{default_block_len, Stack};
use mhc::{Mixing, SiteConfig};
use std::fmt::Write as _;

/// One line of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub name: &'static str,
    pub bytes: usize,
    /// Part of what the forward keeps for the backward.
    pub saved: bool,
}

/// See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub items: Vec<Item>,
    /// Learned values, residual parameters included.
    pub parameters: usize,
    /// The tensor with the most elements, and its element count.
    pub largest: (&'static str, usize),
}

const F32: usize = 4;
const BF16: usize = 2;

impl MemoryPlan {
    /// The plan of `cfg` at `batch` sequences per device; `recompute` as
    /// `--recompute` (hc/mhc: block length, 0 for the memory-optimal one).
    pub fn new(cfg: &ModelConfig, batch: usize, recompute: Option<usize>) -> MemoryPlan {
        let (l, c, v, t, h) = (cfg.layers, cfg.width, cfg.vocab, cfg.context, cfg.hidden());
        let nh = cfg.heads;
        let n_tok = batch * t;
        let sites = 2 * l;
        let fused = cfg.fused_attention();
        // GEMM operands and saved activations (`--precision`).
        let bf16 = cfg.precision == Precision::Bf16;
        let half = if bf16 { BF16 } else { F32 };
        let hyper = match cfg.residual {
            ResidualMode::Plain => None,
            ResidualMode::Hc => Some(SiteConfig::new(Mixing::Hc, cfg.streams, c)),
            ResidualMode::Mhc => Some(SiteConfig::new(Mixing::Mhc, cfg.streams, c)),
        };
        let model_params = v * c + t * c + l * (2 * c + 4 * c * c + 2 * c * h) + c + c * v;
        let parameters = model_params + hyper.as_ref().map_or(0, |s| sites * s.param_count());

        // What each site's forward keeps (model.rs: AttnActs, MlpActs).
        // Fused: the QKV projection's bf16 output (q, k, v as the kernels
        // read them) and each query's log-sum-exp. Otherwise: f32 per-head
        // q, k, v and the probabilities.
        let heads = if fused {
            3 * BF16 * n_tok * c + F32 * n_tok * nh
        } else {
            3 * F32 * n_tok * c + F32 * batch * nh * t * t
        };
        // The linear layers' inputs as they rounded them: the norm's output
        // and the merged heads (fused: the kernels' own output); the norm's
        // output, GELU's input (the first GEMM's output in the operand
        // dtype) and, in f32 only, its output (a bf16 backward makes it
        // again from GELU's input).
        let attention = 2 * half * n_tok * c + F32 * n_tok + heads;
        let mlp = half * n_tok * c + F32 * n_tok + if bf16 { half } else { 2 * half } * n_tok * h;
        let residual = match &hyper {
            None => sites * F32 * n_tok * c,
            Some(site) => {
                let block = recompute.map(|b| match b {
                    0 => default_block_len(cfg.streams, sites),
                    b => b,
                });
                Stack::planned_activation_bytes(site, n_tok, sites, block)
            }
        };
        // Head: tokens (i32), final norm input (f32) and output (a GEMM
        // operand), its rstd, logits.
        let head = F32 * (n_tok + n_tok * c + n_tok + n_tok * v) + half * n_tok * c;

        // The backward's largest transients: dlogits, then one sublayer's
        // gradients (attention: dO, the fused backward's delta and f32 dQ
        // sums, or the materialised one's dO heads, dq/dk/dv heads and dS;
        // dQKV, dA, dH; MLP: dG, dU, dA, dH) and the residual's stream
        // gradients.
        let attention_bwd = if fused {
            BF16 * n_tok * c
                + F32 * n_tok * nh
                + match cfg.attention_backward {
                    AttentionBackward::Fused => F32 * n_tok * c,
                    AttentionBackward::Deterministic => 0,
                }
                + 3 * BF16 * n_tok * c
        } else {
            2 * F32 * n_tok * c
                + 3 * F32 * n_tok * c
                + F32 * batch * nh * t * t
                + 3 * F32 * n_tok * c
        } + 3 * F32 * n_tok * c;
        let mlp_bwd = if bf16 { 3 * BF16 } else { 2 * F32 } * n_tok * h + 2 * F32 * n_tok * c;
        let streams_bwd = match &hyper {
            None => F32 * n_tok * c,
            // Two stream gradients in flight and the f32 casts around F.
            Some(s) => 2 * BF16 * n_tok * s.n * c + 2 * F32 * n_tok * c,
        };
        // dlogits and its bf16 rounding for the head's GEMMs.
        let rounded_dlogits = if bf16 { BF16 * n_tok * v } else { 0 };
        let working = F32 * n_tok * v + rounded_dlogits + attention_bwd.max(mlp_bwd) + streams_bwd;
        // The matrices' bf16 copies (the GEMMs' operands; none in f32).
        let matrices = if bf16 {
            l * (4 * c * c + 2 * c * h) + c * v
        } else {
            0
        };

        let mut largest = vec![
            ("logits [tokens, vocab]", n_tok * v),
            ("MLP hidden [tokens, mlp-ratio·width]", n_tok * h),
            ("q, k, v [tokens, 3·width]", n_tok * 3 * c),
        ];
        if let Some(s) = &hyper {
            largest.push(("residual streams [tokens, streams, width]", n_tok * s.n * c));
        }
        if !fused {
            largest.push((
                "attention scores [batch·heads, context, context]",
                batch * nh * t * t,
            ));
        }
        let largest = largest.into_iter().max_by_key(|x| x.1).expect("non-empty");
        MemoryPlan {
            items: vec![
                Item {
                    name: "parameters, gradients, AdamW moments",
                    bytes: 4 * F32 * parameters,
                    saved: false,
                },
                Item {
                    name: "bf16 copies of the matrices",
                    bytes: BF16 * matrices,
                    saved: false,
                },
                Item {
                    name: "saved: attention",
                    bytes: l * attention,
                    saved: true,
                },
                Item {
                    name: "saved: MLP",
                    bytes: l * mlp,
                    saved: true,
                },
                Item {
                    name: "saved: residual streams",
                    bytes: residual,
                    saved: true,
                },
                Item {
                    name: "saved: head and logits",
                    bytes: head,
                    saved: true,
                },
                Item {
                    name: "backward working set (estimate)",
                    bytes: working,
                    saved: false,
                },
            ],
            parameters,
            largest,
        }
    }

    pub fn total(&self) -> usize {
        self.items.iter().map(|i| i.bytes).sum()
    }

    /// What the forward keeps for the backward.
    pub fn saved(&self) -> usize {
        self.items.iter().filter(|i| i.saved).map(|i| i.bytes).sum()
    }

    /// One line: the total and its parts.
    pub fn summary(&self) -> String {
        let mut s = format!("memory plan {}:", size(self.total()));
        // (An f32 run has no bf16 copies: its empty item is left out.)
        for (k, i) in self.items.iter().filter(|i| i.bytes > 0).enumerate() {
            let sep = if k == 0 { " " } else { ", " };
            write!(s, "{sep}{} {}", i.name, size(i.bytes)).expect("to a String");
        }
        s
    }

    /// Refuses a plan of more than `free` bytes (when the device says). The
    /// error holds the plan, its largest tensor, and the largest `--batch`
    /// (and, for hc/mhc, `--recompute`) that would fit.
    pub fn check(
        &self,
        cfg: &ModelConfig,
        batch: usize,
        recompute: Option<usize>,
        free: Option<usize>,
    ) -> Result<()> {
        let fits = |p: &MemoryPlan| free.is_none_or(|f| p.total() <= f);
        let Some(f) = free.filter(|_| !fits(self)) else {
            return Ok(());
        };
        let mut why = String::new();
        writeln!(
            why,
            "{} needs {}, the device has {} free; its largest tensor is the {} ({} elements)",
            self.summary(),
            size(self.total()),
            size(f),
            self.largest.0,
            self.largest.1,
        )?;
        let mut hints = Vec::new();
        let best_batch = |rc| {
            (1..batch)
                .rev()
                .find(|&b| fits(&MemoryPlan::new(cfg, b, rc)))
        };
        let plain_best = best_batch(recompute);
        match plain_best {
            Some(b) => hints.push(format!("--batch {b}")),
            None => hints.push("no --batch fits at this --context and --width".into()),
        }
        // Recompute only where it lets more sequences fit.
        if cfg.residual != ResidualMode::Plain && recompute.is_none() {
            if fits(&MemoryPlan::new(cfg, batch, Some(0))) {
                hints.push(format!("--recompute 0 (at --batch {batch})"));
            } else if let Some(b) = best_batch(Some(0)).filter(|&b| Some(b) > plain_best) {
                hints.push(format!("--recompute 0 with --batch {b}"));
            }
        }
        bail!(
            "this run does not fit: {}hint: {}",
            why,
            hints.join("; or ")
        )
    }
}

/// Bytes in GB, or MB below 1 GB.
fn size(bytes: usize) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The host's available memory in bytes (`MemAvailable` of /proc/meminfo),
/// what a run on the CPU device may allocate; `None` where the kernel does
/// not say.
pub fn host_available() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
