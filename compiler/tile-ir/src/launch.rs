//! What the host passes a compiled kernel besides its declared parameters:
//! one hidden `i64` per TMA operand, the device address of a tensor map the
//! host encodes at launch from the operand's description (or 0 when TMA
//! cannot describe the tensor; the kernel then copies without it). Codegen
//! produces these descriptions, packs store them, the runtime reads them.

use serde::{Deserialize, Serialize};

/// A launch-time integer: a kernel parameter's value or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HostScalar {
    Param(usize),
    Const(i64),
}

/// A tensor the host describes to TMA for one pipelined load: row-major
/// `rows × cols` elements of `elem_bytes` from pointer parameter `base`,
/// rows `row_stride` elements apart, fetched in boxes of `box_rows ×
/// box_cols` with `swizzle_bytes` (32, 64 or 128) shared-memory swizzling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TmaOperand {
    pub base: usize,
    pub elem_bytes: u32,
    pub rows: HostScalar,
    pub cols: HostScalar,
    pub row_stride: HostScalar,
    pub box_rows: u32,
    pub box_cols: u32,
    pub swizzle_bytes: u32,
}

impl TmaOperand {
    /// `a: rows M × cols K, row stride K, boxes of 128 × 64` (parameters by name).
    pub fn describe(&self, params: &[String]) -> String {
        let name = |i: usize| params.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
        let scalar = |h: HostScalar| match h {
            HostScalar::Param(i) => name(i),
            HostScalar::Const(c) => c.to_string(),
        };
        format!(
            "{}: rows {} × cols {}, row stride {}, boxes of {} × {}",
            name(self.base),
            scalar(self.rows),
            scalar(self.cols),
            scalar(self.row_stride),
            self.box_rows,
            self.box_cols
        )
    }
}
