"""The mHC site of /work/shared/mhc-spec.md in float64, written from the spec
alone (not from the kernels), over numpy or torch (torch: autograd gives the
backward the GPU tests compare against).

    h_in, x_out = site(xp, x, y, phi, alpha, b, iters=20, eps=1e-6)

x [T, n, C], y [T, C], phi [n²+2n, n·C] (rows: pre n, post n, res n²),
alpha [3], b [n²+2n]; every array float64.
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



def coefficients(xp, x, phi, alpha, b, iters=20, eps=1e-6):
    """(H_pre [T, n], H_post [T, n], H_res [T, n, n]) of every token."""
    T, n, C = x.shape
    xf = x.reshape(T, n * C)
    s = xp.sum(xf * xf, 1)  # [T, 1]
    z = xf @ phi.T  # [T, n²+2n]
    r = 1.0 / xp.sqrt(s / (n * C) + 1e-6)
    rz = r * z
    m_pre = rz[:, :n] * alpha[0] + b[:n]
    m_post = rz[:, n : 2 * n] * alpha[1] + b[n : 2 * n]
    m_res = rz[:, 2 * n :] * alpha[2] + b[2 * n :]
    sig = lambda v: 1.0 / (1.0 + xp.exp(-v))
    h_pre = sig(m_pre)
    h_post = 2.0 * sig(m_post)
    logits = m_res.reshape(T, n, n)
    M = xp.exp(logits - xp.amax(xp.amax(logits, 2), 1))
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
