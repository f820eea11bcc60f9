"""Bits per byte: summed negative log-likelihood in bits over every scored target, divided by the
number of byte targets (ids < 256). Special ids (EOS, segment markers) are scored in the numerator
but are not bytes, so they are not counted in the denominator; PAD is never scored.

A token model (the BPE baseline) passes `bytes_per_id`: the denominator is then the bytes its
scored tokens decode to, so its bits per byte compare exactly with a byte model's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from omnibyte.format import PAD
from omnibyte.nn import nll_sums


@torch.no_grad()
def bits_per_byte(model, batches: Iterable[dict], extras: dict[str, str] | None = None,
                  autocast=contextlib.nullcontext, bytes_per_id=None) -> dict[str, float]:
    """Evaluate `model` on batches of {"ids": (B, T+1), <aux>: ...} → {"bpb", "bytes", "nll_bits"}.

    `extras` maps a forward kwarg to the batch key holding it (e.g. BLT's precomputed entropies),
    passed whole: (B, T+1) for the (B, T) inputs (see `OmniModel.prepare_data`).
    `bytes_per_id` (V,) — bytes each id stands for — replaces "ids < 256 are one byte each".
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if bytes_per_id is not None:
        bytes_per_id = torch.as_tensor(bytes_per_id, dtype=torch.long, device=device)
    total_bits, total_bytes = 0.0, 0
    for batch in batches:
        ids = batch["ids"].to(device)
        kwargs = {k: batch[v].to(device) for k, v in (extras or {}).items()}
        with autocast():
            logits = model(ids[:, :-1], **kwargs).logits
        bits, n = nll_sums(logits, ids[:, 1:])
        if bytes_per_id is not None:
            targets = ids[:, 1:]
            n = int(bytes_per_id[targets[targets != PAD]].sum())
        total_bits += bits
        total_bytes += n
    model.train(was_training)
    bpb = total_bits / total_bytes if total_bytes else float("nan")
    return {"bpb": bpb, "bytes": total_bytes, "nll_bits": total_bits}
