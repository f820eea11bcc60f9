"""Counting and pointing: coloured shapes on a canvas.

- count: "How many circles are there?" → ``3`` (0 happens: the asked-for kind may be absent).
  With ``questions`` > 1 the canvas is asked about other kinds as well, one after another
  (training data: one canvas then teaches several counts; metrics score the first answer).
  ``describe`` adds "How many of each shape are there?" → ``circles 1, squares 0, triangles 2,
  diamonds 0`` after them, a caption of the whole canvas; ``locate`` adds "Point to every shape."
  → a Molmo point for each shape, left to right, named by its colour and kind.
- point: "Point to the red circle." → Molmo's point format, percent coordinates with one
  decimal: ``<point x="52.9" y="43.9" alt="red circle">red circle</point>``, or for several
  matches ``<points x1="…" y1="…" x2="…" y2="…" alt="red circles">red circles</points>``.

Shapes never overlap and lie wholly inside the canvas, so counts are unambiguous and a point
inside a shape's outline names that shape alone. `Shape.contains` is the geometric
inside-test the point metric uses; coordinates are pixels of the final image, (0, 0) its top
left corner, so pixel column i covers x in [i, i+1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from omnibyte.data.tasks.common import Example, example_rng, qa_example
from omnibyte.media import image_segment_from_pil

NAME = "shapes"
KINDS = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (215, 35, 35), "green": (35, 160, 60), "blue": (40, 80, 215), "yellow": (235, 200, 25),
    "purple": (135, 55, 175), "orange": (245, 135, 25), "black": (25, 25, 25),
}
SQRT3 = math.sqrt(3.0)


@dataclass
class ShapesConfig:
    size: int = 40  # canvas side in pixels (RGB: colour is part of the question)
    max_shapes: int = 6  # 1..max_shapes shapes per canvas
    point: float = 0.5  # share of "point to" questions (the rest are "how many")
    min_radius: float = 0.08  # shape radius as a share of the canvas side
    max_radius: float = 0.14
    supersample: int = 4  # drawn this many times larger, then downsampled (antialiasing)
    question_last: bool = False  # the question after the media block, right before the answer
    # questions per canvas: the first as always, then up to questions - 1 more of the same sort
    # (count: the other shape kinds; point: other colour-and-kind groups), each with its answer
    questions: int = 1
    # then "How many of each shape are there?" → "circles 1, squares 0, triangles 2, diamonds 0": a
    # dense caption of the canvas (training data; Molmo trains on such descriptions before questions)
    describe: bool = False
    # then "Point to every shape." → one <point …> per shape, left to right, its alt its colour and kind:
    # a caption of where everything is, whose parts a "point to the red circle" answer repeats
    locate: bool = False

    def __post_init__(self):
        if not 16 <= self.size <= 1024:
            raise ValueError(f"shapes size must be in 16..1024, got {self.size}")
        if not 1 <= self.max_shapes <= 20:
            raise ValueError(f"shapes.max_shapes must be in 1..20, got {self.max_shapes}")
        if not 0 <= self.point <= 1:
            raise ValueError(f"shapes.point is a share in [0, 1], got {self.point}")
        if not 0 < self.min_radius <= self.max_radius <= 0.3:
            raise ValueError(f"need 0 < min_radius ≤ max_radius ≤ 0.3, got {self.min_radius}, {self.max_radius}")
        if not 1 <= self.questions <= 8:
            raise ValueError(f"shapes.questions must be in 1..8, got {self.questions}")
        if not 1 <= self.supersample <= 8:
            raise ValueError(f"shapes supersample must be in 1..8, got {self.supersample}")


@dataclass(frozen=True)
class Shape:
    """One shape: centre (x, y) and radius r in pixels. r is the radius of a circle, half the
    side of an axis-aligned square, and the circumradius of a diamond (a square standing on a
    corner) and of an upward equilateral triangle (whose centroid is its centre)."""

    kind: str
    colour: str
    x: float
    y: float
    r: float

    def vertices(self) -> list[tuple[float, float]]:
        x, y, r = self.x, self.y, self.r
        if self.kind == "square":
            return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]
        if self.kind == "diamond":
            return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
        if self.kind == "triangle":
            return [(x, y - r), (x + r * SQRT3 / 2, y + r / 2), (x - r * SQRT3 / 2, y + r / 2)]
        raise ValueError(f"a {self.kind} has no vertices")

    def contains(self, px: float, py: float) -> bool:
        """Is (px, py) inside the shape or on its outline?"""
        dx, dy = px - self.x, py - self.y
        if self.kind == "circle":
            return dx * dx + dy * dy <= self.r * self.r
        if self.kind == "square":
            return abs(dx) <= self.r and abs(dy) <= self.r
        if self.kind == "diamond":
            return abs(dx) + abs(dy) <= self.r
        if self.kind == "triangle":  # inside = on the inner side of all three edges (vertices clockwise on screen)
            v = self.vertices()
            for (ax, ay), (bx, by) in zip(v, v[1:] + v[:1]):
                if (bx - ax) * (py - ay) - (by - ay) * (px - ax) < 0:
                    return False
            return True
        raise ValueError(f"unknown shape kind {self.kind!r}")

    def area(self) -> float:
        r = self.r
        return {"circle": math.pi * r * r, "square": 4 * r * r, "diamond": 2 * r * r,
                "triangle": 3 * SQRT3 / 4 * r * r}[self.kind]

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Shape:
        return cls(d["kind"], d["colour"], float(d["x"]), float(d["y"]), float(d["r"]))


def place_shapes(rng: np.random.Generator, cfg: ShapesConfig) -> list[Shape]:
    """1..max_shapes non-overlapping shapes fully inside the canvas (rejection sampling)."""
    want = int(rng.integers(1, cfg.max_shapes + 1))
    shapes: list[Shape] = []
    for _ in range(50 * want):
        if len(shapes) == want:
            break
        r = cfg.size * rng.uniform(cfg.min_radius, cfg.max_radius)
        x, y = rng.uniform(r + 1, cfg.size - r - 1, size=2)
        if all(math.hypot(x - s.x, y - s.y) > r + s.r + 1 for s in shapes):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            shapes.append(Shape(kind, colour, float(x), float(y), float(r)))
    return shapes


def render_shapes(shapes: list[Shape], rng: np.random.Generator, cfg: ShapesConfig) -> Image.Image:
    k = cfg.supersample
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    img = Image.new("RGB", (cfg.size * k, cfg.size * k), background)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        jitter = rng.integers(-15, 16, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[s.colour], jitter))
        if s.kind == "circle":
            draw.ellipse([k * (s.x - s.r), k * (s.y - s.r), k * (s.x + s.r), k * (s.y + s.r)], fill=fill)
        else:
            draw.polygon([(k * x, k * y) for x, y in s.vertices()], fill=fill)
    return img.resize((cfg.size, cfg.size), Image.Resampling.LANCZOS) if k > 1 else img


def plural(name: str, n: int) -> str:
    return name if n == 1 else name + "s"


def point_answer(targets: list[Shape], width: int, height: int, alt: str) -> str:
    """Molmo's point format for the centres of `targets`, in percent of the image size."""
    coords = [(100 * s.x / width, 100 * s.y / height) for s in targets]
    if len(coords) == 1:
        (x, y), = coords
        return f'<point x="{x:.1f}" y="{y:.1f}" alt="{alt}">{alt}</point>'
    attrs = " ".join(f'x{i}="{x:.1f}" y{i}="{y:.1f}"' for i, (x, y) in enumerate(coords, 1))
    return f'<points {attrs} alt="{alt}">{alt}</points>'


