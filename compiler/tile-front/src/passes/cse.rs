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
        Op::Fma { .. } => ("fma".into(), vec![]),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tile_ir::{BinaryOp, CmpOp, Elem, ReduceOp, Scalar, UnaryOp, ValueId};

    /// Ops of different kinds or attributes never share a key, even on the
    /// same operands and type: each list ends with an op that has no key of
    /// its own ("other": a load, a store) on the same operands, so an op that
    /// lost its own key would merge with it. (cargo mutants: deleting any
    /// arm of `key` passed every test of the crate.)
    #[test]
    fn different_ops_on_the_same_operands_never_share_a_key() {
        let (a, b, c) = (ValueId(1), ValueId(2), ValueId(3));
        let ty = Type {
            elem: Elem::Scalar(Scalar::F32),
            shape: vec![4, 4],
        };
        let load = |ptr| Op::Load {
            ptr,
            mask: None,
            other: None,
        };
        let groups: Vec<Vec<Op>> = vec![
            vec![
                Op::ProgramId(0),
                Op::ProgramId(1),
                Op::NumPrograms(0),
                Op::Arange { start: 0, end: 4 },
                Op::Arange { start: 0, end: 8 },
                Op::Const(Const::Int(0)),
                Op::Const(Const::Float(0.0)),
                Op::Const(Const::Bool(false)),
                Op::Yield(vec![]),
            ],
            vec![
                Op::Unary(UnaryOp::Exp, a),
                Op::Unary(UnaryOp::Log, a),
                Op::Splat(a),
                Op::Broadcast(a),
                Op::Reshape(a),
                Op::Cast(a),
                Op::ExpandDims { value: a, axis: 0 },
                Op::ExpandDims { value: a, axis: 1 },
                Op::Trans {
                    value: a,
                    perm: vec![1, 0],
                },
                Op::Trans {
                    value: a,
                    perm: vec![0, 1],
                },
                Op::Reduce {
                    op: ReduceOp::Sum,
                    value: a,
                    axis: 0,
                },
                Op::Reduce {
                    op: ReduceOp::Max,
                    value: a,
                    axis: 0,
                },
                Op::Reduce {
                    op: ReduceOp::Sum,
                    value: a,
                    axis: 1,
                },
                load(a),
            ],
            vec![
                Op::Binary(BinaryOp::Add, a, b),
                Op::Binary(BinaryOp::Mul, a, b),
                Op::Cmp(CmpOp::Lt, a, b),
                Op::Cmp(CmpOp::Le, a, b),
                Op::AddPtr { ptr: a, offset: b },
                Op::Store {
                    ptr: a,
                    value: b,
                    mask: None,
                },
            ],
            vec![
                Op::Select {
                    cond: a,
                    a: b,
                    b: c,
                },
                Op::Dot { a, b, acc: c },
                Op::Fma { a, b, c },
                Op::AtomicAdd {
                    ptr: a,
                    value: b,
                    mask: Some(c),
                },
            ],
        ];
        for ops in &groups {
            for (i, x) in ops.iter().enumerate() {
                for y in &ops[i + 1..] {
                    assert!(
                        key(x, &ty) != key(y, &ty),
                        "{x:?} and {y:?} share a CSE key"
                    );
                }
            }
        }
    }
}
