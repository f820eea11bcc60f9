"""Training files for the image/audio compression model (configs/compress-media.toml):
Fashion-MNIST *train* images (28 × 28 gray PNG) and speech-task clips (seed 0, 8 kHz µ-law WAV),
leaving out any clip whose samples equal one of the clips `compress_bench` holds out (seed
SPEECH_SEED), so the benchmark's files are never trained on.

    .venv/bin/python -m benchmarks.compress_media_data /tmp/media --images 6000 --clips 1500
    .venv/bin/omnibyte prepare /tmp/media --out data/media-compress --val-fraction 0.01
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from PIL import Image

from benchmarks.compress_bench import SPEECH_SEED
from omnibyte.data.tasks import task_examples
from omnibyte.data.tasks.fashion import DEFAULT_ROOT, load_split
from omnibyte.format import AudioSegment
from omnibyte.media import save_wav


def clip(example) -> AudioSegment:
    return next(s for s in example.segments if isinstance(s, AudioSegment))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--clips", type=int, default=1500)
    p.add_argument("--held-out", type=int, default=50, help="the benchmark's clips to keep out (its --clips)")
    args = p.parse_args()
    (args.out / "img").mkdir(parents=True, exist_ok=True)
    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    images, _ = load_split(DEFAULT_ROOT, "train")
    for i in range(args.images):
        Image.fromarray(images[i]).save(args.out / "img" / f"train{i:05d}.png")
    held_out = {hashlib.sha256(clip(ex).samples).digest()
                for ex in task_examples("speech", args.held_out, seed=SPEECH_SEED)}
    kept = dropped = 0
    for ex in task_examples("speech", args.clips, seed=0):
        seg = clip(ex)
        if hashlib.sha256(seg.samples).digest() in held_out:
            dropped += 1
            continue
        save_wav(seg, args.out / "wav" / f"clip{kept:05d}.wav")
        kept += 1
    print(f"{args.images} images, {kept} clips ({dropped} left out as identical to a held-out clip) in {args.out}")


if __name__ == "__main__":
    main()
