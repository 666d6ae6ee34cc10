//! `dot` by Hopper's warpgroup MMA (`wgmma.mma_async`): operands in swizzled
//! shared memory read through matrix descriptors, and the waits that keep the
//! accumulators' uses after the multiply.

use super::Lower;
use crate::emit::{Emitter, V};
use crate::layout::{Layout, Mma};
use crate::prefetch::{self, SmemTile};
use crate::CodegenError;
use std::collections::HashMap;
use tile_ir::{Inst, Kernel, Op, Scalar, Span, ValueId};

/// A `wgmma` operand in shared memory: its byte offset (i32) and layout
/// there (swizzled).
type SwizzledOperand = (V, SmemTile);

/// `wgmma`'s A operand: in shared memory, or in registers (the 16-bit
/// registers of a tile in the accumulator layout of the result's warpgroups,
/// which is wgmma's register-A fragment: attention's P never leaves them).
pub(super) enum OperandA {
    Smem(SwizzledOperand),
    Regs(Vec<V>),
}

impl<'c, 'k> Lower<'c, 'k> {
    /// The shared-memory byte offset (i32) and layout of each `wgmma`
    /// operand: its pipeline stage, or swizzled scratch it is staged into from
    /// registers (A K-major, B MN-major: both row-major tiles cut into atoms
    /// along their columns).
    pub(super) fn wgmma_operands(
        &mut self,
        a: ValueId,
        b: ValueId,
        ml: &Mma,
        s: Scalar,
        span: Span,
    ) -> Result<(OperandA, SwizzledOperand), CodegenError> {
        let swizzled = |shape: &[u32]| {
            let width = prefetch::swizzle_width(shape[1]).ok_or_else(|| {
                CodegenError::Internal("wgmma operand without a swizzle width".into())
            })?;
            let tile = SmemTile::Swizzled {
                rows: shape[0],
                width,
            };
            // Swizzle atoms start 1024-byte aligned.
            Ok((tile, 1024))
        };
        // `trans(x)`: x itself staged, read in the other major order (see
        // `transposed_operands`).
        let b_src = self.transposed.get(&b).copied().unwrap_or(b);
        let a_src = self.transposed.get(&a).copied();
        let k = self.kernel.ty(a).shape[1];
        let a_regs = Mma {
            shape: vec![ml.shape[0], k],
            wm: ml.wm,
            wn: 1,
            warpgroups: true,
        };
        if ml.wn == 1
            && a_src.is_none()
            && self.layout(a) == Layout::Mma(a_regs)
            && !self.pipe_bufs.contains_key(&a)
        {
            let [b] = self.dot_operands([b_src], s, span, true, &swizzled)?;
            return Ok((OperandA::Regs(self.regs(a)?), b));
        }
        let [a, b] = self.dot_operands([a_src.unwrap_or(a), b_src], s, span, true, &swizzled)?;
        Ok((OperandA::Smem(a), b))
    }

