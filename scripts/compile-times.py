#!/usr/bin/env python3
"""Source-to-PTX time of every configuration of some kernels (issue 30's
per-configuration goal): for each packed configuration of the kernels in a
pack, `tilec build` of its source file with that configuration, no compile
cache, the whole process, best of --runs. Prints how many take longer than
--limit, the slowest, and the sum; --json writes every time.

    python3 scripts/compile-times.py [--tilec target/release/tilec]
        [--pack target/packs/dsl-examples.tpack] [--source-dir dsl-examples]
        [--kernels matmul,attention,attention_bwd_dkdv,attention_bwd_dq]
        [--arch sm_90] [--runs 2] [--limit 0.5] [--json out.json]
        [--ptxas PATH] [--against TILEC]

With --ptxas, each configuration's PTX also goes through `ptxas -v` for
its registers and spill bytes (a configuration that spills is a candidate
to leave out of its tune space: slow to compile and to run).

With --against TILEC (another build of tilec, e.g. main's), each
configuration is also built by that compiler, the two alternating run by
run, and each row gives both times: on a shared machine whose build times
drift by tens of percent, alternating is what makes a before/after fair.

A kernel's source is the .tile file in --source-dir that defines it. The
pack only lists the configurations (its own compiler does not matter).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pack_manifest(path):
    try:
        b = Path(path).read_bytes()
    except OSError as e:
        sys.exit(f"compile-times: {path}: {e.strerror} (build it with scripts/packs)")
    n = int.from_bytes(b[12:20], "little")
    try:
        return json.loads(b[20 : 20 + n])
    except (ValueError, UnicodeDecodeError):
        sys.exit(f"compile-times: {path} is not a tile pack (build it with scripts/packs)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tilec", default=str(ROOT / "target/release/tilec"))
    ap.add_argument("--pack", default=str(ROOT / "target/packs/dsl-examples.tpack"))
    ap.add_argument("--source-dir", default=str(ROOT / "dsl-examples"))
    ap.add_argument("--kernels", default="matmul,attention,attention_bwd_dkdv,attention_bwd_dq")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--limit", type=float, default=0.5)
    ap.add_argument("--json")
    ap.add_argument("--ptxas", help="also report registers and spills (ptxas -v)")
    ap.add_argument("--against", help="another tilec, timed alternately with --tilec on each configuration")
    a = ap.parse_args()
    wanted = a.kernels.split(",")
    sources = {}
    for f in sorted(Path(a.source_dir).glob("*.tile")):
        for name in re.findall(r"^kernel\s+(\w+)", f.read_text(), re.M):
            sources.setdefault(name, f)
    missing = [k for k in wanted if k not in sources]
    if missing:
        sys.exit(f"compile-times: no .tile file in {a.source_dir} defines {', '.join(missing)}")
    env = dict(os.environ, TILE_CACHE="0")
    lib = str(ROOT / ".tools/lib")
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"compile-times-{os.getpid()}.ptx"
    rows = []
    for k in pack_manifest(a.pack)["kernels"]:
        if k["name"] not in wanted:
            continue
        for v in k["variants"]:
            cfg = v["config"]
            defs = [x for m, val in cfg["meta"] for x in ("-D", f"{m}={val}")]
            args = ["build", str(sources[k["name"]]), "--kernel", k["name"], *defs,
                    "--warps", str(cfg["warps"]), "--arch", a.arch, "-o", str(out)]
            # --tilec last, so the PTX left in `out` (for --ptxas) is its own.
            compilers = [a.against, a.tilec] if a.against else [a.tilec]
            times = {c: None for c in compilers}
            for _ in range(a.runs):
                # Alternating, so that both see the machine's same drift.
                for c in compilers:
                    t = time.perf_counter()
                    r = subprocess.run([c, *args], env=env, capture_output=True, text=True)
                    dt = time.perf_counter() - t
                    if r.returncode:
                        sys.exit(f"compile-times: {c} {' '.join(args)} failed:\n{r.stderr[-2000:]}")
                    times[c] = dt if times[c] is None else min(times[c], dt)
            best = times[a.tilec]
            label = ", ".join(f"{m}={val}" for m, val in cfg["meta"]) + f", warps={cfg['warps']}"
            row = {"kernel": k["name"], "config": label, "seconds": round(best, 4)}
            extra = ""
            if a.against:
                row["against_seconds"] = round(times[a.against], 4)
                extra += f"  (against {times[a.against]:5.2f} s)"
            if a.ptxas:
                row.update(ptxas_usage(a.ptxas, a.arch, out))
                extra += f"  {row['registers']:3d} registers, {row['spill_bytes']:5d} spill bytes"
            rows.append(row)
            print(f"{best:6.2f} s{extra}  {k['name']} {label}", flush=True)
    out.unlink(missing_ok=True)
    if not rows:
        sys.exit(f"compile-times: none of {a.kernels} is in {a.pack}")
    spilling = [r for r in rows if r.get("spill_bytes")]
    if a.ptxas:
        print(f"\n{len(spilling)} configurations spill:")
        for r in spilling:
            print(f"  {r['kernel']} {r['config']}: {r['spill_bytes']} bytes, {r['seconds']:.2f} s")
    over = [r for r in rows if r["seconds"] > a.limit]
    worst = max(rows, key=lambda r: r["seconds"])
    print(f"\n{len(rows)} configurations, {len(over)} over {a.limit} s, slowest {worst['seconds']:.2f} s "
          f"({worst['kernel']} {worst['config']}), sum {sum(r['seconds'] for r in rows):.1f} s")
    if a.against:
        base = [r["against_seconds"] for r in rows]
        print(f"against {a.against}: {sum(b > a.limit for b in base)} over {a.limit} s, "
              f"slowest {max(base):.2f} s, sum {sum(base):.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


def ptxas_usage(ptxas, arch, ptx):
    """Registers and spill bytes (stores + loads) of the one kernel in `ptx`."""
    target = arch + "a" if arch == "sm_90" else arch
    cubin = ptx.with_suffix(".cubin")
    r = subprocess.run([ptxas, f"-arch={target}", "-v", str(ptx), "-o", str(cubin)],
                       capture_output=True, text=True)
    cubin.unlink(missing_ok=True)
    if r.returncode:
        sys.exit(f"compile-times: ptxas failed on {ptx}:\n{r.stderr[-2000:]}")
    regs = re.search(r"Used (\d+) registers", r.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
    return {
        "registers": int(regs.group(1)) if regs else 0,
        "spill_bytes": int(spills.group(1)) + int(spills.group(2)) if spills else 0,
    }


if __name__ == "__main__":
    main()
