//! The `cp.async` fallback of a load TMA fetches (`tma`): where TMA cannot
//! take the box this iteration (no tensor map, a corner before the tensor, a
//! guard that fails somewhere in the box), one rolled loop over the thread's
//! groups of contiguous elements copies it, each group's coordinates, global
//! address and mask recomputed from its index by the box's formula
//! (`base + row · stride + col`, in bounds where `row < rows`, `col < cols`
//! and every guard holds). Unrolled per register, this code that runs only
//! at the edges of a tensor was most of what NVPTX compiled for a matmul
//! (60% of its time) and most of its SASS.

use super::memory::{elem_ptr, LoadOne};
use super::threads::blocked_coord;
use super::tma_copies::TmaBox;
use super::Lower;
use crate::emit::V;
use crate::layout::{Blocked, Layout};
use crate::prefetch::Buf;
use crate::CodegenError;
use tile_ir::launch::HostScalar;
use tile_ir::{Const, Op};

impl<'c, 'k> Lower<'c, 'k> {
    /// Whether the fallback of buffer `b` is a rolled copy: a TMA box in a
    /// 2-D blocked layout whose groups tile its registers evenly.
    pub(super) fn copies_rolled(&self, b: &Buf) -> bool {
        let (Some(_), Layout::Blocked(l)) = (&b.tma, self.layout(b.load)) else {
            return false;
        };
        let Some(Op::Load { ptr, .. }) = self.defs.get(&b.load).map(|i| &i.op) else {
            return false;
        };
        let Ok(s) = self.ptr_elem(*ptr) else {
            return false;
        };
        let v = self.vector_width(*ptr, s);
        l.rank() == 2 && l.regs_along(1).is_multiple_of(v) && l.spt[1].is_multiple_of(v)
    }

    /// Buffer `b`'s box `at` into shared memory at byte offset `base`, by
    /// `cp.async` per aligned group inside the bounds, else element by
    /// element (zeros outside), as one rolled loop (`copies_rolled` holds).
    pub(super) fn copy_box_rolled(
        &mut self,
        b: &Buf,
        at: &TmaBox,
        base: V,
    ) -> Result<(), CodegenError> {
        let (Some((t, _)), Layout::Blocked(l)) = (&b.tma, self.layout(b.load)) else {
            return Err(CodegenError::Internal("a rolled copy of no TMA box".into()));
        };
        let Some(Op::Load { ptr, .. }) = self.defs.get(&b.load).map(|i| &i.op) else {
            return Err(CodegenError::Internal(
                "pipelined value is not a load".into(),
            ));
        };
        let s = self.ptr_elem(*ptr)?;
        let v = self.vector_width(*ptr, s);
        let bytes = v as usize * s.size_bytes();
        let p = self.regs(self.kernel.params[t.base].value)?[0];
        let stride = self.host_i64(t.row_stride)?;
        let rows = self.host_i64(t.rows)?;
        let cols = self.host_i64(t.cols)?;
        let mut guards = Vec::new();
        for g in &t.guards {
            guards.push((self.start(&g.start)?, g.dim, self.regs(g.bound)?[0]));
        }
        let layout = Layout::Blocked(l.clone());
        let thread = self.threads(&layout).base.clone();
        let owner = self.owner(&layout);
        let tile = b.tile;
        let groups = l.num_regs() as u32 / v;
        let mut copy = |me: &mut Self| -> Result<(), CodegenError> {
            let g = me.e.begin_rolled_loop(groups)?;
            let c = group_coords(me, &l, &thread, g, v)?;
            let dst = me.tile_elem_ptr(base, tile, c[0], c[1])?;
            let i64t = me.e.ty("i64");
            let row = me.e.binop("arith.addi", at.row, c[0])?;
            let col = me.e.binop("arith.addi", at.col, c[1])?;
            let row64 = me.e.op1("arith.extsi", &[row], i64t, &[])?;
            let col64 = me.e.op1("arith.extsi", &[col], i64t, &[])?;
            let off = me.e.binop("arith.muli", row64, stride)?;
            let off = me.e.binop("arith.addi", off, col64)?;
            let src = elem_ptr(&mut me.e, p, off, s, 1)?;
            // Element `j` of the group is inside the box's mask.
            let inside = |me: &mut Self, j: V| -> Result<V, CodegenError> {
                let j64 = me.e.op1("arith.extsi", &[j], i64t, &[])?;
                let col_j = me.e.binop("arith.addi", col64, j64)?;
                let mut conds = vec![
                    me.e.cmpi("slt", row64, rows)?,
                    me.e.cmpi("slt", col_j, cols)?,
                ];
                for &(start, dim, bound) in &guards {
                    let i = if dim == 0 {
                        c[0]
                    } else {
                        me.e.binop("arith.addi", c[1], j)?
                    };
                    let x = me.e.binop("arith.addi", start, i)?;
                    conds.push(me.e.cmpi("slt", x, bound)?);
                }
                Ok(me.e.and_all(&conds)?.unwrap())
            };
            let mut by_element = |me: &mut Self| -> Result<(), CodegenError> {
                let j = me.e.begin_rolled_loop(v)?;
                let ok = inside(me, j)?;
                let zero = me.constant(Const::Int(0), s)?;
                let t = me.e.type_of(zero);
                let from = elem_ptr(&mut me.e, src, j, s, 1)?;
                let x = me.e.if_else(
                    ok,
                    &[t],
                    &mut |e| Ok(vec![LoadOne { e }.load(from, s)?]),
                    &mut |_| Ok(vec![zero]),
                )?[0];
                let to = elem_ptr(&mut me.e, dst, j, s, 3)?;
                LoadOne { e: &mut me.e }.store(to, x, s)?;
                me.e.end_rolled_loop(v)
            };
            if matches!(bytes, 4 | 8 | 16) {
                // The whole group inside (its last element is) and aligned.
                let last = me.e.i32(v as i64 - 1)?;
                let whole = inside(me, last)?;
                let aligned = me.aligned(src, v, s)?;
                let cond = me.e.binop("arith.andi", whole, aligned)?;
                let cond = me.e.likely(cond)?;
                me.if_else_self(
                    cond,
                    &mut |me| me.cp_async(dst, src, bytes, None),
                    &mut by_element,
                )?;
            } else {
                by_element(me)?;
            }
            me.e.end_rolled_loop(groups)
        };
        match owner {
            Some(o) => self.if_then_self(o, &mut copy),
            None => copy(self),
        }
    }

