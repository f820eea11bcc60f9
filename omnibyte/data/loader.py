"""Shards on disk -> packed, resumable, rank-sharded batches.

A prepared dataset is a folder: ``meta.json`` plus, per split, uint16 shard files whose
concatenation is the split's *stream* of ids (documents ``BOS ... EOS`` back to back). Models
see fixed windows of that stream; documents are packed, never padded, because BOS/EOS already
tell a model where one ends (as in nanoGPT's packed training).

Batches are pure functions of (seed, step, rank, world_size): a run resumes at any step and
every rank draws a disjoint slice of one global batch without talking to the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from omnibyte.errors import OmnibyteError
from omnibyte.files import write_atomic, write_json_atomic
from omnibyte.format import BOS, EOS, PAD, VOCAB_SIZE

FORMAT_NAME = "omnibyte-shards"
FORMAT_VERSION = 1
ID_DTYPE = np.uint16
AUX_DTYPE = np.float16
META_FILE = "meta.json"
_AUX_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


# ----------------------------------------------------------------------------- meta.json


def read_meta(path: str | Path) -> dict:
    """meta.json of the dataset at `path`; a one-line OmnibyteError when it is not a dataset."""
    path = Path(path)
    file = path / META_FILE
    if not file.is_file():
        raise OmnibyteError(f"{path} is not an omnibyte dataset (no {META_FILE}); run `omnibyte prepare`")
    try:
        meta = json.loads(file.read_text())
    except (ValueError, OSError) as e:
        raise OmnibyteError(f"{file} is corrupt: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise OmnibyteError(f"{path} is not an omnibyte dataset ({META_FILE} has no format {FORMAT_NAME!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise OmnibyteError(f"{path}: dataset version {meta.get('version')} is not supported "
                            f"(this omnibyte reads version {FORMAT_VERSION}); prepare it again")
    return meta


def is_dataset(path: str | Path) -> bool:
    try:
        read_meta(path)
    except OmnibyteError:
        return False
    return True


# ----------------------------------------------------------------------------- dataset


class ConcatArray:
    """Read-only 1-D view over several arrays (one per shard) that slices like one array."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise IndexError("ConcatArray supports contiguous slices only")
            pieces = []
            for part, lo in zip(self.parts, self.starts[:-1]):
                a, b = max(start - lo, 0), min(stop - lo, len(part))
                if a < b:
                    pieces.append(part[a:b])
            return np.concatenate(pieces) if pieces else np.zeros(0, self.dtype)
        i = int(idx) + (len(self) if idx < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(idx)
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - self.starts[k]]

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate(self.parts)
        return out if dtype is None else out.astype(dtype)


def _memmap(file: Path, dtype, n: int) -> np.ndarray:
    """Memory-map `file` as n items of dtype; a one-line error when its size disagrees."""
    if not file.is_file():
        raise OmnibyteError(f"{file} is missing; prepare the dataset again")
    size = file.stat().st_size
    if size != n * np.dtype(dtype).itemsize:
        raise OmnibyteError(f"{file} is truncated or corrupt: {size} bytes, meta.json says {n} items")
    if n == 0:
        return np.zeros(0, dtype)  # numpy cannot map an empty file
    return np.memmap(file, dtype=dtype, mode="r", shape=(n,))


