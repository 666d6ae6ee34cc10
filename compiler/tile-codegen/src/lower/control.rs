//! Structured control flow: `for` as `scf.for` and `if` as `scf.if`, their
//! values flattened to registers, and `scf.if` helpers whose bodies lower
//! through the lowering itself.

use super::reduce::identity;
use super::Lower;
use crate::emit::V;
use crate::layout::{Layout, Partial};
use crate::CodegenError;
use melior::ir::Type;
use tile_ir::{self as tir, Inst, Op, ValueId};

impl<'c, 'k> Lower<'c, 'k> {
    /// A `for` loop as `scf.for`, the carried values flattened to registers in
    /// their assigned layouts. A loop `prefetch` pipelines also carries the
    /// stage it reads and its barrier phase, and issues its copies ahead
    /// (`pipelined`).
    pub(super) fn lower_for(&mut self, inst: &Inst) -> Result<(), CodegenError> {
        let Op::For {
            lb,
            ub,
            step,
            init,
            body,
            ..
        } = &inst.op
        else {
            return Err(CodegenError::Internal("lower_for on a non-loop".into()));
        };
        // The first iteration after what came before; the next after this one.
        let accesses = self.global_accesses(&body.insts);
        let tma = self.plan.loops.contains_key(&body.args[0]) && !self.plan.tma.is_empty();
        self.order_before_block(&accesses, tma)?;
        let (lb, ub, step) = (self.regs(*lb)?[0], self.regs(*ub)?[0], self.regs(*step)?[0]);
        let mut flat_init = Vec::new();
        let mut sizes = Vec::new();
        let carried: Vec<Layout> = body.args[1..].iter().map(|a| self.layout(*a)).collect();
        for (v, l) in init.iter().zip(&carried) {
            let rv = match l {
                // Partials start empty; the initial value joins after the loop.
                Layout::Partial(p) => {
                    let s = self.kernel.ty(*v).scalar_elem().unwrap();
                    let id = self.constant(identity(p.op, s), s)?;
                    vec![id; p.num_regs()]
                }
                _ => self.regs_in(*v, l, inst.span)?,
            };
            sizes.push(rv.len());
            flat_init.extend(rv);
        }
        let pipe = self.plan.loops.get(&body.args[0]).cloned();
        if let Some(p) = &pipe {
            flat_init.extend(self.pipeline_prologue(p, body, lb, ub, step)?);
        }
        let mut arg_tys = vec![self.e.type_of(lb)];
        arg_tys.extend(flat_init.iter().map(|v| self.e.type_of(*v)));
        let bargs = self.e.push_block(&arg_tys);
        self.vals.insert(body.args[0], vec![bargs[0]]);
        let mut off = 1;
        for (a, n) in body.args[1..].iter().zip(&sizes) {
            self.vals.insert(*a, bargs[off..off + n].to_vec());
            off += n;
        }
        let extra_yield = match &pipe {
            Some(p) => {
                let unread = super::pipelined::unread_in_body(p, body);
                self.unread
                    .extend(unread.into_iter().map(|i| &body.insts[i] as *const Inst));
                self.pipelined_iteration(p, body, &bargs, off, ub, step)?
            }
            None => Vec::new(),
        };
        self.in_flight = pipe.as_ref().and_then(|p| p.in_flight).map(|(r, _)| r);
        self.loop_depth += 1;
        let before = self.global_pending.clone();
        self.lower_body(&body.insts, &carried, &extra_yield, Some(&accesses))?;
        self.loop_depth -= 1;
        // After the loop: what any iteration, or none, left unordered.
        self.global_pending = before;
        self.global_pending.extend(accesses);
        self.in_flight = None;
        let region = self.e.pop_region();
        let res_tys: Vec<Type> = flat_init.iter().map(|v| self.e.type_of(*v)).collect();
        let mut operands = vec![lb, ub, step];
        operands.extend(flat_init);
        let out = match pipe.as_ref().and_then(|p| p.in_flight) {
            None => self
                .e
                .op_full("scf.for", &operands, &res_tys, &[], vec![region])?,
            Some((_, j)) => {
                let at: usize = sizes[..j].iter().sum();
                self.for_draining_wgmma(&operands, &res_tys, region, at..at + sizes[j])?
            }
        };
        if let Some(p) = &pipe {
            self.pipeline_epilogue(p)?;
        }
        self.split_results(&inst.results, &sizes, &out);
        for ((res, l), v) in inst.results.iter().zip(&carried).zip(init) {
            if let Layout::Partial(p) = l {
                self.finish_partials(*res, p, *v, inst.span)?;
            }
        }
        Ok(())
    }

