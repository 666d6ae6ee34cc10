//! Common subexpression elimination over pure ops, scoped by block: a value
//! computed in an enclosing block is reused inside nested blocks, never the
//! other way round. Loads are not merged (a store may come in between).

use super::util::{operands_mut, resolve, substitute};
use std::collections::HashMap;
use tile_ir::{Block, Const, Kernel, Op, Type, ValueId};

pub fn run(k: &mut Kernel) {
    let mut body = std::mem::take(&mut k.body);
    let mut scopes: Vec<HashMap<Key, ValueId>> = vec![HashMap::new()];
    let mut subst = HashMap::new();
    cse_block(k, &mut body, &mut scopes, &mut subst);
    substitute(&mut body, &subst);
    k.body = body;
}

/// What makes two pure instructions equal: the op's kind and attributes, its
/// operands and its result type.
#[derive(Hash, PartialEq, Eq)]
struct Key {
    kind: String,
    attrs: Vec<i64>,
    operands: Vec<ValueId>,
    ty: Type,
}

fn key(op: &Op, ty: &Type) -> Key {
    let (kind, attrs): (String, Vec<i64>) = match op {
        Op::Const(c) => (
            "const".into(),
            match c {
                Const::Int(v) => vec![0, *v],
                Const::Float(v) => vec![1, v.to_bits() as i64],
                Const::Bool(b) => vec![2, *b as i64],
            },
        ),
        Op::ProgramId(a) => ("pid".into(), vec![*a as i64]),
        Op::NumPrograms(a) => ("nprog".into(), vec![*a as i64]),
        Op::Arange { start, end } => ("arange".into(), vec![*start, *end]),
        Op::ExpandDims { axis, .. } => ("expand".into(), vec![*axis as i64]),
        Op::Trans { perm, .. } => ("trans".into(), perm.iter().map(|&p| p as i64).collect()),
        Op::Reduce { op, axis, .. } => (format!("reduce{op:?}"), vec![*axis as i64]),
        Op::Unary(u, _) => (format!("{u:?}"), vec![]),
        Op::Binary(b, _, _) => (format!("{b:?}"), vec![]),
        Op::Cmp(c, _, _) => (format!("cmp{c:?}"), vec![]),
        Op::Splat(_) => ("splat".into(), vec![]),
        Op::Broadcast(_) => ("broadcast".into(), vec![]),
        Op::Reshape(_) => ("reshape".into(), vec![]),
        Op::Cast(_) => ("cast".into(), vec![]),
        Op::Select { .. } => ("select".into(), vec![]),
        Op::AddPtr { .. } => ("addptr".into(), vec![]),
        Op::Dot { .. } => ("dot".into(), vec![]),
        _ => ("other".into(), vec![]),
    };
    Key {
        kind,
        attrs,
        operands: op.operands(),
        ty: ty.clone(),
    }
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
    scopes: &mut Vec<HashMap<Key, ValueId>>,
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
            let key = key(&inst.op, k.ty(*r));
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
