#!/usr/bin/env bash
# The mHC-vs-plain ablation of docs/TRAINER.md, on a GPU machine with .gpu/
# (scripts/gpu-bundle) carried: byte-level GPT, width 256, 8 layers, 8 heads,
# context 256, batch 32, 500 steps, lr 3e-3 (50 warm-up, cosine to 3e-4),
# AdamW (0.9, 0.95), clip 1, on ~1 MB of Python source (the machine's stdlib).
# Usage: scripts/mhc-ablation.sh "NAME|FLAGS" ...  (seeds: $SEEDS, default "0 1 2")
# Prints one line per run and a table: mean training loss of the last 20 steps,
# validation loss at the end, the final composite forward Amax, tokens/s.
set -uo pipefail
out="${OUT:-/tmp/ablation}"; mkdir -p "$out"
bin="${MHC_TRAIN:-.gpu/bin/mhc-train}"; packs="${PACKS:-.gpu/packs}"
data="$out/data.txt"
if [ ! -s "$data" ]; then
  lib="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
  find "$lib" -maxdepth 1 -name '*.py' | sort | xargs cat | head -c 1000000 > "$data"
fi
steps="${STEPS:-500}"
common=(train --device gpu --packs "$packs" --data "$data" --val-fraction 0.05 --width 256 --layers 8 --heads 8
        --context 256 --batch 32 --steps "$steps" --lr 3e-3 --min-lr 3e-4 --warmup 50 --weight-decay 0.1
        --eval-every "$steps" --eval-batches 8 --checkpoint-every 0 --no-progress --log-every 100)
for spec in "$@"; do
  name="${spec%%|*}"; flags="${spec#*|}"
  for seed in ${SEEDS:-0 1 2}; do
    dir="$out/$name-s$seed"; rm -rf "$dir"
    # shellcheck disable=SC2086
    "$bin" "${common[@]}" --seed "$seed" --out "$dir" $flags > "$dir.log" 2>&1 || { echo "FAILED $name seed $seed"; tail -5 "$dir.log"; }
  done
done
python3 - "$out" "$@" <<'PY'
import json, os, re, statistics, sys
out, specs = sys.argv[1], sys.argv[2:]
print("| variant | flags | train loss (last 20), per seed | mean | val loss, per seed | mean | composite Amax fwd | tokens/s |")
print("|---|---|---|---|---|---|---|---|")
for spec in specs:
    name, flags = spec.split("|", 1)
    tr, va, am, tps = [], [], [], []
    runs = re.compile(re.escape(name) + r"-s[0-9]+$")
    for d in sorted(x for x in os.listdir(out) if runs.match(x) and os.path.isdir(os.path.join(out, x))):
        recs = [json.loads(l) for l in open(os.path.join(out, d, "metrics.jsonl")) if l.strip()]
        tr.append(statistics.mean(r["loss"] for r in recs[-20:]))
        v = [r["val_loss"] for r in recs if r.get("val_loss") is not None]
        va.append(v[-1] if v else float("nan"))
        a = [r["amax"]["composite_forward"] for r in recs if r.get("amax")]
        am.append(a[-1] if a else float("nan"))
        tps.append(statistics.median(r["tokens_per_s"] for r in recs[len(recs)//2:]))
    f = lambda xs: " / ".join(f"{x:.3f}" for x in xs)
    m = lambda xs: f"{statistics.mean(xs):.3f}" if xs else "–"
    print(f"| {name} | `{flags.strip()}` | {f(tr)} | {m(tr)} | {f(va)} | {m(va)} | {f(am)} | {statistics.median(tps) if tps else 0:,.0f} |")
PY
