"""BLT training step time with dense AdamW over the hash n-gram tables vs sparse gradients and lazy
row updates (`--train.sparse_embeddings`, omnibyte/train/optim.py), at several table sizes.

The model is the `omnibyte bench --preset small` BLT (local 48, latent 64 × 4, six n-gram tables),
static patches of 5 bytes (about its entropy patches' mean), batch 16 × 256 bytes of KJV text, one
thread. Each step is forward + backward + global clip + optimizer step, timed in three parts.
Dense and sparse steps alternate, so both see the same machine. The median over the timed steps is
reported.

    .venv/bin/python benchmarks/blt_sparse_tables.py                  # ≈ 3 minutes
    .venv/bin/python benchmarks/blt_sparse_tables.py --quick          # seconds, prints only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blt_common import header, median, write_section  # noqa: E402

from omnibyte.eval.bench import PRESETS  # noqa: E402
from omnibyte.models import build_model  # noqa: E402
from omnibyte.train.config import TrainConfig  # noqa: E402
from omnibyte.train.optim import clip_grad_norm, make_optimizer, ngram_tables  # noqa: E402


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
    ap.add_argument("--steps", type=int, default=8, help="timed steps per setting (after 2 warm-up steps)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = PRESETS["small"]
    model_cfg = dict(preset.blt, patcher={"kind": "static", "patch_size": 5})
    buckets = [int(b) for b in args.buckets.split(",")]
    batch, seq_len, steps = (preset.batch_size, preset.seq_len, args.steps) if not args.quick else (2, 64, 2)
    if args.quick:
        buckets = [1024]
    ids = kjv_batch(batch, seq_len)
    x, y = ids[:, :-1], ids[:, 1:]
    rows = []
    for n in buckets:
        runs = {}
        for sparse in (False, True):
            torch.manual_seed(0)
            m = build_model("blt", {**model_cfg, "hash_buckets": n}).train()
            for table in ngram_tables(m):
                table.sparse = sparse
            runs[sparse] = (m, make_optimizer(m, TrainConfig(lr=2e-3), torch.device("cpu")), [])
        for i in range(steps + 2):
            for m, opt, times in runs.values():
                t0 = time.perf_counter()
                loss = m(x, y).loss
                t1 = time.perf_counter()
                loss.backward()
                clip_grad_norm(m.parameters(), 1.0)
                t2 = time.perf_counter()
                opt.step()
                opt.zero_grad(set_to_none=True)
                t3 = time.perf_counter()
                if i >= 2:
                    times.append((t1 - t0, t2 - t1, t3 - t2))
        params = runs[False][0].num_params()
        for sparse, (_, _, times) in runs.items():
            fwd, bwd, upd = (median([t[k] for t in times]) * 1e3 for k in range(3))
            rows.append((n, params, sparse, fwd, bwd, upd, median([sum(t) for t in times]) * 1e3))
        print(f"{n} rows: dense {rows[-2][-1]:.0f} ms, sparse {rows[-1][-1]:.0f} ms per step", flush=True)
    lines = header("BLT: dense vs sparse (lazy) updates of the hash n-gram tables")
    lines += [f"Bench-preset BLT (local 48, latent 64 × 4, n-grams 3–8), static patches of 5, batch {batch} × "
              f"{seq_len} bytes, fp32, one thread; median of {steps} steps after 2 warm-up steps, dense and "
              "sparse alternating.", "",
              "| rows per table | params | updates | forward (ms) | backward + clip (ms) | optimizer (ms) | "
              "step (ms) | speed-up |", "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for i, (n, params, sparse, fwd, bwd, upd, step) in enumerate(rows):
        dense_step = rows[i - 1][-1] if sparse else step
        lines.append(f"| {n:,} | {params / 1e6:.1f}M | {'sparse' if sparse else 'dense'} | {fwd:.1f} | {bwd:.1f} | "
                     f"{upd:.1f} | {step:.0f} | {dense_step / step:.2f}× |")
    print("\n".join(lines))
    if not args.quick:
        write_section("blt-sparse-tables", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
