"""Mixed-modal generation: prompts with images and audio, decoding that keeps blocks well-formed,
and turning generated ids back into text, PNGs and WAVs.

- `build_prompt(parts)`: text, bytes, images, audio and segments → ``[BOS, ...]`` ready to continue.
- `ModalityConstraint`: a per-row state machine for the shared decoding loop. Outside a block
  only bytes, EOS and (if allowed) BOI/BOA may come; inside a block the header is constrained
  byte by byte so that it is always valid and within limits, then exactly the payload length
  the header states, then the closing marker (early-fusion models switch decoding rules by
  modality, and a started image or clip must be finished: see DESIGN.md).
- `open_block(prompt, image=(w, h, c) | audio_seconds=s)`: the prompt plus an opened block,
  its constraint and the number of ids to generate, for "make me a 28×28 image" requests.
- `split_outputs(ids)` / `save_outputs(ids, path)`: generated ids → segments → files, robust
  to output cut short by max_new.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omnibyte.errors import OmnibyteError
from omnibyte.format import (
    AUDIO_HEADER_LEN,
    AUDIO_MULAW8,
    BOA,
    BOI,
    BOS,
    EOA,
    EOI,
    EOS,
    IMAGE_CHANNELS,
    IMAGE_HEADER_LEN,
    N_BYTES,
    SPECIAL_NAMES,
    AudioSegment,
    FormatError,
    ImageSegment,
    Segment,
    TextSegment,
    parse_audio_header,
    parse_image_header,
)
from omnibyte.generate.constraints import Constraint
from omnibyte.media.audio import (
    AUDIO_SUFFIXES,
    DEFAULT_RATE,
    audio_segment_from_array,
    audio_segment_from_path,
    save_wav,
)
from omnibyte.media.image import (
    IMAGE_SUFFIXES,
    image_segment_from_array,
    image_segment_from_path,
    image_segment_from_pil,
    save_png,
)

IMAGE, AUDIO = "image", "audio"
MEDIA_KINDS = (IMAGE, AUDIO)
OPEN = {BOI: IMAGE, BOA: AUDIO}
CLOSE = {IMAGE: EOI, AUDIO: EOA}
HEADER_LEN = {IMAGE: IMAGE_HEADER_LEN, AUDIO: AUDIO_HEADER_LEN}

# ----------------------------------------------------------------------------- prompts


def prompt_segment(part, image_size: tuple[int, int] | None = None, image_mode: str | None = None,
                   audio_rate: int = DEFAULT_RATE) -> Segment:
    """One prompt part → a segment (see `build_prompt` for what a part may be)."""
    if isinstance(part, TextSegment | ImageSegment | AudioSegment):
        return part
    if isinstance(part, str):
        return TextSegment.from_str(part)
    if isinstance(part, bytes | bytearray):
        return TextSegment(bytes(part))
    if isinstance(part, Image.Image):
        return image_segment_from_pil(part, image_size, image_mode)
    if isinstance(part, np.ndarray):
        if part.ndim == 1:
            return audio_segment_from_array(part, audio_rate)
        if part.ndim in (2, 3) and part.dtype == np.uint8:
            return image_segment_from_array(part, image_size, image_mode)
        raise OmnibyteError(f"a prompt array must be 1-D audio or uint8 (H, W[, C]) pixels, "
                            f"got {part.dtype} {part.shape}")
    if isinstance(part, Path):
        suffix = part.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return image_segment_from_path(part, image_size, image_mode)
        if suffix in AUDIO_SUFFIXES:
            return audio_segment_from_path(part, audio_rate)
        raise OmnibyteError(f"{part}: not an image or audio file by its suffix "
                            f"(images: {', '.join(sorted(IMAGE_SUFFIXES))}; "
                            f"audio: {', '.join(sorted(AUDIO_SUFFIXES))})")
    raise OmnibyteError(f"cannot put a {type(part).__name__} in a prompt (text, bytes, PIL image, "
                        f"numpy array, pathlib.Path or segment)")


def build_prompt(parts: Iterable, image_size: tuple[int, int] | None = None, image_mode: str | None = None,
                 audio_rate: int = DEFAULT_RATE) -> list[int]:
    """Mixed-modal parts → ``[BOS, ...segments...]`` (no EOS: ready to continue).

    A part is: `str` (text, UTF-8; a str is never read as a file name), `bytes` (raw bytes),
    a PIL image, a numpy array (1-D: audio samples at `audio_rate`, float in [-1, 1] or integer
    PCM; uint8 (H, W) / (H, W, 3): pixels), a `pathlib.Path` to an image or audio file (chosen
    by suffix), or a Text/Image/AudioSegment. Images are read with `image_size` / `image_mode`
    (see `omnibyte.media.image`), audio files are resampled to `audio_rate`.
    """
    ids = [BOS]
    for part in parts:
        ids.extend(prompt_segment(part, image_size, image_mode, audio_rate).ids())
    return ids


def image_block_prefix(width: int, height: int, channels: int | None = None) -> list[int]:
    """``BOI`` + the image header. With channels=None the header stops before the channel byte,
    leaving the model to choose gray or RGB under a `ModalityConstraint`."""
    if not (0 < width < 65536 and 0 < height < 65536):
        raise OmnibyteError(f"image size {width}x{height} is outside 1..65535")
    if channels is not None and channels not in IMAGE_CHANNELS:
        raise OmnibyteError(f"image channels must be 1 (gray) or 3 (RGB), got {channels}")
    return [BOI, *struct.pack(">HH", width, height), *([channels] if channels is not None else [])]


def audio_block_prefix(seconds: float, rate: int = DEFAULT_RATE) -> list[int]:
    """``BOA`` + the header of a µ-law clip of round(seconds · rate) samples."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise OmnibyteError(f"audio length must be a finite number of seconds > 0, got {seconds}")
    n = round(seconds * rate)
    if not 0 < rate < 2**32:
        raise OmnibyteError(f"sample rate must be in 1..2^32-1, got {rate}")
    if not 0 < n < 2**32:
        raise OmnibyteError(f"audio of {seconds} s at {rate} Hz is {n} samples; need 1..2^32-1")
    return [BOA, *struct.pack(">IIB", rate, n, AUDIO_MULAW8)]


