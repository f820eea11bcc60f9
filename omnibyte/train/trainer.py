"""One training loop for every model (byte transformer, MEGABYTE, BLT, BPE baseline).

Plain phases, as in nanoGPT: set the lr → evaluate/checkpoint when due → micro-steps with
gradient accumulation → clip → step → log. Device, dtype, compile and DistributedDataParallel
are settings applied from outside the model. A run directory holds:

    run.json            resolved config (defaults + file + overrides)
    checkpoint/         model.safetensors, config.json, trainer.pt (optimizer, step) — atomic
    metrics.jsonl       one JSON object per log line / evaluation
    tb/                 TensorBoard events
    loss.png            loss curve, written at the end
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from omnibyte.checks import check_vocab, first_non_finite, resolve_device
from omnibyte.config import parse_overrides
from omnibyte.data import DEFAULT_DATA_DIR, BatchLoader, ShardDataset, eval_batches, prepare_kjv
from omnibyte.data.bpe import TOKENIZER_FILE, dataset_tokenizer
from omnibyte.data.modality import ANSWER_AUX, MODALITY_AUX, TEXT, LabelledDataset
from omnibyte.errors import OmnibyteError
from omnibyte.eval.bpb import bits_per_byte
from omnibyte.eval.multimodal import has_task_records, run_examples, score_examples
from omnibyte.files import CHECKPOINT, replace_dir
from omnibyte.machine import auto_dtype, device_peak, mfu
from omnibyte.memory import check_fits, forward_bytes, training_bytes
from omnibyte.models.registry import build_model, load_model
from omnibyte.nn import distill_loss
from omnibyte.progress import progress
from omnibyte.train.config import RunConfig, load_run_config, read_run_config
from omnibyte.train.distill import Teacher
from omnibyte.train.optim import clip_grad_norm, make_optimizer
from omnibyte.train.runfolder import (
    acquire_run_lock,
    clear_run_files,
    recover_checkpoint,
    truncate_metrics,
)
from omnibyte.train.warmstart import load_init


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_setting: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, NCCL on CUDA) —
    also with one process, so `torchrun --nproc-per-node 1` runs the DDP path end to end."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not device_setting.startswith("cpu")
    if not dist.is_initialized():  # NCCL is told its device up front (no guessing at the first barrier)
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                device_id=torch.device("cuda", local) if cuda else None)
    if cuda:
        torch.cuda.set_device(local)
    return Dist(rank, world, local)


def pick_device(setting: str, d: Dist) -> torch.device:
    if setting == "auto":
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise OmnibyteError(f"train.device is {setting!r} but CUDA is not available")
    if setting == "cuda" and dist.is_initialized():
        return torch.device(f"cuda:{d.local_rank}")
    return resolve_device(setting)


def lr_at(step: int, cfg, total: int | None = None) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr · min_lr_ratio at `total` steps
    (cfg.steps, or fewer when a FLOPs budget ends the run earlier)."""
    total = cfg.steps if total is None else total
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def open_dataset(path: str) -> ShardDataset:
    """The prepared dataset at `path`; the default corpus is built on first use."""
    p = Path(path)
    if not (p / "meta.json").exists() and Path(path) == Path(DEFAULT_DATA_DIR):
        print(f"preparing the default corpus (King James Bible) into {p} ...", flush=True)
        prepare_kjv(p)
    if not p.exists():
        raise OmnibyteError(f"dataset {p} not found: run `omnibyte prepare SRC... --out {p}` first")
    return ShardDataset(p)


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, resume: bool = False, quiet: bool = False):
        """Lock the run folder (rank 0; a second process training into it gets an error), put it
        in order after any crash, then build the model, data and optimizer, resuming if asked."""
        self.cfg, self.run_dir, self.quiet = cfg, Path(run_dir), quiet
        self.dist = init_distributed(cfg.train.device)
        self.lock = None
        if self.dist.main:
            self.lock = acquire_run_lock(self.run_dir)
            weakref.finalize(self, self.lock.release)  # a trainer dropped without fit() unlocks too
            recover_checkpoint(self.run_dir)
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.device = pick_device(tc.device, self.dist)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        # "bf16" trains under bf16 autocast (the weights and optimizer state stay fp32); auto picks
        # it on CUDA and on a CPU with AMX-BF16 (omnibyte/machine.py)
        self.dtype = auto_dtype(self.device.type) if tc.dtype == "auto" else tc.dtype
        self.amp_dtype = torch.bfloat16 if self.dtype == "bf16" else None
        # what model FLOPs utilisation is measured against: the cores this run's threads use (all
        # processes' on a CPU) or one GPU per process; None where the machine is not recognised
        threads = torch.get_num_threads() * self.dist.world_size
        self.peak = device_peak(self.device, self.dtype, threads, self.dist.world_size)

        torch.manual_seed(tc.seed)
        if resume:  # the saved model as it was built (its patcher resolved then), not rebuilt from run.json
            try:
                self.model = load_model(self.run_dir / CHECKPOINT, map_location=self.device)
            except OmnibyteError as e:
                raise OmnibyteError(f"cannot resume from {self.run_dir}: {e}") from None
        else:
            self.model = build_model(cfg.arch, cfg.model).to(self.device)
            if tc.init:
                load_init(self.model, tc.init)
        self.teacher = Teacher(tc.distill_from, self.model, self.device) if tc.distill_from else None
        self.dataset, self.extras = self.rank0_first(self.open_data)
        self.tokenizer = dataset_tokenizer(self.dataset)  # BPE baseline: scored per byte of text
        self.bytes_per_id = self.tokenizer.bytes_per_id if self.tokenizer is not None else None
        self.media_weight, self.prompt_weight = tc.media_loss_weight, tc.prompt_loss_weight
        aux = tuple(self.extras.values())
        if self.teacher is not None:  # the arrays a teacher reads too (a BLT teacher's entropies)
            aux = tuple(dict.fromkeys([*aux, *self.teacher.extras.values()]))
        if self.media_weight != 1.0:  # modality labels of the training stream, computed once in memory
            if self.tokenizer is not None:
                raise OmnibyteError("train.media_loss_weight needs a byte dataset: BPE token ids carry no "
                                    "image/audio blocks to weight")
            self.dataset, aux = LabelledDataset(self.dataset), (*aux, MODALITY_AUX)
        if self.prompt_weight != 1.0:
            if not self.dataset.has_aux("train", ANSWER_AUX):
                raise OmnibyteError(f"train.prompt_loss_weight needs a task dataset: {self.dataset.path} marks no "
                                    f"prompts and answers (build one with `omnibyte prepare --task/--mix`)")
            aux = (*aux, ANSWER_AUX)
        self.loader = BatchLoader(self.dataset, "train", tc.batch_size, tc.seq_len, tc.seed,
                                  self.dist.rank, self.dist.world_size, aux=aux, align_docs=tc.align_docs)
        self.has_val = self.dataset.n_ids("val") > 1 if "val" in self.dataset.splits else False
        if tc.task_eval_every and not has_task_records(self.dataset.path):
            raise OmnibyteError(f"train.task_eval_every needs a task dataset: {self.dataset.path} holds no held-out "
                                f"task examples (build one with `omnibyte prepare --task/--mix`)")
        if self.has_val:  # a missing or truncated val shard (or aux array) is found now, not after the last step
            next(eval_batches(self.dataset, "val", 1, 1, 1, aux=tuple(self.extras.values())))
        # tables a model marks sparse (BLT's hash n-grams): sparse gradients and row-wise updates, on
        # the CPU in one eager process (DDP over NCCL and torch.compile take dense gradients)
        sparse = self.device.type == "cpu" and self.dist.world_size == 1 and not tc.compile
        self.optimizer = make_optimizer(self.model, tc, self.device, sparse)
        self.step = 0

        # training FLOPs per byte: the student's forward and backward, and a teacher's forward
        self.flops_per_byte = self.model.flops_per_byte(tc.seq_len)["train"]
        if self.teacher is not None:
            self.flops_per_byte += self.teacher.flops_per_byte(tc.seq_len)
        self.bytes_per_step = tc.batch_size * tc.seq_len * tc.grad_accum * self.dist.world_size
        self.total_steps = tc.steps
        if tc.flops > 0:
            self.total_steps = min(tc.steps, max(1, int(tc.flops // (self.flops_per_byte * self.bytes_per_step))))

        self.check_memory(aux)

        self._purge_step = None
        if resume:
            self.load_checkpoint()
            if self.dist.main:  # the steps after the checkpoint are trained (and logged) again
                truncate_metrics(self.run_dir, self.step)
                self._purge_step = self.step + 1
        elif self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clear_run_files(self.run_dir)  # a new run's metrics never continue an older one's
            (self.run_dir / "run.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

        self.train_model = self.model
        if dist.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.model, device_ids=ids)
        if tc.compile:
            self.train_model = torch.compile(self.train_model)
        self._stop_signal = None
        self._tb = None

    def close(self) -> None:
        """Unlock the run folder (fit() does this when it ends)."""
        if self.lock is not None:
            self.lock.release()

    def check_memory(self, aux: tuple[str, ...]) -> None:
        """Refuse, before the first step, a batch or model whose training step cannot fit in memory."""
        tc = self.cfg.train

        def loss_of(n: int) -> torch.Tensor:  # one window of the training data, n ids long
            batch = next(eval_batches(self.dataset, "train", 1, n, 1, aux=aux))
            ids = batch["ids"].to(self.device)
            kwargs = {k: batch[v].to(self.device) for k, v in self.extras.items()}
            with self.autocast():
                return self.model(ids[:, :-1], ids[:, 1:], **kwargs).loss

        need = training_bytes(self.model, tc.batch_size, tc.seq_len, loss_of)
        if self.teacher is not None:  # its forward pass beside the student's (its weights are loaded already)
            need += forward_bytes(self.teacher.model, tc.batch_size, tc.seq_len)
        check_fits(need, self.device,
                   f"training {self.model.num_params():,} parameters on {tc.batch_size} × {tc.seq_len:,} ids "
                   f"per micro-step", "lower train.batch_size (raise train.grad_accum to keep the batch), "
                   "train.seq_len or the model's size")

    # --- pieces -----------------------------------------------------------------------------
    def rank0_first(self, fn):
        """Run fn on rank 0, then (after a barrier) on the other ranks, which find on disk what
        rank 0 wrote instead of writing it again concurrently."""
        if self.dist.world_size == 1:
            return fn()
        out = fn() if self.dist.main else None
        dist.barrier()
        return out if self.dist.main else fn()

    def open_data(self) -> tuple[ShardDataset, dict[str, str]]:
        """The dataset (the default corpus is built on first use) and what the model adds to it
        once, e.g. BLT's precomputed entropies: {forward kwarg: aux array name}."""
        dataset = open_dataset(self.cfg.data.path)
        check_vocab(dataset, self.model)
        extras = self.model.prepare_data(dataset)
        if self.teacher is not None:
            self.teacher.prepare_data(dataset)
        return dataset, extras

    def precision(self) -> str:
        """The dtype the run trains in, as the start line says it: "fp32", "bf16 autocast", with
        why when train.dtype auto chose it."""
        text = "bf16 autocast" if self.dtype == "bf16" else self.dtype
        if self.cfg.train.dtype == "auto":
            why = "this CPU has AMX-BF16" if self.device.type == "cpu" and self.dtype == "bf16" else ""
            text += f" (train.dtype auto{': ' + why if why else ''})"
        return text

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward_loss(self, batch: dict, parts: dict | None = None) -> torch.Tensor:
        """The training loss of one micro-batch. Distilling, it is (1 - w) · data loss + w · T² · KL,
        and `parts` (if given) collects the two terms as "data_loss" and "distill_kl"."""
        ids = batch["ids"].to(self.device, non_blocking=True)
        kwargs = {k: batch[v].to(self.device) for k, v in self.extras.items()}
        weighted = self.media_weight != 1.0 or self.prompt_weight != 1.0
        with self.autocast():
            if not weighted and self.teacher is None:
                return self.train_model(ids[:, :-1], ids[:, 1:], **kwargs).loss
            logits = self.train_model(ids[:, :-1], **kwargs).logits
        weights = None
        if weighted:
            weights = torch.ones(ids[:, 1:].shape, device=self.device)  # of each target
        if self.media_weight != 1.0:
            media = batch[MODALITY_AUX][:, 1:].to(self.device) != TEXT
            weights = torch.where(media, self.media_weight, weights)
        if self.prompt_weight != 1.0:
            prompt = batch[ANSWER_AUX][:, 1:].to(self.device) < 0.5
            weights = torch.where(prompt, weights * self.prompt_weight, weights)
        loss = self.model.loss(logits, ids[:, 1:], weights)
        if self.teacher is None:
            return loss
        tc = self.cfg.train
        teacher_logits = self.teacher.logits(batch, self.device, self.autocast)
        kl = distill_loss(logits, teacher_logits, ids[:, 1:], tc.distill_temperature, weights)
        if parts is not None:
            parts["data_loss"] = parts.get("data_loss", 0.0) + loss.item()
            parts["distill_kl"] = parts.get("distill_kl", 0.0) + kl.item()
        return (1 - tc.distill_weight) * loss + tc.distill_weight * kl

    def micro_steps(self, step: int, parts: dict | None = None) -> float:
        """Forward + backward over this step's micro-batches; returns the mean loss (and the mean of
        each loss term in `parts`, if given, when distilling)."""
        n = self.cfg.train.grad_accum
        total = 0.0
        sums: dict = {}
        for micro in range(n):
            batch = self.loader.get_batch(step * n + micro)
            sync = micro == n - 1 or not isinstance(self.train_model, DDP)
            ctx = contextlib.nullcontext() if sync else self.train_model.no_sync()
            with ctx:
                loss = self.forward_loss(batch, sums)
                (loss / n).backward()
            total += loss.item()
        if parts is not None:
            parts.update({k: v / n for k, v in sums.items()})
        return total / n

    def sync_weights(self) -> None:
        """Sparse table updates leave rows a step did not read behind (omnibyte/train/optim.py):
        bring them up to date before the weights are read whole."""
        if hasattr(self.optimizer, "flush"):
            self.optimizer.flush()

    def evaluate(self, max_batches: int | None = None) -> dict:
        tc = self.cfg.train
        self.sync_weights()
        if max_batches is None:
            max_batches = tc.eval_batches or None
        batches = eval_batches(self.dataset, "val", tc.batch_size, tc.seq_len, max_batches,
                               aux=tuple(self.extras.values()))
        return bits_per_byte(self.model, batches, self.extras, autocast=self.autocast,
                             bytes_per_id=self.bytes_per_id)

    def evaluate_tasks(self) -> dict:
        """Task metrics on the first `task_eval_n` val examples of each kind, flattened as
        val_<kind>_<metric> (chance levels left out: they do not move)."""
        self.sync_weights()
        self.model.eval()
        try:
            with self.autocast():
                results = run_examples(self.model, self.dataset.path, n=self.cfg.train.task_eval_n, complete=False)
        finally:
            self.model.train()
        return {f"val_{kind}_{k}": v for kind, m in score_examples(results).items() for k, v in m.items()
                if isinstance(v, int | float) and not k.startswith(("chance", "majority", "wrong_name", "copy_row"))
                and k not in ("n", "tolerance", "bytes") and not k.startswith("n_") and v == v}

    # --- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.sync_weights()
        bad = first_non_finite(self.model.state_dict())  # the same on every rank: all stop together
        if bad:  # the loss can still be finite at the step whose update overflowed the weights
            raise OmnibyteError(f"training diverged at step {self.step}: {bad} (lower train.lr); the last "
                                f"checkpoint, if any, is kept")
        if not self.dist.main:
            return
        final = self.run_dir / CHECKPOINT
        tmp = self.run_dir / f"{CHECKPOINT}.tmp"
        self.model.save_pretrained(tmp)  # writes tmp atomically itself
        if self.tokenizer is not None:  # a BPE model dir carries its tokenizer
            self.tokenizer.save(tmp / TOKENIZER_FILE)
        state = {"step": self.step, "optimizer": self.optimizer.state_dict()}
        if self.teacher is not None:
            state["teacher"] = self.teacher.digest
        torch.save(state, tmp / "trainer.pt")
        replace_dir(tmp, final)

    def load_checkpoint(self) -> None:
        """The optimizer state and step of the checkpoint whose weights the model was loaded from."""
        ckpt = self.run_dir / CHECKPOINT
        if not (ckpt / "trainer.pt").exists():
            raise OmnibyteError(f"{self.run_dir} holds a model but no training state to resume (an imported or pruned "
                                f"model, or a finished bench run): train from its weights with --init {self.run_dir}")
        try:
            tstate = torch.load(ckpt / "trainer.pt", map_location=self.device, weights_only=True)
        except Exception as e:  # corrupt files of any kind: say which
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OmnibyteError(f"cannot resume from corrupt checkpoint in {ckpt}: {first}") from None
        if "optimizers" in tstate["optimizer"] and not hasattr(self.optimizer, "optimizers"):
            raise OmnibyteError(f"{ckpt} was saved with sparse table updates: resume on the CPU in one process "
                                f"without compile")
        if self.teacher is not None and tstate.get("teacher", self.teacher.digest) != self.teacher.digest:
            raise OmnibyteError(f"cannot resume {self.run_dir}: its teacher train.distill_from {self.teacher.path} "
                                f"holds other weights than when the run started")
        self.optimizer.load_state_dict(tstate["optimizer"])
        self.step = int(tstate["step"])

    # --- logging ------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if not self.dist.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        tb = self.tensorboard()
        if tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    tb.add_scalar(k, v, record["step"])

    def tensorboard(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb = False
            else:
                # resumed: events past the checkpoint's step are hidden, as they are trained again
                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self._purge_step)
                self._purge_step = None
        return self._tb or None

    # --- the loop -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self._stop_signal = signum

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to cfg.train.steps (or the FLOPs budget). `stop_after` ends this call early at that
        step (a checkpoint is saved), as an interruption would; `--resume` continues it."""
        tc = self.cfg.train
        if self.dist.main and self.lock.released:  # fit() again after an earlier one ended
            self.lock = acquire_run_lock(self.run_dir)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = progress(total=self.total_steps, initial=self.step, disable=self.quiet or not self.dist.main,
                       unit="step")
        self.model.train()
        last = {"step": self.step}
        t_log, bytes_since = time.perf_counter(), 0
        try:
            while self.step < self.total_steps:
                step = self.step
                lr = lr_at(step, tc, self.total_steps)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                parts: dict = {}
                loss = self.micro_steps(step, parts)
                if tc.grad_clip > 0:
                    gnorm = float(clip_grad_norm(self.model.parameters(), tc.grad_clip))
                else:
                    gnorm = float("nan")
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                bytes_since += self.bytes_per_step
                if not math.isfinite(loss):
                    raise OmnibyteError(f"loss became {loss} at step {step}; lower train.lr or check the data")

                if self.step % tc.log_every == 0 or self.step == self.total_steps:
                    dt = time.perf_counter() - t_log
                    rate = bytes_since / dt if dt > 0 else 0.0
                    used = mfu(rate * self.flops_per_byte, self.peak)
                    last = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": gnorm,
                            "bytes_per_s": rate, "flops": self.step * self.bytes_per_step * self.flops_per_byte,
                            "epoch": self.loader.epoch(self.step), "dtype": self.dtype,
                            **({"mfu": used} if used is not None else {}), **parts}
                    self.log(last)
                    shown = {"mfu": f"{used:.1%}"} if used is not None else {}
                    bar.set_postfix(loss=f"{loss:.3f}", bytes_s=f"{rate:,.0f}", **shown, refresh=False)
                    t_log, bytes_since = time.perf_counter(), 0
                done = self.step == self.total_steps
                if ((tc.eval_every and self.step % tc.eval_every == 0) or done) and self.has_val:
                    ev = self.evaluate() if self.dist.main else None
                    if ev is not None:
                        if not math.isfinite(ev["bpb"]):
                            raise OmnibyteError(f"validation bits per byte became {ev['bpb']} at step {self.step}; "
                                                f"lower train.lr or check the data")
                        self.log({"step": self.step, "val_bpb": ev["bpb"], "val_bytes": ev["bytes"]})
                        bar.set_postfix(loss=f"{loss:.3f}", val_bpb=f"{ev['bpb']:.3f}", refresh=False)
                        last["val_bpb"] = ev["bpb"]
                    t_log = time.perf_counter()  # evaluation time is not training throughput
                if tc.task_eval_every and (self.step % tc.task_eval_every == 0 or done):
                    tasks = self.evaluate_tasks() if self.dist.main else None
                    if tasks:
                        self.log({"step": self.step, **tasks})
                    t_log = time.perf_counter()
                bar.update(1)
                interrupted = self._stop_signal is not None or (stop_after is not None and self.step >= stop_after)
                if (tc.save_every and self.step % tc.save_every == 0) or done or interrupted:
                    self.save_checkpoint()
                if interrupted:
                    break
        except BaseException:
            self.close()
            raise
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
            if self._tb:
                self._tb.close()
                self._tb = None
        if self._stop_signal is not None:
            last["signal"] = int(self._stop_signal)  # the CLI exits 128 + signal, as a killed process would
            if self.dist.main and not self.quiet:
                print(f"stopped at step {self.step}; checkpoint saved. Continue with: "
                      f"omnibyte train --resume {self.run_dir}", flush=True)
        if self.step >= self.total_steps and self.dist.main:
            plot_metrics(self.run_dir)
        self.close()
        return last


# the task metrics tasks.png draws, each the one its target is set on (error rates capped at 1 by the axis)
TASK_CURVES = ("val_classify_accuracy", "val_clock_hour", "val_clock_within", "val_count_accuracy", "val_point_f1",
               "val_transcribe_cer", "val_transcribe_cer_en", "val_transcribe_cer_fr")


def plot_metrics(run_dir: Path) -> Path | None:
    """loss.png: training loss and validation bpb against step; tasks.png: each task metric on the
    validation examples against step (when the run logged them: `train.task_eval_every`)."""
    f = Path(run_dir) / "metrics.jsonl"
    if not f.is_file():
        return None
    rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_bpb"]) for r in rows if "val_bpb" in r]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss (nats/id)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation bits/byte")
    ax.set_xlabel("step")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(run_dir) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    curves = {k: [(r["step"], r[k]) for r in rows if k in r] for k in TASK_CURVES}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k, points in curves.items():
            ax.plot(*zip(*points), "o-", label=k.removeprefix("val_"))
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{Path(run_dir).name}: task metrics on validation examples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(Path(run_dir) / "tasks.png", dpi=100)
        plt.close(fig)
    return out


def train(config: str | None, overrides: list[str], out: str | None, resume: str | None,
          quiet: bool = False) -> dict:
    """Entry point of `omnibyte train` (also under torchrun).

    The run folder is locked before it is looked at, so two processes never both start a run in
    it. A folder whose run never saved a checkpoint (it failed or was stopped before) is trained
    again from step 0, by --resume (with its run.json) or by naming it as --out."""
    if resume:
        given = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
        changed = [f"--{section}.{key}" for section in ("model", "patcher") for key in _dotted(given.get(section))]
        if changed:
            raise OmnibyteError(f"{', '.join(changed)} cannot change on --resume: it continues the model its "
                                f"checkpoint holds (start a new run instead)")
    if resume and config:
        raise OmnibyteError(f"--resume continues {resume} with its own config ({Path(resume) / 'run.json'}): "
                            f"give no CONFIG file with it (change settings with overrides, e.g. --train.steps N)")
    if resume and out and Path(out).resolve() != Path(resume).resolve():
        raise OmnibyteError(f"--resume trains on in {resume}: give no --out with it")
    if resume:
        cfg = read_run_config(Path(resume), overrides)  # checked before the folder is touched
        run_dir = Path(resume)
    else:
        cfg = load_run_config(config, overrides)
        run_dir = Path(out or default_run_dir(config, cfg))
    main = int(os.environ.get("RANK", "0")) == 0
    lock = acquire_run_lock(run_dir) if main else None
    try:
        if main:
            recover_checkpoint(run_dir)
        saved = (run_dir / CHECKPOINT).exists()
        if resume:
            if not saved and main and not quiet:
                print(f"{run_dir} has no checkpoint yet: training it from step 0", flush=True)
            trainer = Trainer(cfg, run_dir, resume=saved, quiet=quiet)
        else:
            if saved:
                raise OmnibyteError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                                    f"or choose another --out")
            trainer = Trainer(cfg, run_dir, quiet=quiet)
        result = run_trainer(trainer, cfg, quiet)
    finally:
        if lock is not None:
            lock.release()
    return result


def run_trainer(trainer: Trainer, cfg: RunConfig, quiet: bool) -> dict:
    """Announce the run, train it, and leave the process group under torchrun."""
    if trainer.dist.main and not quiet:
        m = trainer.model
        print(f"{cfg.arch}: {m.num_params():,} parameters, {trainer.flops_per_byte:.3g} training FLOPs/byte, "
              f"{trainer.bytes_per_step:,} bytes/step × {trainer.total_steps} steps, {trainer.precision()} on "
              f"{trainer.device} → {trainer.run_dir}", flush=True)
        if trainer.peak is not None:
            print(f"MFU is measured against a peak of {trainer.peak.flops:.3g} FLOP/s: {trainer.peak.how}",
                  flush=True)
        if trainer.teacher is not None:
            t = trainer.teacher
            print(f"distilling from {t.path} ({t.model.arch}, {t.model.num_params():,} parameters; its forward, "
                  f"{t.flops_per_byte(cfg.train.seq_len):.3g} FLOPs/byte, is counted above)", flush=True)
        if dist.is_initialized():
            print(f"DistributedDataParallel: {trainer.dist.world_size} process(es), {dist.get_backend()} backend, "
                  f"{trainer.device}", flush=True)
    result = trainer.fit()
    if dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still talks to it
        dist.destroy_process_group()
    return result


def _dotted(table) -> list[str]:
    """The dotted keys of a nested override table ({"latent": {"dim": 64}} → ["latent.dim"])."""
    if not isinstance(table, dict):
        return [] if table is None else [""]
    return [f"{k}.{sub}" if sub else k for k, v in table.items()
            for sub in (_dotted(v) if isinstance(v, dict) else [""])]


def default_run_dir(config: str | None, cfg: RunConfig) -> str:
    name = Path(config).stem if config else cfg.arch
    return str(Path("runs") / name)
