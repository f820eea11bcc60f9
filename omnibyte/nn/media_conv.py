"""Causal convolution features of image and audio payload bytes, for a byte model's input.

A byte embedding sees an image as a line of unrelated ids: pixel 200 and pixel 201 are two
different rows of a table, and the pixel above is `width` positions back. `MediaConv` gives each
payload byte a feature vector computed from the *values* of the bytes around it in the medium's
own geometry, reading only the past (so the model's contract, logits[:, t] from ids[:, :t+1],
still holds):

- image: a masked 2-D convolution (PixelCNN's type B mask) over the block's pixels, same
  channel: the k × k window's rows above the byte, and its own row up to and including it;
- audio: a causal 1-D convolution over the last k µ-law samples.

Two layers, the second dilated (it reads the first layer's features `dilation` pixels or
samples apart), so the receptive field reaches (1 + dilation)·(k // 2) rows of an image and
(1 + dilation)·(k − 1) + 1 samples of audio. The output is projected to the byte model's width
and is zero on every byte that is not image or audio payload; the projection starts at zero, so
a model with it starts out as the model without it.

With `positions` > 0 an image byte's features also get learned vectors for where it lies in its
image: its row and its column, each in `positions` equal bands of the image's height and width,
and its colour channel. A convolution is blind to position, and a transformer over the flat
sequence sees a pixel's row and column only as its offset divided by the row length; reading a
clock (where a hand points from the centre) or pointing at a shape needs them.

The convolutions are gathers over the flat byte sequence (each byte's neighbours lie at offsets
fixed by the block's header), so a batch may hold any mix of image sizes, gray and RGB, audio and
text, and decoding can compute the features of new bytes from the ids so far.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.format import BOA, BOI, N_BYTES
from omnibyte.media.audio import mulaw_decode
from omnibyte.patching.core import AUDIO_PAYLOAD, IMAGE_PAYLOAD, media_geometry, media_layout

_MULAW = torch.from_numpy(mulaw_decode(np.arange(N_BYTES, dtype=np.uint8)))  # code → sample in [-1, 1]


def media_values(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) float: each image payload byte's pixel in [-1, 1], each audio payload byte's µ-law
    sample in [-1, 1], 0 everywhere else (text, markers, headers, a block whose header is out of view)."""
    return _values(ids, *_payload(ids, *media_layout(ids)))


def _payload(ids, opener, offset, row) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, audio) (B, T) bool: the payload bytes of image blocks whose header is in view, and
    of audio blocks."""
    real = ids < N_BYTES
    img = real & (opener == BOI) & (offset >= IMAGE_PAYLOAD) & (row > 0)
    aud = real & (opener == BOA) & (offset >= AUDIO_PAYLOAD)
    return img, aud


def _values(ids, img, aud) -> torch.Tensor:
    byte = ids.clamp(0, N_BYTES - 1)
    pixel = byte.float() / 127.5 - 1.0
    sample = _MULAW.to(ids.device)[byte]
    return torch.where(img, pixel, torch.where(aud, sample, torch.zeros_like(pixel)))


def image_taps(kernel: int) -> list[tuple[int, int]]:
    """(rows up, columns right) of a type-B masked k × k window: the rows above in full, the
    byte's own row up to and including it."""
    h = kernel // 2
    return [(dr, dc) for dr in range(h, -1, -1) for dc in range(-h, h + 1) if dr > 0 or dc <= 0]


