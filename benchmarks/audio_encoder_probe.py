"""Can the audio encoder adapter hear what was said, by itself? Its CNN (omnibyte/adapters/
audio_encoder.py, as a multimodal config builds it) under one linear layer that picks the
transcript among those of the training clips, trained on the clips of a speech task dataset and
scored on its validation clips. A short byte-model pilot leaves transcripts at the majority answer
long before the encoder could have learned anything; this says how many clips the encoder itself
needs, as benchmarks/clock_cnn_baseline.py did for the image encoder.

    .venv/bin/python -m benchmarks.audio_encoder_probe data/pilot-speech --steps 600 --batch 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnibyte.adapters.audio_encoder import AudioEncoder, AudioEncoderConfig
from omnibyte.data import ShardDataset
from omnibyte.data.tasks.common import ANSWER_PREFIX
from omnibyte.format import AudioSegment, decode, split_documents
from omnibyte.media.audio import mulaw_decode


def clips(path: Path, split: str) -> tuple[list[torch.Tensor], list[str]]:
    """(samples in [-1, 1], transcript) of every speech document of a split."""
    samples, texts = [], []
    stream = np.asarray(ShardDataset(path).stream(split))
    for doc in split_documents(stream):
        segs = decode(list(doc)).segments
        audio = next(s for s in segs if isinstance(s, AudioSegment))
        tail = b"".join(s.data for s in segs if not isinstance(s, AudioSegment))
        answer = tail.split(ANSWER_PREFIX.encode(), 1)[1].split(b"\n", 1)[0].decode()
        samples.append(torch.from_numpy(mulaw_decode(audio.samples)))
        texts.append(answer)
    return samples, texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="a speech task dataset (omnibyte prepare --task speech)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=100, help="score the validation clips every N steps")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_x, train_y = clips(args.data, "train")
    val_x, val_y = clips(args.data, "val")
    classes = sorted(set(train_y))
    index = {t: i for i, t in enumerate(classes)}
    enc = AudioEncoder(AudioEncoderConfig(width=args.width, cells=args.cells), 64)
    head = torch.nn.Linear(64, len(classes))
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(0)

    def logits(batch: list[torch.Tensor]) -> torch.Tensor:
        return head(torch.cat([enc.encode(x[None]) for x in batch]))  # clips differ in length: one at a time

    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = rng.integers(len(train_x), size=args.batch)
        loss = F.cross_entropy(logits([train_x[i] for i in pick]), torch.tensor([index[train_y[i]] for i in pick]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                pred = [classes[int(logits([x]).argmax())] for x in val_x]
            acc = float(np.mean([p == t for p, t in zip(pred, val_y)]))
            curve.append({"step": step, "clips": step * args.batch, "loss": round(loss.item(), 3),
                          "val_exact": round(acc, 3), "minutes": round((time.perf_counter() - t0) / 60, 1)})
            print(json.dumps(curve[-1]), flush=True)
    majority = max(set(val_y), key=val_y.count)
    print(json.dumps({"train_clips": len(train_x), "val_clips": len(val_x), "classes": len(classes),
                      "val_seen_in_train": round(float(np.mean([t in index for t in val_y])), 3),
                      "majority_exact": round(float(np.mean([t == majority for t in val_y])), 3), "curve": curve}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
