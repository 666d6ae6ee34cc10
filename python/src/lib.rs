//! `tile._tile`: the native half of the Python package `tile` (python/tile/).
//!
//! It holds what needs the runtime — a loaded [`tile_runtime::Pack`], the
//! devices and the kernels loaded on them — and launches with raw bytes in and
//! out. The Python half checks the arguments against the signature first and
//! turns numpy arrays (CPU interpreter) into those bytes and back. Torch CUDA
//! tensors are launched on in place: [`Pack::kernel`] gives a [`LoadedKernel`]
//! whose `launch_raw` takes their device addresses and torch's current stream
//! ([`tile_runtime::Device::launch_raw`]); a [`LaunchSequence`] of them runs
//! a fixed list of launches (a pass of `tile.mhc`'s site) in one call.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tile_runtime::{
    Arg, Buffer, Config, Device, Kernel, ParamKind, RawArg as RtRawArg, RuntimeError, Scalar,
};

pyo3::create_exception!(
    tile,
    TileError,
    PyException,
    "Base of the errors of `tile`."
);
pyo3::create_exception!(
    tile,
    PackError,
    TileError,
    "A pack that cannot be used: missing, not a pack, corrupted, or built by another compiler."
);
pyo3::create_exception!(
    tile,
    LaunchError,
    TileError,
    "The runtime refused or failed a launch (no GPU, a kernel error)."
);

fn launch_err(e: RuntimeError) -> PyErr {
    LaunchError::new_err(e.to_string())
}

/// The dtype names the Python half uses (`tile_ir::Scalar::name`).
fn scalar_name(s: Scalar) -> &'static str {
    match s {
        Scalar::I1 => "i1",
        Scalar::I32 => "i32",
        Scalar::I64 => "i64",
        Scalar::F16 => "f16",
        Scalar::BF16 => "bf16",
        Scalar::F32 => "f32",
    }
}

fn parse_scalar(name: &str) -> PyResult<Scalar> {
    Ok(match name {
        "i1" => Scalar::I1,
        "i32" => Scalar::I32,
        "i64" => Scalar::I64,
        "f16" => Scalar::F16,
        "bf16" => Scalar::BF16,
        "f32" => Scalar::F32,
        _ => return Err(PyValueError::new_err(format!("unknown dtype `{name}`"))),
    })
}

/// One launch argument as the Python half passes it.
enum RawArg {
    Buffer(Scalar, Vec<u8>),
    /// The buffer of an earlier argument.
    Alias(usize),
    I32(i32),
    I64(i64),
    F32(f32),
}

fn raw_arg(t: &Bound<'_, PyAny>) -> PyResult<RawArg> {
    let t = t.cast::<PyTuple>()?;
    let tag: String = t.get_item(0)?.extract()?;
    Ok(match tag.as_str() {
        "buf" => RawArg::Buffer(
            parse_scalar(&t.get_item(1)?.extract::<String>()?)?,
            t.get_item(2)?.extract()?,
        ),
        "alias" => RawArg::Alias(t.get_item(1)?.extract()?),
        "i32" => RawArg::I32(t.get_item(1)?.extract()?),
        "i64" => RawArg::I64(t.get_item(1)?.extract()?),
        "f32" => RawArg::F32(t.get_item(1)?.extract()?),
        _ => return Err(PyTypeError::new_err(format!("bad argument tag `{tag}`"))),
    })
}

/// A scalar argument of parameter `name` (`i32`, `i64` or `f32`) from a Python number.
fn scalar_arg(name: &str, s: Scalar, a: &Bound<'_, PyAny>) -> PyResult<RtRawArg> {
    let bad = |e: PyErr| PyTypeError::new_err(format!("argument `{name}`: {e}"));
    Ok(match s {
        Scalar::I32 => RtRawArg::I32(a.extract().map_err(bad)?),
        Scalar::I64 => RtRawArg::I64(a.extract().map_err(bad)?),
        Scalar::F32 => RtRawArg::F32(a.extract().map_err(bad)?),
        s => {
            return Err(PyTypeError::new_err(format!(
                "argument `{name}`: {} scalars are not supported from Python",
                scalar_name(s)
            )))
        }
    })
}

/// One parameter: `(name, is_pointer, dtype)`.
type ParamInfo = (String, bool, String);
/// A packed config: `([(meta name, value)], warps)`.
type ConfigInfo = (Vec<(String, i64)>, u32);

/// A loaded kernel's identity: name, config, GPU ordinal (`None`: the CPU).
type LoadedKey = (String, Config, Option<usize>);

