//! The trainer's operations on a device: every op but the plain GEMMs is a
//! `.tile` kernel of the `model` pack (`kernels/model/`), the GEMMs go through
//! [`tile_runtime::blas::Gemm`] (cuBLAS on a GPU, matrixmultiply on the CPU).
//! The same calls run on `Device::cuda` and `Device::cpu`.
//!
//! [`Ops`] methods take buffers and sizes, check every buffer's dtype and
//! length first (an [`OpsError`], never an out-of-bounds access), pick block
//! sizes from the sizes, and launch asynchronously on a GPU. All tensors are
//! row-major f32 unless stated. Outputs with an [`Out`] argument can be
//! overwritten or accumulated into. Every reduction has a fixed order and no
//! float atomics, so results are bit-identical from run to run.
//!
//! | group | ops |
//! |---|---|
//! | GEMM | [`Ops::gemm`] (transposes, offsets, leading dims, strided batches) |
//! | embedding | [`Ops::embed_fwd`], [`Ops::embed_bwd`], [`Ops::embed_pos_bwd`] |
//! | RMSNorm | [`Ops::rmsnorm_fwd`], [`Ops::rmsnorm_bwd`] |
//! | attention | [`Ops::flash_attention_fwd`], [`Ops::flash_attention_bwd`] (fused, bf16, token-major q, k, v and o: no head split; head dims 64 and 128), [`Ops::attention_fwd`], [`Ops::attention_bwd`] (GEMMs + causal softmax), [`Ops::attn_softmax_fwd`], [`Ops::attn_softmax_bwd`], [`Ops::split_heads`], [`Ops::merge_heads`] (f32 or bf16 heads) |
//! | MLP | [`Ops::gelu_fwd`], [`Ops::gelu_bwd`] (tanh approximation), [`Ops::add_bias`]; [`Ops::linear_gelu`], [`Ops::linear_gelu_bwd`] (a GEMM with GELU in its epilogue: `.tile` kernels, not cuBLAS) |
//! | loss | [`Ops::cross_entropy`] (per-row loss and dlogits), [`Ops::sum`] (its mean) |
//! | optimiser | [`Ops::adamw`], [`Ops::sum_squares`] (grad norm), [`Ops::col_sum`] (bias grads) |
//! | initialisation | [`Ops::init_normal`] (counter-based, the same values on every device) |
//! | glue | [`Ops::add`], [`Ops::axpy`], [`Ops::scale`], [`Ops::fill`], [`Ops::copy`], [`Ops::cast_f32_bf16`], [`Ops::cast_bf16_f32`] |
//! | residual streams | [`Ops::streams_expand`], [`Ops::streams_expand_bwd`], [`Ops::streams_collapse`], [`Ops::streams_collapse_bwd`] |

mod glue;
mod mlp;
mod nn;

use mhc::kernels::{KernelError, KernelSet};
use mhc::launch::model as k;
use mhc::launch::PackKernel;
use std::sync::{Arc, Mutex};
use tile_runtime::blas::{Gemm, GemmOp};
use tile_runtime::{Buffer, Device, RuntimeError, Scalar};

/// Errors of the ops: bad sizes or buffers, or a failing kernel/GEMM.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Whether an op overwrites its output or adds its result to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    Write,
    Add,
}

impl Out {
    /// The kernels' `accumulate` argument.
    fn flag(self) -> i32 {
        (self == Out::Add) as i32
    }
}

/// AdamW hyper-parameters (decoupled weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// The operations on one device (see the module documentation).
pub struct Ops {
    kernels: Arc<KernelSet>,
    gemm: Gemm,
    /// Partial sums of the two-stage reductions, grown on demand.
    scratch: Mutex<Option<Buffer>>,
    /// Largest block of the row kernels; longer rows are read in chunks.
    row_block_cap: i64,
}

/// Row kernels: the smallest of these ≥ the row length (capped; longer rows loop).
const ROW_BLOCKS: [i64; 7] = [32, 64, 128, 256, 512, 1024, 2048];
/// Kernels over columns blocks of one row (2-D grids).
const COL_BLOCKS: [i64; 3] = [64, 256, 1024];

