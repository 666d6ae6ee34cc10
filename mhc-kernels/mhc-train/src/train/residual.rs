//! How a block's sublayers F (attention, MLP) join the residual stream, behind
//! one interface so the model code is the same for every `--residual` mode.
//! A mode drives the sites (two per block) and calls back into [`Sublayers`]:
//!
//! - `plain`: one f32 stream `[T, C]`, `x' = x + F(x)`.
//! - `hc`, `mhc`: n bf16 streams `[T, n, C]` through a [`Stack`] of
//!   [`Layer`]s (`x' = H_res·x + H_postᵀ·F(H_pre·x)`), optionally with block
//!   recompute. The streams start as n copies of the embedding and end as
//!   their mean; F sees `h_in` cast to f32 and gives its output in bf16.

use super::config::ResidualMode;
use super::params::Slot;
use crate::ops::{Ops, Out};
use anyhow::{anyhow, Result};
use mhc::kernels::KernelSet;
use mhc::layer::{Grads, Layer, LayerError, Mixing, Params, SiteConfig};
use mhc::stack::{default_block_len, Stack, Sublayer};
use std::sync::Arc;
use tile_runtime::{Buffer, Scalar};

/// The residual of `mode`: [`Plain`] or a [`Hyper`] with HC or mHC mixing.
pub fn new_residual(
    mode: ResidualMode,
    ops: Arc<Ops>,
    kernels: Arc<KernelSet>,
    cfg: &ResidualConfig,
) -> Result<Box<dyn Residual>> {
    Ok(match mode {
        ResidualMode::Plain => Box::new(Plain::new(ops, cfg.sites)),
        ResidualMode::Hc => Box::new(Hyper::new(ops, kernels, Mixing::Hc, cfg)?),
        ResidualMode::Mhc => Box::new(Hyper::new(ops, kernels, Mixing::Mhc, cfg)?),
    })
}

/// What a site reads: the stream h `[T, C]`, or a plain residual's two terms,
/// whose sum h = x + y the site's first kernel (its norm) writes to `sum` as
/// it reads them, instead of an add kernel of its own.
pub enum SiteInput<'a> {
    Stream(&'a Buffer),
    Sum {
        x: &'a Buffer,
        y: &'a Buffer,
        sum: &'a mut Buffer,
    },
}

/// A gradient `[T, C]` at a site's input or output: f32, and in a bf16 run
/// also rounded to bf16 by the norm backward that wrote it, for the GEMMs
/// that take it next as their operand (no cast pass reads it again).
pub struct StreamGrad {
    pub g: Buffer,
    pub g16: Option<Buffer>,
}

/// F of every site on f32 activations `[T, C]`. `backward` gets the site's
/// input again (the mode may have recomputed it) and returns ∂L/∂h.
pub trait Sublayers {
    /// F(h) in `out` where F's last GEMM can write it (bf16 only in a bf16
    /// run, whose GEMM rounds its f32 sums once, as a cast after it would),
    /// else in f32.
    fn forward(&mut self, site: usize, h: SiteInput, out: Scalar) -> Result<Buffer>;
    /// `dy` in f32 or bf16 (it only feeds GEMMs, which take it as their
    /// operand dtype).
    fn backward(&mut self, site: usize, h: &Buffer, dy: &Buffer) -> Result<StreamGrad>;
    /// [`Sublayers::backward`] for `x + F(x)`: `g` holds ∂L/∂y on entry and
    /// ∂L/∂y + ∂L/∂h on return, the sum made by the site's last kernel
    /// instead of a pass of its own (its bf16 rounding replaced likewise).
    fn backward_add(&mut self, site: usize, h: &Buffer, g: &mut StreamGrad) -> Result<()>;
}

/// What the final norm reads: the stream, or (plain) the last site's input
/// and output, which the norm adds as it reads them (the caller keeps the
/// sum it writes).
pub enum StreamOut<'a> {
    Stream(Buffer),
    Sum { x: &'a Buffer, y: Buffer },
}