    /// The four 32-bit registers of wgmma's register A for 64-row block
    /// `blk` and 16-wide k step `ks`, from a tile's accumulator-layout
    /// registers (`Mma::reg` order, `nt` fragments along k): rows g and g + 8
    /// of columns 2q, 2q + 1 and then 2q + 8, 2q + 9, two 16-bit values each.
    fn register_a(
        &mut self,
        regs: &[V],
        nt: u32,
        blk: u32,
        ks: u32,
        s: Scalar,
    ) -> Result<Vec<V>, CodegenError> {
        let vt = self.e.ty(&format!("vector<2x{}>", s.name()));
        let i32t = self.e.ty("i32");
        let mut out = Vec::new();
        for j in [2 * ks, 2 * ks + 1] {
            for half in 0..2 {
                let at = ((blk * nt + j) * 4 + 2 * half) as usize;
                let mut v = self.e.op1("llvm.mlir.undef", &[], vt, &[])?;
                for (i, &x) in regs[at..at + 2].iter().enumerate() {
                    let idx = self.e.i32(i as i64)?;
                    v = self.e.op1("llvm.insertelement", &[v, x, idx], vt, &[])?;
                }
                out.push(self.e.op1("llvm.bitcast", &[v], i32t, &[])?);
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
    pub(super) fn dot_wgmma(
        &mut self,
        r: ValueId,
        (a_value, b_value): (ValueId, ValueId),
        ml: &Mma,
        kk: u32,
        ptx_ty: &str,
        a_op: OperandA,
        (b_off, b_tile): SwizzledOperand,
        acc: Option<Vec<V>>,
    ) -> Result<Vec<V>, CodegenError> {
        let zero = self.e.i32(0)?;
        // No accumulator (zeros): placeholders the first k step ignores.
        let zero_acc = acc.is_none();
        let acc = match acc {
            Some(acc) => acc,
            None => {
                let f32t = self.e.ty("f32");
                let undef = self.e.op1("llvm.mlir.undef", &[], f32t, &[])?;
                vec![undef; ml.num_regs()]
            }
        };
        let (a_off, a_tile, a_regs) = match a_op {
            OperandA::Smem((off, tile)) => (off, tile, None),
            // Placeholders: the A descriptor is not used.
            OperandA::Regs(r) => (zero, b_tile, Some(r)),
        };
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
        // groups are one atom (8 · wa · 2 bytes) apart. MN-major (`trans(x)`,
        // x a staged `[K, M]` tile, `am` = K rows): as B MN-major.
        let a_mn_major = self.transposed.contains_key(&a_value);
        let a_bits = if a_mn_major {
            desc_bits(am * wa * 2, 8 * wa * 2, wa)
        } else {
            desc_bits(16, 8 * wa * 2, wa)
        };
        // B, MN-major: atoms along N are `bk · wb · 2` bytes apart (leading),
        // 8-row groups along K one atom apart (stride). K-major (a staged
        // `[N, K]` tile, `bk` = N rows): as A.
        let b_k_major = self.transposed.contains_key(&b_value);
        let b_bits = if b_k_major {
            desc_bits(16, 8 * wb * 2, wb)
        } else {
            desc_bits(bk * wb * 2, 8 * wb * 2, wb)
        };
        let warp = self.warp.unwrap();
        let (c2, c4) = (self.e.i32(2)?, self.e.i32(4)?);
        let group = self.e.binop("arith.shrui", warp, c2)?;
        let gnv = self.e.i32(gn as i64)?;
        let gi = self.e.binop("arith.divui", group, gnv)?;
        let gj = self.e.binop("arith.remui", group, gnv)?;
        // Shared-window addresses of this warpgroup's part of each operand.
        let i64t = self.e.ty("i64");
        // A warpgroup's `mg` rows of M: whole atoms along M when MN-major
        // (`mg` is a multiple of 64, an atom at most 64 wide).
        let a_row = if a_mn_major {
            self.e.i32((mg / wa * am * wa * 2) as i64)?
        } else {
            self.e.i32((mg * wa * 2) as i64)?
        };
        let a_part = self.e.binop("arith.muli", gi, a_row)?;
        let a_part = self.e.binop("arith.addi", a_off, a_part)?;
        let a_base = self.smem_addr(a_part)?;
        let b_col = if b_k_major {
            self.e.i32((ng * wb * 2) as i64)?
        } else {
            self.e.i32((ng / wb * bk * wb * 2) as i64)?
        };
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
        let regs: Vec<String> = (0..per_block).map(|i| format!("${i}")).collect();
        let trans_b = u32::from(!b_k_major);
        let trans_a = u32::from(a_mn_major);
        let shape = format!("m64n{ng}k16.f32.{ptx_ty}.{ptx_ty}");
        let p = per_block;
        // Operands after the accumulators' outputs: A (a descriptor, or four
        // registers), B's descriptor, the scale-d flag, the accumulators.
        let (constraints, text) = if a_regs.is_some() {
            (
                format!("{outs},r,r,r,r,l,r,{}", ties.join(",")),
                format!(
                    "{{ .reg .pred p; setp.ne.b32 p, ${}, 0; wgmma.mma_async.sync.aligned.{shape} {{{}}}, {{${}, ${}, ${}, ${}}}, ${}, p, 1, 1, {trans_b}; }}",
                    p + 5,
                    regs.join(", "),
                    p,
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                ),
            )
        } else {
            (
                format!("{outs},l,l,r,{}", ties.join(",")),
                format!(
                    "{{ .reg .pred p; setp.ne.b32 p, ${}, 0; wgmma.mma_async.sync.aligned.{shape} {{{}}}, ${}, ${}, p, 1, 1, {trans_a}, {trans_b}; }}",
                    p + 2,
                    regs.join(", "),
                    p,
                    p + 1,
                ),
            )
        };
        let s = if ptx_ty == "bf16" {
            Scalar::BF16
        } else {
            Scalar::F16
        };
        let mut out = acc;
        // Register A is packed next to each wgmma, after this fence, so
        // ptxas injects a `warpgroup.arrive` of its own before those wgmmas
        // (info C7519). Packing all of it above the fence silences that but
        // measured slower on the H200 (attention D=128 forward 0.755 →
        // 0.800 ms, fwd+bwd 1–2%; docs/BENCHMARKS.md, session 17).
        self.e
            .inline_asm("wgmma.fence.sync.aligned;", "", &[], &[])?;
        for ks in 0..kk / 16 {
            let k0 = ks * 16;
            let b_bytes = if b_k_major {
                (k0 / wb) * bk * wb * 2 + (k0 % wb) * 2
            } else {
                k0 * wb * 2
            };
            let b_desc = desc(self, b_base, b_bytes, b_bits)?;
            for blk in 0..ml.mt() {
                let mut operands = match &a_regs {
                    Some(r) => self.register_a(r, kk / 8, blk, ks, s)?,
                    None => {
                        let a_bytes = if a_mn_major {
                            blk * 64 / wa * am * wa * 2 + k0 * wa * 2
                        } else {
                            (k0 / wa) * am * wa * 2 + blk * 64 * wa * 2 + (k0 % wa) * 2
                        };
                        vec![desc(self, a_base, a_bytes, a_bits)?]
                    }
                };
                let range = blk as usize * per_block..(blk as usize + 1) * per_block;
                let scale_d = if zero_acc && ks == 0 { zero } else { one };
                operands.extend([b_desc, scale_d]);
                operands.extend(&out[range.clone()]);
                let d =
                    self.e
                        .inline_asm(&text, &constraints, &operands, &vec![f32t; per_block])?;
                out[range].copy_from_slice(&d);
            }
        }
        self.e
            .inline_asm("wgmma.commit_group.sync.aligned;", "", &[], &[])?;
        // Left running into the next iteration when the loop allows it (the
        // loop's only dot: nothing else is unwaited).
        if self.in_flight == Some(r) {
            return wgmma_wait(&mut self.e, 1, &out);
        }
        self.unwaited.push((r, self.e.depth()));
        Ok(out)
    }

    /// Waits for the unwaited dots an instruction reads, just before it:
    /// all of them before a loop or an `if` (their bodies may read any).
    pub(super) fn wait_for_uses(&mut self, inst: &Inst) -> Result<(), CodegenError> {
        // Every instruction of every kernel passes here: nothing to look up
        // (and no operand list to build) when no dot is running.
        if self.unwaited.is_empty() {
            return Ok(());
        }
        if matches!(inst.op, Op::For { .. } | Op::If { .. }) {
            return self.wait_for_dots(self.unwaited.len());
        }
        let used = inst.op.operands();
        match self.unwaited.iter().rposition(|(r, _)| used.contains(r)) {
            Some(i) => self.wait_for_dots(i + 1),
            None => Ok(()),
        }
    }

    /// Waits for the `n` oldest unwaited dots (`wgmma.wait_group` leaves
    /// the newer ones running; groups complete in order), passing their
    /// accumulators through the wait so that no use moves above it.
    pub(super) fn wait_for_dots(&mut self, n: usize) -> Result<(), CodegenError> {
        if n == 0 {
            return Ok(());
        }
        let depth = self.e.depth();
        if self.unwaited[..n].iter().any(|&(_, d)| d != depth) {
            return Err(CodegenError::Internal(
                "a wgmma wait outside the block of its dot".into(),
            ));
        }
        let running = (self.unwaited.len() - n) as u32;
        let done: Vec<ValueId> = self.unwaited.drain(..n).map(|(r, _)| r).collect();
        let mut acc = Vec::new();
        let mut sizes = Vec::new();
        for &r in &done {
            let regs = self.regs(r)?;
            sizes.push(regs.len());
            acc.extend(regs);
        }
        let out = wgmma_wait(&mut self.e, running, &acc)?;
        self.split_results(&done, &sizes, &out);
        Ok(())
    }
}

/// `wgmma.wait_group n` (at most `n` groups still running), passing the
/// accumulators through so that no use of them moves above it.
pub(super) fn wgmma_wait(e: &mut Emitter<'_>, n: u32, acc: &[V]) -> Result<Vec<V>, CodegenError> {
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

/// The operands of `wgmma` dots that are `trans(x)` of a 2-D tile x, each
/// with its x: x is staged as it is (or a pipelined loop copies it so) and
/// read in the other major order, so the transpose moves no data: as B,
/// `trans(x)` of a `[N, K]` tile is read K-major (wgmma's own B order); as
/// A, `trans(x)` of a `[K, M]` tile is read MN-major (a fused attention
/// backward's dQ += dSᵀ K from the dSᵀ its dK needs). Only where every use
/// of the transpose is such an operand (else it is lowered anyway).
pub(super) fn transposed_operands(
    kernel: &Kernel,
    plan: &prefetch::Plan,
    defs: &HashMap<ValueId, &Inst>,
) -> HashMap<ValueId, ValueId> {
    // A pipelined x must sit in its stage as staging would put it.
    let pipelined: HashMap<ValueId, SmemTile> = plan
        .loops
        .values()
        .flat_map(|l| l.bufs.iter().chain(&l.resident).map(|b| (b.load, b.tile)))
        .collect();
    let mut uses: HashMap<ValueId, (u32, u32)> = HashMap::new();
    tile_ir::walk_insts(&kernel.body, &mut |i| {
        for v in i.op.operands() {
            uses.entry(v).or_default().0 += 1;
        }
        if let (Op::Dot { a, b, .. }, Some(r)) = (&i.op, i.results.first()) {
            if plan.wgmma.contains_key(r) {
                uses.entry(*a).or_default().1 += 1;
                uses.entry(*b).or_default().1 += 1;
            }
        }
    });
    uses.iter()
        .filter(|(_, (all, as_operand))| all == as_operand)
        .filter_map(|(&t, _)| match defs.get(&t).map(|i| &i.op) {
            Some(Op::Trans { value, perm }) if perm == &[1, 0] => Some((t, *value)),
            _ => None,
        })
        .filter(|(_, x)| {
            let shape = &kernel.ty(*x).shape;
            let Some(width) = prefetch::swizzle_width(shape[1]) else {
                return false;
            };
            let as_staged = SmemTile::Swizzled {
                rows: shape[0],
                width,
            };
            shape[0].is_multiple_of(8) && pipelined.get(x).is_none_or(|t| *t == as_staged)
        })
        .collect()
}
