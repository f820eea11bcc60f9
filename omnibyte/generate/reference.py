"""Decoding without a cache: the whole sequence is run again for every new id. Cached decoding
must give exactly what this gives (the model contract tests check it), and is measured against it
(the speed benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from omnibyte.format import EOS
from omnibyte.generate.constraints import Constraint, TextOnly, default_mask


@torch.inference_mode()
def rerun_greedy(model, prompt: Sequence[int], max_new: int, constraint: Constraint | None = None) -> list[int]:
    """Greedy continuation of one prompt by a full forward per new id (TextOnly unless a
    `constraint` is given, as in `generate`); stops after EOS."""
    constraint = constraint or TextOnly()
    device = model.device
    seq, new = list(map(int, prompt)), []
    model.eval()
    for _ in range(max_new):
        logits = model(torch.tensor([seq], device=device)).logits[0, -1].float()
        mask = constraint.allowed(logits.shape[-1])
        if mask is None:
            mask = default_mask(logits.shape[-1])
        tok = int(logits.masked_fill(~mask.to(device), float("-inf")).argmax())
        constraint.advance(tok)
        new.append(tok)
        seq.append(tok)
        if tok == EOS:
            break
    return new
