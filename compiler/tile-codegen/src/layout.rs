//! Blocked layouts: how a tile's elements are distributed over a CTA's threads.
//!
//! Every TIR value lives in the *canonical* blocked layout of its shape (for the
//! kernel's warp count), so elementwise ops and loop-carried values never need
//! a conversion. Ops whose natural result is laid out differently (reductions,
//! broadcasts, reshapes, transposes) convert through shared memory unless the two
//! layouts are provably the same map (see [`Blocked::same_map`]).
//!
//! Along dimension `d` a thread owns `reps[d] * spt[d]` elements: for repetition
//! `r` and sub-index `s` the coordinate is
//! `(r * cov[d] + t[d] * spt[d] + s) mod shape[d]`, where `t[d]` is the thread's
//! coordinate along `d` (from its lane and warp) and `cov = spt * tpw * wpc`.
//! When a tile is smaller than the CTA, `cov > shape` and threads *replicate*
//! elements; a thread owns its elements (is not a duplicate) iff
//! `t[d] < shape[d] / spt[d]` for every `d`.

/// Most contiguous elements per thread along the last dimension (16 bytes of bf16).
pub(crate) const MAX_VEC: u32 = 8;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Blocked {
    pub shape: Vec<u32>,
    /// Contiguous elements per thread.
    pub spt: Vec<u32>,
    /// Threads per warp along each dimension (product 32).
    pub tpw: Vec<u32>,
    /// Warps per CTA along each dimension (product = warps).
    pub wpc: Vec<u32>,
}

