#!/usr/bin/env bash
# A compiler change checked on the GPU machine in one call (runs there, from
# the repository root, `.gpu` carried): the GPU tier on this tree's packs,
# then the A/B of the packs in .gpu/base (an earlier revision's:
# scripts/gpu-base) against .gpu/packs, with PyTorch SDPA beside the
# attention rows, then (when time is left) the Python package's GPU tests
# and its site's profile.
# Prepare here:
#   FUZZ_COUNT=300 bash scripts/gpu-bundle && bash scripts/gpu-base REV
#   bash scripts/python-gpu.sh --bundle     # for the Python steps (optional)
#   PATCH=docs/patches/x.patch GPU_BASE_DIR=.gpu/share bash scripts/gpu-base HEAD
#                                           # a candidate change (optional)
# Then there: OUT=/root/out [CANDIDATE=.gpu/share] bash scripts/gpu-validate.sh
# Env: CANDIDATE (a directory of gzipped packs of a change not landed, e.g.
# .gpu/share from docs/patches/*.patch: A/B'd against .gpu/packs after the
# main A/B, each given half of what is left), TARGETS (GPU tier targets,
# default "native"; "native sm_80" when the sm_80 code changed), BUDGET (seconds the whole call may take, default 580:
# each step gets what is left), ROUNDS (A/B rounds, 2). Prints the tier's
# results and the A/B rows that moved by more than 1%; logs under $OUT.
set -uo pipefail
out="${OUT:-/tmp/gpu-validate}"; mkdir -p "$out"
start=$(date +%s); budget="${BUDGET:-580}"
left() { echo $(( budget - ($(date +%s) - start) )); }
step() { echo "== $1 (rc $2, $(( $(date +%s) - start )) s)"; }
# An A/B log's rows whose B/A is outside 0.99..1.01.
moved() {
  awk -F'|' 'NF > 4 && $5 ~ /[0-9]/ { r = $5 + 0; if (r < 0.99 || r > 1.01) print }' "$1"
  echo "(every row: $1)"
}

OUT="$out/tier" GPU_RUN_TARGETS="${TARGETS:-native}" SANITIZE=0 BENCH=0 \
  timeout "$(( $(left) / 2 ))" bash .gpu/gpu-run.sh > "$out/tier.log" 2>&1
step "GPU tier (${TARGETS:-native})" $?
grep -E "^== |test result|FAILED|panicked" "$out/tier.log" | grep -vE "^== compute" | paste -sd'\n'

sdpa=()
if [ -d .gpu/base ] || [ -n "${CANDIDATE:-}" ]; then
  timeout 90 python3 scripts/sdpa-baseline.py > "$out/sdpa.md" 2> "$out/sdpa.err"
  step "SDPA baseline" $?
  [ -s "$out/sdpa.md" ] && sdpa=("$out/sdpa.md")
fi
if [ -d .gpu/base ]; then
  share=1; [ -n "${CANDIDATE:-}" ] && share=2
  OUT="$out/ab" ROUNDS="${ROUNDS:-2}" SDPA="${sdpa[0]:-}" timeout "$(( ($(left) - 60) / share ))" \
    bash scripts/gpu-ab.sh .gpu/base .gpu/packs > "$out/ab.log" 2>&1
  step "A/B .gpu/base -> .gpu/packs" $?
  moved "$out/ab.log"
else
  echo "== no .gpu/base (scripts/gpu-base REV): A/B skipped"
fi
# A change not landed yet: its packs (CANDIDATE, a directory of gzipped
# .tpack built by this tree's runtime ABI) against this tree's.
if [ -n "${CANDIDATE:-}" ] && [ -d "$CANDIDATE" ]; then
  OUT="$out/ab-candidate" ROUNDS="${ROUNDS:-2}" SDPA="${sdpa[0]:-}" timeout "$(( $(left) - 60 ))" \
    bash scripts/gpu-ab.sh .gpu/packs "$CANDIDATE" > "$out/ab-candidate.log" 2>&1
  step "A/B .gpu/packs -> $CANDIDATE" $?
  moved "$out/ab-candidate.log"
fi

# gpu-run.sh has unpacked every .gz under .gpu by now.
ext=.gpu/python/_tile.abi3.so; [ -e "$ext.gz" ] && gunzip -kf "$ext.gz"
if [ -e "$ext" ] && [ "$(left)" -gt 40 ]; then
  root="$PWD"; site="$(mktemp -d)"; mkdir -p "$site/tile"
  cp python/tile/*.py "$ext" "$site/tile/"
  python3 -c 'import pytest' 2>/dev/null || { [ -e .gpu/python/pytest.tar.gz ] && tar xzf .gpu/python/pytest.tar.gz -C "$site"; }
  # The Python package's GPU tests first (they launch through launch_raw,
  # which the GPU tier does not), then where its host time goes.
  (PYTHONPATH="$site" TILE_MHC_PACK="$root/.gpu/packs/mhc.tpack" TILE_REQUIRE_GPU=1 \
    timeout "$(( $(left) / 2 ))" python3 -m pytest python/tests/gpu -q -p no:cacheprovider > "$out/pytest.log" 2>&1)
  rc=$?; step "Python GPU tests ($(tail -1 "$out/pytest.log"))" $rc
  (cd python/tests/gpu && PYTHONPATH="$site" TILE_MHC_PACK="$root/.gpu/packs/mhc.tpack" \
    timeout "$(( $(left) - 5 ))" python3 profile_site.py --tokens 256 --width 4096 > "$out/profile.txt" 2>&1)
  step "Python site profile (T=256, C=4096; $out/profile.txt)" $?
  sed -n '/^host µs a forward+backward call/,$p' "$out/profile.txt"
fi
