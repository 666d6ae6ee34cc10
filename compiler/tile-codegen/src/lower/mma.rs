//! `dot` by `mma.sync.m16n8k16` (sm_80, and sm_90 tiles that do not fit a
//! warpgroup grid): operands in padded shared memory, fragments by `ldmatrix`.

use super::Lower;
use crate::emit::V;
use crate::layout::Mma;
use crate::prefetch::{SmemTile, PAD};
use crate::CodegenError;
use tile_ir::{Scalar, Span, ValueId};

/// An `mma.sync` operand in shared memory: its byte offset (i32) and row
/// stride (elements).
type PaddedOperand = (V, u32);

impl<'c, 'k> Lower<'c, 'k> {
    /// The shared-memory byte offset (i32) and row stride (elements) of each
    /// `mma.sync` operand: its pipeline stage, or scratch it is staged into
    /// from registers, rows padded by [`PAD`] elements.
    pub(super) fn mma_sync_operands(
        &mut self,
        a: ValueId,
        b: ValueId,
        s: Scalar,
        span: Span,
    ) -> Result<(PaddedOperand, PaddedOperand), CodegenError> {
        let padded = |shape: &[u32]| Ok((SmemTile::Padded { ld: shape[1] + PAD }, 1));
        let ops = self.dot_operands([a, b], s, span, false, &padded)?;
        let [a, b] = ops.map(|(off, tile)| match tile {
            SmemTile::Padded { ld } => Ok((off, ld)),
            SmemTile::Swizzled { .. } => Err(CodegenError::Internal(
                "mma.sync operand in a swizzled buffer".into(),
            )),
        });
        Ok((a?, b?))
    }

    /// `mma.sync` over operands in padded shared memory: each warp loads its
    /// fragments of a and b with `ldmatrix` and accumulates with
    /// `mma.sync.m16n8k16` into `acc`, its registers in the mma layout `ml`.
    pub(super) fn dot_mma_sync(
        &mut self,
        ml: &Mma,
        kk: u32,
        ptx_ty: &str,
        (a_off, lda): PaddedOperand,
        (b_off, ldb): PaddedOperand,
        acc: Vec<V>,
    ) -> Result<Vec<V>, CodegenError> {
        // Per-lane ldmatrix row addresses.
        let lane = self.lane.unwrap();
        let warp = self.warp.unwrap();
        let c15 = self.e.i32(15)?;
        let c4 = self.e.i32(4)?;
        let c3 = self.e.i32(3)?;
        let l16 = self.e.binop("arith.andi", lane, c15)?;
        let hi = self.e.binop("arith.shrui", lane, c4)?;
        let hi8 = self.e.binop("arith.shli", hi, c3)?;
        let wmn = self.e.i32((ml.wm * ml.wn) as i64)?;
        let wn = self.e.i32(ml.wn as i64)?;
        let wl = self.e.binop("arith.remui", warp, wmn)?;
        let wi = self.e.binop("arith.divui", wl, wn)?;
        let wj = self.e.binop("arith.remui", wl, wn)?;
        let rows = self.e.i32(ml.warp_rows() as i64)?;
        let cols = self.e.i32(ml.warp_cols() as i64)?;
        let row0 = self.e.binop("arith.muli", wi, rows)?;
        let col0 = self.e.binop("arith.muli", wj, cols)?;
        let f4 = self.e.ty("!llvm.struct<(f32, f32, f32, f32)>");
        let f32t = self.e.ty("f32");
        let mut out = acc;
        for ks in 0..kk / 16 {
            let k0 = self.e.i32((ks * 16) as i64)?;
            // A fragments: rows row0 + i·16 + lane%16, columns ks·16 + (lane/16)·8.
            let mut afr = Vec::new();
            for i in 0..ml.mt() {
                let r0 = self.e.i32((i * 16) as i64)?;
                let row = self.e.binop("arith.addi", row0, r0)?;
                let row = self.e.binop("arith.addi", row, l16)?;
                let col = self.e.binop("arith.addi", hi8, k0)?;
                let p = self.smem_elem_ptr(a_off, lda, row, col)?;
                let v = self.ldmatrix(p, 4, false)?;
                afr.push(v);
            }
            // B fragments (transposed loads): rows ks·16 + lane%16, columns
            // col0 + j·8, two 8-column fragments per ldmatrix.x4 (lanes 16–31
            // address the second).
            let mut bfr = Vec::new();
            let row = self.e.binop("arith.addi", k0, l16)?;
            for j in (0..ml.nt()).step_by(2) {
                let c0 = self.e.i32((j * 8) as i64)?;
                let col = self.e.binop("arith.addi", col0, c0)?;
                if j + 1 < ml.nt() {
                    let col = self.e.binop("arith.addi", col, hi8)?;
                    let p = self.smem_elem_ptr(b_off, ldb, row, col)?;
                    let v = self.ldmatrix(p, 4, true)?;
                    bfr.push(v[..2].to_vec());
                    bfr.push(v[2..].to_vec());
                } else {
                    let p = self.smem_elem_ptr(b_off, ldb, row, col)?;
                    bfr.push(self.ldmatrix(p, 2, true)?);
                }
            }
            for i in 0..ml.mt() {
                for j in 0..ml.nt() {
                    let mut operands = afr[i as usize].clone();
                    operands.extend(&bfr[j as usize]);
                    for rr in 0..4 {
                        operands.push(out[ml.reg(i, j, rr)]);
                    }
                    let d = self.e.op1(
                        "nvvm.mma.sync",
                        &operands,
                        f4,
                        &[
                            ("layoutA", "#nvvm.mma_layout<row>"),
                            ("layoutB", "#nvvm.mma_layout<col>"),
                            ("multiplicandAPtxType", &format!("#nvvm.mma_type<{ptx_ty}>")),
                            ("multiplicandBPtxType", &format!("#nvvm.mma_type<{ptx_ty}>")),
                            ("operandSegmentSizes", "array<i32: 4, 2, 4>"),
                            ("shape", "#nvvm.shape<m = 16, n = 8, k = 16>"),
                        ],
                    )?;
                    for rr in 0..4 {
                        out[ml.reg(i, j, rr)] = self.e.op1(
                            "llvm.extractvalue",
                            &[d],
                            f32t,
                            &[("position", &format!("array<i64: {rr}>"))],
                        )?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// `ldmatrix` of `num` 8×8 b16 matrices (transposed with `trans`), as i32 registers.
    pub(super) fn ldmatrix(&mut self, p: V, num: u32, trans: bool) -> Result<Vec<V>, CodegenError> {
        let fields = vec!["i32"; num as usize].join(", ");
        let st = self.e.ty(&format!("!llvm.struct<({fields})>"));
        let i32t = self.e.ty("i32");
        let layout = if trans {
            "#nvvm.mma_layout<col>"
        } else {
            "#nvvm.mma_layout<row>"
        };
        let fr = self.e.op1(
            "nvvm.ldmatrix",
            &[p],
            st,
            &[
                ("eltType", "#nvvm.ld_st_matrix_elt_type<b16>"),
                ("layout", layout),
                ("num", &format!("{num} : i32")),
                ("shape", "#nvvm.ld_st_matrix_shape<m = 8, n = 8>"),
            ],
        )?;
        (0..num)
            .map(|x| {
                self.e.op1(
                    "llvm.extractvalue",
                    &[fr],
                    i32t,
                    &[("position", &format!("array<i64: {x}>"))],
                )
            })
            .collect()
    }
}
