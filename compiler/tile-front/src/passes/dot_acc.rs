//! Accumulate into a `dot`: `x + dot(a, b)` (the dot's accumulator zero,
//! the dot used only by that add, both in one block) becomes
//! `dot(a, b, x)`, placed where the add was. The tensor cores then add x as
//! they accumulate instead of starting from zeros that a second pass adds to
//! x (attention's `acc * alpha[:, None] + dot(p, v)`: 2 instructions an
//! element fewer). Legal because a `dot`'s summation order is unspecified:
//! `a @ b + x` summed in another order (docs/LANGUAGE.md).

use std::collections::HashMap;
use tile_ir::{BinaryOp, Block, Kernel, Op, ValueId};

pub fn run(k: &mut Kernel) {
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    tile_ir::walk_insts(&k.body, &mut |i| {
        for v in i.op.operands() {
            *uses.entry(v).or_default() += 1;
        }
    });
    let zeros = zero_tiles(&k.body);
    fuse_block(&mut k.body, &uses, &zeros);
}

/// Values that are a tile of float zeros (`splat 0.0`), anywhere.
fn zero_tiles(b: &Block) -> Vec<ValueId> {
    let mut defs: HashMap<ValueId, &Op> = HashMap::new();
    tile_ir::walk_insts(b, &mut |i| {
        for r in &i.results {
            defs.insert(*r, &i.op);
        }
    });
    defs.iter()
        .filter(|(_, op)| tile_ir::is_zero_splat(op, |x| defs.get(&x).copied()))
        .map(|(v, _)| *v)
        .collect()
}

fn fuse_block(b: &mut Block, uses: &HashMap<ValueId, usize>, zeros: &[ValueId]) {
    // Dots of this block that may move: zero accumulator, one use.
    let mut dots: HashMap<ValueId, usize> = HashMap::new();
    for (at, inst) in b.insts.iter().enumerate() {
        if let (Op::Dot { acc, .. }, [r]) = (&inst.op, &inst.results[..]) {
            if zeros.contains(acc) && uses.get(r) == Some(&1) {
                dots.insert(*r, at);
            }
        }
    }
    let mut gone = Vec::new();
    for at in 0..b.insts.len() {
        let Op::Binary(BinaryOp::Add, x, y) = b.insts[at].op else {
            continue;
        };
        let (dot, other) = match (dots.get(&x), dots.get(&y)) {
            (Some(&d), _) if y != x => (d, y),
            (_, Some(&d)) => (d, x),
            _ => continue,
        };
        let Op::Dot { a, b: bb, .. } = b.insts[dot].op else {
            unreachable!()
        };
        // Same type by the checker: an add of two f32 [M, N] tiles.
        b.insts[at].op = Op::Dot {
            a,
            b: bb,
            acc: other,
        };
        gone.push(dot);
    }
    let mut at = 0;
    b.insts.retain(|_| {
        at += 1;
        !gone.contains(&(at - 1))
    });
    for inst in &mut b.insts {
        match &mut inst.op {
            Op::For { body, .. } => fuse_block(body, uses, zeros),
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                fuse_block(then_body, uses, zeros);
                fuse_block(else_body, uses, zeros);
            }
            _ => {}
        }
    }
}
