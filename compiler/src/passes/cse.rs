//! Common subexpression elimination over pure ops, scoped by block: a value
//! computed in an enclosing block is reused inside nested blocks, never the
//! other way round. Loads are not merged (a store may come in between).

use super::util::{operands_mut, resolve, substitute};
use crate::tir::{Block, Kernel, Op, ValueId};
use std::collections::HashMap;

pub fn run(k: &mut Kernel) {
    let mut body = std::mem::take(&mut k.body);
    let mut scopes: Vec<HashMap<String, ValueId>> = vec![HashMap::new()];
    let mut subst = HashMap::new();
    cse_block(k, &mut body, &mut scopes, &mut subst);
    substitute(&mut body, &subst);
    k.body = body;
}

fn pure(op: &Op) -> bool {
    !matches!(
        op,
        Op::Load { .. }
            | Op::Store { .. }
            | Op::AtomicAdd { .. }
            | Op::For { .. }
            | Op::If { .. }
            | Op::Yield(_)
    )
}

fn cse_block(
    k: &Kernel,
    b: &mut Block,
    scopes: &mut Vec<HashMap<String, ValueId>>,
    subst: &mut HashMap<ValueId, ValueId>,
) {
    let insts = std::mem::take(&mut b.insts);
    for mut inst in insts {
        operands_mut(&mut inst.op, &mut |v| *v = resolve(subst, *v));
        match &mut inst.op {
            Op::For { body, .. } => {
                scopes.push(HashMap::new());
                cse_block(k, body, scopes, subst);
                scopes.pop();
            }
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                for blk in [then_body, else_body] {
                    scopes.push(HashMap::new());
                    cse_block(k, blk, scopes, subst);
                    scopes.pop();
                }
            }
            _ => {}
        }
        if let (true, [r]) = (pure(&inst.op), inst.results.as_slice()) {
            // The key holds the op with its operands and the result type.
            let key = format!("{:?}:{}", inst.op, k.ty(*r));
            if let Some(prev) = scopes.iter().rev().find_map(|s| s.get(&key)) {
                subst.insert(*r, *prev);
                continue;
            }
            if let Some(s) = scopes.last_mut() {
                s.insert(key, *r);
            }
        }
        b.insts.push(inst);
    }
}