def make_example(index: int, seed: int, cfg: ShapesConfig) -> Example:
    rng = example_rng(NAME, seed, index)
    shapes = place_shapes(rng, cfg)
    seg = image_segment_from_pil(render_shapes(shapes, rng, cfg), mode="rgb")
    geometry = {"width": cfg.size, "height": cfg.size, "shapes": [s.to_dict() for s in shapes]}
    if rng.random() < cfg.point:
        pick = shapes[int(rng.integers(len(shapes)))]
        question, answer, targets = point_question(shapes, pick.colour, pick.kind, cfg)
        groups = sorted({(s.colour, s.kind) for s in shapes} - {(pick.colour, pick.kind)})
        more = [point_question(shapes, *groups[i], cfg)[:2] for i in follow_ups(rng, len(groups), cfg)]
        more += captions(shapes, cfg)
        return qa_example(question, seg, answer, "point", cfg.question_last, more,
                          targets=[s.to_dict() for s in targets], **geometry)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    question, answer = count_question(shapes, kind)
    others = [k for k in KINDS if k != kind]
    more = [count_question(shapes, others[i]) for i in follow_ups(rng, len(others), cfg)]
    more += captions(shapes, cfg)
    return qa_example(question, seg, answer, "count", cfg.question_last, more,
                      shape=kind, count=int(answer), **geometry)


def follow_ups(rng: np.random.Generator, n: int, cfg: ShapesConfig) -> list[int]:
    """Which of n further questions to ask after the first (none, and no random draw, for questions 1)."""
    if cfg.questions == 1 or n == 0:
        return []
    return [int(i) for i in rng.permutation(n)[:cfg.questions - 1]]


def count_of(shapes: list[Shape], kind: str) -> int:
    return sum(s.kind == kind for s in shapes)


def count_question(shapes: list[Shape], kind: str) -> tuple[str, str]:
    return f"How many {kind}s are there?", str(count_of(shapes, kind))


def describe_question(shapes: list[Shape]) -> tuple[str, str]:
    """The count of every kind, in KINDS order: ``circles 1, squares 0, triangles 2, diamonds 0``."""
    return "How many of each shape are there?", ", ".join(f"{k}s {count_of(shapes, k)}" for k in KINDS)


def locate_question(shapes: list[Shape], cfg: ShapesConfig) -> tuple[str, str]:
    """Every shape as a Molmo point named by its colour and kind, left to right."""
    points = [point_answer([s], cfg.size, cfg.size, f"{s.colour} {s.kind}") for s in sorted(shapes, key=lambda s: s.x)]
    return "Point to every shape.", " ".join(points)


def captions(shapes: list[Shape], cfg: ShapesConfig) -> list[tuple[str, str]]:
    """The caption questions a canvas ends with: counts of every kind (`describe`), every shape's point (`locate`)."""
    return [describe_question(shapes)] * cfg.describe + [locate_question(shapes, cfg)] * cfg.locate


def point_question(shapes: list[Shape], colour: str, kind: str, cfg: ShapesConfig) -> tuple[str, str, list[Shape]]:
    targets = [s for s in shapes if s.kind == kind and s.colour == colour]
    alt = f"{colour} {plural(kind, len(targets))}"
    return f"Point to the {alt}.", point_answer(targets, cfg.size, cfg.size, alt), targets


def examples(n: int, seed: int, cfg: ShapesConfig):
    for i in range(n):
        yield make_example(i, seed, cfg)
