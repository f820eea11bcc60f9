"""The entropy model's side of BLT patching: next-byte entropies, an entropy model's calibration
file, and entropies precomputed once per dataset split.

Convention (every caller relies on it): entropies[:, t] is the entropy, in nats, of the entropy
model's distribution for id t given ids < t, i.e. computed from its logits at position t-1;
entropies[:, 0] = 0. The entropy model is any OmniModel, normally a small byte `Transformer`
with a sliding window (BLT §2.3 / §4.3: window 512).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnibyte.errors import OmnibyteError
from omnibyte.files import WEIGHTS, resolve_model_dir, write_json_atomic
from omnibyte.progress import progress as tqdm

CALIBRATION_FILE = "patching.json"
DEFAULT_CHUNK = 2048  # new positions per forward when streaming a long split with full attention


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(..., V) logits → (...) entropy in nats, float32. -inf logits (masked ids) count as p = 0."""
    p = torch.softmax(logits.float(), dim=-1)
    return -torch.special.xlogy(p, p).sum(-1)


@torch.no_grad()
def compute_entropies(model: nn.Module, ids: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """ids (B, T) → entropies (B, T) float32 on ids' device, one forward per `batch_size` rows.

    Each row is read from its own start, so position t sees ids[:, :t] only (for a long stream
    use `stream_entropies`, which gives every position its full window of context).
    """
    if ids.dim() != 2:
        raise OmnibyteError(f"compute_entropies expects ids of shape (B, T), got {tuple(ids.shape)}")
    out = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    device = model.device
    for b in range(0, ids.shape[0], batch_size):
        logits = model(ids[b : b + batch_size].to(device)).logits  # (b, T, V)
        out[b : b + batch_size, 1:] = entropy_from_logits(logits[:, :-1]).to(ids.device)
    return out


def model_context(model: nn.Module) -> int:
    """Ids of left context a chunk needs: the entropy model's attention window (0 = full attention:
    no limit); `model` is an omnibyte model."""
    return model.attention_window()


@torch.no_grad()
def stream_entropies(model: nn.Module, stream, chunk_len: int | None = None, context: int | None = None,
                     batch_size: int = 8, progress: bool = False, desc: str = "entropies") -> np.ndarray:
    """Entropies (N,) float32 of a long 1-D id stream, in overlapping chunks run in batches.

    Chunk k predicts positions [k·C, (k+1)·C) from the ids [k·C - context, (k+1)·C), so every
    position sees at least `context` earlier ids (default: the model's attention window, as in
    BLT; with full attention, one chunk). With a sliding-window stack of L layers this equals one
    forward over the whole stream once context ≥ L·(window-1) + 1 (the receptive field of the
    logits at p-1). With context = window the first ids of a chunk see their full window directly
    but slightly less through the deeper layers; the entropy model was trained on windows that
    start cold, so this is a small effect, and it keeps the cost near one forward per byte.
    """
    n = len(stream)
    out = np.zeros(n, np.float32)
    if n < 2:
        return out
    window = model_context(model)
    if chunk_len is None:
        # attention runs with an explicit (chunk+context)² mask, so with a window the best chunk
        # is a small multiple of it; with full attention, a long one
        chunk_len = max(2 * window, 512) if window else DEFAULT_CHUNK
    if context is None:
        context = window or chunk_len
    device = model.device
    # (input start, first kept position, end) per chunk; regular chunks share one length
    spans = [(max(0, s - context), s, min(n, s + chunk_len)) for s in range(0, n, chunk_len)]
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:
        groups.setdefault(span[2] - span[0], []).append(span)
    bar = tqdm(total=n, desc=desc, unit="B", unit_scale=True, disable=not progress, leave=False)
    for group in groups.values():
        for g in range(0, len(group), batch_size):
            part = group[g : g + batch_size]
            x = torch.from_numpy(np.stack([np.asarray(stream[a:e], dtype=np.int64) for a, _, e in part]))
            h = entropy_from_logits(model(x.to(device)).logits[:, :-1]).cpu().numpy()  # (b, length-1)
            for row, (a, s, e) in enumerate(part):
                lo = max(s, 1)  # position p comes from logits at p-1, i.e. h[:, p-1-a]
                out[lo:e] = h[row, lo - 1 - a : e - 1 - a]
                bar.update(e - s)
    bar.close()
    return out


# --------------------------------------------------------------------------- entropy model on disk


def weights_fingerprint(path: str | Path) -> str:
    """Short sha256 of a model dir's weights file: names the entropy model in caches and calibration."""
    file = resolve_model_dir(path) / WEIGHTS
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def read_calibration(path: str | Path) -> dict:
    """The calibration file of a model dir ({"global": {...}, "relative": {...}}), {} when none."""
    file = resolve_model_dir(path) / CALIBRATION_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (ValueError, OSError) as e:
        raise OmnibyteError(f"corrupt calibration file {file}: {e}") from None
    if not isinstance(data, dict):
        raise OmnibyteError(f"corrupt calibration file {file}: expected a JSON object")
    return data


def write_calibration(path: str | Path, mode: str, entry: dict) -> Path:
    """Store one mode's calibration ("global" or "relative") atomically, keeping the other."""
    model_dir = resolve_model_dir(path)
    data = read_calibration(model_dir)
    data[mode] = {**entry, "weights": weights_fingerprint(model_dir)}
    file = model_dir / CALIBRATION_FILE
    write_json_atomic(file, data)
    return file


def calibrated(path: str | Path, relative: bool = False) -> dict | None:
    """The calibration entry of a model dir for the mode ({"threshold", "target_bytes_per_patch", ...}),
    None when there is none or it was calibrated for other weights."""
    entry = read_calibration(path).get("relative" if relative else "global")
    if not isinstance(entry, dict) or "threshold" not in entry:
        return None
    if entry.get("weights") != weights_fingerprint(path):
        return None
    return entry


# --------------------------------------------------------------------------- precomputed entropies


def entropy_aux_name(model: nn.Module, model_path: str | Path | None = None) -> str:
    """Aux array name for entropies from this entropy model: identified by its weights."""
    if model_path is not None:
        return f"entropy-{weights_fingerprint(model_path)}"
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return f"entropy-{h.hexdigest()[:16]}"


def ensure_entropies(dataset, model: nn.Module, model_path: str | Path | None = None,
                     splits: list[str] | None = None, chunk_len: int | None = None,
                     batch_size: int = 8, progress: bool = True) -> str:
    """Precompute entropies for every split (or `splits`) of a `ShardDataset` once per entropy
    model and store them as a float16 aux array; returns the aux name to ask the loader for.

    A split that already has the array is skipped, so calling it again costs nothing. Run it on
    one process only (rank 0) before the others read the dataset.
    """
    name = entropy_aux_name(model, model_path)
    for split in splits if splits is not None else dataset.splits:
        if dataset.has_aux(split, name):
            continue
        h = stream_entropies(model, dataset.stream(split), chunk_len=chunk_len, batch_size=batch_size,
                             progress=progress, desc=f"entropies {split}")
        dataset.write_aux(split, name, h.astype(np.float16))
    return name
