"""``tile.mhc``: one mHC (or HC) residual site as a ``torch.nn.Module``.

The site's forward and backward are the mHC pack's kernels
(``mhc-kernels/kernels/mhc/mhc.tile``), launched in the sequence and with
the arguments of the Rust layer (``mhc-kernels/mhc/src/layer.rs`` and
``layer/backward.rs``): this file mirrors it, kernel for kernel.

    site = tile.mhc.MhcSite(n=4, C=512).cuda()
    h_in = site.pre(x)          # x: [..., n, C] bf16 CUDA  ->  h_in [..., C]
    x = site.post(sublayer(h_in))   # -> [..., n, C]
    # or: x = site(x, sublayer)

Streams and sublayer values are bf16; the parameters (φ or θ, α, b) are f32
``nn.Parameter``s; the coefficients are f32. Backward goes through
``torch.autograd.Function``s whose backward runs the pack's backward
kernels (Sinkhorn-Knopp recomputed on chip; parameter gradients summed over
tokens in a fixed order).

The plan of kernels (:class:`SitePlan`) is independent of torch: the tests
run it on numpy arrays on the CPU interpreter as well (python/tests/test_mhc_cpu.py).
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import Pack
from ._tile import LaunchSequence as _NativeSequence

__all__ = ["SitePlan", "MhcSite", "HcSite", "default_pack_path", "RES_DIAG"]

#: b_res on the diagonal at initialisation (layer.rs ``RES_DIAG``): H_res ≈ I.
RES_DIAG = 4.0
_APPLY_BC = 1024
# Tiles of the backward kernels (layer/backward.rs POST_BWD_TILE,
# PRE_BWD_TILE: (columns, warps); PHI_SPLIT_COLUMNS).
_POST_BWD_TILE = (256, 1)
_PRE_BWD_TILE = (256, 4)
_PHI_SPLIT_COLUMNS = 32
_SINKHORN_SEGMENT = 2
# The most steps one program of mhc_sum_rows takes alone (backward.rs
# SINGLE_STAGE_STEPS; split_rows).
_SINGLE_STAGE_STEPS = 8


def default_pack_path() -> Path:
    """``$TILE_MHC_PACK``, else ``target/packs/mhc.tpack`` of the working
    directory or of the repository this package sits in."""
    env = os.environ.get("TILE_MHC_PACK")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "target" / "packs" / "mhc.tpack"
    cwd = Path.cwd() / "target" / "packs" / "mhc.tpack"
    for p in (cwd, here):
        if p.exists():
            return p
    raise FileNotFoundError(
        f"no mHC pack: set TILE_MHC_PACK or build it with `bash scripts/packs target/packs mhc` "
        f"(looked at {cwd} and {here})"
    )


def _int(name: str, v: Any) -> int:
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}") from None


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _padded_rows(r: int) -> int:
    return 16 if r <= 16 else 32 if r <= 32 else 128


class SitePlan:
    """The kernel sequence of one site (mixing ``"mhc"`` or ``"hc"``), over any
    array type: ``launch(name, meta, warps, grid, args)`` runs a kernel and
    ``alloc(n, dtype, zero)`` gives a flat array (dtype ``"bf16"``/``"f32"``).
    ``sms`` is the device's parallelism (SM count), which sets the token
    blocks as the Rust layer does."""

    def __init__(self, mixing: str, n: int, C: int, iters: int = 20, eps: float = 1e-6):
        if mixing not in ("mhc", "hc"):
            raise ValueError(f"mixing must be 'mhc' or 'hc', got {mixing!r}")
        # Python ints (a numpy integer is accepted and converted): the torch
        # launcher passes ints and floats as scalars, anything else by address.
        n, C, iters, eps = _int("n", n), _int("C", C), _int("iters", iters), float(eps)
        if n not in (2, 4, 8):
            raise ValueError(f"{n} streams: the pack has kernels for n = 2, 4 or 8")
        if C <= 0:
            raise ValueError(f"width C must be positive, got {C}")
        self.mixing, self.n, self.C, self.iters, self.eps = mixing, n, C, iters, eps
        self.coeffs = n * n + 2 * n
        self.proj_rows = self.coeffs if mixing == "mhc" else n + 2
        self.proj_cols = n * C if mixing == "mhc" else C
        self.rows_per_token = 1 if mixing == "mhc" else n

    # ---- forward ------------------------------------------------------------

    def split_proj(self, L, alloc, proj):
        """``mhc_proj_split``: φ (or θ) as transposed bf16 high and low parts."""
        rp = _padded_rows(self.proj_rows)
        K, R = self.proj_cols, self.proj_rows
        hilo = alloc(2 * K * rp, "bf16", False)
        L("mhc_proj_split", {"RP": rp, "BK": 64}, 4, (_cdiv(K, 64), 1, 1), [proj, hilo, K, R])
        return hilo

    @staticmethod
    def _proj_tile(rows, sms):
        # As the Rust layer's `proj_tile`: the largest token block that gives
        # half the SMs a program, 128-column steps below two waves.
        bt = next((b for b in (64, 32, 16) if 2 * _cdiv(rows, b) >= sms), 16)
        bk = 128 if _cdiv(rows, bt) < 2 * sms else 64
        return bt, bk

    def project(self, L, alloc, sms, x, proj, z, r, T):
        """``mhc_proj_split`` + ``mhc_proj``: z = proj·x and the RMSNorm factors r."""
        rows = T * self.rows_per_token
        rp = _padded_rows(self.proj_rows)
        K, R = self.proj_cols, self.proj_rows
        hilo = self.split_proj(L, alloc, proj)
        bt, bk = self._proj_tile(rows, sms)
        L(
            "mhc_proj",
            {"RP": rp, "BT": bt, "BK": bk},
            4,
            (_cdiv(rows, bt), 1, 1),
            [x, hilo, z, r, rows, K, R],
        )

    def gates(self, L, z, r, alpha, b, h, T):
        if self.mixing == "mhc":
            L(
                "mhc_coeffs",
                {"N": self.n, "BT": self._coeff_tokens(), "ITERS": self.iters},
                1,
                (self._coeff_programs(T), 1, 1),
                [z, r, alpha, b, h, T, float(self.eps)],
            )
        else:
            L("hc_coeffs", {"N": self.n}, 1, (T, 1, 1), [z, r, alpha, b, h])

    def _coeff_tokens(self):
        # mhc_coeffs and mhc_coeffs_bwd: 32 / n tokens per program (layer.rs coeff_tokens).
        return 32 // self.n

    def _coeff_programs(self, T):
        # mhc_coeffs' programs, mhc_coeffs_bwd's token programs (layer.rs coeff_programs).
        return _cdiv(T, self._coeff_tokens())

    def _apply_tile(self, wide, narrow):
        # 1024 columns when they divide C, else 256 (layer.rs apply_tile).
        return wide if self.C % _APPLY_BC == 0 else narrow

    def apply_pre(self, L, x, h, h_in, T):
        bc, warps = self._apply_tile((_APPLY_BC, 8), (256, 2))
        L("mhc_pre_apply", {"N": self.n, "BC": bc}, warps, (T, _cdiv(self.C, bc), 1), [x, h, h_in, self.C])

    def post(self, L, x, y, h, out, T):
        bc, warps = self._apply_tile((_APPLY_BC, 4), (256, 1))
        L("mhc_post", {"N": self.n, "BC": bc}, warps, (T, _cdiv(self.C, bc), 1), [x, y, h, out, self.C])

    def pre(self, L, alloc, sms, x, proj, alpha, b, T):
        """Coefficients and ``h_in``: returns ``(h_in, z, r, h)``."""
        rows = T * self.rows_per_token
        z = alloc(rows * self.proj_rows, "f32", False)
        r = alloc(rows, "f32", False)
        h = alloc(T * self.coeffs, "f32", False)
        h_in = alloc(T * self.C, "bf16", False)
        self.pre_into(L, alloc, sms, x, proj, alpha, b, h_in, z, r, h, T)
        return h_in, z, r, h

    def pre_into(self, L, alloc, sms, x, proj, alpha, b, h_in, z, r, h, T):
        """:meth:`pre` into the caller's ``h_in``, ``z``, ``r`` and ``h``."""
        self.project(L, alloc, sms, x, proj, z, r, T)
        self.gates(L, z, r, alpha, b, h, T)
        self.apply_pre(L, x, h, h_in, T)

    # ---- backward -----------------------------------------------------------

    def post_backward(self, L, x, y, h, g_out, gx, dy, dh, T):
        """``mhc_post_bwd``: gx written, dy, dh's post and res parts."""
        L(
            "mhc_post_bwd",
            {"N": self.n, "BC": _POST_BWD_TILE[0]},
            _POST_BWD_TILE[1],
            (T, 1, 1),
            [x, y, h, g_out, gx, dy, dh, self.C],
        )

    def pre_backward(self, L, alloc, sms, x, proj, alpha, b, z, r, h, g_h, gx, dh, grads, T, accumulate=True):
        """``mhc_pre_bwd``, the gates' backward, the projection's backward
        (added to ``gx`` in place) and the parameter gradients added into
        ``grads = (dproj, dalpha, db)`` (which must start at zero or hold
        what to add to), or written there with ``accumulate=False``."""
        n, K, R = self.n, self.proj_cols, self.proj_rows
        rows = T * self.rows_per_token
        bc, warps = _PRE_BWD_TILE
        L("mhc_pre_bwd", {"N": n, "BC": bc}, warps, (T, 1, 1), [x, h, g_h, gx, dh, self.C])
        rp = _padded_rows(R)
        # dz and the projection as bf16 parts (backward.rs GateGrads), written
        # by the gates' backward, whose programs after the token ones split
        # the projection, _PHI_SPLIT_COLUMNS columns each.
        dzt = alloc(2 * rp * rows, "bf16", False)
        dz2 = alloc(2 * rp * rows, "bf16", False)
        phi3 = alloc(3 * rp * K, "bf16", False)
        phi_programs = _cdiv(K, _PHI_SPLIT_COLUMNS)
        q = alloc(rows, "f32", False)
        if self.mixing == "mhc":
            # Each program's sums over its tokens of db then dα (backward.rs
            # GateGrads::shares), one row of coeffs + 3 a program.
            share_rows = self._coeff_programs(T)
            shares = alloc(share_rows * (self.coeffs + 3), "f32", False)
            # Sinkhorn checkpoints every _SINKHORN_SEGMENT iterations, their
            # slots a power of two (backward.rs SINKHORN_SEGMENT, hist_slots).
            checkpoints = _cdiv(max(self.iters, 1), _SINKHORN_SEGMENT)
            hist = 1 << (checkpoints - 1).bit_length()
            L(
                "mhc_coeffs_bwd",
                {
                    "N": n,
                    "BT": self._coeff_tokens(),
                    "ITERS": self.iters,
                    "SEG": _SINKHORN_SEGMENT,
                    "HIST": hist,
                    "RP": rp,
                    "BK": _PHI_SPLIT_COLUMNS,
                },
                1,
                (share_rows + phi_programs, 1, 1),
                [z, r, alpha, b, h, dh, proj, q, shares, dz2, dzt, phi3, T, K, float(self.eps)],
            )
        else:
            shares = alloc(T * 3, "f32", False)
            L(
                "hc_coeffs_bwd",
                {"N": n, "RP": rp, "BK": _PHI_SPLIT_COLUMNS},
                1,
                (T + phi_programs, 1, 1),
                [z, r, alpha, dh, proj, q, shares, dz2, dzt, phi3, rows, self.C],
            )
        # Projection backward: programs share the rows (layer/backward.rs
        # proj_programs, proj_split), about four per SM with the column blocks.
        # layer/backward.rs PROJ_BWD_TILE.
        bt, bk = 64, 64
        programs = max(1, min(_cdiv(4 * sms, _cdiv(K, bk)), _cdiv(rows, bt)))
        group = _cdiv(_cdiv(rows, programs), bt) * bt
        programs = _cdiv(rows, group)
        part = alloc(programs * R * K, "f32", False)
        if rp >= 128:
            # n = 8: two kernels (backward.rs project_backward_into).
            L(
                "mhc_proj_bwd_dx",
                {"RP": rp, "BT": bt, "BK": bk},
                4,
                (_cdiv(rows, bt), _cdiv(K, bk), 1),
                [x, phi3, dz2, q, gx, rows, K],
            )
            L(
                "mhc_proj_bwd_dphi",
                {"RP": rp, "BT": bt, "BK": bk},
                4,
                (programs, _cdiv(K, bk), 1),
                [x, dzt, part, rows, K, R, group],
            )
        else:
            L(
                "mhc_proj_bwd",
                {"RP": rp, "BT": bt, "BK": bk},
                4,
                (programs, _cdiv(K, bk), 1),
                [x, phi3, dz2, dzt, q, gx, part, rows, K, R, group],
            )
        dproj, dalpha, db = grads
        self.sum_rows(L, alloc, part, programs, R * K, dproj, accumulate)
        if self.mixing == "mhc":
            # db and dα from the shares in one sum (backward.rs reduce_grads).
            self.sum_rows(L, alloc, shares, share_rows, self.coeffs + 3, db, accumulate, rest=dalpha, split=self.coeffs)
        else:
            self.sum_rows(L, alloc, dh, T, self.coeffs, db, accumulate)
            self.sum_rows(L, alloc, shares, T, 3, dalpha, accumulate)

    def sum_rows(self, L, alloc, src, p, l, dst, accumulate=True, rest=None, split=None):
        """``dst[j] += Σ_i src[i, j]`` (``=`` with ``accumulate=False``) in a
        fixed order (two stages for many rows). With ``rest``, the first
        ``split`` columns go to ``dst`` and the others to ``rest``."""

        split = l if split is None else split
        # Narrow sums take 32 columns and 32 rows a step (layer/backward.rs sum_rows).
        bl, bp = (32, 32) if l <= 32 else (256, 8)

        def launch(s, d, d2, split, p, splits, add):
            L(
                "mhc_sum_rows",
                {"BL": bl, "BP": bp},
                4,
                (_cdiv(l, bl), splits, 1),
                [s, d, d2, p, l, split, _cdiv(p, splits), int(add)],
            )

        # Two stages above _SINGLE_STAGE_STEPS, with the fewest steps in both
        # together (backward.rs split_rows).
        steps = _cdiv(p, bp)
        if steps > _SINGLE_STAGE_STEPS:
            s1 = min(range(1, steps + 1), key=lambda s: s + _cdiv(_cdiv(p, s * bp), bp))
            splits = _cdiv(p, s1 * bp)
            stage = alloc(splits * l, "f32", False)
            launch(src, stage, stage, l, p, splits, False)
            src, p = stage, splits
        launch(src, dst, rest if rest is not None else dst, split, p, 1, accumulate)

    # ---- initialisation -----------------------------------------------------

    def init_bias(self, site: int = 0) -> np.ndarray:
        """b of a fresh site that behaves like a plain residual (mhc-spec.md;
        layer.rs ``init_params``)."""
        n = self.n
        b = np.zeros(self.coeffs, np.float32)
        if self.mixing == "mhc":
            b[:n] = math.log((1.0 / n) / (1.0 - 1.0 / n))
            for j in range(n):
                b[2 * n + j * n + j] = RES_DIAG
        else:
            b[site % n] = 1.0
            b[n : 2 * n] = 1.0
            for j in range(n):
                b[2 * n + j * n + j] = 1.0
        return b


