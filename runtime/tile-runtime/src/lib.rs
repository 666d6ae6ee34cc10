//! `tile-runtime`: run compiled `.tile` kernels.
//!
//! A [`Device`] is either a CUDA GPU (through cudarc; the driver is loaded at
//! run time, so nothing here needs CUDA to build) or the CPU (the TIR
//! interpreter). [`Buffer`]s live on a device; a [`Kernel`] is loaded onto a
//! device from PTX (GPU) or TIR (CPU) with its [`Signature`], and every launch
//! is checked against that signature before anything runs.

pub mod argspec;
#[cfg(feature = "baseline")]
pub mod baseline;
pub mod bench;
#[cfg(feature = "blas")]
pub mod blas;
#[cfg(feature = "collective")]
pub mod collective;
mod cuda;
mod pack;
pub mod tune;

pub use pack::{choose_target, describe, parse_arch_override, Pack, TargetError, TILE_ARCH};
pub use tile_ir::pack::PackError;
pub use tile_ir::Config;

use std::fmt;
pub use tile_ir::{ParamKind, Scalar, Signature};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no GPU available: {0}")]
    NoGpu(String),
    #[error("CUDA: {0}")]
    Cuda(String),
    #[error("kernel `{kernel}`: {message}")]
    Launch { kernel: String, message: String },
    #[error("buffer: {0}")]
    Buffer(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("collective: {0}")]
    Collective(String),
}

