//! GEMM on either device, for the trainer's linear layers and attention:
//! row-major `C = alpha·op(A)·op(B) + beta·C` with A, B both f32 or both
//! bf16 and C in f32 (or in bf16 with bf16 operands: the f32 accumulator
//! rounded once, to nearest even), optionally strided-batched.
//!
//! - GPU: cuBLAS (`cublasGemmEx`, `cublasGemmStridedBatchedEx`). f32
//!   operands use compute type `CUBLAS_COMPUTE_32F_FAST_TF32`: cuBLAS may
//!   round the inputs to TF32 (10-bit mantissa) for the tensor cores and
//!   accumulates in f32, so results differ from exact f32 by about 1e-3 of
//!   |A|·|B| (the same rounding our own `dot` applies to f32 operands).
//!   bf16 operands (the trainer's mixed precision: twice the tensor-core
//!   rate, half the bytes) use `CUBLAS_COMPUTE_32F`: exact products, f32
//!   accumulation. libcublas is loaded
//!   at run time, like the driver: building needs no CUDA, and a GPU machine
//!   without cuBLAS gets an error from [`Gemm::new`].
//! - CPU: `matrixmultiply::sgemm` (f32 FMA, threaded) on copies of the
//!   operands' spans (bf16 widened exactly): the interpreter's buffers are
//!   arrays of atomics.
//!
//! beta = 0 means C is not read (NaN in C does not propagate), on both devices.
//! Every size, offset, leading dimension and batch stride is checked against
//! the buffers before anything runs.

use crate::{Buffer, Device, RuntimeError, Scalar, Storage};
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaStream, DevicePtr};
use std::sync::Arc;

/// Where one matrix lives in its buffer. `None` means packed: `ld` = the
/// stored row length, `stride` (between batch entries) = rows·ld.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operand {
    /// First element of the first matrix.
    pub offset: usize,
    /// Leading dimension (elements between consecutive stored rows).
    pub ld: Option<usize>,
    /// Elements between consecutive matrices of a batch (0 reuses one matrix).
    pub stride: Option<usize>,
}

/// One GEMM problem: `C[m×n] = alpha·op(A)[m×k]·op(B)[k×n] + beta·C`, row-major,
/// `batch` times. `op(A) = A` is stored m×k, `op(A) = Aᵀ` (`trans_a`) is stored
/// k×m; likewise B (k×n, or n×k with `trans_b`). Build with [`GemmOp::new`]
/// and the setters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmOp {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub a: Operand,
    pub b: Operand,
    pub c: Operand,
    pub batch: usize,
}

impl GemmOp {
    /// `C = A·B`: packed operands at offset 0, alpha 1, beta 0, one matrix.
    pub fn new(m: usize, n: usize, k: usize) -> GemmOp {
        GemmOp {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            a: Operand::default(),
            b: Operand::default(),
            c: Operand::default(),
            batch: 1,
        }
    }
    /// Use Aᵀ (A stored k×m).
    pub fn trans_a(mut self, t: bool) -> GemmOp {
        self.trans_a = t;
        self
    }
    /// Use Bᵀ (B stored n×k).
    pub fn trans_b(mut self, t: bool) -> GemmOp {
        self.trans_b = t;
        self
    }
    pub fn alpha(mut self, alpha: f32) -> GemmOp {
        self.alpha = alpha;
        self
    }
    /// 0 overwrites C without reading it, 1 accumulates into C.
    pub fn beta(mut self, beta: f32) -> GemmOp {
        self.beta = beta;
        self
    }
    /// Element offsets of the first A, B and C matrices.
    pub fn offsets(mut self, a: usize, b: usize, c: usize) -> GemmOp {
        (self.a.offset, self.b.offset, self.c.offset) = (a, b, c);
        self
    }
    /// Leading dimensions (row pitch in elements) of A, B and C as stored.
    pub fn ld(mut self, a: usize, b: usize, c: usize) -> GemmOp {
        (self.a.ld, self.b.ld, self.c.ld) = (Some(a), Some(b), Some(c));
        self
    }
    /// `count` independent products; strides packed unless set with [`GemmOp::strides`].
    pub fn batched(mut self, count: usize) -> GemmOp {
        self.batch = count;
        self
    }
    /// Elements between consecutive batch entries of A, B and C.
    pub fn strides(mut self, a: usize, b: usize, c: usize) -> GemmOp {
        (self.a.stride, self.b.stride, self.c.stride) = (Some(a), Some(b), Some(c));
        self
    }

