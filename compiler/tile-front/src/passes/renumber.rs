//! Renumber values densely in definition order (parameters first) and drop the
//! types of values that no longer exist, so printed TIR reads `%0, %1, …`
//! without gaps and the value table holds only live values.

use super::util::operands_mut;
use std::collections::HashMap;
use tile_ir::{Block, Kernel, Op, Type, ValueId};

pub fn run(k: &mut Kernel) {
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut types = Vec::new();
    {
        let mut def = |v: &mut ValueId, old: &[Type]| {
            let n = ValueId(types.len() as u32);
            types.push(old[v.0 as usize].clone());
            map.insert(*v, n);
            *v = n;
        };
        for p in &mut k.params {
            def(&mut p.value, &k.values);
        }
        renumber_block(&mut k.body, &k.values, &mut def);
    }
    // Second walk: uses (every definition now has its new number).
    rewrite_uses(&mut k.body, &map);
    k.values = types;
}

fn renumber_block(
    b: &mut Block,
    values: &[tile_ir::Type],
    def: &mut dyn FnMut(&mut ValueId, &[tile_ir::Type]),
) {
    for a in &mut b.args {
        def(a, values);
    }
    for inst in &mut b.insts {
        match &mut inst.op {
            Op::For { body, .. } => renumber_block(body, values, def),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                renumber_block(then_body, values, def);
                renumber_block(else_body, values, def);
            }
            _ => {}
        }
        for r in &mut inst.results {
            def(r, values);
        }
    }
}

fn rewrite_uses(b: &mut Block, map: &HashMap<ValueId, ValueId>) {
    for inst in &mut b.insts {
        operands_mut(&mut inst.op, &mut |v| {
            *v = map.get(v).copied().unwrap_or(*v)
        });
        match &mut inst.op {
            Op::For { body, .. } => rewrite_uses(body, map),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                rewrite_uses(then_body, map);
                rewrite_uses(else_body, map);
            }
            _ => {}
        }
    }
}