impl Blocked {
    /// The canonical layout of `shape` over `warps` warps: up to [`MAX_VEC`]
    /// contiguous elements per thread along the last dimension, lanes and then
    /// warps filling the last dimension first (as Triton's default). A `[N, C]`
    /// tile with a long contiguous C then gives every thread all N rows of its
    /// columns, so a `[C]` row broadcast to it and a sum over N need no shared
    /// memory (mHC's stream mixing: `mhc_post_bwd` and `mhc_pre_bwd` went from
    /// 31% and 27% of copy bandwidth to 49% and 46% on the H200); row sums over
    /// C cross warps once, at the end of such kernels.
    pub fn canonical(shape: &[u32], warps: u32) -> Blocked {
        let rank = shape.len();
        if rank == 0 {
            return Blocked {
                shape: vec![],
                spt: vec![],
                tpw: vec![],
                wpc: vec![],
            };
        }
        let numel: u32 = shape.iter().product();
        let threads = 32 * warps;
        let per_thread = (numel / threads).max(1);
        let mut spt = vec![1; rank];
        spt[rank - 1] = MAX_VEC.min(per_thread).min(shape[rank - 1]);
        let mut tpw = vec![1; rank];
        let mut lanes = 32;
        for d in (0..rank).rev() {
            let avail = (shape[d] / spt[d]).max(1);
            tpw[d] = lanes.min(avail);
            lanes /= tpw[d];
        }
        tpw[rank - 1] *= lanes;
        let mut wpc = vec![1; rank];
        let mut left = warps;
        for d in (0..rank).rev() {
            let avail = (shape[d] / (spt[d] * tpw[d])).max(1);
            wpc[d] = left.min(avail);
            left /= wpc[d];
        }
        wpc[rank - 1] *= left;
        Blocked {
            shape: shape.to_vec(),
            spt,
            tpw,
            wpc,
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The register indices a reduction along `axis` leaves in each thread
    /// (the index along `axis` set to 0), sorted: the order of a reduction's
    /// per-thread partials, in the reduction and in a loop that carries them.
    pub fn reduced_keys(&self, axis: usize) -> Vec<Vec<u32>> {
        let mut keys: Vec<Vec<u32>> = (0..self.num_regs())
            .map(|k| {
                let mut idx = self.reg_index(k);
                idx[axis] = 0;
                idx
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
    /// Elements covered by all threads once along `d`.
    pub fn cov(&self, d: usize) -> u32 {
        self.spt[d] * self.tpw[d] * self.wpc[d]
    }
    pub fn reps(&self, d: usize) -> u32 {
        (self.shape[d] / self.cov(d)).max(1)
    }
    /// Registers per thread along `d`.
    pub fn regs_along(&self, d: usize) -> u32 {
        self.reps(d) * self.spt[d]
    }
    /// Registers per thread in all.
    pub fn num_regs(&self) -> usize {
        (0..self.rank())
            .map(|d| self.regs_along(d) as usize)
            .product()
    }
    /// Per-dimension register indices of register `k` (row-major).
    pub fn reg_index(&self, mut k: usize) -> Vec<u32> {
        let mut idx = vec![0; self.rank()];
        for d in (0..self.rank()).rev() {
            let n = self.regs_along(d) as usize;
            idx[d] = (k % n) as u32;
            k /= n;
        }
        idx
    }
    /// Register number of per-dimension indices.
    pub fn reg_number(&self, idx: &[u32]) -> usize {
        idx.iter().enumerate().fold(0usize, |k, (d, &i)| {
            k * self.regs_along(d) as usize + i as usize
        })
    }
    /// Static part of the coordinate of register index `i` along `d`
    /// (the coordinate is `static + t[d] * spt[d]`, modulo `shape[d]`).
    pub fn static_offset(&self, d: usize, i: u32) -> u32 {
        let rep = i / self.spt[d];
        let s = i % self.spt[d];
        rep * self.cov(d) + s
    }
    /// Stride of dimension `d`'s lane coordinate inside the lane id.
    pub fn lane_stride(&self, d: usize) -> u32 {
        self.tpw[d + 1..].iter().product()
    }
    pub fn warp_stride(&self, d: usize) -> u32 {
        self.wpc[d + 1..].iter().product()
    }
    /// This layout with the dimensions where `src` has size 1 collapsed
    /// to size 1: where a tile of `src`'s shape broadcast into this one is
    /// already held by the threads that read it (the lanes and warps along a
    /// collapsed dimension hold replicas).
    pub fn collapse(&self, src: &[u32]) -> Blocked {
        let mut keep = self.clone();
        for (d, &n) in src.iter().enumerate() {
            if n == 1 {
                keep.shape[d] = 1;
                keep.spt[d] = 1;
            }
        }
        keep
    }

    /// Whether `self` and `other` (whose shapes have the same non-unit dimensions)
    /// place every element in the same thread and register.
    pub fn same_map(&self, other: &Blocked) -> bool {
        fn squeeze(l: &Blocked) -> Vec<(u32, u32, u32, u32)> {
            (0..l.rank())
                .filter(|&d| l.shape[d] != 1 || l.tpw[d] != 1 || l.wpc[d] != 1)
                .map(|d| (l.shape[d], l.spt[d], l.tpw[d], l.wpc[d]))
                .collect()
        }
        squeeze(self) == squeeze(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every element of the tile is owned by exactly one (thread, register) pair.
    fn check_partition(shape: &[u32], warps: u32) {
        let l = Blocked::canonical(shape, warps);
        let numel: usize = shape.iter().map(|&d| d as usize).product();
        let mut owners = vec![0u32; numel];
        for tid in 0..32 * warps {
            let (lane, warp) = (tid % 32, tid / 32);
            let t: Vec<u32> = (0..l.rank())
                .map(|d| {
                    let ld = (lane / l.lane_stride(d)) % l.tpw[d];
                    let wd = (warp / l.warp_stride(d)) % l.wpc[d];
                    wd * l.tpw[d] + ld
                })
                .collect();
            let owner = (0..l.rank()).all(|d| t[d] < l.shape[d] / l.spt[d]);
            for k in 0..l.num_regs() {
                let idx = l.reg_index(k);
                assert_eq!(l.reg_number(&idx), k);
                let mut flat = 0usize;
                for d in 0..l.rank() {
                    let c = (l.static_offset(d, idx[d]) + t[d] * l.spt[d]) % l.shape[d];
                    flat = flat * l.shape[d] as usize + c as usize;
                }
                if owner {
                    owners[flat] += 1;
                }
            }
        }
        assert!(
            owners.iter().all(|&n| n == 1),
            "{shape:?} x {warps} warps: {l:?} owners {owners:?}"
        );
    }

    #[test]
    fn canonical_layouts_partition_their_tiles() {
        for warps in [1, 2, 4, 8] {
            for shape in [
                vec![1u32],
                vec![4],
                vec![64],
                vec![1024],
                vec![4096],
                vec![1, 1024],
                vec![16, 16],
                vec![4, 4],
                vec![128, 64],
                vec![64, 1],
                vec![2, 8, 32],
            ] {
                check_partition(&shape, warps);
            }
        }
    }

    /// A reduction's result layout (`Reduced`) keeps each result element
    /// in the threads whose source registers reduce to it: for every thread
    /// and result register, the coordinates off the axis are those of the
    /// source registers it combines, and the owners hold each result once.
    #[test]
    fn reduced_results_stay_with_their_source_rows() {
        let coord = |l: &Blocked, lane: u32, warp: u32, k: usize| -> (Vec<u32>, bool) {
            let idx = l.reg_index(k);
            let mut c = Vec::new();
            let mut own = true;
            for (d, &i) in idx.iter().enumerate().take(l.rank()) {
                let t = (warp / l.warp_stride(d)) % l.wpc[d] * l.tpw[d]
                    + (lane / l.lane_stride(d)) % l.tpw[d];
                own &= t < l.shape[d] / l.spt[d];
                c.push((l.static_offset(d, i) + t * l.spt[d]) % l.shape[d]);
            }
            (c, own)
        };
        for (shape, warps) in [
            (vec![8u32, 4, 4], 1u32),
            (vec![16, 2, 2], 1),
            (vec![4, 8, 8], 1),
            (vec![32, 8, 4, 4], 1),
            (vec![64, 32], 4),
            (vec![4, 1024], 4),
        ] {
            let src = Blocked::canonical(&shape, warps);
            for axis in 0..shape.len() {
                let Some(red) = Reduced::of(&src, axis) else {
                    assert!(src.wpc[axis] > 1);
                    continue;
                };
                let res: Vec<u32> = red.shape();
                let mut seen = vec![0; res.iter().product::<u32>() as usize];
                for tid in 0..32 * warps {
                    let (lane, warp) = (tid % 32, tid / 32);
                    for k in 0..red.keep.num_regs() {
                        let (mut c, own) = coord(&red.keep, lane, warp, k);
                        assert_eq!(c[axis], 0);
                        let key = red.keep.reg_index(k);
                        for j in 0..src.num_regs() {
                            let mut idx = src.reg_index(j);
                            idx[axis] = 0;
                            if idx == key {
                                let (mut sc, _) = coord(&src, lane, warp, j);
                                sc.remove(axis);
                                let mut rc = c.clone();
                                rc.remove(axis);
                                assert_eq!(sc, rc, "{shape:?} axis {axis} thread {tid} reg {k}");
                            }
                        }
                        if own {
                            c.remove(axis);
                            let flat = c.iter().zip(&res).fold(0, |f, (&x, &n)| f * n + x);
                            seen[flat as usize] += 1;
                        }
                    }
                }
                assert!(
                    seen.iter().all(|&n| n == 1),
                    "{shape:?} axis {axis}: {seen:?}"
                );
            }
        }
    }

    #[test]
    fn unit_dimensions_do_not_change_the_map() {
        let a = Blocked::canonical(&[1024], 4);
        let b = Blocked::canonical(&[1, 1024], 4);
        assert!(a.same_map(&b));
        assert!(!a.same_map(&Blocked::canonical(&[1024, 1], 4)));
    }
}

/// The register layout of `mma.sync.m16n8k16` accumulators: the `[M, N]` tile is
/// split over a `wm × wn` grid of warps, each owning `(M/wm) × (N/wn)`, i.e.
/// `mt × nt` fragments of 16×8; in each fragment lane `l` holds
/// `(g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)` with `g = l/4, q = l%4`.
///
/// With `warpgroups` (Hopper `wgmma`), warps come in groups of four, laid
/// over a `wm/4 × wn` grid of warpgroups; a warpgroup owns `(4·M/wm) × (N/wn)`
/// in blocks of 64 rows, warp `w` of the group rows `16w..16w+16` of each
/// block: the fragments of one warp are 64 rows apart, not 16. Per thread the
/// registers are those of `wgmma.m64nNk16`'s f32 accumulator, in its order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Mma {
    pub shape: Vec<u32>,
    pub wm: u32,
    pub wn: u32,
    pub warpgroups: bool,
}

impl Mma {
    /// The warp grid that uses the most warps and, among those, loads the
    /// fewest fragments per warp (a warp's `rows + cols`: its `ldmatrix`
    /// traffic per k-step), preferring more warps along M on ties.
    pub fn new(shape: &[u32], warps: u32) -> Mma {
        let (m, n) = (shape[0], shape[1]);
        let mut best = (1, 1);
        let key = |(wm, wn): (u32, u32)| (wm * wn, std::cmp::Reverse(m / wm + n / wn), wm);
        let mut wm = 1;
        while wm <= warps && wm <= (m / 16).max(1) {
            let wn = (warps / wm).min((n / 8).max(1));
            if key((wm, wn)) > key(best) {
                best = (wm, wn);
            }
            wm *= 2;
        }
        Mma {
            shape: shape.to_vec(),
            wm: best.0,
            wn: best.1,
            warpgroups: false,
        }
    }
    /// The `wgmma` accumulator layout over a `gm × gn` grid of warpgroups.
    pub fn warpgroups(shape: &[u32], gm: u32, gn: u32) -> Mma {
        Mma {
            shape: shape.to_vec(),
            wm: 4 * gm,
            wn: gn,
            warpgroups: true,
        }
    }
    #[cfg(test)]
    /// (row, col) where warp `w`'s part starts (lane `l` adds `(l/4, 2·(l%4))`);
    /// `thread_coords` emits the same arithmetic.
    #[cfg(test)]
    pub fn warp_base(&self, w: u32) -> (u32, u32) {
        if self.warpgroups {
            let (g, w4) = (w / 4, w % 4);
            let (gi, gj) = (g / self.wn, g % self.wn);
            (gi * 4 * self.warp_rows() + w4 * 16, gj * self.warp_cols())
        } else {
            let (wi, wj) = (w / self.wn, w % self.wn);
            (wi * self.warp_rows(), wj * self.warp_cols())
        }
    }
    /// Rows between a warp's successive 16-row fragments.
    pub fn frag_step(&self) -> u32 {
        if self.warpgroups {
            64
        } else {
            16
        }
    }
    pub fn warp_rows(&self) -> u32 {
        self.shape[0] / self.wm
    }
    pub fn warp_cols(&self) -> u32 {
        self.shape[1] / self.wn
    }
    pub fn mt(&self) -> u32 {
        self.warp_rows() / 16
    }
    pub fn nt(&self) -> u32 {
        self.warp_cols() / 8
    }
    pub fn num_regs(&self) -> usize {
        (self.mt() * self.nt() * 4) as usize
    }
    /// Register of fragment (i, j), element r (0..4).
    pub fn reg(&self, i: u32, j: u32, r: u32) -> usize {
        ((i * self.nt() + j) * 4 + r) as usize
    }
    /// Static (row, col) offset of register `k` from the thread's base row
    /// and column (`wi·rows + g, wj·cols + 2q` without warpgroups).
    pub fn static_offset(&self, k: usize) -> (u32, u32) {
        let k = k as u32;
        let (f, r) = (k / 4, k % 4);
        let (i, j) = (f / self.nt(), f % self.nt());
        (i * self.frag_step() + (r / 2) * 8, j * 8 + (r % 2))
    }
}

/// A row or column statistic of an accumulator: one value per row (`axis`
/// 1, what a reduction along the columns leaves) or per column (`axis` 0),
/// each thread holding those of the rows (columns) its accumulator
/// registers cover. Broadcasting it back (`x[:, None]`, `x[None, :]`, then a
/// broadcast to the parent's shape) only selects registers, and so do
/// elementwise ops between such statistics: the online softmax of attention
/// moves no data between threads through shared memory, nor do the
/// per-query `lse[None, :]` and `delta[None, :]` of its transposed backward.
///
/// Row statistics come from reductions ([`of`](Self::of)), only where the
/// reduction stays inside each warp, with one warpgroup along N (`wn` = 1):
/// the four lanes of a quad share a row. Column statistics are never
/// reduced into (that crosses the warps of a warpgroup): a load or
/// elementwise op read only through a column broadcast is computed in one
/// (`pull_layouts`), the registers of a thread being the columns
/// `2q, 2q + 1` of each 8-wide fragment. `keep` is the `[M, 1]` (`[1, N]`)
/// form after `expand_dims`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slice {
    pub parent: Mma,
    /// The axis the statistic does not run along: 1 for a value per row.
    pub axis: u32,
    pub keep: bool,
}

impl Slice {
    /// The slice of a reduction of `parent` along `axis`, where it stays
    /// in-warp.
    pub fn of(parent: &Mma, axis: u32) -> Option<Slice> {
        (axis == 1 && parent.wn == 1 && parent.warpgroups).then(|| Slice {
            parent: parent.clone(),
            axis: 1,
            keep: false,
        })
    }
    /// The `[N]` statistic of `parent`'s columns (any accumulator layout).
    pub fn columns(parent: &Mma) -> Slice {
        Slice {
            parent: parent.clone(),
            axis: 0,
            keep: false,
        }
    }
    pub fn shape(&self) -> Vec<u32> {
        let mut s = self.parent.shape.clone();
        if self.keep {
            s[self.axis as usize] = 1;
        } else {
            s.remove(self.axis as usize);
        }
        s
    }
    /// The dimension of [`shape`](Self::shape) the statistic runs along.
    pub fn dim(&self) -> usize {
        if self.keep {
            1 - self.axis as usize
        } else {
            0
        }
    }
    /// Rows: two registers per fragment row (rows g and g + 8 of each of the
    /// `mt` fragments). Columns: two per fragment column (2q and 2q + 1 of
    /// each of the `nt`).
    pub fn num_regs(&self) -> usize {
        if self.axis == 1 {
            2 * self.parent.mt() as usize
        } else {
            2 * self.parent.nt() as usize
        }
    }
    /// The accumulator layout of `[M, n]` that a row statistic broadcasts
    /// into: the parent's rows, any number of columns (attention's row max
    /// of the `[M, BN]` scores rescales the `[M, D]` output). A column
    /// statistic broadcasts into its parent only.
    pub fn broadcast_to(&self, n: u32) -> Mma {
        if self.axis == 0 {
            return self.parent.clone();
        }
        Mma {
            shape: vec![self.parent.shape[0], n],
            ..self.parent.clone()
        }
    }
    /// The slice register holding the statistic of register `k` of a tile
    /// in `m` (a [`broadcast_to`](Self::broadcast_to) layout).
    pub fn reg_of(&self, m: &Mma, k: usize) -> usize {
        let k = k as u32;
        let (f, r) = (k / 4, k % 4);
        if self.axis == 0 {
            (f % m.nt() * 2 + r % 2) as usize
        } else {
            (f / m.nt() * 2 + r / 2) as usize
        }
    }
    /// Static offset of slice register `k` from the thread's base row
    /// (column, for a column statistic).
    pub fn static_offset(&self, k: usize) -> u32 {
        let k = k as u32;
        if self.axis == 0 {
            (k / 2) * 8 + k % 2
        } else {
            (k / 2) * self.parent.frag_step() + (k % 2) * 8
        }
    }
}

/// A reduction's result where the reduction leaves it: `keep` is the
/// source's blocked layout with the reduced axis collapsed to size 1 (the
/// lanes along it, which the butterfly shuffles leave holding the same
/// total, become replicas), and the value's shape is `keep`'s without
/// `axis`. `x[:, None]` at that axis gives `keep` itself, and broadcasting
/// that back over the source's shape selects registers
/// (`convert::in_thread_broadcast`): a row or column statistic of a blocked
/// tile reduced across lanes (not warps) never goes through shared memory
/// (the per-token Sinkhorn-Knopp iterations of mHC's coefficients).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Reduced {
    pub keep: Blocked,
    pub axis: usize,
}

impl Reduced {
    /// The result layout of reducing `src` along `axis`, where no warps
    /// run along it (those need shared memory).
    pub fn of(src: &Blocked, axis: usize) -> Option<Reduced> {
        (src.rank() >= 2 && src.wpc[axis] == 1).then(|| {
            let mut keep = src.clone();
            keep.shape[axis] = 1;
            keep.spt[axis] = 1;
            Reduced { keep, axis }
        })
    }
    pub fn shape(&self) -> Vec<u32> {
        let mut s = self.keep.shape.clone();
        s.remove(self.axis);
        s
    }
    /// `keep` without the axis, where no lanes or warps ran along it (a
    /// reduction within each thread): then an ordinary blocked layout.
    pub fn plain(&self) -> Option<Blocked> {
        let k = &self.keep;
        let drop = |v: &[u32]| {
            let mut v = v.to_vec();
            v.remove(self.axis);
            v
        };
        (k.tpw[self.axis] == 1 && k.wpc[self.axis] == 1).then(|| Blocked {
            shape: drop(&k.shape),
            spt: drop(&k.spt),
            tpw: drop(&k.tpw),
            wpc: drop(&k.wpc),
        })
    }
}

/// A `dot` operand held in registers as the `mma.sync.m16n8k16` fragments
/// of the dot whose accumulator layout is `parent` (Triton's dot-operand
/// layout): `a` `[M, k]`, or `b` `[k, N]` when `b` is set. Each warp holds
/// its rows of `a` (its columns of `b`) over all of `k`; warps that share
/// them hold replicas. A load, cast or elementwise op feeding only such
/// operands computes straight into the fragments, so the multiply reads no
/// shared memory and needs no barrier for that operand.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Operand {
    pub parent: Mma,
    pub k: u32,
    pub b: bool,
}

impl Operand {
    pub fn shape(&self) -> Vec<u32> {
        match self.b {
            false => vec![self.parent.shape[0], self.k],
            true => vec![self.k, self.parent.shape[1]],
        }
    }
    /// 16-wide k steps.
    pub fn kt(&self) -> u32 {
        self.k / 16
    }
    /// Registers per fragment: eight of `a` (four 32-bit pairs), four of `b`.
    fn per_frag(&self) -> u32 {
        if self.b {
            4
        } else {
            8
        }
    }
    pub fn num_regs(&self) -> usize {
        let tiles = if self.b {
            self.parent.nt()
        } else {
            self.parent.mt()
        };
        (tiles * self.kt() * self.per_frag()) as usize
    }
    /// Register `r` of the fragment of row (of `a`) or column (of `b`) tile
    /// `t` at k step `ks`.
    pub fn reg(&self, t: u32, ks: u32, r: u32) -> usize {
        ((t * self.kt() + ks) * self.per_frag() + r) as usize
    }
    /// Static (row, col) offset of register `k` from the thread's base:
    /// `(wi·rows + g, 2q)` for `a`, `(2q, wj·cols + g)` for `b` (PTX ISA,
    /// "Matrix Fragments for mma.m16n8k16": a0,a1 at row g, columns 2q and
    /// 2q + 1; a2,a3 at row g + 8; a4..a7 the same 8 columns on; b0,b1 at
    /// rows 2q, 2q + 1 of column g; b2,b3 8 rows on).
    pub fn static_offset(&self, k: usize) -> (u32, u32) {
        let k = k as u32;
        let (f, r) = (k / self.per_frag(), k % self.per_frag());
        let (t, ks) = (f / self.kt(), f % self.kt());
        if self.b {
            (ks * 16 + r % 2 + 8 * (r / 2), t * 8)
        } else {
            (t * 16 + 8 * ((r / 2) % 2), ks * 16 + r % 2 + 8 * (r / 4))
        }
    }
}

/// The per-thread partials of a reduction of a blocked tile along `axis`
/// that a loop carries (`acc = acc + sum(x, axis)`): each register is what
/// the thread's own registers of `x` with the same coordinates off `axis`
/// combine to, not yet combined across lanes and warps. The loop's result
/// combines them once, after the loop, so the loop body has no shuffles and
/// no barriers for the reduction (mHC's per-token sums over C).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Partial {
    /// The layout of the reduced tile.
    pub src: Blocked,
    pub axis: usize,
    pub op: tile_ir::ReduceOp,
}

impl Partial {
    /// The register indices in `src` that the partials stand for, in the
    /// order the loop carries them ([`Blocked::reduced_keys`]).
    pub fn keys(&self) -> Vec<Vec<u32>> {
        self.src.reduced_keys(self.axis)
    }
    pub fn num_regs(&self) -> usize {
        self.src.num_regs() / self.src.regs_along(self.axis) as usize
    }
    pub fn shape(&self) -> Vec<u32> {
        let mut s = self.src.shape.clone();
        s.remove(self.axis);
        s
    }
}

/// Where a value's elements live.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    Blocked(Blocked),
    Mma(Mma),
    Slice(Slice),
    Partial(Partial),
    Operand(Operand),
    Reduced(Reduced),
}

impl Layout {
    pub fn num_regs(&self) -> usize {
        match self {
            Layout::Blocked(b) if b.rank() == 0 => 1,
            Layout::Blocked(b) => b.num_regs(),
            Layout::Mma(m) => m.num_regs(),
            Layout::Slice(s) => s.num_regs(),
            Layout::Partial(p) => p.num_regs(),
            Layout::Operand(o) => o.num_regs(),
            Layout::Reduced(r) => r.keep.num_regs(),
        }
    }
    pub fn shape(&self) -> Vec<u32> {
        match self {
            Layout::Blocked(b) => b.shape.clone(),
            Layout::Mma(m) => m.shape.clone(),
            Layout::Slice(s) => s.shape(),
            Layout::Partial(p) => p.shape(),
            Layout::Operand(o) => o.shape(),
            Layout::Reduced(r) => r.shape(),
        }
    }
    /// How many consecutive registers (from each multiple of it) hold
    /// consecutive elements along the last dimension: a blocked layout's
    /// `spt`; the column pairs of an accumulator and of an `a` operand.
    pub fn last_dim_run(&self) -> u32 {
        match self {
            Layout::Blocked(b) if b.rank() > 0 => b.spt[b.rank() - 1],
            Layout::Mma(_) | Layout::Operand(Operand { b: false, .. }) => 2,
            // Columns 2q and 2q + 1 of each fragment.
            Layout::Slice(s) if s.axis == 0 => 2,
            // A column vector's run along its last dimension is its tile's.
            Layout::Reduced(r) if r.axis + 1 < r.keep.rank() => r.keep.spt[r.keep.rank() - 1],
            _ => 1,
        }
    }
    /// Whether values in `self` can be used as `other` without moving data.
    pub fn same_map(&self, other: &Layout) -> bool {
        match (self, other) {
            (Layout::Blocked(a), Layout::Blocked(b)) => a.same_map(b),
            // `expand_dims` at the sliced dimension keeps every register.
            (Layout::Slice(a), Layout::Slice(b)) => a.parent == b.parent && a.axis == b.axis,
            // The reduced shape, or `keep`'s (an `expand_dims` at the axis).
            (Layout::Reduced(r), Layout::Blocked(b)) | (Layout::Blocked(b), Layout::Reduced(r)) => {
                r.keep.same_map(b) || r.plain().is_some_and(|p| p.same_map(b))
            }
            (a, b) => a == b,
        }
    }
}

#[cfg(test)]
mod mma_tests {
    use super::*;

