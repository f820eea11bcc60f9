"""Hash n-gram embeddings (BLT §3.2.1): each position also looks up the n-grams of bytes ending
at it, for n in 3..8, through a rolling polynomial hash into a fixed number of buckets, so the
small local encoder sees a wide byte context from its very first layer.

Two hashes (`NgramConfig.hash`):

- "omnibyte": hash_n(t) = (Σ_{j<n} (ids[t-j] + 1) · base^j  mod 2³¹-1)  mod buckets. Positions
  before the start of the sequence count as PAD, so the first n-1 positions hash the n-grams
  "PAD…PAD ids[0..t]". The sum is computed over a sliding view of the ids in int64 (every term
  stays below 2⁴⁸). One table per n; the byte and n-gram embeddings are summed and scaled by
  1/√(1 + #sizes).
- "blt": the hash of the released BLTs (Meta's code and transformers' port), so their tables can
  be used as they are: ids as the BLT tokenizer numbers them (`BLT_IDS`: byte + 4, BOS 1, EOS 2),
  hash_n(t) = (Σ_{j<n} tok[t-n+1+j] · prime_f^j, in wrapping 64-bit arithmetic, j = 0 the oldest)
  mod buckets, positions before the sequence counting as token 0. One table per (function f,
  n), function-major; the embeddings are summed unscaled.

Either is computed over a sliding view of the ids, never with a loop over positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.format import BOI, BOS, EOS, N_BYTES, PAD, VOCAB_SIZE
from omnibyte.nn.cache import eager_lru_cache

MODULUS = 2**31 - 1  # a Mersenne prime: products of ids and powers fit easily in int64
DEFAULT_BASE = 1_000_003
HASHES = ("omnibyte", "blt")
# the released BLTs' hash functions, one prime each
BLT_PRIMES = (1000000007, 5915587277, 1500450271, 3267000013, 5754853343, 4093082899, 9576890767, 3628273133,
              2860486313, 5463458053, 3367900313)
BLT_OFFSET = 4  # the BLT tokenizer's id of byte b is b + 4; below come BOE 0, BOS 1, EOS 2, BPE delimiter 3
# omnibyte id → BLT token id. Bytes, BOS and EOS are the same symbols; PAD and BOI take the two BLT ids
# that text never holds (its BPE delimiter and BOE), so a BLT's 260-row tables map one-to-one onto
# omnibyte's first 260 ids. EOI, BOA and EOA have no BLT id: they hash as ids past its vocabulary.
_BLT_SPECIALS = {PAD: 3, BOS: 1, EOS: 2, BOI: 0}
BLT_IDS = tuple(i + BLT_OFFSET if i < N_BYTES else _BLT_SPECIALS.get(i, i)
                for i in range(VOCAB_SIZE))
BLT_VOCAB = N_BYTES + BLT_OFFSET  # 260


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
    hash: str = "omnibyte"  # "omnibyte" or "blt": the released BLTs' hash and table layout (see above)
    functions: int = 1  # "blt": hash functions, each with its own tables (the released BLTs: 1)

    def __post_init__(self):
        if any(n < 2 for n in self.sizes):
            raise ValueError(f"ngrams.sizes must all be ≥ 2, got {list(self.sizes)}")
        if self.hash not in HASHES:
            raise ValueError(f"ngrams.hash must be one of {', '.join(HASHES)}, got {self.hash!r}")
        top = len(BLT_PRIMES) if self.hash == "blt" else 1
        if not 1 <= self.functions <= top:
            raise ValueError(f"ngrams.functions must be in 1..{top} with hash {self.hash!r}, got {self.functions}")
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


def blt_hash_stack(ids: torch.Tensor, sizes, functions: int = 1) -> torch.Tensor:
    """(..., T) omnibyte ids → (..., T, functions · len(sizes)) hashes of the released BLTs before
    the bucket modulus, function-major (f = 0: every size, then f = 1, ...), as signed int64."""
    width = max(sizes)
    tok = _blt_ids(ids.device)[ids.long()]
    window = F.pad(tok, (width - 1, 0), value=0).unfold(-1, width, 1)  # (..., T, width): oldest first
    # one multiply and one sum for every hash: the coefficient of window slot j in hash (f, n) is
    # prime_f^(j - (width - n)) for the last n slots, 0 before them
    return (window[..., None] * _blt_coefficients(tuple(sizes), functions, ids.device)).sum(-2)


@eager_lru_cache(maxsize=16)
def _blt_coefficients(sizes: tuple[int, ...], functions: int, device: torch.device) -> torch.Tensor:
    width = max(sizes)
    cols = [[_wrap64(pow(BLT_PRIMES[f], j - (width - n), 1 << 64)) if j >= width - n else 0 for j in range(width)]
            for f in range(functions) for n in sizes]
    return torch.tensor(cols, dtype=torch.long, device=device).T.contiguous()  # (width, functions · len(sizes))


def _wrap64(x: int) -> int:
    """x mod 2⁶⁴ as a signed 64-bit integer: what int64 arithmetic that overflows leaves."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


