//! TIR → MLIR (gpu, scf, arith, llvm, nvvm dialects), one `gpu.func` per kernel.
//!
//! Each TIR value becomes the list of registers one thread holds of it in the
//! canonical blocked layout of its shape (see `layout`). Loads and stores are
//! vectorised up to 16 bytes where the axis analysis proves contiguity; the
//! alignment and the mask of each vector are checked at run time, falling back
//! to per-element accesses at ragged edges.

use super::axis::{self, AxisInfo};
use super::emit::{Emitter, V};
use super::layout::{Blocked, Layout, Mma};
use super::prefetch::{self, Plan, SmemTile, PAD};
use super::tma;
use super::CodegenError;
use melior::ir::operation::{OperationLike, OperationMutLike};
use melior::ir::{Location, Module, Type};
use melior::Context;
use std::collections::HashMap;
use tile_ir::{
    self as tir, BinaryOp, CmpOp, Const, Elem, Inst, Kernel, Op, ReduceOp, Scalar, Span, UnaryOp,
    ValueId,
};

/// Largest shared memory a CTA may use on sm_80/sm_90 (bytes, dynamic).
const MAX_SMEM: u32 = 227 * 1024;
const SCRATCH: &str = "__tile_scratch";

/// The lowered module, the dynamic shared memory its kernel needs per CTA,
/// and the tensors the host describes for its TMA copies (its hidden
/// parameters, in order).
pub(crate) fn lower_to_mlir<'c>(
    ctx: &'c Context,
    kernel: &Kernel,
    warps: u32,
    arch: super::Arch,
) -> Result<(Module<'c>, u32, Vec<super::TmaOperand>), CodegenError> {
    let module = Module::new(Location::unknown(ctx));
    let mut defs = HashMap::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        for r in &i.results {
            defs.insert(*r, i);
        }
    });
    let lower = |plan: &Plan, scratch_base: u32| {
        let mut l = Lower {
            e: Emitter::new(ctx),
            kernel,
            warps,
            vals: HashMap::new(),
            splats: HashMap::new(),
            layouts: assign_layouts(kernel, warps, &plan.wgmma),
            axis: axis::analyze(kernel),
            threads: HashMap::new(),
            scratch_bytes: 0,
            scratch_span: Span::default(),
            scratch_in_loop: false,
            scratch_base,
            plan: plan.clone(),
            pipe_bufs: HashMap::new(),
            in_flight: None,
            defs: defs.clone(),
            lane: None,
            warp: None,
            tma_args: Vec::new(),
        };
        let func = l.lower_func();
        (l, func)
    };
    // Loops on `wgmma` take the largest stage budget that fits with the rest.
    let budgets = prefetch::WGMMA_STAGE_BUDGETS;
    let mut attempt = 0;
    let (mut l, func, shared_bytes) = loop {
        let plan = prefetch::plan(kernel, warps, arch, budgets[attempt]);
        let stages = plan.bytes.next_multiple_of(16);
        // The scratch area follows the pipeline stages; when no pipelined loop
        // uses scratch, it may share their memory instead (its users wait at a
        // barrier before writing, after every loop has drained), e.g. a matmul's
        // epilogue then needs no memory of its own.
        let (mut l, mut func) = lower(&plan, stages);
        if stages > 0 && l.scratch_bytes > 0 && !l.scratch_in_loop && func.is_ok() {
            (l, func) = lower(&plan, 0);
        }
        let shared_bytes = (l.scratch_base + l.scratch_bytes).max(stages);
        if shared_bytes <= MAX_SMEM || plan.wgmma.is_empty() || attempt + 1 == budgets.len() {
            break (l, func, shared_bytes);
        }
        attempt += 1;
    };
    let func = func?;
    if shared_bytes > MAX_SMEM {
        return Err(CodegenError::SharedMemory {
            bytes: shared_bytes,
            limit: MAX_SMEM,
            span: l.scratch_span,
        });
    }
    let e = &mut l.e;
    // gpu.module body: the scratch buffer (if any) and the kernel.
    e.push_block(&[]);
    if shared_bytes > 0 {
        // Dynamic shared memory: its size is given at launch.
        let gt = "!llvm.array<0 x i8>";
        let r = melior::ir::Region::new();
        e.op_full(
            "llvm.mlir.global",
            &[],
            &[],
            &[
                ("addr_space", e.attr("3 : i32")),
                // 1024: `wgmma`'s swizzle atoms are aligned to their size.
                ("alignment", e.attr("1024 : i64")),
                ("global_type", e.attr(gt)),
                ("linkage", e.attr("#llvm.linkage<external>")),
                ("sym_name", e.attr(&format!("\"{SCRATCH}\""))),
                ("visibility_", e.attr("0 : i64")),
            ],
            vec![r],
        )?;
    }
    e.append(func);
    let gpu_module_region = e.pop_region();
    let gpu_module = melior::ir::operation::OperationBuilder::new("gpu.module", e.loc)
        .add_attributes(&[(
            melior::ir::Identifier::new(ctx, "sym_name"),
            e.attr("\"kernels\""),
        )])
        .add_regions([gpu_module_region])
        .build()
        .map_err(|err| CodegenError::Internal(format!("gpu.module: {err}")))?;
    use melior::ir::block::BlockLike;
    module.body().append_operation(gpu_module);
    let mut module = module;
    module
        .as_operation_mut()
        .set_attribute("gpu.container_module", melior::ir::Attribute::unit(ctx));
    if !module.as_operation().verify() {
        return Err(CodegenError::Internal(format!(
            "generated MLIR for `{}` does not verify:\n{}",
            kernel.name,
            module.as_operation()
        )));
    }
    Ok((module, shared_bytes, l.plan.tma))
}

/// Values whose layout is not the canonical blocked layout of their shape:
/// `dot` results live in the mma accumulator layout, and so do elementwise ops
/// over them and loop-carried values they flow into (a fixpoint over loops).
fn assign_layouts(
    kernel: &Kernel,
    warps: u32,
    wgmma: &HashMap<ValueId, (u32, u32)>,
) -> HashMap<ValueId, Layout> {
    let mut out = HashMap::new();
    assign_block(kernel, warps, wgmma, &kernel.body.insts, &mut out);
    out
}

