//! Where a thread's registers sit: per-layout thread coordinates, the
//! coordinates of each register, replica ownership, the CTA's leader thread,
//! and row-major indices.

use super::{Lower, Threads};
use crate::emit::{Emitter, V};
use crate::layout::{Blocked, Layout};
use crate::CodegenError;

impl<'c, 'k> Lower<'c, 'k> {
    /// This thread's coordinates in layout `l`, from its lane and warp: for
    /// an mma layout the (row, column) of its first accumulator, for a
    /// blocked layout its position along each dimension.
    pub(super) fn thread_coords(&mut self, l: &Layout) -> Result<Threads, CodegenError> {
        let (lane, warp) = (self.lane.unwrap(), self.warp.unwrap());
        let l = match l {
            Layout::Blocked(b) => b,
            Layout::Partial(_) => return Err(partial_has_no_coordinates()),
            Layout::Reduced(r) => {
                let mut th = self.thread_coords(&Layout::Blocked(r.keep.clone()))?;
                th.base.remove(r.axis);
                th.t.remove(r.axis);
                return Ok(th);
            }
            Layout::Slice(sl) => {
                let parent = self.thread_coords(&Layout::Mma(sl.parent.clone()))?;
                let z = self.e.i32(0)?;
                let (along, first) = if sl.axis == 1 {
                    // The parent's base row; the four lanes of a quad hold
                    // replicas of their row's statistic: the first owns it.
                    let c3 = self.e.i32(3)?;
                    let q = self.e.binop("arith.andi", lane, c3)?;
                    (parent.base[0], self.e.cmpi("eq", q, z)?)
                } else {
                    // The parent's base column; every row holds replicas of
                    // its columns' statistics: the thread at row 0 owns them.
                    (parent.base[1], self.e.cmpi("eq", parent.base[0], z)?)
                };
                let mut base = vec![z; sl.shape().len()];
                base[sl.dim()] = along;
                let owner = match parent.owner {
                    Some(o) => self.e.binop("arith.andi", o, first)?,
                    None => first,
                };
                return Ok(Threads {
                    base,
                    t: vec![],
                    owner: Some(owner),
                });
            }
            Layout::Operand(o) => {
                // `a`: (wi·rows + g, 2q); `b`: (2q, wj·cols + g). The warps
                // along the other dimension of the accumulator hold replicas.
                let m = &o.parent;
                let wn = self.e.i32(m.wn as i64)?;
                let wmn = self.e.i32((m.wm * m.wn) as i64)?;
                let wl = self.e.binop("arith.remui", warp, wmn)?;
                let wi = self.e.binop("arith.divui", wl, wn)?;
                let wj = self.e.binop("arith.remui", wl, wn)?;
                let c2 = self.e.i32(2)?;
                let c3 = self.e.i32(3)?;
                let g = self.e.binop("arith.shrui", lane, c2)?;
                let q = self.e.binop("arith.andi", lane, c3)?;
                let q2 = self.e.binop("arith.muli", q, c2)?;
                let (w, extent) = if o.b {
                    (wj, m.warp_cols())
                } else {
                    (wi, m.warp_rows())
                };
                let extent = self.e.i32(extent as i64)?;
                let w0 = self.e.binop("arith.muli", w, extent)?;
                let w0 = self.e.binop("arith.addi", w0, g)?;
                let base = if o.b { vec![q2, w0] } else { vec![w0, q2] };
                let z = self.e.i32(0)?;
                let first = self.e.cmpi("eq", if o.b { wi } else { wj }, z)?;
                let owner = if m.wm * m.wn < self.warps {
                    let live = self.e.cmpi("ult", warp, wmn)?;
                    self.e.binop("arith.andi", first, live)?
                } else {
                    first
                };
                return Ok(Threads {
                    base,
                    t: vec![],
                    owner: Some(owner),
                });
            }
            Layout::Mma(m) => {
                // Base (row, col) = the warp's base (`Mma::warp_base`) + (lane/4, 2·(lane%4)).
                let wn = self.e.i32(m.wn as i64)?;
                let wmn = self.e.i32((m.wm * m.wn) as i64)?;
                let wl = self.e.binop("arith.remui", warp, wmn)?;
                let c2 = self.e.i32(2)?;
                let c3 = self.e.i32(3)?;
                let cols = self.e.i32(m.warp_cols() as i64)?;
                let (r0, wj) = if m.warpgroups {
                    let group = self.e.binop("arith.shrui", wl, c2)?;
                    let w4 = self.e.binop("arith.andi", wl, c3)?;
                    let gi = self.e.binop("arith.divui", group, wn)?;
                    let gj = self.e.binop("arith.remui", group, wn)?;
                    let rows = self.e.i32((4 * m.warp_rows()) as i64)?;
                    let r0 = self.e.binop("arith.muli", gi, rows)?;
                    let c16 = self.e.i32(16)?;
                    let w16 = self.e.binop("arith.muli", w4, c16)?;
                    (self.e.binop("arith.addi", r0, w16)?, gj)
                } else {
                    let wi = self.e.binop("arith.divui", wl, wn)?;
                    let wj = self.e.binop("arith.remui", wl, wn)?;
                    let rows = self.e.i32(m.warp_rows() as i64)?;
                    (self.e.binop("arith.muli", wi, rows)?, wj)
                };
                let g = self.e.binop("arith.shrui", lane, c2)?;
                let q = self.e.binop("arith.andi", lane, c3)?;
                let r0 = self.e.binop("arith.addi", r0, g)?;
                let c0 = self.e.binop("arith.muli", wj, cols)?;
                let q2 = self.e.binop("arith.muli", q, c2)?;
                let c0 = self.e.binop("arith.addi", c0, q2)?;
                let owner = if m.wm * m.wn < self.warps {
                    Some(self.e.cmpi("ult", warp, wmn)?)
                } else {
                    None
                };
                return Ok(Threads {
                    base: vec![r0, c0],
                    t: vec![],
                    owner,
                });
            }
        };
        let mut t = Vec::new();
        let mut base = Vec::new();
        let mut owner_conds = Vec::new();
        for d in 0..l.rank() {
            let ls = self.e.i32(l.lane_stride(d).trailing_zeros() as i64)?;
            let lm = self.e.i32(l.tpw[d] as i64 - 1)?;
            let ld = self.e.binop("arith.shrui", lane, ls)?;
            let ld = self.e.binop("arith.andi", ld, lm)?;
            let ws = self.e.i32(l.warp_stride(d).trailing_zeros() as i64)?;
            let wm = self.e.i32(l.wpc[d] as i64 - 1)?;
            let wd = self.e.binop("arith.shrui", warp, ws)?;
            let wd = self.e.binop("arith.andi", wd, wm)?;
            let tp = self.e.i32(l.tpw[d] as i64)?;
            let wd = self.e.binop("arith.muli", wd, tp)?;
            let td = self.e.binop("arith.addi", wd, ld)?;
            let sp = self.e.i32(l.spt[d] as i64)?;
            base.push(self.e.binop("arith.muli", td, sp)?);
            if l.cov(d) > l.shape[d] {
                let lim = self.e.i32((l.shape[d] / l.spt[d]) as i64)?;
                owner_conds.push(self.e.cmpi("ult", td, lim)?);
            }
            t.push(td);
        }
        let owner = self.e.and_all(&owner_conds)?;
        Ok(Threads { base, t, owner })
    }

