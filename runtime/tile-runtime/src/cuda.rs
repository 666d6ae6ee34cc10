//! The CUDA backend: cudarc with the driver loaded at run time, so that builds
//! need no CUDA and a machine without a GPU gets an error, never a crash.

use crate::RuntimeError;
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tile_ir::launch::{HostScalar, TmaOperand};

/// `TILE_PTXAS=/path/to/ptxas` has kernels assembled by that `ptxas` (with
/// the options in `TILE_PTXAS_OPTIONS`, e.g. `-O0`) and loaded as machine
/// code, instead of handing the PTX to the driver's compiler: tells a fault
/// of our PTX from one of the PTX compiler (docs/ARCHITECTURE.md, "Below
/// our PTX").
pub const TILE_PTXAS: &str = "TILE_PTXAS";
pub const TILE_PTXAS_OPTIONS: &str = "TILE_PTXAS_OPTIONS";

/// Assemble `ptx` (kernel `name`) with the `ptxas` at `ptxas` for the target
/// its `.target` line names; the cubin's bytes.
fn assemble(ptxas: &std::ffi::OsStr, ptx: &str, name: &str) -> Result<Vec<u8>, RuntimeError> {
    let fail = |why: String| RuntimeError::Cuda(format!("{TILE_PTXAS}: kernel `{name}`: {why}"));
    let arch = ptx
        .lines()
        .find_map(|l| l.trim().strip_prefix(".target "))
        .and_then(|t| t.split(',').next())
        .map(str::trim)
        .ok_or_else(|| fail("the PTX has no `.target` line".into()))?;
    let dir = tempfile::tempdir().map_err(|e| fail(format!("temporary directory: {e}")))?;
    let (src, out) = (dir.path().join("k.ptx"), dir.path().join("k.cubin"));
    std::fs::write(&src, ptx).map_err(|e| fail(format!("{}: {e}", src.display())))?;
    let options = std::env::var(TILE_PTXAS_OPTIONS).unwrap_or_default();
    let run = std::process::Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .args(options.split_whitespace())
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| fail(format!("cannot run {}: {e}", ptxas.to_string_lossy())))?;
    if !run.status.success() {
        return Err(fail(format!(
            "{} {options} failed ({}): {}",
            ptxas.to_string_lossy(),
            run.status,
            String::from_utf8_lossy(&run.stderr).trim()
        )));
    }
    std::fs::read(&out).map_err(|e| fail(format!("{}: {e}", out.display())))
}

/// Encoded tensor maps kept before the cache is emptied (host memory only: a
/// launch passes its maps by value, so no kernel reads the cache).
const MAX_TENSOR_MAPS: usize = 4096;

/// A `CUtensorMap` as a kernel parameter: 128 bytes, 64-byte aligned, passed
/// by value (`tile_ir::launch::hidden_params`).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct TensorMap([u64; 16]);

const _: () = assert!(
    std::mem::size_of::<TensorMap>() == tile_ir::launch::TENSOR_MAP_BYTES
        && std::mem::align_of::<TensorMap>() == tile_ir::launch::TENSOR_MAP_ALIGN
);

// SAFETY: plain bytes, laid out as the kernel parameter (checked above).
unsafe impl cudarc::driver::DeviceRepr for TensorMap {}

/// The hidden arguments of a launch: a map per TMA operand (zeros where the
/// host could not encode one) and the mask of those it did.
pub(crate) struct HiddenArgs {
    maps: Vec<TensorMap>,
    described: u32,
}

impl HiddenArgs {
    pub(crate) fn new(maps: Vec<Option<TensorMap>>) -> HiddenArgs {
        let described = maps
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .fold(0u32, |bits, (k, _)| bits | 1 << k);
        HiddenArgs {
            maps: maps
                .into_iter()
                .map(|m| m.unwrap_or(TensorMap([0; 16])))
                .collect(),
            described,
        }
    }
}

/// What a tensor map encodes: base address, rows, columns, row pitch (bytes),
/// box rows and columns, swizzle bytes, element bytes.
type TensorKey = (u64, i64, i64, i64, u32, u32, u32, u32);

pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) name: String,
    /// Kernels that wait for the grid before them are launched as its
    /// programmatic dependents (unless `TILE_PDL=0`).
    dependent_launch: bool,
    /// Encoded tensor maps by what they describe (encoding is host work;
    /// a launch copies the map into its parameters).
    tensor_maps: Mutex<HashMap<TensorKey, TensorMap>>,
}

/// A buffer's device memory: its own allocation (freed when dropped), or a
/// part of a shared one ([`CudaMem::shared`], [`CudaMem::view`]), which the
/// `Arc` keeps alive and only its owner frees. Either way a `CudaSlice` to the rest of the runtime.
pub(crate) struct CudaMem {
    slice: std::mem::ManuallyDrop<CudaSlice<u8>>,
    whole: Option<Arc<CudaMem>>,
}

impl CudaMem {
    pub(crate) fn own(slice: CudaSlice<u8>) -> CudaMem {
        CudaMem {
            slice: std::mem::ManuallyDrop::new(slice),
            whole: None,
        }
    }

    /// All of a new allocation that parts can be taken of ([`CudaMem::view`]).
    pub(crate) fn shared(slice: CudaSlice<u8>) -> CudaMem {
        let bytes = slice.len();
        CudaMem::part_of(&Arc::new(CudaMem::own(slice)), 0, bytes)
    }

    /// `bytes` bytes from `offset` of this memory, or `None` unless it is
    /// shared ([`CudaMem::shared`]) and holds them.
    pub(crate) fn view(&self, offset: usize, bytes: usize) -> Option<CudaMem> {
        let base = self.whole.as_ref()?;
        let stream = self.slice.stream();
        let start = (self.slice.device_ptr(stream).0 - base.slice.device_ptr(stream).0) as usize;
        (offset.checked_add(bytes)? <= self.slice.len())
            .then(|| CudaMem::part_of(base, start + offset, bytes))
    }

    /// The device addresses this memory spans, `start..end`.
    pub(crate) fn span(&self) -> std::ops::Range<u64> {
        let start = self.slice.device_ptr(self.slice.stream()).0;
        start..start + self.slice.len() as u64
    }

    fn part_of(base: &Arc<CudaMem>, offset: usize, bytes: usize) -> CudaMem {
        let stream = base.slice.stream().clone();
        let ptr = base.slice.device_ptr(&stream).0 + offset as u64;
        // SAFETY: inside `base`'s allocation (the callers check), which the
        // `Arc` keeps alive for as long as this part; a part is never freed
        // (`Drop` leaks it).
        let slice = unsafe { stream.upgrade_device_ptr::<u8>(ptr, bytes) };
        CudaMem {
            slice: std::mem::ManuallyDrop::new(slice),
            whole: Some(base.clone()),
        }
    }
}

impl std::ops::Deref for CudaMem {
    type Target = CudaSlice<u8>;
    fn deref(&self) -> &CudaSlice<u8> {
        &self.slice
    }
}

impl std::ops::DerefMut for CudaMem {
    fn deref_mut(&mut self) -> &mut CudaSlice<u8> {
        &mut self.slice
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again.
        let slice = unsafe { std::mem::ManuallyDrop::take(&mut self.slice) };
        if self.whole.is_some() {
            slice.leak();
        }
    }
}

fn drv(e: cudarc::driver::DriverError) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

/// The bytes of `mem` once the copy [`CudaDevice::copy_to_pinned`] last
/// queued into it (recorded in `copied`) is done.
pub(crate) fn read_pinned<'a>(
    mem: &'a cudarc::driver::PinnedHostSlice<u8>,
    copied: &cudarc::driver::CudaEvent,
) -> Result<&'a [u8], RuntimeError> {
    copied.synchronize().map_err(drv)?;
    mem.as_slice().map_err(drv)
}

