//! `dot` by Hopper's warpgroup MMA (`wgmma.mma_async`): operands in swizzled
//! shared memory read through matrix descriptors, and the waits that keep the
//! accumulators' uses after the multiply.

use super::Lower;
use crate::emit::{Emitter, V};
use crate::layout::Mma;
use crate::prefetch::{self, SmemTile};
use crate::CodegenError;
use tile_ir::{Scalar, Span, ValueId};

/// A `wgmma` operand in shared memory: its byte offset (i32) and layout
/// there (swizzled).
type SwizzledOperand = (V, SmemTile);

impl<'c, 'k> Lower<'c, 'k> {
    /// The shared-memory byte offset (i32) and layout of each `wgmma`
    /// operand: its pipeline stage, or swizzled scratch it is staged into from
    /// registers (A K-major, B MN-major: both row-major tiles cut into atoms
    /// along their columns).
    pub(super) fn wgmma_operands(
        &mut self,
        a: ValueId,
        b: ValueId,
        s: Scalar,
        span: Span,
    ) -> Result<(SwizzledOperand, SwizzledOperand), CodegenError> {
        let swizzled = |shape: &[u32]| {
            let width = prefetch::swizzle_width(shape[1]).ok_or_else(|| {
                CodegenError::Internal("wgmma operand without a swizzle width".into())
            })?;
            let tile = SmemTile::Swizzled {
                rows: shape[0],
                width,
            };
            // Swizzle atoms start 1024-byte aligned.
            Ok((tile, 1024))
        };
        let [a, b] = self.dot_operands([a, b], s, span, true, &swizzled)?;
        Ok((a, b))
    }

