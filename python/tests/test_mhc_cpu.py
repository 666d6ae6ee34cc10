"""tile.mhc's kernel plan (SitePlan, the sequence MhcSite/HcSite launch on a
GPU) on numpy arrays on the CPU interpreter, against the float64 reference of
mhc-spec.md (tests/mhc_reference.py): the kernels' names, meta-parameters,
grids and argument order are those the GPU runs. No torch needed."""

import subprocess

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
    L, alloc = numpy_backend(mhc_pack)
    h_in, z, r, h = plan.pre(L, alloc, 4, x, phi, a, b, T)
    gx, dy = alloc(T * n * C, "bf16", True), alloc(T * C, "bf16", True)
    dh = alloc(T * plan.coeffs, "f32", True)
    plan.post_backward(L, x, y, h, g_out, gx, dy, dh, T)
    grads = (alloc(phi.size, "f32", True), alloc(3, "f32", True), alloc(plan.coeffs, "f32", True))
    plan.pre_backward(L, alloc, 4, x, phi, a, b, z, r, h, g_h, gx, dh, grads, T)

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
    """tile.mhc._GradHandoff (x's gradient from post's backward to pre's; no
    torch needed): pre's backward takes post's buffer only when post's
    backward ran in the same backward pass (same graph task, h has a
    gradient), and only once; otherwise it starts from zeros (None here)."""
    from tile.mhc import _GradHandoff

    h, gx = _GradHandoff(), object()
    assert h.take(1, True) is None  # post's backward never ran
    h.give(gx, 1)
    assert h.take(1, True) is gx
    assert h.take(1, True) is None  # used once: a retain_graph rerun's post gives a new one
    h.give(gx, 1)
    assert h.take(2, True) is None  # given in another pass (post ran, pre was not needed)...
    assert h.take(2, True) is None  # ...and dropped, not kept for later
    h.give(gx, 1)
    assert h.take(1, False) is None  # h has no gradient: post's backward was not in this pass
    assert h.gx is None
    h.give(gx, None)
    assert h.take(None, True) is gx  # a torch without graph task ids: h's gradient decides
