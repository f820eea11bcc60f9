"""Clock reading: an analog clock face drawn with Pillow → "What time is it?" → ``HH:MM``.

Molmo reads clocks from synthetic renders; this is a small offline version. Faces vary in
colour (light face with dark hands or the reverse), rim width, tick marks, numerals (DejaVu
Sans when installed), hand shape (bars or tapered), hand length and width, an optional
distracting second hand, and position and size within the image. The hour hand sits between
hours as a real one does (a quarter past three points a quarter of the way to four).

Times are 12-hour, ``01:00`` to ``12:59``; the answer is always five bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from omnibyte.data.tasks.common import Example, example_rng, qa_example
from omnibyte.media import image_segment_from_pil

NAME = "clocks"
QUESTIONS = ("What time is it?", "What time does the clock show?", "Read the clock.")
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")


@dataclass
class ClocksConfig:
    size: int = 32  # image side in pixels (a 32×32 RGB face is 3,072 bytes)
    mode: str = "rgb"  # rgb | gray
    numerals: float = 0.4  # share of faces with numbers (all twelve or just 12/3/6/9)
    second_hand: float = 0.25  # share of faces with a thin second hand as a distractor
    supersample: int = 4  # drawn this many times larger, then downsampled (antialiasing)
    question_last: bool = False  # the question after the media block, right before the answer

    def __post_init__(self):
        if not 8 <= self.size <= 1024:
            raise ValueError(f"clock size must be in 8..1024, got {self.size}")
        if self.mode not in ("rgb", "gray"):
            raise ValueError(f"clock mode must be rgb or gray, got {self.mode!r}")
        for name in ("numerals", "second_hand"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"clocks.{name} is a share in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"clock supersample must be in 1..8, got {self.supersample}")


def format_time(hour: int, minute: int) -> str:
    return f"{hour:02d}:{minute:02d}"


@cache
def font_paths() -> tuple[str, ...]:
    """Installed DejaVu fonts (empty when none: numerals then use Pillow's built-in font)."""
    return tuple(str(Path(d) / f) for d in FONT_DIRS for f in FONT_FILES if (Path(d) / f).is_file())


@lru_cache(maxsize=256)
def _font(path: str | None, size: int):
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def _colour(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi + 1, size=3))


def _at(cx: float, cy: float, angle: float, length: float) -> tuple[float, float]:
    """The point `length` from the centre at `angle` radians clockwise from 12 (y grows down)."""
    return cx + length * math.sin(angle), cy - length * math.cos(angle)


def _hand(draw: ImageDraw.ImageDraw, cx, cy, angle, length, width, colour, tapered: bool) -> None:
    tail = -0.15 * length  # a short counterweight behind the centre
    if tapered:  # a kite: widest at the centre, so the short tail never reads as the pointing end
        side = angle + math.pi / 2
        half = width / 2
        pts = [_at(cx, cy, angle, tail), (cx + half * math.sin(side), cy - half * math.cos(side)),
               _at(cx, cy, angle, length), (cx - half * math.sin(side), cy + half * math.cos(side))]
        draw.polygon(pts, fill=colour)
    else:
        draw.line([_at(cx, cy, angle, tail), _at(cx, cy, angle, length)], fill=colour, width=max(1, round(width)))
        x, y = _at(cx, cy, angle, length)
        r = width / 2
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)  # round tip


def render_clock(hour: int, minute: int, rng: np.random.Generator, cfg: ClocksConfig) -> Image.Image:
    """An RGB clock face showing hour:minute (hour 1..12), drawn with the variation `rng` picks."""
    s = cfg.size * cfg.supersample
    dark_face = rng.random() < 0.25
    face = _colour(rng, 20, 90) if dark_face else _colour(rng, 170, 255)
    ink = _colour(rng, 200, 255) if dark_face else _colour(rng, 0, 70)
    background = _colour(rng, 0, 255)
    img = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(img)

    radius = s * rng.uniform(0.40, 0.48)
    slack = s / 2 - radius
    cx, cy = s / 2 + rng.uniform(-slack, slack), s / 2 + rng.uniform(-slack, slack)
    rim = radius * rng.uniform(0.02, 0.08)
    rim_colour = ink if rng.random() < 0.6 else _colour(rng, 0, 255)
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=rim_colour)
    inner = radius - rim
    draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=face)

    ticks = rng.choice(["none", "hours", "minutes"], p=[0.2, 0.45, 0.35])
    if ticks != "none":
        for k in range(60 if ticks == "minutes" else 12):
            major = (k % 5 == 0) if ticks == "minutes" else True
            angle = 2 * math.pi * k / (60 if ticks == "minutes" else 12)
            length = inner * (0.14 if major else 0.06)
            width = max(1.0, inner * (0.04 if major else 0.015))
            draw.line([_at(cx, cy, angle, inner * 0.97), _at(cx, cy, angle, inner * 0.97 - length)], fill=ink,
                      width=round(width))

    if rng.random() < cfg.numerals:
        fonts = font_paths()
        font = _font(fonts[int(rng.integers(len(fonts)))] if fonts else None, max(6, round(inner * 0.26)))
        which = range(1, 13) if rng.random() < 0.6 else (12, 3, 6, 9)
        for n in which:
            x, y = _at(cx, cy, 2 * math.pi * n / 12, inner * 0.72)
            draw.text((x, y), str(n), fill=ink, font=font, anchor="mm")

    tapered = rng.random() < 0.5
    hand_colour = ink if rng.random() < 0.7 else _colour(rng, 0, 255)
    minute_angle = 2 * math.pi * minute / 60
    hour_angle = 2 * math.pi * ((hour % 12) + minute / 60) / 12
    _hand(draw, cx, cy, hour_angle, inner * rng.uniform(0.42, 0.58), inner * rng.uniform(0.07, 0.12),
          hand_colour, tapered)
    _hand(draw, cx, cy, minute_angle, inner * rng.uniform(0.72, 0.9), inner * rng.uniform(0.035, 0.07),
          hand_colour, tapered)
    if rng.random() < cfg.second_hand:
        second_colour = (220, 30, 30) if rng.random() < 0.7 else _colour(rng, 0, 255)
        _hand(draw, cx, cy, rng.uniform(0, 2 * math.pi), inner * 0.9, max(1.0, inner * 0.015), second_colour,
              False)
    cap = inner * rng.uniform(0.04, 0.09)
    draw.ellipse([cx - cap, cy - cap, cx + cap, cy + cap], fill=hand_colour)
    return img.resize((cfg.size, cfg.size), Image.Resampling.LANCZOS) if cfg.supersample > 1 else img


def make_example(index: int, seed: int, cfg: ClocksConfig) -> Example:
    rng = example_rng(NAME, seed, index)
    hour, minute = int(rng.integers(1, 13)), int(rng.integers(0, 60))
    img = render_clock(hour, minute, rng, cfg)
    seg = image_segment_from_pil(img, mode=cfg.mode)
    question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
    return qa_example(question, seg, format_time(hour, minute), "clock", cfg.question_last, hour=hour, minute=minute)


def examples(n: int, seed: int, cfg: ClocksConfig):
    for i in range(n):
        yield make_example(i, seed, cfg)
