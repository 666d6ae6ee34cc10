//! Reductions along one axis: within the thread, then butterfly shuffles
//! across lanes, then across warps through scratch, landing in the result's
//! layout.

use super::smem::ScratchNeed;
use super::Lower;
use crate::emit::V;
use crate::layout::{Blocked, Layout, Partial, Reduced, Slice};
use crate::{CodegenError, MoveKind};
use std::collections::HashMap;
use tile_ir::{BinaryOp, Const, ReduceOp, Scalar, Span, ValueId};

/// What a replica along the reduced axis contributes: a value that changes
/// no combination with it. For floats that is NaN for max/min, which follow
/// maxNum/minNum (docs/LANGUAGE.md: a NaN operand yields the other, so
/// `maxnum(x, NaN) == x` for every `x`, NaN included), not -inf/+inf: a row
/// of NaN must reduce to NaN, and `maxnum(NaN, -inf)` is -inf (fuzz programs
/// fz_1796224093_{25,83,251}). For sums it is -0.0, not 0.0: `-0.0 + 0.0`
/// is `+0.0`, so a row of -0.0 would sum to +0.0.
pub(super) fn identity(op: ReduceOp, s: Scalar) -> Const {
    match (op, s.is_float()) {
        (ReduceOp::Sum, true) => Const::Float(-0.0),
        (ReduceOp::Sum, false) => Const::Int(0),
        (ReduceOp::Max | ReduceOp::Min, true) => Const::Float(f64::NAN),
        (ReduceOp::Max, false) => Const::Int(if s == Scalar::I64 {
            i64::MIN
        } else {
            i32::MIN as i64
        }),
        (ReduceOp::Min, false) => Const::Int(if s == Scalar::I64 {
            i64::MAX
        } else {
            i32::MAX as i64
        }),
    }
}

impl<'c, 'k> Lower<'c, 'k> {
    pub(super) fn combine(
        &mut self,
        op: ReduceOp,
        s: Scalar,
        a: V,
        b: V,
    ) -> Result<V, CodegenError> {
        let bop = match op {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        };
        self.binary(bop, s, a, b, None)
    }

    pub(super) fn reduce(
        &mut self,
        op: ReduceOp,
        value: ValueId,
        axis: usize,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s_in = self.kernel.ty(value).scalar_elem().unwrap();
        // 16-bit floats accumulate in f32 and round once at the end.
        let s = if s_in.is_float() { Scalar::F32 } else { s_in };
        if !matches!(s, Scalar::F32 | Scalar::I32) {
            return Err(CodegenError::Unsupported {
                what: format!("reductions of {} tiles", s_in.name()),
                span,
            });
        }
        let dst = self.layout(r);
        if let Layout::Slice(sl) = &dst {
            if sl.axis == 1 && self.layout(value) == Layout::Mma(sl.parent.clone()) {
                return self.reduce_to_slice(op, value, sl.clone(), s_in, s);
            }
        }
        let (src, keys, partial) = self.thread_partials(op, value, axis, (s_in, s), span)?;
        if let Layout::Partial(_) = dst {
            // Carried by a loop and combined after it (`finish_reduction`).
            return Ok(keys.iter().map(|k| partial[k]).collect());
        }
        let res_shape = self.kernel.ty(r).shape.clone();
        let out =
            self.combine_partials(op, s, &src, axis, &keys, partial, &res_shape, &dst, span)?;
        out.into_iter().map(|x| self.narrow(x, s_in)).collect()
    }

    /// Step 1 of a reduction of `value` (canonical blocked) along `axis`:
    /// each thread combines its own registers with equal coordinates off the
    /// axis, replicas contributing the identity. Returns the source layout,
    /// the partials' register keys in order, and the partials.
    #[allow(clippy::type_complexity)]
    fn thread_partials(
        &mut self,
        op: ReduceOp,
        value: ValueId,
        axis: usize,
        (s_in, s): (Scalar, Scalar),
        span: Span,
    ) -> Result<(Blocked, Vec<Vec<u32>>, HashMap<Vec<u32>, V>), CodegenError> {
        let src_l = self.canonical(&self.kernel.ty(value).shape);
        let regs: Vec<V> = self
            .regs_in(value, &src_l, span)?
            .into_iter()
            .map(|x| self.widen(x, s_in))
            .collect::<Result<_, _>>()?;
        let id = self.constant(identity(op, s), s)?;
        let th_t = self.threads(&src_l).t.clone();
        let Layout::Blocked(src) = src_l else {
            unreachable!("canonical layouts are blocked")
        };
        let mut partial: HashMap<Vec<u32>, V> = HashMap::new();
        for (k, &x) in regs.iter().enumerate() {
            let mut idx = src.reg_index(k);
            idx[axis] = 0;
            let acc = match partial.get(&idx) {
                Some(&a) => self.combine(op, s, a, x)?,
                None => x,
            };
            partial.insert(idx, acc);
        }
        let keys = src.reduced_keys(axis);
        if src.cov(axis) > src.shape[axis] {
            // Replicas along the axis must not be counted twice.
            let lim = self.e.i32((src.shape[axis] / src.spt[axis]) as i64)?;
            let own = self.e.cmpi("ult", th_t[axis], lim)?;
            for key in &keys {
                let v = self.e.select(own, partial[key], id)?;
                partial.insert(key.clone(), v);
            }
        }
        Ok((src, keys, partial))
    }

