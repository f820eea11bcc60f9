"""A run folder's housekeeping: the lock a training process holds on it, and putting it back in
order after a crash (checkpoint temporaries, metrics logged after the last checkpoint).

The lock is `RUN/train.lock`, holding the owner's pid, with an exclusive `flock` on it for as
long as the owner trains. The kernel drops a flock when its process dies, however it dies, so a
lock file left by a killed process is stale by construction and the next trainer takes it over;
two processes can never both hold it. Within one process the lock is shared (counted), so a
trainer built while another in the same process holds the folder does not lock itself out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from omnibyte.errors import OmnibyteError
from omnibyte.files import CHECKPOINT, write_atomic

LOCK_FILE = "train.lock"
_held: dict[Path, list] = {}  # lock path → [file descriptor, holders in this process, folders created]


class RunLock:
    """The lock on one run folder; `release()` once per `acquire_run_lock`."""

    def __init__(self, path: Path):
        self.path = path
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        entry = _held.get(self.path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.path]
            self.path.unlink(missing_ok=True)  # unlinked while still locked: no one locks a dying file
            os.close(entry[0])  # closing drops the flock
            for folder in entry[2]:  # a run that failed before writing anything leaves no folder behind
                with contextlib.suppress(OSError):  # not empty: the run wrote something, which stays
                    folder.rmdir()


def _owner(path: Path) -> str:
    try:
        pid = path.read_text().split()[0]
    except (OSError, IndexError):
        return "another process"
    return f"process {pid}"


def acquire_run_lock(run_dir: str | Path) -> RunLock:
    """Lock `run_dir` (created if missing) for training, or a one-line error naming the process
    that trains into it now."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise OmnibyteError(f"{run_dir} is a file, not a run folder")
    created = [p for p in (run_dir.absolute(), *run_dir.absolute().parents) if not p.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    path = (run_dir / LOCK_FILE).resolve()
    if path in _held:
        _held[path][1] += 1
        return RunLock(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OmnibyteError(f"{run_dir} is in use: {_owner(path)} is training into it (lock {path}); "
                                f"wait for it to finish or stop it") from None
        except OSError:
            os.close(fd)
            raise
        # The holder before us may have unlinked the file between our open and our flock: then we
        # locked a file no one else will see. Lock the file that is at the path now instead.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = [fd, 1, created]
    return RunLock(path)


def recover_checkpoint(run_dir: Path) -> None:
    """Finish a checkpoint swap a crash interrupted, and remove checkpoint temporaries.

    A checkpoint is written whole into checkpoint.tmp, then the old one is renamed to
    checkpoint.old and checkpoint.tmp to checkpoint. Killed between those renames, the folder has
    checkpoint.old and a complete checkpoint.tmp but no checkpoint: the new one is put in place."""
    final, tmp, old = (run_dir / f"{CHECKPOINT}{s}" for s in ("", ".tmp", ".old"))
    if not final.exists() and old.is_dir() and tmp.is_dir():
        os.replace(tmp, final)
    for leftover in (tmp, old, run_dir / f"{CHECKPOINT}.tmp.tmp", run_dir / f"{CHECKPOINT}.tmp.old"):
        shutil.rmtree(leftover, ignore_errors=True)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (the checkpoint a run resumes from): the steps after it
    are trained again, and each step is logged once. A line cut short by a crash is dropped."""
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return
    keep = []
    for line in f.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            keep.append(line + b"\n")
    write_atomic(f, lambda out: out.write(b"".join(keep)))


def clear_run_files(run_dir: Path) -> None:
    """Remove what a run started over in this folder would otherwise append to or show: its
    metrics, TensorBoard events and loss plot (a run that never saved a checkpoint is retrained
    from scratch into the same folder)."""
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    (run_dir / "loss.png").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
