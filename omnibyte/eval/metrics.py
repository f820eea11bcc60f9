"""Task metrics: parse what a model wrote and score it against the reference.

Every scorer takes references and predictions (model text) as parallel lists and returns a
dict of floats in [0, 1] (WER may exceed 1) plus ``n``. Parsers never raise: an answer that
cannot be read counts as wrong, and the share of readable answers is reported as ``parsed``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from omnibyte.data.tasks.shapes import Shape

MINUTES_PER_DIAL = 12 * 60

# ----------------------------------------------------------------------------- text answers


def normalize(text: str) -> str:
    """Lower case, punctuation dropped (inner hyphens and apostrophes kept), spaces collapsed."""
    text = text.lower().strip()
    text = "".join(" " if c in string.punctuation and c not in "-'" else c for c in text)
    return " ".join(w.strip("-'") for w in text.split() if w.strip("-'"))


def accuracy(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """Share of predictions equal to the reference after `normalize` (classification, exact answers)."""
    _check(references, predictions)
    hits = [normalize(r) == normalize(p) for r, p in zip(references, predictions)]
    return {"accuracy": _mean(hits), "n": len(hits)}


def majority_answer(references: Sequence[str]) -> str:
    """The most common reference (ties: the first seen): the constant-guess baseline's answer."""
    return Counter(normalize(r) for r in references).most_common(1)[0][0] if references else ""


# ----------------------------------------------------------------------------- clocks

_TIME = re.compile(r"(\d{1,2})\s*:\s*(\d{2})")


def parse_time(text: str) -> int | None:
    """'03:25' or '3:25' → minutes past 12:00 on a 12-hour dial (0..719); None when unreadable.
    Hours 0/12 and 13..23 are read on the dial (13:25 is 1:25)."""
    m = _TIME.search(text)
    if m is None:
        return None
    h, mi = int(m[1]), int(m[2])
    if h > 23 or mi > 59:
        return None
    return (h % 12) * 60 + mi


def clock_distance(a: int, b: int) -> int:
    """Minutes between two dial readings the short way round (11:59 and 12:01 are 2 apart)."""
    d = abs(a - b) % MINUTES_PER_DIAL
    return min(d, MINUTES_PER_DIAL - d)


