//! The backward of a site: `post_backward`, `pre_backward` and each of its
//! kernels as a public step (see the parent module).

use super::{
    cdiv, grid1, padded_rows, GateGrads, Grads, Layer, LayerError, Mixing, Params, Result, Saved,
};
use crate::launch::mhc as k;
use tile_runtime::{Buffer, Scalar};

impl Layer {
    /// Backward of `post` given `g_out = ∂L/∂x'`: returns `(g_x, dy, dh)` where
    /// `g_x` starts the gradient of `x` (bf16, `pre_backward` adds to it),
    /// `dy = ∂L/∂y` (bf16) and `dh` holds ∂L/∂(H_post, H_res) per token (f32).
    pub fn post_backward(
        &self,
        saved: &Saved,
        x: &Buffer,
        y: &Buffer,
        g_out: &Buffer,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        let dev = self.device();
        let (t, n, c) = (saved.t, self.cfg.n, self.cfg.c);
        let mut g_x = dev.alloc_output(Scalar::BF16, t * n * c)?;
        let mut dy = dev.alloc_output(Scalar::BF16, t * c)?;
        let mut dh = dev.alloc_output(Scalar::F32, t * self.cfg.coeffs())?;
        self.post_backward_into(saved, x, y, g_out, &mut g_x, &mut dy, &mut dh)?;
        Ok((g_x, dy, dh))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn post_backward_into(
        &self,
        saved: &Saved,
        x: &Buffer,
        y: &Buffer,
        g_out: &Buffer,
        g_x: &mut Buffer,
        dy: &mut Buffer,
        dh: &mut Buffer,
    ) -> Result<()> {
        let t = saved.t;
        self.check_streams("x", x, t)?;
        self.check_rows("y", y, t)?;
        self.check_streams("g_out", g_out, t)?;
        self.check_streams("g_x", g_x, t)?;
        self.check_rows("dy", dy, t)?;
        self.check("dh", dh, Scalar::F32, t * self.cfg.coeffs())?;
        let (bc, warps) = POST_BWD_TILE;
        self.kernels.mhc_post_bwd(
            k::MhcPostBwdMeta {
                N: self.n(),
                BC: bc,
            },
            warps,
            grid1(t),
            k::MhcPostBwd {
                x,
                y,
                h: &saved.h,
                g: g_out,
                gx: g_x,
                dy,
                dh,
                C: self.cfg.c as i32,
            },
        )?;
        Ok(())
    }

    /// Backward of `pre` given `g_h = ∂L/∂h_in` and the `dh` of
    /// [`Layer::post_backward`]: adds the pre-apply and projection terms to
    /// `g_x` in place and the parameter gradients (summed over tokens,
    /// deterministically) to `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn pre_backward(
        &self,
        p: &Params,
        saved: &Saved,
        x: &Buffer,
        g_h: &Buffer,
        g_x: &mut Buffer,
        dh: &mut Buffer,
        grads: &mut Grads,
    ) -> Result<()> {
        self.apply_pre_backward(saved, x, g_h, g_x, dh)?;
        let cg = self.gates_backward(p, saved, dh)?;
        let mut part = self.alloc_partials(saved.t)?;
        self.project_backward_into(x, &cg, g_x, &mut part)?;
        self.reduce_grads(&cg, &part, dh, grads)
    }

    /// Kernel `mhc_pre_bwd`: ∂L/∂H_pre into `dh` and `H_pre · g_h` added to `g_x`.
    pub fn apply_pre_backward(
        &self,
        saved: &Saved,
        x: &Buffer,
        g_h: &Buffer,
        g_x: &mut Buffer,
        dh: &mut Buffer,
    ) -> Result<()> {
        let t = saved.t;
        let cfg = &self.cfg;
        self.check_streams("x", x, t)?;
        self.check_rows("g_h", g_h, t)?;
        self.check_streams("g_x", g_x, t)?;
        self.check("dh", dh, Scalar::F32, t * cfg.coeffs())?;
        let (bc, warps) = PRE_BWD_TILE;
        self.kernels.mhc_pre_bwd(
            k::MhcPreBwdMeta {
                N: self.n(),
                BC: bc,
            },
            warps,
            grid1(t),
            k::MhcPreBwd {
                x,
                h: &saved.h,
                gh: g_h,
                gx: g_x,
                dh,
                C: cfg.c as i32,
            },
        )?;
        Ok(())
    }

