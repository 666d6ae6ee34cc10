"""GPU tests of the torch path (zero-copy launches, tile.mhc): skipped with
the reason when torch, a CUDA GPU or the mHC pack is missing;
TILE_REQUIRE_GPU=1 makes a skip a failure (as in the Rust GPU tier).

The pack: $TILE_MHC_PACK, else target/packs/mhc.tpack (tile.mhc.default_pack_path).
"""

import os

import pytest

import tile


def _skip(why):
    if os.environ.get("TILE_REQUIRE_GPU") == "1":
        pytest.fail(f"GPU test required (TILE_REQUIRE_GPU=1) but: {why}", pytrace=False)
    pytest.skip(why)


def _why_no_gpu():
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return tile.gpu_unavailable_reason()


@pytest.fixture(autouse=True)
def gpu():
    why = _why_no_gpu()
    if why:
        _skip(why)


@pytest.fixture(scope="session")
def mhc_pack():
    why = _why_no_gpu()
    if why:
        _skip(why)
    import tile.mhc

    try:
        path = tile.mhc.default_pack_path()
    except FileNotFoundError as e:
        _skip(str(e))
    return tile.Pack(path)
