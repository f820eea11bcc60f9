"""Bits per byte at equal training FLOPs on data/kjv: the byte transformer vs BLT with static,
space and entropy patching.

A thin shell over `omnibyte bench` (the one sweep every model comparison uses): each model is
trained by the omnibyte trainer for ⌊budget / (its own `flops_per_byte` × bytes per step)⌋ steps,
then scored on the same validation split. The entropy model of BLT-entropy is trained first and
its threshold calibrated to space patching's mean patch length (its cost is reported apart, as in the paper).
Finished runs in --out are reused, so an interrupted sweep resumes.

    .venv/bin/python -m benchmarks.blt_bpb            # preset small: ≈ 20 minutes on a 2-core CPU
    .venv/bin/python -m benchmarks.blt_bpb --quick    # preset quick: about a minute, prints only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import HERE, REPO, header, results_file, results_option, write_section

MODELS = "transformer,blt-static,blt-space,blt-entropy"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the bench's quick preset; prints only (unless --results)")
    ap.add_argument("--data", default="data/kjv", help="prepared dataset (data/kjv is built on first use)")
    ap.add_argument("--budgets", help="training FLOPs per run, comma-separated (default: the preset's)")
    ap.add_argument("--out", help="sweep folder (default benchmarks/out/blt-bpb[-quick])")
    results_option(ap, "results_blt.md")
    args = ap.parse_args()
    preset = "quick" if args.quick else "small"
    out = Path(args.out or HERE / "out" / f"blt-bpb{'-quick' if args.quick else ''}")
    cmd = [str(Path(sys.executable).parent / "omnibyte"), "bench", "--preset", preset, "--models", MODELS,
           "--data", args.data, "--out", str(out)]
    if args.budgets:
        cmd += ["--budgets", args.budgets]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        return proc.returncode

    summary = json.loads((out / "results.json").read_text())
    lines = header("BLT bits per byte at equal training FLOPs" + (" (quick)" if args.quick else ""))
    lines += [f"`omnibyte bench --preset {preset} --models {MODELS}` on {args.data}; every run in `{out}`.", ""]
    lines += ["#" * 3 + line[1:] if line.startswith("# ") else line
              for line in (out / "results.md").read_text().strip().splitlines()]
    print("\n".join(lines))
    if summary.get("skipped"):
        print(f"skipped: {summary['skipped']}")
    out_md = results_file(args, "results_blt.md")
    if out_md:
        write_section(out_md, "blt-bpb", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
