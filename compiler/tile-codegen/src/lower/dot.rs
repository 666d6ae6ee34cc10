//! `dot` on tensor cores: checks the operands, then hands the multiply to
//! `mma.sync` (`mma`) or `wgmma` (`wgmma`) by the result's layout; staging of
//! register operands into shared memory, which both paths use.

use super::smem::{ScratchAddr, ScratchNeed, StagedTile, StagedTiles};
use super::{scalar_ty, Lower};
use crate::emit::V;
use crate::layout::Layout;
use crate::prefetch::SmemTile;
use crate::{CodegenError, MoveKind};
use tile_ir::{Scalar, Span, ValueId};

/// How an operand of a shape is laid out when staged into scratch: its tile
/// layout and the alignment of its start (bytes).
pub(super) type StagedLayout<'f> = dyn Fn(&[u32]) -> Result<(SmemTile, u32), CodegenError> + 'f;

impl<'c, 'k> Lower<'c, 'k> {
    /// `a @ b + acc` on tensor cores, the result in its mma layout: on
    /// Hopper `wgmma` (`wgmma`) when the layout is the warpgroup variant,
    /// else `mma.sync` (`mma`). An operand a pipelined loop already copied
    /// into shared memory (see `prefetch`) is read from its stage; any other
    /// is staged from registers into scratch first.
    pub(super) fn dot(
        &mut self,
        a: ValueId,
        b: ValueId,
        acc: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let k = self.kernel;
        let (sa, sb) = (k.ty(a).shape.clone(), k.ty(b).shape.clone());
        let (m, kk, n) = (sa[0], sa[1], sb[1]);
        let ea = k.ty(a).scalar_elem().unwrap();
        let ptx_ty = match ea {
            Scalar::BF16 => "bf16",
            Scalar::F16 => "f16",
            _ => {
                return Err(CodegenError::Unsupported {
                    what: format!(
                        "dot of {} operands (code generation supports bf16 and f16; cast first)",
                        ea.name()
                    ),
                    span,
                })
            }
        };
        if m % 16 != 0 || n % 8 != 0 || kk % 16 != 0 {
            return Err(CodegenError::Unsupported {
                what: format!(
                    "dot of shape {m}×{kk} @ {kk}×{n}: needs M % 16, K % 16 and N % 8 == 0"
                ),
                span,
            });
        }
        let Layout::Mma(ml) = self.layout(r) else {
            return Err(CodegenError::Internal(
                "dot result not in the mma layout".into(),
            ));
        };
        if ml.warpgroups {
            // A zero accumulator is never materialized: the first k step
            // does not read it (wgmma's scale-d off).
            let acc_regs = match self.is_zero_tile(acc) {
                true => None,
                false => Some(self.regs_in(acc, &Layout::Mma(ml.clone()), span)?),
            };
            let (a_op, b_op) = self.wgmma_operands(a, b, &ml, ea, span)?;
            return self.dot_wgmma(r, (a, b), &ml, kk, ptx_ty, a_op, b_op, acc_regs);
        }
        let acc_regs = self.regs_in(acc, &Layout::Mma(ml.clone()), span)?;
        let (a_op, b_op) = self.mma_sync_operands(&ml, a, b, ea, span)?;
        self.dot_mma_sync(&ml, kk, ptx_ty, ea, a_op, b_op, acc_regs)
    }

    /// Whether `v` is a tile of float zeros (`splat 0.0`).
    fn is_zero_tile(&self, v: ValueId) -> bool {
        self.defs
            .get(&v)
            .is_some_and(|i| tile_ir::is_zero_splat(&i.op, |x| self.defs.get(&x).map(|i| &i.op)))
    }

