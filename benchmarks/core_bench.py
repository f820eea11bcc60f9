"""Core speed benchmarks: the trainer's overhead over a bare training loop, and incremental
decoding (KV cache) against re-running the whole sequence for every new byte.

    .venv/bin/python benchmarks/core_bench.py            # full: writes benchmarks/results_core.md
    .venv/bin/python benchmarks/core_bench.py --quick    # a smoke run on a tiny model, writes nothing

Training: a 4-layer, 256-wide byte transformer, batch 8 × 1024, fp32, 2 threads. The trainer is
timed in its real loop (`Trainer.fit`: data loading, lr, clipping, logging every step; no eval):
its per-step bytes/s come from its own metrics.jsonl. The bare loop is forward + backward +
AdamW on batches made beforehand, same model, same batch, same process, measured before and
after the trainer so drift hits both. Medians over steps after warm-up.

Generation: greedy decoding of N new bytes after a 64-byte prompt with
`omnibyte.generate.generate` (KV caches), against the naive loop that runs the model over the
whole sequence for every new byte. The naive loop at 4,000 bytes takes hours on a CPU, so its
time is estimated from timed forward passes at K evenly spaced lengths (midpoints of K equal
bins, each weighted by its bin width); `--rerun-samples 0` runs it in full. --quick runs both
the full loop and the estimate, to show the estimate is sound.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_common import header, write_section  # noqa: E402

from omnibyte.data import BatchLoader, prepare  # noqa: E402
from omnibyte.format import BOS, VOCAB_SIZE  # noqa: E402
from omnibyte.generate import SamplingConfig, TextOnly, generate  # noqa: E402
from omnibyte.models import build_model  # noqa: E402
from omnibyte.train import Trainer, load_run_config  # noqa: E402
from omnibyte.train.optim import make_optimizer  # noqa: E402

FULL = {"dim": 256, "n_layers": 4, "n_heads": 4, "batch_size": 8, "seq_len": 1024, "warmup": 3, "steps": 12,
        "gen": [1000, 4000]}
QUICK = {"dim": 64, "n_layers": 2, "n_heads": 4, "batch_size": 2, "seq_len": 128, "warmup": 2, "steps": 4,
         "gen": [60, 120]}
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


def bare_steps(cfg, data: Path, n: int) -> list[float]:
    """Seconds per step of forward + backward + AdamW on pre-made batches (first step included)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_model(cfg.arch, cfg.model).train()
    opt = make_optimizer(model, tc, torch.device("cpu"))
    loader = BatchLoader(data, "train", tc.batch_size, tc.seq_len, tc.seed)
    batches = [loader.get_batch(i)["ids"] for i in range(4)]
    times = []
    for i in range(n):
        ids = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def bench_train(s: dict, folder: Path, threads: int) -> dict:
    data = synthetic_dataset(folder, 2_000_000 if s is FULL else 200_000)
    cfg = load_run_config(None, run_overrides(s, data, threads))
    torch.set_num_threads(threads)
    w, n = s["warmup"], s["steps"]
    half = (n + 1) // 2
    print(f"training: bare loop ({w} warm-up + {half} steps) ...", flush=True)
    bare = bare_steps(cfg, data, w + half)[w:]
    print(f"training: Trainer.fit ({w} warm-up + {n} steps) ...", flush=True)
    trainer = Trainer(cfg, folder / "run", quiet=True)
    trainer.fit()
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["bytes_per_s"] for r in rows if "loss" in r][w:]
    print(f"training: bare loop again ({w} warm-up + {n - half} steps) ...", flush=True)
    bare += bare_steps(cfg, data, w + n - half)[w:]
    step_bytes = s["batch_size"] * s["seq_len"]
    bare_s = statistics.median(bare)
    trainer_s = step_bytes / statistics.median(rates)
    return {"bare_s": bare_s, "trainer_s": trainer_s, "bytes": step_bytes, "overhead": trainer_s / bare_s - 1,
            "n_bare": len(bare), "n_trainer": len(rates), "params": trainer.model.num_params()}


# ----------------------------------------------------------------------------- generation


def rerun_forward(model, ids: torch.Tensor, allowed: torch.Tensor) -> int:
    """One step of the naive loop: the whole sequence through the model, next id by argmax."""
    logits = model(ids).logits[0, -1]
    return int(logits.masked_fill(~allowed, float("-inf")).argmax())


@torch.no_grad()
def rerun_full(model, prompt: list[int], n: int) -> tuple[list[int], float]:
    allowed = TextOnly().allowed(VOCAB_SIZE)
    seq = torch.tensor([prompt])
    t0 = time.perf_counter()
    for _ in range(n):
        tok = rerun_forward(model, seq, allowed)
        seq = torch.cat([seq, torch.tensor([[tok]])], dim=1)
    return seq[0, len(prompt):].tolist(), time.perf_counter() - t0


