"""fp32 against bf16 autocast training on this CPU, for each model family: whether what
`train.dtype auto` picks here (bf16 where the CPU has AMX-BF16, else fp32) is the faster choice,
and whether it learns as well.

    .venv/bin/python -m benchmarks.dtype_auto            # full: writes its section of benchmarks/results_core.md
    .venv/bin/python -m benchmarks.dtype_auto --quick    # tiny models, a smoke run; prints only

Each family's config (configs/demo.toml; configs/megabyte-small.toml; configs/blt-small.toml with
space patches, which need no entropy model trained first) is built as two omnibyte Trainers with
the same seed, one with train.dtype fp32 and one with bf16: the trainer's own data loader, lr
schedule, micro-steps under its autocast, clipping and optimizer (BLT's hash n-gram tables with
sparse row updates). A sample is one block of K optimizer steps of one side; the sides take turns
block by block (`benchmarks.common.compare`: order alternating per round) after one untimed
warm-up block each, so load from elsewhere on the machine falls on both alike. Both sides train
on the same batches at the same steps, so at the end each has trained the same N steps: the last
block's mean training loss and the validation bits per byte of both (evaluated in fp32, first V
batches) are compared.

MFU is the model's training FLOPs per byte × bytes/s over the CPU's peak FLOP/s in the side's
dtype (`omnibyte/machine.py` derives it: cores × clock × FLOPs per cycle, AVX-512's 64 fp32 or
AMX's 1,024 bf16 per core on an AMX Xeon), as the trainer reports it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import (
    OUT,
    REPO,
    Measured,
    Timing,
    compare,
    cpu_name,
    fmt_rate,
    fmt_speedup,
    header,
    quick_corpus,
    results_file,
    results_option,
    speedup,
    spread,
    write_section,
)
from omnibyte import machine
from omnibyte.data import eval_batches
from omnibyte.eval.bpb import bits_per_byte
from omnibyte.train import Trainer, load_run_config
from omnibyte.train.optim import clip_grad_norm
from omnibyte.train.trainer import lr_at

# family → (config file, overrides): demo-sized models a 2-core CPU trains at a few thousand bytes/s
FULL = {"transformer": ("configs/demo.toml", {}),
        "megabyte": ("configs/megabyte-small.toml", {}),
        "blt": ("configs/blt-small.toml", {"patcher": {"kind": "space", "entropy_model": "", "max_patch_len": 16}})}
QUICK = {"transformer": ("configs/tiny.toml", {}),
         "megabyte": ("configs/megabyte-tiny.toml", {}),
         "blt": ("configs/blt-tiny.toml", {})}
SIDES = ("fp32", "bf16")


def make_trainer(config: str, overrides: dict, dtype: str, data: Path, steps: int, block: int, threads: int,
                 folder: Path) -> Trainer:
    """The family's Trainer in `dtype` for `steps` optimizer steps (warm-up: the first block), in a
    fresh scratch folder."""
    shutil.rmtree(folder, ignore_errors=True)
    train = {"steps": steps, "warmup_steps": block, "dtype": dtype, "device": "cpu", "threads": threads,
             "eval_every": 0, "save_every": 0}
    raw = {**overrides, "data": {"path": str(data)}, "train": train}
    return Trainer(load_run_config(REPO / config, raw), folder, quiet=True)


def steps_of(trainer: Trainer, n: int, clock: str) -> Callable[[], Measured]:
    """A call trains `trainer` n more optimizer steps as its fit() loop does (lr schedule,
    micro-steps, clipping, update; no logging, evaluation or checkpoints). Its sample is the wall
    time, or with `clock` "cpu" the CPU time of this process (what the side itself computed, which
    other jobs on the machine do not lengthen); its value holds both and the steps' mean loss."""
    tc = trainer.cfg.train

    def run() -> Measured:
        wall, cpu = time.perf_counter(), time.process_time()
        losses = []
        for _ in range(n):
            lr = lr_at(trainer.step, tc, trainer.total_steps)
            for g in trainer.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            losses.append(trainer.micro_steps(trainer.step))
            if tc.grad_clip > 0:
                clip_grad_norm(trainer.model.parameters(), tc.grad_clip)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.step += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return Measured(cpu if clock == "cpu" else wall, {"loss": statistics.fmean(losses), "wall": wall, "cpu": cpu})

    return run


def val_bpb(trainer: Trainer, batches: int) -> float:
    """Validation bits per byte of the trainer's model over the first `batches` batches, in fp32."""
    trainer.sync_weights()
    tc = trainer.cfg.train
    it = eval_batches(trainer.dataset, "val", tc.batch_size, tc.seq_len, batches, aux=tuple(trainer.extras.values()))
    return bits_per_byte(trainer.model, it, trainer.extras)["bpb"]


def bench_family(name: str, config: str, overrides: dict, data: Path, args, folder: Path) -> dict:
    steps = (1 + args.rounds) * args.block  # the warm-up block, then one block per round
    trainers = {d: make_trainer(config, overrides, d, data, steps, args.block, args.threads, folder / f"{name}-{d}")
                for d in SIDES}
    try:
        t = trainers["fp32"]
        print(f"{name} ({config}): {t.model.num_params():,} parameters, {t.bytes_per_step:,} bytes/step, "
              f"{args.rounds} rounds of {args.block} steps per side after a warm-up block ...", flush=True)
        timing = compare({d: steps_of(tr, args.block, args.clock) for d, tr in trainers.items()}, repeats=args.rounds,
                         warmup=1, log=True)
        row = {"name": name, "config": config, "params": t.model.num_params(), "fpb": t.flops_per_byte,
               "bytes": args.block * t.bytes_per_step, "steps": steps, "timing": timing}
        for d, tr in trainers.items():
            row[d] = {"loss": timing[d].values[-1]["loss"], "val_bpb": val_bpb(tr, args.val_batches), "peak": tr.peak}
        return row
    finally:
        for tr in trainers.values():
            tr.close()


