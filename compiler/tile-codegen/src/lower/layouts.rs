//! Layout assignment: which values live in an mma accumulator layout rather
//! than the canonical blocked layout of their shape.

use crate::layout::{Blocked, Layout, Mma, Operand, Partial, Reduced, Slice};
use crate::prefetch::Plan;
use std::collections::HashMap;
use std::collections::HashSet;
use tile_ir::{self as tir, BinaryOp, Kernel, Op, ReduceOp, Scalar, ValueId};

/// Values whose layout is not the canonical blocked layout of their shape:
/// `dot` results live in the mma accumulator layout, and so do elementwise ops
/// over them and loop-carried values they flow into (a fixpoint over loops);
/// a reduction a loop accumulates is carried as per-thread partials; values
/// read only in an mma layout are pulled into it, and vectors broadcast over
/// a blocked tile into that tile's threads (`pull_layouts`).
pub(super) fn assign_layouts(kernel: &Kernel, warps: u32, plan: &Plan) -> HashMap<ValueId, Layout> {
    let wgmma = &plan.wgmma;
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        for v in i.op.operands() {
            *uses.entry(v).or_insert(0) += 1;
        }
    });
    let mut out = HashMap::new();
    // Operands a pipelined loop copies into shared memory (read there).
    let staged: HashSet<ValueId> = plan
        .loops
        .values()
        .flat_map(|l| l.bufs.iter().chain(&l.resident).map(|b| b.load))
        .collect();
    let (tiles, carried) = loaded_tiles(kernel, &staged);
    let cx = Cx {
        kernel,
        warps,
        wgmma,
        uses: &uses,
        tiles,
        carried,
    };
    assign_block(&cx, &kernel.body.insts, &mut out);
    pull_layouts(kernel, warps, &staged, &mut out);
    out
}

/// Values read only in one mma layout are computed in it too: a load, cast
/// or elementwise op that only feeds an op over a `dot` result (an
/// epilogue's `old + acc`, a store of it) then reads and writes each
/// thread's own fragment elements, and one that only feeds an `mma.sync`
/// operand computes straight into its fragments ([`Operand`]), instead of
/// going through scratch between two barriers. Index, mask and pointer
/// expressions follow for free (they are recomputed in any layout). A
/// fixpoint: pulling one value can make its operands read in that layout
/// only. A second round does the same for the sources of broadcasts into
/// blocked tiles (`Reduced`, `Blocked::collapse`).
fn pull_layouts(
    kernel: &Kernel,
    warps: u32,
    staged: &HashSet<ValueId>,
    out: &mut HashMap<ValueId, Layout>,
) {
    let mut defs: HashMap<ValueId, &tir::Inst> = HashMap::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        if let [r] = i.results[..] {
            defs.insert(r, i);
        }
    });
    // Memory accesses move into fragment layouts only inside loops, where a
    // conversion costs two barriers every iteration; after a loop (a
    // matmul's epilogue) one conversion buys 16-byte accesses instead of 4.
    let mut in_loop = HashSet::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        if let Op::For { body, .. } = &i.op {
            tir::walk_insts(body, &mut |j| in_loop.extend(j.results.iter().copied()));
        }
    });
    // Two rounds: the mma layouts first, to their fixpoint, then the
    // sources of broadcasts into the blocked tiles that remain (a broadcast
    // whose result the first round pulls into an accumulator reads a
    // `Slice` instead). The second moves data only: an index or mask
    // expression is recomputed in any layout as it is.
    let mut data = HashSet::new();
    tir::walk_insts(&kernel.body, &mut |i| {
        let computed = match &i.op {
            Op::Arange { .. } | Op::Splat(_) | Op::ProgramId(_) | Op::Const(_) => false,
            op if elementwise(op) || matches!(op, Op::Broadcast(_) | Op::ExpandDims { .. }) => {
                op.operands().iter().any(|v| data.contains(v))
            }
            _ => true,
        };
        if computed {
            data.extend(i.results.iter().copied());
        }
    });
    for blocked in [false, true] {
        pull_to_fixpoint(kernel, warps, staged, &in_loop, &defs, blocked, &data, out);
    }
}