/// One residual mode (see the module doc).
pub trait Residual {
    /// From the embedding output x0 `[T, C]` through every site to the
    /// input of the final norm `[T, C]`.
    fn forward(&mut self, x0: Buffer, f: &mut dyn Sublayers) -> Result<StreamOut<'_>>;
    /// From the gradient of the forward's output to that of x0; accumulates
    /// the mode's parameter gradients (zero them first with [`Residual::slots`]).
    fn backward(&mut self, g: StreamGrad, f: &mut dyn Sublayers) -> Result<Buffer>;
    /// The mode's parameters (none for `plain`).
    fn slots(&mut self) -> Vec<Slot<'_>>;
    /// H_res of the last forward (valid until the backward) for the given
    /// tokens: `[token][site]`, each row-major n×n; `None` for `plain`.
    fn h_res(&self, tokens: &[usize]) -> Result<Option<Vec<Vec<Vec<f32>>>>>;
    /// Bytes the last forward keeps for the backward (the memory plan's
    /// check: `memory::MemoryPlan`).
    fn activation_bytes(&self) -> usize;
}

/// `x' = x + F(x)` on one f32 stream.
pub struct Plain {
    ops: Arc<Ops>,
    /// The input of every site, from the last forward.
    inputs: Vec<Buffer>,
    sites: usize,
}

impl Plain {
    pub fn new(ops: Arc<Ops>, sites: usize) -> Plain {
        Plain {
            ops,
            inputs: Vec::new(),
            sites,
        }
    }
}

impl Residual for Plain {
    fn forward(&mut self, x0: Buffer, f: &mut dyn Sublayers) -> Result<StreamOut<'_>> {
        self.inputs.clear();
        let mut x = x0;
        // F of the last site, not yet added to x: the next site's norm adds it.
        let mut pending: Option<Buffer> = None;
        for site in 0..self.sites {
            let y = match pending.take() {
                // bf16 outputs in a bf16 run: the next norm adds them as it
                // reads them (the sum itself stays f32).
                None => f.forward(site, SiteInput::Stream(&x), Scalar::BF16)?,
                Some(y) => {
                    let mut next = self.ops.device().alloc_output(Scalar::F32, x.len())?;
                    let sum = SiteInput::Sum {
                        x: &x,
                        y: &y,
                        sum: &mut next,
                    };
                    let out = f.forward(site, sum, Scalar::BF16)?;
                    self.inputs.push(std::mem::replace(&mut x, next));
                    out
                }
            };
            pending = Some(y);
        }
        let Some(y) = pending else {
            // No sites: the stream is x0 itself, which the final norm reads.
            return Ok(StreamOut::Stream(x));
        };
        self.inputs.push(x);
        let x = self.inputs.last().expect("just pushed");
        Ok(StreamOut::Sum { x, y })
    }

    fn backward(&mut self, mut g: StreamGrad, f: &mut dyn Sublayers) -> Result<Buffer> {
        if self.inputs.len() != self.sites {
            return Err(anyhow!("plain residual: backward without a forward"));
        }
        for site in (0..self.sites).rev() {
            f.backward_add(site, &self.inputs[site], &mut g)?;
        }
        self.inputs.clear();
        Ok(g.g)
    }

    fn slots(&mut self) -> Vec<Slot<'_>> {
        Vec::new()
    }

    fn h_res(&self, _tokens: &[usize]) -> Result<Option<Vec<Vec<Vec<f32>>>>> {
        Ok(None)
    }

    fn activation_bytes(&self) -> usize {
        self.inputs.iter().map(bytes).sum()
    }
}