    /// A launch-time scalar as an i64 register.
    fn host_i64(&mut self, h: HostScalar) -> Result<V, CodegenError> {
        match h {
            HostScalar::Const(x) => self.e.i64(x),
            HostScalar::Param(i) => {
                let x = self.regs(self.kernel.params[i].value)?[0];
                let i64t = self.e.ty("i64");
                if self.e.type_of(x) == i64t {
                    Ok(x)
                } else {
                    self.e.op1("arith.extsi", &[x], i64t, &[])
                }
            }
        }
    }

    /// `cp.async` of `bytes` (4, 8 or 16) from global `src` to shared `dst`;
    /// with `src_size` (an i32 register), only that many are read and the
    /// rest filled with zeros.
    pub(super) fn cp_async(
        &mut self,
        dst: V,
        src: V,
        bytes: usize,
        src_size: Option<V>,
    ) -> Result<(), CodegenError> {
        // .cg (L2 only) exists for 16-byte copies alone.
        let cache = if bytes == 16 { "cg" } else { "ca" };
        let mut operands = vec![dst, src];
        operands.extend(src_size);
        self.e.op(
            "nvvm.cp.async.shared.global",
            &operands,
            &[],
            &[
                ("size", &format!("{bytes} : i32")),
                ("modifier", &format!("#nvvm<load_cache_modifier {cache}>")),
            ],
        )?;
        Ok(())
    }
}

/// The coordinates (i32) of the first element of group `g` (of `v`
/// consecutive registers along the last dimension) of a 2-D blocked layout,
/// for the thread whose base coordinates are `thread`: what
/// [`Lower::coords`] gives for register `g · v`, with `g` known only at run
/// time.
fn group_coords(
    me: &mut Lower<'_, '_>,
    l: &Blocked,
    thread: &[V],
    g: V,
    v: u32,
) -> Result<Vec<V>, CodegenError> {
    let per_row = me.e.i32((l.regs_along(1) / v) as i64)?;
    let i0 = me.e.binop("arith.divui", g, per_row)?;
    let i1 = me.e.binop("arith.remui", g, per_row)?;
    let vv = me.e.i32(v as i64)?;
    let i1 = me.e.binop("arith.muli", i1, vv)?;
    let mut out = Vec::new();
    for (d, i) in [(0, i0), (1, i1)] {
        // static_offset(d, i) = (i / spt) · cov + i % spt.
        let spt = me.e.i32(l.spt[d] as i64)?;
        let rep = me.e.binop("arith.divui", i, spt)?;
        let within = me.e.binop("arith.remui", i, spt)?;
        let cov = me.e.i32(l.cov(d) as i64)?;
        let o = me.e.binop("arith.muli", rep, cov)?;
        let o = me.e.binop("arith.addi", o, within)?;
        out.push(blocked_coord(&mut me.e, l, d, thread[d], o)?);
    }
    Ok(out)
}
