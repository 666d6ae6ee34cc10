//! The byte-level GPT: token and position embeddings, `layers` pre-norm blocks
//! (causal multi-head attention, then a GELU MLP), each sublayer joined to the
//! residual stream by a [`Residual`] mode, a final RMSNorm and an untied head.
//! Forward and a hand-written backward, composed of pack kernels and GEMMs
//! ([`Ops`]); the same code runs on every device.

use super::config::{AttentionBackward, MlpGemm, ModelConfig, Precision};
use super::params::{Slot, Weight};
use super::residual::{bytes, Residual, SiteInput, StreamGrad, StreamOut, Sublayers};
use crate::ops::{Ops, Out};
use anyhow::{anyhow, bail, Result};
use std::sync::Arc;
use tile_runtime::blas::GemmOp;
use tile_runtime::collective::Collective;
use tile_runtime::{Buffer, Device, Scalar};

/// RMSNorm epsilon of every norm in the model.
const NORM_EPS: f32 = 1e-5;

/// Profiler phases of the residual mode's own work between the sublayers
/// (the hyper-connection sites; plain's additions).
const RESIDUAL_FORWARD: &str = "residual forward";
const RESIDUAL_BACKWARD: &str = "residual backward";

/// One block's own weights (its residual parameters live in the [`Residual`]).
struct Block {
    norm1: Weight,
    /// `[C, 3C]`: q, k, v side by side.
    wqkv: Weight,
    wo: Weight,
    norm2: Weight,
    w1: Weight,
    w2: Weight,
}

/// What the backward of one attention sublayer needs from its forward
/// (besides its input, which the residual mode hands back).
/// `a` (the norm's output) and `o` (the heads merged) are kept as their
/// linear layers rounded them, in bf16.
struct AttnActs {
    a: Buffer,
    rstd: Buffer,
    heads: Heads,
    o: Buffer,
}

/// The attention's own activations. Per head dimension with fused kernels
/// ([`Ops::has_flash_attention`]): the QKV projection's bf16 output as the
/// kernels read it (token-major, no head split) and each query's
/// log-sum-exp; `o` is then the kernels' output itself. Otherwise: per-head
/// f32 q, k, v [bh, t, d] and the probabilities P [bh, t, t].
enum Heads {
    Fused {
        qkv: Buffer,
        lse: Buffer,
    },
    Materialized {
        q: Buffer,
        k: Buffer,
        v: Buffer,
        p: Buffer,
    },
}

/// What the backward of one MLP sublayer needs from its forward: `a` (the
/// norm's output) as its linear layer rounded it and GELU's input `u` in
/// the operand dtype; in f32 (`--precision f32`) also GELU's output `g`,
/// which a bf16 backward makes again from u.
struct MlpActs {
    a: Buffer,
    rstd: Buffer,
    u: Buffer,
    g: Option<Buffer>,
}

/// The activations of one sublayer, kept for the backward.
#[allow(clippy::large_enum_variant)] // one per site: a few hundred bytes each
enum SiteActs {
    Attn(AttnActs),
    Mlp(MlpActs),
}

/// What the backward of the embedding and head needs from the forward.
struct HeadActs {
    tokens: Buffer,
    xf: Buffer,
    rstd_f: Buffer,
    /// The final norm's output, in bf16 (the head's GEMM operand).
    hf: Buffer,
}

/// What the sublayers compute with: shapes, device, kernels and GEMMs.
struct Kit {
    cfg: ModelConfig,
    /// Sequences per step (fixed at construction: buffers are sized by it).
    batch: usize,
    /// Tokens the loss is averaged over: this model's own, or the global
    /// batch's in a data-parallel run (see [`Model::set_global_batch`]).
    loss_tokens: usize,
    device: Arc<Device>,
    ops: Arc<Ops>,
}

pub struct Model {
    kit: Kit,
    wte: Weight,
    wpe: Weight,
    blocks: Vec<Block>,
    norm_f: Weight,
    head: Weight,
    residual: Box<dyn Residual>,
    /// Per site, from the last forward.
    acts: Vec<Option<SiteActs>>,
}

impl Kit {
    fn tokens(&self) -> usize {
        self.batch * self.cfg.context
    }

    /// An f32 activation buffer. Every one is written whole by the op that
    /// fills it, so a GPU skips the zero-filling pass.
    fn alloc(&self, len: usize) -> Result<Buffer> {
        Ok(self.device.alloc_output(Scalar::F32, len)?)
    }

    /// The dtype of GEMM operands and saved activations (`--precision`).
    fn half(&self) -> Scalar {
        match self.cfg.precision {
            Precision::Bf16 => Scalar::BF16,
            Precision::F32 => Scalar::F32,
        }
    }

    /// `x` [n] as a GEMM operand: itself when it is in [`Kit::half`]
    /// already, else rounded to a new bf16 buffer.
    fn operand(&self, x: Buffer, n: usize) -> Result<Buffer> {
        if x.dtype() == self.half() {
            return Ok(x);
        }
        self.to_operand(&x, n)
    }

