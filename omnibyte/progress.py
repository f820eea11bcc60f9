"""Progress bars for long work: tqdm on stderr, redrawn twice a second on a terminal and only every
30 seconds when stderr is a log file (so CI logs and nohup files stay readable)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable=None, **kwargs) -> tqdm:
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5 if kwargs["file"].isatty() else 30.0)
    return tqdm(iterable, **kwargs)
