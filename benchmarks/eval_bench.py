"""Models at equal training FLOPs on the default corpus: `omnibyte bench --preset small`.

    .venv/bin/python -m benchmarks.eval_bench            # full: ≈20 min on a 2-core CPU; writes results_eval.md
    .venv/bin/python -m benchmarks.eval_bench --quick    # the quick preset on 60 kB of KJV (seconds), writes nothing

Full: the byte transformer, the BPE transformer (4,096-id tokenizer learned on the train split),
MEGABYTE and BLT with static, space and entropy patching, each trained at 2e12 and 6e12 FLOPs on
the King James Bible (data/kjv, built if missing) and scored on its whole val split in bits per
byte. Runs land in runs/bench-small (reused by eval_noise.py); the table and
bpb_vs_flops.png are copied next to results_eval.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import (
    HERE,
    OUT,
    REPO,
    header,
    quick_corpus,
    results_file,
    results_option,
    table_lines,
    write_section,
)
from omnibyte.bench import MODELS, Bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models on a tiny corpus; writes only with --results")
    ap.add_argument("--out", help="bench folder (default runs/bench-small, or benchmarks/out/eval_bench-quick)")
    ap.add_argument("--models", default=",".join(MODELS))
    results_option(ap, "results_eval.md")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.quick:
        data, preset = quick_corpus(OUT), "quick"
        out = Path(args.out or OUT / "eval_bench-quick")
        shutil.rmtree(out, ignore_errors=True)
    else:
        data, preset = REPO / "data" / "kjv", "small"
        out = Path(args.out or REPO / "runs" / "bench-small")
    t0 = time.perf_counter()
    bench = Bench(out, data=str(data), preset=preset, models=tuple(args.models.split(",")),
                  log=lambda s: print(s, flush=True))
    bench.run()
    minutes = (time.perf_counter() - t0) / 60
    print((out / "results.md").read_text())
    print(f"done in {minutes:.1f} min; plot: {out / 'bpb_vs_flops.png'}")
    results = results_file(args, "results_eval.md")
    if results is None:
        return 0
    png = HERE / "eval_bench.png"
    if not args.quick:
        shutil.copy(out / "bpb_vs_flops.png", png)
    notes = [f"wall time of this invocation: {minutes:.1f} min (runs already finished in {out.name} are reused, not "
             "retrained; each run's own time is in the table)"]
    write_section(results, "eval_bench", [
        *header(f"Bits per byte at equal training FLOPs (omnibyte bench --preset {preset})", notes),
        *table_lines(out / "results.md"), "", f"![bpb against FLOPs]({png.name})"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
