"""Can the image encoder adapter read a task's images, by itself? Its CNN (omnibyte/adapters/
image_encoder.py, as a multimodal config builds it) under linear heads that give the answer, trained
on the images of a task dataset and scored on its validation images, as benchmarks/
audio_encoder_probe.py does for speech: how many images the encoder itself needs to reach a target,
which a byte model reading through it cannot beat.

    .venv/bin/python -m benchmarks.image_encoder_probe data/pilot-clocks --steps 1500 --batch 16
    .venv/bin/python -m benchmarks.image_encoder_probe data/pilot-shapes --steps 1500 --batch 16

Heads by task: clocks, the hour (12-way) and the minute (60-way), scored on the hour and on the
time within ±3 minutes; shapes, the count of each kind (from the training canvases' count caption,
`shapes.describe`), scored on the kind each validation count question asks about; fashion, the
class.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnibyte.adapters.image_encoder import ImageEncoder, ImageEncoderConfig
from omnibyte.data import ShardDataset
from omnibyte.data.tasks import read_heldout
from omnibyte.data.tasks.fashion import CLASSES
from omnibyte.data.tasks.shapes import KINDS
from omnibyte.eval.metrics import clock_distance, parse_time
from omnibyte.format import ImageSegment, decode, split_documents

COUNTS = re.compile(r"circles (\d+), squares (\d+), triangles (\d+), diamonds (\d+)")
MAX_COUNT = 20


def pixels(seg: ImageSegment) -> torch.Tensor:
    """(C, H, W) in [-1, 1]."""
    a = np.frombuffer(seg.pixels, np.uint8).reshape(seg.height, seg.width, seg.channels)
    return torch.from_numpy(a.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)


def labels(task: str, text: str) -> list[int] | None:
    """The answer targets of one document's text, or None when it holds none of this task's."""
    if task == "clocks":
        t = parse_time(text.split("Answer: ", 1)[-1])
        return None if t is None else [t // 60, t % 60]
    if task == "shapes":
        m = COUNTS.search(text)
        return None if m is None else [int(v) for v in m.groups()]
    name = next((c for c in CLASSES if f"Answer: {c}\n" in text or f"Draw a {c}." in text
                 or f"Draw an {c}." in text), None)
    return None if name is None else [CLASSES.index(name)]


def train_set(path: Path, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], []
    for doc in split_documents(np.asarray(ShardDataset(path).stream("train"))):
        segs = decode(list(doc)).segments
        img = next((s for s in segs if isinstance(s, ImageSegment)), None)
        text = b"".join(s.data for s in segs if not isinstance(s, ImageSegment)).decode(errors="replace")
        y = labels(task, text) if img is not None else None
        if y is not None:
            images.append(pixels(img))
            targets.append(y)
    return torch.stack(images), torch.tensor(targets)


def val_set(path: Path, task: str) -> tuple[torch.Tensor, list[dict]]:
    """The validation images and the records that score them (clocks; count questions; classify)."""
    kind = {"clocks": "clock", "shapes": "count", "fashion": "classify"}[task]
    records = [r for r in read_heldout(path, task) if r["kind"] == kind]
    stream = ShardDataset(path).stream("val")
    images = [pixels(next(s for s in decode([int(t) for t in stream[r["start"]:r["start"] + r["length"]]]).segments
                          if isinstance(s, ImageSegment))) for r in records]
    return torch.stack(images), records


def score(task: str, outs: list[torch.Tensor], records: list[dict]) -> dict:
    if task == "clocks":
        hour, minute = outs[0].argmax(-1), outs[1].argmax(-1)
        refs = [parse_time(r["answer"]) for r in records]
        preds = [int(h) * 60 + int(m) for h, m in zip(hour, minute)]
        return {"hour": float(np.mean([p // 60 == r // 60 for p, r in zip(preds, refs)])),
                "within": float(np.mean([clock_distance(p, r) <= 3 for p, r in zip(preds, refs)]))}
    if task == "shapes":
        pred = torch.stack([o.argmax(-1) for o in outs], 1)
        asked = [KINDS.index(r["shape"]) for r in records]
        hits = [int(pred[i, k]) == r["count"] for i, (k, r) in enumerate(zip(asked, records))]
        counts = [r["count"] for r in records]
        majority = max(set(counts), key=counts.count)
        return {"count": float(np.mean(hits)), "majority": float(np.mean([c == majority for c in counts]))}
    return {"accuracy": float(np.mean([int(p) == r["label"] for p, r in zip(outs[0].argmax(-1), records)]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="a clocks, shapes or fashion task dataset (omnibyte prepare --task)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--gain", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=250, help="score the validation images every N steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    task = json.loads((args.data / "tasks.json").read_text())["tasks"]
    (task,) = task
    x, y = train_set(args.data, task)
    xv, records = val_set(args.data, task)
    sizes = {"clocks": (12, 60), "shapes": (MAX_COUNT + 1,) * len(KINDS), "fashion": (len(CLASSES),)}[task]
    enc = ImageEncoder(ImageEncoderConfig(width=args.width, gain=args.gain), 64)
    heads = torch.nn.ModuleList(torch.nn.Linear(64, n) for n in sizes)
    opt = torch.optim.AdamW([*enc.parameters(), *heads.parameters()], lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.from_numpy(rng.integers(len(x), size=args.batch))
        z = enc.encode(x[pick])
        loss = sum(F.cross_entropy(h(z), y[pick, i]) for i, h in enumerate(heads))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                z = torch.cat([enc.encode(xv[k:k + 256]) for k in range(0, len(xv), 256)])
                result = score(task, [h(z) for h in heads], records)
            curve.append({"step": step, "images": step * args.batch, "loss": round(loss.item(), 3),
                          **{k: round(v, 3) for k, v in result.items()},
                          "minutes": round((time.perf_counter() - t0) / 60, 1)})
            print(json.dumps(curve[-1]), flush=True)
    print(json.dumps({"task": task, "train_images": len(x), "val_images": len(xv), "width": args.width,
                      "gain": args.gain, "curve": curve}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
