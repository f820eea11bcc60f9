"""Caches: the KV cache for incremental decoding ((B, H, capacity, D) buffers per layer, filled
row by row, growing up to max_len as positions arrive), `grow` for other per-position state, and
`eager_lru_cache` for small constant tables."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from omnibyte.memory import states_full

FIRST_CAPACITY = 256  # positions a growing buffer starts with (all of them inside memory.full_states)


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


def first_capacity(limit: int) -> int:
    """Positions a growing buffer of at most `limit` starts with."""
    return limit if states_full() else min(limit, FIRST_CAPACITY)


def grow(buf: torch.Tensor, dim: int, need: int, limit: int, keep: int | None = None) -> torch.Tensor:
    """`buf` when its `dim` holds `need` positions; else a zero-filled copy with that dim doubled
    (at least `need`, at most `limit`) holding buf's first `keep` positions (all by default).
    Doubling keeps the copies to a constant share of the positions fed."""
    have = buf.shape[dim]
    if need <= have:
        return buf
    if need > limit:
        raise RuntimeError(f"buffer full: {need} > {limit} positions")
    shape = list(buf.shape)
    shape[dim] = min(limit, max(need, 2 * have))
    out = buf.new_zeros(shape)
    keep = have if keep is None else keep
    out.narrow(dim, 0, keep).copy_(buf.narrow(dim, 0, keep))
    return out


class KVCache:
    """Keys and values of a stack's layers, up to `max_len` positions per row, in (B, H, capacity,
    D) buffers per layer that start at `first_capacity` and grow as calls need (a request sized for
    a long context holds only what it has fed). Rows fill independently: `lengths[r]` positions of
    row r are cached, so the rows of one state may be at different positions (a server's requests
    join and leave a running batch between steps)."""

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int, device=None,
                 dtype=torch.float32):
        self.max_len = max_len
        shape = (batch_size, n_heads, first_capacity(max_len), head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layers)]
        self.lengths = [0] * batch_size  # kept on the host: read every step without a device sync
        self.shifted: dict[tuple[int, str], torch.Tensor] = {}  # token shift: each row's last shifted half

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, H, capacity, D) of every layer's buffers."""
        return tuple(self.k[0].shape) if self.k else (len(self.lengths), 0, 0, 0)

    def reserve(self, end: int) -> None:
        """Grow the buffers to hold `end` positions per row; raises past max_len."""
        if end > self.max_len:
            raise RuntimeError(f"KV cache full: {end} > {self.max_len} positions")
        self.k = [grow(k, 2, end, self.max_len) for k in self.k]
        self.v = [grow(v, 2, end, self.max_len) for v in self.v]

    def lengths_of(self, rows: Rows) -> list[int]:
        return list(self.lengths) if rows is None else [self.lengths[r] for r in rows]

    def feed(self, t: int, rows: Rows = None, advance: Sequence[int] | None = None, first_key: int = 0) -> CacheFeed:
        """One call of T positions (see `CacheFeed`); raises when a row would overflow."""
        return CacheFeed(self, t, rows, advance, first_key)

    def clear(self, rows: Rows = None) -> None:
        """Empty these rows (all by default): a new sequence starts in them."""
        for r in range(len(self.lengths)) if rows is None else rows:
            self.lengths[r] = 0
        idx = row_index(rows, self.k[0].device if self.k else None)
        for prev in self.shifted.values():
            prev[idx] = 0


class CacheFeed:
    """One call's use of a KVCache, worked out once for all layers. The call computes the
    consecutive batch rows from the first of `rows` to the last (all rows when None); only `rows`
    write, so rows in a gap between them compute without effect, and attention reads the cache in
    place instead of a copy of the rows' caches. `advance`: how many of the T positions each row
    keeps (default all; a row may feed spare positions that the next call overwrites).
    `first_key`: the first key position attention reads (a sliding window needs no older key).
    `commit` advances the rows once every layer has written."""

    def __init__(self, cache: KVCache, t: int, rows: Rows = None, advance: Sequence[int] | None = None,
                 first_key: int = 0):
        if advance is not None and all(a == t for a in advance):
            advance = None  # every row keeps all it feeds
        self.cache, self.t, self.advance, self.first_key = cache, t, advance, first_key
        self.rows = list(range(len(cache.lengths))) if rows is None else list(rows)
        self.span = slice(self.rows[0], self.rows[-1] + 1)  # the batch rows the call computes
        gaps = len(self.rows) != self.span.stop - self.span.start
        self.inner = [r - self.span.start for r in self.rows] if gaps else None  # writers' places in the span
        self.starts = cache.lengths_of(self.rows)
        self.end = max(self.starts) + t
        cache.reserve(self.end)
        self.flat = self.take = None
        if self.inner is not None or any(s != self.starts[0] for s in self.starts):
            # each writer at its own positions: flat indices into a layer's (B·H·L, D) rows
            _, h, length, _ = cache.shape
            dev = cache.k[0].device
            pos = torch.tensor(self.starts, device=dev)[:, None, None] + torch.arange(t, device=dev)  # (R, 1, T)
            row = torch.tensor(self.rows, device=dev)[:, None, None] * h + torch.arange(h, device=dev)[:, None]
            self.flat = (row * length + pos).reshape(-1)  # (R·H·T,)
            if self.inner is not None:
                self.take = torch.tensor(self.inner, device=dev)

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self, i)

    def commit(self) -> None:
        kept = self.advance if self.advance is not None else [self.t] * len(self.rows)
        for row, s, n in zip(self.rows, self.starts, kept):
            self.cache.lengths[row] = s + n


class LayerCache:
    """A CacheFeed at one layer: what attention and token shift read and write."""

    def __init__(self, feed: CacheFeed, i: int):
        self.feed, self.i = feed, i

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the writers' k, v (of the span's (S, H, T, D)) after each one's cached positions;
        return the span's keys and values (S, H, first_key:end, D), end the longest writer's end
        (a row's later positions are masked)."""
        f = self.feed
        ck, cv = f.cache.k[self.i], f.cache.v[self.i]
        if f.flat is None:
            ck[f.span, :, f.starts[0]:f.end] = k
            cv[f.span, :, f.starts[0]:f.end] = v
        else:
            if f.take is not None:
                k, v = k[f.take], v[f.take]
            d = k.shape[-1]
            ck.view(-1, d).index_copy_(0, f.flat, k.reshape(-1, d))
            cv.view(-1, d).index_copy_(0, f.flat, v.reshape(-1, d))
        return ck[f.span, :, f.first_key:f.end], cv[f.span, :, f.first_key:f.end]

    def last_shift(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """The last kept position's shifted half of each span row (S, 1, C); zeros for a new row."""
        prev = self.feed.cache.shifted.get((self.i, key))
        if prev is None:
            return torch.zeros_like(like[:, :1])
        return prev[self.feed.span]

    def keep_shift(self, key: str, shift: torch.Tensor) -> None:
        """Remember each writer's last kept position of `shift` (S, T, C) for the next call."""
        f = self.feed
        store = f.cache.shifted.get((self.i, key))
        if store is None:
            store = f.cache.shifted[(self.i, key)] = shift.new_zeros(len(f.cache.lengths), 1, shift.shape[-1])
        if f.take is not None:
            shift = shift[f.take]
        if f.advance is None:
            last = shift[:, -1:]
        else:
            at = torch.tensor([n - 1 for n in f.advance], device=shift.device)
            last = shift[torch.arange(shift.shape[0], device=shift.device), at][:, None]
        store[row_index(f.rows, shift.device)] = last


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
