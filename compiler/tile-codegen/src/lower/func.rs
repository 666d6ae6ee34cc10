//! The kernel's `gpu.func`: its parameters (the kernel's own, then one
//! tensor map per TMA operand and the mask of those the host could encode:
//! `tile_ir::launch`), the thread ids and per-layout thread
//! coordinates computed once in the entry block, the body, and the
//! `nvvm.minctasm` register budget (a configuration's `ctas`, else a rule
//! for straight-line row kernels). On sm_90 the entry first waits for the
//! grid before it ([`crate::Arch::waits_for_prior_grid`]).

use super::{mlir_ty_name, Lower};
use crate::layout::Layout;
use crate::CodegenError;
use melior::ir::Type;
use tile_ir::{self as tir, Op, Span, ValueId};

impl<'c, 'k> Lower<'c, 'k> {
    pub(super) fn lower_func(&mut self) -> Result<melior::ir::Operation<'c>, CodegenError> {
        let k = self.kernel;
        let mut arg_tys: Vec<Type> = k.params.iter().map(|p| self.mty(&p.ty)).collect();
        let hidden = tir::launch::hidden_params(self.plan.tma.len());
        arg_tys.extend(hidden.iter().map(|h| self.e.ty(h.mlir_type())));
        let args = self.e.begin_function(&arg_tys);
        if self.arch.waits_for_prior_grid() {
            // Programmatic dependent launch: the host may start this grid
            // while the one before it in the stream still runs, so nothing
            // may touch global memory before that grid has finished (`wait`
            // returns once it has and its writes are visible; at once when
            // launched without the attribute). No `launch_dependents`: the
            // grid after this one is then scheduled as this one's CTAs
            // retire, which hides its launch. Triggered at entry, the next
            // grid's waiting CTAs took SM slots from this one's: mhc_pre_apply
            // (24,576 two-warp CTAs) 0.028 → 0.034 ms (H100, session 39).
            self.e.inline_asm("griddepcontrol.wait;", "", &[], &[])?;
        }
        for (p, a) in k.params.iter().zip(&args) {
            self.vals.insert(p.value, vec![*a]);
        }
        // Each map's generic address (`cvta.param`: TMA reads it in place).
        let i64t = self.e.ty("i64");
        let maps = &args[k.params.len()..k.params.len() + self.plan.tma.len()];
        self.tma_args = maps
            .iter()
            .map(|&m| self.e.op1("llvm.ptrtoint", &[m], i64t, &[]))
            .collect::<Result<_, _>>()?;
        self.tma_described = args.get(k.params.len() + self.plan.tma.len()).copied();
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
        // A loop's reduction partials have no coordinates (their source's
        // canonical layout is in the list).
        // A reduction's result reads its coordinates off its `keep` layout.
        let keeps: Vec<Layout> = layouts
            .iter()
            .filter_map(|l| match l {
                Layout::Reduced(r) => Some(Layout::Blocked(r.keep.clone())),
                _ => None,
            })
            .collect();
        for l in keeps.into_iter().chain(layouts) {
            if !matches!(l, Layout::Partial(_)) && !self.threads.contains_key(&l) {
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
                .chain(hidden.iter().map(|h| h.mlir_type().to_string()))
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

    /// A configuration's `ctas` caps a thread's registers at 65536 / (ctas ·
    /// threads), in ptxas's steps of 8. A `wgmma` accumulator must sit in
    /// registers whole, and ptxas stops with "Insufficient registers"
    /// (C7602) — at load time, when the driver compiles the PTX — where the
    /// cap leaves it too few beside it: 64 accumulator registers needed 90,
    /// 32 passed at 64 and failed at 40 (H100, session 31). So a cap below
    /// the largest accumulator plus [`WGMMA_REGISTER_MARGIN`] is refused here,
    /// naming the largest `ctas` that fits.
    pub(super) fn check_register_budget(&self) -> Result<(), CodegenError> {
        let Some(ctas) = self.ctas else {
            return Ok(());
        };
        let threads = 32 * self.warps;
        let cap = |n: u32| (65536 / (n * threads)).min(255) / 8 * 8;
        let largest = self
            .plan
            .wgmma
            .keys()
            .map(|v| {
                let t = self.kernel.ty(*v);
                let bytes = t.numel() * t.scalar_elem().map_or(4, |s| s.size_bytes());
                (bytes.div_ceil(4 * threads as usize) as u32, *v)
            })
            .max();
        let Some((acc, v)) = largest else {
            return Ok(());
        };
        let need = acc + WGMMA_REGISTER_MARGIN;
        if cap(ctas) >= need {
            return Ok(());
        }
        let fits = (1..ctas).rev().find(|&n| cap(n) >= need);
        Err(CodegenError::Unsupported {
            what: format!(
                "`ctas: {ctas}` leaves {} registers a thread, and this dot's accumulator alone takes {acc} \
                 (ptxas needs about {need}); {}",
                cap(ctas),
                match fits {
                    Some(n) => format!("use `ctas` of at most {n}, or a smaller tile"),
                    None => "use a smaller tile or more warps".to_string(),
                }
            ),
            span: self.defs.get(&v).map_or(Span::default(), |i| i.span),
        })
    }

    /// CTAs per SM to ask ptxas for (`nvvm.minctasm`, i.e. a register
    /// budget): the configuration's `ctas` where it names one, else a rule
    /// for straight-line row kernels like rmsnorm and softmax: reductions, no
    /// loops and no `dot`, one or two loads of at most two 16-byte vectors per
    /// thread each (kernels holding more values live, such as mHC's
    /// `mhc_coeffs_bwd` with 13 loads, spill under the budget). Unasked, ptxas gave
    /// rmsnorm 56 registers (4 CTAs of 256 threads per SM); held to 48 it
    /// fits 5 without spills, with more loads in flight: 73% → 82–87% of copy
    /// bandwidth for the bf16 row kernels on the H200. f32 rows (four vectors
    /// per load) and plain elementwise kernels measured slower with the hint,
    /// so they go without.
    pub(super) fn min_ctas(&self) -> Option<u32> {
        if self.ctas.is_some() {
            return self.ctas;
        }
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
}

/// Registers beyond a `wgmma` accumulator that ptxas needs at least
/// (descriptors, addresses, loop state; see `check_register_budget`).
const WGMMA_REGISTER_MARGIN: u32 = 26;
