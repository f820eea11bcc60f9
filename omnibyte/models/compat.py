"""Configs and weights saved by earlier omnibyte versions, translated to today's layout on load,
so old checkpoints and run folders keep working. Every rule names the version change it undoes.

- One naming scheme for sizes: a stack's sizes are nested (`dim`, `n_layers`, `n_heads`, `window`).
  BLT had `dim_local`/`dim_global` beside its stacks; MEGABYTE flat `global_dim`, `local_layers`...
- BLT's hash n-gram settings moved into `ngrams` (with the table optimiser settings that were
  `train.sparse_embeddings`, `train.table_lr_scale`, `train.table_weight_decay`); its entropy
  model and FLOPs patch size into the patcher; its media features became input adapters.
- MEGABYTE checkpoints saved before `patch_proj`, `carry_byte`, `token_shift` existed were trained
  with the paper's layout (all three off).
"""

from __future__ import annotations

from omnibyte.errors import OmnibyteError

_MEGABYTE_FLAGS_BEFORE = {"patch_proj": False, "carry_byte": False, "token_shift": False}
_BLT_NGRAMS = {"ngram_sizes": "sizes", "hash_buckets": "buckets", "hash_base": "base", "ngram_dropout": "dropout"}
_TABLE_TRAIN = {"sparse_embeddings": "sparse", "table_lr_scale": "lr_scale", "table_weight_decay": "weight_decay"}
_REMOVED_BLT = ("media_proj", "media_pos")  # experiments that met no target and were deleted


def model_config(arch: str, data: dict) -> dict:
    """A saved model config (config.json's "model", run.json's "model" less "arch") in today's layout."""
    if arch == "blt" and "dim_local" in data:
        return _blt(data)
    if arch == "megabyte" and "global_dim" in data:
        return _megabyte(data)
    return data


def _blt(old: dict) -> dict:
    d = dict(old)
    for key in _REMOVED_BLT:
        if d.pop(key, 0):
            raise OmnibyteError(f"this BLT was trained with model.{key}, which omnibyte no longer has; "
                                f"retrain it without {key} (or load it with omnibyte ≤ 0.1 at commit b460376)")
    local, glob = d.pop("dim_local"), d.pop("dim_global", 64)
    d["encoder"] = {**d.get("encoder", {}), "dim": local}
    d["decoder"] = {**d.get("decoder", {}), "dim": local}
    d["latent"] = {**d.get("latent", {}), "dim": glob}
    d["ngrams"] = {new: d.pop(old_key) for old_key, new in _BLT_NGRAMS.items() if old_key in d}
    patcher = dict(d.get("patcher", {}))
    if d.get("bytes_per_patch"):
        patcher["bytes_per_patch"] = d["bytes_per_patch"]
    if d.get("entropy_model_config"):
        patcher["entropy_model_config"] = d["entropy_model_config"]
    d.pop("bytes_per_patch", None)
    d.pop("entropy_model_config", None)
    d["patcher"] = patcher
    adapters = {}
    conv, kernel = d.pop("media_conv", 0), d.pop("media_conv_kernel", 5)
    if conv:
        adapters["media_conv"] = {"channels": conv, "kernel": kernel}
    width, gain = d.pop("image_encoder", 0), d.pop("image_encoder_gain", 0.3)
    if width:
        adapters["image_encoder"] = {"width": width, "gain": gain}
    d["adapters"] = adapters
    return d


def _megabyte(old: dict) -> dict:
    d = {**_MEGABYTE_FLAGS_BEFORE, **old}
    for stage in ("global", "local"):
        sizes = {"dim": d.pop(f"{stage}_dim", None), "n_layers": d.pop(f"{stage}_layers", None),
                 "n_heads": d.pop(f"{stage}_heads", None)}
        d[f"{stage}_model"] = {k: v for k, v in sizes.items() if v is not None}
    return d


def state_dict(arch: str, state: dict) -> dict:
    """Saved weights under today's module names (a BLT's media features and entropy model moved)."""
    if arch != "blt":
        return state
    moves = (("media_conv.", "adapters.media_conv."), ("image_encoder.", "adapters.image_encoder."),
             ("entropy_model.", "patcher.entropy_model."))
    out = {}
    for key, value in state.items():
        for old, new in moves:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def run_config(raw: dict) -> dict:
    """A saved run.json ({"model": {"arch", ...}, "data", "train"}) in today's layout: the model
    config as above, and BLT table settings moved from [train] to the model's `ngrams`."""
    model = raw.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("arch"), str):
        return raw
    arch = model["arch"]
    body = model_config(arch, {k: v for k, v in model.items() if k != "arch"})
    train = dict(raw.get("train", {})) if isinstance(raw.get("train"), dict) else raw.get("train")
    if isinstance(train, dict):
        moved = {new: train.pop(old) for old, new in _TABLE_TRAIN.items() if old in train}
        if arch == "blt" and moved:
            body = {**body, "ngrams": {**moved, **body.get("ngrams", {})}}
    return {**raw, "model": {"arch": arch, **body}, "train": train}
