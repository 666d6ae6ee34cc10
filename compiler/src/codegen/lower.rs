//! TIR → MLIR (gpu, scf, arith, llvm, nvvm dialects), one `gpu.func` per kernel.
//!
//! Each TIR value becomes the list of registers one thread holds of it in the
//! canonical blocked layout of its shape (see `layout`). Loads and stores are
//! vectorised up to 16 bytes where the axis analysis proves contiguity; the
//! alignment and the mask of each vector are checked at run time, falling back
//! to per-element accesses at ragged edges.

use super::axis::{self, AxisInfo};
use super::emit::{Emitter, V};
use super::layout::Blocked;
use super::CodegenError;
use crate::tir::{self, BinaryOp, CmpOp, Const, Elem, Kernel, Op, ReduceOp, Scalar, Span, UnaryOp, ValueId};
use melior::ir::operation::{OperationLike, OperationMutLike};
use melior::ir::{Location, Module, Type};
use melior::Context;
use std::collections::HashMap;

/// Largest static shared memory a kernel may use (bytes).
const MAX_STATIC_SMEM: u32 = 48 * 1024;
const SCRATCH: &str = "__tile_scratch";

pub(crate) fn lower_to_mlir<'c>(ctx: &'c Context, kernel: &Kernel, warps: u32) -> Result<Module<'c>, CodegenError> {
    let module = Module::new(Location::unknown(ctx));
    let mut l = Lower {
        e: Emitter::new(ctx),
        kernel,
        warps,
        vals: HashMap::new(),
        axis: axis::analyze(kernel),
        threads: HashMap::new(),
        scratch_bytes: 0,
        lane: None,
        warp: None,
    };
    let func = l.lower_func()?;
    let e = &mut l.e;
    // gpu.module body: the scratch buffer (if any) and the kernel.
    e.push_block(&[]);
    if l.scratch_bytes > 0 {
        let gt = format!("!llvm.array<{} x i8>", l.scratch_bytes);
        let r = melior::ir::Region::new();
        e.op_full(
            "llvm.mlir.global",
            &[],
            &[],
            &[
                ("addr_space", e.attr("3 : i32")),
                ("alignment", e.attr("16 : i64")),
                ("global_type", e.attr(&gt)),
                ("linkage", e.attr("#llvm.linkage<internal>")),
                ("sym_name", e.attr(&format!("\"{SCRATCH}\""))),
                ("visibility_", e.attr("0 : i64")),
            ],
            vec![r],
        )?;
    }
    e.append(func);
    let gpu_module_region = e.pop_region();
    let gpu_module = melior::ir::operation::OperationBuilder::new("gpu.module", e.loc)
        .add_attributes(&[(melior::ir::Identifier::new(ctx, "sym_name"), e.attr("\"kernels\""))])
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
    Ok(module)
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
    axis: HashMap<ValueId, AxisInfo>,
    threads: HashMap<Vec<u32>, Threads>,
    scratch_bytes: u32,
    lane: Option<V>,
    warp: Option<V>,
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
        (ReduceOp::Max, false) => Const::Int(if s == Scalar::I64 { i64::MIN } else { i32::MIN as i64 }),
        (ReduceOp::Min, false) => Const::Int(if s == Scalar::I64 { i64::MAX } else { i32::MAX as i64 }),
    }
}