class ShardDataset:
    """A prepared dataset folder: memory-mapped id streams per split plus aligned aux arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        self._streams: dict[str, np.ndarray | ConcatArray] = {}

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def _split(self, split: str) -> dict:
        if split not in self.meta["splits"]:
            hint = ""
            if split == "test" and "val" in self.meta["splits"] and "test_fraction" not in self.meta:
                hint = ("; it was prepared before omnibyte wrote test splits: prepare it again "
                        "(`omnibyte prepare ... --out DIR`) for a test split")
            raise OmnibyteError(f"dataset {self.path} has no split {split!r} (has: {', '.join(self.splits)}){hint}")
        return self.meta["splits"][split]

    def n_ids(self, split: str) -> int:
        return int(self._split(split)["n_ids"])

    @property
    def vocab_needed(self) -> int:
        """Ids a model needs for this dataset: its vocabulary, or for byte data without images or
        audio in any split, the text ids only (bytes, PAD, BOS, EOS): what a model with the released
        BLTs' 260 ids can read."""
        vocab = int(self.meta.get("vocab_size", VOCAB_SIZE))
        if self.meta.get("tokenizer") or vocab != VOCAB_SIZE:
            return vocab
        media = [info.get("bytes", {}).get(kind) for info in self.meta["splits"].values()
                 for kind in ("image", "audio")]
        return EOS + 1 if media and all(n == 0 for n in media) else vocab

    def stream(self, split: str) -> np.ndarray | ConcatArray:
        """All ids of `split` in order, as one 1-D uint16 array-like (mapped, not loaded)."""
        if split not in self._streams:
            info = self._split(split)
            parts = [_memmap(self.path / s["file"], ID_DTYPE, s["n_ids"]) for s in info["shards"]]
            if sum(len(p) for p in parts) != info["n_ids"]:
                raise OmnibyteError(f"{self.path / META_FILE} is corrupt: shard sizes do not add up "
                                    f"to the {info['n_ids']} ids of split {split!r}")
            if not parts:
                stream = np.zeros(0, ID_DTYPE)
            elif len(parts) == 1:
                stream = parts[0]
            else:
                stream = ConcatArray(parts)
            self._streams[split] = stream
        return self._streams[split]

    # Aux arrays: one value per id of a split (e.g. BLT's precomputed next-byte entropies), so
    # the loader can cut them into the very same windows as the ids.

    def has_aux(self, split: str, name: str) -> bool:
        return name in self.meta.get("aux", {}).get(split, {})

    def aux(self, split: str, name: str) -> np.ndarray:
        if not self.has_aux(split, name):
            raise OmnibyteError(f"dataset {self.path} has no aux array {name!r} for split {split!r}")
        return _memmap(self.path / self.meta["aux"][split][name]["file"], AUX_DTYPE, self.n_ids(split))

    def write_aux(self, split: str, name: str, array: np.ndarray) -> None:
        """Store `array` (one value per id of `split`) as float16 in ``{split}.{name}.bin``.

        The file is written then renamed and meta.json updated after it, so readers never see a
        partial array. Call it from one process only (rank 0).
        """
        if not _AUX_NAME.match(name):
            raise OmnibyteError(f"aux name {name!r} must be letters, digits, '_' or '-'")
        array = np.asarray(array)
        if array.shape != (self.n_ids(split),):
            raise OmnibyteError(f"aux {name!r} has shape {array.shape}, split {split!r} "
                                f"needs ({self.n_ids(split)},)")
        file = self.path / f"{split}.{name}.bin"
        write_atomic(file, array.astype(AUX_DTYPE).tofile)
        meta = read_meta(self.path)  # re-read: another aux may have been added since we opened it
        meta.setdefault("aux", {}).setdefault(split, {})[name] = {"file": file.name, "dtype": "float16"}
        write_json_atomic(self.path / META_FILE, meta)
        self.meta = meta


# ----------------------------------------------------------------------------- batches


def _as_dataset(dataset: ShardDataset | str | Path) -> ShardDataset:
    return dataset if isinstance(dataset, ShardDataset) else ShardDataset(dataset)


def _aux_arrays(dataset: ShardDataset, split: str, aux: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: dataset.aux(split, name) for name in aux}


def _nonempty_stream(dataset: ShardDataset, split: str):
    stream = dataset.stream(split)
    if len(stream) == 0:
        raise OmnibyteError(f"split {split!r} of {dataset.path} is empty; prepare more data "
                            f"(or a larger --val-fraction)")
    return stream


Window = list[tuple[int, int]]  # (start, length) pieces of a stream, laid side by side in one row


def _windows(arr, windows: Sequence[Window], length: int, fill, dtype) -> np.ndarray:
    """One row per window: its pieces of `arr` side by side, padded with `fill` up to `length`."""
    out = np.full((len(windows), length), fill, dtype)
    for row, pieces in enumerate(windows):
        at = 0
        for s, n in pieces:
            chunk = arr[s : s + n]
            out[row, at : at + len(chunk)] = chunk
            at += len(chunk)
    return out


def _batch(stream, aux: dict, windows: Sequence[Window], seq_len: int) -> dict[str, torch.Tensor]:
    """The batch dict every consumer sees: ids (B, T+1) int64 plus aux (B, T+1) float32."""
    batch = {"ids": torch.from_numpy(_windows(stream, windows, seq_len + 1, PAD, np.int64))}
    for name, arr in aux.items():
        batch[name] = torch.from_numpy(_windows(arr, windows, seq_len + 1, 0.0, np.float32))
    return batch


def _stream_window(start: int, seq_len: int) -> Window:
    return [(start, seq_len + 1)]


OPEN_WINDOWS = 32  # windows being filled at once by `document_windows`


