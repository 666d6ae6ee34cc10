//! A pipelined copy into shared memory checked once for the whole tile. A
//! thread's elements go in groups of `v` contiguous ones (4, 8 or 16 bytes);
//! where each group's masks are one value (proven by the axis analysis or
//! tested) and masked elements read zero, the tile takes one test: every
//! group aligned (their addresses OR-ed together) and, unless proven, each
//! group's masks all set or all clear. Then each group is one `cp.async`
//! whose source size is zero where masked off (the copy fills the zeros),
//! straight-line. Otherwise one rolled loop copies the groups element by
//! element, picking each group's addresses and masks by its index from the
//! registers (a chain of selects: no local memory, so ptxas allocates the
//! kernel as before).
//!
//! Checked group by group, each with a rolled slow path of its own, these
//! copies were 40% of what LLVM and NVPTX compiled for an attention kernel
//! (192 copies; BM = 64, BN = 128, D = 128).

use super::memory::{elem_ptr, LoadOne};
use super::Lower;
use crate::emit::{Emitter, V};
use crate::layout::Layout;
use crate::prefetch::SmemTile;
use crate::CodegenError;
use std::ops::Range;
use tile_ir::{Const, Scalar, ValueId};

/// Groups a run checks at once. All of their addresses are live at the
/// check: with 32 (`mhc_proj`'s φ at RP = 128, BK = 128) ptxas took 216
/// registers where per-group checks took 128; 8 took 147, 4 took 128 but
/// compiled attention 25% slower than 16 (0.8 → 1.0 s).
const CHECKED_GROUPS: usize = 8;

/// A tile's registers as groups: addresses `rp`, masks `rm`, `v` elements
/// of `s` a group.
pub(super) struct Groups<'a> {
    pub rp: &'a [V],
    pub rm: Option<&'a [V]>,
    /// Whether each group's masks are one value (the axis analysis proves it).
    pub uniform: bool,
    pub v: u32,
    pub s: Scalar,
    pub groups: Vec<Range<usize>>,
}

impl<'c, 'k> Lower<'c, 'k> {
    /// Whether a copy through `ptr` in groups of `v` elements of `s` is
    /// checked once: 4, 8 or 16 bytes a group (what `cp.async` takes) and
    /// zero (or nothing) where masked off.
    pub(super) fn copy_checks_once(&self, v: u32, s: Scalar, other: Option<ValueId>) -> bool {
        let def = |x| self.defs.get(&x).map(|i| &i.op);
        matches!(v as usize * s.size_bytes(), 4 | 8 | 16)
            && other.is_none_or(|o| tile_ir::is_zero_bits(o, &def))
    }

    /// Whether the masks of `mask` are one value along each group of `v`.
    pub(super) fn mask_uniform(&self, mask: Option<ValueId>, v: u32) -> bool {
        mask.is_none_or(|m| self.axis.get(&m).is_some_and(|a| a.constancy >= v))
    }

    /// Copies the groups into shared-memory tile `tile` at byte offset
    /// `base` (`copy_checks_once` holds; `l`: the registers' layout), in
    /// runs of up to `CHECKED_GROUPS` groups, each checked once.
    pub(super) fn copy_tile_checked_once(
        &mut self,
        l: &Layout,
        t: &Groups,
        base: V,
        tile: SmemTile,
    ) -> Result<(), CodegenError> {
        for run in t.groups.chunks(CHECKED_GROUPS) {
            let run = Groups {
                groups: run.to_vec(),
                ..*t
            };
            self.copy_run_checked_once(l, &run, base, tile)?;
        }
        Ok(())
    }

    /// One run of [`copy_tile_checked_once`](Self::copy_tile_checked_once).
    fn copy_run_checked_once(
        &mut self,
        l: &Layout,
        t: &Groups,
        base: V,
        tile: SmemTile,
    ) -> Result<(), CodegenError> {
        let bytes = t.v as usize * t.s.size_bytes();
        let mut dsts = Vec::with_capacity(t.groups.len());
        for g in &t.groups {
            let c = self.coords(l, g.start)?;
            // A group never crosses a 16-byte chunk, so swizzling keeps it contiguous.
            dsts.push(self.tile_elem_ptr(base, tile, c[0], c[1])?);
        }
        let ok = self.tile_checked(t)?;
        let dsts = &dsts;
        self.if_else_self(
            ok,
            &mut |me| {
                let (full, none) = (me.e.i32(bytes as i64)?, me.e.i32(0)?);
                for (g, &dst) in t.groups.iter().zip(dsts) {
                    let size =
                        t.rm.map(|m| me.e.select(m[g.start], full, none))
                            .transpose()?;
                    me.cp_async(dst, t.rp[g.start], bytes, size)?;
                }
                Ok(())
            },
            &mut |me| {
                let zero = me.constant(Const::Int(0), t.s)?;
                copy_by_elements(&mut me.e, t, dsts, zero)
            },
        )
    }

