#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with .gpu/ carried there:
# GPU tests, compute-sanitizer, benchmarks. Logs go to $OUT (or /tmp/gpu-out).
# The GPU tests and the sanitizers run once per PTX target in GPU_RUN_TARGETS
# (default "native sm_80"): `native` lets the runtime pick the device's best
# target (sm_90 on an H100/H200), `sm_80` forces the A100 path with
# TILE_ARCH=sm_80 (its logs end in -sm80). The packs must hold both targets
# (scripts/gpu-bundle builds them so). The benchmarks run on the native target
# (BENCH=0 skips them). One pass per command where a command's time is short:
#   GPU_RUN_TARGETS=native bash .gpu/gpu-run.sh
#   GPU_RUN_TARGETS=sm_80 BENCH=0 bash .gpu/gpu-run.sh
set -uo pipefail
out="${OUT:-/tmp/gpu-out}"; mkdir -p "$out"
# scripts/gpu-bundle compresses packs and binaries for the trip.
find .gpu -name '*.gz' -exec gunzip -f {} +
# The differential test's packs, when the bundle has them.
[ -d .gpu/fuzz ] && export TILE_FUZZ_PACK="$PWD/.gpu/fuzz"
export TILE_PACK_DIR="$PWD/.gpu/packs" TILE_EXAMPLES_PACK="$PWD/.gpu/packs/dsl-examples.tpack"
# On the GPU machine a skipped GPU test is a failure (tile-testkit::gpu_or_skip).
export TILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,compute_cap,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
status=0
# Tests that need two GPUs are #[ignore]d; run them where there are two.
extra=(); [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && extra=(--include-ignored)
read -r -a targets <<< "${GPU_RUN_TARGETS:-native sm_80}"
for target in "${targets[@]}"; do
  if [ "$target" = native ]; then suffix=""; arch=""; else suffix="-${target//_/}"; arch="$target"; fi
  echo "==== GPU tests, PTX target: ${arch:-native, as the runtime chooses}"
  for t in .gpu/bin/gpu_*; do
    log="$out/$(basename "$t")$suffix.log"
    echo "== ${arch:+TILE_ARCH=$arch }$t"; TILE_ARCH="$arch" "$t" --nocapture --test-threads=1 "${extra[@]}" > "$log" 2>&1 || status=1
    grep -E "^ok |SKIPPED|test result|panicked|FAILED" "$log"
    # A failure's message and the seed that replays it (TILE_TEST_SEED), on
    # stdout too: a call's logs may not all come back from the machine.
    if grep -q panicked "$log"; then grep "TILE_TEST_SEED=" "$log"; grep -A12 panicked "$log" | head -40; fi
    # Any SKIPPED line on a GPU machine fails the run, whatever the exit codes say.
    if grep -q SKIPPED "$log"; then echo "FAILED: $t skipped a test on the GPU machine"; status=1; fi
  done
  if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
      for t in .gpu/bin/gpu_*; do
        log="$out/sanitizer-$tool-$(basename "$t")$suffix.log"
        echo "== ${arch:+TILE_ARCH=$arch }compute-sanitizer --tool $tool $t"
        TILE_ARCH="$arch" TILE_SANITIZER_RUN=1 compute-sanitizer --tool "$tool" --error-exitcode 9 "$t" --test-threads=1 > "$log" 2>&1
        rc=$?; tail -3 "$log"; [ $rc = 0 ] || status=1
        # compute-sanitizer can exit 0 although the tests under it failed.
        if grep -q "test result: FAILED" "$log"; then echo "FAILED: $t under $tool"; status=1; fi
      done
    done
  fi
done
[ "${BENCH:-1}" = 1 ] || exit $status
echo "== tile-bench"
# The attention rows' ceiling, PyTorch SDPA, measured in the same session.
sdpa=(); python3 scripts/sdpa-baseline.py > "$out/sdpa.md" 2>&1 && sdpa=(--sdpa "$out/sdpa.md")
.gpu/bin/tile-bench $(for p in .gpu/packs/*.tpack; do [ "${p##*/}" = tutorial.tpack ] || echo --pack "$p"; done) "${sdpa[@]}" 2>&1 | tee "$out/bench.md"
if [ -f .gpu/packs/tutorial.tpack ] && [ -x .gpu/bin/tile-tune ]; then
  echo "== tile-tune on the tutorial's kernel (docs/TUTORIAL.md §6), twice: the second from the cache"
  bash scripts/tune-tutorial.sh .gpu/bin/tile-tune .gpu/packs/tutorial.tpack > "$out/tune-tutorial.log" 2>&1 || status=1
  tail -5 "$out/tune-tutorial.log"
fi
if [ -x .gpu/bin/mhc-bench ]; then
  echo "== mhc-bench"
  .gpu/bin/mhc-bench --pack-dir .gpu/packs 2>&1 | tee "$out/mhc-bench.md"
fi
exit $status