    /// Buffers for [`Layer::gates_backward_into`] at `t` tokens.
    pub fn alloc_gate_grads(&self, t: usize) -> Result<GateGrads> {
        let cfg = &self.cfg;
        let dev = self.device();
        let rows = t * cfg.rows_per_token();
        let rp = padded_rows(cfg.proj_rows()) as usize;
        // Written whole by the gates' backward (padding as zeros).
        Ok(GateGrads {
            dz2: dev.alloc_output(Scalar::BF16, 2 * rp * rows)?,
            dzt: dev.alloc_output(Scalar::BF16, 2 * rp * rows)?,
            phi3: dev.alloc_output(Scalar::BF16, 3 * rp * cfg.proj_cols())?,
            q: dev.alloc_output(Scalar::F32, rows)?,
            shares: dev.alloc_output(Scalar::F32, self.share_len(t))?,
        })
    }

    /// dz's and the projection's bf16 parts in `g`, for `rows` rows.
    fn check_parts(&self, g: &GateGrads, rows: usize) -> Result<()> {
        let rp = padded_rows(self.cfg.proj_rows()) as usize;
        self.check("dz2", &g.dz2, Scalar::BF16, 2 * rp * rows)?;
        self.check("dzt", &g.dzt, Scalar::BF16, 2 * rp * rows)?;
        self.check("phi3", &g.phi3, Scalar::BF16, 3 * rp * self.cfg.proj_cols())
    }

    /// Length of [`GateGrads::shares`] at `t` tokens.
    fn share_len(&self, t: usize) -> usize {
        match self.cfg.mixing {
            Mixing::Mhc => self.coeff_programs(t) * (self.cfg.coeffs() + 3),
            Mixing::Hc => t * 3,
        }
    }

    /// Kernel `mhc_coeffs_bwd` (Sinkhorn-Knopp backward, recomputed on chip) or
    /// `hc_coeffs_bwd`: per-token gradients of the projection and the gates.
    pub fn gates_backward(&self, p: &Params, saved: &Saved, dh: &Buffer) -> Result<GateGrads> {
        let mut g = self.alloc_gate_grads(saved.t)?;
        self.gates_backward_into(p, saved, dh, &mut g)?;
        Ok(g)
    }

    pub fn gates_backward_into(
        &self,
        p: &Params,
        saved: &Saved,
        dh: &Buffer,
        g: &mut GateGrads,
    ) -> Result<()> {
        let (t, cfg) = (saved.t, &self.cfg);
        self.check("dh", dh, Scalar::F32, t * cfg.coeffs())?;
        let rows = t * cfg.rows_per_token();
        let rp = padded_rows(cfg.proj_rows());
        self.check_parts(g, rows)?;
        self.check_proj(p)?;
        self.check("q", &g.q, Scalar::F32, rows)?;
        let phi_programs = cdiv(cfg.proj_cols(), PHI_SPLIT_COLUMNS as usize);
        self.check("shares", &g.shares, Scalar::F32, self.share_len(t))?;
        match cfg.mixing {
            Mixing::Mhc => self.kernels.mhc_coeffs_bwd(
                k::MhcCoeffsBwdMeta {
                    N: self.n(),
                    BT: self.coeff_tokens() as i64,
                    ITERS: cfg.iters as i64,
                    SEG: SINKHORN_SEGMENT,
                    HIST: hist_slots(cfg.iters),
                    RP: rp,
                    BK: PHI_SPLIT_COLUMNS,
                },
                1,
                grid1(self.coeff_programs(t) + phi_programs),
                k::MhcCoeffsBwd {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    b: &p.b,
                    h: &saved.h,
                    dh,
                    phi: &p.proj,
                    q: &g.q,
                    part: &g.shares,
                    dz2: &g.dz2,
                    dzt: &g.dzt,
                    phi3: &g.phi3,
                    T: t as i32,
                    K: cfg.proj_cols() as i32,
                    eps: cfg.eps,
                },
            )?,
            Mixing::Hc => self.kernels.hc_coeffs_bwd(
                k::HcCoeffsBwdMeta {
                    N: self.n(),
                    RP: rp,
                    BK: PHI_SPLIT_COLUMNS,
                },
                1,
                grid1(t + phi_programs),
                k::HcCoeffsBwd {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    dh,
                    phi: &p.proj,
                    q: &g.q,
                    dalpha: &g.shares,
                    dz2: &g.dz2,
                    dzt: &g.dzt,
                    phi3: &g.phi3,
                    rows: rows as i32,
                    C: cfg.c as i32,
                },
            )?,
        }
        Ok(())
    }

