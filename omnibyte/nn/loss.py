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


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float = 1.0, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): KL(teacher ‖ student) between the next-id
    distributions at temperature T, times T² (so the gradient's size does not depend on T), mean
    over the positions whose target is not PAD (weighted by `weights` (B, T) where given, as
    `lm_loss`). Zero exactly when the student's logits equal the teacher's up to a constant."""
    t = temperature
    student = torch.log_softmax(logits.float() / t, dim=-1)
    teacher = torch.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, T)
    keep = (targets != PAD).to(kl.dtype)
    if weights is not None:
        keep = keep * weights.to(kl.dtype)
    return t * t * (kl * keep).sum() / keep.sum().clamp_min(1e-8)
