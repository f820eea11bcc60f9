"""Evaluate a saved model on a prepared dataset, or on any text file/folder prepared on the fly."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from omnibyte.data import ShardDataset, eval_batches, is_dataset, prepare
from omnibyte.errors import OmnibyteError
from omnibyte.eval.bpb import bits_per_byte
from omnibyte.models.base import OmniModel


def run_settings(model_path: str | Path) -> dict:
    """The run.json next to a model (a run dir, or a run's checkpoint/), if any."""
    p = Path(model_path)
    for cand in (p / "run.json", p.parent / "run.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def evaluate_model(model_path: str | Path, data: str | None = None, split: str | None = None,
                   seq_len: int | None = None, batch_size: int = 8, max_batches: int | None = None,
                   device: str | None = None) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = OmniModel.from_pretrained(model_path, map_location=device)
    run = run_settings(model_path)
    data = data or run.get("data", {}).get("path")
    if not data:
        raise OmnibyteError("no dataset: pass --data (a prepared dataset, or a text file or folder)")
    seq_len = seq_len or run.get("train", {}).get("seq_len", 1024)
    with tempfile.TemporaryDirectory(prefix="omnibyte-eval-") as tmp:
        if is_dataset(data):
            dataset, split = ShardDataset(data), split or "val"
        elif Path(data).exists():
            # Never-prepared text: every document lands in one split, scored whole.
            prepare([data], Path(tmp) / "ds", val_fraction=0.0)
            dataset, split = ShardDataset(Path(tmp) / "ds"), split or "train"
        else:
            raise OmnibyteError(f"no such dataset, file or folder: {data}")
        if split not in dataset.splits or dataset.n_ids(split) < 2:
            raise OmnibyteError(f"dataset {data} has no '{split}' data to score")
        prep = getattr(model, "prepare_data", None)
        extras = prep(dataset) if prep else {}
        batches = eval_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
        result = bits_per_byte(model, batches, extras)
    return {**result, "data": str(data), "split": split, "seq_len": seq_len, "model": str(model_path)}
