"""Noise robustness: validation bits per byte on clean and perturbed copies of the same text.

Five perturbations of characters (not bytes, so UTF-8 stays valid), each applied independently
to every character with probability `rate`, from a seeded generator:

    random_case  swap the case of the character
    drop         delete the character
    repeat       write the character twice
    uppercase    upper-case the character (rate 1: the whole text upper-cased)
    swap         swap the character with the next one (the pair is then skipped)

Degradation = noisy bpb / clean bpb (1 = unaffected). Bits per byte is over the bytes of the
text each model is shown, so a perturbation that makes text longer or shorter is still
compared per byte. Text that is not valid UTF-8 passes its stray bytes through untouched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from omnibyte.data import ShardDataset, read_meta, write_dataset
from omnibyte.data.bpe import is_token_dataset
from omnibyte.errors import OmnibyteError
from omnibyte.eval.runner import load_for_eval, open_eval_data, score_dataset
from omnibyte.format import Document, TextSegment, decode, split_documents

# --------------------------------------------------------------------------- perturbations


def _hits(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    if not 0 <= rate <= 1:
        raise OmnibyteError(f"noise rate must be in [0, 1], got {rate}")
    return rng.random(n) < rate


def random_case(text: str, rate: float, rng: np.random.Generator) -> str:
    hit = _hits(len(text), rate, rng)
    return "".join(c.swapcase() if h else c for c, h in zip(text, hit))


def drop(text: str, rate: float, rng: np.random.Generator) -> str:
    hit = _hits(len(text), rate, rng)
    return "".join(c for c, h in zip(text, hit) if not h)


def repeat(text: str, rate: float, rng: np.random.Generator) -> str:
    hit = _hits(len(text), rate, rng)
    return "".join(c + c if h else c for c, h in zip(text, hit))


def uppercase(text: str, rate: float, rng: np.random.Generator) -> str:
    hit = _hits(len(text), rate, rng)
    return "".join(c.upper() if h else c for c, h in zip(text, hit))


def swap(text: str, rate: float, rng: np.random.Generator) -> str:
    hit = _hits(len(text), rate, rng)
    chars = list(text)
    i = 0
    while i < len(chars) - 1:
        if hit[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 2
        else:
            i += 1
    return "".join(chars)


PERTURBATIONS: dict[str, Callable[[str, float, np.random.Generator], str]] = {
    "random_case": random_case, "drop": drop, "repeat": repeat, "uppercase": uppercase, "swap": swap}


def perturb(text: str | bytes, kind: str, rate: float, seed: int | Sequence[int] = 0) -> str | bytes:
    """Apply one perturbation; bytes in → bytes out (invalid UTF-8 bytes are kept as they are).
    `seed` is anything `numpy.random.default_rng` takes (an int, or a list of ints)."""
    if kind not in PERTURBATIONS:
        raise OmnibyteError(f"unknown perturbation {kind!r} (known: {', '.join(PERTURBATIONS)})")
    rng = np.random.default_rng(seed)
    if isinstance(text, bytes | bytearray):
        # surrogateescape: a stray byte becomes one lone surrogate character that no case
        # mapping touches, and encodes back to the same byte
        s = bytes(text).decode("utf-8", errors="surrogateescape")
        return PERTURBATIONS[kind](s, rate, rng).encode("utf-8", errors="surrogateescape")
    return PERTURBATIONS[kind](text, rate, rng)


# --------------------------------------------------------------------------- noisy datasets


def perturb_documents(dataset, split: str, kind: str, rate: float, seed: int = 0):
    """Documents of a byte dataset's split with every text segment perturbed (image and audio
    segments unchanged); document k uses seed (seed, k) so documents are independent."""
    stream = np.asarray(dataset.stream(split))
    for k, ids in enumerate(split_documents(stream)):
        doc = decode(ids)
        segs = [TextSegment(perturb(s.data, kind, rate, [seed, k])) if isinstance(s, TextSegment)
                else s for s in doc.segments]
        yield Document(segs)


def write_noisy(dataset, split: str, out: str | Path, kind: str, rate: float, seed: int = 0):
    """A byte dataset at `out` whose "train" split is the perturbed copy of `split` (same
    document boundaries). Returns the ShardDataset."""
    write_dataset(perturb_documents(dataset, split, kind, rate, seed), out,
                  sources=[f"{dataset.path}:{split} + {kind}@{rate}"], val_fraction=0.0)
    return ShardDataset(out)


def noise_eval(model_path: str | Path, data: str | Path | None = None, split: str | None = None,
               kinds: Iterable[str] | None = None, rate: float = 0.1, seed: int = 0, seq_len: int | None = None,
               batch_size: int = 8, max_batches: int | None = None, device: str | None = None) -> dict:
    """Clean and perturbed validation bpb of a saved model (byte or BPE) → {"clean": {...},
    "noisy": {kind: {"bpb", "bytes", "ratio"}}, ...}. `data` as for `omnibyte eval` (default:
    the run's dataset, val split; a text file or folder is scored whole)."""
    kinds = list(kinds or PERTURBATIONS)
    for kind in kinds:
        if kind not in PERTURBATIONS:
            raise OmnibyteError(f"unknown perturbation {kind!r} (known: {', '.join(PERTURBATIONS)})")
    model, tokenizer, data, seq_len = load_for_eval(model_path, data, seq_len, device)
    if tokenizer is not None and Path(data).is_dir() and (Path(data) / "meta.json").is_file():
        if is_token_dataset(data):  # perturb text, not token ids: start from the byte dataset
            data = read_meta(data)["sources"][0]
    with tempfile.TemporaryDirectory(prefix="omnibyte-noise-") as tmp:
        dataset, split = open_eval_data(data, split, tmp)

        def score(ds, sp, tag):
            return score_dataset(model, ds, sp, seq_len, batch_size, max_batches, tokenizer, Path(tmp) / tag)

        clean = score(dataset, split, "clean")
        noisy = {}
        for kind in kinds:
            ds = write_noisy(dataset, split, Path(tmp) / f"noisy-{kind}", kind, rate, seed)
            r = score(ds, "train", kind)
            noisy[kind] = {**r, "ratio": r["bpb"] / clean["bpb"]}
    return {"clean": clean, "noisy": noisy, "rate": rate, "seed": seed, "model": str(model_path),
            "data": str(data), "split": split}
