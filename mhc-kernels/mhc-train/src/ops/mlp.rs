//! The MLP's two GEMMs that meet GELU, with GELU in their epilogue
//! (`linear_gelu`, `linear_gelu_bwd` in kernels/model/elementwise.tile): our
//! own `dot` kernels where the unfused path is a cuBLAS GEMM plus a GELU pass
//! that reads its output back (`Ops::gelu_fwd`, `Ops::gelu_bwd_regen`).
//! bf16 operands and outputs, f32 accumulation, rounded as the unfused path
//! rounds: the GEMM's result to bf16 first, GELU from that.

use super::{check, elements, k, Ops, OpsError};
use tile_runtime::{Buffer, Scalar};

/// Output tile (BM, BN) and warps of each kernel on the GPU: the fastest
/// of the tune space at the 86M model's batch-16 shape (H100, tile-tune,
/// m = 16384, n = 3072, k = 768, session 30): forward 0.201 ms (cuBLAS's
/// GEMM alone about 0.123 ms, plus gelu_fwd's 0.070); backward 0.538 ms
/// (cuBLAS's GEMM about 0.119 ms plus gelu_bwd_regen's 0.136). The
/// backward's epilogue (u loaded, GELU and its slope) spills from 128 × 128
/// up.
const FWD_TILE: (usize, usize, u32) = (128, 256, 8);
const BWD_TILE: (usize, usize, u32) = (64, 128, 8);

/// The kernels index in i32: every operand must have fewer than 2³¹ elements.
fn check_i32(op: &'static str, m: usize, n: usize, k: usize) -> Result<(i32, i32, i32), OpsError> {
    for (what, dims) in [("a", [m, k]), ("w", [k, n]), ("u", [m, n])] {
        if elements(op, &dims)? > i32::MAX as usize {
            return Err(OpsError::Shape {
                op,
                message: format!(
                    "`{what}` has {dims:?} = more than 2^31 elements, past the kernel's i32 offsets; \
                     use the cuBLAS path (--mlp-gemm cublas)"
                ),
            });
        }
    }
    Ok((m as i32, n as i32, k as i32))
}

impl Ops {
    /// u = a · w and g = GELU(u) (a [m, k], w [k, n], u and g [m, n], all
    /// bf16): [`Ops::gemm`] into bf16 and [`Ops::gelu_fwd`] in one pass.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_gelu(
        &self,
        a: &Buffer,
        w: &Buffer,
        u: &mut Buffer,
        g: &mut Buffer,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "linear_gelu";
        check(OP, "a", a, Scalar::BF16, &[m, k])?;
        check(OP, "w", w, Scalar::BF16, &[k, n])?;
        check(OP, "u", u, Scalar::BF16, &[m, n])?;
        check(OP, "g", g, Scalar::BF16, &[m, n])?;
        let (mi, ni, ki) = check_i32(OP, m, n, k)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (bm, bn, warps) = FWD_TILE;
        self.launch(
            k::LinearGeluMeta {
                BM: bm as i64,
                BN: bn as i64,
                BK: 64,
            },
            warps,
            [m.div_ceil(bm) * n.div_ceil(bn), 1, 1],
            k::LinearGelu {
                a,
                w,
                u,
                g,
                M: mi,
                N: ni,
                K: ki,
            },
        )
    }

    /// The backward of the MLP's second GEMM into GELU: dg = dy · wᵀ (dy
    /// [m, k], w [n, k], the second GEMM's weight) rounded to bf16, then
    /// du = dg · GELU'(u) and g = GELU(u) again (u, du, g [m, n], all bf16):
    /// [`Ops::gemm`] into bf16 and [`Ops::gelu_bwd_regen`] in one pass, dg
    /// never stored.
    #[allow(clippy::too_many_arguments)]
    pub fn linear_gelu_bwd(
        &self,
        dy: &Buffer,
        w: &Buffer,
        u: &Buffer,
        du: &mut Buffer,
        g: &mut Buffer,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), OpsError> {
        const OP: &str = "linear_gelu_bwd";
        check(OP, "dy", dy, Scalar::BF16, &[m, k])?;
        check(OP, "w", w, Scalar::BF16, &[n, k])?;
        check(OP, "u", u, Scalar::BF16, &[m, n])?;
        check(OP, "du", du, Scalar::BF16, &[m, n])?;
        check(OP, "g", g, Scalar::BF16, &[m, n])?;
        let (mi, ni, ki) = check_i32(OP, m, n, k)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let (bm, bn, warps) = BWD_TILE;
        self.launch(
            k::LinearGeluBwdMeta {
                BM: bm as i64,
                BN: bn as i64,
                BK: 64,
            },
            warps,
            [m.div_ceil(bm) * n.div_ceil(bn), 1, 1],
            k::LinearGeluBwd {
                dy,
                w,
                u,
                du,
                g,
                M: mi,
                N: ni,
                K: ki,
            },
        )
    }
}
