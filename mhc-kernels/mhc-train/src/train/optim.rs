//! AdamW with global-norm gradient clipping, both through pack kernels: the
//! gradient norm is the square root of the per-tensor sums of squares (a few
//! scalars read back to the host), the update one kernel per tensor.

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

    /// The global L2 norm of every gradient (one scalar read back).
    pub fn grad_norm(ops: &Ops, slots: &[Slot]) -> Result<f32> {
        // Written by the first sum (Out::Write), so no zero-fill is needed.
        let mut total = ops.device().alloc_output(Scalar::F32, 1)?;
        for (i, s) in slots.iter().enumerate() {
            let mode = if i == 0 { Out::Write } else { Out::Add };
            ops.sum_squares(s.grad, s.grad.len(), &mut total, 0, mode)?;
        }
        Ok(ops.device().download::<f32>(&total)?[0].sqrt())
    }

    /// One update at `lr`, gradients multiplied by `grad_scale` (clipping);
    /// `t` counts updates from 1 (bias correction).
    pub fn update(
        &mut self,
        ops: &Ops,
        slots: &mut [Slot],
        lr: f32,
        grad_scale: f32,
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
            ops.adamw(s.value, s.grad, m, v, n, &hp, t, grad_scale)?;
        }
        Ok(())
    }
}
