"""Launch compiled ``.tile`` kernels from Python.

    import numpy as np, tile
    pack = tile.Pack("examples.tpack")
    add = pack["vector_add"]
    a, b = np.random.rand(2, 5000).astype(np.float32)
    c = np.full_like(a, np.nan)
    add(a, b, c, a.size, grid=lambda meta: (-(-a.size // meta["BLOCK"]),), BLOCK=1024)

numpy arrays run on the CPU interpreter (outputs are copied back into the
arrays after the run); torch CUDA tensors run on their GPU, in place, on
torch's current stream (see docs/PYTHON.md). Every argument is checked against the
kernel's signature before anything runs; a bad call raises ``TypeError`` or
``ValueError`` naming the argument and changes no array.
"""

from __future__ import annotations

import numbers
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._tile import COMPILER_VERSION, LaunchError, PackError, TileError
from ._tile import Pack as _NativePack
from ._tile import gpu_unavailable_reason

__all__ = [
    "Pack",
    "Kernel",
    "Param",
    "TileError",
    "PackError",
    "LaunchError",
    "COMPILER_VERSION",
    "gpu_unavailable_reason",
    "MAX_GRID",
]

# CUDA's grid limits (x, y, z), which the CPU interpreter is held to as well
# so that a call that runs on the CPU also runs on a GPU.
MAX_GRID = (2**31 - 1, 65535, 65535)

_I32 = (-(2**31), 2**31 - 1)
_I64 = (-(2**63), 2**63 - 1)

# numpy dtypes accepted for a pointer parameter of each element type. bf16:
# numpy has none, so an ``ml_dtypes.bfloat16`` array (if ml_dtypes is
# installed) or a ``uint16`` array holding the raw bf16 bits.
_NUMPY_DTYPES: Dict[str, Tuple[str, ...]] = {
    "f32": ("float32",),
    "i32": ("int32",),
    "i64": ("int64",),
    "f16": ("float16",),
    "bf16": ("bfloat16", "uint16"),
}


def _numpy_ok(dtype: np.dtype, want: str) -> bool:
    # `name` compare plus native byte order: '>f4' is float32 in name only.
    return dtype.name in _NUMPY_DTYPES.get(want, ()) and dtype.isnative


def _describe_numpy(want: str) -> str:
    names = _NUMPY_DTYPES.get(want)
    if names is None:
        return f"a {want} array (not supported from Python)"
    if want == "bf16":
        return "a bf16 array (ml_dtypes.bfloat16, or uint16 holding bf16 bits)"
    return f"a {names[0]} array ({want})"


class Param:
    """One kernel parameter: ``name``, ``pointer`` (a buffer) or not, ``dtype``."""

    __slots__ = ("name", "pointer", "dtype")

    def __init__(self, name: str, pointer: bool, dtype: str):
        self.name, self.pointer, self.dtype = name, pointer, dtype

    def __repr__(self) -> str:
        return f"{self.name}: {'*' if self.pointer else ''}{self.dtype}"


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """The very same memory (both C-contiguous): one buffer for the kernel."""
    return a is b or (
        a.ctypes.data == b.ctypes.data and a.nbytes == b.nbytes and a.dtype == b.dtype
    )


def _is_torch_tensor(x: Any) -> bool:
    # torch is never imported here: a tensor exists only if the caller did.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


class Pack:
    """A kernel pack (``tilec pack DIR -o FILE``), read and validated.

    Raises :class:`PackError` with the runtime's message when the file is
    missing, not a pack, corrupted, or built by another compiler than the one
    this module was built with (rebuild it with ``scripts/packs``).
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self._native = _NativePack(os.fspath(path))
        self._kernels: Dict[str, Kernel] = {}

    @property
    def path(self) -> str:
        return self._native.path

    @property
    def compiler_version(self) -> str:
        return self._native.compiler_version

    def kernels(self) -> List[str]:
        """The kernels' names, in pack order."""
        return list(self._native.kernels())

    def __contains__(self, name: object) -> bool:
        return name in self.kernels()

    def __getitem__(self, name: str) -> "Kernel":
        if name not in self._kernels:
            names = self.kernels()
            if name not in names:
                raise KeyError(
                    f"kernel `{name}` is not in the pack {self.path} (it holds: {', '.join(names)})"
                )
            self._kernels[name] = Kernel(self, name)
        return self._kernels[name]

    def __repr__(self) -> str:
        return f"tile.Pack({self.path!r}, kernels={self.kernels()})"


