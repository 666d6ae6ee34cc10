#!/usr/bin/env bash
# On the GPU machine: the 1 B preset (issue 31) in each residual mode, then
# the PyTorch reference at the same size, one machine session. Per mode: the
# seconds from launch to the first step's line, the memory plan (first line)
# and the measured peak beside it (last line), the median tokens/s.
#   bash scripts/trainer-scale.sh [MHC_TRAIN] [PACK_DIR] [STEPS]
# Defaults: .gpu/bin/mhc-train, .gpu/packs, 200 steps; logs in ${OUT:-/tmp/trainer-scale}.
# Extra flags for every mode: TRAIN_FLAGS="--recompute 0" (hc/mhc only) etc.
# MODES="plain hc mhc" (default) picks the modes; TORCH=0 skips PyTorch.
# Model FLOP utilisation (MFU): tokens/s × (6·N + 12·layers·width·context)
# FLOPs per token (PaLM's count: N parameters, attention's two T×T GEMMs per
# layer forward and backward) over the H200's dense bf16 peak, 989 TFLOP/s.
set -euo pipefail
bin="${1:-.gpu/bin/mhc-train}"
packs="${2:-.gpu/packs}"
steps="${3:-200}"
out="${OUT:-/tmp/trainer-scale}"
if [ ! -f "$bin" ] && [ -f "$bin.gz" ]; then gunzip -f "$bin.gz"; fi
[ -x "$bin" ] || { echo "trainer-scale: $bin is missing (bash scripts/gpu-bundle)" >&2; exit 2; }
# Run directories (the final checkpoint, 19 GB at 1 B parameters with the
# AdamW moments) in memory, removed after each mode: writing one to disk
# takes longer than the 200 steps.
runs="${RUN_DIR:-/dev/shm/trainer-scale}"
mkdir -p "$out" "$runs"
peak=989e12
mfu() { # tokens/s parameters layers width context
  awk -v s="$1" -v n="$2" -v l="$3" -v c="$4" -v t="$5" -v p="$peak" \
    'BEGIN { if (s == "" || n == "") print "?"; else printf "%.1f%%", 100 * s * (6 * n + 12 * l * c * t) / p }'
}
echo "| mode | first step after | plan | measured (last line) | median tokens/s | MFU |"
echo "|---|---|---|---|---|---|"
for mode in ${MODES:-plain hc mhc}; do
  log="$out/$mode.log"
  # hc/mhc recompute their streams in blocks (the preset's --recompute 0:
  # 74 GB of plan without it left too little of the 141 GB device for the
  # allocator's fragmentation; one hc run ran out of memory at step ~40).
  # RECOMPUTE=N sets another block length.
  extra=""
  if [ "$mode" != plain ] && [ -n "${RECOMPUTE:-}" ]; then extra="--recompute $RECOMPUTE"; fi
  t0=$(date +%s.%N)
  # Log every step so that the first step's line gives the start-up time.
  "$bin" train --device gpu --packs "$packs" --preset gpt1b --residual "$mode" \
    --steps "$steps" --eval-every 1000 --checkpoint-every 0 --log-every 1 --no-progress \
    --out "$runs/$mode" --overwrite $extra ${TRAIN_FLAGS:-} 2>&1 |
    while IFS= read -r line; do
      printf '%s %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')" "$line"
    done > "$log" || true
  first=$(grep -m1 ' step  *0:' "$log" | cut -d' ' -f1)
  plan=$(grep -m1 'memory plan' "$log" | sed 's/.*memory plan \([0-9.]* [GM]B\).*/\1/')
  measured=$(grep -o 'at most [0-9.]* GB[^,]*' "$log" | tail -1)
  tps=$(grep -o '[0-9]* tok/s' "$log" | awk 'NR>5 {print $1}' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
  params=$(grep -m1 -o '[0-9][0-9]* parameters' "$log" | cut -d' ' -f1)
  [ "$mode" = plain ] && plain_params=$params
  rm -rf "${runs:?}/$mode"
  echo "| $mode | ${first:-?} s | ${plan:-?} | ${measured:-see $log} | ${tps:-?} | $(mfu "$tps" "$params" 24 2048 1024) |"
done
if [ "${TORCH:-1}" = 1 ]; then
  python3 scripts/torch-trainer-baseline.py --layers 24 --width 2048 --heads 16 --context 1024 --batch 16 --steps 30 \
    > "$out/torch.log" 2>&1 || echo "PyTorch reference failed: $out/torch.log"
  grep '^| PyTorch' "$out/torch.log" | while IFS= read -r row; do
    tps=$(echo "$row" | cut -d'|' -f4 | tr -d ' ,')
    echo "$row MFU $(mfu "$tps" "${plain_params:-}" 24 2048 1024) |"
  done
fi
