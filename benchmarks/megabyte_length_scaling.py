"""Training cost vs sequence length: MEGABYTE vs the byte transformer, 4 KiB → 64 KiB, on this CPU.

One training step (forward + backward + AdamW) on one sequence of L random bytes, for each
length and model, each measurement in a fresh process so its peak memory (`ru_maxrss`, the
process's peak resident set) is its own. The two models are interleaved by rounds: at each length,
each round runs one process per model, in an order that alternates between rounds; a process
times its steps after a warm-up step and reports their median (the round's sample). Reported:
step time and bytes/s (median over rounds, with the range), peak RSS and the RSS growth over the
moment before the first step (activations, gradients, AdamW state), medians over rounds.

Models of about the same size (3.98M and 3.35M parameters):
- MEGABYTE: patches of 8, global 256 × 4 layers, local 128 × 2 layers (configs/megabyte-small.toml);
- byte transformer: dim 256 × 4 layers (configs/demo.toml).
Both use SDPA attention (the transformer's causal attention runs the fused CPU kernel, so its
memory stays linear in L while its time grows as L²; MEGABYTE's global attention is over L/8
patches).

Writes its section of results_megabyte.md, the raw figures (JSON) and a PNG (time and memory vs
length, log-log) into benchmarks/out/, and copies the PNG to benchmarks/megabyte_scaling.png.
Run (≈ 10 minutes in full on a 2-core CPU, mostly the transformer at 32K and 64K; --quick ≈ 30 s):
    .venv/bin/python -m benchmarks.megabyte_length_scaling [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import (
    HERE,
    Measured,
    compare,
    fmt_rate,
    fmt_time,
    header,
    peak_rss_mib,
    results_file,
    results_option,
    run_worker,
    train_step,
    write_section,
)

MODELS = {
    "megabyte": ("megabyte", dict(patch_size=8, global_model=dict(dim=256, n_layers=4, n_heads=4),
                                  local_model=dict(dim=128, n_layers=2, n_heads=2))),
    "transformer": ("transformer", dict(dim=256, n_layers=4, n_heads=4)),
}
QUICK_MODELS = {
    "megabyte": ("megabyte", dict(patch_size=8, global_model=dict(dim=64, n_layers=1, n_heads=2),
                                  local_model=dict(dim=32, n_layers=1, n_heads=1))),
    "transformer": ("transformer", dict(dim=32, n_layers=1, n_heads=2)),
}
LENGTHS = [4096, 8192, 16384, 32768, 65536]
QUICK_LENGTHS = [512, 1024]


def measure(arch: str, cfg: dict, seq_len: int, warmup: int, steps: int, threads: int) -> dict:
    """Runs in its own process: time and memory of training steps on one random sequence."""
    from omnibyte.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, cfg).train()
    ids = torch.randint(0, 256, (1, seq_len + 1))
    rss0 = peak_rss_mib()
    t = compare({arch: train_step(model, ids, lr=1e-3)}, repeats=steps, warmup=warmup)[arch]
    return {"step_s": t.median, "params": sum(p.numel() for p in model.parameters()),
            "peak_rss_mib": peak_rss_mib(), "rss_growth_mib": peak_rss_mib() - rss0,
            "train_flops_per_byte": model.flops_per_byte(seq_len)["train"]}


def length_rounds(arch: str, cfg: dict, seq_len: int, threads: int, timeout: float):
    """One model's side at one length: a fresh process per call (a timeout is a sample of +inf)."""
    # the long ones take minutes per step: no warm-up step and one timed step there
    warmup, steps = (1, 2) if seq_len <= 16384 else (0, 1)
    spec = json.dumps({"arch": arch, "cfg": cfg, "seq_len": seq_len, "warmup": warmup, "steps": steps,
                       "threads": threads})

    def run() -> Measured:
        try:
            r = run_worker(sys.executable, "benchmarks.megabyte_length_scaling", ["--measure", spec], threads, timeout)
        except subprocess.TimeoutExpired:
            return Measured(math.inf, {"timeout": timeout})
        return Measured(r["step_s"], r)
    return run


