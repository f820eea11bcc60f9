"""Image files ⇄ image segments: ``BOI, width u16, height u16, channels u8, pixels, EOI``.

Reading (any format Pillow opens: PNG, JPEG, BMP, GIF (first frame), WebP, TIFF, ...):

1. EXIF orientation is applied, so photos come out upright.
2. Mode: ``mode=None`` keeps gray images gray (Pillow modes 1, L, LA, I, I;16 and palette
   images whose colours are all gray) and makes everything else RGB; ``"gray"`` or ``"rgb"``
   forces one. Transparency is composited over white. 16-bit gray is scaled to 8 bits.
3. Size: ``size=(width, height)`` resizes to exactly that (aspect ratio not kept). With
   ``size=None`` an image that fits in DEFAULT_MAX_SIDE × DEFAULT_MAX_SIDE keeps its native
   size and a larger one is shrunk so its long side is DEFAULT_MAX_SIDE (aspect kept, each side
   at least 1). Resizing happens after the mode conversion, with Pillow's Lanczos filter
   (antialiased when shrinking), so it is deterministic: the same file gives the same bytes.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from omnibyte.errors import OmnibyteError
from omnibyte.files import remove_stale_temps, temp_sibling
from omnibyte.format import ImageSegment

DEFAULT_MAX_SIDE = 64  # default cap on the long side: 64×64 RGB is 12 KiB of bytes per image
RESAMPLE = Image.Resampling.LANCZOS
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                            ".pgm", ".pbm", ".pnm", ".tga", ".ico"})
MODES = {"gray": 1, "grey": 1, "l": 1, "rgb": 3}  # mode name → channels

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N"}
_COLOR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def parse_size(text: str) -> tuple[int, int]:
    """'28x28' (or '28X28', '28*28') → (width, height); a single number N means N×N."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*×]\s*(\d+))?\s*", str(text))
    if not m:
        raise OmnibyteError(f"bad image size {text!r}: expected WIDTHxHEIGHT, e.g. 28x28")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) is not None else w
    return _check_size((w, h))


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise OmnibyteError(f"image size must be (width, height), got {size!r}") from None
    if not (0 < w < 65536 and 0 < h < 65536):
        raise OmnibyteError(f"image size {w}x{h} is outside 1..65535")
    return w, h


def channels_for_mode(mode: str | None) -> int | None:
    """'gray' → 1, 'rgb' → 3, None → None (decided by the image)."""
    if mode is None:
        return None
    c = MODES.get(str(mode).lower())
    if c is None:
        raise OmnibyteError(f"unknown image mode {mode!r} (known: gray, rgb)")
    return c


