"""The omnibyte byte format: one vocabulary and one document layout for every module.

ids 0-255 are the bytes themselves; special ids start at 256. A document is
``BOS, segment, segment, ..., EOS``. A text segment is its UTF-8 bytes with no markers; an
image segment is ``BOI, width u16, height u16, channels u8, pixels, EOI``; an audio segment is
``BOA, sample_rate u32, n_samples u32, encoding u8, samples, EOA`` (all integers big-endian).
Because the headers state the payload length, a reader always knows where a block ends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from omnibyte.errors import OmnibyteError

PAD, BOS, EOS, BOI, EOI, BOA, EOA = 256, 257, 258, 259, 260, 261, 262
VOCAB_SIZE = 263
N_BYTES = 256
SPECIAL_NAMES = {PAD: "PAD", BOS: "BOS", EOS: "EOS", BOI: "BOI", EOI: "EOI", BOA: "BOA", EOA: "EOA"}

IMAGE_HEADER_LEN = 5  # width u16, height u16, channels u8
AUDIO_HEADER_LEN = 9  # sample rate u32, sample count u32, encoding u8
IMAGE_CHANNELS = (1, 3)  # gray, RGB
AUDIO_MULAW8 = 1  # the one audio encoding: 8-bit mu-law, one byte per sample
AUDIO_ENCODINGS = (AUDIO_MULAW8,)


class FormatError(OmnibyteError, ValueError):
    """A byte sequence that does not follow the omnibyte format."""


@dataclass(frozen=True)
class TextSegment:
    data: bytes

    @classmethod
    def from_str(cls, text: str) -> TextSegment:
        return cls(text.encode("utf-8"))

    def text(self, errors: str = "replace") -> str:
        return self.data.decode("utf-8", errors=errors)

    def ids(self) -> list[int]:
        return list(self.data)


@dataclass(frozen=True)
class ImageSegment:
    width: int
    height: int
    channels: int
    pixels: bytes  # row-major, width * height * channels bytes

    def __post_init__(self):
        if not (0 < self.width < 65536 and 0 < self.height < 65536):
            raise FormatError(f"image size {self.width}x{self.height} is outside 1..65535")
        if self.channels not in IMAGE_CHANNELS:
            raise FormatError(f"image channels must be 1 or 3, got {self.channels}")
        if len(self.pixels) != self.payload_len:
            raise FormatError(f"image {self.width}x{self.height}x{self.channels} needs {self.payload_len} "
                              f"pixel bytes, got {len(self.pixels)}")

    @property
    def payload_len(self) -> int:
        return self.width * self.height * self.channels

    def header(self) -> bytes:
        return struct.pack(">HHB", self.width, self.height, self.channels)

    def ids(self) -> list[int]:
        return [BOI, *self.header(), *self.pixels, EOI]


@dataclass(frozen=True)
class AudioSegment:
    sample_rate: int
    n_samples: int
    encoding: int
    samples: bytes

    def __post_init__(self):
        if not 0 < self.sample_rate < 2**32:
            raise FormatError(f"audio sample rate {self.sample_rate} is outside 1..2^32-1")
        if self.encoding not in AUDIO_ENCODINGS:
            raise FormatError(f"unknown audio encoding {self.encoding} (known: 1 = 8-bit mu-law)")
        if not 0 <= self.n_samples < 2**32 or len(self.samples) != self.n_samples:
            raise FormatError(f"audio header says {self.n_samples} samples, payload has {len(self.samples)}")

    @property
    def payload_len(self) -> int:
        return self.n_samples

    def header(self) -> bytes:
        return struct.pack(">IIB", self.sample_rate, self.n_samples, self.encoding)

    def ids(self) -> list[int]:
        return [BOA, *self.header(), *self.samples, EOA]


Segment = TextSegment | ImageSegment | AudioSegment


@dataclass
class Document:
    segments: list[Segment] = field(default_factory=list)

    def ids(self) -> list[int]:
        out = [BOS]
        for seg in self.segments:
            out.extend(seg.ids())
        out.append(EOS)
        return out


def parse_image_header(header: Sequence[int]) -> tuple[int, int, int]:
    """(width, height, channels) from the 5 header bytes; raises FormatError when invalid."""
    w, h, c = struct.unpack(">HHB", bytes(header))
    if w == 0 or h == 0 or c not in IMAGE_CHANNELS:
        raise FormatError(f"bad image header: {w}x{h}, {c} channels")
    return w, h, c


def parse_audio_header(header: Sequence[int]) -> tuple[int, int, int]:
    """(sample_rate, n_samples, encoding) from the 9 header bytes; raises FormatError when invalid."""
    rate, n, enc = struct.unpack(">IIB", bytes(header))
    if rate == 0 or enc not in AUDIO_ENCODINGS:
        raise FormatError(f"bad audio header: rate {rate}, encoding {enc}")
    return rate, n, enc


def encode(doc: Document | str | bytes) -> list[int]:
    """Document (or plain text/bytes, taken as one text segment) -> ids."""
    if isinstance(doc, str):
        doc = Document([TextSegment.from_str(doc)])
    elif isinstance(doc, bytes | bytearray):
        doc = Document([TextSegment(bytes(doc))])
    return doc.ids()


def _check_bytes(ids: Sequence[int], start: int, stop: int, what: str) -> bytes:
    chunk = ids[start:stop]
    if len(chunk) != stop - start:
        raise FormatError(f"{what} is truncated: needs {stop - start} bytes, {len(chunk)} left")
    bad = [i for i in chunk if not 0 <= i < N_BYTES]
    if bad:
        raise FormatError(f"{what} contains special id {bad[0]} where a byte was expected")
    return bytes(chunk)


def decode_segments(ids: Sequence[int]) -> list[Segment]:
    """ids without BOS/EOS -> segments. Raises FormatError on anything malformed."""
    ids = [int(i) for i in ids]
    segs: list[Segment] = []
    text = bytearray()
    i, n = 0, len(ids)

    def flush():
        if text:
            segs.append(TextSegment(bytes(text)))
            text.clear()

    while i < n:
        t = ids[i]
        if t < N_BYTES:
            text.append(t)
            i += 1
        elif t == BOI:
            flush()
            header = _check_bytes(ids, i + 1, i + 1 + IMAGE_HEADER_LEN, "image header")
            w, h, c = parse_image_header(header)
            start = i + 1 + IMAGE_HEADER_LEN
            pixels = _check_bytes(ids, start, start + w * h * c, "image payload")
            end = start + w * h * c
            if end >= n or ids[end] != EOI:
                raise FormatError(f"image block at {i} is not closed by EOI")
            segs.append(ImageSegment(w, h, c, pixels))
            i = end + 1
        elif t == BOA:
            flush()
            header = _check_bytes(ids, i + 1, i + 1 + AUDIO_HEADER_LEN, "audio header")
            rate, count, enc = parse_audio_header(header)
            start = i + 1 + AUDIO_HEADER_LEN
            samples = _check_bytes(ids, start, start + count, "audio payload")
            end = start + count
            if end >= n or ids[end] != EOA:
                raise FormatError(f"audio block at {i} is not closed by EOA")
            segs.append(AudioSegment(rate, count, enc, samples))
            i = end + 1
        else:
            raise FormatError(f"unexpected {SPECIAL_NAMES.get(t, t)} at position {i}")
    flush()
    return segs


def decode(ids: Sequence[int]) -> Document:
    """ids of one document (BOS ... EOS) -> Document. Raises FormatError on anything malformed."""
    ids = [int(i) for i in ids]
    if not ids or ids[0] != BOS:
        raise FormatError("a document must start with BOS")
    if ids[-1] != EOS:
        raise FormatError("a document must end with EOS")
    return Document(decode_segments(ids[1:-1]))


def split_documents(ids: Iterable[int]) -> list[list[int]]:
    """Split a stream of ids into documents at BOS ... EOS (PAD dropped)."""
    docs, cur = [], None
    for t in ids:
        t = int(t)
        if t == PAD:
            continue
        if t == BOS:
            cur = [BOS]
        elif cur is not None:
            cur.append(t)
            if t == EOS:
                docs.append(cur)
                cur = None
    return docs


def is_segment_start(ids: np.ndarray) -> np.ndarray:
    """Bool mask of positions where a patch must start because a segment begins or ends there.

    BOS, BOI, BOA start a segment; the byte after EOI/EOA (and EOS itself) starts a new one.
    Works on any shape; the last axis is the sequence.
    """
    ids = np.asarray(ids)
    mask = np.isin(ids, (BOS, EOS, BOI, BOA, EOI, EOA))
    after_close = np.zeros_like(mask)
    after_close[..., 1:] = np.isin(ids[..., :-1], (EOI, EOA))
    return mask | after_close


def ids_to_text(ids: Iterable[int]) -> str:
    """Best-effort readable text: bytes decoded as UTF-8 with replacement, specials as <NAME>."""
    out, buf = [], bytearray()
    for t in ids:
        t = int(t)
        if t < N_BYTES:
            buf.append(t)
        else:
            out.append(buf.decode("utf-8", errors="replace"))
            buf.clear()
            out.append(f"<{SPECIAL_NAMES.get(t, t)}>")
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)