fn pull_to_fixpoint(
    kernel: &Kernel,
    warps: u32,
    staged: &HashSet<ValueId>,
    in_loop: &HashSet<ValueId>,
    defs: &HashMap<ValueId, &tir::Inst>,
    blocked: bool,
    data: &HashSet<ValueId>,
    out: &mut HashMap<ValueId, Layout>,
) {
    loop {
        // The layouts each value is read in (None: canonical, or any other
        // reader that needs the value's own layout).
        let mut reads: HashMap<ValueId, Vec<Option<Layout>>> = HashMap::new();
        tir::walk_insts(&kernel.body, &mut |i| {
            for (v, l) in read_layouts(kernel, warps, i, staged, in_loop, blocked, out) {
                reads.entry(v).or_default().push(l);
            }
        });
        let mut pulled = Vec::new();
        for (v, ls) in &reads {
            if out.contains_key(v) {
                continue;
            }
            let Some(Some(l)) = ls.first() else { continue };
            // The second round moves data only; a blocked map the value has
            // anyway gains nothing, and a reduction over a `Reduced` source
            // would not see its own.
            if blocked
                && (!data.contains(v)
                    || l.same_map(&Layout::Blocked(Blocked::canonical(
                        &kernel.ty(*v).shape,
                        warps,
                    ))))
            {
                continue;
            }
            // A `b` operand's fragment pairs run along k, down a column: a
            // load into them would read 2 bytes at a time, so it stays
            // blocked (vectorised) and converts once.
            let b_fragments = matches!(l, Layout::Operand(Operand { b: true, .. }));
            // A statistic's load (a row or column of an accumulator, or a
            // vector broadcast over a blocked tile) is small and saves a
            // conversion wherever it is; a tile's only in loops (above).
            let statistic = matches!(
                l,
                Layout::Slice(_) | Layout::Reduced(_) | Layout::Blocked(_)
            );
            let pullable = defs.get(v).is_some_and(|i| {
                matches!(i.op, Op::Load { .. } if !b_fragments && (in_loop.contains(v) || statistic))
                    || elementwise(&i.op)
                    || matches!(i.op, Op::Broadcast(_) | Op::ExpandDims { .. })
            });
            if pullable && ls.iter().all(|x| x.as_ref() == Some(l)) {
                pulled.push((*v, l.clone()));
            }
        }
        if pulled.is_empty() {
            return;
        }
        out.extend(pulled);
    }
}

/// The mma layout (if any) in which `i` reads each of its operands: an
/// elementwise op, a load or a pointer addition reads them in its result's
/// layout, a store (or atomic add) in its pointer's, and its pointer in its
/// value's (so a store of an accumulator pulls its address expression); an `mma.sync`
/// dot reads `a` and `b` as fragments unless a pipelined loop stages them.
fn read_layouts(
    kernel: &Kernel,
    warps: u32,
    i: &tir::Inst,
    staged: &HashSet<ValueId>,
    in_loop: &HashSet<ValueId>,
    blocked: bool,
    out: &HashMap<ValueId, Layout>,
) -> Vec<(ValueId, Option<Layout>)> {
    let mma = |v: &ValueId| match out.get(v) {
        Some(l @ (Layout::Mma(_) | Layout::Operand(_) | Layout::Slice(_))) => Some(l.clone()),
        _ => None,
    };
    // An elementwise op, load or pointer addition reads its operands in its
    // result's layout, whichever it is.
    let of_result = || match i.results.first().and_then(|r| out.get(r)) {
        Some(Layout::Partial(_)) | None => None,
        Some(Layout::Reduced(_) | Layout::Blocked(_)) if !blocked => None,
        Some(l) => Some(l.clone()),
    };
    match &i.op {
        op if elementwise(op) || matches!(op, Op::Load { .. }) => {
            let l = of_result();
            i.op.operands()
                .into_iter()
                .map(|v| (v, l.clone()))
                .collect()
        }
        // A broadcast into an accumulator reads a row or column statistic
        // of it, `expand_dims` of a statistic the statistic itself. A
        // broadcast into a blocked tile reads its source where the tile's
        // threads already are (the tile with the broadcast dimensions
        // collapsed, their lanes and warps holding replicas), and
        // `expand_dims` into that reads the vector in the matching
        // `Reduced` layout: a per-row or per-column vector (a token's
        // scale, a row of coefficients) is loaded or computed by the threads
        // that use it instead of moving through shared memory.
        Op::Broadcast(a) => {
            let shape = &kernel.ty(*a).shape;
            let l = match of_result() {
                Some(Layout::Mma(m)) if shape.len() == 2 => {
                    let rows = Slice::of(&m, 1).filter(|_| shape[1] == 1 && shape[0] == m.shape[0]);
                    let cols =
                        (shape[0] == 1 && shape[1] == m.shape[1]).then(|| Slice::columns(&m));
                    rows.or(cols)
                        .map(|s| Layout::Slice(Slice { keep: true, ..s }))
                }
                Some(Layout::Blocked(b)) if b.rank() == shape.len() => {
                    Some(Layout::Blocked(b.collapse(shape)))
                }
                None if blocked
                    && kernel.ty(i.results[0]).shape.len() == shape.len()
                    && !out.contains_key(&i.results[0]) =>
                {
                    let dst = Blocked::canonical(&kernel.ty(i.results[0]).shape, warps);
                    Some(Layout::Blocked(dst.collapse(shape)))
                }
                _ => None,
            };
            vec![(*a, l)]
        }
        Op::ExpandDims { value, axis } => {
            let l = match of_result() {
                Some(Layout::Slice(s)) if s.keep && s.axis == *axis => {
                    Some(Layout::Slice(Slice { keep: false, ..s }))
                }
                Some(Layout::Blocked(k)) if k.rank() >= 2 && k.shape[*axis as usize] == 1 => {
                    Some(Layout::Reduced(Reduced {
                        keep: k,
                        axis: *axis as usize,
                    }))
                }
                _ => None,
            };
            vec![(*value, l)]
        }
        // An atomic add reads its operands as a store does (dQ's partial
        // sums in a fused attention backward are added from the fragment).
        Op::Store { ptr, value, mask } | Op::AtomicAdd { ptr, value, mask } => {
            let at_ptr = mma(ptr).filter(|l| matches!(l, Layout::Mma(_)));
            let at_value =
                mma(value).filter(|l| matches!(l, Layout::Mma(_)) && in_loop.contains(ptr));
            let mut r = vec![(*ptr, at_value), (*value, at_ptr.clone())];
            r.extend(mask.map(|m| (m, at_ptr)));
            r
        }
        Op::Dot { a, b, acc } => {
            let Some(Layout::Mma(m)) = i.results.first().and_then(|r| out.get(r)) else {
                return i.op.operands().into_iter().map(|v| (v, None)).collect();
            };
            let k = kernel.ty(*a).shape[1];
            let operand = |v: &ValueId, b: bool| {
                (!m.warpgroups && !staged.contains(v)).then(|| {
                    Layout::Operand(Operand {
                        parent: m.clone(),
                        k,
                        b,
                    })
                })
            };
            vec![
                (*a, operand(a, false)),
                (*b, operand(b, true)),
                (*acc, Some(Layout::Mma(m.clone()))),
            ]
        }
        op => op.operands().into_iter().map(|v| (v, None)).collect(),
    }
}

