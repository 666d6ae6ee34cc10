#!/usr/bin/env python3
"""Triton's compile time for the kernels issue 30 compares against, on this
machine (no GPU needed: Triton compiles for an sm_90 target it is told of).

Each kernel is written as dsl-examples writes it (bf16 in and out, f32
accumulation, the same masks) and compiled at the configuration given,
in process after `import triton`, with an empty cache every time; the time
of ptxas on the resulting PTX (Triton's last step, which tilec leaves to the
driver) is measured apart and subtracted, so "to PTX" is comparable with
`tilec build --emit ptx`. Best of --runs.

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install triton==3.6.0
    /tmp/tvenv/bin/python scripts/triton-compile-times.py [--runs 3]

Prints a Markdown table: kernel, configuration, whole compile, ptxas, to PTX.
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


@triton.jit
def matmul(a, b, c, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    grid_n = tl.cdiv(N, BN)
    rm = (pid // grid_n) * BM + tl.arange(0, BM)
    rn = (pid % grid_n) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        ka = k0 + rk
        at = tl.load(a + rm[:, None] * K + ka[None, :], mask=(rm[:, None] < M) & (ka[None, :] < K), other=0.0)
        bt = tl.load(b + ka[:, None] * N + rn[None, :], mask=(ka[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(at, bt, acc)
    tl.store(c + rm[:, None] * N + rn[None, :], acc.to(tl.bfloat16), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def attention(q, k, v, o, seq, scale, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
    # One (head, row block) a program; q, k, v, o are [heads, seq, D].
    pm = tl.program_id(0)
    head = tl.program_id(1)
    base = head * seq * D
    rows = pm * BM + tl.arange(0, BM)
    d = tl.arange(0, D)
    qt = tl.load(q + base + rows[:, None] * D + d[None, :], mask=rows[:, None] < seq, other=0.0)
    m = tl.full([BM], float("-inf"), tl.float32)
    l = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    for n0 in range(0, seq, BN):
        cols = n0 + tl.arange(0, BN)
        kt = tl.load(k + base + cols[:, None] * D + d[None, :], mask=cols[:, None] < seq, other=0.0)
        s = tl.dot(qt, tl.trans(kt)) * scale
        s = tl.where(cols[None, :] < seq, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        vt = tl.load(v + base + cols[:, None] * D + d[None, :], mask=cols[:, None] < seq, other=0.0)
        acc = tl.dot(p.to(tl.bfloat16), vt, acc * alpha[:, None])
        m = m_new
    tl.store(o + base + rows[:, None] * D + d[None, :], (acc / l[:, None]).to(tl.bfloat16), mask=rows[:, None] < seq)


@triton.jit
def rmsnorm(x, w, y, C, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < C
    xv = tl.load(x + row * C + offs, mask=m, other=0.0).to(tl.float32)
    r = tl.rsqrt(tl.sum(xv * xv, 0) / C + eps)
    wv = tl.load(w + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(y + row * C + offs, (xv * r * wv).to(tl.bfloat16), mask=m)


@triton.jit
def softmax(x, y, C, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    m = offs < C
    xv = tl.load(x + row * C + offs, mask=m, other=float("-inf")).to(tl.float32)
    e = tl.exp(xv - tl.max(xv, 0))
    tl.store(y + row * C + offs, (e / tl.sum(e, 0)).to(tl.bfloat16), mask=m)


P = "*bf16"
CASES = [
    # kernel, signature, constexprs, warps, stages, label
    (rmsnorm, {"x": P, "w": P, "y": P, "C": "i32", "eps": "fp32"}, {"BLOCK": 4096}, 16, 1, "rmsnorm BLOCK=4096, 16 warps"),
    (softmax, {"x": P, "y": P, "C": "i32"}, {"BLOCK": 4096}, 8, 1, "softmax BLOCK=4096, 8 warps"),
    (matmul, {"a": P, "b": P, "c": P, "M": "i32", "N": "i32", "K": "i32"}, {"BM": 128, "BN": 256, "BK": 64}, 8, 3, "matmul 128×256×64, 8 warps"),
    (matmul, {"a": P, "b": P, "c": P, "M": "i32", "N": "i32", "K": "i32"}, {"BM": 64, "BN": 256, "BK": 64}, 4, 3, "matmul 64×256×64, 4 warps"),
    (attention, {"q": P, "k": P, "v": P, "o": P, "seq": "i32", "scale": "fp32"}, {"BM": 128, "BN": 64, "D": 64}, 4, 2, "attention 128×64, D=64, 4 warps"),
    (attention, {"q": P, "k": P, "v": P, "o": P, "seq": "i32", "scale": "fp32"}, {"BM": 128, "BN": 64, "D": 128}, 4, 2, "attention 128×64, D=128, 4 warps"),
]


def ptxas_seconds(ptx):
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        t = time.perf_counter()
        subprocess.run([ptxas, "-arch=sm_90a", src, "-o", os.path.join(d, "k.cubin")], check=True)
        return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    target = GPUTarget("cuda", 90, 32)
    print("| kernel, configuration | Triton compile (to cubin) | of it ptxas | Triton to PTX |")
    print("|---|---|---|---|")
    for fn, sig, consts, warps, stages, label in CASES:
        best = None
        for _ in range(args.runs):
            cache = tempfile.mkdtemp()
            os.environ["TRITON_CACHE_DIR"] = cache
            src = ASTSource(fn, {**sig, **{k: "constexpr" for k in consts}}, constexprs=consts)
            t = time.perf_counter()
            kernel = triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})
            total = time.perf_counter() - t
            shutil.rmtree(cache, ignore_errors=True)
            px = ptxas_seconds(kernel.asm["ptx"])
            if best is None or total < best[0]:
                best = (total, px)
        total, px = best
        print(f"| {label} | {total:.3f} s | {px:.3f} s | {total - px:.3f} s |", flush=True)


if __name__ == "__main__":
    main()