/// Why no CUDA device can be used here, or `None` when one can.
pub(crate) fn unavailable_reason(ordinal: usize) -> Option<String> {
    // cudarc panics when libcuda is missing; look for it first.
    if !unsafe { sys::is_culib_present() } {
        return Some("no CUDA driver (libcuda.so) on this machine".into());
    }
    match std::panic::catch_unwind(|| {
        cudarc::driver::result::init().and_then(|_| cudarc::driver::result::device::get_count())
    }) {
        Ok(Ok(n)) if (n as usize) > ordinal => None,
        Ok(Ok(n)) => Some(format!("CUDA device {ordinal} requested but {n} present")),
        Ok(Err(e)) => Some(format!("CUDA driver error: {e}")),
        Err(_) => Some("the CUDA driver could not be loaded".into()),
    }
}

/// CUDA devices present (0 without a usable driver).
pub(crate) fn device_count() -> usize {
    if !unsafe { sys::is_culib_present() } {
        return 0;
    }
    match std::panic::catch_unwind(|| {
        cudarc::driver::result::init().and_then(|_| cudarc::driver::result::device::get_count())
    }) {
        Ok(Ok(n)) => n.max(0) as usize,
        _ => 0,
    }
}

/// The driver's CUDA version, e.g. `13.0`.
pub(crate) fn driver_version() -> String {
    let mut v = 0i32;
    match unsafe { sys::cuDriverGetVersion(&mut v) } {
        sys::CUresult::CUDA_SUCCESS => format!("{}.{}", v / 1000, (v % 1000) / 10),
        e => format!("unknown ({e:?})"),
    }
}

impl CudaDevice {
    pub(crate) fn new(ordinal: usize) -> Result<CudaDevice, RuntimeError> {
        if let Some(why) = unavailable_reason(ordinal) {
            return Err(RuntimeError::NoGpu(why));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv)?;
        let stream = ctx.default_stream();
        let name = ctx.name().map_err(drv)?;
        let dev = CudaDevice {
            ctx,
            stream,
            name,
            dependent_launch: std::env::var("TILE_PDL").map_or(true, |v| v != "0"),
            tensor_maps: Mutex::new(HashMap::new()),
        };
        // Freed buffers stay in the pool for the next ones (a training step
        // allocates the same sizes again), instead of going back to the
        // driver at every synchronisation and being mapped again; an
        // allocation that finds the device full trims the pool and retries.
        dev.set_pool_release_threshold(u64::MAX)?;
        Ok(dev)
    }

    fn default_pool(&self) -> Result<sys::CUmemoryPool, RuntimeError> {
        self.ctx.bind_to_thread().map_err(drv)?;
        // SAFETY: the device comes from the live context.
        unsafe { cudarc::driver::result::device::get_default_mem_pool(self.ctx.cu_device()) }
            .map_err(drv)
    }