impl<'c, 'k> Lower<'c, 'k> {
    fn layout(&self, v: ValueId) -> Blocked {
        Blocked::canonical(&self.kernel.ty(v).shape, self.warps)
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
        let arg_tys: Vec<Type> = k.params.iter().map(|p| self.mty(&p.ty)).collect();
        let args = self.e.push_block(&arg_tys);
        for (p, a) in k.params.iter().zip(args) {
            self.vals.insert(p.value, vec![a]);
        }
        // Thread ids and the per-layout coordinates every later op needs.
        let index = self.e.ty("index");
        let i32t = self.e.ty("i32");
        let tid = self.e.op1("gpu.thread_id", &[], index, &[("dimension", "#gpu<dim x>")])?;
        let tid = self.e.op1("arith.index_cast", &[tid], i32t, &[])?;
        let c31 = self.e.i32(31)?;
        let c5 = self.e.i32(5)?;
        self.lane = Some(self.e.binop("arith.andi", tid, c31)?);
        self.warp = Some(self.e.binop("arith.shrui", tid, c5)?);
        let mut shapes: Vec<Vec<u32>> = k.values.iter().filter(|t| !t.is_scalar()).map(|t| t.shape.clone()).collect();
        shapes.sort();
        shapes.dedup();
        for s in shapes {
            let th = self.thread_coords(&Blocked::canonical(&s, self.warps))?;
            self.threads.insert(s, th);
        }
        self.lower_block_insts(&k.body.insts)?;
        self.e.op("gpu.return", &[], &[], &[])?;
        let region = self.e.pop_region();
        let fty = format!("({}) -> ()", k.params.iter().map(|p| mlir_ty_name(&p.ty)).collect::<Vec<_>>().join(", "));
        let e = &self.e;
        let attrs = [
            ("function_type", e.attr(&fty)),
            ("sym_name", e.attr(&format!("\"{}\"", k.name))),
            ("gpu.kernel", melior::ir::Attribute::unit(e.ctx)),
            ("known_block_size", e.attr(&format!("array<i32: {}, 1, 1>", 32 * self.warps))),
        ];
        let attrs: Vec<_> = attrs.iter().map(|(n, a)| (melior::ir::Identifier::new(e.ctx, n), *a)).collect();
        melior::ir::operation::OperationBuilder::new("gpu.func", e.loc)
            .add_attributes(&attrs)
            .add_regions([region])
            .build()
            .map_err(|err| CodegenError::Internal(format!("gpu.func: {err}")))
    }

