"""File to file: what `omnibyte compress` and `omnibyte decompress` do. Paths and the input are
checked before the model is loaded; the output is written atomically, only once every chunk has
decoded to its checksum, so a failed run leaves no file and never replaces one."""

from __future__ import annotations

import time
from pathlib import Path

from omnibyte.compress.codec import DEFAULT_BATCH, DEFAULT_CHUNK, compress, decompress, plan, read_header
from omnibyte.compress.media import media_sizes, read_source, write_source
from omnibyte.data.bpe import find_tokenizer
from omnibyte.errors import OmnibyteError
from omnibyte.eval.runner import run_settings
from omnibyte.files import check_output_file, resolve_model_dir, write_atomic
from omnibyte.models import OmniModel

SUFFIX = ".ob"
MEDIA_SUFFIX = {"image": ".png", "audio": ".wav"}  # what decompressed media are written as


def _output(src: Path, dst: str | Path | None, default: Path, force: bool) -> Path:
    dst = Path(dst) if dst is not None else default
    if dst.exists() and dst.resolve() == src.resolve():
        raise OmnibyteError(f"the output {dst} is the input")
    if dst.exists() and not force:
        raise OmnibyteError(f"{dst} exists (--force overwrites it)")
    return check_output_file(dst)  # a folder or an unwritable place fails now, before the model loads


def load_byte_model(model_path: str | Path) -> OmniModel:
    """A saved byte model (a token model cannot code bytes)."""
    resolve_model_dir(model_path)
    if find_tokenizer(model_path) is not None:
        raise OmnibyteError(f"{model_path} is a token (BPE) model; compression needs a byte model")
    return OmniModel.from_pretrained(model_path)


def compress_file(model_path: str | Path, src: str | Path, dst: str | Path | None = None, *, as_media: bool = False,
                  chunk: int | None = None, context: int | None = None, batch: int | None = None,
                  force: bool = False, progress: bool = False) -> dict:
    """Compress `src` into `dst` (default: src + .ob) with the model at `model_path`. `context`
    defaults to the run's training sequence length (else 1024), `chunk` and `batch` (None) to
    DEFAULT_CHUNK and DEFAULT_BATCH. Returns sizes and timing."""
    src = Path(src)
    if not src.is_file():
        raise OmnibyteError(f"{src}: no such file")
    dst = _output(src, dst, src.with_name(src.name + SUFFIX), force)
    source = read_source(src, as_media)
    resolve_model_dir(model_path)
    context = context or run_settings(model_path).get("train", {}).get("seq_len", 1024)
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    batch = DEFAULT_BATCH if batch is None else batch
    plan(source, chunk, context, batch)  # bad settings fail here, before the model loads
    model = load_byte_model(model_path)
    t0 = time.perf_counter()
    blob = compress(model, source, chunk=chunk, context=context, batch=batch, progress=progress)
    seconds = time.perf_counter() - t0
    write_atomic(dst, lambda f: f.write(blob))
    return {"input": str(src), "output": str(dst), "kind": media_sizes(source), "original_bytes": len(source.payload),
            "compressed_bytes": len(blob), "seconds": seconds, "chunks": read_header(blob).n_chunks,
            "context": context}


def decompress_file(model_path: str | Path, src: str | Path, dst: str | Path | None = None, *,
                    batch: int | None = None, force: bool = False, progress: bool = False) -> dict:
    """Decompress the .ob file `src` into `dst` with the model it was compressed with. The default
    output is `src` without .ob; media come back as PNG or WAV, so their output must be named so
    (by default the name's last suffix becomes .png or .wav). Returns sizes and timing."""
    src = Path(src)
    if not src.is_file():
        raise OmnibyteError(f"{src}: no such file")
    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1:
        raise OmnibyteError(f"batch must be ≥ 1, got {batch}")
    blob = src.read_bytes()
    kind = read_header(blob, str(src)).kind  # a damaged file fails here, before the model loads
    if dst is None and src.suffix != SUFFIX:
        raise OmnibyteError(f"{src} does not end in {SUFFIX}: name the output with -o")
    default = src.with_suffix("")
    if kind in MEDIA_SUFFIX:
        default = default.with_suffix(MEDIA_SUFFIX[kind])
        if dst is not None and Path(dst).suffix.lower() != MEDIA_SUFFIX[kind]:
            what = "an image" if kind == "image" else "audio"
            raise OmnibyteError(f"{src} holds {what}, written as {MEDIA_SUFFIX[kind][1:].upper()}: "
                                f"name the output *{MEDIA_SUFFIX[kind]}")
    dst = _output(src, dst, default, force)
    model = load_byte_model(model_path)
    t0 = time.perf_counter()
    source = decompress(model, blob, batch=batch, progress=progress, name=str(src))
    seconds = time.perf_counter() - t0
    write_source(dst, source)
    return {"input": str(src), "output": str(dst), "kind": media_sizes(source), "original_bytes": len(source.payload),
            "compressed_bytes": len(blob), "seconds": seconds}
