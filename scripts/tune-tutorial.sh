#!/usr/bin/env bash
# On the GPU machine: tune the tutorial's kernel (docs/TUTORIAL.md §6,
# bias_gelu, which is not among the examples) with tile-tune, twice; the
# second run must read the autotuning cache and time nothing (the script
# fails otherwise). Both print the roofline report.
#   bash scripts/tune-tutorial.sh [TILE_TUNE] [PACK]
# Defaults: .gpu/bin/tile-tune and .gpu/packs/tutorial.tpack (gzipped ones
# are unpacked). Build both here (no LLVM there), e.g.:
#   cargo build --release -p tilec -p dsl-examples --bins
#   target/release/tilec pack docs/tutorial -o .gpu/packs/tutorial.tpack --arch sm_90,sm_80
#   cp target/release/tile-tune .gpu/bin/
# The cache starts empty (a temporary directory) so that the first run tunes;
# TILE_TUNE_CACHE=FILE uses that cache file instead.
set -euo pipefail
tune="${1:-.gpu/bin/tile-tune}"
pack="${2:-.gpu/packs/tutorial.tpack}"
for f in "$tune" "$pack"; do
  if [ ! -f "$f" ] && [ -f "$f.gz" ]; then gunzip -f "$f.gz"; fi
  [ -f "$f" ] || { echo "tune-tutorial: $f is missing (see the header of $0)" >&2; exit 2; }
done
cache="${TILE_TUNE_CACHE:-$(mktemp -d)/autotune-v1.json}"
args=(--pack "$pack" bias_gelu --report --cache "$cache"
  --arg x=rand:bf16:8192x8192 --arg b=rand:bf16:8192 --arg y=nan:bf16:8192x8192
  --arg rows=8192 --arg cols=8192
  --check-arg x=rand:bf16:64x8192 --check-arg y=nan:bf16:64x8192 --check-arg rows=64)
echo "== first run: every config checked against the interpreter, then timed"
"$tune" "${args[@]}"
echo "== second run: from the cache"
out="$("$tune" "${args[@]}")"
echo "$out"
if ! grep -q "from the cache, nothing timed" <<< "$out"; then
  echo "FAILED: the second run did not read the cache" >&2
  exit 1
fi
