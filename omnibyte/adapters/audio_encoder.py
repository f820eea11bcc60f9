"""A whole-clip summary for the bytes after an audio clip: a small CNN over the log-mel spectrogram
of each finished audio block, as an input adapter (a `BlockSummary`, the image encoder's twin).

Transcribing a clip means reading words spread over thousands of µ-law samples. `AudioEncoder`
turns each clip, once its EOA is in view, into a log-mel spectrogram (25 ms windows every 10 ms,
40 mel bands up to the clip's Nyquist frequency, Whisper's dynamic range and scale), runs three
convolutions over its frames (the last two halving the frame rate), average-pools them into
`cells` cells of equal duration, so the summary keeps the order of what was said, and adds the
projected summary to every byte after the clip: the question and the transcript read the whole
clip at once. A log-mel front end rather than raw samples: the spectrogram hands the CNN the
frequencies that tell words apart, which it would otherwise have to learn.

A clip counts when its whole block lies in view: BOA, a valid header (µ-law, a rate above 0),
exactly the stated number of samples, then EOA.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from omnibyte.adapters.block_summary import BlockSummary
from omnibyte.format import AUDIO_MULAW8, BOA, EOA, N_BYTES
from omnibyte.media.audio import mulaw_decode
from omnibyte.media.layout import AUDIO_PAYLOAD, media_layout

_MULAW = torch.from_numpy(mulaw_decode(np.arange(N_BYTES, dtype=np.uint8)))  # code → sample in [-1, 1]
WINDOW_S, HOP_S = 0.025, 0.010  # spectrogram frames: 25 ms windows every 10 ms
N_MELS = 40
DYNAMIC_RANGE = 8.0  # log10 units kept below a clip's loudest band (as Whisper)


@lru_cache(maxsize=8)
def mel_filters(n_fft: int, rate: int, n_mels: int = N_MELS) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the mel scale from 0 Hz to rate / 2."""
    mel = np.linspace(0.0, 2595 * np.log10(1 + rate / 2 / 700), n_mels + 2)
    edges = 700 * (10 ** (mel / 2595) - 1) * n_fft / rate  # in FFT bins
    k = np.arange(n_fft // 2 + 1)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (k - lo) / np.maximum(mid - lo, 1e-6)
    down = (hi - k) / np.maximum(hi - mid, 1e-6)
    return torch.from_numpy(np.clip(np.minimum(up, down), 0.0, None).astype(np.float32))


def log_mel(samples: torch.Tensor, rate: int) -> torch.Tensor:
    """samples (L,) in [-1, 1] at `rate` Hz → (N_MELS, frames) log-mel spectrogram in about [-1, 1]."""
    win, hop = max(2, round(WINDOW_S * rate)), max(1, round(HOP_S * rate))
    n_fft = 1 << (win - 1).bit_length()
    window = torch.hann_window(win, device=samples.device)
    spec = torch.stft(samples.float(), n_fft, hop_length=hop, win_length=win, window=window, return_complex=True,
                      pad_mode="constant").abs().pow(2)  # (n_fft/2+1, frames)
    spec = spec / (window.sum() / 2) ** 2  # a full-scale sine's band near 1 (0 in log10)
    mel = torch.log10((mel_filters(n_fft, rate).to(spec.device) @ spec).clamp_min(1e-10))
    return (torch.maximum(mel, mel.max() - DYNAMIC_RANGE) + 4.0) / 4.0


@dataclass
class AudioEncoderConfig:
    width: int = 32  # channels of the first convolution (2 × width after)
    gain: float = 0.3  # the summary's RMS at the start, learned per channel
    cells: int = 16  # the clip's frames are pooled into this many cells of equal duration

    def __post_init__(self):
        if self.width < 1 or not self.gain > 0 or self.cells < 1:
            raise ValueError(f"adapters.audio_encoder needs width ≥ 1, gain > 0 and cells ≥ 1, got {self.width}, "
                             f"{self.gain} and {self.cells}")


def finished_clips(ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, ...]:
    """Complete µ-law audio blocks whose EOA lies at or after position `lo` → four (N,) long
    tensors: the batch row, the EOA's position, the sample count and the sample rate."""
    opener, offset, _ = media_layout(ids)
    s = (torch.arange(ids.shape[-1], device=ids.device) - offset).clamp_min(0)  # each position's opener

    def header(k: int) -> torch.Tensor:  # the header id k positions after the opener (rate 1-4, count 5-8, enc 9)
        return ids.gather(-1, (s + k).clamp(max=ids.shape[-1] - 1))

    fields = torch.stack([header(k) for k in range(1, AUDIO_PAYLOAD)], dim=-1)  # (B, T, 9)
    valid = (fields < N_BYTES).all(-1) & (fields[..., 8] == AUDIO_MULAW8) & (fields[..., :4].sum(-1) > 0)
    rate = ((fields[..., 0] * 256 + fields[..., 1]) * 256 + fields[..., 2]) * 256 + fields[..., 3]
    count = ((fields[..., 4] * 256 + fields[..., 5]) * 256 + fields[..., 6]) * 256 + fields[..., 7]
    last = torch.zeros_like(ids, dtype=torch.bool)  # the EOA right after a clip's last sample
    last[:, 1:] = ((ids[:, 1:] == EOA) & (opener[:, :-1] == BOA) & (offset[:, :-1] >= AUDIO_PAYLOAD - 1)
                   & valid[:, :-1] & (offset[:, :-1] - AUDIO_PAYLOAD + 1 == count[:, :-1]))
    last[:, :lo] = False
    b, t = last.nonzero(as_tuple=True)
    return b, t, count[b, t - 1], rate[b, t - 1]


class AudioEncoder(BlockSummary):
    def __init__(self, cfg: AudioEncoderConfig, dim: int):
        w = cfg.width
        super().__init__(2 * w * cfg.cells, dim, cfg.gain)
        self.body = nn.Sequential(
            nn.Conv1d(N_MELS, w, 3, padding=1), nn.GELU(),
            nn.Conv1d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv1d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool1d(cfg.cells), nn.Flatten())
        self.width = w

    def flops_per_byte(self) -> float:
        """The spectrogram and the convolutions per sample of 8 kHz audio, with the projection spread
        over a second of it."""
        w, hop, n_fft = self.width, round(HOP_S * 8000), 256
        per_frame = 5 * n_fft * np.log2(n_fft) + 2 * N_MELS * (n_fft // 2 + 1) + 2 * 3 * (
            N_MELS * w + w * 2 * w / 2 + 4 * w * w / 4)
        return float(per_frame / hop + 2 * self.out.in_features * self.out.out_features / 8000)

    def encode(self, samples: torch.Tensor, rate: int = 8000) -> torch.Tensor:
        """samples (N, L) in [-1, 1] at `rate` Hz → (N, dim_out)."""
        mels = torch.stack([log_mel(x, rate) for x in samples])  # (N, N_MELS, frames)
        return self.project(self.body(mels.to(self.out.weight.dtype)))

    def summaries(self, ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) → (rows, EOA positions, vectors (N, dim_out)) of every complete clip whose EOA
        lies at or after `lo`."""
        if not bool((ids[:, lo:] == EOA).any()):  # (decoding: most steps)
            return self.nothing(ids)
        b, t, count, rate = finished_clips(ids, lo)
        if b.numel() == 0:
            return self.nothing(ids)
        table = _MULAW.to(ids.device)
        vecs = []
        for row, end, n, hz in zip(b.tolist(), t.tolist(), count.tolist(), rate.tolist()):  # one clip at a time
            codes = ids[row, end - n:end].clamp(max=N_BYTES - 1)
            vecs.append(self.encode(table[codes][None], hz))
        return b, t, torch.cat(vecs)
