"""The one trainer on tiny models and generated data: run files and learning, exact resume, DDP
gradients = one process on the combined batch, one-line errors that write nothing, Ctrl-C /
SIGTERM, the lr schedule and the FLOPs budget."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import BATCH_SIZE, GRAD_ACCUM
from helpers import tiny_override_args, tiny_overrides, write_text_dataset

from omnibyte.cli import main
from omnibyte.errors import OmnibyteError
from omnibyte.models import OmniModel
from omnibyte.train import TrainConfig, Trainer, load_run_config, lr_at

TESTS = Path(__file__).parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("data"))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in metrics(run) if "loss" in r]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its content, to check that a failed command changed nothing."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    e["OMP_NUM_THREADS"] = "1"
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), e.get("PYTHONPATH", "")])
    return e


# ----------------------------------------------------------------------------- a run


def test_train_writes_run_files_and_learns(data, tmp_path):
    run = tmp_path / "run"
    cfg = load_run_config(None, tiny_overrides(data, steps=30, eval_every=10))
    trainer = Trainer(cfg, run, quiet=True)
    result = trainer.fit()

    assert json.loads((run / "run.json").read_text()) == cfg.to_dict()
    assert {p.name for p in (run / "checkpoint").iterdir()} == {"model.safetensors", "config.json", "trainer.pt"}
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.name.endswith((".tmp", ".old")) for p in run.iterdir())

    rows = metrics(run)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 31))
    assert [r["step"] for r in rows if "val_bpb" in r] == [10, 20, 30]
    first, last = [r["loss"] for r in rows if "loss" in r][:5], [r["loss"] for r in rows if "loss" in r][-5:]
    assert sum(last) / 5 < sum(first) / 5 - 1.0, (first, last)
    bpb = [r["val_bpb"] for r in rows if "val_bpb" in r]
    assert bpb[-1] < bpb[0] < math.log2(263) + 0.5
    assert result["step"] == 30 and result["val_bpb"] == bpb[-1]
    assert all(r["bytes_per_s"] > 0 and r["flops"] > 0 for r in rows if "loss" in r)

    # the checkpoint is the trained model, loadable from the run dir
    model = OmniModel.from_pretrained(run)
    ids = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        trainer.model.eval()
        assert torch.equal(model(ids).logits, trainer.model(ids).logits)
    ckpt = torch.load(run / "checkpoint" / "trainer.pt", weights_only=True)
    assert ckpt["step"] == 30


def test_resume_gives_the_same_losses(data, tmp_path):
    overrides = tiny_overrides(data, steps=8, grad_accum=2)
    straight = tmp_path / "a"
    Trainer(load_run_config(None, overrides), straight, quiet=True).fit()

    broken = tmp_path / "b"
    first = Trainer(load_run_config(None, overrides), broken, quiet=True)
    first.fit(stop_after=4)
    assert first.step == 4 and not (broken / "loss.png").exists()  # not finished: no final plot
    assert torch.load(broken / "checkpoint" / "trainer.pt", weights_only=True)["step"] == 4
    second = Trainer(load_run_config(None, overrides), broken, resume=True, quiet=True)
    assert second.step == 4
    second.fit()

    a, b = losses(straight), losses(broken)
    assert [r[0] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        assert ra[0] == rb[0] and ra[2] == rb[2]  # step, lr
        assert ra[1] == pytest.approx(rb[1], rel=1e-6, abs=1e-6) and ra[3] == pytest.approx(rb[3], rel=1e-5)
    wa = OmniModel.from_pretrained(straight).state_dict()
    wb = OmniModel.from_pretrained(broken).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


# ----------------------------------------------------------------------------- DDP


def test_ddp_gradients_equal_one_process(data, tmp_path):
    # --standalone: torchrun picks a free local port itself (no race between choosing and binding one)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(TESTS / "ddp_worker.py"), str(tmp_path), str(data)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"grads-{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2

    cfg = load_run_config(None, tiny_overrides(data, batch_size=2 * BATCH_SIZE, grad_accum=GRAD_ACCUM))
    one = Trainer(cfg, tmp_path / "one", quiet=True)
    assert one.dist.world_size == 1
    one.micro_steps(0)
    for name, p in one.model.named_parameters():
        for r in ranks:
            assert torch.allclose(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
    # rank 0 wrote the run, rank 1 wrote nothing there
    assert (tmp_path / "run" / "run.json").is_file()


def test_torchrun_with_one_process_runs_the_ddp_path(data, tmp_path):
    # launched by torchrun, even alone: the process group is joined and the model wrapped in DDP
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m",
           "omnibyte.cli", "train", "--data", str(data), "--out", str(tmp_path / "run"), *tiny_override_args()]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DistributedDataParallel" in proc.stdout, proc.stdout[-2000:]
    assert "1 process(es), gloo backend" in proc.stdout
    assert (tmp_path / "run" / "checkpoint" / "config.json").is_file()


# ----------------------------------------------------------------------------- bad inputs


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, words: str, command: str = "train"):
    assert rc == 2
    assert err.startswith(f"omnibyte {command}: error: ") and err.count("\n") == 1, err
    assert words in err, err


def test_missing_dataset(tmp_path, capsys):
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "--data", str(tmp_path / "nope"), "--out", str(run), *tiny_override_args()],
                         capsys)
    assert_one_line_error(rc, err, "not found")
    assert not run.exists()


def test_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    rc, _, err = run_cli(["prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "ds")], capsys)
    assert_one_line_error(rc, err, "no documents", "prepare")
    assert not (tmp_path / "ds").exists()
    (tmp_path / "ds").mkdir()  # an empty folder is no dataset either
    rc, _, err = run_cli(["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"),
                          *tiny_override_args()], capsys)
    assert_one_line_error(rc, err, "not an omnibyte dataset")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, words", [
    (["--train.stepz", "5"], "unknown config key 'train.stepz'"),
    (["--model.dimm=5"], "unknown config key 'model.dimm'"),
    (["--optim.lr", "1"], "unknown config section 'optim'"),
    (["--train.steps", "abc"], "'train.steps' must be an integer"),
    (["--train.compile", "3"], "'train.compile' must be true or false"),
    (["--train.lr", "-1"], "train.lr must be > 0"),
    (["--train.min_lr_ratio", "2"], "train.min_lr_ratio must be in [0, 1]"),
    (["--model.arch", "gpt"], "unknown model arch 'gpt'"),
    (["--model.dim", "30"], "heads"),
])
def test_bad_config_values(data, tmp_path, capsys, args, words):
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "--data", str(data), "--out", str(run), *tiny_override_args(), *args], capsys)
    assert_one_line_error(rc, err, words)
    assert not run.exists()


def test_bad_config_file(data, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('[model]\narch = "transformer"\ndimm = 3\n')
    rc, _, err = run_cli(["train", str(toml), "--data", str(data), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(rc, err, "unknown config key 'model.dimm'")
    toml.write_text("[train\nsteps = 3\n")
    rc, _, err = run_cli(["train", str(toml), "--data", str(data), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(rc, err, "not valid TOML")
    rc, _, err = run_cli(["train", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(rc, err, "config file not found")
    assert not (tmp_path / "r").exists()


@pytest.fixture
def short_run(data, tmp_path, capsys) -> Path:
    run = tmp_path / "run"
    rc, _, _ = run_cli(["train", "--data", str(data), "--out", str(run), "--quiet", *tiny_override_args(steps=2)],
                       capsys)
    assert rc == 0
    return run


@pytest.mark.parametrize("file, keep", [("model.safetensors", 0.5), ("model.safetensors", 0.001),
                                        ("trainer.pt", 0.5)])
def test_corrupt_checkpoint(short_run, capsys, file, keep):
    target = short_run / "checkpoint" / file
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    before = tree(short_run)
    rc, _, err = run_cli(["train", "--resume", str(short_run), "--train.steps", "4"], capsys)
    assert_one_line_error(rc, err, "corrupt")
    assert tree(short_run) == before  # nothing appended, nothing replaced
    if file == "model.safetensors":
        with pytest.raises(OmnibyteError, match="corrupt") as e:
            OmniModel.from_pretrained(short_run)
        assert "\n" not in str(e.value)


def test_out_dir_already_holds_a_run(data, short_run, capsys):
    before = tree(short_run)
    rc, _, err = run_cli(["train", "--data", str(data), "--out", str(short_run), *tiny_override_args()], capsys)
    assert_one_line_error(rc, err, "already holds a run")
    assert tree(short_run) == before


def test_weights_without_trainer_state_are_refused_by_resume_and_taken_by_init(short_run, data, tmp_path, capsys):
    """A checkpoint of weights alone (what `omnibyte import` and `omnibyte prune` write) has nothing
    to resume: --resume says so in one line and names --init, which trains from those weights."""
    ckpt = short_run / "checkpoint"
    (ckpt / "trainer.pt").unlink()
    rc, _, err = run_cli(["train", "--resume", str(short_run)], capsys)
    assert_one_line_error(rc, err, "--init")
    out = tmp_path / "tuned"
    rc, _, _ = run_cli(["train", "--init", str(short_run), "--data", str(data), "--out", str(out), "--quiet",
                        *tiny_override_args(steps=3)], capsys)
    assert rc == 0
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3]


def test_resume_needs_a_run(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--resume", str(tmp_path)], capsys)
    assert_one_line_error(rc, err, "not a run directory")


# ----------------------------------------------------------------------------- signals


def test_ctrl_c_saves_checkpoint_and_resume_finishes(data, tmp_path):
    """The real thing: `omnibyte train` in a subprocess, SIGINT once it has logged a step."""
    run = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run), *tiny_override_args(steps=100_000)]
    proc = subprocess.Popen([sys.executable, "-m", "omnibyte", "train", *args], env=env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((run / "metrics.jsonl").is_file() and len(metrics(run)) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never logged a step"
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err[-2000:]  # saved, but not finished: a script can tell
    assert time.monotonic() - t0 < 10
    step = torch.load(run / "checkpoint" / "trainer.pt", weights_only=True)["step"]
    assert step >= 2 and metrics(run)[-1]["step"] == step
    assert f"stopped at step {step}" in out and f"--resume {run}" in out
    assert not (run / "loss.png").exists()
    # resume finishes (a shorter run than planned, so the test stays quick)
    proc = subprocess.run([sys.executable, "-m", "omnibyte", "train", "--resume", str(run), "--quiet",
                           "--train.steps", str(step + 3)], env=env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["step"] for r in metrics(run) if "loss" in r] == list(range(1, step + 4))
    assert torch.load(run / "checkpoint" / "trainer.pt", weights_only=True)["step"] == step + 3
    assert (run / "loss.png").is_file()


def test_sigterm_stops_after_the_current_step(data, tmp_path, capsys):
    """SIGTERM (what a cluster scheduler sends) arriving mid-run: the step in flight finishes, a
    checkpoint is saved, fit returns, and the process's own handlers are restored."""
    run = tmp_path / "run"
    trainer = Trainer(load_run_config(None, tiny_overrides(data, steps=50)), run)
    log = trainer.log

    def log_then_signal(record):
        log(record)
        if record.get("step") == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.log = log_then_signal
    before = signal.getsignal(signal.SIGTERM)
    result = trainer.fit()
    assert signal.getsignal(signal.SIGTERM) == before
    assert result["step"] == 3 and trainer.step == 3
    assert torch.load(run / "checkpoint" / "trainer.pt", weights_only=True)["step"] == 3
    assert "stopped at step 3" in capsys.readouterr().out
    resumed = Trainer(load_run_config(None, tiny_overrides(data, steps=5)), run, resume=True, quiet=True)
    assert resumed.fit()["step"] == 5