class MediaConv(nn.Module):
    def __init__(self, channels: int, dim_out: int, image_kernel: int = 5, audio_kernel: int = 16,
                 dilation: int = 2, audio_dilation: int = 16, positions: int = 0):
        super().__init__()
        if channels < 1 or image_kernel < 3 or image_kernel % 2 == 0 or audio_kernel < 2 or dilation < 1 \
                or audio_dilation < 1 or positions < 0:
            raise ValueError(f"MediaConv: bad sizes (channels {channels}, image kernel {image_kernel} "
                             f"(odd, ≥ 3), audio kernel {audio_kernel} (≥ 2), dilations {dilation}, {audio_dilation}, "
                             f"positions {positions} (≥ 0))")
        self.channels, self.dilation, self.audio_dilation = channels, dilation, audio_dilation
        self.image_taps = image_taps(image_kernel)
        self.audio_taps = list(range(audio_kernel))
        ki, ka = len(self.image_taps), audio_kernel
        self.image1 = nn.Linear(ki, channels)
        self.image2 = nn.Linear(ki * channels, channels)
        self.audio1 = nn.Linear(ka, channels)
        self.audio2 = nn.Linear(ka * channels, channels)
        self.out = nn.Linear(channels, dim_out, bias=False)
        nn.init.zeros_(self.out.weight)
        self.positions = positions
        if positions:  # row band, column band, channel (random, not zero: `out` starts at zero)
            self.image_pos = nn.Embedding(2 * positions + 3, channels)
            nn.init.normal_(self.image_pos.weight, std=0.5)

    def forward(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, T) → features (B, T - start, dim_out) of positions start..T-1 (the ids before
        `start` are context: decoding passes the ids so far and the first new position)."""
        b, t = ids.shape
        opener, offset, row, bpp, height = media_geometry(ids)
        img, aud = _payload(ids, opener, offset, row)
        x = _values(ids, img, aud)
        out = x.new_zeros(b, t - start, self.out.out_features)
        flat = torch.arange(b * t, device=ids.device).view(b, t)
        f1 = x.new_zeros(b * t, self.channels)  # first-layer features of every payload byte
        for kind, mask, lin1, lin2 in (("image", img, self.image1, self.image2), ("audio", aud, self.audio1,
                                                                                   self.audio2)):
            if not bool(mask.any()):
                continue
            if kind == "image":
                pay = (offset - IMAGE_PAYLOAD).clamp_min(0)
                rl, px = row.clamp_min(1), bpp
                col = (pay % rl) // px

                def taps(scale, pay=pay, rl=rl, px=px, col=col):
                    dr = torch.tensor([r for r, _ in self.image_taps], device=ids.device) * scale
                    dc = torch.tensor([c for _, c in self.image_taps], device=ids.device) * scale
                    back = dr * rl[..., None] - dc * px[..., None]  # (B, T, K) bytes back
                    width = rl[..., None] // px[..., None]
                    ok = (back <= pay[..., None]) & (col[..., None] + dc >= 0) & (col[..., None] + dc < width)
                    return back, ok
            else:
                pay = (offset - AUDIO_PAYLOAD).clamp_min(0)

                def taps(scale, pay=pay):
                    back = (torch.tensor(self.audio_taps, device=ids.device) * scale).expand(*pay.shape, -1)
                    return back, back <= pay[..., None]

            keep = mask.clone()  # the payload bytes whose features are asked for
            keep[:, :start] = False
            if not bool(keep.any()):
                continue
            back2, ok2 = taps(self.dilation if kind == "image" else self.audio_dilation)
            need = mask.clone()  # layer 1 where layer 2 of the asked-for bytes reads it
            if start > 0:
                reach = int(torch.where(ok2 & keep[..., None], back2, torch.zeros_like(back2)).max())
                need[:, :max(0, start - reach)] = False
            back, ok = taps(1)
            pos = flat[need]  # (N,)
            src = pos[:, None] - back[need]
            v = torch.where(ok[need], x.view(-1)[src.clamp_min(0)], torch.zeros((), device=x.device))
            f1 = f1.index_put((pos,), F.gelu(lin1(v)).to(f1.dtype))  # (autocast: bf16 → fp32)
            # layer 2 at the asked-for bytes, reading layer 1 `dilation` apart
            pos = flat[keep]
            src = pos[:, None] - back2[keep]
            g = torch.where(ok2[keep][..., None], f1[src.clamp_min(0)], torch.zeros((), device=x.device))
            h = f1[pos] + F.gelu(lin2(g.flatten(1)))
            if kind == "image" and self.positions:  # band = index · bands // size, channel 0..2
                n, p, r, c = self.positions, pay[keep], rl[keep], px[keep]
                yb = ((p // r) * n // height[keep].clamp_min(1)).clamp(max=n - 1)
                xb = (col[keep] * n // (r // c)).clamp(max=n - 1)
                h = h + (self.image_pos(yb) + self.image_pos(n + xb) + self.image_pos(2 * n + p % c)).to(h.dtype)
            bi, ti = keep.nonzero(as_tuple=True)
            out = out.index_put((bi, ti - start), self.out(h).to(out.dtype))
        return out
