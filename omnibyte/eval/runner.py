"""Evaluate a saved model on a prepared dataset, or on any text file/folder prepared on the fly."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch

from omnibyte.checks import resolve_device
from omnibyte.data import ShardDataset, eval_batches, is_dataset, prepare
from omnibyte.data.bpe import find_tokenizer, match_tokenizer
from omnibyte.data.loader import META_FILE
from omnibyte.errors import OmnibyteError
from omnibyte.eval.bpb import bits_per_byte
from omnibyte.eval.multimodal import bpb_by_modality, modality_batches
from omnibyte.files import resolve_model_dir
from omnibyte.memory import check_fits, forward_bytes
from omnibyte.models.base import OmniModel


def run_settings(model_path: str | Path) -> dict:
    """The run.json next to a model (a run dir, or a run's checkpoint/), if any."""
    p = Path(model_path)
    for cand in (p / "run.json", p.parent / "run.json"):
        if cand.is_file():
            try:
                settings = json.loads(cand.read_text(encoding="utf-8"))
            except ValueError as e:  # bad JSON or bad UTF-8
                raise OmnibyteError(f"corrupt {cand}: {e}") from None
            if not isinstance(settings, dict):
                raise OmnibyteError(f"corrupt {cand}: not a JSON object")
            return settings
    return {}


def check_counts(**counts: int | None) -> None:
    """Window length, batch size, batch and example limits: whole numbers ≥ 1 where given."""
    for name, n in counts.items():
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise OmnibyteError(f"{name.replace('_', '-')} must be a whole number ≥ 1, got {n!r}")


def load_for_eval(model_path: str | Path, data: str | Path | None, seq_len: int | None, device: str | None):
    """(model, tokenizer or None, data path, seq_len): the saved model, and the run's dataset and
    window length unless given."""
    check_counts(seq_len=seq_len)
    resolve_model_dir(model_path)  # a missing model is named first
    run = run_settings(model_path)
    data = data or run.get("data", {}).get("path")
    if not data:  # before the model is loaded (an imported model's run names no dataset)
        raise OmnibyteError("no dataset: pass --data (a prepared dataset, or a text file or folder)")
    model = OmniModel.from_pretrained(model_path, map_location=resolve_device(device))
    tokenizer = find_tokenizer(model_path)
    return model, tokenizer, data, seq_len if seq_len is not None else run.get("train", {}).get("seq_len", 1024)


def open_eval_data(data: str | Path, split: str | None, scratch: str | Path) -> tuple[ShardDataset, str]:
    """(dataset, split) to score: a prepared dataset (default split val), or never-prepared text
    prepared into `scratch` with every document in one split, scored whole."""
    if is_dataset(data) or (Path(data) / META_FILE).exists():  # a damaged dataset is an error, not text
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
    check_counts(seq_len=seq_len, batch_size=batch_size, max_batches=max_batches)
    if by_modality and tokenizer is not None:
        raise OmnibyteError("--by-modality needs a byte-level model (this one reads BPE tokens)")
    with tempfile.TemporaryDirectory(prefix="omnibyte-eval-") as tmp:
        dataset = match_tokenizer(dataset, tokenizer, split, scratch or tmp)
        if dataset.n_ids(split) < 2:  # a missing split is named by the dataset, with how to add it
            raise OmnibyteError(f"dataset {dataset.path} has no '{split}' data to score")
        if strided and not model.strided_eval:
            raise OmnibyteError(f"--strided is MEGABYTE's strided inference; this model is a {model.arch}")
        n_ids = dataset.n_ids(split)
        if not strided:  # one window of the whole split scores as a longer one would (logits are causal)
            seq_len = min(seq_len, n_ids - 1)
        rows = min(batch_size, -(-(n_ids - 1) // seq_len))
        check_fits(forward_bytes(model, rows, seq_len), next(model.parameters()).device,
                   f"scoring {rows} × {seq_len:,} ids at a time", "lower --batch-size or --seq-len")
        extras = model.prepare_data(dataset)
        if strided:
            result = strided_bits_per_byte(model, dataset, split, seq_len, batch_size, max_batches)
        elif by_modality:
            batches = modality_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
            result = bpb_by_modality(model, batches, extras)
        else:
            batches = eval_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
            per_id = tokenizer.bytes_per_id if tokenizer is not None else None
            result = bits_per_byte(model, batches, extras, bytes_per_id=per_id)
    check_finite_scores(result, f"{dataset.path} (split {split})")
    return result


def check_finite_scores(result: dict, where: str) -> None:
    """A score over bytes that is NaN or inf comes from non-finite log-likelihoods (NaN weights,
    overflow): an error naming the score, never a result. A modality with no bytes has no score
    (NaN by convention) and is fine."""
    for name, r in [("bits per byte", result), *((f"{m} bits per byte", v) for m, v in
                                                  result.get("modalities", {}).items())]:
        if r.get("bytes", 0) > 0 and not math.isfinite(r["bpb"]):
            raise OmnibyteError(f"{name} on {where} is {r['bpb']}: the model's log-likelihoods are not finite "
                                f"(its weights may hold NaN or inf)")
    if result.get("bytes", 0) == 0:
        raise OmnibyteError(f"no bytes were scored on {where}")
    for key, value in result.items():
        if key.startswith("strided_") and not math.isfinite(value):
            raise OmnibyteError(f"{key.replace('_', ' ')} on {where} is {value}")


def evaluate_model(model_path: str | Path, data: str | None = None, split: str | None = None,
                   seq_len: int | None = None, batch_size: int = 8, max_batches: int | None = None,
                   device: str | None = None, by_modality: bool = False, strided: bool = False) -> dict:
    check_counts(batch_size=batch_size, max_batches=max_batches)
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
