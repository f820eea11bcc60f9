"""Layer pruning: a model that keeps some layers of each transformer stack, every weight copied
from the trained model it is cut from (the first half of the Whisper-turbo recipe; training on
follows with `omnibyte train --init`).

Stacks are named as in the model's config (`OmniModel.stacks`): `stack` for the byte
transformer, `global_model` and `local_model` for MEGABYTE, `encoder`, `latent` and `decoder`
for BLT. A choice is written STACK:LAYERS, e.g. `latent:0,2` (layer indices from 0, kept in
the model's order; `decoder:` keeps none, where the stack may be empty); stacks not named
keep every layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from omnibyte.checks import load_weights
from omnibyte.errors import OmnibyteError
from omnibyte.models.base import OmniModel
from omnibyte.models.registry import build_model


def parse_keep(specs: Iterable[str]) -> dict[str, list[int]]:
    """["latent:0,2", "decoder:1"] → {"latent": [0, 2], "decoder": [1]}; one-line errors for a
    malformed choice, a layer named twice or a stack named twice."""
    keep: dict[str, list[int]] = {}
    for spec in specs:
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*:(.*)", spec)
        if m is None:
            raise OmnibyteError(f"--keep {spec!r}: expected STACK:LAYERS, e.g. latent:0,2")
        name, rest = m[1], m[2].strip()
        layers = []
        for part in rest.split(",") if rest else []:
            if not re.fullmatch(r"\s*\d+\s*", part):
                raise OmnibyteError(f"--keep {spec!r}: layers are whole numbers from 0, comma-separated "
                                    f"(got {part.strip()!r})")
            layers.append(int(part))
        dup = sorted({i for i in layers if layers.count(i) > 1})
        if dup:
            raise OmnibyteError(f"--keep {spec!r}: layer {dup[0]} named twice")
        if name in keep:
            raise OmnibyteError(f"--keep names stack {name!r} twice (give all its layers in one: {name}:0,2)")
        keep[name] = sorted(layers)
    return keep


def prune(model: OmniModel, keep: Mapping[str, Sequence[int]]) -> OmniModel:
    """A copy of `model` (in eval mode) whose stack NAME holds the layers keep[NAME] of `model`'s, in
    their order, and every other stack all of its layers. All weights are the model's own: a kept
    layer's exactly, and everything outside the stacks' layers (embeddings, norms, head, patcher,
    adapters) unchanged, so keeping every layer gives the same model."""
    stacks = model.stacks()
    if not stacks:
        raise OmnibyteError(f"a {model.arch} model declares no transformer stacks to prune")
    kept: dict[str, list[int]] = {}
    for name, layers in keep.items():
        if name not in stacks:
            raise OmnibyteError(f"--keep {name}: a {model.arch} has no stack {name!r} (its stacks: "
                                f"{', '.join(stacks)})")
        n = len(stacks[name].layers)
        bad = [i for i in layers if not 0 <= i < n]
        if bad:
            have = f"layers 0..{n - 1}" if n else "no layers"
            raise OmnibyteError(f"--keep {name}: layer {bad[0]} does not exist ({name} has {have})")
        if len(set(layers)) != len(layers):
            raise OmnibyteError(f"--keep {name}: a layer is named twice")
        kept[name] = sorted(layers)
    try:
        cfg = model.config_with_layers({name: len(layers) for name, layers in kept.items()})
    except ValueError as e:  # e.g. no latent layer left: the config's own check says what a stack needs
        empty = [name for name, layers in kept.items() if not layers]
        if empty:
            name = next((n for n in empty if f"{n}." in str(e)), empty[0])
            raise OmnibyteError(f"--keep {name}: keeps no layer, but a {model.arch}'s {name} needs at least "
                                f"one") from None
        raise OmnibyteError(f"--keep: {e}") from None

    prefix = {id(m): qualified for qualified, m in model.named_modules()}
    moves = {}  # "latent.layers." → {old index: new index}
    for name, stack in stacks.items():
        layers = kept.get(name, range(len(stack.layers)))
        moves[f"{prefix[id(stack)]}.layers."] = {old: new for new, old in enumerate(layers)}
    renames = {}  # a kept layer's companion module (model.layer_companions) goes where its layer goes
    for name, companions in model.layer_companions().items():
        for new, old in enumerate(kept.get(name, range(len(companions)))):
            renames[f"{companions[old]}."] = f"{companions[new]}."
    state = {}
    for key, value in model.state_dict().items():
        owner = next((p for p in renames if key.startswith(p)), None)
        if owner is not None or any(key.startswith(f"{c}.") for cs in model.layer_companions().values() for c in cs):
            if owner is not None:  # companions of dropped layers are dropped with them
                state[renames[owner] + key[len(owner):]] = value.detach().clone()
            continue
        head = next((p for p in moves if key.startswith(p)), None)
        if head is None:
            state[key] = value.detach().clone()
            continue
        index, _, rest = key[len(head):].partition(".")
        if int(index) in moves[head]:
            state[f"{head}{moves[head][int(index)]}.{rest}"] = value.detach().clone()
    with torch.random.fork_rng(devices=[]):  # its weights are loaded next: leave the caller's seed alone
        student = build_model(model.arch, cfg)
    load_weights(student, state, f"the pruned {model.arch}")
    return student.to(model.device).eval()
