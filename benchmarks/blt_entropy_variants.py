"""BLT entropy patching variants at one training-FLOPs budget, against the bench's own runs.

Takes the BLT-entropy run of an `omnibyte bench --preset small` folder (benchmarks/eval_bench.py
writes runs/bench-small) and trains the same model, data, batch, schedule and seed again with one
change to the patcher per variant: another entropy model, a global or a relative threshold, another
mean patch size. Steps are ⌊budget / (FLOPs per byte × bytes per step)⌋ as in the bench, so larger
patches buy more steps. Bits per byte over the whole val split, as the bench reports them.

Each variant is NAME=JSON, the JSON being [patcher] overrides plus `bytes_per_patch` (the mean
patch size the threshold gives, which the FLOPs count needs). Thresholds come from
`omnibyte patch calibrate MODEL --data data/kjv --target-bytes-per-patch X [--relative]`:

    .venv/bin/python benchmarks/blt_entropy_variants.py \\
        'bench={}' \\
        'global-5.1={"threshold": 2.59589, "bytes_per_patch": 5.1}' \\
        'relative-5.1={"threshold": 1.04615, "relative": true, "bytes_per_patch": 5.1}'

Runs land in --out (default runs/blt-entropy-variants); a variant whose run finished is reused.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blt_common import REPO, header, write_section  # noqa: E402

from omnibyte.models.registry import build_model  # noqa: E402
from omnibyte.train import Trainer, load_run_config  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict]:
    name, sep, spec = text.partition("=")
    if not sep or not name:
        sys.exit(f"error: variant {text!r} is not NAME=JSON")
    try:
        over = json.loads(spec)
    except json.JSONDecodeError as e:
        sys.exit(f"error: variant {name}: bad JSON: {e}")
    if not isinstance(over, dict):
        sys.exit(f"error: variant {name}: JSON must be an object of [patcher] overrides")
    return name, over


def plan(base: dict, over: dict, budget: float, data: str, threads: int) -> tuple[dict, int]:
    raw = copy.deepcopy(base)
    over = dict(over)
    model = raw["model"]
    model.pop("entropy_model_config", None)  # rebuilt from patcher.entropy_model
    if "bytes_per_patch" in over:
        model["bytes_per_patch"] = over.pop("bytes_per_patch")
    model["patcher"].update(over)
    fields = {k: v for k, v in model.items() if k != "arch"}
    seq, batch = raw["train"]["seq_len"], raw["train"]["batch_size"]
    steps = int(budget // (build_model(model["arch"], fields).flops_per_byte(seq)["train"] * batch * seq))
    raw["data"]["path"] = data
    raw["train"].update(steps=steps, threads=threads, eval_batches=0, log_every=50)
    return raw, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=JSON ([patcher] overrides + bytes_per_patch)")
    ap.add_argument("--bench", type=Path, default=REPO / "runs" / "bench-small", help="bench folder")
    ap.add_argument("--budget", default="6e12", help="which of the bench's budgets (its run name suffix)")
    ap.add_argument("--data", default=str(REPO / "data" / "kjv"))
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "blt-entropy-variants")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="write the table into results_blt.md")
    args = ap.parse_args()
    base_file = args.bench / "runs" / f"blt-entropy-{args.budget}" / "run.json"
    if not base_file.is_file():
        sys.exit(f"error: no {base_file}: run benchmarks/eval_bench.py first")
    base = json.loads(base_file.read_text())
    budget = float(args.budget)
    torch.set_num_threads(args.threads)
    rows = []
    for name, over in map(parse_variant, args.variants):
        run_dir = args.out / name
        done = run_dir / "variant.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
        else:
            raw, steps = plan(base, over, budget, args.data, args.threads)
            torch.manual_seed(raw["train"]["seed"])
            t0 = time.perf_counter()
            result = Trainer(load_run_config(None, raw), run_dir, quiet=True).fit()
            rows.append({"variant": name, "patcher": over, "steps": steps, "val_bpb": result["val_bpb"],
                         "wall_s": round(time.perf_counter() - t0, 1)})
            done.write_text(json.dumps(rows[-1], indent=2) + "\n")
        print(f"{name}: {rows[-1]['steps']} steps, val {rows[-1]['val_bpb']:.4f} bits/byte", flush=True)
    lines = header(f"BLT entropy patching variants at {args.budget} training FLOPs")
    shown = base_file.relative_to(REPO) if base_file.is_relative_to(REPO) else base_file
    lines += [f"The bench's BLT-entropy run ({shown})"
              " trained again with one patcher change each; bits per byte over the whole KJV val split.", "",
              "| variant | patcher change | steps | val bpb |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r['variant']} | `{json.dumps(r['patcher'])}` | {r['steps']} | {r['val_bpb']:.4f} |" for r in rows]
    print("\n".join(lines))
    if args.write:
        write_section("blt-entropy-variants", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
