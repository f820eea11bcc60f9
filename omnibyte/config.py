"""Config plumbing: dataclasses ⇄ dicts, TOML files, dotted command-line overrides.

Defaults → config file → `--section.key value` overrides, as in Meta Lingua. Every component
owns a small dataclass; this module only converts and validates, so an unknown key or a value
of the wrong type is a one-line `OmnibyteError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

from omnibyte.errors import OmnibyteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except OmnibyteError as e:
                errors.append(str(e))
        raise OmnibyteError(errors[0] if errors else f"bad value for '{key}'")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise OmnibyteError(f"'{key}' must be a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise OmnibyteError(f"'{key}' must be a table, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise OmnibyteError(f"'{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:  # beyond what torch and numpy take as a size or a seed
                raise OmnibyteError(f"'{key}' is out of range, got {value}")
            return value
        raise OmnibyteError(f"'{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN slips through every range check (all comparisons fail)
                raise OmnibyteError(f"'{key}' must be a finite number, got {value!r}")
            return float(value)
        raise OmnibyteError(f"'{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise OmnibyteError(f"'{key}' must be a string, got {value!r}")
    if tp is dict or typing.get_origin(tp) is dict:
        if isinstance(value, dict):
            return value
        raise OmnibyteError(f"'{key}' must be a table, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a dict, checking keys and types; nested dataclasses recurse."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        if k not in names:
            known = ", ".join(sorted(names))
            raise OmnibyteError(f"unknown config key '{key}' (known here: {known})")
        kwargs[k] = _coerce(v, hints[k], key)
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, OmnibyteError):
            raise
        raise OmnibyteError(f"bad config{' in ' + prefix if prefix else ''}: {e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) → plain dict, JSON-serialisable."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_toml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise OmnibyteError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise OmnibyteError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise OmnibyteError(f"config file {p} is not valid TOML: {e}") from None


def parse_value(text: str) -> Any:
    """A command-line value as TOML would read it (`300`, `3e-4`, `true`, `[3,4]`), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(argv: list[str]) -> dict:
    """`["--train.steps", "300", "--model.dim=64"]` → nested dict {"train": {"steps": 300}, ...}."""
    out: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise OmnibyteError(f"unexpected argument '{arg}' (overrides look like --section.key value)")
        if "=" in arg:
            key, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise OmnibyteError(f"override '{arg}' has no value")
            key, text = arg[2:], argv[i + 1]
            i += 2
        parts = key.replace("-", "_").split(".")
        if len(parts) < 2:
            raise OmnibyteError(f"override '--{key}' must name a section, e.g. --train.steps")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise OmnibyteError(f"override '--{key}' conflicts with another override")
        node[parts[-1]] = parse_value(text)
    return out


def merge(base: dict, update: dict) -> dict:
    """Deep merge: tables merge key by key, other values replace."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def dump_json(obj: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(obj), indent=2) + "\n")