    /// `x` [n] in a new buffer of the operand dtype: f32 rounded to bf16,
    /// or bf16 widened (exactly) in an f32 run.
    fn to_operand(&self, x: &Buffer, n: usize) -> Result<Buffer> {
        Ok(self.ops.cast(x, n, self.half())?)
    }

    /// Whether the MLP's GEMMs that meet GELU are our fused kernels
    /// ([`MlpGemm::Fused`]): in bf16 runs on a GPU (on the CPU the
    /// interpreter's `dot` is far slower than matrixmultiply's GEMM).
    fn fused_mlp(&self) -> bool {
        self.cfg.mlp_gemm == MlpGemm::Fused && self.half() == Scalar::BF16 && self.device.is_gpu()
    }

    /// The dtype a GEMM writes for a consumer that wants `out`: bf16 only
    /// from bf16 operands (an f32 run gives f32, which the consumer casts).
    fn output_dtype(&self, out: Scalar) -> Scalar {
        match self.half() {
            Scalar::BF16 => out,
            _ => Scalar::F32,
        }
    }

    /// A matrix as the GEMMs take it: its bf16 copy, or its f32 value.
    fn weight<'w>(&self, w: &'w Weight) -> Result<&'w Buffer> {
        match self.cfg.precision {
            Precision::Bf16 => w.rounded(),
            Precision::F32 => Ok(&w.value),
        }
    }

    /// `y[rows, n] = x[rows, k] · w[k, n]` in mixed precision, as PyTorch's
    /// autocast does it: x and w rounded to bf16, the GEMM's operands, with
    /// f32 accumulation and output. x comes in bf16 where its producer
    /// rounded it (norms, GELU, merged heads), else f32. Returns y and the
    /// rounded x, all the backward keeps of the input.
    fn linear(
        &self,
        x: Buffer,
        w: &Weight,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<(Buffer, Buffer)> {
        self.linear_to(x, w, rows, k, n, Scalar::F32)
    }

    /// [`Kit::linear`] with y in `out` (bf16: the f32 accumulator rounded
    /// once, for a consumer that takes bf16).
    fn linear_to(
        &self,
        x: Buffer,
        w: &Weight,
        rows: usize,
        k: usize,
        n: usize,
        out: Scalar,
    ) -> Result<(Buffer, Buffer)> {
        let x16 = self.operand(x, rows * k)?;
        let mut y = self.device.alloc_output(out, rows * n)?;
        self.ops
            .gemm(&GemmOp::new(rows, n, k), &x16, self.weight(w)?, &mut y)?;
        Ok((y, x16))
    }

    /// Backward of [`Kit::linear`] from its rounded input `x16`: returns dx,
    /// writes w's gradient (each weight is used once per step, so no
    /// accumulation is needed). dy, bf16 where its producer rounded it, else
    /// rounded here, is both GEMMs' operand.
    fn linear_backward(
        &self,
        x16: &Buffer,
        w: &mut Weight,
        dy: &Buffer,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<Buffer> {
        self.linear_backward_to(x16, w, dy, rows, k, n, Scalar::F32)
    }

    /// [`Kit::linear_backward`] with dx in `out` (bf16: the f32
    /// accumulator rounded once, for a consumer that takes bf16).
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_to(
        &self,
        x16: &Buffer,
        w: &mut Weight,
        dy: &Buffer,
        rows: usize,
        k: usize,
        n: usize,
        out: Scalar,
    ) -> Result<Buffer> {
        let mut rounded = None;
        let dy16 = self.operand_ref(dy, rows * n, &mut rounded)?;
        let dx = self.input_grad(w, dy16, rows, k, n, out)?;
        self.weight_grad(x16, w, dy16, rows, k, n)?;
        Ok(dx)
    }

    /// `x` [n] as a GEMM operand: itself when it is in [`Kit::half`]
    /// already, else rounded into `rounded`.
    fn operand_ref<'a>(
        &self,
        x: &'a Buffer,
        n: usize,
        rounded: &'a mut Option<Buffer>,
    ) -> Result<&'a Buffer> {
        if x.dtype() == self.half() {
            return Ok(x);
        }
        Ok(rounded.insert(self.to_operand(x, n)?))
    }

    /// dx[rows, k] = dy16[rows, n] · wᵀ, in `out`: the input half of
    /// [`Kit::linear_backward`].
    fn input_grad(
        &self,
        w: &Weight,
        dy16: &Buffer,
        rows: usize,
        k: usize,
        n: usize,
        out: Scalar,
    ) -> Result<Buffer> {
        let mut dx = self.device.alloc_output(out, rows * k)?;
        self.ops.gemm(
            &GemmOp::new(rows, k, n).trans_b(true),
            dy16,
            self.weight(w)?,
            &mut dx,
        )?;
        Ok(dx)
    }

    /// w's gradient x16ᵀ · dy16 (written, not added): the weight half of
    /// [`Kit::linear_backward`].
    fn weight_grad(
        &self,
        x16: &Buffer,
        w: &mut Weight,
        dy16: &Buffer,
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        self.ops.gemm(
            &GemmOp::new(k, n, rows).trans_a(true),
            x16,
            dy16,
            &mut w.grad,
        )?;
        Ok(())
    }

    /// RMSNorm of `x` [rows, C] with gain `w`: (y, rstd), y in bf16 (every
    /// norm feeds a linear layer). A sum's terms are added as they are read.
    fn norm(&self, x: SiteInput, w: &Buffer) -> Result<(Buffer, Buffer)> {
        let (rows, c) = (self.tokens(), self.cfg.width);
        let mut y = self.device.alloc_output(self.half(), rows * c)?;
        let mut rstd = self.alloc(rows)?;
        match x {
            SiteInput::Stream(x) => self
                .ops
                .rmsnorm_fwd(x, w, &mut y, &mut rstd, rows, c, NORM_EPS)?,
            SiteInput::Sum { x, y: f, sum } => self
                .ops
                .add_rmsnorm_fwd(x, f, sum, w, &mut y, &mut rstd, rows, c, NORM_EPS)?,
        }
        Ok((y, rstd))
    }

    /// Backward of [`Kit::norm`]: returns dx (and in a bf16 run its bf16
    /// rounding), writes the gain's gradient.
    fn norm_backward(
        &self,
        x: &Buffer,
        w: &mut Weight,
        rstd: &Buffer,
        dy: &Buffer,
    ) -> Result<StreamGrad> {
        let mut dx = self.alloc(self.tokens() * self.cfg.width)?;
        let dx16 = self.norm_backward_into(x, w, rstd, dy, &mut dx, Out::Write)?;
        Ok(StreamGrad { g: dx, g16: dx16 })
    }

    /// [`Kit::norm_backward`] into `dx` (added to it with [`Out::Add`]);
    /// returns dx after it rounded to bf16 where dy is bf16 (a bf16 run).
    fn norm_backward_into(
        &self,
        x: &Buffer,
        w: &mut Weight,
        rstd: &Buffer,
        dy: &Buffer,
        dx: &mut Buffer,
        mode: Out,
    ) -> Result<Option<Buffer>> {
        let (rows, c) = (self.tokens(), self.cfg.width);
        let mut dx16 = match dy.dtype() {
            Scalar::BF16 => Some(self.device.alloc_output(Scalar::BF16, rows * c)?),
            _ => None,
        };
        self.ops.rmsnorm_bwd(
            x,
            &w.value,
            rstd,
            dy,
            dx,
            mode,
            dx16.as_mut(),
            &mut w.grad,
            Out::Write,
            rows,
            c,
        )?;
        Ok(dx16)
    }

    fn heads(&self) -> (usize, usize, usize, f32) {
        let (h, d) = (self.cfg.heads, self.cfg.head_dim());
        (h, d, self.batch * h, 1.0 / (d as f32).sqrt())
    }

    /// The attention sublayer; y in `out` where the GEMM can write it
    /// ([`Kit::output_dtype`]).
    fn attention(&self, b: &Block, h: SiteInput, out: Scalar) -> Result<(Buffer, AttnActs)> {
        let (c, t, rows) = (self.cfg.width, self.cfg.context, self.tokens());
        let (nh, d, bh, scale) = self.heads();
        let (a, rstd) = self.norm(h, &b.norm1.value)?;
        let (o, heads, a) = if self.cfg.fused_attention() {
            // q, k, v in bf16 as the projection rounds them, read in place
            // by the kernels, whose o is the output projection's operand.
            let (qkv, a) = self.linear_to(a, &b.wqkv, rows, c, 3 * c, Scalar::BF16)?;
            let mut o = self.device.alloc_output(Scalar::BF16, rows * c)?;
            let mut lse = self.alloc(bh * t)?;
            self.ops
                .flash_attention_fwd(&qkv, &mut o, &mut lse, self.batch, t, nh, d, scale)?;
            (o, Heads::Fused { qkv, lse }, a)
        } else {
            let (qkv, a) = self.linear(a, &b.wqkv, rows, c, 3 * c)?;
            let (mut q, mut k, mut v) = (
                self.alloc(bh * t * d)?,
                self.alloc(bh * t * d)?,
                self.alloc(bh * t * d)?,
            );
            for (slot, x) in [&mut q, &mut k, &mut v].into_iter().enumerate() {
                self.ops
                    .split_heads(&qkv, x, self.batch, t, nh, d, 3, slot)?;
            }
            let (mut p, mut o_heads) = (self.alloc(bh * t * t)?, self.alloc(bh * t * d)?);
            self.ops
                .attention_fwd(&q, &k, &v, &mut p, &mut o_heads, bh, t, d, scale)?;
            let mut o = self.alloc(rows * c)?;
            self.ops
                .merge_heads(&o_heads, &mut o, self.batch, t, nh, d, 1, 0)?;
            (o, Heads::Materialized { q, k, v, p }, a)
        };
        let (y, o) = self.linear_to(o, &b.wo, rows, c, c, self.output_dtype(out))?;
        Ok((y, AttnActs { a, rstd, heads, o }))
    }

    /// The attention's backward down to its norm's output (the caller
    /// finishes with the norm's backward).
    fn attention_backward(&self, b: &mut Block, acts: &AttnActs, dy: &Buffer) -> Result<Buffer> {
        let (c, t, rows) = (self.cfg.width, self.cfg.context, self.tokens());
        let (nh, d, bh, scale) = self.heads();
        let dqkv = match &acts.heads {
            Heads::Fused { qkv, lse } => {
                // dO in bf16 straight from the projection's backward; dq, dk,
                // dv straight into the QKV projection's output gradient.
                let d_o =
                    self.linear_backward_to(&acts.o, &mut b.wo, dy, rows, c, c, Scalar::BF16)?;
                let mut delta = self.alloc(bh * t)?;
                let mut dq_acc = match self.cfg.attention_backward {
                    AttentionBackward::Fused => Some(self.alloc(rows * c)?),
                    AttentionBackward::Deterministic => None,
                };
                let mut dqkv = self.device.alloc_output(Scalar::BF16, rows * 3 * c)?;
                self.ops.flash_attention_bwd(
                    qkv,
                    &acts.o,
                    lse,
                    &d_o,
                    &mut delta,
                    &mut dqkv,
                    dq_acc.as_mut(),
                    self.batch,
                    t,
                    nh,
                    d,
                    scale,
                )?;
                dqkv
            }
            Heads::Materialized { q, k, v, p } => {
                let d_o = self.linear_backward(&acts.o, &mut b.wo, dy, rows, c, c)?;
                let mut do_heads = self.alloc(bh * t * d)?;
                self.ops
                    .split_heads(&d_o, &mut do_heads, self.batch, t, nh, d, 1, 0)?;
                let (mut dq, mut dk, mut dv) = (
                    self.alloc(bh * t * d)?,
                    self.alloc(bh * t * d)?,
                    self.alloc(bh * t * d)?,
                );
                let mut ds = self.alloc(bh * t * t)?;
                self.ops.attention_bwd(
                    q, k, v, p, &do_heads, &mut dq, &mut dk, &mut dv, &mut ds, bh, t, d, scale,
                )?;
                let mut dqkv = self.alloc(rows * 3 * c)?;
                for (slot, g) in [&dq, &dk, &dv].into_iter().enumerate() {
                    self.ops
                        .merge_heads(g, &mut dqkv, self.batch, t, nh, d, 3, slot)?;
                }
                dqkv
            }
        };
        // The norm's output gradient in the operand dtype, as autocast's
        // backward gives it: half the bytes for the norm's backward to read.
        self.linear_backward_to(&acts.a, &mut b.wqkv, &dqkv, rows, c, 3 * c, self.half())
    }

    /// The MLP sublayer; y as in [`Kit::attention`].
    fn mlp(&self, b: &Block, h: SiteInput, out: Scalar) -> Result<(Buffer, MlpActs)> {
        let (c, f, rows) = (self.cfg.width, self.cfg.hidden(), self.tokens());
        let (a, rstd) = self.norm(h, &b.norm2.value)?;
        // u in the operand dtype: kept for GELU's backward at half the bytes.
        let (u, g, a) = if self.fused_mlp() {
            let mut u = self.device.alloc_output(Scalar::BF16, rows * f)?;
            let mut g = self.device.alloc_output(Scalar::BF16, rows * f)?;
            let w1 = self.weight(&b.w1)?;
            self.ops.linear_gelu(&a, w1, &mut u, &mut g, rows, f, c)?;
            (u, g, a)
        } else {
            let (u, a) = self.linear_to(a, &b.w1, rows, c, f, self.half())?;
            let mut g = self.device.alloc_output(self.half(), rows * f)?;
            self.ops.gelu_fwd(&u, &mut g, rows * f)?;
            (u, g, a)
        };
        let (y, g) = self.linear_to(g, &b.w2, rows, f, c, self.output_dtype(out))?;
        // In bf16 the backward makes g again from u (`Ops::gelu_bwd_regen`).
        let g = (self.cfg.precision == Precision::F32).then_some(g);
        Ok((y, MlpActs { a, rstd, u, g }))
    }

    /// The MLP's backward down to its norm's output (the caller finishes
    /// with the norm's backward).
    fn mlp_backward(&self, b: &mut Block, acts: &MlpActs, dy: &Buffer) -> Result<Buffer> {
        let (c, f, rows) = (self.cfg.width, self.cfg.hidden(), self.tokens());
        let du = match &acts.g {
            Some(g) => {
                let dg = self.linear_backward(g, &mut b.w2, dy, rows, f, c)?;
                let mut du = self.device.alloc_output(self.half(), rows * f)?;
                self.ops.gelu_bwd(&acts.u, &dg, &mut du, rows * f)?;
                du
            }
            None => {
                // dG in bf16 (as autocast's backward gives it), then dU and
                // G again in one pass, then W2's gradient from that G.
                let mut rounded = None;
                let dy16 = self.operand_ref(dy, rows * c, &mut rounded)?;
                let mut du = self.device.alloc_output(Scalar::BF16, rows * f)?;
                let mut g = self.device.alloc_output(Scalar::BF16, rows * f)?;
                if self.fused_mlp() {
                    let w2 = self.weight(&b.w2)?;
                    self.ops
                        .linear_gelu_bwd(dy16, w2, &acts.u, &mut du, &mut g, rows, f, c)?;
                } else {
                    let dg = self.input_grad(&b.w2, dy16, rows, f, c, Scalar::BF16)?;
                    self.ops
                        .gelu_bwd_regen(&acts.u, &dg, &mut du, &mut g, rows * f)?;
                }
                self.weight_grad(&g, &mut b.w2, dy16, rows, f, c)?;
                du
            }
        };
        // As at the end of the attention's backward.
        self.linear_backward_to(&acts.a, &mut b.w1, &du, rows, c, f, self.half())
    }

    /// Cross-entropy of `logits` against `targets` summed and divided by
    /// `loss_tokens` (the mean, unless data-parallel), into `out[0]` on the
    /// device, with its gradient when asked.
    fn cross_entropy(
        &self,
        logits: &Buffer,
        targets: &Buffer,
        dlogits: Option<&mut Buffer>,
        out: &mut Buffer,
    ) -> Result<()> {
        let (rows, v) = (self.tokens(), self.cfg.vocab);
        let mut losses = self.alloc(rows)?;
        let scale = 1.0 / self.loss_tokens as f32;
        self.ops
            .cross_entropy(logits, targets, &mut losses, dlogits, rows, v, scale)?;
        self.ops.sum(&losses, rows, out, 0, scale, Out::Write)?;
        Ok(())
    }
}

