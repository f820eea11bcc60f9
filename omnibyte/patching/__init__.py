"""Patching: ids → patch boundaries (static, space-like, entropy) for BLT; the entropy model's
helpers (entropies, precomputed aux arrays, calibration); and `Patcher`, a rule built with all it
needs. Pictures of patches live in `omnibyte.patching.viz`."""

from omnibyte.patching.calibrate import Calibration, calibrate, calibrate_threshold
from omnibyte.patching.core import (
    PatcherConfig,
    StreamingPatcher,
    mean_patch_len,
    patch_ids,
    patch_lengths,
    patch_starts,
)
from omnibyte.patching.entropy import (
    compute_entropies,
    ensure_entropies,
    entropy_aux_name,
    entropy_from_logits,
    stream_entropies,
)
from omnibyte.patching.patcher import Patcher, PatchStream, decide_threshold

__all__ = [
    "Calibration", "PatchStream", "Patcher", "PatcherConfig", "StreamingPatcher", "calibrate", "calibrate_threshold",
    "compute_entropies", "decide_threshold", "ensure_entropies", "entropy_aux_name", "entropy_from_logits",
    "mean_patch_len", "patch_ids", "patch_lengths", "patch_starts", "stream_entropies",
]