    fn thread_coords(&mut self, l: &Blocked) -> Result<Threads, CodegenError> {
        let (lane, warp) = (self.lane.unwrap(), self.warp.unwrap());
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

    fn threads(&self, shape: &[u32]) -> &Threads {
        &self.threads[shape]
    }

    /// Runtime coordinates (i32) of register `k` of a tile in layout `l`.
    fn coords(&mut self, l: &Blocked, k: usize) -> Result<Vec<V>, CodegenError> {
        let idx = l.reg_index(k);
        let base = self.threads(&l.shape).base.clone();
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
        let mut acc = self.e.i32(0)?;
        let mut stride = 1i64;
        for d in (0..shape.len()).rev() {
            let s = self.e.i32(stride)?;
            let t = self.e.binop("arith.muli", coords[d], s)?;
            acc = self.e.binop("arith.addi", acc, t)?;
            stride *= shape[d] as i64;
        }
        Ok(acc)
    }

    fn lower_block_insts(&mut self, insts: &[tir::Inst]) -> Result<(), CodegenError> {
        for inst in insts {
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
                let name = if matches!(inst.op, Op::ProgramId(_)) { "gpu.block_id" } else { "gpu.grid_dim" };
                let dim = ["x", "y", "z"][(*a as usize).min(2)];
                let index = self.e.ty("index");
                let i32t = self.e.ty("i32");
                let v = self.e.op1(name, &[], index, &[("dimension", &format!("#gpu<dim {dim}>"))])?;
                vec![self.e.op1("arith.index_cast", &[v], i32t, &[])?]
            }
            Op::Arange { start, .. } => {
                let l = Blocked::canonical(&res_ty.unwrap().shape, self.warps);
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
                vec![s; Blocked::canonical(&res_ty.unwrap().shape, self.warps).num_regs()]
            }
            Op::ExpandDims { value, .. } | Op::Reshape(value) => {
                let (src, dst) = (self.layout(*value), self.layout(r.unwrap()));
                let regs = self.regs(*value)?;
                if src.rank() == 0 || src.same_map(&dst) {
                    if src.rank() == 0 {
                        vec![regs[0]; dst.num_regs()]
                    } else {
                        regs
                    }
                } else {
                    let src_shape = k.ty(*value).shape.clone();
                    self.convert(*value, &dst, inst.span, &mut |_, c| (c.to_vec(), src_shape.clone()))?
                }
            }
            Op::Broadcast(value) => {
                let (src, dst) = (self.layout(*value), self.layout(r.unwrap()));
                let regs = self.regs(*value)?;
                if k.ty(*value).numel() == 1 {
                    vec![regs[0]; dst.num_regs()]
                } else if src.same_map(&dst) {
                    regs
                } else {
                    let src_shape = k.ty(*value).shape.clone();
                    self.convert(*value, &dst, inst.span, &mut |l, c| {
                        let _ = l;
                        (c.to_vec(), src_shape.clone())
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
                    (s, src_shape.clone())
                })?
            }
            Op::Unary(op, v) => {
                let s = k.ty(*v).scalar_elem().unwrap();
                let regs = self.regs(*v)?;
                regs.iter().map(|&x| self.unary(*op, s, x)).collect::<Result<_, _>>()?
            }
            Op::Binary(op, a, b) => {
                let s = k.ty(*a).scalar_elem().unwrap();
                let (ra, rb) = (self.regs(*a)?, self.regs(*b)?);
                ra.iter().zip(&rb).map(|(&x, &y)| self.binary(*op, s, x, y)).collect::<Result<_, _>>()?
            }
            Op::Cmp(op, a, b) => {
                let s = k.ty(*a).scalar_elem();
                let (ra, rb) = (self.regs(*a)?, self.regs(*b)?);
                ra.iter().zip(&rb).map(|(&x, &y)| self.compare(*op, s, x, y)).collect::<Result<_, _>>()?
            }
            Op::Select { cond, a, b } => {
                let (rc, ra, rb) = (self.regs(*cond)?, self.regs(*a)?, self.regs(*b)?);
                (0..ra.len()).map(|i| self.e.select(rc[i], ra[i], rb[i])).collect::<Result<_, _>>()?
            }
            Op::Cast(v) => {
                let from = k.ty(*v).scalar_elem().unwrap();
                let to = res_ty.unwrap().scalar_elem().unwrap();
                let regs = self.regs(*v)?;
                regs.iter().map(|&x| self.cast(x, from, to)).collect::<Result<_, _>>()?
            }
            Op::AddPtr { ptr, offset } => {
                let Elem::Ptr(pointee) = k.ty(*ptr).elem else {
                    return Err(CodegenError::Internal("add_ptr on a non-pointer".into()));
                };
                let (rp, ro) = (self.regs(*ptr)?, self.regs(*offset)?);
                let pt = self.e.ty("!llvm.ptr<1>");
                let et = format!("{}", scalar_ty(pointee));
                (0..rp.len())
                    .map(|i| {
                        self.e.op1(
                            "llvm.getelementptr",
                            &[rp[i], ro[i]],
                            pt,
                            &[
                                ("elem_type", &et),
                                ("noWrapFlags", "0 : i32"),
                                ("rawConstantIndices", "array<i32: -2147483648>"),
                            ],
                        )
                    })
                    .collect::<Result<_, _>>()?
            }
            Op::Load { ptr, mask, other } => self.load(*ptr, *mask, *other, r.unwrap())?,
            Op::Store { ptr, value, mask } => {
                self.store(*ptr, *value, *mask)?;
                vec![]
            }
            Op::AtomicAdd { ptr, value, mask } => self.atomic_add(*ptr, *value, *mask)?,
            Op::Reduce { op, value, axis } => self.reduce(*op, *value, *axis as usize, r.unwrap(), inst.span)?,
            Op::Dot { .. } => {
                return Err(CodegenError::Unsupported {
                    what: "dot (tensor-core matrix product) is not implemented in code generation yet".into(),
                    span: inst.span,
                })
            }
            Op::For { lb, ub, step, init, body, .. } => {
                let (lb, ub, step) = (self.regs(*lb)?[0], self.regs(*ub)?[0], self.regs(*step)?[0]);
                let mut flat_init = Vec::new();
                let mut sizes = Vec::new();
                for v in init {
                    let rv = self.regs(*v)?;
                    sizes.push(rv.len());
                    flat_init.extend(rv);
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
                self.lower_body(&body.insts)?;
                let region = self.e.pop_region();
                let res_tys: Vec<Type> = flat_init.iter().map(|v| self.e.type_of(*v)).collect();
                let mut operands = vec![lb, ub, step];
                operands.extend(flat_init);
                let out = self.e.op_full("scf.for", &operands, &res_tys, &[], vec![region])?;
                self.split_results(&inst.results, &sizes, &out);
                return Ok(());
            }
            Op::If { cond, then_body, else_body } => {
                let c = self.regs(*cond)?[0];
                let sizes: Vec<usize> =
                    inst.results.iter().map(|v| Blocked::canonical(&k.ty(*v).shape, self.warps).num_regs()).collect();
                let mut res_tys = Vec::new();
                for (v, n) in inst.results.iter().zip(&sizes) {
                    let t = self.mty(k.ty(*v));
                    res_tys.extend(std::iter::repeat(t).take(*n));
                }
                self.e.push_block(&[]);
                self.lower_body(&then_body.insts)?;
                let r1 = self.e.pop_region();
                self.e.push_block(&[]);
                self.lower_body(&else_body.insts)?;
                let r2 = self.e.pop_region();
                let out = self.e.op_full("scf.if", &[c], &res_tys, &[], vec![r1, r2])?;
                self.split_results(&inst.results, &sizes, &out);
                return Ok(());
            }
            Op::Yield(vs) => {
                let mut flat = Vec::new();
                for v in vs {
                    flat.extend(self.regs(*v)?);
                }
                self.e.op("scf.yield", &flat, &[], &[])?;
                vec![]
            }
        };
        if let Some(r) = r {
            self.vals.insert(r, regs);
        }
        Ok(())
    }

    /// Lower a `For`/`If` body; a body without a trailing `Yield` yields nothing.
    fn lower_body(&mut self, insts: &[tir::Inst]) -> Result<(), CodegenError> {
        self.lower_block_insts(insts)?;
        if !matches!(insts.last().map(|i| &i.op), Some(Op::Yield(_))) {
            self.e.op("scf.yield", &[], &[], &[])?;
        }
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
            (Const::Int(i), s) if s.is_int() => self.e.constant(&format!("{i} : {}", scalar_ty(s)), t),
            (Const::Float(f), s) if s.is_int() => self.e.constant(&format!("{} : {}", f as i64, scalar_ty(s)), t),
            (Const::Int(i), s) => self.e.constant(&float_attr(i as f64, s), t),
            (Const::Float(f), s) => self.e.constant(&float_attr(f, s), t),
            (Const::Bool(b), s) => self.e.constant(&format!("{} : {}", b as i64, scalar_ty(s)), t),
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
                    let m = self.constant(if s == Scalar::I1 { Const::Bool(true) } else { Const::Int(-1) }, s)?;
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
            UnaryOp::Abs => self.e.op1("llvm.intr.fabs", &[x], f32t, &[("fastmathFlags", "#llvm.fastmath<none>")])?,
            UnaryOp::Exp => self.exp(x)?,
            UnaryOp::Exp2 => self.e.call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[x], f32t)?,
            UnaryOp::Log => {
                let l2 = self.e.call_intrinsic("llvm.nvvm.lg2.approx.ftz.f", &[x], f32t)?;
                let ln2 = self.f32(std::f64::consts::LN_2)?;
                self.e.binop("arith.mulf", l2, ln2)?
            }
            UnaryOp::Sqrt => self.e.call_intrinsic("llvm.nvvm.sqrt.rn.f", &[x], f32t)?,
            UnaryOp::Rsqrt => self.e.call_intrinsic("llvm.nvvm.rsqrt.approx.ftz.f", &[x], f32t)?,
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
        self.e.call_intrinsic("llvm.nvvm.ex2.approx.ftz.f32", &[t], f32t)
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
            BinaryOp::Max => self.e.op1("llvm.intr.maxnum", &[x, y], f32t, &[("fastmathFlags", "#llvm.fastmath<none>")])?,
            BinaryOp::Min => self.e.op1("llvm.intr.minnum", &[x, y], f32t, &[("fastmathFlags", "#llvm.fastmath<none>")])?,
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
                let name = if from == Scalar::I1 { "arith.uitofp" } else { "arith.sitofp" };
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
            _ => Err(CodegenError::Internal("memory access through a non-pointer".into())),
        }
    }