    /// (rows, cols) of A, B, C as stored.
    fn stored(&self) -> [(usize, usize); 3] {
        let (m, n, k) = (self.m, self.n, self.k);
        [
            if self.trans_a { (k, m) } else { (m, k) },
            if self.trans_b { (n, k) } else { (k, n) },
            (m, n),
        ]
    }

    /// Resolved (offset, ld, stride) of A, B, C, each checked against its buffer length.
    fn layout(&self, lens: [usize; 3]) -> Result<[(usize, usize, usize); 3], RuntimeError> {
        let err = |msg: String| Err(RuntimeError::Buffer(format!("gemm {self:?}: {msg}")));
        let mut out = [(0, 0, 0); 3];
        for (i, (((rows, cols), op), len)) in self
            .stored()
            .into_iter()
            .zip([self.a, self.b, self.c])
            .zip(lens)
            .enumerate()
        {
            let name = ["A", "B", "C"][i];
            let ld = op.ld.unwrap_or(cols.max(1));
            if ld < cols.max(1) {
                return err(format!("{name}: leading dimension {ld} < {cols} columns"));
            }
            let Some(stride) = op.stride.or(rows.checked_mul(ld)) else {
                return err(format!("{name}: {rows} rows of {ld} overflow"));
            };
            out[i] = (op.offset, ld, stride);
            if rows == 0 || cols == 0 || self.batch == 0 {
                continue;
            }
            // One past the last element touched, without overflow.
            let end = (self.batch - 1)
                .checked_mul(stride)
                .and_then(|s| s.checked_add((rows - 1).checked_mul(ld)?))
                .and_then(|s| s.checked_add(op.offset)?.checked_add(cols));
            match end {
                Some(e) if e <= len => {}
                _ => {
                    return err(format!(
                        "{name} ({rows}×{cols}, ld {ld}, offset {}, stride {stride}, batch {}) \
                         does not fit its buffer of {len} elements",
                        op.offset, self.batch
                    ))
                }
            }
        }
        let (m, n) = (self.m, self.n);
        if self.batch > 1 && m > 0 && n > 0 && out[2].2 < (m - 1) * out[2].1 + n {
            return err("C matrices of the batch overlap (stride too small)".into());
        }
        Ok(out)
    }
}

enum Engine {
    Cpu,
    Cuda {
        blas: CudaBlas,
        stream: Arc<CudaStream>,
    },
}

/// A GEMM engine bound to one device (see the module documentation).
pub struct Gemm {
    engine: Engine,
}

impl Gemm {
    /// cuBLAS on a GPU (an error if libcublas cannot be loaded), matrixmultiply on the CPU.
    pub fn new(device: &Device) -> Result<Gemm, RuntimeError> {
        let engine = match device {
            Device::Cpu => Engine::Cpu,
            Device::Cuda(d) => {
                // cudarc panics when the library is missing: turn that into an error.
                let stream = d.stream.clone();
                let blas = std::panic::catch_unwind(|| CudaBlas::new(stream.clone()))
                    .map_err(|_| RuntimeError::Cuda("libcublas could not be loaded".into()))?
                    .map_err(|e| RuntimeError::Cuda(format!("cuBLAS: {e:?}")))?;
                Engine::Cuda {
                    blas,
                    stream: d.stream.clone(),
                }
            }
        };
        Ok(Gemm { engine })
    }

    /// Run `op` on buffers `a`, `b` (both f32 or both bf16) and `c` (f32;
    /// or bf16 with bf16 operands), asynchronously on a GPU.
    pub fn run(
        &self,
        op: &GemmOp,
        a: &Buffer,
        b: &Buffer,
        c: &mut Buffer,
    ) -> Result<(), RuntimeError> {
        let dtypes_ok = matches!(
            (a.dtype, b.dtype, c.dtype),
            (Scalar::F32, Scalar::F32, Scalar::F32)
                | (Scalar::BF16, Scalar::BF16, Scalar::F32 | Scalar::BF16)
        );
        if !dtypes_ok {
            return Err(RuntimeError::Buffer(format!(
                "gemm: A and B must be both f32 (C f32) or both bf16 (C f32 or bf16), got {}, {} and {}",
                a.dtype.name(),
                b.dtype.name(),
                c.dtype.name()
            )));
        }
        let layout = op.layout([a.len, b.len, c.len])?;
        if op.m == 0 || op.n == 0 || op.batch == 0 {
            return Ok(());
        }
        match (&self.engine, &a.storage, &b.storage, &mut c.storage) {
            (Engine::Cpu, Storage::Host(ha), Storage::Host(hb), Storage::Host(hc)) => {
                cpu_gemm(op, layout, ha, hb, hc)
            }
            (
                Engine::Cuda { blas, stream },
                Storage::Cuda(sa),
                Storage::Cuda(sb),
                Storage::Cuda(sc),
            ) => {
                let (pa, _ga) = sa.device_ptr(stream);
                let (pb, _gb) = sb.device_ptr(stream);
                let (pc, _gc) = sc.device_ptr(stream);
                cuda_gemm(blas, op, layout, [pa, pb, pc], a.dtype, c.dtype)
            }
            _ => Err(RuntimeError::Buffer(
                "gemm: buffers belong to another device than the GEMM engine".into(),
            )),
        }
    }
}

