//! One hyper-connection site (mHC or HC) on a device: forward (`pre`, `post`),
//! backward (`post_backward`, `pre_backward`) and the recompute of a block of
//! sites, each a short sequence of pack kernels (see kernels/mhc/mhc.tile).
//!
//! Streams `x` are bf16 `[T, n, C]`; `h_in` and `y` bf16 `[T, C]`; parameters
//! and coefficients f32. The caller owns every activation buffer: a site keeps
//! only [`Saved`] (the per-token coefficients) for its backward.

use crate::kernels::{KernelError, KernelSet};
use crate::launch::mhc as k;
use std::sync::Arc;
use tile_runtime::{Buffer, Device, Scalar};

/// The residual mixing of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mixing {
    /// Manifold-constrained: sigmoid gates and a doubly stochastic H_res (Sinkhorn-Knopp).
    Mhc,
    /// Unconstrained hyper-connections: α·tanh(θ·RMSNorm(x)) + b, per stream.
    Hc,
}

/// Shape and hyper-parameters of a site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteConfig {
    pub mixing: Mixing,
    /// Streams (2, 4 or 8).
    pub n: usize,
    /// Model width.
    pub c: usize,
    /// Sinkhorn-Knopp iterations (mHC).
    pub iters: usize,
    /// Added to every Sinkhorn-Knopp sum.
    pub eps: f32,
}

impl SiteConfig {
    pub fn new(mixing: Mixing, n: usize, c: usize) -> SiteConfig {
        SiteConfig {
            mixing,
            n,
            c,
            iters: 20,
            eps: 1e-6,
        }
    }

    /// Coefficients per token: n pre, n post, n² res.
    pub fn coeffs(&self) -> usize {
        self.n * self.n + 2 * self.n
    }

    /// Rows of the projection matrix (φ for mHC, θ for HC).
    pub fn proj_rows(&self) -> usize {
        match self.mixing {
            Mixing::Mhc => self.coeffs(),
            Mixing::Hc => self.n + 2,
        }
    }

    /// Columns of the projection matrix (its reduction length).
    pub fn proj_cols(&self) -> usize {
        match self.mixing {
            Mixing::Mhc => self.n * self.c,
            Mixing::Hc => self.c,
        }
    }

    /// Projection rows per token (one per token for mHC, one per stream for HC).
    fn rows_per_token(&self) -> usize {
        match self.mixing {
            Mixing::Mhc => 1,
            Mixing::Hc => self.n,
        }
    }
}

/// Learned parameters of a site (f32): the projection (φ `[n²+2n, n·C]` for
/// mHC, θ `[n+2, C]` for HC), the gates α `[3]` and biases b `[n²+2n]`.
pub struct Params {
    pub proj: Buffer,
    pub alpha: Buffer,
    pub b: Buffer,
}

/// Gradients of [`Params`], same shapes; the backward adds into them.
pub type Grads = Params;

/// What a site keeps from its forward for the backward (f32, small):
/// projections z, RMSNorm factors r and the coefficients h of every token.
pub struct Saved {
    pub t: usize,
    pub z: Buffer,
    pub r: Buffer,
    pub h: Buffer,
}

/// Per-token gradients from the gates' backward (f32): of the projection
/// outputs dz, the RMSNorm term q = dr·r³/K, the token's share of dα, and
/// (mHC) dm = ∂L/∂m, the bias gradient per token.
pub struct GateGrads {
    pub dz: Buffer,
    pub q: Buffer,
    pub dalpha: Buffer,
    pub dm: Option<Buffer>,
}

/// Errors of the layer: bad shapes or a failing kernel.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runtime(#[from] tile_runtime::RuntimeError),
    #[error("{0}")]
    Shape(String),
}

type Result<T> = std::result::Result<T, LayerError>;

/// One mHC or HC site on the device of its kernel set.
pub struct Layer {
    kernels: Arc<KernelSet>,
    cfg: SiteConfig,
}

const PROJ_BT: usize = 64;
const APPLY_BC: usize = 1024;

fn padded_rows(r: usize) -> i64 {
    match r {
        0..=16 => 16,
        17..=32 => 32,
        _ => 128,
    }
}

