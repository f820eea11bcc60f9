"""What lies on disk, below every layer that writes it: atomic writes, and the layout of a model
folder (a run folder holds one in `checkpoint/`).

A crash never leaves half a file or half a folder: files are written to a hidden sibling and
renamed onto their name; a model folder is written whole into `NAME.tmp`, then swapped in.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from omnibyte.errors import OmnibyteError

WEIGHTS, CONFIG = "model.safetensors", "config.json"  # a model folder: weights + {"arch", "model"}
CHECKPOINT = "checkpoint"  # the model folder inside a run folder


def tmp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden, unique name next to `path` to write into before renaming onto `path`."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def write_atomic(file: Path, write) -> None:
    """Call `write(f)` on a temporary file, then rename it onto `file`: a crash leaves the old
    file or the new one, never half of one."""
    tmp = tmp_sibling(file)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(file: Path, obj: dict) -> None:
    write_atomic(file, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written `tmp` into place; the old `final` is removed only after."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder at `path`: the folder itself, or a run folder's checkpoint/."""
    path = Path(path)
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    if (path / CHECKPOINT / CONFIG).is_file():
        return path / CHECKPOINT
    if not path.exists():
        raise OmnibyteError(f"no such model or run directory: {path}")
    raise OmnibyteError(f"{path} holds no model (expected {CONFIG} + {WEIGHTS}, or {CHECKPOINT}/)")
