"""Whole-block summaries for the bytes after a media block: the shared half of the image and audio
encoders.

A byte model reads an image or a clip one byte at a time; what a question about it needs (where a
clock's hands point, which words were said) is a property of the whole block. A `BlockSummary`
adapter encodes each *finished* block (its closing marker in view) into one vector and adds it to
every byte from that marker to the end of the document, or to the next finished block of its
kind, as a vision or audio encoder's output feeds a multimodal language model (Molmo, Whisper's
decoder). A block is read only once it is complete, so the contract holds: the feature at t
depends on ids[:, :t+1] alone, and decoding carries each row's last summary.

The summary is RMS-normalised before and after its projection, with a learned gain per channel
that starts at `gain`: unnormalised, the optimiser grows it into a large constant that drowns the
bytes' own content. Subclasses say which blocks count and what their features are (`summaries`).
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from omnibyte.adapters.base import InputAdapter
from omnibyte.media.layout import document_ids
from omnibyte.nn.layers import RMSNorm


class BlockSummary(InputAdapter):
    def __init__(self, features: int, dim: int, gain: float):
        super().__init__()
        self.norm = RMSNorm(features)
        self.out = nn.Linear(features, dim, bias=False)
        nn.init.normal_(self.out.weight, std=0.02)
        self.out_norm = RMSNorm(dim)
        nn.init.constant_(self.out_norm.weight, gain)

    @abc.abstractmethod
    def summaries(self, ids: torch.Tensor, lo: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ids (B, T) → (rows, closing-marker positions, vectors (N, dim_out)) of every finished
        block whose closing marker lies at or after `lo`, in any order."""

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(N, features) → (N, dim_out) summaries of RMS `gain` (per channel)."""
        return self.out_norm(self.out(self.norm(features)))

    def nothing(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        none = torch.zeros(0, dtype=torch.long, device=ids.device)
        return none, none, torch.zeros(0, self.out.out_features, device=ids.device, dtype=self.out.weight.dtype)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.context(ids, document_ids(ids)).to(x.dtype)

    def init_state(self, batch_size: int, device: torch.device) -> dict:
        # the summary the last id had and that id's document, and each row's current document
        dtype = self.out.weight.dtype
        long = dict(dtype=torch.long, device=device)
        return {"carry": (torch.zeros(batch_size, self.out.out_features, device=device, dtype=dtype),
                          torch.full((batch_size,), -1, **long)),
                "doc": torch.zeros(batch_size, **long)}

    def step(self, state: dict, ids: torch.Tensor, start: int, x: torch.Tensor) -> torch.Tensor:
        """The encoder runs once per block, when its closing marker arrives; other steps read the carry."""
        doc = state["doc"][:, None] + document_ids(ids[:, start:])
        ctx = self.context(ids, doc, lo=start, carry=state["carry"])
        state["carry"], state["doc"] = (ctx[:, -1], doc[:, -1]), doc[:, -1]
        return ctx.to(x.dtype)

    def context(self, ids: torch.Tensor, doc: torch.Tensor, lo: int = 0,
                carry: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T - lo, dim_out): at each position t ≥ lo, the summary of the last finished block
        whose closing marker lies in [lo, t] in t's document (doc (B, T - lo): each position's
        document index), else `carry` = (vector (B, dim_out), document (B,)) of the last block
        before lo, where its document is t's, else zero. ids hold whole blocks (from an opener on)."""
        b, t, vec = self.summaries(ids, lo)
        rows, n = ids.shape[0], ids.shape[1] - lo
        table = [vec.new_zeros(1, vec.shape[-1])] + ([carry[0].to(vec.dtype)] if carry is not None else [])
        first = 1 + (rows if carry is not None else 0)  # index of the first new block in the table
        mark = torch.full((rows, n), -1, dtype=torch.long, device=ids.device)
        mark[b, t - lo] = first + torch.arange(b.numel(), device=ids.device)
        pos = torch.arange(n, device=ids.device).expand(rows, n)
        last = torch.where(mark >= 0, pos, -1).cummax(dim=1).values  # the last closing marker at or before t
        at = last.clamp_min(0)
        idx = torch.where((last >= 0) & (doc.gather(1, at) == doc), mark.gather(1, at), 0)
        if carry is not None:
            own = 1 + torch.arange(rows, device=ids.device)[:, None]
            idx = torch.where((last < 0) & (carry[1][:, None] == doc), own, idx)
        return torch.cat(table + [vec])[idx]
