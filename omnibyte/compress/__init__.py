"""Lossless compression with any omnibyte model: arithmetic coding with probabilities that every
machine rebuilds exactly (see freqs.py), in independent chunks (coder.py), in a small container
(container.py); media coded through their byte-format blocks (media.py)."""

from omnibyte.compress.codec import (
           DEFAULT_BATCH,
           DEFAULT_CHUNK,
           WrongModel,
           compress,
           decompress,
           model_hash,
           read_header,
)
from omnibyte.compress.container import CorruptFile, Header
from omnibyte.compress.freqs import GUARD, ProbabilityMismatch
from omnibyte.compress.media import Source, read_source, write_source

__all__ = ["DEFAULT_BATCH", "DEFAULT_CHUNK", "GUARD", "CorruptFile", "Header", "ProbabilityMismatch", "Source",
           "WrongModel", "compress", "decompress", "model_hash", "read_header", "read_source", "write_source"]
