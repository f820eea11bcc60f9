"""Decoder-only transformer over ids: the byte baseline, the BPE baseline (vocab_size = the
tokenizer's) and BLT's entropy model (a small one with a sliding window).

ids (B, T) → embed → TransformerStack (causal, RoPE) → linear head → logits (B, T, V).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from omnibyte.format import VOCAB_SIZE
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import register
from omnibyte.nn import TransformerStack, lm_loss, mlp_hidden


@dataclass
class TransformerConfig:
    vocab_size: int = VOCAB_SIZE  # 263 byte ids + specials; a token model sets its own
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 8 / 3
    qk_norm: bool = True
    rope_theta: float = 10000.0
    window: int = 0  # sliding attention window in ids; 0 = full causal attention
    token_shift: bool = False  # each sublayer also sees the previous position (RWKV's token shift)
    z_loss: float = 0.0

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even size")
        if self.window < 0:
            raise ValueError(f"window must be ≥ 0, got {self.window}")


@dataclass
class TransformerState:
    caches: list
    pos: int = 0


@register
class Transformer(OmniModel):
    arch = "transformer"
    config_cls = TransformerConfig

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.stack = TransformerStack(cfg.dim, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.qk_norm,
                                      cfg.rope_theta, cfg.window, cfg.token_shift)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, ids, targets=None, **extras) -> ModelOutput:
        h = self.stack(self.embed(ids))  # (B, T, dim)
        logits = self.head(h)  # (B, T, V)
        loss = lm_loss(logits, targets, self.cfg.z_loss) if targets is not None else None
        return ModelOutput(logits, loss)

    def init_state(self, batch_size: int, max_len: int) -> TransformerState:
        p = next(self.parameters())
        return TransformerState(self.stack.new_caches(batch_size, max_len, p.device, p.dtype))

    def step(self, state: TransformerState, ids: torch.Tensor) -> torch.Tensor:
        h = self.stack(self.embed(ids), caches=state.caches)
        state.pos += ids.shape[1]
        return self.head(h)

    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        return transformer_flops(self.cfg, seq_len, with_head=True)


def transformer_flops(cfg, seq_len: int, with_head: bool = True) -> dict[str, float]:
    """FLOPs per position of a stack like the one above (multiply-add = 2 FLOPs).

    forward = 2 · (matmul params) + attention, where per layer causal attention costs
    2 · 2 · dim · (mean keys seen) for QKᵀ and AV; mean keys seen = (T+1)/2, or with a window w
    the exact mean of min(t+1, w). Training = 3 × forward (backward ≈ 2 × forward).
    """
    d, h = cfg.dim, mlp_hidden(cfg.dim, cfg.mlp_ratio)
    per_layer = 4 * d * d + 3 * d * h  # wqkv + wo, w13 + w2
    matmul = cfg.n_layers * per_layer + (d * cfg.vocab_size if with_head else 0)
    keys = mean_keys(seq_len, cfg.window)
    attn = cfg.n_layers * 4 * d * keys
    fwd = 2 * matmul + attn
    return {"train": 3.0 * fwd, "infer": float(fwd)}


def mean_keys(seq_len: int, window: int = 0) -> float:
    """Mean number of keys a causal query sees over positions 0..T-1 (window w caps it at w)."""
    t = seq_len
    if window <= 0 or window >= t:
        return (t + 1) / 2
    return (window * (window + 1) / 2 + (t - window) * window) / t
