"""Where a model's patches fall in an answer: the `omnibyte patch` picture for the web page.

A BLT shows its own patcher's boundaries (with its entropy model's entropies when it has one),
MEGABYTE its fixed patches of P bytes counted from the document's start. A byte transformer has
no patches; it is its own entropy model, so it shows entropy patches at the threshold calibrated
for it (`omnibyte patch calibrate`), or, uncalibrated, space-like patches, with its entropies.
"""

from __future__ import annotations

from pathlib import Path

import torch

from omnibyte.models import OmniModel
from omnibyte.patching import Patcher, PatcherConfig, compute_entropies, patch_starts
from omnibyte.patching.entropy import calibrated
from omnibyte.patching.viz import render_html


@torch.inference_mode()
def patch_view(model: OmniModel, ids: list[int], start: int, model_dir: str | Path | None = None) -> dict:
    """Patches of ids[start:] (an answer) read in the context of ids[:start] (its prompt) →
    {"html": a self-contained page, "rule", "bytes", "patches"}."""
    x = torch.tensor([ids], device=model.device)
    patcher = getattr(model, "patcher", None)
    threshold = None
    if isinstance(patcher, Patcher):
        entropies = compute_entropies(patcher.entropy_model, x) if patcher.entropy_model is not None else None
        starts = patcher(x, entropies)
        cfg = patcher.cfg
        rule = f"{model.arch}'s {cfg.kind} patcher"
        threshold = cfg.threshold
    else:
        entropies = compute_entropies(model, x)
        if model.arch == "megabyte":
            p = model.cfg.patch_size
            starts = torch.arange(x.shape[1], device=x.device)[None] % p == 0
            rule = f"MEGABYTE's fixed patches of {p}"
        else:
            entry = calibrated(model_dir) if model_dir is not None else None
            if entry is not None:
                threshold = float(entry["threshold"])
                starts = patch_starts(x, PatcherConfig("entropy", threshold=threshold), entropies)
                rule = "entropy patches, the model as its own entropy model"
            else:
                starts = patch_starts(x, PatcherConfig("space"))
                rule = "space-like patches (the model is not calibrated as an entropy model)"
    answer = ids[start:]
    ans_starts = starts[0, start:].tolist()
    if ans_starts:
        ans_starts[0] = True  # the answer's first byte opens its first patch in the picture
    ents = entropies[0, start:].tolist() if entropies is not None else None
    n_patches = sum(ans_starts)
    html = render_html(answer, ans_starts, ents, threshold, title=f"patches of the answer: {rule}")
    return {"html": html, "rule": rule, "bytes": len(answer), "patches": n_patches}