/// The span of elements one operand touches over the whole batch: (start, len).
fn span(
    rows: usize,
    cols: usize,
    (offset, ld, stride): (usize, usize, usize),
    batch: usize,
) -> (usize, usize) {
    if rows == 0 || cols == 0 {
        return (offset, 0);
    }
    (offset, (batch - 1) * stride + (rows - 1) * ld + cols)
}

fn cpu_gemm(
    op: &GemmOp,
    layout: [(usize, usize, usize); 3],
    a: &tile_interp::Buffer,
    b: &tile_interp::Buffer,
    c: &tile_interp::Buffer,
) -> Result<(), RuntimeError> {
    let [sa, sb, sc] = op.stored();
    let read = |buf: &tile_interp::Buffer, (start, len): (usize, usize)| {
        buf.read_f32(start, len)
            .ok_or_else(|| RuntimeError::Buffer("gemm: span outside the buffer".into()))
    };
    let (a_span, b_span, c_span) = (
        span(sa.0, sa.1, layout[0], op.batch),
        span(sb.0, sb.1, layout[1], op.batch),
        span(sc.0, sc.1, layout[2], op.batch),
    );
    // k = 0 leaves empty A/B spans: give sgemm a valid pointer anyway.
    let av = read(a, a_span)?;
    let bv = read(b, b_span)?;
    // Read even when beta = 0 (sgemm then ignores it): the span's gaps between
    // rows are written back unchanged.
    let mut cv = read(c, c_span)?;
    // Row-major strides (row step, column step) of op(A), op(B) as matrixmultiply wants.
    let strides = |t: bool, ld: usize| {
        if t {
            (1, ld as isize)
        } else {
            (ld as isize, 1)
        }
    };
    let (rsa, csa) = strides(op.trans_a, layout[0].1);
    let (rsb, csb) = strides(op.trans_b, layout[1].1);
    let rsc = layout[2].1 as isize;
    let (one_a, one_b) = ([0.0f32], [0.0f32]);
    for i in 0..op.batch {
        let pa = if av.is_empty() {
            one_a.as_ptr()
        } else {
            av[i * layout[0].2..].as_ptr()
        };
        let pb = if bv.is_empty() {
            one_b.as_ptr()
        } else {
            bv[i * layout[1].2..].as_ptr()
        };
        let pc = cv[i * layout[2].2..].as_mut_ptr();
        // SAFETY: `layout` checked that every element at these strides lies
        // inside the spans copied above (relative to the span start), and the
        // C matrices of the batch do not overlap.
        unsafe {
            matrixmultiply::sgemm(
                op.m, op.k, op.n, op.alpha, pa, rsa, csa, pb, rsb, csb, op.beta, pc, rsc, 1,
            );
        }
    }
    if !c.write_f32(c_span.0, &cv) {
        return Err(RuntimeError::Buffer("gemm: span outside the buffer".into()));
    }
    Ok(())
}

