"""Per-row decoding constraints. The decoding loop asks each row's constraint which ids may come
next (`allowed`) and tells it what came (`advance`). Constraints are shared by all models."""

from __future__ import annotations

import functools

import torch

from omnibyte.format import BOS, EOS, N_BYTES, PAD, VOCAB_SIZE


class Constraint:
    """No constraint beyond never producing PAD or BOS mid-document."""

    def allowed(self, vocab_size: int) -> torch.Tensor | None:
        """Bool (vocab_size,) of ids that may come next, or None for 'anything but PAD/BOS'."""
        return None

    def advance(self, token: int) -> None:
        pass


class TextOnly(Constraint):
    """Bytes and EOS only: plain text generation never opens an image or audio block."""

    def allowed(self, vocab_size: int) -> torch.Tensor:
        return _text_mask(vocab_size)


@functools.cache
def _text_mask(vocab_size: int) -> torch.Tensor:
    m = torch.zeros(vocab_size, dtype=torch.bool)
    m[:N_BYTES] = True
    if EOS < vocab_size:
        m[EOS] = True
    return m


@functools.cache
def default_mask(vocab_size: int = VOCAB_SIZE) -> torch.Tensor:
    m = torch.ones(vocab_size, dtype=torch.bool)
    m[[PAD, BOS]] = False
    return m