# ----------------------------------------------------------------------------- schedule, budget


def test_lr_schedule():
    cfg = TrainConfig(steps=110, lr=2.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.2)
    assert [lr_at(s, cfg) for s in range(10)] == pytest.approx([0.2 * (s + 1) for s in range(10)])
    assert lr_at(10, cfg) == pytest.approx(2.0)  # warm-up ends at the peak
    assert lr_at(60, cfg) == pytest.approx(0.5 * (2.0 + 0.2))  # half way down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.2) and lr_at(500, cfg) == pytest.approx(0.2)
    decay = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    flat = TrainConfig(steps=5, lr=1.0, warmup_steps=0, min_lr_ratio=1.0)
    assert [lr_at(s, flat) for s in range(5)] == [1.0] * 5


def test_flops_budget_stops_at_computed_step(data, tmp_path, capsys):
    probe = Trainer(load_run_config(None, tiny_overrides(data)), tmp_path / "probe", quiet=True)
    per_step = probe.flops_per_byte * probe.bytes_per_step
    assert probe.bytes_per_step == 4 * 32
    assert per_step == pytest.approx(probe.model.flops_per_byte(32)["train"] * 4 * 32)

    budget = 5.5 * per_step
    cfg = load_run_config(None, tiny_overrides(data, steps=50, flops=budget))
    assert Trainer(cfg, tmp_path / "run0", quiet=True).total_steps == 5
    run = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--out", str(run), "--quiet",
               *tiny_override_args(steps=50, flops=budget)])
    assert rc == 0, capsys.readouterr().err
    rows = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["flops"] == pytest.approx(5 * per_step) and rows[-1]["flops"] <= budget
    # a budget beyond train.steps does not extend the run
    big = load_run_config(None, tiny_overrides(data, steps=3, flops=1e3 * per_step))
    assert Trainer(big, tmp_path / "big", quiet=True).total_steps == 3


