//! Which loads feeding a `dot` are software-pipelined (the plan; `lower`
//! emits it).
//!
//! In a `for` loop, a `dot` both of whose operands are loads, with
//! addresses, masks and `other` values computed from the induction
//! variable and loop-invariant values, has those loads replaced by `cp.async`
//! copies into a ring of `stages` shared-memory buffers issued `stages - 1`
//! iterations ahead:
//! iteration i waits for its own copies, issues those of iteration
//! i + stages - 1 into the buffer that iteration i - 1 finished reading, then
//! multiplies from shared memory. A load from a parameter the body writes is
//! not copied ahead, and the launch keeps the written buffers apart from the
//! copied ones (`tile_ir::aliasing`); the body must not hold a nested loop
//! (both would use the same memory). A load the body also uses otherwise is read back
//! from its stage into registers there.
//!
//! The other operand of such a dot need not be a load of the loop: a
//! loop-invariant tile (attention's Q) is staged once, before the loop, into
//! a resident buffer after the stages ([`Loop::resident`]); on `wgmma`, a
//! `trans(x)` B operand of a pipelined load or loop-invariant tile x is read
//! K-major from x's buffer,
//! and an A operand computed in the loop (attention's P) may stay in
//! registers. A dot with an operand that would still be staged from
//! registers every iteration is left alone: it waits at its own barriers
//! then, so copying the other ahead gains little and takes shared memory
//! from occupancy.
//!
//! On sm_90, a pipelined `dot` whose tile shapes allow it runs on `wgmma`
//! (warpgroup MMA reading both operands straight from shared memory): its
//! buffers are then laid out in the swizzled atoms `wgmma` descriptors
//! describe ([`SmemTile::Swizzled`]) instead of padded rows, and its result
//! takes the warpgroup accumulator layout ([`Plan::wgmma`]). Those buffers'
//! loads that have the TMA box form (`tma`) may be fetched by TMA
//! ([`Plan::tma`], [`Loop::barriers`]). Every other sm_90 dot whose tiles fit
//! a warpgroup grid is on `wgmma` too, its operands staged from registers.

use super::tma::{self, TileLoad};
use super::Arch;
use std::collections::{BTreeSet, HashMap, HashSet};
use tile_ir::launch::TmaOperand;
use tile_ir::{walk_insts, Block, Inst, Kernel, Op, Scalar, ValueId};

/// Shared memory the stages of one loop may take (bytes); the stage count is
/// what fits, between 2 and [`MAX_STAGES`].
const STAGE_BUDGET: u32 = 80 * 1024;
pub(crate) const MAX_STAGES: u32 = 4;
/// The same for loops on `wgmma`, which keep one iteration's multiply in
/// flight (so want a third stage, and more: copies then run only
/// `stages - 2` iterations ahead) and run one CTA per SM at their tile
/// sizes, largest first: `lower` takes the first that fits with the
/// kernel's other shared memory. On the H200, 4096³ bf16 matmul with
/// 128×256×64 tiles: 4 stages (192 KB) 67.5–69.7% of cuBLAS, 2 stages
/// (no multiply in flight) 59%.
pub(crate) const WGMMA_STAGE_BUDGETS: [u32; 3] = [208 * 1024, 128 * 1024, STAGE_BUDGET];
/// Elements of padding per shared-memory row: 16 bytes, so the 8 rows an
/// `ldmatrix` reads fall in distinct bank groups.
pub(crate) const PAD: u32 = 8;

#[derive(Clone, Debug)]
pub(crate) struct Loop {
    pub stages: u32,
    /// Bytes of one stage (every buffer of one iteration).
    pub stage_bytes: u32,
    pub bufs: Vec<Buf>,
    /// Loop-invariant operands, staged once before the loop; their
    /// `offset`s are absolute (after the stages and their barriers).
    pub resident: Vec<Buf>,
    /// Bytes of shared memory the loop takes: stages, their barriers and
    /// the resident operands.
    pub bytes: u32,
    /// A `wgmma` dot left running into the next iteration (its result, and
    /// the index of its accumulator among the carried values): copies then
    /// run `stages - 2` iterations ahead instead of `stages - 1`, into the
    /// stage the dot of two iterations back read.
    pub in_flight: Option<(ValueId, usize)>,
    /// Body instructions (indices, in order) the addresses, masks and `other`
    /// values of the pipelined loads need: lowered again for a later iteration.
    pub slice: Vec<usize>,
}