Grid = Union[int, Sequence[int], Callable[[Dict[str, int]], Any]]


class Kernel:
    """A kernel of a pack; call it to launch: ``kernel(*args, grid=..., warps=None, **meta)``.

    ``args``: one per parameter, in order — numpy arrays (CPU) or torch CUDA
    tensors (GPU) for pointer parameters, Python ints/floats for scalars.
    ``grid``: an int, a tuple of 1–3 ints, or a function of the chosen config
    (``{"BLOCK": 1024, ..., "warps": 4}``) returning one. ``meta``: values of
    the kernel's meta-parameters; those not given (and ``warps`` when None)
    are taken from the first packed config that matches the given ones, or,
    on a GPU with no meta-parameter given, from the autotune cache.
    """

    def __init__(self, pack: Pack, name: str):
        params, key, tune, warps, configs = pack._native.info(name)
        self.pack = pack
        self.name = name
        self.params = [Param(*p) for p in params]
        self.key: List[str] = list(key)
        # Packed configs as ({meta: value}, warps), meta in declaration order.
        self.configs: List[Tuple[Dict[str, int], int]] = [(dict(m), w) for m, w in configs]
        # The tune block's values; a kernel without one (or a meta-parameter
        # it leaves out) has only its defaults packed, and those are its space.
        self.tune_space: Dict[str, List[int]] = {n: list(v) for n, v in tune}
        for m, _ in self.configs:
            for n, v in m.items():
                values = self.tune_space.setdefault(n, [])
                if v not in values:
                    values.append(v)
        self.warps_space: List[int] = list(warps) or sorted({w for _, w in self.configs})
        self._native_kernels: Dict[tuple, Any] = {}

    def __repr__(self) -> str:
        return f"tile.Kernel({self.name}({', '.join(map(repr, self.params))}))"

    # ---- checks -------------------------------------------------------------

    def _check_count(self, args: tuple) -> None:
        if len(args) != len(self.params):
            names = ", ".join(p.name for p in self.params)
            raise TypeError(
                f"{self.name}() takes {len(self.params)} arguments ({names}), got {len(args)}"
            )

    def _choose_config(
        self,
        meta: Dict[str, Any],
        warps: Optional[int],
        gpu_key: Optional[list],
        ordinal: int = 0,
    ) -> Tuple[Dict[str, int], int]:
        for n, v in meta.items():
            if n not in self.tune_space:
                known = ", ".join(self.tune_space) or "none"
                raise TypeError(
                    f"{self.name}() got an unexpected meta-parameter `{n}` "
                    f"(its meta-parameters: {known})"
                )
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"meta-parameter `{n}` must be an int, got {type(v).__name__}")
            if int(v) not in self.tune_space[n]:
                raise ValueError(
                    f"meta-parameter `{n}`={v} is not in the tune space of `{self.name}` "
                    f"({n}: {self.tune_space[n]})"
                )
        if warps is not None:
            if isinstance(warps, bool) or not isinstance(warps, numbers.Integral):
                raise TypeError(f"`warps` must be an int, got {type(warps).__name__}")
            if int(warps) not in self.warps_space:
                raise ValueError(
                    f"warps={warps} is not in the tune space of `{self.name}` "
                    f"(warps: {self.warps_space})"
                )
        if not meta and warps is None and gpu_key is not None:
            tuned = self.pack._native.tuned(self.name, gpu_key, ordinal)
            if tuned is not None:
                return dict(tuned[0]), tuned[1]
        matches = [
            (m, w)
            for m, w in self.configs
            if all(m.get(n) == int(v) for n, v in meta.items())
            and (warps is None or w == int(warps))
        ]
        if not matches:
            asked = ", ".join([f"{n}={v}" for n, v in meta.items()] + (
                [f"warps={warps}"] if warps is not None else []
            ))
            packed = "; ".join(_describe(m, w) for m, w in self.configs) or "none"
            raise ValueError(
                f"config {asked} of `{self.name}` is not in the pack (packed configs: {packed})"
            )
        return matches[0]

    def _grid(self, grid: Grid, config: Dict[str, int], warps: int) -> Tuple[int, int, int]:
        if callable(grid):
            grid = grid({**config, "warps": warps})
        if isinstance(grid, numbers.Integral) and not isinstance(grid, bool):
            grid = (grid,)
        if not isinstance(grid, (tuple, list)) or not 1 <= len(grid) <= 3:
            raise TypeError(f"`grid` must be an int or a tuple of 1 to 3 ints, got {grid!r}")
        dims = []
        for axis, g in zip("xyz", grid):
            if isinstance(g, bool) or not isinstance(g, numbers.Integral):
                raise TypeError(f"`grid` {axis} must be an int, got {type(g).__name__}")
            dims.append(int(g))
        dims += [1] * (3 - len(dims))
        for axis, g, limit in zip("xyz", dims, MAX_GRID):
            if g <= 0:
                raise ValueError(f"`grid` {axis} is {g}: every grid dimension must be at least 1")
            if g > limit:
                raise ValueError(
                    f"`grid` {axis} is {g}, above CUDA's limit of {limit} for that dimension"
                )
        return dims[0], dims[1], dims[2]

    def _scalar(self, p: Param, a: Any) -> tuple:
        if p.dtype in ("i32", "i64"):
            if isinstance(a, bool) or not isinstance(a, numbers.Integral):
                raise TypeError(
                    f"argument `{p.name}` must be an int ({p.dtype}), got {type(a).__name__}"
                )
            lo, hi = _I32 if p.dtype == "i32" else _I64
            if not lo <= int(a) <= hi:
                raise ValueError(f"argument `{p.name}`={a} does not fit in {p.dtype}")
            return (p.dtype, int(a))
        if p.dtype == "f32":
            if isinstance(a, bool) or not isinstance(a, numbers.Real):
                raise TypeError(
                    f"argument `{p.name}` must be a float (f32), got {type(a).__name__}"
                )
            return ("f32", float(a))
        raise TypeError(f"argument `{p.name}`: {p.dtype} scalars are not supported from Python")

    # ---- launch -------------------------------------------------------------

    def __call__(self, *args: Any, grid: Grid, warps: Optional[int] = None, **meta: Any) -> None:
        self._check_count(args)
        tensors = [a for a in args if _is_torch_tensor(a)]
        if tensors:
            return self._call_torch(args, grid, warps, meta)
        raw = []
        arrays = []
        for p, a in zip(self.params, args):
            if p.pointer:
                if not isinstance(a, np.ndarray):
                    raise TypeError(
                        f"argument `{p.name}` must be {_describe_numpy(p.dtype)}, "
                        f"got {type(a).__name__}"
                    )
                if not _numpy_ok(a.dtype, p.dtype):
                    raise TypeError(
                        f"argument `{p.name}` must be {_describe_numpy(p.dtype)}, "
                        f"got a {a.dtype} array"
                    )
                if not a.flags.c_contiguous:
                    raise ValueError(
                        f"argument `{p.name}` is not C-contiguous (a kernel sees flat memory; "
                        f"np.ascontiguousarray makes a copy, pass that and read the result from it)"
                    )
                # The same memory passed twice is one buffer, as on a GPU.
                same = next(
                    (i for i, pa in enumerate(arrays) if pa is not None and _same_memory(pa[1], a)),
                    None,
                )
                if same is not None:
                    raw.append(("alias", same))
                    arrays.append(None)
                    continue
                raw.append(("buf", p.dtype, a.tobytes()))
                arrays.append((p, a))
            else:
                raw.append(self._scalar(p, a))
                arrays.append(None)
        config, w = self._choose_config(meta, warps, None)
        dims = self._grid(grid, config, w)
        out = self.pack._native.launch(self.name, list(config.items()), w, dims, raw, False)
        # Copy back what the kernel changed; first make sure every changed
        # array may be written, so a failure leaves all of them untouched.
        changed = [
            (pa[1], bytes_)
            for pa, r, bytes_ in zip(arrays, raw, out)
            if pa is not None and bytes_ != r[2]
        ]
        def name_of(a):
            return next(p.name for p, x in filter(None, arrays) if x is a)

        for a, _ in changed:
            if not a.flags.writeable:
                raise ValueError(f"argument `{name_of(a)}` is read-only but the kernel wrote to it")
            for p, b in filter(None, arrays):
                if b is not a and np.shares_memory(a, b):
                    raise ValueError(
                        f"the kernel wrote argument `{name_of(a)}`, which overlaps argument "
                        f"`{p.name}` in memory: each argument is copied for the CPU "
                        f"interpreter, so the result cannot be told; pass separate arrays "
                        f"(or the same array twice)"
                    )
        for a, bytes_ in changed:
            np.copyto(a, np.frombuffer(bytes_, dtype=a.dtype).reshape(a.shape))
        return None

    def _call_torch(self, args: tuple, grid: Grid, warps: Optional[int], meta: Dict) -> None:
        # Zero-copy: the kernel runs on the tensors' own memory
        # (``data_ptr()``) on torch's current stream of their device, in the
        # device's primary context (torch's), so it orders with the caller's
        # other work and nothing is copied or synchronized. Every check runs
        # before the launch, so a refused call touches no tensor.
        import torch

        device = None
        values: list = []
        key_values = []
        for p, a in zip(self.params, args):
            if p.pointer:
                _check_tensor(p, a, torch)
                if device is None:
                    device = a.device
                elif a.device != device:
                    raise ValueError(
                        f"argument `{p.name}` is on {a.device} but the earlier tensor "
                        f"arguments are on {device}: a launch runs on one GPU"
                    )
                values.append(a.data_ptr())
            else:
                values.append(self._scalar(p, a)[1])
                if p.name in self.key:
                    key_values.append((p.name, int(a)))
        ordinal = device.index if device.index is not None else torch.cuda.current_device()
        config, w = self._choose_config(meta, warps, key_values, ordinal)
        dims = self._grid(grid, config, w)
        kernel = self._loaded(config, w, ordinal)
        stream = torch.cuda.current_stream(device).cuda_stream
        kernel.launch_raw(dims, values, stream)
        return None

    def _loaded(self, config: Dict[str, int], warps: int, ordinal: Optional[int]):
        """The native kernel of this config on GPU ``ordinal`` (``None``: the
        CPU), loaded once: ``launch_raw(grid, values, stream)`` launches it."""
        key = (tuple(config.items()), warps, ordinal)
        k = self._native_kernels.get(key)
        if k is None:
            k = self.pack._native.kernel(self.name, list(config.items()), warps, ordinal)
            self._native_kernels[key] = k
        return k


