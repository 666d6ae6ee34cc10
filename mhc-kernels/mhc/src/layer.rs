//! One hyper-connection site (mHC or HC) on a device: forward (`pre`, `post`),
//! backward (`post_backward`, `pre_backward`) and the recompute of a block of
//! sites, each a short sequence of pack kernels (see kernels/mhc/mhc.tile).
//!
//! Streams `x` are bf16 `[T, n, C]`; `h_in` and `y` bf16 `[T, C]`; parameters
//! and coefficients f32. The caller owns every activation buffer: a site keeps
//! only [`Saved`] (the per-token coefficients) for its backward.

mod backward;

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

    /// Learned values of one site: the projection, α (3) and the biases.
    pub fn param_count(&self) -> usize {
        self.proj_rows() * self.proj_cols() + 3 + self.coeffs()
    }

    /// Bytes of the f32 [`Saved`] of `t` tokens.
    pub fn saved_bytes(&self, t: usize) -> usize {
        let rows = t * self.rows_per_token();
        4 * (rows * self.proj_rows() + rows + t * self.coeffs())
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

/// Gradients from the gates' backward: per row of the projection its
/// outputs' dz as bf16 high and low parts, `dz2` `[rows, 2·RP]` = [hi | lo]
/// and `dzt` = dz2ᵀ (RP the projection's rows padded: 16, 32 or 128), and
/// the RMSNorm term q = dr·r³/K (f32); the projection as bf16 parts, `phi3`
/// `[3·RP, cols]` = [hi ; hi ; lo] (the layouts `mhc_proj_bwd` reads); and
/// `shares` (f32), the parts of the gates' parameter gradients that
/// [`Layer::reduce_grads`] sums — mHC: `[programs, coeffs + 3]`, each
/// `mhc_coeffs_bwd` program's sums over its tokens of db (= dm = ∂L/∂m) then
/// of dα; HC: `[t, 3]`, each token's dα (db is dh summed over tokens).
pub struct GateGrads {
    pub dz2: Buffer,
    pub dzt: Buffer,
    pub phi3: Buffer,
    pub q: Buffer,
    pub shares: Buffer,
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

/// `mhc_proj`'s token block and column step for `rows` rows on `sms`
/// multiprocessors: the largest block that still gives half of them a
/// program (every block reads φ's split halves whole, from L2, so smaller
/// blocks multiply that traffic), and 128-column steps where the blocks make
/// less than two waves (more bytes in flight per program). H100, tile-tune,
/// n = 4: T = 8192, C = 768 64 × 128 0.030 ms (16 × 64, the old choice, 0.065);
/// T = 65536, C = 4096 64 × 64 0.711 ms, at copy bandwidth (64 × 128 0.757).
pub(crate) fn proj_tile(rows: usize, sms: usize) -> (usize, usize) {
    let bt = [64, 32, 16]
        .into_iter()
        .find(|&b| 2 * cdiv(rows, b) >= sms)
        .unwrap_or(16);
    let bk = if cdiv(rows, bt) < 2 * sms { 128 } else { 64 };
    (bt, bk)
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

    fn check_proj(&self, p: &Params) -> Result<()> {
        let cfg = &self.cfg;
        self.check(
            "proj",
            &p.proj,
            Scalar::F32,
            cfg.proj_rows() * cfg.proj_cols(),
        )
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
        let rows = t * cfg.rows_per_token();
        let rp = padded_rows(cfg.proj_rows());
        let hilo = self.split_proj(p)?;
        let (bt, bk) = proj_tile(rows, self.device().parallelism());
        self.kernels.mhc_proj(
            k::MhcProjMeta {
                RP: rp,
                BT: bt as i64,
                BK: bk as i64,
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

    /// Kernel `mhc_proj_split`: φ (or θ) as transposed, interleaved bf16
    /// high and low parts, `[cols, 2·RP]`, what `mhc_proj` reads.
    fn split_proj(&self, p: &Params) -> Result<Buffer> {
        let cfg = &self.cfg;
        self.check_proj(p)?;
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
        Ok(hilo)
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
                    BT: self.coeff_tokens() as i64,
                    ITERS: cfg.iters as i64,
                },
                1,
                grid1(self.coeff_programs(t)),
                k::MhcCoeffs {
                    z: &saved.z,
                    r: &saved.r,
                    alpha: &p.alpha,
                    b: &p.b,
                    h: &saved.h,
                    T: t as i32,
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

    /// Tokens per one-warp program of `mhc_coeffs` and `mhc_coeffs_bwd`:
    /// 32 / n (fewer, for more warps, was slower: see the kernels).
    pub(crate) fn coeff_tokens(&self) -> usize {
        32 / self.cfg.n
    }

    /// Programs of `mhc_coeffs` (its tune block's `grid`), and the token
    /// programs of `mhc_coeffs_bwd` (the φ-splitting ones precede them), each
    /// of which writes one row of [`GateGrads::shares`].
    pub(crate) fn coeff_programs(&self, t: usize) -> usize {
        cdiv(t, self.coeff_tokens())
    }

    fn apply_grid(&self, t: usize, bc: usize) -> [u32; 3] {
        [t as u32, cdiv(self.cfg.c, bc) as u32, 1]
    }

    /// Columns a program of `mhc_pre_apply` / `mhc_post` and its warps: 1024
    /// columns (`wide`) when they divide C, else 256, so that no lanes idle
    /// at C = 768 (H200, T = 8192: pre-apply 24 → 22 µs, post 50 → 47 µs;
    /// at C = 4096 the 1024-column tiles stay 3–5% ahead).
    fn apply_tile(&self, wide: (usize, u32), narrow: (usize, u32)) -> (usize, u32) {
        if self.cfg.c.is_multiple_of(APPLY_BC) {
            wide
        } else {
            narrow
        }
    }

    /// `h_in = H_pre · x` with coefficients `h`.
    pub fn apply_pre(&self, x: &Buffer, h: &Buffer, h_in: &mut Buffer, t: usize) -> Result<()> {
        // 8 warps: 87% → 99.6% of copy bandwidth at T = 65536, C = 4096 (H200).
        let (bc, warps) = self.apply_tile((APPLY_BC, 8), (256, 2));
        self.kernels.mhc_pre_apply(
            k::MhcPreApplyMeta {
                N: self.n(),
                BC: bc as i64,
            },
            warps,
            self.apply_grid(t, bc),
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
        let (bc, warps) = self.apply_tile((APPLY_BC, 4), (256, 1));
        self.kernels.mhc_post(
            k::MhcPostMeta {
                N: self.n(),
                BC: bc as i64,
            },
            warps,
            self.apply_grid(t, bc),
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
