"""Validation bits per byte on the default corpus (the King James Bible, data/kjv) after 10 minutes
of CPU training with configs/demo.toml.

    .venv/bin/python benchmarks/core_bpb10.py            # full: 10 minutes, writes benchmarks/results_core.md
    .venv/bin/python benchmarks/core_bpb10.py --quick    # 20 s on a tiny model, writes nothing

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_common import REPO, header, write_section  # noqa: E402

from omnibyte.config import load_toml, merge  # noqa: E402
from omnibyte.data import DEFAULT_DATA_DIR, is_dataset, prepare_kjv  # noqa: E402
from omnibyte.train import Trainer  # noqa: E402
from omnibyte.train.config import resolve  # noqa: E402

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


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model for 20 seconds; writes nothing")
    p.add_argument("--minutes", type=float, help="training time budget (default 10; --quick: 1/3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: every core)")
    p.add_argument("--out", help="run directory to keep (default: a temporary one)")
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
    raw = merge(load_toml(CONFIG), extra)

    with tempfile.TemporaryDirectory(prefix="omnibyte-bpb10-") as tmp:
        # 1. time a few steps of the very same config
        probe_steps = 6
        probe = Trainer(resolve(merge(raw, {"train": {"steps": probe_steps, "warmup_steps": 1, "log_every": 1}})),
                        Path(tmp) / "probe", quiet=True)
        print(f"timing {probe_steps} steps ...", flush=True)
        probe.fit()
        rates = [r["bytes_per_s"] for r in metrics(Path(tmp) / "probe") if "loss" in r][2:]
        step_s = probe.bytes_per_step / statistics.median(rates)
        steps = max(10, int(minutes * 60 / step_s))
        raw = merge(raw, {"train": {"steps": steps}})
        cfg = resolve(raw)
        # 2. the run
        run = Path(args.out) if args.out else Path(tmp) / "run"
        print(f"{step_s:.3f} s/step → {steps} steps in {minutes:g} min; training into {run} ...", flush=True)
        trainer = Trainer(cfg, run, quiet=False)
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
        train_rows = [r for r in metrics(run) if "loss" in r]
    train_s, prev = 0.0, 0
    for r in train_rows:  # each log line's rate covers the steps since the previous one
        train_s += (r["step"] - prev) * trainer.bytes_per_step / r["bytes_per_s"]
        prev = r["step"]

    bytes_seen = steps * trainer.bytes_per_step
    val_bytes = trainer.dataset.meta["splits"]["val"]["bytes"]["text"]
    n_eval = cfg.train.eval_batches
    scored = f"whole val split, {val_bytes:,} bytes" if n_eval == 0 else f"first {n_eval} val batches"
    cmd_over = flat_overrides({k: v for k, v in extra.items() if k != "data"}) + ["--train.steps", str(steps)]
    train_cmd = shlex.join(["omnibyte", "train", str(CONFIG.relative_to(REPO)), *cmd_over, "--out", "runs/bpb10"])
    eval_cmd = "omnibyte eval runs/bpb10 --json"
    lines = [
        f"Validation bits per byte on {DEFAULT_DATA_DIR} ({scored}) after {train_s / 60:.1f} min of "
        f"training ({wall:.0f} s wall with the final evaluation and checkpoint; {threads} threads).", "",
        "| config | params | steps | bytes seen | train loss (last) | val bpb |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| {CONFIG.relative_to(REPO)}{' + quick overrides' if args.quick else ''} | "
        f"{trainer.model.num_params() / 1e6:.2f} M | {steps} | {bytes_seen:,} | {train_rows[-1]['loss']:.3f} | "
        f"**{result['val_bpb']:.4f}** |", "",
        f"- equivalent commands: `{train_cmd}` then `{eval_cmd}`",
        f"- step time measured first: {step_s:.3f} s/step ({trainer.bytes_per_step / step_s:,.0f} bytes/s)",
    ]
    print("\n".join(lines))
    print(f"val bpb {result['val_bpb']:.4f}")
    if not args.quick:
        write_section("core_bpb10", header(f"Validation bpb after {minutes:g} CPU-minutes (demo config)") + lines)


if __name__ == "__main__":
    main()
