"""Faster models from trained ones (issue 28): layer pruning + continued training (the
Whisper-turbo recipe) against distillation of the pruned model from the full one (the
Distil-Whisper recipe), at equal training compute, for a BLT and a MEGABYTE trained on the KJV.

1. Data: the KJV chapters cut three ways with the library's `write_dataset`: 2% of the chapters
   (a seeded choice) are the test text, kept in a dataset of their own (`kjv3-test`, whose one
   split is named "train", as in every dataset without a held-out part); the rest is prepared
   with a 2% validation split (`kjv3`). Training uses kjv3's train split, every choice below is
   made on its val split, and the test text is scored once per final model.
2. Teachers: the model sizes of `configs/blt-small.toml` with space patching (no entropy model to
   train) and of `configs/megabyte-small.toml`, trained on kjv3 at demo scale by default (batch 8 of
   512 bytes, 400 steps: about 1.6 MB, 0.4 of an epoch, a few minutes on one thread; the configs'
   own step counts and sizes with --teacher-steps 0).
3. Students: half the layers of the per-patch stack (BLT latent, MEGABYTE global) and of the
   per-byte decoder (BLT decoder, MEGABYTE local). Which layers: each stack in turn keeps the half
   that scores best on val straight after pruning (the others as chosen so far).
4. Both recipes start from that pruned model (`omnibyte train --init`) with a budget of a quarter
   of the teacher's training FLOPs (`train.flops`): continued training on the data, and
   distillation from the teacher (`train.distill_from`), whose forward passes count in the budget,
   so it takes fewer steps. Each recipe's learning rate is chosen on val from `--lrs`.
5. One table per family: val and test bits per byte, parameters, training FLOPs, and cached greedy
   generation bytes/s (batch 1 and batch 16), the models timed interleaved (`compare`), median
   (min–max).

    nice -n 19 .venv/bin/python -m benchmarks.prune_distill --threads 1   # ≈ 30 CPU-minutes
    .venv/bin/python -m benchmarks.prune_distill --quick    # tiny models, a few minutes, prints only

Runs are kept in --out and reused when their settings are unchanged (a rerun only times and scores).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

from benchmarks.common import (
    OUT,
    REPO,
    bytes_only,
    compare,
    fmt_rate,
    fmt_speedup,
    header,
    results_file,
    results_option,
    spread,
    train_run,
    write_section,
)

FAMILIES = {  # family → (teacher config, its overrides, the stacks the students halve)
    "blt": ("configs/blt-small.toml", {"patcher": {"kind": "space", "entropy_model": ""}}, ("latent", "decoder")),
    "megabyte": ("configs/megabyte-small.toml", {}, ("global_model", "local_model")),
}
QUICK = {  # the same with tiny models
    "blt": ("configs/blt-tiny.toml", {"patcher": {"kind": "space"}}, ("latent", "decoder")),
    "megabyte": ("configs/megabyte-tiny.toml", {}, ("global_model", "local_model")),
}
LOADS: list[float] = []  # the 1-minute load average, sampled through the run


def note_load(what: str) -> None:
    load = os.getloadavg()[0]
    LOADS.append(load)
    print(f"[{time.strftime('%H:%M:%S')}] {what} (load {load:.1f})", flush=True)


# --------------------------------------------------------------------------- data


def three_way_kjv(folder: Path, quick: bool) -> tuple[Path, Path]:
    """(kjv3, kjv3-test): the train/val dataset and the test dataset, made once."""
    from omnibyte.data import is_dataset, write_dataset
    from omnibyte.data.corpus import KJV_SOURCE, kjv_documents

    train_val, test = folder / "kjv3", folder / "kjv3-test"
    if is_dataset(train_val) and is_dataset(test):
        return train_val, test
    import numpy as np

    docs = list(kjv_documents())
    if quick:  # the first chapters, about 120 kB
        sizes = np.cumsum([len(d.segments[0].data) for d in docs])
        docs = docs[:int(np.searchsorted(sizes, 120_000)) + 1]
    is_test = np.zeros(len(docs), dtype=bool)
    is_test[np.random.default_rng(28).permutation(len(docs))[:max(2, round(0.02 * len(docs)))]] = True
    source = [f"{KJV_SOURCE}, chapters cut three ways (seed 28)"]
    write_dataset([d for d, t in zip(docs, is_test) if not t], train_val, sources=source, val_fraction=0.02)
    write_dataset([d for d, t in zip(docs, is_test) if t], test, sources=source, val_fraction=0.0)
    return train_val, test


# --------------------------------------------------------------------------- runs


def ensure_run(name: str, raw: dict, out: Path, base: Path | None = None) -> dict:
    """Train `raw` (over `base`) into out/runs/name unless a finished run of the same settings is
    there; a run of the same settings stopped by a signal (it saved a checkpoint) is resumed."""
    run_dir = out / "runs" / name
    record_file, key_file = run_dir / "bench.json", out / "runs" / f"{name}.key.json"
    key = {"raw": raw, "base": str(base) if base else None}
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        if record.get("key") == key and record.get("val_bpb") is not None:
            print(f"  {name}: reusing the finished run", flush=True)
            return record
    stopped = (run_dir / "checkpoint" / "trainer.pt").is_file() and key_file.is_file() \
        and json.loads(key_file.read_text()) == key
    note_load(f"{'resuming' if stopped else 'training'} {name}")
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps(key) + "\n")
    record = {"key": key, **(resume_run(raw, run_dir, base) if stopped else train_run(raw, run_dir, base)),
              "run": str(run_dir)}
    if record["val_bpb"] is None:  # stopped by a signal before its final evaluation: not a finished run
        raise SystemExit(f"{name}: training stopped at step {record['steps']} (checkpoint saved); run again to "
                         f"resume it")
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    note_load(f"trained {name}: val {record['val_bpb']:.4f} bpb, {record['steps']} steps, {record['wall_s']:.0f} s")
    return record


def resume_run(raw: dict, run_dir: Path, base: Path | None) -> dict:
    """train_run's record for a run continued from its checkpoint (wall_s: the part trained now)."""
    from omnibyte.train import Trainer, load_run_config

    trainer = Trainer(load_run_config(base, raw), run_dir, resume=True, quiet=True)
    t0 = time.perf_counter()
    last = trainer.fit()
    return {"steps": trainer.step, "wall_s": time.perf_counter() - t0, "resumed": True,
            "bytes": trainer.step * trainer.bytes_per_step, "bytes_per_step": trainer.bytes_per_step,
            "flops": trainer.step * trainer.bytes_per_step * trainer.flops_per_byte,
            "params": trainer.model.num_params(), "val_bpb": last.get("val_bpb")}