    /// The thread coordinates of layout `l` (computed in the entry block).
    pub(super) fn threads(&self, l: &Layout) -> &Threads {
        &self.threads[l]
    }

    /// Whether this thread owns its registers of layout `l` rather than
    /// holding a replica (None: every thread does); stores and scratch
    /// writes go by owners only.
    pub(super) fn owner(&self, l: &Layout) -> Option<V> {
        if l.shape().is_empty() {
            None
        } else {
            self.threads(l).owner
        }
    }

    /// Runtime coordinates (i32) of register `k` of a tile in layout `l`.
    pub(super) fn coords(&mut self, l: &Layout, k: usize) -> Result<Vec<V>, CodegenError> {
        if let Layout::Reduced(r) = l {
            let mut c = self.coords(&Layout::Blocked(r.keep.clone()), k)?;
            c.remove(r.axis);
            return Ok(c);
        }
        let base = self.threads(l).base.clone();
        let l = match l {
            Layout::Blocked(b) => b,
            Layout::Partial(_) | Layout::Reduced(_) => return Err(partial_has_no_coordinates()),
            Layout::Slice(sl) => {
                let off = self.e.i32(sl.static_offset(k) as i64)?;
                let mut c = base.clone();
                let d = sl.dim();
                c[d] = self.e.binop("arith.addi", base[d], off)?;
                return Ok(c);
            }
            Layout::Operand(o) => {
                let (r, c) = o.static_offset(k);
                let (r, c) = (self.e.i32(r as i64)?, self.e.i32(c as i64)?);
                return Ok(vec![
                    self.e.binop("arith.addi", base[0], r)?,
                    self.e.binop("arith.addi", base[1], c)?,
                ]);
            }
            Layout::Mma(m) => {
                let (r, c) = m.static_offset(k);
                let (r, c) = (self.e.i32(r as i64)?, self.e.i32(c as i64)?);
                return Ok(vec![
                    self.e.binop("arith.addi", base[0], r)?,
                    self.e.binop("arith.addi", base[1], c)?,
                ]);
            }
        };
        let idx = l.reg_index(k);
        let mut out = Vec::new();
        for d in 0..l.rank() {
            let so = self.e.i32(l.static_offset(d, idx[d]) as i64)?;
            out.push(blocked_coord(&mut self.e, l, d, base[d], so)?);
        }
        Ok(out)
    }

