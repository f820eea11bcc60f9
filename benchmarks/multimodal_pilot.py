"""One task, one short run: how far a model gets on a single multimodal task in a fixed number of
steps, for trying a recipe (loss weight of media bytes, task options, model changes, another
model family) in minutes before spending an hour on the full mix (multimodal_tasks.py).

    .venv/bin/python -m benchmarks.multimodal_pilot fashion --steps 450 --media-loss-weight 0
    .venv/bin/python -m benchmarks.multimodal_pilot fashion --steps 450 --media-loss-weight 0.1 \
        --model '{"ngrams": {"sizes": []}}'
    .venv/bin/python -m benchmarks.multimodal_pilot fashion --arch megabyte --steps 450 --media-loss-weight 0 \
        --model '{"adapters": {"media_conv": {"channels": 32, "kernel": 7}}}'

Trains `--arch`'s default model (below; `--model` overrides its fields, merged table by table)
with multimodal_tasks.py's batch (8 × 2048 ids, whole documents per window) on `--n-train`
examples of the task (question after the media by default), on one CPU thread, then scores
`--n-eval` new examples (seed 1; Fashion-MNIST's test images) and prints one JSON line.

Default models, each at about the same training FLOPs per byte over 2,048-id windows
(`model.flops_per_byte(2048)`), so a pilot compares families at equal compute per step:

- blt: multimodal_tasks.py's BLT (static patches of 4; local 64, latent 192 × 4): 4.8M FLOPs/byte,
  3.6M parameters, 1.6M of them hash n-gram rows, which cost no FLOPs;
- megabyte: patches of 4, global 192 × 4 layers (6 heads), local 96 × 2 (3 heads): 4.9M FLOPs/byte,
  2.2M parameters. Global 256 × 4 over local 128 × 2 (configs/megabyte-small.toml's widths) would
  cost 8.5M, 1.8× the BLT's;
- transformer: 96 × 4 layers (3 heads), attention window 512: 4.9M FLOPs/byte, 0.5M parameters.
  Attention over long windows is most of a byte transformer's cost, hence narrow; the window
  still lets four layers reach back over a whole 28 × 28 image (784 ids).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import torch

from benchmarks import multimodal_tasks as mm
from benchmarks.common import REPO, steps_for_minutes, train_run
from omnibyte.config import merge
from omnibyte.data import ShardDataset
from omnibyte.data.modality import ANSWER_AUX
from omnibyte.data.tasks import build_mix
from omnibyte.eval.multimodal import run_examples, score_examples
from omnibyte.models.base import OmniModel

MODELS = {
    "blt": mm.FULL["model"],
    "megabyte": {"arch": "megabyte", "patch_size": 4, "global_model": {"dim": 192, "n_layers": 4, "n_heads": 6},
                 "local_model": {"dim": 96, "n_layers": 2, "n_heads": 3}},
    "transformer": {"arch": "transformer", "dim": 96, "n_layers": 4, "n_heads": 3, "window": 512},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", help="clocks, shapes, fashion or speech")
    ap.add_argument("--arch", default="blt", choices=list(MODELS), help="model family (default blt)")
    ap.add_argument("--steps", type=int, default=450, help="training steps (450 ≈ 11 min on one core)")
    ap.add_argument("--minutes", type=float,
                    help="train for this many minutes instead of --steps (steps from a short timing run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--media-loss-weight", type=float, default=0.1, help="weight of image/audio targets (default 0.1)")
    ap.add_argument("--prompt-loss-weight", type=float, default=1.0,
                    help="weight of the prompt (question, input media) in the loss (default 1; 0 = answers only)")
    ap.add_argument("--opts", default="{}", help='task options as JSON (default adds {"question_last": true}; '
                    'fashion also {"draw": 0})')
    ap.add_argument("--model", default="{}", help='overrides of the --arch model\'s config as JSON, merged table by '
                    'table (e.g. \'{"adapters": {"media_conv": {"channels": 32, "kernel": 7}}}\')')
    ap.add_argument("--train", default="{}", help="overrides of the training settings as JSON (e.g. lr)")
    ap.add_argument("--n-train", type=int, default=20000, help="training examples (default 20,000)")
    ap.add_argument("--n-eval", type=int, default=300, help="scored examples (default 300)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "mm-pilot", help="folder for data and runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    opts = {"question_last": True, **({"draw": 0.0} if args.task == "fashion" else {}), **json.loads(args.opts)}
    model_over, train_over = json.loads(args.model), json.loads(args.train)
    tag = f"{args.task}-{zlib.crc32(json.dumps(opts, sort_keys=True).encode()):08x}"
    mix, ev = args.out / f"mix-{tag}-{args.n_train}", args.out / f"eval-{tag}-{args.n_eval}"
    built = (mix / "meta.json").exists() and ShardDataset(mix).has_aux("train", ANSWER_AUX)
    if not built:  # (mixes built before task datasets marked their answers are built again)
        build_mix(f"{args.task}:{args.n_train}", mix, seed=0, val_fraction=0.02, task_opts={args.task: opts})
    if not (ev / "meta.json").exists():
        eval_opts = {**opts, "split": "test"} if args.task == "fashion" else opts
        # as multimodal_tasks.py: 90% held out, scored from the val split
        build_mix(f"{args.task}:{args.n_eval * 10 // 9 + 1}", ev, seed=1, val_fraction=0.9,
                  task_opts={args.task: eval_opts})
    preset = dict(mm.FULL)
    preset["train"] = {**preset["train"], "media_loss_weight": args.media_loss_weight,
                       "prompt_loss_weight": args.prompt_loss_weight, **train_over}
    preset["model"] = merge(MODELS[args.arch], model_over)
    rate = None
    if args.minutes:
        args.steps, rate = steps_for_minutes(mm.run_config(preset, mix, 8, args.threads), args.out / "probe",
                                             args.minutes)
    prompt = "" if args.prompt_loss_weight == 1 else f"-p{args.prompt_loss_weight:g}"
    over = args.model + ("" if args.train == "{}" else args.train)  # the names of earlier runs stay the same
    arch = "" if args.arch == "blt" else f"-{args.arch}"
    name = f"run-{tag}{arch}-w{args.media_loss_weight:g}{prompt}-s{args.steps}-{zlib.crc32(over.encode()):08x}"
    t0 = time.time()
    run = train_run(mm.run_config(preset, mix, args.steps, args.threads), args.out / name)
    model = OmniModel.from_pretrained(args.out / name).eval()
    scores = score_examples(run_examples(model, ev, n=args.n_eval))
    result = {"task": args.task, "arch": args.arch, "run": str(args.out / name), "params": run["params"],
              "flops_per_byte": model.flops_per_byte(preset["train"]["seq_len"])["train"], "steps": args.steps,
              "media_loss_weight": args.media_loss_weight, "prompt_loss_weight": args.prompt_loss_weight, "opts": opts,
              "model": model_over, "train": train_over, "minutes": round((time.time() - t0) / 60, 1),
              "train_minutes": round(run["wall_s"] / 60, 1), "threads": args.threads,
              "probe_bytes_per_s": rate, "n_train": args.n_train, "flops": run["flops"],
              "scores": mm.json_safe(scores)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