/// An op computed element by element from operands of its own shape (a
/// pointer addition included): it reads them in its result's layout.
fn elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(..)
            | Op::Cast(_)
            | Op::Binary(..)
            | Op::Cmp(..)
            | Op::Select { .. }
            | Op::Fma { .. }
            | Op::AddPtr { .. }
    )
}

struct Cx<'a> {
    kernel: &'a Kernel,
    warps: u32,
    wgmma: &'a HashMap<ValueId, (u32, u32)>,
    /// How many times each value is read, nested blocks and yields included.
    uses: &'a HashMap<ValueId, usize>,
    /// Values computed element by element from a loaded tile
    /// (`loaded_tiles`).
    tiles: HashSet<ValueId>,
    /// Values a loop carries from one iteration to the next (its block
    /// arguments).
    carried: HashSet<ValueId>,
}

/// Values that are a tile loaded from memory (rank >= 2, no dimension of 1:
/// not a row or column vector) or computed element by element from one: an
/// epilogue's `old` in `old + acc`; and the values loops carry. Inside a
/// loop only tiles a pipelined loop copies into shared memory (`pipelined`)
/// count: their elementwise readers convert them from there either way. A
/// tile in the blocked layout stays there when it meets a `dot` result that
/// no loop carries (`assign_block`): the result is converted once, instead
/// of the tile being converted into the accumulator's layout and the sum
/// back for its store, and the other tiles it meets keep their 16-byte
/// accesses, where the accumulator's are 4 bytes wide (after a loop,
/// mhc_proj_bwd_dx had three conversions of a 64 × 64 tile, now one; in
/// mhc_proj_bwd's row loop g_x's loads and stores are 16 bytes wide).
fn loaded_tiles(
    kernel: &Kernel,
    pipelined: &HashSet<ValueId>,
) -> (HashSet<ValueId>, HashSet<ValueId>) {
    struct Walk<'a> {
        kernel: &'a Kernel,
        pipelined: &'a HashSet<ValueId>,
        tiles: HashSet<ValueId>,
        carried: HashSet<ValueId>,
    }
    fn walk(w: &mut Walk, insts: &[tir::Inst], in_loop: bool) {
        for i in insts {
            match &i.op {
                Op::For { body, .. } => {
                    w.carried.extend(body.args[1..].iter().copied());
                    walk(w, &body.insts, true);
                }
                Op::If {
                    then_body,
                    else_body,
                    ..
                } => {
                    walk(w, &then_body.insts, in_loop);
                    walk(w, &else_body.insts, in_loop);
                }
                _ => {}
            }
            let Some(&r) = i.results.first() else {
                continue;
            };
            let tile = match &i.op {
                Op::Load { .. } => {
                    let shape = &w.kernel.ty(r).shape;
                    shape.len() >= 2
                        && shape.iter().all(|&d| d > 1)
                        && (!in_loop || w.pipelined.contains(&r))
                }
                op if elementwise(op) => op.operands().iter().any(|v| w.tiles.contains(v)),
                _ => false,
            };
            if tile {
                w.tiles.insert(r);
            }
        }
    }
    let mut w = Walk {
        kernel,
        pipelined,
        tiles: HashSet::new(),
        carried: HashSet::new(),
    };
    walk(&mut w, &kernel.body.insts, false);
    (w.tiles, w.carried)
}