/// The gradient all-reduce of one data-parallel step: every gradient buffer
/// is handed to the collective once, as soon as the backward has written it
/// for the last time, so its reduction overlaps the rest of the backward.
struct Reducer<'c> {
    coll: &'c mut Collective,
    /// Addresses of the buffers handed over this step (checked against the
    /// model's gradients at the end: each exactly once).
    seen: Vec<usize>,
}

impl Reducer<'_> {
    fn ready(&mut self, bufs: &mut [&mut Buffer]) -> Result<()> {
        self.seen
            .extend(bufs.iter().map(|b| &**b as *const Buffer as usize));
        Ok(self.coll.reduce_ready(bufs)?)
    }
}

/// The model's sublayers as the residual mode sees them: site 2l is block
/// l's attention, site 2l + 1 its MLP.
struct Sites<'a, 'c> {
    kit: &'a Kit,
    blocks: &'a mut [Block],
    acts: &'a mut Vec<Option<SiteActs>>,
    /// Data-parallel backward: where a sublayer's finished gradients go.
    reduce: Option<&'a mut Reducer<'c>>,
}

impl Sublayers for Sites<'_, '_> {
    fn forward(&mut self, site: usize, h: SiteInput, out: Scalar) -> Result<Buffer> {
        let block = &self.blocks[site / 2];
        self.kit.ops.set_phase("forward");
        let (y, acts) = if site.is_multiple_of(2) {
            let (y, a) = self.kit.attention(block, h, out)?;
            (y, SiteActs::Attn(a))
        } else {
            let (y, a) = self.kit.mlp(block, h, out)?;
            (y, SiteActs::Mlp(a))
        };
        self.kit.ops.set_phase(RESIDUAL_FORWARD);
        if self.acts.len() <= site {
            self.acts.resize_with(site + 1, || None);
        }
        self.acts[site] = Some(acts);
        Ok(y)
    }

