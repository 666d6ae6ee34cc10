//! AdamW with global-norm gradient clipping, both through pack kernels: the
//! squared gradient norm is left on the device beside the loss (a step's
//! "stats"), where the update reads it to clip (or to skip a non-finite
//! step): the host reads nothing before the update.
//!
//! On a GPU the optimiser first gathers every parameter, gradient and moment
//! into one allocation each ([`Device::alloc_shared`]; the model's buffers
//! become views of it), ordered so that parameters updated alike (weight
//! decay, learning-rate scale) are contiguous: the gradient norm is then one
//! reduction and the update one launch per such group, not one per tensor.
//! The interpreter's buffers cannot share memory; on the CPU every tensor
//! is its own launch.
//!
//! A matrix lent with its bf16 copy ([`Bf16Copy`]: the GEMMs' operand in a
//! bf16 run) has that copy written by the update itself (`adamw_bf16`), so
//! no cast of every matrix runs before the next forward; gathered, the
//! copies of a group are one allocation too.

use super::params::{Bf16Copy, Slot};
use crate::ops::{self, Ops, Out};
use anyhow::{bail, Result};
use tile_runtime::{Buffer, Device, Scalar};

/// Each part of a gathered allocation starts at a multiple of this many
/// elements (256 bytes of f32: what cuBLAS and TMA like a tensor to start at).
const ALIGN: usize = 64;

/// AdamW's first and second moments, one pair per parameter in slot order.
pub struct AdamW {
    pub moments: Vec<(Buffer, Buffer)>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    gathered: Option<Gathered>,
}

/// The parameters gathered into one allocation per kind (see the module doc).
struct Gathered {
    /// Every gradient, padding (zero, never written) included.
    grads: Buffer,
    groups: Vec<Group>,
}

/// Contiguous parameters that AdamW updates alike.
struct Group {
    decay: bool,
    lr_scale: f32,
    /// Views of the value, gradient and moment allocations.
    p: Buffer,
    g: Buffer,
    m: Buffer,
    v: Buffer,
    /// The group's bf16 copies, where its parameters have them (every one
    /// does or none: [`AdamW::gather`]'s key).
    p16: Option<Buffer>,
}

