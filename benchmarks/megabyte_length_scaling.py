"""Training cost vs sequence length: MEGABYTE vs the byte transformer, 4 KiB → 64 KiB, on this CPU.

One training step (forward + backward + AdamW) on one sequence of L random bytes, for each
length and model, each measurement in a fresh process so its peak memory (`ru_maxrss`, the
process's peak resident set) is its own. Reported: median step time, bytes/s, peak RSS and the
RSS growth over the moment before the first step (activations, gradients, AdamW state).

Models of about the same size (3.98M and 3.35M parameters):
- MEGABYTE: patches of 8, global 256 × 4 layers, local 128 × 2 layers (configs/megabyte-small.toml);
- byte transformer: dim 256 × 4 layers (configs/demo.toml).
Both use SDPA attention (the transformer's causal attention runs the fused CPU kernel, so its
memory stays linear in L while its time grows as L²; MEGABYTE's global attention is over L/8
patches).

Writes a markdown table and a PNG (time and memory vs length, log-log) into benchmarks/out/ and
copies the PNG to benchmarks/megabyte_scaling.png.
Run (≈ 15 minutes in full on a 2-core CPU, mostly the transformer at 32K and 64K; --quick ≈ 1 min):
    .venv/bin/python benchmarks/megabyte_length_scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

MODELS = {
    "megabyte": ("megabyte", dict(patch_size=8, global_dim=256, global_layers=4, global_heads=4,
                                  local_dim=128, local_layers=2, local_heads=2)),
    "transformer": ("transformer", dict(dim=256, n_layers=4, n_heads=4)),
}
QUICK_MODELS = {
    "megabyte": ("megabyte", dict(patch_size=8, global_dim=64, global_layers=1, global_heads=2,
                                  local_dim=32, local_layers=1, local_heads=1)),
    "transformer": ("transformer", dict(dim=32, n_layers=1, n_heads=2)),
}
LENGTHS = [4096, 8192, 16384, 32768, 65536]
QUICK_LENGTHS = [512, 1024]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(arch: str, cfg: dict, seq_len: int, warmup: int, steps: int, threads: int) -> dict:
    """Runs in its own process: time and memory of training steps on one random sequence."""
    from omnibyte.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(arch, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 256, (1, seq_len + 1))
    rss0 = rss_mib()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {"arch": arch, "seq_len": seq_len, "params": sum(p.numel() for p in model.parameters()),
            "step_s": step_s, "bytes_per_s": seq_len / step_s, "peak_rss_mib": rss_mib(),
            "rss_growth_mib": rss_mib() - rss0, "train_flops_per_byte": model.flops_per_byte(seq_len)["train"]}


def run_one(name: str, arch: str, cfg: dict, seq_len: int, threads: int, timeout: float) -> dict:
    # the long ones take minutes per step: no warm-up step and one timed step there
    warmup, steps = (1, 2) if seq_len <= 16384 else (0, 1)
    spec = json.dumps({"arch": arch, "cfg": cfg, "seq_len": seq_len, "warmup": warmup, "steps": steps,
                       "threads": threads})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", spec]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "seq_len": seq_len, "timeout": timeout}
    if proc.returncode != 0:
        sys.exit(f"error: {name} at {seq_len} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{name:12s} {seq_len:6d}: {result['step_s']:8.2f} s/step, peak {result['peak_rss_mib']:7.0f} MiB "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return {"name": name, **result}


def table(results: list[dict], threads: int) -> str:
    by = {(r["name"], r["seq_len"]): r for r in results}
    lengths = sorted({r["seq_len"] for r in results})
    names = sorted({r["name"] for r in results})
    params = {n: next((r["params"] for r in results if r["name"] == n and "params" in r), 0) for n in names}
    lines = [f"Training step (forward + backward + AdamW), batch 1, fp32, {threads} threads, torch "
             f"{torch.__version__}. " + ", ".join(f"{n}: {params[n] / 1e6:.2f}M params" for n in names), "",
             "| length | " + " | ".join(f"{n} s/step | {n} bytes/s | {n} peak MiB | {n} growth MiB" for n in names)
             + " | transformer / megabyte time |",
             "| ---: | " + " | ".join("---: | ---: | ---: | ---:" for _ in names) + " | ---: |"]
    for L in lengths:
        cells = []
        for n in names:
            r = by.get((n, L), {})
            if "timeout" in r:
                cells.append(f"> {r['timeout']:.0f} | – | – | –")
            else:
                cells.append(f"{r['step_s']:.2f} | {r['bytes_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                             f"{r['rss_growth_mib']:,.0f}")
        mb, tf = by.get(("megabyte", L), {}), by.get(("transformer", L), {})
        ratio = f"{tf['step_s'] / mb['step_s']:.1f}×" if "step_s" in mb and "step_s" in tf else "–"
        lines.append(f"| {L:,} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name in sorted({r["name"] for r in results}):
        rows = sorted((r for r in results if r["name"] == name and "step_s" in r), key=lambda r: r["seq_len"])
        xs = [r["seq_len"] for r in rows]
        ax_t.plot(xs, [r["step_s"] for r in rows], "o-", label=name)
        ax_m.plot(xs, [r["peak_rss_mib"] for r in rows], "o-", label=name)
    lengths = sorted({r["seq_len"] for r in results})
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models at 512 and 1024 bytes: checks the script")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--out", default=str(HERE / "out"))
    args = ap.parse_args()
    models, lengths = (QUICK_MODELS, QUICK_LENGTHS) if args.quick else (MODELS, LENGTHS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_one(name, arch, cfg, L, args.threads, args.timeout)
               for L in lengths for name, (arch, cfg) in models.items()]
    stem = "megabyte_length_scaling" + ("-quick" if args.quick else "")
    md = table(results, args.threads)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    png = out / ("megabyte_scaling" + ("-quick" if args.quick else "") + ".png")
    plot(results, png)
    if not args.quick:
        shutil.copy(png, HERE / "megabyte_scaling.png")
    print(md)
    print(f"plot: {png}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        spec = json.loads(sys.argv[2])
        print(json.dumps(measure(spec["arch"], spec["cfg"], spec["seq_len"], spec["warmup"], spec["steps"],
                                 spec["threads"])))
    else:
        main()
