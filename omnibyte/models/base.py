"""What every omnibyte model offers, so one trainer, one evaluator and one decoding loop serve all:

- `forward(ids, targets=None, **extras) -> ModelOutput`: ids (B, T); logits (B, T, V) where
  logits[:, t] predicts the id after ids[:, t] and depends on ids[:, :t+1] only; loss = mean
  cross-entropy over non-PAD targets when targets are given.
- `init_state(batch_size, max_len)` / `step(state, ids) -> logits`: incremental decoding; `step`
  feeds (B, T) new ids to every row and returns (B, T, V) logits for them.
- `flops_per_byte(seq_len)`: {"train": …, "infer": …} forward+backward and forward FLOPs per byte.
- `save_pretrained(dir)` / `OmniModel.from_pretrained(dir)`: safetensors + config.json.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from omnibyte.checks import load_weights
from omnibyte.config import from_dict, to_dict
from omnibyte.errors import OmnibyteError

WEIGHTS, CONFIG = "model.safetensors", "config.json"


@dataclass
class ModelOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class OmniModel(nn.Module, metaclass=abc.ABCMeta):
    arch: ClassVar[str]
    config_cls: ClassVar[type]

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    # --- interface each model implements (see the module docstring) ----------------------
    @abc.abstractmethod
    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, **extras) -> ModelOutput:
        """logits[:, t] predicts the id after ids[:, t] from ids[:, :t+1]; loss when targets given."""

    @abc.abstractmethod
    def init_state(self, batch_size: int, max_len: int) -> Any:
        """Empty decoding state (KV caches) for `batch_size` rows of up to `max_len` ids."""

    @abc.abstractmethod
    def step(self, state: Any, ids: torch.Tensor) -> torch.Tensor:
        """Feed (B, T) new ids to every row; return their (B, T, V) logits."""

    @abc.abstractmethod
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """{"train": …, "infer": …} FLOPs per byte at this sequence length."""

    # --- shared -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = 0
        for name, p in self.named_parameters():
            if exclude_embeddings and "embed" in name:
                continue
            n += p.numel()
        return n

    def config_dict(self) -> dict:
        return {"arch": self.arch, "model": to_dict(self.cfg)}

    def save_pretrained(self, path: str | Path) -> None:
        """Write model.safetensors + config.json into `path` atomically (temp dir, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        replace_dir(tmp, path)

    @staticmethod
    def from_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> OmniModel:
        """Load any omnibyte model from a model dir or a run dir (uses its checkpoint/)."""
        from omnibyte.models.registry import build_model, saved_config

        path = resolve_model_dir(path)
        cfg = read_config(path)
        model = build_model(cfg["arch"], saved_config(cfg["arch"], cfg.get("model", {})))
        try:
            state = load_file(str(path / WEIGHTS), device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise OmnibyteError(f"corrupt or unreadable weights {path / WEIGHTS}: {e}") from None
        load_weights(model, state, path / WEIGHTS)  # finite, and each tensor fits the config's model
        return model.to(map_location).eval()


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written `tmp` into place; the old `final` is removed only after."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def resolve_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    if (path / "checkpoint" / CONFIG).is_file():
        return path / "checkpoint"
    if not path.exists():
        raise OmnibyteError(f"no such model or run directory: {path}")
    raise OmnibyteError(f"{path} holds no model (expected {CONFIG} + {WEIGHTS}, or checkpoint/)")


def read_config(path: Path) -> dict:
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OmnibyteError(f"corrupt model config {path / CONFIG}: {e}") from None
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise OmnibyteError(f"model config {path / CONFIG} names no 'arch'")
    return cfg


def model_config(cls: type, data: dict, prefix: str = "model"):
    return from_dict(cls, data, prefix=prefix)
