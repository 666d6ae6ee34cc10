//! Vendor baselines for benchmarks (feature `cublas`): never used to run a
//! kernel of this project, only to measure the ceiling our kernels are compared to.

use crate::{Buffer, Device, RuntimeError, Scalar, Storage};
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::DevicePtr;

pub struct Cublas {
    blas: CudaBlas,
}

impl Cublas {
    pub fn new(device: &Device) -> Result<Cublas, RuntimeError> {
        match device {
            Device::Cuda(d) => Ok(Cublas {
                blas: CudaBlas::new(d.stream.clone())
                    .map_err(|e| RuntimeError::Cuda(format!("cuBLAS: {e:?}")))?,
            }),
            Device::Cpu => Err(RuntimeError::Unsupported("cuBLAS needs a GPU".into())),
        }
    }

    /// Row-major `c[m×n] (f32) = a[m×k] (bf16) · b[k×n] (bf16)`, f32 accumulate.
    pub fn gemm_bf16_f32(
        &self,
        device: &Device,
        a: &Buffer,
        b: &Buffer,
        c: &mut Buffer,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<(), RuntimeError> {
        let Device::Cuda(d) = device else {
            return Err(RuntimeError::Unsupported("cuBLAS needs a GPU".into()));
        };
        if a.dtype != Scalar::BF16
            || b.dtype != Scalar::BF16
            || c.dtype != Scalar::F32
            || a.len < m * k
            || b.len < k * n
            || c.len < m * n
        {
            return Err(RuntimeError::Buffer(
                "gemm_bf16_f32: wrong buffer types or sizes".into(),
            ));
        }
        let (Storage::Cuda(sa), Storage::Cuda(sb), Storage::Cuda(sc)) =
            (&a.storage, &b.storage, &c.storage)
        else {
            return Err(RuntimeError::Buffer("buffers must be on the GPU".into()));
        };
        let (pa, _ga) = sa.device_ptr(&d.stream);
        let (pb, _gb) = sb.device_ptr(&d.stream);
        let (pc, _gc) = sc.device_ptr(&d.stream);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Column-major view: cᵀ (n×m) = bᵀ (n×k) · aᵀ (k×m).
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_N,
                sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                pb as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                n as i32,
                pa as *const _,
                sys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                (&beta) as *const f32 as *const _,
                pc as *mut _,
                sys::cudaDataType_t::CUDA_R_32F,
                n as i32,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| RuntimeError::Cuda(format!("cuBLAS gemm: {e:?}")))
    }
}
