//! Reading a value in another layout: free when the two are the same map
//! or the value a splat, recomputed per register when it is an index, pointer
//! or mask expression over scalars, else through shared-memory scratch
//! between two barriers. Also reshapes, broadcasts and transposes, which are
//! such conversions.

use super::smem::ScratchNeed;
use super::threads::row_major_index;
use super::Lower;
use crate::emit::{Emitter, V};
use crate::layout::Layout;
use crate::{CodegenError, MoveKind};
use tile_ir::{Elem, Op, Scalar, Span, ValueId};

impl<'c, 'k> Lower<'c, 'k> {
    /// `expand_dims` or `reshape` of `value` into `r`: free when the two
    /// layouts are the same map (or the source a splat or a scalar),
    /// recomputed when the value is an index expression, else through scratch.
    pub(super) fn reshape(
        &mut self,
        value: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let (src, dst) = (self.layout(value), self.layout(r));
        let regs = self.regs(value)?;
        if let Some(&s) = self.splats.get(&value) {
            self.splats.insert(r, s);
            Ok(vec![s; dst.num_regs()])
        } else if src.shape().is_empty() {
            Ok(vec![regs[0]; dst.num_regs()])
        } else if src.same_map(&dst) {
            Ok(regs)
        } else if self.recomputable(r, &mut 16) {
            self.recompute(r, &dst)
        } else {
            // Both keep the row-major order: a destination element is
            // the source element at the same linear index.
            let dst_shape = self.kernel.ty(r).shape.clone();
            let numel = dst_shape.iter().product::<u32>();
            self.convert(value, &dst, span, &mut |e, c| {
                Ok((vec![row_major_index(e, c, &dst_shape)?], vec![numel]))
            })
        }
    }

    /// `broadcast` of `value` into `r`, by the same cases as [`reshape`](Self::reshape).
    pub(super) fn broadcast(
        &mut self,
        value: ValueId,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let (src, dst) = (self.layout(value), self.layout(r));
        let regs = self.regs(value)?;
        if let Some(&s) = self.splats.get(&value) {
            self.splats.insert(r, s);
            Ok(vec![s; dst.num_regs()])
        } else if self.kernel.ty(value).numel() == 1 {
            Ok(vec![regs[0]; dst.num_regs()])
        } else if src.same_map(&dst) {
            Ok(regs)
        } else if let (Layout::Slice(sl), Layout::Mma(m)) = (&src, &dst) {
            if !(sl.keep && sl.broadcast_to(m.shape[1]) == *m) {
                return Err(CodegenError::Internal(format!(
                    "broadcast of {sl:?} into {m:?}"
                )));
            }
            // Each accumulator register takes its row's (column's) statistic.
            Ok((0..m.num_regs()).map(|k| regs[sl.reg_of(m, k)]).collect())
        } else if let Some(pick) = in_thread_broadcast(&src, &dst) {
            Ok(pick.into_iter().map(|k| regs[k]).collect())
        } else if self.recomputable(r, &mut 16) {
            self.recompute(r, &dst)
        } else {
            let src_shape = self.kernel.ty(value).shape.clone();
            self.convert(value, &dst, span, &mut |e, c| {
                let mut s = Vec::new();
                for (d, &x) in c.iter().enumerate() {
                    s.push(if src_shape[d] == 1 { e.i32(0)? } else { x });
                }
                Ok((s, src_shape.clone()))
            })
        }
    }

    /// `trans` of `value` by `perm` into `r`, always through scratch.
    pub(super) fn transpose(
        &mut self,
        value: ValueId,
        perm: &[u32],
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let dst = self.layout(r);
        let src_shape = self.kernel.ty(value).shape.clone();
        self.convert(value, &dst, span, &mut |_, c| {
            let mut s = vec![c[0]; c.len()];
            for (i, &p) in perm.iter().enumerate() {
                s[p as usize] = c[i];
            }
            Ok((s, src_shape.clone()))
        })
    }

    /// Registers of `v` in layout `want`, converting through shared memory if needed.
    pub(super) fn regs_in(
        &mut self,
        v: ValueId,
        want: &Layout,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        if let Some(&s) = self.splats.get(&v) {
            return Ok(vec![s; want.num_regs()]);
        }
        let have = self.layout(v);
        if have.same_map(want) || self.kernel.ty(v).is_scalar() {
            return self.regs(v);
        }
        if self.recomputable(v, &mut 16) {
            return self.recompute(v, want);
        }
        let shape = self.kernel.ty(v).shape.clone();
        self.convert(v, want, span, &mut |_, c| Ok((c.to_vec(), shape.clone())))
    }

