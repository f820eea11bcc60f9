"""Patching: ids → patch boundaries (static, space-like, entropy) for BLT, plus the entropy
model's helpers (entropies, precomputed aux arrays, threshold calibration). Pictures of patches
live in `omnibyte.patching.viz`."""

from omnibyte.patching.calibrate import Calibration, calibrate, calibrate_threshold
from omnibyte.patching.core import (
    PatcherConfig,
    StreamingPatcher,
    mean_patch_len,
    patch_ids,
    patch_lengths,
    patch_starts,
    segment_starts,
)
from omnibyte.patching.entropy import (
    compute_entropies,
    ensure_entropies,
    entropy_aux_name,
    entropy_from_logits,
    load_entropy_model,
    stream_entropies,
)

__all__ = [
    "Calibration", "PatcherConfig", "StreamingPatcher", "calibrate", "calibrate_threshold", "compute_entropies",
    "ensure_entropies", "entropy_aux_name", "entropy_from_logits", "load_entropy_model", "mean_patch_len",
    "patch_ids", "patch_lengths", "patch_starts", "segment_starts", "stream_entropies",
]
