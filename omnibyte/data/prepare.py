"""Files -> documents -> shards on disk.

Sources are files, folders (recursed, sorted, hidden entries skipped), globs and JSONL files.
`documents_from_path` dispatches on the file kind and `document_from_record` reads one JSONL
record; media files and media segments go through hooks in `omnibyte.media`, so adding a
modality touches that package, not this one.

`write_dataset` streams documents into a scratch file first, then splits them into train/val/test
at document level (needs the document count, which a stream only knows at its end) and writes
the shards. `write_splits` takes documents already split (generated task suites draw their
val and test examples from seeds of their own). Everything happens in a hidden temporary folder
renamed into place at the end: an interrupted run never leaves something that looks like a
finished dataset.
"""

from __future__ import annotations

import glob
import json
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from omnibyte import media
from omnibyte.data.loader import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ID_DTYPE,
    META_FILE,
    is_dataset,
)
from omnibyte.errors import OmnibyteError
from omnibyte.files import remove_stale_temps, stale_temps, temp_sibling, write_json_atomic
from omnibyte.format import BOS, EOS, VOCAB_SIZE, AudioSegment, Document, ImageSegment, Segment, TextSegment
from omnibyte.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES
from omnibyte.progress import progress as tqdm

DOC_BYTES = 16384
SHARD_IDS = 64 * 2**20  # 128 MiB shard files
MODALITIES = ("text", "image", "audio")

# ----------------------------------------------------------------------------- sources


def expand_sources(sources: Iterable[str | Path]) -> list[Path]:
    """Files named by `sources` in a deterministic order (folders recursed and sorted)."""
    files: list[Path] = []
    for src in sources:
        path = Path(src)
        if path.exists():
            matches = [path]
        elif any(c in str(src) for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(str(src), recursive=True))]
            if not matches:
                raise OmnibyteError(f"no files match {src}")
        else:
            raise OmnibyteError(f"source not found: {src}")
        for m in matches:
            files.extend(_walk(m) if m.is_dir() else [m])
    seen: set[Path] = set()  # overlapping sources (a folder and a glob inside it) count a file once
    unique = []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


