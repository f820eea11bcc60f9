"""The judge of generated Fashion-MNIST images: a plain CNN classifier trained on the 60,000
training images (not the model under test), which labels a drawing with the class it sees. The
share of "Draw a <class>" images it labels as the class asked for is the drawing metric of issue
22. Its weights are trained once and cached in benchmarks/out/ (git-ignored).

    .venv/bin/python -m benchmarks.fashion_judge          # train (or load) it, print its test accuracy

Three passes over the training images (batch 128, Adam): 91.1% of the official test images labelled
right, after 19 minutes on one thread of a shared 2-core machine (2026-12-03).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import OUT
from omnibyte.data.tasks.fashion import CLASSES, DEFAULT_ROOT, load_split
from omnibyte.format import ImageSegment

WEIGHTS = OUT / "fashion_judge.pt"


class JudgeNet(nn.Module):
    """Two conv blocks (32 and 64 channels, each two 3 × 3 convs and a 2× max-pool), then 128 → 10."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28) in [-1, 1]."""
    return torch.from_numpy(np.asarray(images, np.float32) / 127.5 - 1.0)[:, None]


def train_judge(root: str = DEFAULT_ROOT, epochs: int = 3, seed: int = 0,
                images_limit: int | None = None) -> tuple[JudgeNet, dict]:
    """Train the judge on the training images (the first `images_limit` of them when given: a smoke
    run's judge) and measure it on the official test images."""
    images, labels = load_split(root, "train")
    images, labels = images[:images_limit], labels[:images_limit]
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = np.random.default_rng(seed)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        perm = order.permutation(len(images))
        for k in range(0, len(perm), 128):
            idx = perm[k:k + 128]
            loss = F.cross_entropy(net(as_input(images[idx])), torch.from_numpy(labels[idx].astype(np.int64)))
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    test_images, test_labels = load_split(root, "test")
    accuracy = float(np.mean(classify(net, test_images) == test_labels))
    return net, {"epochs": epochs, "seed": seed, "train_images": len(images),
                 "train_s": round(time.perf_counter() - t0, 1), "test_accuracy": accuracy}


@torch.no_grad()
def classify(net: JudgeNet, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class ids of uint8 (N, 28, 28) images."""
    out = [net(as_input(images[k:k + batch_size])).argmax(-1).numpy() for k in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def weights_path(images_limit: int | None = None) -> Path:
    """Where the judge trained on `images_limit` images is cached: a smoke run's small judge never
    stands in for the real one."""
    return WEIGHTS if images_limit is None else WEIGHTS.with_name(f"{WEIGHTS.stem}-{images_limit}{WEIGHTS.suffix}")


def load_judge(root: str = DEFAULT_ROOT, path: Path | None = None,
               images_limit: int | None = None) -> tuple[JudgeNet, dict]:
    """The cached judge, trained first when there is none."""
    if images_limit is not None and images_limit < 1:
        raise SystemExit(f"error: the judge needs at least one training image, not {images_limit}")
    path = path or weights_path(images_limit)
    info_file = path.with_suffix(".json")
    if path.is_file() and info_file.is_file():
        net = JudgeNet()
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval(), json.loads(info_file.read_text())
    net, info = train_judge(root, images_limit=images_limit)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    info_file.write_text(json.dumps(info) + "\n")
    return net, info


def judge(net: JudgeNet, segments: Sequence[ImageSegment]) -> list[int]:
    """The class the judge sees in each 28 × 28 gray image segment."""
    pixels = np.stack([np.frombuffer(s.pixels, np.uint8).reshape(s.height, s.width) for s in segments])
    return [int(c) for c in classify(net, pixels)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=DEFAULT_ROOT, help="Fashion-MNIST folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, help="train on the first N training images only (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, info = load_judge(args.root, images_limit=args.images)
    print(json.dumps({"weights": str(weights_path(args.images)), **info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
