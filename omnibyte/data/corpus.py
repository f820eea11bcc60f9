"""The default corpus: the King James Bible from Debian's `bible-kjv-text`, one document per chapter.

About 4.4 MB of public-domain English that every Debian machine can install offline: enough to
train a small byte model on a laptop and see it learn spelling, words and verse structure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from omnibyte.data.prepare import write_dataset
from omnibyte.errors import OmnibyteError
from omnibyte.format import Document, TextSegment

DEFAULT_DATA_DIR = "data/kjv"
KJV_RANGE = "Gen1:1-Rev22:21"
KJV_SOURCE = f"bible-kjv-text:{KJV_RANGE}"
_VERSE = re.compile(r"^(\S*?\d+):\d+ (.*)$")  # "Ge1:1 In the beginning" -> ("Ge1", text)


def kjv_text() -> str:
    """The whole Bible as printed by `bible -f`, one verse a line."""
    exe = shutil.which("bible")
    if exe is None:
        raise OmnibyteError("the default corpus needs the `bible` command: apt-get install bible-kjv-text")
    proc = subprocess.run([exe, "-f", KJV_RANGE], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise OmnibyteError(f"`bible -f {KJV_RANGE}` failed: {detail[0]}")
    return proc.stdout


def chapters(text: str) -> Iterator[str]:
    """Chapters of `bible -f` output, verse references stripped, one verse a line.

    A chapter is a run of verses whose reference shares the book and chapter ("Ge1" in
    "Ge1:1"); a line without a reference continues the verse before it.
    """
    key, verses = None, []
    for line in text.splitlines():
        m = _VERSE.match(line)
        if m is None:
            if line.strip():
                verses.append(line.strip())
            continue
        if m[1] != key and verses:
            yield "\n".join(verses) + "\n"
            verses = []
        key = m[1]
        verses.append(m[2])
    if verses:
        yield "\n".join(verses) + "\n"


def kjv_documents() -> Iterator[Document]:
    for chapter in chapters(kjv_text()):
        yield Document([TextSegment.from_str(chapter)])


def prepare_kjv(out: str | Path = DEFAULT_DATA_DIR, *, val_fraction: float = 0.01, test_fraction: float | None = None,
                seed: int = 0) -> dict:
    """Build the default dataset at `out` (12 chapters each in val and test by default); returns its meta."""
    return write_dataset(kjv_documents(), out, sources=[KJV_SOURCE], seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction)
