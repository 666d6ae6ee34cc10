"""Where the GPU time of one mHC site called from Python goes: every CUDA
kernel (ours and torch's) of `site.pre(x); site.post(y)` and of forward +
backward (time_site.py's protocol), under torch.profiler, summed by name.

    python python/tests/gpu/profile_site.py [--tokens 16384] [--width 4096] [--streams 4]

Prints one table per shape and pass: kernel, launches per call, µs per call.
Torch's own kernels (fills, copies, casts) beside the pack's are what the
Python path adds to the Rust one. Then where the host time of forward +
backward goes (`host_split`): the bodies of the site's autograd functions
and the native launches inside them, timed with perf_counter on whichever
thread runs them (autograd runs a backward on its own thread, which
cProfile does not see), beside torch's own floor for a graph of the same
shape whose functions launch nothing. Not a test.
"""

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import tile
import tile.mhc
from time_site import site_calls, site_inputs  # this script's folder is on sys.path


def kernel_table(f, calls=5):
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            f()
        torch.cuda.synchronize()
    rows = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            r = rows[e.name]
            r[0] += 1
            r[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    out = sorted(rows.items(), key=lambda kv: -kv[1][1])
    return [(name[:90], n / calls, us / calls) for name, (n, us) in out]


def host_loop(f, calls, before=None):
    """Host µs per call of f: three warm-up calls, then `calls` timed (the
    GPU left to run behind, synchronized every 20); `before` runs first."""
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    if before is not None:
        before()
    t0 = time.perf_counter()
    for i in range(calls):
        f()
        if i % 20 == 19:
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def host_split(site, x, y, g_out, g_h, calls=200):
    """Host µs per forward + backward call: the whole call, each autograd
    function's body, the native launches within them, and the same call
    through do-nothing functions of the same graph shape (torch's floor)."""
    mhc = tile.mhc
    spent = defaultdict(float)

    def timed(label, f):
        def g(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0

        return g

    patched = [
        (mhc._PreFn, "forward"), (mhc._PreFn, "backward"),
        (mhc._PostFn, "forward"), (mhc._PostFn, "backward"),
    ]
    saved = [(cls, name, cls.__dict__[name]) for cls, name in patched]
    saved_launch = (mhc._TorchLauncher.__call__, mhc._TorchLauncher.run)
    for cls, name, sm in saved:
        setattr(cls, name, staticmethod(timed(f"{cls.__name__}.{name}", sm.__func__)))
    mhc._TorchLauncher.__call__ = timed("native: one kernel (launcher call)", saved_launch[0])
    mhc._TorchLauncher.run = timed("native: a recorded pass (launcher run)", saved_launch[1])

    _, fwd_bwd = site_calls(site, x, y, g_out, g_h)
    try:
        whole = host_loop(fwd_bwd, calls, before=spent.clear)
    finally:
        for cls, name, sm in saved:
            setattr(cls, name, sm)
        mhc._TorchLauncher.__call__, mhc._TorchLauncher.run = saved_launch

    # torch's floor: two Functions of the site's inputs and outputs whose
    # bodies only allocate what ours return.
    T, C = y.shape[0], y.shape[-1]
    params = list(site.parameters())

    class Pre0(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *ps):
            ctx.save_for_backward(x, *ps)
            return torch.empty(T, C, dtype=torch.bfloat16, device=x.device), torch.empty(
                T, site.plan.coeffs, dtype=torch.float32, device=x.device
            )

        @staticmethod
        def backward(ctx, g1, g2):
            return tuple(torch.empty_like(t) for t in ctx.saved_tensors)

    class Post0(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, h):
            ctx.save_for_backward(x, y, h)
            return torch.empty_like(x)

        @staticmethod
        def backward(ctx, g):
            x, y, h = ctx.saved_tensors
            return torch.empty_like(x), torch.empty_like(y), torch.empty_like(h)

    def floor():
        h_in, h = Pre0.apply(x, *params)
        o = Post0.apply(x, y, h)
        torch.autograd.backward([o, h_in], [g_out, g_h])
        x.grad = y.grad = None
        for p in params:
            p.grad = None

    floor_us = host_loop(floor, calls)
    rows = [("the whole call (site.pre, site.post, autograd.backward, grads cleared)", whole)]
    rows += sorted(((k, v / calls * 1e6) for k, v in spent.items()), key=lambda kv: -kv[1])
    rows.append(("torch's floor: the same graph, functions that launch nothing", floor_us))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="16384")
    ap.add_argument("--width", default="4096")
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args(argv)
    pack = tile.Pack(tile.mhc.default_pack_path())
    n = args.streams
    for T in map(int, args.tokens.split(",")):
        for C in map(int, args.width.split(",")):
            forward, forward_backward = site_calls(*site_inputs(n, T, C, pack))

            for label, f in (("forward", forward), ("forward+backward", forward_backward)):
                # Host: where the CPU time of a call goes (cProfile, the GPU
                # left to run behind, synchronized every 20 calls).
                f()
                torch.cuda.synchronize()
                pr = cProfile.Profile()
                t0 = time.perf_counter()
                pr.enable()
                for i in range(200):
                    f()
                    if i % 20 == 19:
                        torch.cuda.synchronize()
                pr.disable()
                wall = (time.perf_counter() - t0) / 200 * 1e6
                buf = io.StringIO()
                pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
                print(f"\nhost {label} T={T} C={C}: {wall:.1f} µs a call under cProfile")
                print("\n".join(l for l in buf.getvalue().splitlines() if l.strip())[:4000])
                rows = kernel_table(f)
                total = sum(us for _, _, us in rows)
                print(f"\n{label} T={T} C={C} n={n}: {total:.1f} µs of kernels a call")
                print("| kernel | launches | µs |")
                print("|---|---|---|")
                for name, k, us in rows:
                    print(f"| {name} | {k:g} | {us:.1f} |")
            print(f"\nhost µs a forward+backward call, T={T} C={C} n={n} (bodies include the native calls in them):")
            print("| part | µs |")
            print("|---|---|")
            for name, us in host_split(*site_inputs(n, T, C, pack)):
                print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
