"""What a sweep runs: its models, its presets (TOML files, configs/bench/NAME.toml in the repository,
or any file given by path) and the arithmetic that turns a FLOPs budget into steps."""

from __future__ import annotations

import itertools
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from omnibyte.config import from_dict, load_toml, merge
from omnibyte.errors import OmnibyteError
from omnibyte.models.registry import get_model_class

MODELS = ("transformer", "bpe", "megabyte", "blt-static", "blt-space", "blt-entropy")
ARCH = {"transformer": "transformer", "bpe": "transformer", "megabyte": "megabyte", "blt-static": "blt",
        "blt-space": "blt", "blt-entropy": "blt"}
# the preset's model tables and the arch each one configures
TABLES = {"transformer": "transformer", "megabyte": "megabyte", "blt": "blt", "entropy": "transformer"}
# the preset table each bench model is built from (and whose size grid it searches in frontier mode)
TABLE_OF = {"transformer": "transformer", "bpe": "transformer", "megabyte": "megabyte", "blt-static": "blt",
            "blt-space": "blt", "blt-entropy": "blt"}
GRID_KEYS = ("lr", "bpe_vocab", "transformer", "megabyte", "blt")
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
    dtype: str = "auto"  # train.dtype of every run (fp32 keeps a sweep's figures the same on every CPU)
    # BLT-entropy's budget also pays for its entropy model: the model's training and its forward pass
    # over every training byte come out of the budget before the BLT's steps are counted
    charge_entropy: bool = True
    # frontier mode's search (`omnibyte bench --frontier`): learning rates and BPE vocabularies tried
    # for every family, and per model table a list of size overrides merged into that table
    grid: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One run of a sweep: a bench model at a budget, in frontier mode also a point of the grid
    (`size`: index into the grid's list for the model's table; `lr`; `vocab`: the BPE vocabulary).
    A plain sweep's entries leave the grid fields None and keep the run names of older sweeps;
    `seed` is set for the repeats of a frontier's chosen points at the sweep's other seeds."""
    model: str
    budget: float
    size: int | None = None
    lr: float | None = None
    vocab: int | None = None
    seed: int | None = None

    @property
    def name(self) -> str:
        tags = [self.model]
        if self.size is not None:
            tags.append(f"s{self.size}")
        if self.lr is not None:
            tags.append(f"lr{self.lr:g}")
        if self.vocab is not None:
            tags.append(f"v{self.vocab}")
        seed = f"-seed{self.seed}" if self.seed is not None else ""
        return "-".join(tags) + f"-{self.budget:.0e}".replace("+", "") + seed

    @property
    def variant(self) -> dict:
        return {k: v for k, v in (("size", self.size), ("lr", self.lr), ("vocab", self.vocab)) if v is not None}


def frontier_entries(preset: BenchPreset, models: tuple[str, ...], budgets: tuple[float, ...]) -> list[Entry]:
    """Every grid point of every model at every budget: sizes × learning rates (× vocabularies for
    the BPE model); a grid list the preset leaves out is the preset's one value."""
    grid = preset.grid
    out = []
    for model in models:
        sizes = range(len(grid[TABLE_OF[model]])) if grid.get(TABLE_OF[model]) else [None]
        lrs = grid.get("lr") or [None]
        vocabs = (grid.get("bpe_vocab") or [None]) if model == "bpe" else [None]
        for budget, size, lr, vocab in itertools.product(budgets, sizes, lrs, vocabs):
            out.append(Entry(model, budget, size, lr, vocab))
    return out


def table_for(preset: BenchPreset, model: str, size: int | None) -> dict:
    """The model table of bench model `model` at grid size `size` (None: the preset's table)."""
    table = TABLE_OF[model]
    base = getattr(preset, table)
    return merge(base, preset.grid[table][size]) if size is not None else dict(base)