TORCH_DTYPES = {
    "f32": "float32",
    "i32": "int32",
    "i64": "int64",
    "f16": "float16",
    "bf16": "bfloat16",
}


def _check_tensor(p: Param, a: Any, torch: Any) -> None:
    """A pointer argument of a GPU launch: a contiguous CUDA tensor of the
    parameter's dtype (``TypeError``/``ValueError`` naming the argument)."""
    if not _is_torch_tensor(a):
        raise TypeError(
            f"argument `{p.name}` must be a torch CUDA tensor like the others, "
            f"got {type(a).__name__}"
        )
    if not a.is_cuda:
        raise TypeError(
            f"argument `{p.name}` is a CPU tensor: pass CUDA tensors for the GPU, "
            f"or numpy arrays for the CPU interpreter"
        )
    want = getattr(torch, TORCH_DTYPES.get(p.dtype, ""), None)
    if want is None or a.dtype != want:
        raise TypeError(
            f"argument `{p.name}` must be a {want if want is not None else p.dtype} tensor, "
            f"got {a.dtype}"
        )
    if not a.is_contiguous():
        raise ValueError(
            f"argument `{p.name}` is not contiguous (the kernel sees flat memory; "
            f"pass tensor.contiguous() and read the result from it)"
        )


def _describe(meta: Dict[str, int], warps: int) -> str:
    return ", ".join([f"{n}={v}" for n, v in meta.items()] + [f"warps={warps}"])
