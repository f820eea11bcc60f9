"""Checks made before work starts: weights that are finite and fit the model they are loaded into,
a dataset whose ids the model has, and a device that exists. Each failure is one OmnibyteError
line naming the tensor, the key or the value."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from omnibyte.errors import OmnibyteError


def first_non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    """'tensor NAME holds N non-finite values (NaN or inf) of M' for the first such tensor, else None."""
    for name, t in state.items():
        if t.is_floating_point() or t.is_complex():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                return f"tensor {name} holds {int(bad.sum()):,} non-finite values (NaN or inf) of {t.numel():,}"
    return None


def check_finite_tensors(state: Mapping[str, torch.Tensor], source) -> None:
    """Refuse weights holding NaN or ±inf: a model loaded from them computes NaN, and would pass
    it off as a result. Names the first such tensor."""
    bad = first_non_finite(state)
    if bad:
        raise OmnibyteError(f"{source}: {bad}; these weights cannot be used")


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


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source) -> None:
    """`model.load_state_dict(state)`, refusing non-finite weights and naming the first tensor that
    does not fit the model (load_state_dict itself says only "Error(s) in loading state_dict")."""
    check_finite_tensors(state, source)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = first_mismatch(model, state) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsMismatch(source, detail) from None


def check_vocab(dataset, model) -> None:
    """The dataset's ids must be ids of the model: a BPE dataset of 4,096 tokens needs a model
    with model.vocab_size 4096, or the embedding lookup fails at the first step."""
    have = getattr(getattr(model, "cfg", None), "vocab_size", None)
    need = dataset.meta.get("vocab_size")
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
