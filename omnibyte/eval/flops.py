"""Measured FLOPs of a model's forward (and backward) pass, to check each model's
`flops_per_byte` formula against what it really computes.

Matrix products are counted by `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per
multiply-add; elementwise work, norms and softmax are not counted — the formulas leave them out
too). Attention is counted here, because FlopCounterMode either skips scaled-dot-product
attention (the CPU kernel has no formula) or counts every (query, key) pair, as if attention were
not causal. We count the pairs the mask allows: a causal mask over T keys allows T(T+1)/2 pairs,
not T², which is what the formulas assume ("mean keys seen" per query). Forward attention costs
2·d (QKᵀ) + 2·d_v (weights·V) per allowed pair; its backward twice that, the convention
FlopCounterMode uses for attention and for every matrix product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

_SDPA = "scaled_dot_product"


@dataclass
class FlopCount:
    matmul: float = 0.0  # linear layers and other matrix products
    attention: float = 0.0  # attention over the (query, key) pairs its mask allows
    attention_dense: float = 0.0  # the same attention if every pair were computed

    @property
    def total(self) -> float:
        return self.matmul + self.attention

    @property
    def dense_total(self) -> float:
        return self.matmul + self.attention_dense


def _allowed_pairs(q: torch.Tensor, k: torch.Tensor, mask, is_causal: bool) -> float:
    """(query, key) pairs attended over the whole (B, H) batch of one attention call."""
    *batch, t_q, _ = q.shape
    t_k = k.shape[-2]
    n_batch = 1
    for b in batch:
        n_batch *= b
    if mask is None and not is_causal:
        return float(n_batch * t_q * t_k)
    if is_causal:  # torch's is_causal aligns the mask top-left
        allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
    else:
        allowed = mask if mask.dtype == torch.bool else mask > float("-inf")
    allowed = allowed.expand(*batch, t_q, t_k)
    return float(allowed.sum())


class _AttentionCounter(TorchDispatchMode):
    """Counts every scaled-dot-product-attention kernel, forward and backward."""

    def __init__(self):
        super().__init__()
        self.allowed = 0.0
        self.dense = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        if _SDPA in name:
            self._count(name, args, kwargs)
        return func(*args, **kwargs)

    def _count(self, name: str, args, kwargs) -> None:
        if "backward" in name:
            # backward kernels take (grad_out, q, k, v, out, ...): same pairs, twice the work
            q, k, v = args[1], args[2], args[3]
            factor = 2.0
        else:
            q, k, v = args[0], args[1], args[2]
            factor = 1.0
        is_causal = kwargs.get("is_causal", False)
        if not is_causal:
            is_causal = next((a for a in args[3:] if isinstance(a, bool)), False)
        mask = kwargs.get("attn_mask")
        if mask is None:
            mask = next((a for a in args[3:] if isinstance(a, torch.Tensor) and a.dim() >= 2
                         and a.shape[-2:] == (q.shape[-2], k.shape[-2])), None)
        per_pair = 2 * q.shape[-1] + 2 * v.shape[-1]
        n_batch_pairs = q.numel() // q.shape[-1] * k.shape[-2]
        self.dense += factor * per_pair * n_batch_pairs
        self.allowed += factor * per_pair * _allowed_pairs(q, k, mask, bool(is_causal))


def count_flops(fn: Callable[[], object]) -> FlopCount:
    """Run `fn()` and count the FLOPs it spends (see the module docstring for what counts)."""
    counter = FlopCounterMode(display=False)
    attention = _AttentionCounter()
    with counter, attention:
        fn()
    by_op = counter.get_flop_counts().get("Global", {})
    counted_sdpa = sum(v for op, v in by_op.items() if _SDPA in str(op))
    return FlopCount(matmul=float(counter.get_total_flops() - counted_sdpa), attention=attention.allowed,
                     attention_dense=attention.dense)


def text_like_ids(batch_size: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(B, T) ids of lowercase words and spaces: a stand-in for text when patch boundaries depend
    on content (space patching)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(ord("a"), ord("z") + 1, (batch_size, seq_len), generator=g)
    spaces = torch.rand(batch_size, seq_len, generator=g) < 0.2
    return ids.masked_fill(spaces, ord(" "))


def measure_flops_per_byte(model, seq_len: int, batch_size: int = 2, ids: torch.Tensor | None = None,
                           extras: dict | None = None) -> dict[str, FlopCount]:
    """Measured FLOPs per position for inference (forward) and training (forward + backward of
    the loss), to compare with `model.flops_per_byte(seq_len)`. Per position = count / (B·T)."""
    if ids is None:
        ids = text_like_ids(batch_size, seq_len + 1)
    ids = ids.to(model.device)
    x, y = ids[:, :-1], ids[:, 1:]
    extras = {k: v[:, : x.shape[1] + 1].to(model.device) for k, v in (extras or {}).items()}
    n = x.numel()
    was_training = model.training
    model.eval()
    with torch.no_grad():
        infer = count_flops(lambda: model(x, **extras))
    model.train()
    train = count_flops(lambda: model(x, y, **extras).loss.backward())
    model.zero_grad(set_to_none=True)
    model.train(was_training)

    def per(c: FlopCount) -> FlopCount:
        return FlopCount(c.matmul / n, c.attention / n, c.attention_dense / n)

    return {"infer": per(infer), "train": per(train)}