    /// Vector width (elements) for accesses through `ptr`: 1 when not provably contiguous.
    fn vector_width(&self, ptr: ValueId, s: Scalar) -> u32 {
        let l = self.layout(ptr);
        if l.rank() == 0 || s == Scalar::I1 {
            return 1;
        }
        let contig = self.axis.get(&ptr).map(|a| a.contig).unwrap_or(1);
        let max_elems = 16 / s.size_bytes() as u32;
        contig.min(l.spt[l.rank() - 1]).min(max_elems).max(1)
    }

    /// Groups of `v` consecutive registers along the last dimension.
    fn groups(l: &Blocked, v: u32) -> Vec<std::ops::Range<usize>> {
        let n = l.num_regs();
        (0..n).step_by(v as usize).map(|k| k..k + v as usize).collect()
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

    fn load(&mut self, ptr: ValueId, mask: Option<ValueId>, other: Option<ValueId>, r: ValueId) -> Result<Vec<V>, CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let t = self.e.ty(scalar_ty(s));
        let rp = self.regs(ptr)?;
        let rm = mask.map(|m| self.regs(m)).transpose()?;
        let ro = match other {
            Some(o) => Some(self.regs(o)?),
            None if mask.is_some() => {
                let z = self.constant(Const::Int(0), s)?;
                Some(vec![z; rp.len()])
            }
            None => None,
        };
        let l = self.layout(r);
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
                            e.if_else(m[k], &[t], &mut |e| Ok(vec![LoadOne { e }.load(p, s)?]), &mut |_| Ok(vec![ok]))?[0]
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
                        &[("alignment", &format!("{} : i64", v as usize * s.size_bytes())), ("ordering", "0 : i64")],
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

    fn store(&mut self, ptr: ValueId, value: ValueId, mask: Option<ValueId>) -> Result<(), CodegenError> {
        let s = self.ptr_elem(ptr)?;
        let rp = self.regs(ptr)?;
        let rv = self.regs(value)?;
        let rm = mask.map(|m| self.regs(m)).transpose()?;
        let l = self.layout(ptr);
        let owner = if l.rank() == 0 { None } else { self.threads(&l.shape).owner };
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
                        &[("alignment", &format!("{} : i64", v as usize * s.size_bytes())), ("ordering", "0 : i64")],
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

    fn atomic_add(&mut self, ptr: ValueId, value: ValueId, mask: Option<ValueId>) -> Result<Vec<V>, CodegenError> {
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
        let rp = self.regs(ptr)?;
        let rv = self.regs(value)?;
        let rm = mask.map(|m| self.regs(m)).transpose()?;
        let l = self.layout(ptr);
        let owner = if l.rank() == 0 { None } else { self.threads(&l.shape).owner };
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
                Ok(vec![e.op1("llvm.atomicrmw", &[p, x], t, &[("bin_op", bin_op), ("ordering", "2 : i64")])?])
            };
            out.push(match cond {
                Some(c) => self.e.if_else(c, &[t], &mut doit, &mut |_| Ok(vec![zero]))?[0],
                None => doit(&mut self.e)?[0],
            });
        }
        Ok(out)
    }

