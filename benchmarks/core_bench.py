"""Core speed benchmarks: the trainer's overhead over a bare training loop, and incremental
decoding (KV cache) against re-running the whole sequence for every new byte.

    .venv/bin/python -m benchmarks.core_bench            # full: writes benchmarks/results_core.md
    .venv/bin/python -m benchmarks.core_bench --quick    # a smoke run on a tiny model, prints only

Training: a 4-layer, 256-wide byte transformer, batch 8 × 1024, fp32, 2 threads. The trainer is
timed in its real loop (`Trainer.fit`: data loading, lr, clipping, logging every step; no eval),
its per-step seconds read from its own metrics.jsonl. The bare loop is forward + backward + AdamW
(the trainer's optimizer) on batches made beforehand, same model and batch, in the same process.
The two are interleaved by rounds: each round runs one fresh block of each (a new model, warm-up
steps, then timed steps), in an order that alternates between rounds; a block's median step is the
round's sample.

Generation: greedy decoding of N new bytes (--gen, default 1,000) after a 64-byte prompt with
`omnibyte.generate.generate` (KV caches), against the naive loop that runs the model over the
whole sequence for every new byte (`omnibyte.generate.reference.rerun_greedy`, every step run),
one call of each per round, interleaved the same way. Both produce the same bytes (checked). The
naive loop grows quadratically with N (about 1 minute at 1,000 bytes, 20 at 4,000 on a 2-core
CPU), so for long N `--rerun-samples K` estimates it instead from timed forward passes at K evenly
spaced lengths (midpoints of K equal bins, each weighted by its bin width); the table then says
"estimated". --quick runs both the full loop and the estimate, to show the estimate is sound.

Both parts run 7 interleaved rounds by default (`benchmarks.common.compare`). Tables give the
median over rounds and the range (min–max); ratios are ratios of medians with the range of the
per-round ratios; the per-round samples follow each table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    Measured,
    bytes_only,
    compare,
    fmt_rate,
    fmt_speedup,
    fmt_time,
    header,
    how_timed,
    load_line,
    per_round_table,
    results_file,
    results_option,
    speedup,
    step_seconds,
    train_run,
    train_step,
    write_section,
)
from omnibyte.data import BatchLoader, prepare
from omnibyte.format import BOS
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.reference import rerun_greedy
from omnibyte.models import build_model
from omnibyte.train import load_run_config
from omnibyte.train.optim import make_optimizer

FULL = {"dim": 256, "n_layers": 4, "n_heads": 4, "batch_size": 8, "seq_len": 1024, "warmup": 2, "steps": 3,
        "rounds": 7, "gen": [1000], "gen_rounds": 7}
QUICK = {"dim": 64, "n_layers": 2, "n_heads": 4, "batch_size": 2, "seq_len": 128, "warmup": 1, "steps": 2,
         "rounds": 2, "gen": [60, 120], "gen_rounds": 2}
WORDS = ("and", "the", "of", "unto", "shall", "he", "in", "that", "for", "his", "a", "lord", "they", "be",
         "is", "him", "not", "them", "it", "with", "all", "thou", "thy", "was", "god", "which", "my", "me")


def synthetic_dataset(folder: Path, n_bytes: int) -> Path:
    """A prepared text dataset of about n_bytes (word soup in 4 kB documents), no val split."""
    rng = random.Random(0)
    src = folder / "src"
    src.mkdir(parents=True)
    for d in range(max(1, n_bytes // 4096)):
        words = [rng.choice(WORDS) for _ in range(4096 // 4)]
        (src / f"{d:05d}.txt").write_text(" ".join(words) + ".\n")
    prepare([src], folder / "ds", val_fraction=0.0)
    return folder / "ds"


# ----------------------------------------------------------------------------- training


def run_overrides(s: dict, data: Path, threads: int) -> dict:
    return {"model": {"arch": "transformer", "dim": s["dim"], "n_layers": s["n_layers"], "n_heads": s["n_heads"]},
            "data": {"path": str(data)},
            "train": {"steps": s["warmup"] + s["steps"], "batch_size": s["batch_size"], "seq_len": s["seq_len"],
                      "lr": 1e-3, "warmup_steps": 2, "eval_every": 0, "save_every": 0, "log_every": 1,
                      "device": "cpu", "dtype": "fp32", "threads": threads}}


def bench_train(s: dict, folder: Path, threads: int, quick: bool) -> dict:
    data = synthetic_dataset(folder, 200_000 if quick else 2_000_000)
    raw = run_overrides(s, data, threads)
    cfg = load_run_config(None, raw)
    tc = cfg.train
    torch.set_num_threads(threads)
    loader = BatchLoader(data, "train", tc.batch_size, tc.seq_len, tc.seed)
    batches = [loader.get_batch(i)["ids"] for i in range(4)]

    def bare() -> Measured:
        torch.manual_seed(tc.seed)
        model = build_model(cfg.arch, cfg.model).train()
        step = train_step(model, batches, opt=make_optimizer(model, tc, torch.device("cpu")))
        return Measured(compare({"bare": step}, repeats=s["steps"], warmup=s["warmup"])["bare"].median)

    def trainer() -> Measured:
        run = train_run(raw, folder / "run")
        return Measured(statistics.median(step_seconds(folder / "run", run["bytes_per_step"], skip=s["warmup"])),
                        run["params"])

    print(f"training: {s['rounds']} rounds of a bare block and a Trainer.fit block ({s['warmup']} warm-up + "
          f"{s['steps']} steps each) ...", flush=True)
    t = compare({"bare": bare, "trainer": trainer}, repeats=s["rounds"], warmup=0, log=True)
    return {"bare": t["bare"], "trainer": t["trainer"], "bytes": tc.batch_size * tc.seq_len,
            "params": t["trainer"].values[-1]}


# ----------------------------------------------------------------------------- generation


@torch.no_grad()
def rerun_estimate(model, prompt: list[int], n: int, k: int) -> float:
    """Seconds the naive loop would take for n new bytes: K bins of steps, each costed by one
    timed forward (a step of the naive loop) at the bin's middle length."""
    ids = torch.randint(0, 256, (1, len(prompt) + n))
    ids[0, : len(prompt)] = torch.tensor(prompt)
    model(ids[:, : len(prompt) + n // 2])  # warm-up
    edges = [round(i * n / k) for i in range(k + 1)]
    total = 0.0
    for lo, hi in zip(edges, edges[1:]):
        if hi == lo:
            continue
        length = len(prompt) + (lo + hi - 1) // 2  # the step's input length at the bin's middle
        total += (hi - lo) * compare({"step": lambda length=length: model(ids[:, :length]).logits[0, -1].argmax()},
                                     repeats=1, warmup=0)["step"].median
    return total


def bench_generate(s: dict, threads: int, samples: int, check_full: bool) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": s["dim"], "n_layers": s["n_layers"], "n_heads": s["n_heads"]}).eval()
    prompt = [BOS, *b"In the beginning God created the heaven and the earth. And the ea"][:64]
    generate(model, [prompt], SamplingConfig(max_new=8, temperature=0))  # warm-up
    out = []
    for n in s["gen"]:
        cfg = SamplingConfig(max_new=n, temperature=0)
        sides = {"cached": lambda cfg=cfg: generate(model, [prompt], cfg, constraints=[bytes_only()])[0]}
        if samples:
            sides["re-run"] = lambda n=n: Measured(rerun_estimate(model, prompt, n, samples))
            how = f"ESTIMATED from {samples} timed steps"
        else:
            sides["re-run"] = lambda n=n: rerun_greedy(model, prompt, n, bytes_only())
            how = "measured: every step run"
        print(f"generation: {n} bytes, {s['gen_rounds']} rounds ...", flush=True)
        row = {"n": n, "how": how, **compare(sides, repeats=s["gen_rounds"], warmup=0, log=True)}
        if not samples and row["re-run"].values[-1] != row["cached"].values[-1]:
            raise SystemExit(f"error: at {n} bytes the naive loop and the KV-cache loop made different bytes")
        if check_full:
            full = compare({"full": lambda n=n: rerun_greedy(model, prompt, n, bytes_only())}, repeats=1,
                           warmup=0)["full"]
            assert full.values[0] == row["cached"].values[-1], "the naive loop and the KV-cache loop disagree"
            row["full"] = full
        out.append(row)
    return out


# ----------------------------------------------------------------------------- report


def report(s: dict, threads: int, train: dict | None, gen: list[dict]) -> list[str]:
    lines = []
    if train:
        model = (f"{s['n_layers']}-layer, {s['dim']}-wide byte transformer ({train['params'] / 1e6:.2f} M "
                 f"parameters), fp32, {threads} threads")
        bare, trainer = train["bare"], train["trainer"]
        mid, lo, hi = speedup(bare, trainer)
        lines += [f"Training: {model}; batch {s['batch_size']} × {s['seq_len']}; {how_timed(s['rounds'])}, "
                  f"each the median of {s['steps']} steps after {s['warmup']} warm-up steps of a fresh block.", "",
                  "| training loop | s/step | bytes/s |", "| --- | ---: | ---: |",
                  f"| bare: forward + backward + AdamW on pre-made batches | {fmt_time(bare)} | "
                  f"{fmt_rate(bare, train['bytes'])} |",
                  f"| `Trainer.fit`: data loading, lr, clip, log every step | {fmt_time(trainer)} | "
                  f"{fmt_rate(trainer, train['bytes'])} |", "",
                  f"Trainer overhead: {mid - 1:+.1%} (per round {lo - 1:+.1%} to {hi - 1:+.1%}; target ≤ 10%).", "",
                  "Per-round seconds per step:", "", *per_round_table({"bare": bare, "trainer": trainer}, "trainer",
                                                                      "s/step"), ""]
    if gen:
        lines += [f"Generation: {s['n_layers']}-layer, {s['dim']}-wide byte transformer, greedy, 64-byte prompt, "
                  "bytes only (no EOS, so no early stop); the full re-run is "
                  f"`omnibyte.generate.reference.rerun_greedy`; {how_timed(s['gen_rounds'])} of one whole generation "
                  "per side (an estimated re-run is one estimate per round).", "",
                  "| new bytes | KV cache bytes/s | full re-run bytes/s | speed-up | re-run timing |",
                  "| ---: | ---: | ---: | ---: | --- |"]
        for r in gen:
            rerun = fmt_rate(r["re-run"], r["n"], "{:,.1f}")
            lines.append(f"| {r['n']:,} | {fmt_rate(r['cached'], r['n'])} | {rerun} | "
                         f"{fmt_speedup(r['cached'], r['re-run'], '{:,.1f}')} | {r['how']} |")
        for r in gen:
            lines += ["", f"Per-round seconds, {r['n']:,} new bytes:", "",
                      *per_round_table({"KV cache": r["cached"], "re-run": r["re-run"]}, "re-run", "s", fmt="{:.2f}")]
        full = [r for r in gen if "full" in r]
        if full:
            lines += ["", "Estimate check (full re-run vs estimate): " + ", ".join(
                f"{r['n']} bytes {r['full'].median:.2f} s vs {r['re-run'].median:.2f} s" for r in full)]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model, few steps; prints only (unless --results)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rerun-samples", type=int,
                   help="estimate the naive re-run loop from this many timed steps (0: run every step; default 0, "
                        "quick 24, checked against the full loop)")
    p.add_argument("--gen", help="new-byte counts to generate, comma-separated (default 1000; quick 60,120)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of each part (default 7; quick 2)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-generate", action="store_true")
    results_option(p, "results_core.md")
    args = p.parse_args()
    s = dict(QUICK if args.quick else FULL)
    torch.set_num_threads(args.threads)  # before the header, whose machine line names the threads
    started = header("")[2:]  # command, date and load average as the run starts (the title is set below)
    if args.gen:
        s["gen"] = [int(x) for x in args.gen.split(",")]
    if args.rounds:
        s["rounds"] = s["gen_rounds"] = args.rounds
    with tempfile.TemporaryDirectory(prefix="omnibyte-bench-") as tmp:
        train = None if args.skip_train else bench_train(s, Path(tmp), args.threads, args.quick)
    samples = args.rerun_samples if args.rerun_samples is not None else (24 if args.quick else 0)
    gen = [] if args.skip_generate else bench_generate(s, args.threads, samples, check_full=args.quick)
    lines = report(s, args.threads, train, gen) + ["", load_line()]
    print("\n".join(lines))
    out = results_file(args, "results_core.md")
    if out and not (args.skip_train and args.skip_generate):  # a part run alone gets a section of its own
        key, title = {(False, False): ("core_bench", "Trainer overhead and KV-cache generation"),
                      (True, False): ("core_bench-generation", "KV-cache generation against a full re-run"),
                      (False, True): ("core_bench-training", "Trainer overhead")}[args.skip_train, args.skip_generate]
        write_section(out, key, [f"## {title}", "", *started] + lines)


if __name__ == "__main__":
    main()
