//! Layout assignment: which values live in an mma accumulator layout rather
//! than the canonical blocked layout of their shape.

use crate::layout::{Blocked, Layout, Mma, Partial, Slice};
use std::collections::HashMap;
use tile_ir::{self as tir, BinaryOp, Kernel, Op, ReduceOp, Scalar, ValueId};

/// Values whose layout is not the canonical blocked layout of their shape:
/// `dot` results live in the mma accumulator layout, and so do elementwise ops
/// over them and loop-carried values they flow into (a fixpoint over loops);
/// a reduction a loop accumulates is carried as per-thread partials.
pub(super) fn assign_layouts(
    kernel: &Kernel,
    warps: u32,
    wgmma: &HashMap<ValueId, (u32, u32)>,
) -> HashMap<ValueId, Layout> {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        for v in i.op.operands() {
            *uses.entry(v).or_insert(0) += 1;
        }
    });
    let mut out = HashMap::new();
    let cx = Cx {
        kernel,
        warps,
        wgmma,
        uses: &uses,
    };
    assign_block(&cx, &kernel.body.insts, &mut out);
    out
}

struct Cx<'a> {
    kernel: &'a Kernel,
    warps: u32,
    wgmma: &'a HashMap<ValueId, (u32, u32)>,
    /// How many times each value is read, nested blocks and yields included.
    uses: &'a HashMap<ValueId, usize>,
}

fn assign_block(cx: &Cx, insts: &[tir::Inst], out: &mut HashMap<ValueId, Layout>) {
    let (kernel, warps, wgmma) = (cx.kernel, cx.warps, cx.wgmma);
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
            // A row or column statistic of an accumulator stays with it
            // (see `Slice`): reduced, expanded back, broadcast over it.
            Op::Reduce { value, axis, .. } => {
                if let Some(Layout::Mma(m)) = out.get(value) {
                    if let Some(s) = Slice::of(m, *axis) {
                        out.insert(r, Layout::Slice(s));
                    }
                }
            }
            Op::ExpandDims { value, axis } => {
                if let Some(Layout::Slice(s)) = out.get(value) {
                    if !s.keep && *axis == 1 {
                        let s = Slice {
                            keep: true,
                            ..s.clone()
                        };
                        out.insert(r, Layout::Slice(s));
                    }
                }
            }
            Op::Broadcast(a) => {
                if let Some(Layout::Slice(s)) = out.get(a) {
                    let shape = &kernel.ty(r).shape;
                    if s.keep && shape[0] == s.parent.shape[0] && shape[1].is_multiple_of(8) {
                        out.insert(r, Layout::Mma(s.broadcast_to(shape[1])));
                    }
                }
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
                    assign_block(cx, &body.insts, out);
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
                for (a, r, y, p) in deferred_reductions(cx, body, out) {
                    for v in [a, r, y] {
                        out.insert(v, Layout::Partial(p.clone()));
                    }
                }
                // A loop's result is in its carried layout, except that of
                // partials: the loop combines them into the canonical layout.
                for (res, a) in inst.results.iter().zip(&body.args[1..]) {
                    match out.get(a).cloned() {
                        Some(Layout::Partial(_)) | None => {}
                        Some(l) => {
                            out.insert(*res, l);
                        }
                    }
                }
            }
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                assign_block(cx, &then_body.insts, out);
                assign_block(cx, &else_body.insts, out);
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

/// Reductions a loop accumulates whose combination across threads can wait
/// until after the loop: `acc = acc ⊕ reduce(x, axis)` with ⊕ the
/// reduction's own combination (`+` for `sum`, `maximum` for `max`, `minimum`
/// for `min`), where the reduction, the carried value and the new one have no
/// other use, and `x` is f32 or i32 (a 16-bit `acc` would round every
/// iteration) in its canonical blocked layout. Returns `(carried value,
/// reduction, new value, their layout)`. Sums then add in another order, as
/// any reduction may (docs/LANGUAGE.md).
fn deferred_reductions(
    cx: &Cx,
    body: &tir::Block,
    out: &HashMap<ValueId, Layout>,
) -> Vec<(ValueId, ValueId, ValueId, Partial)> {
    let Some(Op::Yield(ys)) = body.insts.last().map(|i| &i.op) else {
        return Vec::new();
    };
    let defs: HashMap<ValueId, &tir::Inst> = body
        .insts
        .iter()
        .filter_map(|i| i.results.first().map(|r| (*r, i)))
        .collect();
    let once = |v: &ValueId| cx.uses.get(v) == Some(&1);
    let mut found = Vec::new();
    for (a, y) in body.args[1..].iter().zip(ys) {
        let Some(Op::Binary(bop, p, q)) = defs.get(y).map(|i| &i.op) else {
            continue;
        };
        let r = match (p == a, q == a) {
            (true, false) => *q,
            (false, true) => *p,
            _ => continue,
        };
        let Some(Op::Reduce { op, value, axis }) = defs.get(&r).map(|i| &i.op) else {
            continue;
        };
        let combines = matches!(
            (op, bop),
            (ReduceOp::Sum, BinaryOp::Add)
                | (ReduceOp::Max, BinaryOp::Max)
                | (ReduceOp::Min, BinaryOp::Min)
        );
        let xt = cx.kernel.ty(*value);
        let wide = matches!(xt.scalar_elem(), Some(Scalar::F32 | Scalar::I32));
        if combines && wide && once(a) && once(&r) && once(y) && !out.contains_key(value) {
            let p = Partial {
                src: Blocked::canonical(&xt.shape, cx.warps),
                axis: *axis as usize,
                op: *op,
            };
            found.push((*a, r, *y, p));
        }
    }
    found
}
