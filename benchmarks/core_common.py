"""The core benchmarks' results file (everything else comes from common.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, command_line, header, machine  # noqa: E402,F401
from common import write_section as _write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results_core.md"


def write_section(key: str, lines: list[str]) -> None:
    _write(RESULTS, key, lines, "Core benchmarks")
