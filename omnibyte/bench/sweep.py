"""The sweep: plan each (model, budget) run, make the data every run shares (the BPE version of the
dataset, the entropy model and its calibration, noisy copies of the validation text), train each
run through the library's Trainer, score it, and write the report. The models and presets are in
presets.py, side-by-side processes in schedule.py, the table and plot in report.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from omnibyte.bench import schedule
from omnibyte.bench.presets import (
    ARCH,
    MODELS,
    BenchPreset,
    Entry,
    arch_available,
    budget_steps,
    frontier_entries,
    load_preset,
    table_for,
)
from omnibyte.bench.report import markdown_table, plot_results
from omnibyte.config import to_dict
from omnibyte.data import ShardDataset, is_dataset, prepare, read_meta
from omnibyte.data.bpe import bytes_per_token, find_tokenizer, prepare_bpe
from omnibyte.data.tasks.cute import read_heldout
from omnibyte.errors import OmnibyteError
from omnibyte.eval.noise import PERTURBATIONS, write_noisy
from omnibyte.eval.runner import score_dataset
from omnibyte.eval.tasks import score_questions
from omnibyte.memory import peak_rss, reset_peak_rss
from omnibyte.models.base import OmniModel
from omnibyte.models.registry import build_model
from omnibyte.patching import PatcherConfig, mean_patch_len, patch_starts
from omnibyte.patching.calibrate import calibrate, sample_stream
from omnibyte.patching.entropy import write_calibration
from omnibyte.train import Trainer, load_run_config
from omnibyte.train.config import read_run_config
from omnibyte.train.trainer import open_dataset

_trained_here = False  # whether this process has trained a run (see `Bench.train`)


class Bench:
    """One sweep. `run()` does everything; the pieces are methods so a script can reuse them.
    `preset`: a preset's name, the path of a preset file, or a `BenchPreset`."""

    def __init__(self, out: str | Path, data: str | Path = "data/kjv", preset: str | Path | BenchPreset = "small",
                 budgets: tuple[float, ...] | None = None, models: tuple[str, ...] = MODELS,
                 val: str | Path | None = None, task: str | None = None, noise: bool = False,
                 noise_rate: float = 0.1, bpe_vocab: int | None = None, seed: int = 0,
                 threads: int | None = None, jobs: int | None = None, frontier: bool = False,
                 repeat_seeds: tuple[int, ...] = (), log: Callable[[str], None] = print):
        self.out, self.data = Path(out), str(data)
        self.preset = preset if isinstance(preset, BenchPreset) else load_preset(preset)
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
        self.frontier = frontier
        # frontier mode: the chosen points trained again at these seeds (the grid runs at `seed`)
        self.repeat_seeds = tuple(s for s in repeat_seeds if s != seed)
        if self.repeat_seeds and not frontier:
            raise OmnibyteError("--seeds repeats the frontier's chosen runs; it needs --frontier (a plain sweep "
                                "takes one --seed)")
        if frontier and not self.preset.grid:
            raise OmnibyteError("--frontier searches the preset's [grid]; this preset has none "
                                "(see configs/bench/small.toml)")
        self.log = log
        self.params: dict[str, int] = {}  # parameters of each planned model (memory per run)
        self.extra: dict = {}  # facts found on the way (bytes per token, patch sizes, entropy model)
        if task not in (None, "cute"):
            raise OmnibyteError(f"unknown task {task!r} (known: cute)")

    # --- data -----------------------------------------------------------------------------------
    def byte_dataset(self) -> ShardDataset:
        return open_dataset(self.data)  # builds the default corpus on first use

    def bpe_dataset(self, vocab: int | None = None) -> ShardDataset:
        """The token version of the dataset (tokenizer of `vocab` ids, default the sweep's, learned
        on its train split), made once per vocabulary."""
        vocab = vocab or self.bpe_vocab
        path = self.out / "data" / f"bpe-{vocab}"
        src = str(Path(self.data).resolve())
        if not (is_dataset(path) and read_meta(path).get("sources") == [src]):
            self.log(f"learning a {vocab}-id BPE tokenizer on {self.data} (train split) ...")
            prepare_bpe(src, path, vocab)
        return ShardDataset(path)

    def val_data(self) -> tuple[ShardDataset, str]:
        """(byte dataset, split) every model is scored on: --val prepared once, else the data's val."""
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

    def test_data(self) -> tuple[ShardDataset, str] | None:
        """(byte dataset, "test") every final model is scored on once, or None: with --val (the
        user's own text replaces the split) or on a dataset without a test split (prepared before
        omnibyte wrote them)."""
        ds = self.byte_dataset()
        if self.val is not None or "test" not in ds.splits or ds.n_ids("test") < 2:
            return None
        return ds, "test"

    # --- per-run configuration ------------------------------------------------------------------
    def model_config(self, entry: Entry) -> dict:
        """The `[model]` table (arch included) of a sweep entry."""
        p = self.preset
        name = entry.model
        arch = ARCH[name]
        table = json.loads(json.dumps(table_for(p, name, entry.size)))  # a copy the caller may change
        if name == "transformer":
            return {"arch": arch, **table}
        if name == "bpe":
            tok = self.bpe_dataset(entry.vocab).meta["tokenizer"]
            return {"arch": arch, **table, "vocab_size": tok["vocab_size"]}
        if name == "megabyte":
            return {"arch": arch, **table}
        patcher: dict = {"kind": name.split("-", 1)[1], "patch_size": p.patch_size}
        cfg = {"arch": arch, **table, "patcher": patcher}
        if name == "blt-space":
            patcher["bytes_per_patch"] = self.space_bytes_per_patch()
        if name == "blt-entropy":
            ent_dir, threshold, achieved = self.entropy_model()
            patcher.update(entropy_model=str(ent_dir), threshold=threshold, bytes_per_patch=achieved)
        return cfg

    def seq_len(self, entry: Entry) -> int:
        """Ids per training sequence: bytes, or for the BPE model about as many bytes in tokens."""
        if entry.model != "bpe":
            return self.preset.seq_len
        bpt = bytes_per_token(self.bpe_dataset(entry.vocab).meta, "train")
        self.extra.setdefault("bpe_bytes_per_token_by_vocab", {})[str(entry.vocab or self.bpe_vocab)] = round(bpt, 3)
        if (entry.vocab or self.bpe_vocab) == self.bpe_vocab:
            self.extra["bpe_bytes_per_token"] = round(bpt, 3)
        return max(8, round(self.preset.seq_len / bpt))

    def space_bytes_per_patch(self) -> float:
        """Mean patch length of space patching on a sample of the train split (for FLOPs accounting)."""
        if "space_bytes_per_patch" not in self.extra:
            ids = torch.from_numpy(sample_stream(self.byte_dataset(), self.preset.calibration_bytes, "train"))
            starts = patch_starts(ids[None], PatcherConfig("space"))
            self.extra["space_bytes_per_patch"] = round(float(mean_patch_len(starts)), 3)
        return self.extra["space_bytes_per_patch"]

    def entropy_model(self) -> tuple[Path, float, float]:
        """Train the entropy model once (a windowed byte transformer) and calibrate its threshold so
        that mean patch length ≈ space patching's on the same data (calibrated again, not retrained,
        when an older run was calibrated to another target). Returns (run dir, threshold, achieved)."""
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
                   "train": self.train_settings(p.entropy_steps, p.seq_len, p.lr)}
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

    def train_settings(self, steps: int, seq_len: int, lr: float, seed: int | None = None) -> dict:
        p = self.preset
        return {"steps": steps, "batch_size": p.batch_size, "seq_len": seq_len, "lr": lr,
                "warmup_steps": min(p.warmup_steps, max(0, steps // 10)), "eval_every": 0, "eval_batches": 1,
                "save_every": 0, "log_every": max(1, min(50, steps // 10)),
                "seed": self.seed if seed is None else seed, "dtype": p.dtype,
                "threads": p.threads}

    # --- training ---------------------------------------------------------------------------------
    def train(self, raw: dict, run_dir: Path) -> dict:
        """Train one run in this process (resuming an interrupted one); returns its facts."""
        t0 = time.perf_counter()
        # this run's own peak: measurable when nothing was trained in this process before it (a
        # freed heap stays resident, so a second run's peak would hold the first run's memory)
        global _trained_here
        first = not _trained_here and reset_peak_rss()
        _trained_here = True
        if (run_dir / "checkpoint" / "trainer.pt").is_file():
            trainer = Trainer(read_run_config(run_dir), run_dir, resume=True, quiet=True)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            trainer = Trainer(load_run_config(None, raw), run_dir, quiet=True)
        trainer.fit()
        wall = time.perf_counter() - t0
        steps = trainer.step
        if steps < trainer.total_steps:  # stopped by a signal: no record, and its checkpoint resumes it
            raise OmnibyteError(f"{run_dir.name} stopped at step {steps} of {trainer.total_steps}; run the bench "
                                f"again to continue it")
        peak = peak_rss() if first else None
        used = logged(run_dir, "mfu")  # one value per logged stretch of steps
        return {"run": str(run_dir), "params": trainer.model.num_params(), "steps": steps, "dtype": trainer.dtype,
                **({"mfu": statistics.median(used)} if used else {}),
                "train_flops": steps * trainer.bytes_per_step * trainer.flops_per_byte, "wall_s": round(wall, 1),
                "ids_per_step": trainer.bytes_per_step,
                **({"peak_rss_mib": round(peak / 2**20)} if peak is not None else {})}

    def entropy_charge(self, entry: Entry, seq_len: int) -> tuple[float, float]:
        """(FLOPs charged once, FLOPs charged per training byte) besides the run's own training:
        for BLT-entropy the entropy model's training and its forward pass over every byte the BLT
        trains on; nothing for the other models."""
        if entry.model != "blt-entropy":
            return 0.0, 0.0
        self.entropy_model()
        e = self.extra["entropy"]
        return e["train_flops"], e["infer_flops_per_byte"]

    def plan(self, entry: Entry) -> tuple[dict, int]:
        """(run config, steps) of one sweep entry. BLT-entropy's steps are what is left of the budget
        after its entropy model is paid for (preset `charge_entropy`)."""
        name, budget = entry.model, entry.budget
        model_cfg = self.model_config(entry)
        seq_len = self.seq_len(entry)
        arch = model_cfg.pop("arch")
        model = build_model(arch, model_cfg)
        self.params[entry.name] = model.num_params()
        fixed, per_id = self.entropy_charge(entry, seq_len) if self.preset.charge_entropy else (0.0, 0.0)
        steps = budget_steps(model, budget, self.preset.batch_size, seq_len, fixed, per_id)
        data = str(self.bpe_dataset(entry.vocab).path) if name == "bpe" else self.data
        lr = entry.lr or self.preset.lr
        raw = {"model": {"arch": arch, **model_cfg}, "data": {"path": data},
               "train": {**self.train_settings(max(1, steps), seq_len, lr, entry.seed), "flops": 0.0}}
        return raw, steps

    @staticmethod
    def same_plan(raw: dict, steps: int, run_dir: Path) -> bool:
        """Whether the finished run in run_dir was trained as planned now (`plan`'s raw config and
        steps): the same model config and step count (a changed preset must not reuse stale runs)."""
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

    def run_one(self, entry: Entry) -> dict:
        name, budget = entry.model, entry.budget
        run_dir = self.out / "runs" / entry.name
        record_file = run_dir / "bench.json"
        record = json.loads(record_file.read_text()) if record_file.is_file() else None
        raw, steps = self.plan(entry)
        if record is not None and not self.same_plan(raw, steps, run_dir):
            self.log(f"  {run_dir.name}: the preset's model or steps changed since it was trained; training it again")
            record = None
            (run_dir / "checkpoint" / "trainer.pt").unlink(missing_ok=True)  # a fresh run, not a resumed one
        if record is None:
            if steps < 1:
                what = " after paying for its entropy model" if name == "blt-entropy" else ""
                raise OmnibyteError(f"budget {budget:.3g} FLOPs is less than one training step{what}")
            self.log(f"  training {entry.name} for {steps} steps ...")
            info = self.train(raw, run_dir)
            if name == "bpe":
                shutil.copy(self.bpe_dataset(entry.vocab).path / "tokenizer.json", run_dir / "tokenizer.json")
            record = {"model": name, "budget": budget, "variant": entry.variant, "lr": raw["train"]["lr"],
                      "seed": raw["train"]["seed"], **info}
            if name == "bpe":
                record["bpe_vocab"] = entry.vocab or self.bpe_vocab
            record_file.write_text(json.dumps(record, indent=2) + "\n")
            # a finished run keeps its weights; its optimizer state (twice their size) only served to
            # resume it, and its schedule is spent
            (run_dir / "checkpoint" / "trainer.pt").unlink(missing_ok=True)
        record.setdefault("seed", raw["train"]["seed"])  # records written before seeds were kept
        fixed, per_id = self.entropy_charge(entry, raw["train"]["seq_len"])
        ids = record["steps"] * record["ids_per_step"]
        record.update(entropy_flops=fixed + per_id * ids, name=entry.name)
        record["train_flops_all"] = record["train_flops"] + record["entropy_flops"]
        record = self.evaluate(entry, record)
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        return record

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, entry: Entry, record: dict) -> dict:
        """Fill in what the record lacks: val and test bpb, inference FLOPs/byte, task accuracy, noise."""
        name = entry.model
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
                r = score(self.bpe_dataset(entry.vocab), "val", scratch)
            else:
                r = score(val, split, scratch)
            record.update(val_bpb=r["bpb"], val_bytes=r["bytes"], val_key=val_key)
            record.pop("noise", None)
        test = self.test_data()
        if test is None:
            for key in ("test_bpb", "test_bytes", "test_key"):
                record.pop(key, None)
        elif record.get("test_key") != f"{test[0].path}:test":
            r = score(self.bpe_dataset(entry.vocab) if name == "bpe" else test[0], "test", scratch)
            record.update(test_bpb=r["bpb"], test_bytes=r["bytes"], test_key=f"{test[0].path}:test")
        infer = model.flops_per_byte(seq_len)["infer"]
        if name == "bpe":
            infer /= bytes_per_token(self.bpe_dataset(entry.vocab).meta, "train")
        record["infer_flops_per_byte"] = infer
        if self.task == "cute" and "task_accuracy" not in record:
            examples = read_heldout(self.data)[: self.preset.task_limit or None]
            r = score_questions(model, examples, tokenizer, batch_size=32)
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
        val, split = self.val_data()
        out = {}
        for kind in PERTURBATIONS:
            path = self.out / "data" / f"noisy-{kind}-{self.noise_rate:g}"
            if not is_dataset(path) or ShardDataset(path).meta["sources"] != [f"{val.path}:{split} + "
                                                                               f"{kind}@{self.noise_rate}"]:
                write_noisy(val, split, path, kind, self.noise_rate, self.seed)
            out[kind] = (ShardDataset(path), "train")
        return out

    def train_parallel(self, todo: list[Entry]) -> None:
        """Train (and score) the runs in `todo` in `preset.jobs` worker processes; the sequential
        pass in `run` then finds them finished. What several runs share (the BPE data, the entropy
        model and its calibration, noisy copies) is made here first, once."""
        for entry in todo:  # planning makes the BPE data, the entropy model and its calibration
            try:
                self.plan(entry)
            except OmnibyteError:
                pass  # the sequential pass in `run` meets the same error and reports it
        if self.noise:
            self.noisy_data()
        args = dict(out=str(self.out), data=self.data, preset=self.preset, val=self.val, task=self.task,
                    noise=self.noise, noise_rate=self.noise_rate, bpe_vocab=self.bpe_vocab, seed=self.seed,
                    frontier=self.frontier, repeat_seeds=self.repeat_seeds)
        params = [self.params[e.name] for e in todo if e.name in self.params]
        schedule.train_parallel(Bench, args, todo, params, self.preset.jobs, self.log)

    def entries(self, models: tuple[str, ...]) -> list[Entry]:
        """The sweep's runs: each model at each budget, or in frontier mode every grid point."""
        if self.frontier:
            return frontier_entries(self.preset, models, self.budgets)
        return [Entry(m, b) for m in models for b in self.budgets]

    def train_all(self, todo: list[Entry], skipped: list[str]) -> list[dict]:
        """Train and score `todo` (in worker processes first when the preset asks for jobs); each
        record also holds its entry (popped before results.json). A failed run lands in `skipped`."""
        if self.preset.jobs > 1:
            self.train_parallel(todo)
        results = []
        for i, entry in enumerate(todo, 1):
            self.log(f"[{i}/{len(todo)}] {entry.name} at {entry.budget:.3g} training FLOPs")
            try:
                rec = self.run_one(entry)
            except OmnibyteError as e:
                msg = f"{entry.name} at {entry.budget:.3g}: failed: {e}"
                self.log("  " + msg)
                skipped.append(msg)
                continue
            results.append({**rec, "entry": entry})
            test = f", test {rec['test_bpb']:.4f}" if "test_bpb" in rec else ""
            self.log(f"  {rec['steps']} steps in {rec['wall_s']:.0f} s → val {rec['val_bpb']:.4f}{test} bits/byte")
        return results

    # --- everything ---------------------------------------------------------------------------------
    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        self.byte_dataset()
        if self.task == "cute":
            read_heldout(self.data)  # fail now, not after training, when the data is no task suite
        skipped: list[str] = []
        models = []
        for name in self.models:
            if not arch_available(ARCH[name]):
                msg = f"{name}: skipped (model module omnibyte.models.{ARCH[name]} is not available)"
                self.log(msg)
                skipped.append(msg)
                continue
            models.append(name)
        results = self.train_all(self.entries(tuple(models)), skipped)
        picks = frontier(results) if self.frontier else None
        if picks and self.repeat_seeds:
            chosen = {f["name"] for f in picks}
            again = [dataclasses.replace(r["entry"], seed=s) for r in results if r["name"] in chosen
                     for s in self.repeat_seeds]
            self.log(f"the frontier's {len(chosen)} chosen runs again at seed(s) "
                     f"{', '.join(map(str, self.repeat_seeds))} ...")
            repeats = self.train_all(again, skipped)
            add_seeds(picks, results, repeats)
            results += repeats
        for r in results:
            r.pop("entry")
        # the patch facts the report notes, also when every run was reused (cheap: cached on disk)
        names = {r["model"] for r in results}
        if "blt-space" in names:
            self.space_bytes_per_patch()
        if "blt-entropy" in names:
            self.entropy_model()
        summary = {"data": self.data, "val": str(self.val) if self.val else None,
                   "test": self.test_data() is not None, "preset": dataclasses.asdict(self.preset),
                   "budgets": list(self.budgets), "frontier": picks,
                   "results": results, "skipped": skipped, **self.extra}
        (self.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        (self.out / "results.md").write_text(markdown_table(summary))
        if results:  # frontier mode plots each family's chosen runs
            chosen = {f["name"] for f in summary["frontier"] or []}
            plot_results([r for r in results if r["name"] in chosen] or results, self.out / "bpb_vs_flops.png")
        return summary


def frontier(results: list[dict]) -> list[dict]:
    """Per (model, budget) the grid point with the lowest validation bpb — chosen on val only; its
    test bpb is what the frontier reports."""
    best: dict[tuple[str, float], dict] = {}
    for r in results:
        key = (r["model"], r["budget"])
        if key not in best or r["val_bpb"] < best[key]["val_bpb"]:
            best[key] = r
    return [{"model": m, "budget": b, "name": r["name"], "grid_points": sum(1 for x in results
                                                                             if (x["model"], x["budget"]) == (m, b))}
            for (m, b), r in best.items()]


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of `key` in a run's metrics.jsonl rows (none when the file is missing)."""
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return []
    rows = (json.loads(line) for line in f.read_text().splitlines() if line.strip())
    return [r[key] for r in rows if key in r]


def add_seeds(picks: list[dict], grid: list[dict], repeats: list[dict]) -> None:
    """Each chosen point's test bpb at every seed it was trained at (the grid's and the repeats'),
    with their mean, min and max."""
    by_name = {r["name"]: r for r in grid}
    for f in picks:
        chosen = by_name[f["name"]]
        runs = [chosen, *(r for r in repeats if r["entry"] == dataclasses.replace(chosen["entry"], seed=r["seed"]))]
        scores = {r["seed"]: r["test_bpb"] for r in runs if "test_bpb" in r}
        if scores:
            values = list(scores.values())
            f.update(test_by_seed=scores, test_mean=sum(values) / len(values), test_min=min(values),
                     test_max=max(values))


def run_bench(out: str | Path, **kwargs) -> dict:
    """Run a sweep (see `Bench` for the arguments); returns results.json's content."""
    return Bench(out, **kwargs).run()