    /// The result of a loop that carried per-thread partials (`regs`, in
    /// `p`'s key order) of a reduction into `res_shape`, in layout `dst`.
    pub(super) fn finish_reduction(
        &mut self,
        op: ReduceOp,
        s: Scalar,
        p: &Partial,
        regs: &[V],
        res_shape: &[u32],
        dst: &Layout,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let keys = p.keys();
        let partial: HashMap<Vec<u32>, V> =
            keys.iter().cloned().zip(regs.iter().copied()).collect();
        self.combine_partials(op, s, &p.src, p.axis, &keys, partial, res_shape, dst, span)
    }

    /// Steps 2 and 3 of a reduction: across the lanes along the axis by
    /// butterfly shuffles, then across warps through scratch into `dst`.
    #[allow(clippy::too_many_arguments)]
    fn combine_partials(
        &mut self,
        op: ReduceOp,
        s: Scalar,
        src: &Blocked,
        axis: usize,
        keys: &[Vec<u32>],
        mut partial: HashMap<Vec<u32>, V>,
        res_shape: &[u32],
        dst: &Layout,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        // 2. Across lanes along the axis: butterfly shuffles.
        if src.tpw[axis] > 1 {
            let mut off = src.lane_stride(axis) * src.tpw[axis] / 2;
            while off >= src.lane_stride(axis) {
                for key in keys {
                    let c = self.combine_across_lanes(op, s, partial[key], off)?;
                    partial.insert(key.clone(), c);
                }
                off /= 2;
            }
        }
        // 3. Across warps along the axis and into the result's layout, through shared memory.
        if src.rank() == 1 && src.wpc[0] == 1 {
            return Ok(vec![partial[&keys[0]]]);
        }
        if let Some(out) = in_thread_result(src, axis, &partial, dst) {
            return Ok(out);
        }
        if let Layout::Reduced(red) = dst {
            if Reduced::of(src, axis).as_ref() == Some(red) {
                // Every lane along the axis holds the total: the result's
                // registers are the partials' (`keep` has one along it).
                return (0..red.keep.num_regs())
                    .map(|k| {
                        partial
                            .get(&red.keep.reg_index(k))
                            .copied()
                            .ok_or_else(|| CodegenError::Internal("reduced register".into()))
                    })
                    .collect();
            }
        }
        let res_numel: u32 = res_shape.iter().product();
        let wa = src.wpc[axis];
        // With one warp along the axis only the result's layout differs.
        let kind = match wa {
            1 => MoveKind::Conversion,
            _ => MoveKind::CrossWarpReduction,
        };
        self.reserve_scratch(ScratchNeed::Bytes(wa * res_numel * 4), kind, span);
        self.barrier()?;
        // Lane 0 along the axis writes its partials at [warp coordinate along axis][result index].
        let lane = self.lane.unwrap();
        let warp = self.warp.unwrap();
        let ls = self.e.i32(src.lane_stride(axis).trailing_zeros() as i64)?;
        let lm = self.e.i32(src.tpw[axis] as i64 - 1)?;
        let la = self.e.binop("arith.shrui", lane, ls)?;
        let la = self.e.binop("arith.andi", la, lm)?;
        let z = self.e.i32(0)?;
        let first_lane = self.e.cmpi("eq", la, z)?;
        let ws = self.e.i32(src.warp_stride(axis).trailing_zeros() as i64)?;
        let wm = self.e.i32(wa as i64 - 1)?;
        let wcoord = self.e.binop("arith.shrui", warp, ws)?;
        let wcoord = self.e.binop("arith.andi", wcoord, wm)?;
        let rn = self.e.i32(res_numel as i64)?;
        let wbase = self.e.binop("arith.muli", wcoord, rn)?;
        let src_l = Layout::Blocked(src.clone());
        self.if_then_self(first_lane, &mut |me| {
            for key in keys {
                let k = src.reg_number(key);
                let c = me.coords(&src_l, k)?;
                let rc: Vec<V> = c
                    .iter()
                    .enumerate()
                    .filter(|(d, _)| *d != axis)
                    .map(|(_, v)| *v)
                    .collect();
                let f = me.flat(&rc, res_shape)?;
                let idx = me.e.binop("arith.addi", wbase, f)?;
                me.scratch_store(idx, partial[key], s)?;
            }
            Ok(())
        })?;
        self.barrier()?;
        let mut out = Vec::new();
        for k in 0..dst.num_regs() {
            let f = if dst.shape().is_empty() {
                self.e.i32(0)?
            } else {
                let c = self.coords(dst, k)?;
                self.flat(&c, res_shape)?
            };
            let mut acc: Option<V> = None;
            for w in 0..wa {
                let o = self.e.i32((w * res_numel) as i64)?;
                let idx = self.e.binop("arith.addi", f, o)?;
                let x = self.scratch_load(idx, s, false)?;
                acc = Some(match acc {
                    None => x,
                    Some(a) => self.combine(op, s, a, x)?,
                });
            }
            out.push(acc.unwrap());
        }
        Ok(out)
    }