/// A loaded pack, the devices it launched on and the kernels it loaded there
/// (by name, config and device, so a repeated call loads nothing). Shared
/// between threads: launches run without the GIL, each on its own buffers.
#[pyclass(module = "tile._tile")]
struct Pack {
    path: String,
    pack: tile_runtime::Pack,
    cpu: Arc<Device>,
    /// GPUs by ordinal, opened on first use (each in its primary context).
    gpus: Mutex<HashMap<usize, Arc<Device>>>,
    /// Kernels by (name, config, GPU ordinal or `None` for the CPU).
    loaded: Mutex<HashMap<LoadedKey, Arc<Kernel>>>,
}

impl Pack {
    fn gpu(&self, ordinal: usize) -> PyResult<Arc<Device>> {
        if let Some(d) = self.gpus.lock().unwrap().get(&ordinal) {
            return Ok(d.clone());
        }
        let d = Arc::new(Device::cuda(ordinal).map_err(launch_err)?);
        // A racing thread may have opened it too; both are the same context.
        Ok(self
            .gpus
            .lock()
            .unwrap()
            .entry(ordinal)
            .or_insert(d)
            .clone())
    }

    fn device(&self, gpu: Option<usize>) -> PyResult<Arc<Device>> {
        match gpu {
            Some(ordinal) => self.gpu(ordinal),
            None => Ok(self.cpu.clone()),
        }
    }

    /// `name` with `config`, loaded on the device once and then cached.
    fn load(
        &self,
        dev: &Device,
        name: &str,
        config: Config,
        gpu: Option<usize>,
    ) -> PyResult<Arc<Kernel>> {
        let cache_key = (name.to_string(), config, gpu);
        if let Some(k) = self.loaded.lock().unwrap().get(&cache_key) {
            return Ok(k.clone());
        }
        let k = Arc::new(
            self.pack
                .load_kernel(dev, name, &cache_key.1)
                .map_err(launch_err)?,
        );
        self.loaded.lock().unwrap().insert(cache_key, k.clone());
        Ok(k)
    }

    fn packed(&self, name: &str) -> PyResult<&tile_ir::pack::PackedKernel> {
        self.pack.kernel(name).map_err(launch_err)
    }
}

#[pymethods]
impl Pack {
    /// Read and validate the pack at `path` (magic, version, hash, compiler).
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let pack =
            tile_runtime::Pack::load(&path).map_err(|e| PackError::new_err(e.to_string()))?;
        Ok(Pack {
            path: path.display().to_string(),
            pack,
            cpu: Arc::new(Device::cpu()),
            gpus: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    #[getter]
    fn path(&self) -> String {
        self.path.clone()
    }

    /// The version of the compiler that built the pack (`tilec --version`).
    #[getter]
    fn compiler_version(&self) -> String {
        self.pack.manifest().compiler_version.clone()
    }

    /// The kernels' names, in pack order.
    fn kernels(&self) -> Vec<String> {
        self.pack
            .manifest()
            .kernels
            .iter()
            .map(|k| k.name.clone())
            .collect()
    }

    /// `(params, key, tune params, tune warps, packed configs)` of a kernel.
    #[allow(clippy::type_complexity)]
    fn info(
        &self,
        name: &str,
    ) -> PyResult<(
        Vec<ParamInfo>,
        Vec<String>,
        Vec<(String, Vec<i64>)>,
        Vec<u32>,
        Vec<ConfigInfo>,
    )> {
        let k = self.packed(name)?;
        let params = k
            .signature
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Ptr(s) => (p.name.clone(), true, scalar_name(s).to_string()),
                ParamKind::Scalar(s) => (p.name.clone(), false, scalar_name(s).to_string()),
            })
            .collect();
        let configs = k
            .variants
            .iter()
            .map(|v| (v.config.meta.clone(), v.config.warps))
            .collect();
        Ok((
            params,
            k.tune.key.clone(),
            k.tune.params.clone(),
            k.tune.warps.clone(),
            configs,
        ))
    }

    /// The config the autotune cache holds for this kernel and these key
    /// values on GPU `device`, or `None` (nothing tuned yet). GPU only.
    #[pyo3(signature = (name, key_values, device=0))]
    fn tuned(
        &self,
        name: &str,
        key_values: Vec<(String, i64)>,
        device: usize,
    ) -> PyResult<Option<ConfigInfo>> {
        let dev = self.gpu(device)?;
        let key = tile_runtime::tune::Autotuner::key(&dev, &self.pack, name, &key_values)
            .map_err(launch_err)?;
        let tuner = tile_runtime::tune::Autotuner::new(tile_runtime::tune::default_cache_path());
        Ok(tuner.lookup(&key).map(|e| (e.best.meta, e.best.warps)))
    }