def clock_scores(references: Sequence[str], predictions: Sequence[str], tolerance: int = 3) -> dict:
    """exact (same minute), within (±tolerance minutes, wrapping round 12), hour (the hour hand
    read right: same hour on the 12-hour dial, whatever the minutes), parsed; plus the chance of
    a uniform guess for each."""
    _check(references, predictions)
    exact, within, hour, parsed = [], [], [], []
    for r, p in zip(references, predictions):
        ref, pred = parse_time(r), parse_time(p)
        if ref is None:
            raise ValueError(f"reference {r!r} is not a time")
        parsed.append(pred is not None)
        d = clock_distance(ref, pred) if pred is not None else MINUTES_PER_DIAL
        exact.append(d == 0)
        within.append(d <= tolerance)
        hour.append(pred is not None and pred // 60 == ref // 60)
    return {"exact": _mean(exact), "within": _mean(within), "hour": _mean(hour), "parsed": _mean(parsed),
            "tolerance": tolerance, "chance_exact": 1 / MINUTES_PER_DIAL,
            "chance_within": (2 * tolerance + 1) / MINUTES_PER_DIAL, "chance_hour": 1 / 12, "n": len(exact)}


# ----------------------------------------------------------------------------- counting

NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_COUNT = re.compile(r"\d+|[a-z]+")


def parse_count(text: str) -> int | None:
    """The first number in `text`, in digits ('3') or words ('three'); None when there is none."""
    for tok in _COUNT.findall(text.lower()):
        if tok.isdigit():
            return int(tok)
        if tok in NUMBER_WORDS:
            return NUMBER_WORDS[tok]
    return None


def count_scores(references: Sequence[int], predictions: Sequence[str]) -> dict:
    """accuracy of the parsed count, mean absolute error of readable counts, parsed, and the
    accuracy of always answering the most common count."""
    _check(references, predictions)
    parsed = [parse_count(p) for p in predictions]
    hits = [p == int(r) for r, p in zip(references, parsed)]
    errors = [abs(p - int(r)) for r, p in zip(references, parsed) if p is not None]
    mode = Counter(int(r) for r in references).most_common(1)[0][0] if references else 0
    return {"accuracy": _mean(hits), "mae": float(np.mean(errors)) if errors else float("nan"),
            "parsed": _mean([p is not None for p in parsed]),
            "chance": _mean([int(r) == mode for r in references]), "n": len(hits)}


# ----------------------------------------------------------------------------- pointing

_TAG = re.compile(r"<points?\b([^>]*)>", re.IGNORECASE)
_ATTR = re.compile(r'([A-Za-z_]\w*)\s*=\s*"([^"]*)"')
_XY = re.compile(r"^([xy])(\d*)$", re.IGNORECASE)


def parse_points(text: str) -> list[tuple[float, float]]:
    """Points (x, y) in percent from Molmo-style tags, in order of appearance.

    Reads ``<point x=".." y="..">`` and ``<points x1=".." y1=".." x2=.. y2=..>`` (attributes in
    any order), any number of tags. A coordinate that is not a number or lacks its partner is
    skipped.
    """
    points = []
    for tag in _TAG.finditer(text):
        xs: dict[str, float] = {}
        ys: dict[str, float] = {}
        for name, value in _ATTR.findall(tag[1]):
            m = _XY.match(name)
            if m is None:
                continue
            try:
                v = float(value)
            except ValueError:
                continue
            if np.isfinite(v):
                (xs if m[1].lower() == "x" else ys)[m[2]] = v
        for key in sorted(set(xs) & set(ys), key=lambda k: int(k) if k else 0):
            points.append((xs[key], ys[key]))
    return points


def match_points(points: Sequence[tuple[float, float]], targets: Sequence[Shape]) -> int:
    """Largest number of (point, target) pairs with the point inside the target, each point and
    each target used once (bipartite matching by augmenting paths; points are in pixels)."""
    inside = [[j for j, t in enumerate(targets) if t.contains(x, y)] for x, y in points]
    owner: dict[int, int] = {}  # target → point

    def augment(i: int, seen: set[int]) -> bool:
        for j in inside[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(len(points)))


def point_scores(targets: Sequence[Sequence[Shape]], predictions: Sequence[str],
                 sizes: Sequence[tuple[int, int]]) -> dict:
    """Precision (predicted points inside a distinct target) and recall (targets hit), summed
    over all examples; F1; parsed (answers with at least one point); and the precision of one
    uniformly random point (the share of the image the targets cover)."""
    _check(targets, predictions)
    matched = n_pred = n_target = 0
    parsed, chance = [], []
    for tgt, pred, (w, h) in zip(targets, predictions, sizes):
        pts = [(x * w / 100, y * h / 100) for x, y in parse_points(pred)]
        matched += match_points(pts, tgt)
        n_pred += len(pts)
        n_target += len(tgt)
        parsed.append(bool(pts))
        chance.append(sum(s.area() for s in tgt) / (w * h))
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_target if n_target else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "parsed": _mean(parsed),
            "chance_precision": _mean(chance), "n": len(parsed)}


# ----------------------------------------------------------------------------- speech


def wer_cer(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """Corpus word and character error rates (jiwer) after `normalize`; an empty prediction is
    all deletions."""
    import jiwer

    _check(references, predictions)
    refs = [normalize(r) for r in references]
    if not refs:
        return {"wer": float("nan"), "cer": float("nan"), "n": 0}
    if any(not r for r in refs):
        raise ValueError("a reference transcript is empty after normalising")
    hyps = [normalize(p) for p in predictions]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps)), "n": len(refs)}


# ----------------------------------------------------------------------------- images


def pixel_mae(a: np.ndarray | bytes, b: np.ndarray | bytes) -> float:
    """Mean absolute difference of two equally long pixel buffers, in 0..255 levels."""
    x = np.frombuffer(a, np.uint8) if isinstance(a, bytes | bytearray) else np.asarray(a, np.uint8).ravel()
    y = np.frombuffer(b, np.uint8) if isinstance(b, bytes | bytearray) else np.asarray(b, np.uint8).ravel()
    if x.shape != y.shape:
        raise ValueError(f"pixel buffers differ in size: {x.size} vs {y.size}")
    return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean()) if x.size else 0.0


def _mean(flags) -> float:
    flags = list(flags)
    return float(np.mean(flags)) if flags else float("nan")


def _check(references, predictions) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")


__all__ = ["accuracy", "clock_distance", "clock_scores", "count_scores", "majority_answer", "match_points",
           "normalize", "parse_count", "parse_points", "parse_time", "pixel_mae", "point_scores", "wer_cer"]
