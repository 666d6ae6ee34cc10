"""A small character-level GPT whose residual connections are mHC sites
(tile.mhc.MhcSite: the pack's kernels, forward and backward), trained for a
few hundred steps on a built-in text; prints the loss as it falls.

    python python/examples/torch_mhc_gpt.py [--steps 300] [--device cuda] [--n 4]
        [--width 128] [--layers 4] [--pack target/packs/mhc.tpack]

Each block has two sites (attention, MLP): `x = site(x, sublayer)` with the
streams x as bf16 [batch, seq, n, width]; the stack starts from n copies of
the embedding and ends with the mean over streams. `--device cpu` runs the
same model with an f32 PyTorch mHC site (mhc-spec.md's math, no kernels), for
comparison on a machine without a GPU. Exit status 1 when the loss does not fall.
"""

import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT = """\
It was the best of times, it was the worst of times, it was the age of wisdom,
it was the age of foolishness, it was the epoch of belief, it was the epoch of
incredulity, it was the season of Light, it was the season of Darkness, it was
the spring of hope, it was the winter of despair, we had everything before us,
we had nothing before us, we were all going direct to Heaven, we were all going
direct the other way - in short, the period was so far like the present period,
that some of its noisiest authorities insisted on its being received, for good
or for evil, in the superlative degree of comparison only.
"""


class TorchMhcSite(nn.Module):
    """mHC in plain PyTorch (f32 autograd; mhc-spec.md), for --device cpu."""

    def __init__(self, n, C, iters=20, eps=1e-6):
        super().__init__()
        self.n, self.C, self.iters, self.eps = n, C, iters, eps
        R = n * n + 2 * n
        self.proj = nn.Parameter(torch.randn(R, n * C) * 0.02)
        self.alpha = nn.Parameter(torch.full((3,), 0.01))
        b = torch.zeros(R)
        b[:n] = math.log((1 / n) / (1 - 1 / n))
        b[2 * n :].view(n, n).diagonal().fill_(4.0)
        self.b = nn.Parameter(b)

    def forward(self, x, sublayer):
        n = self.n
        xs = x.float()
        xf = xs.flatten(-2)
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
        z = (xf @ self.proj.T) * r
        a = torch.cat([self.alpha[0].expand(n), self.alpha[1].expand(n), self.alpha[2].expand(n * n)])
        m = z * a + self.b
        h_pre, h_post = torch.sigmoid(m[..., :n]), 2 * torch.sigmoid(m[..., n : 2 * n])
        logits = m[..., 2 * n :].unflatten(-1, (n, n))
        M = torch.exp(logits - logits.amax((-2, -1), keepdim=True))
        for _ in range(self.iters):
            M = M / (M.sum(-2, keepdim=True) + self.eps)
            M = M / (M.sum(-1, keepdim=True) + self.eps)
        h_in = (h_pre.unsqueeze(-1) * xs).sum(-2).to(x.dtype)
        y = sublayer(h_in).float()
        return (M @ xs + h_post.unsqueeze(-1) * y.unsqueeze(-2)).to(x.dtype)


class Block(nn.Module):
    def __init__(self, C, heads, make_site):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.fc, self.out = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.attn_site, self.mlp_site = make_site(), make_site()

    def attention(self, h):
        B, S, C = h.shape
        q, k, v = self.qkv(self.ln1(h.float())).split(C, -1)
        q, k, v = (t.view(B, S, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(o.transpose(1, 2).reshape(B, S, C)).to(h.dtype)

    def mlp(self, h):
        return self.out(F.gelu(self.fc(self.ln2(h.float())))).to(h.dtype)

    def forward(self, x):
        x = self.attn_site(x, self.attention)
        return self.mlp_site(x, self.mlp)


class GPT(nn.Module):
    def __init__(self, vocab, C, layers, heads, n, seq, make_site):
        super().__init__()
        self.n = n
        self.tok, self.pos = nn.Embedding(vocab, C), nn.Embedding(seq, C)
        self.blocks = nn.ModuleList(Block(C, heads, make_site) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(C), nn.Linear(C, vocab)

    def forward(self, idx):
        S = idx.shape[1]
        e = self.tok(idx) + self.pos(torch.arange(S, device=idx.device))
        # n copies of the embedding, bf16 and contiguous (the site's layout).
        x = e.unsqueeze(-2).expand(*e.shape[:-1], self.n, e.shape[-1]).to(torch.bfloat16).contiguous()
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x.float().mean(-2)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--pack", default=None, help="the mHC pack (default: tile.mhc.default_pack_path())")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    if dev.type == "cuda":
        import tile
        import tile.mhc

        pack = tile.Pack(args.pack or tile.mhc.default_pack_path())

        def make_site():
            return tile.mhc.MhcSite(args.n, args.width, pack=pack)

        kind = f"tile.mhc.MhcSite (pack {pack.path})"
    else:

        def make_site():
            return TorchMhcSite(args.n, args.width)

        kind = "PyTorch f32 mHC (no kernels)"

    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(c) for c in TEXT], device=dev)
    model = GPT(len(chars), args.width, args.layers, args.heads, args.n, args.seq, make_site).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    print(f"{sum(p.numel() for p in model.parameters())} parameters, {2 * args.layers} sites of {kind}, "
          f"n={args.n}, width={args.width}, device {dev}")
    losses = []
    t0 = time.time()
    for step in range(args.steps):
        ix = torch.randint(0, len(data) - args.seq - 1, (args.batch,), device=dev)
        xb = torch.stack([data[i : i + args.seq] for i in ix.tolist()])
        yb = torch.stack([data[i + 1 : i + 1 + args.seq] for i in ix.tolist()])
        loss = F.cross_entropy(model(xb).view(-1, len(chars)), yb.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}")
    k = max(1, min(20, len(losses) // 4))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    ok = math.isfinite(last) and last < 0.7 * first
    print(f"loss: first {k} steps {first:.4f}, last {k} steps {last:.4f} "
          f"({'falling' if ok else 'NOT falling'}), {time.time() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
