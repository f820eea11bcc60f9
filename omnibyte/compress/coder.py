"""Arithmetic coding of byte chunks with an omnibyte model.

Each chunk is coded on its own: the model starts fresh at every chunk, so decoding one chunk needs
only that chunk's record. Chunks are coded side by side as the rows of one batch.

The model sees at most `context` ids. A chunk is read in *windows*: a window feeds the model a
fixed prefix (BOS, and for media the block's opening id and header), then the last bytes before
it (the *tail*, about half the context), then predicts its own bytes one after another. Where
windows start depends only on the chunk's length and the layout, never on the batch, so encoder
and decoder see the same ids at every position.

The encoder, which knows every byte, scores a window in one forward pass; the decoder advances
the model's cached `step` one byte at a time. Both run the model in fp64, where the two paths,
batch compositions and thread counts agree to ~1e-14 — far inside the guard of
`omnibyte.compress.freqs`, which turns logits into the same integer weights on both sides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import constriction
import numpy as np
import torch

from omnibyte.compress.container import Chunk, crc32
from omnibyte.compress.freqs import Quantised, apply_escape, escapes, quantise
from omnibyte.errors import OmnibyteError
from omnibyte.format import N_BYTES, PAD

_FAMILY = constriction.stream.model.Categorical(perfect=False)  # weights given per symbol


@dataclass(frozen=True)
class Layout:
    """What the model sees around a chunk's bytes (see the module docstring)."""
    prefix: tuple[int, ...]  # ids before every window's bytes
    context: int  # ids the model holds at most
    align: int = 1  # window tails start at multiples of this (an image's row, so rows stay rows)

    def __post_init__(self):
        if self.context < len(self.prefix) + 2:
            raise OmnibyteError(f"a context of {self.context} ids is too short (the prefix alone takes "
                                f"{len(self.prefix)}; give at least {len(self.prefix) + 2})")

    def windows(self, n: int) -> Iterator[tuple[int, int, int]]:
        """(tail start, first byte, end) of each window over a chunk of n bytes: the window feeds
        prefix + bytes[tail:first], then predicts bytes first..end-1 (feeding each but the last)."""
        room = self.context - len(self.prefix)  # ids left for bytes: tail + predicted - 1 ≤ room - 1
        half = room // 2
        align = self.align if self.align <= half else 1
        tail = first = 0
        while first < n:
            end = min(n, tail + room)
            yield tail, first, end
            tail, first = (end - half) // align * align, end  # keeps half to half + align - 1 bytes


@contextlib.contextmanager
def fp64(model: torch.nn.Module):
    """Run `model` in float64 inside the block; every parameter and buffer gets its own dtype back
    after (exactly: fp32 → fp64 → fp32 loses nothing)."""
    dtypes = {name: t.dtype for name, t in [*model.named_parameters(), *model.named_buffers()]}
    was_training = model.training
    model.to(torch.float64).eval()
    try:
        yield model
    finally:
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                t.data = t.data.to(dtypes[name])
        model.train(was_training)


def _byte_logits(logits: torch.Tensor) -> np.ndarray:
    return logits[..., :N_BYTES].to(torch.float64).cpu().numpy()


def _groups(n: int, batch: int) -> list[range]:
    return [range(i, min(n, i + batch)) for i in range(0, n, batch)]


def _window_ids(layout: Layout, rows: Sequence[bytes | bytearray], tail: int, stop: int, device) -> torch.Tensor:
    """(B, prefix + stop − tail) ids: the prefix, then each row's bytes tail..stop-1, PAD past its end."""
    width = stop - tail
    ids = torch.full((len(rows), len(layout.prefix) + width), PAD, dtype=torch.long)
    ids[:, :len(layout.prefix)] = torch.tensor(layout.prefix)
    for r, data in enumerate(rows):
        part = data[tail:stop]
        if part:
            ids[r, len(layout.prefix):len(layout.prefix) + len(part)] = torch.frombuffer(bytearray(part),
                                                                                            dtype=torch.uint8)
    return ids.to(device)


@torch.inference_mode()
def encode(model, payloads: Sequence[bytes], layout: Layout, batch: int = 16,
           advance: Callable[[int], None] | None = None) -> list[Chunk]:
    """Code each payload (one chunk's bytes) with `model` (already in fp64); → one Chunk each.
    `advance(n)` is told of every n bytes coded."""
    chunks: list[Chunk] = []
    p = len(layout.prefix)
    for group in _groups(len(payloads), batch):
        rows = [payloads[i] for i in group]
        coders = [constriction.stream.queue.RangeEncoder() for _ in rows]
        escaped: list[list[tuple[int, int, int]]] = [[] for _ in rows]
        for tail, first, end in layout.windows(max(map(len, rows))):
            ids = _window_ids(layout, rows, tail, end - 1, model.device)
            logits = _byte_logits(model(ids).logits[:, p + first - tail - 1:])  # (B, end − first, 256)
            for r, data in enumerate(rows):
                stop = min(end, len(data))
                if stop <= first:
                    continue
                quant = quantise(logits[r, :stop - first])
                escaped[r] += [(first + pos, byte, side) for pos, byte, side in escapes(quant)]
                symbols = np.frombuffer(data[first:stop], dtype=np.uint8).astype(np.int32)
                coders[r].encode(symbols, _FAMILY, quant.weights())
            if advance:
                advance(sum(max(0, min(end, len(d)) - first) for d in rows))
        chunks += [Chunk(c.get_compressed(), crc32(bytes(d)), e) for c, d, e in zip(coders, rows, escaped)]
    return chunks


@torch.inference_mode()
def decode(model, chunks: Sequence[Chunk], lengths: Sequence[int], layout: Layout, batch: int = 16,
           advance: Callable[[int], None] | None = None) -> list[bytes]:
    """Decode each chunk (its original length in `lengths`) with `model` (already in fp64): the
    byte-by-byte mirror of `encode`. Each chunk's CRC is checked by the caller."""
    out: list[bytes] = []
    for group in _groups(len(chunks), batch):
        lens = [lengths[i] for i in group]
        coders = [constriction.stream.queue.RangeDecoder(chunks[i].words) for i in group]
        pending = [list(reversed(chunks[i].escapes)) for i in group]  # popped from the end, in order
        rows = [bytearray() for _ in group]
        for tail, first, end in layout.windows(max(lens)):
            state = model.init_state(len(rows), layout.context)
            logits = model.step(state, _window_ids(layout, rows, tail, first, model.device))[:, -1]
            for pos in range(first, end):
                live = [r for r, n in enumerate(lens) if pos < n]
                x = _byte_logits(logits[live])  # (live, 256)
                quant = quantise(x)
                for i, r in enumerate(live):
                    while pending[r] and pending[r][-1][0] == pos:
                        _, byte, side = pending[r].pop()
                        apply_escape(quant, x, i, byte, side)
                _decode_live(quant, live, coders, rows)
                if advance:
                    advance(len(live))
                if pos + 1 < end:
                    step_ids = [row[pos] if pos < len(row) else PAD for row in rows]
                    logits = model.step(state, torch.tensor(step_ids, device=model.device)[:, None])[:, -1]
        out += [bytes(r) for r in rows]
    return out


def _decode_live(quant: Quantised, live: list[int], coders, rows: list[bytearray]) -> None:
    weights = quant.weights()
    for i, r in enumerate(live):
        rows[r].append(int(coders[r].decode(_FAMILY, weights[i:i + 1])[0]))
