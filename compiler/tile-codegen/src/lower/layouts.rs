//! Layout assignment: which values live in an mma accumulator layout rather
//! than the canonical blocked layout of their shape.

use crate::layout::{Layout, Mma, Slice};
use std::collections::HashMap;
use tile_ir::{self as tir, Kernel, Op, ValueId};

/// Values whose layout is not the canonical blocked layout of their shape:
/// `dot` results live in the mma accumulator layout, and so do elementwise ops
/// over them and loop-carried values they flow into (a fixpoint over loops).
pub(super) fn assign_layouts(
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