    fn set_pool_release_threshold(&self, bytes: u64) -> Result<(), RuntimeError> {
        let pool = self.default_pool()?;
        let mut v = bytes;
        // SAFETY: the release threshold is a u64 (cuuint64_t).
        unsafe {
            cudarc::driver::result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut v as *mut u64 as *mut core::ffi::c_void,
            )
        }
        .map_err(drv)
    }

    /// `alloc` once more after giving the pool's unused memory back to the
    /// driver (once every queued free has happened), when it ran out.
    fn retry_when_full<T>(
        &self,
        alloc: impl Fn() -> Result<T, cudarc::driver::DriverError>,
    ) -> Result<T, RuntimeError> {
        match alloc() {
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.synchronize()?;
                let pool = self.default_pool()?;
                // SAFETY: the pool of the live context.
                unsafe { cudarc::driver::result::mem_pool::trim_to(pool, 0) }.map_err(drv)?;
                alloc().map_err(drv)
            }
            r => r.map_err(drv),
        }
    }

    /// `(major, minor)`: `(9, 0)` on an H100/H200, `(8, 6)` on an RTX 3090.
    pub(crate) fn compute_capability(&self) -> Result<(u32, u32), RuntimeError> {
        use sys::CUdevice_attribute::*;
        let major = self
            .ctx
            .attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(drv)?;
        let minor = self
            .ctx
            .attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
            .map_err(drv)?;
        Ok((major.max(0) as u32, minor.max(0) as u32))
    }

    pub(crate) fn arch(&self) -> Result<String, RuntimeError> {
        let (major, minor) = self.compute_capability()?;
        Ok(format!("sm_{major}{minor}"))
    }

    pub(crate) fn sm_count(&self) -> Result<usize, RuntimeError> {
        let n = self
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv)?;
        Ok(n as usize)
    }

    /// (free, total) device memory in bytes.
    pub(crate) fn memory_info(&self) -> Result<(usize, usize), RuntimeError> {
        self.ctx.bind_to_thread().map_err(drv)?;
        cudarc::driver::result::mem_get_info().map_err(drv)
    }

    /// The high-water marks (used, reserved) of the default memory pool the
    /// buffers come from (cudarc allocates stream-ordered from it), in
    /// bytes; `reset` starts both over at the current values.
    pub(crate) fn pool_high_water(&self, reset: bool) -> Result<(usize, usize), RuntimeError> {
        use cudarc::driver::result::mem_pool;
        use sys::CUmemPool_attribute::*;
        let pool = self.default_pool()?;
        // SAFETY: the pool of the live context; each attribute is a u64
        // (cuuint64_t), as the driver API specifies.
        unsafe {
            let mut out = [0u64; 2];
            for (i, attr) in [
                CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            ]
            .into_iter()
            .enumerate()
            {
                let p = &mut out[i] as *mut u64 as *mut core::ffi::c_void;
                mem_pool::get_attribute(pool, attr, p).map_err(drv)?;
                if reset {
                    let mut zero = 0u64;
                    let z = &mut zero as *mut u64 as *mut core::ffi::c_void;
                    mem_pool::set_attribute(pool, attr, z).map_err(drv)?;
                }
            }
            Ok((out[0] as usize, out[1] as usize))
        }
    }

    /// Device memory whose contents are whatever was there (no memset).
    pub(crate) fn alloc_uninit(&self, bytes: usize) -> Result<CudaSlice<u8>, RuntimeError> {
        // SAFETY: the bytes are device memory read only by kernels and copies,
        // never as Rust values; stale contents are at worst garbage numbers.
        self.retry_when_full(|| unsafe { self.stream.alloc::<u8>(bytes.max(1)) })
    }

    pub(crate) fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, RuntimeError> {
        self.retry_when_full(|| self.stream.alloc_zeros::<u8>(bytes.max(1)))
    }

    pub(crate) fn upload(&self, dst: &mut CudaSlice<u8>, src: &[u8]) -> Result<(), RuntimeError> {
        self.stream.memcpy_htod(src, dst).map_err(drv)
    }

    pub(crate) fn download(
        &self,
        src: &CudaSlice<u8>,
        len: usize,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut out = self.stream.clone_dtoh(src).map_err(drv)?;
        out.truncate(len);
        Ok(out)
    }

    /// Page-locked host memory, not write-combined (the host reads it).
    pub(crate) fn alloc_pinned(
        &self,
        bytes: usize,
    ) -> Result<cudarc::driver::PinnedHostSlice<u8>, RuntimeError> {
        // SAFETY: bytes are plain data; every read waits for a copy into them.
        unsafe { self.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }.map_err(drv)
    }

    /// Queue a copy into page-locked memory and record `copied` after it.
    pub(crate) fn copy_to_pinned(
        &self,
        src: &CudaSlice<u8>,
        dst: &mut cudarc::driver::PinnedHostSlice<u8>,
        copied: &cudarc::driver::CudaEvent,
    ) -> Result<(), RuntimeError> {
        let view = src.slice(0..dst.len());
        self.stream.memcpy_dtoh(&view, dst).map_err(drv)?;
        copied.record(&self.stream).map_err(drv)
    }

    pub(crate) fn zero(&self, dst: &mut CudaSlice<u8>) -> Result<(), RuntimeError> {
        self.stream.memset_zeros(dst).map_err(drv)
    }

    pub(crate) fn copy(
        &self,
        src: &CudaSlice<u8>,
        dst: &mut CudaSlice<u8>,
    ) -> Result<(), RuntimeError> {
        self.stream.memcpy_dtod(src, dst).map_err(drv)
    }

    /// Load a kernel that needs `shared_bytes` of dynamic shared memory per
    /// CTA, with `params` declared parameters and `tma_operands` TMA operands.
    pub(crate) fn load(
        &self,
        ptx: &str,
        name: &str,
        shared_bytes: u32,
        params: usize,
        tma_operands: usize,
    ) -> Result<CudaFunction, RuntimeError> {
        let image = match std::env::var_os(TILE_PTXAS) {
            Some(ptxas) if !ptxas.is_empty() => Ptx::from_binary(assemble(&ptxas, ptx, name)?),
            _ => Ptx::from_src(ptx),
        };
        let module = self.ctx.load_module(image).map_err(drv)?;
        let f = module.load_function(name).map_err(drv)?;
        if shared_bytes > 48 * 1024 {
            // Above 48 KB a kernel must opt in to large dynamic shared memory.
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                shared_bytes as i32,
            )
            .map_err(drv)?;
        }
        check_hidden_params(&f, name, params, tma_operands)?;
        Ok(f)
    }

    pub(crate) fn synchronize(&self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(drv)
    }

    /// Launch with arguments already checked against the signature; a kernel
    /// that waits for the grid before it (`after_prior_grid`) as that grid's
    /// programmatic dependent.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &self,
        f: &CudaFunction,
        grid: [u32; 3],
        threads: u32,
        shared_bytes: u32,
        args: &[CudaArg],
        hidden: &HiddenArgs,
        after_prior_grid: bool,
    ) -> Result<(), RuntimeError> {
        // With several streams cudarc orders buffers' users by events, which
        // only its own launch path records.
        if after_prior_grid
            && self.dependent_launch
            && !self.ctx.is_managing_stream_synchronization()
        {
            return self.launch_dependent(f, grid, threads, shared_bytes, args, hidden);
        }
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                CudaArg::Ptr(s) => b.arg(*s),
                CudaArg::I32(x) => b.arg(x),
                CudaArg::I64(x) => b.arg(x),
                CudaArg::F32(x) => b.arg(x),
            };
        }
        for m in &hidden.maps {
            b.arg(m);
        }
        if !hidden.maps.is_empty() {
            b.arg(&hidden.described);
        }
        let cfg = LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: shared_bytes,
        };
        unsafe { b.launch(cfg) }.map_err(drv)?;
        Ok(())
    }

    /// `cuLaunchKernelEx` with programmatic stream serialization: the grid
    /// may be scheduled before the one before it in the stream has finished
    /// (as that grid's CTAs exit: our kernels trigger no earlier); its PTX
    /// waits for that grid at entry, so only its launch and the start of its
    /// CTAs overlap the other's tail.
    fn launch_dependent(
        &self,
        f: &CudaFunction,
        grid: [u32; 3],
        threads: u32,
        shared_bytes: u32,
        args: &[CudaArg],
        hidden: &HiddenArgs,
    ) -> Result<(), RuntimeError> {
        // The guards record nothing with one stream; they live past the launch.
        let ptrs: Vec<_> = args
            .iter()
            .filter_map(|a| match a {
                CudaArg::Ptr(s) => Some(s.device_ptr(&self.stream)),
                _ => None,
            })
            .collect();
        let mut next_ptr = ptrs.iter().map(|(p, _)| *p);
        // One 8-byte slot per parameter, as in `launch_on`.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                CudaArg::Ptr(_) => next_ptr.next().unwrap_or(0),
                CudaArg::I32(x) => x as u32 as u64,
                CudaArg::I64(x) => x as u64,
                CudaArg::F32(x) => x.to_bits() as u64,
            })
            .collect();
        let mut described = hidden.described as u64;
        let mut params = kernel_params(&mut slots, hidden, &mut described);
        let stream = self.stream.cu_stream();
        // SAFETY: the parameters match the kernel's signature (checked by the
        // caller) and every slot outlives the call, which copies them.
        unsafe { self.launch_ex(f, grid, threads, shared_bytes, &mut params, stream, true) }?;
        drop(ptrs);
        Ok(())
    }

    /// `cuLaunchKernelEx` on `stream`, with programmatic stream
    /// serialization when `dependent` (the kernel's PTX waits for the grid
    /// before it at entry: see [`CudaDevice::launch_dependent`]).
    ///
    /// # Safety
    /// `params` must match the kernel's parameters and `stream` be a live
    /// stream of this context (or 0).
    #[allow(clippy::too_many_arguments)]
    unsafe fn launch_ex(
        &self,
        f: &CudaFunction,
        grid: [u32; 3],
        threads: u32,
        shared_bytes: u32,
        params: &mut [*mut std::ffi::c_void],
        stream: sys::CUstream,
        dependent: bool,
    ) -> Result<(), RuntimeError> {
        // SAFETY: a plain-old-data union; the attribute reads the one field set.
        let mut value: sys::CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
        value.programmaticStreamSerializationAllowed = 1;
        let mut attr = sys::CUlaunchAttribute {
            id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            pad: [0; 4],
            value,
        };
        let cfg = sys::CUlaunchConfig {
            gridDimX: grid[0],
            gridDimY: grid[1],
            gridDimZ: grid[2],
            blockDimX: threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: shared_bytes,
            hStream: stream,
            attrs: &mut attr,
            numAttrs: dependent as u32,
        };
        self.ctx.bind_to_thread().map_err(drv)?;
        // SAFETY: the caller's contract; the driver copies the parameters.
        unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                f.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(drv)
    }

    /// Launch on `stream`, a `CUstream` of this device's primary context that
    /// the runtime does not own (torch's current stream; 0 is the legacy
    /// default stream), with arguments already checked against the signature;
    /// a kernel that waits for the grid before it (`after_prior_grid`) as
    /// that grid's programmatic dependent, as [`CudaDevice::launch`] does.
    ///
    /// # Safety
    /// `stream` must be a live stream of this context (or 0), and every
    /// `Ptr` device memory of this context that stays allocated until the
    /// kernel has run on `stream` (see [`crate::Device::launch_raw`]).
    pub(crate) unsafe fn launch_on(
        &self,
        f: &CudaFunction,
        grid: [u32; 3],
        threads: u32,
        shared_bytes: u32,
        args: &[crate::RawArg],
        hidden: &HiddenArgs,
        stream: u64,
        after_prior_grid: bool,
    ) -> Result<(), RuntimeError> {
        // One 8-byte slot per parameter: the driver reads as many bytes from
        // each slot as the parameter has (4 for i32/f32, the low bytes on a
        // little-endian host; 8 for pointers and i64); the maps from their own.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                crate::RawArg::Ptr(_, p) => p,
                crate::RawArg::I32(x) => x as u32 as u64,
                crate::RawArg::I64(x) => x as u64,
                crate::RawArg::F32(x) => x.to_bits() as u64,
            })
            .collect();
        let mut described = hidden.described as u64;
        let mut params = kernel_params(&mut slots, hidden, &mut described);
        // SAFETY: the caller's contract (above).
        unsafe {
            self.launch_ex(
                f,
                grid,
                threads,
                shared_bytes,
                &mut params,
                stream as sys::CUstream,
                after_prior_grid && self.dependent_launch,
            )
        }
    }

    /// The tensor map `op` describes for a launch with `args`, or None when
    /// TMA cannot describe that tensor (base not 16-byte aligned, row pitch
    /// not a multiple of 16 bytes, empty or huge dimensions): the kernel then
    /// copies with `cp.async`.
    pub(crate) fn tensor_map(&self, op: &TmaOperand, args: &[crate::Arg]) -> Option<TensorMap> {
        let base = match args.get(op.base) {
            Some(crate::Arg::Buffer(b)) => match &b.storage {
                // The address only: the launch orders the kernel after the
                // buffer's writes.
                crate::Storage::Cuda(s) => s.device_ptr(&self.stream).0,
                crate::Storage::Host(_) => return None,
            },
            _ => return None,
        };
        let param = |i: usize| match args.get(i)? {
            crate::Arg::I32(x) => Some(*x as i64),
            crate::Arg::I64(x) => Some(*x),
            _ => None,
        };
        self.tensor_map_at(op, base, &param)
    }

    /// [`CudaDevice::tensor_map`] for a launch on raw device pointers
    /// ([`crate::Device::launch_raw`]).
    pub(crate) fn tensor_map_raw(
        &self,
        op: &TmaOperand,
        args: &[crate::RawArg],
    ) -> Option<TensorMap> {
        let Some(crate::RawArg::Ptr(_, base)) = args.get(op.base) else {
            return None;
        };
        let param = |i: usize| match args.get(i)? {
            crate::RawArg::I32(x) => Some(*x as i64),
            crate::RawArg::I64(x) => Some(*x),
            _ => None,
        };
        self.tensor_map_at(op, *base, &param)
    }

    fn tensor_map_at(
        &self,
        op: &TmaOperand,
        base: u64,
        param: &dyn Fn(usize) -> Option<i64>,
    ) -> Option<TensorMap> {
        let scalar = |h: HostScalar| match h {
            HostScalar::Const(c) => Some(c),
            HostScalar::Param(i) => param(i),
        };
        let (rows, cols, stride) = (scalar(op.rows)?, scalar(op.cols)?, scalar(op.row_stride)?);
        let pitch = stride.saturating_mul(op.elem_bytes as i64);
        if !tma_describable(base, rows, cols, pitch) {
            return None;
        }
        let key = (
            base,
            rows,
            cols,
            pitch,
            op.box_rows,
            op.box_cols,
            op.swizzle_bytes,
            op.elem_bytes,
        );
        let mut maps = self.tensor_maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = maps.get(&key) {
            return Some(*m);
        }
        use sys::CUtensorMapSwizzle::*;
        let swizzle = match op.swizzle_bytes {
            32 => CU_TENSOR_MAP_SWIZZLE_32B,
            64 => CU_TENSOR_MAP_SWIZZLE_64B,
            128 => CU_TENSOR_MAP_SWIZZLE_128B,
            _ => return None,
        };
        let dtype = match op.elem_bytes {
            1 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            2 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
            4 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT32,
            _ => return None,
        };
        let dims = [cols as u64, rows as u64];
        let strides = [pitch as u64];
        let boxes = [op.box_cols, op.box_rows];
        let unit = [1u32, 1];
        // SAFETY: plain data out; every pointer argument points at a live array
        // of the rank (2) the call is told, or rank - 1 for the strides.
        let mut map: sys::CUtensorMap = unsafe { std::mem::zeroed() };
        let r = unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                dtype,
                2,
                base as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                unit.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        if r != sys::CUresult::CUDA_SUCCESS {
            return None;
        }
        if maps.len() >= MAX_TENSOR_MAPS {
            maps.clear();
        }
        let map = TensorMap(map.opaque);
        maps.insert(key, map);
        Some(map)
    }

    /// An event, not yet recorded, without timing.
    pub(crate) fn event(&self) -> Result<cudarc::driver::CudaEvent, RuntimeError> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
        self.ctx.new_event(flags).map_err(drv)
    }

    /// An event recorded on the device's stream now.
    pub(crate) fn record(&self) -> Result<cudarc::driver::CudaEvent, RuntimeError> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let e = self.ctx.new_event(flags).map_err(drv)?;
        e.record(&self.stream).map_err(drv)?;
        Ok(e)
    }

    /// Time `f` on the stream with CUDA events, in milliseconds.
    pub(crate) fn time_ms(
        &self,
        f: &mut dyn FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f32, RuntimeError> {
        let start = self.record()?;
        f()?;
        elapsed_ms(&start, &self.record()?)
    }
}