    /// Where `dot` operands `a` and `b` (of `s`) are in shared memory: their
    /// byte offsets (i32) and layouts there. An operand a pipelined loop
    /// already copied is in its stage; any other is staged from registers
    /// into scratch, laid out as `staged_tile` gives for its shape (with the
    /// alignment of its start), between two barriers; for `wgmma`, which
    /// reads through the async proxy, fenced as well.
    pub(super) fn dot_operands<const N: usize>(
        &mut self,
        xs: [ValueId; N],
        s: Scalar,
        span: Span,
        wgmma: bool,
        staged_tile: &StagedLayout,
    ) -> Result<[(V, SmemTile); N], CodegenError> {
        let k = self.kernel;
        // A buffer laid out for wgmma (swizzled) is no mma.sync operand: a
        // tile a wgmma dot reads from its stage is staged again for an
        // mma.sync dot of the same loop.
        let buf = |me: &Self, x: ValueId| {
            me.pipe_bufs
                .get(&x)
                .filter(|(_, tile, _)| wgmma || matches!(tile, SmemTile::Padded { .. }))
                .map(|&(off, tile, _)| (off, tile))
        };
        let mut staged = Vec::new();
        let mut tiles = Vec::new();
        for x in xs {
            if buf(self, x).is_none() {
                let shape = &k.ty(x).shape;
                let (tile, align) = staged_tile(shape)?;
                let bytes = tile.bytes(shape[0], shape[1]);
                staged.push((x, tile));
                tiles.push(StagedTile { bytes, align });
            }
        }
        let tiles: StagedTiles = tiles.into();
        let mut ops = Vec::new();
        let mut addrs = Vec::new();
        for x in xs {
            ops.push(match buf(self, x) {
                Some(op) => op,
                None => {
                    let i = addrs.len();
                    addrs.push(ScratchAddr::Tile(tiles.clone(), i));
                    (self.scratch_addr(addrs[i].clone())?, staged[i].1)
                }
            });
        }
        if !staged.is_empty() {
            self.reserve_scratch(ScratchNeed::Tiles(tiles), MoveKind::StagedOperand, span);
            // A tile in an mma accumulator layout is staged from its own
            // fragments (no conversion through scratch first).
            let regs: Vec<(Layout, Vec<V>)> = staged
                .iter()
                .map(|&(x, _)| {
                    let l = match self.layout(x) {
                        l @ Layout::Mma(_) => l,
                        _ => self.canonical(&self.kernel.ty(x).shape),
                    };
                    let r = self.regs_in(x, &l, span)?;
                    Ok((l, r))
                })
                .collect::<Result<_, CodegenError>>()?;
            self.barrier()?;
            for ((&(_, tile), at), (l, regs)) in staged.iter().zip(&addrs).zip(regs) {
                self.stage_tile(&l, &regs, s, at, tile)?;
            }
            if wgmma {
                self.e
                    .inline_asm("fence.proxy.async.shared::cta;", "", &[], &[])?;
            }
            self.barrier()?;
        }
        Ok(std::array::from_fn(|i| ops[i]))
    }

    /// Registers of a 16-bit tile in (canonical) layout `l` to shared memory
    /// at scratch address `base`, laid out as `tile`: one store per group of
    /// contiguous registers (16 bytes for 8 elements).
    pub(super) fn stage_tile(
        &mut self,
        l: &Layout,
        regs: &[V],
        s: Scalar,
        base: &ScratchAddr,
        tile: SmemTile,
    ) -> Result<(), CodegenError> {
        // Group starts are multiples of the group size along the row, and rows
        // are 16-byte multiples apart, so each group is aligned to its size
        // (and never crosses a swizzled 16-byte chunk). An mma fragment's
        // registers come in pairs of adjacent columns.
        let v = match l {
            Layout::Blocked(bl) => bl.spt[1].min(8),
            Layout::Mma(_) => 2,
            _ => {
                return Err(CodegenError::Internal(
                    "staging a tile in a layout without runs".into(),
                ))
            }
        };
        let owner = self.owner(l);
        let regs = regs.to_vec();
        let l = l.clone();
        let mut write = |me: &mut Self| -> Result<(), CodegenError> {
            for g in Self::groups(&l, v) {
                let c = me.coords(&l, g.start)?;
                let b = me.scratch_addr(base.clone())?;
                let p = me.tile_elem_ptr(b, tile, c[0], c[1])?;
                let bytes = v as usize * s.size_bytes();
                let vt = me.e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
                let mut vec = me.e.op1("llvm.mlir.undef", &[], vt, &[])?;
                for (i, &x) in regs[g].iter().enumerate() {
                    let idx = me.e.i32(i as i64)?;
                    vec = me.e.op1("llvm.insertelement", &[vec, x, idx], vt, &[])?;
                }
                me.e.op(
                    "llvm.store",
                    &[vec, p],
                    &[],
                    &[
                        ("alignment", &format!("{bytes} : i64")),
                        ("ordering", "0 : i64"),
                    ],
                )?;
            }
            Ok(())
        };
        match owner {
            Some(o) => self.if_then_self(o, &mut write),
            None => write(self),
        }
    }
}
