"""BLT checkpoints in and out: the released BLTs (Meta's format, transformers' format) become
omnibyte run folders computing the same function, and omnibyte BLTs become transformers folders.

    import_checkpoint("hf", SRC, RUN)    # SRC: config.json (model_type "blt") + model.safetensors
    import_checkpoint("blt", SRC, RUN)   # SRC: params.json + consolidated.pth, and its entropy_model/
    export_checkpoint("hf", RUN, DIR)    # DIR loads with transformers' BltForCausalLM.from_pretrained

An imported run folder holds `checkpoint/` (config.json + model.safetensors, fp32) and a run.json
with the model's config only: it evaluates and generates as it is, and `omnibyte train --resume RUN
--data DIR` fine-tunes it from step 0. Every check that can fail (formats, settings, file presence,
the output folder) runs before the weights are read. Nothing here downloads anything.

`convert` holds the mapping and why it preserves the function; `official` reads Meta's folders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from omnibyte.checks import check_finite_tensors, first_mismatch
from omnibyte.errors import OmnibyteError
from omnibyte.files import (
    CHECKPOINT,
    CONFIG,
    WEIGHTS,
    check_output_dir,
    read_json_object,
    remove,
    replace_dir,
    resolve_model_dir,
    temp_sibling,
)
from omnibyte.interop import official
from omnibyte.interop.convert import (
    check_exportable,
    omnibyte_config,
    omnibyte_weights,
    transformers_config,
    transformers_weights,
)
from omnibyte.models.registry import build_model, load_model, read_config

FORMATS = {"hf": "a transformers BLT folder (config.json + model.safetensors)",
           "blt": "Meta's BLT folder (params.json + consolidated.pth, and its entropy_model/ folder)"}
HF_INDEX = "model.safetensors.index.json"  # a sharded transformers checkpoint


def _format(fmt: str, allowed) -> None:
    if fmt not in allowed:
        raise OmnibyteError(f"unknown format {fmt!r} (known: {', '.join(allowed)})")


def import_checkpoint(fmt: str, src: str | Path, out: str | Path, entropy_model: str | Path | None = None,
                      quiet: bool = True) -> Path:
    """Import the BLT at `src` (format "hf" or "blt") into the run folder `out`; returns `out`."""
    _format(fmt, FORMATS)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise OmnibyteError(f"no such folder: {src}")
    if fmt == "blt" and entropy_model is None:
        entropy_model = official.entropy_folder(src, None)
    elif fmt == "hf" and entropy_model is not None:
        raise OmnibyteError("a transformers BLT folder holds its entropy model: give no --entropy-model")
    check_output_dir(out)
    if (out / CHECKPOINT).exists() or (out / "run.json").exists():
        raise OmnibyteError(f"{out} already holds a run: choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise OmnibyteError(f"{out} is a folder with other files in it: give a new or empty one")
    # 1. settings: everything that can be refused is refused before any weight is read (tensors
    # are opened lazily or memory-mapped: only their names and shapes are read here)
    if fmt == "hf":
        hf_config = read_json_object(src / CONFIG, "a transformers BLT folder: config.json + model.safetensors")
        omnibyte_config(hf_config)  # its settings first, then its files
        tensors = LazyTensors(_hf_weight_files(src))
    else:
        entropy_model = Path(entropy_model)
        hf_config = official.read_config(src, entropy_model)
        tensors = official.read_weights(src, entropy_model, hf_config)  # completes hf_config's MLP widths
    config = omnibyte_config(hf_config)
    model = _meta_model(config, src)
    # 2. weights, converted one tensor at a time
    if not quiet:
        print(f"converting {len(tensors):,} tensors from {src} ...", flush=True)
    state = omnibyte_weights(hf_config, tensors)
    mismatch = first_mismatch(model, state)
    if mismatch:
        raise OmnibyteError(f"the weights in {src} do not fit their config: {mismatch}")
    check_finite_tensors(state, src)
    # 3. the run folder, written whole beside `out` and then moved into place: checkpoint/ and a
    # run.json holding the model's config only (data and training settings come with `train --resume`)
    tmp = temp_sibling(out)
    try:
        _write_model_dir(tmp / CHECKPOINT, model.config_dict(), state)
        run = {"model": {"arch": "blt", **model.config_dict()["model"]}}
        (tmp / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        replace_dir(tmp, out)
    finally:
        remove(tmp)
    return out


def export_checkpoint(fmt: str, run: str | Path, out: str | Path) -> Path:
    """Write the omnibyte BLT in `run` (a run or model folder) as a transformers BLT folder `out`."""
    _format(fmt, {"hf": FORMATS["hf"]})
    out = Path(out)
    check_output_dir(out)
    if out.is_dir() and any(out.iterdir()) and not _is_hf_blt(out):
        raise OmnibyteError(f"{out} is a folder with other files in it: give a new or empty one")
    model_dir = resolve_model_dir(run)
    cfg = read_config(model_dir)
    if cfg["arch"] != "blt":
        raise OmnibyteError(f"transformers' BLT port takes BLTs; {run} holds a {cfg['arch']}")
    with torch.device("meta"):
        check_exportable(build_model(cfg["arch"], cfg["model"]))  # before the weights are read
    model = load_model(model_dir)
    _write_model_dir(out, transformers_config(model), transformers_weights(model))
    return out


# --------------------------------------------------------------------------- files


def _hf_weight_files(src: Path) -> list[Path]:
    """model.safetensors, or the shards a model.safetensors.index.json names."""
    if (src / WEIGHTS).is_file():
        return [src / WEIGHTS]
    index = src / HF_INDEX
    if not index.is_file():
        raise OmnibyteError(f"{src} has no {WEIGHTS} (or {HF_INDEX} and its shards)")
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise OmnibyteError(f"corrupt {index}: {e}") from None
    missing = [s for s in shards if not (src / s).is_file()]
    if missing:
        raise OmnibyteError(f"{src} lacks the shard {missing[0]} that {HF_INDEX} names")
    return [src / s for s in shards]


class LazyTensors(Mapping):
    """Tensor names → tensors of safetensors files, each read from disk when asked for (`rows`:
    only some of its rows), so a conversion holds its output and one input tensor at a time."""

    def __init__(self, files: list[Path]):
        self.where: dict[str, Path] = {}
        try:
            for f in files:
                with safe_open(str(f), framework="pt") as h:
                    self.where.update((name, f) for name in h.keys())
        except (SafetensorError, OSError) as e:
            raise OmnibyteError(f"corrupt or unreadable weights in {files[0]}: {e}") from None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.rows(name, None, None)

    def rows(self, name: str, start: int | None, stop: int | None) -> torch.Tensor:
        try:
            with safe_open(str(self.where[name]), framework="pt") as h:
                return h.get_tensor(name) if start is None else h.get_slice(name)[start:stop]
        except (SafetensorError, OSError) as e:
            raise OmnibyteError(f"corrupt weights in {self.where[name]}: {e}") from None

    def shape(self, name: str) -> list[int]:
        with safe_open(str(self.where[name]), framework="pt") as h:
            return h.get_slice(name).get_shape()

    def __iter__(self):
        return iter(self.where)

    def __len__(self) -> int:
        return len(self.where)


def _meta_model(config: dict, source: Path):
    """The model `config` describes, built without memory (meta tensors): its settings checked, its
    tensor names and shapes known before a weight is read."""
    try:
        with torch.device("meta"):
            return build_model(config["arch"], config["model"])
    except OmnibyteError as e:
        raise OmnibyteError(f"{source}: {e}") from None


def _is_hf_blt(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG).read_text()).get("model_type") == "blt"
    except (OSError, ValueError, AttributeError):
        return False


def _write_model_dir(path: Path, config: dict, state: dict[str, torch.Tensor]) -> None:
    """config.json + model.safetensors into `path`, written whole in a temporary folder first."""
    tmp = temp_sibling(path)
    seen = set()  # safetensors stores no two tensors that share memory (the chunks of one tensor)
    tensors = {}
    for name, t in state.items():
        t = t.contiguous()
        ptr = t.untyped_storage().data_ptr()
        tensors[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        replace_dir(tmp, path)
    finally:
        remove(tmp)


__all__ = ["FORMATS", "export_checkpoint", "import_checkpoint"]
