"""What lies on disk, below every layer that writes it: atomic writes, the layout of a model folder
(a run folder holds one in `checkpoint/`), temporary names that record their writer's pid and
their cleanup once that writer is gone, and checks that an output path can be written before any
expensive work starts.

A crash never leaves half a file or half a folder: files are written to a hidden sibling and
renamed onto their name; a model folder is written whole into `NAME.tmp`, then swapped in.

A temporary file or folder is a hidden sibling of its target, `.NAME.TAG-PID-HEX`, renamed onto
the target when complete. A process killed before the rename leaves it behind; the next writer of
the same target removes it once no process with that pid exists (a live pid may be a concurrent
writer, so its temporaries are left alone).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path

from omnibyte.errors import OmnibyteError

WEIGHTS, CONFIG = "model.safetensors", "config.json"  # a model folder: weights + {"arch", "model"}
CHECKPOINT = "checkpoint"  # the model folder inside a run folder

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<tag>[a-z]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    return True


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden, unique name next to `path` to write into before renaming onto `path`."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def stale_temps(path: Path, tag: str = "tmp") -> list[Path]:
    """`temp_sibling(path, tag)` entries left by processes that no longer run, sorted."""
    path = Path(path)
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no folder yet, or not readable: nothing of ours is there
        return []
    stale = []
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m and m["name"] == path.name and m["tag"] == tag and not pid_alive(int(m["pid"])):
            stale.append(entry)
    return sorted(stale)


def remove(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path, tag: str = "tmp") -> list[Path]:
    """Delete what `stale_temps` finds; returns the deleted paths."""
    found = stale_temps(path, tag)
    for p in found:
        remove(p)
    return found


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_folder(folder: Path, target: Path) -> None:
    if not folder.is_dir():
        raise OmnibyteError(f"cannot write {target}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OmnibyteError(f"cannot write {target}: permission denied in {folder}")


def check_output_file(path: str | Path) -> Path:
    """`path` can be written as a file (missing folders above it can be created): a one-line error
    now rather than after the work whose result it is to hold."""
    path = Path(path)
    if path.is_dir():
        raise OmnibyteError(f"{path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OmnibyteError(f"cannot write {path}: permission denied")
    _writable_folder(path.parent if path.parent.exists() else _existing_ancestor(path), path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """`path` is a writable folder or can be created as one."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OmnibyteError(f"{path} is a file, not a folder")
        _writable_folder(path, path)
    else:
        _writable_folder(_existing_ancestor(path), path)
    return path


def write_atomic(file: Path, write) -> None:
    """Call `write(f)` on a temporary file, then rename it onto `file`: a crash leaves the old
    file or the new one, never half of one; what such a crash left of an earlier write goes now."""
    remove_stale_temps(file)
    tmp = temp_sibling(file)
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
