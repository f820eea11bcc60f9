"""A whole-image summary for the bytes after an image: a small CNN over each finished image block,
as an input adapter (a `BlockSummary`).

A byte model reads an image one pixel at a time in raster order; what a question about the image
needs (where a clock's hands point, how many circles there are) is a property of the whole picture.
`ImageEncoder` gives the model a CNN over it, as vision-language models give their language model
a vision encoder's output (Molmo, LLaVA), without breaking the byte model's contract: it reads an
image only once the image is complete, at its closing marker (EOI), so only the bytes after the
image can see it. Each position gets the summary of the last image finished at or before it in its
document, added to its byte embedding; in a BLT it so reaches both the latent model (through the
pooled patches) and the local decoder that writes an answer.

An image counts when its whole block lies in view: BOI, a valid header (width, height, channels 1
or 3), exactly width × height × channels payload bytes, then EOI. Gray images enter the CNN as
three equal channels, so gray and RGB share one set of weights; any size works (two 2× max-pools,
then an adaptive average pool to a 4 × 4 grid, so the grid keeps where things are in the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omnibyte.adapters.block_summary import BlockSummary
from omnibyte.format import BOI, EOI
from omnibyte.media.layout import IMAGE_PAYLOAD, media_geometry


@dataclass
class ImageEncoderConfig:
    width: int = 32  # channels of the CNN's first layers (2 × width after the first pool)
    gain: float = 0.3  # the summary's RMS at the start, learned per channel (a byte embedding's is ~0.02)

    def __post_init__(self):
        if self.width < 1 or not self.gain > 0:
            raise ValueError(f"adapters.image_encoder needs width ≥ 1 and gain > 0, got {self.width} and {self.gain}")


GRID = 4  # the CNN's output is average-pooled to GRID × GRID cells before the projection


def finished_images(ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, ...]:
    """Complete image blocks whose EOI lies at or after position `lo` → six (N,) long tensors: the
    batch row, the EOI's position, the first payload byte's position, the height in pixel rows, the
    bytes per pixel row (width × channels) and the channels."""
    opener, offset, row, bpp, height = media_geometry(ids)
    last = torch.zeros_like(ids, dtype=torch.bool)  # the EOI right after an image's last payload byte
    size = row * height
    last[:, 1:] = ((ids[:, 1:] == EOI) & (opener[:, :-1] == BOI) & (row[:, :-1] > 0)
                   & (offset[:, :-1] - IMAGE_PAYLOAD + 1 == size[:, :-1]))
    last[:, :lo] = False
    b, t = last.nonzero(as_tuple=True)
    prev = t - 1
    n = size[b, prev]
    return b, t, t - n, height[b, prev], row[b, prev], bpp[b, prev]


class ImageEncoder(BlockSummary):
    def __init__(self, cfg: ImageEncoderConfig, dim: int):
        w = cfg.width
        super().__init__(2 * w * GRID * GRID, dim, cfg.gain)
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.MaxPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(GRID), nn.Flatten())
        self.width = w

    def flops_per_byte(self) -> float:
        """The CNN per pixel, with the projection spread over a 28 × 28 image."""
        w = self.width
        return 2 * 9 * (3 * w + w * w + (w * 2 * w + 4 * w * w) / 4) + 2 * 2 * w * GRID * GRID * \
            self.out.out_features / 784

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (N, C, H, W) in [-1, 1], C = 1 or 3 → (N, dim_out)."""
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.project(self.body(pixels))

    def summaries(self, ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) → (rows, EOI positions, vectors (N, dim_out)) for every complete image whose
        EOI lies at or after `lo`, in no particular order."""
        if not bool((ids[:, lo:] == EOI).any()):  # (decoding: most steps; skips the layout of the prefix)
            return self.nothing(ids)
        b, t, start, height, row_len, chans = finished_images(ids, lo)
        if b.numel() == 0:
            return self.nothing(ids)
        vecs = []
        order = []
        keys = torch.stack([height, row_len, chans], dim=1)
        for key in torch.unique(keys, dim=0):  # one CNN batch per image shape
            sel = (keys == key).all(dim=1).nonzero(as_tuple=True)[0]
            h, rl, c = (int(v) for v in key)
            idx = start[sel, None] + torch.arange(h * rl, device=ids.device)  # (n, H·W·C)
            px = ids[b[sel, None], idx].clamp(max=255).to(self.out.weight.dtype) / 127.5 - 1.0
            px = px.view(-1, h, rl // c, c).permute(0, 3, 1, 2)  # (n, C, H, W)
            vecs.append(self.encode(px))
            order.append(sel)
        sel = torch.cat(order)
        return b[sel], t[sel], torch.cat(vecs)
