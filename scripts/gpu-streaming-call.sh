#!/usr/bin/env bash
# One GPU call that measures the streaming loads (session 43's compiler
# change, opt-in through a configuration's `stages`) on the mHC backward
# kernels, as every earlier call that would have run it was refused. Runs on
# the GPU machine with .gpu carried; prepare it here with
#
#   FUZZ_COUNT=100 bash scripts/gpu-bundle
#   PACKS='mhc model' bash scripts/gpu-candidate docs/patches/mhc-streaming-stages.patch        # .gpu/cand
#   TILE_ARCH=sm_90 PACKS=mhc bash scripts/gpu-candidate docs/patches/mhc-streaming-sweep.patch sweep
#
# then there: `OUT=$OUT bash scripts/gpu-streaming-call.sh`. Steps, each
# appending to $OUT/summary.txt with the seconds since the start (so a call
# cut short still says what it measured), most important first:
#   1. gpu_codegen (the new streaming test among its tests), native and sm_80;
#   2. gpu_mhc on the candidate's packs against the candidate's sources;
#   3. mhc-bench, main's packs against the candidate's, alternating (gpu-ab.sh);
#   4. the trainer (gpt86m, mhc, batch 8) on each;
#   5. tile-tune of stages x tiles (the sweep pack) for mhc_post_bwd and
#      mhc_pre_bwd at T = 8192, C = 768 and 4096, each configuration first
#      checked against the interpreter at a ragged width (C = 200).
# Env: OUT (default /tmp/gpu-streaming), ROUNDS (2), STEPS (16).
set -uo pipefail
out="${OUT:-/tmp/gpu-streaming}"; mkdir -p "$out"
S="$out/summary.txt"; t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$S"; }
find .gpu -name '*.gz' -exec gunzip -f {} +
chmod +x .gpu/bin/* 2>/dev/null
for d in .gpu/packs .gpu/cand/packs .gpu/sweep/packs; do
  [ -f "$d/mhc.tpack" ] || { say "no $d/mhc.tpack: prepare the bundle first (this script's header)"; exit 2; }
done
export TILE_PACK_DIR="$PWD/.gpu/packs" TILE_EXAMPLES_PACK="$PWD/.gpu/packs/dsl-examples.tpack" TILE_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$S"
status=0

# 1. The streaming test and the rest of gpu_codegen, both PTX targets.
for arch in "" sm_80; do
  log="$out/gpu_codegen${arch:+-$arch}.log"
  TILE_ARCH="$arch" .gpu/bin/gpu_codegen --nocapture --test-threads=1 > "$log" 2>&1 || status=1
  say "gpu_codegen ${arch:-native}: $(grep -E '^test result' "$log" | tail -1)"
  grep -E "panicked|SKIPPED" "$log" | head -5 | tee -a "$S"
done

# 2. The candidate's kernels against its own sources.
log="$out/gpu_mhc-cand.log"
TILE_SOURCE_ROOT="$PWD/.gpu/cand/src" TILE_PACK_DIR="$PWD/.gpu/cand/packs" \
  .gpu/bin/gpu_mhc --nocapture --test-threads=1 > "$log" 2>&1 || status=1
say "gpu_mhc on the candidate: $(grep -E '^test result' "$log" | tail -1)"
grep -E "panicked|SKIPPED" "$log" | head -5 | tee -a "$S"

# 3. mhc-bench, main (A) against the candidate (B).
OUT="$out/ab" ROUNDS="${ROUNDS:-2}" TILE_BENCH=0 TOKENS=8192 WIDTH=768,4096 \
  bash scripts/gpu-ab.sh .gpu/packs .gpu/cand/packs > "$out/ab.md" 2>&1
say "mhc-bench A = main, B = stages on mhc_post_bwd / mhc_pre_bwd:"
grep -E "^\| (mhc_post_bwd|mhc_pre_bwd|layer)" "$out/ab.md" | tee -a "$S"

# 4. The trainer on each pack set.
median() { grep -oE "step +[0-9]+: .* ([0-9]+) tok/s" "$1" | awk '{n=$2+0} n>=6 {for(i=1;i<=NF;i++) if($i=="tok/s") print $(i-1)}' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }
for side in packs cand/packs; do
  log="$out/train-${side//\//-}.log"
  timeout 150 .gpu/bin/mhc-train train --device gpu --packs ".gpu/$side" --preset gpt86m --residual mhc \
    --batch 8 --steps "${STEPS:-16}" --log-every 1 --eval-every 100000 --checkpoint-every 0 \
    --out "/dev/shm/t-${side//\//-}" --overwrite > "$log" 2>&1
  rc=$?
  say "mhc-train mhc b8 on .gpu/$side: median $(median "$log") tok/s (rc $rc)"
done

# 5. Stages x tiles. x, g: [T, 4·C]; y, dy, gh: [T, C]; h, dh: [T, 24].
export TILE_ALLOW_FOREIGN_PACK=1
tune() {  # kernel C T extra-args...
  local k=$1 c=$2 t=$3; shift 3
  timeout 240 .gpu/bin/tile-tune --pack .gpu/sweep/packs/mhc.tpack "$k" --report -D N=4 \
    --grid "$t" --check-grid 64 --cache "$out/tune-cache.json" "$@" \
    > "$out/tune-$k-$c.log" 2>&1
  local rc=$?
  say "tile-tune $k C=$c (rc $rc):"
  grep -iE "best|^\||error" "$out/tune-$k-$c.log" | head -30 >> "$S"
}
for c in 768 4096; do
  t=8192; w=$((4 * c))
  tune mhc_post_bwd "$c" "$t" --out gx --out dy --out dh \
    --arg x=rand:bf16:${t}x$w --arg y=rand:bf16:${t}x$c --arg h=rand:${t}x24 --arg g=rand:bf16:${t}x$w \
    --arg gx=nan:bf16:${t}x$w --arg dy=nan:bf16:${t}x$c --arg dh=zeros:${t}x24 --arg C=$c \
    --check-arg x=rand:bf16:64x800 --check-arg y=rand:bf16:64x200 --check-arg h=rand:64x24 \
    --check-arg g=rand:bf16:64x800 --check-arg gx=nan:bf16:64x800 --check-arg dy=nan:bf16:64x200 \
    --check-arg dh=zeros:64x24 --check-arg C=200
  tune mhc_pre_bwd "$c" "$t" --out gx --out dh \
    --arg x=rand:bf16:${t}x$w --arg h=rand:${t}x24 --arg gh=rand:bf16:${t}x$c \
    --arg gx=rand:bf16:${t}x$w --arg dh=zeros:${t}x24 --arg C=$c \
    --check-arg x=rand:bf16:64x800 --check-arg h=rand:64x24 --check-arg gh=rand:bf16:64x200 \
    --check-arg gx=rand:bf16:64x800 --check-arg dh=zeros:64x24 --check-arg C=200
done
say "done (status $status)"
exit $status