    /// Row-major flat index of coordinates in `shape`.
    pub(super) fn flat(&mut self, coords: &[V], shape: &[u32]) -> Result<V, CodegenError> {
        row_major_index(&mut self.e, coords, shape)
    }

    /// Thread 0 of the CTA (i1).
    pub(super) fn leader(&mut self) -> Result<V, CodegenError> {
        let (lane, warp) = (self.lane.unwrap(), self.warp.unwrap());
        let either = self.e.binop("arith.ori", lane, warp)?;
        let zero = self.e.i32(0)?;
        self.e.cmpi("eq", either, zero)
    }
}

/// The coordinate along `d` of a register at `offset` from the thread's
/// `base` in blocked layout `l`: wrapped where the layout covers more than
/// the tile (those threads hold replicas).
pub(super) fn blocked_coord(
    e: &mut Emitter<'_>,
    l: &Blocked,
    d: usize,
    base: V,
    offset: V,
) -> Result<V, CodegenError> {
    let c = e.binop("arith.addi", base, offset)?;
    if l.cov(d) > l.shape[d] {
        let m = e.i32(l.shape[d] as i64 - 1)?;
        e.binop("arith.andi", c, m)
    } else {
        Ok(c)
    }
}

/// The row-major linear index of `coords` in a tile of `shape`.
pub(super) fn row_major_index(
    e: &mut Emitter<'_>,
    coords: &[V],
    shape: &[u32],
) -> Result<V, CodegenError> {
    let mut acc = e.i32(0)?;
    let mut stride = 1i64;
    for d in (0..shape.len()).rev() {
        let s = e.i32(stride)?;
        let t = e.binop("arith.muli", coords[d], s)?;
        acc = e.binop("arith.addi", acc, t)?;
        stride *= shape[d] as i64;
    }
    Ok(acc)
}

/// A loop's reduction partials are only combined (`Lower::finish_reduction`),
/// never read at coordinates: layout assignment gives them no other use.
fn partial_has_no_coordinates() -> CodegenError {
    CodegenError::Internal("coordinates of a loop's reduction partials".into())
}
