//! Instruction order within a block: loads (and what their operands need)
//! first, so that every load of a run is in flight before a barrier.

use std::collections::HashMap;
use tile_ir::{Inst, Op, ValueId};

/// The order in which a block's instructions are lowered: within each run
/// between effects (stores, atomics, loops, ifs), the loads and the
/// instructions their operands need come first, in program order, then the
/// rest. Every load of the run is then in flight before the first reduction or
/// conversion waits at a barrier (LLVM does not move loads across barriers).
/// Only pure instructions move, each after its operands.
pub(super) fn loads_first(insts: &[Inst]) -> Vec<&Inst> {
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