/// That the loaded kernel's hidden parameters are the ones this runtime passes
/// (`tile_ir::launch::hidden_params`): a kernel of a compiler that passed
/// tensor maps otherwise (a foreign pack, `TILE_ALLOW_FOREIGN_PACK`) would
/// read garbage as its maps. Asked of the driver where it can tell
/// (`cuFuncGetParamInfo`, CUDA 12.4 on); without it, not checked.
fn check_hidden_params(
    f: &CudaFunction,
    name: &str,
    params: usize,
    tma_operands: usize,
) -> Result<(), RuntimeError> {
    type ParamInfo =
        unsafe extern "C" fn(sys::CUfunction, usize, *mut usize, *mut usize) -> sys::CUresult;
    // Only kernels with TMA operands have hidden parameters.
    if tma_operands == 0 {
        return Ok(());
    }
    // SAFETY: the driver library's symbol, with the signature CUDA declares.
    let Ok(info) = (unsafe { sys::culib().get::<ParamInfo>(b"cuFuncGetParamInfo\0") }) else {
        return Ok(());
    };
    let size = |i: usize| {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: a loaded function and two live out-parameters.
        let r = unsafe { info(f.cu_function(), i, &mut offset, &mut size) };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(size)
    };
    // The first map is a parameter under any compiler's convention: where
    // the driver cannot tell its size, nothing is checked.
    if size(params).is_none() {
        return Ok(());
    }
    let expected = tile_ir::launch::hidden_params(tma_operands);
    let ok = expected
        .iter()
        .enumerate()
        .all(|(k, h)| size(params + k) == Some(h.bytes()))
        && size(params + expected.len()).is_none();
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Unsupported(format!(
            "kernel `{name}`: its hidden TMA parameters are not the ones this runtime passes \
             (a pack built by another version of the compiler); rebuild the pack with this tilec"
        )))
    }
}

