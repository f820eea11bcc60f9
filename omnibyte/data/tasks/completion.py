"""Image completion: the top half of an image is given, the model writes the bottom half.

The document is ``"Complete the image.\\n" [image]``; the answer starts at the first pixel of
the bottom half (row ``height // 2``), so the prompt ends inside the image block and a
constrained decoder finishes exactly the missing rows and closes the block. Scored by the
bits per byte of the bottom half and by the mean absolute pixel error of a greedy completion.

Sources: Fashion-MNIST (28×28 gray; walks the fashion task's image order from its end) or the
shapes task's synthetic canvases (RGB, no question).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from omnibyte.data.tasks import fashion, shapes
from omnibyte.data.tasks.common import Example, example_rng, media_example
from omnibyte.errors import OmnibyteError
from omnibyte.format import IMAGE_HEADER_LEN, ImageSegment
from omnibyte.media import image_segment_from_pil

NAME = "completion"
PROMPT = "Complete the image."


@dataclass
class CompletionConfig:
    source: str = "fashion"  # fashion | shapes
    root: str = fashion.DEFAULT_ROOT  # Fashion-MNIST folder (source fashion)
    split: str = "train"  # Fashion-MNIST split (source fashion; see fashion.SPLITS)
    size: int = 32  # canvas side (source shapes)

    def __post_init__(self):
        if self.source not in ("fashion", "shapes"):
            raise ValueError(f"completion source must be fashion or shapes, got {self.source!r}")
        if self.split not in fashion.SPLITS:
            raise ValueError(f"completion split must be one of {', '.join(fashion.SPLITS)}, got {self.split!r}")
        if not 16 <= self.size <= 1024:
            raise ValueError(f"completion size must be in 16..1024, got {self.size}")


def heldout_config(cfg: CompletionConfig, split: str) -> CompletionConfig:
    """Held-out Fashion-MNIST completions come from the `split`'s half of the test images, as the
    fashion task's do; shapes canvases need nothing but their own seed."""
    if cfg.source != "fashion":
        return cfg
    if cfg.split != "train":
        raise OmnibyteError(f"completion: held-out examples come from the test images, so a task dataset trains on "
                            f"split train, not {cfg.split}")
    return replace(cfg, split=f"heldout-{split}")


def completion_example(seg: ImageSegment, **meta) -> Example:
    top = seg.height // 2
    offset = 1 + IMAGE_HEADER_LEN + top * seg.width * seg.channels  # BOI, header, the top rows
    return media_example(PROMPT, seg, "complete", answer_offset=offset, top_rows=top, width=seg.width,
                         height=seg.height, channels=seg.channels, **meta)


def examples(n: int, seed: int, cfg: CompletionConfig):
    if cfg.source == "fashion":
        images, labels = fashion.load_split(cfg.root, cfg.split)
        if n > len(images):
            raise OmnibyteError(f"completion: asked for {n} examples, the {cfg.split} split has {len(images)} images")
        order = fashion.image_order(len(images), seed)[::-1]
        for i in range(n):
            yield completion_example(fashion.gray_segment(images[order[i]]), label=int(labels[order[i]]))
        return
    scfg = shapes.ShapesConfig(size=cfg.size)
    for i in range(n):
        rng = example_rng(NAME, seed, i)
        img = shapes.render_shapes(shapes.place_shapes(rng, scfg), rng, scfg)
        yield completion_example(image_segment_from_pil(img, mode="rgb"))
