"""Model registry: arch name → model class (with its config dataclass), and the one place that
composes a model from a config: it builds the model's patcher first (loading an entropy model
and deciding its threshold), so no model constructor reads files or changes its own config. The
trainer and the CLI never import a model by hand; model modules are imported on first use.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from omnibyte.checks import check_finite_file, load_weights
from omnibyte.config import from_dict
from omnibyte.errors import OmnibyteError
from omnibyte.files import CONFIG, WEIGHTS, resolve_model_dir
from omnibyte.models import compat
from omnibyte.patching import Patcher, PatcherConfig, decide_threshold

if TYPE_CHECKING:
    from omnibyte.models.base import OmniModel

_MODULES = {
    "transformer": "omnibyte.models.transformer",
    "megabyte": "omnibyte.models.megabyte",
    "blt": "omnibyte.models.blt",
}
_ARCHS: dict[str, type] = {}


def register(cls):
    """Class decorator: make `cls` (an OmniModel with `arch` and `config_cls`) buildable by name."""
    _ARCHS[cls.arch] = cls
    return cls


def get_model_class(arch: str):
    if arch not in _ARCHS and arch in _MODULES:
        try:
            importlib.import_module(_MODULES[arch])
        except ModuleNotFoundError as e:
            if e.name != _MODULES[arch]:
                raise
    if arch not in _ARCHS:
        known = ", ".join(sorted(set(_MODULES) | set(_ARCHS)))
        raise OmnibyteError(f"unknown model arch '{arch}' (known: {known})")
    return _ARCHS[arch]


def build_config(arch: str, data: dict):
    return from_dict(get_model_class(arch).config_cls, data, prefix="model")


def build_patcher(cfg: PatcherConfig, entropy_model: OmniModel | None = None) -> Patcher:
    """A ready patcher from its config. Entropy patching takes its entropy model from, in order:
    `entropy_model` given; `cfg.entropy_model_config` (a saved model being loaded: the weights follow
    in its state dict); the run or model folder `cfg.entropy_model`, whose calibration may give the
    threshold (`decide_threshold`). The patcher's config comes back resolved: threshold, the
    entropy model's config, and the calibration's bytes per patch where the threshold came from it."""
    if cfg.kind != "entropy":
        return Patcher(cfg)
    source = None
    if entropy_model is None and cfg.entropy_model_config:
        c = cfg.entropy_model_config
        if not isinstance(c, dict) or not isinstance(c.get("arch"), str):
            raise OmnibyteError("patcher.entropy_model_config must hold the entropy model's "
                                "{'arch': ..., 'model': {...}}")
        with torch.random.fork_rng(devices=[]):  # its weights are loaded next: leave the caller's seed alone
            entropy_model = build_model(c["arch"], c.get("model", {}))
    elif entropy_model is None:
        if not cfg.entropy_model:
            raise OmnibyteError("entropy patching needs patcher.entropy_model (a trained entropy model's run or "
                                "model folder, e.g. trained with configs/entropy-small.toml)")
        try:
            entropy_model = load_model(cfg.entropy_model)
        except OmnibyteError as e:
            raise OmnibyteError(f"patcher.entropy_model: {e} (train an entropy model first, e.g. "
                                f"configs/entropy-small.toml)") from None
        source = cfg.entropy_model
    threshold, target = decide_threshold(cfg, source)
    resolved = dataclasses.replace(cfg, threshold=threshold, entropy_model_config=entropy_model.config_dict(),
                                   bytes_per_patch=cfg.bytes_per_patch or float(target or 0.0))
    return Patcher(resolved, entropy_model)


def build_model(arch: str, data: dict | object, entropy_model: OmniModel | None = None) -> OmniModel:
    """The model `arch` from a config (a dict or the arch's config dataclass). A model whose config
    has a `patcher` gets it built first; its config then holds the resolved patcher config."""
    cls = get_model_class(arch)
    cfg = data if isinstance(data, cls.config_cls) else build_config(arch, data)
    if not isinstance(getattr(cfg, "patcher", None), PatcherConfig):
        return cls(cfg)
    patcher = build_patcher(cfg.patcher, entropy_model)
    return cls(dataclasses.replace(cfg, patcher=patcher.cfg), patcher=patcher)


def read_config(path: Path) -> dict:
    """A model folder's config.json ({"arch", "model"}), translated from older versions' layout."""
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OmnibyteError(f"corrupt model config {path / CONFIG}: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), str):
        raise OmnibyteError(f"model config {path / CONFIG} names no 'arch'")
    model = cfg.get("model", {})
    if not isinstance(model, dict):
        raise OmnibyteError(f"model config {path / CONFIG}: 'model' must be a table")
    return {"arch": cfg["arch"], "model": compat.model_config(cfg["arch"], model)}


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> OmniModel:
    """Any omnibyte model from a model folder or a run folder (its checkpoint/), in eval mode."""
    path = resolve_model_dir(path)
    cfg = read_config(path)
    # built on the meta device (no memory, no random init) and given the loaded tensors themselves:
    # loading holds one copy of the weights, not two (an imported BLT-1B is 18 GB in fp32)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(cfg["arch"], cfg["model"])
    try:
        # on the CPU the tensors stay mapped from the file; checked through a buffer, not the
        # mapping, so a page of weights is read only when the model reads it
        state = load_file(str(path / WEIGHTS), device=str(map_location))
        check_finite_file(path / WEIGHTS)
    except (SafetensorError, OSError) as e:
        raise OmnibyteError(f"corrupt or unreadable weights {path / WEIGHTS}: {e}") from None
    load_weights(model, compat.state_dict(cfg["arch"], state), path / WEIGHTS, assign=True, checked=True)
    return model.to(map_location).eval()
