//! The software pipeline of a loop `prefetch` planned: copies issued
//! `stages - 1` iterations ahead into a ring of shared-memory stages
//! (`cp.async` groups, mbarriers for TMA), the waits at the top of each
//! iteration, and reading a pipelined load back from its stage.

use super::checked_copies::{bit, mask_bits, Groups};
use super::memory::{elem_ptr, LoadOne};
use super::smem::ScratchAddr;
use super::tma_copies::TmaBox;
use super::wgmma::wgmma_wait;
use super::{scalar_ty, Lower};
use crate::emit::V;
use crate::layout::Layout;
use crate::prefetch::{self, SmemTile};
use crate::CodegenError;
use melior::ir::{Region, Type};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use tile_ir::{self as tir, Const, Op, Span, ValueId};

impl<'c, 'k> Lower<'c, 'k> {
    /// Before a pipelined loop: once every warp is done with the stages'
    /// memory (an earlier run of this loop or another pipelined loop), fresh
    /// mbarriers for its TMA copies, then the copies of iterations
    /// 0 .. stages-2, one group each. Returns the initial values of the state
    /// the loop carries after the TIR values: the stage it reads and the
    /// parity of that stage's barrier phase.
    pub(super) fn pipeline_prologue(
        &mut self,
        p: &prefetch::Loop,
        body: &tir::Block,
        lb: V,
        ub: V,
        step: V,
    ) -> Result<Vec<V>, CodegenError> {
        self.barrier()?;
        if let Some(bars) = p.barriers() {
            // Fresh barriers for every run of the loop: an earlier
            // run may have left phases unfinished (its copies past
            // the last iteration are never issued).
            let leader = self.leader()?;
            self.if_then_self(leader, &mut |me| {
                for st in 0..p.stages {
                    let st = me.e.i32(st as i64)?;
                    let b = me.barrier_addr(bars, st)?;
                    me.e.inline_asm(
                        "mbarrier.init.shared::cta.b64 [$0], 1;",
                        "r,~{memory}",
                        &[b],
                        &[],
                    )?;
                }
                me.e.inline_asm(
                    "fence.mbarrier_init.release.cluster;",
                    "~{memory}",
                    &[],
                    &[],
                )?;
                Ok(())
            })?;
            self.barrier()?;
        }
        // Loop-invariant operands, once (all converted to the canonical
        // layout before any is written: a conversion may pass through
        // scratch); the barrier at the top of the first iteration publishes
        // them with the first stage.
        let mut staged = Vec::new();
        for r in &p.resident {
            let l = self.canonical(&self.kernel.ty(r.load).shape);
            let regs = self.regs_in(r.load, &l, Span::default())?;
            staged.push((r, l, regs));
        }
        for (r, l, regs) in staged {
            let s = self.kernel.ty(r.load).scalar_elem().unwrap();
            self.stage_tile(&l, &regs, s, &ScratchAddr::Fixed(r.offset), r.tile)?;
            let at = self.e.i32(r.offset as i64)?;
            self.pipe_bufs.insert(r.load, (at, r.tile, false));
        }
        for st in 0..p.ahead() {
            let iv = self.iv_plus(lb, step, st)?;
            let stage = self.e.i32(st as i64)?;
            self.issue_copies(p, &body.insts, body.args[0], iv, ub, stage)?;
        }
        Ok(vec![self.e.i32(0)?, self.e.i32(0)?])
    }

