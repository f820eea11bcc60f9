"""Causal convolution features of image and audio payload bytes: an input adapter.

A byte embedding sees an image as a line of unrelated ids: pixel 200 and pixel 201 are two
different rows of a table, and the pixel above is `width` positions back. `MediaConv` gives each
payload byte a feature vector computed from the *values* of the bytes around it in the medium's
own geometry, reading only the past (so the model's contract, logits[:, t] from ids[:, :t+1],
still holds):

- image: a masked 2-D convolution (PixelCNN's type B mask) over the block's pixels, same
  channel: the k × k window's rows above the byte, and its own row up to and including it;
- audio: a causal 1-D convolution over the last k µ-law samples (16 by default).

Two layers, the second dilated (it reads the first layer's features `dilation` pixels or
samples apart), so the receptive field reaches (1 + dilation)·(k // 2) rows of an image and
(1 + dilation)·(k − 1) + 1 samples of audio. The output is projected to the model's width and is
zero on every byte that is not image or audio payload; the projection starts at zero, so a model
with it starts out as the model without it.

The convolutions are gathers over the flat byte sequence (each byte's neighbours lie at offsets
fixed by the block's header), so a batch may hold any mix of image sizes, gray and RGB, audio and
text, and decoding can compute the features of new bytes from the ids so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.adapters.base import InputAdapter
from omnibyte.format import BOA, BOI, N_BYTES
from omnibyte.media.audio import mulaw_decode
from omnibyte.media.layout import AUDIO_PAYLOAD, IMAGE_PAYLOAD, media_geometry, segment_starts

_MULAW = torch.from_numpy(mulaw_decode(np.arange(N_BYTES, dtype=np.uint8)))  # code → sample in [-1, 1]


@dataclass
class MediaConvConfig:
    channels: int = 32  # feature channels of both layers
    kernel: int = 5  # an image window of kernel × kernel pixels (odd, ≥ 3)

    def __post_init__(self):
        if self.channels < 1:
            raise ValueError(f"adapters.media_conv.channels must be ≥ 1, got {self.channels}")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise ValueError(f"adapters.media_conv.kernel must be odd and ≥ 3, got {self.kernel}")


def _payload(ids, opener, offset, row) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, audio) (B, T) bool: the payload bytes of image blocks whose header is in view, and
    of audio blocks."""
    real = ids < N_BYTES
    img = real & (opener == BOI) & (offset >= IMAGE_PAYLOAD) & (row > 0)
    aud = real & (opener == BOA) & (offset >= AUDIO_PAYLOAD)
    return img, aud


def payload_values(ids, img, aud) -> torch.Tensor:
    """(B, T) float: each image payload byte's pixel in [-1, 1], each audio payload byte's µ-law
    sample in [-1, 1], 0 elsewhere."""
    byte = ids.clamp(0, N_BYTES - 1)
    pixel = byte.float() / 127.5 - 1.0
    sample = _MULAW.to(ids.device)[byte]
    return torch.where(img, pixel, torch.where(aud, sample, torch.zeros_like(pixel)))


def image_taps(kernel: int) -> list[tuple[int, int]]:
    """(rows up, columns right) of a type-B masked k × k window: the rows above in full, the
    byte's own row up to and including it."""
    h = kernel // 2
    return [(dr, dc) for dr in range(h, -1, -1) for dc in range(-h, h + 1) if dr > 0 or dc <= 0]


class MediaConv(InputAdapter):
    def __init__(self, cfg: MediaConvConfig, dim: int, dilation: int = 2, audio_kernel: int = 16,
                 audio_dilation: int = 16):
        super().__init__()
        channels = cfg.channels
        self.channels, self.dilation, self.audio_dilation = channels, dilation, audio_dilation
        self.image_taps = image_taps(cfg.kernel)
        self.audio_taps = list(range(audio_kernel))
        ki, ka = len(self.image_taps), audio_kernel
        self.image1 = nn.Linear(ki, channels)
        self.image2 = nn.Linear(ki * channels, channels)
        self.audio1 = nn.Linear(ka, channels)
        self.audio2 = nn.Linear(ka * channels, channels)
        self.out = nn.Linear(channels, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.features(ids).to(x.dtype)

    def init_state(self, batch_size: int, device: torch.device) -> dict:
        return {"segment": torch.zeros(batch_size, dtype=torch.long, device=device)}  # where each row's segment began

    def step(self, state: dict, ids: torch.Tensor, start: int, x: torch.Tensor) -> torch.Tensor:
        """A block's features read back to its header, never further, so the ids from where each
        row's segment at `start` - 1 began are enough (not the whole prefix); blocks that open
        inside the new ids lie after that."""
        t1 = ids.shape[1]
        seg = state["segment"]
        lo = min(int(seg.min()), start)
        feats = self.features(ids[:, lo:], start=start - lo)
        # where each row's last segment (as of t1 - 1) began: the last start among the new ids
        c0 = max(0, start - 1)  # (a segment also starts right after a closing marker)
        starts = segment_starts(ids[:, c0:t1])
        starts[:, 0] |= c0 == 0
        at = torch.arange(c0, t1, device=ids.device)
        last = torch.where(starts, at, torch.full_like(at, -1)).max(dim=1).values
        state["segment"] = torch.maximum(seg, last)
        return feats.to(x.dtype)

    def flops_per_byte(self) -> float:
        """The image branch on every byte (audio's 16 taps cost about the same)."""
        c, ki = self.channels, len(self.image_taps)
        return 2.0 * (ki * c + ki * c * c + c * self.out.out_features)

    def features(self, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, T) → features (B, T - start, dim_out) of positions start..T-1 (the ids before
        `start` are context: decoding passes the ids so far and the first new position)."""
        b, t = ids.shape
        opener, offset, row, bpp, _ = media_geometry(ids)
        img, aud = _payload(ids, opener, offset, row)
        x = payload_values(ids, img, aud).to(self.out.weight.dtype)  # fp32 (autocast too); fp64 to compress
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
            bi, ti = keep.nonzero(as_tuple=True)
            out = out.index_put((bi, ti - start), self.out(h).to(out.dtype))
        return out