def document_windows(stream, seq_len: int) -> list[Window]:
    """Windows of at most seq_len + 1 ids that hold whole documents (the rest of a window is PAD).
    Documents are packed first-fit, in stream order, into the first of up to `OPEN_WINDOWS` windows
    being filled that has room (when one more is needed, the fullest is closed), so about 96% of a
    window holds ids where packing consecutive documents left a quarter of a task mix's windows
    empty. A document longer than a window is cut into windows of its own that overlap by one id,
    as stream windows do, so every id after a window's first is still a target once per epoch."""
    ids = np.asarray(stream)
    bounds = np.flatnonzero(ids == BOS)
    if not len(bounds) or bounds[0] != 0:
        bounds = np.concatenate([[0], bounds])  # ids before the first BOS count as a document
    ends = np.append(bounds[1:], len(ids))
    width = seq_len + 1
    done: list[Window] = []
    filling: list[tuple[list[int], Window]] = []  # ([room left], pieces) of the windows being filled
    for a, b in zip(bounds.tolist(), ends.tolist()):
        n = b - a
        if n > width:  # a long document: windows of its own
            done += [[(c, min(width, b - c))] for c in range(a, b - 1, seq_len)]
            continue
        for room, pieces in filling:
            if room[0] >= n:
                room[0] -= n
                pieces.append((a, n))
                break
        else:
            filling.append(([width - n], [(a, n)]))
            if len(filling) > OPEN_WINDOWS:
                fullest = min(range(len(filling)), key=lambda i: filling[i][0][0])
                done.append(filling.pop(fullest)[1])
    return done + [pieces for _, pieces in filling]


class BatchLoader:
    """Random training windows of ``seq_len + 1`` ids, deterministic in (seed, step, rank).

    Window k is ``stream[k*seq_len : k*seq_len + seq_len + 1]``: consecutive windows share one
    id, so each id is a target exactly once per epoch (the tail shorter than a window is left
    out; a split shorter than one window gives one window padded with PAD). Sample position
    ``p = step * world_size * batch_size + i`` takes window ``perm(seed, p // n)[p % n]``, so
    epochs follow each other seamlessly, rank r takes the r-th contiguous slice of each global
    batch, and the union over ranks is the 1-process batch of size world_size * batch_size.

    With ``align_docs`` the windows are `document_windows` instead: each holds whole documents
    (PAD after them), so a task example's question and answer, or an image and its caption, are
    never cut apart; the same shuffling applies.
    """

    def __init__(self, dataset: ShardDataset | str | Path, split: str = "train", batch_size: int = 8,
                 seq_len: int = 1024, seed: int = 0, rank: int = 0, world_size: int = 1,
                 aux: Sequence[str] = (), align_docs: bool = False):
        if batch_size < 1 or seq_len < 1:
            raise OmnibyteError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        if not 0 <= rank < world_size:
            raise OmnibyteError(f"rank {rank} is outside 0..{world_size - 1}")
        self.dataset = _as_dataset(dataset)
        self.split, self.batch_size, self.seq_len = split, batch_size, seq_len
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.stream = _nonempty_stream(self.dataset, split)
        self.aux = _aux_arrays(self.dataset, split, aux)
        self.windows = document_windows(self.stream, seq_len) if align_docs else None
        self.n_windows = len(self.windows) if align_docs else max(1, (len(self.stream) - 1) // seq_len)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a batch spans at most a few epochs; keep memory flat
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return self._perms[epoch]

    def epoch(self, step: int) -> float:
        """Passes over the split completed before `step` (fractional), for logging."""
        return step * self.world_size * self.batch_size / self.n_windows

    def get_batch(self, step: int) -> dict[str, torch.Tensor]:
        first = (step * self.world_size + self.rank) * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        picks = [int(self._perm(int(p // self.n_windows))[p % self.n_windows]) for p in positions]
        if self.windows is not None:
            return _batch(self.stream, self.aux, [self.windows[w] for w in picks], self.seq_len)
        return _batch(self.stream, self.aux, [_stream_window(w * self.seq_len, self.seq_len) for w in picks],
                      self.seq_len)

    def iter_from(self, step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches for step, step+1, ... forever: resuming a run is `iter_from(saved_step)`."""
        while True:
            yield self.get_batch(step)
            step += 1

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_from(0)


def eval_batches(dataset: ShardDataset | str | Path, split: str = "val", batch_size: int = 8,
                 seq_len: int = 1024, max_batches: int | None = None,
                 aux: Sequence[str] = ()) -> Iterator[dict[str, torch.Tensor]]:
    """The split in order as windows whose targets cover every id after the first exactly once.

    Same window layout as training, but all of it: the last window is padded with PAD (which
    the loss ignores) and the last batch may have fewer rows, so bits per byte over these
    batches is exact. `max_batches` stops early for a quick estimate.
    """
    if batch_size < 1 or seq_len < 1:
        raise OmnibyteError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
    dataset = _as_dataset(dataset)
    stream = _nonempty_stream(dataset, split)
    aux_arrays = _aux_arrays(dataset, split, aux)
    n_windows = -(-(len(stream) - 1) // seq_len)
    for b, first in enumerate(range(0, n_windows, batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        windows = [_stream_window(k * seq_len, seq_len) for k in range(first, min(first + batch_size, n_windows))]
        yield _batch(stream, aux_arrays, windows, seq_len)