    /// Launch `name` with exactly this config over `grid`, on the CPU
    /// interpreter (`gpu=False`) or GPU 0. `args`: `("buf", dtype, bytes)`,
    /// `("alias", j)` (the buffer of argument `j < i`: the same array passed
    /// twice), `("i32", int)`, `("i64", int)` or `("f32", float)` per
    /// parameter. Returns every buffer's contents after the run (`None` for
    /// scalars and aliases).
    #[pyo3(signature = (name, meta, warps, grid, args, gpu=false))]
    fn launch<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        meta: Vec<(String, i64)>,
        warps: u32,
        grid: (u32, u32, u32),
        args: Vec<Bound<'py, PyAny>>,
        gpu: bool,
    ) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
        let raw: Vec<RawArg> = args.iter().map(raw_arg).collect::<PyResult<_>>()?;
        for (i, a) in raw.iter().enumerate() {
            if let RawArg::Alias(j) = *a {
                if j >= i || !matches!(raw[j], RawArg::Buffer(..)) {
                    return Err(PyValueError::new_err(format!(
                        "argument {i}: an alias must name an earlier buffer argument"
                    )));
                }
            }
        }
        let gpu = gpu.then_some(0);
        let dev = self.device(gpu)?;
        let dev = &*dev;
        let kernel = self.load(
            dev,
            name,
            Config {
                meta,
                warps,
                stages: None,
                ctas: None,
            },
            gpu,
        )?;
        let kernel = &*kernel;
        let run = || -> Result<Vec<Option<Vec<u8>>>, RuntimeError> {
            let mut buffers: Vec<Option<Buffer>> = Vec::with_capacity(raw.len());
            for a in &raw {
                buffers.push(match a {
                    RawArg::Buffer(s, bytes) => Some(dev.upload_bytes(*s, bytes)?),
                    _ => None,
                });
            }
            let launch_args: Vec<Arg> = raw
                .iter()
                .zip(&buffers)
                .map(|(a, b)| match (a, b) {
                    (_, Some(b)) => Arg::Buffer(b),
                    (RawArg::Alias(j), None) => Arg::Buffer(buffers[*j].as_ref().unwrap()),
                    (RawArg::I32(x), None) => Arg::I32(*x),
                    (RawArg::I64(x), None) => Arg::I64(*x),
                    (RawArg::F32(x), None) => Arg::F32(*x),
                    (RawArg::Buffer(..), None) => unreachable!("every buffer was uploaded"),
                })
                .collect();
            dev.launch(kernel, [grid.0, grid.1, grid.2], &launch_args)?;
            dev.synchronize()?;
            buffers
                .iter()
                .map(|b| b.as_ref().map(|b| dev.download_bytes(b)).transpose())
                .collect()
        };
        // The interpreter (or the GPU) runs without the GIL: other Python
        // threads go on meanwhile.
        let out = py.detach(run).map_err(launch_err)?;
        Ok(out
            .into_iter()
            .map(|o| o.map(|bytes| PyBytes::new(py, &bytes)))
            .collect())
    }

    /// `name` with exactly this config, loaded on GPU `device` (or, with
    /// `device=None`, the CPU, where it can only refuse raw pointers): what
    /// torch launches go through, once per (config, device).
    #[pyo3(signature = (name, meta, warps, device))]
    fn kernel(
        &self,
        name: &str,
        meta: Vec<(String, i64)>,
        warps: u32,
        device: Option<usize>,
    ) -> PyResult<LoadedKernel> {
        let dev = self.device(device)?;
        let kernel = self.load(
            &dev,
            name,
            Config {
                meta,
                warps,
                stages: None,
                ctas: None,
            },
            device,
        )?;
        let params = kernel
            .signature()
            .params
            .iter()
            .map(|p| (p.name.clone(), p.kind))
            .collect();
        Ok(LoadedKernel {
            device: dev,
            kernel,
            params,
        })
    }
}

