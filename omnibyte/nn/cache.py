"""Caches: the KV cache for incremental decoding (preallocated (B, H, max_len, D) buffers per
layer, filled row by row), and `eager_lru_cache` for small constant tables."""

from __future__ import annotations

import functools
from collections.abc import Sequence

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


Rows = Sequence[int] | None  # rows of a decoding state one call feeds (None: every row), ascending


def row_index(rows: Rows, device=None) -> slice | torch.Tensor:
    """What indexes those rows of a batch-first tensor: a slice (a view, no copy) when they are
    consecutive, else a long tensor."""
    if rows is None:
        return slice(None)
    if rows and rows[-1] - rows[0] == len(rows) - 1 and all(b == a + 1 for a, b in zip(rows, rows[1:])):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(list(rows), dtype=torch.long, device=device)


class KVCache:
    """Keys and values of up to `max_len` positions per row. Rows fill independently:
    `lengths[r]` positions of row r are cached, so the rows of one state may be at different
    positions (a server's requests join and leave a running batch between steps)."""

    def __init__(self, batch_size: int, n_heads: int, max_len: int, head_dim: int, device=None,
                 dtype=torch.float32):
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * batch_size  # kept on the host: read every step without a device sync
        self.shifted: dict[str, torch.Tensor] = {}  # token shift: each row's last shifted half, per sublayer

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def lengths_of(self, rows: Rows) -> list[int]:
        return list(self.lengths) if rows is None else [self.lengths[r] for r in rows]

    def rows(self, rows: Rows = None, advance: Sequence[int] | None = None, first_key: int = 0) -> CacheRows:
        """The cache as one call sees it (see `CacheRows`)."""
        return CacheRows(self, rows, advance, first_key)

    def clear(self, rows: Rows = None) -> None:
        """Empty these rows (all by default): a new sequence starts in them."""
        for r in range(len(self.lengths)) if rows is None else rows:
            self.lengths[r] = 0
        idx = row_index(rows, self.k.device)
        for prev in self.shifted.values():
            prev[idx] = 0


class CacheRows:
    """One call's view of a KVCache: the rows it feeds (None: all), how many of its T positions
    each row keeps (`advance`, default all T: a row may feed spare positions that the next call
    overwrites), and the first key position its attention reads (`first_key`: a sliding window
    needs no older key)."""

    def __init__(self, cache: KVCache, rows: Rows = None, advance: Sequence[int] | None = None,
                 first_key: int = 0):
        self.cache, self.rows, self.advance, self.first_key = cache, rows, advance, first_key
        self.index = row_index(rows, cache.k.device)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (R, H, T, D) after each row's cached positions; return the keys and values
        (R, H, first_key:end, D) up to the longest row's end (a row's later positions are masked)."""
        c, t = self.cache, k.shape[2]
        starts = c.lengths_of(self.rows)
        end = max(starts) + t
        if end > c.max_len:
            raise RuntimeError(f"KV cache full: {end} > {c.max_len} positions")
        if all(s == starts[0] for s in starts):
            c.k[self.index, :, starts[0]:end] = k
            c.v[self.index, :, starts[0]:end] = v
        else:  # rows at different positions: each writes at its own
            pos = torch.tensor(starts, device=k.device)[:, None] + torch.arange(t, device=k.device)  # (R, T)
            r = torch.arange(c.k.shape[0], device=k.device)[self.index][:, None]
            c.k[r, :, pos] = k.transpose(1, 2)  # (R, T, H, D) at [row, position]
            c.v[r, :, pos] = v.transpose(1, 2)
        kept = self.advance if self.advance is not None else [t] * len(starts)
        for row, s, n in zip(range(len(c.lengths)) if self.rows is None else self.rows, starts, kept):
            c.lengths[row] = s + n
        return c.k[self.index, :, self.first_key:end], c.v[self.index, :, self.first_key:end]

    def last_shift(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """The last kept position's shifted half of each row (R, 1, C); zeros for a new row."""
        prev = self.cache.shifted.get(key)
        if prev is None:
            return torch.zeros_like(like[:, :1])
        return prev[self.index]

    def keep_shift(self, key: str, shift: torch.Tensor) -> None:
        """Remember each row's last kept position of `shift` (R, T, C) for the next call."""
        c = self.cache
        if key not in c.shifted:
            c.shifted[key] = shift.new_zeros(c.k.shape[0], 1, shift.shape[-1])
        if self.advance is None:
            last = shift[:, -1:]
        else:
            at = torch.tensor([n - 1 for n in self.advance], device=shift.device)
            last = shift[torch.arange(shift.shape[0], device=shift.device), at][:, None]
        c.shifted[key][self.index] = last


def join_rows(kept: torch.Tensor, counts: Sequence[int], new: torch.Tensor) -> torch.Tensor:
    """Per row, the first counts[r] vectors of `kept` (R, K, D) followed by `new` (R, T, D): a
    (R, max(counts) + T, D) tensor whose rows past their own count + T repeat their last vector."""
    if all(c == counts[0] for c in counts):
        return torch.cat([kept[:, :counts[0]], new], dim=1)
    k, t = kept.shape[1], new.shape[1]
    n = torch.tensor(counts, device=new.device)[:, None]  # (R, 1)
    j = torch.arange(max(counts) + t, device=new.device)
    src = torch.where(j < n, j, k + j - n)
    both = torch.cat([kept, new], dim=1)
    return both.gather(1, src.clamp(max=k + t - 1)[..., None].expand(-1, -1, both.shape[-1]))


def take(x: torch.Tensor, starts: Sequence[int], count: int) -> torch.Tensor:
    """x (R, N, D) → (R, count, D): positions starts[r]..starts[r]+count-1 of each row. A slice
    when every row starts at one position (then they must lie inside x); otherwise a gather, where
    positions past the end read the last vector."""
    if all(s == starts[0] for s in starts):
        return x[:, starts[0]:starts[0] + count]
    pos = torch.tensor(starts, device=x.device)[:, None] + torch.arange(count, device=x.device)
    return x.gather(1, pos.clamp(max=x.shape[1] - 1)[..., None].expand(-1, -1, x.shape[-1]))
