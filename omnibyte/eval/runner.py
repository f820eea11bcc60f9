"""Evaluate a saved model on a prepared dataset, or on any text file/folder prepared on the fly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from omnibyte.data import ShardDataset, eval_batches, is_dataset, prepare
from omnibyte.data.bpe import find_tokenizer, match_tokenizer
from omnibyte.errors import OmnibyteError
from omnibyte.eval.bpb import bits_per_byte
from omnibyte.eval.multimodal import bpb_by_modality, modality_batches
from omnibyte.models.base import OmniModel


def run_settings(model_path: str | Path) -> dict:
    """The run.json next to a model (a run dir, or a run's checkpoint/), if any."""
    p = Path(model_path)
    for cand in (p / "run.json", p.parent / "run.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def load_for_eval(model_path: str | Path, data: str | Path | None, seq_len: int | None, device: str | None):
    """(model, tokenizer or None, data path, seq_len): the saved model, and the run's dataset and
    window length unless given."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = OmniModel.from_pretrained(model_path, map_location=device)
    tokenizer = find_tokenizer(model_path)
    run = run_settings(model_path)
    data = data or run.get("data", {}).get("path")
    if not data:
        raise OmnibyteError("no dataset: pass --data (a prepared dataset, or a text file or folder)")
    return model, tokenizer, data, seq_len or run.get("train", {}).get("seq_len", 1024)


def open_eval_data(data: str | Path, split: str | None, scratch: str | Path) -> tuple[ShardDataset, str]:
    """(dataset, split) to score: a prepared dataset (default split val), or never-prepared text
    prepared into `scratch` with every document in one split, scored whole."""
    if is_dataset(data):
        return ShardDataset(data), split or "val"
    if Path(data).exists():
        # Never-prepared text: every document lands in one split, scored whole.
        prepare([data], Path(scratch) / "ds", val_fraction=0.0)
        return ShardDataset(Path(scratch) / "ds"), split or "train"
    raise OmnibyteError(f"no such dataset, file or folder: {data}")


def score_dataset(model, dataset: ShardDataset, split: str, seq_len: int, batch_size: int = 8,
                  max_batches: int | None = None, tokenizer=None, scratch: str | Path | None = None,
                  by_modality: bool = False, strided: bool = False) -> dict:
    """Bits per byte of a loaded model on one split. A BPE model (`tokenizer` given) reads the
    split tokenized on the fly (in `scratch`) when `dataset` holds bytes. `by_modality` adds
    "modalities": text / image / audio bits per byte (byte-level models only); `strided`
    adds MEGABYTE's strided-inference scores beside the plain one."""
    if by_modality and tokenizer is not None:
        raise OmnibyteError("--by-modality needs a byte-level model (this one reads BPE tokens)")
    with tempfile.TemporaryDirectory(prefix="omnibyte-eval-") as tmp:
        dataset = match_tokenizer(dataset, tokenizer, split, scratch or tmp)
        if split not in dataset.splits or dataset.n_ids(split) < 2:
            raise OmnibyteError(f"dataset {dataset.path} has no '{split}' data to score")
        if strided and not model.strided_eval:
            raise OmnibyteError(f"--strided is MEGABYTE's strided inference; this model is a {model.arch}")
        extras = model.prepare_data(dataset)
        if strided:
            return strided_bits_per_byte(model, dataset, split, seq_len, batch_size, max_batches)
        if by_modality:
            batches = modality_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
            return bpb_by_modality(model, batches, extras)
        batches = eval_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
        per_id = tokenizer.bytes_per_id if tokenizer is not None else None
        return bits_per_byte(model, batches, extras, bytes_per_id=per_id)


def evaluate_model(model_path: str | Path, data: str | None = None, split: str | None = None,
                   seq_len: int | None = None, batch_size: int = 8, max_batches: int | None = None,
                   device: str | None = None, by_modality: bool = False, strided: bool = False) -> dict:
    model, tokenizer, data, seq_len = load_for_eval(model_path, data, seq_len, device)
    with tempfile.TemporaryDirectory(prefix="omnibyte-eval-") as tmp:
        dataset, split = open_eval_data(data, split, tmp)
        result = score_dataset(model, dataset, split, seq_len, batch_size, max_batches, tokenizer, tmp,
                               by_modality, strided)
    return {**result, "data": str(data), "split": split, "seq_len": seq_len, "model": str(model_path)}


@torch.no_grad()
def strided_bits_per_byte(model, dataset, split: str, seq_len: int, batch_size: int,
                          max_batches: int | None) -> dict:
    """Plain bits per byte plus MEGABYTE's strided inference (two passes offset by P/2), keeping
    each byte from the pass where it is early in its patch (the paper) or late in it."""
    device = next(model.parameters()).device
    model.eval()
    result = bits_per_byte(model, eval_batches(dataset, split, batch_size, seq_len, max_batches))
    for half in ("first", "second"):
        bits = n = 0
        for batch in eval_batches(dataset, split, batch_size, seq_len, max_batches):
            b, k = model.strided_nll_sums(batch["ids"].to(device), half=half)
            bits, n = bits + b, n + k
        result[f"strided_{half}_bpb"] = bits / n if n else float("nan")
    return result
