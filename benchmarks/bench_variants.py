"""Variants of one `omnibyte bench` run at the same training-FLOPs budget, against the bench's own runs.

Takes one run of an `omnibyte bench` folder (benchmarks/eval_bench.py writes runs/bench-small), by
default its BLT-entropy run, and trains the same model, data, batch, schedule and seed again with
the changes each variant names: the patcher (another entropy model, a global or a relative
threshold, another mean patch size), other model fields (stack sizes, n-gram tables), training settings
(learning rate, seed). Steps are ⌊budget / (FLOPs per byte × bytes per step)⌋ as in the bench, so a
cheaper model or larger patches buy more steps. Bits per byte over the whole val split, as the
bench reports them.

Each variant is NAME=JSON. The JSON's keys `model` and `train` are deep-merged into the run's
[model] and [train] tables; any other key is a [patcher] field (`bytes_per_patch` sets the mean
patch size the FLOPs count uses). Thresholds come from
`omnibyte patch calibrate MODEL --data data/kjv --target-bytes-per-patch X [--relative]`:

    .venv/bin/python -m benchmarks.bench_variants \\
        'bench={}' \\
        'global-5.1={"threshold": 2.59589, "bytes_per_patch": 5.1}' \\
        'relative-5.1={"threshold": 1.04615, "relative": true, "bytes_per_patch": 5.1}'
    .venv/bin/python -m benchmarks.bench_variants --base blt-space --budget 2e12 \\
        'local64={"model": {"encoder": {"dim": 64}, "decoder": {"dim": 64}}}' 'lr5e-3={"train": {"lr": 5e-3}}'

Runs land in --out/BASE-BUDGET/NAME (default runs/bench-variants); a variant whose run finished is reused.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from benchmarks.common import REPO, header, train_run, write_section
from omnibyte.bench import budget_steps
from omnibyte.models import compat
from omnibyte.models.registry import build_model


def parse_variant(text: str) -> tuple[str, dict]:
    name, sep, spec = text.partition("=")
    if not sep or not name:
        sys.exit(f"error: variant {text!r} is not NAME=JSON")
    try:
        over = json.loads(spec)
    except json.JSONDecodeError as e:
        sys.exit(f"error: variant {name}: bad JSON: {e}")
    if not isinstance(over, dict):
        sys.exit(f"error: variant {name}: JSON must be an object")
    return name, over


def merge(into: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v


def plan(base: dict, over: dict, budget: float, data: str, threads: int) -> tuple[dict, int]:
    raw = copy.deepcopy(base)
    over = copy.deepcopy(over)
    model = raw["model"]
    model.get("patcher", {}).pop("entropy_model_config", None)  # rebuilt from patcher.entropy_model
    merge(model, over.pop("model", {}))
    merge(raw["train"], over.pop("train", {}))
    if over:
        if "patcher" not in model:
            sys.exit(f"error: {sorted(over)} are patcher fields, but the base run has no patcher")
        model["patcher"].update(over)
    fields = {k: v for k, v in model.items() if k != "arch"}
    seq, batch = raw["train"]["seq_len"], raw["train"]["batch_size"]
    steps = budget_steps(build_model(model["arch"], fields), budget, batch, seq)
    raw["data"]["path"] = data
    raw["train"].update(steps=steps, threads=threads, eval_batches=0, log_every=50)
    return raw, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=JSON (model/train overrides, patcher fields)")
    ap.add_argument("--bench", type=Path, default=REPO / "runs" / "bench-small", help="bench folder")
    ap.add_argument("--base", default="blt-entropy", help="which of the bench's models to start from")
    ap.add_argument("--budget", default="6e12", help="which of the bench's budgets (its run name suffix)")
    ap.add_argument("--data", default=str(REPO / "data" / "kjv"), help="byte dataset (a BPE base keeps its own)")
    ap.add_argument("--out", type=Path, help="default runs/bench-variants/BASE-BUDGET")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--section", help="write the table into --results under this key")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results_blt.md")
    args = ap.parse_args()
    base_file = args.bench / "runs" / f"{args.base}-{args.budget}" / "run.json"
    if not base_file.is_file():
        sys.exit(f"error: no {base_file}: run `.venv/bin/python -m benchmarks.eval_bench` (or omnibyte bench) first")
    base = compat.run_config(json.loads(base_file.read_text()))  # a run saved before a rename: today's names
    data = base["data"]["path"] if args.base == "bpe" else args.data
    budget = float(args.budget)
    out = args.out or REPO / "runs" / "bench-variants" / f"{args.base}-{args.budget}"
    torch.set_num_threads(args.threads)
    rows = []
    for name, over in map(parse_variant, args.variants):
        run_dir = out / name
        done = run_dir / "variant.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
        else:
            raw, steps = plan(base, over, budget, data, args.threads)
            result = train_run(raw, run_dir)
            rows.append({"variant": name, "change": over, "steps": steps, "val_bpb": result["val_bpb"],
                         "wall_s": round(result["wall_s"], 1)})
            done.write_text(json.dumps(rows[-1], indent=2) + "\n")
        print(f"{name}: {rows[-1]['steps']} steps, val {rows[-1]['val_bpb']:.4f} bits/byte", flush=True)
    lines = header(f"{args.base} variants at {args.budget} training FLOPs")
    shown = base_file.relative_to(REPO) if base_file.is_relative_to(REPO) else base_file
    lines += [f"The bench's {args.base} run ({shown}) trained again with the changes each row names;"
              " bits per byte over the whole val split.", "",
              "| variant | change | steps | val bpb | wall (min) |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        wall = f"{r['wall_s'] / 60:.1f}" if "wall_s" in r else "–"  # (runs from before wall times were kept)
        lines.append(f"| {r['variant']} | `{json.dumps(r['change'])}` | {r['steps']} | {r['val_bpb']:.4f} | {wall} |")
    print("\n".join(lines))
    if args.section:
        write_section(args.results, args.section, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
