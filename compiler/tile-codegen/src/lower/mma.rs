//! `dot` by `mma.sync.m16n8k16` (sm_80, and sm_90 tiles that do not fit a
//! warpgroup grid): operands in padded shared memory, fragments by `ldmatrix`.

use super::{scalar_ty, Lower};
use crate::emit::V;
use crate::layout::{Layout, Mma, Operand};
use crate::prefetch::{SmemTile, PAD};
use crate::CodegenError;
use tile_ir::{Scalar, Span, ValueId};

/// An `mma.sync` operand in shared memory: its byte offset (i32) and row
/// stride (elements).
type PaddedOperand = (V, u32);

/// Where an `mma.sync` operand's fragments come from: `ldmatrix` from
/// padded shared memory, or its registers in an [`Operand`] layout.
pub(super) enum MmaSource {
    Smem(PaddedOperand),
    Regs(Operand, Vec<V>),
}

impl<'c, 'k> Lower<'c, 'k> {
    /// Where the fragments of `a` and `b` come from: registers when the
    /// operand is in this dot's [`Operand`] layout, else its pipeline stage
    /// or scratch it is staged into from registers, rows padded by [`PAD`]
    /// elements.
    pub(super) fn mma_sync_operands(
        &mut self,
        ml: &Mma,
        a: ValueId,
        b: ValueId,
        s: Scalar,
        span: Span,
    ) -> Result<(MmaSource, MmaSource), CodegenError> {
        let in_regs = |l: Layout, b: bool| match l {
            Layout::Operand(o) if o.b == b && o.parent == *ml => Some(o),
            _ => None,
        };
        let (ra, rb) = (
            in_regs(self.layout(a), false),
            in_regs(self.layout(b), true),
        );
        let padded = |shape: &[u32]| Ok((SmemTile::Padded { ld: shape[1] + PAD }, 1));
        let smem = match (&ra, &rb) {
            (None, None) => self.dot_operands([a, b], s, span, false, &padded)?.to_vec(),
            (None, Some(_)) => self.dot_operands([a], s, span, false, &padded)?.to_vec(),
            (Some(_), None) => self.dot_operands([b], s, span, false, &padded)?.to_vec(),
            (Some(_), Some(_)) => vec![],
        };
        let mut smem = smem.into_iter().map(|(off, tile)| match tile {
            SmemTile::Padded { ld } => Ok(MmaSource::Smem((off, ld))),
            SmemTile::Swizzled { .. } => Err(CodegenError::Internal(
                "mma.sync operand in a swizzled buffer".into(),
            )),
        });
        let mut source = |me: &mut Self, x: ValueId, o: Option<Operand>| match o {
            Some(o) => Ok(MmaSource::Regs(o, me.regs(x)?)),
            None => smem
                .next()
                .unwrap_or_else(|| Err(CodegenError::Internal("missing mma operand".into()))),
        };
        let a = source(self, a, ra)?;
        let b = source(self, b, rb)?;
        Ok((a, b))
    }

    /// Two 16-bit registers as one 32-bit fragment register (`lo` first).
    fn pack_pair(&mut self, lo: V, hi: V, s: Scalar) -> Result<V, CodegenError> {
        let vt = self.e.ty(&format!("vector<2x{}>", scalar_ty(s)));
        let mut v = self.e.op1("llvm.mlir.undef", &[], vt, &[])?;
        for (i, x) in [lo, hi].into_iter().enumerate() {
            let idx = self.e.i32(i as i64)?;
            v = self.e.op1("llvm.insertelement", &[v, x, idx], vt, &[])?;
        }
        let i32t = self.e.ty("i32");
        self.e.op1("llvm.bitcast", &[v], i32t, &[])
    }

    /// The fragment registers of register operand `o` for row or column
    /// tile `t` at k step `ks`: four pairs of `a`, two of `b`.
    fn fragment(
        &mut self,
        o: &Operand,
        regs: &[V],
        t: u32,
        ks: u32,
        s: Scalar,
    ) -> Result<Vec<V>, CodegenError> {
        let pairs = if o.b { 2 } else { 4 };
        (0..pairs)
            .map(|p| self.pack_pair(regs[o.reg(t, ks, 2 * p)], regs[o.reg(t, ks, 2 * p + 1)], s))
            .collect()
    }

    /// `mma.sync` over operands from padded shared memory (each warp loads
    /// its fragments with `ldmatrix`) or from registers, accumulating with
    /// `mma.sync.m16n8k16` into `acc`, its registers in the mma layout `ml`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dot_mma_sync(
        &mut self,
        ml: &Mma,
        kk: u32,
        ptx_ty: &str,
        s: Scalar,
        a: MmaSource,
        b: MmaSource,
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
                afr.push(match &a {
                    MmaSource::Regs(o, regs) => self.fragment(o, regs, i, ks, s)?,
                    &MmaSource::Smem((a_off, lda)) => {
                        let r0 = self.e.i32((i * 16) as i64)?;
                        let row = self.e.binop("arith.addi", row0, r0)?;
                        let row = self.e.binop("arith.addi", row, l16)?;
                        let col = self.e.binop("arith.addi", hi8, k0)?;
                        let p = self.smem_elem_ptr(a_off, lda, row, col)?;
                        self.ldmatrix(p, 4, false)?
                    }
                });
            }
            // B fragments (transposed loads): rows ks·16 + lane%16, columns
            // col0 + j·8, two 8-column fragments per ldmatrix.x4 (lanes 16–31
            // address the second).
            let mut bfr = Vec::new();
            match &b {
                MmaSource::Regs(o, regs) => {
                    for j in 0..ml.nt() {
                        bfr.push(self.fragment(o, regs, j, ks, s)?);
                    }
                }
                &MmaSource::Smem((b_off, ldb)) => {
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
