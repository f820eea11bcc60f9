"""Threshold calibration: pick the entropy threshold that gives a target mean patch size.

BLT compares models at equal bytes per patch (≈4.5 for its Llama-3-matched runs), but the
threshold that yields a given patch size depends on the entropy model and the data; the
official code leaves it to trial and error. Here: compute the entropies of a sample once, then
binary-search the sorted candidate thresholds (the patch count only falls as the threshold
rises, even with segment markers and the max_patch_len cap), and return the one whose mean
patch length is closest to the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnibyte.data.loader import ShardDataset
from omnibyte.errors import OmnibyteError
from omnibyte.patching.core import PatcherConfig, patch_starts
from omnibyte.patching.entropy import compute_entropies, stream_entropies

DEFAULT_SAMPLE_BYTES = 256 * 1024


@dataclass
class Calibration:
    threshold: float
    bytes_per_patch: float  # achieved on the sample
    target_bytes_per_patch: float
    relative: bool
    max_patch_len: int
    n_bytes: int  # sample size

    def to_entry(self, **extra) -> dict:
        return {"threshold": self.threshold, "target_bytes_per_patch": self.target_bytes_per_patch,
                "achieved_bytes_per_patch": self.bytes_per_patch, "relative": self.relative,
                "max_patch_len": self.max_patch_len, "sample_bytes": self.n_bytes, **extra}


def sample_stream(data, sample_bytes: int = DEFAULT_SAMPLE_BYTES, split: str = "val") -> np.ndarray:
    """The first `sample_bytes` ids of a dataset split (a `ShardDataset` or its folder); falls back
    to the train split when the dataset has no (or an empty) `split`."""
    ds = data if isinstance(data, ShardDataset) else ShardDataset(data)
    for name in (split, "train"):
        if name in ds.splits and ds.n_ids(name) > 1:
            return np.asarray(ds.stream(name)[:sample_bytes], dtype=np.int64)
    raise OmnibyteError(f"dataset {ds.path} has no ids to calibrate on (split {split!r} and train are empty)")


def search_threshold(ids: torch.Tensor, entropies: torch.Tensor, target_bytes_per_patch: float,
                     relative: bool = False, max_patch_len: int = 0) -> tuple[float, float]:
    """(threshold, achieved bytes per patch) closest to the target on these ids (B, T)."""
    if target_bytes_per_patch < 1:
        raise OmnibyteError(f"target bytes per patch must be ≥ 1, got {target_bytes_per_patch}")
    if max_patch_len and target_bytes_per_patch > max_patch_len:
        raise OmnibyteError(f"target {target_bytes_per_patch} bytes per patch is above max_patch_len "
                            f"{max_patch_len}")
    h = entropies.float()
    scores = (h[:, 1:] - h[:, :-1]) if relative else h[:, 1:]
    vals = torch.unique(scores)  # sorted
    if vals.numel() == 0:
        raise OmnibyteError("calibration sample is too short (needs at least 2 ids per row)")
    vals = vals.double()
    cfg = PatcherConfig("entropy", max_patch_len=max_patch_len, relative=relative)

    def threshold(k: int) -> float:  # between candidates k and k+1: k = -1 → all start, k = n-1 → none
        lo = vals[k].item() if k >= 0 else vals[0].item() - 1.0
        hi = vals[k + 1].item() if k + 1 < len(vals) else vals[-1].item() + 1.0
        return (lo + hi) / 2

    def mean_len(k: int) -> float:
        return ids.numel() / int(patch_starts(ids, cfg, h, threshold(k)).sum())

    lo, hi = -1, len(vals) - 1  # find the first k whose mean length reaches the target
    if mean_len(hi) < target_bytes_per_patch:
        lo = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if mean_len(mid) >= target_bytes_per_patch:
            hi = mid
        else:
            lo = mid + 1
    best = min((k for k in (lo - 1, lo) if k >= -1), key=lambda k: abs(mean_len(k) - target_bytes_per_patch))
    return threshold(best), mean_len(best)


def calibrate(model: nn.Module, data, target_bytes_per_patch: float, relative: bool = False,
              max_patch_len: int = 0, sample_bytes: int = DEFAULT_SAMPLE_BYTES, split: str = "val",
              progress: bool = False) -> Calibration:
    """Calibrate on `data`: ids (B, T) tensor, a 1-D id stream (array or list), or a dataset
    (`ShardDataset` or folder: the first `sample_bytes` ids of `split`)."""
    if isinstance(data, torch.Tensor) and data.dim() == 2:
        ids = data.long()
        entropies = compute_entropies(model, ids)
    else:
        if isinstance(data, str | Path) or hasattr(data, "stream"):
            stream = sample_stream(data, sample_bytes, split)
        else:
            stream = np.asarray(data, dtype=np.int64).reshape(-1)
        entropies = torch.from_numpy(stream_entropies(model, stream, progress=progress))[None]
        ids = torch.from_numpy(stream)[None]
    thr, achieved = search_threshold(ids, entropies, target_bytes_per_patch, relative, max_patch_len)
    return Calibration(thr, achieved, target_bytes_per_patch, relative, max_patch_len, ids.numel())


def calibrate_threshold(model: nn.Module, data, target_bytes_per_patch: float, relative: bool = False,
                        max_patch_len: int = 0, **kwargs) -> float:
    """The entropy threshold whose mean patch length on `data` is closest to the target."""
    return calibrate(model, data, target_bytes_per_patch, relative, max_patch_len, **kwargs).threshold
