"""A whole-clip summary for the bytes after an audio clip: a small 1-D CNN over each finished audio
block, as an input adapter (a `BlockSummary`, the image encoder's twin).

Transcribing a clip means reading words spread over thousands of µ-law samples. `AudioEncoder`
runs strided convolutions over the decoded samples of each clip once its EOA is in view (as
Whisper's encoder feeds its text decoder), average-pools the frames into `cells` cells of equal
duration, so the summary keeps the order of what was said, and adds the projected summary to every
byte after the clip: the question and the transcript read the whole clip at once.

A clip counts when its whole block lies in view: BOA, a valid header (µ-law, a rate above 0),
exactly the stated number of samples, then EOA. Five convolutions of stride 8, 2, 2, 2, 2 turn
8 kHz samples into frames of 16 ms; a clip shorter than the convolutions' reach is padded with
silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.adapters.block_summary import BlockSummary
from omnibyte.format import AUDIO_MULAW8, BOA, EOA, N_BYTES
from omnibyte.media.audio import mulaw_decode
from omnibyte.media.layout import AUDIO_PAYLOAD, media_layout

_MULAW = torch.from_numpy(mulaw_decode(np.arange(N_BYTES, dtype=np.uint8)))  # code → sample in [-1, 1]
# (kernel, stride) of the five convolutions: 8 · 2⁴ = 128 samples per frame
LAYERS = ((16, 8), (5, 2), (5, 2), (5, 2), (3, 2))


def _reach(layers) -> int:
    """The fewest samples that give one frame."""
    n = 1
    for k, stride in reversed(layers):
        n = (n - 1) * stride + k
    return n


MIN_SAMPLES = _reach(LAYERS)  # 368


@dataclass
class AudioEncoderConfig:
    width: int = 32  # channels of the first two convolutions (2 × width after)
    gain: float = 0.3  # the summary's RMS at the start, learned per channel
    cells: int = 16  # the clip's frames are pooled into this many cells of equal duration

    def __post_init__(self):
        if self.width < 1 or not self.gain > 0 or self.cells < 1:
            raise ValueError(f"adapters.audio_encoder needs width ≥ 1, gain > 0 and cells ≥ 1, got {self.width}, "
                             f"{self.gain} and {self.cells}")


def finished_clips(ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, ...]:
    """Complete µ-law audio blocks whose EOA lies at or after position `lo` → three (N,) long
    tensors: the batch row, the EOA's position and the sample count."""
    opener, offset, _ = media_layout(ids)
    s = (torch.arange(ids.shape[-1], device=ids.device) - offset).clamp_min(0)  # each position's opener

    def header(k: int) -> torch.Tensor:  # the header id k positions after the opener (rate 1-4, count 5-8, enc 9)
        return ids.gather(-1, (s + k).clamp(max=ids.shape[-1] - 1))

    fields = torch.stack([header(k) for k in range(1, AUDIO_PAYLOAD)], dim=-1)  # (B, T, 9)
    valid = (fields < N_BYTES).all(-1) & (fields[..., 8] == AUDIO_MULAW8) & (fields[..., :4].sum(-1) > 0)
    count = ((fields[..., 4] * 256 + fields[..., 5]) * 256 + fields[..., 6]) * 256 + fields[..., 7]
    last = torch.zeros_like(ids, dtype=torch.bool)  # the EOA right after a clip's last sample
    last[:, 1:] = ((ids[:, 1:] == EOA) & (opener[:, :-1] == BOA) & (offset[:, :-1] >= AUDIO_PAYLOAD - 1)
                   & valid[:, :-1] & (offset[:, :-1] - AUDIO_PAYLOAD + 1 == count[:, :-1]))
    last[:, :lo] = False
    b, t = last.nonzero(as_tuple=True)
    return b, t, count[b, t - 1]


class AudioEncoder(BlockSummary):
    def __init__(self, cfg: AudioEncoderConfig, dim: int):
        w = cfg.width
        super().__init__(2 * w * cfg.cells, dim, cfg.gain)
        chans = (1, w, w, 2 * w, 2 * w, 2 * w)
        layers: list[nn.Module] = []
        for (k, stride), c_in, c_out in zip(LAYERS, chans, chans[1:]):
            layers += [nn.Conv1d(c_in, c_out, k, stride), nn.GELU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(cfg.cells), nn.Flatten())
        self.chans = chans

    def flops_per_byte(self) -> float:
        """The convolutions per sample, with the projection spread over a second of 8 kHz audio."""
        conv, step = 0.0, 1
        for (k, stride), c_in, c_out in zip(LAYERS, self.chans, self.chans[1:]):
            step *= stride
            conv += 2 * k * c_in * c_out / step
        return conv + 2 * self.out.in_features * self.out.out_features / 8000

    def encode(self, samples: torch.Tensor) -> torch.Tensor:
        """samples (N, L) in [-1, 1] → (N, dim_out); clips shorter than `MIN_SAMPLES` are padded with silence."""
        if samples.shape[1] < MIN_SAMPLES:
            samples = F.pad(samples, (0, MIN_SAMPLES - samples.shape[1]))
        return self.project(self.body(samples[:, None]))

    def summaries(self, ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) → (rows, EOA positions, vectors (N, dim_out)) of every complete clip whose EOA
        lies at or after `lo`."""
        if not bool((ids[:, lo:] == EOA).any()):  # (decoding: most steps)
            return self.nothing(ids)
        b, t, count = finished_clips(ids, lo)
        if b.numel() == 0:
            return self.nothing(ids)
        table = _MULAW.to(ids.device, self.out.weight.dtype)
        vecs = []
        for row, end, n in zip(b.tolist(), t.tolist(), count.tolist()):  # clips differ in length: one at a time
            codes = ids[row, end - n:end].clamp(max=N_BYTES - 1)
            vecs.append(self.encode(table[codes][None]))
        return b, t, torch.cat(vecs)