    /// `dot` on Hopper's warpgroup MMA: per 16-wide k step, each warpgroup
    /// issues one `wgmma.mma_async.m64nNk16` per 64-row block it owns, with
    /// both operands read from their swizzled pipeline buffers through matrix
    /// descriptors (A K-major, B MN-major, i.e. transposed), then waits for
    /// them before the accumulators are used. The wait takes the
    /// accumulators as operands so that nothing reads them earlier.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dot_wgmma(
        &mut self,
        r: ValueId,
        ml: &Mma,
        kk: u32,
        ptx_ty: &str,
        (a_off, a_tile): SwizzledOperand,
        (b_off, b_tile): SwizzledOperand,
        acc: Vec<V>,
    ) -> Result<Vec<V>, CodegenError> {
        let (
            SmemTile::Swizzled {
                rows: am,
                width: wa,
            },
            SmemTile::Swizzled {
                rows: bk,
                width: wb,
            },
        ) = (a_tile, b_tile)
        else {
            return Err(CodegenError::Internal(
                "wgmma operand not in a swizzled buffer".into(),
            ));
        };
        let (gm, gn) = (ml.wm / 4, ml.wn);
        let (mg, ng) = (ml.shape[0] / gm, ml.shape[1] / gn);
        // Descriptor bits other than the start address: leading/stride byte
        // offsets (>> 4) at 16 and 32, the swizzle mode (128/64/32 B: 1/2/3) at 62.
        let mode = |w: u32| -> u64 {
            match w {
                64 => 1,
                32 => 2,
                _ => 3,
            }
        };
        let desc_bits = |lbo: u32, sbo: u32, w: u32| -> i64 {
            ((((lbo >> 4) as u64) << 16) | (((sbo >> 4) as u64) << 32) | (mode(w) << 62)) as i64
        };
        // A, K-major: the leading offset is unused (1 by convention), 8-row
        // groups are one atom (8 · wa · 2 bytes) apart.
        let a_bits = desc_bits(16, 8 * wa * 2, wa);
        // B, MN-major: atoms along N are `bk · wb · 2` bytes apart (leading),
        // 8-row groups along K one atom apart (stride).
        let b_bits = desc_bits(bk * wb * 2, 8 * wb * 2, wb);
        let warp = self.warp.unwrap();
        let (c2, c4) = (self.e.i32(2)?, self.e.i32(4)?);
        let group = self.e.binop("arith.shrui", warp, c2)?;
        let gnv = self.e.i32(gn as i64)?;
        let gi = self.e.binop("arith.divui", group, gnv)?;
        let gj = self.e.binop("arith.remui", group, gnv)?;
        // Shared-window addresses of this warpgroup's part of each operand.
        let i64t = self.e.ty("i64");
        let a_row = self.e.i32((mg * wa * 2) as i64)?;
        let a_part = self.e.binop("arith.muli", gi, a_row)?;
        let a_part = self.e.binop("arith.addi", a_off, a_part)?;
        let a_base = self.smem_addr(a_part)?;
        let b_col = self.e.i32((ng / wb * bk * wb * 2) as i64)?;
        let b_part = self.e.binop("arith.muli", gj, b_col)?;
        let b_part = self.e.binop("arith.addi", b_off, b_part)?;
        let b_base = self.smem_addr(b_part)?;
        let desc = |me: &mut Self, base: V, bytes: u32, bits: i64| -> Result<V, CodegenError> {
            let o = me.e.i32(bytes as i64)?;
            let a = me.e.binop("arith.addi", base, o)?;
            let a = me.e.binop("arith.shrui", a, c4)?;
            let a = me.e.op1("arith.extui", &[a], i64t, &[])?;
            let bits = me.e.i64(bits)?;
            me.e.binop("arith.ori", a, bits)
        };
        let f32t = self.e.ty("f32");
        let per_block = (ng / 2) as usize;
        let one = self.e.i32(1)?;
        let outs = vec!["=f"; per_block].join(",");
        let ties: Vec<String> = (0..per_block).map(|i| i.to_string()).collect();
        let constraints = format!("{outs},l,l,r,{}", ties.join(","));
        let regs: Vec<String> = (0..per_block).map(|i| format!("${i}")).collect();
        let trans_b = 1;
        let text = format!(
            "{{ .reg .pred p; setp.ne.b32 p, ${}, 0; wgmma.mma_async.sync.aligned.m64n{ng}k16.f32.{ptx_ty}.{ptx_ty} {{{}}}, ${}, ${}, p, 1, 1, 0, {trans_b}; }}",
            per_block + 2,
            regs.join(", "),
            per_block,
            per_block + 1,
        );
        let mut out = acc;
        self.e
            .inline_asm("wgmma.fence.sync.aligned;", "", &[], &[])?;
        for ks in 0..kk / 16 {
            let k0 = ks * 16;
            let b_desc = desc(self, b_base, k0 * wb * 2, b_bits)?;
            for blk in 0..ml.mt() {
                let a_bytes = (k0 / wa) * am * wa * 2 + blk * 64 * wa * 2 + (k0 % wa) * 2;
                let a_desc = desc(self, a_base, a_bytes, a_bits)?;
                let range = blk as usize * per_block..(blk as usize + 1) * per_block;
                let mut operands = vec![a_desc, b_desc, one];
                operands.extend(&out[range.clone()]);
                let d =
                    self.e
                        .inline_asm(&text, &constraints, &operands, &vec![f32t; per_block])?;
                out[range].copy_from_slice(&d);
            }
        }
        self.e
            .inline_asm("wgmma.commit_group.sync.aligned;", "", &[], &[])?;
        // Left running into the next iteration when the loop allows it.
        let pending = u32::from(self.in_flight == Some(r));
        wgmma_wait(&mut self.e, pending, &out)
    }
}

/// `wgmma.wait_group n` (at most `n` groups still running), passing the
/// accumulators through so that no use of them moves above it.
pub(super) fn wgmma_wait(e: &mut Emitter<'_>, n: u32, acc: &[V]) -> Result<Vec<V>, CodegenError> {
    let f32t = e.ty("f32");
    let outs = vec!["=f"; acc.len()].join(",");
    let ties: Vec<String> = (0..acc.len()).map(|i| i.to_string()).collect();
    e.inline_asm(
        &format!("wgmma.wait_group.sync.aligned {n};"),
        &format!("{outs},{}", ties.join(",")),
        acc,
        &vec![f32t; acc.len()],
    )
}