# ----------------------------------------------------------------------------- decoding constraint


def _field_bytes(prefix: Sequence[int], width: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges [lo, hi] allowed next in a `width`-byte big-endian field whose first bytes are
    `prefix`, so that the finished value can still land in one of `ranges`."""
    p = 0
    for b in prefix:
        p = p * 256 + b
    scale = 256 ** (width - len(prefix) - 1)  # value of one step of the next byte
    out = []
    for lo, hi in ranges:
        b_lo, b_hi = max(0, lo // scale - p * 256), min(255, hi // scale - p * 256)
        if b_lo <= b_hi:
            out.append((b_lo, b_hi))
    return out


class ModalityConstraint(Constraint):
    """Keeps one row's output well-formed in the byte format (one object per row: it has state).

    Outside a block: bytes and EOS, plus BOI / BOA for the kinds in `allow_open` (never PAD,
    BOS, EOI or EOA). In an image header: only bytes that finish a valid header with
    1 ≤ width, height ≤ `max_image_side` and channels in `image_channels` — or exactly
    `image_header=(w, h, c)` (c may be None: any of `image_channels`). Then exactly w·h·c
    bytes, then EOI. Audio likewise: a rate in `audio_rates` (or `audio_header=(rate, n)`),
    1 ≤ n ≤ `max_audio_samples`, encoding 1 (µ-law), n bytes, EOA.

    With `end_after_block`, once a block closes during generation only EOS may follow, so a
    request for one image ends right after it. Use `from_prompt` when the prompt itself ends
    inside a block (e.g. after `image_block_prefix`).
    """

    def __init__(self, allow_open: Sequence[str] = MEDIA_KINDS, *, max_image_side: int = 256,
                 image_channels: Sequence[int] = IMAGE_CHANNELS,
                 image_header: tuple[int, int, int | None] | None = None,
                 audio_rates: Sequence[int] = (DEFAULT_RATE,), max_audio_samples: int = 30 * DEFAULT_RATE,
                 audio_header: tuple[int, int] | None = None, end_after_block: bool = False):
        unknown = set(allow_open) - set(MEDIA_KINDS)
        if unknown:
            raise OmnibyteError(f"unknown block kind(s) {sorted(unknown)} in allow_open (known: image, audio)")
        if not 0 < max_image_side < 65536:
            raise OmnibyteError(f"max image side must be in 1..65535, got {max_image_side}")
        if not image_channels or set(image_channels) - set(IMAGE_CHANNELS):
            raise OmnibyteError(f"image channels must be a non-empty subset of (1, 3), got {image_channels}")
        if not audio_rates or any(not 0 < r < 2**32 for r in audio_rates):
            raise OmnibyteError(f"audio rates must be a non-empty list of rates in 1..2^32-1, got {audio_rates}")
        if not 0 < max_audio_samples < 2**32:
            raise OmnibyteError(f"max audio samples must be in 1..2^32-1, got {max_audio_samples}")
        side = [(1, max_image_side)]
        channels = sorted(image_channels)
        if image_header is not None:
            w, h, c = image_header
            image_block_prefix(w, h, c)  # validates
            side_w, side_h = [(w, w)], [(h, h)]
            channels = [c] if c is not None else channels
        else:
            side_w = side_h = side
        rates = [(r, r) for r in sorted(set(audio_rates))]
        counts = [(1, max_audio_samples)]
        if audio_header is not None:
            rate, n = audio_header
            if not (0 < rate < 2**32 and 0 < n < 2**32):
                raise OmnibyteError(f"audio header needs a rate and a sample count in 1..2^32-1, got {audio_header}")
            rates, counts = [(rate, rate)], [(n, n)]
        # each header as fields: (byte width, allowed value ranges)
        self.fields = {
            IMAGE: [(2, side_w), (2, side_h), (1, [(c, c) for c in channels])],
            AUDIO: [(4, rates), (4, counts), (1, [(AUDIO_MULAW8, AUDIO_MULAW8)])],
        }
        self.allow_open = tuple(allow_open)
        self.end_after_block = end_after_block
        self.mode = "text"  # text | header | payload | close | end
        self.kind: str | None = None
        self.header: list[int] = []
        self.left = 0  # payload bytes still to come
        self._masks: dict = {}

    @classmethod
    def text_only(cls, **kwargs) -> ModalityConstraint:
        """Never opens a block (a prompt may still end inside one, which is then finished)."""
        return cls(allow_open=(), **kwargs)

    @classmethod
    def from_prompt(cls, prompt_ids: Sequence[int], **kwargs) -> ModalityConstraint:
        """A constraint in the state the prompt leaves: inside a block when the prompt ends in
        one. The prompt must be well-formed so far (FormatError, an OmnibyteError, otherwise)."""
        self = cls(**kwargs)
        ids = [int(t) for t in prompt_ids]
        if ids and ids[0] == BOS:
            ids = ids[1:]
        for pos, tok in enumerate(ids, 1):
            self._replay(tok, pos)
        if self.mode == "header" and not self._header_ranges():
            raise OmnibyteError(f"the prompt's {self.kind} header {bytes(self.header).hex()} cannot be "
                                f"completed within the constraint's limits")
        return self

    # --- the decoding-loop interface ---------------------------------------------------------
    def allowed(self, vocab_size: int) -> torch.Tensor:
        if self.mode == "header":
            m = torch.zeros(vocab_size, dtype=torch.bool)
            for lo, hi in self._header_ranges():
                m[lo:hi + 1] = True
            return m
        key = (self.mode, self.kind, vocab_size)
        if key not in self._masks:
            m = torch.zeros(vocab_size, dtype=torch.bool)
            if self.mode == "text":
                m[:N_BYTES] = True
                m[[EOS] + [b for b, k in OPEN.items() if k in self.allow_open]] = True
            elif self.mode == "payload":
                m[:N_BYTES] = True
            elif self.mode == "close":
                m[CLOSE[self.kind]] = True
            else:  # end
                m[EOS] = True
            self._masks[key] = m
        return self._masks[key]

    def advance(self, token: int) -> None:
        self._step(int(token), generating=True)

    def max_remaining(self) -> int:
        """Ids until the open block is closed, its closing marker included: exact once the header
        is complete, an upper bound under this constraint's limits while it is not; 0 outside."""
        if self.mode == "payload":
            return self.left + 1
        if self.mode == "close":
            return 1
        if self.mode != "header":
            return 0
        fields = self.fields[self.kind]
        maxima, pos = [], 0
        for width, ranges in fields:  # the largest value each field can still take
            done = self.header[pos:pos + width]
            if len(done) == width:
                maxima.append(int.from_bytes(bytes(done), "big"))
            else:
                p = int.from_bytes(bytes(done), "big") * 256 ** (width - len(done))
                maxima.append(max(min(hi, p + 256 ** (width - len(done)) - 1) for lo, hi in ranges))
            pos += width
        payload = maxima[0] * maxima[1] * maxima[2] if self.kind == IMAGE else maxima[1]
        return HEADER_LEN[self.kind] - len(self.header) + payload + 1

    # --- state machine -------------------------------------------------------------------------
    def _header_ranges(self) -> list[tuple[int, int]]:
        pos = len(self.header)
        start = 0
        for width, ranges in self.fields[self.kind]:
            if pos < start + width:
                return _field_bytes(self.header[start:pos], width, ranges)
            start += width
        raise AssertionError("header already complete")

    def _step(self, tok: int, generating: bool) -> None:
        if self.mode == "text":
            if tok in OPEN:
                self.mode, self.kind, self.header = "header", OPEN[tok], []
            elif tok == EOS:
                self.mode = "end"
        elif self.mode == "header":
            self.header.append(tok)
            if len(self.header) == HEADER_LEN[self.kind]:
                if self.kind == IMAGE:
                    w, h, c = parse_image_header(self.header)
                    self.left = w * h * c
                else:
                    self.left = parse_audio_header(self.header)[1]
                self.mode = "payload" if self.left else "close"
        elif self.mode == "payload":
            self.left -= 1
            if self.left == 0:
                self.mode = "close"
        elif self.mode == "close":
            self.mode = "end" if generating and self.end_after_block else "text"
            self.kind = None

    def _replay(self, tok: int, pos: int) -> None:
        """Feed one prompt id, checking it against the format (not against the limits)."""
        name = SPECIAL_NAMES.get(tok, tok)
        if not 0 <= tok < N_BYTES and tok not in (BOI, BOA, EOI, EOA):
            raise FormatError(f"prompt has {name} at position {pos}; only BOS may open it and EOS would end it")
        if self.mode == "text" and tok in (EOI, EOA):
            raise FormatError(f"prompt has a stray {name} at position {pos}")
        if self.mode in ("header", "payload") and tok >= N_BYTES:
            raise FormatError(f"prompt's {self.kind} block is cut short by {name} at position {pos}")
        if self.mode == "close" and tok != CLOSE[self.kind]:
            raise FormatError(f"prompt's {self.kind} block must be closed by "
                              f"{SPECIAL_NAMES[CLOSE[self.kind]]} at position {pos}, found {name}")
        self._step(tok, generating=False)


def remaining_block_len(prompt_ids: Sequence[int], **constraint_kwargs) -> int:
    """Ids needed to finish the block the prompt ends in (closing marker included; 0 when the
    prompt ends outside a block). Exact when the prompt holds the full header, else an upper
    bound under the limits in `constraint_kwargs` (those of `ModalityConstraint`)."""
    return ModalityConstraint.from_prompt(prompt_ids, **constraint_kwargs).max_remaining()


def open_block(prompt_ids: Sequence[int], image: tuple[int, int, int | None] | None = None,
               audio_seconds: float | None = None, audio_rate: int = DEFAULT_RATE,
               **constraint_kwargs) -> tuple[list[int], ModalityConstraint, int]:
    """Ask for exactly one image or one audio clip after the prompt.

    `image=(width, height[, channels])`: channels 1 or 3 fixes gray or RGB; None or left out
    lets the model choose (within `image_channels`). `audio_seconds` at `audio_rate` fixes the
    clip length. Returns (prompt + opened block, constraint, max_new): the constraint finishes
    the block and then allows only EOS; max_new covers both (exact for a fixed header)."""
    if (image is None) == (audio_seconds is None):
        raise OmnibyteError("open_block needs exactly one of image=(w, h, c) or audio_seconds")
    if ModalityConstraint.from_prompt(prompt_ids).mode != "text":
        raise OmnibyteError("the prompt already ends inside a block; continue it with ModalityConstraint.from_prompt")
    if image is not None:
        w, h, *c = image
        image = (w, h, c[0] if c else None)
        prefix = image_block_prefix(*image)
        kwargs = {"image_header": image, **constraint_kwargs}
    else:
        prefix = audio_block_prefix(audio_seconds, audio_rate)
        kwargs = {"audio_header": (audio_rate, round(audio_seconds * audio_rate)), **constraint_kwargs}
    ids = [*map(int, prompt_ids), *prefix]
    constraint = ModalityConstraint.from_prompt(ids, end_after_block=True, **kwargs)
    return ids, constraint, constraint.max_remaining() + 1  # + EOS


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class PartialBlock:
    """A block the output opened but did not finish (cut by max_new or, unconstrained, by a
    stray id). `header` may be short; `data` holds the payload bytes that did come."""

    kind: str
    header: bytes
    data: bytes

    def complete(self, fill: int = 0) -> ImageSegment | AudioSegment | None:
        """The block with its missing payload filled by `fill` bytes (black pixels; for audio
        use 128, µ-law silence); None when the header is missing or invalid."""
        if len(self.header) != HEADER_LEN[self.kind]:
            return None
        try:
            if self.kind == IMAGE:
                w, h, c = parse_image_header(self.header)
                return ImageSegment(w, h, c, self.data + bytes([fill]) * (w * h * c - len(self.data)))
            rate, n, enc = parse_audio_header(self.header)
            return AudioSegment(rate, n, enc, self.data + bytes([fill]) * (n - len(self.data)))
        except FormatError:
            return None


def split_outputs(ids: Sequence[int]) -> list[TextSegment | ImageSegment | AudioSegment | PartialBlock]:
    """Generated ids (with or without the prompt's BOS) → text, image and audio segments in order.

    Never raises: output cut short ends in a PartialBlock; a block whose closing marker is
    missing is kept when its payload is complete; ids that cannot belong anywhere (PAD, BOS, a
    stray EOI/EOA) are dropped; EOS ends the output."""
    ids = [int(t) for t in ids]
    out: list = []
    text = bytearray()
    i, n = 0, len(ids)

    def flush():
        if text:
            out.append(TextSegment(bytes(text)))
            text.clear()

    while i < n:
        t = ids[i]
        if t == EOS:
            break
        if t < N_BYTES:
            text.append(t)
            i += 1
            continue
        if t not in OPEN:
            i += 1  # PAD, BOS or a stray closing marker
            continue
        flush()
        kind = OPEN[t]
        i += 1
        header = []
        while i < n and len(header) < HEADER_LEN[kind] and ids[i] < N_BYTES:
            header.append(ids[i])
            i += 1
        try:
            size = None
            if len(header) == HEADER_LEN[kind]:
                hdr = parse_image_header(header) if kind == IMAGE else parse_audio_header(header)
                size = hdr[0] * hdr[1] * hdr[2] if kind == IMAGE else hdr[1]
        except FormatError:
            size = None
        if size is None:  # header cut short or invalid: the payload length is unknown
            out.append(PartialBlock(kind, bytes(header), b""))
            continue
        start = i
        while i < n and i - start < size and ids[i] < N_BYTES:
            i += 1
        payload = bytes(ids[start:i])
        if len(payload) < size:
            out.append(PartialBlock(kind, bytes(header), payload))
            continue
        out.append(PartialBlock(kind, bytes(header), payload).complete())
        if i < n and ids[i] == CLOSE[kind]:
            i += 1
    flush()
    return out


def save_outputs(ids: Sequence[int], out_path: str | Path) -> dict:
    """Write the images (PNG) and audio clips (WAV) among generated ids; return what was written.

    One media block and `out_path` ending in the matching suffix (.png for an image, .wav for
    audio): written to `out_path`. Otherwise block k goes to ``<out_path without suffix>_k.png``
    or ``_k.wav``. Unfinished blocks are saved filled up (black pixels, silence) and marked
    ``complete: False``; a block without a valid header is listed with no file.

    Returns ``{"files": [paths], "text": all text joined, "parts": [{"text": str} |
    {"image": path | None, "width", "height", "channels", "complete"} |
    {"audio": path | None, "sample_rate", "seconds", "complete"}, ...]}`` (JSON-serialisable).
    """
    out_path = Path(out_path)
    segs = split_outputs(ids)
    n_media = sum(not isinstance(s, TextSegment) for s in segs)
    parts, files, texts = [], [], []
    k = -1  # index of the media block
    for seg in segs:
        if isinstance(seg, TextSegment):
            texts.append(seg.text())
            parts.append({"text": seg.text()})
            continue
        k += 1
        complete = not isinstance(seg, PartialBlock)
        kind = seg.kind if isinstance(seg, PartialBlock) else (IMAGE if isinstance(seg, ImageSegment) else AUDIO)
        full = seg if complete else seg.complete(fill=0 if kind == IMAGE else 128)
        suffix = ".png" if kind == IMAGE else ".wav"
        path = None
        if full is not None:
            if n_media == 1 and out_path.suffix.lower() == suffix:
                path = out_path
            else:
                path = out_path.with_name(f"{out_path.stem}_{k}{suffix}")
            (save_png if kind == IMAGE else save_wav)(full, path)
            files.append(str(path))
        info = {kind: str(path) if path else None, "complete": complete}
        if isinstance(full, ImageSegment):
            info.update(width=full.width, height=full.height, channels=full.channels)
        elif isinstance(full, AudioSegment):
            info.update(sample_rate=full.sample_rate, seconds=full.n_samples / full.sample_rate)
        parts.append(info)
    return {"files": files, "text": "".join(texts), "parts": parts}


__all__ = ["ModalityConstraint", "PartialBlock", "audio_block_prefix", "build_prompt", "image_block_prefix",
           "open_block", "prompt_segment", "remaining_block_len", "save_outputs", "split_outputs"]