    fn backward(&mut self, site: usize, h: &Buffer, dy: &Buffer) -> Result<StreamGrad> {
        self.kit.ops.set_phase("backward");
        let (da, rstd) = self.backward_to_norm(site, dy)?;
        let mut dh = self.kit.alloc(self.kit.tokens() * self.kit.cfg.width)?;
        let dh16 = self.norm_backward(site, h, &da, &rstd, &mut dh, Out::Write)?;
        self.kit.ops.set_phase(RESIDUAL_BACKWARD);
        Ok(StreamGrad { g: dh, g16: dh16 })
    }

    fn backward_add(&mut self, site: usize, h: &Buffer, g: &mut StreamGrad) -> Result<()> {
        self.kit.ops.set_phase("backward");
        // g is read as ∂L/∂y only before the norm's backward adds into it;
        // the site's backward takes ∂L/∂y only as a GEMM operand, so its bf16
        // rounding serves where there is one.
        let (da, rstd) = self.backward_to_norm(site, g.g16.as_ref().unwrap_or(&g.g))?;
        g.g16 = self.norm_backward(site, h, &da, &rstd, &mut g.g, Out::Add)?;
        self.kit.ops.set_phase(RESIDUAL_BACKWARD);
        Ok(())
    }
}

impl Sites<'_, '_> {
    /// A site's backward from ∂L/∂y down to the gradient at its norm's
    /// output, and the norm's saved 1/rms.
    fn backward_to_norm(&mut self, site: usize, dy: &Buffer) -> Result<(Buffer, Buffer)> {
        let block = &mut self.blocks[site / 2];
        match self.acts.get_mut(site).and_then(Option::take) {
            Some(SiteActs::Attn(a)) => Ok((self.kit.attention_backward(block, &a, dy)?, a.rstd)),
            Some(SiteActs::Mlp(a)) => Ok((self.kit.mlp_backward(block, &a, dy)?, a.rstd)),
            None => Err(anyhow!("site {site}: backward without a forward")),
        }
    }

