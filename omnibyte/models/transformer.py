"""Decoder-only transformer over ids: the byte baseline, the BPE baseline (vocab_size = the
tokenizer's) and BLT's entropy model (a small one with a sliding window).

ids (B, T) → embed (+ input adapters) → TransformerStack (causal, RoPE) → linear head → logits (B, T, V).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from omnibyte.adapters import AdaptersConfig, InputAdapters
from omnibyte.format import VOCAB_SIZE
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import register
from omnibyte.nn import KVCache, StackConfig, TransformerStack, stack_flops
from omnibyte.nn.cache import Rows


@dataclass
class TransformerConfig:
    vocab_size: int = VOCAB_SIZE  # 263 byte ids + specials; a token model sets its own
    # the one stack's sizes, named as every stack's are (omnibyte.nn.StackConfig)
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    window: int = 0  # sliding attention window in ids; 0 = full causal attention
    mlp_ratio: float = 8 / 3
    mlp_hidden: int = 0  # SwiGLU width; 0 = mlp_ratio × dim, rounded up to a multiple of 32
    qk_norm: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6  # every RMSNorm's epsilon (an imported BLT entropy model: 1e-5)
    token_shift: bool = False  # each sublayer also sees the previous position (RWKV's token shift)
    z_loss: float = 0.0
    adapters: AdaptersConfig = field(default_factory=AdaptersConfig)

    def __post_init__(self):
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be ≥ 1, got {self.vocab_size}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        self.stack.check("model")

    @property
    def stack(self) -> StackConfig:
        return StackConfig(self.dim, self.n_layers, self.n_heads, self.window, self.mlp_hidden)


@dataclass
class TransformerState:
    caches: KVCache
    adapters: object = None


@register
class Transformer(OmniModel):
    arch = "transformer"
    config_cls = TransformerConfig

    def __init__(self, cfg: TransformerConfig):
        super().__init__(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.stack = TransformerStack.from_config(cfg.stack, mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm,
                                                  rope_theta=cfg.rope_theta, token_shift=cfg.token_shift,
                                                  norm_eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)
        self.adapters = InputAdapters(cfg.adapters, cfg.dim)

    def forward(self, ids, targets=None, **extras) -> ModelOutput:
        h = self.stack(self.adapters(ids, self.embed(ids)))  # (B, T, dim)
        logits = self.head(h)  # (B, T, V)
        loss = self.loss(logits, targets) if targets is not None else None
        return ModelOutput(logits, loss)

    def init_state(self, batch_size: int, max_len: int) -> TransformerState:
        p = next(self.parameters())
        return TransformerState(self.stack.new_caches(batch_size, max_len, p.device, p.dtype),
                                self.adapters.init_state(batch_size, max_len, p.device))

    def step(self, state: TransformerState, ids: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        x = self.adapters.step(state.adapters, ids, self.embed(ids), rows)
        return self.head(self.stack(x, caches=state.caches, rows=rows))

    def clear_rows(self, state: TransformerState, rows: Rows = None) -> None:
        state.caches.clear(rows)
        self.adapters.clear_rows(state.adapters, rows)

    def attention_window(self) -> int:
        return self.cfg.window

    def config_with_layers(self, n_layers: dict[str, int]) -> TransformerConfig:
        """The one stack's sizes are [model] itself (`cfg.stack` reads them)."""
        return dataclasses.replace(self.cfg, n_layers=n_layers.get("stack", self.cfg.n_layers))

    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """The stack, the head and the adapters per position (multiply-add = 2); training = 3 × forward."""
        cfg = self.cfg
        fwd = stack_flops(cfg.stack, cfg.mlp_ratio, seq_len) + 2 * cfg.dim * cfg.vocab_size
        fwd += self.adapters.flops_per_byte()
        return {"train": 3.0 * fwd, "infer": float(fwd)}
