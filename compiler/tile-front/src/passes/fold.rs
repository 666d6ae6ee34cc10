//! Constant folding: scalar ops on constants become constants; `if` on a
//! constant condition is replaced by the branch it takes.

use super::util::{resolve, substitute};
use std::collections::HashMap;
use tile_ir::consteval;
use tile_ir::{Block, Const, Inst, Kernel, Op, ValueId};

pub fn run(k: &mut Kernel) {
    let mut body = std::mem::take(&mut k.body);
    let mut consts = HashMap::new();
    let mut subst = HashMap::new();
    fold_block(k, &mut body, &mut consts, &mut subst);
    substitute(&mut body, &subst);
    k.body = body;
}

fn fold_block(
    k: &Kernel,
    b: &mut Block,
    consts: &mut HashMap<ValueId, Const>,
    subst: &mut HashMap<ValueId, ValueId>,
) {
    let insts = std::mem::take(&mut b.insts);
    for mut inst in insts {
        super::util::operands_mut(&mut inst.op, &mut |v| *v = resolve(subst, *v));
        match &mut inst.op {
            Op::For { body, .. } => fold_block(k, body, consts, subst),
            Op::If {
                cond,
                then_body,
                else_body,
            } => {
                if let Some(c) = consts.get(cond) {
                    // Inline the branch taken; its yield gives the results.
                    let mut taken = if consteval::as_i64(*c) != 0 {
                        std::mem::take(then_body)
                    } else {
                        std::mem::take(else_body)
                    };
                    fold_block(k, &mut taken, consts, subst);
                    if let Some(last) = taken.insts.pop() {
                        if let Op::Yield(ys) = &last.op {
                            for (r, y) in inst.results.iter().zip(ys) {
                                subst.insert(*r, resolve(subst, *y));
                            }
                        }
                    }
                    b.insts.extend(taken.insts);
                    continue;
                }
                fold_block(k, then_body, consts, subst);
                fold_block(k, else_body, consts, subst);
            }
            _ => {}
        }
        if let Some(c) = fold(k, &inst, consts) {
            inst.op = Op::Const(c);
        }
        if let (Op::Const(c), [r]) = (&inst.op, inst.results.as_slice()) {
            consts.insert(*r, *c);
        }
        b.insts.push(inst);
    }
}

/// The constant value of a scalar instruction whose operands are constants.
fn fold(k: &Kernel, inst: &Inst, consts: &HashMap<ValueId, Const>) -> Option<Const> {
    let [r] = inst.results.as_slice() else {
        return None;
    };
    let rt = k.ty(*r);
    if !rt.is_scalar() {
        return None;
    }
    let rs = rt.scalar_elem()?;
    let c = |v: &ValueId| consts.get(v).copied();
    let elem = |v: &ValueId| k.ty(*v).scalar_elem();
    match &inst.op {
        Op::Unary(op, v) => consteval::unary(*op, c(v)?, rs),
        Op::Binary(op, a, b) => consteval::binary(*op, c(a)?, c(b)?, rs),
        Op::Cmp(op, a, b) => Some(consteval::cmp(*op, c(a)?, c(b)?, elem(a)?)),
        Op::Cast(v) => Some(consteval::cast(c(v)?, elem(v)?, rs)),
        Op::Select { cond, a, b } => {
            let pick = if consteval::as_i64(c(cond)?) != 0 {
                a
            } else {
                b
            };
            c(pick)
        }
        _ => None,
    }
    .map(|x| consteval::normalize(x, rs))
}