    /// Pointer into the shared scratch buffer at byte offset `off` (i32).
    fn scratch_ptr(&mut self, off: V) -> Result<V, CodegenError> {
        let p3 = self.e.ty("!llvm.ptr<3>");
        let base = self.e.op1("llvm.mlir.addressof", &[], p3, &[("global_name", &format!("@{SCRATCH}"))])?;
        self.e.op1(
            "llvm.getelementptr",
            &[base, off],
            p3,
            &[("elem_type", "i8"), ("noWrapFlags", "0 : i32"), ("rawConstantIndices", "array<i32: -2147483648>")],
        )
    }

    fn reserve_scratch(&mut self, bytes: u32, span: Span) -> Result<(), CodegenError> {
        if bytes > MAX_STATIC_SMEM {
            return Err(CodegenError::SharedMemory { bytes, limit: MAX_STATIC_SMEM, span });
        }
        self.scratch_bytes = self.scratch_bytes.max(bytes);
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), CodegenError> {
        self.e.op("gpu.barrier", &[], &[], &[])?;
        Ok(())
    }

    /// Store/load one element of type `s` in scratch at element index `idx`.
    fn scratch_store(&mut self, idx: V, x: V, s: Scalar) -> Result<(), CodegenError> {
        let (x, es) = self.to_storage(x, s)?;
        let sz = self.e.i32(es as i64)?;
        let off = self.e.binop("arith.muli", idx, sz)?;
        let p = self.scratch_ptr(off)?;
        self.e.op("llvm.store", &[x, p], &[], &[("alignment", &format!("{es} : i64")), ("ordering", "0 : i64")])?;
        Ok(())
    }

