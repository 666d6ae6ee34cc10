#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu/ carried there:
# GPU tests, compute-sanitizer, benchmarks. Logs go to $OUT (or /tmp/gpu-out).
set -uo pipefail
out="${OUT:-/tmp/gpu-out}"; mkdir -p "$out"
export TILE_PACK_DIR="$PWD/.gpu/packs" TILE_EXAMPLES_PACK="$PWD/.gpu/packs/dsl-examples.tpack"
# On the GPU machine a skipped GPU test is a failure (tile-testkit::gpu_or_skip).
export TILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
status=0
for t in .gpu/bin/gpu_*; do
  echo "== $t"; "$t" --nocapture --test-threads=1 > "$out/$(basename "$t").log" 2>&1 || status=1
  grep -E "^ok |SKIPPED|test result|panicked|FAILED" "$out/$(basename "$t").log"
  # Any SKIPPED line on a GPU machine fails the run, whatever the exit codes say.
  if grep -q SKIPPED "$out/$(basename "$t").log"; then echo "FAILED: $t skipped a test on the GPU machine"; status=1; fi
done
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    for t in .gpu/bin/gpu_*; do
      echo "== compute-sanitizer --tool $tool $t"
      TILE_SANITIZER_RUN=1 compute-sanitizer --tool "$tool" --error-exitcode 9 "$t" --test-threads=1 > "$out/sanitizer-$tool-$(basename "$t").log" 2>&1
      rc=$?; tail -3 "$out/sanitizer-$tool-$(basename "$t").log"; [ $rc = 0 ] || status=1
    done
  done
fi
echo "== tile-bench"
# The attention rows' ceiling, PyTorch SDPA, measured in the same session.
sdpa=(); python3 scripts/sdpa-baseline.py > "$out/sdpa.md" 2>&1 && sdpa=(--sdpa "$out/sdpa.md")
.gpu/bin/tile-bench $(for p in .gpu/packs/*.tpack; do echo --pack "$p"; done) "${sdpa[@]}" 2>&1 | tee "$out/bench.md"
if [ -x .gpu/bin/mhc-bench ]; then
  echo "== mhc-bench"
  .gpu/bin/mhc-bench --pack-dir .gpu/packs 2>&1 | tee "$out/mhc-bench.md"
fi
exit $status