fn assign_block(
    kernel: &Kernel,
    warps: u32,
    wgmma: &HashMap<ValueId, (u32, u32)>,
    insts: &[tir::Inst],
    out: &mut HashMap<ValueId, Layout>,
) {
    for inst in insts {
        // Loops and ifs without results still hold dots in their bodies.
        let r = inst.results.first().copied().unwrap_or(ValueId(u32::MAX));
        match &inst.op {
            Op::Dot { .. } => {
                let shape = &kernel.ty(r).shape;
                let l = match wgmma.get(&r) {
                    Some(&(gm, gn)) => Mma::warpgroups(shape, gm, gn),
                    None => Mma::new(shape, warps),
                };
                out.insert(r, Layout::Mma(l));
            }
            Op::Unary(_, a) | Op::Cast(a) => {
                if let Some(l) = out.get(a).cloned() {
                    out.insert(r, l);
                }
            }
            Op::Binary(_, a, b) | Op::Cmp(_, a, b) => {
                if let Some(l) = out.get(a).or_else(|| out.get(b)).cloned() {
                    out.insert(r, l);
                }
            }
            Op::Select { cond, a, b } => {
                if let Some(l) = out
                    .get(a)
                    .or_else(|| out.get(b))
                    .or_else(|| out.get(cond))
                    .cloned()
                {
                    out.insert(r, l);
                }
            }
            Op::For { init, body, .. } => {
                for (a, i) in body.args[1..].iter().zip(init) {
                    if let Some(l) = out.get(i).cloned() {
                        out.insert(*a, l);
                    }
                }
                for _ in 0..3 {
                    assign_block(kernel, warps, wgmma, &body.insts, out);
                    let Some(Op::Yield(ys)) = body.insts.last().map(|i| &i.op) else {
                        break;
                    };
                    let mut changed = false;
                    for (a, y) in body.args[1..].iter().zip(ys) {
                        if let Some(l) = out.get(y).cloned() {
                            if out.get(a) != Some(&l) {
                                out.insert(*a, l);
                                changed = true;
                            }
                        }
                    }
                    if !changed {
                        break;
                    }
                }
                for (res, a) in inst.results.iter().zip(&body.args[1..]) {
                    if let Some(l) = out.get(a).cloned() {
                        out.insert(*res, l);
                    }
                }
            }
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                assign_block(kernel, warps, wgmma, &then_body.insts, out);
                assign_block(kernel, warps, wgmma, &else_body.insts, out);
                if let Some(Op::Yield(ys)) = then_body.insts.last().map(|i| &i.op) {
                    for (res, y) in inst.results.iter().zip(ys) {
                        if let Some(l) = out.get(y).cloned() {
                            out.insert(*res, l);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The order in which a block's instructions are lowered: within each run
/// between effects (stores, atomics, loops, ifs), the loads and the
/// instructions their operands need come first, in program order, then the
/// rest. Every load of the run is then in flight before the first reduction or
/// conversion waits at a barrier (LLVM does not move loads across barriers).
/// Only pure instructions move, each after its operands.
fn loads_first(insts: &[Inst]) -> Vec<&Inst> {
    let is_boundary =
        |i: &Inst| i.op.has_side_effects() || matches!(i.op, Op::For { .. } | Op::If { .. });
    let mut out = Vec::with_capacity(insts.len());
    let mut start = 0;
    while start < insts.len() {
        let end = insts[start..]
            .iter()
            .position(is_boundary)
            .map_or(insts.len(), |p| start + p);
        let run = &insts[start..end];
        let def: HashMap<ValueId, usize> = run
            .iter()
            .enumerate()
            .flat_map(|(i, inst)| inst.results.iter().map(move |r| (*r, i)))
            .collect();
        let mut early = vec![false; run.len()];
        let mut work: Vec<usize> = (0..run.len())
            .filter(|&i| matches!(run[i].op, Op::Load { .. }))
            .collect();
        while let Some(i) = work.pop() {
            if std::mem::replace(&mut early[i], true) {
                continue;
            }
            work.extend(run[i].op.operands().iter().filter_map(|v| def.get(v)));
        }
        out.extend(run.iter().zip(&early).filter(|(_, e)| **e).map(|(i, _)| i));
        out.extend(run.iter().zip(&early).filter(|(_, e)| !**e).map(|(i, _)| i));
        out.extend(insts.get(end));
        start = end + 1;
    }
    out
}

/// Per-layout thread coordinates, computed once in the entry block.
struct Threads {
    /// `t[d] * spt[d]`: the thread's base coordinate along each dimension.
    base: Vec<V>,
    /// Thread coordinate along each dimension.
    t: Vec<V>,
    /// Not a replica (None when the layout never replicates).
    owner: Option<V>,
}

struct Lower<'c, 'k> {
    e: Emitter<'c>,
    kernel: &'k Kernel,
    warps: u32,
    vals: HashMap<ValueId, Vec<V>>,
    /// Values that are a scalar repeated: converting them to any layout is free.
    splats: HashMap<ValueId, V>,
    layouts: HashMap<ValueId, Layout>,
    axis: HashMap<ValueId, AxisInfo>,
    threads: HashMap<Layout, Threads>,
    /// Shared memory is the pipeline stages (`plan`) from offset 0, then the
    /// scratch area of conversions, reductions and staged `dot` operands from
    /// `scratch_base`, `scratch_bytes` long.
    scratch_bytes: u32,
    /// The op needing the most scratch (for the error when it does not fit).
    scratch_span: Span,
    /// Whether scratch is used inside a pipelined loop (then it cannot share
    /// the stages' memory).
    scratch_in_loop: bool,
    scratch_base: u32,
    plan: Plan,
    /// Inside a pipelined loop: each pipelined load → byte offset (i32) of
    /// its tile in the stage this iteration reads.
    pipe_bufs: HashMap<ValueId, (V, SmemTile, bool)>,
    /// The `wgmma` dot of the loop being lowered that may stay in flight
    /// (`prefetch::Loop::in_flight`).
    in_flight: Option<ValueId>,
    /// The instruction defining each value (for recomputing broadcasts).
    defs: HashMap<ValueId, &'k Inst>,
    lane: Option<V>,
    warp: Option<V>,
    /// The hidden parameters after the kernel's own: one tensor-map address
    /// (i64, 0 when the host has none) per [`Plan::tma`] operand.
    tma_args: Vec<V>,
}

fn scalar_ty(s: Scalar) -> &'static str {
    s.name()
}

fn mlir_ty_name(t: &tir::Type) -> String {
    match t.elem {
        Elem::Scalar(s) => scalar_ty(s).to_string(),
        Elem::Ptr(_) => "!llvm.ptr<1>".to_string(),
    }
}

fn float_attr(x: f64, s: Scalar) -> String {
    let t = scalar_ty(s);
    if x.is_finite() {
        format!("{x:.17e} : {t}")
    } else {
        let bits: u64 = match s {
            Scalar::F32 => (x as f32).to_bits() as u64,
            Scalar::BF16 => half::bf16::from_f64(x).to_bits() as u64,
            Scalar::F16 => half::f16::from_f64(x).to_bits() as u64,
            _ => 0,
        };
        format!("0x{bits:X} : {t}")
    }
}

fn identity(op: ReduceOp, s: Scalar) -> Const {
    match (op, s.is_float()) {
        (ReduceOp::Sum, true) => Const::Float(0.0),
        (ReduceOp::Sum, false) => Const::Int(0),
        (ReduceOp::Max, true) => Const::Float(f64::NEG_INFINITY),
        (ReduceOp::Min, true) => Const::Float(f64::INFINITY),
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
    fn layout(&self, v: ValueId) -> Layout {
        self.layouts
            .get(&v)
            .cloned()
            .unwrap_or_else(|| self.canonical(&self.kernel.ty(v).shape))
    }

    fn canonical(&self, shape: &[u32]) -> Layout {
        Layout::Blocked(Blocked::canonical(shape, self.warps))
    }

    /// Registers of `v` in layout `want`, converting through shared memory if needed.
    fn regs_in(&mut self, v: ValueId, want: &Layout, span: Span) -> Result<Vec<V>, CodegenError> {
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

    fn mty(&self, t: &tir::Type) -> Type<'c> {
        self.e.ty(&mlir_ty_name(t))
    }

    fn regs(&self, v: ValueId) -> Result<Vec<V>, CodegenError> {
        self.vals
            .get(&v)
            .cloned()
            .ok_or_else(|| CodegenError::Internal(format!("value {v} used before definition")))
    }

    fn lower_func(&mut self) -> Result<melior::ir::Operation<'c>, CodegenError> {
        let k = self.kernel;
        let mut arg_tys: Vec<Type> = k.params.iter().map(|p| self.mty(&p.ty)).collect();
        let hidden = self.plan.tma.len();
        arg_tys.extend(std::iter::repeat_n(self.e.ty("i64"), hidden));
        let args = self.e.push_block(&arg_tys);
        for (p, a) in k.params.iter().zip(&args) {
            self.vals.insert(p.value, vec![*a]);
        }
        self.tma_args = args[k.params.len()..].to_vec();
        // Thread ids and the per-layout coordinates every later op needs.
        let index = self.e.ty("index");
        let i32t = self.e.ty("i32");
        let tid = self
            .e
            .op1("gpu.thread_id", &[], index, &[("dimension", "#gpu<dim x>")])?;
        let tid = self.e.op1("arith.index_cast", &[tid], i32t, &[])?;
        let c31 = self.e.i32(31)?;
        let c5 = self.e.i32(5)?;
        self.lane = Some(self.e.binop("arith.andi", tid, c31)?);
        self.warp = Some(self.e.binop("arith.shrui", tid, c5)?);
        let mut layouts: Vec<Layout> = k
            .values
            .iter()
            .filter(|t| !t.is_scalar())
            .map(|t| self.canonical(&t.shape))
            .collect();
        // In value order: a HashMap's order would change the PTX from run to run.
        let mut assigned: Vec<(&ValueId, &Layout)> = self.layouts.iter().collect();
        assigned.sort_by_key(|(v, _)| **v);
        layouts.extend(assigned.into_iter().map(|(_, l)| l.clone()));
        for l in layouts {
            if !self.threads.contains_key(&l) {
                let th = self.thread_coords(&l)?;
                self.threads.insert(l, th);
            }
        }
        self.lower_block_insts(&k.body.insts)?;
        self.e.op("gpu.return", &[], &[], &[])?;
        let region = self.e.pop_region();
        let fty = format!(
            "({}) -> ()",
            k.params
                .iter()
                .map(|p| mlir_ty_name(&p.ty))
                .chain(std::iter::repeat_n("i64".to_string(), hidden))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let e = &self.e;
        let attrs = [
            ("function_type", e.attr(&fty)),
            ("sym_name", e.attr(&format!("\"{}\"", k.name))),
            ("gpu.kernel", melior::ir::Attribute::unit(e.ctx)),
            (
                "known_block_size",
                e.attr(&format!("array<i32: {}, 1, 1>", 32 * self.warps)),
            ),
        ];
        let mut attrs = attrs.to_vec();
        if let Some(n) = self.min_ctas() {
            attrs.push(("nvvm.minctasm", e.attr(&format!("{n} : i32"))));
        }
        let attrs: Vec<_> = attrs
            .iter()
            .map(|(n, a)| (melior::ir::Identifier::new(e.ctx, n), *a))
            .collect();
        melior::ir::operation::OperationBuilder::new("gpu.func", e.loc)
            .add_attributes(&attrs)
            .add_regions([region])
            .build()
            .map_err(|err| CodegenError::Internal(format!("gpu.func: {err}")))
    }

    /// CTAs per SM to ask ptxas for (`nvvm.minctasm`, i.e. a register budget)
    /// in straight-line row kernels like rmsnorm and softmax: reductions, no
    /// loops and no `dot`, one or two loads of at most two 16-byte vectors per
    /// thread each (kernels holding more values live, such as mHC's
    /// `mhc_coeffs_bwd` with 13 loads, spill under the budget). Unasked, ptxas gave
    /// rmsnorm 56 registers (4 CTAs of 256 threads per SM); held to 48 it
    /// fits 5 without spills, with more loads in flight: 73% → 82–87% of copy
    /// bandwidth for the bf16 row kernels on the H200. f32 rows (four vectors
    /// per load) and plain elementwise kernels measured slower with the hint,
    /// so they go without.
    fn min_ctas(&self) -> Option<u32> {
        let threads = 32 * self.warps;
        let (mut other, mut reduce, mut most, mut loads) = (false, false, 0, 0);
        tir::walk_insts(&self.kernel.body, &mut |i| match i.op {
            Op::Dot { .. } | Op::For { .. } => other = true,
            Op::Reduce { .. } => reduce = true,
            Op::Load { .. } => {
                let t = self.kernel.ty(i.results[0]);
                let s = t.scalar_elem().map_or(8, |s| s.size_bytes());
                let bytes = (t.numel() * s).div_ceil(threads as usize);
                most = most.max(bytes);
                loads += 1;
            }
            _ => {}
        });
        // Only where the budget admits more CTAs than 64 registers would: a
        // hint that admits no more lets ptxas spend registers it left unused.
        let n = 65536 / (threads * 48);
        (reduce && !other && most <= 32 && loads <= 2 && n > 65536 / (threads * 64)).then_some(n)
    }

    fn thread_coords(&mut self, l: &Layout) -> Result<Threads, CodegenError> {
        let (lane, warp) = (self.lane.unwrap(), self.warp.unwrap());
        let l = match l {
            Layout::Blocked(b) => b,
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

    fn threads(&self, l: &Layout) -> &Threads {
        &self.threads[l]
    }

    fn owner(&self, l: &Layout) -> Option<V> {
        if l.shape().is_empty() {
            None
        } else {
            self.threads(l).owner
        }
    }

    /// Runtime coordinates (i32) of register `k` of a tile in layout `l`.
    fn coords(&mut self, l: &Layout, k: usize) -> Result<Vec<V>, CodegenError> {
        let base = self.threads(l).base.clone();
        let l = match l {
            Layout::Blocked(b) => b,
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
            let mut c = self.e.binop("arith.addi", base[d], so)?;
            if l.cov(d) > l.shape[d] {
                let m = self.e.i32(l.shape[d] as i64 - 1)?;
                c = self.e.binop("arith.andi", c, m)?;
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Row-major flat index of coordinates in `shape`.
    fn flat(&mut self, coords: &[V], shape: &[u32]) -> Result<V, CodegenError> {
        row_major_index(&mut self.e, coords, shape)
    }

    fn lower_block_insts(&mut self, insts: &[tir::Inst]) -> Result<(), CodegenError> {
        for inst in loads_first(insts) {
            self.lower_inst(inst)?;
        }
        Ok(())
    }

    fn lower_inst(&mut self, inst: &tir::Inst) -> Result<(), CodegenError> {
        let k = self.kernel;
        let r = inst.results.first().copied();
        let res_ty = r.map(|r| k.ty(r).clone());
        let regs: Vec<V> = match &inst.op {
            Op::Const(c) => {
                let t = res_ty.unwrap();
                let s = t.scalar_elem().unwrap_or(Scalar::I64);
                vec![self.constant(*c, s)?]
            }
            Op::ProgramId(a) | Op::NumPrograms(a) => {
                let name = if matches!(inst.op, Op::ProgramId(_)) {
                    "gpu.block_id"
                } else {
                    "gpu.grid_dim"
                };
                let dim = ["x", "y", "z"][(*a as usize).min(2)];
                let index = self.e.ty("index");
                let i32t = self.e.ty("i32");
                let v = self.e.op1(
                    name,
                    &[],
                    index,
                    &[("dimension", &format!("#gpu<dim {dim}>"))],
                )?;
                vec![self.e.op1("arith.index_cast", &[v], i32t, &[])?]
            }
            Op::Arange { start, .. } => {
                let l = self.layout(r.unwrap());
                let st = self.e.i32(*start)?;
                let mut out = Vec::new();
                for reg in 0..l.num_regs() {
                    let c = self.coords(&l, reg)?;
                    out.push(self.e.binop("arith.addi", c[0], st)?);
                }
                out
            }
            Op::Splat(v) => {
                let s = self.regs(*v)?[0];
                self.splats.insert(r.unwrap(), s);
                vec![s; self.layout(r.unwrap()).num_regs()]
            }
            Op::ExpandDims { value, .. } | Op::Reshape(value) => {
                let (src, dst) = (self.layout(*value), self.layout(r.unwrap()));
                let regs = self.regs(*value)?;
                if let Some(&s) = self.splats.get(value) {
                    self.splats.insert(r.unwrap(), s);
                    vec![s; dst.num_regs()]
                } else if src.shape().is_empty() {
                    vec![regs[0]; dst.num_regs()]
                } else if src.same_map(&dst) {
                    regs
                } else if self.recomputable(r.unwrap(), &mut 16) {
                    self.recompute(r.unwrap(), &dst)?
                } else {
                    // Both keep the row-major order: a destination element is
                    // the source element at the same linear index.
                    let dst_shape = k.ty(r.unwrap()).shape.clone();
                    let numel = dst_shape.iter().product::<u32>();
                    self.convert(*value, &dst, inst.span, &mut |e, c| {
                        Ok((vec![row_major_index(e, c, &dst_shape)?], vec![numel]))
                    })?
                }
            }
            Op::Broadcast(value) => {
                let (src, dst) = (self.layout(*value), self.layout(r.unwrap()));
                let regs = self.regs(*value)?;
                if let Some(&s) = self.splats.get(value) {
                    self.splats.insert(r.unwrap(), s);
                    vec![s; dst.num_regs()]
                } else if k.ty(*value).numel() == 1 {
                    vec![regs[0]; dst.num_regs()]
                } else if src.same_map(&dst) {
                    regs
                } else if self.recomputable(r.unwrap(), &mut 16) {
                    self.recompute(r.unwrap(), &dst)?
                } else {
                    let src_shape = k.ty(*value).shape.clone();
                    self.convert(*value, &dst, inst.span, &mut |e, c| {
                        let mut s = Vec::new();
                        for (d, &x) in c.iter().enumerate() {
                            s.push(if src_shape[d] == 1 { e.i32(0)? } else { x });
                        }
                        Ok((s, src_shape.clone()))
                    })?
                }
            }
            Op::Trans { value, perm } => {
                let dst = self.layout(r.unwrap());
                let src_shape = k.ty(*value).shape.clone();
                let perm = perm.clone();
                self.convert(*value, &dst, inst.span, &mut |_, c| {
                    let mut s = vec![c[0]; c.len()];
                    for (i, &p) in perm.iter().enumerate() {
                        s[p as usize] = c[i];
                    }
                    Ok((s, src_shape.clone()))
                })?
            }
            Op::Unary(op, v) => {
                let s = k.ty(*v).scalar_elem().unwrap();
                let lr = self.layout(r.unwrap());
                let regs = self.regs_in(*v, &lr, inst.span)?;
                regs.iter()
                    .map(|&x| self.unary(*op, s, x))
                    .collect::<Result<_, _>>()?
            }
            Op::Binary(BinaryOp::Div, a, b)
                if self.splats.contains_key(b)
                    && !k.ty(*a).is_scalar()
                    && k.ty(*a).scalar_elem().is_some_and(|s| s.is_float()) =>
            {
                // Division by one value (a reduction's normalisation): one
                // reciprocal per thread, then a multiply per element, which is
                // within 2 ulp of f32 division (the math is f32 for 16-bit floats).
                let s = k.ty(*a).scalar_elem().unwrap();
                let lr = self.layout(r.unwrap());
                let ra = self.regs_in(*a, &lr, inst.span)?;
                let d = self.splats[b];
                let d = self.widen(d, s)?;
                let one = self.f32(1.0)?;
                let rcp = self.e.binop("arith.divf", one, d)?;
                ra.iter()
                    .map(|&x| {
                        let x = self.widen(x, s)?;
                        let y = self.e.binop("arith.mulf", x, rcp)?;
                        self.narrow(y, s)
                    })
                    .collect::<Result<_, _>>()?
            }
            Op::Binary(op, a, b) => {
                let s = k.ty(*a).scalar_elem().unwrap();
                let lr = self.layout(r.unwrap());
                let (ra, rb) = (
                    self.regs_in(*a, &lr, inst.span)?,
                    self.regs_in(*b, &lr, inst.span)?,
                );
                ra.iter()
                    .zip(&rb)
                    .map(|(&x, &y)| self.binary(*op, s, x, y))
                    .collect::<Result<_, _>>()?
            }
            Op::Cmp(op, a, b) => {
                let s = k.ty(*a).scalar_elem();
                let lr = self.layout(r.unwrap());
                let (ra, rb) = (
                    self.regs_in(*a, &lr, inst.span)?,
                    self.regs_in(*b, &lr, inst.span)?,
                );
                ra.iter()
                    .zip(&rb)
                    .map(|(&x, &y)| self.compare(*op, s, x, y))
                    .collect::<Result<_, _>>()?
            }
            Op::Select { cond, a, b } => {
                let lr = self.layout(r.unwrap());
                let rc = self.regs_in(*cond, &lr, inst.span)?;
                let (ra, rb) = (
                    self.regs_in(*a, &lr, inst.span)?,
                    self.regs_in(*b, &lr, inst.span)?,
                );
                (0..ra.len())
                    .map(|i| self.e.select(rc[i], ra[i], rb[i]))
                    .collect::<Result<_, _>>()?
            }
            Op::Cast(v) => {
                let from = k.ty(*v).scalar_elem().unwrap();
                let to = res_ty.unwrap().scalar_elem().unwrap();
                let lr = self.layout(r.unwrap());
                let regs = self.regs_in(*v, &lr, inst.span)?;
                regs.iter()
                    .map(|&x| self.cast(x, from, to))
                    .collect::<Result<_, _>>()?
            }
            Op::AddPtr { ptr, offset } => {
                let Elem::Ptr(pointee) = k.ty(*ptr).elem else {
                    return Err(CodegenError::Internal("add_ptr on a non-pointer".into()));
                };
                let lr = self.layout(r.unwrap());
                let (rp, ro) = (
                    self.regs_in(*ptr, &lr, inst.span)?,
                    self.regs_in(*offset, &lr, inst.span)?,
                );
                (0..rp.len())
                    .map(|i| self.gep(rp[i], ro[i], pointee))
                    .collect::<Result<_, _>>()?
            }
            // A pipelined load's tile is already in shared memory, where its
            // dot reads it; other uses read it back.
            Op::Load { .. } if self.pipe_bufs.contains_key(&r.unwrap()) => {
                let (off, tile, read_back) = self.pipe_bufs[&r.unwrap()];
                if read_back {
                    self.read_stage(r.unwrap(), off, tile)?
                } else {
                    vec![]
                }
            }
            Op::Load { ptr, mask, other } => {
                self.load(*ptr, *mask, *other, r.unwrap(), inst.span)?
            }
            Op::Store { ptr, value, mask } => {
                self.store(*ptr, *value, *mask, inst.span)?;
                vec![]
            }
            Op::AtomicAdd { ptr, value, mask } => {
                self.atomic_add(*ptr, *value, *mask, inst.span)?
            }
            Op::Reduce { op, value, axis } => {
                self.reduce(*op, *value, *axis as usize, r.unwrap(), inst.span)?
            }
            Op::Dot { a, b, acc } => self.dot(*a, *b, *acc, r.unwrap(), inst.span)?,
            Op::For {
                lb,
                ub,
                step,
                init,
                body,
                ..
            } => {
                let (lb, ub, step) = (self.regs(*lb)?[0], self.regs(*ub)?[0], self.regs(*step)?[0]);
                let mut flat_init = Vec::new();
                let mut sizes = Vec::new();
                let carried: Vec<Layout> = body.args[1..].iter().map(|a| self.layout(*a)).collect();
                for (v, l) in init.iter().zip(&carried) {
                    let rv = self.regs_in(*v, l, inst.span)?;
                    sizes.push(rv.len());
                    flat_init.extend(rv);
                }
                let pipe = self.plan.loops.get(&body.args[0]).cloned();
                if let Some(p) = &pipe {
                    // Prologue: the copies of iterations 0 .. stages-2, one group
                    // each, once every warp is done with the stages' memory
                    // (an earlier run of this loop or another pipelined loop).
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
                    for st in 0..p.ahead() {
                        let iv = self.iv_plus(lb, step, st)?;
                        let stage = self.e.i32(st as i64)?;
                        self.issue_copies(p, &body.insts, body.args[0], iv, ub, stage)?;
                    }
                    // The stage index the loop reads and the parity of its
                    // barrier's phase, carried after the TIR values.
                    flat_init.push(self.e.i32(0)?);
                    flat_init.push(self.e.i32(0)?);
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
                let mut extra_yield = Vec::new();
                if let Some(p) = &pipe {
                    let read = bargs[off];
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
                    let phase = bargs[off + 1];
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
                    extra_yield.push(self.e.select(is_last, zero, after)?);
                    let flipped = self.e.binop("arith.xori", phase, one)?;
                    extra_yield.push(self.e.select(is_last, flipped, phase)?);
                }
                self.in_flight = pipe.as_ref().and_then(|p| p.in_flight).map(|(r, _)| r);
                self.lower_body(&body.insts, &carried, &extra_yield)?;
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
                        // The last iteration's multiply is still running: wait
                        // for it inside `if lb < ub`, so that no path where
                        // the accumulators are copied (the loop skipped) meets
                        // a running wgmma (ptxas would serialize them all).
                        let at: usize = sizes[..j].iter().sum();
                        let n = sizes[j];
                        let live = self.e.cmpi("slt", lb, ub)?;
                        let mut region = Some(region);
                        let init = operands[3..].to_vec();
                        self.e.if_else(
                            live,
                            &res_tys,
                            &mut |e| {
                                let mut out = e.op_full(
                                    "scf.for",
                                    &operands,
                                    &res_tys,
                                    &[],
                                    vec![region.take().unwrap()],
                                )?;
                                let done = wgmma_wait(e, 0, &out[at..at + n])?;
                                out[at..at + n].copy_from_slice(&done);
                                Ok(out)
                            },
                            &mut |_| Ok(init.clone()),
                        )?
                    }
                };
                if let Some(p) = &pipe {
                    for b in &p.bufs {
                        self.pipe_bufs.remove(&b.load);
                    }
                    // Only empty groups (past the last iteration) can be pending.
                    self.e
                        .op("nvvm.cp.async.wait.group", &[], &[], &[("n", "0 : i32")])?;
                }
                self.split_results(&inst.results, &sizes, &out);
                return Ok(());
            }
            Op::If {
                cond,
                then_body,
                else_body,
            } => {
                let c = self.regs(*cond)?[0];
                let res_layouts: Vec<Layout> =
                    inst.results.iter().map(|v| self.layout(*v)).collect();
                let sizes: Vec<usize> = res_layouts.iter().map(|l| l.num_regs()).collect();
                let mut res_tys = Vec::new();
                for (v, n) in inst.results.iter().zip(&sizes) {
                    let t = self.mty(k.ty(*v));
                    res_tys.extend(std::iter::repeat_n(t, *n));
                }
                self.e.push_block(&[]);
                self.lower_body(&then_body.insts, &res_layouts, &[])?;
                let r1 = self.e.pop_region();
                self.e.push_block(&[]);
                self.lower_body(&else_body.insts, &res_layouts, &[])?;
                let r2 = self.e.pop_region();
                let out = self
                    .e
                    .op_full("scf.if", &[c], &res_tys, &[], vec![r1, r2])?;
                self.split_results(&inst.results, &sizes, &out);
                return Ok(());
            }
            Op::Yield(_) => {
                return Err(CodegenError::Internal(
                    "yield outside a loop or if body".into(),
                ));
            }
        };
        if let Some(r) = r {
            self.vals.insert(r, regs);
        }
        Ok(())
    }

    /// `iv + n·step` in the induction variable's type.
    fn iv_plus(&mut self, iv: V, step: V, n: u32) -> Result<V, CodegenError> {
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
    fn issue_copies(
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
            // Per buffer: whether TMA fetches it this time (None: never).
            let mut by_tma: Vec<Option<(V, V, V)>> = Vec::new();
            for b in &p.bufs {
                by_tma.push(match &b.tma {
                    Some((t, k)) => {
                        let (zero64, zero) = (me.e.i64(0)?, me.e.i32(0)?);
                        let has_map = me.e.cmpi("ne", me.tma_args[*k], zero64)?;
                        let (r0, c0) = (me.start(&t.r0)?, me.start(&t.c0)?);
                        let r_ok = me.e.cmpi("sge", r0, zero)?;
                        let c_ok = me.e.cmpi("sge", c0, zero)?;
                        let mut conds = vec![has_map, r_ok, c_ok];
                        for (start, n, bound) in &t.guards {
                            let (n, bound) = (*n, *bound);
                            let first = me.start(start)?;
                            let last = me.e.i32(n as i64 - 1)?;
                            let last = me.e.binop("arith.addi", first, last)?;
                            let b = me.regs(bound)?[0];
                            conds.push(me.e.cmpi("slt", last, b)?);
                        }
                        let ok = me.e.and_all(&conds)?.unwrap();
                        Some((ok, r0, c0))
                    }
                    None => None,
                });
            }
            // The rest by `cp.async`, from the addresses and masks of the slice.
            let mut fallback = Vec::new();
            for t in &by_tma {
                match t {
                    Some((ok, _, _)) => {
                        let t = me.e.bool(true)?;
                        fallback.push(me.e.binop("arith.xori", *ok, t)?);
                    }
                    None => fallback.push(me.e.bool(true)?),
                }
            }
            let any = fallback
                .iter()
                .copied()
                .reduce(|a, b| me.e.binop("arith.ori", a, b).unwrap())
                .unwrap();
            me.if_then_self(any, &mut |me| {
                for &i in &tiles {
                    me.lower_inst(&insts[i])?;
                }
                for (b, &need) in p.bufs.iter().zip(&fallback) {
                    let o = me.e.i32(b.offset as i64)?;
                    let base = me.e.binop("arith.addi", stage_off, o)?;
                    let Some(Op::Load { ptr, mask, other }) = me.defs.get(&b.load).map(|i| &i.op)
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

    /// By the leader thread: announce the bytes TMA brings into `stage`
    /// (arriving on its barrier), then issue one box copy per swizzle-atom
    /// column of every buffer TMA fetches this time (`by_tma`).
    fn issue_tma(
        &mut self,
        p: &prefetch::Loop,
        by_tma: &[Option<(V, V, V)>],
        stage: V,
        stage_off: V,
        bars: u32,
    ) -> Result<(), CodegenError> {
        let bar = self.barrier_addr(bars, stage)?;
        let mut tx = self.e.i32(0)?;
        for (b, t) in p.bufs.iter().zip(by_tma) {
            if let Some((ok, _, _)) = t {
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
            let (Some((ok, r0, c0)), Some((_, k)), SmemTile::Swizzled { rows, width }) =
                (t, &b.tma, b.tile)
            else {
                continue;
            };
            let cols = self.kernel.ty(b.load).shape[1];
            let desc = self.tma_args[*k];
            let (ok, r0, c0) = (*ok, *r0, *c0);
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

    /// Thread 0 of the CTA (i1).
    fn leader(&mut self) -> Result<V, CodegenError> {
        let (lane, warp) = (self.lane.unwrap(), self.warp.unwrap());
        let either = self.e.binop("arith.ori", lane, warp)?;
        let zero = self.e.i32(0)?;
        self.e.cmpi("eq", either, zero)
    }

    /// Shared-window address (i32) of the barrier of stage `stage` (i32),
    /// the barriers starting at byte `bars`.
    fn barrier_addr(&mut self, bars: u32, stage: V) -> Result<V, CodegenError> {
        let c8 = self.e.i32(8)?;
        let o = self.e.binop("arith.muli", stage, c8)?;
        let base = self.e.i32(bars as i64)?;
        let o = self.e.binop("arith.addi", o, base)?;
        self.smem_addr(o)
    }

    /// Shared-window address (i32, as PTX's shared-space operands take it)
    /// of byte offset `off` of dynamic shared memory.
    fn smem_addr(&mut self, off: V) -> Result<V, CodegenError> {
        let p = self.smem_ptr(off)?;
        let i32t = self.e.ty("i32");
        self.e.op1("llvm.ptrtoint", &[p], i32t, &[])
    }

    /// A TMA box corner as an i32 register.
    fn start(&mut self, s: &tma::Start) -> Result<V, CodegenError> {
        let mut sum = self.e.i32(s.konst)?;
        for &v in &s.values {
            let x = self.regs(v)?[0];
            sum = self.e.binop("arith.addi", sum, x)?;
        }
        Ok(sum)
    }

    /// The tile `load(ptr, mask, other)` (value `r`, 16-bit elements) into
    /// shared memory at byte offset `base` (i32), laid out as `tile`:
    /// `cp.async` per aligned, unmasked group of contiguous elements (4, 8 or
    /// 16 bytes); elsewhere per element, through registers.
    fn copy_tile(
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
                            let p3 = me.e.ty("!llvm.ptr<3>");
                            let off = me.e.i32(i as i64)?;
                            me.e.op1(
                                "llvm.getelementptr",
                                &[dst, off],
                                p3,
                                &[
                                    ("elem_type", scalar_ty(s)),
                                    ("noWrapFlags", "0 : i32"),
                                    ("rawConstantIndices", "array<i32: -2147483648>"),
                                ],
                            )?
                        };
                        LoadOne { e: &mut me.e }.store(d, x, s)?;
                    }
                    Ok(())
                };
                if !matches!(bytes, 4 | 8 | 16) {
                    scalar_path(me)?;
                    continue;
                }
                let mut conds = vec![me.aligned(rp[g.start], v, s)?];
                if let Some(m) = &rm {
                    conds.extend(m[g.clone()].iter().copied());
                }
                let cond = me.e.and_all(&conds)?.unwrap();
                let p0 = rp[g.start];
                me.if_else_self(
                    cond,
                    &mut |me| {
                        // .cg (L2 only) exists for 16-byte copies alone.
                        let cache = if bytes == 16 { "cg" } else { "ca" };
                        me.e.op(
                            "nvvm.cp.async.shared.global",
                            &[dst, p0],
                            &[],
                            &[
                                ("size", &format!("{bytes} : i32")),
                                ("modifier", &format!("#nvvm<load_cache_modifier {cache}>")),
                            ],
                        )?;
                        Ok(())
                    },
                    &mut |me| scalar_path(me),
                )?;
            }
            Ok(())
        };
        match owner {
            Some(o) => self.if_then_self(o, &mut write),
            None => write(self),
        }
    }

    /// Whether `v` can be computed at any coordinate from scalars alone (an
    /// index, pointer or mask expression over `arange`, splats, expansions and
    /// broadcasts, of at most `budget` tile ops): then a broadcast of it is
    /// recomputed in the destination layout instead of moved through shared
    /// memory between two barriers.
    fn recomputable(&self, v: ValueId, budget: &mut u32) -> bool {
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
    fn recompute(&mut self, v: ValueId, l: &Layout) -> Result<Vec<V>, CodegenError> {
        (0..l.num_regs())
            .map(|k| {
                let c = self.coords(l, k)?;
                self.value_at(v, &c)
            })
            .collect()
    }

    /// The element of a recomputable value `v` at coordinates `c`.
    fn value_at(&mut self, v: ValueId, c: &[V]) -> Result<V, CodegenError> {
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
                self.binary(*op, elem(a).unwrap(), x, y)
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

    /// `p + o` elements of `s` (a global pointer).
    fn gep(&mut self, p: V, o: V, s: Scalar) -> Result<V, CodegenError> {
        let pt = self.e.ty("!llvm.ptr<1>");
        self.e.op1(
            "llvm.getelementptr",
            &[p, o],
            pt,
            &[
                ("elem_type", scalar_ty(s)),
                ("noWrapFlags", "0 : i32"),
                ("rawConstantIndices", "array<i32: -2147483648>"),
            ],
        )
    }

    /// Lower a `For`/`If` body whose `Yield` delivers values in `layouts`,
    /// followed by `extra` values of the lowering's own.
    fn lower_body(
        &mut self,
        insts: &[tir::Inst],
        layouts: &[Layout],
        extra: &[V],
    ) -> Result<(), CodegenError> {
        let (body, last) = match insts.split_last() {
            Some((last, body)) if matches!(last.op, Op::Yield(_)) => (body, Some(last)),
            _ => (insts, None),
        };
        self.lower_block_insts(body)?;
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

    fn split_results(&mut self, results: &[ValueId], sizes: &[usize], flat: &[V]) {
        let mut off = 0;
        for (v, n) in results.iter().zip(sizes) {
            self.vals.insert(*v, flat[off..off + n].to_vec());
            off += n;
        }
    }

    fn constant(&mut self, c: Const, s: Scalar) -> Result<V, CodegenError> {
        let t = self.e.ty(scalar_ty(s));
        match (c, s) {
            (_, Scalar::I1) => self.e.bool(match c {
                Const::Bool(b) => b,
                Const::Int(i) => i != 0,
                Const::Float(f) => f != 0.0,
            }),
            (Const::Int(i), s) if s.is_int() => {
                self.e.constant(&format!("{i} : {}", scalar_ty(s)), t)
            }
            (Const::Float(f), s) if s.is_int() => self
                .e
                .constant(&format!("{} : {}", f as i64, scalar_ty(s)), t),
            (Const::Int(i), s) => self.e.constant(&float_attr(i as f64, s), t),
            (Const::Float(f), s) => self.e.constant(&float_attr(f, s), t),
            (Const::Bool(b), s) => self
                .e
                .constant(&format!("{} : {}", b as i64, scalar_ty(s)), t),
        }
    }

    fn f32(&mut self, x: f64) -> Result<V, CodegenError> {
        let t = self.e.ty("f32");
        self.e.constant(&float_attr(x, Scalar::F32), t)
    }

    /// Widen a 16-bit float to f32 (identity for f32).
    fn widen(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        if matches!(s, Scalar::F16 | Scalar::BF16) {
            let t = self.e.ty("f32");
            self.e.op1("arith.extf", &[x], t, &[])
        } else {
            Ok(x)
        }
    }

    fn narrow(&mut self, x: V, s: Scalar) -> Result<V, CodegenError> {
        if matches!(s, Scalar::F16 | Scalar::BF16) {
            let t = self.e.ty(scalar_ty(s));
            self.e.op1("arith.truncf", &[x], t, &[])
        } else {
            Ok(x)
        }
    }

    fn unary(&mut self, op: UnaryOp, s: Scalar, x: V) -> Result<V, CodegenError> {
        if s.is_int() {
            return match op {
                UnaryOp::Neg => {
                    let z = self.constant(Const::Int(0), s)?;
                    self.e.binop("arith.subi", z, x)
                }
                UnaryOp::Not => {
                    let m = self.constant(
                        if s == Scalar::I1 {
                            Const::Bool(true)
                        } else {
                            Const::Int(-1)
                        },
                        s,
                    )?;
                    self.e.binop("arith.xori", x, m)
                }
                UnaryOp::Abs => {
                    let z = self.constant(Const::Int(0), s)?;
                    let n = self.e.binop("arith.subi", z, x)?;
                    let c = self.e.cmpi("slt", x, z)?;
                    self.e.select(c, n, x)
                }
                _ => Err(CodegenError::Internal(format!("{op:?} on integers"))),
            };
        }
        let f32t = self.e.ty("f32");
        let x = self.widen(x, s)?;
        let y = match op {
            UnaryOp::Neg => self.e.op1("arith.negf", &[x], f32t, &[])?,
            UnaryOp::Not => return Err(CodegenError::Internal("not on floats".into())),
            UnaryOp::Abs => self.e.op1(
                "llvm.intr.fabs",
                &[x],
                f32t,
                &[("fastmathFlags", "#llvm.fastmath<none>")],
            )?,
            UnaryOp::Exp => self.exp(x)?,
            UnaryOp::Exp2 => self
                .e
                .call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[x], f32t)?,
            UnaryOp::Log => {
                let l2 = self
                    .e
                    .call_intrinsic("llvm.nvvm.lg2.approx.ftz.f", &[x], f32t)?;
                let ln2 = self.f32(std::f64::consts::LN_2)?;
                self.e.binop("arith.mulf", l2, ln2)?
            }
            UnaryOp::Sqrt => self.e.call_intrinsic("llvm.nvvm.sqrt.rn.f", &[x], f32t)?,
            UnaryOp::Rsqrt => self
                .e
                .call_intrinsic("llvm.nvvm.rsqrt.approx.ftz.f", &[x], f32t)?,
            UnaryOp::Sigmoid => {
                let n = self.e.op1("arith.negf", &[x], f32t, &[])?;
                let ex = self.exp(n)?;
                let one = self.f32(1.0)?;
                let d = self.e.binop("arith.addf", one, ex)?;
                self.e.binop("arith.divf", one, d)?
            }
            UnaryOp::Tanh => self.e.op1(
                "llvm.inline_asm",
                &[x],
                f32t,
                &[
                    ("asm_string", "\"tanh.approx.f32 $0, $1;\""),
                    ("constraints", "\"=f,f\""),
                    ("tail_call_kind", "#llvm.tailcallkind<none>"),
                ],
            )?,
        };
        self.narrow(y, s)
    }

    fn exp(&mut self, x: V) -> Result<V, CodegenError> {
        let f32t = self.e.ty("f32");
        let log2e = self.f32(std::f64::consts::LOG2_E)?;
        let t = self.e.binop("arith.mulf", x, log2e)?;
        self.e
            .call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[t], f32t)
    }

    fn binary(&mut self, op: BinaryOp, s: Scalar, x: V, y: V) -> Result<V, CodegenError> {
        if s.is_int() {
            let name = match op {
                BinaryOp::Add => "arith.addi",
                BinaryOp::Sub => "arith.subi",
                BinaryOp::Mul => "arith.muli",
                BinaryOp::Div => "arith.divsi",
                BinaryOp::Rem => "arith.remsi",
                BinaryOp::Max => "arith.maxsi",
                BinaryOp::Min => "arith.minsi",
                BinaryOp::And => "arith.andi",
                BinaryOp::Or => "arith.ori",
                BinaryOp::Xor => "arith.xori",
                BinaryOp::Shl => "arith.shli",
                BinaryOp::Shr => "arith.shrsi",
            };
            return self.e.binop(name, x, y);
        }
        let (x, y) = (self.widen(x, s)?, self.widen(y, s)?);
        let f32t = self.e.ty("f32");
        let r = match op {
            BinaryOp::Add => self.e.binop("arith.addf", x, y)?,
            BinaryOp::Sub => self.e.binop("arith.subf", x, y)?,
            BinaryOp::Mul => self.e.binop("arith.mulf", x, y)?,
            BinaryOp::Div => self.e.binop("arith.divf", x, y)?,
            BinaryOp::Rem => self.e.binop("arith.remf", x, y)?,
            BinaryOp::Max => self.e.op1(
                "llvm.intr.maxnum",
                &[x, y],
                f32t,
                &[("fastmathFlags", "#llvm.fastmath<none>")],
            )?,
            BinaryOp::Min => self.e.op1(
                "llvm.intr.minnum",
                &[x, y],
                f32t,
                &[("fastmathFlags", "#llvm.fastmath<none>")],
            )?,
            _ => return Err(CodegenError::Internal(format!("{op:?} on floats"))),
        };
        self.narrow(r, s)
    }

    fn compare(&mut self, op: CmpOp, s: Option<Scalar>, x: V, y: V) -> Result<V, CodegenError> {
        match s {
            Some(s) if s.is_float() => {
                let (x, y) = (self.widen(x, s)?, self.widen(y, s)?);
                let pred = match op {
                    CmpOp::Eq => "oeq",
                    CmpOp::Ne => "une",
                    CmpOp::Lt => "olt",
                    CmpOp::Le => "ole",
                    CmpOp::Gt => "ogt",
                    CmpOp::Ge => "oge",
                };
                self.e.cmpf(pred, x, y)
            }
            Some(_) => {
                let pred = match op {
                    CmpOp::Eq => "eq",
                    CmpOp::Ne => "ne",
                    CmpOp::Lt => "slt",
                    CmpOp::Le => "sle",
                    CmpOp::Gt => "sgt",
                    CmpOp::Ge => "sge",
                };
                self.e.cmpi(pred, x, y)
            }
            None => {
                // Pointers compare as addresses.
                let i64t = self.e.ty("i64");
                let xi = self.e.op1("llvm.ptrtoint", &[x], i64t, &[])?;
                let yi = self.e.op1("llvm.ptrtoint", &[y], i64t, &[])?;
                self.compare(op, Some(Scalar::I64), xi, yi)
            }
        }
    }

    fn cast(&mut self, x: V, from: Scalar, to: Scalar) -> Result<V, CodegenError> {
        if from == to {
            return Ok(x);
        }
        let tt = self.e.ty(scalar_ty(to));
        let f32t = self.e.ty("f32");
        match (from.is_float(), to.is_float()) {
            (true, true) => {
                let w = self.widen(x, from)?;
                if to == Scalar::F32 {
                    Ok(w)
                } else {
                    self.e.op1("arith.truncf", &[w], tt, &[])
                }
            }
            (false, false) => {
                if from == Scalar::I1 {
                    self.e.op1("arith.extui", &[x], tt, &[])
                } else if to == Scalar::I1 {
                    let z = self.constant(Const::Int(0), from)?;
                    self.e.cmpi("ne", x, z)
                } else if to.size_bytes() > from.size_bytes() {
                    self.e.op1("arith.extsi", &[x], tt, &[])
                } else {
                    self.e.op1("arith.trunci", &[x], tt, &[])
                }
            }
            (false, true) => {
                let name = if from == Scalar::I1 {
                    "arith.uitofp"
                } else {
                    "arith.sitofp"
                };
                let f = self.e.op1(name, &[x], f32t, &[])?;
                self.cast(f, Scalar::F32, to)
            }
            (true, false) => {
                let w = self.widen(x, from)?;
                if to == Scalar::I1 {
                    let z = self.f32(0.0)?;
                    return self.e.cmpf("une", w, z);
                }
                let intrin = format!("llvm.fptosi.sat.{}.f32", scalar_ty(to));
                self.e.call_intrinsic(&intrin, &[w], tt)
            }
        }
    }

    fn ptr_elem(&self, ptr: ValueId) -> Result<Scalar, CodegenError> {
        match self.kernel.ty(ptr).elem {
            Elem::Ptr(s) => Ok(s),
            _ => Err(CodegenError::Internal(
                "memory access through a non-pointer".into(),
            )),
        }
    }

    /// Vector width (elements) for accesses through `ptr`: 1 when not provably contiguous.
    fn vector_width(&self, ptr: ValueId, s: Scalar) -> u32 {
        let Layout::Blocked(l) = self.layout(ptr) else {
            return 1;
        };
        if l.rank() == 0 || s == Scalar::I1 {
            return 1;
        }
        let contig = self.axis.get(&ptr).map(|a| a.contig).unwrap_or(1);
        let max_elems = 16 / s.size_bytes() as u32;
        contig.min(l.spt[l.rank() - 1]).min(max_elems).max(1)
    }

    /// Groups of `v` consecutive registers along the last dimension.
    fn groups(l: &Layout, v: u32) -> Vec<std::ops::Range<usize>> {
        let n = l.num_regs();
        (0..n)
            .step_by(v as usize)
            .map(|k| k..k + v as usize)
            .collect()
    }

    /// `ptr` is 16-byte-vector aligned for `v` elements of `s`.
    fn aligned(&mut self, p: V, v: u32, s: Scalar) -> Result<V, CodegenError> {
        let i64t = self.e.ty("i64");
        let a = self.e.op1("llvm.ptrtoint", &[p], i64t, &[])?;
        let m = self.e.i64((v as usize * s.size_bytes()) as i64 - 1)?;
        let low = self.e.binop("arith.andi", a, m)?;
        let z = self.e.i64(0)?;
        self.e.cmpi("eq", low, z)
    }

    fn load(
        &mut self,
        ptr: ValueId,
        mask: Option<ValueId>,
        other: Option<ValueId>,
        r: ValueId,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let t = self.e.ty(scalar_ty(s));
        let l = self.layout(r);
        let rp = self.regs_in(ptr, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        let ro = match other {
            Some(o) => Some(self.regs_in(o, &l, span)?),
            None if mask.is_some() => {
                let z = self.constant(Const::Int(0), s)?;
                Some(vec![z; rp.len()])
            }
            None => None,
        };
        let v = self.vector_width(ptr, s);
        let mut out = Vec::with_capacity(rp.len());
        for g in Self::groups(&l, v) {
            // Per-element path: masked elements read `other` and touch no memory.
            let scalar_path = |e: &mut Emitter<'c>| -> Result<Vec<V>, CodegenError> {
                let mut vals = Vec::new();
                for k in g.clone() {
                    vals.push(match (&rm, &ro) {
                        (Some(m), Some(o)) => {
                            let (p, ok) = (rp[k], o[k]);
                            e.if_else(
                                m[k],
                                &[t],
                                &mut |e| Ok(vec![LoadOne { e }.load(p, s)?]),
                                &mut |_| Ok(vec![ok]),
                            )?[0]
                        }
                        _ => LoadOne { e }.load(rp[k], s)?,
                    });
                }
                Ok(vals)
            };
            if v == 1 {
                out.extend(scalar_path(&mut self.e)?);
                continue;
            }
            let mut conds = vec![self.aligned(rp[g.start], v, s)?];
            if let Some(m) = &rm {
                conds.extend(m[g.clone()].iter().copied());
            }
            let cond = self.e.and_all(&conds)?.unwrap();
            let tys = vec![t; g.len()];
            let p0 = rp[g.start];
            let vals = self.e.if_else(
                cond,
                &tys,
                &mut |e| {
                    let vt = e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
                    let vec = e.op1(
                        "llvm.load",
                        &[p0],
                        vt,
                        &[
                            (
                                "alignment",
                                &format!("{} : i64", v as usize * s.size_bytes()),
                            ),
                            ("ordering", "0 : i64"),
                        ],
                    )?;
                    let mut xs = Vec::new();
                    for i in 0..v {
                        let idx = e.i32(i as i64)?;
                        xs.push(e.op1("llvm.extractelement", &[vec, idx], t, &[])?);
                    }
                    Ok(xs)
                },
                &mut |e| scalar_path(e),
            )?;
            out.extend(vals);
        }
        Ok(out)
    }

    fn store(
        &mut self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        span: Span,
    ) -> Result<(), CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let l = self.layout(ptr);
        let rp = self.regs(ptr)?;
        let rv = self.regs_in(value, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        let owner = self.owner(&l);
        let v = self.vector_width(ptr, s);
        for g in Self::groups(&l, v) {
            let elem_conds: Vec<Option<V>> = g
                .clone()
                .map(|k| {
                    let mut c = Vec::new();
                    c.extend(owner);
                    if let Some(m) = &rm {
                        c.push(m[k]);
                    }
                    self.e.and_all(&c)
                })
                .collect::<Result<_, _>>()?;
            let scalar_path = |e: &mut Emitter<'c>| -> Result<(), CodegenError> {
                for (i, k) in g.clone().enumerate() {
                    let (p, x) = (rp[k], rv[k]);
                    match elem_conds[i] {
                        Some(c) => e.if_then(c, &mut |e| LoadOne { e }.store(p, x, s))?,
                        None => LoadOne { e }.store(p, x, s)?,
                    }
                }
                Ok(())
            };
            if v == 1 {
                scalar_path(&mut self.e)?;
                continue;
            }
            let mut conds = vec![self.aligned(rp[g.start], v, s)?];
            conds.extend(owner);
            if let Some(m) = &rm {
                conds.extend(m[g.clone()].iter().copied());
            }
            let cond = self.e.and_all(&conds)?.unwrap();
            let p0 = rp[g.start];
            let xs: Vec<V> = rv[g.clone()].to_vec();
            self.e.if_else(
                cond,
                &[],
                &mut |e| {
                    let vt = e.ty(&format!("vector<{v}x{}>", scalar_ty(s)));
                    let mut vec = e.op1("llvm.mlir.undef", &[], vt, &[])?;
                    for (i, &x) in xs.iter().enumerate() {
                        let idx = e.i32(i as i64)?;
                        vec = e.op1("llvm.insertelement", &[vec, x, idx], vt, &[])?;
                    }
                    e.op(
                        "llvm.store",
                        &[vec, p0],
                        &[],
                        &[
                            (
                                "alignment",
                                &format!("{} : i64", v as usize * s.size_bytes()),
                            ),
                            ("ordering", "0 : i64"),
                        ],
                    )?;
                    Ok(vec![])
                },
                &mut |e| {
                    scalar_path(e)?;
                    Ok(vec![])
                },
            )?;
        }
        Ok(())
    }

    fn atomic_add(
        &mut self,
        ptr: ValueId,
        value: ValueId,
        mask: Option<ValueId>,
        span: Span,
    ) -> Result<Vec<V>, CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let (bin_op, ok) = match s {
            Scalar::F32 | Scalar::BF16 | Scalar::F16 => ("11 : i64", true),
            Scalar::I32 | Scalar::I64 => ("1 : i64", true),
            Scalar::I1 => ("1 : i64", false),
        };
        if !ok {
            return Err(CodegenError::Internal("atomic_add on i1".into()));
        }
        let t = self.e.ty(scalar_ty(s));
        let l = self.layout(ptr);
        let rp = self.regs(ptr)?;
        let rv = self.regs_in(value, &l, span)?;
        let rm = mask.map(|m| self.regs_in(m, &l, span)).transpose()?;
        let owner = self.owner(&l);
        let zero = self.constant(Const::Int(0), s)?;
        let mut out = Vec::new();
        for k in 0..rp.len() {
            let mut c = Vec::new();
            c.extend(owner);
            if let Some(m) = &rm {
                c.push(m[k]);
            }
            let cond = self.e.and_all(&c)?;
            let (p, x) = (rp[k], rv[k]);
            let mut doit = |e: &mut Emitter<'c>| -> Result<Vec<V>, CodegenError> {
                Ok(vec![e.op1(
                    "llvm.atomicrmw",
                    &[p, x],
                    t,
                    &[("bin_op", bin_op), ("ordering", "2 : i64")],
                )?])
            };
            out.push(match cond {
                Some(c) => self
                    .e
                    .if_else(c, &[t], &mut doit, &mut |_| Ok(vec![zero]))?[0],
                None => doit(&mut self.e)?[0],
            });
        }
        Ok(out)
    }

    /// Pointer into the scratch area at byte offset `off` (i32).
    fn scratch_ptr(&mut self, off: V) -> Result<V, CodegenError> {
        let base = self.e.i32(self.scratch_base as i64)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    /// Pointer into dynamic shared memory at byte offset `off` (i32).
    fn smem_ptr(&mut self, off: V) -> Result<V, CodegenError> {
        let p3 = self.e.ty("!llvm.ptr<3>");
        let base = self.e.op1(
            "llvm.mlir.addressof",
            &[],
            p3,
            &[("global_name", &format!("@{SCRATCH}"))],
        )?;
        self.e.op1(
            "llvm.getelementptr",
            &[base, off],
            p3,
            &[
                ("elem_type", "i8"),
                ("noWrapFlags", "0 : i32"),
                ("rawConstantIndices", "array<i32: -2147483648>"),
            ],
        )
    }

    /// Notes that an op at `span` needs `bytes` of scratch (checked against
    /// the limit once the whole kernel is lowered).
    fn reserve_scratch(&mut self, bytes: u32, span: Span) -> Result<(), CodegenError> {
        if bytes > self.scratch_bytes {
            self.scratch_bytes = bytes;
            self.scratch_span = span;
        }
        self.scratch_in_loop |= !self.pipe_bufs.is_empty();
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), CodegenError> {
        self.e.op("gpu.barrier", &[], &[], &[])?;
        Ok(())
    }

    /// Store/load one element of type `s` in scratch at element index `idx`.
    fn scratch_store(&mut self, idx: V, x: V, s: Scalar) -> Result<(), CodegenError> {
        let p = self.scratch_elem_ptr(idx, s)?;
        // Pointers travel through shared memory as i64 (`s` is I64 for them).
        let x = if self.e.type_of(x).to_string().starts_with("!llvm.ptr") {
            let i64t = self.e.ty("i64");
            self.e.op1("llvm.ptrtoint", &[x], i64t, &[])?
        } else {
            x
        };
        LoadOne { e: &mut self.e }.store(p, x, s)
    }

    fn scratch_load(&mut self, idx: V, s: Scalar, is_ptr: bool) -> Result<V, CodegenError> {
        let p = self.scratch_elem_ptr(idx, s)?;
        let v = LoadOne { e: &mut self.e }.load(p, s)?;
        if is_ptr {
            let pt = self.e.ty("!llvm.ptr<1>");
            self.e.op1("llvm.inttoptr", &[v], pt, &[])
        } else {
            Ok(v)
        }
    }

    /// Shared-memory address of element `idx` of a scratch array of `s`.
    fn scratch_elem_ptr(&mut self, idx: V, s: Scalar) -> Result<V, CodegenError> {
        let sz = self.e.i32(s.size_bytes() as i64)?;
        let off = self.e.binop("arith.muli", idx, sz)?;
        self.scratch_ptr(off)
    }

    /// Re-layout `value` into `dst` through shared memory. `src_of` maps a
    /// destination coordinate to the source coordinate it reads (and the source shape).
    fn convert(
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
        self.reserve_scratch(rows * row_len * es, span)?;
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
    fn write_scratch(
        &mut self,
        l: &Layout,
        regs: &[V],
        s: Scalar,
        pad: u32,
    ) -> Result<(), CodegenError> {
        for (k, &x) in regs.iter().enumerate() {
            let c = self.coords(l, k)?;
            let f = self.padded_flat(&c, l.shape(), pad)?;
            self.scratch_store(f, x, s)?;
        }
        Ok(())
    }

    /// Row-major index of `coords` in `shape` with rows (the last
    /// dimension) `pad` elements longer.
    fn padded_flat(&mut self, coords: &[V], shape: &[u32], pad: u32) -> Result<V, CodegenError> {
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

    /// `scf.if` without results, both branches lowering through `self`.
    fn if_else_self(
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
    fn if_then_self(
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

    /// `a @ b + acc` on tensor cores: each warp loads its fragments of a and b
    /// from shared memory with `ldmatrix` and accumulates with
    /// `mma.sync.m16n8k16` into registers in the mma layout. An operand a
    /// pipelined loop already copied into shared memory (see `prefetch`) is
    /// read from its stage; any other is staged from registers (rows padded by
    /// [`PAD`] elements).
    fn dot(
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
        let acc_regs = self.regs_in(acc, &Layout::Mma(ml.clone()), span)?;
        if ml.warpgroups {
            // Operands from their pipeline stages, or staged from registers
            // into swizzled scratch (A K-major, B MN-major: both row-major
            // tiles cut into atoms along their columns).
            let mut ops = Vec::new();
            let mut staged = Vec::new();
            let mut next = 0u32;
            for x in [a, b] {
                if let Some(&(off, tile, _)) = self.pipe_bufs.get(&x) {
                    ops.push((off, tile));
                    continue;
                }
                let shape = &k.ty(x).shape;
                let width = prefetch::swizzle_width(shape[1]).ok_or_else(|| {
                    CodegenError::Internal("wgmma operand without a swizzle width".into())
                })?;
                let tile = SmemTile::Swizzled {
                    rows: shape[0],
                    width,
                };
                // Swizzle atoms start 1024-byte aligned.
                let at = (self.scratch_base + next).next_multiple_of(1024);
                next = at - self.scratch_base + tile.bytes(shape[0], shape[1]);
                staged.push((x, at, tile));
                ops.push((self.e.i32(at as i64)?, tile));
            }
            self.stage_operands(&staged, next, ea, span, true)?;
            return self.dot_wgmma(r, &ml, kk, ptx_ty, ops[0], ops[1], acc_regs);
        }
        // Shared-memory byte offset (i32) and row stride (elements) of each operand.
        let mut staged = Vec::new();
        let mut next = 0u32;
        let mut src = Vec::new();
        for x in [a, b] {
            if let Some(&(off, tile, _)) = self.pipe_bufs.get(&x) {
                let SmemTile::Padded { ld } = tile else {
                    return Err(CodegenError::Internal(
                        "mma.sync operand in a swizzled buffer".into(),
                    ));
                };
                src.push((off, ld));
            } else {
                let shape = &k.ty(x).shape;
                let ld = shape[1] + PAD;
                let at = self.scratch_base + next;
                staged.push((x, at, SmemTile::Padded { ld }));
                next += shape[0] * ld * 2;
                src.push((self.e.i32(at as i64)?, ld));
            }
        }
        self.stage_operands(&staged, next, ea, span, false)?;
        let ((a_off, lda), (b_off, ldb)) = (src[0], src[1]);
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
        let mut out = acc_regs;
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

    /// `dot` on Hopper's warpgroup MMA: per 16-wide k step, each warpgroup
    /// issues one `wgmma.mma_async.m64nNk16` per 64-row block it owns, with
    /// both operands read from their swizzled pipeline buffers through matrix
    /// descriptors (A K-major, B MN-major, i.e. transposed), then waits for
    /// them before the accumulators are used. The wait takes the
    /// accumulators as operands so that nothing reads them earlier.
    #[allow(clippy::too_many_arguments)]
    fn dot_wgmma(
        &mut self,
        r: ValueId,
        ml: &Mma,
        kk: u32,
        ptx_ty: &str,
        (a_off, a_tile): (V, SmemTile),
        (b_off, b_tile): (V, SmemTile),
        acc: Vec<V>,
    ) -> Result<Vec<V>, CodegenError> {
        let (
            SmemTile::Swizzled {
                rows: am,
                width: wa,
            },
            SmemTile::Swizzled {
                rows: bk,
                width: wb,
            },
        ) = (a_tile, b_tile)
        else {
            return Err(CodegenError::Internal(
                "wgmma operand not in a swizzled buffer".into(),
            ));
        };
        let (gm, gn) = (ml.wm / 4, ml.wn);
        let (mg, ng) = (ml.shape[0] / gm, ml.shape[1] / gn);
        // Descriptor bits other than the start address: leading/stride byte
        // offsets (>> 4) at 16 and 32, the swizzle mode (128/64/32 B: 1/2/3) at 62.
        let mode = |w: u32| -> u64 {
            match w {
                64 => 1,
                32 => 2,
                _ => 3,
            }
        };
        let desc_bits = |lbo: u32, sbo: u32, w: u32| -> i64 {
            ((((lbo >> 4) as u64) << 16) | (((sbo >> 4) as u64) << 32) | (mode(w) << 62)) as i64
        };
        // A, K-major: the leading offset is unused (1 by convention), 8-row
        // groups are one atom (8 · wa · 2 bytes) apart.
        let a_bits = desc_bits(16, 8 * wa * 2, wa);
        // B, MN-major: atoms along N are `bk · wb · 2` bytes apart (leading),
        // 8-row groups along K one atom apart (stride).
        let b_bits = desc_bits(bk * wb * 2, 8 * wb * 2, wb);
        let warp = self.warp.unwrap();
        let (c2, c4) = (self.e.i32(2)?, self.e.i32(4)?);
        let group = self.e.binop("arith.shrui", warp, c2)?;
        let gnv = self.e.i32(gn as i64)?;
        let gi = self.e.binop("arith.divui", group, gnv)?;
        let gj = self.e.binop("arith.remui", group, gnv)?;
        // Shared-window addresses of this warpgroup's part of each operand.
        let i64t = self.e.ty("i64");
        let a_row = self.e.i32((mg * wa * 2) as i64)?;
        let a_part = self.e.binop("arith.muli", gi, a_row)?;
        let a_part = self.e.binop("arith.addi", a_off, a_part)?;
        let a_base = self.smem_addr(a_part)?;
        let b_col = self.e.i32((ng / wb * bk * wb * 2) as i64)?;
        let b_part = self.e.binop("arith.muli", gj, b_col)?;
        let b_part = self.e.binop("arith.addi", b_off, b_part)?;
        let b_base = self.smem_addr(b_part)?;
        let desc = |me: &mut Self, base: V, bytes: u32, bits: i64| -> Result<V, CodegenError> {
            let o = me.e.i32(bytes as i64)?;
            let a = me.e.binop("arith.addi", base, o)?;
            let a = me.e.binop("arith.shrui", a, c4)?;
            let a = me.e.op1("arith.extui", &[a], i64t, &[])?;
            let bits = me.e.i64(bits)?;
            me.e.binop("arith.ori", a, bits)
        };
        let f32t = self.e.ty("f32");
        let per_block = (ng / 2) as usize;
        let one = self.e.i32(1)?;
        let outs = vec!["=f"; per_block].join(",");
        let ties: Vec<String> = (0..per_block).map(|i| i.to_string()).collect();
        let constraints = format!("{outs},l,l,r,{}", ties.join(","));
        let regs: Vec<String> = (0..per_block).map(|i| format!("${i}")).collect();
        let trans_b = 1;
        let text = format!(
            "{{ .reg .pred p; setp.ne.b32 p, ${}, 0; wgmma.mma_async.sync.aligned.m64n{ng}k16.f32.{ptx_ty}.{ptx_ty} {{{}}}, ${}, ${}, p, 1, 1, 0, {trans_b}; }}",
            per_block + 2,
            regs.join(", "),
            per_block,
            per_block + 1,
        );
        let mut out = acc;
        self.e
            .inline_asm("wgmma.fence.sync.aligned;", "", &[], &[])?;
        for ks in 0..kk / 16 {
            let k0 = ks * 16;
            let b_desc = desc(self, b_base, k0 * wb * 2, b_bits)?;
            for blk in 0..ml.mt() {
                let a_bytes = (k0 / wa) * am * wa * 2 + blk * 64 * wa * 2 + (k0 % wa) * 2;
                let a_desc = desc(self, a_base, a_bytes, a_bits)?;
                let range = blk as usize * per_block..(blk as usize + 1) * per_block;
                let mut operands = vec![a_desc, b_desc, one];
                operands.extend(&out[range.clone()]);
                let d =
                    self.e
                        .inline_asm(&text, &constraints, &operands, &vec![f32t; per_block])?;
                out[range].copy_from_slice(&d);
            }
        }
        self.e
            .inline_asm("wgmma.commit_group.sync.aligned;", "", &[], &[])?;
        // Left running into the next iteration when the loop allows it.
        let pending = u32::from(self.in_flight == Some(r));
        wgmma_wait(&mut self.e, pending, &out)
    }

    /// Register operands of a `dot` (value, byte offset in shared memory,
    /// layout there) written to `bytes` of scratch between two barriers; for
    /// `wgmma`, which reads through the async proxy, fenced as well.
    fn stage_operands(
        &mut self,
        staged: &[(ValueId, u32, SmemTile)],
        bytes: u32,
        s: Scalar,
        span: Span,
        wgmma: bool,
    ) -> Result<(), CodegenError> {
        if staged.is_empty() {
            return Ok(());
        }
        self.reserve_scratch(bytes, span)?;
        let regs: Vec<(Layout, Vec<V>)> = staged
            .iter()
            .map(|&(x, _, _)| {
                let l = self.canonical(&self.kernel.ty(x).shape);
                let r = self.regs_in(x, &l, span)?;
                Ok((l, r))
            })
            .collect::<Result<_, CodegenError>>()?;
        self.barrier()?;
        for (&(_, at, tile), (l, regs)) in staged.iter().zip(regs) {
            self.stage_tile(&l, &regs, s, at, tile)?;
        }
        if wgmma {
            self.e
                .inline_asm("fence.proxy.async.shared::cta;", "", &[], &[])?;
        }
        self.barrier()
    }

    /// Registers of a 16-bit tile in (canonical) layout `l` to shared memory at
    /// byte offset `base`, rows `ld` elements apart: one store per group of
    /// contiguous registers (16 bytes for 8 elements).
    fn stage_tile(
        &mut self,
        l: &Layout,
        regs: &[V],
        s: Scalar,
        base: u32,
        tile: SmemTile,
    ) -> Result<(), CodegenError> {
        let Layout::Blocked(bl) = l else {
            return Err(CodegenError::Internal("staging a non-blocked tile".into()));
        };
        // Group starts are multiples of the group size along the row, and rows
        // are 16-byte multiples apart, so each group is aligned to its size
        // (and never crosses a swizzled 16-byte chunk).
        let v = bl.spt[1].min(8);
        let owner = self.owner(l);
        let regs = regs.to_vec();
        let l = l.clone();
        let mut write = |me: &mut Self| -> Result<(), CodegenError> {
            for g in Self::groups(&l, v) {
                let c = me.coords(&l, g.start)?;
                let b = me.e.i32(base as i64)?;
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

    /// The registers of pipelined load `r` (canonical layout), read from its
    /// tile at byte offset `off` of shared memory: one vector per group of
    /// up to 8 contiguous elements (a group never crosses a 16-byte chunk).
    fn read_stage(&mut self, r: ValueId, off: V, tile: SmemTile) -> Result<Vec<V>, CodegenError> {
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

    /// `ldmatrix` of `num` 8×8 b16 matrices (transposed with `trans`), as i32 registers.
    fn ldmatrix(&mut self, p: V, num: u32, trans: bool) -> Result<Vec<V>, CodegenError> {
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

    /// Shared-memory pointer to 16-bit element (row, col) of a matrix at byte
    /// offset `base` (i32) of shared memory, with row stride `ld` elements.
    fn smem_elem_ptr(&mut self, base: V, ld: u32, row: V, col: V) -> Result<V, CodegenError> {
        let ldv = self.e.i32(ld as i64)?;
        let r = self.e.binop("arith.muli", row, ldv)?;
        let idx = self.e.binop("arith.addi", r, col)?;
        let two = self.e.i32(2)?;
        let off = self.e.binop("arith.muli", idx, two)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    /// Shared-memory pointer to 16-bit element (row, col) of a tile laid out
    /// as `tile` at byte offset `base` (i32).
    fn tile_elem_ptr(
        &mut self,
        base: V,
        tile: SmemTile,
        row: V,
        col: V,
    ) -> Result<V, CodegenError> {
        let (rows, width) = match tile {
            SmemTile::Padded { ld } => return self.smem_elem_ptr(base, ld, row, col),
            SmemTile::Swizzled { rows, width } => (rows, width),
        };
        // (col / width) · (rows · width · 2) + row · width · 2 + (col % width) · 2,
        // then the 16-byte chunk bits XORed with the 128-byte row bits.
        let wshift = self.e.i32(width.trailing_zeros() as i64)?;
        let wmask = self.e.i32(width as i64 - 1)?;
        let atom_col = self.e.binop("arith.shrui", col, wshift)?;
        let in_col = self.e.binop("arith.andi", col, wmask)?;
        let atom_bytes = self.e.i32((rows * width * 2) as i64)?;
        let off = self.e.binop("arith.muli", atom_col, atom_bytes)?;
        let row_bytes = self.e.i32((width * 2) as i64)?;
        let r = self.e.binop("arith.muli", row, row_bytes)?;
        let off = self.e.binop("arith.addi", off, r)?;
        let one = self.e.i32(1)?;
        let c = self.e.binop("arith.shli", in_col, one)?;
        let off = self.e.binop("arith.addi", off, c)?;
        let (c7, c4) = (self.e.i32(7)?, self.e.i32(4)?);
        let chunks = self.e.i32((width / 8) as i64 - 1)?;
        let bits = self.e.binop("arith.shrui", off, c7)?;
        let bits = self.e.binop("arith.andi", bits, chunks)?;
        let bits = self.e.binop("arith.shli", bits, c4)?;
        let off = self.e.binop("arith.xori", off, bits)?;
        let off = self.e.binop("arith.addi", off, base)?;
        self.smem_ptr(off)
    }

    fn combine(&mut self, op: ReduceOp, s: Scalar, a: V, b: V) -> Result<V, CodegenError> {
        let bop = match op {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        };
        self.binary(bop, s, a, b)
    }

    fn reduce(
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
        let src_l = self.canonical(&self.kernel.ty(value).shape);
        let dst = self.layout(r);
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
        // 1. Within the thread, over the registers along `axis`.
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
        let mut keys: Vec<Vec<u32>> = partial.keys().cloned().collect();
        keys.sort();
        if src.cov(axis) > src.shape[axis] {
            // Replicas along the axis must not be counted twice.
            let lim = self.e.i32((src.shape[axis] / src.spt[axis]) as i64)?;
            let own = self.e.cmpi("ult", th_t[axis], lim)?;
            for key in &keys {
                let v = self.e.select(own, partial[key], id)?;
                partial.insert(key.clone(), v);
            }
        }
        // 2. Across lanes along the axis: butterfly shuffles.
        if src.tpw[axis] > 1 {
            let i32t = self.e.ty("i32");
            let i1 = self.e.ty("i1");
            let width = self.e.i32(32)?;
            let mut off = src.lane_stride(axis) * src.tpw[axis] / 2;
            while off >= src.lane_stride(axis) {
                let o = self.e.i32(off as i64)?;
                for key in &keys {
                    let x = partial[key];
                    let t = self.e.type_of(x);
                    let _ = i32t;
                    let sh = self.e.op(
                        "gpu.shuffle",
                        &[x, o, width],
                        &[t, i1],
                        &[("mode", "#gpu<shuffle_mode xor>")],
                    )?[0];
                    let c = self.combine(op, s, x, sh)?;
                    partial.insert(key.clone(), c);
                }
                off /= 2;
            }
        }
        // 3. Across warps along the axis and into the result's layout, through shared memory.
        let out: Vec<V> = if src.rank() == 1 && src.wpc[0] == 1 {
            vec![partial[&keys[0]]]
        } else {
            let res_shape = self.kernel.ty(r).shape.clone();
            let res_numel: u32 = res_shape.iter().product();
            let wa = src.wpc[axis];
            self.reserve_scratch(wa * res_numel * 4, span)?;
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
            let keys2 = keys.clone();
            let partial2 = partial.clone();
            let src_l = Layout::Blocked(src.clone());
            self.if_then_self(first_lane, &mut |me| {
                for key in &keys2 {
                    let k = src.reg_number(key);
                    let c = me.coords(&src_l, k)?;
                    let rc: Vec<V> = c
                        .iter()
                        .enumerate()
                        .filter(|(d, _)| *d != axis)
                        .map(|(_, v)| *v)
                        .collect();
                    let f = me.flat(&rc, &res_shape)?;
                    let idx = me.e.binop("arith.addi", wbase, f)?;
                    me.scratch_store(idx, partial2[key], s)?;
                }
                Ok(())
            })?;
            self.barrier()?;
            let mut out = Vec::new();
            for k in 0..dst.num_regs() {
                let f = if dst.shape().is_empty() {
                    self.e.i32(0)?
                } else {
                    let c = self.coords(&dst, k)?;
                    self.flat(&c, &res_shape)?
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
            out
        };
        out.into_iter().map(|x| self.narrow(x, s_in)).collect()
    }
}

/// Scalar memory accesses usable from closures that hold only the emitter.
struct LoadOne<'a, 'c> {
    e: &'a mut Emitter<'c>,
}

impl<'c> LoadOne<'_, 'c> {
    fn load(&mut self, p: V, s: Scalar) -> Result<V, CodegenError> {
        let (st, bytes) = if s == Scalar::I1 {
            ("i8", 1)
        } else {
            (scalar_ty(s), s.size_bytes())
        };
        let t = self.e.ty(st);
        let v = self.e.op1(
            "llvm.load",
            &[p],
            t,
            &[
                ("alignment", &format!("{bytes} : i64")),
                ("ordering", "0 : i64"),
            ],
        )?;
        if s == Scalar::I1 {
            let z = self.e.constant("0 : i8", t)?;
            self.e.cmpi("ne", v, z)
        } else {
            Ok(v)
        }
    }

    fn store(&mut self, p: V, x: V, s: Scalar) -> Result<(), CodegenError> {
        let (x, bytes) = if s == Scalar::I1 {
            let t = self.e.ty("i8");
            (self.e.op1("arith.extui", &[x], t, &[])?, 1)
        } else {
            (x, s.size_bytes())
        };
        self.e.op(
            "llvm.store",
            &[x, p],
            &[],
            &[
                ("alignment", &format!("{bytes} : i64")),
                ("ordering", "0 : i64"),
            ],
        )?;
        Ok(())
    }
}

/// For a conversion: the source coordinates and source shape of the element
/// at a destination coordinate.
type SourceOf<'f, 'c> =
    dyn FnMut(&mut Emitter<'c>, &[V]) -> Result<(Vec<V>, Vec<u32>), CodegenError> + 'f;

/// The row-major linear index of `coords` in a tile of `shape`.
/// `wgmma.wait_group n` (at most `n` groups still running), passing the
/// accumulators through so that no use of them moves above it.
fn wgmma_wait(e: &mut Emitter<'_>, n: u32, acc: &[V]) -> Result<Vec<V>, CodegenError> {
    let f32t = e.ty("f32");
    let outs = vec!["=f"; acc.len()].join(",");
    let ties: Vec<String> = (0..acc.len()).map(|i| i.to_string()).collect();
    e.inline_asm(
        &format!("wgmma.wait_group.sync.aligned {n};"),
        &format!("{outs},{}", ties.join(",")),
        acc,
        &vec![f32t; acc.len()],
    )
}

fn row_major_index(e: &mut Emitter<'_>, coords: &[V], shape: &[u32]) -> Result<V, CodegenError> {
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
