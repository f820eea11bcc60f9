"""Model registry: arch name → model class (with its config dataclass). The trainer and the CLI
never import a model by hand; model modules are imported on first use."""

from __future__ import annotations

import importlib

from omnibyte.config import from_dict
from omnibyte.errors import OmnibyteError

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


def saved_config(arch: str, data: dict) -> dict:
    """A model config read back from disk (config.json, run.json): keys added to the config after
    it was saved take the values the saving version used (the class's `saved_defaults`), not
    today's defaults, so older checkpoints load as the model they were trained as."""
    if not isinstance(data, dict):
        return data
    legacy = getattr(get_model_class(arch), "saved_defaults", {})
    return {**{k: v for k, v in legacy.items() if k not in data}, **data}


def build_config(arch: str, data: dict):
    return from_dict(get_model_class(arch).config_cls, data, prefix="model")


def build_model(arch: str, data: dict | object):
    cls = get_model_class(arch)
    cfg = data if isinstance(data, cls.config_cls) else build_config(arch, data)
    return cls(cfg)
