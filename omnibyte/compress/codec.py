"""Compress and decompress with an omnibyte model: bytes in, an .ob file's bytes out, and back.

`compress(model, source)` splits the payload into chunks, codes them (`omnibyte.compress.coder`)
and writes the container (`omnibyte.compress.container`) with a hash of the model's weights and
config; `decompress(model, blob)` checks the file, the model's hash, then every chunk's checksum,
and raises a one-line error instead of returning anything wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence

import torch

from omnibyte.compress.coder import Layout, decode, encode, fp64
from omnibyte.compress.container import HASH_LEN, Header, crc32, dump, load
from omnibyte.compress.freqs import GUARD, ProbabilityMismatch
from omnibyte.compress.media import Source
from omnibyte.errors import OmnibyteError
from omnibyte.format import VOCAB_SIZE
from omnibyte.progress import progress as progress_bar

DEFAULT_CHUNK = 4096  # bytes per independently coded chunk
DEFAULT_BATCH = 32  # chunks coded side by side


class WrongModel(OmnibyteError):
    """The file was compressed with another model."""


def model_hash(model: torch.nn.Module) -> bytes:
    """HASH_LEN bytes of SHA-256 over the model's config and every tensor of its state (name,
    dtype, shape, raw bytes): the same for the same saved model on any machine."""
    h = hashlib.sha256(json.dumps(model.config_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[:HASH_LEN]


def _check_model(model) -> None:
    if model.cfg.vocab_size < VOCAB_SIZE:
        raise OmnibyteError(f"a model over {model.cfg.vocab_size} ids cannot code bytes (a byte model has "
                            f"{VOCAB_SIZE}: bytes and the format's special ids)")


@contextlib.contextmanager
def _bar(total: int, show: bool, desc: str):
    with progress_bar(total=total, unit="B", unit_scale=True, desc=desc, disable=not show) as bar:
        yield bar


def plan(source: Source, chunk: int, context: int, batch: int = 1) -> tuple[Layout, int]:
    """(layout, chunk size) for coding `source`; a one-line error for settings that cannot work.
    An image's chunks are rounded down to whole rows (at least one)."""
    if chunk < 1 or batch < 1:
        raise OmnibyteError(f"chunk size and batch must be ≥ 1, got {chunk} and {batch}")
    align = source.align()
    return Layout(source.prefix(), context, align), max(1, chunk // align) * align


def compress(model, source: Source, chunk: int = DEFAULT_CHUNK, context: int = 1024, batch: int = DEFAULT_BATCH,
             progress: bool = False) -> bytes:
    """The .ob file of `source` coded with `model` (any omnibyte byte model; left as it was).
    `chunk`: bytes per independent chunk; `context`: ids the model sees at most (its training
    length suits it); `batch`: chunks coded together."""
    _check_model(model)
    layout, chunk = plan(source, chunk, context, batch)
    data = source.payload
    payloads = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    digest = model_hash(model)
    with fp64(model), _bar(len(data), progress, "compress") as bar:
        chunks = encode(model, payloads, layout, batch, bar.update)
    return dump(Header(source.kind, digest, len(data), chunk, context, source.media_header), chunks)


def read_header(blob: bytes, name: str = "input") -> Header:
    """The header of an .ob file, after checking the whole file's checksum."""
    return load(blob, name)[0]


def decompress(model, blob: bytes, batch: int = DEFAULT_BATCH, progress: bool = False, name: str = "input",
               chunks: Sequence[int] | None = None) -> Source:
    """The content of the .ob file `blob`, decoded with `model` (the one it was compressed with).
    `chunks`: decode only these chunks (their bytes, concatenated); each needs only its own record.
    Raises a one-line OmnibyteError for a damaged file, another model, or a chunk whose decoded
    bytes fail their checksum."""
    header, records = load(blob, name)
    _check_model(model)
    digest = model_hash(model)
    if digest != header.model_hash:
        raise WrongModel(f"{name} was compressed with another model (model hash {header.model_hash.hex()}; "
                         f"this one's is {digest.hex()})")
    which = list(range(header.n_chunks)) if chunks is None else list(chunks)
    if any(not 0 <= i < header.n_chunks for i in which):
        raise OmnibyteError(f"{name} has {header.n_chunks} chunks (0..{header.n_chunks - 1}); asked for {which}")
    source = Source(b"", header.kind, header.media_header)
    layout = Layout(source.prefix(), header.context, source.align())
    lengths = header.chunk_lengths()
    with fp64(model), _bar(sum(lengths[i] for i in which), progress, "decompress") as bar:
        out = decode(model, [records[i] for i in which], [lengths[i] for i in which], layout, batch, bar.update)
    for i, data in zip(which, out):
        if crc32(data) != records[i].crc:
            raise ProbabilityMismatch(f"{name}: chunk {i} decodes to bytes that fail its checksum, though the file "
                                      f"is intact: this machine computes the model's probabilities differently "
                                      f"from the one that compressed it (by more than the {GUARD:.1e}-nat guard)")
    source.payload = b"".join(out)
    return source
