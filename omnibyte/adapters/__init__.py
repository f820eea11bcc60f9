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
from omnibyte.nn.cache import Rows, row_index


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
    how many ids each row holds, and each adapter's own state (tensors with a row per batch row)."""

    ids: torch.Tensor  # (B, max_len)
    lengths: list[int]
    parts: dict[str, Any]


def _take(tree, idx):
    """The rows `idx` of every tensor in a dict / tuple of batch-first tensors."""
    if isinstance(tree, dict):
        return {k: _take(v, idx) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_take(v, idx) for v in tree)
    return tree[idx]


def _put(tree, idx, sub) -> None:
    """Write `sub` (what `_take` gave, stepped) back into the rows `idx` of `tree`, in place."""
    if isinstance(tree, dict):
        for k in tree:
            _put(tree[k], idx, sub[k])
    elif isinstance(tree, tuple):
        for t, s in zip(tree, sub):
            _put(t, idx, s)
    else:
        tree[idx] = sub


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
        return AdapterState(torch.zeros(batch_size, max_len, dtype=torch.long, device=device), [0] * batch_size,
                            {name: a.init_state(batch_size, device) for name, a in self.items()})

    def clear_rows(self, state: AdapterState | None, rows: Rows = None) -> None:
        """These rows (all by default) start a new sequence."""
        if state is None:
            return
        rows = range(len(state.lengths)) if rows is None else rows
        for r in rows:
            state.lengths[r] = 0
        idx = row_index(list(rows), state.ids.device)
        for name, a in self.items():
            _put(state.parts[name], idx, a.init_state(len(rows), state.ids.device))

    def step_extra(self, state: AdapterState | None, ids: torch.Tensor, x: torch.Tensor,
                   rows: Rows = None) -> torch.Tensor | None:
        """`extra` for new ids (R, t) of `rows` (default all) during decoding, from the ids so far.
        Rows at different positions are stepped one at a time (adapters read back by position)."""
        if state is None:
            return None
        starts = [state.lengths[r] for r in rows] if rows is not None else list(state.lengths)
        if any(s != starts[0] for s in starts):
            rows = range(len(starts)) if rows is None else rows
            return torch.cat([self.step_extra(state, ids[i:i + 1], x[i:i + 1], [r]) for i, r in enumerate(rows)])
        t0, t1 = starts[0], starts[0] + ids.shape[1]
        if t1 > state.ids.shape[1]:
            raise RuntimeError(f"adapter state full: {t1} > {state.ids.shape[1]} positions")
        idx = row_index(rows, ids.device)
        state.ids[idx, t0:t1] = ids
        for r in range(len(starts)) if rows is None else rows:
            state.lengths[r] = t1
        out = None
        for name, adapter in self.items():
            part = state.parts[name] if rows is None else _take(state.parts[name], idx)
            a = adapter.step(part, state.ids[idx, :t1], t0, x)
            if rows is not None:
                _put(state.parts[name], idx, part)
            out = a if out is None else out + a
        return out

    def step(self, state: AdapterState | None, ids: torch.Tensor, x: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        extra = self.step_extra(state, ids, x, rows)
        return x if extra is None else x + extra

    def flops_per_byte(self) -> float:
        return float(sum(a.flops_per_byte() for a in self.values()))


__all__ = ["AdapterState", "AdaptersConfig", "AudioEncoder", "AudioEncoderConfig", "ImageEncoder", "ImageEncoderConfig",
           "InputAdapter", "InputAdapters", "MediaConv", "MediaConvConfig"]
