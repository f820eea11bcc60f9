"""The BPE baseline's data: a byte-level BPE tokenizer and token shards scored in bits per byte.

Token ids are laid out like the byte format so that the one trainer, loss, loader and decoding
loop serve a token model unchanged:

    0-255   the 256 single bytes (id = byte value)
    256     <pad>   = format.PAD: the loader pads with it and `lm_loss` ignores it
    257     <bos>   = format.BOS
    258     <eos>   = format.EOS
    259...  merges, in the order the BPE trainer learned them

`tokenizers` numbers its vocabulary its own way (alphabet sorted by character, merges from 256
up), which would make some real merge id 256 — a token the loss would silently skip. So after
training we rebuild the model with the numbering above; the three specials live in the
vocabulary but no merge can produce them and they are not "added tokens", so encoding text
never yields them (a literal "<pad>" in the text is just bytes).

Bits per byte of a token model = summed NLL bits over all scored tokens / bytes of the text those
tokens decode to (specials count 0). `bytes_per_id` gives that byte count per id, so a window's
bytes are `bytes_per_id[targets].sum()`; the conversion checks, document by document, that the
tokens decode to exactly the source bytes, so the denominator equals the byte model's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from omnibyte.data.loader import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ID_DTYPE,
    META_FILE,
    ShardDataset,
    is_dataset,
    read_meta,
)
from omnibyte.data.prepare import MODALITIES, ShardWriter, _check_out, _swap_into_place, clean_stale
from omnibyte.errors import OmnibyteError
from omnibyte.files import resolve_model_dir, temp_sibling, write_atomic, write_json_atomic
from omnibyte.format import BOS, EOS, N_BYTES, PAD

TOKENIZER_FILE = "tokenizer.json"
SPECIALS = {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS}
FIRST_MERGE = EOS + 1  # 259
MAX_VOCAB = int(np.iinfo(ID_DTYPE).max) + 1  # shards store uint16 ids


def _byte_chars() -> list[str]:
    """The printable stand-in character of each byte that byte-level BPE works on (GPT-2's scheme):
    printable Latin-1 bytes stand for themselves, the other 68 bytes take U+0100 onwards in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(N_BYTES):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(N_BYTES + extra))
            extra += 1
    return chars


BYTE_CHARS = _byte_chars()
CHAR_BYTE = {c: b for b, c in enumerate(BYTE_CHARS)}


def _piece_bytes(piece: str) -> bytes:
    return bytes(CHAR_BYTE[c] for c in piece)


class BpeTokenizer:
    """A byte-level BPE tokenizer with ids in the byte format's layout (see the module docstring)."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            raise TypeError("BpeTokenizer wraps a tokenizers.Tokenizer")
        self.tok = tokenizer
        vocab = tokenizer.get_vocab()
        for name, i in SPECIALS.items():
            if vocab.get(name) != i:
                raise OmnibyteError(f"tokenizer is not an omnibyte BPE tokenizer ({name} is not id {i}); "
                                    f"build it with omnibyte")
        self.vocab_size = len(vocab)
        if sorted(vocab.values()) != list(range(self.vocab_size)):
            raise OmnibyteError("tokenizer ids are not contiguous; build it with omnibyte")
        self.id_bytes: list[bytes] = [b""] * self.vocab_size
        for piece, i in vocab.items():
            if piece not in SPECIALS:
                self.id_bytes[i] = _piece_bytes(piece)
        self.bytes_per_id = np.array([len(b) for b in self.id_bytes], np.int64)

    # --- encode / decode ---------------------------------------------------------------------
    def encode(self, text: str | bytes) -> list[int]:
        """Text (or UTF-8 bytes; invalid sequences become U+FFFD) → ids, no BOS/EOS."""
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        return self.tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)] if texts else []

    def decode(self, ids: Iterable[int]) -> bytes:
        """ids → the bytes they stand for; specials (and ids past the vocabulary) give nothing."""
        return b"".join(self.id_bytes[i] for i in map(int, ids) if 0 <= i < self.vocab_size)

    def n_bytes(self, ids: Iterable[int]) -> int:
        return int(sum(self.bytes_per_id[i] for i in map(int, ids) if 0 <= i < self.vocab_size))

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json (into `path` when it is a folder)."""
        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        data = self.tok.to_str()
        write_atomic(file, lambda f: f.write(data.encode()))
        return file

    @classmethod
    def load(cls, path: str | Path) -> BpeTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / TOKENIZER_FILE if path.is_dir() else path
        if not file.is_file():
            raise OmnibyteError(f"no tokenizer at {file}")
        try:
            return cls(Tokenizer.from_file(str(file)))
        except Exception as e:  # tokenizers raises plain Exceptions for bad JSON
            if isinstance(e, OmnibyteError):
                raise
            raise OmnibyteError(f"corrupt tokenizer {file}: {str(e).splitlines()[0]}") from None

    def fingerprint(self) -> str:
        return hashlib.sha256(self.tok.to_str().encode()).hexdigest()[:16]


