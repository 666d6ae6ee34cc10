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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", default="256,16384")
    ap.add_argument("--width", default="4096")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--pack", default=None)
    args = ap.parse_args(argv)
    pack = tile.Pack(args.pack or tile.mhc.default_pack_path())
    n = args.streams
    print(f"device: {torch.cuda.get_device_name()}, pack {pack.path}")
    print("| benchmark (Python, tile.mhc.MhcSite) | median µs (p20–p80, runs) |")
    print("|---|---|")
    for T in map(int, args.tokens.split(",")):
        for C in map(int, args.width.split(",")):
            site = tile.mhc.MhcSite(n, C, pack=pack).cuda()
            x = torch.randn(T, n, C, device="cuda").bfloat16().requires_grad_()
            y = torch.randn(T, C, device="cuda").bfloat16().requires_grad_()
            g_out = torch.randn(T, n, C, device="cuda").bfloat16()
            g_h = torch.randn(T, C, device="cuda").bfloat16()

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

            for name, f in (("layer forward", forward), ("layer forward+backward", forward_backward)):
                med, p20, p80, k = timed(f)
                print(f"| {name} T={T} C={C} | {med * 1e3:.1f} ({p20 * 1e3:.1f}–{p80 * 1e3:.1f}, {k}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
