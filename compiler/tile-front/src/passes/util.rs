//! Shared rewriting helpers: operand substitution and block cloning.

use std::collections::HashMap;
use tile_ir::{Block, Inst, Kernel, Op, ValueId};

/// Visit every operand of `op` (not those inside nested blocks) mutably.
pub fn operands_mut(op: &mut Op, f: &mut dyn FnMut(&mut ValueId)) {
    match op {
        Op::Const(_) | Op::ProgramId(_) | Op::NumPrograms(_) | Op::Arange { .. } => {}
        Op::Splat(v) | Op::Broadcast(v) | Op::Reshape(v) | Op::Cast(v) | Op::Unary(_, v) => f(v),
        Op::ExpandDims { value, .. } | Op::Trans { value, .. } | Op::Reduce { value, .. } => {
            f(value)
        }
        Op::Binary(_, a, b) | Op::Cmp(_, a, b) => {
            f(a);
            f(b);
        }
        Op::Select { cond, a, b } => {
            f(cond);
            f(a);
            f(b);
        }
        Op::Fma { a, b, c } => {
            f(a);
            f(b);
            f(c);
        }
        Op::AddPtr { ptr, offset } => {
            f(ptr);
            f(offset);
        }
        Op::Load { ptr, mask, other } => {
            f(ptr);
            mask.iter_mut().for_each(&mut *f);
            other.iter_mut().for_each(f);
        }
        Op::Store { ptr, value, mask } | Op::AtomicAdd { ptr, value, mask } => {
            f(ptr);
            f(value);
            mask.iter_mut().for_each(f);
        }
        Op::Dot { a, b, acc } => {
            f(a);
            f(b);
            f(acc);
        }
        Op::For {
            lb, ub, step, init, ..
        } => {
            f(lb);
            f(ub);
            f(step);
            init.iter_mut().for_each(f);
        }
        Op::If { cond, .. } => f(cond),
        Op::Yield(vs) => vs.iter_mut().for_each(f),
    }
}

/// Resolve a value through a substitution map (following chains).
pub fn resolve(map: &HashMap<ValueId, ValueId>, mut v: ValueId) -> ValueId {
    let mut steps = 0;
    while let Some(&n) = map.get(&v) {
        if n == v || steps > 1_000_000 {
            break;
        }
        v = n;
        steps += 1;
    }
    v
}

/// Apply a substitution to every operand in a block, nested blocks included.
pub fn substitute(block: &mut Block, map: &HashMap<ValueId, ValueId>) {
    if map.is_empty() {
        return;
    }
    for inst in &mut block.insts {
        operands_mut(&mut inst.op, &mut |v| *v = resolve(map, *v));
        match &mut inst.op {
            Op::For { body, .. } => substitute(body, map),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                substitute(then_body, map);
                substitute(else_body, map);
            }
            _ => {}
        }
    }
}

/// Copy `insts` with fresh result values (and fresh nested block arguments),
/// reading operands through `map`, which is extended with old → new.
pub fn clone_insts(
    k: &mut Kernel,
    insts: &[Inst],
    map: &mut HashMap<ValueId, ValueId>,
) -> Vec<Inst> {
    let mut out = Vec::with_capacity(insts.len());
    for inst in insts {
        let mut op = inst.op.clone();
        operands_mut(&mut op, &mut |v| *v = resolve(map, *v));
        match &mut op {
            Op::For { body, .. } => *body = clone_block(k, body, map),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                *then_body = clone_block(k, then_body, map);
                *else_body = clone_block(k, else_body, map);
            }
            _ => {}
        }
        let results = inst
            .results
            .iter()
            .map(|r| {
                let n = k.new_value(k.ty(*r).clone());
                map.insert(*r, n);
                n
            })
            .collect();
        out.push(Inst {
            results,
            op,
            span: inst.span,
        });
    }
    out
}

fn clone_block(k: &mut Kernel, b: &Block, map: &mut HashMap<ValueId, ValueId>) -> Block {
    let args = b
        .args
        .iter()
        .map(|a| {
            let n = k.new_value(k.ty(*a).clone());
            map.insert(*a, n);
            n
        })
        .collect();
    let insts = clone_insts(k, &b.insts, map);
    Block { args, insts }
}
