"""Checks made before work starts: weights that are finite and fit the model they are loaded into,
a dataset whose ids the model has, and a device that exists. Each failure is one OmnibyteError
line naming the tensor, the key or the value."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from omnibyte.errors import OmnibyteError

# values checked at a time: the check's temporaries stay a few tens of MiB for a tensor of any size
_CHUNK = 1 << 22
# safetensors dtype names of the floating-point types torch reads
_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _count_non_finite(values: torch.Tensor) -> int:
    """NaN and ±inf values in a 1-d tensor, a chunk at a time."""
    bad = 0
    for chunk in values.split(_CHUNK):
        ok = torch.isfinite(chunk)
        if not bool(ok.all()):
            bad += int(chunk.numel() - ok.sum())
    return bad


def _non_finite_message(name: str, bad: int, numel: int) -> str:
    return f"tensor {name} holds {bad:,} non-finite values (NaN or inf) of {numel:,}"


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """'tensor NAME holds N non-finite values (NaN or inf) of M' for the first such tensor, else None."""
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            bad = _count_non_finite(t.detach().reshape(-1))
            if bad:
                return _non_finite_message(name, bad, t.numel())
    return None


def first_non_finite_file(path: str | Path) -> str | None:
    """first_non_finite for the tensors of a safetensors file, read through one reused buffer. It
    costs a pass over the file and no memory beyond the buffer, and it leaves the pages of a
    memory-mapped load (safetensors' `load_file`) unread: a BLT's hash n-gram tables, most of an
    imported model's bytes, are then read only where the model looks rows up."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        header.pop("__metadata__", None)
        buffer = bytearray(_CHUNK * 8)
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            dtype = _SAFETENSORS_FLOATS.get(info["dtype"])
            if dtype is None:
                continue
            start, end = info["data_offsets"]
            f.seek(8 + size + start)
            width, left, bad = dtype.itemsize, end - start, 0
            while left:
                got = f.readinto(memoryview(buffer)[: min(left, len(buffer))])
                if not got or got % width:
                    raise OmnibyteError(f"{path}: tensor {name} is cut short; the file is truncated")
                bad += _count_non_finite(torch.frombuffer(buffer, dtype=dtype, count=got // width))
                left -= got
            if bad:
                return _non_finite_message(name, bad, (end - start) // width)
    return None


def _refuse_non_finite(source, bad: str | None) -> None:
    if bad:
        raise OmnibyteError(f"{source}: {bad}; these weights cannot be used")


def check_finite_tensors(state: Mapping[str, torch.Tensor], source) -> None:
    """Refuse weights holding NaN or ±inf: a model loaded from them computes NaN, and would pass
    it off as a result. Names the first such tensor."""
    _refuse_non_finite(source, first_non_finite(state))


def check_finite_file(path: str | Path) -> None:
    """check_finite_tensors for a safetensors file, without reading its tensors into memory."""
    _refuse_non_finite(path, first_non_finite_file(path))


def first_mismatch(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """The first tensor `state` lacks, has in another shape, or has beyond what `model` holds."""
    expected = model.state_dict()
    for name, t in expected.items():
        if name not in state:
            return f"it has no tensor {name} (shape {tuple(t.shape)})"
        if tuple(state[name].shape) != tuple(t.shape):
            return f"tensor {name} has shape {tuple(state[name].shape)}, the model needs {tuple(t.shape)}"
    for name in state:
        if name not in expected:
            return f"it holds tensor {name}, which the model does not have"
    return None


class WeightsMismatch(OmnibyteError):
    """Weights that do not fit the model built from a config; `detail` names the first tensor."""

    def __init__(self, source, detail: str):
        super().__init__(f"weights in {source} do not match the model's config: {detail}")
        self.detail = detail


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source, assign: bool = False,
                 checked: bool = False) -> None:
    """`model.load_state_dict(state)`, refusing non-finite weights and naming the first tensor that
    does not fit the model (load_state_dict itself says only "Error(s) in loading state_dict").
    `assign`: the tensors of `state` become the model's (a model built on the meta device).
    `checked`: the caller has already found them finite (first_non_finite_file)."""
    if not checked:
        check_finite_tensors(state, source)
    try:
        model.load_state_dict(state, assign=assign)
    except RuntimeError as e:
        detail = first_mismatch(model, state) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsMismatch(source, detail) from None


def check_vocab(dataset, model) -> None:
    """The dataset's ids must be ids of the model: a BPE dataset of 4,096 tokens needs a model
    with model.vocab_size 4096, or the embedding lookup fails at the first step."""
    have = getattr(getattr(model, "cfg", None), "vocab_size", None)
    need = getattr(dataset, "vocab_needed", dataset.meta.get("vocab_size"))
    if isinstance(need, int) and isinstance(have, int) and need > have:
        kind = "BPE tokens" if dataset.meta.get("tokenizer") else "ids"
        raise OmnibyteError(f"dataset {dataset.path} holds {kind} of a vocabulary of {need:,}, but the model's "
                            f"vocab_size is {have:,} (a model for it is trained with --model.vocab_size {need})")


def resolve_device(setting: str | None) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`, … as a torch device that exists here; None: CUDA when available."""
    if setting is None or setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except (RuntimeError, ValueError):
        raise OmnibyteError(f"unknown device {setting!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OmnibyteError(f"device {setting!r} asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OmnibyteError(f"device {setting!r} asked for, but this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise OmnibyteError(f"device {setting!r} asked for, but MPS is not available on this machine")
    elif device.type != "cpu":
        raise OmnibyteError(f"unsupported device {setting!r} (use cpu, cuda or cuda:N)")
    return device