/// A kernel loaded on one device with one config: `launch_raw` launches it
/// on device addresses (torch tensors' `data_ptr()`) on a CUDA stream
/// (torch's `current_stream().cuda_stream`). The Python half has checked
/// that every address is a live, contiguous tensor of the right dtype and
/// size on this device; this checks only what it can see (count, kinds,
/// ranges, null).
#[pyclass(module = "tile._tile", frozen)]
struct LoadedKernel {
    device: Arc<Device>,
    kernel: Arc<Kernel>,
    params: Vec<(String, ParamKind)>,
}

impl LoadedKernel {
    /// A `TypeError` (its message after `context`) unless `got` arguments
    /// is the kernel's parameter count.
    fn check_count(&self, got: usize, context: &str) -> PyResult<()> {
        if got == self.params.len() {
            return Ok(());
        }
        let names: Vec<&str> = self.params.iter().map(|p| p.0.as_str()).collect();
        Err(PyTypeError::new_err(format!(
            "{context}{}() takes {} arguments ({}), got {got}",
            self.kernel.signature().name,
            self.params.len(),
            names.join(", "),
        )))
    }
}

#[pymethods]
impl LoadedKernel {
    /// `args`: per parameter, an int (a device address for a pointer, the
    /// value for `i32`/`i64`) or a float (`f32`).
    fn launch_raw(
        &self,
        grid: (u32, u32, u32),
        args: Vec<Bound<'_, PyAny>>,
        stream: u64,
    ) -> PyResult<()> {
        self.check_count(args.len(), "")?;
        let raw = self
            .params
            .iter()
            .zip(&args)
            .map(|((name, kind), a)| {
                let bad = |e: PyErr| PyTypeError::new_err(format!("argument `{name}`: {e}"));
                Ok(match kind {
                    ParamKind::Ptr(s) => RtRawArg::Ptr(*s, a.extract::<u64>().map_err(bad)?),
                    ParamKind::Scalar(s) => scalar_arg(name, *s, a)?,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        // SAFETY: the Python half (tile.Kernel._call_torch, tile.mhc) passes
        // only addresses of contiguous CUDA tensors on this device that hold
        // what the launch touches and that it keeps alive past the call
        // (torch's caching allocator reuses freed memory only in stream
        // order); `stream` is torch's current stream of this device.
        unsafe {
            self.device
                .launch_raw(&self.kernel, [grid.0, grid.1, grid.2], &raw, stream)
        }
        .map_err(launch_err)
    }

    #[getter]
    fn name(&self) -> String {
        self.kernel.signature().name.clone()
    }
}

/// One argument of a step of a [`LaunchSequence`]: a pointer `offset`
/// bytes into the memory of address slot `slot`, or a fixed scalar.
enum StepArg {
    Ptr {
        dtype: Scalar,
        slot: usize,
        offset: u64,
    },
    Fixed(RtRawArg),
}

struct Step {
    kernel: Arc<Kernel>,
    grid: [u32; 3],
    args: Vec<StepArg>,
}

/// A fixed list of launches on one GPU whose pointer arguments are offsets
/// into a few address slots, launched by one call with the slots' addresses
/// (`launch`): what a caller that runs the same kernels on fresh tensors
/// every step (`tile.mhc`'s sites) uses instead of one Python call a kernel.
/// Built once from [`LoadedKernel`]s; each step's arguments are checked
/// against its kernel's signature then, so a launch checks only the slots.
#[pyclass(module = "tile._tile", frozen)]
struct LaunchSequence {
    device: Arc<Device>,
    slots: usize,
    steps: Vec<Step>,
}

/// A step as Python gives it: the kernel, its grid, and per parameter a
/// `(slot, byte offset)` pair for a pointer or a number for a scalar.
type StepSpec<'py> = (
    Bound<'py, LoadedKernel>,
    (u32, u32, u32),
    Vec<Bound<'py, PyAny>>,
);

#[pymethods]
impl LaunchSequence {
    #[new]
    fn new(slots: usize, steps: Vec<StepSpec<'_>>) -> PyResult<Self> {
        let mut device: Option<Arc<Device>> = None;
        let mut out = Vec::with_capacity(steps.len());
        for (i, (kernel, grid, args)) in steps.iter().enumerate() {
            let k = kernel.get();
            let kname = &k.kernel.signature().name;
            match &device {
                Some(d) if !Arc::ptr_eq(d, &k.device) => {
                    return Err(PyValueError::new_err(format!(
                        "step {i} ({kname}) is loaded on another device than step 0"
                    )))
                }
                Some(_) => {}
                None => device = Some(k.device.clone()),
            }
            k.check_count(args.len(), &format!("step {i}: "))?;
            if [grid.0, grid.1, grid.2].contains(&0) {
                return Err(PyValueError::new_err(format!(
                    "step {i} ({kname}): empty grid {grid:?}"
                )));
            }
            let args = k
                .params
                .iter()
                .zip(args)
                .map(|((name, kind), a)| {
                    Ok(match kind {
                        ParamKind::Ptr(dtype) => {
                            let (slot, offset): (usize, u64) = a.extract().map_err(|_| {
                                PyTypeError::new_err(format!(
                                    "step {i} ({kname}), argument `{name}`: a pointer is a \
                                     (slot, byte offset) pair"
                                ))
                            })?;
                            if slot >= slots {
                                return Err(PyValueError::new_err(format!(
                                    "step {i} ({kname}), argument `{name}`: slot {slot} of {slots}"
                                )));
                            }
                            // Vector accesses need 16-byte alignment, as from any allocator.
                            if !offset.is_multiple_of(16) {
                                return Err(PyValueError::new_err(format!(
                                    "step {i} ({kname}), argument `{name}`: offset {offset} is \
                                     not a multiple of 16 bytes"
                                )));
                            }
                            StepArg::Ptr {
                                dtype: *dtype,
                                slot,
                                offset,
                            }
                        }
                        ParamKind::Scalar(s) => StepArg::Fixed(scalar_arg(name, *s, a)?),
                    })
                })
                .collect::<PyResult<Vec<_>>>()?;
            out.push(Step {
                kernel: k.kernel.clone(),
                grid: [grid.0, grid.1, grid.2],
                args,
            });
        }
        let device =
            device.ok_or_else(|| PyValueError::new_err("a launch sequence needs a step"))?;
        Ok(LaunchSequence {
            device,
            slots,
            steps: out,
        })
    }

    /// Launch every step in order on `stream`, slot `i` at `addresses[i]`
    /// (device addresses: `tensor.data_ptr()`).
    fn launch(&self, addresses: Vec<u64>, stream: u64) -> PyResult<()> {
        if addresses.len() != self.slots {
            return Err(PyTypeError::new_err(format!(
                "the sequence has {} address slots, got {} addresses",
                self.slots,
                addresses.len()
            )));
        }
        if let Some(i) = addresses.iter().position(|&a| a == 0) {
            return Err(PyValueError::new_err(format!(
                "address of slot {i} is null"
            )));
        }
        // Every step's arguments first, so that a refused call launches nothing.
        let raws = self
            .steps
            .iter()
            .map(|step| {
                step.args
                    .iter()
                    .map(|a| match *a {
                        StepArg::Ptr {
                            dtype,
                            slot,
                            offset,
                        } => addresses[slot]
                            .checked_add(offset)
                            .map(|p| RtRawArg::Ptr(dtype, p))
                            .ok_or_else(|| {
                                PyValueError::new_err(format!(
                                    "address of slot {slot} plus offset {offset} overflows"
                                ))
                            }),
                        StepArg::Fixed(v) => Ok(v),
                    })
                    .collect::<PyResult<Vec<_>>>()
            })
            .collect::<PyResult<Vec<_>>>()?;
        for (step, raw) in self.steps.iter().zip(&raws) {
            // SAFETY: as for `LoadedKernel::launch_raw`: the caller (tile.mhc)
            // passes addresses of live contiguous tensors of this device, each
            // holding what every step touches at its offsets, kept alive past
            // the call, and torch's current stream of this device.
            unsafe { self.device.launch_raw(&step.kernel, step.grid, raw, stream) }
                .map_err(launch_err)?;
        }
        Ok(())
    }

    /// The number of address slots `launch` takes.
    #[getter]
    fn slots(&self) -> usize {
        self.slots
    }

    fn __len__(&self) -> usize {
        self.steps.len()
    }
}

/// Why GPU 0 cannot be used, or `None` when it can.
#[pyfunction]
fn gpu_unavailable_reason() -> Option<String> {
    Device::gpu_unavailable_reason()
}

#[pymodule]
fn _tile(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Pack>()?;
    m.add_class::<LoadedKernel>()?;
    m.add_class::<LaunchSequence>()?;
    m.add_function(wrap_pyfunction!(gpu_unavailable_reason, m)?)?;
    m.add("TileError", py.get_type::<TileError>())?;
    m.add("PackError", py.get_type::<PackError>())?;
    m.add("LaunchError", py.get_type::<LaunchError>())?;
    m.add("COMPILER_VERSION", tile_ir::VERSION)?;
    Ok(())
}
