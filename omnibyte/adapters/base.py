"""The input-adapter seam: extra per-byte input features that any model can take.

A byte embedding sees an image as a line of unrelated ids and a clip as a line of µ-law codes.
An adapter computes features from the ids in the medium's own terms (neighbouring pixels, a whole
finished image) and hands the model what to add to each byte's embedding. Models call their
adapters in one place, before their first transformer stack, and know nothing of what they do.

The contract every adapter keeps, as every model does: the feature at position t depends on
ids[:, :t+1] only, so logits stay causal and decoding can compute the features of new ids from
the ids so far.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn


class InputAdapter(nn.Module, abc.ABC):
    @abc.abstractmethod
    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ids (B, T) and their byte embeddings x (B, T, dim) → what is added to x (B, T, dim)."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, device: torch.device) -> Any:
        """What `step` carries from one call to the next, for `batch_size` rows."""

    @abc.abstractmethod
    def step(self, state: Any, ids: torch.Tensor, start: int, x: torch.Tensor) -> torch.Tensor:
        """Incremental form: ids (B, t1) are every id so far, the new ones from `start` on; x holds
        the new ids' embeddings (B, t1 - start, dim). Returns what is added to x, equal to
        `forward` over the whole sequence at those positions."""

    @abc.abstractmethod
    def flops_per_byte(self) -> float:
        """Forward FLOPs per byte (multiply-add = 2), an upper bound where the work depends on the data."""
