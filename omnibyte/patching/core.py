"""Patchers: ids (B, T) → `starts` (B, T), True where a new patch begins.

Three rules, as in the BLT paper's comparison (static, space-like, entropy):

- static: a patch starts every `patch_size` ids, counted from the start of the current segment.
- space: a patch starts at a word after space-like bytes (SpaceByte's rule, runs merged; see
  `space_starts`).
- entropy: a patch starts where the entropy model is unsure of the next byte — globally
  (entropy above a threshold) or relatively (entropy rose by more than a threshold over the
  previous byte: the paper's "approximate monotonicity" constraint).

For every rule a segment marker starts a patch (a patch never spans two segments, see
`omnibyte.format.is_segment_start`), and `max_patch_len` > 0 cuts longer patches into pieces.
The released BLTs patch differently, and a model imported from them patches as they do:
`markers` false (text is patched by entropy alone) and `lone_first` (the first id, BOS, is a patch
of its own: the next id always starts one).

Media patches (any kind): `image_rows` > 0 patches an image's pixels by whole rows (k rows of
width × channels bytes per patch, the geometry read from the image's header) and `audio_frame`
> 0 an audio clip's samples by frames of that many samples; the marker and header of the block
form one patch. They replace the kind's rule inside those blocks, so a patch of an image is a
band of the picture rather than a few pixels of one row.

A boundary at t depends on ids[:, :t+1] and entropies[:, :t+1] only, so a model can decide
boundaries online while it generates (`StreamingPatcher` does exactly that, one id at a time),
and every row is patched on its own: nothing leaks across the batch. Entropy patching without
markers or media rules reads no id at all: a boundary at t+1 is known from entropies[:, :t+2],
i.e. from ids[:, :t+1], one id ahead (`looks_ahead`; `StreamingPatcher.peek`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import BOA, BOI, N_BYTES
from omnibyte.media.layout import (
    AUDIO_PAYLOAD,
    CLOSERS,
    IMAGE_PAYLOAD,
    MARKERS,
    image_row_len,
    isin,
    last_true,
    media_layout,
    segment_starts,
)
from omnibyte.nn.cache import Rows, row_index

PATCHER_KINDS = ("static", "space", "entropy")
DEFAULT_BYTES_PER_PATCH = 4.5  # BLT's operating point (matches Llama 3 at equal training FLOPs)


@dataclass
class PatcherConfig:
    kind: str = "static"  # "static" | "space" | "entropy"
    patch_size: int = 4  # static: ids per patch
    max_patch_len: int = 0  # any kind: cut patches longer than this; 0 = no cap
    entropy_model: str = ""  # entropy: run dir or model dir of a trained entropy model
    threshold: float | None = None  # entropy: None = the threshold calibrated with the entropy model
    relative: bool = False  # entropy: threshold the rise H[t] - H[t-1] instead of H[t]
    # any kind: > 0 = an image's pixels are patched by this many whole rows, an audio clip's samples
    # by frames of this many (FLOPs counts still assume bytes_per_patch: set it for a mix of mostly media)
    image_rows: int = 0
    audio_frame: int = 0
    # FLOPs accounting only: mean bytes per patch; 0 = patch_size for static patching, the calibration
    # target of the entropy model when its threshold comes from calibration, else 4.5
    bytes_per_patch: float = 0.0
    # filled when the patcher is built (omnibyte.models.build_patcher), never by hand: the entropy
    # model's {"arch", "model"}, so a saved model rebuilds it without its run folder
    entropy_model_config: dict = field(default_factory=dict)
    markers: bool = True  # segment markers (BOS, BOI, EOI, ...) start a patch; false: the released BLTs' rule
    lone_first: bool = False  # the first id is a patch of its own (the released BLTs: BOS alone)

    def __post_init__(self):
        if self.kind not in PATCHER_KINDS:
            raise ValueError(f"patcher kind must be one of {', '.join(PATCHER_KINDS)}, got {self.kind!r}")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be ≥ 1, got {self.patch_size}")
        if self.image_rows < 0 or self.audio_frame < 0:
            raise ValueError(f"image_rows and audio_frame must be ≥ 0 (0 = the kind's rule), got "
                             f"{self.image_rows} and {self.audio_frame}")
        if self.max_patch_len < 0:
            raise ValueError(f"max_patch_len must be ≥ 0 (0 = no cap), got {self.max_patch_len}")
        if self.threshold is not None and self.threshold != self.threshold:
            raise ValueError("threshold must be a number, got NaN")
        if self.bytes_per_patch != 0 and not self.bytes_per_patch >= 1:
            raise ValueError(f"bytes_per_patch must be ≥ 1 (or 0 = automatic), got {self.bytes_per_patch}")

    @property
    def looks_ahead(self) -> bool:
        """Whether a boundary is decided before its id is seen (from the entropy the model gave it
        one id earlier): entropy patching that no id-reading rule overrides."""
        return self.kind == "entropy" and not self.markers and not self.image_rows and not self.audio_frame

    def expected_bytes_per_patch(self) -> float:
        """Mean bytes per patch that FLOPs counts assume (see `bytes_per_patch`)."""
        if self.bytes_per_patch > 0:
            return self.bytes_per_patch
        return float(self.patch_size) if self.kind == "static" else DEFAULT_BYTES_PER_PATCH


# --------------------------------------------------------------------------- byte classes


def is_continuation(ids: torch.Tensor) -> torch.Tensor:
    """UTF-8 continuation bytes 0x80-0xBF."""
    return (ids >= 0x80) & (ids < 0xC0)


def is_space_like(ids: torch.Tensor) -> torch.Tensor:
    """SpaceByte's space-like bytes: anything but an ASCII letter or digit or a UTF-8 continuation
    byte. UTF-8 lead bytes and special ids count as space-like."""
    return ~_is_alnum(ids) & ~is_continuation(ids)


def _is_alnum(ids: torch.Tensor) -> torch.Tensor:
    return ((ids >= 48) & (ids <= 57)) | ((ids >= 65) & (ids <= 90)) | ((ids >= 97) & (ids <= 122))


def is_word_start(ids: torch.Tensor) -> torch.Tensor:
    """Bytes that may open a word: an ASCII letter or digit, or a UTF-8 lead byte (0xC0-0xFF)."""
    return _is_alnum(ids) | ((ids >= 0xC0) & (ids < N_BYTES))


# --------------------------------------------------------------------------- the rules


def static_starts(ids: torch.Tensor, patch_size: int) -> torch.Tensor:
    seg = segment_starts(ids)
    seg[..., 0] = True
    offset = torch.arange(ids.shape[-1], device=ids.device) - last_true(seg)  # (B, T) ids since segment start
    return seg | (offset % patch_size == 0)


def media_starts(ids: torch.Tensor, image_rows: int, audio_frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(where, starts): positions the media rule decides, and its decision there — the marker
    and header of an image/audio block are one patch, then rows or frames. An image whose header
    is invalid keeps the kind's rule for its payload."""
    return _media_rule(*media_layout(ids), image_rows, audio_frame)


