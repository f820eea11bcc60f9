"""Character-level tasks (CUTE-style): byte models against the BPE baseline, trained on the same
task mix at equal FLOPs, scored by greedy exact match on questions about held-out words.

    .venv/bin/python -m benchmarks.eval_cute            # full: ≈20 min on a 2-core CPU; writes results_eval.md
    .venv/bin/python -m benchmarks.eval_cute --quick    # 700 questions, tiny models (seconds), writes nothing
    .venv/bin/python -m benchmarks.eval_cute --models bpe,blt-space --budgets 3e13 --section eval_cute_3e13
                                                        # a larger budget for two models, in its own section
    .venv/bin/python -m benchmarks.eval_cute --n-train 100000 --models bpe --budgets 3e13 --section eval_cute_100k
                                                        # more training questions (data/cute-100000,
                                                        # runs/bench-cute-100000): fewer epochs per budget

Full: 20,000 training questions on 90% of the words of /usr/share/dict/american-english
(apt-get install wamerican), 700 held-out questions (100 per task) on the other 10%; every model
of `omnibyte bench` with the small preset at 6e12 training FLOPs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from benchmarks.common import OUT, REPO, header, results_file, results_option, table_lines, write_section
from omnibyte.bench import MODELS, Bench
from omnibyte.data import is_dataset
from omnibyte.data.tasks.cute import DEFAULT_WORDS, load_words, write_cute

N_TRAIN = 20000



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small task set and tiny models; writes only with --results")
    ap.add_argument("--words", default=DEFAULT_WORDS)
    ap.add_argument("--budgets", default="6e12")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--section", default="eval_cute",
                    help="results_eval.md section to write (another name keeps the default run's table)")
    ap.add_argument("--n-train", type=int, default=N_TRAIN,
                    help=f"training questions (default {N_TRAIN:,}; another count gets its own data and run folders)")
    ap.add_argument("--threads", type=int, help="torch threads per training run (default: the preset's, 1)")
    results_option(ap, "results_eval.md")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.quick:
        data, out, preset = OUT / "cute-quick", OUT / "eval_cute-quick", "quick"
        n_train, n_heldout, budgets = 700, 70, (6e8,)
        shutil.rmtree(out, ignore_errors=True)
    else:
        suffix = "" if args.n_train == N_TRAIN else f"-{args.n_train}"
        data, out, preset = REPO / "data" / f"cute{suffix}", REPO / "runs" / f"bench-cute{suffix}", "small"
        n_train, n_heldout, budgets = args.n_train, 700, tuple(float(b) for b in args.budgets.split(","))
    if not is_dataset(data) or args.quick:
        meta = write_cute(data, load_words(args.words), n_train=n_train, n_heldout=n_heldout, seed=0)
        print(f"task suite: {meta['cute']}")
    t0 = time.perf_counter()
    bench = Bench(out, data=str(data), preset=preset, budgets=budgets, models=tuple(args.models.split(",")),
                  task="cute", threads=args.threads, log=lambda s: print(s, flush=True))
    summary = bench.run()
    minutes = (time.perf_counter() - t0) / 60
    per_task = per_task_table(summary["results"])
    print((out / "results.md").read_text())
    print("\n".join(per_task))
    print(f"done in {minutes:.1f} min")
    results = results_file(args, "results_eval.md")
    if results:
        title = (f"Character-level tasks: greedy exact match on held-out words ({args.budgets} training FLOPs, "
                 f"{n_train:,} training questions)")
        notes = [f"wall time of this invocation: {minutes:.1f} min (finished runs in {out.name} are reused, not "
                 "retrained; each run's own time is in the table)",
                 f"training: {bench.preset.jobs} run(s) at a time, {bench.preset.threads or 'default'} torch thread(s) "
                 "each (the machine line gives the main process's threads)"]
        write_section(results, args.section, [*header(title, notes), *table_lines(out / "results.md"), "",
                                              "Accuracy per task:", "", *per_task])
    return 0


def per_task_table(results: list[dict]) -> list[str]:
    tasks = sorted({t for r in results for t in r.get("task_per_task", {})})
    lines = ["| model | budget | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for r in results:
        cells = [f"{r['task_per_task'].get(t, float('nan')):.0%}" for t in tasks]
        lines.append(f"| {r['model']} | {r['budget']:.0e} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