    /// The per-program partial sums of the projection's gradient that
    /// [`Layer::project_backward_into`] writes (`[programs, rows, cols]`) and their count.
    pub fn alloc_partials(&self, t: usize) -> Result<(Buffer, usize)> {
        let cfg = &self.cfg;
        let (_, programs) = self.proj_split(t * cfg.rows_per_token());
        let part = self
            .device()
            .alloc_output(Scalar::F32, programs * cfg.proj_rows() * cfg.proj_cols())?;
        Ok((part, programs))
    }

    /// Rows per program and programs of the projection backward.
    fn proj_split(&self, rows: usize) -> (usize, usize) {
        let tile = PROJ_BWD_TILE;
        let programs = self.proj_programs(rows, tile);
        let group = cdiv(cdiv(rows, programs), tile.0) * tile.0;
        (group, cdiv(rows, group))
    }

    /// Kernel `mhc_proj_bwd` (at n = 8 `mhc_proj_bwd_dx`, then
    /// `mhc_proj_bwd_dphi`): `projᵀ·dz − q·x` added to `g_x` in place, and
    /// the per-program partial sums of the projection's gradient into `part`,
    /// from [`Layer::alloc_partials`], which [`Layer::reduce_grads`] sums; dz
    /// and the projection come as bf16 parts from the gates' backward.
    pub fn project_backward_into(
        &self,
        x: &Buffer,
        g: &GateGrads,
        g_x: &mut Buffer,
        part: &mut (Buffer, usize),
    ) -> Result<()> {
        let cfg = &self.cfg;
        let rows = g.q.len();
        let (group, programs) = self.proj_split(rows);
        let (pr, pc) = (cfg.proj_rows(), cfg.proj_cols());
        if part.1 != programs {
            return Err(LayerError::Shape(format!(
                "partials for {} programs, need {programs}",
                part.1
            )));
        }
        self.check("partials", &part.0, Scalar::F32, programs * pr * pc)?;
        self.check_streams("g_x", g_x, rows / cfg.rows_per_token())?;
        let rp = padded_rows(pr);
        self.check_parts(g, rows)?;
        let (bt, bk) = PROJ_BWD_TILE;
        if rp >= 128 {
            // n = 8: g_x one tile a program, then the partials' row loop
            // (the one pass rereads dz for every column block; see the kernels).
            self.kernels.mhc_proj_bwd_dx(
                k::MhcProjBwdDxMeta {
                    RP: rp,
                    BT: bt as i64,
                    BK: bk as i64,
                },
                4,
                [cdiv(rows, bt) as u32, cdiv(pc, bk) as u32, 1],
                k::MhcProjBwdDx {
                    x,
                    phi3: &g.phi3,
                    dz2: &g.dz2,
                    q: &g.q,
                    gx: g_x,
                    rows: rows as i32,
                    K: pc as i32,
                },
            )?;
            self.kernels.mhc_proj_bwd_dphi(
                k::MhcProjBwdDphiMeta {
                    RP: rp,
                    BT: bt as i64,
                    BK: bk as i64,
                },
                4,
                [programs as u32, cdiv(pc, bk) as u32, 1],
                k::MhcProjBwdDphi {
                    x,
                    dzt: &g.dzt,
                    part: &part.0,
                    rows: rows as i32,
                    K: pc as i32,
                    R: pr as i32,
                    group: group as i32,
                },
            )?;
            return Ok(());
        }
        self.kernels.mhc_proj_bwd(
            k::MhcProjBwdMeta {
                RP: rp,
                BT: bt as i64,
                BK: bk as i64,
            },
            4,
            [programs as u32, cdiv(pc, bk) as u32, 1],
            k::MhcProjBwd {
                x,
                phi3: &g.phi3,
                dz2: &g.dz2,
                dzt: &g.dzt,
                q: &g.q,
                gx: g_x,
                part: &part.0,
                rows: rows as i32,
                K: pc as i32,
                R: pr as i32,
                group: group as i32,
            },
        )?;
        Ok(())
    }