/// The smallest of `blocks` ≥ `n`, else the largest.
fn pick(blocks: &[i64], n: usize) -> i64 {
    *blocks
        .iter()
        .find(|&&b| b as usize >= n)
        .unwrap_or(blocks.last().unwrap())
}

impl Ops {
    /// Ops over `kernels` (which must hold the `model` pack's kernels) and a
    /// GEMM engine on the same device.
    pub fn new(kernels: Arc<KernelSet>) -> Result<Ops, OpsError> {
        let gemm = Gemm::new(kernels.device())?;
        Ok(Ops {
            kernels,
            gemm,
            scratch: Mutex::new(None),
            row_block_cap: *ROW_BLOCKS.last().unwrap(),
        })
    }

    /// Cap the row kernels' block (one of 32, …, 2048): rows longer than the
    /// cap are read in several chunks. Tests use it to run the chunked path
    /// at small sizes; the default is the largest block.
    pub fn with_row_block_cap(mut self, cap: usize) -> Ops {
        self.row_block_cap = pick(&ROW_BLOCKS, cap);
        self
    }

    /// Block and warps of a row kernel over rows of length `n`.
    fn row_config(&self, n: usize) -> (i64, u32) {
        (pick(&ROW_BLOCKS, n).min(self.row_block_cap), 4)
    }

    pub fn device(&self) -> &Device {
        self.kernels.device()
    }

    pub fn kernels(&self) -> &Arc<KernelSet> {
        &self.kernels
    }

    /// What an attached profiler files the following operations under.
    pub fn set_phase(&self, phase: &'static str) {
        if let Some(p) = self.kernels.profiler() {
            p.set_phase(phase);
        }
    }

    /// Row-major `C = alpha·op(A)·op(B) + beta·C` (see [`GemmOp`]), C f32,
    /// A and B both f32 (on a GPU through cuBLAS with TF32 tensor-core math,
    /// ≈1e-3 relative error) or both bf16 (exact products, f32 sums). Timed
    /// as `gemm m×n×k` by an attached profiler.
    pub fn gemm(
        &self,
        op: &GemmOp,
        a: &Buffer,
        b: &Buffer,
        c: &mut Buffer,
    ) -> Result<(), OpsError> {
        match self.kernels.profiler() {
            Some(p) => {
                let name = format!(
                    "gemm {}×{}×{}{} ({})",
                    op.m,
                    op.n,
                    op.k,
                    if op.batch > 1 {
                        format!(" ×{}", op.batch)
                    } else {
                        String::new()
                    },
                    a.dtype().name()
                );
                p.time(self.device(), &name, || Ok(self.gemm.run(op, a, b, c)?))
            }
            None => Ok(self.gemm.run(op, a, b, c)?),
        }
    }

    /// Launch the kernel of `args` (a generated launcher of the `model`
    /// pack) over `grid`, checked against the grid's limits.
    fn launch<K: PackKernel>(
        &self,
        meta: K::Meta,
        warps: u32,
        grid: [usize; 3],
        args: K,
    ) -> Result<(), OpsError> {
        let mut g = [0u32; 3];
        for (i, (&x, limit)) in grid
            .iter()
            .zip([i32::MAX as usize, 65535, 65535])
            .enumerate()
        {
            if x > limit {
                return Err(OpsError::Shape {
                    op: "launch",
                    message: format!(
                        "kernel `{}`: grid {grid:?} exceeds the limit {limit} on axis {i}",
                        K::NAME
                    ),
                });
            }
            g[i] = x as u32;
        }
        Ok(self.kernels.run(meta, warps, g, args)?)
    }

    /// A row kernel: one program per row of `n` elements, its `BLOCK` and
    /// warps from [`Ops::row_config`]; nothing for no rows (`build` makes
    /// the meta-parameters and arguments from `BLOCK`, only when there is
    /// something to launch).
    fn launch_rows<K: PackKernel>(
        &self,
        rows: usize,
        n: usize,
        build: impl FnOnce(i64) -> Result<(K::Meta, K), OpsError>,
    ) -> Result<(), OpsError> {
        if rows == 0 {
            return Ok(());
        }
        let (block, warps) = self.row_config(n);
        let (meta, args) = build(block)?;
        self.launch(meta, warps, [rows, 1, 1], args)
    }