    #[test]
    fn mma_layout_partitions_the_accumulator() {
        for (shape, warps) in [
            ([16u32, 8u32], 1u32),
            ([64, 64], 4),
            ([128, 128], 8),
            ([16, 64], 4),
            ([128, 32], 4),
        ] {
            check_partition(&Mma::new(&shape, warps));
        }
        for (shape, gm, gn) in [
            ([64u32, 128u32], 1u32, 1u32),
            ([128, 128], 1, 1),
            ([128, 256], 2, 1),
            ([64, 256], 1, 2),
            ([256, 128], 2, 2),
        ] {
            check_partition(&Mma::warpgroups(&shape, gm, gn));
        }
    }

    /// A row statistic sits where its rows are: for every thread, the row of
    /// each accumulator register (of the reduced tile, or of any tile it
    /// broadcasts into) is the row of the slice register it reads, and a
    /// thread's slice registers are distinct rows.
    #[test]
    fn slices_hold_the_rows_of_their_registers() {
        for (shape, gm) in [
            ([64u32, 64u32], 1u32),
            ([128, 64], 1),
            ([128, 32], 2),
            ([256, 128], 2),
        ] {
            let parent = Mma::warpgroups(&shape, gm, 1);
            let sl = Slice::of(&parent, 1).unwrap();
            for n in [8, 64, 128, 256] {
                let m = sl.broadcast_to(n);
                for w in 0..parent.wm {
                    let (base, _) = parent.warp_base(w);
                    assert_eq!(m.warp_base(w).0, base);
                    let rows: Vec<u32> = (0..sl.num_regs()).map(|k| sl.static_offset(k)).collect();
                    let mut distinct = rows.clone();
                    distinct.dedup();
                    assert_eq!(distinct.len(), rows.len(), "{parent:?}");
                    for k in 0..m.num_regs() {
                        assert_eq!(
                            m.static_offset(k).0,
                            rows[sl.reg_of(&m, k)],
                            "{m:?} register {k}"
                        );
                    }
                }
            }
        }
        let mma_sync = Mma::new(&[128, 64], 4);
        assert!(Slice::of(&mma_sync, 1).is_none(), "not tested on a GPU yet");
        assert!(
            Slice::of(&Mma::warpgroups(&[128, 128], 1, 2), 1).is_none(),
            "crosses warpgroups"
        );
    }

