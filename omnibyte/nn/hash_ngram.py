"""Hash n-gram embeddings (BLT §3.2.1): each position also looks up the n-grams of bytes ending
at it, for n in 3..8, through a rolling polynomial hash into a fixed number of buckets, so the
small local encoder sees a wide byte context from its very first layer.

hash_n(t) = (Σ_{j<n} (ids[t-j] + 1) · base^j  mod 2³¹-1)  mod buckets

Positions before the start of the sequence count as PAD, so the first n-1 positions hash the
n-grams "PAD…PAD ids[0..t]". The sum is computed with n shifted copies of the id tensor in
int64 (every term stays below 2⁴¹), never with a loop over positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from omnibyte.format import PAD

MODULUS = 2**31 - 1  # a Mersenne prime: products of ids and powers fit easily in int64
DEFAULT_BASE = 1_000_003


def hash_ngram_ids(ids: torch.Tensor, n: int, buckets: int, base: int = DEFAULT_BASE) -> torch.Tensor:
    """ids (B, T) → (B, T) bucket of the n-gram ids[t-n+1 .. t] at each position (int64)."""
    return rolling_hashes(ids, (n,), base)[n] % buckets


def rolling_hashes(ids: torch.Tensor, sizes, base: int = DEFAULT_BASE) -> dict[int, torch.Tensor]:
    """{n: (B, T) hash mod 2³¹-1} for every n in `sizes`, sharing the work: the hash of the n-gram
    is that of the (n-1)-gram plus one more term, so max(sizes) shifted copies serve them all."""
    ids = ids.long()
    t = ids.shape[-1]
    h = torch.zeros_like(ids)
    out = {}
    for j in range(max(sizes)):  # over the n-gram's offsets, not over positions
        shifted = torch.full_like(ids, PAD)
        if j < t:
            shifted[..., j:] = ids[..., : t - j]
        h = (h + (shifted + 1) * pow(base, j, MODULUS)) % MODULUS
        if j + 1 in sizes:
            out[j + 1] = h
    return out


class HashNgramEmbedding(nn.Module):
    """Byte embedding plus one hashed table per n-gram size, summed and scaled by 1/√(1 + #sizes)
    so the sum starts with the spread of a single embedding."""

    def __init__(self, vocab_size: int, dim: int, ngram_sizes: tuple[int, ...], buckets: int,
                 base: int = DEFAULT_BASE):
        super().__init__()
        self.ngram_sizes, self.buckets, self.base = tuple(ngram_sizes), buckets, base
        self.bytes = nn.Embedding(vocab_size, dim)
        self.ngrams = nn.ModuleList(nn.Embedding(buckets, dim) for _ in self.ngram_sizes)
        self.scale = 1 / math.sqrt(1 + len(self.ngram_sizes))
        for emb in (self.bytes, *self.ngrams):
            nn.init.normal_(emb.weight, std=0.02)

    @property
    def context(self) -> int:
        """Ids before a position that its embedding depends on."""
        return max(self.ngram_sizes, default=1) - 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.bytes(ids)  # (B, T, dim)
        hashes = rolling_hashes(ids, self.ngram_sizes, self.base)
        for n, table in zip(self.ngram_sizes, self.ngrams):
            x = x + table(hashes[n] % self.buckets)
        return x * self.scale
