"""Input adapters any model can take (see `omnibyte.adapters.base`), composed from a model's
`adapters` config: a table per adapter that is on.

    [model.adapters.media_conv]      # causal conv features of pixel and sample values
    channels = 32
    [model.adapters.image_encoder]   # a CNN summary of each finished image for the bytes after it
    width = 32
    [model.adapters.audio_encoder]   # a 1-D CNN summary of each finished clip for the bytes after it
    width = 32
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from omnibyte.adapters.audio_encoder import AudioEncoder, AudioEncoderConfig
from omnibyte.adapters.base import InputAdapter
from omnibyte.adapters.image_encoder import ImageEncoder, ImageEncoderConfig
from omnibyte.adapters.media_conv import MediaConv, MediaConvConfig


@dataclass
class AdaptersConfig:
    media_conv: MediaConvConfig | None = None
    image_encoder: ImageEncoderConfig | None = None
    audio_encoder: AudioEncoderConfig | None = None

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))


ADAPTER_KINDS: dict[str, type[InputAdapter]] = {"media_conv": MediaConv, "image_encoder": ImageEncoder,
                                                "audio_encoder": AudioEncoder}


@dataclass
class AdapterState:
    """Decoding state of a model's adapters: every id so far (adapters read back into the past),
    and each adapter's own state."""

    ids: torch.Tensor  # (B, max_len)
    length: int
    parts: dict[str, Any]


class InputAdapters(nn.ModuleDict):
    """The adapters of one model, each adding to the byte embeddings of width `dim`; with none on,
    `__call__` and `step` return the embeddings untouched."""

    def __init__(self, cfg: AdaptersConfig, dim: int):
        super().__init__({f.name: ADAPTER_KINDS[f.name](getattr(cfg, f.name), dim) for f in dataclasses.fields(cfg)
                          if getattr(cfg, f.name) is not None})

    def extra(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """What every adapter adds to x (B, T, dim), summed; None without adapters."""
        out = None
        for adapter in self.values():
            a = adapter(ids, x)
            out = a if out is None else out + a
        return out

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        extra = self.extra(ids, x)
        return x if extra is None else x + extra

    def init_state(self, batch_size: int, max_len: int, device: torch.device) -> AdapterState | None:
        if not len(self):
            return None
        return AdapterState(torch.zeros(batch_size, max_len, dtype=torch.long, device=device), 0,
                            {name: a.init_state(batch_size, device) for name, a in self.items()})

    def step_extra(self, state: AdapterState | None, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """`extra` for new ids (B, t) during decoding, from the ids so far."""
        if state is None:
            return None
        t0, t1 = state.length, state.length + ids.shape[1]
        if t1 > state.ids.shape[1]:
            raise RuntimeError(f"adapter state full: {t1} > {state.ids.shape[1]} positions")
        state.ids[:, t0:t1] = ids
        state.length = t1
        out = None
        for name, adapter in self.items():
            a = adapter.step(state.parts[name], state.ids[:, :t1], t0, x)
            out = a if out is None else out + a
        return out

    def step(self, state: AdapterState | None, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        extra = self.step_extra(state, ids, x)
        return x if extra is None else x + extra

    def flops_per_byte(self) -> float:
        return float(sum(a.flops_per_byte() for a in self.values()))


__all__ = ["AdapterState", "AdaptersConfig", "AudioEncoder", "AudioEncoderConfig", "ImageEncoder", "ImageEncoderConfig",
           "InputAdapter", "InputAdapters", "MediaConv", "MediaConvConfig"]