@eager_lru_cache(maxsize=8)
def _blt_ids(device: torch.device) -> torch.Tensor:
    return torch.tensor(BLT_IDS, dtype=torch.long, device=device)


class HashNgramEmbedding(nn.Module):
    """Byte embedding plus one hashed table per n-gram size (and hash function), summed; with
    omnibyte's hash the sum is scaled by 1/√(1 + #sizes) so it starts with the spread of a single
    embedding, with the released BLTs' it is not (their tables were trained that way).

    `dropout` > 0: in training, each n-gram lookup at each position is dropped with that
    probability (the kept ones scaled by 1/(1 - p)), so the model cannot lean on memorised long
    n-grams alone; the byte embedding is always kept. Evaluation uses every table."""

    def __init__(self, vocab_size: int, dim: int, ngram_sizes: tuple[int, ...], buckets: int,
                 base: int = DEFAULT_BASE, dropout: float = 0.0, hash: str = "omnibyte", functions: int = 1):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"n-gram dropout must be in [0, 1), got {dropout}")
        self.ngram_sizes, self.buckets, self.base, self.dropout = tuple(ngram_sizes), buckets, base, dropout
        self.hash, self.functions = hash, functions
        self.bytes = nn.Embedding(vocab_size, dim)
        self.ngrams = nn.ModuleList(nn.Embedding(buckets, dim) for _ in range(functions * len(self.ngram_sizes)))
        self.scale = 1 / math.sqrt(1 + len(self.ngram_sizes)) if hash == "omnibyte" else 1.0
        for emb in (self.bytes, *self.ngrams):
            nn.init.normal_(emb.weight, std=0.02)

    @property
    def context(self) -> int:
        """Ids before a position that its embedding depends on."""
        return max(self.ngram_sizes, default=1) - 1

    @property
    def before_start(self) -> int:
        """The id that stands for a position before the sequence: ids[0]'s n-grams hash as if this
        id came before it (PAD for omnibyte's hash; for the released BLTs' hash their token 0,
        which is BOI's), so a caller embedding a window can pad its left edge with it."""
        return PAD if self.hash == "omnibyte" else BOI

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.bytes(ids)  # (B, T, dim)
        if not self.ngram_sizes:
            return x * self.scale
        if self.hash == "omnibyte":
            buckets = (rolling_hash_stack(ids, self.ngram_sizes, self.base) % self.buckets).unbind(-1)
        else:
            buckets = torch.remainder(blt_hash_stack(ids, self.ngram_sizes, self.functions), self.buckets).unbind(-1)
        drop = self.training and self.dropout > 0
        for bucket, table in zip(buckets, self.ngrams):
            e = table(bucket)
            if drop:
                keep = torch.rand(bucket.shape, device=e.device) >= self.dropout
                e = e * (keep[..., None].to(e.dtype) / (1 - self.dropout))
            x = x + e
        return x * self.scale if self.scale != 1.0 else x
