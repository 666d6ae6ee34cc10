#!/usr/bin/env python3
"""The reference trainer's ceiling: the same GPT in PyTorch, as a PyTorch user
would train it (bf16 autocast, scaled_dot_product_attention, fused AdamW),
timed on random bytes. docs/TRAINER.md and docs/BENCHMARKS.md put
`mhc-train --residual plain` beside it, from the same machine session.

The model is mhc-train's plain GPT: byte vocabulary (256), learned position
embeddings, pre-norm RMSNorm blocks (attention with a fused qkv projection,
a GELU-tanh MLP of 4× the width), a final RMSNorm and an untied head, no
biases. Prints one Markdown row per mode: median tokens/s of the steady steps
(the first `--warmup` steps excluded) and the peak device memory.

  python3 scripts/torch-trainer-baseline.py [--batch 8] [--steps 30] [--compile]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.RMSNorm(c)
        self.wqkv = nn.Linear(c, 3 * c, bias=False)
        self.wo = nn.Linear(c, c, bias=False)
        self.norm2 = nn.RMSNorm(c)
        self.w1 = nn.Linear(c, 4 * c, bias=False)
        self.w2 = nn.Linear(4 * c, c, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.wqkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(o.transpose(1, 2).reshape(b, t, c))
        return x + self.w2(F.gelu(self.w1(self.norm2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, layers, c, heads, context, vocab=256):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(context, c)
        self.blocks = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(c)
        self.head = nn.Linear(c, vocab, bias=False)

    def forward(self, tokens, targets):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1], device=tokens.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def run(args, compile_):
    torch.manual_seed(0)
    dev = "cuda"
    model = Gpt(args.layers, args.width, args.heads, args.context).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    step_fn = torch.compile(model) if compile_ else model
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps):
        data = torch.randint(0, 256, (args.batch, args.context + 1), device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(data[:, :-1], data[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    tokens = args.batch * args.context
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 1e9
    name = "torch.compile" if compile_ else "eager"
    print(f"| PyTorch {name} (plain) | {args.batch} | {tokens / med:,.0f} | {med * 1e3:.1f} ms | {peak:.1f} GB | loss {loss.item():.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time the model under torch.compile")
    args = p.parse_args()
    print("| trainer | batch | tokens/s (median) | step | peak memory | last loss |")
    print("|---|---|---|---|---|---|")
    run(args, False)
    if args.compile:
        run(args, True)


if __name__ == "__main__":
    main()
