"""Pictures of patches: coloured patches in the terminal and in HTML (hover shows each byte's
entropy), and a plot of entropy per byte with the threshold and the patch boundaries."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omnibyte.format import N_BYTES, SPECIAL_NAMES

# two background colours that alternate from patch to patch
_ANSI = ("\x1b[30;48;5;153m", "\x1b[30;48;5;223m")
_RESET = "\x1b[0m"
_HTML_COLORS = ("#bcdcff", "#ffe0b5")


@dataclass
class Unit:
    """One displayed piece: a whole UTF-8 character, a lone byte or a special id."""

    text: str
    positions: list[int]
    patch: int


def _char_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead < 0xE0:
        return 2
    if 0xE0 <= lead < 0xF0:
        return 3
    if 0xF0 <= lead < 0xF5:
        return 4
    return 0  # a continuation or invalid byte cannot start a character


def units(ids: Sequence[int], starts: Sequence[bool]) -> list[Unit]:
    """Split a row into display units, never across a patch boundary: a character cut by a
    boundary (static patching does that) shows as its bytes, escaped."""
    ids, starts = [int(i) for i in ids], [bool(s) for s in starts]
    patch_of, p = [], -1
    for i, s in enumerate(starts):
        p += bool(s or i == 0)
        patch_of.append(p)
    out, i = [], 0
    while i < len(ids):
        t = ids[i]
        if t >= N_BYTES:
            out.append(Unit(f"<{SPECIAL_NAMES.get(t, t)}>", [i], patch_of[i]))
            i += 1
            continue
        n = _char_len(t)
        span = list(range(i, i + n)) if n else []
        whole = (n and i + n <= len(ids) and all(ids[j] < N_BYTES for j in span)
                 and all(patch_of[j] == patch_of[i] for j in span))
        if whole:
            try:
                out.append(Unit(bytes(ids[j] for j in span).decode("utf-8"), span, patch_of[i]))
                i += n
                continue
            except UnicodeDecodeError:
                pass
        out.append(Unit(f"\\x{t:02x}", [i], patch_of[i]))
        i += 1
    return out


def _visible(text: str) -> str:
    """Control characters made visible; a newline stays a line break."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("↵\n")
        elif ch == "\t":
            out.append("→")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def render_terminal(ids: Sequence[int], starts: Sequence[bool], color: bool = True) -> str:
    """Patches over the text: alternating background colours, or `|` between patches."""
    pieces: dict[int, list[str]] = {}
    for u in units(ids, starts):
        pieces.setdefault(u.patch, []).append(_visible(u.text))
    if not color:
        return "|".join("".join(p) for p in pieces.values())
    out = []
    for k, p in pieces.items():
        style = _ANSI[k % 2]
        # re-open the colour after each line break so the background never bleeds across lines
        out.append(style + "".join(p).replace("\n", _RESET + "\n" + style) + _RESET)
    return "".join(out)


def byte_label(t: int) -> str:
    """Short label of one id for plot ticks."""
    t = int(t)
    if t >= N_BYTES:
        return SPECIAL_NAMES.get(t, str(t))
    if t == 32:
        return "␣"
    if t == 10:
        return "↵"
    if 32 < t < 127:
        return chr(t)
    return f"{t:02x}"


def render_html(ids: Sequence[int], starts: Sequence[bool], entropies: Sequence[float] | None = None,
                threshold: float | None = None, title: str = "patches") -> str:
    """A self-contained page: patches in alternating colours; hovering a character shows its
    bytes, their entropy and the patch it belongs to."""
    us = units(ids, starts)
    n_patches = max((u.patch for u in us), default=-1) + 1
    body, cur = [], None
    for u in us:
        if u.patch != cur:
            if cur is not None:
                body.append("</span>")
            body.append(f'<span class="p" style="background:{_HTML_COLORS[u.patch % 2]}">')
            cur = u.patch
        tips = []
        for j in u.positions:
            tip = f"#{j} {byte_label(ids[j])}"
            if entropies is not None:
                tip += f"  H={float(entropies[j]):.3f} nats"
            tips.append(tip)
        tips.append(f"patch {u.patch}")
        body.append(f'<span title="{html.escape(chr(10).join(tips))}">{html.escape(_visible(u.text))}</span>')
    if cur is not None:
        body.append("</span>")
    stats = f"{len(ids)} bytes, {n_patches} patches, {len(ids) / max(n_patches, 1):.2f} bytes/patch"
    if threshold is not None:
        stats += f", threshold {threshold:.4f}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.text {{ font-family: monospace; font-size: 15px; line-height: 1.9; white-space: pre-wrap; }}
.p {{ border-radius: 3px; padding: 2px 0; margin-right: 1px; }}
.p span:hover {{ outline: 1px solid #333; }}
</style></head>
<body><h3>{html.escape(title)}</h3><p>{html.escape(stats)}</p>
<div class="text">{"".join(body)}</div></body></html>
"""


def plot_entropy(path: str | Path, ids: Sequence[int], starts: Sequence[bool], entropies: Sequence[float],
                 threshold: float | None = None, relative: bool = False, title: str = "") -> Path:
    """Entropy per byte (nats) with the threshold and the patch starts; byte labels on the x axis
    for short texts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    h = np.asarray(entropies, dtype=np.float64).copy()
    h[:1] = np.nan  # position 0 has no prediction (entropies[0] = 0 by convention): leave it out
    s = np.asarray(starts, dtype=bool)
    x = np.arange(len(h))
    short = len(h) <= 120
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.16 * len(h)), 24.0), 3.8))
    ax.plot(x, h, color="#3b6ea8", lw=1.2, marker="o" if short else None, ms=3, label="entropy")
    ax.scatter(x[s], h[s], color="#d1495b", s=18, zorder=3, label="patch start")
    for t in x[s]:
        ax.axvline(t - 0.5, color="#d1495b", lw=0.6, alpha=0.5)
    if threshold is not None:
        if relative:
            prev = np.concatenate([[np.nan], h[:-1]])
            ax.scatter(x, prev + threshold, marker="_", s=80 if short else 10, color="#444", lw=1.2,
                       label=f"bar: previous + {threshold:.3f}")
        else:
            ax.axhline(threshold, color="#444", ls="--", lw=0.9, label=f"threshold {threshold:.3f}")
    if short:
        ax.set_xticks(x)
        ax.set_xticklabels([byte_label(t) for t in ids], fontsize=7, family="monospace")
    ax.set_xlim(-1, len(h))
    ax.set_xlabel("byte")
    ax.set_ylabel("next-byte entropy (nats)")
    n = int(s.sum())
    ax.set_title(title or f"{len(h)} bytes, {n} patches, {len(h) / max(n, 1):.2f} bytes/patch", fontsize=10,
                 loc="right")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