impl Loop {
    /// Whether a `dot` of the loop runs on `wgmma` (its buffers are swizzled).
    pub fn wgmma(&self) -> bool {
        self.bufs
            .iter()
            .any(|b| matches!(b.tile, SmemTile::Swizzled { .. }))
    }

    /// When a buffer may be filled by TMA: the byte offset of one `mbarrier`
    /// per stage (after the stages), on which a stage's copies complete.
    pub fn barriers(&self) -> Option<u32> {
        self.bufs
            .iter()
            .any(|b| b.tma.is_some())
            .then_some(self.stages * self.stage_bytes)
    }

    /// How many iterations ahead the copies run.
    pub fn ahead(&self) -> u32 {
        if self.in_flight.is_some() {
            self.stages - 2
        } else {
            self.stages - 1
        }
    }
}

/// One pipelined load: its tile sits at `offset` in each stage.
#[derive(Clone, Debug)]
pub(crate) struct Buf {
    pub load: ValueId,
    pub offset: u32,
    pub tile: SmemTile,
    /// The load has uses besides `dot` operands: its registers are read
    /// back from the stage where the body needs them.
    pub read_back: bool,
    /// The load as a TMA box, with the index of its operand in
    /// [`Plan::tma`] (and of its hidden kernel parameter).
    pub tma: Option<(TileLoad, usize)>,
}

/// How a 2-D tile of 16-bit elements is laid out in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SmemTile {
    /// Row-major, rows `ld` elements apart (padded against bank conflicts).
    Padded { ld: u32 },
    /// `wgmma`'s swizzled canonical layout: the `[rows, cols]` tile is cut
    /// into atoms of 8 rows × `width` elements (`width · 2` = 32, 64 or 128
    /// bytes, the swizzle span), stored row after row; a column of atoms
    /// (all rows) after another. Then, as the hardware's 128/64/32-byte
    /// swizzle modes do on addresses, the 16-byte chunk bits of each byte
    /// offset (bits 4..) are XORed with its 128-byte line bits (bits 7..),
    /// log2(width / 8) of them; buffers are aligned to 1024 bytes, so
    /// offsets and addresses agree.
    Swizzled { rows: u32, width: u32 },
}

impl SmemTile {
    /// Bytes of a `[rows, cols]` tile.
    pub fn bytes(&self, rows: u32, cols: u32) -> u32 {
        match *self {
            SmemTile::Padded { ld } => rows * ld * 2,
            SmemTile::Swizzled { .. } => rows * cols * 2,
        }
    }
}

