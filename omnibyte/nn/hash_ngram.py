"""Hash n-gram embeddings (BLT §3.2.1): each position also looks up the n-grams of bytes ending
at it, for n in 3..8, through a rolling polynomial hash into a fixed number of buckets, so the
small local encoder sees a wide byte context from its very first layer.

hash_n(t) = (Σ_{j<n} (ids[t-j] + 1) · base^j  mod 2³¹-1)  mod buckets

Positions before the start of the sequence count as PAD, so the first n-1 positions hash the
n-grams "PAD…PAD ids[0..t]". The sum is computed over a sliding view of the ids in int64
(every term stays below 2⁴⁸), never with a loop over positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.format import PAD
from omnibyte.nn.cache import eager_lru_cache

MODULUS = 2**31 - 1  # a Mersenne prime: products of ids and powers fit easily in int64
DEFAULT_BASE = 1_000_003


@dataclass
class NgramConfig:
    """The hash n-gram tables of a byte embedding, and how the optimiser treats them: they hold
    most of a BLT's parameters, yet one step reads few of their rows."""

    sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)  # n-gram sizes, one table each (paper: 3..8)
    buckets: int = 4096  # rows per table (paper: 500,002 at scale)
    base: int = DEFAULT_BASE  # base of the rolling polynomial hash: part of the model
    dropout: float = 0.0  # training only: drop each n-gram lookup with this probability
    lr_scale: float = 1.0  # the tables learn at the schedule's lr × this
    weight_decay: float | None = None  # the tables' weight decay (None = the trainer's)
    # sparse gradients and row-wise AdamW (omnibyte/train/optim.py): only the rows a step reads are
    # updated, each catching up on the steps it missed; used on the CPU in one eager process
    sparse: bool = True

    def __post_init__(self):
        if any(n < 2 for n in self.sizes):
            raise ValueError(f"ngrams.sizes must all be ≥ 2, got {list(self.sizes)}")
        if self.buckets < 1 or self.base < 1:
            raise ValueError(f"ngrams.buckets and ngrams.base must be ≥ 1, got {self.buckets} and {self.base}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"ngrams.dropout must be in [0, 1), got {self.dropout}")
        if not self.lr_scale > 0:
            raise ValueError(f"ngrams.lr_scale must be > 0, got {self.lr_scale}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"ngrams.weight_decay must be ≥ 0, got {self.weight_decay}")


def hash_ngram_ids(ids: torch.Tensor, n: int, buckets: int, base: int = DEFAULT_BASE) -> torch.Tensor:
    """ids (B, T) → (B, T) bucket of the n-gram ids[t-n+1 .. t] at each position (int64)."""
    return rolling_hashes(ids, (n,), base)[n] % buckets


def rolling_hashes(ids: torch.Tensor, sizes, base: int = DEFAULT_BASE) -> dict[int, torch.Tensor]:
    """{n: (B, T) hash mod 2³¹-1} for every n in `sizes`, sharing the work: the hash of the n-gram
    is that of the (n-1)-gram plus one more term, so one cumulative sum over the max(sizes) terms
    serves them all. Each term is below 2⁴⁸ and a sum of up to 64 of them stays inside int64, so
    taking the modulus once at the end gives the same value as taking it after every term."""
    return dict(zip(sizes, rolling_hash_stack(ids, sizes, base).unbind(-1)))


def rolling_hash_stack(ids: torch.Tensor, sizes, base: int = DEFAULT_BASE) -> torch.Tensor:
    """(..., T) ids → (..., T, len(sizes)) hashes mod 2³¹-1, in the order of `sizes`: a handful of
    tensor ops in all (decoding embeds a few positions per byte, where op count is the cost)."""
    width = max(sizes)
    if width > 64:
        raise ValueError(f"n-grams up to 64 bytes are supported, got {width}")
    ids = ids.long()
    padded = F.pad(ids, (width - 1, 0), value=PAD)
    window = padded.unfold(-1, width, 1).flip(-1)  # (..., T, width): [..., t, j] = ids[t - j]
    terms = (window + 1) * _powers(base, width, ids.device)
    sums = terms.cumsum(-1)  # [..., j] = sum of the first j + 1 terms
    return sums[..., [n - 1 for n in sizes]] % MODULUS


@eager_lru_cache(maxsize=16)
def _powers(base: int, width: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([pow(base, j, MODULUS) for j in range(width)], dtype=torch.long, device=device)


class HashNgramEmbedding(nn.Module):
    """Byte embedding plus one hashed table per n-gram size, summed and scaled by 1/√(1 + #sizes)
    so the sum starts with the spread of a single embedding.

    `dropout` > 0: in training, each n-gram lookup at each position is dropped with that
    probability (the kept ones scaled by 1/(1 - p)), so the model cannot lean on memorised long
    n-grams alone; the byte embedding is always kept. Evaluation uses every table."""

    def __init__(self, vocab_size: int, dim: int, ngram_sizes: tuple[int, ...], buckets: int,
                 base: int = DEFAULT_BASE, dropout: float = 0.0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"n-gram dropout must be in [0, 1), got {dropout}")
        self.ngram_sizes, self.buckets, self.base, self.dropout = tuple(ngram_sizes), buckets, base, dropout
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
        if not self.ngram_sizes:
            return x * self.scale
        buckets = (rolling_hash_stack(ids, self.ngram_sizes, self.base) % self.buckets).unbind(-1)
        drop = self.training and self.dropout > 0
        for bucket, table in zip(buckets, self.ngrams):
            e = table(bucket)
            if drop:
                keep = torch.rand(bucket.shape, device=e.device) >= self.dropout
                e = e * (keep[..., None].to(e.dtype) / (1 - self.dropout))
            x = x + e
        return x * self.scale