    fn scratch_load(&mut self, idx: V, s: Scalar, is_ptr: bool) -> Result<V, CodegenError> {
        let es = if is_ptr { 8 } else { s.size_bytes() };
        let sz = self.e.i32(es as i64)?;
        let off = self.e.binop("arith.muli", idx, sz)?;
        let p = self.scratch_ptr(off)?;
        let st = if is_ptr { "i64" } else if s == Scalar::I1 { "i8" } else { scalar_ty(s) };
        let t = self.e.ty(st);
        let v = self.e.op1("llvm.load", &[p], t, &[("alignment", &format!("{es} : i64")), ("ordering", "0 : i64")])?;
        if is_ptr {
            let pt = self.e.ty("!llvm.ptr<1>");
            self.e.op1("llvm.inttoptr", &[v], pt, &[])
        } else if s == Scalar::I1 {
            let z = self.e.constant("0 : i8", t)?;
            self.e.cmpi("ne", v, z)
        } else {
            Ok(v)
        }
    }

    /// Value as stored in memory: i1 → i8, pointers → i64.
    fn to_storage(&mut self, x: V, s: Scalar) -> Result<(V, usize), CodegenError> {
        let t = self.e.type_of(x);
        let name = t.to_string();
        if name.starts_with("!llvm.ptr") {
            let i64t = self.e.ty("i64");
            return Ok((self.e.op1("llvm.ptrtoint", &[x], i64t, &[])?, 8));
        }
        if s == Scalar::I1 {
            let i8t = self.e.ty("i8");
            return Ok((self.e.op1("arith.extui", &[x], i8t, &[])?, 1));
        }
        Ok((x, s.size_bytes()))
    }

    /// Re-layout `value` into `dst` through shared memory. `src_of` maps a
    /// destination coordinate to the source coordinate it reads (and the source shape).
    fn convert(
        &mut self,
        value: ValueId,
        dst: &Blocked,
        span: Span,
        src_of: &mut dyn FnMut(&Blocked, &[V]) -> (Vec<V>, Vec<u32>),
    ) -> Result<Vec<V>, CodegenError> {
        let ty = self.kernel.ty(value).clone();
        let (s, is_ptr) = match ty.elem {
            Elem::Scalar(s) => (s, false),
            Elem::Ptr(_) => (Scalar::I64, true),
        };
        let es = if is_ptr { 8 } else { s.size_bytes() as u32 };
        self.reserve_scratch(ty.numel() as u32 * es, span)?;
        let src = self.layout(value);
        let regs = self.regs(value)?;
        self.barrier()?;
        let owner = self.threads(&src.shape).owner;
        match owner {
            Some(o) => self.if_then_self(o, &mut |me| me.write_scratch(&src, &regs, s))?,
            None => self.write_scratch(&src, &regs, s)?,
        }
        self.barrier()?;
        let mut out = Vec::new();
        for k in 0..dst.num_regs() {
            let c = self.coords(dst, k)?;
            let (sc, sshape) = src_of(dst, &c);
            let f = self.flat(&sc, &sshape)?;
            out.push(self.scratch_load(f, s, is_ptr)?);
        }
        Ok(out)
    }