def check_grid(preset: BenchPreset, path: Path) -> None:
    """A grid's keys and values, each size override checked against its model's config."""
    grid = preset.grid
    unknown = set(grid) - set(GRID_KEYS)
    if unknown:
        raise OmnibyteError(f"preset {path}: unknown grid key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(GRID_KEYS)})")
    for key, value in grid.items():
        if not isinstance(value, list) or not value:
            raise OmnibyteError(f"preset {path}: grid.{key} must be a non-empty list")
    for v in grid.get("lr", []):
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise OmnibyteError(f"preset {path}: grid.lr holds {v!r}; learning rates are positive numbers")
    for v in grid.get("bpe_vocab", []):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 256:
            raise OmnibyteError(f"preset {path}: grid.bpe_vocab holds {v!r}; a BPE vocabulary is a whole number "
                                f"above 256")
    for table in ("transformer", "megabyte", "blt"):
        for i, override in enumerate(grid.get(table, [])):
            if not isinstance(override, dict):
                raise OmnibyteError(f"preset {path}: grid.{table}[{i}] must be a table of model fields")
            if arch_available(TABLES[table]):
                from_dict(get_model_class(TABLES[table]).config_cls, merge(getattr(preset, table), override),
                          prefix=f"grid.{table}[{i}]")


def preset_names() -> list[str]:
    """Names of the repository's presets (empty where omnibyte is installed without configs/)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_path(preset: str | Path, beside: Path | None = None) -> Path:
    """The file of a preset named NAME (configs/bench/NAME.toml) or given by path (relative to the
    preset file `beside` when one names another as its base)."""
    path = Path(preset)
    if path.suffix != ".toml" and len(path.parts) == 1:  # a name, not a path
        if not PRESET_DIR.is_dir():
            raise OmnibyteError(f"no preset named {preset!r}: the preset folder {PRESET_DIR} is missing "
                                f"(omnibyte installed without its repository); pass a preset file, --preset my.toml")
        path = PRESET_DIR / f"{preset}.toml"
        if not path.is_file():
            raise OmnibyteError(f"unknown preset {preset!r} (known: {', '.join(preset_names())}; "
                                f"or pass a preset .toml file)")
    elif beside is not None and not path.is_absolute() and (beside.parent / path).is_file():
        path = beside.parent / path
    elif not path.is_file():
        raise OmnibyteError(f"preset file not found: {path}")
    return path


def load_preset(preset: str | Path) -> BenchPreset:
    """A preset by name (configs/bench/NAME.toml) or by path to a TOML file, its keys checked: a
    missing or unknown key, or a model table its model would refuse, is a one-line error naming the
    file."""
    path = load_path(preset)
    raw = load_toml(path)
    if "base" in raw:  # a variant of another preset: its keys over the base's; its own [grid] replaces the base's
        base = raw.pop("base")
        under = load_toml(load_path(base, path)) if isinstance(base, str) else {"base": base}
        if "base" in under:
            raise OmnibyteError(f"preset {path}: base must name a preset that has no base itself, got {base!r}")
        grid = raw.pop("grid", None)
        raw = merge(under, raw)
        if grid is not None:
            raw["grid"] = grid
    missing = [f.name for f in fields(BenchPreset)
               if f.default is MISSING and f.default_factory is MISSING and f.name not in raw]
    if missing:
        raise OmnibyteError(f"preset {path}: missing {', '.join(missing)} (see configs/bench/small.toml)")
    try:
        p = from_dict(BenchPreset, raw)
        for table, arch in TABLES.items():
            if arch_available(arch):
                from_dict(get_model_class(arch).config_cls, getattr(p, table), prefix=table)
    except OmnibyteError as e:
        raise OmnibyteError(f"preset {path}: {e}") from None
    check_grid(p, path)
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


def budget_steps(model, budget: float, batch_size: int, seq_len: int, fixed: float = 0.0,
                 extra_per_id: float = 0.0) -> int:
    """Training steps that fit in `budget` FLOPs: ⌊(budget − fixed) / ((training FLOPs per id +
    extra_per_id) × ids per step)⌋. `fixed` and `extra_per_id` charge what the run needs besides
    its own training (BLT-entropy: the entropy model's training, and its forward pass per byte)."""
    per_step = (model.flops_per_byte(seq_len)["train"] + extra_per_id) * batch_size * seq_len
    return max(0, int((budget - fixed) // per_step))


def run_name(model: str, budget: float) -> str:
    return Entry(model, budget).name