@torch.no_grad()
def rerun_estimate(model, prompt: list[int], n: int, k: int) -> float:
    """Seconds the naive loop would take for n new bytes: K bins of steps, each costed by one
    timed forward at the bin's middle length."""
    allowed = TextOnly().allowed(VOCAB_SIZE)
    ids = torch.randint(0, 256, (1, len(prompt) + n))
    ids[0, : len(prompt)] = torch.tensor(prompt)
    rerun_forward(model, ids[:, : len(prompt) + n // 2], allowed)  # warm-up
    edges = [round(i * n / k) for i in range(k + 1)]
    total = 0.0
    for lo, hi in zip(edges, edges[1:]):
        if hi == lo:
            continue
        length = len(prompt) + (lo + hi - 1) // 2  # the step's input length at the bin's middle
        t0 = time.perf_counter()
        rerun_forward(model, ids[:, :length], allowed)
        total += (hi - lo) * (time.perf_counter() - t0)
    return total


def bench_generate(s: dict, threads: int, samples: int, check_full: bool) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": s["dim"], "n_layers": s["n_layers"], "n_heads": s["n_heads"]}).eval()
    prompt = [BOS, *b"In the beginning God created the heaven and the earth. And the ea"][:64]
    out = []
    for n in s["gen"]:
        cfg = SamplingConfig(max_new=n, temperature=0, stop_at_eos=False)
        generate(model, [prompt], SamplingConfig(max_new=8, temperature=0))  # warm-up
        t0 = time.perf_counter()
        cached_ids = generate(model, [prompt], cfg)[0]
        cached = time.perf_counter() - t0
        row = {"n": n, "cached_s": cached}
        if samples:
            row["rerun_s"] = rerun_estimate(model, prompt, n, samples)
            row["rerun_how"] = f"estimated from {samples} timed steps"
            print(f"generation: {n} bytes: cached {n / cached:,.0f} B/s, re-run ≈ {n / row['rerun_s']:,.1f} B/s "
                  f"({row['rerun_how']})", flush=True)
        if check_full or not samples:
            ids, full = rerun_full(model, prompt, n)
            assert ids == cached_ids, "the naive loop and the KV-cache loop disagree"
            if samples:
                row["rerun_full_s"] = full
                print(f"generation: {n} bytes: full re-run took {full:.2f} s, estimate {row['rerun_s']:.2f} s",
                      flush=True)
            else:
                row["rerun_s"], row["rerun_how"] = full, "every step run"
        out.append(row)
    return out


# ----------------------------------------------------------------------------- report


def report(s: dict, threads: int, train: dict, gen: list[dict]) -> list[str]:
    model = (f"{s['n_layers']}-layer, {s['dim']}-wide byte transformer ({train['params'] / 1e6:.2f} M parameters), "
             f"fp32, {threads} threads")
    lines = [f"Training: {model}; batch {s['batch_size']} × {s['seq_len']}; median over {train['n_bare']} bare and "
             f"{train['n_trainer']} trainer steps after {s['warmup']} warm-up steps each.", "",
             "| training loop | s/step | bytes/s |", "| --- | ---: | ---: |",
             f"| bare: forward + backward + AdamW on pre-made batches | {train['bare_s']:.3f} | "
             f"{train['bytes'] / train['bare_s']:,.0f} |",
             f"| `Trainer.fit`: data loading, lr, clip, log every step | {train['trainer_s']:.3f} | "
             f"{train['bytes'] / train['trainer_s']:,.0f} |", "",
             f"Trainer overhead: {train['overhead']:+.1%} (target ≤ 10%).", "",
             f"Generation: same architecture, greedy, {64}-byte prompt, no early stop.", "",
             "| new bytes | KV cache bytes/s | full re-run bytes/s | speed-up | re-run timing |",
             "| ---: | ---: | ---: | ---: | --- |"]
    for r in gen:
        lines.append(f"| {r['n']:,} | {r['n'] / r['cached_s']:,.0f} | {r['n'] / r['rerun_s']:,.1f} | "
                     f"{r['rerun_s'] / r['cached_s']:,.1f}× | {r['rerun_how']} |")
    full = [r for r in gen if "rerun_full_s" in r]
    if full:
        lines += ["", "Estimate check (full re-run vs estimate): " + ", ".join(
            f"{r['n']} bytes {r['rerun_full_s']:.2f} s vs {r['rerun_s']:.2f} s" for r in full)]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few steps, writes nothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rerun-samples", type=int, default=24,
                   help="timed steps to estimate the naive re-run loop (0 = run every step)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-generate", action="store_true")
    args = p.parse_args()
    s = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="omnibyte-bench-") as tmp:
        train = None if args.skip_train else bench_train(s, Path(tmp), args.threads)
    gen = [] if args.skip_generate else bench_generate(s, args.threads, args.rerun_samples, check_full=args.quick)
    if train is None:
        train = {"bare_s": float("nan"), "trainer_s": float("nan"), "bytes": 1, "overhead": float("nan"),
                 "n_bare": 0, "n_trainer": 0, "params": 0}
    lines = report(s, args.threads, train, gen)
    print("\n".join(lines))
    if not args.quick and not args.skip_train and not args.skip_generate:
        write_section("core_bench", header("Trainer overhead and KV-cache generation") + lines)


if __name__ == "__main__":
    main()