    /// A column statistic sits where its columns are, in `wgmma` and
    /// `mma.sync` accumulators alike: for every thread, the column of each
    /// accumulator register is the column of the slice register it reads;
    /// a thread's slice registers are distinct columns; and the threads at
    /// row 0 (the owners) hold every column once.
    #[test]
    fn column_slices_hold_the_columns_of_their_registers() {
        let parents = [
            Mma::warpgroups(&[64, 64], 1, 1),
            Mma::warpgroups(&[128, 64], 2, 1),
            Mma::warpgroups(&[64, 256], 1, 2),
            Mma::new(&[64, 64], 4),
            Mma::new(&[128, 128], 8),
            Mma::new(&[16, 64], 4),
        ];
        for m in parents {
            let sl = Slice::columns(&m);
            let mut owned = vec![0; m.shape[1] as usize];
            for w in 0..m.wm * m.wn {
                let (r0, c0) = m.warp_base(w);
                for lane in 0..32 {
                    let (g, q) = (lane / 4, lane % 4);
                    let cols: Vec<u32> = (0..sl.num_regs())
                        .map(|k| c0 + 2 * q + sl.static_offset(k))
                        .collect();
                    let mut distinct = cols.clone();
                    distinct.sort();
                    distinct.dedup();
                    assert_eq!(distinct.len(), cols.len(), "{m:?}");
                    for k in 0..m.num_regs() {
                        let col = c0 + 2 * q + m.static_offset(k).1;
                        assert_eq!(col, cols[sl.reg_of(&m, k)], "{m:?} register {k}");
                    }
                    if r0 + g == 0 {
                        for c in cols {
                            owned[c as usize] += 1;
                        }
                    }
                }
            }
            assert!(owned.iter().all(|&n| n == 1), "{m:?}: {owned:?}");
            assert_eq!(sl.broadcast_to(m.shape[1]), m);
            assert_eq!(sl.shape(), vec![m.shape[1]]);
            assert_eq!(Slice { keep: true, ..sl }.shape(), vec![1, m.shape[1]]);
        }
    }