/// The swizzle width (elements) of a tile dimension `n` of 16-bit
/// elements for `wgmma`: 128-byte atoms when `n` is a multiple of 64, else
/// 64- or 32-byte atoms for 32 or 16.
pub(crate) fn swizzle_width(n: u32) -> Option<u32> {
    match n {
        n if n % 64 == 0 => Some(64),
        32 => Some(32),
        16 => Some(16),
        _ => None,
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// Keyed by the loop's induction variable.
    pub loops: HashMap<ValueId, Loop>,
    /// Shared memory the largest pipelined loop needs (loops run one at a time).
    pub bytes: u32,
    /// `dot` results computed with `wgmma`, each with its `gm × gn` grid of
    /// warpgroups.
    pub wgmma: HashMap<ValueId, (u32, u32)>,
    /// Tensors the host describes for TMA, one hidden parameter each.
    pub tma: Vec<TmaOperand>,
}

/// The warpgroup grid `gm × gn` for a `wgmma` dot `[m, k] @ [k, n]` with
/// `warps` warps, if the shapes allow one: each warpgroup owns a multiple of
/// 64 rows and at most 256 columns, starting on a swizzle atom of B.
pub(crate) fn wgmma_grid(m: u32, k: u32, n: u32, warps: u32) -> Option<(u32, u32)> {
    let groups = warps / 4;
    if !warps.is_multiple_of(4) || groups == 0 || swizzle_width(k).is_none() {
        return None;
    }
    let wb = swizzle_width(n)?;
    let mut gm = groups;
    while gm > 1 && !m.is_multiple_of(64 * gm) {
        gm /= 2;
    }
    let gn = groups / gm;
    (m.is_multiple_of(64 * gm)
        && n.is_multiple_of(gn)
        && (n / gn).is_multiple_of(wb)
        && n / gn <= 256)
        .then_some((gm, gn))
}

/// The plan for `kernel`, with `wgmma_budget` bytes of stages for a loop on
/// `wgmma` (one of [`WGMMA_STAGE_BUDGETS`]) and at most `stages` stages a
/// loop ([`MAX_STAGES`] when the configuration gives none). A configuration
/// that gives `stages` also pipelines its loops' *streaming* loads
/// ([`plan_loop`]).
pub(crate) fn plan(
    kernel: &Kernel,
    warps: u32,
    arch: Arch,
    wgmma_budget: u32,
    stages: Option<u32>,
) -> Plan {
    let max_stages = stages.unwrap_or(MAX_STAGES);
    let mut uses: HashMap<ValueId, usize> = HashMap::new();
    walk_insts(&kernel.body, &mut |i| {
        for v in i.op.operands() {
            *uses.entry(v).or_default() += 1;
        }
    });
    let mut plan = Plan::default();
    walk_insts(&kernel.body, &mut |i| {
        if let Op::For { body, .. } = &i.op {
            if let Some(l) = plan_loop(
                kernel,
                body,
                &uses,
                warps,
                arch,
                (wgmma_budget, max_stages, stages.is_some()),
                &mut plan,
            ) {
                plan.bytes = plan.bytes.max(l.bytes);
                plan.loops.insert(body.args[0], l);
            }
        }
    });
    // Every other dot whose tiles fit runs on `wgmma` too, its operands
    // staged from registers into swizzled shared memory.
    if arch == Arch::Sm90 {
        walk_insts(&kernel.body, &mut |i| {
            if let Op::Dot { a, b, .. } = i.op {
                let (ta, tb) = (kernel.ty(a), kernel.ty(b));
                let elems = [ta.scalar_elem(), tb.scalar_elem()];
                if plan.wgmma.contains_key(&i.results[0])
                    || kernel.ty(i.results[0]).scalar_elem() != Some(Scalar::F32)
                    || !elems
                        .iter()
                        .all(|e| matches!(e, Some(Scalar::BF16 | Scalar::F16)))
                {
                    return;
                }
                if let Some(g) = wgmma_grid(ta.shape[0], ta.shape[1], tb.shape[1], warps) {
                    plan.wgmma.insert(i.results[0], g);
                }
            }
        });
    }
    plan
}

/// Ops that may be evaluated again for a later iteration: pure, and cheap.
fn recomputable(op: &Op) -> bool {
    matches!(
        op,
        Op::Const(_)
            | Op::ProgramId(_)
            | Op::NumPrograms(_)
            | Op::Arange { .. }
            | Op::Splat(_)
            | Op::Broadcast(_)
            | Op::ExpandDims { .. }
            | Op::Cast(_)
            | Op::Unary(..)
            | Op::Binary(..)
            | Op::Cmp(..)
            | Op::Select { .. }
            | Op::Fma { .. }
            | Op::AddPtr { .. }
    )
}

fn plan_loop(
    kernel: &Kernel,
    body: &Block,
    uses: &HashMap<ValueId, usize>,
    warps: u32,
    arch: Arch,
    (wgmma_budget, max_stages, streaming): (u32, u32, bool),
    plan: &mut Plan,
) -> Option<Loop> {
    // A copy issued ahead runs before the body's writes of the iterations
    // between: only loads from a pointer parameter the loop never writes
    // are copied ahead, and a launch refuses buffers where a written one
    // overlaps one of them (`tile_ir::aliasing`). A write through a pointer
    // of unknown origin, or a nested loop (both would use the same shared
    // memory), keeps the loop as it is.
    let params = tile_ir::aliasing::Defs::new(kernel);
    let mut simple = true;
    let mut written = BTreeSet::new();
    walk_insts(body, &mut |i| match i.op {
        Op::For { .. } => simple = false,
        Op::Store { ptr, .. } | Op::AtomicAdd { ptr, .. } => match params.pointer_param(ptr) {
            Some(p) => {
                written.insert(p);
            }
            None => simple = false,
        },
        _ => {}
    });
    if !simple {
        return None;
    }
    let def: HashMap<ValueId, usize> = body
        .insts
        .iter()
        .enumerate()
        .flat_map(|(i, inst)| inst.results.iter().map(move |r| (*r, i)))
        .collect();
    let carried: HashSet<ValueId> = body.args[1..].iter().copied().collect();
    let (mut bufs, mut slice, mut offset) = (Vec::new(), BTreeSet::new(), 0u32);
    let mut swizzled = false;
    // The slice of body instructions a load's operands need, when the load
    // can be issued early.
    let early = |x: ValueId| -> Option<BTreeSet<usize>> {
        let &li = def.get(&x)?;
        let Op::Load { ptr, mask, other } = body.insts[li].op else {
            return None;
        };
        if params
            .pointer_param(ptr)
            .is_none_or(|p| written.contains(&p))
        {
            return None;
        }
        let ty = kernel.ty(x);
        if ty.shape.len() != 2 || !matches!(ty.scalar_elem(), Some(Scalar::BF16 | Scalar::F16)) {
            return None;
        }
        let mut need = BTreeSet::new();
        let mut work: Vec<ValueId> = [Some(ptr), mask, other].into_iter().flatten().collect();
        while let Some(v) = work.pop() {
            if carried.contains(&v) {
                return None;
            }
            if let Some(&j) = def.get(&v) {
                if need.insert(j) {
                    if !recomputable(&body.insts[j].op) {
                        return None;
                    }
                    work.extend(body.insts[j].op.operands());
                }
            }
        }
        Some(need)
    };
    // Where a dot operand comes from, when not staged from registers in the
    // loop: a pipelined load (read as it is, or K-major through `trans`), a
    // loop-invariant tile, or (wgmma's A) registers.
    enum Source {
        Stage(ValueId, BTreeSet<usize>),
        Resident(ValueId),
        Registers,
    }
    let invariant = |x: ValueId| {
        let ty = kernel.ty(x);
        !def.contains_key(&x)
            && !body.args.contains(&x)
            && ty.shape.len() == 2
            && matches!(ty.scalar_elem(), Some(Scalar::BF16 | Scalar::F16))
    };
    // Computed elementwise from a dot of the loop: in its accumulator layout,
    // which is wgmma's register-A fragment (`layouts`). A carried value is
    // what the previous iteration yielded (a P kept for the next iteration's
    // multiply: its carried layout is that of the value yielded), an `if`'s
    // result what either branch yields (a mask applied only to some blocks).
    let yields = |b: &Block| match b.insts.last().map(|i| &i.op) {
        Some(Op::Yield(ys)) => ys.clone(),
        _ => Vec::new(),
    };
    let carried_yields = yields(body);
    let mut nested: HashMap<ValueId, &Inst> = HashMap::new();
    walk_insts(body, &mut |i| {
        for r in &i.results {
            nested.insert(*r, i);
        }
    });
    let from_dot = |x: ValueId| {
        let mut work = vec![x];
        let mut seen = HashSet::new();
        while let Some(v) = work.pop() {
            if !seen.insert(v) {
                continue;
            }
            if let Some(j) = body.args[1..].iter().position(|&a| a == v) {
                work.extend(carried_yields.get(j));
                continue;
            }
            let Some(inst) = nested.get(&v) else { continue };
            match &inst.op {
                Op::Dot { .. } => return true,
                op @ (Op::Cast(_)
                | Op::Unary(..)
                | Op::Binary(..)
                | Op::Select { .. }
                | Op::Fma { .. }) => work.extend(op.operands()),
                Op::If {
                    then_body,
                    else_body,
                    ..
                } => {
                    let k = inst.results.iter().position(|&r| r == v).unwrap_or(0);
                    for b in [then_body, else_body] {
                        work.extend(yields(b).get(k));
                    }
                }
                _ => {}
            }
        }
        false
    };
    let mut resident: Vec<(ValueId, SmemTile)> = Vec::new();
    for inst in &body.insts {
        let Op::Dot { a, b, .. } = inst.op else {
            continue;
        };
        let (sa, sb) = (&kernel.ty(a).shape, &kernel.ty(b).shape);
        let grid = (arch == Arch::Sm90)
            .then(|| wgmma_grid(sa[0], sa[1], sb[1], warps))
            .flatten()
            .filter(|_| kernel.ty(inst.results[0]).scalar_elem() == Some(Scalar::F32));
        let source = |x: ValueId, is_a: bool| -> Option<Source> {
            if let Some(need) = early(x) {
                return Some(Source::Stage(x, need));
            }
            if invariant(x) {
                return Some(Source::Resident(x));
            }
            grid?;
            if is_a && grid.is_some_and(|(_, gn)| gn == 1) && from_dot(x) {
                return Some(Source::Registers);
            }
            let inst = &body.insts[*def.get(&x)?];
            match &inst.op {
                Op::Trans { value, perm } if !is_a && perm == &[1, 0] => match early(*value) {
                    Some(need) => Some(Source::Stage(*value, need)),
                    None => invariant(*value).then_some(Source::Resident(*value)),
                },
                _ => None,
            }
        };
        let (Some(src_a), Some(src_b)) = (source(a, true), source(b, false)) else {
            continue;
        };
        if !matches!(src_a, Source::Stage(..)) && !matches!(src_b, Source::Stage(..)) {
            continue;
        }
        if let Some(g) = grid {
            plan.wgmma.insert(inst.results[0], g);
            swizzled = true;
        }
        // A tile's layout in shared memory: wgmma's swizzled atoms, else padded rows.
        let tile_of = |shape: &[u32]| match grid {
            Some(_) => SmemTile::Swizzled {
                rows: shape[0],
                width: swizzle_width(shape[1]).unwrap(),
            },
            None => SmemTile::Padded { ld: shape[1] + PAD },
        };
        for src in [src_a, src_b] {
            let (x, need) = match src {
                Source::Stage(x, need) => (x, need),
                Source::Resident(x) => {
                    if !resident.iter().any(|r| r.0 == x) {
                        resident.push((x, tile_of(&kernel.ty(x).shape)));
                    }
                    continue;
                }
                Source::Registers => continue,
            };
            slice.extend(need);
            if bufs.iter().any(|b: &Buf| b.load == x) {
                continue;
            }
            let shape = &kernel.ty(x).shape;
            let tile = tile_of(shape);
            let mut tma = None;
            if let SmemTile::Swizzled { width, .. } = tile {
                // Swizzle atoms must start 1024-byte aligned.
                offset = offset.next_multiple_of(1024);
                // A box has at most 256 rows; the hidden mask has 32 bits
                // (`tile_ir::launch::hidden_params`).
                if shape[0] <= 256 && plan.tma.len() < 32 {
                    tma = tma::match_tile_load(kernel, x).map(|t| {
                        plan.tma.push(TmaOperand {
                            base: t.base,
                            elem_bytes: 2,
                            rows: t.rows,
                            cols: t.cols,
                            row_stride: t.row_stride,
                            box_rows: shape[0],
                            box_cols: width,
                            swizzle_bytes: width * 2,
                        });
                        (t, plan.tma.len() - 1)
                    });
                }
            }
            bufs.push(Buf {
                load: x,
                offset,
                tile,
                read_back: false,
                tma,
            });
            offset += tile.bytes(shape[0], shape[1]);
        }
    }
    // Streaming loads (asked for by a configuration's `stages`, in a loop
    // without a dot): every load the loop could copy ahead, a 2-D tile of
    // 16-bit elements (the streams of an elementwise loop with reductions,
    // like mHC's backward), is copied `stages - 1` iterations ahead into
    // padded rows and read back from its stage where the body uses it. One
    // warp's loop then has that many iterations' loads in flight instead of
    // one. Opt-in, since the stages' shared memory may cost the kernel CTAs;
    // a loop with a dot keeps the plan above.
    let mut has_dot = false;
    walk_insts(body, &mut |i| has_dot |= matches!(i.op, Op::Dot { .. }));
    if streaming && !has_dot {
        for inst in &body.insts {
            let Op::Load { .. } = inst.op else { continue };
            let x = inst.results[0];
            if bufs.iter().any(|b: &Buf| b.load == x) {
                continue;
            }
            let Some(need) = early(x) else { continue };
            slice.extend(need);
            let shape = &kernel.ty(x).shape;
            let tile = SmemTile::Padded { ld: shape[1] + PAD };
            bufs.push(Buf {
                load: x,
                offset,
                tile,
                read_back: true,
                tma: None,
            });
            offset += tile.bytes(shape[0], shape[1]);
        }
    }
    if swizzled {
        // Every stage starts aligned, too.
        offset = offset.next_multiple_of(1024);
    }
    if bufs.is_empty() {
        return None;
    }
    let mut dot_uses: HashMap<ValueId, usize> = HashMap::new();
    walk_insts(body, &mut |i| {
        if let Op::Dot { a, b, .. } = i.op {
            for x in [a, b] {
                *dot_uses.entry(x).or_default() += 1;
            }
        }
    });
    for b in &mut bufs {
        b.read_back =
            uses.get(&b.load).copied().unwrap_or(0) > dot_uses.get(&b.load).copied().unwrap_or(0);
    }
    let resident_bytes: u32 = resident
        .iter()
        .map(|&(x, tile)| {
            let shape = &kernel.ty(x).shape;
            tile.bytes(shape[0], shape[1]).next_multiple_of(1024)
        })
        .sum();
    let budget = if swizzled { wgmma_budget } else { STAGE_BUDGET };
    let stages = (budget.saturating_sub(resident_bytes) / offset).clamp(2, max_stages);
    let in_flight = (stages >= 3)
        .then(|| in_flight_dot(body, uses, &plan.wgmma))
        .flatten();
    let mut l = Loop {
        stages,
        stage_bytes: offset,
        bufs,
        resident: Vec::new(),
        bytes: 0,
        in_flight,
        slice: slice.into_iter().collect(),
    };
    // Resident operands after the stages and their barriers.
    let mut at = stages * offset + l.barriers().map_or(0, |_| 8 * stages);
    for (x, tile) in resident {
        let shape = &kernel.ty(x).shape;
        at = at.next_multiple_of(match tile {
            SmemTile::Swizzled { .. } => 1024,
            SmemTile::Padded { .. } => 16,
        });
        l.resident.push(Buf {
            load: x,
            offset: at,
            tile,
            read_back: false,
            tma: None,
        });
        at += tile.bytes(shape[0], shape[1]);
    }
    l.bytes = at;
    Some(l)
}

/// The loop's `wgmma` dot that may still run while the next iteration
/// starts, with the position of its accumulator among the carried values:
/// the loop's only dot, accumulating into a carried value and yielding its
/// result, which nothing else uses (`acc = dot(a, b, acc)`).
fn in_flight_dot(
    body: &Block,
    uses: &HashMap<ValueId, usize>,
    wgmma: &HashMap<ValueId, (u32, u32)>,
) -> Option<(ValueId, usize)> {
    let mut dots = Vec::new();
    walk_insts(body, &mut |i| {
        if let Op::Dot { acc, .. } = i.op {
            dots.push((i.results[0], acc));
        }
    });
    let [(r, acc)] = dots[..] else {
        return None;
    };
    let Some(Op::Yield(ys)) = body.insts.last().map(|i| &i.op) else {
        return None;
    };
    let j = ys.iter().position(|&y| y == r)?;
    (wgmma.contains_key(&r) && uses.get(&r) == Some(&1) && body.args[1 + j] == acc)
        .then_some((r, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wgmma_grids_cover_their_tiles_or_are_refused() {
        assert_eq!(wgmma_grid(128, 64, 256, 8), Some((2, 1)));
        assert_eq!(wgmma_grid(64, 64, 128, 8), Some((1, 2)));
        assert_eq!(wgmma_grid(128, 32, 128, 4), Some((1, 1)));
        assert_eq!(wgmma_grid(128, 16, 16, 4), Some((1, 1)));
        // K not a swizzle width, M below a warpgroup's 64 rows, N split off an
        // atom, more than 256 columns per warpgroup, warps not in groups of 4.
        assert_eq!(wgmma_grid(128, 48, 128, 4), None);
        assert_eq!(wgmma_grid(32, 64, 64, 4), None);
        assert_eq!(wgmma_grid(64, 64, 64, 8), None);
        assert_eq!(wgmma_grid(64, 64, 512, 4), None);
        assert_eq!(wgmma_grid(128, 64, 128, 2), None);
    }
}
