"""The teacher of knowledge distillation (`train.distill_from`, the Distil-Whisper recipe): a
trained model run beside the student in inference mode — eval mode (no dropout), no gradients,
on the student's device under the same autocast — whose next-id logits the student learns from
(`omnibyte.nn.distill_loss`). It never changes, so a resumed run sees the same targets; the
checkpoint records a digest of its weights, and a resume with another teacher is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from omnibyte.checks import check_vocab
from omnibyte.errors import OmnibyteError
from omnibyte.files import WEIGHTS, resolve_model_dir
from omnibyte.models.base import OmniModel
from omnibyte.models.registry import load_model


def weights_digest(model_dir) -> str:
    """SHA-256 of a model folder's weights file."""
    h = hashlib.sha256()
    with open(model_dir / WEIGHTS, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


class Teacher:
    def __init__(self, path: str, student: OmniModel, device: torch.device):
        try:
            model_dir = resolve_model_dir(path)
            self.model = load_model(model_dir, map_location=device)  # in eval mode
        except OmnibyteError as e:
            raise OmnibyteError(f"train.distill_from: {e}") from None
        have, need = self.model.cfg.vocab_size, student.cfg.vocab_size
        if have != need:
            raise OmnibyteError(f"train.distill_from {path}: the teacher's vocabulary has {have:,} ids, the "
                                f"student's {need:,}: distillation compares their distributions over the same ids")
        self.model.requires_grad_(False)
        self.path, self.digest = path, weights_digest(model_dir)
        self.extras: dict[str, str] = {}

    def prepare_data(self, dataset) -> dict[str, str]:
        """What the teacher adds to the dataset once (a BLT teacher's entropies): {kwarg: aux name}."""
        check_vocab(dataset, self.model)
        self.extras = self.model.prepare_data(dataset)
        return self.extras

    def flops_per_byte(self, seq_len: int) -> float:
        """Its forward pass per training byte: what distillation adds to a step's cost."""
        return self.model.forward_flops_per_byte(seq_len)

    @torch.no_grad()
    def logits(self, batch: dict, device: torch.device, autocast: Callable) -> torch.Tensor:
        """(B, T, V) next-id logits of the batch's inputs ids[:, :-1]."""
        ids = batch["ids"][:, :-1].to(device, non_blocking=True)
        kwargs = {k: batch[v].to(device) for k, v in self.extras.items()}  # whole: (B, T+1), as the trainer passes
        with autocast():
            return self.model(ids, **kwargs).logits
