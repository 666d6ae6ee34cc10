"""Time one mHC site called from Python (tile.mhc.MhcSite) with the protocol
of the Rust benchmarks (tile_runtime::bench::time, as mhc-bench uses it):
50 ms warm-up, then up to 20 runs within 1 s, each after zeroing a 128 MiB
buffer (L2 flush), CUDA events around the run, median and p20/p80.

    python python/tests/gpu/time_site.py [--tokens 256,16384] [--width 4096] [--streams 4]

Prints, per shape, "layer forward" (pre + post) and "layer forward+backward"
(pre, post, then the backward of both with x's, y's and the parameters'
gradients) in µs, the rows mhc-bench prints for the Rust path (run
`mhc-bench --tokens T --width C --streams n` for those; scripts/python-gpu.sh
runs both and prints them side by side). Not a test.

Beside them, where the host time goes (µs of CPU per call, from
time.perf_counter, the GPU left to run behind: batches of 20 calls, each
timed without synchronising and followed by one synchronize, median of 10
batches): `site.pre(x); site.post(y)` under no_grad and with autograd
recording (the forward of forward+backward), one `_TorchLauncher` call of
`mhc_post` (the launcher's key and argument list plus the native launch),
and the native `launch_raw` of the same kernel alone. A host time per call
near the GPU time means the Python calls, not the kernels, set the pace.

With --graph, each shape also times the same two calls captured once in a
CUDA graph (``torch.cuda.CUDAGraph``) and replayed ("... (CUDA graph)"):
what a PyTorch user who captures small steps gets, with the host's cost
per call gone. The site's launches go to torch's current stream (the
capture stream while capturing) and its workspaces come from torch's
allocator (the graph's pool), so the capture holds them as they run.
"""

import argparse
import sys
import time

import torch

import tile
import tile.mhc


def timed(f, warmup_ms=50.0, reps=20, budget_ms=1000.0):
    flush = torch.empty(128 << 20, dtype=torch.uint8, device="cuda")
    t0 = time.perf_counter()
    while True:
        f()
        torch.cuda.synchronize()
        if (time.perf_counter() - t0) * 1e3 >= warmup_ms:
            break
    times = []
    t1 = time.perf_counter()
    while len(times) < max(reps, 5):
        flush.zero_()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        f()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
        if len(times) >= 5 and (time.perf_counter() - t1) * 1e3 > budget_ms:
            break
    times.sort()
    q = lambda p: times[round((len(times) - 1) * p)]
    return q(0.5), q(0.2), q(0.8), len(times)


def host_us(f, batch=20, batches=10):
    """Median host µs per call of f over `batches` batches of `batch` calls,
    each batch timed without synchronising (the GPU runs behind; 20 calls
    keep the launch queue far from full), then synchronized untimed."""
    f()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(batch):
            f()
        per_call.append((time.perf_counter() - t0) / batch * 1e6)
        torch.cuda.synchronize()
    per_call.sort()
    return per_call[len(per_call) // 2]


def graphed(f, warmups=3):
    """``f`` captured in a CUDA graph (after ``warmups`` calls on a side
    stream, as torch asks before capturing autograd), as a function that
    replays it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmups):
            f()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        f()
    return g.replay


def site_calls(site, x, y, g_out, g_h):
    """The two calls both scripts time: a site's forward (`pre` then `post`,
    no autograd) and forward + backward (x's, y's and the parameters'
    gradients, cleared after each call)."""

    def forward():
        with torch.no_grad():
            site.pre(x)
            site.post(y)

    def forward_backward():
        h = site.pre(x)
        o = site.post(y)
        torch.autograd.backward([o, h], [g_out, g_h])
        x.grad = y.grad = None
        for p in site.parameters():
            p.grad = None

    return forward, forward_backward


def site_inputs(n, T, C, pack):
    """A fresh site and random bf16 inputs and output gradients on the GPU."""
    site = tile.mhc.MhcSite(n, C, pack=pack).cuda()
    x = torch.randn(T, n, C, device="cuda").bfloat16().requires_grad_()
    y = torch.randn(T, C, device="cuda").bfloat16().requires_grad_()
    g_out = torch.randn(T, n, C, device="cuda").bfloat16()
    g_h = torch.randn(T, C, device="cuda").bfloat16()
    return site, x, y, g_out, g_h


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="256,16384")
    ap.add_argument("--width", default="4096")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--pack", default=None)
    ap.add_argument("--graph", action="store_true", help="also time both calls replayed from a CUDA graph")
    args = ap.parse_args(argv)
    pack = tile.Pack(args.pack or tile.mhc.default_pack_path())
    n = args.streams
    print(f"device: {torch.cuda.get_device_name()}, pack {pack.path}")
    print("| benchmark (Python, tile.mhc.MhcSite) | median µs (p20–p80, runs) |")
    print("|---|---|")
    host = []
    for T in map(int, args.tokens.split(",")):
        for C in map(int, args.width.split(",")):
            site, x, y, g_out, g_h = site_inputs(n, T, C, pack)
            forward, forward_backward = site_calls(site, x, y, g_out, g_h)

            def forward_recorded():
                site.pre(x)
                site.post(y)

            # One kernel through the site's launcher and through launch_raw alone.
            with torch.no_grad():
                site.pre(x)
                _, h, _ = site._h
                site._h = None
            out = torch.empty_like(x)
            L = site._launcher(x.device)
            post_args = [x, y, h, out, C]
            meta, grid = {"N": n, "BC": 1024}, (T, -(-C // 1024), 1)

            def launcher_call():
                L("mhc_post", meta, 4, grid, post_args)

            launcher_call()
            native = next(k for key, k in L.kernels.items() if key[0] == "mhc_post")
            ptrs = [a if isinstance(a, int) else a.data_ptr() for a in post_args]

            def native_call():
                native.launch_raw(grid, ptrs, L.stream)

            calls = [("layer forward", forward), ("layer forward+backward", forward_backward)]
            if args.graph:
                calls += [(f"{name} (CUDA graph)", graphed(f)) for name, f in calls]
            for name, f in calls:
                med, p20, p80, k = timed(f)
                print(f"| {name} T={T} C={C} | {med * 1e3:.1f} ({p20 * 1e3:.1f}–{p80 * 1e3:.1f}, {k}) |")
            host.append(
                f"| T={T} C={C} | {host_us(forward):.1f} | "
                f"{host_us(forward_recorded):.1f} | {host_us(launcher_call):.1f} | {host_us(native_call):.1f} |"
            )
    print()
    print("Host µs per call (CPU time, the GPU running behind; see the module docstring):")
    print("| shape | pre+post, no_grad | pre+post, recorded | _TorchLauncher: mhc_post | launch_raw: mhc_post |")
    print("|---|---|---|---|---|")
    print("\n".join(host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
