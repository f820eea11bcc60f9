"""A built patcher: a patching rule with everything it needs to run, resolved once before any
model exists. A BLT receives one ready-made; it never reads files or decides a threshold.

For entropy patching that is a frozen entropy model (a submodule, so its weights are saved with
the model that patches with it and a checkpoint loads anywhere) and the threshold. Which
threshold applies is decided here, in `decide_threshold`, and nowhere else. Building from a run
folder (loading the entropy model) is `omnibyte.models.build_patcher`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnibyte.errors import OmnibyteError
from omnibyte.nn.cache import Rows, row_index
from omnibyte.patching.core import PatcherConfig, StreamingPatcher, patch_starts
from omnibyte.patching.entropy import calibrated, compute_entropies, ensure_entropies, entropy_from_logits


def decide_threshold(cfg: PatcherConfig, model_dir: str | Path | None = None) -> tuple[float, float | None]:
    """(threshold, the calibration's target bytes per patch or None) of an entropy patcher: the
    config's own threshold when set, else the one calibrated for the entropy model in `model_dir`
    for the patcher's mode (global or relative), if calibrated for those very weights."""
    if cfg.threshold is not None:
        return float(cfg.threshold), None
    entry = calibrated(model_dir, cfg.relative) if model_dir else None
    if entry is None:
        mode = "relative" if cfg.relative else "global"
        raise OmnibyteError(f"entropy patching needs a threshold: set patcher.threshold, or calibrate "
                            f"{model_dir or 'the entropy model'} for the {mode} mode (`omnibyte patch calibrate`)")
    return float(entry["threshold"]), entry.get("target_bytes_per_patch")


@dataclass
class PatchStream:
    """Decoding state of a patcher: the rule's own state and, for entropy patching, the entropy
    model's cache and the entropy of the id that comes next."""

    rule: StreamingPatcher
    model_state: Any = None
    next_entropy: torch.Tensor | None = None


class Patcher(nn.Module):
    def __init__(self, cfg: PatcherConfig, entropy_model: nn.Module | None = None):
        super().__init__()
        if cfg.kind == "entropy":
            if entropy_model is None:
                raise OmnibyteError("entropy patching needs its entropy model: build the model with "
                                    "omnibyte.models.build_model, which loads patcher.entropy_model")
            if cfg.threshold is None:
                raise OmnibyteError("an entropy patcher needs its threshold decided (decide_threshold)")
            entropy_model.requires_grad_(False)
            entropy_model.eval()
        elif entropy_model is not None:
            raise OmnibyteError(f"a {cfg.kind} patcher takes no entropy model")
        self.cfg = cfg
        self.entropy_model = entropy_model

    def train(self, mode: bool = True):
        super().train(mode)
        if self.entropy_model is not None:
            self.entropy_model.eval()  # frozen: never in training mode
        return self

    def forward(self, ids: torch.Tensor, entropies: torch.Tensor | None = None, ahead: bool = False) -> torch.Tensor:
        """ids (B, T) → patch starts (B, T) bool; with `ahead` (B, T+1): also whether the id after
        the last starts one (a rule that `looks_ahead` knows). `entropies` may come precomputed,
        (B, T) or (B, T+1) with the entropy of the id after the last, as the trainer passes them."""
        t = ids.shape[-1]
        if ahead and not self.cfg.looks_ahead:
            raise OmnibyteError("only entropy patching without markers or media rules knows a boundary before its id")
        if self.entropy_model is not None and entropies is None:
            entropies = compute_entropies(self.entropy_model, ids, ahead=ahead)
        if entropies is not None and entropies.dim() == 2 and entropies.shape[-1] == t + 1 and not ahead:
            entropies = entropies[:, :t]
        if ahead:
            if entropies is None or entropies.dim() != 2 or entropies.shape[-1] != t + 1:
                shape = None if entropies is None else tuple(entropies.shape)
                raise OmnibyteError(f"a patcher that looks one id ahead needs entropies (B, T+1) for ids "
                                    f"{tuple(ids.shape)}, got {shape}")
            ids = F.pad(ids, (0, 1))  # the id after the last: unknown, and no rule that looks ahead reads it
        return patch_starts(ids, self.cfg, entropies)

    def prepare_data(self, dataset) -> dict[str, str]:
        """Entropy patching: entropies of every split computed once and stored with the dataset,
        named by the entropy model's weights: {forward kwarg: aux array name}."""
        if self.entropy_model is None:
            return {}
        return {"entropies": ensure_entropies(dataset, self.entropy_model)}

    def flops_per_byte(self, seq_len: int) -> float:
        """The entropy model's inference FLOPs per byte (0 without one)."""
        return self.entropy_model.flops_per_byte(seq_len)["infer"] if self.entropy_model is not None else 0.0

    # --- decoding: boundaries decided online, from the past only ---------------------------------
    def stream(self, batch_size: int, max_len: int, device: torch.device) -> PatchStream:
        state = PatchStream(StreamingPatcher(self.cfg, batch_size, device=device))
        if self.entropy_model is not None:
            state.model_state = self.entropy_model.init_state(batch_size, max_len)
            state.next_entropy = torch.zeros(batch_size, device=device)  # entropies[:, 0] = 0 by convention
        return state

    def peek(self, state: PatchStream, rows: Rows = None) -> torch.Tensor:
        """(R,) whether the id after those pushed to `rows` (default all) starts a patch (a rule that
        `looks_ahead`)."""
        return state.rule.peek(state.next_entropy[row_index(rows, state.next_entropy.device)], rows)

    def clear_rows(self, state: PatchStream, rows: Rows = None) -> None:
        """These rows (default all) start new sequences."""
        state.rule.clear(rows)
        if self.entropy_model is not None:
            self.entropy_model.clear_rows(state.model_state, rows)
            state.next_entropy[row_index(rows, state.next_entropy.device)] = 0

    def push(self, state: PatchStream, ids: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        """Feed new ids (R, T) to `rows` (default all); → whether each starts a patch (R, T)."""
        ent = None
        if self.entropy_model is not None:  # entropy of id t comes from the logits at t - 1
            idx = row_index(rows, ids.device)
            nxt = entropy_from_logits(self.entropy_model.step(state.model_state, ids, rows))  # (R, T): of the id after
            ent = torch.cat([state.next_entropy[idx][:, None], nxt[:, :-1]], dim=1)
            state.next_entropy[idx] = nxt[:, -1]
        return torch.stack([state.rule.push(ids[:, i], None if ent is None else ent[:, i], rows)
                            for i in range(ids.shape[1])], dim=1)