class _Slot:
    """An array of a :class:`_Recording`: ``nbytes`` bytes at ``offset``
    into the memory of address slot ``index`` (``nbytes`` is None for the
    pass's own arrays, which start their slot)."""

    __slots__ = ("index", "offset", "nbytes", "dtype")

    def __init__(self, index: int, offset: int = 0, nbytes: Optional[int] = None, dtype: Optional[str] = None):
        self.index, self.offset, self.nbytes, self.dtype = index, offset, nbytes, dtype


class _Recording:
    """A launcher and allocator for :class:`SitePlan` that launches nothing:
    it records a pass's kernels with symbolic arrays (:class:`_Slot`), so the
    pass can run later as one native ``LaunchSequence`` on fresh tensors (one
    Python call a pass instead of one a kernel). The pass's arrays are the
    first ``inputs`` slots (``args``, in the order the caller passes them);
    its temporaries share one workspace, the last slot, each at a 256-byte
    aligned offset (``workspace_bytes`` in all)."""

    ALIGN = 256

    def __init__(self, inputs: int, sms: int):
        self.args = [_Slot(i) for i in range(inputs)]
        self.workspace = inputs
        self.workspace_bytes = 0
        self.steps: List[tuple] = []
        self.sms = sms

    def __call__(self, name, meta, warps, grid, args):
        self.steps.append((name, dict(meta), warps, tuple(grid), list(args)))

    def alloc(self, n, dtype, zero):
        if zero:
            raise ValueError("a recorded pass cannot ask for zeroed memory (nothing runs while recording)")
        off = _cdiv(self.workspace_bytes, self.ALIGN) * self.ALIGN
        nbytes = n * (2 if dtype == "bf16" else 4)
        self.workspace_bytes = off + nbytes
        return _Slot(self.workspace, off, nbytes, dtype)


