"""What every omnibyte model offers, so one trainer, one evaluator and one decoding loop serve all:

- `forward(ids, targets=None, **extras) -> ModelOutput`: ids (B, T); logits (B, T, V) where
  logits[:, t] predicts the id after ids[:, t] and depends on ids[:, :t+1] only; loss = mean
  cross-entropy over non-PAD targets when targets are given (`loss`).
- `init_state(batch_size, max_len)` / `step(state, ids, rows=None) -> logits`: incremental
  decoding; `step` feeds (R, T) new ids to `rows` (default every row) and returns (R, T, V) logits
  for them. Rows fill independently: they may stand at different positions, so sequences can join
  and leave a running batch (`clear_rows(state, rows)` empties rows for new sequences), and a
  row's logits are those it would get decoded alone.
- `flops_per_byte(seq_len)`: {"train": …, "infer": …} forward+backward and forward FLOPs per byte.
- `param_groups(weight_decay)`: the optimiser's parameter groups, each with its own weight decay
  and, where a model wants it, its own learning-rate scale and tables it may update sparsely.
- `prepare_data(dataset)`: what the model adds to a dataset once before training or scoring
  (BLT's precomputed entropies), as {forward kwarg: aux array name}. An aux array reaches
  `forward` whole, one position longer than the ids fed: (B, T+1), its last column that of the
  last target (a BLT that decides a patch boundary one id ahead reads it).
- `strided_nll_sums(ids, half)`: strided evaluation, for models that have one (`strided_eval`).
- `stacks()` / `config_with_layers(n_layers)`: the model's transformer stacks by name, and its
  config with other layer counts (what layer pruning needs to know of a model).
- `save_pretrained(dir)` / `OmniModel.from_pretrained(dir)`: safetensors + config.json.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file
from torch import nn

from omnibyte.config import to_dict
from omnibyte.errors import OmnibyteError
from omnibyte.files import CONFIG, WEIGHTS, replace_dir
from omnibyte.models import registry
from omnibyte.nn import TransformerStack, lm_loss


@dataclass
class ModelOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class OmniModel(nn.Module, metaclass=abc.ABCMeta):
    arch: ClassVar[str]
    config_cls: ClassVar[type]
    strided_eval: ClassVar[bool] = False  # whether `strided_nll_sums` is implemented

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
    def step(self, state: Any, ids: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Feed (R, T) new ids to `rows` (ascending; default every row), which may stand at
        different positions; return their (R, T, V) logits."""

    @abc.abstractmethod
    def clear_rows(self, state: Any, rows: Sequence[int] | None = None) -> None:
        """Empty these rows (default every row) of a decoding state: new sequences start there."""

    @abc.abstractmethod
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """{"train": …, "infer": …} FLOPs per byte at this sequence length: "train" is 3 × the
        forward pass the trainer runs (inputs precomputed by `prepare_data` are free), "infer" the
        forward pass of inference, which computes everything itself."""

    # --- interface with defaults --------------------------------------------------------------
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over non-PAD targets (weighted when `weights` (B, T) is given), plus
        the config's z-loss."""
        return lm_loss(logits, targets, self.cfg.z_loss, weights)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Optimiser groups: 2-D weights decay, vectors (norms, biases, pads) do not. A group may add
        "lr_scale" (× the schedule's lr) and "sparse_tables" (the nn.Embedding modules whose weights
        it holds, which the trainer may update row-wise from sparse gradients)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]

    def prepare_data(self, dataset) -> dict[str, str]:
        """Arrays the model wants computed once per dataset: {forward kwarg: aux array name}; each
        reaches `forward` as (B, T+1) for (B, T) ids."""
        return {}

    def strided_nll_sums(self, ids: torch.Tensor, half: str = "first") -> tuple[float, int]:
        """(NLL bits, byte targets) of windows `ids` (B, L) by the model's strided inference."""
        raise OmnibyteError(f"strided inference is MEGABYTE's; this model is a {self.arch}")

    def stacks(self) -> dict[str, TransformerStack]:
        """The model's transformer stacks by the name their sizes have in its config (`cfg.NAME`, a
        StackConfig): every TransformerStack the model holds as an attribute of its own. A frozen
        part built elsewhere (BLT's entropy model, inside its patcher) is not one of them."""
        return {name: m for name, m in self.named_children() if isinstance(m, TransformerStack)}

    def layer_companions(self) -> dict[str, list[str]]:
        """Modules that belong to one layer of a stack without living inside it, by stack name: one
        qualified module name per layer of the stack, in order (BLT's decoder with read_every_layer
        has a cross-attention reader before each layer). Pruning keeps a layer's companion with it."""
        return {}

    def config_with_layers(self, n_layers: dict[str, int]):
        """This model's config with stack NAME holding n_layers[NAME] layers (the rest as they are);
        a ValueError when the model cannot have that many."""
        return dataclasses.replace(self.cfg, **{name: dataclasses.replace(getattr(self.cfg, name), n_layers=n)
                                                for name, n in n_layers.items()})

    def attention_window(self) -> int:
        """Ids of left context a position sees directly (0 = all of them): how much context a
        chunk of a long stream needs (the entropy model's entropies)."""
        return 0

    def forward_flops_per_byte(self, seq_len: int) -> float:
        """FLOPs per byte of the forward pass the trainer runs (a distillation teacher's cost)."""
        return self.flops_per_byte(seq_len)["train"] / 3.0

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
        return registry.load_model(path, map_location)