fn cdiv(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

fn grid1(x: usize) -> [u32; 3] {
    [x as u32, 1, 1]
}

impl Layer {
    pub fn new(kernels: Arc<KernelSet>, cfg: SiteConfig) -> Result<Layer> {
        if ![2, 4, 8].contains(&cfg.n) {
            return Err(LayerError::Shape(format!(
                "{} streams: the pack has kernels for n = 2, 4 or 8",
                cfg.n
            )));
        }
        if cfg.c == 0 {
            return Err(LayerError::Shape("width C must be positive".into()));
        }
        if cfg.proj_rows() > 128 {
            return Err(LayerError::Shape("at most 128 projection rows".into()));
        }
        Ok(Layer { kernels, cfg })
    }

    pub fn config(&self) -> &SiteConfig {
        &self.cfg
    }

    pub fn kernels(&self) -> &Arc<KernelSet> {
        &self.kernels
    }

    fn device(&self) -> &Device {
        self.kernels.device()
    }

    fn n(&self) -> i64 {
        self.cfg.n as i64
    }

    fn check(&self, what: &str, b: &Buffer, dtype: Scalar, len: usize) -> Result<()> {
        if b.dtype() != dtype || b.len() < len {
            return Err(LayerError::Shape(format!(
                "{what}: expected a {} buffer of at least {len} elements, got {} of {}",
                dtype.name(),
                b.dtype().name(),
                b.len()
            )));
        }
        Ok(())
    }

    fn check_streams(&self, what: &str, b: &Buffer, t: usize) -> Result<()> {
        self.check(what, b, Scalar::BF16, t * self.cfg.n * self.cfg.c)
    }

    fn check_rows(&self, what: &str, b: &Buffer, t: usize) -> Result<()> {
        self.check(what, b, Scalar::BF16, t * self.cfg.c)
    }

    /// Parameters initialised so that a fresh site behaves like a plain
    /// residual (mhc-spec.md): α = 0.01; mHC: b_pre = logit(1/n), b_post = 0,
    /// b_res = `RES_DIAG` on the diagonal and 0 elsewhere, φ ~ N(0, 0.02²)·…;
    /// HC: H_pre = one-hot of stream `site mod n`, H_post = 1, H_res = I.
    pub fn init_params(&self, seed: u64, site: usize) -> Result<Params> {
        let (n, r) = (self.cfg.n, self.cfg.coeffs());
        let mut b = vec![0.0f32; r];
        match self.cfg.mixing {
            Mixing::Mhc => {
                let logit = (1.0 / n as f32 / (1.0 - 1.0 / n as f32)).ln();
                b[..n].iter_mut().for_each(|v| *v = logit);
                for j in 0..n {
                    b[2 * n + j * n + j] = RES_DIAG;
                }
            }
            Mixing::Hc => {
                b[site % n] = 1.0;
                b[n..2 * n].iter_mut().for_each(|v| *v = 1.0);
                for j in 0..n {
                    b[2 * n + j * n + j] = 1.0;
                }
            }
        }
        let len = self.cfg.proj_rows() * self.cfg.proj_cols();
        let proj = normal_f32(seed, len, 0.02);
        let dev = self.device();
        Ok(Params {
            proj: dev.upload(&proj)?,
            alpha: dev.upload(&[0.01f32; 3])?,
            b: dev.upload(&b)?,
        })
    }

    /// Zero gradients.
    pub fn zero_grads(&self) -> Result<Grads> {
        let dev = self.device();
        Ok(Params {
            proj: dev.alloc(Scalar::F32, self.cfg.proj_rows() * self.cfg.proj_cols())?,
            alpha: dev.alloc(Scalar::F32, 3)?,
            b: dev.alloc(Scalar::F32, self.cfg.coeffs())?,
        })
    }

    /// Buffers for a site's [`Saved`] tensors at `t` tokens.
    pub fn alloc_saved(&self, t: usize) -> Result<Saved> {
        let dev = self.device();
        let rows = t * self.cfg.rows_per_token();
        Ok(Saved {
            t,
            z: dev.alloc_output(Scalar::F32, rows * self.cfg.proj_rows())?,
            r: dev.alloc_output(Scalar::F32, rows)?,
            h: dev.alloc_output(Scalar::F32, t * self.cfg.coeffs())?,
        })
    }

    /// Forward, first half: coefficients of every token and `h_in = H_pre · x`.
    pub fn pre(&self, p: &Params, x: &Buffer, t: usize) -> Result<(Buffer, Saved)> {
        let mut saved = self.alloc_saved(t)?;
        let mut h_in = self.device().alloc_output(Scalar::BF16, t * self.cfg.c)?;
        self.pre_into(p, x, &mut saved, &mut h_in)?;
        Ok((h_in, saved))
    }

    /// [`Layer::pre`] into caller-provided buffers.
    pub fn pre_into(
        &self,
        p: &Params,
        x: &Buffer,
        saved: &mut Saved,
        h_in: &mut Buffer,
    ) -> Result<()> {
        let t = saved.t;
        self.check_streams("x", x, t)?;
        self.check_rows("h_in", h_in, t)?;
        self.coefficients(p, x, saved)?;
        self.apply_pre(x, &saved.h, h_in, t)
    }

    /// The coefficients of every token into `saved` (projection, then gates and Sinkhorn-Knopp).
    pub fn coefficients(&self, p: &Params, x: &Buffer, saved: &mut Saved) -> Result<()> {
        self.project(p, x, saved)?;
        self.gates(p, saved)
    }

    /// Kernels `mhc_proj_split` (φ as transposed bf16 high and low parts) and
    /// `mhc_proj`: z = proj · x and the RMSNorm factors r, one pass over x.
    pub fn project(&self, p: &Params, x: &Buffer, saved: &mut Saved) -> Result<()> {
        let t = saved.t;
        let cfg = &self.cfg;
        self.check_streams("x", x, t)?;
        self.check(
            "proj",
            &p.proj,
            Scalar::F32,
            cfg.proj_rows() * cfg.proj_cols(),
        )?;
        let rows = t * cfg.rows_per_token();
        let rp = padded_rows(cfg.proj_rows());
        // Both parts are written whole by the split (padding columns as zeros).
        let hilo = self
            .device()
            .alloc_output(Scalar::BF16, 2 * cfg.proj_cols() * rp as usize)?;
        self.kernels.mhc_proj_split(
            k::MhcProjSplitMeta { RP: rp, BK: 64 },
            4,
            grid1(cdiv(cfg.proj_cols(), 64)),
            k::MhcProjSplit {
                phi: &p.proj,
                hilo: &hilo,
                K: cfg.proj_cols() as i32,
                R: cfg.proj_rows() as i32,
            },
        )?;
        // The largest token block that still gives two programs per SM (a
        // smaller block re-reads φ more often, from L2).
        let target = 2 * self.device().parallelism();
        let bt = [64, 32, 16]
            .into_iter()
            .find(|&b| cdiv(rows, b) >= target)
            .unwrap_or(16);
        self.kernels.mhc_proj(
            k::MhcProjMeta {
                RP: rp,
                BT: bt as i64,
                BK: 64,
            },
            4,
            grid1(cdiv(rows, bt)),
            k::MhcProj {
                x,
                hilo: &hilo,
                z: &saved.z,
                r: &saved.r,
                rows: rows as i32,
                K: cfg.proj_cols() as i32,
                R: cfg.proj_rows() as i32,
            },
        )?;
        Ok(())
    }

    /// Kernel `mhc_coeffs` (sigmoids, Sinkhorn-Knopp) or `hc_coeffs` (tanh): h from z and r.
    pub fn gates(&self, p: &Params, saved: &mut Saved) -> Result<()> {
        let (t, cfg) = (saved.t, &self.cfg);
        self.check("alpha", &p.alpha, Scalar::F32, 3)?;
        self.check("b", &p.b, Scalar::F32, cfg.coeffs())?;
        match cfg.mixing {
            Mixing::Mhc => self.kernels.mhc_coeffs(
                k::MhcCoeffsMeta {
                    N: self.n(),
                    ITERS: cfg.iters as i64,
                },
                1,
                grid1(t),
                k::MhcCoeffs {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    b: &p.b,
                    h: &saved.h,
                    eps: cfg.eps,
                },
            )?,
            Mixing::Hc => self.kernels.hc_coeffs(
                k::HcCoeffsMeta { N: self.n() },
                1,
                grid1(t),
                k::HcCoeffs {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    b: &p.b,
                    h: &saved.h,
                },
            )?,
        }
        Ok(())
    }

    fn apply_grid(&self, t: usize) -> [u32; 3] {
        [t as u32, cdiv(self.cfg.c, APPLY_BC) as u32, 1]
    }

    /// `h_in = H_pre · x` with coefficients `h`.
    pub fn apply_pre(&self, x: &Buffer, h: &Buffer, h_in: &mut Buffer, t: usize) -> Result<()> {
        self.kernels.mhc_pre_apply(
            k::MhcPreApplyMeta {
                N: self.n(),
                BC: APPLY_BC as i64,
            },
            // 8 warps: 87% → 99.6% of copy bandwidth at T = 65536, C = 4096 (H200).
            8,
            self.apply_grid(t),
            k::MhcPreApply {
                x,
                h,
                hin: h_in,
                C: self.cfg.c as i32,
            },
        )?;
        Ok(())
    }

    /// Forward, second half: `x' = H_res · x + H_postᵀ · y`.
    pub fn post(&self, saved: &Saved, x: &Buffer, y: &Buffer) -> Result<Buffer> {
        let mut out = self
            .device()
            .alloc_output(Scalar::BF16, saved.t * self.cfg.n * self.cfg.c)?;
        self.post_into(saved, x, y, &mut out)?;
        Ok(out)
    }

    pub fn post_into(&self, saved: &Saved, x: &Buffer, y: &Buffer, out: &mut Buffer) -> Result<()> {
        let t = saved.t;
        self.check_streams("x", x, t)?;
        self.check_rows("y", y, t)?;
        self.check_streams("x_out", out, t)?;
        self.kernels.mhc_post(
            k::MhcPostMeta {
                N: self.n(),
                BC: APPLY_BC as i64,
            },
            4,
            self.apply_grid(t),
            k::MhcPost {
                x,
                y,
                h: &saved.h,
                xo: out,
                C: self.cfg.c as i32,
            },
        )?;
        Ok(())
    }

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
        self.kernels.mhc_post_bwd(
            k::MhcPostBwdMeta {
                N: self.n(),
                BC: APPLY_BC as i64,
            },
            4,
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
        self.project_backward_into(p, x, &cg, g_x, &mut part)?;
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
        self.kernels.mhc_pre_bwd(
            // 512-column steps: half the registers of 1024 (96 vs 154 a
            // thread), 45% → 65% of copy bandwidth at T = 65536, C = 4096.
            k::MhcPreBwdMeta {
                N: self.n(),
                BC: 512,
            },
            4,
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
        Ok(GateGrads {
            dz: dev.alloc_output(Scalar::F32, rows * cfg.proj_rows())?,
            q: dev.alloc_output(Scalar::F32, rows)?,
            dalpha: dev.alloc_output(Scalar::F32, t * 3)?,
            dm: match cfg.mixing {
                Mixing::Mhc => Some(dev.alloc_output(Scalar::F32, t * cfg.coeffs())?),
                Mixing::Hc => None,
            },
        })
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
        self.check("dalpha", &g.dalpha, Scalar::F32, t * 3)?;
        match &g.dm {
            Some(dm) => self.kernels.mhc_coeffs_bwd(
                k::MhcCoeffsBwdMeta {
                    N: self.n(),
                    ITERS: cfg.iters as i64,
                    HIST: hist_slots(cfg.iters),
                },
                1,
                grid1(t),
                k::MhcCoeffsBwd {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    b: &p.b,
                    h: &saved.h,
                    dh,
                    dm,
                    dz: &g.dz,
                    q: &g.q,
                    dalpha: &g.dalpha,
                    K: cfg.proj_cols() as i32,
                    eps: cfg.eps,
                },
            )?,
            None => self.kernels.hc_coeffs_bwd(
                k::HcCoeffsBwdMeta { N: self.n() },
                1,
                grid1(t),
                k::HcCoeffsBwd {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    dh,
                    dz: &g.dz,
                    q: &g.q,
                    dalpha: &g.dalpha,
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
        let programs = self.proj_programs(rows);
        let group = cdiv(cdiv(rows, programs), PROJ_BT) * PROJ_BT;
        (group, cdiv(rows, group))
    }

    /// Kernels `mhc_proj_bwd_split` (dz as transposed bf16 high/low parts),
    /// `mhc_proj_bwd_dx` (`projᵀ·dz − q·x` added to `g_x` in place) and
    /// `mhc_proj_bwd_dphi` (the per-program partial sums of the projection's
    /// gradient into `part`, from [`Layer::alloc_partials`], which
    /// [`Layer::reduce_grads`] sums).
    pub fn project_backward_into(
        &self,
        p: &Params,
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
        self.check_streams("g_x", g_x, g.dalpha.len() / 3)?;
        self.check("proj", &p.proj, Scalar::F32, pr * pc)?;
        let rp = padded_rows(pr);
        // Written whole by the split (padding rows as zeros).
        let dzt = self
            .device()
            .alloc_output(Scalar::BF16, 2 * rp as usize * rows)?;
        self.kernels.mhc_proj_bwd_split(
            k::MhcProjBwdSplitMeta { RP: rp, BT: 64 },
            4,
            grid1(cdiv(rows, 64)),
            k::MhcProjBwdSplit {
                dz: &g.dz,
                dzt: &dzt,
                rows: rows as i32,
                R: pr as i32,
            },
        )?;
        const DX_ROWS: usize = 256;
        // 32-row steps on 8 warps: 1.22× faster than 64 rows on 4, which
        // needed 255 registers a thread (H200, T = 65536, C = 4096).
        self.kernels.mhc_proj_bwd_dx(
            k::MhcProjBwdDxMeta {
                RP: rp,
                BT: 32,
                BK: 64,
                RB: DX_ROWS as i64,
            },
            8,
            [cdiv(rows, DX_ROWS) as u32, cdiv(pc, 64) as u32, 1],
            k::MhcProjBwdDx {
                x,
                phi: &p.proj,
                dz: &g.dz,
                q: &g.q,
                gx: g_x,
                rows: rows as i32,
                K: pc as i32,
                R: pr as i32,
            },
        )?;
        let bk = 64;
        self.kernels.mhc_proj_bwd_dphi(
            k::MhcProjBwdDphiMeta {
                RP: rp,
                BT: 64,
                BK: bk as i64,
            },
            4,
            [programs as u32, cdiv(pc, bk) as u32, 1],
            k::MhcProjBwdDphi {
                x,
                dzt: &dzt,
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
    /// biases' from dm (mHC) or dh (HC), α's from the per-token shares.
    pub fn reduce_grads(
        &self,
        g: &GateGrads,
        part: &(Buffer, usize),
        dh: &Buffer,
        grads: &mut Grads,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let t = g.dalpha.len() / 3;
        self.sum_rows(
            &part.0,
            part.1,
            cfg.proj_rows() * cfg.proj_cols(),
            &mut grads.proj,
        )?;
        self.sum_rows(g.dm.as_ref().unwrap_or(dh), t, cfg.coeffs(), &mut grads.b)?;
        self.sum_rows(&g.dalpha, t, 3, &mut grads.alpha)
    }

    /// How many programs share the projection backward's rows: enough to fill
    /// the device, few enough that the partial dφ stay small.
    fn proj_programs(&self, rows: usize) -> usize {
        self.device().parallelism().min(cdiv(rows, PROJ_BT)).max(1)
    }

    /// `dst[l] += Σ_p src[p, l]`, in a fixed order (two stages for many rows).
    pub fn sum_rows(&self, src: &Buffer, p: usize, l: usize, dst: &mut Buffer) -> Result<()> {
        const BL: usize = 256;
        let launch = |src: &Buffer, dst: &Buffer, p: usize, splits: usize, accumulate: bool| {
            self.kernels.mhc_sum_rows(
                k::MhcSumRowsMeta {
                    BL: BL as i64,
                    BP: 8,
                },
                4,
                [cdiv(l, BL) as u32, splits as u32, 1],
                k::MhcSumRows {
                    src,
                    dst,
                    P: p as i32,
                    L: l as i32,
                    rows_per_split: cdiv(p, splits) as i32,
                    accumulate: accumulate as i32,
                },
            )
        };
        if p > 1024 {
            let splits = cdiv(p, 256);
            let stage = self.device().alloc_output(Scalar::F32, splits * l)?;
            launch(src, &stage, p, splits, false)?;
            launch(&stage, dst, splits, 1, true)?;
        } else {
            launch(src, dst, p, 1, true)?;
        }
        Ok(())
    }
}

/// Slots of the Sinkhorn history tile: a power of two ≥ the iterations.
fn hist_slots(iters: usize) -> i64 {
    iters.max(1).next_power_of_two() as i64
}

/// The diagonal of b_res at initialisation: with logits 0 off the diagonal
/// and `RES_DIAG` on it, Sinkhorn-Knopp gives H_res with 0.948 on the
/// diagonal at n = 4 (exp(4) = 54.6 against n - 1 ones per row).
pub const RES_DIAG: f32 = 4.0;

/// Deterministic N(0, std²) values (Box-Muller on a SplitMix64 stream), so
/// parameters depend only on the seed.
pub fn normal_f32(seed: u64, len: usize, std: f32) -> Vec<f32> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u, v) = (next(), next());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32 * std
        })
        .collect()
}
