"""Run configuration: `[model]` (arch + that arch's fields), `[data]`, `[train]`.

Defaults → TOML file → `--section.key value` overrides; the resolved config is saved as
`run.json` in every run directory. A top-level `[patcher]` table is shorthand for
`[model.patcher]` (read by models that patch dynamically, i.e. BLT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnibyte.config import from_dict, load_toml, merge, parse_overrides, to_dict
from omnibyte.errors import OmnibyteError
from omnibyte.files import resolve_model_dir
from omnibyte.models import compat
from omnibyte.models.registry import build_config, read_config


@dataclass
class DataConfig:
    path: str = "data/kjv"  # a prepared dataset (omnibyte prepare); the default corpus is built if missing


@dataclass
class TrainConfig:
    steps: int = 200  # optimizer steps (a FLOPs budget may stop earlier)
    batch_size: int = 8  # sequences per micro-step on each rank
    seq_len: int = 256  # ids per sequence (targets are the next ids)
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr · min_lr_ratio
    warmup_steps: int = 20
    weight_decay: float = 0.1  # on 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    eval_every: int = 100  # validation bpb every N steps (and at the end); 0 = only at the end
    eval_batches: int = 20  # validation batches per evaluation (0 = the whole split)
    save_every: int = 100  # checkpoint every N steps (and at the end, and on Ctrl-C)
    log_every: int = 10  # metrics line every N steps
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA and on a CPU with AMX-BF16, else fp32) | fp32 | bf16
    compile: bool = False  # torch.compile the training forward
    flops: float = 0.0  # stop once this many training FLOPs are spent (0 = no budget)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    # weight of targets inside image/audio blocks in the loss (text ids weigh 1): below 1 a task
    # mix spends its gradient on the text answers rather than on modelling every pixel/sample
    media_loss_weight: float = 1.0
    # weight of the prompt ids of task examples (question and input image/clip, before the answer;
    # a task dataset marks them) in the loss, as in instruction tuning: 0 trains on answers only,
    # while plain documents and generated images/clips (the answers of draw tasks) keep weight 1
    prompt_loss_weight: float = 1.0
    # windows start at a document and hold whole documents (PAD after them) instead of cutting the
    # packed stream anywhere: a task example's question and answer always share a window
    align_docs: bool = False
    # a run or model folder whose trained weights this run starts from, with a fresh optimizer and
    # schedule (`omnibyte train --init`); the run's model config must be that model's, and a config
    # without a [model] table takes it from there (`load_run_config`)
    init: str = ""
    # knowledge distillation: a trained model (run or model folder, same vocabulary) run alongside in
    # inference mode; the loss mixes the data loss with T² · KL(teacher ‖ student) of the next-id
    # distributions at temperature T. Its forward passes count in the FLOPs (budget and log).
    distill_from: str = ""
    distill_temperature: float = 1.0  # T: above 1 softens both distributions
    distill_weight: float = 0.5  # loss = (1 - w) · data loss + w · T² · KL
    # a task dataset's metrics (clock reading, counts, WER, ...) on the first task_eval_n held-out val
    # examples of each kind, every task_eval_every steps and at the end (0 = never): each task's
    # validation curve in metrics.jsonl, as val_<kind>_<metric>
    task_eval_every: int = 0
    task_eval_n: int = 50

    def __post_init__(self):
        positive = ("steps", "batch_size", "seq_len", "grad_accum", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.task_eval_n < 1:
            raise ValueError(f"train.task_eval_n must be ≥ 1, got {self.task_eval_n}")
        for name in ("warmup_steps", "eval_every", "eval_batches", "save_every", "threads", "task_eval_every",
                     "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.flops < 0:
            raise ValueError(f"train.flops must be ≥ 0, got {self.flops}")
        for name in ("media_loss_weight", "prompt_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be ≥ 0, got {getattr(self, name)}")
        if self.distill_temperature <= 0:
            raise ValueError(f"train.distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"train.distill_weight must be in [0, 1], got {self.distill_weight}")
        if not self.distill_from and (self.distill_temperature != 1.0 or self.distill_weight != 0.5):
            raise ValueError("train.distill_temperature and train.distill_weight need train.distill_from (the teacher)")


@dataclass
class RunConfig:
    arch: str = "transformer"
    model: Any = None  # the arch's config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": {"arch": self.arch, **to_dict(self.model)}, "data": to_dict(self.data),
                "train": to_dict(self.train)}


SECTIONS = ("model", "data", "train", "patcher")


def resolve(raw: dict) -> RunConfig:
    """Nested dict (file + overrides) → validated RunConfig."""
    for key in raw:
        if key not in SECTIONS:
            raise OmnibyteError(f"unknown config section '{key}' (known: model, data, train, patcher)")
    model = dict(raw.get("model", {}))
    if "patcher" in raw:
        model["patcher"] = merge(model.get("patcher", {}), raw["patcher"])
    arch = model.pop("arch", "transformer")
    if not isinstance(arch, str):
        raise OmnibyteError(f"'model.arch' must be a string, got {arch!r}")
    return RunConfig(
        arch=arch,
        model=build_config(arch, model),
        data=from_dict(DataConfig, raw.get("data", {}), prefix="data"),
        train=from_dict(TrainConfig, raw.get("train", {}), prefix="train"),
    )


def load_run_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults → the TOML file `path` → `overrides`. With train.init, a file without a [model]
    table trains the init model: its config is the run's [model] (overrides then apply to it)."""
    raw = load_toml(path) if path else {}
    given = (overrides if isinstance(overrides, dict) else parse_overrides(overrides)) if overrides else {}
    train = merge(raw, given).get("train")
    init = train.get("init") if isinstance(train, dict) else None
    if isinstance(init, str) and init and "model" not in raw:
        raw = {**raw, "model": init_model_table(init)}
    return resolve(merge(raw, given) if given else raw)


def init_model_table(init: str) -> dict:
    """The [model] table ({"arch": ..., fields}) of the model in the run or model folder `init`."""
    try:
        saved = read_config(resolve_model_dir(init))
    except OmnibyteError as e:
        raise OmnibyteError(f"train.init: {e}") from None
    return {"arch": saved["arch"], **saved["model"]}


def read_run_config(run_dir: Path, overrides: list[str] | dict | None = None) -> RunConfig:
    f = Path(run_dir) / "run.json"
    if not f.is_file():
        raise OmnibyteError(f"{run_dir} is not a run directory (no run.json)")
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON or bad UTF-8
        raise OmnibyteError(f"corrupt {f}: {e}") from None
    if not isinstance(raw, dict):
        raise OmnibyteError(f"corrupt {f}: not a JSON object")
    raw = compat.run_config(raw)
    if overrides:
        raw = merge(raw, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    return resolve(raw)
