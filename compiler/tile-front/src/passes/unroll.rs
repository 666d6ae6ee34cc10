//! Unroll `static` loops (`For { unroll: true }`): the body is copied once per
//! iteration with the induction variable as a constant and the carried values
//! threaded from one copy to the next. Inner loops are unrolled first.

use super::util::{clone_insts, substitute};
use std::collections::HashMap;
use tile_ir::consteval;
use tile_ir::{Block, Const, Inst, Kernel, Op, Type, ValueId};

pub fn run(k: &mut Kernel) {
    let mut consts = HashMap::new();
    tile_ir::walk_insts(&k.body, &mut |i| {
        if let (Op::Const(c), [r]) = (&i.op, i.results.as_slice()) {
            consts.insert(*r, *c);
        }
    });
    let mut body = std::mem::take(&mut k.body);
    let mut subst = HashMap::new();
    unroll_block(k, &mut body, &consts, &mut subst);
    substitute(&mut body, &subst);
    k.body = body;
}

fn unroll_block(
    k: &mut Kernel,
    b: &mut Block,
    consts: &HashMap<ValueId, Const>,
    subst: &mut HashMap<ValueId, ValueId>,
) {
    let insts = std::mem::take(&mut b.insts);
    for mut inst in insts {
        match &mut inst.op {
            Op::For { body, .. } => unroll_block(k, body, consts, subst),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                unroll_block(k, then_body, consts, subst);
                unroll_block(k, else_body, consts, subst);
            }
            _ => {}
        }
        match expand(k, &inst, consts, subst) {
            Some(copies) => b.insts.extend(copies),
            None => b.insts.push(inst),
        }
    }
}

/// The unrolled instructions of a static `For`, or `None` to keep it.
fn expand(
    k: &mut Kernel,
    inst: &Inst,
    consts: &HashMap<ValueId, Const>,
    subst: &mut HashMap<ValueId, ValueId>,
) -> Option<Vec<Inst>> {
    let Op::For {
        lb,
        ub,
        step,
        init,
        body,
        unroll: true,
    } = &inst.op
    else {
        return None;
    };
    let get = |v: &ValueId| {
        consts
            .get(&super::util::resolve(subst, *v))
            .map(|c| consteval::as_i64(*c))
    };
    let (l, u, s) = (get(lb)?, get(ub)?, get(step)?);
    if s <= 0 {
        return None;
    }
    let (&iv0, carried_args) = body.args.split_first()?;
    let ity: Type = k.ty(iv0).clone();
    let mut out = Vec::new();
    let mut carried: Vec<ValueId> = init.clone();
    let mut i = l;
    while i < u {
        let iv = k.new_value(ity.clone());
        let c = consteval::normalize(
            Const::Int(i),
            ity.scalar_elem().unwrap_or(tile_ir::Scalar::I32),
        );
        out.push(Inst {
            results: vec![iv],
            op: Op::Const(c),
            span: inst.span,
        });
        let mut map: HashMap<ValueId, ValueId> = subst.clone();
        map.insert(iv0, iv);
        for (a, c) in carried_args.iter().zip(&carried) {
            map.insert(*a, *c);
        }
        let (last, rest) = body.insts.split_last()?;
        out.extend(clone_insts(k, rest, &mut map));
        let Op::Yield(ys) = &last.op else { return None };
        carried = ys.iter().map(|y| super::util::resolve(&map, *y)).collect();
        i = i.checked_add(s)?;
    }
    for (r, c) in inst.results.iter().zip(carried) {
        subst.insert(*r, c);
    }
    Some(out)
}