# ---- torch ------------------------------------------------------------------


class _GradHandoff:
    """x's gradient, and h's, from post's backward to pre's backward of one
    site call.

    ``mhc_post_bwd`` writes post's part of ∂L/∂x into a fresh buffer, and
    ``mhc_pre_bwd`` and ``mhc_proj_bwd`` add pre's parts into a buffer in
    place. Handing post's buffer to pre's backward makes it pre's starting
    gradient, so that only pre's backward returns x's gradient: no zero-filled
    buffer for pre and no sum of two x-sized gradients by autograd (a read of
    two and a write of one stream tensor), as in the Rust layer. The order is
    the graph's: post takes pre's output ``h``, so whenever post's backward
    runs in a backward pass, pre's runs after it in the same pass. Post's
    ``dh`` (h's gradient) comes along: when autograd hands pre exactly that
    tensor (h has no other consumer), pre's kernels may write into it
    instead of a copy.

    A gradient is used only by the pass that gave it (the same autograd graph
    task, where torch says which, and a gradient of ``h`` present, which only
    post gives) and only once (``take`` clears it): with ``retain_graph`` each
    pass's post gives a new one, and a pass that runs post without pre (a
    ``torch.autograd.grad`` that needs only ``y``) leaves nothing that a later
    pass could reuse. Otherwise pre's backward starts from zeros."""

    __slots__ = ("gx", "dh", "task")

    def __init__(self):
        self.gx = self.dh = self.task = None

    def give(self, gx, dh, task):
        self.gx, self.dh, self.task = gx, dh, task

    def take(self, task, g_h):
        """``(gx, dh)``: post's x gradient (None when not this pass's), and
        ``g_h`` itself when it is the ``dh`` post gave (else None)."""
        gx, dh, given = self.gx, self.dh, self.task
        self.gx = self.dh = self.task = None
        if gx is None or g_h is None or given != task:
            return None, None
        return gx, (g_h if g_h is dh else None)


