"""What a file is coded as: its bytes, or (`--as-media`) the payload of its image or audio block.

Media are coded exactly: the pixels an image shows, the µ-law samples of a clip. A file whose
conversion to a block would lose something (alpha, 16-bit depth, audio that is not omnibyte's
8-bit µ-law at its own rate) is refused rather than changed; it can still be compressed as bytes.
Decompressed media come back as PNG (pixels) or 16-bit PCM WAV (the samples as `save_wav` writes
them, so a WAV that `omnibyte generate` or the speech tasks wrote comes back byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from omnibyte.errors import OmnibyteError
from omnibyte.files import write_atomic
from omnibyte.format import BOA, BOI, BOS, AudioSegment, ImageSegment, parse_audio_header, parse_image_header
from omnibyte.media import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    audio_segment_from_array,
    image_segment_from_pil,
    open_image,
    save_png,
    save_wav,
    segment_to_pcm16,
)

# Pillow modes whose pixels an image block holds exactly (a palette without transparency becomes
# its colours; 1-bit becomes 0/255 gray)
_EXACT_MODES = {"1", "L", "RGB", "P"}


@dataclass
class Source:
    """What is coded: `payload` bytes, and for media the block's kind and header."""
    payload: bytes
    kind: str = "bytes"  # "bytes", "image" or "audio"
    media_header: bytes = b""

    def prefix(self) -> tuple[int, ...]:
        """The ids the model reads before the payload: a document's start, and a block's opening."""
        opener = {"bytes": (), "image": (BOI,), "audio": (BOA,)}[self.kind]
        return (BOS, *opener, *self.media_header)

    def align(self) -> int:
        """An image's row in bytes (chunks and windows start at a row), else 1."""
        if self.kind != "image":
            return 1
        w, _, c = parse_image_header(self.media_header)
        return w * c


def read_source(path: str | Path, as_media: bool = False) -> Source:
    path = Path(path)
    if not path.is_file():
        raise OmnibyteError(f"{path}: no such file")
    if not as_media:
        return Source(path.read_bytes())
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        seg = _image(path)
        return Source(seg.pixels, "image", seg.header())
    if suffix in AUDIO_SUFFIXES:
        seg = _audio(path)
        return Source(seg.samples, "audio", seg.header())
    raise OmnibyteError(f"{path}: --as-media reads images ({', '.join(sorted(IMAGE_SUFFIXES))}) and audio "
                        f"({', '.join(sorted(AUDIO_SUFFIXES))}); compress other files as bytes")


def _image(path: Path) -> ImageSegment:
    img = open_image(path)
    if img.mode not in _EXACT_MODES or (img.mode == "P" and "transparency" in img.info):
        raise OmnibyteError(f"{path}: a {img.mode} image would not survive as an image block (8-bit gray or "
                            "RGB, no alpha); compress it as bytes, without --as-media")
    return image_segment_from_pil(img, size=img.size)


def _audio(path: Path) -> AudioSegment:
    try:
        info = sf.info(str(path))
        pcm, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (RuntimeError, TypeError, ValueError, EOFError, OSError) as e:
        raise OmnibyteError(f"{path}: cannot read audio: {' '.join(str(e).split())}") from None
    if info.channels != 1 or info.subtype != "PCM_16" or not len(pcm):
        raise OmnibyteError(f"{path}: --as-media codes mono 16-bit PCM audio holding omnibyte µ-law samples "
                            f"(as `omnibyte generate` writes it); this is {info.channels} channel(s) of "
                            f"{info.subtype}, {len(pcm)} frames: compress it as bytes")
    seg = audio_segment_from_array(pcm[:, 0], rate)
    changed = int((segment_to_pcm16(seg) != pcm[:, 0]).sum())
    if changed:
        raise OmnibyteError(f"{path}: {changed} of {len(pcm)} samples are not omnibyte µ-law levels, so an audio "
                            "block would change them; compress it as bytes, without --as-media")
    return seg


def write_source(path: str | Path, source: Source) -> None:
    """Write decompressed content atomically: bytes as they are, an image as PNG, audio as WAV."""
    path = Path(path)
    if source.kind == "bytes":
        write_atomic(path, lambda f: f.write(source.payload))
    elif source.kind == "image":
        save_png(ImageSegment(*parse_image_header(source.media_header), source.payload), path)
    else:
        rate, n, enc = parse_audio_header(source.media_header)
        save_wav(AudioSegment(rate, n, enc, source.payload), path)


def media_sizes(source: Source) -> str:
    """A few words on what the source is, for messages."""
    if source.kind == "image":
        w, h, c = parse_image_header(source.media_header)
        return f"{w}x{h} {'gray' if c == 1 else 'RGB'} image"
    if source.kind == "audio":
        rate, n, _ = parse_audio_header(source.media_header)
        return f"{n / rate:.2f} s clip at {rate} Hz"
    return "bytes"


__all__ = ["Source", "media_sizes", "read_source", "write_source"]