/// Hyper-connections (`hc`) or mHC on n bf16 streams: a [`Stack`] of sites.
pub struct Hyper {
    ops: Arc<Ops>,
    stack: Stack,
    params: Vec<Params>,
    grads: Vec<Grads>,
    /// Tokens per step, streams, width.
    t: usize,
    n: usize,
    c: usize,
    dynamic_lr_scale: f32,
    projection_decay: bool,
}

/// Shape and options of a residual (plain uses only `sites`).
pub struct ResidualConfig {
    pub streams: usize,
    pub width: usize,
    /// Tokens per step.
    pub tokens: usize,
    pub sites: usize,
    /// Recompute the streams in blocks of this many sites in the backward
    /// (`Some(0)`: the memory-optimal length); `None` keeps every site's input.
    pub recompute: Option<usize>,
    pub seed: u64,
    /// Learning-rate multiple of each site's dynamic coefficients (φ and α):
    /// see [`TrainConfig::dynamic_lr_scale`](super::config::TrainConfig).
    pub dynamic_lr_scale: f32,
    /// Whether AdamW decays each site's φ.
    pub projection_decay: bool,
}

impl Hyper {
    /// Sites initialised as mhc-spec.md says (deterministic in `cfg.seed`).
    pub fn new(
        ops: Arc<Ops>,
        kernels: Arc<KernelSet>,
        mixing: Mixing,
        cfg: &ResidualConfig,
    ) -> Result<Hyper> {
        let site = SiteConfig::new(mixing, cfg.streams, cfg.width);
        let mut layers = Vec::with_capacity(cfg.sites);
        let (mut params, mut grads) = (Vec::new(), Vec::new());
        for s in 0..cfg.sites {
            let layer = Layer::new(kernels.clone(), site.clone())?;
            params.push(layer.init_params(cfg.seed.wrapping_add(s as u64), s)?);
            grads.push(layer.zero_grads()?);
            layers.push(layer);
        }
        let block_len = cfg.recompute.map(|b| match b {
            0 => default_block_len(cfg.streams, cfg.sites),
            b => b,
        });
        Ok(Hyper {
            ops,
            stack: Stack::new(layers, block_len)?,
            params,
            grads,
            t: cfg.tokens,
            n: cfg.streams,
            c: cfg.width,
            dynamic_lr_scale: cfg.dynamic_lr_scale,
            projection_decay: cfg.projection_decay,
        })
    }
}

/// The stack's view of F: bf16 in and out around the model's f32 sublayers
/// (F's output and its input gradient come out of their kernels in bf16; its
/// input is widened to f32 here).
struct Bf16<'a> {
    ops: &'a Ops,
    f: &'a mut dyn Sublayers,
}

impl Bf16<'_> {
    /// `x` in bf16, the streams' dtype: itself, or an f32 run's f32 rounded.
    fn bf16(&self, x: Buffer) -> Result<Buffer> {
        if x.dtype() == Scalar::BF16 {
            return Ok(x);
        }
        Ok(self.ops.cast(&x, x.len(), Scalar::BF16)?)
    }
}

/// The stack's error type carries the sublayer's message.
fn to_layer_error(e: anyhow::Error) -> LayerError {
    LayerError::Shape(format!("{e:#}"))
}

impl Sublayer for Bf16<'_> {
    fn forward(&mut self, site: usize, h_in: &Buffer) -> Result<Buffer, LayerError> {
        let mut run = || -> Result<Buffer> {
            let h = self.ops.cast(h_in, h_in.len(), Scalar::F32)?;
            let y = self.f.forward(site, SiteInput::Stream(&h), Scalar::BF16)?;
            self.bf16(y)
        };
        run().map_err(to_layer_error)
    }

    fn backward(&mut self, site: usize, h_in: &Buffer, dy: &Buffer) -> Result<Buffer, LayerError> {
        let mut run = || -> Result<Buffer> {
            let h = self.ops.cast(h_in, h_in.len(), Scalar::F32)?;
            let dh = self.f.backward(site, &h, dy)?;
            self.bf16(dh.g16.unwrap_or(dh.g))
        };
        run().map_err(to_layer_error)
    }
}