def _walk(folder: Path) -> list[Path]:
    """Files under `folder`, sorted, skipping hidden ones (.git, editor files, our temp dirs)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def media_segment(kind: str, path: str | Path) -> Segment:
    """An image or audio file as a segment (media defaults: small images, 8 kHz mu-law audio)."""
    reader = media.image_segment_from_path if kind == "image" else media.audio_segment_from_path
    return reader(Path(path))


def split_text(lines: Iterable[bytes], doc_bytes: int = DOC_BYTES) -> Iterator[bytes]:
    """Group lines into chunks of at most `doc_bytes`, cutting only at line ends.

    A single line longer than `doc_bytes` is cut at a UTF-8 character boundary (or anywhere
    when it is not UTF-8). Concatenating the chunks gives the input back.
    """
    buf = bytearray()
    for line in lines:
        while len(line) > doc_bytes:
            if buf:
                yield bytes(buf)
                buf.clear()
            cut = _utf8_cut(line, doc_bytes)
            yield line[:cut]
            line = line[cut:]
        if len(buf) + len(line) > doc_bytes:
            yield bytes(buf)
            buf.clear()
        buf += line
    if buf:
        yield bytes(buf)


def _utf8_cut(data: bytes, n: int) -> int:
    """The largest cut <= n that does not split a UTF-8 character (n if none is near)."""
    for cut in range(n, max(n - 4, 0), -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return cut
    return n


def document_from_record(record: dict, base_dir: str | Path) -> Document:
    """One JSONL record -> Document.

    ``{"text": str}`` is a text document; ``{"segments": [{"text": str} | {"image": path} |
    {"audio": path}, ...]}`` an interleaved one, paths relative to `base_dir` (the JSONL's folder).
    """
    if not isinstance(record, dict):
        raise OmnibyteError(f"a record must be a JSON object, got {type(record).__name__}")
    if "segments" in record:
        entries = record["segments"]
        if not isinstance(entries, list):
            raise OmnibyteError("'segments' must be a list")
        return Document([_segment_from_entry(e, Path(base_dir)) for e in entries])
    if "text" in record:
        return Document([_text_segment(record["text"])])
    raise OmnibyteError("record has neither 'text' nor 'segments'")


def _text_segment(text) -> TextSegment:
    if not isinstance(text, str):
        raise OmnibyteError(f"'text' must be a string, got {type(text).__name__}")
    try:
        return TextSegment.from_str(text)
    except UnicodeEncodeError as e:  # JSON may spell a lone surrogate ("\ud800"): no UTF-8 text has one
        raise OmnibyteError(f"'text' holds {text[e.start:e.end]!r}, a lone surrogate, which is not text") from None


def _segment_from_entry(entry, base_dir: Path) -> Segment:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise OmnibyteError(f"a segment must be one of {{\"text\": ...}}, {{\"image\": path}}, "
                            f"{{\"audio\": path}}; got {json.dumps(entry)[:80]}")
    (kind, value), = entry.items()
    if kind == "text":
        return _text_segment(value)
    if kind in ("image", "audio"):
        if not isinstance(value, str) or not value:
            raise OmnibyteError(f"{kind!r} must be a file path (a non-empty string), got {json.dumps(value)[:80]}")
        return media_segment(kind, base_dir / value)
    raise OmnibyteError(f"unknown segment kind {kind!r} (known: text, image, audio)")


def documents_from_jsonl(path: Path) -> Iterator[Document]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield document_from_record(json.loads(line), path.parent)
            except ValueError as e:  # bad JSON or bad UTF-8
                raise OmnibyteError(f"{path}:{lineno}: not valid JSON: {e}") from None
            except OmnibyteError as e:
                raise OmnibyteError(f"{path}:{lineno}: {e}") from None


def documents_from_path(path: str | Path, doc_bytes: int = DOC_BYTES) -> Iterator[Document]:
    """Documents in one file, by kind: JSONL records, one image, one audio clip, or text.

    Text is kept as raw bytes (a byte model needs no decoding, so non-UTF-8 files are fine)
    and cut into documents of at most `doc_bytes` at line ends.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from documents_from_jsonl(path)
    elif suffix in IMAGE_SUFFIXES:
        yield Document([media_segment("image", path)])
    elif suffix in AUDIO_SUFFIXES:
        yield Document([media_segment("audio", path)])
    else:
        with open(path, "rb") as f:
            for chunk in split_text(f, doc_bytes):
                yield Document([TextSegment(chunk)])


# ----------------------------------------------------------------------------- writing


def modality_bytes(seg: Segment) -> tuple[str, int]:
    """(modality, header + payload bytes) of a segment; markers are not counted."""
    if isinstance(seg, ImageSegment):
        return "image", len(seg.header()) + seg.payload_len
    if isinstance(seg, AudioSegment):
        return "audio", len(seg.header()) + seg.payload_len
    return "text", len(seg.data)


def document_array(doc: Document) -> np.ndarray:
    """``BOS ... EOS`` ids as uint16, without a Python int per byte for text."""
    parts = [np.array([BOS], ID_DTYPE)]
    for seg in doc.segments:
        if isinstance(seg, TextSegment):
            parts.append(np.frombuffer(seg.data, np.uint8).astype(ID_DTYPE))
        else:
            parts.append(np.asarray(seg.ids(), ID_DTYPE))
    parts.append(np.array([EOS], ID_DTYPE))
    return np.concatenate(parts)


class ShardWriter:
    """Appends ids to ``{split}-00000.bin``, ``{split}-00001.bin``, ... of at most `shard_ids` ids."""

    def __init__(self, folder: Path, split: str, shard_ids: int):
        self.folder, self.split, self.shard_ids = folder, split, shard_ids
        self.shards: list[dict] = []
        self._file = None
        self.n_ids = 0
        self.n_docs = 0
        self.bytes = dict.fromkeys(MODALITIES, 0)

    def write(self, ids: np.ndarray) -> None:
        while len(ids):
            if self._file is None or self.shards[-1]["n_ids"] == self.shard_ids:
                self._open_next()
            take = min(len(ids), self.shard_ids - self.shards[-1]["n_ids"])
            ids[:take].tofile(self._file)
            self.shards[-1]["n_ids"] += take
            self.n_ids += take
            ids = ids[take:]

    def _open_next(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._file = open(self.folder / name, "wb")
        self.shards.append({"file": name, "n_ids": 0})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def info(self) -> dict:
        return {"shards": self.shards, "n_ids": self.n_ids, "n_docs": self.n_docs, "bytes": self.bytes}


def n_val_docs(n_docs: int, val_fraction: float) -> int:
    """Documents held out: round(n * fraction), but at least 1 and at most n - 1 when n >= 2."""
    if n_docs < 2 or val_fraction <= 0:
        return 0
    return min(max(1, round(n_docs * val_fraction)), n_docs - 1)


def n_heldout_docs(n_docs: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) documents held out: val as `n_val_docs`, test likewise from what val leaves,
    so that train always keeps at least one document."""
    n_val = n_val_docs(n_docs, val_fraction)
    if test_fraction <= 0 or n_docs - n_val < 2:
        return n_val, 0
    return n_val, min(max(1, round(n_docs * test_fraction)), n_docs - n_val - 1)


def _check_out(out: Path) -> None:
    """Refuse to replace anything but an omnibyte dataset or an empty folder."""
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not is_dataset(out)):
        raise OmnibyteError(f"{out} exists and is not an omnibyte dataset; choose another --out or remove it")


def write_dataset(documents: Iterable[Document], out: str | Path, *, sources: list[str], seed: int = 0,
                  val_fraction: float = 0.01, test_fraction: float | None = None,
                  shard_ids: int = SHARD_IDS) -> dict:
    """Write `documents` as a dataset at `out` (replacing an older dataset there); returns meta.

    The split is at document level: a seeded permutation picks `n_val_docs` documents for val and
    the next ones for test (`test_fraction`, by default as many as val; 0 writes no test split);
    every split keeps the original document order. Val holds the same documents with or without a
    test split, so choices made on an older dataset's val carry over; the test documents come
    out of train.
    """
    if test_fraction is None:
        test_fraction = val_fraction
    for name, fraction in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise OmnibyteError(f"{name} must be in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise OmnibyteError(f"--val-fraction + --test-fraction must be below 1 (train needs documents), got "
                            f"{val_fraction} + {test_fraction}")
    names = ("train", "val", "test") if test_fraction > 0 else ("train", "val")
    return _write(out, sources, shard_ids, lambda tmp, writers: _split_by_fraction(documents, tmp, writers, seed,
                                                                                    val_fraction, test_fraction),
                  {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}, names)


def write_splits(splits: Mapping[str, Iterable[Document]], out: str | Path, *, sources: list[str], seed: int = 0,
                 shard_ids: int = SHARD_IDS) -> dict:
    """Write documents already split ({"train": docs, "val": docs, "test": docs}, in that order)
    as a dataset at `out`, each split in the order given; returns meta."""
    if "train" not in splits:
        raise OmnibyteError("a dataset needs a train split")

    def fill(tmp, writers):
        for name, docs in splits.items():
            for doc in docs:
                _add(writers[name], document_array(doc), _doc_counts(doc))

    return _write(out, sources, shard_ids, fill, {"seed": seed}, tuple(splits))


def _write(out, sources, shard_ids, fill, info: dict, names: tuple[str, ...]) -> dict:
    out = Path(out)
    if shard_ids < 1:
        raise OmnibyteError(f"shard size must be >= 1 id, got {shard_ids}")
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = temp_sibling(out)
    try:
        tmp.mkdir()
        writers = {name: ShardWriter(tmp, name, shard_ids) for name in names}
        try:
            fill(tmp, writers)
        finally:
            for w in writers.values():
                w.close()
        if not any(w.n_docs for w in writers.values()):
            named = ", ".join(sources[:3]) + (", ..." if len(sources) > 3 else "")
            raise OmnibyteError(f"no documents in {named or 'the sources'} (are the files empty?)")
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": VOCAB_SIZE, "dtype": "uint16",
                "splits": {name: w.info() for name, w in writers.items()},
                "sources": [str(s) for s in sources], **info, "aux": {}}
        write_json_atomic(tmp / META_FILE, meta)  # last: only a complete folder has meta.json
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _doc_counts(doc: Document) -> dict[str, int] | None:
    """Bytes per modality of a document; None when it holds nothing (an empty file or record)."""
    counts = dict.fromkeys(MODALITIES, 0)
    for seg in doc.segments:
        kind, size = modality_bytes(seg)
        counts[kind] += size
    return counts if any(counts.values()) else None


def _add(writer: ShardWriter, ids: np.ndarray, counts: dict[str, int] | None) -> None:
    if counts is None:
        return  # nothing to learn
    writer.write(ids)
    writer.n_docs += 1
    for kind, size in counts.items():
        writer.bytes[kind] += size


def _split_by_fraction(documents, tmp: Path, writers: dict, seed, val_fraction, test_fraction) -> None:
    # Pass 1: every document into one scratch stream; remember where each ends and what it holds.
    ends, doc_counts = [], []
    with open(tmp / "all.tmp", "wb") as f:
        n = 0
        for doc in documents:
            counts = _doc_counts(doc)
            if counts is None:
                continue
            arr = document_array(doc)
            arr.tofile(f)
            n += len(arr)
            ends.append(n)
            doc_counts.append(counts)
    if not ends:
        return

    # Pass 2: copy each document to its split.
    n_docs = len(ends)
    n_val, n_test = n_heldout_docs(n_docs, val_fraction, test_fraction)
    split_of = np.full(n_docs, "train", dtype=object)
    order = np.random.default_rng(seed).permutation(n_docs)
    split_of[order[:n_val]] = "val"
    split_of[order[n_val:n_val + n_test]] = "test"
    stream = np.memmap(tmp / "all.tmp", dtype=ID_DTYPE, mode="r")
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        _add(writers[split_of[i]], np.asarray(stream[start:end]), doc_counts[i])
    del stream
    (tmp / "all.tmp").unlink()


def clean_stale(out: Path) -> None:
    """Put `out` in order after a writer of it was killed: its hidden temporary folders go, and a
    dataset moved aside for replacement (`.NAME.old-…`) while `out` is missing is moved back."""
    remove_stale_temps(out)
    for old in stale_temps(out, "old"):
        if not out.exists() and is_dataset(old):
            old.rename(out)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` with renames: the old dataset stays intact until the new one is whole."""
    if not out.exists():
        tmp.rename(out)
        return
    old = temp_sibling(out, "old")
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def prepare(sources: Iterable[str | Path], out: str | Path, *, val_fraction: float = 0.01,
            test_fraction: float | None = None, seed: int = 0, doc_bytes: int = DOC_BYTES,
            shard_ids: int = SHARD_IDS, progress: bool = False) -> dict:
    """Files, folders, globs and JSONL files -> a dataset at `out`; returns its meta.

    Files inside `out` itself are skipped, so preparing a folder that holds the output is safe.
    """
    if doc_bytes < 1:
        raise OmnibyteError(f"--doc-bytes must be >= 1, got {doc_bytes}")
    sources = [str(s) for s in sources]
    out_dir = Path(out).resolve()
    files = [f for f in expand_sources(sources) if out_dir not in f.resolve().parents]

    def documents() -> Iterator[Document]:
        quiet = not progress or len(files) < 16
        for path in tqdm(files, desc="prepare", unit="file", file=sys.stderr, disable=quiet):
            yield from documents_from_path(path, doc_bytes)

    return write_dataset(documents(), out, sources=sources, seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, shard_ids=shard_ids)


def summary(meta: dict, out: str | Path) -> str:
    """One paragraph a person reads after `omnibyte prepare`."""
    splits = meta["splits"]
    total = {k: sum(s["bytes"][k] for s in splits.values()) for k in MODALITIES}
    n_docs = sum(s["n_docs"] for s in splits.values())
    kinds = ", ".join(f"{k} {v:,}" for k, v in total.items() if v) or "none"
    parts = [f"{name} {s['n_ids']:,} ids / {s['n_docs']:,} docs in {len(s['shards'])} shard(s)"
             for name, s in splits.items()]
    return (f"Prepared {n_docs:,} documents ({sum(total.values()):,} bytes: {kinds}) from "
            f"{len(meta['sources'])} source(s) into {out}: {'; '.join(parts)}.")