    /// Each element of a register operand sits in exactly one thread of the
    /// warps that own it (`wj = 0` for `a`, `wi = 0` for `b`), and its
    /// registers pair up along k as `mma.sync` packs them (`a`: columns 2q,
    /// 2q + 1; `b`: rows 2q, 2q + 1).
    #[test]
    fn operand_fragments_partition_the_operands() {
        for (shape, warps) in [
            ([16u32, 8u32], 1u32),
            ([32, 64], 8),
            ([64, 64], 4),
            ([128, 128], 8),
        ] {
            let parent = Mma::new(&shape, warps);
            for k in [16, 32, 64] {
                for b in [false, true] {
                    let o = Operand {
                        parent: parent.clone(),
                        k,
                        b,
                    };
                    let sh = o.shape();
                    let mut seen = vec![0; (sh[0] * sh[1]) as usize];
                    for w in 0..parent.wm * parent.wn {
                        let (wi, wj) = (w / parent.wn, w % parent.wn);
                        if (b && wi != 0) || (!b && wj != 0) {
                            continue;
                        }
                        for lane in 0..32 {
                            let (g, q) = (lane / 4, lane % 4);
                            let (r0, c0) = match b {
                                false => (wi * parent.warp_rows() + g, 2 * q),
                                true => (2 * q, wj * parent.warp_cols() + g),
                            };
                            for r in 0..o.num_regs() {
                                let (dr, dc) = o.static_offset(r);
                                seen[((r0 + dr) * sh[1] + c0 + dc) as usize] += 1;
                                if r % 2 == 1 {
                                    let (pr, pc) = o.static_offset(r - 1);
                                    assert_eq!(
                                        (pr + b as u32, pc + !b as u32),
                                        (dr, dc),
                                        "{o:?} {r}"
                                    );
                                }
                            }
                        }
                    }
                    assert!(seen.iter().all(|&n| n == 1), "{o:?}");
                }
            }
        }
    }

    fn check_partition(m: &Mma) {
        let shape = &m.shape;
        let mut seen = vec![0; (shape[0] * shape[1]) as usize];
        for w in 0..m.wm * m.wn {
            for lane in 0..32 {
                let (g, q) = (lane / 4, lane % 4);
                let (r0, c0) = m.warp_base(w);
                for k in 0..m.num_regs() {
                    let (r, c) = m.static_offset(k);
                    let (row, col) = (r0 + g + r, c0 + 2 * q + c);
                    seen[(row * shape[1] + col) as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{m:?}");
    }
}
