"""Fixtures of the Python bindings' tests: a small pack built by `tilec pack`.

tilec is taken from $TILEC, else target/debug/tilec or target/release/tilec
(scripts/test builds the debug one in its packs step); it needs the LLVM
libraries of scripts/setup (.tools/lib). The pack must come from the same
compiler sources as the extension (a pack records its compiler's
fingerprint), so a tilec built from other sources is refused with the fix
(unless TILE_ALLOW_FOREIGN_PACK=1, the runtime's own escape hatch).
"""

import hashlib
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

import tile

ROOT = Path(__file__).resolve().parents[2]
KERNELS = Path(__file__).resolve().parent / "kernels"


def _tilec_candidates():
    if os.environ.get("TILEC"):
        return [Path(os.environ["TILEC"])]
    return [ROOT / "target" / p / "tilec" for p in ("debug", "release")]


def _env():
    env = dict(os.environ)
    lib = str(ROOT / ".tools" / "lib")
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


@pytest.fixture(scope="session")
def tilec():
    seen = []
    for path in _tilec_candidates():
        if not path.exists():
            continue
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=_env())
        version = out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else "?"
        if version == tile.COMPILER_VERSION:
            return path
        if os.environ.get("TILE_ALLOW_FOREIGN_PACK") == "1":
            # The runtime's escape hatch (it warns and loads such packs):
            # for working on the bindings while the compiler changes.
            return path
        seen.append(f"{path} is tilec {version}")
    pytest.fail(
        f"no tilec built from the extension's compiler sources (tilec {tile.COMPILER_VERSION}): "
        f"{'; '.join(seen) or 'none found'}; build both from the same tree: "
        f"`cargo build -p tilec` and `maturin develop` in python/ (or set TILEC)"
    )


@pytest.fixture(scope="session")
def pack_path(tilec, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "small.tpack"
    subprocess.run(
        [str(tilec), "pack", str(KERNELS), "-o", str(out), "--arch", "sm_80", "--quiet"],
        check=True,
        env=_env(),
    )
    return out


@pytest.fixture(scope="session")
def pack(pack_path):
    return tile.Pack(pack_path)


# ---- the pack format (compiler/tile-ir/src/pack.rs), to make bad packs -----

HEADER = struct.Struct("<8sIQ")  # magic, format version, payload length


def read_manifest(path):
    data = Path(path).read_bytes()
    magic, version, n = HEADER.unpack_from(data)
    return version, json.loads(data[HEADER.size : HEADER.size + n])


def write_manifest(path, version, manifest):
    payload = json.dumps(manifest).encode()
    Path(path).write_bytes(
        HEADER.pack(b"TILEPACK", version, len(payload)) + payload + hashlib.sha256(payload).digest()
    )
