"""What a sweep runs: its models, its presets (TOML files, configs/bench/NAME.toml in the repository,
or any file given by path) and the arithmetic that turns a FLOPs budget into steps."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from omnibyte.config import from_dict, load_toml
from omnibyte.errors import OmnibyteError
from omnibyte.models.registry import get_model_class

MODELS = ("transformer", "bpe", "megabyte", "blt-static", "blt-space", "blt-entropy")
ARCH = {"transformer": "transformer", "bpe": "transformer", "megabyte": "megabyte", "blt-static": "blt",
        "blt-space": "blt", "blt-entropy": "blt"}
# the preset's model tables and the arch each one configures
TABLES = {"transformer": "transformer", "megabyte": "megabyte", "blt": "blt", "entropy": "transformer"}
PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "bench"


@dataclass
class BenchPreset:
    budgets: tuple[float, ...]  # training FLOPs per run
    batch_size: int
    seq_len: int  # bytes per sequence (the BPE model gets about as many bytes in tokens)
    lr: float
    warmup_steps: int
    eval_batches: int  # validation batches scored per model (0 = the whole split)
    bpe_vocab: int
    patch_size: int  # MEGABYTE and BLT-static patch size
    transformer: dict  # model fields of the byte and BPE transformers
    megabyte: dict
    blt: dict
    entropy: dict  # the entropy model (a windowed byte transformer)
    entropy_steps: int
    calibration_bytes: int = 65536
    task_limit: int = 0  # --task: held-out questions scored (0 = all)
    threads: int = 0  # torch CPU threads while training (0 = torch's default; 1 suits tiny models)
    jobs: int = 1  # runs trained at the same time, each in its own process


def preset_names() -> list[str]:
    """Names of the repository's presets (empty where omnibyte is installed without configs/)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(preset: str | Path) -> BenchPreset:
    """A preset by name (configs/bench/NAME.toml) or by path to a TOML file, its keys checked: a
    missing or unknown key, or a model table its model would refuse, is a one-line error naming the
    file."""
    path = Path(preset)
    if path.suffix != ".toml" and len(path.parts) == 1:  # a name, not a path
        if not PRESET_DIR.is_dir():
            raise OmnibyteError(f"no preset named {preset!r}: the preset folder {PRESET_DIR} is missing "
                                f"(omnibyte installed without its repository); pass a preset file, --preset my.toml")
        path = PRESET_DIR / f"{preset}.toml"
        if not path.is_file():
            raise OmnibyteError(f"unknown preset {preset!r} (known: {', '.join(preset_names())}; "
                                f"or pass a preset .toml file)")
    elif not path.is_file():
        raise OmnibyteError(f"preset file not found: {path}")
    raw = load_toml(path)
    missing = [f.name for f in fields(BenchPreset) if f.default is MISSING and f.name not in raw]
    if missing:
        raise OmnibyteError(f"preset {path}: missing {', '.join(missing)} (see configs/bench/small.toml)")
    try:
        p = from_dict(BenchPreset, raw)
        for table, arch in TABLES.items():
            if arch_available(arch):
                from_dict(get_model_class(arch).config_cls, getattr(p, table), prefix=table)
    except OmnibyteError as e:
        raise OmnibyteError(f"preset {path}: {e}") from None
    return p


def parse_budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise OmnibyteError(f"--budgets must be numbers separated by commas, e.g. 1e13,3e13; got {text!r}") from None
    if not budgets or any(not b > 0 for b in budgets):
        raise OmnibyteError(f"--budgets must be positive FLOPs counts, got {text!r}")
    return budgets


def parse_models(text: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for m in names:
        if m not in MODELS:
            raise OmnibyteError(f"unknown bench model {m!r} (known: {', '.join(MODELS)})")
    if not names:
        raise OmnibyteError("--models names no model")
    return names


def arch_available(arch: str) -> bool:
    try:
        get_model_class(arch)
    except OmnibyteError:
        return False
    return True


def budget_steps(model, budget: float, batch_size: int, seq_len: int) -> int:
    """Training steps that fit in `budget` FLOPs: ⌊budget / (training FLOPs per id × ids per step)⌋."""
    return int(budget // (model.flops_per_byte(seq_len)["train"] * batch_size * seq_len))


def run_name(model: str, budget: float) -> str:
    return f"{model}-{budget:.0e}".replace("+", "")