/// Whether TMA can describe a row-major tensor at `base` of `rows × cols`
/// elements, rows `pitch` bytes apart: a 16-byte aligned base and pitch, and
/// dimensions of 1 to 2^32 (the driver refuses the rest).
fn tma_describable(base: u64, rows: i64, cols: i64, pitch: i64) -> bool {
    let dim_ok = |x: i64| (1..=1i64 << 32).contains(&x);
    base.is_multiple_of(16)
        && dim_ok(rows)
        && dim_ok(cols)
        && pitch > 0
        && pitch % 16 == 0
        && pitch < 1i64 << 40
}

pub(crate) enum CudaArg<'a> {
    Ptr(&'a CudaSlice<u8>),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// Milliseconds from `start` to `end`, waiting for `end`.
pub(crate) fn elapsed_ms(
    start: &cudarc::driver::CudaEvent,
    end: &cudarc::driver::CudaEvent,
) -> Result<f32, RuntimeError> {
    end.synchronize().map_err(drv)?;
    start.elapsed_ms(end).map_err(drv)
}

/// The driver's parameter array of a launch: a pointer to each 8-byte slot
/// (the driver reads as many bytes of it as the parameter has), then to each
/// tensor map and, when there are maps, to the word saying which are
/// described. Every pointee must outlive the launch call.
fn kernel_params(
    slots: &mut [u64],
    hidden: &HiddenArgs,
    described: &mut u64,
) -> Vec<*mut std::ffi::c_void> {
    let mut params: Vec<*mut std::ffi::c_void> = slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut std::ffi::c_void)
        .collect();
    params.extend(
        hidden
            .maps
            .iter()
            .map(|m| m as *const TensorMap as *mut std::ffi::c_void),
    );
    if !hidden.maps.is_empty() {
        params.push(described as *mut u64 as *mut std::ffi::c_void);
    }
    params
}

#[cfg(test)]
mod tests {
    use super::tma_describable;

    #[test]
    fn tma_describes_aligned_tensors_only() {
        // 4096 bf16 columns: an 8192-byte pitch.
        assert!(tma_describable(1 << 20, 4096, 4096, 8192));
        // A row of 999 bf16 (1998 bytes), or a base off 16 bytes: cp.async instead.
        assert!(!tma_describable(1 << 20, 4096, 999, 1998));
        assert!(!tma_describable((1 << 20) + 8, 4096, 4096, 8192));
        // Empty or negative extents (a launch with M = 0), and huge pitches.
        assert!(!tma_describable(1 << 20, 0, 64, 128));
        assert!(!tma_describable(1 << 20, 64, -1, 128));
        assert!(!tma_describable(1 << 20, 64, 64, 1 << 40));
    }
}
