"""The GPU (torch) path's checks, with a stand-in for torch: no torch and no
GPU here, so this covers only what happens before a launch (argument checks)
and the refusal without a GPU. The launch itself is tested on a GPU by
python/tests/gpu/ (docs/PYTHON.md)."""

import sys
import types

import numpy as np
import pytest

import tile


class FakeDevice:
    def __init__(self, type_, index):
        self.type, self.index = type_, index

    def __eq__(self, other):
        return (self.type, self.index) == (other.type, other.index)

    def __repr__(self):
        return f"{self.type}:{self.index}"


class FakeTensor:
    """Just what tile's torch path touches, over a numpy array."""

    def __init__(self, arr, is_cuda=True, dtype=None, index=0):
        self.arr, self.is_cuda = arr, is_cuda
        self.dtype = dtype or f"torch.{arr.dtype.name}"
        self.device = FakeDevice("cuda" if is_cuda else "cpu", index if is_cuda else None)

    def is_contiguous(self):
        return self.arr.flags.c_contiguous

    def detach(self):
        return self

    def reshape(self, *shape):
        return FakeTensor(self.arr.reshape(*shape), self.is_cuda, self.dtype)

    def view(self, dtype):
        assert dtype == "torch.uint8"
        return FakeTensor(self.arr.view(np.uint8), self.is_cuda, dtype)

    def cpu(self):
        return FakeTensor(self.arr, False, self.dtype)

    def numpy(self):
        return self.arr

    def data_ptr(self):
        return self.arr.ctypes.data

    @property
    def nbytes(self):
        return self.arr.nbytes

    def __getitem__(self, k):
        return FakeTensor(self.arr[k], self.is_cuda, self.dtype)


@pytest.fixture
def torch(monkeypatch):
    t = types.ModuleType("torch")
    t.Tensor = FakeTensor
    for name in ("float32", "int32", "int64", "float16", "bfloat16", "uint8"):
        setattr(t, name, f"torch.{name}")
    t.cuda = types.SimpleNamespace(
        current_device=lambda: 0,
        current_stream=lambda device=None: types.SimpleNamespace(cuda_stream=0),
    )
    monkeypatch.setitem(sys.modules, "torch", t)
    return t


def cuda(n=100, dtype=np.float32):
    return FakeTensor(np.zeros(n, dtype))


def test_torch_argument_checks(pack, torch):
    k = pack["vector_add"]
    with pytest.raises(TypeError, match=r"argument `a` is a CPU tensor"):
        k(FakeTensor(np.zeros(100, np.float32), is_cuda=False), cuda(), cuda(), 100, grid=1)
    with pytest.raises(TypeError, match=r"argument `b` must be a torch CUDA tensor like the others, got ndarray"):
        k(cuda(), np.zeros(100, np.float32), cuda(), 100, grid=1)
    with pytest.raises(TypeError, match=r"argument `c` must be a torch.float32 tensor, got torch.int32"):
        k(cuda(), cuda(), cuda(dtype=np.int32), 100, grid=1)
    with pytest.raises(ValueError, match=r"argument `a` is not contiguous"):
        k(cuda(200)[::2], cuda(), cuda(), 100, grid=1)
    with pytest.raises(TypeError, match=r"takes 4 arguments"):
        k(cuda(), cuda(), 100, grid=1)
    with pytest.raises(ValueError, match=r"`grid` x is 0"):
        k(cuda(), cuda(), cuda(), 100, grid=0, BLOCK=64)
    with pytest.raises(ValueError, match=r"argument `c` is on cuda:1 but the earlier tensor"):
        k(cuda(), cuda(), FakeTensor(np.zeros(100, np.float32), index=1), 100, grid=1)


@pytest.mark.skipif(tile.gpu_unavailable_reason() is None, reason="a GPU is present")
def test_torch_without_a_gpu_is_a_launch_error(pack, torch):
    c = cuda()
    with pytest.raises(tile.LaunchError, match="no GPU"):
        pack["vector_add"](cuda(), cuda(), c, 100, grid=2, BLOCK=64)
    assert (c.arr == 0).all()
