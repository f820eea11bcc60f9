"""The BLT benchmarks' results file (everything else comes from common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command_line, header, machine, median, timed  # noqa: E402,F401
from common import write_section as _write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results_blt.md"


def write_section(key: str, lines: list[str], results: Path = RESULTS) -> None:
    _write(results, key, lines, "BLT benchmarks")
