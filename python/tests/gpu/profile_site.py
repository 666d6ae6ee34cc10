"""Where the GPU time of one mHC site called from Python goes: every CUDA
kernel (ours and torch's) of `site.pre(x); site.post(y)` and of forward +
backward (time_site.py's protocol), under torch.profiler, summed by name.

    python python/tests/gpu/profile_site.py [--tokens 16384] [--width 4096] [--streams 4]

Prints one table per shape and pass: kernel, launches per call, µs per call.
Torch's own kernels (fills, copies, casts) beside the pack's are what the
Python path adds to the Rust one. Not a test.
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
