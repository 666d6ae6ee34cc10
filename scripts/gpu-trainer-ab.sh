#!/usr/bin/env bash
# The trainer on the GPU machine (runs there, `.gpu` carried): plain 86M at
# batch 8 and 16 with each attention backward (deterministic, fused), then
# PyTorch eager and torch.compile on the same model (scripts/
# torch-trainer-baseline.py), each run's median tokens/s over steps 10..end
# and its peak device memory. With OLD (a directory holding bin/mhc-train
# and packs/ of an earlier revision, gzipped or not), that trainer too
# (deterministic backward), for an A/B in the same call.
# Logs under $OUT. Env: STEPS (30), BATCHES ("8 16"), OLD, RUNS (which of
# old, deterministic, fused, fused-mlp (deterministic with --mlp-gemm
# fused); default all but the last there are), TORCH (0: no PyTorch).
set -uo pipefail
out="${OUT:-/tmp/gpu-trainer}"; mkdir -p "$out"
old="${OLD:-}"
for f in .gpu/packs/*.gz .gpu/bin/*.gz ${old:+$old/packs/*.gz $old/bin/*.gz}; do [ -e "$f" ] && gunzip -f "$f"; done
chmod +x .gpu/bin/* ${old:+$old/bin/*} 2>/dev/null
steps="${STEPS:-30}"
median() { grep -oE "step +[0-9]+: .* ([0-9]+) tok/s" "$1" | awk -v skip=10 '{n=$2+0; sub(":","",n)} n>=skip {for(i=1;i<=NF;i++) if($i=="tok/s") print $(i-1)}' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}'; }
# The allocator's high-water mark a run reports at its end.
held() { grep -oE "allocator held at most [0-9.]+ GB" "$1" | tail -1 | grep -oE "[0-9.]+ GB" || echo "n/a"; }
echo "| trainer | batch | median tokens/s | peak memory | run |"
echo "|---|---|---|---|---|"
for b in ${BATCHES:-8 16}; do
  runs="deterministic fused"; [ -n "$old" ] && runs="old $runs"
  runs="${RUNS:-$runs}"
  for ab in $runs; do
    log="$out/train_${ab}_b$b.log"
    bin=.gpu/bin/mhc-train; packs=.gpu/packs; flags=(--attention-backward "$ab")
    [ "$ab" = old ] && { bin=$old/bin/mhc-train; packs=$old/packs; flags=(--attention-backward deterministic); }
    [ "$ab" = fused-mlp ] && flags=(--attention-backward deterministic --mlp-gemm fused)
    timeout 150 "$bin" train --device gpu --packs "$packs" --preset gpt86m --residual plain \
      --batch "$b" --steps "$steps" "${flags[@]}" --log-every 1 --eval-every 100000 \
      --checkpoint-every 0 --out "/dev/shm/t_${ab}_$b" --overwrite > "$log" 2>&1
    rc=$?
    echo "| mhc-train plain, $ab | $b | $(median "$log") | $(held "$log") | rc $rc |"
  done
done
[ "${TORCH:-1}" = 0 ] && exit 0
for b in ${BATCHES:-8 16}; do
  timeout 200 python3 scripts/torch-trainer-baseline.py --batch "$b" --steps "$steps" --compile > "$out/torch_b$b.log" 2>&1
  grep "^| PyTorch" "$out/torch_b$b.log"
done