fn cuda_gemm(
    blas: &CudaBlas,
    op: &GemmOp,
    layout: [(usize, usize, usize); 3],
    ptrs: [u64; 3],
    operands: Scalar,
    out: Scalar,
) -> Result<(), RuntimeError> {
    let int = |x: usize, what: &str| {
        i32::try_from(x)
            .map_err(|_| RuntimeError::Buffer(format!("gemm: {what} {x} exceeds cuBLAS's i32")))
    };
    let (m, n, k) = (int(op.m, "m")?, int(op.n, "n")?, int(op.k, "k")?);
    let (lda, ldb, ldc) = (
        int(layout[0].1, "lda")?,
        int(layout[1].1, "ldb")?,
        int(layout[2].1, "ldc")?,
    );
    let size = [
        operands.size_bytes(),
        operands.size_bytes(),
        out.size_bytes(),
    ];
    let [pa, pb, pc] = [0, 1, 2].map(|i| ptrs[i] + (size[i] * layout[i].0) as u64);
    let t = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let f32t = sys::cudaDataType_t::CUDA_R_32F;
    let (abt, compute) = if operands == Scalar::BF16 {
        (
            sys::cudaDataType_t::CUDA_R_16BF,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        )
    } else {
        (f32t, sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32)
    };
    let ct = if out == Scalar::BF16 {
        sys::cudaDataType_t::CUDA_R_16BF
    } else {
        f32t
    };
    let algo = sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT;
    let (alpha, beta) = (op.alpha, op.beta);
    // cuBLAS is column-major: a row-major X is Xᵀ to it, so compute
    // Cᵀ (n×m) = op(B)ᵀ·op(A)ᵀ with the operands swapped.
    let r = unsafe {
        if op.batch == 1 {
            result::gemm_ex(
                *blas.handle(),
                t(op.trans_b),
                t(op.trans_a),
                n,
                m,
                k,
                (&alpha) as *const f32 as *const _,
                pb as *const _,
                abt,
                ldb,
                pa as *const _,
                abt,
                lda,
                (&beta) as *const f32 as *const _,
                pc as *mut _,
                ct,
                ldc,
                compute,
                algo,
            )
        } else {
            result::gemm_strided_batched_ex(
                *blas.handle(),
                t(op.trans_b),
                t(op.trans_a),
                n,
                m,
                k,
                (&alpha) as *const f32 as *const _,
                pb as *const _,
                abt,
                ldb,
                layout[1].2 as i64,
                pa as *const _,
                abt,
                lda,
                layout[0].2 as i64,
                (&beta) as *const f32 as *const _,
                pc as *mut _,
                ct,
                ldc,
                layout[2].2 as i64,
                int(op.batch, "batch")?,
                compute,
                algo,
            )
        }
    };
    r.map_err(|e| RuntimeError::Cuda(format!("cuBLAS gemm: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// f64 reference of `op` on host vectors (C updated in place).
    fn reference(op: &GemmOp, a: &[f32], b: &[f32], c: &mut [f64]) {
        let l = op.layout([a.len(), b.len(), c.len()]).unwrap();
        for bi in 0..op.batch {
            for i in 0..op.m {
                for j in 0..op.n {
                    let mut s = 0.0f64;
                    for p in 0..op.k {
                        let ai = if op.trans_a {
                            p * l[0].1 + i
                        } else {
                            i * l[0].1 + p
                        };
                        let bj = if op.trans_b {
                            j * l[1].1 + p
                        } else {
                            p * l[1].1 + j
                        };
                        s += a[l[0].0 + bi * l[0].2 + ai] as f64
                            * b[l[1].0 + bi * l[1].2 + bj] as f64;
                    }
                    let ci = l[2].0 + bi * l[2].2 + i * l[2].1 + j;
                    let old = if op.beta == 0.0 {
                        0.0
                    } else {
                        op.beta as f64 * c[ci]
                    };
                    c[ci] = op.alpha as f64 * s + old;
                }
            }
        }
    }

    fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Run `op` on the CPU with random A, B (bf16 buffers with `half`), C
    /// (NaN where beta = 0, so an unread C is checked; bf16 with `c_bf16`)
    /// and compare with the f64 reference on the same (rounded) values.
    fn check(op: GemmOp, lens: [usize; 3], half: bool, c_bf16: bool, rng: &mut impl Rng) {
        let dev = Device::cpu();
        let gemm = Gemm::new(&dev).unwrap();
        let (mut a, mut b) = (rand_vec(rng, lens[0]), rand_vec(rng, lens[1]));
        let upload = |x: &mut Vec<f32>| {
            if half {
                let h: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
                *x = h.iter().map(|v| v.to_f32()).collect();
                dev.upload(&h).unwrap()
            } else {
                dev.upload(x).unwrap()
            }
        };
        let (ab, bb) = (upload(&mut a), upload(&mut b));
        let mut c0: Vec<f32> = if op.beta == 0.0 {
            vec![f32::NAN; lens[2]]
        } else {
            rand_vec(rng, lens[2])
        };
        let mut cb = if c_bf16 {
            let h: Vec<half::bf16> = c0.iter().map(|&v| half::bf16::from_f32(v)).collect();
            c0 = h.iter().map(|v| v.to_f32()).collect();
            dev.upload(&h).unwrap()
        } else {
            dev.upload(&c0).unwrap()
        };
        gemm.run(&op, &ab, &bb, &mut cb).unwrap();
        let got: Vec<f32> = if c_bf16 {
            let h: Vec<half::bf16> = dev.download(&cb).unwrap();
            h.iter().map(|v| v.to_f32()).collect()
        } else {
            dev.download(&cb).unwrap()
        };
        let mut want: Vec<f64> = c0.iter().map(|&x| x as f64).collect();
        reference(&op, &a, &b, &mut want);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Untouched elements keep their (possibly NaN) value exactly.
            if w.is_nan() {
                assert!(g.is_nan(), "{op:?}: element {i} outside C was written: {g}");
                continue;
            }
            // f32 accumulation of k products of magnitude ≤ 1: error ≲ k·2^-24
            // each; a bf16 C adds its one rounding, half an ulp: up to 2^-8 of |C|.
            let rounding = if c_bf16 { w.abs() * 2f64.powi(-8) } else { 0.0 };
            let tol = rounding
                + 1e-6 * (op.k as f64 + 1.0) * (1.0 + op.alpha.abs() as f64 + op.beta.abs() as f64);
            assert!(
                (*g as f64 - w).abs() <= tol,
                "{op:?}: C[{i}] = {g}, want {w}"
            );
        }
    }

    #[test]
    fn gemm_matches_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for case in 0..60 {
            let (m, n, k) = (
                rng.random_range(1..40),
                rng.random_range(1..40),
                rng.random_range(0..50),
            );
            let mut op = GemmOp::new(m, n, k)
                .trans_a(rng.random_bool(0.5))
                .trans_b(rng.random_bool(0.5))
                .alpha(rng.random_range(-2.0..2.0))
                .beta(if case % 3 == 0 {
                    0.0
                } else {
                    rng.random_range(-1.0..1.0)
                });
            let [sa, sb, sc] = op.stored();
            // Padding of the rows and a leading offset, some of the time.
            let pad = |rng: &mut rand::rngs::StdRng| {
                if rng.random_bool(0.5) {
                    rng.random_range(0..5)
                } else {
                    0
                }
            };
            let (lda, ldb, ldc) = (
                sa.1.max(1) + pad(&mut rng),
                sb.1.max(1) + pad(&mut rng),
                sc.1 + pad(&mut rng),
            );
            let (oa, ob, oc) = (pad(&mut rng), pad(&mut rng), pad(&mut rng));
            op = op.offsets(oa, ob, oc).ld(lda, ldb, ldc);
            let batch = if case % 2 == 0 {
                1
            } else {
                rng.random_range(2..5)
            };
            op = op.batched(batch);
            let (ta, tb, tc) = (
                sa.0 * lda + pad(&mut rng),
                sb.0 * ldb + pad(&mut rng),
                sc.0 * ldc + pad(&mut rng),
            );
            // Some batches reuse one B (stride 0), as a weight shared by every head would.
            let tb = if case % 4 == 1 { 0 } else { tb };
            op = op.strides(ta, tb, tc);
            let lens = [
                oa + batch * ta.max(sa.0 * lda),
                ob + batch * tb.max(sb.0 * ldb),
                oc + batch * tc + 3,
            ];
            // Every fifth case bf16 operands; every tenth a bf16 C as well.
            check(op, lens, case % 5 == 2, case % 10 == 7, &mut rng);
        }
    }

    #[test]
    fn gemm_rejects_bad_sizes() {
        let dev = Device::cpu();
        let gemm = Gemm::new(&dev).unwrap();
        let a = dev.upload(&[0.0f32; 12]).unwrap();
        let b = dev.upload(&[0.0f32; 12]).unwrap();
        let mut c = dev.upload(&[0.0f32; 9]).unwrap();
        let bad = [
            GemmOp::new(3, 3, 5),                             // A needs 15
            GemmOp::new(3, 3, 4).offsets(1, 0, 0),            // A runs past the end
            GemmOp::new(3, 3, 4).ld(3, 3, 3),                 // lda < k
            GemmOp::new(3, 3, 4).batched(2),                  // C needs 18
            GemmOp::new(3, 3, 1).batched(2).strides(0, 0, 1), // C entries overlap
            GemmOp::new(usize::MAX / 2, 3, 4),                // sizes overflow
        ];
        for op in bad {
            let e = gemm.run(&op, &a, &b, &mut c).unwrap_err();
            assert!(matches!(e, RuntimeError::Buffer(_)), "{op:?}: {e}");
        }
        let bf = dev.alloc(Scalar::BF16, 12).unwrap();
        assert!(gemm.run(&GemmOp::new(3, 3, 4), &bf, &b, &mut c).is_err());
        // A bf16 C needs bf16 operands.
        let mut c16 = dev.alloc(Scalar::BF16, 9).unwrap();
        assert!(gemm.run(&GemmOp::new(3, 3, 4), &a, &b, &mut c16).is_err());
        gemm.run(&GemmOp::new(3, 3, 4), &a, &b, &mut c).unwrap();
    }
}
