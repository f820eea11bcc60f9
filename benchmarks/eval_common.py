"""Shared bits of the evaluation benchmarks (eval_bench, eval_cute, eval_noise): small data for
--quick runs, and the sections of benchmarks/results_eval.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, header  # noqa: E402,F401
from common import write_section as _write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results_eval.md"
OUT = Path(__file__).resolve().parent / "out"


def quick_corpus(folder: Path, n_bytes: int = 60_000) -> Path:
    """A small dataset for --quick: the first chapters of the default corpus (KJV), made once."""
    from omnibyte.data import is_dataset, write_dataset
    from omnibyte.data.corpus import KJV_SOURCE, kjv_documents

    out = folder / "kjv-quick"
    if not is_dataset(out):
        docs, total = [], 0
        for doc in kjv_documents():
            docs.append(doc)
            total += len(doc.segments[0].data)
            if total >= n_bytes:
                break
        write_dataset(docs, out, sources=[f"{KJV_SOURCE} (first {total:,} bytes)"], val_fraction=0.1)
    return out


def table_lines(results_md: Path) -> list[str]:
    """The bench's results.md without its title (the section has its own)."""
    lines = results_md.read_text().splitlines()
    return lines[1:] if lines and lines[0].startswith("# ") else lines


def write_section(key: str, lines: list[str]) -> None:
    _write(RESULTS, key, lines, "Evaluation benchmarks")