def first_batch_loss(data, run_dir, **train) -> tuple[float, Trainer, dict]:
    """The training loss of step 0's batch under the given train settings (no update)."""
    trainer = Trainer(load_run_config(None, tiny_overrides(data, **train)), run_dir, quiet=True)
    batch = trainer.loader.get_batch(0)
    with torch.no_grad():
        return trainer.forward_loss(batch).item(), trainer, batch


def test_media_loss_weight_scales_only_image_and_audio_targets(tmp_path):
    from omnibyte.data import write_dataset
    from omnibyte.data.modality import MODALITY_AUX, TEXT, modality_labels
    from omnibyte.format import PAD, AudioSegment, Document, ImageSegment, TextSegment
    from omnibyte.nn import lm_loss

    rng = torch.Generator().manual_seed(0)
    docs = [Document([TextSegment(f"item {i}: ".encode()),
                      ImageSegment(4, 3, 1, bytes(torch.randint(0, 256, (12,), generator=rng).tolist())),
                      TextSegment(b" is a cat; says "),
                      AudioSegment(8000, 10, 1, bytes(torch.randint(0, 256, (10,), generator=rng).tolist())),
                      TextSegment(b" meow.")]) for i in range(30)]
    data = tmp_path / "mm"
    write_dataset(docs, data, sources=["generated"], val_fraction=0.1)

    def loss_of(weight):
        return first_batch_loss(data, tmp_path / f"run-{weight}", seq_len=64, media_loss_weight=weight)

    plain, trainer, batch = loss_of(1.0)
    zero, trainer0, batch0 = loss_of(0.0)
    half, _, _ = loss_of(0.5)
    ids = batch["ids"]
    assert torch.equal(batch0["ids"], ids) and MODALITY_AUX not in batch  # same seed: same batch
    # the labels are the whole training stream's, cut like the ids
    stream = np.asarray(trainer0.dataset.stream("train"))
    assert np.array_equal(trainer0.dataset.aux("train", MODALITY_AUX), modality_labels(stream))
    media = batch0[MODALITY_AUX][:, 1:] != TEXT
    assert media.any() and (~media & (ids[:, 1:] != PAD)).any()
    with torch.no_grad():
        logits = trainer.model(ids[:, :-1]).logits
    text_only = ids[:, 1:].clone()
    text_only[media] = PAD
    assert zero == pytest.approx(lm_loss(logits, text_only).item(), rel=1e-5)
    assert plain == pytest.approx(lm_loss(logits, ids[:, 1:]).item(), rel=1e-5)
    assert min(plain, zero) < half < max(plain, zero)


