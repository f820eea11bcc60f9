"""Which modality each id of a stream belongs to, read from the segment structure of the byte
format: an image block (BOI, header, pixels, EOI) is image, an audio block is audio, everything
else (text bytes, BOS, EOS) is text. Used for per-modality bits per byte and for weighting media
targets in the training loss (`train.media_loss_weight`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from omnibyte.data.loader import ShardDataset
from omnibyte.errors import OmnibyteError
from omnibyte.format import (
    AUDIO_HEADER_LEN,
    BOA,
    BOI,
    EOA,
    EOI,
    IMAGE_HEADER_LEN,
    N_BYTES,
    parse_audio_header,
    parse_image_header,
)

MODALITIES = ("text", "image", "audio")
TEXT, IMAGE, AUDIO = 0, 1, 2
MODALITY_AUX = "modality"  # batch key of the labels a LabelledDataset serves
# aux array of a task dataset: 1 where an id is to be learned (plain documents, and each task
# example's answer through its EOS), 0 on a task example's prompt (`train.prompt_loss_weight`)
ANSWER_AUX = "answer"


def modality_labels(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """uint8 label per position: 0 text (and BOS/EOS), 1 inside an image block, 2 inside an audio block.

    Meant for a whole split's stream. On a window cut from a stream, bytes before the window's
    first marker are text unless a closing EOI/EOA comes first (the window began inside that
    block); a window wholly inside a block cannot tell and is labelled text.
    """
    ids = np.asarray(ids)
    labels = np.zeros(len(ids), np.uint8)
    opens = np.flatnonzero((ids == BOI) | (ids == BOA))
    for pos in opens:
        image = ids[pos] == BOI
        head = ids[pos + 1:pos + 1 + (IMAGE_HEADER_LEN if image else AUDIO_HEADER_LEN)].tolist()
        end = len(ids)  # a block cut off by the end of the stream runs to the end
        if len(head) == (IMAGE_HEADER_LEN if image else AUDIO_HEADER_LEN) and max(head) < N_BYTES:
            try:
                if image:
                    w, h, c = parse_image_header(head)
                    payload = w * h * c
                else:
                    payload = parse_audio_header(head)[1]
                end = min(end, pos + 1 + len(head) + payload + 1)  # through the closing marker
            except OmnibyteError:
                end = pos + 1 + len(head)  # a broken header: label only what we saw
        labels[pos:end] = IMAGE if image else AUDIO
    closes = np.flatnonzero((ids == EOI) | (ids == EOA))
    first_open = opens[0] if len(opens) else len(ids)
    if len(closes) and closes[0] < first_open:
        labels[:closes[0] + 1] = IMAGE if ids[closes[0]] == EOI else AUDIO
    return labels


class LabelledDataset(ShardDataset):
    """A dataset that also serves modality labels as an aux array, computed in memory."""

    def __init__(self, dataset: ShardDataset):
        super().__init__(dataset.path)
        self._labels: dict[str, np.ndarray] = {}

    def has_aux(self, split: str, name: str) -> bool:
        return name == MODALITY_AUX or super().has_aux(split, name)

    def aux(self, split: str, name: str) -> np.ndarray:
        if name != MODALITY_AUX:
            return super().aux(split, name)
        if split not in self._labels:
            self._labels[split] = modality_labels(np.asarray(self.stream(split)))
        return self._labels[split]
