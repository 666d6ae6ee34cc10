#!/usr/bin/env bash
# The Python package's GPU run (docs/PYTHON.md, "GPU"): tile.mhc and the
# zero-copy torch launch on a machine with torch and a GPU but no Rust.
#
# Here (with Rust), build what that run needs into .gpu/python/:
#   bash scripts/python-gpu.sh --bundle
#     the release extension (cargo build --release -p tile-python, i.e. what
#     `maturin build --release` puts in its wheel) as _tile.abi3.so.gz, and
#     pytest with its pure-Python dependencies from target/pyvenv (the
#     scripts/test venv) as pytest.tar.gz, in case the GPU machine lacks it.
#     The mHC pack comes from scripts/gpu-bundle (.gpu/packs/mhc.tpack.gz) and
#     must be built by the same compiler sources as the extension (else
#     TILE_ALLOW_FOREIGN_PACK=1).
# There (from the repository root, .gpu/ carried):
#   bash scripts/python-gpu.sh
#     runs python/tests/gpu (TILE_REQUIRE_GPU=1: a skip fails), the example
#     python/examples/torch_mhc_gpt.py (300 steps, loss must fall) and the
#     timing of a site from Python beside mhc-bench's (the Rust path; T in
#     $TOKENS, default 256,8192,16384, C in $WIDTH, default 768,4096: the
#     trainer's shape among them), and prints a summary. Logs in $OUT
#     (default /tmp/python-gpu-out).
# TILE_EXT=path/to/_tile.abi3.so (or a tile-*.whl) overrides the extension.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dest="$root/.gpu/python"

if [ "${1:-}" = --bundle ]; then
  set -e
  mkdir -p "$dest"
  cargo build --release --quiet -p tile-python
  gzip -9c target/release/lib_tile.so > "$dest/_tile.abi3.so.gz"
  site=$(ls -d target/pyvenv/lib/python3*/site-packages)
  (cd "$site" && tar czf "$dest/pytest.tar.gz" pytest _pytest pluggy iniconfig packaging pygments py.py \
    pytest-*.dist-info pluggy-*.dist-info iniconfig-*.dist-info packaging-*.dist-info pygments-*.dist-info)
  du -sh "$dest"
  exit 0
fi

out="${OUT:-/tmp/python-gpu-out}"; mkdir -p "$out"
py="${PYTHON:-python3}"
work="$(mktemp -d)"; site="$work/site"; mkdir -p "$site/tile"
# The package: the Python sources of this tree plus the built extension.
cp python/tile/*.py "$site/tile/"
ext="${TILE_EXT:-}"
[ -z "$ext" ] && for c in "$dest/_tile.abi3.so.gz" "$dest/_tile.abi3.so" python/tile/_tile.abi3.so; do
  [ -e "$c" ] && { ext="$c"; break; }; done
case "$ext" in
  *.whl) (cd "$work" && "$py" -m zipfile -e "$root/$ext" wheel >/dev/null 2>&1 || "$py" -m zipfile -e "$ext" wheel) \
           && cp "$work"/wheel/tile/_tile*.so "$site/tile/_tile.abi3.so" ;;
  *.gz) gunzip -c "$ext" > "$site/tile/_tile.abi3.so" ;;
  "") echo "python-gpu: no extension (.gpu/python/_tile.abi3.so.gz from --bundle, or TILE_EXT)"; exit 2 ;;
  *) cp "$ext" "$site/tile/_tile.abi3.so" ;;
esac
if ! "$py" -c 'import pytest' 2>/dev/null && [ -e "$dest/pytest.tar.gz" ]; then
  tar xzf "$dest/pytest.tar.gz" -C "$site"
fi
[ -e .gpu/packs/mhc.tpack.gz ] && gunzip -kf .gpu/packs/mhc.tpack.gz
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export TILE_MHC_PACK="${TILE_MHC_PACK:-$root/.gpu/packs/mhc.tpack}"
export TILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee "$out/gpu.txt"
"$py" -c 'import torch, tile; print("torch", torch.__version__, "cuda", torch.version.cuda, "| tile", tile.COMPILER_VERSION, "| pack", tile.Pack(__import__("os").environ["TILE_MHC_PACK"]).compiler_version)' \
  | tee "$out/versions.txt"

status=0; summary=()
echo "== pytest python/tests/gpu"
if "$py" -m pytest python/tests/gpu -q -s -rs -p no:cacheprovider > "$out/pytest.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
grep -E "^n=|passed|failed|error" "$out/pytest.log" | tail -8
summary+=("GPU tests: $r ($(tail -1 "$out/pytest.log"))")

echo "== example: torch_mhc_gpt.py --steps ${STEPS:-300}"
if "$py" python/examples/torch_mhc_gpt.py --steps "${STEPS:-300}" > "$out/gpt.log" 2>&1; then r=ok; else r=FAILED; status=1; fi
tail -4 "$out/gpt.log"
summary+=("example: $r ($(grep '^loss:' "$out/gpt.log" || tail -1 "$out/gpt.log"))")

tokens="${TOKENS:-256,8192,16384}"; width="${WIDTH:-768,4096}"
echo "== timing: Python (tile.mhc.MhcSite) and Rust (mhc-bench), n=4, T=$tokens, C=$width"
"$py" python/tests/gpu/time_site.py --tokens "$tokens" --width "$width" --streams 4 > "$out/time-python.md" 2>&1 || status=1
cat "$out/time-python.md"
bench=.gpu/bin/mhc-bench; [ -e "$bench.gz" ] && gunzip -kf "$bench.gz" && chmod +x "$bench"
if [ -x "$bench" ]; then
  "$bench" --pack-dir "$(dirname "$TILE_MHC_PACK")" --tokens "$tokens" --width "$width" --streams 4 > "$out/time-rust.md" 2>&1 || status=1
  grep -E "^\| layer forward" "$out/time-rust.md" | sed 's/^/rust /'
  summary+=("timing: Python rows in $out/time-python.md (µs), Rust rows (mhc-bench, ms) in $out/time-rust.md")
else
  summary+=("timing: no .gpu/bin/mhc-bench (scripts/gpu-bundle builds it): Python only")
fi
echo; echo "==== summary"; printf '%s\n' "${summary[@]}"
rm -rf "$work"
exit $status