def train_bpe(texts: Iterable[str], vocab_size: int = 4096) -> BpeTokenizer:
    """Train a byte-level BPE tokenizer of `vocab_size` ids in all (256 bytes + 3 specials + merges).

    Pre-tokenization is GPT-2's (splits at spaces and punctuation, no prefix space). The result
    may be smaller than `vocab_size` when the text has fewer distinct pairs to merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not FIRST_MERGE < vocab_size <= MAX_VOCAB:
        raise OmnibyteError(f"BPE vocab size must be in {FIRST_MERGE + 1}..{MAX_VOCAB} (256 bytes, 3 specials "
                            f"and at least one merge; shards hold uint16 ids), got {vocab_size}")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    raw.train_from_iterator(texts, trainer)
    merges = json.loads(raw.to_str())["model"]["merges"]

    # Renumber: bytes by value, then the specials, then merges in the order they were learned.
    vocab = {c: b for b, c in enumerate(BYTE_CHARS)}
    vocab.update(SPECIALS)
    pairs = []
    for left, right in (m.split(" ", 1) if isinstance(m, str) else m for m in merges):
        pairs.append((left, right))
        vocab.setdefault(left + right, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return BpeTokenizer(tok)


# ----------------------------------------------------------------------------- datasets


def dataset_tokenizer(dataset: ShardDataset | str | Path) -> BpeTokenizer | None:
    """The tokenizer of a token dataset, None for a byte dataset."""
    ds = dataset if isinstance(dataset, ShardDataset) else ShardDataset(dataset)
    info = ds.meta.get("tokenizer")
    if not info:
        return None
    return BpeTokenizer.load(ds.path / info["file"])


def find_tokenizer(model_path: str | Path) -> BpeTokenizer | None:
    """The tokenizer a model was trained with, None for a byte model.

    Looked up in the model dir, its run dir, then the run's dataset (run.json's data.path).
    """
    model_dir = resolve_model_dir(model_path)
    for folder in (model_dir, model_dir.parent, Path(model_path)):
        if (folder / TOKENIZER_FILE).is_file():
            return BpeTokenizer.load(folder / TOKENIZER_FILE)
    for folder in (Path(model_path), model_dir.parent):
        run = folder / "run.json"
        if run.is_file():
            data = json.loads(run.read_text()).get("data", {}).get("path")
            if data and is_dataset(data):
                return dataset_tokenizer(data)
            return None
    return None


def is_token_dataset(path: str | Path) -> bool:
    return is_dataset(path) and bool(read_meta(path).get("tokenizer"))


def iter_text_documents(dataset: ShardDataset, split: str, chunk_ids: int = 1 << 24) -> Iterator[bytes]:
    """Text of each document (BOS ... EOS) of a byte dataset's split, read a chunk at a time.

    Raises on anything but plain text: the BPE baseline is a text tokenizer.
    """
    if dataset.meta.get("tokenizer"):
        raise OmnibyteError(f"{dataset.path} is already a token dataset")
    stream = dataset.stream(split)
    n, pos = len(stream), 0
    carry = np.zeros(0, ID_DTYPE)
    while pos < n or len(carry):
        chunk = np.concatenate([carry, np.asarray(stream[pos : pos + chunk_ids])])
        pos += chunk_ids
        ends = np.flatnonzero(chunk == EOS)
        if not len(ends):
            if pos >= n:
                raise OmnibyteError(f"split {split!r} of {dataset.path} ends inside a document")
            carry = chunk
            continue
        start = 0
        for end in ends:
            doc = chunk[start : end + 1]
            start = end + 1
            if doc[0] != BOS or (doc[1:-1] >= N_BYTES).any():
                raise OmnibyteError(f"{dataset.path}: the BPE baseline needs text-only documents "
                                    f"(found an image, audio or malformed document in split {split!r})")
            yield doc[1:-1].astype(np.uint8).tobytes()
        carry = chunk[start:]
        if pos >= n and len(carry):
            raise OmnibyteError(f"split {split!r} of {dataset.path} ends inside a document")


def _decode_text(data: bytes) -> tuple[str, bool]:
    """UTF-8 text of a document and whether it had to be repaired (invalid bytes → U+FFFD)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def tokenize_dataset(source: ShardDataset | str | Path, out: str | Path, tokenizer: BpeTokenizer,
                     splits: list[str] | None = None, batch_docs: int = 512) -> dict:
    """Write the token version of a byte dataset at `out` (same documents, same splits); returns meta.

    Every document becomes ``<bos> tokens <eos>``; meta.json records the tokenizer (copied into
    `out`), and per split the byte count of the scored text (`bytes.text`) and the number of
    documents whose invalid UTF-8 had to be replaced (0 for normal text; those documents are
    scored on the repaired text, whose bytes are what is counted).
    """
    src = source if isinstance(source, ShardDataset) else ShardDataset(source)
    out = Path(out)
    _check_out(out)
    if out.resolve() == src.path.resolve():
        raise OmnibyteError("the token dataset needs its own folder (--out must differ from the source)")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = temp_sibling(out)
    try:
        tmp.mkdir()
        tokenizer.save(tmp / TOKENIZER_FILE)
        meta_splits = {}
        for split in splits if splits is not None else src.splits:
            meta_splits[split] = _write_token_split(src, split, tmp, tokenizer, batch_docs)
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vocab_size": tokenizer.vocab_size,
                "dtype": "uint16", "splits": meta_splits, "sources": [str(src.path)],
                "seed": src.meta.get("seed", 0), "val_fraction": src.meta.get("val_fraction", 0.0), "aux": {},
                "tokenizer": {"file": TOKENIZER_FILE, "vocab_size": tokenizer.vocab_size,
                              "fingerprint": tokenizer.fingerprint(), "kind": "bpe"}}
        write_json_atomic(tmp / META_FILE, meta)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_token_split(src: ShardDataset, split: str, folder: Path, tokenizer: BpeTokenizer,
                       batch_docs: int) -> dict:
    writer = ShardWriter(folder, split, 1 << 26)
    writer.bytes = dict.fromkeys(MODALITIES, 0)
    repaired = 0

    def flush(batch: list[str]) -> None:
        for text, ids in zip(batch, tokenizer.encode_batch(batch)):
            arr = np.asarray([BOS, *ids, EOS], ID_DTYPE)
            n = int(tokenizer.bytes_per_id[arr].sum())
            if n != len(text.encode("utf-8")):  # never expected: the tokenizer must be lossless
                raise OmnibyteError("tokenizer does not round-trip a document's bytes; retrain it")
            writer.write(arr)
            writer.n_docs += 1
            writer.bytes["text"] += n
        batch.clear()

    batch: list[str] = []
    if src.n_ids(split) > 0:
        for data in iter_text_documents(src, split):
            text, bad = _decode_text(data)
            repaired += bad
            batch.append(text)
            if len(batch) >= batch_docs:
                flush(batch)
        flush(batch)
    writer.close()
    return {**writer.info(), "repaired_docs": repaired}