def table(results: dict[int, dict], threads: int) -> list[str]:
    """results: length → model name → Timing."""
    names = sorted({n for by in results.values() for n in by})
    params = {n: next((v["params"] for by in results.values() for v in by[n].values if "params" in v), 0)
              for n in names}
    lines = [f"Training step (forward + backward + AdamW), batch 1, fp32, {threads} threads, torch "
             f"{torch.__version__}; median (min–max) over rounds of one process per model. "
             + ", ".join(f"{n}: {params[n] / 1e6:.2f}M params" for n in names), "",
             "| length | rounds | " + " | ".join(f"{n} s/step | {n} bytes/s | {n} peak MiB | {n} growth MiB"
                                                 for n in names) + " | transformer / megabyte time |",
             "| ---: | ---: | " + " | ".join("---: | ---: | ---: | ---:" for _ in names) + " | ---: |"]
    for L, by in sorted(results.items()):
        cells = []
        for n in names:
            t = by[n]
            timeout = next((v["timeout"] for v in t.values if "timeout" in v), None)
            if timeout is not None:
                cells.append(f"> {timeout:.0f} | – | – | –")
            else:
                peak, growth = (statistics.median(v[k] for v in t.values) for k in ("peak_rss_mib", "rss_growth_mib"))
                cells.append(f"{fmt_time(t, '{:.2f}')} | {fmt_rate(t, L)} | {peak:,.0f} | {growth:,.0f}")
        mb, tf = by["megabyte"].median, by["transformer"].median
        ratio = f"{tf / mb:.1f}×" if math.isfinite(mb) and math.isfinite(tf) else "–"
        lines.append(f"| {L:,} | {len(by[names[0]].samples)} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def plot(results: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    lengths = sorted(results)
    for name in sorted({n for by in results.values() for n in by}):
        done = [L for L in lengths if math.isfinite(results[L][name].median)]
        ax_t.plot(done, [results[L][name].median for L in done], "o-", label=name)
        ax_m.plot(done, [statistics.median(v["peak_rss_mib"] for v in results[L][name].values) for L in done],
                  "o-", label=name)
    for ax, ylabel in ((ax_t, "seconds per training step"), (ax_m, "peak RSS (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths, [f"{L // 1024} KiB" if L >= 1024 else str(L) for L in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length (bytes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("MEGABYTE vs byte transformer: one training step on one sequence (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models at 512 and 1024 bytes: checks the script")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per length up to 16 KiB (default 3; longer: 1)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--out", default=str(HERE / "out"), help="folder for the raw figures and the plot")
    results_option(ap, "results_megabyte.md")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        spec = json.loads(args.measure)
        print(json.dumps(measure(spec["arch"], spec["cfg"], spec["seq_len"], spec["warmup"], spec["steps"],
                                 spec["threads"])))
        return
    models, lengths = (QUICK_MODELS, QUICK_LENGTHS) if args.quick else (MODELS, LENGTHS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for L in lengths:
        print(f"{L} bytes ...", flush=True)
        sides = {name: length_rounds(arch, cfg, L, args.threads, args.timeout)
                 for name, (arch, cfg) in models.items()}
        results[L] = compare(sides, repeats=args.rounds if L <= 16384 else 1, warmup=0, log=True)
    stem = "megabyte_length_scaling" + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(
        {L: {n: {"step_s": t.samples, "runs": t.values} for n, t in by.items()} for L, by in results.items()},
        indent=2, default=str) + "\n")
    png = out / ("megabyte_scaling" + ("-quick" if args.quick else "") + ".png")
    plot(results, png)
    lines = header("Cost against sequence length" + (" (quick)" if args.quick else "")) + table(results, args.threads)
    if not args.quick:
        shutil.copy(png, HERE / "megabyte_scaling.png")
        lines += ["", "![MEGABYTE vs byte transformer against sequence length](megabyte_scaling.png)"]
    print("\n".join(lines))
    print(f"plot: {png}")
    results_md = results_file(args, "results_megabyte.md")
    if results_md:
        write_section(results_md, "megabyte-length-scaling", lines)


if __name__ == "__main__":
    main()
