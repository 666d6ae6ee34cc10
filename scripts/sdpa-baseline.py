# Baseline for tile-bench's attention rows: PyTorch's scaled_dot_product_attention
# (bf16, the backend PyTorch picks), forward and forward + backward (autograd:
# out.backward(grad) with q, k, v requiring grad, timed together), causal
# (is_causal=True) and not, on the shapes tile-bench uses. Run on the GPU machine:
#   python3 scripts/sdpa-baseline.py > sdpa.md; tile-bench ... --sdpa sdpa.md
# Row names are `SDPA <label>`, the label as tile-bench's `attention <label>`
# (Attn::label in dsl-examples/src/bin/tile-bench.rs), which it matches exactly.
#
# FLOPs, FlashAttention's convention (tile-bench counts the same): the forward is
# 4·B·H·S²·D (the two matmuls Q·Kᵀ and P·V, 2·S²·D each per head), halved when
# causal; the backward is 2.5 × the forward (five matmuls of S²·D instead of
# two), so forward + backward = 3.5 × the forward.
import torch, torch.nn.functional as F
from triton.testing import do_bench

# (batch, heads, seq, head dim): 32 heads × 4096 × {64, 128}, and the trainer's.
SHAPES = [(1, 32, 4096, 64), (1, 32, 4096, 128), (8, 12, 1024, 64)]


def label(backward, causal, b, h, s, d):
    return f"{'fwd+bwd' if backward else 'fwd'}{' causal' if causal else ''} {b}×{h}h×{s}×{d} bf16"


def flops(backward, causal, b, h, s, d):
    fwd = 4 * b * h * s * s * d / (2 if causal else 1)
    return 3.5 * fwd if backward else fwd


def row(backward, causal, shape, ms):
    tflops = flops(backward, causal, *shape) / ms / 1e9
    print(f"| SDPA {label(backward, causal, *shape)} | {ms:.3f} | {tflops:.0f} |", flush=True)


torch.manual_seed(0)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print("| benchmark | median ms | TFLOP/s |")
print("|---|---|---|")
for shape in SHAPES:
    q, k, v, grad = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for causal in (False, True):
        ms = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                      warmup=100, rep=1000, return_mode="median")
        row(False, causal, shape, ms)
        qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))

        def step():
            F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal).backward(grad)

        # grad_to_none: the gradients are reset between runs, not accumulated.
        ms = do_bench(step, warmup=100, rep=1000, grad_to_none=[qg, kg, vg], return_mode="median")
        row(True, causal, shape, ms)