    /// The fast path's condition: every group aligned and, unless proven,
    /// each group's masks one value.
    fn tile_checked(&mut self, t: &Groups) -> Result<V, CodegenError> {
        let i64t = self.e.ty("i64");
        let mut any = self.e.i64(0)?;
        for g in &t.groups {
            let a = self.e.op1("llvm.ptrtoint", &[t.rp[g.start]], i64t, &[])?;
            any = self.e.binop("arith.ori", any, a)?;
        }
        let low = self.e.i64((t.v as usize * t.s.size_bytes()) as i64 - 1)?;
        let low = self.e.binop("arith.andi", any, low)?;
        let zero = self.e.i64(0)?;
        let mut ok = self.e.cmpi("eq", low, zero)?;
        if let (Some(m), false) = (t.rm, t.uniform) {
            let yes = self.e.bool(true)?;
            for g in &t.groups {
                // All set, or none: all | !some.
                let (mut all, mut some) = (m[g.start], m[g.start]);
                for &x in &m[g.start + 1..g.end] {
                    all = self.e.binop("arith.andi", all, x)?;
                    some = self.e.binop("arith.ori", some, x)?;
                }
                let none = self.e.binop("arith.xori", some, yes)?;
                let one = self.e.binop("arith.ori", all, none)?;
                ok = self.e.binop("arith.andi", ok, one)?;
            }
        }
        self.e.likely(ok)
    }
}

/// The slow path: one rolled loop over the groups, each group's source,
/// destination and mask bits picked from the registers by its index, then
/// its elements copied one by one (`zero` where masked off).
fn copy_by_elements(
    e: &mut Emitter<'_>,
    t: &Groups,
    dsts: &[V],
    zero: V,
) -> Result<(), CodegenError> {
    let (v, s) = (t.v, t.s);
    let mut bits = Vec::with_capacity(t.groups.len());
    for g in &t.groups {
        bits.push(match t.rm {
            None => e.i32((1 << v) - 1)?,
            Some(m) if t.uniform => {
                let (full, none) = (e.i32((1 << v) - 1)?, e.i32(0)?);
                e.select(m[g.start], full, none)?
            }
            Some(m) => mask_bits(e, &m[g.clone()])?,
        });
    }
    let srcs: Vec<V> = t.groups.iter().map(|g| t.rp[g.start]).collect();
    let n = t.groups.len() as u32;
    let i = e.begin_rolled_loop(n)?;
    let pick = |e: &mut Emitter<'_>, xs: &[V]| -> Result<V, CodegenError> {
        let mut x = xs[0];
        for (k, &y) in xs.iter().enumerate().skip(1) {
            let k = e.i32(k as i64)?;
            let is = e.cmpi("eq", i, k)?;
            x = e.select(is, y, x)?;
        }
        Ok(x)
    };
    let (src, dst, b) = (pick(e, &srcs)?, pick(e, dsts)?, pick(e, &bits)?);
    let j = e.begin_rolled_loop(v)?;
    let on = bit(e, b, j)?;
    let ty = e.type_of(zero);
    let from = elem_ptr(e, src, j, s, 1)?;
    let x = e.if_else(
        on,
        &[ty],
        &mut |e| Ok(vec![LoadOne { e }.load(from, s)?]),
        &mut |_| Ok(vec![zero]),
    )?[0];
    let to = elem_ptr(e, dst, j, s, 3)?;
    LoadOne { e }.store(to, x, s)?;
    e.end_rolled_loop(v)?;
    e.end_rolled_loop(n)
}

/// Masks `m` as the bits of an i32 (bit `i` is `m[i]`). Built on the slow
/// path only: the fast one tests the masks as they are.
pub(super) fn mask_bits(e: &mut Emitter<'_>, m: &[V]) -> Result<V, CodegenError> {
    let i32t = e.ty("i32");
    let mut bits = e.i32(0)?;
    for (i, &c) in m.iter().enumerate() {
        let b = e.op1("arith.extui", &[c], i32t, &[])?;
        let sh = e.i32(i as i64)?;
        let b = e.binop("arith.shli", b, sh)?;
        bits = e.binop("arith.ori", bits, b)?;
    }
    Ok(bits)
}

/// Bit `i` of `bits` (i32) as an i1.
pub(super) fn bit(e: &mut Emitter<'_>, bits: V, i: V) -> Result<V, CodegenError> {
    let (one, zero) = (e.i32(1)?, e.i32(0)?);
    let b = e.binop("arith.shrui", bits, i)?;
    let b = e.binop("arith.andi", b, one)?;
    e.cmpi("ne", b, zero)
}