try:  # torch is optional: SitePlan works without it (numpy, CPU interpreter).
    import torch
except ImportError:  # pragma: no cover - exercised where torch is missing
    torch = None

# Scalar kernel arguments of SitePlan (ints and the f32 eps); anything else
# is a tensor, passed by address.
_SCALARS = (int, float)


class _TorchLauncher:
    """Launches the pack's kernels on torch CUDA tensors of one device:
    loaded kernels cached per (name, config), arguments as device addresses,
    on torch's current stream. The site checks its tensors before the first
    launch, so this does no per-kernel checks beyond the runtime's. A pass of
    several kernels runs as one native ``LaunchSequence`` (:meth:`run`),
    recorded once per pass and token count."""

    # Recorded passes kept per launcher (a site sees few token counts; a
    # long run with ever-changing ones must not grow without bound).
    MAX_SEQUENCES = 32

    def __init__(self, pack: Pack, device):
        self.pack = pack
        self.device = device
        self.ordinal = device.index if device.index is not None else torch.cuda.current_device()
        self.sms = torch.cuda.get_device_properties(device).multi_processor_count
        self.kernels: Dict[tuple, Any] = {}
        self.sequences: Dict[Any, tuple] = {}
        self.stream = 0

    def _kernel(self, name, meta, warps):
        key = (name, warps, *meta.items())
        k = self.kernels.get(key)
        if k is None:
            kern = self.pack[name]
            # The native config lists meta-parameters in declaration order.
            order = list(kern.configs[0][0]) if kern.configs else list(meta)
            k = kern._loaded({m: int(meta[m]) for m in order}, warps, self.ordinal)
            self.kernels[key] = k
        return k

    def __call__(self, name, meta, warps, grid, args):
        # Per launch: one flat key for the cache and the arguments as
        # addresses or scalars (SitePlan's scalars are Python ints and floats).
        self._kernel(name, meta, warps).launch_raw(
            grid, [a if type(a) in _SCALARS else a.data_ptr() for a in args], self.stream
        )

    def run(self, key, record, tensors):
        """Run the pass ``record(recording, *slots)`` describes (its kernels
        recorded once per ``key`` with ``tensors`` as symbolic slots) on
        ``tensors`` and a fresh workspace, as one native call."""
        entry = self.sequences.get(key)
        if entry is None:
            rec = _Recording(len(tensors), self.sms)
            record(rec, *rec.args)
            steps = [
                (
                    self._kernel(name, meta, warps),
                    grid,
                    [(a.index, a.offset) if type(a) is _Slot else a for a in args],
                )
                for name, meta, warps, grid, args in rec.steps
            ]
            entry = (_NativeSequence(len(tensors) + 1, steps), rec.workspace_bytes)
            if len(self.sequences) >= self.MAX_SEQUENCES:
                self.sequences.pop(next(iter(self.sequences)))
            self.sequences[key] = entry
        seq, nbytes = entry
        # Freed after the call: torch's allocator reuses it in stream order.
        ws = torch.empty(max(nbytes, _Recording.ALIGN), dtype=torch.uint8, device=self.device)
        seq.launch([t.data_ptr() for t in tensors] + [ws.data_ptr()], self.stream)

    def alloc(self, n, dtype, zero):
        dt = torch.bfloat16 if dtype == "bf16" else torch.float32
        return (torch.zeros if zero else torch.empty)(n, dtype=dt, device=self.device)