impl AdamW {
    /// Moments for `slots`; with `gather` (on a GPU), every slot's value and
    /// gradient moved into one allocation each first (the slots' buffers
    /// are replaced by views holding the same values).
    pub fn new(
        device: &Device,
        slots: &mut [Slot],
        gather: bool,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Result<AdamW> {
        let (moments, gathered) = if gather {
            let (moments, g) = Self::gather(device, slots)?;
            (moments, Some(g))
        } else {
            let moments = slots
                .iter()
                .map(|s| {
                    let len = s.value.len();
                    Ok((
                        device.alloc(Scalar::F32, len)?,
                        device.alloc(Scalar::F32, len)?,
                    ))
                })
                .collect::<Result<_>>()?;
            (moments, None)
        };
        Ok(AdamW {
            moments,
            beta1,
            beta2,
            eps,
            weight_decay,
            gathered,
        })
    }

    /// Whether every parameter lives in one allocation (one launch per group).
    pub fn is_gathered(&self) -> bool {
        self.gathered.is_some()
    }

    fn gather(device: &Device, slots: &mut [Slot]) -> Result<(Vec<(Buffer, Buffer)>, Gathered)> {
        let key = |s: &Slot| (!s.decay, s.lr_scale.to_bits(), s.bf16.is_none());
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by_key(|&i| key(&slots[i]));
        let mut at = vec![0; slots.len()];
        let mut total = 0usize;
        for &i in &order {
            at[i] = total;
            total += slots[i].value.len().next_multiple_of(ALIGN);
        }
        let total = total.max(1);
        let [values, grads, m_all, v_all] =
            [(); 4].map(|_| device.alloc_shared(Scalar::F32, total));
        let (values, grads, m_all, v_all) = (values?, grads?, m_all?, v_all?);
        let mut moments = Vec::with_capacity(slots.len());
        for (s, &off) in slots.iter_mut().zip(&at) {
            let len = s.value.len();
            let (mut value, mut grad) = (values.view(off, len)?, grads.view(off, len)?);
            device.copy(s.value, &mut value)?;
            device.copy(s.grad, &mut grad)?;
            *s.value = value;
            *s.grad = grad;
            moments.push((m_all.view(off, len)?, v_all.view(off, len)?));
        }
        // Groups: runs of `order` with one key, from the first part's start
        // to the last part's end.
        let mut groups = Vec::new();
        let mut run_start = 0;
        for k in 1..=order.len() {
            if k < order.len() && key(&slots[order[k]]) == key(&slots[order[run_start]]) {
                continue;
            }
            let (first, last) = (order[run_start], order[k - 1]);
            let (lo, hi) = (at[first], at[last] + slots[last].value.len());
            let p16 = match slots[first].bf16.is_some() {
                true => {
                    let p16 = device.alloc_shared(Scalar::BF16, hi - lo)?;
                    for &i in &order[run_start..k] {
                        let len = slots[i].value.len();
                        if let Some(Bf16Copy { buf, current }) = slots[i].bf16.as_mut() {
                            **buf = Some(p16.view(at[i] - lo, len)?);
                            **current = false;
                        }
                    }
                    Some(p16)
                }
                false => None,
            };
            groups.push(Group {
                decay: slots[first].decay,
                lr_scale: slots[first].lr_scale,
                p: values.view(lo, hi - lo)?,
                g: grads.view(lo, hi - lo)?,
                m: m_all.view(lo, hi - lo)?,
                v: v_all.view(lo, hi - lo)?,
                p16,
            });
            run_start = k;
        }
        Ok((moments, Gathered { grads, groups }))
    }

    /// The squared global L2 norm of every gradient, into `stats[1]`.
    pub fn grad_sum_squares(&self, ops: &Ops, slots: &[Slot], stats: &mut Buffer) -> Result<()> {
        if let Some(g) = &self.gathered {
            ops.sum_squares(&g.grads, g.grads.len(), stats, 1, Out::Write)?;
            return Ok(());
        }
        for (i, s) in slots.iter().enumerate() {
            // The first sum writes, so nothing needs zero-filling.
            let mode = if i == 0 { Out::Write } else { Out::Add };
            ops.sum_squares(s.grad, s.grad.len(), stats, 1, mode)?;
        }
        Ok(())
    }

    /// One update at `lr`, the gradients clipped to a global norm of `clip`
    /// (none when 0) by the squared norm in `stats[1]`, nothing changed when
    /// it or the loss (`stats[0]`) is not finite; `t` counts updates from 1
    /// (bias correction).
    pub fn update(
        &mut self,
        ops: &Ops,
        slots: &mut [Slot],
        lr: f32,
        stats: &Buffer,
        clip: f32,
        t: u64,
    ) -> Result<()> {
        if slots.len() != self.moments.len() {
            bail!(
                "AdamW has {} moment pairs for {} parameters",
                self.moments.len(),
                slots.len()
            );
        }
        let hp = |decay: bool, lr_scale: f32| ops::AdamW {
            lr: lr * lr_scale,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: if decay { self.weight_decay } else { 0.0 },
        };
        if let Some(g) = self.gathered.as_mut() {
            for grp in g.groups.iter_mut() {
                let n = grp.p.len();
                let hp = hp(grp.decay, grp.lr_scale);
                ops.adamw(
                    &mut grp.p,
                    &grp.g,
                    &mut grp.m,
                    &mut grp.v,
                    grp.p16.as_mut(),
                    n,
                    &hp,
                    t,
                    stats,
                    clip,
                )?;
            }
            // The copies now hold the values rounded (the slots' views).
            for c in slots.iter_mut().filter_map(|s| s.bf16.as_mut()) {
                *c.current = c.buf.is_some();
            }
            return Ok(());
        }
        for (s, (m, v)) in slots.iter_mut().zip(self.moments.iter_mut()) {
            let n = s.value.len();
            let hp = hp(s.decay, s.lr_scale);
            let p16 = s.bf16.as_mut().and_then(|c| c.buf.as_mut());
            let written = p16.is_some();
            ops.adamw(s.value, s.grad, m, v, p16, n, &hp, t, stats, clip)?;
            if let Some(c) = s.bf16.as_mut() {
                *c.current = written;
            }
        }
        Ok(())
    }
}
