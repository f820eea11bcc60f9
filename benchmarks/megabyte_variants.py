"""Which MEGABYTE design choice matters for bits per byte? Trains `configs/megabyte-tiny.toml`
(300 steps, whole-val-split bpb) with one change at a time, in one run:

- the paper's layout: each byte gets global_model.dim/P dims of the global input, slot 0 of each
  patch's local model reads a learned pad, no token shift;
- omnibyte's three departures (`MegabyteConfig.patch_proj`, `carry_byte`, `token_shift`), each
  added to the paper's layout alone and each taken out of omnibyte's default alone;
- two more choices on top of the default: w^GL (global slot → local width) initialised at
  std 0.02 like the other matrices instead of 0.002, and one full projection from the whole
  global output to all P local slots instead of w^GL per slot.

    .venv/bin/python -m benchmarks.megabyte_variants            # ≈ 15 minutes on 2 cores
    .venv/bin/python -m benchmarks.megabyte_variants --quick    # 20 steps, prints only
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from benchmarks.common import REPO, header, results_file, results_option, train_run, write_section
from omnibyte.models.megabyte import Megabyte, MegabyteConfig
from omnibyte.models.registry import register


@register
class FullOut(Megabyte):
    """One projection from the whole global output to all P local slots (instead of w^GL per slot)."""
    arch = "megabyte-full-out"
    config_cls = MegabyteConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.global_to_local = nn.Linear(cfg.global_model.dim, cfg.patch_size * cfg.local_model.dim, bias=False)
        nn.init.normal_(self.global_to_local.weight, std=0.002)

    def run_global(self, x, caches=None):
        g = self.global_model(x, caches=caches)  # (B, m, global dim)
        return rearrange(self.global_to_local(g), "b m (p d) -> b m p d", p=self.cfg.patch_size)


@register
class SlotInit002(Megabyte):
    """w^GL initialised like every other matrix (std 0.02) instead of 10× smaller."""
    arch = "megabyte-g2l-0.02"
    config_cls = MegabyteConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        nn.init.normal_(self.global_to_local.weight, std=0.02)


PAPER = {"arch": "megabyte", "patch_proj": False, "carry_byte": False, "token_shift": False}
DEFAULT = {"arch": "megabyte", "patch_proj": True, "carry_byte": True, "token_shift": True}
VARIANTS = {  # name → [model] overrides of configs/megabyte-tiny.toml
    "paper layout (all three off)": PAPER,
    "paper + patch_proj": {**PAPER, "patch_proj": True},
    "paper + carry_byte": {**PAPER, "carry_byte": True},
    "paper + token_shift": {**PAPER, "token_shift": True},
    "omnibyte default (all three on)": DEFAULT,
    "default − patch_proj": {**DEFAULT, "patch_proj": False},
    "default − carry_byte": {**DEFAULT, "carry_byte": False},
    "default − token_shift": {**DEFAULT, "token_shift": False},
    "default, w^GL init std 0.02": {**DEFAULT, "arch": "megabyte-g2l-0.02"},
    "default, full global→local projection": {**DEFAULT, "arch": "megabyte-full-out"},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS),
                    help="run these only (prints; writes only with --results)")
    results_option(ap, "results_megabyte.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = 20 if args.quick else 300
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            raw = {"model": dict(model), "data": {"path": str(REPO / "data" / "kjv")},
                   "train": {"steps": steps, "eval_every": 0, "save_every": 0, "eval_batches": 0}}
            result = train_run(raw, Path(tmp) / name, base=REPO / "configs" / "megabyte-tiny.toml")
            rows.append((name, result["params"], result["val_bpb"]))
            print(f"{name}: {rows[-1][1]:,} params, val {rows[-1][2]:.4f} bits/byte", flush=True)
    lines = header("MEGABYTE design variants" + (" (quick)" if args.quick else ""))
    lines += [f"`configs/megabyte-tiny.toml`, {steps} steps each, same seed and batches; bits per byte over the whole "
              "KJV validation split.", "", "| variant | params | val bpb |", "| --- | ---: | ---: |"]
    lines += [f"| {n} | {p:,} | {b:.4f} |" for n, p, b in rows]
    print("\n".join(lines))
    out = results_file(args, "results_megabyte.md") if not args.only or args.results else None
    if out:
        write_section(out, "megabyte-variants", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
