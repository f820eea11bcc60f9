"""This checkout against another one (say, the commit before a refactor) on the same machine: a
training step (forward, backward, AdamW) and cached greedy generation of each model family, timed
round by round, each round one fresh process per checkout, in an order that alternates between
rounds, so the machine's noise falls on both alike.

    git worktree add /tmp/before <commit> && cp -r benchmarks /tmp/before/
    .venv/bin/python -m benchmarks.checkout_ab --against /tmp/before

The models are given in the config names of the older layout (dim_local, global_dim, ...), which
every omnibyte reads: a checkout with `omnibyte.models.compat` translates them. A worker uses
only what both layouts have (`build_model`, `forward`, `generate`). Each worker reports the median
of its timed steps, the loss of its first step and a hash of the generated ids, so equal values
show the two checkouts compute the same thing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    Measured,
    compare,
    fmt_speedup,
    header,
    results_file,
    results_option,
    run_worker,
    write_section,
)

# blt_speed's training models (global 256 × 4 layers) and the MEGABYTE / byte transformer of the
# peer comparisons, in the older config names
MODELS = {
    "transformer": {"arch": "transformer", "dim": 256, "n_layers": 4, "n_heads": 4},
    "megabyte": {"arch": "megabyte", "patch_size": 8, "global_dim": 256, "global_layers": 4, "global_heads": 4,
                 "local_dim": 128, "local_layers": 2, "local_heads": 2},
    "blt-static": {"arch": "blt", "dim_local": 64, "dim_global": 256, "hash_buckets": 4096,
                   "encoder": {"n_layers": 1, "n_heads": 2, "window": 128}, "latent": {"n_layers": 4, "n_heads": 4},
                   "decoder": {"n_layers": 2, "n_heads": 2, "window": 128},
                   "patcher": {"kind": "static", "patch_size": 4}},
    "blt-space": {"arch": "blt", "dim_local": 64, "dim_global": 256, "hash_buckets": 4096,
                  "encoder": {"n_layers": 1, "n_heads": 2, "window": 128}, "latent": {"n_layers": 4, "n_heads": 4},
                  "decoder": {"n_layers": 2, "n_heads": 2, "window": 128}, "patcher": {"kind": "space"}},
}
QUICK = {"batch": 2, "seq_len": 256, "steps": 2, "gen": 40}
FULL = {"batch": 4, "seq_len": 2048, "steps": 5, "gen": 400}


def build(cfg: dict):
    """The model of an older-layout config in whatever layout this process's omnibyte has."""
    from omnibyte.models import build_model

    cfg = dict(cfg)
    arch = cfg.pop("arch")
    try:
        from omnibyte.models.compat import model_config
    except ImportError:  # the older layout itself
        return build_model(arch, cfg)
    return build_model(arch, model_config(arch, cfg))


def measure(name: str, size: dict, threads: int) -> dict:
    """One process's numbers for one model: median training step seconds, first loss, generation
    seconds and the generated ids' hash."""
    import torch

    from omnibyte.format import BOS
    from omnibyte.generate import SamplingConfig, generate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(MODELS[name])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 256, (size["batch"], size["seq_len"] + 1), generator=g)
    text = b"In the beginning God created the heaven and the earth. "
    ids[:, :] = torch.tensor(list(text * (ids.shape[1] // len(text) + 1))[:ids.shape[1]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, first = [], None
    for i in range(size["steps"] + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
        first = loss.item() if first is None else first
    model.eval()
    prompt = [BOS, *text]
    cfg = SamplingConfig(max_new=size["gen"], temperature=0, stop_at_eos=False)
    generate(model, [prompt], SamplingConfig(max_new=8, temperature=0, stop_at_eos=False))  # warm-up
    t0 = time.perf_counter()
    out = generate(model, [prompt], cfg)[0]
    return {"step": statistics.median(times), "loss": round(first, 5), "gen": time.perf_counter() - t0,
            "hash": f"{hash(tuple(out)) & 0xFFFFFFFF:08x}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", type=Path, required=True, help="the other checkout (with this benchmarks/ copied in)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--repeats", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs (writes nothing)")
    ap.add_argument("--worker", nargs=2, metavar=("MODEL", "SIZE_JSON"), help=argparse.SUPPRESS)
    results_option(ap, "results_core.md")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], json.loads(args.worker[1]), args.threads)))
        return 0
    other = args.against.resolve()
    if other == REPO:
        ap.error("--against names this checkout")
    if not (other / "benchmarks" / "checkout_ab.py").is_file():
        ap.error(f"{other} lacks benchmarks/checkout_ab.py: copy this checkout's benchmarks/ there")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(MODELS)})")
    size = QUICK if args.quick else FULL
    roots = {"this checkout": REPO, "against": other}
    lines = []
    for name in names:
        print(f"{name}:", flush=True)

        def side(root: Path, name=name):
            def run() -> Measured:
                r = run_worker(sys.executable, "benchmarks.checkout_ab", ["--worker", name, json.dumps(size),
                                                                          "--threads", str(args.threads),
                                                                          "--against", str(other)],
                               args.threads, 3600, cwd=root)
                return Measured(r["step"], r)
            return run

        t = compare({k: side(r) for k, r in roots.items()}, repeats=args.repeats, warmup=0)
        here, there = t["this checkout"], t["against"]
        gen_here = [v["gen"] for v in here.values]
        gen_there = [v["gen"] for v in there.values]
        same = {v["loss"] for v in here.values} == {v["loss"] for v in there.values} and \
            {v["hash"] for v in here.values} == {v["hash"] for v in there.values}
        step = fmt_speedup(here, there)
        gen_ratio = statistics.median(gen_there) / statistics.median(gen_here)
        rate_here, rate_there = size["gen"] / statistics.median(gen_here), size["gen"] / statistics.median(gen_there)
        lines.append(f"| {name} | {statistics.median(here.samples) * 1e3:,.0f} / "
                     f"{statistics.median(there.samples) * 1e3:,.0f} ms | {step} | {rate_here:,.1f} / "
                     f"{rate_there:,.1f} | {gen_ratio:.2f}× | {'yes' if same else 'NO'} |")
        print("  " + lines[-1], flush=True)
    out = results_file(args, "results_core.md")
    if out is None:
        return 0
    write_section(out, "checkout_ab", [
        *header(f"This checkout against {other.name} (training step and cached generation)",
                [f"{args.repeats} rounds, each one fresh process per checkout, order alternating; batch "
                 f"{size['batch']} × {size['seq_len']} bytes, {size['steps']} timed steps per process after one "
                 f"warm-up; {size['gen']} greedy bytes after a 56-byte prompt; {args.threads} threads.",
                 "Step: median ms (this / against); speed-up = ratio of medians (range of per-round ratios; > 1: "
                 "this checkout is faster). Same numbers: the first loss and the generated ids agree."]),
        "| model | training step | step speed-up | generation bytes/s (this / against) | generation speed-up "
        "| same numbers |", "|---|---|---|---|---|---|", *lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
