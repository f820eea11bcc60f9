"""The .ob file: a small header, one record per chunk, a CRC-32 of everything before it.

    magic "OB", version u8, kind u8 (0 bytes, 1 image, 2 audio), model hash (8 bytes),
    varint length (payload bytes), varint chunk (bytes per chunk), varint context (ids the model
    sees at most), the media block's header (5 bytes for an image, 9 for audio: the byte format's),
    then per chunk: varint n_escapes, n_escapes × (varint position delta, varint byte·2 + side),
    varint n_words, CRC-32 of the chunk's original bytes (u32 LE), n_words × u32 LE (the coded
    stream), and last the CRC-32 (u32 LE) of the whole file before it.

Integers are little-endian base-128 varints. The file CRC catches a truncated or damaged file
before any model work; a chunk's CRC checks what the decoder made of it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from omnibyte.errors import OmnibyteError
from omnibyte.format import AUDIO_HEADER_LEN, IMAGE_HEADER_LEN, FormatError, parse_audio_header, parse_image_header

MAGIC = b"OB"
VERSION = 1
KINDS = ("bytes", "image", "audio")
MEDIA_HEADER_LEN = {"bytes": 0, "image": IMAGE_HEADER_LEN, "audio": AUDIO_HEADER_LEN}
HASH_LEN = 8


class CorruptFile(OmnibyteError):
    """The .ob file is truncated, damaged or not an .ob file."""


@dataclass
class Header:
    kind: str  # one of KINDS
    model_hash: bytes  # HASH_LEN bytes: see omnibyte.compress.model_hash
    length: int  # payload bytes
    chunk: int  # bytes per chunk (the last may be shorter)
    context: int  # ids the model holds at most
    media_header: bytes = b""  # the image or audio block's header, as in the byte format

    @property
    def n_chunks(self) -> int:
        return -(-self.length // self.chunk)

    def chunk_lengths(self) -> list[int]:
        return [min(self.chunk, self.length - i * self.chunk) for i in range(self.n_chunks)]


@dataclass
class Chunk:
    words: np.ndarray  # uint32: the entropy coder's output
    crc: int  # CRC-32 of the chunk's original bytes
    escapes: list[tuple[int, int, int]] = field(default_factory=list)  # (position, byte, side), sorted


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptFile("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, limit: int = 1 << 62) -> int:
        n, shift = 0, 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if n > limit:
                raise CorruptFile("damaged (a length is out of range)")
            if not b & 0x80:
                return n
            shift += 7


def dump(header: Header, chunks: list[Chunk]) -> bytes:
    out = bytearray(MAGIC)
    out += bytes([VERSION, KINDS.index(header.kind)]) + header.model_hash
    out += _varint(header.length) + _varint(header.chunk) + _varint(header.context) + header.media_header
    for c in chunks:
        out += _varint(len(c.escapes))
        last = 0
        for pos, byte, side in c.escapes:
            out += _varint(pos - last) + _varint(byte * 2 + side)
            last = pos
        out += _varint(len(c.words)) + struct.pack("<I", c.crc) + c.words.astype("<u4").tobytes()
    out += struct.pack("<I", crc32(bytes(out)))
    return bytes(out)


def load(data: bytes, name: str = "input") -> tuple[Header, list[Chunk]]:
    """Parse and check a whole .ob file; raises CorruptFile (one line, naming `name`) when it is
    not one, is truncated or damaged."""
    try:
        return _load(data)
    except CorruptFile as e:
        raise CorruptFile(f"{name}: {e}") from None


def _load(data: bytes) -> tuple[Header, list[Chunk]]:
    if data[:2] != MAGIC:
        raise CorruptFile("not an omnibyte compressed file (no 'OB' magic)")
    if len(data) < 3 or data[2] != VERSION:
        version = data[2] if len(data) > 2 else "?"
        raise CorruptFile(f"format version {version} (this omnibyte reads version {VERSION})")
    if len(data) < 8 or crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise CorruptFile("truncated or damaged (its checksum does not match)")
    r = _Reader(data[:-4])
    r.take(3)
    kind_id = r.take(1)[0]
    if kind_id >= len(KINDS):
        raise CorruptFile(f"damaged (unknown kind {kind_id})")
    kind = KINDS[kind_id]
    model_hash = r.take(HASH_LEN)
    length, chunk, context = r.varint(), r.varint(), r.varint()
    if length and not chunk:
        raise CorruptFile("damaged (chunk size 0)")
    header = Header(kind, model_hash, length, chunk or 1, context, r.take(MEDIA_HEADER_LEN[kind]))
    _check_media(header)
    chunks = []
    for n in header.chunk_lengths():
        escapes, pos = [], 0
        for _ in range(r.varint(n * 256)):
            pos += r.varint(n)
            code = r.varint(511)
            escapes.append((pos, code >> 1, code & 1))
        if escapes and escapes[-1][0] >= n:
            raise CorruptFile("damaged (an escape lies past its chunk)")
        n_words = r.varint(len(data) // 4)
        crc = struct.unpack("<I", r.take(4))[0]
        words = np.frombuffer(r.take(4 * n_words), dtype="<u4").astype(np.uint32)
        chunks.append(Chunk(words, crc, escapes))
    if r.pos != len(r.data):
        raise CorruptFile(f"damaged ({len(r.data) - r.pos} bytes after the last chunk)")
    return header, chunks


def _check_media(header: Header) -> None:
    """A media header must be valid and agree with the payload length."""
    try:
        if header.kind == "image":
            w, h, c = parse_image_header(header.media_header)
            expected = w * h * c
        elif header.kind == "audio":
            expected = parse_audio_header(header.media_header)[1]
        else:
            return
    except FormatError as e:
        raise CorruptFile(f"damaged ({e})") from None
    if expected != header.length:
        raise CorruptFile(f"damaged (its {header.kind} header says {expected} bytes, the file {header.length})")