def prepare_bpe(source: str | Path, out: str | Path, vocab_size: int = 4096,
                tokenizer: BpeTokenizer | str | Path | None = None, max_train_bytes: int = 1 << 28) -> dict:
    """Train a BPE tokenizer on the train split of the byte dataset `source` (at most
    `max_train_bytes` of it) — or use `tokenizer` — and write the token dataset at `out`."""
    src = ShardDataset(source)
    if isinstance(tokenizer, str | Path):
        tokenizer = BpeTokenizer.load(tokenizer)
    if tokenizer is None:
        if "train" not in src.splits or src.n_ids("train") == 0:
            raise OmnibyteError(f"{source} has no train split to learn a tokenizer from")

        def texts() -> Iterator[str]:
            seen = 0
            for data in iter_text_documents(src, "train"):
                yield _decode_text(data)[0]
                seen += len(data)
                if seen >= max_train_bytes:
                    return

        tokenizer = train_bpe(texts(), vocab_size)
    return tokenize_dataset(src, out, tokenizer)


def bytes_per_token(meta: dict, split: str) -> float:
    """Mean bytes per id of a token dataset's split (BOS/EOS included, as the model sees them)."""
    info = meta["splits"][split]
    return sum(info["bytes"].values()) / max(1, info["n_ids"])


def match_tokenizer(dataset: ShardDataset, tokenizer: BpeTokenizer | None, split: str,
                    scratch: str | Path) -> ShardDataset:
    """The dataset a model with `tokenizer` (None = a byte model) reads: a byte dataset is
    tokenized on the fly into `scratch` (only `split`); a token dataset must match the tokenizer."""
    theirs = dataset.meta.get("tokenizer")
    if tokenizer is None:
        if theirs:
            raise OmnibyteError(f"{dataset.path} is a BPE token dataset but the model reads bytes; "
                                f"score it on the byte dataset it came from")
        return dataset
    if theirs:
        if theirs.get("fingerprint") != tokenizer.fingerprint():
            raise OmnibyteError(f"{dataset.path} was tokenized with another tokenizer than the model's")
        return dataset
    out = Path(scratch) / f"tokens-{tokenizer.fingerprint()}-{split}"
    tokenize_dataset(dataset, out, tokenizer, splits=[split])
    return ShardDataset(out)


def dataset_bytes_per_id(dataset: ShardDataset | str | Path):
    """Bytes each id stands for in a token dataset (for `bits_per_byte(..., bytes_per_id=...)`),
    None for a byte dataset, whose ids < 256 are one byte each."""
    tok = dataset_tokenizer(dataset)
    return None if tok is None else tok.bytes_per_id