def _media_rule(opener: torch.Tensor, offset: torch.Tensor, row: torch.Tensor, image_rows: int,
                audio_frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    where = torch.zeros_like(offset, dtype=torch.bool)
    starts = offset == 0
    if image_rows > 0:
        img = opener == BOI
        pay = offset - IMAGE_PAYLOAD
        where |= img & ((pay < 0) | (row > 0))
        starts |= img & (row > 0) & (pay >= 0) & (pay % (row * image_rows).clamp_min(1) == 0)
    if audio_frame > 0:
        aud = opener == BOA
        pay = offset - AUDIO_PAYLOAD
        where |= aud
        starts |= aud & (pay >= 0) & (pay % audio_frame == 0)
    return where, starts & where


def space_starts(ids: torch.Tensor) -> torch.Tensor:
    """A patch starts at t when ids[t-1] is space-like and ids[t] opens a word.

    Choice (documented departure from a per-byte reading of SpaceByte): a run of space-like
    bytes (", ", "\\n\\n", indentation) is merged into the patch of the word before it, and a
    patch never starts inside a UTF-8 character — "héllo wörld ✓" patches as
    "héllo " | "wörld " | "✓". Non-ASCII characters thus behave like letters, so scripts
    without spaces (Chinese, Japanese) get no boundaries from this rule: cap them with
    `max_patch_len`.
    """
    out = torch.zeros_like(ids, dtype=torch.bool)
    out[..., 1:] = is_space_like(ids[..., :-1]) & is_word_start(ids[..., 1:])
    return out


def entropy_starts(entropies: torch.Tensor, threshold: float, relative: bool = False) -> torch.Tensor:
    """Global: H[t] > threshold. Relative: H[t] - H[t-1] > threshold (BLT's monotonicity rule)."""
    h = entropies.float()
    if not relative:
        return h > threshold
    out = torch.zeros_like(h, dtype=torch.bool)
    out[..., 1:] = (h[..., 1:] - h[..., :-1]) > threshold
    return out


def cap_patches(starts: torch.Tensor, max_patch_len: int) -> torch.Tensor:
    """Add starts so no patch is longer than `max_patch_len`.

    The rules above carry no state, so the cap is closed-form: after the last natural start s,
    the forced starts are s + k·max_patch_len.
    """
    if max_patch_len <= 0:
        return starts
    starts = starts.clone()
    starts[..., 0] = True
    offset = torch.arange(starts.shape[-1], device=starts.device) - last_true(starts)
    return starts | (offset % max_patch_len == 0)


def _threshold(cfg: PatcherConfig, threshold: float | None) -> float:
    """The threshold to apply: the one given, else the config's (which a built patcher has decided)."""
    thr = threshold if threshold is not None else cfg.threshold
    if thr is None:
        raise OmnibyteError("entropy patching needs a threshold: build the patcher (omnibyte.models.build_patcher) "
                            "or set patcher.threshold")
    return float(thr)


def patch_starts(ids: torch.Tensor, cfg: PatcherConfig, entropies: torch.Tensor | None = None,
                 threshold: float | None = None) -> torch.Tensor:
    """ids (B, T) → starts (B, T) bool. `threshold` overrides cfg.threshold (entropy kind).

    entropies[:, t] is the entropy model's entropy (nats) of id t given ids < t; entropies[:, 0]
    is unused (position 0 always starts a patch).
    """
    if ids.dim() != 2:
        raise OmnibyteError(f"patch_starts expects ids of shape (B, T), got {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        return torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    if cfg.kind == "static":
        starts = static_starts(ids, cfg.patch_size)
    elif cfg.kind == "space":
        starts = space_starts(ids)
    else:
        if entropies is None:
            raise OmnibyteError("entropy patching needs entropies (B, T) from the entropy model")
        if entropies.shape != ids.shape:
            raise OmnibyteError(f"entropies {tuple(entropies.shape)} do not match ids {tuple(ids.shape)}")
        starts = entropy_starts(entropies, _threshold(cfg, threshold), cfg.relative)
    if cfg.image_rows or cfg.audio_frame:
        where, media = media_starts(ids, cfg.image_rows, cfg.audio_frame)
        starts = torch.where(where, media, starts)
    if cfg.markers:
        starts = starts | segment_starts(ids)
    starts[..., 0] = True
    if cfg.lone_first:
        starts[..., 1:2] = True
    return cap_patches(starts, cfg.max_patch_len)


def patch_ids(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the patch each position belongs to."""
    return starts.long().cumsum(-1) - 1


def positions_in_patch(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) how many ids precede each position in its patch (0 at a patch's first id)."""
    return torch.arange(starts.shape[-1], device=starts.device) - last_true(starts)


def patch_lengths(starts: torch.Tensor) -> list[list[int]]:
    """Per row, the lengths of its patches in order (they sum to T)."""
    out = []
    for row in starts.detach().cpu():
        idx = torch.nonzero(row, as_tuple=False).flatten().tolist()
        ends = idx[1:] + [row.shape[0]]
        out.append([e - s for s, e in zip(idx, ends)])
    return out


def mean_patch_len(starts: torch.Tensor) -> float:
    """Mean bytes per patch over the whole tensor."""
    n = int(starts.sum())
    return starts.numel() / n if n else float("nan")


# --------------------------------------------------------------------------- online patching


class StreamingPatcher:
    """The same rules, one id per row at a time: `push` says whether the new id starts a patch.

    Equal to `patch_starts` on the full sequence; generation uses it to decide boundaries as
    bytes are produced. Rows are independent: a push may feed some of them (`rows`), and
    `clear` starts rows over.
    """

    FIELDS = ("count", "prev_id", "prev_entropy", "seg_offset", "patch_len", "opener", "header")

    def __init__(self, cfg: PatcherConfig, batch_size: int, threshold: float | None = None,
                 device: torch.device | str = "cpu"):
        self.cfg, self.batch_size = cfg, batch_size
        self.threshold = _threshold(cfg, threshold) if cfg.kind == "entropy" else None
        z = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.count = z.clone()  # ids pushed
        self.prev_id = z.clone()
        self.prev_entropy = torch.zeros(batch_size, dtype=torch.float32, device=device)
        self.seg_offset = z.clone()  # ids since the current segment started
        self.patch_len = z.clone()  # ids in the current patch
        self.opener = z.clone()  # the id that opened the current segment
        self.header = torch.zeros(batch_size, 3, dtype=torch.long, device=device)  # image width hi, lo, channels

    def clear(self, rows: Rows = None) -> None:
        idx = row_index(rows, self.count.device)
        for name in self.FIELDS:
            getattr(self, name)[idx] = 0

    def push(self, ids: torch.Tensor, entropies: torch.Tensor | None = None, rows: Rows = None) -> torch.Tensor:
        ids = ids.reshape(-1).to(self.prev_id.device)
        n = self.batch_size if rows is None else len(rows)
        if ids.shape[0] != n:
            raise OmnibyteError(f"push got {ids.shape[0]} ids for {n} rows")
        idx = row_index(rows, ids.device)
        count, prev_id, prev_entropy, seg_offset, patch_len = (
            getattr(self, name)[idx] for name in self.FIELDS[:5])
        opening = count == 0  # the row's first id
        first = self._first(count)  # ids that start a patch whatever the rule (lone_first: the first two)
        seg = isin(ids, MARKERS) | (isin(prev_id, CLOSERS) & ~opening)
        seg_offset = torch.where(seg, torch.zeros_like(seg_offset), seg_offset)

        if self.cfg.kind == "static":
            start = seg_offset % self.cfg.patch_size == 0
        elif self.cfg.kind == "space":
            start = is_space_like(prev_id) & is_word_start(ids) & ~first
        else:
            if entropies is None:
                raise OmnibyteError("entropy patching needs the entropy of each pushed id")
            h = entropies.reshape(-1).float().to(prev_entropy.device)
            start = (h - prev_entropy if self.cfg.relative else h) > self.threshold
            if self.cfg.relative:
                start = start & ~opening
            self.prev_entropy[idx] = h
        if self.cfg.image_rows or self.cfg.audio_frame:
            start = self._media(ids, seg | opening, seg_offset, start, idx)
        start = (start | seg if self.cfg.markers else start) | first
        if self.cfg.max_patch_len > 0:
            start = start | (patch_len >= self.cfg.max_patch_len)

        self.patch_len[idx] = torch.where(start, torch.ones_like(patch_len), patch_len + 1)
        self.seg_offset[idx] = seg_offset + 1
        self.prev_id[idx] = ids
        self.count[idx] = count + 1
        return start

    def _first(self, count: torch.Tensor) -> torch.Tensor:
        first = count == 0
        return first | (count == 1) if self.cfg.lone_first else first

    def peek(self, entropy: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        """(R,) whether the next id of `rows` (default all) will start a patch, from its entropy
        alone: what `push` will say for it, for a rule that `looks_ahead`."""
        if not self.cfg.looks_ahead:
            raise OmnibyteError(f"a {self.cfg.kind} patcher with markers or media rules decides a boundary "
                                f"only once it sees the id")
        idx = row_index(rows, self.count.device)
        h = entropy.reshape(-1).float().to(self.prev_entropy.device)
        start = (h - self.prev_entropy[idx] if self.cfg.relative else h) > self.threshold
        if self.cfg.max_patch_len > 0:
            start = start | (self.patch_len[idx] >= self.cfg.max_patch_len)
        return start | self._first(self.count[idx])

    def _media(self, ids: torch.Tensor, seg: torch.Tensor, offset: torch.Tensor, start: torch.Tensor,
               idx) -> torch.Tensor:
        """`media_starts`, one id at a time: remembers each segment's opener and image header."""
        opener = torch.where(seg, ids, self.opener[idx])
        header = self.header[idx]
        for k, col in ((1, 0), (2, 1), (5, 2)):
            header[:, col] = torch.where(offset == k, ids, header[:, col])
        self.opener[idx], self.header[idx] = opener, header
        row = torch.where(opener == BOI, image_row_len(*header.unbind(1)), torch.zeros_like(ids))
        where, media = _media_rule(opener, offset, row, self.cfg.image_rows, self.cfg.audio_frame)
        return torch.where(where, media, start)
