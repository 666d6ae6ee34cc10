//! TIR → MLIR (gpu, scf, arith, llvm, nvvm dialects), one `gpu.func` per kernel.
//!
//! Each TIR value becomes the list of registers one thread holds of it in the
//! canonical blocked layout of its shape (see `layout`). Loads and stores are
//! vectorised up to 16 bytes where the axis analysis proves contiguity; the
//! alignment and the mask of each vector are checked at run time, falling back
//! to per-element accesses at ragged edges.
//!
//! This file holds the entry point ([`lower_to_mlir`], which also settles the
//! shared-memory budget), the [`Lower`] state and [`Lower::lower_inst`], which
//! hands each op to the file owning its concern:
//!
//! - `func`: the `gpu.func` itself (parameters, thread ids, `nvvm.minctasm`);
//! - `threads`: per-thread coordinates of each layout's registers;
//! - `layouts`, `order`: which layout each value gets, in which order a
//!   block's instructions are lowered;
//! - `elementwise`: constants, arithmetic, comparisons and casts per register;
//! - `memory`: global loads, stores and atomics (vectorised where contiguous);
//! - `smem`: shared-memory addresses, the scratch area, barriers;
//! - `convert`: reading a value in another layout (recomputed or through scratch);
//! - `reduce`: reductions;
//! - `dot`, `mma`, `wgmma`: `dot` on tensor cores (`mma.sync` or Hopper `wgmma`);
//! - `control`: `for` and `if`;
//! - `pipelined`: the software pipeline of a K loop (`cp.async`, mbarriers);
//! - `checked_copies`: a copy checked once a tile, its slow path one loop;
//! - `tma_copies`: its TMA box copies;
//! - `rolled_copies`: a box's `cp.async` copy where TMA cannot take it.

mod checked_copies;
mod control;
mod convert;
mod dot;
mod elementwise;
mod func;
mod global_order;
mod layouts;
mod memory;
mod mma;
mod order;
mod pipelined;
mod reduce;
mod rolled_copies;
mod smem;
mod threads;
mod tma_copies;
mod wgmma;

use super::axis::{self, AxisInfo};
use super::emit::{Emitter, V};
use super::layout::{Blocked, Layout};
use super::prefetch::{self, Plan, SmemTile};
use super::{CodegenError, SharedMove};
use melior::ir::operation::{OperationLike, OperationMutLike};
use melior::ir::{Location, Module, Type};
use melior::Context;
use smem::{ScratchAddr, ScratchNeed, ScratchPlace};
use std::collections::{HashMap, HashSet};
use tile_ir::{self as tir, BinaryOp, Elem, Inst, Kernel, Op, Scalar, ValueId};

/// Largest shared memory a CTA may use on sm_80/sm_90 (bytes, dynamic).
const MAX_SMEM: u32 = 227 * 1024;
const SCRATCH: &str = "__tile_scratch";

/// A kernel lowered to MLIR, with what its launch and its report need.
pub(crate) struct Lowered<'c> {
    pub module: Module<'c>,
    /// The dynamic shared memory the kernel needs per CTA.
    pub shared_bytes: u32,
    /// The tensors the host describes for its TMA copies (its hidden
    /// parameters, in order).
    pub tma: Vec<super::TmaOperand>,
    /// Where it moves data between threads through shared memory.
    pub moves: Vec<SharedMove>,
}

