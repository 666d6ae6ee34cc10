//! TMA box copies of a pipelined loop's buffers: when each may be used, and
//! their issue by the leader thread against the stage's mbarrier.

use super::Lower;
use crate::emit::V;
use crate::prefetch::{self, SmemTile};
use crate::{tma, CodegenError};

/// A buffer's TMA box for one iteration: whether TMA fetches it (i1) and the
/// box's corner (row, column; i32).
#[derive(Clone, Copy)]
pub(super) struct TmaBox {
    pub(super) ok: V,
    pub(super) row: V,
    pub(super) col: V,
}

impl<'c, 'k> Lower<'c, 'k> {
    /// Per buffer of `p`, whether TMA fetches it this time: the condition
    /// (a tensor map was passed, the box starts inside the tensor and its
    /// guarded dimensions end inside their bounds) and the box's corner (row,
    /// column); None for a buffer TMA never fetches. Where the condition
    /// fails, `cp.async` copies the buffer instead.
    pub(super) fn tma_boxes(
        &mut self,
        p: &prefetch::Loop,
    ) -> Result<Vec<Option<TmaBox>>, CodegenError> {
        let mut by_tma = Vec::new();
        for b in &p.bufs {
            by_tma.push(match &b.tma {
                Some((t, k)) => {
                    let zero = self.e.i32(0)?;
                    let described = self.tma_described.expect("a TMA operand has the mask");
                    let bit = self.e.i32((1u32 << *k) as i32 as i64)?;
                    let bit = self.e.binop("arith.andi", described, bit)?;
                    let has_map = self.e.cmpi("ne", bit, zero)?;
                    let (r0, c0) = (self.start(&t.r0)?, self.start(&t.c0)?);
                    let r_ok = self.e.cmpi("sge", r0, zero)?;
                    let c_ok = self.e.cmpi("sge", c0, zero)?;
                    let mut conds = vec![has_map, r_ok, c_ok];
                    for g in &t.guards {
                        let (n, bound) = (g.n, g.bound);
                        let first = self.start(&g.start)?;
                        let last = self.e.i32(n as i64 - 1)?;
                        let last = self.e.binop("arith.addi", first, last)?;
                        let b = self.regs(bound)?[0];
                        conds.push(self.e.cmpi("slt", last, b)?);
                    }
                    let ok = self.e.and_all(&conds)?.unwrap();
                    Some(TmaBox {
                        ok,
                        row: r0,
                        col: c0,
                    })
                }
                None => None,
            });
        }
        Ok(by_tma)
    }

    /// By the leader thread: announce the bytes TMA brings into `stage`
    /// (arriving on its barrier), then issue one box copy per swizzle-atom
    /// column of every buffer TMA fetches this time (`by_tma`).
    pub(super) fn issue_tma(
        &mut self,
        p: &prefetch::Loop,
        by_tma: &[Option<TmaBox>],
        stage: V,
        stage_off: V,
        bars: u32,
    ) -> Result<(), CodegenError> {
        let bar = self.barrier_addr(bars, stage)?;
        let mut tx = self.e.i32(0)?;
        for (b, t) in p.bufs.iter().zip(by_tma) {
            if let Some(TmaBox { ok, .. }) = t {
                let shape = &self.kernel.ty(b.load).shape;
                let bytes = self.e.i32((shape[0] * shape[1] * 2) as i64)?;
                let zero = self.e.i32(0)?;
                let add = self.e.select(*ok, bytes, zero)?;
                tx = self.e.binop("arith.addi", tx, add)?;
            }
        }
        self.e.inline_asm(
            "mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;",
            "r,r,~{memory}",
            &[bar, tx],
            &[],
        )?;
        for (b, t) in p.bufs.iter().zip(by_tma) {
            let (Some(tma_box), Some((_, k)), SmemTile::Swizzled { rows, width }) =
                (t, &b.tma, b.tile)
            else {
                continue;
            };
            let cols = self.kernel.ty(b.load).shape[1];
            let desc = self.tma_args[*k];
            let TmaBox {
                ok,
                row: r0,
                col: c0,
            } = *tma_box;
            self.if_then_self(ok, &mut |me| {
                for blk in 0..cols / width {
                    let o = me.e.i32((b.offset + blk * rows * width * 2) as i64)?;
                    let o = me.e.binop("arith.addi", stage_off, o)?;
                    let dst = me.smem_addr(o)?;
                    let dc = me.e.i32((blk * width) as i64)?;
                    let c = me.e.binop("arith.addi", c0, dc)?;
                    me.e.inline_asm(
                        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [$0], [$1, {$2, $3}], [$4];",
                        "r,l,r,r,r,~{memory}",
                        &[dst, desc, c, r0, bar],
                        &[],
                    )?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A TMA box corner as an i32 register.
    pub(super) fn start(&mut self, s: &tma::Start) -> Result<V, CodegenError> {
        let mut sum = self.e.i32(s.konst)?;
        for &v in &s.values {
            let x = self.regs(v)?[0];
            sum = self.e.binop("arith.addi", sum, x)?;
        }
        Ok(sum)
    }
}
