//! Dead code elimination: drop pure instructions whose results are unused.
//! `For`/`If` stay when any result is used or their bodies have side effects
//! (stores, atomics); one backward walk suffices since uses follow definitions.

use std::collections::HashSet;
use tile_ir::{Block, Kernel, Op, ValueId};

pub fn run(k: &mut Kernel) {
    let mut used = HashSet::new();
    dce_block(&mut k.body, &mut used);
}

fn has_effects(b: &Block) -> bool {
    b.insts.iter().any(|i| match &i.op {
        Op::Store { .. } | Op::AtomicAdd { .. } => true,
        Op::For { body, .. } => has_effects(body),
        Op::If {
            then_body,
            else_body,
            ..
        } => has_effects(then_body) || has_effects(else_body),
        _ => false,
    })
}

fn dce_block(b: &mut Block, used: &mut HashSet<ValueId>) {
    let mut keep = Vec::with_capacity(b.insts.len());
    for mut inst in std::mem::take(&mut b.insts).into_iter().rev() {
        let effects = match &inst.op {
            Op::For { body, .. } => has_effects(body),
            Op::If {
                then_body,
                else_body,
                ..
            } => has_effects(then_body) || has_effects(else_body),
            op => op.has_side_effects(),
        };
        let live = effects || inst.results.iter().any(|r| used.contains(r));
        if !live {
            continue;
        }
        match &mut inst.op {
            Op::For { body, .. } => dce_block(body, used),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                dce_block(then_body, used);
                dce_block(else_body, used);
            }
            _ => {}
        }
        used.extend(inst.op.operands());
        keep.push(inst);
    }
    keep.reverse();
    b.insts = keep;
}
