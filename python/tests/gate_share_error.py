"""How far one token's share of dα and db, as the mHC pack's kernels compute
it, is from the float64 reference's (tests/mhc_reference.py): the measurement
behind the dα/db tolerance of gpu/test_mhc_gpu.py. Not a test (no GPU needed,
no torch): it runs tile.mhc.SitePlan at T = 1 token on the CPU interpreter,
where the summed dα and db are that token's share, and compares them against
central differences of the f64 reference's loss.

    TILEC=target/debug/tilec python python/tests/gate_share_error.py [--n 4,8] [--C 256] [--seeds 8]

Inputs as gpu/test_mhc_gpu.py's make_site and run_both make them: x, y, g_out,
g_h standard normal rounded to bf16, φ ~ N(0, 0.1²) (0.02 · 5), α = [0.7,
0.9, 1.1], b = init_bias + 0.5·N(0, 1) (numpy's generator, not torch's).
The reference's gradient holds Sinkhorn's shift max(R) constant, as the
kernels and mhc-spec.md's backward do (mhc_reference's stop_gradient;
FrozenShift here). Prints per (n, seed), each the largest over the gates or
coefficients:
  rel_a          |err dα_g| / |share|
  rel_terms_a    |err dα_g| / Σ_k |∂L/∂m_k · r z_k| over gate g's coefficients
                 (the share's terms: a share can cancel)
  rel_b          |err db_k| / |share| (shares not ~0)
  rel_groupmax_b |err db_k| / the largest |share| of k's gate (the Sinkhorn
                 backward's error of one entry follows the largest entry)
  rel_a_maxgrad  rel_a against a reference that differentiates the shift
  fd_noise       the central differences' own error (two steps apart)
The seeds run so far (n = 4 and 8, C = 256, seeds 0..63) and what the GPU
test's tolerance makes of them: the comment above GATE_TOL there.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mhc_reference as ref  # noqa: E402
import tile  # noqa: E402
from conftest import ROOT, _env  # noqa: E402
from tile.mhc import SitePlan  # noqa: E402
from test_mhc_cpu import from_bits, numpy_backend, to_bits  # noqa: E402


class FrozenShift(ref.Numpy):
    """stop_gradient for central differences: the shift of the first
    evaluation (the base point) in every later one."""

    def __init__(self):
        super().__init__()
        self.shift = None

    def stop_gradient(self, a):
        if self.shift is None:
            self.shift = a
        return self.shift


def measure(pack, n, C, seed):
    rng = np.random.default_rng(seed)
    plan = SitePlan("mhc", n, C)
    T, R, K = 1, plan.proj_rows, plan.proj_cols
    x = to_bits(rng.standard_normal(n * C))
    y = to_bits(rng.standard_normal(C))
    g_out = to_bits(rng.standard_normal(n * C))
    g_h = to_bits(rng.standard_normal(C))
    phi = (rng.standard_normal(R * K) * 0.1).astype(np.float32)
    a = np.array([0.7, 0.9, 1.1], np.float32)
    b = (plan.init_bias() + rng.standard_normal(plan.coeffs) * 0.5).astype(np.float32)

    L, alloc = numpy_backend(pack)
    h_in, z, r, h = plan.pre(L, alloc, 4, x, phi, a, b, T)
    gx, dy = alloc(n * C, "bf16", True), alloc(C, "bf16", True)
    dh = alloc(plan.coeffs, "f32", True)
    plan.post_backward(L, x, y, h, g_out, gx, dy, dh, T)
    grads = (alloc(phi.size, "f32", True), alloc(3, "f32", True), alloc(plan.coeffs, "f32", True))
    plan.pre_backward(L, alloc, 4, x, phi, a, b, z, r, h, g_h, gx, dh, grads, T)
    got_a, got_b = grads[1].astype(np.float64), grads[2].astype(np.float64)

    xs = from_bits(x).reshape(1, n, C)
    ys = from_bits(y).reshape(1, C)
    go, gh = from_bits(g_out).reshape(1, n, C), from_bits(g_h).reshape(1, C)
    ph = phi.astype(np.float64).reshape(R, K)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def fd_grads(xp, eps):
        def loss(alpha, bias):
            hi, out = ref.site(xp, xs, ys, ph, alpha, bias)
            return (go * out).sum() + (gh * hi).sum()

        loss(a64, b64)  # the base point first (FrozenShift records its shift)

        def fd(v, k, f):
            e = np.zeros_like(v)
            e[k] = eps
            return (f(v + e) - f(v - e)) / (2 * eps)

        ga = np.array([fd(a64, k, lambda v: loss(v, b64)) for k in range(3)])
        gb = np.array([fd(b64, k, lambda v: loss(a64, v)) for k in range(plan.coeffs)])
        return ga, gb

    # The reference's gradient with Sinkhorn's shift max(R) held (the
    # spec's and the kernels' backward; mhc_reference's stop_gradient), by
    # central differences at two steps: their difference bounds the
    # reference's own error (printed as fd_noise), far below the kernels'.
    want_a, want_b = fd_grads(FrozenShift(), 1e-6)
    fd_a2, fd_b2 = fd_grads(FrozenShift(), 1e-5)
    fd_noise = max(
        np.abs(want_a - fd_a2).max() / np.abs(want_a).max(), np.abs(want_b - fd_b2).max() / np.abs(want_b).max()
    )
    # And with the shift differentiated (plain numpy): what the reference
    # gave before stop_gradient, for comparison (rel_a_maxgrad).
    old_a, _ = fd_grads(ref.Numpy(), 1e-6)

    # ∂L/∂m_k = ∂L/∂b_k (m = r z α + b); r z in f64 for the terms of dα.
    xf = xs.reshape(1, n * C)
    rz = (xf @ ph.T) / np.sqrt((xf * xf).sum() / (n * C) + 1e-6)
    groups = [slice(0, n), slice(n, 2 * n), slice(2 * n, plan.coeffs)]
    terms_a = np.array([np.abs(want_b[g] * rz[0, g]).sum() for g in groups])
    np.seterr(divide="ignore", invalid="ignore")
    err_a = np.abs(got_a - want_a)
    err_b = np.abs(got_b - want_b)
    group_max_b = np.concatenate([np.full(g.stop - g.start, np.abs(want_b[g]).max()) for g in groups])
    return {
        "share_a": want_a,
        "rel_a": err_a / np.abs(want_a),
        "rel_terms_a": err_a / terms_a,
        # db per coefficient, where its share is not ~0 (entries of M⁰
        # that underflow have shares of 0 on both sides)
        "rel_b": (err_b / np.abs(want_b))[np.abs(want_b) > 1e-6 * group_max_b],
        "rel_groupmax_b": err_b / group_max_b,
        "rel_a_maxgrad": np.abs(got_a - old_a) / np.abs(old_a),
        "fd_noise": fd_noise,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="4,8")
    ap.add_argument("--C", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args(argv)
    import os

    tilec = os.environ.get("TILEC") or str(ROOT / "target" / "debug" / "tilec")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "mhc.tpack"
        subprocess.run(
            [tilec, "pack", str(ROOT / "mhc-kernels/kernels/mhc"), "-o", str(out), "--arch", "sm_80", "--quiet"],
            check=True,
            env=_env(),
        )
        pack = tile.Pack(out)
        for n in map(int, args.n.split(",")):
            worst = {}
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                m = measure(pack, n, args.C, seed)
                row = {k: float(np.max(v)) for k, v in m.items() if k != "share_a"}
                for k, v in row.items():
                    worst[k] = max(worst.get(k, 0.0), v)
                print(
                    f"n={n} C={args.C} seed={seed}: dα shares {np.array2string(m['share_a'], precision=4)}; "
                    + ", ".join(f"{k} {v:.2e}" for k, v in row.items()),
                    flush=True,
                )
            print(f"n={n} C={args.C} worst over {args.seeds} seeds: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()), flush=True)


if __name__ == "__main__":
    main()
