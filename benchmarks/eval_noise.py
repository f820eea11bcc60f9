"""Noise robustness: validation bits per byte on the clean and the perturbed KJV val split
(random case, dropped, repeated, upper-cased and swapped characters, each at rate 0.1) for every
model of the bench; degradation = noisy bpb / clean bpb.

    .venv/bin/python -m benchmarks.eval_noise            # full: writes results_eval.md
    .venv/bin/python -m benchmarks.eval_noise --quick    # tiny models on 60 kB of KJV (seconds), writes nothing

Full reuses the trained runs of eval_bench.py (runs/bench-small): ≈3 min when those exist, else
it trains them first (≈20 min more on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from benchmarks.common import OUT, REPO, header, quick_corpus, results_file, results_option, table_lines, write_section
from omnibyte.bench import MODELS, Bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models on a tiny corpus; writes only with --results")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--models", default=",".join(MODELS))
    results_option(ap, "results_eval.md")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.quick:
        data, out, preset = quick_corpus(OUT), OUT / "eval_noise-quick", "quick"
        shutil.rmtree(out, ignore_errors=True)
    else:
        data, out, preset = REPO / "data" / "kjv", REPO / "runs" / "bench-small", "small"
    t0 = time.perf_counter()
    bench = Bench(out, data=str(data), preset=preset, models=tuple(args.models.split(",")), noise=True,
                  noise_rate=args.rate, log=lambda s: print(s, flush=True))
    bench.run()
    minutes = (time.perf_counter() - t0) / 60
    print((out / "results.md").read_text())
    print(f"done in {minutes:.1f} min")
    results = results_file(args, "results_eval.md")
    if results:
        title = f"Noise robustness: noisy / clean bits per byte at rate {args.rate}"
        write_section(results, "eval_noise", [*header(title), *table_lines(out / "results.md")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
