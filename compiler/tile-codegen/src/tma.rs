//! Which pipelined tile loads the Hopper tensor memory accelerator (TMA) can
//! fetch, and what the host must describe for it.
//!
//! A 2-D load `load(p + r[:, None] * s + c[None, :], (r[:, None] < rows) &
//! (c[None, :] < cols), 0)` with `r = r0 + arange(0, R)`, `c = c0 + arange(0,
//! C)`, `p` a pointer parameter and `s`, `rows`, `cols` parameters or
//! constants reads the box at `(r0, c0)` of a `rows × cols` row-major tensor
//! with row stride `s`, zeros outside it: exactly what one TMA copy does,
//! given a tensor map the host encodes at launch (`launch::TmaOperand`). Each such
//! operand adds a hidden kernel parameter after the declared ones, the encoded
//! map by value, and a bit of a hidden mask that is clear when the host cannot
//! describe the tensor (misaligned base or stride), in which case the kernel
//! copies with `cp.async` as before (`tile_ir::launch::hidden_params`).
//! Negative box corners, where the load would read before `p` but TMA would
//! give zeros, take the `cp.async` path too.

use std::collections::HashMap;
use tile_ir::launch::HostScalar;
use tile_ir::{BinaryOp, CmpOp, Const, Inst, Kernel, Op, ValueId};

/// A box corner coordinate, computed in the kernel: the sum of some i32
/// scalars and a constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Start {
    pub values: Vec<ValueId>,
    pub konst: i64,
}

impl Start {
    /// The constant, when the start is one.
    pub fn as_const(&self) -> Option<i64> {
        self.values.is_empty().then_some(self.konst)
    }
}

/// A load matched as a TMA box: the host part and the corner `(r0, c0)`.
#[derive(Clone, Debug)]
pub(crate) struct TileLoad {
    pub base: usize,
    pub rows: HostScalar,
    pub cols: HostScalar,
    pub row_stride: HostScalar,
    pub r0: Start,
    pub c0: Start,
    /// The mask's other conjuncts: TMA may fetch the box only when each
    /// holds for the whole box (checked in the kernel), since then the mask
    /// is the two bounds alone.
    pub guards: Vec<Guard>,
}

/// A conjunct `start + i < bound` of a box's mask, `i` the box's index along
/// dimension `dim` (of `n` elements).
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    pub start: Start,
    pub dim: usize,
    pub n: u32,
    /// An i32 scalar.
    pub bound: ValueId,
}

/// An integer tile as a sum over its dimensions of `index vector ×
/// coefficient` (at most one per dimension), plus splatted scalars.
#[derive(Clone, Debug, Default)]
struct Linear {
    dims: Vec<Option<(ValueId, Coef)>>,
    scalars: Vec<ValueId>,
    /// The pointer parameter the tile is an offset from (pointer tiles only).
    base: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coef {
    One,
    Scalar(ValueId),
}

struct Matcher<'k> {
    kernel: &'k Kernel,
    defs: HashMap<ValueId, &'k Inst>,
    params: HashMap<ValueId, usize>,
}

/// The TMA form of 2-D load `load` in `kernel`, if it has one.
pub(crate) fn match_tile_load(kernel: &Kernel, load: ValueId) -> Option<TileLoad> {
    let mut defs = HashMap::new();
    tile_ir::walk_insts(&kernel.body, &mut |i| {
        for r in &i.results {
            defs.insert(*r, i);
        }
    });
    let params = kernel
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.value, i))
        .collect();
    Matcher {
        kernel,
        defs,
        params,
    }
    .tile_load(load)
}

