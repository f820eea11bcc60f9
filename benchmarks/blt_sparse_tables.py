"""BLT training step time with dense AdamW over the hash n-gram tables vs sparse gradients and lazy
row updates (`--model.ngrams.sparse`, omnibyte/train/optim.py), at several table sizes.

The model is the `omnibyte bench --preset small` BLT (local 48, latent 64 × 4, n-gram tables for n = 2..8),
static patches of 5 bytes (about its entropy patches' mean), batch 16 × 256 bytes of KJV text, one
thread. Each step is forward + backward + global clip + optimizer step, timed in three parts.
Both models live in this process; after 2 warm-up steps each, every round runs one dense and one
sparse step, the order alternating between rounds (`benchmarks.common.compare`), so both see the
same machine. The median over the rounds is reported, and the step's range (min–max).

    .venv/bin/python -m benchmarks.blt_sparse_tables                  # ≈ 3 minutes
    .venv/bin/python -m benchmarks.blt_sparse_tables --quick          # seconds, prints only
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.common import compare, fmt_time, header, results_file, results_option, train_step, write_section
from omnibyte.bench import load_preset
from omnibyte.config import merge
from omnibyte.models import build_model
from omnibyte.train.config import TrainConfig
from omnibyte.train.optim import clip_grad_norm, make_optimizer


def kjv_batch(batch: int, seq_len: int) -> torch.Tensor:
    from omnibyte.data import DEFAULT_DATA_DIR, ShardDataset

    data = Path(DEFAULT_DATA_DIR)
    if (data / "meta.json").exists():
        ids = ShardDataset(data).stream("train")[: batch * (seq_len + 1)]
        return torch.as_tensor(ids.astype("int64")).view(batch, seq_len + 1)
    g = torch.Generator().manual_seed(0)  # no corpus prepared: random bytes, same shapes
    return torch.randint(0, 256, (batch, seq_len + 1), generator=g)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--buckets", default="65536,262144,1048576", help="rows per n-gram table, comma-separated")
    ap.add_argument("--steps", type=int, default=8, help="timed rounds per setting (after 2 warm-up steps)")
    results_option(ap, "results_blt.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = load_preset("small")
    model_cfg = dict(preset.blt, patcher={"kind": "static", "patch_size": 5})
    buckets = [int(b) for b in args.buckets.split(",")]
    batch, seq_len, steps = (preset.batch_size, preset.seq_len, args.steps) if not args.quick else (2, 64, 2)
    if args.quick:
        buckets = [1024]
    ids = kjv_batch(batch, seq_len)
    lines = header("BLT: dense vs sparse (lazy) updates of the hash n-gram tables")
    sizes = model_cfg["ngrams"]["sizes"]
    lines += [f"Bench-preset BLT (local 48, latent 64 × 4, n-grams {min(sizes)}–{max(sizes)}), static patches of 5, "
              f"batch {batch} × {seq_len} bytes, fp32, one thread; median of {steps} interleaved rounds of one dense "
              "and one sparse step after 2 warm-up steps each (the step's min–max in brackets).", "",
              "| rows per table | params | updates | forward (ms) | backward + clip (ms) | optimizer (ms) | "
              "step (ms) | speed-up |", "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in buckets:
        steps_of = {}
        for kind in ("dense", "sparse"):
            torch.manual_seed(0)
            m = build_model("blt", merge(model_cfg, {"ngrams": {"buckets": n, "sparse": kind == "sparse"}})).train()
            opt = make_optimizer(m, TrainConfig(lr=2e-3), torch.device("cpu"))
            steps_of[kind] = train_step(m, ids, opt=opt, clip=1.0, clip_fn=clip_grad_norm)
        t = compare(steps_of, repeats=steps, warmup=2)
        print(f"{n} rows: dense {t['dense'].median * 1e3:.0f} ms, sparse {t['sparse'].median * 1e3:.0f} ms per step",
              flush=True)
        for kind, timing in t.items():
            fwd, bwd, upd = (statistics.median(v[part] for v in timing.values) * 1e3
                             for part in ("forward", "backward", "update"))
            lines.append(f"| {n:,} | {m.num_params() / 1e6:.1f}M | {kind} | {fwd:.1f} | {bwd:.1f} | {upd:.1f} | "
                         f"{fmt_time(timing, '{:.0f}', 1e3)} | {t['dense'].median / timing.median:.2f}× |")
    print("\n".join(lines))
    out = results_file(args, "results_blt.md")
    if out:
        write_section(out, "blt-sparse-tables", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
