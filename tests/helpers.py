"""Shared tiny fixtures for the core tests: a generated text dataset and tiny run configs."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from omnibyte.data import prepare
from omnibyte.format import BOS
from omnibyte.models.transformer import Transformer, TransformerConfig

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "door", "in", "sun")
TEXT_WORDS = ("in", "the", "beginning", "god", "created", "heaven", "and", "earth", "a", "of")

# A tiny byte transformer: dim 32, 2 layers, 4 heads of 8.
TINY_MODEL = {"arch": "transformer", "dim": 32, "n_layers": 2, "n_heads": 4}
# Quick train settings: 8 steps of 4 × 32 bytes, a metrics line every step, no eval or checkpoint
# before the end, one CPU thread, fp32 on every machine (train.dtype auto would pick bf16 autocast on
# a CPU with AMX-BF16, and tests compare runs' numbers closely).
QUICK_TRAIN = {"steps": 8, "batch_size": 4, "seq_len": 32, "warmup_steps": 2, "eval_every": 0, "eval_batches": 2,
               "save_every": 0, "log_every": 1, "device": "cpu", "threads": 1, "dtype": "fp32"}


def write_text_dataset(tmp_path: Path, n_docs: int = 40, lines: int = 12, seed: int = 0,
                       val_fraction: float = 0.1, name: str = "ds") -> Path:
    """A prepared dataset of `n_docs` generated documents (short lines of a 14-word vocabulary, a
    few kB each: learnable in a few steps) at tmp_path/name; returns its path."""
    rng = random.Random(seed)
    src = tmp_path / f"{name}-src"
    src.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        text = "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + ".\n"
                       for _ in range(lines))
        (src / f"doc{d:03d}.txt").write_text(text)
    out = tmp_path / name
    prepare([src], out, val_fraction=val_fraction, seed=seed)
    return out


def tiny_overrides(data: Path, **train) -> dict:
    """Nested run-config overrides: the tiny model on `data`, quick train settings (+ `train`)."""
    return {"model": dict(TINY_MODEL), "data": {"path": str(data)}, "train": {**QUICK_TRAIN, **train}}


def tiny_override_args(**train) -> list[str]:
    """The same quick settings as command-line overrides (the dataset is passed with --data)."""
    args = [f"--model.{k}={v}" for k, v in TINY_MODEL.items() if k != "arch"]
    return args + [f"--train.{k}={v}" for k, v in {**QUICK_TRAIN, **train}.items()]


def tiny_model(seed: int = 0, **cfg) -> Transformer:
    """The tiny byte transformer in eval mode (dim 32, 2 layers) with a fixed init."""
    torch.manual_seed(seed)
    fields = {k: v for k, v in TINY_MODEL.items() if k != "arch"}
    fields.update(cfg)
    return Transformer(TransformerConfig(**fields)).eval()


def text_ids(n_rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """(n_rows, length) ids of words and spaces, a BOS at a different place in each row (two
    documents per row), so that rows patch differently."""
    rng = random.Random(seed)
    rows = []
    for r in range(n_rows):
        text = " ".join(rng.choice(TEXT_WORDS) for _ in range(length)).encode()[:length]
        row = list(text)
        row[(7 * r + 3) % length] = BOS
        rows.append(row)
    return torch.tensor(rows)


class FakeModel(torch.nn.Module):
    """The decoding interface of a model around `logits(ids)` (R, T) → (R, T, V), with no state: a
    test double for the decoding loop and the server."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_state(self, batch_size, max_len):
        return None

    def clear_rows(self, state, rows=None):
        pass

    def step(self, state, ids, rows=None):
        return self.logits(ids)
