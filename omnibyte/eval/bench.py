"""`omnibyte bench`: train a sweep of models on one dataset at equal training-FLOPs budgets and
compare their validation bits per byte (and optionally task accuracy and noise robustness).

Models of the sweep:

    transformer   byte transformer
    bpe           the same transformer over BPE tokens (tokenizer learned on the train split;
                  context of about the same number of bytes; bpb over the bytes of the text)
    megabyte      MEGABYTE, fixed patches
    blt-static    BLT, fixed patches
    blt-space     BLT, a patch after space-like bytes
    blt-entropy   BLT, entropy patching: a small entropy model is trained first (its cost is
                  reported apart) and its threshold calibrated to space patching's mean patch
                  length, so the two dynamic patchings cost the same FLOPs per byte and differ
                  only in where the boundaries fall

For a budget B each run takes steps = ⌊B / (training FLOPs per id · ids per step)⌋ with the
model's own `flops_per_byte` formula (per token for the BPE model), and the cosine schedule is
laid over exactly those steps. Everything lands in `--out`: one run directory per (model,
budget) (a finished one is reused when the bench runs again, so adding `--noise` or a budget
costs only what is new), results.json, results.md (the table) and bpb_vs_flops.png.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omnibyte.errors import OmnibyteError

MODELS = ("transformer", "bpe", "megabyte", "blt-static", "blt-space", "blt-entropy")
ARCH = {"transformer": "transformer", "bpe": "transformer", "megabyte": "megabyte", "blt-static": "blt",
        "blt-space": "blt", "blt-entropy": "blt"}


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


PRESETS = {
    # seconds: a smoke test of the whole pipeline on tiny data
    "quick": BenchPreset(
        budgets=(6e8,), batch_size=4, seq_len=64, lr=3e-3, warmup_steps=2, eval_batches=2, bpe_vocab=320,
        patch_size=4,
        transformer=dict(dim=32, n_layers=1, n_heads=2),
        megabyte=dict(patch_size=4, global_model={"dim": 32, "n_layers": 1, "n_heads": 2},
                      local_model={"dim": 16, "n_layers": 1, "n_heads": 2}),
        blt=dict(encoder={"dim": 16, "n_layers": 1, "n_heads": 2, "window": 32},
                 latent={"dim": 32, "n_layers": 1, "n_heads": 2},
                 decoder={"dim": 16, "n_layers": 1, "n_heads": 2, "window": 32},
                 ngrams={"buckets": 256, "sizes": [3, 4]}),
        entropy=dict(dim=16, n_layers=1, n_heads=2, window=32), entropy_steps=5, calibration_bytes=4096,
        task_limit=14, threads=1),
    # about 20 minutes on a 2-core CPU for the six models at two budgets on the KJV corpus: two runs
    # at a time, one training thread each (19.6 min from scratch, measured 2026-11-27)
    "small": BenchPreset(
        budgets=(2e12, 6e12), batch_size=16, seq_len=256, lr=3e-3, warmup_steps=20, eval_batches=0,
        bpe_vocab=4096, patch_size=4,
        # Sizes near each family's best at 6e12 FLOPs on a grid (results_eval.md, "model sizes"): at
        # these budgets smaller models that take more steps win, the BPE transformer most of all.
        transformer=dict(dim=48, n_layers=4, n_heads=4),
        megabyte=dict(patch_size=4, global_model={"dim": 96, "n_layers": 4, "n_heads": 4},
                      local_model={"dim": 48, "n_layers": 2, "n_heads": 4}),
        # BLT: small local models (one encoder and one decoder layer) so that most FLOPs go to steps
        # of the latent, and 1,048,576 rows per hash n-gram table for n = 2..8 (table reads cost no
        # FLOPs; the paper uses 500,002 rows for n = 3..8), their weight decay 1.0 so that rows of
        # n-grams seen once fade instead of memorising a corpus seen more than once (results_blt.md:
        # 6e12 bpb 1.400 with 65,536 rows → 1.381 with these tables → 1.355 with the decay)
        blt=dict(encoder={"dim": 48, "n_layers": 1, "n_heads": 4, "window": 64},
                 latent={"dim": 64, "n_layers": 4, "n_heads": 4},
                 decoder={"dim": 48, "n_layers": 1, "n_heads": 4, "window": 64},
                 ngrams={"buckets": 1048576, "sizes": [2, 3, 4, 5, 6, 7, 8], "weight_decay": 1.0}),
        entropy=dict(dim=64, n_layers=2, n_heads=4, window=64), entropy_steps=300, calibration_bytes=131072,
        task_limit=0, threads=1, jobs=2),
}


def get_preset(name: str) -> BenchPreset:
    if name not in PRESETS:
        raise OmnibyteError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name])


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
    from omnibyte.models.registry import get_model_class

    try:
        get_model_class(arch)
    except OmnibyteError:
        return False
    return True


def run_memory(params: int) -> int:
    """Rough bytes one training process needs: fp32 weights and AdamW's two moments (12 bytes per
    parameter; sparse table updates keep the same moments) plus half a GiB for activations, data and
    the interpreter."""
    return 12 * params + 2**29


def available_memory() -> int | None:
    """Bytes of memory the system can still give (MemAvailable of /proc/meminfo); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fit_jobs(jobs: int, per_run: int, available: int | None) -> int:
    """How many of `jobs` parallel runs of `per_run` bytes each fit in `available` (at least one:
    a single run that does not fit is left to fail or swap as it would alone)."""
    if available is None or per_run <= 0:
        return jobs
    return max(1, min(jobs, available // per_run))


def budget_steps(model, budget: float, batch_size: int, seq_len: int) -> int:
    """Training steps that fit in `budget` FLOPs: ⌊budget / (training FLOPs per id × ids per step)⌋."""
    return int(budget // (model.flops_per_byte(seq_len)["train"] * batch_size * seq_len))


def run_name(model: str, budget: float) -> str:
    return f"{model}-{budget:.0e}".replace("+", "")


def fmt_si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


# --------------------------------------------------------------------------- the sweep


class Bench:
    """One sweep. `run()` does everything; the pieces are methods so a script can reuse them."""

    def __init__(self, out: str | Path, data: str | Path = "data/kjv", preset: str | BenchPreset = "small",
                 budgets: tuple[float, ...] | None = None, models: tuple[str, ...] = MODELS,
                 val: str | Path | None = None, task: str | None = None, noise: bool = False,
                 noise_rate: float = 0.1, bpe_vocab: int | None = None, seed: int = 0,
                 threads: int | None = None, jobs: int | None = None, log: Callable[[str], None] = print):
        self.out, self.data = Path(out), str(data)
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        if threads is not None:
            self.preset.threads = threads
        if jobs is not None:
            if jobs < 1:
                raise OmnibyteError(f"--jobs must be at least 1, got {jobs}")
            self.preset.jobs = jobs
        self.budgets = tuple(budgets or self.preset.budgets)
        self.models, self.val, self.task = tuple(models), val, task
        self.noise, self.noise_rate, self.seed = noise, noise_rate, seed
        self.bpe_vocab = bpe_vocab or self.preset.bpe_vocab
        self.log = log
        self.params: dict[str, int] = {}  # parameters of each planned model (memory per run)
        self.notes: list[str] = []
        self.extra: dict = {}  # facts found on the way (bytes per token, patch sizes, entropy model)
        if task not in (None, "cute"):
            raise OmnibyteError(f"unknown task {task!r} (known: cute)")

    # --- data -----------------------------------------------------------------------------------
    def byte_dataset(self):
        from omnibyte.train.trainer import open_dataset

        return open_dataset(self.data)  # builds the default corpus on first use

    def bpe_dataset(self):
        """The token version of the dataset (tokenizer learned on its train split), made once."""
        from omnibyte.data import ShardDataset, is_dataset, read_meta
        from omnibyte.data.bpe import prepare_bpe

        path = self.out / "data" / f"bpe-{self.bpe_vocab}"
        src = str(Path(self.data).resolve())
        if not (is_dataset(path) and read_meta(path).get("sources") == [src]):
            self.log(f"learning a {self.bpe_vocab}-id BPE tokenizer on {self.data} (train split) ...")
            prepare_bpe(src, path, self.bpe_vocab)
        return ShardDataset(path)

    def val_data(self):
        """(byte dataset, split) every model is scored on: --val prepared once, else the data's val."""
        from omnibyte.data import ShardDataset, is_dataset, prepare

        if self.val is None:
            return self.byte_dataset(), "val"
        if is_dataset(self.val):
            return ShardDataset(self.val), "val"
        path = self.out / "data" / "val"
        if not Path(self.val).exists():
            raise OmnibyteError(f"--val: no such file or folder: {self.val}")
        if not is_dataset(path) or ShardDataset(path).meta.get("sources") != [str(self.val)]:
            prepare([self.val], path, val_fraction=0.0)
        return ShardDataset(path), "train"

    # --- per-run configuration ------------------------------------------------------------------
    def model_config(self, name: str) -> dict:
        """The `[model]` table (arch included) of sweep entry `name`."""
        p = self.preset
        arch = ARCH[name]
        if name == "transformer":
            return {"arch": arch, **p.transformer}
        if name == "bpe":
            tok = self.bpe_dataset().meta["tokenizer"]
            return {"arch": arch, **p.transformer, "vocab_size": tok["vocab_size"]}
        if name == "megabyte":
            return {"arch": arch, **p.megabyte}
        patcher: dict = {"kind": name.split("-", 1)[1], "patch_size": p.patch_size}
        cfg = {"arch": arch, **json.loads(json.dumps(p.blt)), "patcher": patcher}
        if name == "blt-space":
            patcher["bytes_per_patch"] = self.space_bytes_per_patch()
        if name == "blt-entropy":
            ent_dir, threshold, achieved = self.entropy_model()
            patcher.update(entropy_model=str(ent_dir), threshold=threshold, bytes_per_patch=achieved)
        return cfg

    def seq_len(self, name: str) -> int:
        """Ids per training sequence: bytes, or for the BPE model about as many bytes in tokens."""
        if name != "bpe":
            return self.preset.seq_len
        from omnibyte.data.bpe import bytes_per_token

        bpt = bytes_per_token(self.bpe_dataset().meta, "train")
        self.extra["bpe_bytes_per_token"] = round(bpt, 3)
        return max(8, round(self.preset.seq_len / bpt))

    def space_bytes_per_patch(self) -> float:
        """Mean patch length of space patching on a sample of the train split (for FLOPs accounting)."""
        if "space_bytes_per_patch" not in self.extra:
            import torch

            from omnibyte.patching import PatcherConfig, mean_patch_len, patch_starts
            from omnibyte.patching.calibrate import sample_stream

            ids = torch.from_numpy(sample_stream(self.byte_dataset(), self.preset.calibration_bytes, "train"))
            starts = patch_starts(ids[None], PatcherConfig("space"))
            self.extra["space_bytes_per_patch"] = round(float(mean_patch_len(starts)), 3)
        return self.extra["space_bytes_per_patch"]

    def entropy_model(self) -> tuple[Path, float, float]:
        """Train the entropy model once (a windowed byte transformer) and calibrate its threshold so
        that mean patch length ≈ space patching's on the same data (calibrated again, not retrained,
        when an older run was calibrated to another target). Returns (run dir, threshold, achieved)."""
        from omnibyte.models.base import OmniModel
        from omnibyte.patching.calibrate import calibrate
        from omnibyte.patching.entropy import write_calibration

        if "entropy" in self.extra:
            e = self.extra["entropy"]
            return Path(e["run"]), e["threshold"], e["bytes_per_patch"]
        p = self.preset
        run_dir = self.out / "runs" / "entropy-model"
        done = run_dir / "bench.json"
        target = self.space_bytes_per_patch()
        info = json.loads(done.read_text()) if done.is_file() else None
        if info is None:
            self.log(f"training the entropy model ({p.entropy_steps} steps) ...")
            raw = {"model": {"arch": "transformer", **p.entropy}, "data": {"path": self.data},
                   "train": self.train_settings(p.entropy_steps, p.seq_len)}
            info = self.train(raw, run_dir)
        if info.get("target_bytes_per_patch") != target:
            model = OmniModel.from_pretrained(run_dir)
            cal = calibrate(model, self.byte_dataset(), target, sample_bytes=p.calibration_bytes, split="train")
            write_calibration(run_dir, "global", cal.to_entry(source="omnibyte bench"))
            info.update(threshold=cal.threshold, bytes_per_patch=cal.bytes_per_patch, target_bytes_per_patch=target,
                        infer_flops_per_byte=model.flops_per_byte(p.seq_len)["infer"])
            done.write_text(json.dumps(info, indent=2) + "\n")
        self.extra["entropy"] = {"run": str(run_dir), "threshold": info["threshold"],
                                 "bytes_per_patch": info["bytes_per_patch"],  # exact: runs are planned with it
                                 "train_flops": info["train_flops"], "params": info["params"],
                                 "infer_flops_per_byte": info["infer_flops_per_byte"]}
        return run_dir, info["threshold"], info["bytes_per_patch"]

    def train_settings(self, steps: int, seq_len: int) -> dict:
        p = self.preset
        return {"steps": steps, "batch_size": p.batch_size, "seq_len": seq_len, "lr": p.lr,
                "warmup_steps": min(p.warmup_steps, max(0, steps // 10)), "eval_every": 0, "eval_batches": 1,
                "save_every": 0, "log_every": max(1, min(50, steps // 10)), "seed": self.seed,
                "threads": p.threads}

    # --- training ---------------------------------------------------------------------------------
    def train(self, raw: dict, run_dir: Path) -> dict:
        """Train one run in this process (resuming an interrupted one); returns its facts."""
        from omnibyte.train import Trainer, load_run_config
        from omnibyte.train.config import read_run_config

        t0 = time.perf_counter()
        if (run_dir / "checkpoint" / "trainer.pt").is_file():
            trainer = Trainer(read_run_config(run_dir), run_dir, resume=True, quiet=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            trainer = Trainer(load_run_config(None, raw), run_dir, quiet=True)
        trainer.fit()
        wall = time.perf_counter() - t0
        steps = trainer.total_steps
        return {"run": str(run_dir), "params": trainer.model.num_params(), "steps": steps,
                "train_flops": steps * trainer.bytes_per_step * trainer.flops_per_byte, "wall_s": round(wall, 1),
                "ids_per_step": trainer.bytes_per_step}

    def plan(self, name: str, budget: float) -> tuple[dict, int]:
        """(run config, steps) of one sweep entry at one budget."""
        from omnibyte.models.registry import build_model

        model_cfg = self.model_config(name)
        seq_len = self.seq_len(name)
        arch = model_cfg.pop("arch")
        model = build_model(arch, model_cfg)
        self.params[name] = model.num_params()
        steps = budget_steps(model, budget, self.preset.batch_size, seq_len)
        data = str(self.bpe_dataset().path) if name == "bpe" else self.data
        raw = {"model": {"arch": arch, **model_cfg}, "data": {"path": data},
               "train": {**self.train_settings(max(1, steps), seq_len), "flops": 0.0}}
        return raw, steps

    @staticmethod
    def same_plan(raw: dict, steps: int, run_dir: Path) -> bool:
        """Whether the finished run in run_dir was trained as planned now (`plan`'s raw config and
        steps): the same model config and step count (a changed preset must not reuse stale runs)."""
        from omnibyte.config import to_dict
        from omnibyte.train import load_run_config
        from omnibyte.train.config import read_run_config

        try:
            saved = read_run_config(run_dir)
        except (OSError, ValueError, OmnibyteError):
            return False

        def model(cfg) -> dict:
            d = to_dict(cfg.model)
            if (d.get("patcher") or {}).get("entropy_model"):  # --out given relative or absolute: one model
                d["patcher"] = {**d["patcher"], "entropy_model": str(Path(d["patcher"]["entropy_model"]).resolve())}
            return d

        def train(cfg) -> dict:  # the settings that change what is learned (not threads or logging)
            keys = ("steps", "batch_size", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "seed")
            return {k: getattr(cfg.train, k) for k in keys}

        planned = load_run_config(None, raw)
        return model(saved) == model(planned) and train(saved) == train(planned)

    def run_one(self, name: str, budget: float) -> dict:
        run_dir = self.out / "runs" / run_name(name, budget)
        record_file = run_dir / "bench.json"
        record = json.loads(record_file.read_text()) if record_file.is_file() else None
        raw, steps = self.plan(name, budget)
        if record is not None and not self.same_plan(raw, steps, run_dir):
            self.log(f"  {run_dir.name}: the preset's model or steps changed since it was trained; training it again")
            record = None
            (run_dir / "checkpoint" / "trainer.pt").unlink(missing_ok=True)  # a fresh run, not a resumed one
        if record is None:
            if steps < 1:
                raise OmnibyteError(f"budget {budget:.3g} FLOPs is less than one training step")
            self.log(f"  training {name} for {steps} steps ...")
            info = self.train(raw, run_dir)
            if name == "bpe":
                shutil.copy(self.bpe_dataset().path / "tokenizer.json", run_dir / "tokenizer.json")
            record = {"model": name, "budget": budget, **info}
            record_file.write_text(json.dumps(record, indent=2) + "\n")
            # a finished run keeps its weights; its optimizer state (twice their size) only served to
            # resume it, and its schedule is spent
            (run_dir / "checkpoint" / "trainer.pt").unlink(missing_ok=True)
        record = self.evaluate(name, record)
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        return record

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, name: str, record: dict) -> dict:
        """Fill in what the record lacks: val bpb, inference FLOPs/byte, task accuracy, noise."""
        from omnibyte.data.bpe import bytes_per_token, find_tokenizer
        from omnibyte.eval.runner import score_dataset
        from omnibyte.models.base import OmniModel

        run_dir = Path(record["run"])
        model = OmniModel.from_pretrained(run_dir)
        tokenizer = find_tokenizer(run_dir)
        seq_len = json.loads((run_dir / "run.json").read_text())["train"]["seq_len"]
        max_batches = self.preset.eval_batches or None
        val, split = self.val_data()
        val_key = f"{val.path}:{split}"

        def score(ds, sp, scratch):
            return score_dataset(model, ds, sp, seq_len, self.preset.batch_size, max_batches, tokenizer,
                                 scratch)

        scratch = self.out / "data" / "scratch" / run_dir.name
        if record.get("val_key") != val_key:
            if name == "bpe" and self.val is None:
                r = score(self.bpe_dataset(), "val", scratch)
            else:
                r = score(val, split, scratch)
            record.update(val_bpb=r["bpb"], val_bytes=r["bytes"], val_key=val_key)
            record.pop("noise", None)
        infer = model.flops_per_byte(seq_len)["infer"]
        if name == "bpe":
            infer /= bytes_per_token(self.bpe_dataset().meta, "train")
        record["infer_flops_per_byte"] = infer
        if self.task == "cute" and "task_accuracy" not in record:
            from omnibyte.data.tasks.cute import read_heldout
            from omnibyte.eval.tasks import score_examples

            examples = read_heldout(self.data)[: self.preset.task_limit or None]
            r = score_examples(model, examples, tokenizer, batch_size=32)
            record.update(task_accuracy=r["accuracy"], task_per_task=r["per_task"], task_n=r["n"])
        if self.noise and "noise" not in record:
            noise = {}
            for kind, (ds, sp) in self.noisy_data().items():
                r = score(ds, sp, scratch / kind)
                noise[kind] = {"bpb": r["bpb"], "ratio": r["bpb"] / record["val_bpb"]}
            record["noise"] = noise
        shutil.rmtree(scratch, ignore_errors=True)
        return record

    def noisy_data(self) -> dict:
        """Perturbed copies of the validation data, one per perturbation, made once."""
        from omnibyte.data import ShardDataset, is_dataset
        from omnibyte.eval.noise import PERTURBATIONS, write_noisy

        val, split = self.val_data()
        out = {}
        for kind in PERTURBATIONS:
            path = self.out / "data" / f"noisy-{kind}-{self.noise_rate:g}"
            if not is_dataset(path) or ShardDataset(path).meta["sources"] != [f"{val.path}:{split} + "
                                                                               f"{kind}@{self.noise_rate}"]:
                write_noisy(val, split, path, kind, self.noise_rate, self.seed)
            out[kind] = (ShardDataset(path), "train")
        return out

    def train_parallel(self, todo: list[tuple[str, float]]) -> None:
        """Train (and score) the runs in `todo` in `preset.jobs` worker processes; the sequential
        pass in `run` then finds them finished. What several runs share (the BPE data, the entropy
        model and its calibration, noisy copies) is made here first, once."""
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        for name, budget in todo:  # planning makes the BPE data, the entropy model and its calibration
            try:
                self.plan(name, budget)
            except OmnibyteError:
                pass  # the sequential pass in `run` meets the same error and reports it
        if self.noise:
            self.noisy_data()
        args = dict(out=str(self.out), data=self.data, preset=self.preset, val=self.val, task=self.task,
                    noise=self.noise, noise_rate=self.noise_rate, bpe_vocab=self.bpe_vocab, seed=self.seed)
        need = max((run_memory(self.params[name]) for name, _ in todo if name in self.params), default=0)
        free = available_memory()
        jobs = fit_jobs(self.preset.jobs, need, free)
        if jobs < self.preset.jobs:
            self.log(f"{jobs} run(s) at a time instead of {self.preset.jobs}: the largest needs about "
                     f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB of memory is available")
        self.log(f"training {len(todo)} runs, {jobs} at a time (one process each) ...")
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_one_job, args, name, budget) for name, budget in todo]
            for fut in futures:
                try:
                    fut.result()  # any other error in a worker is raised here, as it would be in `run`
                except OmnibyteError:
                    pass  # the sequential pass in `run` meets the same error and reports it

    # --- everything ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.byte_dataset()
        if self.task == "cute":
            from omnibyte.data.tasks.cute import read_heldout

            read_heldout(self.data)  # fail now, not after training, when the data is no task suite
        results, skipped = [], []
        todo = []
        for name in self.models:
            if not arch_available(ARCH[name]):
                msg = f"{name}: skipped (model module omnibyte.models.{ARCH[name]} is not available)"
                self.log(msg)
                skipped.append(msg)
                continue
            todo += [(name, b) for b in self.budgets]
        if self.preset.jobs > 1:
            self.train_parallel(todo)
        for i, (name, budget) in enumerate(todo, 1):
            self.log(f"[{i}/{len(todo)}] {name} at {budget:.3g} training FLOPs")
            try:
                rec = self.run_one(name, budget)
            except OmnibyteError as e:
                msg = f"{name} at {budget:.3g}: failed: {e}"
                self.log("  " + msg)
                skipped.append(msg)
                continue
            results.append(rec)
            self.log(f"  {rec['steps']} steps in {rec['wall_s']:.0f} s → val {rec['val_bpb']:.4f} bits/byte")
        # the patch facts the report notes, also when every run was reused (cheap: cached on disk)
        names = {r["model"] for r in results}
        if "blt-space" in names:
            self.space_bytes_per_patch()
        if "blt-entropy" in names:
            self.entropy_model()
        summary = {"data": self.data, "val": str(self.val) if self.val else None,
                   "preset": dataclasses.asdict(self.preset), "budgets": list(self.budgets), "results": results,
                   "skipped": skipped, **self.extra}
        (self.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.out / "results.md").write_text(markdown_table(summary))
        if results:
            plot_results(results, self.out / "bpb_vs_flops.png")
        return summary


def _run_one_job(args: dict, name: str, budget: float) -> None:
    """One run in a worker process of `Bench.train_parallel` (a top-level function: spawn pickles it)."""
    tag = run_name(name, budget)
    Bench(**args, log=lambda s: print(f"[{tag}] {s.strip()}", flush=True)).run_one(name, budget)


# --------------------------------------------------------------------------- reporting


def markdown_table(summary: dict) -> str:
    results = summary["results"]
    has_task = any("task_accuracy" in r for r in results)
    kinds = sorted({k for r in results for k in r.get("noise", {})})
    head = ["model", "params", "train FLOPs", "inference FLOPs/byte", "steps", "wall time", "val bpb"]
    if has_task:
        head.append("task accuracy")
    head += [f"{k} ×" for k in kinds]
    lines = [f"# omnibyte bench on {summary['data']}", "",
             f"Validation: {summary['val'] or 'the dataset val split'}. Bits per byte = NLL bits / bytes of "
             f"the scored text (the BPE model's tokens decode to the same bytes).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: (r["budget"], MODELS.index(r["model"]) if r["model"] in MODELS else 99)):
        row = [r["model"], fmt_si(r["params"]), f"{r['train_flops']:.2e}", fmt_si(r["infer_flops_per_byte"]),
               str(r["steps"]), f"{r['wall_s']:.0f} s", f"{r['val_bpb']:.4f}"]
        if has_task:
            row.append(f"{r['task_accuracy']:.1%}" if "task_accuracy" in r else "")
        row += [f"{r['noise'][k]['ratio']:.3f}" if k in r.get("noise", {}) else "" for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    notes = []
    if "bpe_bytes_per_token" in summary:
        notes.append(f"BPE: {summary['bpe_bytes_per_token']} bytes per token on the train split; its FLOPs "
                     f"per byte are per-token FLOPs over that.")
    if "space_bytes_per_patch" in summary:
        notes.append(f"BLT space patching: {summary['space_bytes_per_patch']} bytes per patch.")
    if "entropy" in summary:
        e = summary["entropy"]
        notes.append(f"BLT entropy patching: threshold {e['threshold']:.3f} nats → {e['bytes_per_patch']:.3f} bytes "
                     f"per patch; the entropy model ({fmt_si(e['params'])} params, {e['train_flops']:.2e} training "
                     f"FLOPs, not counted above) is in the inference FLOPs per byte.")
    if kinds:
        notes.append("Noise columns: noisy bpb / clean bpb on the validation text perturbed at the given rate.")
    notes += summary.get("skipped", [])
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], path: str | Path) -> Path:
    """Validation bpb against training FLOPs (left) and inference FLOPs per byte (right)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name in dict.fromkeys(r["model"] for r in results):
        rows = sorted((r for r in results if r["model"] == name), key=lambda r: r["train_flops"])
        left.plot([r["train_flops"] for r in rows], [r["val_bpb"] for r in rows], "o-", label=name)
        right.plot([r["infer_flops_per_byte"] for r in rows], [r["val_bpb"] for r in rows], "o", label=name)
    left.set_xlabel("training FLOPs")
    right.set_xlabel("inference FLOPs per byte")
    left.set_ylabel("validation bits per byte")
    for ax, key in ((left, "train_flops"), (right, "infer_flops_per_byte")):
        xs = [r[key] for r in results]
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)  # a decade-wide view even for one budget
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=8)
    fig.suptitle("omnibyte bench: lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def run_bench(out: str | Path, **kwargs) -> dict:
    """Run a sweep (see `Bench` for the arguments); returns results.json's content."""
    return Bench(out, **kwargs).run()
