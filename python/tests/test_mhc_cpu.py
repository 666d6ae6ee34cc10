"""tile.mhc's kernel plan (SitePlan, the sequence MhcSite/HcSite launch on a
GPU) on numpy arrays on the CPU interpreter, against the float64 reference of
mhc-spec.md (tests/mhc_reference.py): the kernels' names, meta-parameters,
grids and argument order are those the GPU runs. No torch needed."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mhc_reference as ref
import tile
from conftest import ROOT, _env
from tile.mhc import SitePlan


def to_bits(x):
    u = np.asarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bits(b):
    return (np.asarray(b).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@pytest.fixture(scope="session")
def mhc_pack(tilec, tmp_path_factory):
    out = tmp_path_factory.mktemp("mhc") / "mhc.tpack"
    subprocess.run(
        [str(tilec), "pack", str(ROOT / "mhc-kernels/kernels/mhc"), "-o", str(out), "--arch", "sm_80", "--quiet"],
        check=True,
        env=_env(),
    )
    return tile.Pack(out)


def numpy_backend(pack):
    def launch(name, meta, warps, grid, args):
        pack[name](*args, grid=grid, warps=warps, **meta)

    def alloc(n, dtype, zero):
        return np.zeros(n, np.uint16 if dtype == "bf16" else np.float32)

    return launch, alloc


def forward_backward(pack, plan, x, y, phi, a, b, g_out, g_h, T):
    """A site's forward and backward launched kernel by kernel on the
    interpreter: pre's outputs ``(h_in, z, r, h)``, post's backward outputs
    ``(gx, dy, dh)`` (as post's backward left them, copied) and the final
    ``(gx, dh, grads)``."""
    n, C = plan.n, plan.C
    L, alloc = numpy_backend(pack)
    fwd = plan.pre(L, alloc, 4, x, phi, a, b, T)
    h = fwd[3]
    gx, dy = alloc(T * n * C, "bf16", True), alloc(T * C, "bf16", True)
    dh = alloc(T * plan.coeffs, "f32", True)
    plan.post_backward(L, x, y, h, g_out, gx, dy, dh, T)
    post = (gx.copy(), dy, dh.copy())
    grads = (alloc(phi.size, "f32", True), alloc(3, "f32", True), alloc(plan.coeffs, "f32", True))
    plan.pre_backward(L, alloc, 4, x, phi, a, b, *fwd[1:], g_h, gx, dh, grads, T)
    return fwd, post, (gx, dh, grads)


def problem(n, C, T, seed, alpha=(0.7, 0.9, 1.1)):
    rng = np.random.default_rng(seed)
    plan = SitePlan("mhc", n, C)
    x = to_bits(rng.standard_normal(T * n * C))
    y = to_bits(rng.standard_normal(T * C))
    phi = (rng.standard_normal(plan.proj_rows * plan.proj_cols) * 0.3).astype(np.float32)
    a = np.array(alpha, np.float32)
    b = (plan.init_bias() + rng.standard_normal(plan.coeffs) * 0.5).astype(np.float32)
    return plan, x, y, phi, a, b


def reference(plan, T, x, y, phi, a, b):
    n, C = plan.n, plan.C
    return ref.site(
        ref.Numpy(),
        from_bits(x).reshape(T, n, C),
        from_bits(y).reshape(T, C),
        phi.astype(np.float64).reshape(plan.proj_rows, plan.proj_cols),
        a.astype(np.float64),
        b.astype(np.float64),
    )


# Tolerance of a bf16 output: one rounding to bf16 (2^-9 relative) and the
# coefficients' error (φ as two bf16 parts ≈ 2^-16 relative per product,
# over a reduction of n·C terms: < 2^-9 at these sizes), against the largest
# value of the output.
def bf16_close(got, want, what):
    tol = 2.0**-8 * np.abs(want).max() + 1e-6
    err = np.abs(got - want).max()
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("n", [2, 4])
def test_mhc_forward_matches_the_f64_reference(mhc_pack, n):
    T, C = 5, 96
    plan, x, y, phi, a, b = problem(n, C, T, seed=n)
    L, alloc = numpy_backend(mhc_pack)
    h_in, z, r, h = plan.pre(L, alloc, 4, x, phi, a, b, T)
    out = alloc(T * n * C, "bf16", True)
    plan.post(L, x, y, h, out, T)
    want_h, want_out = reference(plan, T, x, y, phi, a, b)
    bf16_close(from_bits(h_in).reshape(T, C), want_h, "h_in")
    bf16_close(from_bits(out).reshape(T, n, C), want_out, "x_out")


def test_mhc_backward_matches_directional_derivatives(mhc_pack):
    """L = Σ g_out·x_out + Σ g_h·h_in: the kernels' gradients of x, y, φ, α, b
    against central differences of the f64 reference along random directions."""
    n, C, T = 4, 64, 3
    plan, x, y, phi, a, b = problem(n, C, T, seed=11)
    rng = np.random.default_rng(12)
    g_out = to_bits(rng.standard_normal(T * n * C))
    g_h = to_bits(rng.standard_normal(T * C))
    _, (_, dy, _), (gx, _, grads) = forward_backward(mhc_pack, plan, x, y, phi, a, b, g_out, g_h, T)

    base = {
        "x": from_bits(x),
        "y": from_bits(y),
        "phi": phi.astype(np.float64),
        "alpha": a.astype(np.float64),
        "b": b.astype(np.float64),
    }
    got = {
        "x": from_bits(gx),
        "y": from_bits(dy),
        "phi": grads[0].astype(np.float64),
        "alpha": grads[1].astype(np.float64),
        "b": grads[2].astype(np.float64),
    }
    go, gh = from_bits(g_out).reshape(T, n, C), from_bits(g_h).reshape(T, C)

    def loss(v):
        h_in, out = ref.site(
            ref.Numpy(),
            v["x"].reshape(T, n, C),
            v["y"].reshape(T, C),
            v["phi"].reshape(plan.proj_rows, plan.proj_cols),
            v["alpha"],
            v["b"],
        )
        return (go * out).sum() + (gh * h_in).sum()

    for name in base:
        for k in range(2):
            d = rng.standard_normal(base[name].shape)
            eps = 1e-5
            fd = (loss({**base, name: base[name] + eps * d}) - loss({**base, name: base[name] - eps * d})) / (2 * eps)
            dot = float((got[name] * d).sum())
            # bf16 gradients (x, y) carry a few roundings to bf16 (2^-9 each,
            # three for g_x); f32 ones the split products' 2^-16: 2^-6 of the
            # sum of |terms| covers both with margin.
            tol = 2.0**-6 * float(np.abs(got[name] * d).sum()) + 1e-6
            assert abs(dot - fd) <= tol, f"d{name} (direction {k}): {dot:.6g} vs {fd:.6g} (tol {tol:.3g})"


def test_hc_with_zero_gates_is_a_plain_residual(mhc_pack):
    """HC at α = 0: H_pre = one-hot of stream `site mod n`, H_post = 1, H_res = I
    (mhc-spec.md's static init), so h_in = x[site mod n] and x' = x + y exactly
    up to one bf16 rounding."""
    n, C, T, site = 4, 80, 3, 2
    plan = SitePlan("hc", n, C)
    rng = np.random.default_rng(3)
    x = to_bits(rng.standard_normal(T * n * C))
    y = to_bits(rng.standard_normal(T * C))
    theta = (rng.standard_normal(plan.proj_rows * plan.proj_cols) * 0.3).astype(np.float32)
    L, alloc = numpy_backend(mhc_pack)
    h_in, z, r, h = plan.pre(L, alloc, 4, x, theta, np.zeros(3, np.float32), plan.init_bias(site), T)
    out = alloc(T * n * C, "bf16", True)
    plan.post(L, x, y, h, out, T)
    xs = from_bits(x).reshape(T, n, C)
    assert np.array_equal(from_bits(h_in).reshape(T, C), xs[:, site % n])
    bf16_close(from_bits(out).reshape(T, n, C), xs + from_bits(y).reshape(T, 1, C), "x_out")


def test_site_plan_refuses_bad_shapes():
    with pytest.raises(ValueError, match="n = 2, 4 or 8"):
        SitePlan("mhc", 3, 64)
    with pytest.raises(ValueError, match="width C must be positive"):
        SitePlan("mhc", 4, 0)
    with pytest.raises(ValueError, match="mixing must be"):
        SitePlan("xyz", 4, 64)
    with pytest.raises(TypeError, match="C must be an integer, got float"):
        SitePlan("mhc", 4, 64.0)
    # numpy integers become Python ints (the torch launcher passes ints and
    # floats as scalars, anything else by address)
    plan = SitePlan("mhc", np.int64(4), np.int32(64))
    assert type(plan.n) is int and type(plan.C) is int


def test_grad_handoff_is_used_once_and_only_by_its_own_pass():
    """tile.mhc._GradHandoff (x's and h's gradients from post's backward to
    pre's; no torch needed): pre's backward takes post's buffers only when
    post's backward ran in the same backward pass (same graph task, h has a
    gradient), and only once; otherwise it starts from zeros (None here).
    h's gradient is handed over only when it is post's own buffer."""
    from tile.mhc import _GradHandoff

    h, gx, dh = _GradHandoff(), object(), object()
    assert h.take(1, dh) == (None, None)  # post's backward never ran
    h.give(gx, dh, 1)
    got = h.take(1, dh)
    assert got[0] is gx and got[1] is dh
    assert h.take(1, dh) == (None, None)  # used once: a retain_graph rerun's post gives a new one
    h.give(gx, dh, 1)
    assert h.take(2, dh) == (None, None)  # given in another pass (post ran, pre was not needed)...
    assert h.take(2, dh) == (None, None)  # ...and dropped, not kept for later
    h.give(gx, dh, 1)
    assert h.take(1, None) == (None, None)  # h has no gradient: post's backward was not in this pass
    h.give(gx, dh, 1)
    other = object()  # autograd summed h's gradient with another: pre must copy it
    got = h.take(1, other)
    assert got[0] is gx and got[1] is None
    assert h.gx is None and h.dh is None


def replay(pack, rec, arrays):
    """Run a tile.mhc._Recording on numpy arrays (slot i = arrays[i]) through
    the interpreter, its temporaries as views of one workspace: what the
    native LaunchSequence does with device addresses."""
    from tile.mhc import _Slot

    ws = np.full(max(rec.workspace_bytes, 1), 0xFF, np.uint8)  # NaN-filled f32 and bf16

    def resolve(a):
        if type(a) is not _Slot:
            return a
        if a.index < rec.workspace:
            assert a.offset == 0
            return arrays[a.index]
        assert a.index == rec.workspace and a.offset % rec.ALIGN == 0
        return ws[a.offset : a.offset + a.nbytes].view(np.uint16 if a.dtype == "bf16" else np.float32)

    for name, meta, warps, grid, args in rec.steps:
        pack[name](*[resolve(a) for a in args], grid=grid, warps=warps, **meta)


@pytest.mark.parametrize("mixing", ["mhc", "hc"])
def test_recorded_passes_give_the_bits_of_direct_launches(mhc_pack, mixing):
    """The torch site runs pre's forward and backward as recorded passes
    (tile.mhc._Recording, one native LaunchSequence each): replayed with the
    temporaries in one workspace and the parameter gradients written
    (accumulate=False), they give the bits of launching kernel by kernel."""
    from tile.mhc import _Recording

    n, C, T = 4, 64, 3
    plan, x, y, phi, a, b = problem(n, C, T, seed=21)
    if mixing == "hc":
        plan = SitePlan("hc", n, C)
        phi = phi[: plan.proj_rows * plan.proj_cols].copy()
    rng = np.random.default_rng(22)
    g_out = to_bits(rng.standard_normal(T * n * C))
    g_h = to_bits(rng.standard_normal(T * C))
    (h_in, z, r, h), (gx_post, _, dh_post), (gx, dh, grads) = forward_backward(
        mhc_pack, plan, x, y, phi, a, b, g_out, g_h, T
    )

    nan = lambda like: np.full_like(like, 0xFFFF if like.dtype == np.uint16 else np.nan)
    outs = [nan(v) for v in (h_in, z, r, h)]
    rec = _Recording(8, 4)
    plan.pre_into(rec, rec.alloc, rec.sms, *rec.args, T)
    replay(mhc_pack, rec, [x, phi, a, b, *outs])
    for got, want, what in zip(outs, (h_in, z, r, h), ("h_in", "z", "r", "h")):
        assert np.array_equal(got.view(np.uint32 if got.dtype == np.float32 else np.uint16),
                              want.view(np.uint32 if want.dtype == np.float32 else np.uint16)), what

    gx2, dh2 = gx_post.copy(), dh_post.copy()
    grads2 = [nan(g) for g in grads]
    rec = _Recording(13, 4)
    plan.pre_backward(rec, rec.alloc, rec.sms, *rec.args[:10], tuple(rec.args[10:]), T, accumulate=False)
    assert rec.workspace_bytes > 0
    replay(mhc_pack, rec, [x, phi, a, b, *outs[1:], g_h, gx2, dh2, *grads2])
    assert np.array_equal(gx2, gx)
    for got, want, what in zip((dh2, *grads2), (dh, *grads), ("dh", "dproj", "dalpha", "db")):
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), what


def test_recording_lays_temporaries_out_disjoint_and_aligned():
    from tile.mhc import _Recording

    rec = _Recording(2, 4)
    a, b, c = rec.alloc(3, "bf16", False), rec.alloc(100, "f32", False), rec.alloc(1, "f32", False)
    assert [s.index for s in (a, b, c)] == [2, 2, 2]
    assert (a.offset, a.nbytes, b.offset, b.nbytes, c.offset) == (0, 6, 256, 400, 768)
    assert rec.workspace_bytes == 772
    with pytest.raises(ValueError, match="zeroed memory"):
        rec.alloc(4, "f32", True)


def test_launch_sequence_checks_its_steps(mhc_pack):
    """The native LaunchSequence checks each step against its kernel's
    signature when built (on CPU-loaded kernels here; launching needs a GPU)."""
    from tile._tile import LaunchSequence

    k = mhc_pack["mhc_post"]._loaded({"N": 4, "BC": 256}, 1, None)
    ok = [(0, 0), (1, 0), (2, 0), (3, 16), 64]
    seq = LaunchSequence(4, [(k, (2, 1, 1), ok)])
    assert len(seq) == 1 and seq.slots == 4
    with pytest.raises(TypeError, match=r"takes 5 arguments \(x, y, h, xo, C\), got 4"):
        LaunchSequence(4, [(k, (2, 1, 1), ok[:4])])
    with pytest.raises(ValueError, match="argument `h`: slot 4 of 4"):
        LaunchSequence(4, [(k, (2, 1, 1), [(0, 0), (1, 0), (4, 0), (3, 0), 64])])
    with pytest.raises(ValueError, match="argument `xo`: offset 8 is not a multiple of 16"):
        LaunchSequence(4, [(k, (2, 1, 1), [(0, 0), (1, 0), (2, 0), (3, 8), 64])])
    with pytest.raises(TypeError, match=r"argument `x`: a pointer is a \(slot, byte offset\) pair"):
        LaunchSequence(4, [(k, (2, 1, 1), [7, (1, 0), (2, 0), (3, 0), 64])])
    with pytest.raises(TypeError, match="argument `C`"):
        LaunchSequence(4, [(k, (2, 1, 1), [(0, 0), (1, 0), (2, 0), (3, 0), 1.5])])
    with pytest.raises(ValueError, match="empty grid"):
        LaunchSequence(4, [(k, (0, 1, 1), ok)])
    with pytest.raises(ValueError, match="needs a step"):
        LaunchSequence(4, [])
    with pytest.raises(TypeError, match="4 address slots, got 3"):
        seq.launch([16, 32, 48], 0)
    with pytest.raises(ValueError, match="slot 1 is null"):
        seq.launch([16, 0, 48, 64], 0)
    with pytest.raises(ValueError, match="slot 3 plus offset 16 overflows"):
        seq.launch([16, 32, 48, 2**64 - 8], 0)
    with pytest.raises(tile.LaunchError, match="need a GPU device"):
        seq.launch([16, 32, 48, 64], 0)


def _mhc_plan():
    """The `mhc-plan` binary (the Rust layer's launches, printed by a dry
    run): $MHC_PLAN, else the newer of target/debug and target/release
    (`cargo test --workspace` in scripts/test builds the debug one)."""
    if os.environ.get("MHC_PLAN"):
        return Path(os.environ["MHC_PLAN"])
    found = [p for p in (ROOT / "target" / d / "mhc-plan" for d in ("debug", "release")) if p.exists()]
    if not found:
        pytest.fail("no mhc-plan binary: `cargo build -p mhc --bin mhc-plan` (or set MHC_PLAN)")
    return max(found, key=lambda p: p.stat().st_mtime)


def _rust_plan(mixing, n, C, T):
    out = subprocess.run(
        [str(_mhc_plan()), "--mixing", mixing, "--streams", str(n), "--width", str(C), "--tokens", str(T)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    sms = int(out[0].split()[1])
    phases, cur = {}, None
    for line in out[1:]:
        if line.startswith("# "):
            cur = phases.setdefault(line[2:], [])
            continue
        name, meta, warps, grid, args = line.split(" ")
        meta = {} if meta == "-" else {k: int(v) for k, v in (kv.split("=") for kv in meta.split(","))}
        cur.append(
            (name, meta, int(warps), tuple(map(int, grid.split(","))),
             [None if a == "*" else float(a) for a in args.split(",")])
        )
    return sms, phases


@pytest.mark.parametrize(
    "mixing,n,C,T",
    [("mhc", 4, 64, 3), ("mhc", 2, 96, 5), ("mhc", 8, 64, 2000), ("hc", 4, 80, 3), ("hc", 8, 1024, 1500)],
)
def test_site_plan_launches_what_the_rust_layer_launches(mixing, n, C, T):
    """tile.mhc.SitePlan mirrors mhc-kernels/mhc/src/layer.rs kernel for
    kernel: every launch of a site's forward and backward (kernel, meta-
    parameters, warps, grid, scalar arguments, which arguments are pointers)
    against the Rust layer's, printed by `mhc-plan` (a dry run). T = 2000
    and 1500 take the two-stage sums; C = 1024 the wide apply tiles."""
    from tile.mhc import _Recording, _Slot

    sms, want = _rust_plan(mixing, n, C, T)
    plan = SitePlan(mixing, n, C)
    rec = _Recording(0, sms)
    x, y, g_out, g_h, proj, alpha, b, gx, dy, dh = (_Slot(i) for i in range(10))
    grads = tuple(_Slot(10 + i) for i in range(3))
    got = {}

    def phase(name):
        got[name] = [
            (k, dict(meta), warps, tuple(grid), [None if type(a) is _Slot else float(np.float32(a)) for a in args])
            for k, meta, warps, grid, args in rec.steps
        ]
        rec.steps.clear()

    _, z, r, h = plan.pre(rec, rec.alloc, sms, x, proj, alpha, b, T)
    phase("pre")
    plan.post(rec, x, y, h, rec.alloc(T * n * C, "bf16", False), T)
    phase("post")
    plan.post_backward(rec, x, y, h, g_out, gx, dy, dh, T)
    phase("post_backward")
    plan.pre_backward(rec, rec.alloc, sms, x, proj, alpha, b, z, r, h, g_h, gx, dh, grads, T)
    phase("pre_backward")
    assert list(got) == list(want)
    for name in want:
        assert len(got[name]) == len(want[name]), f"{name}: {[s[0] for s in got[name]]} vs {[s[0] for s in want[name]]}"
        for i, (g, w) in enumerate(zip(got[name], want[name])):
            assert g == w, f"{name}, launch {i}: Python {g} vs Rust {w}"


def test_torch_launcher_records_a_pass_once_and_launches_it_in_one_call(mhc_pack, monkeypatch):
    """tile.mhc._TorchLauncher.run with stand-ins for torch and the native
    LaunchSequence (no GPU here): the pass is recorded and built once per
    key, each call launches it once with the tensors' addresses then a fresh
    workspace's, on the launcher's stream; the cache keeps at most
    MAX_SEQUENCES passes."""
    import types

    import tile.mhc as M

    built, launched = [], []

    class FakeSequence:
        def __init__(self, slots, steps):
            built.append((slots, steps))

        def launch(self, addresses, stream):
            launched.append((list(addresses), stream))

    class FakeTensor:
        _next = [4096]

        def __init__(self, nbytes):
            self.nbytes, self.ptr = nbytes, FakeTensor._next[0]
            FakeTensor._next[0] += (nbytes + 511) // 512 * 512 + 512

        def data_ptr(self):
            return self.ptr

    fake_torch = types.SimpleNamespace(uint8="uint8", empty=lambda n, dtype, device: FakeTensor(n))
    monkeypatch.setattr(M, "_NativeSequence", FakeSequence)
    monkeypatch.setattr(M, "torch", fake_torch)
    L = M._TorchLauncher.__new__(M._TorchLauncher)  # __init__ asks torch.cuda
    L.pack, L.device, L.ordinal, L.sms, L.stream = mhc_pack, "cuda:0", None, 4, 77
    L.kernels, L.sequences = {}, {}

    plan, T = SitePlan("mhc", 4, 64), 3
    tensors = [FakeTensor(64) for _ in range(8)]

    def record(R, x, proj, alpha, b, h_in, z, r, h):
        plan.pre_into(R, R.alloc, R.sms, x, proj, alpha, b, h_in, z, r, h, T)

    for _ in range(2):
        L.run(("pre", T), record, tensors)
    assert len(built) == 1 and len(launched) == 2
    slots, steps = built[0]
    assert slots == 9  # the 8 tensors and the workspace
    assert [k.name for k, _, _ in steps] == ["mhc_proj_split", "mhc_proj", "mhc_coeffs", "mhc_pre_apply"]
    for _, grid, args in steps:
        for a in args:
            if isinstance(a, tuple):
                slot, offset = a
                assert 0 <= slot < 9 and offset % 256 == 0 and (slot == 8 or offset == 0)
    for addresses, stream in launched:
        assert addresses[:8] == [t.ptr for t in tensors] and stream == 77
    assert launched[0][0][8] != launched[1][0][8], "each call has a fresh workspace"

    for t in range(L.MAX_SEQUENCES + 3):
        L.run(("pre", 100 + t), lambda R, *a, t=t: plan.pre_into(R, R.alloc, R.sms, *a, 100 + t), tensors)
    assert len(L.sequences) == L.MAX_SEQUENCES and ("pre", 100 + L.MAX_SEQUENCES + 2) in L.sequences
