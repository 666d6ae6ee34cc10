//! Which pointer arguments of a kernel must not overlap: the one rule the
//! code generator's software pipeline adds to the language's semantics.
//!
//! A loop that multiplies tiles it loads may have those loads copied into
//! shared memory iterations ahead (`tile-codegen`'s `prefetch`; with a
//! configuration's `stages`, the loads of a loop without a `dot` too). When the
//! loop also writes memory (a store, an atomic add), a copy issued ahead runs
//! before writes of the iterations between: were the written buffer to
//! overlap the copied one, the kernel would read what the interpreter says
//! it had not yet written. So the code generator never copies ahead a load
//! from a parameter the loop writes, and a launch refuses buffers where a
//! parameter the loop writes overlaps one whose loads feed its `dot`s
//! ([`disjoint_params`]); the runtime checks that.

use crate::{walk_insts, Kernel, Op, ValueId};
use std::collections::{BTreeSet, HashMap};

/// What defines each value of a kernel: the walk from a pointer back to its
/// parameter follows it ([`Defs::pointer_param`], [`disjoint_params`]).
pub struct Defs<'k> {
    kernel: &'k Kernel,
    ops: HashMap<ValueId, &'k Op>,
}

impl<'k> Defs<'k> {
    pub fn new(kernel: &'k Kernel) -> Defs<'k> {
        let mut ops = HashMap::new();
        walk_insts(&kernel.body, &mut |i| {
            for r in &i.results {
                ops.insert(*r, &i.op);
            }
        });
        Defs { kernel, ops }
    }

    /// The pointer parameter (its index) that pointer tile or scalar `ptr`
    /// is an offset from, if it is one.
    pub fn pointer_param(&self, ptr: ValueId) -> Option<usize> {
        let mut v = ptr;
        loop {
            if let Some(p) = self.kernel.params.iter().position(|p| p.value == v) {
                return Some(p);
            }
            v = match self.ops.get(&v)? {
                Op::AddPtr { ptr, .. } => *ptr,
                Op::Splat(x) | Op::Broadcast(x) | Op::Reshape(x) => *x,
                Op::ExpandDims { value, .. } => *value,
                _ => return None,
            };
        }
    }
}

/// Pairs (written, read) of distinct pointer parameters whose buffers a
/// launch must keep apart: a loop writes through `written` and loads a
/// `dot` operand (or the tile a `trans` operand transposes) through `read`
/// in its body. With `streaming` (a configuration that gives `stages`, which
/// pipelines the loads of a loop without a `dot` too), every load of such a
/// loop counts as read.
pub fn disjoint_params(kernel: &Kernel, streaming: bool) -> BTreeSet<(usize, usize)> {
    let defs = Defs::new(kernel);
    let mut pairs = BTreeSet::new();
    walk_insts(&kernel.body, &mut |i| {
        let Op::For { body, .. } = &i.op else { return };
        // Loads before the loop run before its writes anyway.
        let mut inside = BTreeSet::new();
        walk_insts(body, &mut |j| inside.extend(j.results.iter().copied()));
        let (mut written, mut read) = (BTreeSet::new(), BTreeSet::new());
        let mut has_dot = false;
        walk_insts(body, &mut |j| has_dot |= matches!(j.op, Op::Dot { .. }));
        walk_insts(body, &mut |j| match &j.op {
            Op::Load { ptr, .. } if streaming && !has_dot => {
                read.extend(defs.pointer_param(*ptr));
            }
            Op::Store { ptr, .. } | Op::AtomicAdd { ptr, .. } => {
                written.extend(defs.pointer_param(*ptr));
            }
            Op::Dot { a, b, .. } => {
                for x in [*a, *b] {
                    let x = match defs.ops.get(&x) {
                        Some(Op::Trans { value, .. }) => *value,
                        _ => x,
                    };
                    if let (true, Some(Op::Load { ptr, .. })) =
                        (inside.contains(&x), defs.ops.get(&x))
                    {
                        read.extend(defs.pointer_param(*ptr));
                    }
                }
            }
            _ => {}
        });
        for &w in &written {
            pairs.extend(read.iter().filter(|&&r| r != w).map(|&r| (w, r)));
        }
    });
    pairs
}