    /// Every register of a tile in layout `l` to scratch at its row-major index.
    fn write_scratch(&mut self, l: &Blocked, regs: &[V], s: Scalar) -> Result<(), CodegenError> {
        for (k, &x) in regs.iter().enumerate() {
            let c = self.coords(l, k)?;
            let f = self.flat(&c, &l.shape)?;
            self.scratch_store(f, x, s)?;
        }
        Ok(())
    }

    /// `scf.if` without results whose body lowers through `self`.
    fn if_then_self(&mut self, cond: V, body: &mut dyn FnMut(&mut Self) -> Result<(), CodegenError>) -> Result<(), CodegenError> {
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

    fn combine(&mut self, op: ReduceOp, s: Scalar, a: V, b: V) -> Result<V, CodegenError> {
        let bop = match op {
            ReduceOp::Sum => BinaryOp::Add,
            ReduceOp::Max => BinaryOp::Max,
            ReduceOp::Min => BinaryOp::Min,
        };
        self.binary(bop, s, a, b)
    }

    fn reduce(&mut self, op: ReduceOp, value: ValueId, axis: usize, r: ValueId, span: Span) -> Result<Vec<V>, CodegenError> {
        let s_in = self.kernel.ty(value).scalar_elem().unwrap();
        // 16-bit floats accumulate in f32 and round once at the end.
        let s = if s_in.is_float() { Scalar::F32 } else { s_in };
        if !matches!(s, Scalar::F32 | Scalar::I32) {
            return Err(CodegenError::Unsupported { what: format!("reductions of {} tiles", s_in.name()), span });
        }
        let src = self.layout(value);
        let dst = self.layout(r);
        let regs: Vec<V> = self.regs(value)?.into_iter().map(|x| self.widen(x, s_in)).collect::<Result<_, _>>()?;
        let id = self.constant(identity(op, s), s)?;
        let th_t = self.threads(&src.shape).t.clone();
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
                    let sh = self.e.op("gpu.shuffle", &[x, o, width], &[t, i1], &[("mode", "#gpu<shuffle_mode xor>")])?[0];
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
            self.if_then_self(first_lane, &mut |me| {
                for key in &keys2 {
                    let k = src.reg_number(key);
                    let c = me.coords(&src, k)?;
                    let rc: Vec<V> = c.iter().enumerate().filter(|(d, _)| *d != axis).map(|(_, v)| *v).collect();
                    let f = me.flat(&rc, &res_shape)?;
                    let idx = me.e.binop("arith.addi", wbase, f)?;
                    me.scratch_store(idx, partial2[key], s)?;
                }
                Ok(())
            })?;
            self.barrier()?;
            let mut out = Vec::new();
            let nregs = if dst.rank() == 0 { 1 } else { dst.num_regs() };
            for k in 0..nregs {
                let f = if dst.rank() == 0 {
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
        let (st, bytes) = if s == Scalar::I1 { ("i8", 1) } else { (scalar_ty(s), s.size_bytes()) };
        let t = self.e.ty(st);
        let v = self.e.op1("llvm.load", &[p], t, &[("alignment", &format!("{bytes} : i64")), ("ordering", "0 : i64")])?;
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
        self.e.op("llvm.store", &[x, p], &[], &[("alignment", &format!("{bytes} : i64")), ("ordering", "0 : i64")])?;
        Ok(())
    }
}
