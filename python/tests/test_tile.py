"""The Python bindings on the CPU interpreter: launches against numpy
references (fresh random inputs, outputs pre-filled with NaN) and every
argument check. Run by scripts/test; see docs/PYTHON.md."""

import importlib
import importlib.util
import os

import numpy as np
import pytest

import tile
from conftest import read_manifest, write_manifest

rng = np.random.default_rng()


def cdiv(a, b):
    return -(-a // b)


def to_bf16_bits(x):
    """float32 → bf16 bits, rounded to nearest even (finite inputs)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def vadd_args(n=1000):
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    c = np.full(n, np.nan, dtype=np.float32)
    return a, b, c, n


def vadd_grid(n):
    return lambda meta: (cdiv(n, meta["BLOCK"]),)


# ---- the pack ---------------------------------------------------------------


def test_pack_lists_kernels(pack):
    assert sorted(pack.kernels()) == ["axpy_i32", "row_sum", "scale_bf16", "vector_add"]
    assert "row_sum" in pack
    k = pack["vector_add"]
    assert [repr(p) for p in k.params] == ["a: *f32", "b: *f32", "c: *f32", "n: i32"]
    assert k.tune_space == {"BLOCK": [64, 128]}
    assert k.warps_space == [1, 2]
    assert len(k.configs) == 4
    if os.environ.get("TILE_ALLOW_FOREIGN_PACK") != "1":
        assert pack.compiler_version == tile.COMPILER_VERSION


def test_unknown_kernel_is_a_key_error_listing_the_kernels(pack):
    with pytest.raises(KeyError, match="`nope` is not in the pack .*vector_add"):
        pack["nope"]


# ---- launches against numpy -------------------------------------------------


@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("warps", [1, 2])
def test_vector_add_every_config(pack, block, warps):
    a, b, c, n = vadd_args(1000)
    a0, b0 = a.copy(), b.copy()
    pack["vector_add"](a, b, c, n, grid=(cdiv(n, block),), BLOCK=block, warps=warps)
    np.testing.assert_array_equal(c, a + b)  # one f32 add: exact
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def test_vector_add_default_config_and_grid_function(pack):
    a, b, c, n = vadd_args(777)
    seen = []

    def grid(meta):
        seen.append(meta)
        return cdiv(n, meta["BLOCK"])

    pack["vector_add"](a, b, c, n, grid=grid)
    assert seen == [{"BLOCK": 64, "warps": 1}]  # the first packed config
    np.testing.assert_array_equal(c, a + b)
    c[:] = np.nan
    pack["vector_add"](a, b, c, n, grid=vadd_grid(n), BLOCK=128)  # warps from the pack
    np.testing.assert_array_equal(c, a + b)


def test_a_partial_grid_writes_only_its_blocks(pack):
    a, b, c, n = vadd_args(1000)
    pack["vector_add"](a, b, c, n, grid=2, BLOCK=64)
    np.testing.assert_array_equal(c[:128], (a + b)[:128])
    assert np.isnan(c[128:]).all()


@pytest.mark.parametrize("block", [32, 64])
def test_row_sum(pack, block):
    rows, n = 37, 300
    x = rng.standard_normal((rows, n), dtype=np.float32)
    y = np.full(rows, np.nan, dtype=np.float32)
    pack["row_sum"](x, y, n, grid=(rows,), BLOCK=block)
    ref = x.astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.abs(x).sum(axis=1).max())


def test_axpy_i32_on_a_2d_grid(pack):
    rows, n, alpha = 5, 100, -3
    x = rng.integers(-1000, 1000, (rows, n), dtype=np.int32)
    y = rng.integers(-1000, 1000, (rows, n), dtype=np.int32)
    ref = alpha * x + y
    pack["axpy_i32"](x, y, alpha, n, grid=(cdiv(n, 32), rows))
    np.testing.assert_array_equal(y, ref)


def bf16_reference(x_bits, s):
    return to_bf16_bits(from_bf16_bits(x_bits) * np.float32(s))


def test_scale_bf16_as_uint16_bits(pack):
    n, s = 500, 1.7
    x = to_bf16_bits(rng.standard_normal(n, dtype=np.float32))
    y = np.full(n, 0x7FC0, dtype=np.uint16)  # bf16 NaN
    pack["scale_bf16"](x, y, s, n, grid=cdiv(n, 64))
    np.testing.assert_array_equal(y, bf16_reference(x, s))


def test_scale_bf16_as_ml_dtypes(pack):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n, s = 300, -0.3
    x = rng.standard_normal(n, dtype=np.float32).astype(ml_dtypes.bfloat16)
    y = np.full(n, np.nan, dtype=ml_dtypes.bfloat16)
    pack["scale_bf16"](x, y, s, n, grid=cdiv(n, 64))
    np.testing.assert_array_equal(y.view(np.uint16), bf16_reference(x.view(np.uint16), s))


# ---- bad packs --------------------------------------------------------------


def test_missing_pack(tmp_path):
    with pytest.raises(tile.PackError, match="cannot read pack"):
        tile.Pack(tmp_path / "none.tpack")


def test_not_a_pack(tmp_path):
    p = tmp_path / "x.tpack"
    p.write_bytes(b"hello, world, this is not a pack")
    with pytest.raises(tile.PackError, match="not a kernel pack"):
        tile.Pack(p)


def test_corrupted_pack(pack_path, tmp_path):
    data = bytearray(pack_path.read_bytes())
    data[100] ^= 1
    p = tmp_path / "corrupt.tpack"
    p.write_bytes(bytes(data))
    with pytest.raises(tile.PackError, match="corrupted"):
        tile.Pack(p)


def test_stale_pack(pack_path, tmp_path, monkeypatch):
    monkeypatch.delenv("TILE_ALLOW_FOREIGN_PACK", raising=False)
    version, m = read_manifest(pack_path)
    m["compiler_version"] = "0.0.1+0000000000000000"
    p = tmp_path / "stale.tpack"
    write_manifest(p, version, m)
    with pytest.raises(tile.PackError, match="compiled by another compiler.*0.0.1"):
        tile.Pack(p)
    assert issubclass(tile.PackError, tile.TileError)


def test_config_not_packed_lists_the_packed_ones(pack_path, tmp_path):
    version, m = read_manifest(pack_path)
    k = next(k for k in m["kernels"] if k["name"] == "vector_add")
    k["variants"] = [
        v for v in k["variants"] if not (v["config"]["meta"] == [["BLOCK", 128]] and v["config"]["warps"] == 2)
    ]
    p = tmp_path / "fewer.tpack"
    write_manifest(p, version, m)
    a, b, c, n = vadd_args(100)
    kernel = tile.Pack(p)["vector_add"]
    with pytest.raises(ValueError, match=r"config BLOCK=128, warps=2 of `vector_add` is not in the pack "
                       r"\(packed configs: BLOCK=64, warps=1; BLOCK=64, warps=2; BLOCK=128, warps=1\)"):
        kernel(a, b, c, n, grid=2, BLOCK=128, warps=2)
    assert np.isnan(c).all()
    kernel(a, b, c, n, grid=1, BLOCK=128)  # warps=1 is packed
    np.testing.assert_array_equal(c, a + b)


# ---- argument errors: each names the argument and changes nothing ----------


def expect(err, match, *args, **kw):
    kernel = kw.pop("kernel")
    outputs = kw.pop("outputs", ())
    before = [o.copy() for o in outputs]
    with pytest.raises(err, match=match):
        kernel(*args, **kw)
    for o, b in zip(outputs, before):
        np.testing.assert_array_equal(o, b)


def test_argument_count(pack):
    a, b, c, n = vadd_args()
    k = pack["vector_add"]
    expect(TypeError, r"vector_add\(\) takes 4 arguments \(a, b, c, n\), got 3", a, b, c, grid=1, kernel=k)
    expect(TypeError, r"takes 4 arguments .*got 5", a, b, c, n, n, grid=1, kernel=k, outputs=[c])


def test_array_dtype(pack):
    a, b, c, n = vadd_args()
    k = pack["vector_add"]
    expect(TypeError, r"argument `a` must be a float32 array \(f32\), got a float64 array",
           a.astype(np.float64), b, c, n, grid=1, kernel=k, outputs=[c])
    expect(TypeError, r"argument `c` must be a float32 array \(f32\), got a int32 array",
           a, b, np.zeros(n, np.int32), n, grid=1, kernel=k)
    expect(TypeError, r"argument `c` must be a float32 array \(f32\), got a >f4 array",
           a, b, c.astype(">f4"), n, grid=1, kernel=k)
    expect(TypeError, r"argument `b` must be a float32 array \(f32\), got list",
           a, list(b), c, n, grid=1, kernel=k, outputs=[c])
    x = np.zeros(10, dtype=np.float32)
    expect(TypeError, r"argument `x` must be a bf16 array \(ml_dtypes.bfloat16, or uint16",
           x, x.view(np.uint32).astype(np.uint16), 1.0, 10, grid=1, kernel=pack["scale_bf16"])
    expect(TypeError, r"argument `x` must be a int32 array \(i32\), got a int64 array",
           np.zeros(4, np.int64), np.zeros(4, np.int32), 1, 4, grid=1, kernel=pack["axpy_i32"])


def test_scalar_arguments(pack):
    a, b, c, n = vadd_args()
    k = pack["vector_add"]
    expect(TypeError, r"argument `n` must be an int \(i32\), got float", a, b, c, 1000.0, grid=1, kernel=k, outputs=[c])
    expect(TypeError, r"argument `n` must be an int \(i32\), got ndarray", a, b, c, a, grid=1, kernel=k)
    expect(TypeError, r"argument `n` must be an int \(i32\), got bool", a, b, c, True, grid=1, kernel=k)
    expect(ValueError, r"argument `n`=4294967296 does not fit in i32", a, b, c, 2**32, grid=1, kernel=k)
    x = to_bf16_bits(np.ones(8, np.float32))
    expect(TypeError, r"argument `s` must be a float \(f32\), got str", x, x.copy(), "2", 8, grid=1,
           kernel=pack["scale_bf16"])
    # numpy scalars are ints and floats too
    y = x.copy()
    pack["scale_bf16"](x, y, np.float32(2.0), np.int64(8), grid=1)
    np.testing.assert_array_equal(from_bf16_bits(y), 2.0)


def test_contiguity(pack):
    a, b, c, n = vadd_args(2000)
    k = pack["vector_add"]
    expect(ValueError, r"argument `a` is not C-contiguous", a[::2], b[:1000], c[:1000], 1000,
           grid=1, kernel=k, outputs=[c])
    x = np.zeros((8, 8), np.float32)
    expect(ValueError, r"argument `x` is not C-contiguous", x.T, np.zeros(8, np.float32), 8, grid=8,
           kernel=pack["row_sum"])


def test_meta_parameters(pack):
    a, b, c, n = vadd_args()
    k = pack["vector_add"]
    expect(TypeError, r"vector_add\(\) got an unexpected meta-parameter `BLOK` \(its meta-parameters: BLOCK\)",
           a, b, c, n, grid=1, BLOK=64, kernel=k, outputs=[c])
    expect(ValueError, r"meta-parameter `BLOCK`=100 is not in the tune space of `vector_add` \(BLOCK: \[64, 128\]\)",
           a, b, c, n, grid=1, BLOCK=100, kernel=k, outputs=[c])
    expect(ValueError, r"warps=4 is not in the tune space of `vector_add` \(warps: \[1, 2\]\)",
           a, b, c, n, grid=1, warps=4, kernel=k, outputs=[c])
    expect(TypeError, r"meta-parameter `BLOCK` must be an int, got str", a, b, c, n, grid=1, BLOCK="64", kernel=k)
    # A kernel without a tune block has its defaults packed, and only those.
    x = np.zeros(4, np.int32)
    expect(ValueError, r"meta-parameter `BLOCK`=64 is not in the tune space of `axpy_i32` \(BLOCK: \[32\]\)",
           x, x.copy(), 1, 4, grid=1, BLOCK=64, kernel=pack["axpy_i32"])


def test_grid(pack):
    a, b, c, n = vadd_args()
    k = pack["vector_add"]
    for grid, err, msg in [
        (0, ValueError, r"`grid` x is 0: every grid dimension must be at least 1"),
        ((4, -1), ValueError, r"`grid` y is -1: every grid dimension must be at least 1"),
        ((1, 1, 0), ValueError, r"`grid` z is 0"),
        ((2**31,), ValueError, r"`grid` x is 2147483648, above CUDA's limit of 2147483647"),
        ((1, 65536), ValueError, r"`grid` y is 65536, above CUDA's limit of 65535"),
        ((1, 1, 65536), ValueError, r"`grid` z is 65536, above CUDA's limit of 65535"),
        ((1, 1, 1, 1), TypeError, r"`grid` must be an int or a tuple of 1 to 3 ints"),
        ((), TypeError, r"`grid` must be an int or a tuple of 1 to 3 ints"),
        ("16", TypeError, r"`grid` must be an int or a tuple"),
        ((1.5,), TypeError, r"`grid` x must be an int, got float"),
        (lambda meta: 0, ValueError, r"`grid` x is 0"),
    ]:
        expect(err, msg, a, b, c, n, grid=grid, kernel=k, outputs=[c])
    with pytest.raises(TypeError, match="grid"):
        k(a, b, c, n)


def test_read_only_output_is_refused_and_unchanged(pack):
    a, b, c, n = vadd_args()
    c.flags.writeable = False
    expect(ValueError, r"argument `c` is read-only but the kernel wrote to it", a, b, c, n,
           grid=vadd_grid(n), kernel=pack["vector_add"], outputs=[c])
    # read-only inputs are fine
    a.flags.writeable = False
    c2 = np.full(n, np.nan, np.float32)
    pack["vector_add"](a, b, c2, n, grid=vadd_grid(n))
    np.testing.assert_array_equal(c2, a + b)


def test_runtime_error_is_a_launch_error_and_changes_nothing(pack):
    a, b, c, n = vadd_args(100)
    # n beyond the arrays: the interpreter refuses the out-of-bounds access.
    expect(tile.LaunchError, r"vector_add", a, b, c, 1000, grid=cdiv(1000, 64), kernel=pack["vector_add"],
           outputs=[a, b, c])


def test_mhc_without_torch_and_gpu_reason():
    mhc = importlib.import_module("tile.mhc")  # imports without torch (SitePlan works on numpy)
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match="need torch"):
            mhc.MhcSite(4, 64)
    reason = tile.gpu_unavailable_reason()
    assert reason is None or isinstance(reason, str)


def test_launches_from_threads_share_a_pack(pack):
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        a, b, c, n = vadd_args(3000)
        pack["vector_add"](a, b, c, n, grid=vadd_grid(n))
        return np.array_equal(c, a + b)

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(one, range(8)))


def test_the_same_array_twice_is_one_buffer(pack):
    n, alpha = 100, 3
    y = rng.integers(-1000, 1000, (1, n), dtype=np.int32)
    ref = alpha * y + y
    pack["axpy_i32"](y, y, alpha, n, grid=cdiv(n, 32))  # y = alpha * y + y, in place
    np.testing.assert_array_equal(y, ref)
    x = rng.standard_normal(n, dtype=np.float32)
    x0 = x.copy()
    pack["vector_add"](x, x[:], x.reshape(1, n), n, grid=vadd_grid(n))  # x = x + x: views too
    np.testing.assert_array_equal(x, x0 + x0)


def test_a_write_to_overlapping_arguments_is_refused(pack):
    a = rng.standard_normal(200, dtype=np.float32)
    before = a.copy()
    expect(ValueError, r"the kernel wrote argument `c`, which overlaps argument `b` in memory",
           a[:100], a[50:150], a[100:], 100, grid=vadd_grid(100), kernel=pack["vector_add"])
    np.testing.assert_array_equal(a, before)
    # overlapping inputs that are only read are fine
    c = np.full(100, np.nan, np.float32)
    pack["vector_add"](a[:100], a[50:150], c, 100, grid=vadd_grid(100))
    np.testing.assert_array_equal(c, a[:100] + a[50:150])