def score(model_dir: Path, dataset: Path, split: str, seq_len: int) -> float:
    """Bits per byte of the saved model on a whole split."""
    from omnibyte.data import ShardDataset
    from omnibyte.eval.runner import score_dataset
    from omnibyte.models import OmniModel

    model = OmniModel.from_pretrained(model_dir)
    return score_dataset(model, ShardDataset(dataset), split, seq_len)["bpb"]


def choose_layers(teacher_dir: Path, stacks: tuple[str, ...], data: Path,
                  seq_len: int) -> tuple[dict[str, list[int]], list[str]]:
    """Half the layers of each of `stacks`, chosen in turn by val bpb straight after pruning."""
    from omnibyte.data import ShardDataset
    from omnibyte.eval.runner import score_dataset
    from omnibyte.models import OmniModel
    from omnibyte.models.prune import prune

    teacher = OmniModel.from_pretrained(teacher_dir)
    dataset = ShardDataset(data)
    keep: dict[str, list[int]] = {}
    log = []
    for stack in stacks:
        n = len(teacher.stacks()[stack].layers)
        scored = []
        for layers in itertools.combinations(range(n), n // 2):
            bpb = score_dataset(prune(teacher, {**keep, stack: list(layers)}), dataset, "val", seq_len)["bpb"]
            scored.append((bpb, list(layers)))
        best = min(scored)
        keep[stack] = best[1]
        log.append(f"{stack}: " + ", ".join(f"{','.join(map(str, ls))} → {b:.3f}" for b, ls in scored))
        print(f"  {log[-1]}", flush=True)
    return keep, log


# --------------------------------------------------------------------------- timing


def generation_speed(models: dict[str, Path], prompt: list[int], new: int, rows: int,
                     repeats: int) -> dict:
    """Cached greedy generation of `new` bytes for `rows` copies of `prompt`, every model timed in
    every round (order rotated)."""
    from omnibyte.generate import SamplingConfig, generate
    from omnibyte.models import OmniModel

    loaded = {name: OmniModel.from_pretrained(path) for name, path in models.items()}
    cfg = SamplingConfig(max_new=new, temperature=0, stop_at_eos=False)

    def side(model):
        return lambda: generate(model, [prompt] * rows, cfg, [bytes_only() for _ in range(rows)])

    return compare({name: side(m) for name, m in loaded.items()}, repeats=repeats)


# --------------------------------------------------------------------------- one family


def run_family(family: str, args, data: Path, test: Path) -> list[str]:
    import torch

    from omnibyte.config import merge
    from omnibyte.train.warmstart import prune_run

    config, overrides, stacks = (QUICK if args.quick else FAMILIES)[family]
    base = REPO / config
    out = args.out / family
    train_over = {"data": {"path": str(data)}, "train": {"threads": args.threads}}
    if args.teacher_steps and not args.quick:
        train_over["train"].update(steps=args.teacher_steps, batch_size=args.batch_size, seq_len=args.seq_len,
                                   warmup_steps=max(1, args.teacher_steps // 12), eval_every=0, eval_batches=0,
                                   save_every=0)
    if args.quick:
        train_over["train"].update(steps=60, eval_every=0, save_every=0, eval_batches=0)
    note_load(f"{family}: teacher")
    teacher = ensure_run("teacher", merge(overrides, train_over), out, base)
    teacher_dir = Path(teacher["run"])
    tcfg = json.loads((teacher_dir / "run.json").read_text())["train"]
    seq_len, budget = tcfg["seq_len"], teacher["flops"] / 4

    note_load(f"{family}: choosing the layers to keep on val")
    chosen_file = out / "keep.json"  # the choice, kept with the teacher it was made for
    made = json.loads(chosen_file.read_text()) if chosen_file.is_file() else {}
    if made.get("teacher_key") == teacher["key"]:
        keep, keep_log = made["keep"], made["log"]
        print(f"  reusing the choice made on val: {keep}", flush=True)
    else:
        keep, keep_log = choose_layers(teacher_dir, stacks, data, seq_len)
        chosen_file.write_text(json.dumps({"teacher_key": teacher["key"], "keep": keep, "log": keep_log}) + "\n")
    pruned = out / "runs" / ("pruned-" + "-".join(f"{s}{''.join(map(str, keep[s]))}" for s in stacks))
    if not pruned.exists():
        prune_run(teacher_dir, keep, pruned)

    student_train = {k: tcfg[k] for k in ("batch_size", "seq_len", "grad_accum", "weight_decay", "seed")}
    student_train.update(steps=10**6, flops=budget, warmup_steps=args.warmup, eval_every=0, eval_batches=0,
                         save_every=0, log_every=10, threads=args.threads)
    recipes = {"pruned + training": {}, "pruned + distillation": {"distill_from": str(teacher_dir),
                                                                   "distill_weight": args.distill_weight}}
    recipes = {k: v for k, v in recipes.items() if ("distill" if v else "train") in args.recipes}
    chosen, tried = {}, {}
    for recipe, extra in recipes.items():
        runs = {}
        for lr in args.lrs:
            tag = ("distill" if extra else "train") + f"-lr{lr:g}"
            raw = {"data": {"path": str(data)}, "train": {**student_train, "lr": lr, "init": str(pruned), **extra}}
            runs[lr] = ensure_run(tag, raw, out)
        tried[recipe] = runs
        chosen[recipe] = min(runs.values(), key=lambda r: r["val_bpb"])

    note_load(f"{family}: scoring val and test")
    rows = {"teacher": teacher, "pruned, no training": {"run": str(pruned), "flops": 0.0, "steps": 0}, **chosen}
    for r in rows.values():
        r["val"] = score(Path(r["run"]), data, "val", seq_len)
        r["test"] = score(Path(r["run"]), test, "train", seq_len)

    from omnibyte.data import ShardDataset

    prompt_ids = [int(i) for i in ShardDataset(test).stream("train")[:64]]  # BOS and the first test chapter's start
    timed = {"teacher": Path(teacher["run"]), **{k: Path(v["run"]) for k, v in chosen.items()}}
    speeds = {}
    for batch in (1, 16):
        note_load(f"{family}: timing cached generation, batch {batch}")
        torch.set_num_threads(args.gen_threads)
        speeds[batch] = generation_speed(timed, prompt_ids, args.gen_bytes if batch == 1 else args.gen_bytes // 2,
                                         batch, args.repeats)
        torch.set_num_threads(args.threads)

    from omnibyte.models import OmniModel

    flags = [f"--{table}.{k} {v!r}" for table, sub in merge(overrides, {"train": {
        k: v for k, v in train_over["train"].items() if k in ("steps", "batch_size", "seq_len")}}).items()
        for k, v in sub.items()]
    lines = [f"### {family}: {config} {' '.join(flags) or '(as it is)'}, students "
             f"keep {', '.join(f'{s} {keep[s]}' for s in stacks)}", ""]
    lines += ["| model | parameters | training FLOPs | steps | val bpb | test bpb | test vs teacher | "
              "generation bytes/s, batch 1 | vs teacher | batch 16 | vs teacher |", "|" + " --- |" * 11]
    base_t = rows["teacher"]["test"]
    for name, r in rows.items():
        params = OmniModel.from_pretrained(r["run"]).num_params()
        cells = [name, f"{params:,}", f"{r['flops']:.3g}", str(r["steps"]), f"{r['val']:.4f}", f"{r['test']:.4f}",
                 "—" if name == "teacher" else f"{100 * (r['test'] / base_t - 1):+.2f}%"]
        for batch in (1, 16):
            new = args.gen_bytes if batch == 1 else args.gen_bytes // 2
            t = speeds[batch].get(name)
            if t is None:
                cells += ["(as the students)", ""]
                continue
            cells.append(fmt_rate(t, new * batch))
            cells.append("—" if name == "teacher" else fmt_speedup(t, speeds[batch]["teacher"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"- teacher: {teacher['steps']} steps, {teacher['flops']:.3g} training FLOPs, "
              f"{teacher['wall_s'] / 60:.0f} min{' (the part after resuming)' if teacher.get('resumed') else ''}; "
              f"student budget {budget:.3g} FLOPs (a quarter), warm-up "
              f"{args.warmup} steps, distillation weight {args.distill_weight} at temperature 1",
              "- layers kept, val bpb straight after pruning: " + "; ".join(keep_log)]
    for recipe, runs in tried.items():
        lines.append(f"- {recipe}, val bpb by peak learning rate: "
                     + ", ".join(f"{lr:g} → {r['val_bpb']:.4f} ({r['steps']} steps, {r['wall_s'] / 60:.0f} min)"
                                 for lr, r in runs.items()))
    lines.append(f"- generation: {args.gen_bytes} new bytes (batch 1) and {args.gen_bytes // 2} per row (batch 16) "
                 f"after a {len(prompt_ids)}-id prompt of the test text, greedy, byte values only, "
                 f"{args.gen_threads} thread(s), {args.repeats} interleaved rounds")
    lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="blt,megabyte", help="comma-separated: blt, megabyte")
    ap.add_argument("--out", type=Path, default=OUT / "prune_distill", help="runs and data (kept, reused)")
    ap.add_argument("--lrs", default="1e-3,3e-3", help="peak learning rates tried for each recipe (chosen on val)")
    ap.add_argument("--distill-weight", type=float, default=0.5, help="train.distill_weight of the distilled student")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up steps of the students")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training and scoring")
    ap.add_argument("--gen-threads", type=int, default=1, help="torch threads for timing generation")
    ap.add_argument("--gen-bytes", type=int, default=512, help="new bytes per timed generation at batch 1")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--teacher-steps", type=int, default=400,
                    help="teacher training steps (0: the config's own steps, batch and sequence length)")
    ap.add_argument("--batch-size", type=int, default=8, help="teacher and student batch (with --teacher-steps)")
    ap.add_argument("--seq-len", type=int, default=512, help="teacher and student sequence length "
                    "(with --teacher-steps)")
    ap.add_argument("--recipes", default="train,distill",
                    help="comma-separated: train (continued training), distill (distillation)")
    ap.add_argument("--quick", action="store_true", help="tiny models and data, a few minutes; prints only")
    results_option(ap, "results_prune.md")
    args = ap.parse_args()
    args.lrs = [float(x) for x in args.lrs.split(",")]
    args.recipes = {r.strip() for r in args.recipes.split(",")}
    if not args.recipes or not args.recipes <= {"train", "distill"}:
        ap.error("--recipes: choose from train, distill")
    families = [f.strip() for f in args.families.split(",")]
    if any(f not in FAMILIES for f in families):
        ap.error(f"--families: choose from {', '.join(FAMILIES)}")
    if args.quick:
        args.out, args.gen_bytes, args.repeats = args.out.with_name(args.out.name + "-quick"), 64, 3
    import torch

    torch.set_num_threads(args.threads)
    note_load("start")
    data, test = three_way_kjv(args.out, args.quick)
    lines = []
    for family in families:
        lines += run_family(family, args, data, test)
    note_load("done")
    notes = [f"data: {data.name} (train / val) and {test.name} (test), KJV chapters cut three ways; choices on val, "
             f"test scored once per model",
             f"load average (1 min) sampled at each phase: {spread(LOADS, '{:.1f}')} on {os.cpu_count()} cores"]
    section = header("Pruning and distillation at a quarter of the teacher's compute", notes) + lines
    print("\n".join(section))
    results = results_file(args, "results_prune.md")
    if results is not None:
        write_section(results, "prune_distill_" + "_".join(families), section,
                      title="Faster models from trained ones: pruning and distillation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