def test_prompt_loss_weight_trains_on_answers_only(tmp_path):
    from omnibyte.data.modality import ANSWER_AUX
    from omnibyte.data.tasks import build_task
    from omnibyte.format import PAD
    from omnibyte.nn import lm_loss

    data = tmp_path / "clocks"
    build_task("clocks", data, n=12, seed=0, size=8, mode="gray")

    plain, trainer, batch = first_batch_loss(data, tmp_path / "run-1", seq_len=256)
    zero, _, batch0 = first_batch_loss(data, tmp_path / "run-0", seq_len=256, prompt_loss_weight=0.0)
    ids = batch0["ids"]
    prompt = batch0[ANSWER_AUX][:, 1:] < 0.5
    assert torch.equal(batch["ids"], ids) and prompt.any() and (~prompt & (ids[:, 1:] != PAD)).any()
    with torch.no_grad():
        logits = trainer.model(ids[:, :-1]).logits
    answers_only = ids[:, 1:].clone()
    answers_only[prompt] = PAD
    assert zero == pytest.approx(lm_loss(logits, answers_only).item(), rel=1e-5)
    assert plain == pytest.approx(lm_loss(logits, ids[:, 1:]).item(), rel=1e-5)
    # a dataset that marks no answers cannot weight prompts
    cfg = load_run_config(None, tiny_overrides(write_text_dataset(tmp_path), prompt_loss_weight=0.0))
    with pytest.raises(OmnibyteError, match="prompt_loss_weight needs a task dataset"):
        Trainer(cfg, tmp_path / "run-plain", quiet=True)


