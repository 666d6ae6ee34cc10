//! Parameters as the optimiser and checkpoints see them: named f32 buffers
//! with their gradients, whoever owns them (the model or a residual adapter).

use crate::ops::Ops;
use tile_runtime::{Buffer, Device, Scalar};

/// A learned f32 tensor and its gradient, owned by the model; a matrix
/// also has its value rounded to bf16, the GEMMs' operand ([`Weight::round`]).
pub struct Weight {
    pub value: Buffer,
    pub grad: Buffer,
    /// The value rounded to bf16, the GEMMs' operand in bf16 runs (made on
    /// first use; the optimiser may move it into one allocation of its own).
    pub bf16: Option<Buffer>,
    /// Whether `bf16` holds the value rounded: set when [`Weight::round`]
    /// makes it or the optimiser's update writes it, cleared whenever the
    /// weight is lent out as a [`Slot`] (the borrower may change the value).
    bf16_current: bool,
}

impl Weight {
    pub fn new(device: &Device, data: &[f32]) -> anyhow::Result<Weight> {
        Ok(Weight {
            value: device.upload(data)?,
            grad: device.alloc(Scalar::F32, data.len())?,
            bf16: None,
            bf16_current: false,
        })
    }

    /// Round the value to its bf16 copy (made on first use), unless the copy
    /// is current already: before each forward, after the optimiser (which
    /// usually wrote the copy as it updated the value) or a checkpoint.
    pub fn round(&mut self, ops: &Ops) -> anyhow::Result<()> {
        if self.bf16_current && self.bf16.is_some() {
            return Ok(());
        }
        let n = self.value.len();
        if self.bf16.is_none() {
            self.bf16 = Some(ops.device().alloc_output(Scalar::BF16, n)?);
        }
        let half = self.bf16.as_mut().expect("just made");
        ops.cast_f32_bf16(&self.value, half, n)?;
        self.bf16_current = true;
        Ok(())
    }

    /// The bf16 copy made by [`Weight::round`].
    pub fn rounded(&self) -> anyhow::Result<&Buffer> {
        self.bf16
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("a matrix used before its bf16 copy was made"))
    }

    /// n values std · N(0, 1) drawn on the device from (seed, stream)
    /// ([`Ops::init_normal`]): nothing is drawn or copied on the host, and the
    /// values are the same on every device.
    pub fn normal(ops: &Ops, n: usize, std: f32, seed: u64, stream: u32) -> anyhow::Result<Weight> {
        let device = ops.device();
        let mut value = device.alloc_output(Scalar::F32, n)?;
        ops.init_normal(&mut value, n, std, seed, stream)?;
        Ok(Weight {
            value,
            grad: device.alloc(Scalar::F32, n)?,
            bf16: None,
            bf16_current: false,
        })
    }
}

/// One parameter lent to the optimiser or a checkpoint.
pub struct Slot<'a> {
    /// Unique, stable across runs: the checkpoint key.
    pub name: String,
    pub shape: Vec<usize>,
    /// Whether AdamW's weight decay applies (matrices yes; gains, biases, gates no).
    pub decay: bool,
    /// This parameter's learning rate as a multiple of the schedule's (1 but
    /// for the sites' dynamic coefficients: `--dynamic-lr-scale`).
    pub lr_scale: f32,
    pub value: &'a mut Buffer,
    pub grad: &'a mut Buffer,
    /// The bf16 copy of a matrix the GEMMs take in bf16 (none otherwise).
    pub bf16: Option<Bf16Copy<'a>>,
}

/// A matrix's bf16 copy, lent with its [`Slot`]: the optimiser may move it
/// into an allocation of its own and write it as it updates the value.
pub struct Bf16Copy<'a> {
    pub buf: &'a mut Option<Buffer>,
    /// Set by whoever leaves `buf` holding the value rounded.
    pub current: &'a mut bool,
}

impl<'a> Slot<'a> {
    /// `w` lent out; its bf16 copy counts as stale from now on.
    pub fn of(
        name: impl Into<String>,
        shape: &[usize],
        decay: bool,
        w: &'a mut Weight,
    ) -> Slot<'a> {
        Slot::lend(name.into(), shape, decay, w, false)
    }

    /// A decayed matrix, lent with its bf16 copy when `bf16` (a bf16 run).
    pub fn matrix(
        name: impl Into<String>,
        shape: &[usize],
        w: &'a mut Weight,
        bf16: bool,
    ) -> Slot<'a> {
        Slot::lend(name.into(), shape, true, w, bf16)
    }

    fn lend(name: String, shape: &[usize], decay: bool, w: &'a mut Weight, bf16: bool) -> Slot<'a> {
        w.bf16_current = false;
        Slot {
            name,
            shape: shape.to_vec(),
            decay,
            lr_scale: 1.0,
            value: &mut w.value,
            grad: &mut w.grad,
            bf16: bf16.then_some(Bf16Copy {
                buf: &mut w.bf16,
                current: &mut w.bf16_current,
            }),
        }
    }
}
