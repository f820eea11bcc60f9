"""A reference point for the clock and counting tasks: how far a small plain CNN (not a byte
model) gets on the same images in a few CPU minutes. It tells whether a task is hard at this size
and data, or hard for a byte-level model.

    .venv/bin/python -m benchmarks.clock_cnn_baseline --size 32 --mode gray --n-train 20000 --minutes 6
    .venv/bin/python -m benchmarks.clock_cnn_baseline --task shapes --size 24 --n-train 30000 --minutes 2
    .venv/bin/python -m benchmarks.clock_cnn_baseline --net omnibyte --batch 15 --steps 1463

`--net omnibyte` trains omnibyte's own `ImageEncoder` (the `image_encoder` input adapter,
`omnibyte.adapters.image_encoder`, with its output gain `--gain`) under one linear head per answer
instead of the plain CNN: whether that encoder can learn the task by itself. `--probe RUN` takes the
trained encoder of a model saved in RUN (its `model.adapters["image_encoder"]`) instead. `--steps`
(with `--batch`) fixes the number of examples seen instead of the time.

`--net question` (shapes) is closer to what the BLT has to learn: the encoder's summary plus an
embedding of the shape kind a question names go through one residual MLP block to a single count
head, and each canvas teaches `--questions` answers (1: only the kind its count question asks
about, as one question per canvas does; 4: every kind, as `shapes --opts '{"questions": 4}'`).

Draws `--n-train` images (seed 0) and 300 new ones (seed 1) with the task's own generator, trains a
four-layer CNN for `--minutes` (or `--steps`), and prints one JSON line with its accuracy on the new images. Clocks:
a 12-way hour head (and a 60-way minute head), scored on the hour. Shapes: one 0..max_shapes count
head per shape kind, scored on the kind each example's count question asks about (the questions
and shapes of `shapes --opts '{"point": 0.0, "min_radius": 0.12, "max_radius": 0.2}'`).
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

from omnibyte.adapters.image_encoder import ImageEncoder, ImageEncoderConfig
from omnibyte.data.tasks.clocks import ClocksConfig, render_clock
from omnibyte.data.tasks.common import example_rng
from omnibyte.data.tasks.shapes import KINDS, ShapesConfig, count_of, place_shapes, render_shapes
from omnibyte.models.base import OmniModel


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


def canvases(n: int, seed: int, cfg: ShapesConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, 3, s, s), counts (n, kinds), the kind each count question asks about), drawn as
    the task draws its count examples (`point` 0: every example is a count question)."""
    imgs, counts, asked = [], [], []
    for i in range(n):
        rng = example_rng("shapes", seed, i)
        shapes = place_shapes(rng, cfg)
        img = render_shapes(shapes, rng, cfg)
        rng.random()  # (the task's draw of point-or-count)
        asked.append(int(rng.integers(len(KINDS))))
        counts.append([count_of(shapes, k) for k in KINDS])
        imgs.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(imgs)) / 127.5 - 1.0, torch.tensor(counts), torch.tensor(asked)


