"""What every benchmark script shares: the machine line, the exact command, timing helpers, and
writing one section of a results file (replacing an older copy of that section)."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".venv-peers" / "bin" / "python"  # the peer implementations' own environment


def require_peer_env(packages: str) -> Path:
    """The peer environment's python, or exit naming the commands that create it (torch pinned
    in the same pip command as the peer `packages`)."""
    if not PEER_PYTHON.exists():
        sys.exit("error: no peer environment; create it with\n  python3 -m venv benchmarks/.venv-peers\n"
                 f"  benchmarks/.venv-peers/bin/pip install torch==2.13.0 {packages}")
    return PEER_PYTHON


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import torch

    return (f"{platform.platform()}; {cpu_name()}; {os.cpu_count()} cores; {torch.get_num_threads()} torch threads; "
            f"Python {platform.python_version()}; torch {torch.__version__}")


def command_line() -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def header(title: str) -> list[str]:
    return [f"## {title}", "", f"- command: `{command_line()}`",
            f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- machine: {machine()}", ""]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of fn()."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_section(results: Path, key: str, lines: list[str], title: str) -> None:
    """Put `lines` into `results` between markers for `key`, replacing an older copy; a new file
    starts with `# title`. Written atomically."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = "\n".join([start, *lines, end])
    text = results.read_text() if results.exists() else f"# {title}\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    tmp = results.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip("\n") + "\n")
    os.replace(tmp, results)
    print(f"wrote the '{key}' section of {results}")