def default_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """Native size if it fits in max_side × max_side, else shrunk so the long side is max_side."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _is_gray(img: Image.Image) -> bool:
    if img.mode in _GRAY_MODES:
        return True
    if img.mode in ("P", "PA"):  # palette: gray when every colour it uses is gray
        rgb = np.asarray(img.convert("RGB"))
        return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return False


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any supported Pillow mode → 'L' or 'RGB' (alpha over white, 16-bit gray → 8-bit)."""
    if img.mode not in _GRAY_MODES | _COLOR_MODES:
        raise OmnibyteError(f"unsupported image mode {img.mode!r}")
    if img.mode.startswith("I"):  # 16-bit gray: Pillow's convert would clip at 255, so scale instead
        a = np.asarray(img).astype(np.int64)
        img = Image.fromarray(np.clip((a * 255 + 32767) // 65535, 0, 255).astype(np.uint8))
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("L" if channels == 1 else "RGB")


def image_segment_from_pil(img: Image.Image, size: tuple[int, int] | None = None,
                           mode: str | None = None) -> ImageSegment:
    """A Pillow image → ImageSegment (mode and size rules in the module docstring)."""
    channels = channels_for_mode(mode) or (1 if _is_gray(img) else 3)
    img = _to_8bit(img, channels)
    target = _check_size(size) if size is not None else default_size(*img.size)
    if img.size != target:
        img = img.resize(target, RESAMPLE)
    return ImageSegment(img.width, img.height, channels, img.tobytes())


def image_segment_from_array(pixels: np.ndarray, size: tuple[int, int] | None = None,
                             mode: str | None = None) -> ImageSegment:
    """uint8 (H, W) gray, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA → ImageSegment."""
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise OmnibyteError(f"image arrays must be uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise OmnibyteError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise OmnibyteError(f"image array is empty: shape {a.shape}")
    img = Image.fromarray(np.ascontiguousarray(a))  # uint8 (H, W) → L, (H, W, 3) → RGB, (H, W, 4) → RGBA
    return image_segment_from_pil(img, size, mode)


# UnidentifiedImageError (not an image) and truncated-data errors are OSErrors
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def open_image(path: str | Path) -> Image.Image:
    """An image file, loaded and upright (EXIF orientation applied; animated GIF/WebP/APNG: the
    first frame). Unreadable files raise a one-line OmnibyteError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise OmnibyteError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            return _upright(img)
    except _READ_ERRORS as e:
        msg = _one_line(e).replace(repr(str(path)), "").strip()  # the path leads the message already
        raise OmnibyteError(f"{path}: cannot read image: {msg}") from None


def image_segment_from_path(path: str | Path, size: tuple[int, int] | None = None,
                            mode: str | None = None) -> ImageSegment:
    """An image file → ImageSegment. Unreadable files raise a one-line OmnibyteError naming the file."""
    img = open_image(path)
    try:
        return image_segment_from_pil(img, size, mode)
    except OmnibyteError as e:
        raise OmnibyteError(f"{path}: {e}") from None


def image_segment_from_bytes(data: bytes, size: tuple[int, int] | None = None, mode: str | None = None,
                             max_pixels: int | None = None) -> ImageSegment:
    """An image file's bytes (an upload) → ImageSegment. `max_pixels` refuses a larger image from
    its header, before its pixels are decoded (a small PNG can declare a huge canvas)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise OmnibyteError(f"image of {img.width}x{img.height} pixels is larger than the {max_pixels} "
                                    f"pixels allowed")
            upright = _upright(img)
    except _READ_ERRORS as e:
        raise OmnibyteError(f"cannot read image: {_one_line(e)}") from None
    return image_segment_from_pil(upright, size, mode)


def _upright(img: Image.Image) -> Image.Image:
    """An opened image loaded and upright (EXIF orientation applied; animated GIF/WebP/APNG: the
    first frame)."""
    img.seek(0)
    img.load()
    return ImageOps.exif_transpose(img)


def segment_to_pil(seg: ImageSegment) -> Image.Image:
    """ImageSegment → Pillow image ('L' for 1 channel, 'RGB' for 3)."""
    if not isinstance(seg, ImageSegment):
        raise OmnibyteError(f"expected an ImageSegment, got {type(seg).__name__}")
    return Image.frombytes("L" if seg.channels == 1 else "RGB", (seg.width, seg.height), seg.pixels)


def segment_to_pixels(seg: ImageSegment) -> np.ndarray:
    """ImageSegment → uint8 (H, W) for gray or (H, W, 3) for RGB."""
    a = np.frombuffer(seg.pixels, dtype=np.uint8)
    shape = (seg.height, seg.width) if seg.channels == 1 else (seg.height, seg.width, 3)
    return a.reshape(shape).copy()


def encode_png(seg: ImageSegment) -> bytes:
    """The segment as PNG file bytes."""
    buf = io.BytesIO()
    segment_to_pil(seg).save(buf, format="PNG")
    return buf.getvalue()


def save_png(seg: ImageSegment, path: str | Path) -> Path:
    """Write the segment as a PNG (atomically: a temp file in the same folder, then rename)."""
    path = Path(path)
    data = encode_png(seg)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # what a killed earlier write of this file left
    tmp = temp_sibling(path)  # opened normally: the umask sets its mode
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OmnibyteError(f"{path}: cannot write PNG: {_one_line(e)}") from None
    return path


__all__ = ["DEFAULT_MAX_SIDE", "IMAGE_SUFFIXES", "RESAMPLE", "channels_for_mode", "default_size", "encode_png",
           "image_segment_from_array", "image_segment_from_bytes", "image_segment_from_path",
           "image_segment_from_pil", "open_image", "parse_size", "save_png", "segment_to_pil", "segment_to_pixels"]