    /// Elementwise kernels over n elements: one program per block.
    fn elementwise_block(&self, n: usize) -> i64 {
        // 1024 suits the GPU; on the CPU big blocks cut the interpreter's
        // per-program cost, but every masked lane costs as much as a live one.
        if self.device().is_gpu() || n <= 4096 {
            1024
        } else {
            4096
        }
    }

    /// Run `f` with a scratch f32 buffer of at least `len` elements.
    fn with_scratch<R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut Buffer) -> Result<R, OpsError>,
    ) -> Result<R, OpsError> {
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_none_or(|b| b.len() < len) {
            // Every use writes the partials before reading them.
            *guard = Some(self.device().alloc_output(Scalar::F32, len.max(1024))?);
        }
        f(guard.as_mut().expect("allocated above"))
    }

    /// out[c] (+)= Σ_r x[r, c] for x [rows, n]: column sums (bias gradients),
    /// deterministic.
    pub fn col_sum(
        &self,
        x: &Buffer,
        rows: usize,
        n: usize,
        out: &mut Buffer,
        mode: Out,
    ) -> Result<(), OpsError> {
        const OP: &str = "col_sum";
        check(OP, "x", x, Scalar::F32, &[rows, n])?;
        check(OP, "out", out, Scalar::F32, &[n])?;
        self.column_reduce(OP, rows, n, out, mode, |out, pass| {
            self.col_sum_pass(x, out, pass)
        })
    }

    /// One [`ColumnPass`] of `col_sum` over `x` into `out`.
    fn col_sum_pass(&self, x: &Buffer, out: &Buffer, pass: ColumnPass) -> Result<(), OpsError> {
        self.launch(
            k::ColSumMeta {
                BR: pass.br,
                BC: pass.bc,
            },
            4,
            pass.grid,
            k::ColSum {
                x,
                out,
                rows: pass.rows,
                n: pass.n,
                rows_per_prog: pass.rows_per_prog,
                accumulate: pass.accumulate,
            },
        )
    }

    /// A column reduction over `rows` by a kernel with the arguments
    /// `(inputs.., out, rows, n, rows_per_prog, accumulate)` and the
    /// meta-parameters `BR`, `BC`, which `kernel(out, pass)` launches (see
    /// [`ColumnPass`]). Long reductions take two stages (partial rows into
    /// scratch, then `col_sum` over them): fixed order, no atomics.
    fn column_reduce(
        &self,
        op: &'static str,
        rows: usize,
        n: usize,
        out: &mut Buffer,
        mode: Out,
        kernel: impl Fn(&Buffer, ColumnPass) -> Result<(), OpsError>,
    ) -> Result<(), OpsError> {
        if n == 0 {
            return Ok(());
        }
        let pass = |rows: usize, rpp: usize, parts: usize, mode: Out| {
            Ok::<_, OpsError>(ColumnPass {
                rows: int(op, rows)?,
                n: int(op, n)?,
                rows_per_prog: int(op, rpp.max(1))?,
                accumulate: mode.flag(),
                br: 16,
                bc: col_bc(n) as i64,
                grid: [parts, n.div_ceil(col_bc(n)), 1],
            })
        };
        // About 128 partial rows of at least 64 rows each: enough programs for a GPU.
        let rpp = rows.div_ceil(128).max(64);
        let parts = rows.div_ceil(rpp);
        if parts <= 1 {
            return kernel(&*out, pass(rows, rows, 1, mode)?);
        }
        self.with_scratch(parts * n, |part| {
            kernel(&*part, pass(rows, rpp, parts, Out::Write)?)?;
            self.col_sum_pass(part, out, pass(parts, parts, 1, mode)?)
        })
    }

    /// out[out_index] (+)= scale · Σ x[0..n], deterministic (e.g. the mean
    /// loss: `scale` = 1/rows).
    pub fn sum(
        &self,
        x: &Buffer,
        n: usize,
        out: &mut Buffer,
        out_index: usize,
        scale: f32,
        mode: Out,
    ) -> Result<(), OpsError> {
        self.reduce("sum", 0, x, n, out, out_index, scale, mode)
    }

    /// out[out_index] (+)= Σ x[0..n]², deterministic: the squared gradient
    /// norm, accumulated over parameter buffers with [`Out::Add`].
    pub fn sum_squares(
        &self,
        x: &Buffer,
        n: usize,
        out: &mut Buffer,
        out_index: usize,
        mode: Out,
    ) -> Result<(), OpsError> {
        self.reduce("sum_squares", 1, x, n, out, out_index, 1.0, mode)
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        op: &'static str,
        square: i64,
        x: &Buffer,
        n: usize,
        out: &mut Buffer,
        out_index: usize,
        scale: f32,
        mode: Out,
    ) -> Result<(), OpsError> {
        check(op, "x", x, Scalar::F32, &[n])?;
        check_span(op, "out", out, out_index, 1)?;
        // Program p sums elements [p·per, (p+1)·per) into out[idx + p].
        #[allow(clippy::too_many_arguments)]
        let run = |sq: i64,
                   x: &Buffer,
                   out: &Buffer,
                   n: usize,
                   per: usize,
                   parts: usize,
                   idx: usize,
                   scale: f32,
                   mode: Out| {
            let block = if per <= 4096 { 256 } else { 1024 };
            let a = k::ReduceSum {
                x,
                out,
                n: n as i64,
                per_prog: int(op, per.max(1))?,
                out_offset: int(op, idx)?,
                scale,
                accumulate: mode.flag(),
            };
            self.launch(
                k::ReduceSumMeta {
                    BLOCK: block,
                    SQUARE: sq,
                },
                4,
                [parts, 1, 1],
                a,
            )
        };
        // Up to 256 partial sums of at least 8192 elements each.
        let per = n.div_ceil(256).max(8192);
        let parts = n.div_ceil(per);
        if parts <= 1 {
            return run(square, x, out, n, n, 1, out_index, scale, mode);
        }
        self.with_scratch(parts, |part| {
            run(square, x, part, n, per, parts, 0, 1.0, Out::Write)?;
            run(0, part, out, parts, parts, 1, out_index, scale, mode)
        })
    }
}