impl Matcher<'_> {
    fn op(&self, v: ValueId) -> Option<&Op> {
        self.defs.get(&v).map(|i| &i.op)
    }

    fn tile_load(&self, load: ValueId) -> Option<TileLoad> {
        let Some(Op::Load { ptr, mask, other }) = self.op(load) else {
            return None;
        };
        let shape = &self.kernel.ty(load).shape;
        if shape.len() != 2 {
            return None;
        }
        if let Some(o) = other {
            if !tile_ir::is_zero_bits(*o, &|x| self.op(x)) {
                return None;
            }
        }
        let p = self.linear(*ptr, 2)?;
        let base = p.base?;
        let (Some((r, Coef::Scalar(s))), Some((c, Coef::One))) = (p.dims[0], p.dims[1]) else {
            return None;
        };
        if !p.scalars.is_empty() {
            return None;
        }
        let row_stride = self.host(s)?;
        let bounds = match mask {
            Some(m) => self.bounds(*m, 2)?,
            None => Vec::new(),
        };
        let (r0, c0) = (self.start(r, shape[0])?, self.start(c, shape[1])?);
        // Each dimension's bound, from the mask; an unmasked dimension with a
        // constant start reads exactly its own indices.
        let bound = |v: ValueId, d: usize, start: &Start, n: u32| {
            let mut found = bounds.iter().filter(|(x, dim, _)| *x == v && *dim == d);
            match (found.next(), found.next(), start.as_const()) {
                (Some(b), None, _) => self.host(b.2),
                (None, _, Some(s0)) if s0 >= 0 => Some(HostScalar::Const(s0 + n as i64)),
                _ => None,
            }
        };
        let rows = bound(r, 0, &r0, shape[0])?;
        let cols = bound(c, 1, &c0, shape[1])?;
        // Any other conjunct bounds another index vector along one of the
        // dimensions: a guard.
        let mut guards = Vec::new();
        for &(x, d, b) in &bounds {
            if (x, d) == (r, 0) || (x, d) == (c, 1) {
                continue;
            }
            let n = shape[d];
            let ty = self.kernel.ty(b);
            if !ty.is_scalar() || ty.scalar_elem() != Some(tile_ir::Scalar::I32) {
                return None;
            }
            guards.push(Guard {
                start: self.start(x, n)?,
                dim: d,
                n,
                bound: b,
            });
        }
        Some(TileLoad {
            base,
            rows,
            cols,
            row_stride,
            r0,
            c0,
            guards,
        })
    }

    /// A launch-time scalar: a parameter or a constant (through widening casts).
    fn host(&self, v: ValueId) -> Option<HostScalar> {
        if let Some(&i) = self.params.get(&v) {
            return Some(HostScalar::Param(i));
        }
        match self.op(v)? {
            Op::Const(Const::Int(x)) => Some(HostScalar::Const(*x)),
            Op::Cast(x) if self.widens(*x, v) => self.host(*x),
            _ => None,
        }
    }

    /// Whether casting `from` to `to` keeps every value: an integer widening.
    fn widens(&self, from: ValueId, to: ValueId) -> bool {
        let size = |v: ValueId| {
            self.kernel
                .ty(v)
                .scalar_elem()
                .filter(|s| s.is_int())
                .map(|s| s.size_bytes())
        };
        matches!((size(from), size(to)), (Some(a), Some(b)) if a <= b)
    }

    /// `v` as `s₁ + … + arange(a, a + n)` (splatted i32 scalars added to an
    /// `arange`): the start `s₁ + … + a`.
    fn start(&self, v: ValueId, n: u32) -> Option<Start> {
        match self.op(v)? {
            Op::Arange { start, end } if end - start == n as i64 => Some(Start {
                values: Vec::new(),
                konst: *start,
            }),
            Op::Binary(BinaryOp::Add, x, y) => {
                for (s, rest) in [(*x, *y), (*y, *x)] {
                    let Some(Op::Splat(s)) = self.op(s) else {
                        continue;
                    };
                    let ty = self.kernel.ty(*s);
                    if !ty.is_scalar() || ty.scalar_elem() != Some(tile_ir::Scalar::I32) {
                        continue;
                    }
                    if let Some(mut st) = self.start(rest, n) {
                        st.values.push(*s);
                        return Some(st);
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// The mask (of rank `rank`) as `(index vector, dimension, bound)`
    /// comparisons `x < bound` (a scalar), and-ed together.
    fn bounds(&self, m: ValueId, rank: usize) -> Option<Vec<(ValueId, usize, ValueId)>> {
        match self.op(m)? {
            Op::Broadcast(x) => self.bounds(*x, rank),
            Op::ExpandDims { value, axis } if rank == 2 => {
                let mut b = self.bounds(*value, 1)?;
                for t in &mut b {
                    t.1 = 1 - *axis as usize;
                }
                Some(b)
            }
            Op::Binary(BinaryOp::And, x, y) => {
                let mut b = self.bounds(*x, rank)?;
                b.extend(self.bounds(*y, rank)?);
                Some(b)
            }
            Op::Cmp(CmpOp::Lt, x, y) => {
                let l = self.linear(*x, rank)?;
                let Some(Op::Splat(bound)) = self.op(*y) else {
                    return None;
                };
                if !l.scalars.is_empty() || l.base.is_some() {
                    return None;
                }
                let mut terms = l
                    .dims
                    .iter()
                    .enumerate()
                    .filter_map(|(d, t)| Some((d, (*t)?)));
                let (d, (vec, coef)) = terms.next()?;
                (terms.next().is_none() && coef == Coef::One).then(|| vec![(vec, d, *bound)])
            }
            _ => None,
        }
    }

    /// `v` (an integer or pointer tile of rank `rank`, 1 or 2) as a
    /// [`Linear`] sum. A rank-1 integer tile of no other form is itself an
    /// index vector.
    fn linear(&self, v: ValueId, rank: usize) -> Option<Linear> {
        let ty = self.kernel.ty(v);
        if ty.shape.len() != rank {
            return None;
        }
        let atom = || {
            let mut dims = vec![None; rank];
            dims[0] = Some((v, Coef::One));
            Some(Linear {
                dims,
                ..Linear::default()
            })
        };
        let Some(op) = self.op(v) else {
            return if rank == 1 { atom() } else { None };
        };
        match op {
            Op::Broadcast(x) => self.linear(*x, rank),
            Op::Cast(x) if self.widens(*x, v) => self.linear(*x, rank),
            Op::Splat(s) => {
                let mut l = Linear {
                    dims: vec![None; rank],
                    ..Linear::default()
                };
                match self.params.get(s) {
                    Some(&i) if self.kernel.ty(*s).scalar_elem().is_none() => l.base = Some(i),
                    _ => l.scalars.push(*s),
                }
                Some(l)
            }
            Op::ExpandDims { value, axis } if rank == 2 => {
                // [n] → [n, 1] (axis 1) varies along dimension 0, and back.
                let mut l = self.linear(*value, 1)?;
                let t = l.dims.pop()?;
                l.dims = vec![None; 2];
                l.dims[1 - *axis as usize] = t;
                Some(l)
            }
            Op::Binary(BinaryOp::Mul, x, y) => {
                for (t, s) in [(*x, *y), (*y, *x)] {
                    if let Some(Op::Splat(s)) = self.op(s) {
                        let mut l = self.linear(t, rank)?;
                        let mut terms = l.dims.iter_mut().flatten();
                        let term = terms.next()?;
                        if terms.next().is_some()
                            || term.1 != Coef::One
                            || !l.scalars.is_empty()
                            || l.base.is_some()
                        {
                            return None;
                        }
                        term.1 = Coef::Scalar(*s);
                        return Some(l);
                    }
                }
                if rank == 1 {
                    atom()
                } else {
                    None
                }
            }
            Op::Binary(BinaryOp::Add, x, y) if rank == 2 => self.sum(*x, *y, rank),
            Op::AddPtr { ptr, offset } => self.sum(*ptr, *offset, rank),
            _ if rank == 1 => atom(),
            _ => None,
        }
    }

    fn sum(&self, x: ValueId, y: ValueId, rank: usize) -> Option<Linear> {
        let (mut a, b) = (self.linear(x, rank)?, self.linear(y, rank)?);
        for (d, t) in b.dims.into_iter().enumerate() {
            if t.is_some() {
                if a.dims[d].is_some() {
                    return None;
                }
                a.dims[d] = t;
            }
        }
        if b.base.is_some() {
            if a.base.is_some() {
                return None;
            }
            a.base = b.base;
        }
        a.scalars.extend(b.scalars);
        Some(a)
    }
}
