"""Fashion-MNIST both ways: image → class name ("classify") and class name → image ("draw").

Images are Debian's `dataset-fashion-mnist` (28×28 gray, idx-ubyte files, gzipped or not) in
/usr/share/datasets/fashion-mnist. Example i takes image ``perm[i]`` of a seeded permutation of
the chosen split, so a task holds distinct images; the completion task walks the same
permutation from its end, so the two share no image until together they need the whole split.

A "draw" example also records a counterfactual prompt naming another class: scoring the same
image under the wrong name tells whether the model uses the name at all.

Held-out examples of a task dataset come from the official test images, split once into two
fixed halves (`HALVES`): the val split's examples from one, the test split's from the other, so
a recipe chosen on val never saw a test image. Each held-out example is the default generator's
(half draw, half classify), whatever share of drawing the training examples have.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from omnibyte.data.tasks.common import Example, example_rng, media_example, qa_example
from omnibyte.errors import OmnibyteError
from omnibyte.format import ImageSegment

NAME = "fashion"
DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# the halves of the official test images that task datasets hold out as val and test examples
HALVES = {"heldout-val": 0, "heldout-test": 1}
HALF_ORDER_SEED = 0x7E57  # fixed: which image falls in which half never depends on a dataset's seed
IDX_UBYTE = 0x08
QUESTIONS = ("What is this?", "What kind of clothing is this?")
SPLITS = (*FILES, *HALVES)


@dataclass
class FashionConfig:
    root: str = DEFAULT_ROOT  # folder with the idx files
    split: str = "train"  # train (60,000 images) | test (10,000) | heldout-val, heldout-test (5,000 each)
    draw: float = 0.5  # share of name → image examples (the rest are image → name)
    question_last: bool = False  # the question after the media block, right before the answer

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"fashion split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0 <= self.draw <= 1:
            raise ValueError(f"fashion.draw is a share in [0, 1], got {self.draw}")


def read_idx(path: str | Path) -> np.ndarray:
    """An idx-ubyte file (optionally gzipped) → uint8 array of the shape its header states."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise OmnibyteError(f"{path}: cannot read idx file: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != IDX_UBYTE:
        raise OmnibyteError(f"{path}: not an idx-ubyte file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(raw) < head:
        raise OmnibyteError(f"{path}: idx header is truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:head])
    size = int(np.prod(shape))
    if len(raw) - head != size:
        raise OmnibyteError(f"{path}: idx header promises {size} bytes of data, file holds {len(raw) - head}")
    return np.frombuffer(raw, np.uint8, offset=head).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise OmnibyteError(f"Fashion-MNIST file {stem}(.gz) not found in {root}: "
                        f"apt-get install dataset-fashion-mnist, or pass --task-opt root=DIR")


@lru_cache(maxsize=4)
def load_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels uint8 (N,)) of one split (or one half of the test split)."""
    if split in HALVES:
        images, labels = load_split(root, "test")
        order = np.random.default_rng(HALF_ORDER_SEED).permutation(len(images))
        half = np.sort(np.array_split(order, 2)[HALVES[split]])
        return images[half], labels[half]
    images_stem, labels_stem = FILES[split]
    images = read_idx(_find(Path(root), images_stem))
    labels = read_idx(_find(Path(root), labels_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise OmnibyteError(f"Fashion-MNIST in {root}: images {images.shape} do not match labels {labels.shape}")
    if labels.size and labels.max() >= len(CLASSES):
        raise OmnibyteError(f"Fashion-MNIST in {root}: label {labels.max()} is not one of the 10 classes")
    return images, labels


def heldout_config(cfg: FashionConfig, split: str) -> FashionConfig:
    """The config of the held-out `split`'s (val or test) examples: that split's half of the test
    images, half of them drawn."""
    if cfg.split != "train":
        raise OmnibyteError(f"fashion: held-out examples come from the test images, so a task dataset trains on "
                            f"split train, not {cfg.split}")
    return replace(cfg, split=f"heldout-{split}", draw=FashionConfig.draw)


def image_order(n_images: int, seed: int) -> np.ndarray:
    """The seeded permutation of a split's images that the fashion and completion tasks walk."""
    return np.random.default_rng([seed, 0xFA5]).permutation(n_images)


def gray_segment(pixels: np.ndarray) -> ImageSegment:
    h, w = pixels.shape
    return ImageSegment(w, h, 1, np.ascontiguousarray(pixels, np.uint8).tobytes())


def article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def examples(n: int, seed: int, cfg: FashionConfig):
    images, labels = load_split(cfg.root, cfg.split)
    if n > len(images):
        raise OmnibyteError(f"fashion: asked for {n} examples, the {cfg.split} split has {len(images)} images")
    order = image_order(len(images), seed)
    for i in range(n):
        yield make_example(i, seed, cfg, images[order[i]], int(labels[order[i]]))


def make_example(index: int, seed: int, cfg: FashionConfig, pixels: np.ndarray, label: int) -> Example:
    rng = example_rng(NAME, seed, index)
    seg = gray_segment(pixels)
    name = CLASSES[label]
    if rng.random() < cfg.draw:
        other = CLASSES[(label + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]
        return media_example(f"Draw {article(name)}.", seg, "draw", answer=name, label=label,
                             counterfactual=f"Draw {article(other)}.\n")
    question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
    return qa_example(question, seg, name, "classify", cfg.question_last, label=label)
