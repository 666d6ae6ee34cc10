//! Which loads feeding a `dot` are software-pipelined (the plan; `lower`
//! emits it).
//!
//! In a `for` loop, a `dot` both of whose operands are loads used by it alone,
//! with addresses, masks and `other` values computed from the induction
//! variable and loop-invariant values, has those loads replaced by `cp.async`
//! copies into a ring of `stages` shared-memory buffers issued `stages - 1`
//! iterations ahead:
//! iteration i waits for its own copies, issues those of iteration
//! i + stages - 1 into the buffer that iteration i - 1 finished reading, then
//! multiplies from shared memory. The loop body must not write memory (a store
//! could alias a load that now runs early) nor hold a nested loop (both would
//! use the same memory).

use crate::tir::{walk_insts, Block, Kernel, Op, Scalar, ValueId};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Shared memory the stages of one loop may take (bytes); the stage count is
/// what fits, between 2 and [`MAX_STAGES`].
const STAGE_BUDGET: u32 = 80 * 1024;
const MAX_STAGES: u32 = 4;
/// Elements of padding per shared-memory row: 16 bytes, so the 8 rows an
/// `ldmatrix` reads fall in distinct bank groups.
pub(crate) const PAD: u32 = 8;

#[derive(Clone, Debug)]
pub(crate) struct Loop {
    pub stages: u32,
    /// Bytes of one stage (every buffer of one iteration).
    pub stage_bytes: u32,
    pub bufs: Vec<Buf>,
    /// Body instructions (indices, in order) the addresses, masks and `other`
    /// values of the pipelined loads need: lowered again for a later iteration.
    pub slice: Vec<usize>,
}

/// One pipelined load: its tile sits at `offset` in each stage, rows `ld`
/// elements apart.
#[derive(Clone, Debug)]
pub(crate) struct Buf {
    pub load: ValueId,
    pub offset: u32,
    pub ld: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Keyed by the loop's induction variable.
    pub loops: HashMap<ValueId, Loop>,
    /// Shared memory the largest pipelined loop needs (loops run one at a time).
    pub bytes: u32,
}

pub(crate) fn plan(kernel: &Kernel) -> Plan {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    walk_insts(&kernel.body, &mut |i| {
        for v in i.op.operands() {
            *uses.entry(v).or_default() += 1;
        }
    });
    let mut plan = Plan::default();
    walk_insts(&kernel.body, &mut |i| {
        if let Op::For { body, .. } = &i.op {
            if let Some(l) = plan_loop(kernel, body, &uses) {
                plan.bytes = plan.bytes.max(l.stages * l.stage_bytes);
                plan.loops.insert(body.args[0], l);
            }
        }
    });
    plan
}

/// Ops that may be evaluated again for a later iteration: pure, and cheap.
fn recomputable(op: &Op) -> bool {
    matches!(
        op,
        Op::Const(_)
            | Op::ProgramId(_)
            | Op::NumPrograms(_)
            | Op::Arange { .. }
            | Op::Splat(_)
            | Op::Broadcast(_)
            | Op::ExpandDims { .. }
            | Op::Cast(_)
            | Op::Unary(..)
            | Op::Binary(..)
            | Op::Cmp(..)
            | Op::Select { .. }
            | Op::AddPtr { .. }
    )
}

fn plan_loop(kernel: &Kernel, body: &Block, uses: &HashMap<ValueId, usize>) -> Option<Loop> {
    let mut simple = true;
    walk_insts(body, &mut |i| {
        if matches!(
            i.op,
            Op::Store { .. } | Op::AtomicAdd { .. } | Op::For { .. }
        ) {
            simple = false;
        }
    });
    if !simple {
        return None;
    }
    let def: HashMap<ValueId, usize> = body
        .insts
        .iter()
        .enumerate()
        .flat_map(|(i, inst)| inst.results.iter().map(move |r| (*r, i)))
        .collect();
    let carried: HashSet<ValueId> = body.args[1..].iter().copied().collect();
    let (mut bufs, mut slice, mut offset) = (Vec::new(), BTreeSet::new(), 0);
    // The slice of body instructions a load's operands need, when the load
    // can be issued early.
    let early = |x: ValueId| -> Option<BTreeSet<usize>> {
        let &li = def.get(&x)?;
        let Op::Load { ptr, mask, other } = body.insts[li].op else {
            return None;
        };
        let ty = kernel.ty(x);
        if uses.get(&x) != Some(&1)
            || ty.shape.len() != 2
            || !matches!(ty.scalar_elem(), Some(Scalar::BF16 | Scalar::F16))
        {
            return None;
        }
        let mut need = BTreeSet::new();
        let mut work: Vec<ValueId> = [Some(ptr), mask, other].into_iter().flatten().collect();
        while let Some(v) = work.pop() {
            if carried.contains(&v) {
                return None;
            }
            if let Some(&j) = def.get(&v) {
                if need.insert(j) {
                    if !recomputable(&body.insts[j].op) {
                        return None;
                    }
                    work.extend(body.insts[j].op.operands());
                }
            }
        }
        Some(need)
    };
    for inst in &body.insts {
        let Op::Dot { a, b, .. } = inst.op else {
            continue;
        };
        // Both operands or neither: a dot that still stages an operand from
        // registers waits at its own barriers every iteration, so copying the
        // other ahead gains little and takes shared memory from occupancy.
        let (Some(na), Some(nb)) = (early(a), early(b)) else {
            continue;
        };
        slice.extend(na);
        slice.extend(nb);
        for x in [a, b] {
            let shape = &kernel.ty(x).shape;
            let ld = shape[1] + PAD;
            bufs.push(Buf {
                load: x,
                offset,
                ld,
            });
            offset += shape[0] * ld * 2;
        }
    }
    if bufs.is_empty() {
        return None;
    }
    Some(Loop {
        stages: (STAGE_BUDGET / offset).clamp(2, MAX_STAGES),
        stage_bytes: offset,
        bufs,
        slice: slice.into_iter().collect(),
    })
}