    /// At the top of a pipelined loop's body (block arguments `bargs`, the
    /// pipeline's state at `state`): wait until this iteration's stage has
    /// landed and every warp is done with the one the previous iteration
    /// read, issue the copies `ahead` iterations on, and point the pipelined
    /// loads at this iteration's stage. Returns the state's next values.
    pub(super) fn pipelined_iteration(
        &mut self,
        p: &prefetch::Loop,
        body: &tir::Block,
        bargs: &[V],
        state: usize,
        ub: V,
        step: V,
    ) -> Result<Vec<V>, CodegenError> {
        let read = bargs[state];
        let last = self.e.i32((p.stages - 1) as i64)?;
        let (zero, one) = (self.e.i32(0)?, self.e.i32(1)?);
        // This iteration's copies (of this thread, then of all) have landed,
        // and every warp is done with the stage the previous iteration read.
        self.e.op(
            "nvvm.cp.async.wait.group",
            &[],
            &[],
            &[("n", &format!("{} : i32", p.ahead() - 1))],
        )?;
        if p.wgmma() {
            // `wgmma` reads shared memory through the async proxy.
            self.e
                .inline_asm("fence.proxy.async.shared::cta;", "", &[], &[])?;
        }
        self.barrier()?;
        // The stage `ahead` iterations on: (read + ahead) mod stages.
        let stages = self.e.i32(p.stages as i64)?;
        let ahead = self.e.i32(p.ahead() as i64)?;
        let write = self.e.binop("arith.addi", read, ahead)?;
        let wrapped = self.e.binop("arith.subi", write, stages)?;
        let over = self.e.cmpi("sge", write, stages)?;
        let write = self.e.select(over, wrapped, write)?;
        let iv = self.iv_plus(bargs[0], step, p.ahead())?;
        self.issue_copies(p, &body.insts, body.args[0], iv, ub, write)?;
        self.vals.insert(body.args[0], vec![bargs[0]]);
        let phase = bargs[state + 1];
        if let Some(bars) = p.barriers() {
            // This iteration's TMA copies have landed (the barrier
            // completes at once when none were issued).
            let b = self.barrier_addr(bars, read)?;
            self.e.inline_asm(
                "{ .reg .pred p; TILE_WAIT: mbarrier.try_wait.parity.shared::cta.b64 p, [$0], $1; @p bra TILE_DONE; bra TILE_WAIT; TILE_DONE: }",
                "r,r,~{memory}",
                &[b, phase],
                &[],
            )?;
        }
        let stage_bytes = self.e.i32(p.stage_bytes as i64)?;
        let stage_off = self.e.binop("arith.muli", read, stage_bytes)?;
        for b in &p.bufs {
            let o = self.e.i32(b.offset as i64)?;
            let o = self.e.binop("arith.addi", stage_off, o)?;
            self.pipe_bufs.insert(b.load, (o, b.tile, b.read_back));
        }
        let is_last = self.e.cmpi("eq", read, last)?;
        let after = self.e.binop("arith.addi", read, one)?;
        let next_read = self.e.select(is_last, zero, after)?;
        let flipped = self.e.binop("arith.xori", phase, one)?;
        let next_phase = self.e.select(is_last, flipped, phase)?;
        Ok(vec![next_read, next_phase])
    }