def _check(name: str, t: Any, dtype, device, shape_tail: Tuple[int, ...], owner="the site's parameters") -> None:
    """A clear exception naming the argument, before anything launches."""
    # The common case in a few attribute reads (every site call checks its
    # tensors); the same conditions one by one, with their messages, below.
    if (
        isinstance(t, torch.Tensor)
        and t.dtype == dtype
        and t.device == device
        and t.is_contiguous()
        and t.shape[-len(shape_tail) :] == shape_tail
    ):
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise TypeError(
            f"`{name}` is a CPU tensor: the mHC site runs on the GPU of its parameters ({device})"
        )
    if t.device != device:
        raise ValueError(f"`{name}` is on {t.device}, {owner} on {device}")
    if t.dtype != dtype:
        raise TypeError(f"`{name}` must be a {dtype} tensor, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"`{name}` is not contiguous (pass tensor.contiguous())")
    if tuple(t.shape[len(t.shape) - len(shape_tail) :]) != shape_tail or t.dim() < len(shape_tail):
        raise ValueError(
            f"`{name}` has shape {tuple(t.shape)}, expected [..., {', '.join(map(str, shape_tail))}]"
        )


if torch is not None:
    # torch's current stream of a device as a raw cudaStream_t: what
    # torch.cuda.current_stream(dev).cuda_stream gives, without making a
    # Stream object per call (the private function inductor's code uses;
    # the public one where a build lacks it).
    _raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)

    def _current_stream(dev) -> int:
        if _raw_stream is not None:
            return _raw_stream(dev.index)
        return torch.cuda.current_stream(dev).cuda_stream

    # Which backward pass (autograd graph task) is running: _GradHandoff uses
    # a gradient only in the pass that gave it. None where torch lacks it
    # (then only its other condition holds it to that).
    _task_id = getattr(torch._C, "_current_graph_task_id", None)

    def _graph_task():
        return _task_id() if _task_id is not None else None

    def _pre_forward(plan, L, x, proj, alpha, b):
        """(h_in [..., C], h [T, n²+2n], z, r): the forward of pre, one native call."""
        T = x.numel() // (plan.n * plan.C)
        rows = T * plan.rows_per_token
        dev = x.device
        h_in = torch.empty(*x.shape[:-2], plan.C, dtype=torch.bfloat16, device=dev)
        h = torch.empty(T, plan.coeffs, dtype=torch.float32, device=dev)
        # z and r, saved for the backward, in one allocation (r 256-byte aligned).
        zn = _cdiv(rows * plan.proj_rows, 64) * 64
        zr = torch.empty(zn + rows, dtype=torch.float32, device=dev)
        z, r = zr[: rows * plan.proj_rows], zr[zn:]

        def record(R, x, proj, alpha, b, h_in, z, r, h):
            plan.pre_into(R, R.alloc, R.sms, x, proj, alpha, b, h_in, z, r, h, T)

        L.run(("pre", T), record, (x, proj, alpha, b, h_in, z, r, h))
        return h_in, h, z, r

    def _pre_backward(plan, L, x, proj, alpha, b, z, r, h, g_hin, gx, dh, T):
        """The parameters' gradients (fresh tensors); x's added into ``gx``,
        ``dh``'s H_pre part written: one native call."""
        grads = (torch.empty_like(proj), torch.empty_like(alpha), torch.empty_like(b))

        def record(R, x, proj, alpha, b, z, r, h, g_hin, gx, dh, dproj, dalpha, db):
            grads = (dproj, dalpha, db)
            plan.pre_backward(
                R, R.alloc, R.sms, x, proj, alpha, b, z, r, h, g_hin, gx, dh, grads, T, accumulate=False
            )

        L.run(("pre_backward", T), record, (x, proj, alpha, b, z, r, h, g_hin, gx, dh, *grads))
        return grads

    def _post_forward(plan, L, x, y, h):
        out = torch.empty_like(x)
        plan.post(L, x, y, h, out, x.numel() // (plan.n * plan.C))
        return out

    class _PreFn(torch.autograd.Function):
        """h_in, h = pre(x; proj, α, b): coefficients (f32) and H_pre·x (bf16).
        x's gradient starts from post's (``handoff``, :class:`_GradHandoff`)."""

        @staticmethod
        def forward(ctx, x, proj, alpha, b, site, handoff):
            plan = site.plan
            h_in, h, z, r = _pre_forward(plan, site._launcher(x.device), x, proj, alpha, b)
            # h is saved as returned (an output, not a view of one).
            ctx.site, ctx.T, ctx.handoff = site, h.shape[0], handoff
            # A gradient of h that nobody gave stays None (not zeros): that
            # is how backward tells that post's backward did not run.
            ctx.set_materialize_grads(False)
            ctx.save_for_backward(x, proj, alpha, b, z, r, h)
            return h_in, h

        @staticmethod
        def backward(ctx, g_hin, g_h):
            x, proj, alpha, b, z, r, h = ctx.saved_tensors
            site, T = ctx.site, ctx.T
            plan, L = site.plan, site._launcher(x.device)
            if g_hin is None:
                g_hin = L.alloc(T * plan.C, "bf16", True)
            g_hin = g_hin.to(torch.bfloat16).contiguous()
            # x's gradient: post's (mhc_post_bwd wrote it) when post's
            # backward ran in this pass, which pre's kernels add to in place;
            # else zeros. Only pre returns it (post returns None for x).
            gx, dh = ctx.handoff.take(_graph_task(), g_h)
            if gx is None:
                gx = torch.zeros_like(x)
            # dh: ∂L/∂H_post, ∂L/∂H_res from post's backward; mhc_pre_bwd
            # writes the H_pre part — into post's own buffer when autograd
            # handed exactly that (taken above), else into a copy: a
            # gradient autograd made is not ours to change.
            if dh is None:
                dh = (
                    g_h.to(torch.float32).contiguous().clone()
                    if g_h is not None
                    else L.alloc(T * plan.coeffs, "f32", True)
                )
            grads = _pre_backward(plan, L, x, proj, alpha, b, z, r, h, g_hin, gx, dh, T)
            return gx, grads[0], grads[1], grads[2], None, None

    class _PostFn(torch.autograd.Function):
        """x' = H_res·x + H_postᵀ·y. x's gradient goes to pre's backward
        through ``handoff`` (None: returned here)."""

        @staticmethod
        def forward(ctx, x, y, h, site, handoff):
            out = _post_forward(site.plan, site._launcher(x.device), x, y, h)
            ctx.site, ctx.handoff = site, handoff
            ctx.save_for_backward(x, y, h)
            return out

        @staticmethod
        def backward(ctx, g_out):
            x, y, h = ctx.saved_tensors
            site = ctx.site
            plan, L = site.plan, site._launcher(x.device)
            T = x.numel() // (plan.n * plan.C)
            g_out = g_out.to(torch.bfloat16).contiguous()
            gx = torch.empty_like(x)
            dy = torch.empty_like(y)
            # mhc_post_bwd writes the H_post and H_res parts; the H_pre part
            # is mhc_pre_bwd's to write. Only pre's backward reads h's
            # gradient (h is internal to the site), and it writes that part
            # first, so it starts unset.
            dh = torch.empty_like(h)
            plan.post_backward(L, x, y, h, g_out, gx, dy, dh, T)
            if ctx.handoff is None:
                return gx, dy, dh, None, None
            # pre's backward runs after this one in this pass (it needs h's
            # gradient) and starts x's gradient from gx.
            ctx.handoff.give(gx, dh, _graph_task())
            return None, dy, dh, None, None

    def _records(*tensors) -> bool:
        """Whether autograd records an operation on these tensors."""
        if torch.is_grad_enabled():
            for t in tensors:
                if t.requires_grad:
                    return True
        return False

    class _Site(torch.nn.Module):
        def __init__(self, mixing, n, C, pack=None, iters=20, eps=1e-6, site=0, std=0.02):
            super().__init__()
            self.plan = SitePlan(mixing, n, C, iters, eps)
            self.pack = pack if isinstance(pack, Pack) else Pack(pack or default_pack_path())
            p = self.plan
            self.proj = torch.nn.Parameter(torch.randn(p.proj_rows, p.proj_cols) * std)
            self.alpha = torch.nn.Parameter(torch.full((3,), 0.01))
            self.b = torch.nn.Parameter(torch.from_numpy(p.init_bias(site)))
            self._launchers: Dict[Any, _TorchLauncher] = {}
            self._h = None

        def extra_repr(self) -> str:
            return f"n={self.plan.n}, C={self.plan.C}, mixing={self.plan.mixing}"

        def _launcher(self, dev) -> _TorchLauncher:
            """The launcher of GPU ``dev``, on torch's current stream there."""
            L = self._launchers.get(dev)
            if L is None:
                L = self._launchers[dev] = _TorchLauncher(self.pack, dev)
            L.stream = _current_stream(dev)
            return L

        def _params(self):
            """(proj, alpha, b): read from ``_parameters`` directly where they
            are registered there (nn.Module's ``__getattr__`` costs a call
            each), else as attributes."""
            p = self._parameters
            if "proj" in p and "alpha" in p and "b" in p:
                return p["proj"], p["alpha"], p["b"]
            return self.proj, self.alpha, self.b

        def _check_params(self):
            proj, alpha, b = params = self._params()
            dev = proj.device
            if dev.type != "cuda":
                raise TypeError(
                    f"the site's parameters are on {dev}: move the module to a GPU (.cuda())"
                )
            p = self.plan
            _check("proj", proj, torch.float32, dev, (p.proj_rows, p.proj_cols))
            _check("alpha", alpha, torch.float32, dev, (3,))
            _check("b", b, torch.float32, dev, (p.coeffs,))
            return dev, params

        def _keep(self, h):
            # What post needs of pre, as self._h; set in the instance's
            # __dict__ (where nn.Module.__setattr__ puts a plain value),
            # skipping that __setattr__'s checks on every call.
            self.__dict__["_h"] = h

        def pre(self, x):
            """``h_in = H_pre·x`` (bf16 ``[..., C]``) of streams ``x`` (bf16 ``[..., n, C]``);
            keeps the coefficients for the next :meth:`post`."""
            dev, (proj, alpha, b) = self._check_params()
            _check("x", x, torch.bfloat16, dev, (self.plan.n, self.plan.C))
            if _records(x, proj, alpha, b):
                handoff = _GradHandoff()
                h_in, h = _PreFn.apply(x, proj, alpha, b, self, handoff)
            else:
                # No graph to record (no_grad, or nothing requires grad): the
                # same kernels without autograd.Function's per-call cost.
                handoff = None
                h_in, h, _, _ = _pre_forward(self.plan, self._launcher(dev), x, proj, alpha, b)
            self._keep((x, h, handoff))
            return h_in

        def post(self, y):
            """``x' = H_res·x + H_postᵀ·y`` with the ``x`` and coefficients of the last :meth:`pre`."""
            if self._h is None:
                raise RuntimeError("post() needs a pre() first (it uses pre's x and coefficients)")
            x, h, handoff = self._h
            self._keep(None)
            # post's kernels read pre's x and h and y (not the parameters):
            # y must be on their GPU.
            _check("y", y, torch.bfloat16, x.device, (self.plan.C,), owner="pre's x")
            if tuple(y.shape[:-1]) != tuple(x.shape[:-2]):
                raise ValueError(
                    f"`y` has shape {tuple(y.shape)}, expected {tuple(x.shape[:-2]) + (self.plan.C,)}"
                )
            if _records(x, y, h):
                # x's gradient goes to pre's backward where pre is in the
                # graph (h requires grad), else post's backward returns it.
                return _PostFn.apply(x, y, h, self, handoff if h.requires_grad else None)
            return _post_forward(self.plan, self._launcher(x.device), x, y, h)

        def forward(self, x, sublayer: Callable[[Any], Any]):
            """``post(sublayer(pre(x)))``."""
            return self.post(sublayer(self.pre(x)))

    class MhcSite(_Site):
        """An mHC site: sigmoid gates and a doubly stochastic H_res
        (Sinkhorn-Knopp, ``iters`` iterations, ``eps``). Parameters: ``proj``
        (φ ``[n²+2n, n·C]``), ``alpha`` ``[3]``, ``b`` ``[n²+2n]``, all f32,
        initialised so that a fresh site behaves like a plain residual."""

        def __init__(self, n: int, C: int, pack=None, iters: int = 20, eps: float = 1e-6):
            super().__init__("mhc", n, C, pack, iters, eps)

    class HcSite(_Site):
        """A hyper-connections site (the unconstrained baseline): per-stream
        RMSNorm, ``α·tanh(θ·x̃) + b``. ``proj`` is θ ``[n+2, C]``; ``site`` picks
        the stream H_pre starts on (``site mod n``)."""

        def __init__(self, n: int, C: int, pack=None, site: int = 0):
            super().__init__("hc", n, C, pack, site=site)

else:

    def _no_torch(*_a, **_k):
        raise ImportError("tile.mhc.MhcSite/HcSite need torch (pip install torch)")

    MhcSite = HcSite = _no_torch  # type: ignore[assignment]