    /// A reduction of a `wgmma` accumulator into its row slice (see
    /// `Slice`): the registers a thread holds of each row, then butterfly
    /// shuffles over the quad's four lanes that share it — no shared memory,
    /// no barrier.
    fn reduce_to_slice(
        &mut self,
        op: ReduceOp,
        value: ValueId,
        sl: Slice,
        s_in: Scalar,
        s: Scalar,
    ) -> Result<Vec<V>, CodegenError> {
        let regs: Vec<V> = self
            .regs(value)?
            .into_iter()
            .map(|x| self.widen(x, s_in))
            .collect::<Result<_, _>>()?;
        let mut partial: Vec<Option<V>> = vec![None; sl.num_regs()];
        for (k, &x) in regs.iter().enumerate() {
            let at = sl.reg_of(&sl.parent, k);
            partial[at] = Some(match partial[at] {
                Some(a) => self.combine(op, s, a, x)?,
                None => x,
            });
        }
        let mut out = Vec::new();
        for p in partial {
            let mut x = p.ok_or_else(|| CodegenError::Internal("empty slice register".into()))?;
            for off in [1, 2] {
                x = self.combine_across_lanes(op, s, x, off)?;
            }
            out.push(self.narrow(x, s_in)?);
        }
        Ok(out)
    }

    /// `x` combined with its value in the lane `lane_xor` away (a butterfly
    /// step of `shfl.sync.bfly`).
    fn combine_across_lanes(
        &mut self,
        op: ReduceOp,
        s: Scalar,
        x: V,
        lane_xor: u32,
    ) -> Result<V, CodegenError> {
        let i1 = self.e.ty("i1");
        let width = self.e.i32(32)?;
        let o = self.e.i32(lane_xor as i64)?;
        let t = self.e.type_of(x);
        let sh = self.e.op(
            "gpu.shuffle",
            &[x, o, width],
            &[t, i1],
            &[("mode", "#gpu<shuffle_mode xor>")],
        )?[0];
        self.combine(op, s, x, sh)
    }
}

/// The result of a reduction along an axis that each thread holds whole (no
/// lanes, no warps along it: `sum(h[:, None] * gs, 0)` over mHC's streams),
/// when the result's layout is the source's with that axis removed: every
/// thread already holds its registers of the result, so nothing crosses
/// threads (no scratch, no barrier). `None` where data must move.
fn in_thread_result(
    src: &Blocked,
    axis: usize,
    partial: &HashMap<Vec<u32>, V>,
    dst: &Layout,
) -> Option<Vec<V>> {
    if src.tpw[axis] != 1 || src.wpc[axis] != 1 {
        return None;
    }
    let drop = |v: &[u32]| {
        let mut v = v.to_vec();
        v.remove(axis);
        v
    };
    let sub = Blocked {
        shape: drop(&src.shape),
        spt: drop(&src.spt),
        tpw: drop(&src.tpw),
        wpc: drop(&src.wpc),
    };
    let Layout::Blocked(d) = dst else {
        return None;
    };
    if d.shape != sub.shape || !sub.same_map(d) {
        return None;
    }
    (0..d.num_regs())
        .map(|k| {
            let mut idx = d.reg_index(k);
            idx.insert(axis, 0);
            partial.get(&idx).copied()
        })
        .collect()
}