pub(crate) fn lower_to_mlir<'c>(
    ctx: &'c Context,
    kernel: &Kernel,
    warps: u32,
    stages: Option<u32>,
    ctas: Option<u32>,
    arch: super::Arch,
) -> Result<Lowered<'c>, CodegenError> {
    let module = Module::new(Location::unknown(ctx));
    let mut defs = HashMap::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        for r in &i.results {
            defs.insert(*r, i);
        }
    });
    let pointer_params = tir::aliasing::Defs::new(kernel);
    let lower = |plan: &Plan| {
        let mut l = Lower {
            e: Emitter::new(ctx),
            kernel,
            warps,
            ctas,
            arch,
            vals: HashMap::new(),
            splats: HashMap::new(),
            layouts: layouts::assign_layouts(kernel, warps, plan),
            axis: axis::analyze(kernel),
            threads: HashMap::new(),
            scratch_needs: Vec::new(),
            scratch_addrs: Vec::new(),
            scratch_in_loop: false,
            loop_depth: 0,
            plan: plan.clone(),
            pipe_bufs: HashMap::new(),
            in_flight: None,
            unwaited: Vec::new(),
            transposed: wgmma::transposed_operands(kernel, plan, &defs),
            defs: defs.clone(),
            lane: None,
            warp: None,
            tma_args: Vec::new(),
            tma_described: None,
            unread: HashSet::new(),
            pointer_params: &pointer_params,
            global_pending: Vec::new(),
        };
        let func = l.lower_func();
        (l, func)
    };
    // Loops on `wgmma` take the largest stage budget that fits with the rest
    // (and no more stages than a configuration's `stages`).
    // The budgets change stage counts only, not what the rest of the kernel
    // needs of scratch, so one lowering's needs tell which budget fits: the
    // kernel is lowered again only when that is not the budget it was
    // lowered with (and that lowering's own needs are checked in turn).
    let plans: Vec<Plan> = prefetch::WGMMA_STAGE_BUDGETS
        .iter()
        .map(|&budget| prefetch::plan(kernel, warps, arch, budget, stages))
        .collect();
    let accepts = |place: ScratchPlace, i: usize| {
        place.shared_bytes <= MAX_SMEM || plans[i].wgmma.is_empty() || i + 1 == plans.len()
    };
    let mut attempt = 0;
    let (mut l, mut func) = lower(&plans[0]);
    while !accepts(l.scratch_place(&plans[attempt], func.is_ok()), attempt) {
        attempt = (attempt + 1..plans.len())
            .find(|&i| accepts(l.scratch_place(&plans[i], func.is_ok()), i))
            .expect("the last budget is always taken");
        (l, func) = lower(&plans[attempt]);
    }
    let place = l.scratch_place(&plans[attempt], func.is_ok());
    let func = func?;
    l.check_register_budget()?;
    if place.shared_bytes > MAX_SMEM {
        return Err(CodegenError::SharedMemory {
            bytes: place.shared_bytes,
            limit: MAX_SMEM,
            span: place.span,
        });
    }
    let shared_bytes = place.shared_bytes;
    l.place_scratch(place.base);
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
    Ok(Lowered {
        module,
        shared_bytes,
        tma: l.plan.tma,
        moves: l.scratch_needs.into_iter().map(|(_, m)| m).collect(),
    })
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

/// The state of lowering one kernel: the registers of every TIR value so
/// far, the layouts and analyses it follows, and what shared memory it uses.
struct Lower<'c, 'k> {
    e: Emitter<'c>,
    kernel: &'k Kernel,
    warps: u32,
    /// The configuration's CTAs per multiprocessor (`Lower::min_ctas`).
    ctas: Option<u32>,
    arch: super::Arch,
    vals: HashMap<ValueId, Vec<V>>,
    /// Values that are a scalar repeated: converting them to any layout is free.
    splats: HashMap<ValueId, V>,
    layouts: HashMap<ValueId, Layout>,
    axis: HashMap<ValueId, AxisInfo>,
    threads: HashMap<Layout, Threads>,
    /// Shared memory is the pipeline stages (`plan`) from offset 0, and the
    /// scratch area of conversions, reductions and staged `dot` operands
    /// after them or, when it can, sharing their memory (`lower_to_mlir`
    /// decides once the kernel is lowered). What each op needs of scratch,
    /// with the move it makes (its span for the error when it does not
    /// fit), in program order:
    scratch_needs: Vec<(ScratchNeed, SharedMove)>,
    /// The constants (i32) that are scratch addresses, to be set by
    /// `place_scratch` once scratch has its place.
    scratch_addrs: Vec<(V, ScratchAddr)>,
    /// Whether scratch is used inside a pipelined loop (then it cannot share
    /// the stages' memory).
    scratch_in_loop: bool,
    /// How many runtime loops the op being lowered is in.
    loop_depth: u32,
    plan: Plan,
    /// Inside a pipelined loop: each pipelined load → byte offset (i32) of
    /// its tile in the stage this iteration reads.
    pipe_bufs: HashMap<ValueId, (V, SmemTile, bool)>,
    /// The `wgmma` dot of the loop being lowered that may stay in flight
    /// (`prefetch::Loop::in_flight`).
    in_flight: Option<ValueId>,
    /// `wgmma` dots committed and not yet waited for, oldest first, each
    /// with the depth of the block it was lowered in: a dot's wait goes just
    /// before the first use of its result (`wgmma::wait_for_uses`), so the
    /// multiply runs on while the block does other work.
    unwaited: Vec<(ValueId, usize)>,
    /// The instruction defining each value (for recomputing broadcasts).
    defs: HashMap<ValueId, &'k Inst>,
    /// `trans(x)` operands of `wgmma` read from x's staged tile in the other
    /// major order (`wgmma::transposed_operands`): never lowered themselves.
    transposed: HashMap<ValueId, ValueId>,
    lane: Option<V>,
    warp: Option<V>,
    /// The generic address (i64) of each [`Plan::tma`] operand's tensor
    /// map, a hidden parameter after the kernel's own.
    tma_args: Vec<V>,
    /// The hidden i32 after the maps: bit `k` set when the host encoded
    /// operand `k`'s map (else the kernel copies it with `cp.async`).
    tma_described: Option<V>,
    /// Instructions of pipelined loops' bodies that the body does not lower
    /// (`pipelined::unread_in_body`), by address.
    unread: HashSet<*const tir::Inst>,
    /// Which pointer parameter each pointer is an offset from.
    pointer_params: &'k tir::aliasing::Defs<'k>,
    /// The global accesses lowered since the last CTA barrier
    /// (`global_order`).
    global_pending: Vec<global_order::GlobalAccess>,
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

impl<'c, 'k> Lower<'c, 'k> {
    /// The layout `v` lives in: assigned (`layouts`), else canonical.
    fn layout(&self, v: ValueId) -> Layout {
        self.layouts
            .get(&v)
            .cloned()
            .unwrap_or_else(|| self.canonical(&self.kernel.ty(v).shape))
    }

