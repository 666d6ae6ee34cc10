# Baseline for the attention benchmark: PyTorch's scaled_dot_product_attention
# (bf16, not causal) on the shapes tile-bench uses. Run on the GPU machine:
#   python3 scripts/sdpa-baseline.py
import torch, torch.nn.functional as F
from triton.testing import do_bench
heads, seq = 32, 4096
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print("| benchmark | median ms | TFLOP/s |")
print("|---|---|---|")
for d in (64, 128):
    q, k, v = (torch.randn(1, heads, seq, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ms = do_bench(lambda: F.scaled_dot_product_attention(q, k, v), warmup=100, rep=1000, return_mode="median")
    print(f"| SDPA {heads}h×{seq}×{d} bf16 | {ms:.3f} | {4 * heads * seq * seq * d / ms / 1e9:.0f} |")