    /// The parameter gradients summed over tokens (kernel `mhc_sum_rows`, fixed
    /// order) and added to `grads`: the projection's from the partials, the
    /// biases' and α's from the shares in one sum (mHC), HC's biases' from dh.
    pub fn reduce_grads(
        &self,
        g: &GateGrads,
        part: &(Buffer, usize),
        dh: &Buffer,
        grads: &mut Grads,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let t = g.q.len() / cfg.rows_per_token();
        self.check("shares", &g.shares, Scalar::F32, self.share_len(t))?;
        self.sum_rows(
            &part.0,
            part.1,
            cfg.proj_rows() * cfg.proj_cols(),
            &mut grads.proj,
        )?;
        match cfg.mixing {
            Mixing::Mhc => {
                let l = cfg.coeffs() + 3;
                let p = g.shares.len() / l;
                self.sum_rows_into(&g.shares, p, l, &mut grads.b, Some(&mut grads.alpha))
            }
            Mixing::Hc => {
                self.check("dh", dh, Scalar::F32, t * cfg.coeffs())?;
                self.sum_rows(dh, t, cfg.coeffs(), &mut grads.b)?;
                self.sum_rows(&g.shares, t, 3, &mut grads.alpha)
            }
        }
    }

    /// How many programs share the projection backward's rows (each writes
    /// its own partial dφ): with the column blocks, about four programs per
    /// SM, so the partials stay a few MB however many tokens there are.
    fn proj_programs(&self, rows: usize, tile: (usize, usize)) -> usize {
        let col_blocks = cdiv(self.cfg.proj_cols(), tile.1);
        cdiv(4 * self.device().parallelism(), col_blocks)
            .min(cdiv(rows, tile.0))
            .max(1)
    }

    /// `dst[l] += Σ_p src[p, l]`, in a fixed order (two stages for many rows).
    pub fn sum_rows(&self, src: &Buffer, p: usize, l: usize, dst: &mut Buffer) -> Result<()> {
        self.sum_rows_into(src, p, l, dst, None)
    }

    /// [`Layer::sum_rows`] into two parameters: the first `dst.len()` of the
    /// `l` columns into `dst`, the others into `rest`.
    pub fn sum_rows_into(
        &self,
        src: &Buffer,
        p: usize,
        l: usize,
        dst: &mut Buffer,
        rest: Option<&mut Buffer>,
    ) -> Result<()> {
        let split = if rest.is_some() { dst.len() } else { l };
        if split > l || rest.as_ref().is_some_and(|r| r.len() != l - split) {
            return Err(LayerError::Shape(format!(
                "sums of {l} columns into {split} and {} values",
                rest.as_ref().map_or(0, |r| r.len())
            )));
        }
        self.check("src", src, Scalar::F32, p * l)?;
        // Narrow sums (the biases' and α's) take 32 columns and 32 rows a
        // step: a 256-column tile would leave most lanes masked off and
        // walk the rows 8 at a time.
        let (bl, bp) = if l <= 32 { (32, 32) } else { (256, 8) };
        let launch = |src: &Buffer,
                      dst: &Buffer,
                      dst2: &Buffer,
                      split: usize,
                      p: usize,
                      splits: usize,
                      accumulate: bool| {
            self.kernels.mhc_sum_rows(
                k::MhcSumRowsMeta {
                    BL: bl as i64,
                    BP: bp,
                },
                4,
                [cdiv(l, bl) as u32, splits as u32, 1],
                k::MhcSumRows {
                    src,
                    dst,
                    dst2,
                    P: p as i32,
                    L: l as i32,
                    split: split as i32,
                    rows_per_split: cdiv(p, splits) as i32,
                    accumulate: accumulate as i32,
                },
            )
        };
        let staged = if let Some(rows) = split_rows(p, bp as usize) {
            let splits = cdiv(p, rows);
            let stage = self.device().alloc_output(Scalar::F32, splits * l)?;
            launch(src, &stage, &stage, l, p, splits, false)?;
            Some((stage, splits))
        } else {
            None
        };
        let (src, p) = staged.as_ref().map_or((src, p), |(s, n)| (s, *n));
        let dst2: &Buffer = match &rest {
            Some(r) => r,
            None => dst,
        };
        launch(src, dst, dst2, split, p, 1, true)?;
        Ok(())
    }
}

