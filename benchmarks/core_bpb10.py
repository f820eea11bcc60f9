"""Validation bits per byte on the default corpus (the King James Bible, data/kjv) after 10 minutes
of CPU training with configs/demo.toml.

    .venv/bin/python -m benchmarks.core_bpb10            # full: 10 minutes, writes benchmarks/results_core.md
    .venv/bin/python -m benchmarks.core_bpb10 --quick    # 20 s on a tiny model, writes nothing

The demo config's model, batch and schedule are kept; only `train.steps` is set so the run takes
the time budget: a few steps of the same config are timed first (not counted), then a fresh run
with the computed step count trains with its cosine schedule ending on time. Evaluation during
training and intermediate checkpoints are turned off so the budget is spent on training; the
final evaluation scores the whole validation split. The equivalent commands are printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    REPO,
    header,
    metrics,
    results_file,
    results_option,
    steps_for_minutes,
    train_run,
    write_section,
)
from omnibyte.config import merge
from omnibyte.data import DEFAULT_DATA_DIR, ShardDataset, is_dataset, prepare_kjv
from omnibyte.train import load_run_config

CONFIG = REPO / "configs" / "demo.toml"
QUICK_MODEL = {"dim": 64, "n_layers": 2, "n_heads": 4}
QUICK_TRAIN = {"batch_size": 8, "seq_len": 128, "warmup_steps": 5}


def flat_overrides(table: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out += flat_overrides(v, key)
        else:
            out += [f"--{key}", json.dumps(v) if not isinstance(v, str) else v]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model for 20 seconds; writes nothing")
    p.add_argument("--minutes", type=float, help="training time budget (default 10; --quick: 1/3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    p.add_argument("--out", help="run directory to keep (default: a temporary one)")
    results_option(p, "results_core.md")
    args = p.parse_args()
    minutes = args.minutes or (1 / 3 if args.quick else 10.0)
    threads = args.threads or torch.get_num_threads()

    data = REPO / DEFAULT_DATA_DIR
    if not is_dataset(data):
        print(f"preparing the default corpus into {data} (omnibyte prepare) ...", flush=True)
        prepare_kjv(data)
    extra = {"data": {"path": str(data)},
             "train": {"eval_every": 0, "save_every": 0, "threads": threads, "device": "cpu"}}
    if args.quick:
        extra = merge(extra, {"model": QUICK_MODEL, "train": {**QUICK_TRAIN, "eval_batches": 4}})

    with tempfile.TemporaryDirectory(prefix="omnibyte-bpb10-") as tmp:
        # 1. time a few steps of the very same config
        print("timing a few steps ...", flush=True)
        steps, rate = steps_for_minutes(extra, Path(tmp) / "probe", minutes, base=CONFIG)
        # 2. the run
        run = Path(args.out) if args.out else Path(tmp) / "run"
        print(f"{rate:,.0f} bytes/s → {steps} steps in {minutes:g} min; training into {run} ...", flush=True)
        result = train_run(merge(extra, {"train": {"steps": steps}}), run, base=CONFIG, quiet=False)
        train_rows = [r for r in metrics(run) if "loss" in r]
    step_bytes = result["bytes_per_step"]
    train_s, prev = 0.0, 0
    for r in train_rows:  # each log line's rate covers the steps since the previous one
        train_s += (r["step"] - prev) * step_bytes / r["bytes_per_s"]
        prev = r["step"]

    val_bytes = ShardDataset(data).meta["splits"]["val"]["bytes"]["text"]
    n_eval = load_run_config(CONFIG, extra).train.eval_batches
    scored = f"whole val split, {val_bytes:,} bytes" if n_eval == 0 else f"first {n_eval} val batches"
    cmd_over = flat_overrides({k: v for k, v in extra.items() if k != "data"}) + ["--train.steps", str(steps)]
    train_cmd = shlex.join(["omnibyte", "train", str(CONFIG.relative_to(REPO)), *cmd_over, "--out", "runs/bpb10"])
    eval_cmd = "omnibyte eval runs/bpb10 --json"
    lines = [
        f"Validation bits per byte on {DEFAULT_DATA_DIR} ({scored}) after {train_s / 60:.1f} min of "
        f"training ({result['wall_s']:.0f} s wall with the final evaluation and checkpoint; {threads} threads).", "",
        "| config | params | steps | bytes seen | train loss (last) | val bpb |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| {CONFIG.relative_to(REPO)}{' + quick overrides' if args.quick else ''} | "
        f"{result['params'] / 1e6:.2f} M | {steps} | {result['bytes']:,} | {train_rows[-1]['loss']:.3f} | "
        f"**{result['val_bpb']:.4f}** |", "",
        f"- equivalent commands: `{train_cmd}` then `{eval_cmd}`",
        f"- step time measured first: {step_bytes / rate:.3f} s/step ({rate:,.0f} bytes/s)",
    ]
    print("\n".join(lines))
    print(f"val bpb {result['val_bpb']:.4f}")
    out = results_file(args, "results_core.md")
    if out:
        write_section(out, "core_bpb10", header(f"Validation bpb after {minutes:g} CPU-minutes (demo config)") + lines)


if __name__ == "__main__":
    main()