/// Block of columns of the 2-D reductions: narrow rows get narrow blocks.
fn col_bc(n: usize) -> usize {
    if n <= 32 {
        32
    } else {
        128
    }
}

/// One pass of [`Ops::column_reduce`]: program (p, j) reduces rows
/// [p·rows_per_prog, (p+1)·rows_per_prog) of column block j into row p of
/// the output. The kernel's arguments after `out` and its `BR`, `BC`.
#[derive(Clone, Copy, Debug)]
struct ColumnPass {
    rows: i32,
    n: i32,
    rows_per_prog: i32,
    accumulate: i32,
    br: i64,
    bc: i64,
    grid: [usize; 3],
}

/// A size as an i32 kernel argument.
fn int(op: &'static str, x: usize) -> Result<i32, OpsError> {
    i32::try_from(x).map_err(|_| OpsError::Shape {
        op,
        message: format!("size {x} exceeds i32"),
    })
}

/// The product of `dims` (an element count), or an error when it overflows.
fn elements(op: &'static str, dims: &[usize]) -> Result<usize, OpsError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpsError::Shape {
            op,
            message: format!("sizes {dims:?} overflow"),
        })
}

/// `buf` must hold at least `dims.iter().product()` elements of `dtype`.
fn check(
    op: &'static str,
    name: &str,
    buf: &Buffer,
    dtype: Scalar,
    dims: &[usize],
) -> Result<(), OpsError> {
    let len = elements(op, dims)?;
    if buf.dtype() != dtype {
        return Err(OpsError::Shape {
            op,
            message: format!(
                "`{name}` must be a {} buffer, got {}",
                dtype.name(),
                buf.dtype().name()
            ),
        });
    }
    if buf.len() < len {
        return Err(OpsError::Shape {
            op,
            message: format!("`{name}` holds {} elements, needs {len}", buf.len()),
        });
    }
    Ok(())
}

/// An f32 `buf` must hold elements `offset..offset + n`.
fn check_span(
    op: &'static str,
    name: &str,
    buf: &Buffer,
    offset: usize,
    n: usize,
) -> Result<(), OpsError> {
    let end = offset.checked_add(n).ok_or_else(|| OpsError::Shape {
        op,
        message: format!("`{name}`: offset {offset} + {n} overflows"),
    })?;
    check(op, name, buf, Scalar::F32, &[end])
}
