"""Which MEGABYTE design choice matters for bits per byte? Trains `configs/megabyte-tiny.toml`
(300 steps, whole-val-split bpb) as the paper has it and with one change at a time, in one run:

- paper: each byte gets global_dim/P dims of the global input; one matrix w^GL maps every
  slot of the global output to the local width (omnibyte's MEGABYTE);
- full-out: one projection from the whole global output to all P local slots;
- wide-in: each byte embedded at local_dim, the P embeddings of a patch projected to global_dim
  (the layout MEGABYTE-pytorch uses).

    .venv/bin/python benchmarks/megabyte_variants.py            # ≈ 5 minutes on 2 cores
    .venv/bin/python benchmarks/megabyte_variants.py --quick    # 20 steps, prints only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, REPO, header, write_section  # noqa: E402

from omnibyte.models.megabyte import Megabyte, MegabyteConfig  # noqa: E402
from omnibyte.models.registry import register  # noqa: E402
from omnibyte.train.config import load_run_config  # noqa: E402
from omnibyte.train.trainer import Trainer  # noqa: E402


@register
class FullOut(Megabyte):
    arch = "megabyte-full-out"
    config_cls = MegabyteConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.global_to_local = nn.Linear(cfg.global_dim, cfg.patch_size * cfg.local_dim, bias=False)
        nn.init.normal_(self.global_to_local.weight, std=0.02)

    def run_global(self, x, caches=None):
        g = self.global_model(x, caches=caches)  # (B, m, global_dim)
        return rearrange(self.global_to_local(g), "b m (p d) -> b m p d", p=self.cfg.patch_size)


@register
class WideIn(Megabyte):
    arch = "megabyte-wide-in"
    config_cls = MegabyteConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.global_embed = nn.Embedding(cfg.vocab_size, cfg.local_dim)
        self.patch_proj = nn.Linear(cfg.patch_size * cfg.local_dim, cfg.global_dim, bias=False)
        nn.init.normal_(self.global_embed.weight, std=0.02)
        nn.init.normal_(self.patch_proj.weight, std=0.02)

    def patch_embed(self, ids):
        e = self.global_embed(ids)  # (B, m·P, local_dim)
        return self.patch_proj(rearrange(e, "b (m p) d -> b m (p d)", p=self.cfg.patch_size))


VARIANTS = {"paper": "megabyte", "full-out": "megabyte-full-out", "wide-in": "megabyte-wide-in"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = 20 if args.quick else 300
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch in VARIANTS.items():
            cfg = load_run_config(REPO / "configs" / "megabyte-tiny.toml", {
                "model": {"arch": arch}, "data": {"path": str(REPO / "data" / "kjv")},
                "train": {"steps": steps, "eval_every": 0, "save_every": 0, "eval_batches": 0}})
            trainer = Trainer(cfg, Path(tmp) / name, quiet=True)
            result = trainer.fit()
            rows.append((name, trainer.model.num_params(), result["val_bpb"]))
            print(f"{name}: {rows[-1][1]:,} params, val {rows[-1][2]:.4f} bits/byte", flush=True)
    lines = header("MEGABYTE design variants" + (" (quick)" if args.quick else ""))
    lines += [f"`configs/megabyte-tiny.toml`, {steps} steps each, same seed and batches; bits per byte over the whole "
              "KJV validation split.", "", "| variant | params | val bpb |", "| --- | ---: | ---: |"]
    lines += [f"| {n} | {p:,} | {b:.4f} |" for n, p, b in rows]
    print("\n".join(lines))
    if not args.quick:
        write_section(HERE / "results_megabyte.md", "megabyte-variants", lines, "MEGABYTE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