    fn canonical(&self, shape: &[u32]) -> Layout {
        Layout::Blocked(Blocked::canonical(shape, self.warps))
    }
    /// The MLIR type of one register of a value of TIR type `t`.
    fn mty(&self, t: &tir::Type) -> Type<'c> {
        self.e.ty(&mlir_ty_name(t))
    }

    /// The registers of `v` in its own layout.
    fn regs(&self, v: ValueId) -> Result<Vec<V>, CodegenError> {
        self.vals
            .get(&v)
            .cloned()
            .ok_or_else(|| CodegenError::Internal(format!("value {v} used before definition")))
    }
    /// A block's instructions, loads first (`order::loads_first`).
    fn lower_block_insts(&mut self, insts: &[tir::Inst]) -> Result<(), CodegenError> {
        for inst in order::loads_first(insts) {
            if self.unread.contains(&(inst as *const tir::Inst)) {
                // What `issue_copies` left here belongs to its own block.
                for r in &inst.results {
                    self.vals.remove(r);
                }
                continue;
            }
            self.wait_for_uses(inst)?;
            self.lower_inst(inst)?;
        }
        self.wait_for_dots(self.unwaited.len())
    }

    /// Lowers one instruction: each op goes to the method of the file that
    /// owns its concern, which returns the result's registers.
    fn lower_inst(&mut self, inst: &tir::Inst) -> Result<(), CodegenError> {
        let r = inst.results.first().copied();
        let span = inst.span;
        let regs: Vec<V> = match &inst.op {
            Op::Const(c) => self.constant_value(*c, r.unwrap())?,
            Op::ProgramId(axis) => self.grid_index("gpu.block_id", *axis)?,
            Op::NumPrograms(axis) => self.grid_index("gpu.grid_dim", *axis)?,
            Op::Arange { start, .. } => self.arange(*start, r.unwrap())?,
            Op::Splat(v) => self.splat(*v, r.unwrap())?,
            Op::ExpandDims { value, .. } | Op::Reshape(value) => {
                self.reshape(*value, r.unwrap(), span)?
            }
            Op::Broadcast(value) => self.broadcast(*value, r.unwrap(), span)?,
            Op::Trans { .. } if self.transposed.contains_key(&r.unwrap()) => Vec::new(),
            Op::Trans { value, perm } => self.transpose(*value, perm, r.unwrap(), span)?,
            Op::Unary(op, v) => self.elementwise_unary(*op, *v, r.unwrap(), span)?,
            Op::Binary(BinaryOp::Div, a, b) if self.divides_by_broadcast(*a, *b) => {
                self.divide_by_broadcast(*a, *b, r.unwrap(), span)?
            }
            Op::Binary(op, a, b) => self.elementwise_binary(*op, *a, *b, r.unwrap(), span)?,
            Op::Cmp(op, a, b) => self.elementwise_compare(*op, *a, *b, r.unwrap(), span)?,
            Op::Select { cond, a, b } => {
                self.elementwise_select(*cond, *a, *b, r.unwrap(), span)?
            }
            Op::Fma { a, b, c } => self.elementwise_fma([*a, *b, *c], r.unwrap(), span)?,
            Op::Cast(v) => self.elementwise_cast(*v, r.unwrap(), span)?,
            Op::AddPtr { ptr, offset } => self.add_ptr(*ptr, *offset, r.unwrap(), span)?,
            Op::Load { .. } if self.pipe_bufs.contains_key(&r.unwrap()) => {
                self.pipelined_load(r.unwrap())?
            }
            Op::Load { ptr, mask, other } => self.load(*ptr, *mask, *other, r.unwrap(), span)?,
            Op::Store { ptr, value, mask } => return self.store(*ptr, *value, *mask, span),
            Op::AtomicAdd { ptr, value, mask } => {
                self.atomic_add(*ptr, *value, *mask, r.unwrap(), span)?
            }
            Op::Reduce { op, value, axis } => {
                self.reduce(*op, *value, *axis as usize, r.unwrap(), span)?
            }
            Op::Dot { a, b, acc } => self.dot(*a, *b, *acc, r.unwrap(), span)?,
            Op::For { .. } => return self.lower_for(inst),
            Op::If { .. } => return self.lower_if(inst),
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
}