    /// The site's norm backward into `dh` (`mode`; returns dh's bf16
    /// rounding in a bf16 run); then the block's weights of this site are
    /// final for the step (each serves one site), so a data-parallel run
    /// hands their gradients to the reduction.
    fn norm_backward(
        &mut self,
        site: usize,
        h: &Buffer,
        da: &Buffer,
        rstd: &Buffer,
        dh: &mut Buffer,
        mode: Out,
    ) -> Result<Option<Buffer>> {
        let block = &mut self.blocks[site / 2];
        let attn = site.is_multiple_of(2);
        let norm = if attn {
            &mut block.norm1
        } else {
            &mut block.norm2
        };
        let dh16 = self.kit.norm_backward_into(h, norm, rstd, da, dh, mode)?;
        if let Some(r) = self.reduce.as_deref_mut() {
            if attn {
                r.ready(&mut [
                    &mut block.norm1.grad,
                    &mut block.wqkv.grad,
                    &mut block.wo.grad,
                ])?;
            } else {
                r.ready(&mut [
                    &mut block.norm2.grad,
                    &mut block.w1.grad,
                    &mut block.w2.grad,
                ])?;
            }
        }
        Ok(dh16)
    }
}

impl Model {
    /// A freshly initialised model (GPT-2 style: N(0, 0.02²) matrices, the
    /// output projections of each block scaled down by sqrt(2·layers), unit
    /// norm gains), deterministic in `seed`. The matrices are drawn on the
    /// device ([`Weight::normal`]: a sum of 12 uniforms, so within 6σ), the
    /// same values on every device.
    pub fn new(
        cfg: ModelConfig,
        device: Arc<Device>,
        ops: Arc<Ops>,
        residual: Box<dyn Residual>,
        batch: usize,
        seed: u64,
    ) -> Result<Model> {
        let (c, v, t, f) = (cfg.width, cfg.vocab, cfg.context, cfg.hidden());
        let dev = &device;
        let std = 0.02;
        let out_std = std / (2.0 * cfg.layers as f32).sqrt();
        // Every matrix is its own Philox stream of `seed`, numbered in order.
        let mut stream = 0u32;
        let mut normal = |n: usize, std: f32| {
            stream += 1;
            Weight::normal(&ops, n, std, seed, stream - 1)
        };
        let wte = normal(v * c, std)?;
        let wpe = normal(t * c, std)?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            blocks.push(Block {
                norm1: Weight::new(dev, &vec![1.0; c])?,
                wqkv: normal(c * 3 * c, std)?,
                wo: normal(c * c, out_std)?,
                norm2: Weight::new(dev, &vec![1.0; c])?,
                w1: normal(c * f, std)?,
                w2: normal(f * c, out_std)?,
            });
        }
        let norm_f = Weight::new(dev, &vec![1.0; c])?;
        let head = normal(c * v, std)?;
        Ok(Model {
            kit: Kit {
                loss_tokens: batch * cfg.context,
                cfg,
                batch,
                device,
                ops,
            },
            wte,
            wpe,
            blocks,
            norm_f,
            head,
            residual,
            acts: Vec::new(),
        })
    }

    /// This model holds one rank's share of a data-parallel batch of
    /// `global_batch` sequences: its loss (and so every gradient) is divided
    /// by the global batch's token count instead of its own. The sum over the
    /// ranks is then the global mean loss and its gradient, and every value
    /// a token contributes is computed exactly as on a single device (a 1/R
    /// applied afterwards would round differently, which the bf16 gradient
    /// streams of hc/mhc would turn into differences of a bf16 ulp).
    pub fn set_global_batch(&mut self, global_batch: usize) -> Result<()> {
        if global_batch < self.kit.batch {
            bail!(
                "a global batch of {global_batch} sequences is smaller than this rank's {}",
                self.kit.batch
            );
        }
        self.kit.loss_tokens = global_batch * self.kit.cfg.context;
        Ok(())
    }

    /// Every parameter with its gradient, in a fixed order.
    pub fn slots(&mut self) -> Vec<Slot<'_>> {
        let (c, v, t, f) = (
            self.kit.cfg.width,
            self.kit.cfg.vocab,
            self.kit.cfg.context,
            self.kit.cfg.hidden(),
        );
        let mut s = vec![
            Slot::of("wte", &[v, c], false, &mut self.wte),
            Slot::of("wpe", &[t, c], false, &mut self.wpe),
        ];
        let bf16 = self.kit.cfg.precision == Precision::Bf16;
        for (l, b) in self.blocks.iter_mut().enumerate() {
            s.push(Slot::of(
                format!("block{l}.norm1"),
                &[c],
                false,
                &mut b.norm1,
            ));
            s.push(Slot::matrix(
                format!("block{l}.wqkv"),
                &[c, 3 * c],
                &mut b.wqkv,
                bf16,
            ));
            s.push(Slot::matrix(
                format!("block{l}.wo"),
                &[c, c],
                &mut b.wo,
                bf16,
            ));
            s.push(Slot::of(
                format!("block{l}.norm2"),
                &[c],
                false,
                &mut b.norm2,
            ));
            s.push(Slot::matrix(
                format!("block{l}.w1"),
                &[c, f],
                &mut b.w1,
                bf16,
            ));
            s.push(Slot::matrix(
                format!("block{l}.w2"),
                &[f, c],
                &mut b.w2,
                bf16,
            ));
        }
        s.push(Slot::of("norm_f", &[c], false, &mut self.norm_f));
        s.push(Slot::matrix("head", &[c, v], &mut self.head, bf16));
        s.extend(self.residual.slots());
        s
    }

    /// Learned values in the model, residual parameters included.
    pub fn parameter_count(&mut self) -> usize {
        self.slots()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// Forward to the logits `[tokens, vocab]`, keeping what the backward needs.
    fn forward(&mut self, inputs: &[i32]) -> Result<(Buffer, HeadActs)> {
        self.kit.ops.set_phase("forward");
        // The matrices as the GEMMs take them, from this step's values.
        if self.kit.cfg.precision == Precision::Bf16 {
            for b in &mut self.blocks {
                for w in [&mut b.wqkv, &mut b.wo, &mut b.w1, &mut b.w2] {
                    w.round(&self.kit.ops)?;
                }
            }
            self.head.round(&self.kit.ops)?;
        }
        let kit = &self.kit;
        let (c, v, t, rows) = (kit.cfg.width, kit.cfg.vocab, kit.cfg.context, kit.tokens());
        let tokens = kit.device.upload(inputs)?;
        let mut x0 = kit.alloc(rows * c)?;
        kit.ops.embed_fwd(
            &tokens,
            &self.wte.value,
            Some(&self.wpe.value),
            &mut x0,
            rows,
            t,
            v,
            c,
        )?;
        let mut sites = Sites {
            kit,
            blocks: &mut self.blocks,
            acts: &mut self.acts,
            reduce: None,
        };
        kit.ops.set_phase(RESIDUAL_FORWARD);
        let out = self.residual.forward(x0, &mut sites)?;
        kit.ops.set_phase("forward");
        let norm_f = &self.norm_f.value;
        let (xf, (hf, rstd_f)) = match out {
            StreamOut::Stream(xf) => {
                let norm = kit.norm(SiteInput::Stream(&xf), norm_f)?;
                (xf, norm)
            }
            StreamOut::Sum { x, y } => {
                let mut xf = kit.alloc(rows * c)?;
                let sum = SiteInput::Sum {
                    x,
                    y: &y,
                    sum: &mut xf,
                };
                let norm = kit.norm(sum, norm_f)?;
                (xf, norm)
            }
        };
        let (logits, hf) = kit.linear(hf, &self.head, rows, c, v)?;
        Ok((
            logits,
            HeadActs {
                tokens,
                xf,
                rstd_f,
                hf,
            },
        ))
    }

    /// Bytes the forward keeps for the backward (see [`Step::saved_bytes`]).
    fn saved_bytes(&self, logits: &Buffer, head: &HeadActs) -> usize {
        let sites: usize = self
            .acts
            .iter()
            .flatten()
            .map(|a| match a {
                SiteActs::Attn(a) => {
                    let heads: usize = match &a.heads {
                        Heads::Fused { qkv, lse } => [qkv, lse].map(bytes).iter().sum(),
                        Heads::Materialized { q, k, v, p } => [q, k, v, p].map(bytes).iter().sum(),
                    };
                    [&a.a, &a.rstd, &a.o].map(bytes).iter().sum::<usize>() + heads
                }
                SiteActs::Mlp(m) => {
                    [&m.a, &m.rstd, &m.u].map(bytes).iter().sum::<usize>()
                        + m.g.as_ref().map_or(0, bytes)
                }
            })
            .sum();
        let head = [&head.tokens, &head.xf, &head.rstd_f, &head.hf, logits].map(bytes);
        sites + self.residual.activation_bytes() + head.iter().sum::<usize>()
    }

    /// Mean cross-entropy (nats per byte) of `targets` after `inputs`, forward
    /// only (divided by the global batch's tokens after [`Model::set_global_batch`]).
    pub fn loss(&mut self, inputs: &[i32], targets: &[i32]) -> Result<f32> {
        let (logits, _) = self.forward(inputs)?;
        self.acts.clear();
        let targets = self.kit.device.upload(targets)?;
        let mut mean = self.kit.alloc(1)?;
        self.kit.cross_entropy(&logits, &targets, None, &mut mean)?;
        Ok(self.kit.device.download::<f32>(&mean)?[0])
    }

    /// Forward and backward: overwrites every gradient and leaves the mean
    /// loss (see [`Model::set_global_batch`]) on the device, and H_res of the given tokens
    /// when asked (see [`Residual::h_res`]).
    ///
    /// With a collective (data-parallel runs), every gradient is summed over
    /// the ranks: each block's sublayer gradients as soon as its backward is
    /// done (NCCL overlaps them with the rest of the backward), the head's
    /// and final norm's right after they are computed, the embeddings' and
    /// the residual mode's (which accumulate over the sites) at the end. On
    /// return the sums are ordered before any later work on the device.
    pub fn forward_backward(
        &mut self,
        inputs: &[i32],
        targets: &[i32],
        h_res_tokens: Option<&[usize]>,
        collective: Option<&mut Collective>,
    ) -> Result<Step> {
        let mut reduce = collective.map(|coll| Reducer {
            coll,
            seen: Vec::new(),
        });
        // The residual's site gradients accumulate; the model's are overwritten.
        for s in self.residual.slots() {
            self.kit.device.zero(s.grad)?;
        }
        let (logits, head) = self.forward(inputs)?;
        let saved_bytes = self.saved_bytes(&logits, &head);
        // Activations peak here: everything the backward needs is alive.
        let memory = self
            .kit
            .device
            .memory_info()
            .map(|(free, total)| total - free);
        let h_res = match h_res_tokens {
            Some(tokens) => self.residual.h_res(tokens)?,
            None => None,
        };
        let kit = &self.kit;
        let (c, v, t, rows) = (kit.cfg.width, kit.cfg.vocab, kit.cfg.context, kit.tokens());
        kit.ops.set_phase("backward");
        let targets = kit.device.upload(targets)?;
        let mut dlogits = kit.alloc(rows * v)?;
        // [loss, squared gradient norm]: the optimiser fills in the second.
        let mut stats = kit.alloc(2)?;
        kit.cross_entropy(&logits, &targets, Some(&mut dlogits), &mut stats)?;
        let dhf =
            kit.linear_backward_to(&head.hf, &mut self.head, &dlogits, rows, c, v, kit.half())?;
        let dxf = kit.norm_backward(&head.xf, &mut self.norm_f, &head.rstd_f, &dhf)?;
        if let Some(r) = reduce.as_mut() {
            r.ready(&mut [&mut self.head.grad, &mut self.norm_f.grad])?;
        }
        let mut sites = Sites {
            kit,
            blocks: &mut self.blocks,
            acts: &mut self.acts,
            reduce: reduce.as_mut(),
        };
        kit.ops.set_phase(RESIDUAL_BACKWARD);
        let dx0 = self.residual.backward(dxf, &mut sites)?;
        kit.ops.set_phase("backward");
        kit.ops
            .embed_bwd(inputs, &dx0, &mut self.wte.grad, v, c, Out::Write)?;
        kit.ops
            .embed_pos_bwd(&dx0, &mut self.wpe.grad, rows, t, c, Out::Write)?;
        if let Some(mut r) = reduce {
            {
                let mut slots = self.residual.slots();
                let mut rest: Vec<&mut Buffer> = vec![&mut self.wte.grad, &mut self.wpe.grad];
                rest.extend(slots.iter_mut().map(|s| &mut *s.grad));
                r.ready(&mut rest)?;
            }
            r.coll.finish()?;
            let mut seen = r.seen;
            let mut want: Vec<usize> = self
                .slots()
                .iter()
                .map(|s| &*s.grad as *const Buffer as usize)
                .collect();
            seen.sort_unstable();
            want.sort_unstable();
            if seen != want {
                bail!(
                    "data-parallel step: {} gradient buffers were reduced for {} gradients \
                     (each must be reduced exactly once)",
                    seen.len(),
                    want.len()
                );
            }
        }
        Ok(Step {
            stats,
            h_res,
            memory,
            saved_bytes,
        })
    }
}

/// What one training step's forward and backward report.
pub struct Step {
    /// `[loss, _]` on the device (f32; the second for the optimiser's
    /// squared gradient norm), read when the step is reported.
    pub stats: Buffer,
    /// `[token][site]` n×n H_res matrices, when asked for and the mode has them.
    pub h_res: Option<Vec<Vec<Vec<f32>>>>,
    /// Device memory in use after the forward, in bytes (GPU only).
    pub memory: Option<usize>,
    /// Bytes held for the backward after the forward: every site's
    /// activations, the residual mode's, the head's and the logits (what
    /// [`MemoryPlan::saved`](super::memory::MemoryPlan::saved) predicts).
    pub saved_bytes: usize,
}
