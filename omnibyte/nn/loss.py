"""Language-model loss and the sums behind bits per byte. PAD targets are ignored; a real 0x00
byte is data and is scored."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from omnibyte.format import N_BYTES, PAD


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-id cross-entropy over non-PAD targets (+ optional z-loss on log Z, as in PaLM/
    Chameleon, to keep logits from drifting). With `weights` (same shape as targets), the mean is
    weighted: sum(w · CE) / sum(w) over non-PAD targets."""
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    if weights is None:
        loss = F.cross_entropy(logits, targets, ignore_index=PAD)
    else:
        w = weights.reshape(-1).to(logits.dtype) * (targets != PAD)
        ce = F.cross_entropy(logits, targets, ignore_index=PAD, reduction="none")
        loss = (ce * w).sum() / w.sum().clamp_min(1e-8)
    if z_loss > 0:
        keep = targets != PAD
        loss = loss + z_loss * torch.logsumexp(logits[keep], dim=-1).pow(2).mean()
    return loss


@torch.no_grad()
def nll_sums(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(summed NLL in bits over every non-PAD target, number of byte targets (ids < 256)).

    bits per byte = first / second: specials (EOS, markers) are paid for in the numerator but
    not counted as bytes, so a model gains nothing by predicting them.
    """
    logits = logits.float().reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    nll = F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum").item()
    return nll / math.log(2), int((targets < N_BYTES).sum().item())