/// How `mhc_sum_rows` sums `p` rows, `bp` a step: `None` for one stage
/// (a program walks them all), else the rows of a first-stage program. A
/// program's steps run one after another, each waiting for its loads, so
/// more than SINGLE_STAGE_STEPS take two stages, whose steps together are
/// the fewest: at T = 8192, n = 4 the 1,024 rows of db and dα shares take 32
/// programs of one step and then one of one, where 256-row splits took 8
/// steps and then 1.
fn split_rows(p: usize, bp: usize) -> Option<usize> {
    let steps = cdiv(p, bp);
    if steps <= SINGLE_STAGE_STEPS {
        return None;
    }
    (1..=steps)
        .min_by_key(|&s| s + cdiv(cdiv(p, s * bp), bp))
        .map(|s| s * bp)
}

/// The most steps one program of `mhc_sum_rows` takes alone (see `split_rows`).
const SINGLE_STAGE_STEPS: usize = 8;

/// Columns of the projection a φ-splitting program of the gates' backward
/// takes (its `BK`; why 32: `store_phi_parts` in mhc.tile). ptxas 12.9,
/// sm_90a: `mhc_coeffs_bwd` 64 / 96 / 168 registers at n = 2 / 4 / 8, no
/// spills.
const PHI_SPLIT_COLUMNS: i64 = 32;

// Tiles of the backward kernels, measured with mhc-bench on the H200 at
// T ∈ {8192, 65536} × C ∈ {768, 4096}, n = 4 (session 15, docs/BENCHMARKS.md):
// the best of 2–6 candidates at every shape but one (post at 8192 × 4096,
// 2% behind 1024 columns on 4 warps).

/// `mhc_proj_bwd`'s rows a step and columns a program (its tune block;
/// tile-tune, session 33), and at 128 padded rows of the projection (n = 8)
/// those of `mhc_proj_bwd_dx` and `mhc_proj_bwd_dphi`: 64 × 64 for all.
const PROJ_BWD_TILE: (usize, usize) = (64, 64);

/// `mhc_post_bwd`'s columns a step and its warps: one warp a token, so
/// its sums over C cross lanes only (1024 columns on 4 warps: 1.2–1.4×
/// slower at C = 768).
const POST_BWD_TILE: (i64, u32) = (256, 1);

/// `mhc_pre_bwd`'s columns a step and its warps (512 on 8: 1.1–1.5× slower).
const PRE_BWD_TILE: (i64, u32) = (256, 4);

/// Sinkhorn iterations per checkpoint of `mhc_coeffs_bwd`'s history (the
/// others are recomputed; its tune block).
const SINKHORN_SEGMENT: i64 = 2;

/// Slots of the Sinkhorn history tile: a power of two ≥ the checkpoints.
fn hist_slots(iters: usize) -> i64 {
    iters
        .max(1)
        .div_ceil(SINKHORN_SEGMENT as usize)
        .next_power_of_two() as i64
}
