"""A reference point for the clock task: how far a small plain CNN (not a byte model) gets at
reading the hour from the same faces in a few CPU minutes. It tells whether the task is hard at
this size and data, or hard for a byte-level model.

    .venv/bin/python benchmarks/clock_cnn_baseline.py --size 32 --mode gray --n-train 20000 --minutes 6

Draws `--n-train` faces (seed 0) and 300 new ones (seed 1) with the task's own generator, trains a
four-layer CNN with a 12-way hour head (and a 60-way minute head) for `--minutes`, and prints one
JSON line with the hour accuracy on the new faces.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.data.tasks.clocks import ClocksConfig, render_clock
from omnibyte.data.tasks.common import example_rng


def faces(n: int, seed: int, cfg: ClocksConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, c, s, s) in [-1, 1], hours 0..11, minutes 0..59), drawn as the task draws them."""
    imgs, hours, minutes = [], [], []
    for i in range(n):
        rng = example_rng("clocks", seed, i)
        hour, minute = int(rng.integers(1, 13)), int(rng.integers(0, 60))
        img = render_clock(hour, minute, rng, cfg)
        a = np.asarray(img.convert("L") if cfg.mode == "gray" else img, dtype=np.float32)
        imgs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        hours.append(hour % 12)
        minutes.append(minute)
    return torch.from_numpy(np.stack(imgs)) / 127.5 - 1.0, torch.tensor(hours), torch.tensor(minutes)


class SmallCNN(nn.Module):
    def __init__(self, channels: int, size: int):
        super().__init__()
        w = 32
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2), nn.Flatten())
        flat = 2 * w * (size // 4) ** 2
        self.hour, self.minute = nn.Linear(flat, 12), nn.Linear(flat, 60)

    def forward(self, x):
        h = self.body(x)
        return self.hour(h), self.minute(h)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--mode", default="gray", choices=["gray", "rgb"])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ClocksConfig(size=args.size, mode=args.mode)
    x, h, m = faces(args.n_train, 0, cfg)
    xe, he, _ = faces(300, 1, cfg)
    model = SmallCNN(x.shape[1], args.size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    t0, steps = time.time(), 0
    while time.time() - t0 < args.minutes * 60:
        for idx in torch.randperm(len(x)).split(64):
            hl, ml = model(x[idx])
            loss = F.cross_entropy(hl, h[idx]) + F.cross_entropy(ml, m[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.time() - t0 >= args.minutes * 60:
                break
    model.eval()
    with torch.no_grad():
        acc = (model(xe)[0].argmax(-1) == he).float().mean().item()
    print(json.dumps({"size": args.size, "mode": args.mode, "n_train": args.n_train, "steps": steps,
                      "batch": 64, "passes": round(steps * 64 / len(x), 2), "train_minutes": args.minutes,
                      "threads": args.threads, "hour_accuracy": round(acc, 4), "n_eval": 300, "chance": 1 / 12}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
