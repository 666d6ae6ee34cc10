//! AdamW with global-norm gradient clipping, both through pack kernels: the
//! squared gradient norm is the sum of the per-tensor sums of squares, left
//! on the device beside the loss (a step's "stats"), where the update, one
//! kernel per tensor, reads it to clip (or to skip a non-finite step): the
//! host reads nothing before the update.

use super::params::Slot;
use crate::ops::{self, Ops, Out};
use anyhow::{bail, Result};
use tile_runtime::{Buffer, Device, Scalar};

/// AdamW's first and second moments, one pair per parameter in slot order.
pub struct AdamW {
    pub moments: Vec<(Buffer, Buffer)>,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamW {
    pub fn new(
        device: &Device,
        slots: &[Slot],
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> Result<AdamW> {
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
        Ok(AdamW {
            moments,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
    }

    /// The squared global L2 norm of every gradient, into `stats[1]`.
    pub fn grad_sum_squares(ops: &Ops, slots: &[Slot], stats: &mut Buffer) -> Result<()> {
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
        for (s, (m, v)) in slots.iter_mut().zip(self.moments.iter_mut()) {
            let hp = ops::AdamW {
                lr: lr * s.lr_scale,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: if s.decay { self.weight_decay } else { 0.0 },
            };
            let n = s.value.len();
            ops.adamw(s.value, s.grad, m, v, n, &hp, t, stats, clip)?;
        }
        Ok(())
    }
}