    /// Whether `v` can be computed at any coordinate from scalars alone (an
    /// index, pointer or mask expression over `arange`, splats, expansions and
    /// broadcasts, of at most `budget` tile ops): then a broadcast of it is
    /// recomputed in the destination layout instead of moved through shared
    /// memory between two barriers.
    pub(super) fn recomputable(&self, v: ValueId, budget: &mut u32) -> bool {
        if self.splats.contains_key(&v) || self.kernel.ty(v).is_scalar() {
            return true;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Some(inst) = self.defs.get(&v) else {
            return false;
        };
        match &inst.op {
            Op::Arange { .. } => true,
            Op::Binary(_, a, b) | Op::Cmp(_, a, b) | Op::AddPtr { ptr: a, offset: b } => {
                self.recomputable(*a, budget) && self.recomputable(*b, budget)
            }
            Op::Select { cond, a, b } => {
                self.recomputable(*cond, budget)
                    && self.recomputable(*a, budget)
                    && self.recomputable(*b, budget)
            }
            Op::Cast(a) | Op::ExpandDims { value: a, .. } => self.recomputable(*a, budget),
            Op::Broadcast(a) => {
                self.kernel.ty(*a).shape.len() == self.kernel.ty(v).shape.len()
                    && self.recomputable(*a, budget)
            }
            _ => false,
        }
    }

    /// Registers of a [`recomputable`](Self::recomputable) value in layout `l`.
    pub(super) fn recompute(&mut self, v: ValueId, l: &Layout) -> Result<Vec<V>, CodegenError> {
        (0..l.num_regs())
            .map(|k| {
                let c = self.coords(l, k)?;
                self.value_at(v, &c)
            })
            .collect()
    }

    /// The element of a recomputable value `v` at coordinates `c`.
    pub(super) fn value_at(&mut self, v: ValueId, c: &[V]) -> Result<V, CodegenError> {
        if let Some(&s) = self.splats.get(&v) {
            return Ok(s);
        }
        let k = self.kernel;
        if k.ty(v).is_scalar() {
            return Ok(self.regs(v)?[0]);
        }
        let inst = self.defs[&v];
        let elem = |x: &ValueId| k.ty(*x).scalar_elem();
        match &inst.op {
            Op::Arange { start, .. } => {
                let st = self.e.i32(*start)?;
                self.e.binop("arith.addi", c[0], st)
            }
            Op::Binary(op, a, b) => {
                let (x, y) = (self.value_at(*a, c)?, self.value_at(*b, c)?);
                let yc = self.int_const_of(*b);
                self.binary(*op, elem(a).unwrap(), x, y, yc)
            }
            Op::Cmp(op, a, b) => {
                let (x, y) = (self.value_at(*a, c)?, self.value_at(*b, c)?);
                self.compare(*op, elem(a), x, y)
            }
            Op::Select { cond, a, b } => {
                let m = self.value_at(*cond, c)?;
                let (x, y) = (self.value_at(*a, c)?, self.value_at(*b, c)?);
                self.e.select(m, x, y)
            }
            Op::Cast(a) => {
                let x = self.value_at(*a, c)?;
                self.cast(x, elem(a).unwrap(), elem(&v).unwrap())
            }
            Op::AddPtr { ptr, offset } => {
                let (p, o) = (self.value_at(*ptr, c)?, self.value_at(*offset, c)?);
                self.gep(p, o, self.ptr_elem(*ptr)?)
            }
            Op::ExpandDims { value, axis } => {
                let mut c = c.to_vec();
                c.remove(*axis as usize);
                self.value_at(*value, &c)
            }
            Op::Broadcast(value) => {
                let src = &k.ty(*value).shape;
                let mut c2 = Vec::with_capacity(c.len());
                for (d, &x) in c.iter().enumerate() {
                    c2.push(if src[d] == 1 { self.e.i32(0)? } else { x });
                }
                self.value_at(*value, &c2)
            }
            _ => Err(CodegenError::Internal(format!(
                "value {v} is not recomputable"
            ))),
        }
    }

    /// Re-layout `value` into `dst` through shared memory. `src_of` maps a
    /// destination coordinate to the source coordinate it reads (and the source shape).
    pub(super) fn convert(
        &mut self,
        value: ValueId,
        dst: &Layout,
        span: Span,
        src_of: &mut SourceOf<'_, 'c>,
    ) -> Result<Vec<V>, CodegenError> {
        let ty = self.kernel.ty(value).clone();
        let (s, is_ptr) = match ty.elem {
            Elem::Scalar(s) => (s, false),
            Elem::Ptr(_) => (Scalar::I64, true),
        };
        let es = if is_ptr { 8 } else { s.size_bytes() as u32 };
        // Rows of 128 bytes or more get 16 bytes of padding: the mma layouts
        // write 8 rows per instruction, which would otherwise all fall in
        // the same banks; 16-byte row reads stay aligned.
        let pad = match ty.shape.as_slice() {
            [.., r, c] if *r > 1 && c * es >= 128 => 16 / es,
            _ => 0,
        };
        let rows = ty.numel() as u32 / ty.shape.last().copied().unwrap_or(1).max(1);
        let row_len = ty.shape.last().copied().unwrap_or(1) + pad;
        self.reserve_scratch(
            ScratchNeed::Bytes(rows * row_len * es),
            MoveKind::Conversion,
            span,
        );
        let src = self.layout(value);
        let regs = self.regs(value)?;
        self.barrier()?;
        match self.owner(&src) {
            Some(o) => self.if_then_self(o, &mut |me| me.write_scratch(&src, &regs, s, pad))?,
            None => self.write_scratch(&src, &regs, s, pad)?,
        }
        self.barrier()?;
        let mut out = Vec::new();
        for k in 0..dst.num_regs() {
            let c = self.coords(dst, k)?;
            let (sc, sshape) = src_of(&mut self.e, &c)?;
            let f = if sshape == ty.shape || pad == 0 {
                self.padded_flat(&sc, &sshape, pad)?
            } else {
                // A reshape reads in another shape: its row-major index,
                // then the padded position of that element.
                let f = self.flat(&sc, &sshape)?;
                let n = self.e.i32(*ty.shape.last().unwrap() as i64)?;
                let row = self.e.binop("arith.divui", f, n)?;
                let col = self.e.binop("arith.remui", f, n)?;
                let len = self.e.i32((ty.shape.last().unwrap() + pad) as i64)?;
                let at = self.e.binop("arith.muli", row, len)?;
                self.e.binop("arith.addi", at, col)?
            };
            out.push(self.scratch_load(f, s, is_ptr)?);
        }
        Ok(out)
    }

    /// Every register of a tile in layout `l` to scratch at its row-major
    /// index, rows padded by `pad` elements.
    pub(super) fn write_scratch(
        &mut self,
        l: &Layout,
        regs: &[V],
        s: Scalar,
        pad: u32,
    ) -> Result<(), CodegenError> {
        for (k, &x) in regs.iter().enumerate() {
            let c = self.coords(l, k)?;
            let f = self.padded_flat(&c, &l.shape(), pad)?;
            self.scratch_store(f, x, s)?;
        }
        Ok(())
    }

    /// Row-major index of `coords` in `shape` with rows (the last
    /// dimension) `pad` elements longer.
    pub(super) fn padded_flat(
        &mut self,
        coords: &[V],
        shape: &[u32],
        pad: u32,
    ) -> Result<V, CodegenError> {
        match (coords, shape) {
            ([lead @ .., last], [lead_shape @ .., n]) if pad > 0 => {
                let row = self.flat(lead, lead_shape)?;
                let len = self.e.i32((n + pad) as i64)?;
                let at = self.e.binop("arith.muli", row, len)?;
                self.e.binop("arith.addi", at, *last)
            }
            _ => self.flat(coords, shape),
        }
    }
}

/// For a conversion: the source coordinates and source shape of the element
/// at a destination coordinate.
pub(super) type SourceOf<'f, 'c> =
    dyn FnMut(&mut Emitter<'c>, &[V]) -> Result<(Vec<V>, Vec<u32>), CodegenError> + 'f;

/// A broadcast along dimensions that every thread of `dst` holds whole (no
/// lanes, no warps along them: `gs[:, None, :]` to `[N, N, BC]`), or whose
/// lanes and warps the source already holds as replicas (a reduction's
/// `keep` layout, `layout::Reduced`), from a source distributed as `dst` is
/// along the others: each destination register repeats one of the thread's
/// own source registers. Returns, per destination register, the source
/// register; `None` where data must move.
fn in_thread_broadcast(src: &Layout, dst: &Layout) -> Option<Vec<usize>> {
    let (Layout::Blocked(s), Layout::Blocked(d)) = (src, dst) else {
        return None;
    };
    // Broadcast dimensions only; lanes or warps along them must hold
    // replicas in the source too (`same_map` compares them).
    let broadcast =
        s.rank() == d.rank() && (0..d.rank()).all(|k| s.shape[k] == d.shape[k] || s.shape[k] == 1);
    if !broadcast || !d.collapse(&s.shape).same_map(s) {
        return None;
    }
    Some(
        (0..d.num_regs())
            .map(|k| {
                let mut idx = d.reg_index(k);
                for (i, &n) in idx.iter_mut().zip(&s.shape) {
                    if n == 1 {
                        *i = 0;
                    }
                }
                s.reg_number(&idx)
            })
            .collect(),
    )
}
