"""Runs that start from a trained model: a pruned copy of a run (`prune_run`, `omnibyte prune`)
and a run's initial weights (`load_init`, `train.init` / `omnibyte train --init`).

A pruned run folder holds what a trained one does for evaluation and generation: `checkpoint/`
(the model, no optimizer state: it was never trained as it is) and `run.json` (the source run's
settings with the pruned model's config, when the source has one), plus `prune.json`, which says
where it came from. `omnibyte train --init` trains it on with a fresh optimizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from omnibyte.config import to_dict
from omnibyte.data.bpe import TOKENIZER_FILE
from omnibyte.errors import OmnibyteError
from omnibyte.files import CHECKPOINT, check_output_dir, remove_stale_temps, resolve_model_dir, temp_sibling
from omnibyte.models.base import OmniModel
from omnibyte.models.prune import prune
from omnibyte.models.registry import load_model
from omnibyte.train.config import read_run_config


def source_run_dir(source: str | Path) -> Path | None:
    """The run folder of a run folder or of its checkpoint/ (None for a bare model folder)."""
    source = Path(source)
    for cand in (source, source.parent):
        if (cand / "run.json").is_file() and (cand / CHECKPOINT).is_dir():
            return cand
    return None


def prune_run(source: str | Path, keep: dict[str, list[int]], out: str | Path) -> dict:
    """Write the run folder `out` holding `source`'s model with the layers `keep` names
    (`omnibyte.models.prune`); returns what was kept of each stack and the parameter counts."""
    out = Path(out)
    if out.exists():
        raise OmnibyteError(f"{out} already exists: give a new folder as --out")
    check_output_dir(out)
    model_dir = resolve_model_dir(source)
    teacher = load_model(model_dir)
    student = prune(teacher, keep)
    run_dir = source_run_dir(source)
    settings = None
    if run_dir is not None:
        cfg = read_run_config(run_dir)  # checked before anything is written
        settings = dataclasses.replace(cfg, arch=student.arch, model=student.cfg).to_dict()
    stacks = {name: {"kept": keep.get(name, list(range(len(stack.layers)))), "of": len(stack.layers)}
              for name, stack in teacher.stacks().items()}
    record = {"source": str(source), "stacks": stacks, "params": student.num_params(),
              "source_params": teacher.num_params()}

    remove_stale_temps(out)
    tmp = temp_sibling(out)
    try:
        tmp.mkdir(parents=True)
        student.save_pretrained(tmp / CHECKPOINT)
        if (model_dir / TOKENIZER_FILE).is_file():  # a BPE model carries its tokenizer
            shutil.copy(model_dir / TOKENIZER_FILE, tmp / CHECKPOINT / TOKENIZER_FILE)
        if settings is not None:
            (tmp / "run.json").write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / "prune.json").write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested dict as {dotted key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(a: OmniModel, b: OmniModel) -> list[str]:
    """'key: a ≠ b' for each model config field (dotted) where `a` and `b` differ."""
    fa = _flat({"arch": a.arch, **to_dict(a.cfg)})
    fb = _flat({"arch": b.arch, **to_dict(b.cfg)})
    return [f"{k}: {fa.get(k)!r} ≠ {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def load_init(model: OmniModel, init: str | Path) -> None:
    """Load the weights of the model in the run or model folder `init` into `model`, which the
    run's config built: the two configs must be the same (a run trains the init model as it is)."""
    try:
        source = load_model(init)
    except OmnibyteError as e:
        raise OmnibyteError(f"train.init: {e}") from None
    diff = config_differences(model, source)
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise OmnibyteError(f"train.init {init}: the run's model config differs from that model's (run ≠ init): "
                            f"{'; '.join(diff[:3])}{more}. Leave [model] (and --model.* overrides) out of the "
                            f"config to train the init model as it is")
    model.load_state_dict({k: v.to(model.device) for k, v in source.state_dict().items()})