impl Residual for Hyper {
    fn forward(&mut self, x0: Buffer, f: &mut dyn Sublayers) -> Result<StreamOut<'_>> {
        let (t, n, c) = (self.t, self.n, self.c);
        let dev = self.ops.device();
        let mut xs = dev.alloc_output(Scalar::BF16, t * n * c)?;
        self.ops.streams_expand(&x0, &mut xs, t, n, c)?;
        let mut sub = Bf16 { ops: &self.ops, f };
        let last = self.stack.forward(&self.params, xs, t, &mut sub)?;
        let mut out = dev.alloc_output(Scalar::F32, t * c)?;
        self.ops.streams_collapse(&last, &mut out, t, n, c)?;
        Ok(StreamOut::Stream(out))
    }

    fn backward(&mut self, g: StreamGrad, f: &mut dyn Sublayers) -> Result<Buffer> {
        let (t, n, c) = (self.t, self.n, self.c);
        let dev = self.ops.device();
        let mut gs = dev.alloc_output(Scalar::BF16, t * n * c)?;
        self.ops
            .streams_collapse_bwd(&g.g, &mut gs, t, n, c, Out::Write)?;
        let mut sub = Bf16 { ops: &self.ops, f };
        let g0 = self
            .stack
            .backward(&self.params, &mut self.grads, gs, &mut sub)?;
        let mut out = dev.alloc_output(Scalar::F32, t * c)?;
        self.ops
            .streams_expand_bwd(&g0, &mut out, t, n, c, Out::Write)?;
        Ok(out)
    }

    fn slots(&mut self) -> Vec<Slot<'_>> {
        let cfg = self.stack.layers[0].config();
        let (rows, cols, coeffs) = (cfg.proj_rows(), cfg.proj_cols(), cfg.coeffs());
        let mut out = Vec::new();
        for (s, (p, g)) in self
            .params
            .iter_mut()
            .zip(self.grads.iter_mut())
            .enumerate()
        {
            let mut slot = |name: &str, shape: &[usize], decay, lr_scale, value, grad| {
                out.push(Slot {
                    name: format!("site{s}.{name}"),
                    shape: shape.to_vec(),
                    decay,
                    lr_scale,
                    value,
                    grad,
                    bf16: None,
                })
            };
            let (dynamic, decay) = (self.dynamic_lr_scale, self.projection_decay);
            slot(
                "proj",
                &[rows, cols],
                decay,
                dynamic,
                &mut p.proj,
                &mut g.proj,
            );
            slot("alpha", &[3], false, dynamic, &mut p.alpha, &mut g.alpha);
            slot("b", &[coeffs], false, 1.0, &mut p.b, &mut g.b);
        }
        out
    }

    fn h_res(&self, tokens: &[usize]) -> Result<Option<Vec<Vec<Vec<f32>>>>> {
        let (n, coeffs) = (self.n, self.n * self.n + 2 * self.n);
        let sites = self.params.len();
        let mut out = vec![Vec::with_capacity(sites); tokens.len()];
        for site in 0..sites {
            let saved = self
                .stack
                .saved(site)
                .ok_or_else(|| anyhow!("H_res of site {site}: no forward ran"))?;
            let h: Vec<f32> = self.ops.device().download(&saved.h)?;
            for (k, &t) in tokens.iter().enumerate() {
                // Coefficients per token: [pre n | post n | res n×n].
                let base = t * coeffs + 2 * n;
                out[k].push(h[base..base + n * n].to_vec());
            }
        }
        Ok(Some(out))
    }

    fn activation_bytes(&self) -> usize {
        self.stack.activation_bytes()
    }
}

/// The size of a buffer in bytes.
pub fn bytes(b: &Buffer) -> usize {
    b.len() * b.dtype().size_bytes()
}
