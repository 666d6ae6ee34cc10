"""The mHC site of /work/shared/mhc-spec.md in float64, written from the spec
alone (not from the kernels), over numpy or torch (torch: autograd gives the
backward the GPU tests compare against).

    h_in, x_out = site(xp, x, y, phi, alpha, b, iters=20, eps=1e-6)

x [T, n, C], y [T, C], phi [n²+2n, n·C] (rows: pre n, post n, res n²),
alpha [3], b [n²+2n]; every array float64. alpha may also be [3, T, 1] and b
[T, n²+2n] (one copy per token): their gradients are then each token's share
of dα and db, whose sums over tokens are dα and db.

The shift of Sinkhorn's exponent, max(R), is a constant of the backward
(``stop_gradient``: torch's autograd does not differentiate it), as in
mhc-spec.md's backward (dR = dM⁰ ⊙ M⁰) and the kernels. It is not a no-op
for the gradient: the 1e-6 added to each sum breaks the scale invariance, so
differentiating the max would add -Σ_k dR_k to the arg-max logit's gradient.
On tokens whose logits spread over tens of units (columns of M⁰ summing to
~1e-4) that moved a token's share of dα_res by up to 13% at n = 8
(gate_share_error.py, rel_a_maxgrad; numpy has no gradient: central
differences there hold the shift as its FrozenShift backend does).
"""


class Numpy:
    def __init__(self):
        import numpy as np

        self.np = np

    def sum(self, a, axis):
        return self.np.sum(a, axis=axis, keepdims=True)

    def amax(self, a, axis):
        return self.np.max(a, axis=axis, keepdims=True)

    def exp(self, a):
        return self.np.exp(a)

    def sqrt(self, a):
        return self.np.sqrt(a)

    def stop_gradient(self, a):
        return a


class Torch:
    def __init__(self):
        import torch

        self.torch = torch

    def sum(self, a, axis):
        return self.torch.sum(a, dim=axis, keepdim=True)

    def amax(self, a, axis):
        return self.torch.amax(a, dim=axis, keepdim=True)

    def exp(self, a):
        return self.torch.exp(a)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def stop_gradient(self, a):
        return a.detach()


def coefficients(xp, x, phi, alpha, b, iters=20, eps=1e-6):
    """(H_pre [T, n], H_post [T, n], H_res [T, n, n]) of every token."""
    T, n, C = x.shape
    xf = x.reshape(T, n * C)
    s = xp.sum(xf * xf, 1)  # [T, 1]
    z = xf @ phi.T  # [T, n²+2n]
    r = 1.0 / xp.sqrt(s / (n * C) + 1e-6)
    rz = r * z
    m_pre = rz[:, :n] * alpha[0] + b[..., :n]
    m_post = rz[:, n : 2 * n] * alpha[1] + b[..., n : 2 * n]
    m_res = rz[:, 2 * n :] * alpha[2] + b[..., 2 * n :]
    sig = lambda v: 1.0 / (1.0 + xp.exp(-v))
    h_pre = sig(m_pre)
    h_post = 2.0 * sig(m_post)
    logits = m_res.reshape(T, n, n)
    M = xp.exp(logits - xp.stop_gradient(xp.amax(xp.amax(logits, 2), 1)))
    for _ in range(iters):
        M = M / (xp.sum(M, 1) + eps)  # each column by its sum
        M = M / (xp.sum(M, 2) + eps)  # then each row
    return h_pre, h_post, M


def site(xp, x, y, phi, alpha, b, iters=20, eps=1e-6):
    """(h_in [T, C], x_out [T, n, C])."""
    h_pre, h_post, h_res = coefficients(xp, x, phi, alpha, b, iters, eps)
    h_in = (h_pre[:, :, None] * x).sum(1)
    x_out = h_res @ x + h_post[:, :, None] * y[:, None, :]
    return h_in, x_out