    /// The `scf.for` of a loop whose last `wgmma` is still running when it
    /// ends (the accumulators at `acc` among its results): wait for it inside
    /// `if lb < ub`, so that no path where the accumulators are copied (the
    /// loop skipped) meets a running wgmma (ptxas would serialize them all).
    pub(super) fn for_draining_wgmma(
        &mut self,
        operands: &[V],
        res_tys: &[Type<'c>],
        region: Region<'c>,
        acc: Range<usize>,
    ) -> Result<Vec<V>, CodegenError> {
        let (lb, ub) = (operands[0], operands[1]);
        let live = self.e.cmpi("slt", lb, ub)?;
        let mut region = Some(region);
        let init = operands[3..].to_vec();
        self.e.if_else(
            live,
            res_tys,
            &mut |e| {
                let mut out = e.op_full(
                    "scf.for",
                    operands,
                    res_tys,
                    &[],
                    vec![region.take().unwrap()],
                )?;
                let done = wgmma_wait(e, 0, &out[acc.clone()])?;
                out[acc.clone()].copy_from_slice(&done);
                Ok(out)
            },
            &mut |_| Ok(init.clone()),
        )
    }

    /// After a pipelined loop: its loads are ordinary values again, and no
    /// copies are left pending.
    pub(super) fn pipeline_epilogue(&mut self, p: &prefetch::Loop) -> Result<(), CodegenError> {
        for b in p.bufs.iter().chain(&p.resident) {
            self.pipe_bufs.remove(&b.load);
        }
        // Only empty groups (past the last iteration) can be pending.
        self.e
            .op("nvvm.cp.async.wait.group", &[], &[], &[("n", "0 : i32")])?;
        Ok(())
    }

    /// A pipelined load's tile is already in shared memory, where its dot
    /// reads it; other uses read it back (`read_stage`).
    pub(super) fn pipelined_load(&mut self, r: ValueId) -> Result<Vec<V>, CodegenError> {
        let (off, tile, read_back) = self.pipe_bufs[&r];
        if read_back {
            self.read_stage(r, off, tile)
        } else {
            Ok(vec![])
        }
    }

    /// `iv + n·step` in the induction variable's type.
    pub(super) fn iv_plus(&mut self, iv: V, step: V, n: u32) -> Result<V, CodegenError> {
        let t = self.e.type_of(iv);
        let n = self.e.constant(&format!("{n} : {t}"), t)?;
        let d = self.e.binop("arith.muli", step, n)?;
        self.e.binop("arith.addi", iv, d)
    }

    /// The pipelined loads of `p` for the iteration whose induction variable
    /// is `iv` (when `iv < ub`), into stage `stage` (i32), as one commit group
    /// (an empty one past the last iteration, so that group counts stay
    /// uniform). Lowers the loads' address slice again with `iv`; the caller
    /// restores the induction variable.
    pub(super) fn issue_copies(
        &mut self,
        p: &prefetch::Loop,
        insts: &[tir::Inst],
        iv_arg: ValueId,
        iv: V,
        ub: V,
        stage: V,
    ) -> Result<(), CodegenError> {
        let live = self.e.cmpi("slt", iv, ub)?;
        self.if_then_self(live, &mut |me| {
            me.vals.insert(iv_arg, vec![iv]);
            // Scalars first: a TMA box needs only its corner.
            let kernel = me.kernel;
            let (scalars, tiles): (Vec<usize>, Vec<usize>) = p
                .slice
                .iter()
                .partition(|&&i| insts[i].results.iter().all(|r| kernel.ty(*r).is_scalar()));
            for &i in &scalars {
                me.lower_inst(&insts[i])?;
            }
            let stage_bytes = me.e.i32(p.stage_bytes as i64)?;
            let stage_off = me.e.binop("arith.muli", stage, stage_bytes)?;
            let by_tma = me.tma_boxes(p)?;
            // Where TMA does not fetch a box, one rolled loop copies it.
            for (b, t) in p.bufs.iter().zip(&by_tma) {
                if let (Some(at), true) = (t, me.copies_rolled(b)) {
                    let o = me.e.i32(b.offset as i64)?;
                    let base = me.e.binop("arith.addi", stage_off, o)?;
                    let t = me.e.bool(true)?;
                    let not_tma = me.e.binop("arith.xori", at.ok, t)?;
                    me.if_then_self(not_tma, &mut |me| me.copy_box_rolled(b, at, base))?;
                }
            }
            // The rest by `cp.async`, from the addresses and masks of the slice.
            let mut fallback = Vec::new();
            for (b, t) in p.bufs.iter().zip(&by_tma) {
                if me.copies_rolled(b) {
                    continue;
                }
                fallback.push((
                    b,
                    match t {
                        Some(TmaBox { ok, .. }) => {
                            let t = me.e.bool(true)?;
                            me.e.binop("arith.xori", *ok, t)?
                        }
                        None => me.e.bool(true)?,
                    },
                ));
            }
            if let Some(any) = fallback
                .iter()
                .map(|f| f.1)
                .reduce(|a, b| me.e.binop("arith.ori", a, b).unwrap())
            {
                me.if_then_self(any, &mut |me| {
                    for &i in &tiles {
                        me.lower_inst(&insts[i])?;
                    }
                    for &(b, need) in &fallback {
                        let o = me.e.i32(b.offset as i64)?;
                        let base = me.e.binop("arith.addi", stage_off, o)?;
                        let Some(Op::Load { ptr, mask, other }) =
                            me.defs.get(&b.load).map(|i| &i.op)
                        else {
                            return Err(CodegenError::Internal(
                                "pipelined value is not a load".into(),
                            ));
                        };
                        let (ptr, mask, other) = (*ptr, *mask, *other);
                        me.if_then_self(need, &mut |me| {
                            me.copy_tile(b.load, ptr, mask, other, base, b.tile)
                        })?;
                    }
                    Ok(())
                })?;
            }
            if let Some(bars) = p.barriers() {
                let leader = me.leader()?;
                me.if_then_self(leader, &mut |me| {
                    me.issue_tma(p, &by_tma, stage, stage_off, bars)
                })?;
            }
            Ok(())
        })?;
        self.e.op("nvvm.cp.async.commit.group", &[], &[], &[])?;
        Ok(())
    }

    /// The tile `load(ptr, mask, other)` (value `r`, 16-bit elements) into
    /// shared memory at byte offset `base` (i32), laid out as `tile`:
    /// `cp.async` per aligned, unmasked group of contiguous elements (4, 8 or
    /// 16 bytes); elsewhere per element, through registers.
    pub(super) fn copy_tile(
        &mut self,
        r: ValueId,
        ptr: ValueId,
        mask: Option<ValueId>,
        other: Option<ValueId>,
        base: V,
        tile: SmemTile,
    ) -> Result<(), CodegenError> {
        let span = Span::default();
        let s = self.ptr_elem(ptr)?;
        let l = self.layout(r);
        let rp = self.regs_in(ptr, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        let ro = match other {
            Some(o) => Some(self.regs_in(o, &l, span)?),
            None => None,
        };
        let v = self.vector_width(ptr, s);
        let bytes = v as usize * s.size_bytes();
        let owner = self.owner(&l);
        if self.copy_checks_once(v, s, other) {
            let t = Groups {
                rp: &rp,
                rm: rm.as_deref(),
                uniform: self.mask_uniform(mask, v),
                v,
                s,
                groups: Self::groups(&l, v),
            };
            let mut write = |me: &mut Self| me.copy_tile_checked_once(&l, &t, base, tile);
            return match owner {
                Some(o) => self.if_then_self(o, &mut write),
                None => write(self),
            };
        }
        let mut write = |me: &mut Self| -> Result<(), CodegenError> {
            for g in Self::groups(&l, v) {
                let c = me.coords(&l, g.start)?;
                // A group never crosses a 16-byte chunk, so swizzling keeps it contiguous.
                let dst = me.tile_elem_ptr(base, tile, c[0], c[1])?;
                let scalar_path = |me: &mut Self| -> Result<(), CodegenError> {
                    for (i, k) in g.clone().enumerate() {
                        let x = match &rm {
                            Some(m) => {
                                let t = me.e.ty(scalar_ty(s));
                                let ok = match &ro {
                                    Some(o) => o[k],
                                    None => me.constant(Const::Int(0), s)?,
                                };
                                let p = rp[k];
                                me.e.if_else(
                                    m[k],
                                    &[t],
                                    &mut |e| Ok(vec![LoadOne { e }.load(p, s)?]),
                                    &mut |_| Ok(vec![ok]),
                                )?[0]
                            }
                            None => LoadOne { e: &mut me.e }.load(rp[k], s)?,
                        };
                        let d = if i == 0 {
                            dst
                        } else {
                            let off = me.e.i32(i as i64)?;
                            elem_ptr(&mut me.e, dst, off, s, 3)?
                        };
                        LoadOne { e: &mut me.e }.store(d, x, s)?;
                    }
                    Ok(())
                };
                // A group with one `other` loops over its elements instead.
                let rolled = g.len() >= ROLLED_FROM
                    && ro
                        .as_ref()
                        .is_none_or(|o| o[g.clone()].iter().all(|x| x.ptr == o[g.start].ptr));
                let p0 = rp[g.start];
                let rolled_path = |me: &mut Self| -> Result<(), CodegenError> {
                    let other = match &ro {
                        Some(o) => o[g.start],
                        None => me.constant(Const::Int(0), s)?,
                    };
                    let t = me.e.ty(scalar_ty(s));
                    let bits = rm
                        .as_ref()
                        .map(|m| mask_bits(&mut me.e, &m[g.clone()]))
                        .transpose()?;
                    me.e.rolled_loop(g.len() as u32, &mut |e, i| {
                        let p = elem_ptr(e, p0, i, s, 1)?;
                        let x = match bits {
                            Some(b) => {
                                let on = bit(e, b, i)?;
                                e.if_else(
                                    on,
                                    &[t],
                                    &mut |e| Ok(vec![LoadOne { e }.load(p, s)?]),
                                    &mut |_| Ok(vec![other]),
                                )?[0]
                            }
                            None => LoadOne { e }.load(p, s)?,
                        };
                        let d = elem_ptr(e, dst, i, s, 3)?;
                        LoadOne { e }.store(d, x, s)
                    })
                };
                let mut slow_path = |me: &mut Self| {
                    if rolled {
                        rolled_path(me)
                    } else {
                        scalar_path(me)
                    }
                };
                if !matches!(bytes, 4 | 8 | 16) {
                    slow_path(me)?;
                    continue;
                }
                let mut conds = vec![me.aligned(rp[g.start], v, s)?];
                if let Some(m) = &rm {
                    conds.extend(m[g.clone()].iter().copied());
                }
                let cond = me.e.and_all(&conds)?.unwrap();
                let cond = me.e.likely(cond)?;
                me.if_else_self(
                    cond,
                    &mut |me| me.cp_async(dst, p0, bytes, None),
                    &mut slow_path,
                )?;
            }
            Ok(())
        };
        match owner {
            Some(o) => self.if_then_self(o, &mut write),
            None => write(self),
        }
    }

    /// The registers of pipelined load `r` (canonical layout), read from its
    /// tile at byte offset `off` of shared memory: one vector per group of
    /// up to 8 contiguous elements (a group never crosses a 16-byte chunk).
    pub(super) fn read_stage(
        &mut self,
        r: ValueId,
        off: V,
        tile: SmemTile,
    ) -> Result<Vec<V>, CodegenError> {
        let l = self.layout(r);
        let Layout::Blocked(bl) = &l else {
            return Err(CodegenError::Internal(
                "pipelined load not in a blocked layout".into(),
            ));
        };
        let s = self.kernel.ty(r).scalar_elem().unwrap();
        let v = bl.spt[1].min(8);
        let vt = self.e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
        let et = self.e.ty(scalar_ty(s));
        let mut out = vec![None; l.num_regs()];
        // Coordinates wrap where the layout covers more than the tile, so
        // every thread reads valid elements.
        for g in Self::groups(&l, v) {
            let c = self.coords(&l, g.start)?;
            let p = self.tile_elem_ptr(off, tile, c[0], c[1])?;
            let x = self.e.op1(
                "llvm.load",
                &[p],
                vt,
                &[
                    (
                        "alignment",
                        &format!("{} : i64", v as usize * s.size_bytes()),
                    ),
                    ("ordering", "0 : i64"),
                ],
            )?;
            for (i, k) in g.enumerate() {
                let idx = self.e.i32(i as i64)?;
                out[k] = Some(self.e.op1("llvm.extractelement", &[x, idx], et, &[])?);
            }
        }
        out.into_iter()
            .map(|x| x.ok_or_else(|| CodegenError::Internal("register not read back".into())))
            .collect()
    }
}

/// A copy's per-element slow path (no TMA, misaligned or ragged) runs as a
/// rolled loop from this many elements on: unrolled, it was most of the code
/// NVPTX compiled for a pipelined matmul (0.3 of its 0.75 s). Only copies
/// roll: they leave no registers behind, while rolling the slow paths of
/// register loads and stores moved ptxas's schedule of the fast path, a few
/// kernels 5–20% slower and others as much faster (H200, session 18).
const ROLLED_FROM: usize = 4;

/// The slice instructions (indices into the loop's body) that the body
/// itself need not lower: their results are read only by the pipelined
/// loads, which read their stage instead, or by other such instructions.
/// `issue_copies` lowers the slice for a later iteration; lowered in the
/// body too, these were dead code (most of a pipelined kernel's address
/// arithmetic) that MLIR's canonicalizer had to find and erase.
pub(super) fn unread_in_body(p: &prefetch::Loop, body: &tir::Block) -> HashSet<usize> {
    let pipelined: HashSet<ValueId> = p.bufs.iter().map(|b| b.load).collect();
    // Each value's readers: the index of the body instruction that reads it,
    // itself or in a block nested in it (`None`: a pipelined load).
    let mut readers: HashMap<ValueId, Vec<Option<usize>>> = HashMap::new();
    for (i, inst) in body.insts.iter().enumerate() {
        let reader = match inst.op {
            Op::Load { .. } if inst.results.iter().any(|r| pipelined.contains(r)) => None,
            _ => Some(i),
        };
        tir::walk_inst(inst, &mut |inst| {
            for v in inst.op.operands() {
                readers.entry(v).or_default().push(reader);
            }
        });
    }
    let mut unread = HashSet::new();
    // Readers come after what they read, so one pass from the end settles it.
    for &i in p.slice.iter().rev() {
        let inst = &body.insts[i];
        let side_effect = matches!(
            inst.op,
            Op::Store { .. } | Op::AtomicAdd { .. } | Op::For { .. } | Op::If { .. }
        );
        if !side_effect
            && inst.results.iter().all(|r| {
                readers
                    .get(r)
                    .is_none_or(|rs| rs.iter().all(|x| x.is_none_or(|j| unread.contains(&j))))
            })
        {
            unread.insert(i);
        }
    }
    unread
}