def test_task_metrics_on_validation_examples_over_training(tmp_path):
    from omnibyte.data.tasks import build_task

    data = tmp_path / "clocks"
    build_task("clocks", data, n=12, seed=0, heldout=3, size=8, mode="gray")
    cfg = load_run_config(None, tiny_overrides(data, steps=4, seq_len=256, task_eval_every=2, task_eval_n=2))
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["val_clock_hour"]) for r in rows if "val_clock_hour" in r]
    assert [step for step, _ in curve] == [2, 4] and all(0 <= v <= 1 for _, v in curve)
    assert not any(k.startswith("val_clock_chance") for r in rows for k in r)
    assert (tmp_path / "run" / "tasks.png").is_file()
    cfg = load_run_config(None, tiny_overrides(write_text_dataset(tmp_path), task_eval_every=2))
    with pytest.raises(OmnibyteError, match="task_eval_every needs a task dataset"):
        Trainer(cfg, tmp_path / "run-plain", quiet=True)


def test_media_loss_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="media_loss_weight must be ≥ 0"):
        TrainConfig(media_loss_weight=-0.5)


def test_align_docs_gives_windows_that_start_at_documents(tmp_path):
    data = write_text_dataset(tmp_path, n_docs=60, lines=1)  # one short line per document
    cfg = load_run_config(None, tiny_overrides(data, seq_len=64, align_docs=True))
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    from omnibyte.format import BOS

    for step in range(3):
        assert (trainer.loader.get_batch(step)["ids"][:, 0] == BOS).all()
    trainer.fit()
    assert (tmp_path / "run" / "checkpoint").is_dir()