/// Where kernels run.
pub enum Device {
    Cuda(Box<cuda::CudaDevice>),
    Cpu,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl Device {
    /// The `ordinal`-th CUDA GPU; an error (never a crash) where there is none.
    pub fn cuda(ordinal: usize) -> Result<Device, RuntimeError> {
        Ok(Device::Cuda(Box::new(cuda::CudaDevice::new(ordinal)?)))
    }

    /// The CPU, running kernels on the TIR interpreter.
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// How many CUDA GPUs this machine has (0 without a driver).
    pub fn gpu_count() -> usize {
        cuda::device_count()
    }

    /// Why `Device::cuda(0)` would fail, or `None` when a GPU is usable.
    pub fn gpu_unavailable_reason() -> Option<String> {
        cuda::unavailable_reason(0)
    }

    pub fn name(&self) -> String {
        match self {
            Device::Cuda(d) => d.name.clone(),
            Device::Cpu => "cpu (TIR interpreter)".into(),
        }
    }

    /// The driver's CUDA version (`13.0`), or `none` on the CPU.
    pub fn driver_version(&self) -> String {
        match self {
            Device::Cuda(_) => cuda::driver_version(),
            Device::Cpu => "none".into(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Streaming multiprocessors of a GPU; the worker threads of the CPU.
    pub fn parallelism(&self) -> usize {
        match self {
            Device::Cuda(d) => d.sm_count().unwrap_or(1),
            Device::Cpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// `(free, total)` device memory in bytes (GPU only; `None` on the CPU).
    pub fn memory_info(&self) -> Option<(usize, usize)> {
        match self {
            Device::Cuda(d) => d.memory_info().ok(),
            Device::Cpu => None,
        }
    }

    /// The most bytes of device buffers alive at once, and the most the
    /// allocator held for them (with what it keeps for reuse), since the
    /// last call with `reset` (GPU only; `None` on the CPU or where the
    /// driver does not say).
    pub fn memory_high_water(&self, reset: bool) -> Option<(usize, usize)> {
        match self {
            Device::Cuda(d) => d.pool_high_water(reset).ok(),
            Device::Cpu => None,
        }
    }

    /// A zero-filled buffer of `len` elements.
    pub fn alloc(&self, dtype: Scalar, len: usize) -> Result<Buffer, RuntimeError> {
        let storage = match self {
            Device::Cuda(d) => Storage::Cuda(cuda::CudaMem::own(d.alloc(byte_len(dtype, len)?)?)),
            Device::Cpu => Storage::Host(host_zeros(dtype, len)?),
        };
        Ok(Buffer {
            dtype,
            len,
            storage,
        })
    }

    /// A zero-filled buffer whose parts can be lent out as buffers of their
    /// own ([`Buffer::view`]), all in one allocation: many small tensors
    /// then also form one large one, for kernels that treat them alike.
    /// GPU only (the interpreter's buffers cannot share memory).
    pub fn alloc_shared(&self, dtype: Scalar, len: usize) -> Result<Buffer, RuntimeError> {
        match self {
            Device::Cuda(d) => Ok(Buffer {
                dtype,
                len,
                storage: Storage::Cuda(cuda::CudaMem::shared(d.alloc(len * dtype.size_bytes())?)),
            }),
            Device::Cpu => Err(RuntimeError::Unsupported(
                "buffers sharing memory need a GPU device".into(),
            )),
        }
    }

    /// A buffer for outputs that kernels overwrite entirely: on a GPU its
    /// contents are left as they were (no zero-filling pass over memory); on
    /// the CPU it is zero-filled like [`Device::alloc`].
    pub fn alloc_output(&self, dtype: Scalar, len: usize) -> Result<Buffer, RuntimeError> {
        let storage = match self {
            Device::Cuda(d) => {
                Storage::Cuda(cuda::CudaMem::own(d.alloc_uninit(byte_len(dtype, len)?)?))
            }
            Device::Cpu => Storage::Host(host_zeros(dtype, len)?),
        };
        Ok(Buffer {
            dtype,
            len,
            storage,
        })
    }

    /// A buffer holding `data` (raw little-endian elements of `dtype`).
    pub fn upload_bytes(&self, dtype: Scalar, data: &[u8]) -> Result<Buffer, RuntimeError> {
        let mut b = self.alloc(dtype, whole_elements(data.len(), dtype)?)?;
        self.write(&mut b, data)?;
        Ok(b)
    }

    pub fn upload<T: Element>(&self, data: &[T]) -> Result<Buffer, RuntimeError> {
        self.upload_bytes(T::DTYPE, &T::to_bytes(data))
    }

    /// Overwrite a buffer's contents.
    pub fn write(&self, b: &mut Buffer, data: &[u8]) -> Result<(), RuntimeError> {
        if data.len() != b.len * b.dtype.size_bytes() {
            return Err(RuntimeError::Buffer(format!(
                "writing {} bytes into a buffer of {}",
                data.len(),
                b.len * b.dtype.size_bytes()
            )));
        }
        match (self, &mut b.storage) {
            (Device::Cuda(d), Storage::Cuda(s)) => d.upload(s, data),
            (Device::Cpu, Storage::Host(h)) => {
                *h = tile_interp::Buffer::from_bytes(b.dtype, data)
                    .ok_or_else(|| RuntimeError::Buffer("bad buffer bytes".into()))?;
                Ok(())
            }
            _ => Err(RuntimeError::Buffer(
                "buffer belongs to another device".into(),
            )),
        }
    }

    pub fn download_bytes(&self, b: &Buffer) -> Result<Vec<u8>, RuntimeError> {
        match (self, &b.storage) {
            (Device::Cuda(d), Storage::Cuda(s)) => d.download(s, b.len * b.dtype.size_bytes()),
            (Device::Cpu, Storage::Host(h)) => Ok(h.to_bytes()),
            _ => Err(RuntimeError::Buffer(
                "buffer belongs to another device".into(),
            )),
        }
    }

    pub fn download<T: Element>(&self, b: &Buffer) -> Result<Vec<T>, RuntimeError> {
        if b.dtype != T::DTYPE {
            return Err(RuntimeError::Buffer(format!(
                "downloading a {} buffer as {}",
                b.dtype.name(),
                T::DTYPE.name()
            )));
        }
        Ok(T::from_bytes(&self.download_bytes(b)?))
    }

    /// Host memory to read small buffers into without stopping the device
    /// ([`Device::copy_to_host`]): page-locked on a GPU, made once and reused
    /// (freeing page-locked memory waits for the whole device).
    pub fn host_copy(&self, bytes: usize) -> Result<HostCopy, RuntimeError> {
        Ok(HostCopy(match self {
            Device::Cuda(d) => HostCopyInner::Cuda {
                mem: d.alloc_pinned(bytes)?,
                copied: d.event()?,
            },
            Device::Cpu => HostCopyInner::Cpu(vec![0; bytes]),
        }))
    }

    /// Queue a copy of `b` into `dst` after the work queued so far and return
    /// at once; [`HostCopy::wait`] waits for that copy only, so the host can
    /// queue further work meanwhile (on the CPU the copy is done now).
    pub fn copy_to_host(&self, b: &Buffer, dst: &mut HostCopy) -> Result<(), RuntimeError> {
        let bytes = b.len * b.dtype.size_bytes();
        let have = match &dst.0 {
            HostCopyInner::Cuda { mem, .. } => mem.len(),
            HostCopyInner::Cpu(v) => v.len(),
        };
        if bytes != have {
            return Err(RuntimeError::Buffer(format!(
                "copying {bytes} bytes into {have} bytes of host memory"
            )));
        }
        match (self, &b.storage, &mut dst.0) {
            (Device::Cuda(d), Storage::Cuda(s), HostCopyInner::Cuda { mem, copied }) => {
                d.copy_to_pinned(s, mem, copied)
            }
            (Device::Cpu, Storage::Host(h), HostCopyInner::Cpu(v)) => {
                v.copy_from_slice(&h.to_bytes());
                Ok(())
            }
            _ => Err(RuntimeError::Buffer(
                "buffer or host memory belongs to another device".into(),
            )),
        }
    }

    /// Set every byte of a buffer to zero.
    pub fn zero(&self, b: &mut Buffer) -> Result<(), RuntimeError> {
        match (self, &mut b.storage) {
            (Device::Cuda(d), Storage::Cuda(s)) => d.zero(s),
            (Device::Cpu, Storage::Host(h)) => {
                *h = tile_interp::Buffer::zeros(h.dtype(), h.len());
                Ok(())
            }
            _ => Err(RuntimeError::Buffer(
                "buffer belongs to another device".into(),
            )),
        }
    }

    /// Device-to-device copy of a whole buffer (the bandwidth ceiling of benchmarks).
    pub fn copy(&self, src: &Buffer, dst: &mut Buffer) -> Result<(), RuntimeError> {
        if src.len * src.dtype.size_bytes() != dst.len * dst.dtype.size_bytes() {
            return Err(RuntimeError::Buffer(
                "copy between buffers of different sizes".into(),
            ));
        }
        match (self, &src.storage, &mut dst.storage) {
            (Device::Cuda(d), Storage::Cuda(s), Storage::Cuda(t)) => d.copy(s, t),
            (Device::Cpu, Storage::Host(s), Storage::Host(t)) => {
                *t =
                    tile_interp::Buffer::from_bytes(t.dtype(), &s.to_bytes()).ok_or_else(|| {
                        RuntimeError::Buffer("copy between buffers of different types".into())
                    })?;
                Ok(())
            }
            _ => Err(RuntimeError::Buffer(
                "buffers belong to another device".into(),
            )),
        }
    }

    /// Load a kernel compiled to PTX, launched with `warps` warps per CTA,
    /// `shared_bytes` of dynamic shared memory and the hidden parameters of
    /// its `tma` operands (as the compiler reported them).
    pub fn load_ptx(
        &self,
        ptx: &str,
        signature: Signature,
        warps: u32,
        shared_bytes: u32,
        tma: Vec<tile_ir::launch::TmaOperand>,
    ) -> Result<Kernel, RuntimeError> {
        match self {
            Device::Cuda(d) => {
                let f = d.load(
                    ptx,
                    &signature.name,
                    shared_bytes,
                    signature.params.len(),
                    tma.len(),
                )?;
                Ok(Kernel {
                    signature,
                    warps,
                    shared_bytes,
                    tma,
                    grid: None,
                    meta: Vec::new(),
                    disjoint: Vec::new(),
                    prior_grid_wait: false,
                    code: Code::Cuda(f),
                })
            }
            Device::Cpu => Err(RuntimeError::Unsupported(
                "PTX cannot run on the CPU device; load the kernel's TIR".into(),
            )),
        }
    }

    /// A GPU's compute capability, `(major, minor)` (`(9, 0)` on an H200);
    /// `None` on the CPU. Which PTX of a pack it loads: [`Pack::ptx_target`].
    pub fn compute_capability(&self) -> Result<Option<(u32, u32)>, RuntimeError> {
        match self {
            Device::Cuda(d) => d.compute_capability().map(Some),
            Device::Cpu => Ok(None),
        }
    }

    /// The compute architecture as named in packs (`sm_90`).
    pub fn arch(&self) -> Result<String, RuntimeError> {
        match self {
            Device::Cuda(d) => d.arch(),
            Device::Cpu => Ok("cpu".into()),
        }
    }

    /// Load a kernel's TIR to run on the CPU interpreter.
    pub fn load_tir(&self, tir: tile_ir::Kernel, warps: u32) -> Result<Kernel, RuntimeError> {
        match self {
            Device::Cpu => Ok(Kernel {
                signature: tir.signature(),
                warps,
                shared_bytes: 0,
                tma: Vec::new(),
                grid: None,
                meta: Vec::new(),
                disjoint: Vec::new(),
                prior_grid_wait: false,
                code: Code::Cpu(Box::new(tir)),
            }),
            Device::Cuda(_) => Err(RuntimeError::Unsupported(
                "TIR runs on the CPU device only; load PTX on a GPU".into(),
            )),
        }
    }

    /// Launch `kernel` over `grid` after checking `args` against its signature.
    pub fn launch(
        &self,
        kernel: &Kernel,
        grid: [u32; 3],
        args: &[Arg],
    ) -> Result<(), RuntimeError> {
        kernel.check_args(args)?;
        if grid.contains(&0) {
            return Err(kernel.error(format!("empty grid {grid:?}")));
        }
        match (self, &kernel.code) {
            (Device::Cuda(d), Code::Cuda(f)) => {
                kernel.check_disjoint(args, |a| match a {
                    Arg::Buffer(Buffer {
                        storage: Storage::Cuda(m),
                        ..
                    }) => Some(m.span()),
                    _ => None,
                })?;
                let cargs: Vec<cuda::CudaArg> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Buffer(b) => match &b.storage {
                            Storage::Cuda(s) => Ok(cuda::CudaArg::Ptr(s)),
                            Storage::Host(_) => {
                                Err(kernel.error("a CPU buffer was passed to a GPU launch".into()))
                            }
                        },
                        Arg::I32(x) => Ok(cuda::CudaArg::I32(*x)),
                        Arg::I64(x) => Ok(cuda::CudaArg::I64(*x)),
                        Arg::F32(x) => Ok(cuda::CudaArg::F32(*x)),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let hidden = cuda::HiddenArgs::new(
                    kernel.tma.iter().map(|op| d.tensor_map(op, args)).collect(),
                );
                d.launch(
                    f,
                    grid,
                    32 * kernel.warps,
                    kernel.shared_bytes,
                    &cargs,
                    &hidden,
                    kernel.prior_grid_wait,
                )
            }
            (Device::Cpu, Code::Cpu(tir)) => {
                let iargs: Vec<tile_interp::Arg> = args
                    .iter()
                    .map(|a| match a {
                        Arg::Buffer(b) => match &b.storage {
                            Storage::Host(h) => Ok(tile_interp::Arg::Buffer(h)),
                            Storage::Cuda(_) => {
                                Err(kernel.error("a GPU buffer was passed to a CPU launch".into()))
                            }
                        },
                        Arg::I32(x) => Ok(tile_interp::Arg::I32(*x)),
                        Arg::I64(x) => Ok(tile_interp::Arg::I64(*x)),
                        Arg::F32(x) => Ok(tile_interp::Arg::F32(*x)),
                    })
                    .collect::<Result<_, _>>()?;
                tile_interp::run(tir, grid, &iargs).map_err(|e| kernel.error(e.to_string()))
            }
            _ => Err(kernel.error("the kernel was loaded on another device".into())),
        }
    }

    /// Launch `kernel` over `grid` on memory and a stream the runtime does not
    /// own: device addresses of another library's allocations (torch
    /// tensors' `data_ptr()`) and its `CUstream` (`stream`, 0 for the legacy
    /// default stream), so the kernel orders with that library's work and
    /// nothing is copied. The arguments are checked against the signature
    /// first (count, kinds, each pointer's dtype, no null pointer); hidden
    /// tensor-map parameters are appended as for [`Device::launch`]. The
    /// CUDA context is this device's, the *primary* context of its ordinal
    /// (`cudarc::CudaContext::new` retains it), which is the one the CUDA
    /// runtime, and so torch, uses: their pointers and streams are valid here.
    /// On the CPU device this is an error (the interpreter runs on its own
    /// buffers: [`Device::upload_bytes`], [`Device::launch`]).
    ///
    /// # Safety
    /// The runtime cannot see the memory behind an address: each `Ptr` must
    /// be device memory of this GPU holding at least what the kernel reads
    /// and writes with these arguments and `grid`, allocated until the
    /// kernel has run on `stream`; `stream` must be a live stream of this
    /// GPU's primary context, or 0.
    pub unsafe fn launch_raw(
        &self,
        kernel: &Kernel,
        grid: [u32; 3],
        args: &[RawArg],
        stream: u64,
    ) -> Result<(), RuntimeError> {
        kernel.check_raw_args(args)?;
        if grid.contains(&0) {
            return Err(kernel.error(format!("empty grid {grid:?}")));
        }
        // Raw pointers carry no length: only a shared start is seen.
        kernel.check_disjoint(args, |a| match a {
            RawArg::Ptr(_, p) => Some(*p..*p + 1),
            _ => None,
        })?;
        match (self, &kernel.code) {
            (Device::Cuda(d), Code::Cuda(f)) => {
                let hidden = cuda::HiddenArgs::new(
                    kernel
                        .tma
                        .iter()
                        .map(|op| d.tensor_map_raw(op, args))
                        .collect(),
                );
                d.launch_on(
                    f,
                    grid,
                    32 * kernel.warps,
                    kernel.shared_bytes,
                    args,
                    &hidden,
                    stream,
                    kernel.prior_grid_wait,
                )
            }
            (Device::Cpu, _) => Err(kernel.error(
                "raw device pointers need a GPU device; the CPU interpreter runs on its own \
                 buffers (Device::upload_bytes, then Device::launch)"
                    .into(),
            )),
            _ => Err(kernel.error("the kernel was loaded on another device".into())),
        }
    }

    pub fn synchronize(&self) -> Result<(), RuntimeError> {
        match self {
            Device::Cuda(d) => d.synchronize(),
            Device::Cpu => Ok(()),
        }
    }

    /// A point in this device's stream of work, to time what runs between
    /// two of them ([`Mark::ms_since`]): a CUDA event on a GPU, the wall
    /// clock on the CPU (where every launch finishes before it returns).
    pub fn mark(&self) -> Result<Mark, RuntimeError> {
        match self {
            Device::Cuda(d) => Ok(Mark(MarkInner::Cuda(d.record()?))),
            Device::Cpu => Ok(Mark(MarkInner::Cpu(std::time::Instant::now()))),
        }
    }

    /// Time `f` with CUDA events (milliseconds); wall time on the CPU.
    pub fn time_ms(
        &self,
        f: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f32, RuntimeError> {
        match self {
            Device::Cuda(d) => d.time_ms(f),
            Device::Cpu => {
                let t = std::time::Instant::now();
                f()?;
                Ok(t.elapsed().as_secs_f32() * 1e3)
            }
        }
    }
}

/// Bytes of `len` elements of `dtype`, or an error when that overflows.
fn byte_len(dtype: Scalar, len: usize) -> Result<usize, RuntimeError> {
    len.checked_mul(dtype.size_bytes()).ok_or_else(|| {
        RuntimeError::Buffer(format!(
            "{len} {} elements do not fit in the address space",
            dtype.name()
        ))
    })
}

/// A zero-filled interpreter buffer, or an error (not an abort) when the
/// host cannot allocate it.
fn host_zeros(dtype: Scalar, len: usize) -> Result<tile_interp::Buffer, RuntimeError> {
    let bytes = byte_len(dtype, len)?;
    tile_interp::Buffer::try_zeros(dtype, len).ok_or_else(|| {
        RuntimeError::Buffer(format!(
            "cannot allocate {bytes} bytes ({len} {} elements) in host memory for the CPU device",
            dtype.name()
        ))
    })
}

/// How many `dtype` elements `bytes` bytes hold, or an error when they are
/// not a whole number of them.
fn whole_elements(bytes: usize, dtype: Scalar) -> Result<usize, RuntimeError> {
    let es = dtype.size_bytes();
    if !bytes.is_multiple_of(es) {
        return Err(RuntimeError::Buffer(format!(
            "{bytes} bytes is not a whole number of {} elements",
            dtype.name()
        )));
    }
    Ok(bytes / es)
}

/// Host memory that [`Device::copy_to_host`] fills while the device runs on.
pub struct HostCopy(HostCopyInner);

enum HostCopyInner {
    /// `copied` is recorded after each copy into `mem`: cudarc records the
    /// pinned slice's own event only once a context has a second stream, so
    /// with one stream its wait would return before the copy is done.
    Cuda {
        mem: cudarc::driver::PinnedHostSlice<u8>,
        copied: cudarc::driver::CudaEvent,
    },
    Cpu(Vec<u8>),
}

impl HostCopy {
    /// Wait for the last copy into this memory, then read it as `T`s.
    pub fn wait<T: Element>(&self) -> Result<Vec<T>, RuntimeError> {
        let bytes = match &self.0 {
            HostCopyInner::Cuda { mem, copied } => cuda::read_pinned(mem, copied)?,
            HostCopyInner::Cpu(v) => &v[..],
        };
        whole_elements(bytes.len(), T::DTYPE)?;
        Ok(T::from_bytes(bytes))
    }
}

/// See [`Device::mark`].
pub struct Mark(MarkInner);

enum MarkInner {
    Cuda(cudarc::driver::CudaEvent),
    Cpu(std::time::Instant),
}

impl Mark {
    /// Milliseconds of device time from `earlier` to this mark (waiting for
    /// the device to reach it); an error for marks of different devices.
    pub fn ms_since(&self, earlier: &Mark) -> Result<f32, RuntimeError> {
        match (&earlier.0, &self.0) {
            (MarkInner::Cuda(a), MarkInner::Cuda(b)) => cuda::elapsed_ms(a, b),
            (MarkInner::Cpu(a), MarkInner::Cpu(b)) => {
                Ok(b.saturating_duration_since(*a).as_secs_f32() * 1e3)
            }
            _ => Err(RuntimeError::Unsupported(
                "marks of different devices".into(),
            )),
        }
    }
}

pub(crate) enum Storage {
    Cuda(cuda::CudaMem),
    Host(tile_interp::Buffer),
}

/// A typed array on a device.
pub struct Buffer {
    dtype: Scalar,
    len: usize,
    storage: Storage,
}

impl Buffer {
    /// Elements `offset..offset + len` of a buffer made by
    /// [`Device::alloc_shared`] (or a view of one), as a buffer of their
    /// own: writes through either are writes to the same memory, which
    /// lives while any of them does. An error for other buffers or a range
    /// outside this one.
    pub fn view(&self, offset: usize, len: usize) -> Result<Buffer, RuntimeError> {
        let es = self.dtype.size_bytes();
        let outside = || {
            RuntimeError::Buffer(format!(
                "a view of elements {offset}..{offset}+{len} of a buffer of {}",
                self.len
            ))
        };
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(outside());
        }
        match &self.storage {
            Storage::Cuda(m) => Ok(Buffer {
                dtype: self.dtype,
                len,
                storage: Storage::Cuda(m.view(offset * es, len * es).ok_or_else(|| {
                    RuntimeError::Buffer("only buffers from Device::alloc_shared have views".into())
                })?),
            }),
            Storage::Host(_) => Err(RuntimeError::Unsupported(
                "buffers sharing memory need a GPU device".into(),
            )),
        }
    }

    pub fn dtype(&self) -> Scalar {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One launch argument.
pub enum Arg<'a> {
    Buffer(&'a Buffer),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// One argument of [`Device::launch_raw`]: a device address (with the
/// element type the caller vouches for, checked against the parameter's) or
/// a scalar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RawArg {
    Ptr(Scalar, u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

enum Code {
    Cuda(cudarc::driver::CudaFunction),
    Cpu(Box<tile_ir::Kernel>),
}

/// A kernel loaded on a device.
pub struct Kernel {
    signature: Signature,
    warps: u32,
    shared_bytes: u32,
    tma: Vec<tile_ir::launch::TmaOperand>,
    /// The declared launch grid (`grid:` in the tune block) and the config's
    /// meta-parameter values it may use; set by [`Pack::load_kernel`].
    grid: Option<Vec<tile_ir::launch::GridExpr>>,
    meta: Vec<(String, i64)>,
    /// Pairs of pointer parameters whose buffers must not overlap
    /// (`tile_ir::aliasing`); set by [`Pack::load_kernel`].
    disjoint: Vec<(usize, usize)>,
    /// The PTX waits at entry for the grid before it (`griddepcontrol.wait`),
    /// so launches may overlap that grid's tail; set by [`Pack::load_kernel`].
    prior_grid_wait: bool,
    code: Code,
}

impl Kernel {
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
    pub fn warps(&self) -> u32 {
        self.warps
    }

    /// Threads per CTA: `32 × warps`.
    pub fn block(&self) -> [u32; 3] {
        [32 * self.warps, 1, 1]
    }

    /// Attach the kernel's declared grid and the meta-parameter values of the
    /// config it was compiled for (what [`Kernel::grid`] evaluates with).
    pub fn with_grid(
        mut self,
        grid: Option<Vec<tile_ir::launch::GridExpr>>,
        meta: Vec<(String, i64)>,
    ) -> Kernel {
        self.grid = grid;
        self.meta = meta;
        self
    }

    /// Mark the kernel's PTX as waiting at entry for the grid launched
    /// before it (`tile_ir::pack::Variant::waits_for_prior_grid`): GPU
    /// launches then let it start during that grid's tail (programmatic
    /// dependent launch; `TILE_PDL=0` turns that off).
    pub fn with_prior_grid_wait(mut self, waits: bool) -> Kernel {
        self.prior_grid_wait = waits;
        self
    }

    /// Attach the pairs of pointer parameters whose buffers a GPU launch
    /// must keep apart (`tile_ir::aliasing::disjoint_params` of its TIR).
    pub fn with_disjoint(mut self, pairs: impl IntoIterator<Item = (usize, usize)>) -> Kernel {
        self.disjoint = pairs.into_iter().collect();
        self
    }

    /// An error when two arguments the kernel must get apart overlap: a
    /// loop writes through the first while copies of the second may run
    /// iterations ahead of those writes (`tile_ir::aliasing`). `span` gives
    /// an argument's device addresses, when it has any.
    fn check_disjoint<A>(
        &self,
        args: &[A],
        span: impl Fn(&A) -> Option<std::ops::Range<u64>>,
    ) -> Result<(), RuntimeError> {
        for &(w, r) in &self.disjoint {
            let (Some(a), Some(b)) = (args.get(w).and_then(&span), args.get(r).and_then(&span))
            else {
                continue;
            };
            if a.start < b.end && b.start < a.end {
                let name = |i: usize| self.signature.params[i].name.as_str();
                return Err(self.error(format!(
                    "arguments `{}` and `{}` overlap, but the kernel writes `{}` in a loop that reads `{}` ahead of those writes; hint: pass separate buffers",
                    name(w),
                    name(r),
                    name(w),
                    name(r)
                )));
            }
        }
        Ok(())
    }

    /// The launch grid the kernel declares (`grid:` in its tune block),
    /// evaluated with the integer scalar arguments of this launch and the
    /// config's meta-parameters; axes it leaves out are 1. An error when the
    /// kernel declares no grid, an argument is missing or of the wrong kind,
    /// or an axis is not in `1..=u32::MAX`.
    pub fn grid(&self, args: &[Arg]) -> Result<[u32; 3], RuntimeError> {
        let Some(axes) = &self.grid else {
            return Err(self.error(
                "declares no launch grid (no `grid:` in its tune block); the caller chooses it"
                    .into(),
            ));
        };
        self.grid_of(axes, args)
    }

    /// The grid `axes` give for this launch, as [`Kernel::grid`] evaluates a
    /// declared one (`tile-tune --grid` for kernels that declare none).
    pub fn grid_of(
        &self,
        axes: &[tile_ir::launch::GridExpr],
        args: &[Arg],
    ) -> Result<[u32; 3], RuntimeError> {
        self.check_args(args)?;
        let params = &self.signature.params;
        let param = |name: &str| -> Option<i64> {
            let i = params.iter().position(|p| p.name == name)?;
            match args[i] {
                Arg::I32(v) => Some(v as i64),
                Arg::I64(v) => Some(v),
                _ => None,
            }
        };
        let meta = |name: &str| self.meta.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let mut grid = [1u32; 3];
        for (axis, e) in axes.iter().enumerate().take(3) {
            let v = e
                .eval(&param, &meta)
                .map_err(|m| self.error(format!("grid axis {axis} `{e}`: {m}")))?;
            grid[axis] = u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                self.error(format!(
                    "grid axis {axis} `{e}` is {v}, outside 1..=4294967295"
                ))
            })?;
        }
        Ok(grid)
    }

    fn error(&self, message: String) -> RuntimeError {
        RuntimeError::Launch {
            kernel: self.signature.name.clone(),
            message,
        }
    }

    /// [`Kernel::check_args`] for [`Device::launch_raw`]; a null pointer is refused too.
    fn check_raw_args(&self, args: &[RawArg]) -> Result<(), RuntimeError> {
        let params = &self.signature.params;
        if args.len() != params.len() {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            return Err(self.error(format!(
                "expects {} arguments ({}), got {}",
                params.len(),
                names.join(", "),
                args.len()
            )));
        }
        for (p, a) in params.iter().zip(args) {
            match (p.kind, *a) {
                (ParamKind::Ptr(s), RawArg::Ptr(t, addr)) => {
                    if s != t {
                        return Err(self.error(format!(
                            "argument `{}` must be a {} pointer, got a {} pointer",
                            p.name,
                            s.name(),
                            t.name()
                        )));
                    }
                    if addr == 0 {
                        return Err(self.error(format!("argument `{}` is a null pointer", p.name)));
                    }
                }
                (ParamKind::Scalar(Scalar::I32), RawArg::I32(_))
                | (ParamKind::Scalar(Scalar::I64), RawArg::I64(_))
                | (ParamKind::Scalar(Scalar::F32), RawArg::F32(_)) => {}
                (kind, a) => {
                    let want = match kind {
                        ParamKind::Ptr(s) => format!("a {} pointer", s.name()),
                        ParamKind::Scalar(s) => format!("an {} scalar", s.name()),
                    };
                    let got = match a {
                        RawArg::Ptr(t, _) => format!("a {} pointer", t.name()),
                        RawArg::I32(_) => "an i32".into(),
                        RawArg::I64(_) => "an i64".into(),
                        RawArg::F32(_) => "an f32".into(),
                    };
                    return Err(
                        self.error(format!("argument `{}` must be {want}, got {got}", p.name))
                    );
                }
            }
        }
        Ok(())
    }

    /// Argument count, kinds and dtypes against the signature.
    fn check_args(&self, args: &[Arg]) -> Result<(), RuntimeError> {
        let params = &self.signature.params;
        if args.len() != params.len() {
            let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
            return Err(self.error(format!(
                "expects {} arguments ({}), got {}",
                params.len(),
                names.join(", "),
                args.len()
            )));
        }
        for (p, a) in params.iter().zip(args) {
            let ok = match (p.kind, a) {
                (ParamKind::Ptr(s), Arg::Buffer(b)) => {
                    if b.dtype != s {
                        return Err(self.error(format!(
                            "argument `{}` must be a {} buffer, got a {} buffer",
                            p.name,
                            s.name(),
                            b.dtype.name()
                        )));
                    }
                    true
                }
                (ParamKind::Scalar(Scalar::I32), Arg::I32(_))
                | (ParamKind::Scalar(Scalar::I64), Arg::I64(_))
                | (ParamKind::Scalar(Scalar::F32), Arg::F32(_)) => true,
                _ => false,
            };
            if !ok {
                let want = match p.kind {
                    ParamKind::Ptr(s) => format!("a {} buffer", s.name()),
                    ParamKind::Scalar(s) => format!("an {} scalar", s.name()),
                };
                let got = match a {
                    Arg::Buffer(b) => format!("a {} buffer", b.dtype.name()),
                    Arg::I32(_) => "an i32".into(),
                    Arg::I64(_) => "an i64".into(),
                    Arg::F32(_) => "an f32".into(),
                };
                return Err(self.error(format!("argument `{}` must be {want}, got {got}", p.name)));
            }
        }
        Ok(())
    }
}

/// Host element types that buffers can be made from.
pub trait Element: Copy {
    const DTYPE: Scalar;
    fn to_bytes(data: &[Self]) -> Vec<u8>;
    fn from_bytes(bytes: &[u8]) -> Vec<Self>;
}

macro_rules! element {
    ($t:ty, $d:expr, $n:expr) => {
        impl Element for $t {
            const DTYPE: Scalar = $d;
            fn to_bytes(data: &[Self]) -> Vec<u8> {
                data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            fn from_bytes(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
        }
    };
}
element!(f32, Scalar::F32, 4);
element!(i32, Scalar::I32, 4);
element!(i64, Scalar::I64, 8);
element!(half::bf16, Scalar::BF16, 2);
element!(half::f16, Scalar::F16, 2);

#[cfg(test)]
mod raw_launch_tests {
    //! `Device::launch_raw` without a GPU: its argument checks and the CPU
    //! device's refusal (the GPU path is exercised by python/tests/gpu).
    use super::*;
    use tile_front::frontend::{parse_program, SourceFile};

    fn vector_add_cpu() -> Kernel {
        let src = SourceFile::new(
            "va.tile",
            "kernel va<const BLOCK: i32>(a: *f32, b: *f32, c: *f32, n: i32) {\n\
             let offs = program_id(0) * BLOCK + arange(0, BLOCK);\n\
             store(c + offs, load(a + offs, offs < n, 0.0) + load(b + offs, offs < n, 0.0), offs < n);\n\
             }\n",
        );
        let program = parse_program(&src).expect("parses");
        let tir = program
            .specialize("va", &[("BLOCK".into(), 64)])
            .expect("specialises");
        Device::cpu().load_tir(tir, 4).expect("loads")
    }

    fn msg(r: Result<(), RuntimeError>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn raw_launch_checks_arguments_before_the_device() {
        let k = vector_add_cpu();
        let cpu = Device::cpu();
        let f = |p| RawArg::Ptr(Scalar::F32, p);
        let launch = |args: &[RawArg]| unsafe { cpu.launch_raw(&k, [1, 1, 1], args, 0) };
        assert_eq!(
            msg(launch(&[f(16), f(32), RawArg::I32(4)])),
            "kernel `va`: expects 4 arguments (a, b, c, n), got 3"
        );
        assert_eq!(
            msg(launch(&[
                f(16),
                RawArg::Ptr(Scalar::BF16, 32),
                f(48),
                RawArg::I32(4)
            ])),
            "kernel `va`: argument `b` must be a f32 pointer, got a bf16 pointer"
        );
        assert_eq!(
            msg(launch(&[f(16), f(32), f(0), RawArg::I32(4)])),
            "kernel `va`: argument `c` is a null pointer"
        );
        assert_eq!(
            msg(launch(&[f(16), f(32), f(48), RawArg::I64(4)])),
            "kernel `va`: argument `n` must be an i32 scalar, got an i64"
        );
        assert_eq!(
            msg(launch(&[RawArg::I32(1), f(32), f(48), RawArg::I32(4)])),
            "kernel `va`: argument `a` must be a f32 pointer, got an i32"
        );
        assert!(msg(unsafe {
            cpu.launch_raw(&k, [0, 1, 1], &[f(16), f(32), f(48), RawArg::I32(4)], 0)
        })
        .contains("empty grid"));
    }

    #[test]
    fn arguments_that_must_be_apart_are_checked() {
        // As if `va`'s loop wrote `c` while reading `a` ahead.
        let k = vector_add_cpu().with_disjoint([(2, 0)]);
        let f = |p| RawArg::Ptr(Scalar::F32, p);
        let launch = |args: &[RawArg]| unsafe { Device::cpu().launch_raw(&k, [1, 1, 1], args, 0) };
        assert_eq!(
            msg(launch(&[f(16), f(32), f(16), RawArg::I32(4)])),
            "kernel `va`: arguments `c` and `a` overlap, but the kernel writes `c` in a loop that reads `a` ahead of those writes; hint: pass separate buffers"
        );
        // `b` may alias either; apart, the launch goes on to the device check.
        assert!(msg(launch(&[f(16), f(16), f(48), RawArg::I32(4)])).contains("need a GPU device"));
    }

    #[test]
    fn raw_launch_is_refused_on_the_cpu_device() {
        let k = vector_add_cpu();
        let args = [
            RawArg::Ptr(Scalar::F32, 16),
            RawArg::Ptr(Scalar::F32, 32),
            RawArg::Ptr(Scalar::F32, 48),
            RawArg::I32(4),
        ];
        let e = msg(unsafe { Device::cpu().launch_raw(&k, [1, 1, 1], &args, 0) });
        assert!(
            e.contains("raw device pointers need a GPU device"),
            "got: {e}"
        );
    }
}

#[cfg(test)]
mod alloc_tests {
    use super::*;

    #[test]
    fn a_cpu_buffer_too_large_for_memory_is_an_error_not_an_abort() {
        let dev = Device::cpu();
        // 2^47 f32 = 512 TiB: past any host's address space.
        for alloc in [Device::alloc, Device::alloc_output] {
            let err = alloc(&dev, Scalar::F32, 1 << 47).err().expect("refused");
            assert!(err.to_string().contains("cannot allocate"), "{err}");
            let err = alloc(&dev, Scalar::F32, usize::MAX / 2)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("do not fit"), "{err}");
        }
        // And an ordinary one still works, zero-filled.
        let b = dev.alloc(Scalar::F32, 5).unwrap();
        assert_eq!(dev.download::<f32>(&b).unwrap(), vec![0.0; 5]);
    }
}