fn assign_block(cx: &Cx, insts: &[tir::Inst], out: &mut HashMap<ValueId, Layout>) {
    let (kernel, warps, wgmma) = (cx.kernel, cx.warps, cx.wgmma);
    for inst in insts {
        // Loops and ifs without results still hold dots in their bodies.
        let r = inst.results.first().copied().unwrap_or(ValueId(u32::MAX));
        match &inst.op {
            Op::Dot { .. } => {
                let shape = &kernel.ty(r).shape;
                let l = match wgmma.get(&r) {
                    Some(&(gm, gn)) => Mma::warpgroups(shape, gm, gn),
                    None => Mma::new(shape, warps),
                };
                out.insert(r, Layout::Mma(l));
            }
            // A row or column statistic of an accumulator stays with it
            // (see `Slice`): reduced, expanded back, broadcast over it.
            Op::Reduce { value, axis, .. } => {
                let src = Blocked::canonical(&kernel.ty(*value).shape, warps);
                match out.get(value) {
                    Some(Layout::Mma(m)) => {
                        if let Some(s) = Slice::of(m, *axis) {
                            out.insert(r, Layout::Slice(s));
                        }
                    }
                    // A canonical tile (or one in the same map) reduced
                    // across lanes only: the result stays where the
                    // shuffles leave it.
                    l if l.is_none_or(|l| l.same_map(&Layout::Blocked(src.clone()))) => {
                        if let Some(red) = Reduced::of(&src, *axis as usize) {
                            out.insert(r, Layout::Reduced(red));
                        }
                    }
                    _ => {}
                }
            }
            Op::ExpandDims { value, axis } if matches!(out.get(value), Some(Layout::Reduced(red)) if red.axis == *axis as usize) => {
                if let Some(Layout::Reduced(red)) = out.get(value) {
                    out.insert(r, Layout::Blocked(red.keep.clone()));
                }
            }
            Op::ExpandDims { value, axis } => {
                if let Some(Layout::Slice(s)) = out.get(value) {
                    if !s.keep && *axis == s.axis {
                        let s = Slice {
                            keep: true,
                            ..s.clone()
                        };
                        out.insert(r, Layout::Slice(s));
                    }
                }
            }
            Op::Broadcast(a) => {
                if let Some(Layout::Slice(s)) = out.get(a) {
                    let shape = &kernel.ty(r).shape;
                    let fits = match s.axis {
                        1 => shape[0] == s.parent.shape[0] && shape[1].is_multiple_of(8),
                        _ => *shape == s.parent.shape,
                    };
                    if s.keep && fits {
                        out.insert(r, Layout::Mma(s.broadcast_to(shape[1])));
                    }
                }
            }
            Op::Unary(_, a) | Op::Cast(a) => {
                if let Some(l) = out.get(a).cloned() {
                    out.insert(r, l);
                }
            }
            Op::Binary(_, a, b) | Op::Cmp(_, a, b) => {
                // A loaded tile meeting an accumulator that no loop carries
                // keeps the blocked layout (`loaded_tiles`).
                let blocked_tile = |x: &ValueId, y: &ValueId| {
                    cx.tiles.contains(x)
                        && !out.contains_key(x)
                        && !cx.carried.contains(y)
                        && matches!(out.get(y), Some(Layout::Mma(_)))
                };
                if blocked_tile(a, b) || blocked_tile(b, a) {
                    continue;
                }
                if let Some(l) = out.get(a).or_else(|| out.get(b)).cloned() {
                    out.insert(r, l);
                }
            }
            Op::Fma { a, b, c } => {
                // The addend first: typically an accumulator.
                if let Some(l) = out
                    .get(c)
                    .or_else(|| out.get(a))
                    .or_else(|| out.get(b))
                    .cloned()
                {
                    out.insert(r, l);
                }
            }
            Op::Select { cond, a, b } => {
                if let Some(l) = out
                    .get(a)
                    .or_else(|| out.get(b))
                    .or_else(|| out.get(cond))
                    .cloned()
                {
                    out.insert(r, l);
                }
            }
            Op::For { init, body, .. } => {
                for (a, i) in body.args[1..].iter().zip(init) {
                    if let Some(l) = out.get(i).cloned() {
                        out.insert(*a, l);
                    }
                }
                for _ in 0..3 {
                    assign_block(cx, &body.insts, out);
                    let Some(Op::Yield(ys)) = body.insts.last().map(|i| &i.op) else {
                        break;
                    };
                    let mut changed = false;
                    for (a, y) in body.args[1..].iter().zip(ys) {
                        if let Some(l) = out.get(y).cloned() {
                            if out.get(a) != Some(&l) {
                                out.insert(*a, l);
                                changed = true;
                            }
                        }
                    }
                    if !changed {
                        break;
                    }
                }
                for (a, r, y, p) in deferred_reductions(cx, body, out) {
                    for v in [a, r, y] {
                        out.insert(v, Layout::Partial(p.clone()));
                    }
                }
                // A loop's result is in its carried layout, except that of
                // partials: the loop combines them into the canonical layout.
                for (res, a) in inst.results.iter().zip(&body.args[1..]) {
                    match out.get(a).cloned() {
                        Some(Layout::Partial(_)) | None => {}
                        Some(l) => {
                            out.insert(*res, l);
                        }
                    }
                }
            }
            Op::If {
                then_body,
                else_body,
                ..
            } => {
                assign_block(cx, &then_body.insts, out);
                assign_block(cx, &else_body.insts, out);
                if let Some(Op::Yield(ys)) = then_body.insts.last().map(|i| &i.op) {
                    for (res, y) in inst.results.iter().zip(ys) {
                        if let Some(l) = out.get(y).cloned() {
                            out.insert(*res, l);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reductions a loop accumulates whose combination across threads can wait
/// until after the loop: `acc = acc ⊕ reduce(x, axis)` with ⊕ the
/// reduction's own combination (`+` for `sum`, `maximum` for `max`, `minimum`
/// for `min`), where the reduction, the carried value and the new one have no
/// other use, and `x` is f32 or i32 (a 16-bit `acc` would round every
/// iteration) in its canonical blocked layout. Returns `(carried value,
/// reduction, new value, their layout)`. Sums then add in another order, as
/// any reduction may (docs/LANGUAGE.md).
fn deferred_reductions(
    cx: &Cx,
    body: &tir::Block,
    out: &HashMap<ValueId, Layout>,
) -> Vec<(ValueId, ValueId, ValueId, Partial)> {
    let Some(Op::Yield(ys)) = body.insts.last().map(|i| &i.op) else {
        return Vec::new();
    };
    let defs: HashMap<ValueId, &tir::Inst> = body
        .insts
        .iter()
        .filter_map(|i| i.results.first().map(|r| (*r, i)))
        .collect();
    let once = |v: &ValueId| cx.uses.get(v) == Some(&1);
    let mut found = Vec::new();
    for (a, y) in body.args[1..].iter().zip(ys) {
        let Some(Op::Binary(bop, p, q)) = defs.get(y).map(|i| &i.op) else {
            continue;
        };
        let r = match (p == a, q == a) {
            (true, false) => *q,
            (false, true) => *p,
            _ => continue,
        };
        let Some(Op::Reduce { op, value, axis }) = defs.get(&r).map(|i| &i.op) else {
            continue;
        };
        let combines = matches!(
            (op, bop),
            (ReduceOp::Sum, BinaryOp::Add)
                | (ReduceOp::Max, BinaryOp::Max)
                | (ReduceOp::Min, BinaryOp::Min)
        );
        let xt = cx.kernel.ty(*value);
        let wide = matches!(xt.scalar_elem(), Some(Scalar::F32 | Scalar::I32));
        if combines && wide && once(a) && once(&r) && once(y) && !out.contains_key(value) {
            let p = Partial {
                src: Blocked::canonical(&xt.shape, cx.warps),
                axis: *axis as usize,
                op: *op,
            };
            found.push((*a, r, *y, p));
        }
    }
    found
}
