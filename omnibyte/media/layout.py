"""Where segments and media blocks lie in a tensor of ids: the torch twin of the byte format's
block structure, for code that works on ids (patchers, input adapters).

Every value at position t is read from ids[:, :t+1] only (the header fields of an image are read
from the whole header: use them at payload positions), so models can use them causally.
"""

from __future__ import annotations

import torch

from omnibyte.format import AUDIO_HEADER_LEN, BOA, BOI, BOS, EOA, EOI, EOS, IMAGE_CHANNELS, IMAGE_HEADER_LEN, N_BYTES

MARKERS = (BOS, EOS, BOI, BOA, EOI, EOA)
CLOSERS = (EOI, EOA)
IMAGE_PAYLOAD = 1 + IMAGE_HEADER_LEN  # offset of an image's first pixel byte from its BOI
AUDIO_PAYLOAD = 1 + AUDIO_HEADER_LEN


def isin(ids: torch.Tensor, values) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(values, device=ids.device, dtype=ids.dtype))


def segment_starts(ids: torch.Tensor) -> torch.Tensor:
    """Torch twin of `omnibyte.format.is_segment_start`: markers, and the id after EOI/EOA."""
    out = isin(ids, MARKERS)
    out[..., 1:] |= isin(ids[..., :-1], CLOSERS)
    return out


def last_true(flags: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the last True at or before each position (column 0 counts as True)."""
    t = torch.arange(flags.shape[-1], device=flags.device).expand_as(flags)
    marked = torch.where(flags, t, torch.zeros_like(t))
    return marked.cummax(dim=-1).values


def image_row_len(hi: torch.Tensor, lo: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Bytes per pixel row from an image header's width bytes and channel byte; 0 if the header
    is not a valid one (a special id in it, a zero width, channels other than 1 or 3)."""
    width = hi * 256 + lo
    ok = (hi < N_BYTES) & (lo < N_BYTES) & isin(channels, IMAGE_CHANNELS) & (width > 0)
    return torch.where(ok, width * channels, torch.zeros_like(width))


def media_layout(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T) ids → three (B, T) long tensors:

    - opener: the id that opened the current segment (BOI, BOA, BOS...; ids[:, 0] for a window
      that starts inside a segment, which is then no media block: its header is not in view);
    - offset: ids since that opener (0 at the opener, 1 + header length at the first payload byte);
    - row: an image's bytes per pixel row (0 outside images and for an invalid header).
    """
    seg = segment_starts(ids)
    seg[..., 0] = True
    s = last_true(seg)
    offset = torch.arange(ids.shape[-1], device=ids.device) - s
    opener = ids.gather(-1, s)
    row = torch.where(opener == BOI, image_row_len(_after(ids, s, 1), _after(ids, s, 2), _after(ids, s, 5)),
                      torch.zeros_like(ids))
    return opener, offset, row


def _after(ids: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
    """The id k positions after each segment start s (the last id where that is past the end): an
    image's header after BOI is width u16 (k = 1, 2), height u16 (3, 4), channels u8 (5)."""
    return ids.gather(-1, (s + k).clamp(max=ids.shape[-1] - 1))


def media_geometry(ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`media_layout`'s (opener, offset, row), each position's bytes per pixel (an image's
    channels, 1 or 3, where `row` > 0; 1 elsewhere) and its image's height in pixel rows (from the
    header; 0 where `row` is 0), for code that walks an image in 2-D."""
    opener, offset, row = media_layout(ids)
    s = (torch.arange(ids.shape[-1], device=ids.device) - offset).clamp_min(0)
    image = row > 0
    bpp = torch.where(image, _after(ids, s, IMAGE_HEADER_LEN), torch.ones_like(ids))
    height = torch.where(image, _after(ids, s, 3) * 256 + _after(ids, s, 4), torch.zeros_like(ids))
    return opener, offset, row, bpp, height


def document_ids(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the document each id belongs to: a new document starts at each BOS."""
    return (ids == BOS).long().cumsum(-1)