CLOCKS = {"wall": "wall clock", "cpu": "this process's CPU time (1 thread: the work itself, not the waits "
                                    "that other jobs on the machine cause)"}


def wall_timing(t: Timing) -> Timing:
    """The wall-clock samples of a side timed by CPU time."""
    return Timing(tuple(v["wall"] for v in t.values), t.values)


def mfu_text(row: dict, dtype: str) -> str:
    peak = row[dtype]["peak"]
    if peak is None:
        return "—"
    return spread([row["fpb"] * row["bytes"] / s / peak.flops * 100 for s in row["timing"][dtype].samples],
                  "{:.2f}%")


def report(rows: list[dict], args, data: Path, load: tuple[tuple[float, ...], tuple[float, ...]]) -> list[str]:
    flags = machine.cpu_flags()
    peaks = {d: machine.cpu_peak(d, args.threads) for d in SIDES}
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    lines = [f"CPU: {cpu_name()}; amx_bf16 {'yes' if machine.has_amx_bf16(flags) else 'no'}, so `train.dtype auto` "
             f"picks **{machine.auto_dtype('cpu', flags)}** here; {threads}. Load average (1, 5, 15 min) "
             f"before {', '.join(f'{x:.2f}' for x in load[0])}, after {', '.join(f'{x:.2f}' for x in load[1])} "
             f"(other jobs shared the machine).", "",
             "Peaks for MFU (`omnibyte/machine.py`): " + "; ".join(
                 f"{d} {p.flops / 1e12:.3g} TFLOP/s = {p.how}" if p else f"{d} unknown" for d, p in peaks.items())
             + ".", "",
             f"Each side: omnibyte's Trainer (same seed, same batches), blocks of {args.block} optimizer steps "
             f"timed by {CLOCKS[args.clock]}, "
             f"{args.rounds} timed rounds after one warm-up block each, sides interleaved; bytes/s and MFU as "
             "median (min–max) over rounds; speed-up = ratio of medians (range of per-round ratios). Loss: mean "
             f"training loss (nats/byte) of the last block, after the same steps on both; val bpb: the first "
             f"{args.val_batches} validation batches of {data.name}, evaluated in fp32.", "",
             "| family (config) | params | FLOPs/byte | steps | fp32 bytes/s | bf16 bytes/s | bf16 speed-up | "
             "fp32 MFU | bf16 MFU | loss fp32 / bf16 | val bpb fp32 / bf16 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        t = r["timing"]
        lines.append(f"| {r['name']} (`{r['config']}`) | {r['params'] / 1e6:.2f} M | {r['fpb'] / 1e6:.1f} M | "
                     f"{r['steps']} | {fmt_rate(t['fp32'], r['bytes'])} | {fmt_rate(t['bf16'], r['bytes'])} | "
                     f"{fmt_speedup(t['bf16'], t['fp32'])} | {mfu_text(r, 'fp32')} | {mfu_text(r, 'bf16')} | "
                     f"{r['fp32']['loss']:.3f} / {r['bf16']['loss']:.3f} | "
                     f"{r['fp32']['val_bpb']:.3f} / {r['bf16']['val_bpb']:.3f} |")
    if args.clock == "cpu":  # the wall-clock view of the same blocks, which other jobs lengthened
        lines += ["", "By wall clock, the same blocks: " + "; ".join(
            f"{r['name']} bf16 speed-up {fmt_speedup(*(wall_timing(r['timing'][d]) for d in ('bf16', 'fp32')))}"
            for r in rows) + "."]
    slower = [r["name"] for r in rows if speedup(r["timing"]["bf16"], r["timing"]["fp32"])[0] < 1]
    lines += ["", "bf16 autocast is slower than fp32 here for: " + ", ".join(slower) + "." if slower
              else "bf16 autocast is faster than fp32 here for every family (ratio of medians)."]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny configs, few steps; prints only (unless --results)")
    p.add_argument("--families", default=",".join(FULL), help="comma-separated, of: " + ", ".join(FULL))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=None, help="timed blocks per side (default 7; --quick 2)")
    p.add_argument("--block", type=int, default=None, help="optimizer steps per block (default 8; --quick 2)")
    p.add_argument("--val-batches", type=int, default=8)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time a block by wall clock, or by this process's CPU time (robust to other jobs on a "
                        "busy machine; meant for --threads 1, where no thread waits on another)")
    results_option(p, "results_core.md")
    args = p.parse_args()
    configs = QUICK if args.quick else FULL
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in configs]
    if unknown or not families:
        p.error(f"--families: unknown {', '.join(unknown) or '(none given)'} (known: {', '.join(configs)})")
    args.rounds = args.rounds or (2 if args.quick else 7)
    args.block = args.block or (2 if args.quick else 8)
    if args.rounds < 1 or args.block < 1 or args.threads < 1 or args.val_batches < 1:
        p.error("--rounds, --block, --threads and --val-batches must be ≥ 1")
    folder = OUT / "dtype_auto"
    data = quick_corpus(folder) if args.quick else REPO / "data" / "kjv"
    load_before = os.getloadavg()
    rows = [bench_family(f, *configs[f], data, args, folder) for f in families]
    load = (load_before, os.getloadavg())
    lines = report(rows, args, data, load)
    print("\n".join(lines))
    out = results_file(args, "results_core.md")
    if out:
        write_section(out, "dtype_auto", header("dtype auto: fp32 against bf16 autocast training, per model family")
                      + lines)


if __name__ == "__main__":
    main()
