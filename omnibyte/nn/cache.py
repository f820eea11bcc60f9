"""Caches: the KV cache for incremental decoding (preallocated (B, H, max_len, D) buffers per
layer), and `eager_lru_cache` for small constant tables."""

from __future__ import annotations

import functools

import torch


def eager_lru_cache(maxsize: int):
    """functools.lru_cache for functions that make small constant tensors, bypassed while
    torch.compile traces (compiled graphs keep their own constants; dynamo warns about lru caches)."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        call.cache_clear = cached.cache_clear
        return call
    return wrap


class KVCache:
    def __init__(self, batch_size: int, n_heads: int, max_len: int, head_dim: int, device=None,
                 dtype=torch.float32):
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.shifted: dict[str, torch.Tensor] = {}  # token shift: last position's shifted half, per sublayer

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H, T, D) and return all keys and values so far."""
        t = k.shape[2]
        end = self.length + t
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {end} > {self.max_len} positions")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self):
        self.length = 0
        self.shifted = {}
