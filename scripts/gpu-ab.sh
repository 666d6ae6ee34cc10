#!/usr/bin/env bash
# A/B of two compilers' packs on the GPU machine, in one machine session:
# tile-bench (--best-only) and mhc-bench on the packs of DIR_A and DIR_B,
# alternating A, B, A, B (ROUNDS rounds), then one table: every benchmark row's
# median ms per side (the best of its rounds) and B/A. A change of code
# generation lands only when no row moves by more than noise (issue 30: ±2%).
#
#   bash scripts/gpu-ab.sh DIR_A DIR_B     (each holding dsl-examples, mhc and model .tpack)
#
# Env: ROUNDS (2), TOKENS/WIDTH/STREAMS for mhc-bench (8192,65536 / 768,4096 / 4),
# LOG2N for tile-bench (26), MATMUL_SIZES for its matmul (4096,4000: 4000 for
# the programs at the edges, which TMA cannot fetch whole), SDPA (an sdpa.md from scripts/sdpa-baseline.py, so
# the attention rows carry SDPA beside them), TILE_BENCH=0 (mhc-bench alone,
# for a change of the mHC kernels' sources), OUT (logs; default /tmp/gpu-ab).
# Each side runs its own benchmarks where its directory has them (DIR/bin, as
# scripts/gpu-base leaves them: a runtime launches the packs of its own
# compiler), else .gpu/bin's with TILE_ALLOW_FOREIGN_PACK=1 (set here).
# Needs .gpu/bin from scripts/gpu-bundle.
set -uo pipefail
a="${1:?usage: gpu-ab.sh DIR_A DIR_B}"; b="${2:?usage: gpu-ab.sh DIR_A DIR_B}"
out="${OUT:-/tmp/gpu-ab}"; mkdir -p "$out"
bin=.gpu/bin
benches=(mhc-bench); [ "${TILE_BENCH:-1}" != 0 ] && benches=(tile-bench mhc-bench)
for x in "${benches[@]}"; do
  [ -e "$bin/$x.gz" ] && gunzip -kf "$bin/$x.gz"
  chmod +x "$bin/$x" 2>/dev/null || { echo "gpu-ab: no $bin/$x (scripts/gpu-bundle)"; exit 2; }
done
for d in "$a" "$b"; do
  for x in "${benches[@]}"; do
    [ -e "$d/bin/$x.gz" ] && gunzip -kf "$d/bin/$x.gz" && chmod +x "$d/bin/$x"
  done
  packs=(mhc); [ "${TILE_BENCH:-1}" != 0 ] && packs=(dsl-examples mhc model)
  for p in "${packs[@]}"; do
    [ -e "$d/$p.tpack.gz" ] && gunzip -kf "$d/$p.tpack.gz"
    [ -e "$d/$p.tpack" ] || { echo "gpu-ab: no $d/$p.tpack"; exit 2; }
  done
done
export TILE_ALLOW_FOREIGN_PACK=1
sdpa=(); [ -n "${SDPA:-}" ] && sdpa=(--sdpa "$SDPA")
for r in $(seq 1 "${ROUNDS:-2}"); do
  for side in A B; do
    d="$a"; [ $side = B ] && d="$b"
    bin=.gpu/bin; [ -x "$d/bin/tile-bench" ] && [ -x "$d/bin/mhc-bench" ] && bin="$d/bin"
    if [ "${TILE_BENCH:-1}" != 0 ]; then
      "$bin/tile-bench" --pack "$d/dsl-examples.tpack" --log2n "${LOG2N:-26}" --matmul-sizes "${MATMUL_SIZES:-4096,4000}" --best-only "${sdpa[@]}" \
        > "$out/tile-bench-$side-$r.md" 2>&1 || echo "gpu-ab: tile-bench $side round $r failed (see $out)"
    fi
    "$bin/mhc-bench" --pack-dir "$d" --tokens "${TOKENS:-8192,65536}" --width "${WIDTH:-768,4096}" \
      --streams "${STREAMS:-4}" > "$out/mhc-bench-$side-$r.md" 2>&1 || echo "gpu-ab: mhc-bench $side round $r failed (see $out)"
  done
done
python3 - "$out" <<'PY'
import glob, os, re, sys
out = sys.argv[1]
def rows(path):
    got = {}
    for line in open(path, errors="replace"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("benchmark", "path") or set(cells[0]) <= set("-"):
            continue
        # tile-bench: benchmark | config | median ms …; mhc-bench: benchmark | median ms …
        for c in cells[1:3]:
            m = re.match(r"([0-9.]+)\s*\(", c)
            if m:
                got[cells[0]] = float(m.group(1))
                break
    return got
best = {}
for path in sorted(glob.glob(os.path.join(out, "*-[AB]-*.md"))):
    side = re.search(r"-([AB])-\d+\.md$", path).group(1)
    for k, v in rows(path).items():
        cur = best.setdefault(k, {})
        cur[side] = min(v, cur.get(side, v))
print("| benchmark | A median ms | B median ms | B/A |")
print("|---|---|---|---|")
for k, v in best.items():
    if "A" in v and "B" in v:
        print(f"| {k} | {v['A']:.4f} | {v['B']:.4f} | {v['B'] / v['A']:.3f} |")
PY