    /// A loop result carried as reduction partials: combined across threads
    /// into the result's own layout, then with the loop's initial value.
    fn finish_partials(
        &mut self,
        res: ValueId,
        p: &Partial,
        init: ValueId,
        span: tir::Span,
    ) -> Result<(), CodegenError> {
        let s = self.kernel.ty(res).scalar_elem().unwrap();
        let dst = self.layout(res);
        let shape = self.kernel.ty(res).shape.clone();
        let regs = self.regs(res)?;
        let total = self.finish_reduction(p.op, s, p, &regs, &shape, &dst, span)?;
        let start = self.regs_in(init, &dst, span)?;
        let joined = start
            .iter()
            .zip(&total)
            .map(|(&a, &b)| self.combine(p.op, s, a, b))
            .collect::<Result<Vec<V>, _>>()?;
        self.vals.insert(res, joined);
        Ok(())
    }

    /// An `if` as `scf.if`, its results flattened to registers in their layouts.
    pub(super) fn lower_if(&mut self, inst: &Inst) -> Result<(), CodegenError> {
        let Op::If {
            cond,
            then_body,
            else_body,
        } = &inst.op
        else {
            return Err(CodegenError::Internal("lower_if on a non-if".into()));
        };
        let c = self.regs(*cond)?[0];
        let res_layouts: Vec<Layout> = inst.results.iter().map(|v| self.layout(*v)).collect();
        let sizes: Vec<usize> = res_layouts.iter().map(|l| l.num_regs()).collect();
        let mut res_tys = Vec::new();
        for (v, n) in inst.results.iter().zip(&sizes) {
            let t = self.mty(self.kernel.ty(*v));
            res_tys.extend(std::iter::repeat_n(t, *n));
        }
        // Either branch runs after what is pending; what follows, after either.
        let before = self.global_pending.clone();
        self.e.push_block(&[]);
        self.lower_body(&then_body.insts, &res_layouts, &[], None)?;
        let r1 = self.e.pop_region();
        let after_then = std::mem::replace(&mut self.global_pending, before);
        self.e.push_block(&[]);
        self.lower_body(&else_body.insts, &res_layouts, &[], None)?;
        let r2 = self.e.pop_region();
        self.global_pending.extend(after_then);
        let out = self
            .e
            .op_full("scf.if", &[c], &res_tys, &[], vec![r1, r2])?;
        self.split_results(&inst.results, &sizes, &out);
        Ok(())
    }

    /// Lower a `For`/`If` body whose `Yield` delivers values in `layouts`,
    /// followed by `extra` values of the lowering's own.
    pub(super) fn lower_body(
        &mut self,
        insts: &[tir::Inst],
        layouts: &[Layout],
        extra: &[V],
        loop_accesses: Option<&[super::global_order::GlobalAccess]>,
    ) -> Result<(), CodegenError> {
        let (body, last) = match insts.split_last() {
            Some((last, body)) if matches!(last.op, Op::Yield(_)) => (body, Some(last)),
            _ => (insts, None),
        };
        self.lower_block_insts(body)?;
        if let Some(accesses) = loop_accesses {
            // The next iteration's accesses come after this one's (a loop
            // copies ahead only from buffers it does not write: no TMA read
            // follows its stores).
            self.order_before_block(accesses, false)?;
        }
        let mut flat = Vec::new();
        if let Some(Inst {
            op: Op::Yield(vs),
            span,
            ..
        }) = last
        {
            for (v, l) in vs.iter().zip(layouts) {
                flat.extend(self.regs_in(*v, l, *span)?);
            }
        }
        flat.extend(extra);
        self.e.op("scf.yield", &flat, &[], &[])?;
        Ok(())
    }

    pub(super) fn split_results(&mut self, results: &[ValueId], sizes: &[usize], flat: &[V]) {
        let mut off = 0;
        for (v, n) in results.iter().zip(sizes) {
            self.vals.insert(*v, flat[off..off + n].to_vec());
            off += n;
        }
    }

    /// `scf.if` without results, both branches lowering through `self`.
    pub(super) fn if_else_self(
        &mut self,
        cond: V,
        then: &mut dyn FnMut(&mut Self) -> Result<(), CodegenError>,
        els: &mut dyn FnMut(&mut Self) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        self.e.push_block(&[]);
        then(self)?;
        self.e.op("scf.yield", &[], &[], &[])?;
        let r1 = self.e.pop_region();
        self.e.push_block(&[]);
        els(self)?;
        self.e.op("scf.yield", &[], &[], &[])?;
        let r2 = self.e.pop_region();
        self.e.op_full("scf.if", &[cond], &[], &[], vec![r1, r2])?;
        Ok(())
    }

    /// `scf.if` without results whose body lowers through `self`.
    pub(super) fn if_then_self(
        &mut self,
        cond: V,
        body: &mut dyn FnMut(&mut Self) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        self.e.push_block(&[]);
        body(self)?;
        self.e.op("scf.yield", &[], &[], &[])?;
        let r1 = self.e.pop_region();
        self.e.push_block(&[]);
        self.e.op("scf.yield", &[], &[], &[])?;
        let r2 = self.e.pop_region();
        self.e.op_full("scf.if", &[cond], &[], &[], vec![r1, r2])?;
        Ok(())
    }
}