class SmallCNN(nn.Module):
    def __init__(self, channels: int, size: int, heads: tuple[int, ...] = (12, 60)):
        super().__init__()
        w = 32
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2), nn.Flatten())
        flat = 2 * w * (size // 4) ** 2
        self.heads = nn.ModuleList(nn.Linear(flat, k) for k in heads)

    def forward(self, x):
        h = self.body(x)
        return [head(h) for head in self.heads]


class EncoderHeads(nn.Module):
    """omnibyte's ImageEncoder (width 32, a 64-wide summary; or a trained model's, frozen) under one
    linear head per answer."""

    def __init__(self, heads: tuple[int, ...], gain: float, encoder: ImageEncoder | None = None):
        super().__init__()
        self.encoder = (ImageEncoder(ImageEncoderConfig(32, gain), 64) if encoder is None
                        else encoder.requires_grad_(False))
        self.heads = nn.ModuleList(nn.Linear(self.encoder.out.out_features, k) for k in heads)

    def forward(self, x):
        h = self.encoder.encode(x)
        return [head(h) for head in self.heads]


class QuestionHead(nn.Module):
    """The ImageEncoder's summary plus the asked kind's embedding → a residual MLP block → one count
    head: the image and the question have to be combined, as in the BLT, where both arrive as
    vectors added to the same stream."""

    def __init__(self, kinds: int, answers: int, gain: float, dim: int = 64):
        super().__init__()
        self.encoder = ImageEncoder(ImageEncoderConfig(32, gain), dim)
        self.kind = nn.Embedding(kinds, dim)
        nn.init.normal_(self.kind.weight, std=1.0)  # a byte embedding's size
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, answers)

    def forward(self, x, kind):
        h = self.encoder.encode(x) + self.kind(kind)
        h = h + self.mlp(F.rms_norm(h, h.shape[-1:]))
        return self.head(F.rms_norm(h, h.shape[-1:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="clocks", choices=["clocks", "shapes"])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--mode", default="gray", choices=["gray", "rgb"])
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=0, help="> 0: train this many steps instead of --minutes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--net", default="plain", choices=["plain", "omnibyte", "question"],
                    help="plain: the four-layer CNN; omnibyte: omnibyte's ImageEncoder and linear heads; "
                         "question (shapes): the ImageEncoder and the asked kind through an MLP to one count head")
    ap.add_argument("--questions", type=int, default=1, choices=[1, 4],
                    help="--net question: answers taught per canvas (1: the asked kind's; 4: every kind's)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--probe", metavar="RUN",
                    help="--net omnibyte: take the image_encoder adapter of the model saved in RUN and train only "
                         "the linear heads (a linear probe: what its summary tells about the image)")
    ap.add_argument("--gain", type=float, default=1.0, help="--net omnibyte or question: the encoder's output gain")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.probe and args.net != "omnibyte":
        ap.error("--probe needs --net omnibyte")
    if args.net == "question" and args.task != "shapes":
        ap.error("--net question needs --task shapes")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.task == "clocks":
        cfg = ClocksConfig(size=args.size, mode=args.mode)
        x, h, m = faces(args.n_train, 0, cfg)
        xe, he, _ = faces(300, 1, cfg)
        targets, heads = torch.stack([h, m], 1), (12, 60)
    else:
        cfg = ShapesConfig(size=args.size, max_shapes=4, point=0.0, min_radius=0.12, max_radius=0.2)
        x, targets, asked_train = canvases(args.n_train, 0, cfg)
        xe, ce, asked = canvases(300, 1, cfg)
        he = ce[torch.arange(300), asked]
        heads = (cfg.max_shapes + 1,) * len(KINDS)
    if args.net == "plain":
        model = SmallCNN(x.shape[1], args.size, heads)
    elif args.net == "omnibyte":
        trained = None
        if args.probe:
            adapters = OmniModel.from_pretrained(args.probe).adapters
            if "image_encoder" not in adapters:
                ap.error(f"{args.probe} has no image encoder (no [model.adapters.image_encoder])")
            trained = adapters["image_encoder"]
        model = EncoderHeads(heads, args.gain, trained)
    else:
        model = QuestionHead(len(KINDS), cfg.max_shapes + 1, args.gain)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t0, steps = time.time(), 0
    def done():
        return steps >= args.steps if args.steps else time.time() - t0 >= args.minutes * 60

    while not done():
        for idx in torch.randperm(len(x)).split(args.batch):
            if args.net == "question":
                kind = asked_train[idx]
                if args.questions == len(KINDS):  # every kind of each canvas
                    idx, kind = idx.repeat_interleave(len(KINDS)), torch.arange(len(KINDS)).repeat(len(idx))
                loss = F.cross_entropy(model(x[idx], kind), targets[idx, kind])
            else:
                outs = model(x[idx])
                loss = sum(F.cross_entropy(o, targets[idx, j]) for j, o in enumerate(outs))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if done():
                break
    model.eval()
    with torch.no_grad():
        if args.task == "clocks":
            pred = model(xe)[0].argmax(-1)
            chance = 1 / 12
        else:
            if args.net == "question":
                pred = model(xe, asked).argmax(-1)
            else:  # the head of the kind each question asks about
                pred = torch.stack([o.argmax(-1) for o in model(xe)], 1)[torch.arange(300), asked]
            chance = (he == he.mode().values).float().mean().item()
        acc = (pred == he).float().mean().item()
    mode = args.mode if args.task == "clocks" else "rgb"
    print(json.dumps({"task": args.task, "size": args.size, "mode": mode, "n_train": args.n_train,
                      "net": args.net, **({"gain": args.gain} if args.net != "plain" and not args.probe else {}),
                      **({"probe": args.probe} if args.probe else {}),
                      **({"questions": args.questions} if args.net == "question" else {}), "lr": args.lr,
                      "steps": steps, "batch": args.batch, "passes": round(steps * args.batch / len(x), 2),
                      "train_minutes": round((time.time() - t0) / 60, 2), "threads": args.threads,
                      "accuracy": round(acc, 4),
                      "n_eval": 300, "chance_or_majority": round(chance, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
