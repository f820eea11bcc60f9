"""Faster models from trained ones (issue 28): layer pruning for every model family (kept layers'
weights exactly, every layer kept = the teacher), training from a model's weights (`--init`),
and distillation (the loss, its gradient, the FLOPs it costs, exact resume, DDP), with one-line
errors for impossible choices."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import BATCH_SIZE, DISTILL, GRAD_ACCUM
from helpers import text_ids, tiny_model, tiny_override_args, tiny_overrides, write_text_dataset
from test_model_contract import MODELS
from test_train import assert_one_line_error, env, losses, metrics, run_cli, tree

from omnibyte.format import PAD
from omnibyte.models import OmniModel, build_model
from omnibyte.models.prune import parse_keep, prune
from omnibyte.nn import distill_loss
from omnibyte.train import Trainer, load_run_config

TESTS = Path(__file__).parent
STACKS = {"transformer": ["stack"], "megabyte": ["global_model", "local_model"],
          "blt": ["encoder", "latent", "decoder"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("data"))


def deep_model(name: str, entropy_dir) -> OmniModel:
    """The contract suite's tiny model `name` with three layers in every stack."""
    arch, cfg = MODELS[name]
    cfg = copy.deepcopy(cfg)
    if arch == "transformer":
        cfg["n_layers"] = 3
    for stack in STACKS[arch]:
        if stack in cfg:
            cfg[stack]["n_layers"] = 3
    if cfg.get("patcher", {}).get("entropy_model") == "ENTROPY":
        cfg["patcher"]["entropy_model"] = str(entropy_dir)
    torch.manual_seed(0)
    return build_model(arch, cfg).eval()


# ----------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("name", list(MODELS))
def test_pruning_keeps_the_kept_layers_weights_exactly(name, entropy_dir):
    teacher = deep_model(name, entropy_dir)
    assert list(teacher.stacks()) == STACKS[teacher.arch]
    keep = {stack: [0, 2] for stack in teacher.stacks()}
    student = prune(teacher, keep)
    assert all(len(s.layers) == 2 for s in student.stacks().values())
    t_state, s_state = teacher.state_dict(), student.state_dict()
    # a layer's companion (BLT's reader before each decoder layer) moves with its layer
    companions = {f"{c}.": f"{cs[keep[stack][i]]}." for stack, cs in teacher.layer_companions().items()
                  for i, c in enumerate(cs[:len(keep[stack])])}
    for key, value in s_state.items():
        stack = key.split(".layers.")[0]
        owner = next((c for c in companions if key.startswith(c)), None)
        if owner is not None:
            key = companions[owner] + key[len(owner):]
        elif stack in keep:
            index, rest = key.split(".layers.")[1].split(".", 1)
            key = f"{stack}.layers.{keep[stack][int(index)]}.{rest}"
        assert torch.equal(value, t_state[key]), key
    dropped = {k for k in t_state if any(k.startswith(f"{s}.layers.1.") for s in keep)}
    dropped |= {k for stack, cs in teacher.layer_companions().items() for k in t_state if k.startswith(f"{cs[1]}.")}
    assert dropped and len(s_state) == len(t_state) - len(dropped)
    assert student.num_params() < teacher.num_params()
    ids = text_ids(2, 40)
    assert student(ids).logits.shape == teacher(ids).logits.shape


@pytest.mark.parametrize("name", list(MODELS))
def test_keeping_every_layer_gives_the_teacher(name, entropy_dir):
    teacher = deep_model(name, entropy_dir)
    student = prune(teacher, {stack: [0, 1, 2] for stack in teacher.stacks()})
    ids = text_ids(2, 40)
    with torch.no_grad():
        assert torch.equal(student(ids).logits, teacher(ids).logits)
    assert student.cfg == teacher.cfg


def test_a_blt_local_stack_may_be_pruned_to_nothing(entropy_dir):
    teacher = deep_model("blt-static", entropy_dir)
    student = prune(teacher, parse_keep(["decoder:", "latent:1"]))
    assert student.cfg.decoder.n_layers == 0 and student.cfg.latent.n_layers == 1
    assert student(text_ids(1, 20)).logits.shape == (1, 20, student.cfg.vocab_size)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A tiny BLT trained for a few steps: the teacher of the run-folder tests."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    over = tiny_overrides(data, steps=4)
    over["model"] = {"arch": "blt", "latent": {"dim": 32, "n_layers": 3, "n_heads": 2},
                     "decoder": {"dim": 32, "n_layers": 2, "n_heads": 2, "window": 64},
                     "ngrams": {"buckets": 97}, "patcher": {"kind": "static", "patch_size": 4}}
    Trainer(load_run_config(None, over), run, quiet=True).fit()
    return run


def test_prune_writes_a_run_folder_that_evaluates_and_trains_on(trained, data, tmp_path, capsys):
    half = tmp_path / "half"
    rc, out, err = run_cli(["prune", str(trained), "--keep", "latent:0,2", "--keep", "decoder:1", "--out",
                            str(half)], capsys)
    assert rc == 0, err
    assert "latent 2 of 3 (0,2)" in out and "decoder 1 of 2 (1)" in out
    assert {p.name for p in (half / "checkpoint").iterdir()} == {"model.safetensors", "config.json"}
    run = json.loads((half / "run.json").read_text())
    assert run["model"]["latent"]["n_layers"] == 2 and run["model"]["decoder"]["n_layers"] == 1
    assert run["data"] == json.loads((trained / "run.json").read_text())["data"]
    assert json.loads((half / "prune.json").read_text())["stacks"]["latent"] == {"kept": [0, 2], "of": 3}
    teacher, student = OmniModel.from_pretrained(trained), OmniModel.from_pretrained(half)
    assert torch.equal(student.latent.layers[1].mlp.w2.weight, teacher.latent.layers[2].mlp.w2.weight)
    rc, out, err = run_cli(["eval", str(half)], capsys)
    assert rc == 0 and "bits/byte" in out, err
    # a pruned folder was never trained as it is: --resume points to --init
    rc, _, err = run_cli(["train", "--resume", str(half)], capsys)
    assert_one_line_error(rc, err, f"--init {half}")


@pytest.mark.parametrize("keep, words", [
    (["foo:0"], "no stack 'foo' (its stacks: encoder, latent, decoder)"),
    (["latent:3"], "layer 3 does not exist (latent has layers 0..2)"),
    (["latent:"], "keeps no layer, but a blt's latent needs at least one"),
    (["latent:0,0"], "layer 0 named twice"),
    (["latent:0", "latent:1"], "names stack 'latent' twice"),
    (["latent"], "expected STACK:LAYERS"),
    (["latent:1-2"], "layers are whole numbers"),
])
def test_impossible_choices_are_one_line_errors(trained, tmp_path, capsys, keep, words):
    before = tree(trained)
    args = ["prune", str(trained), *[a for k in keep for a in ("--keep", k)], "--out", str(tmp_path / "out")]
    rc, _, err = run_cli(args, capsys)
    assert_one_line_error(rc, err, words, "prune")
    assert not (tmp_path / "out").exists() and tree(trained) == before


def test_prune_refuses_an_existing_out_and_a_missing_model(trained, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    rc, _, err = run_cli(["prune", str(trained), "--keep", "latent:0", "--out", str(tmp_path / "taken")], capsys)
    assert_one_line_error(rc, err, "already exists", "prune")
    rc, _, err = run_cli(["prune", str(tmp_path / "nope"), "--keep", "latent:0", "--out", str(tmp_path / "o")],
                         capsys)
    assert_one_line_error(rc, err, "no such model or run directory", "prune")


# ----------------------------------------------------------------------------- --init


def test_init_loads_the_weights_and_a_config_without_model_takes_its_config(trained, data, tmp_path, capsys):
    half = tmp_path / "half"
    assert run_cli(["prune", str(trained), "--keep", "latent:1", "--out", str(half)], capsys)[0] == 0
    over = tiny_overrides(data, init=str(half))
    del over["model"]  # the model comes from --init
    cfg = load_run_config(None, over)
    assert cfg.arch == "blt" and cfg.model.latent.n_layers == 1
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    init = OmniModel.from_pretrained(half).state_dict()
    assert all(torch.equal(v, init[k]) for k, v in trainer.model.state_dict().items())
    trainer.fit()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["train"]["init"] == str(half)
    # the same through the CLI, and a config whose [model] is another model is a one-line error
    rc, _, err = run_cli(["train", "--init", str(half), "--data", str(data), "--out", str(tmp_path / "cli"),
                          "--quiet", *tiny_override_args()[3:]], capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["train", str(TESTS.parent / "configs" / "tiny.toml"), "--init", str(half), "--data",
                          str(data), "--out", str(tmp_path / "bad"), *tiny_override_args()], capsys)
    assert_one_line_error(rc, err, "model config differs from that model's")
    assert "arch: 'transformer' ≠ 'blt'" in err and not (tmp_path / "bad").exists()
    rc, _, err = run_cli(["train", "--init", str(half), "--resume", str(tmp_path / "run")], capsys)
    assert_one_line_error(rc, err, "give one of them")


# ----------------------------------------------------------------------------- the distillation loss


def test_distill_loss_is_zero_for_the_teacher_itself_and_ignores_pad():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11) * 3
    targets = torch.randint(0, 11, (2, 5))
    for t in (1.0, 2.0):
        assert distill_loss(logits, logits, targets, t).item() == pytest.approx(0, abs=1e-6)
        assert distill_loss(logits + 4.0, logits, targets, t).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 5, 11)
    assert distill_loss(other, logits, targets).item() > 0.1
    # PAD targets are not scored: a position with a PAD target changes nothing
    padded = targets.clone()
    padded[:, -1] = PAD
    changed = other.clone()
    changed[:, -1] = 50.0
    assert distill_loss(changed, logits, padded).item() == pytest.approx(distill_loss(other, logits, padded).item())


def test_distill_loss_gradient_points_towards_the_teacher():
    torch.manual_seed(1)
    teacher = torch.randn(3, 4, 7)
    student = torch.randn(3, 4, 7, requires_grad=True)
    targets = torch.zeros(3, 4, dtype=torch.long)
    for t in (1.0, 3.0):
        student.grad = None
        distill_loss(student, teacher, targets, t).backward()
        # d/ds of T²·KL(p_t ‖ q_s) = T·(q_s − p_t) / n: positive where the student puts more mass
        # than the teacher (its logit is pushed down by descent), negative where less
        q, p = torch.softmax(student.detach() / t, -1), torch.softmax(teacher / t, -1)
        torch.testing.assert_close(student.grad, t * (q - p) / 12)
        assert ((student.grad > 0) == (q > p)).all()
    with torch.no_grad():
        before = distill_loss(student, teacher, targets).item()
        after = distill_loss(student - 0.5 * student.grad, teacher, targets).item()
    assert after < before


# ----------------------------------------------------------------------------- distillation in the trainer


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny byte transformer (3 layers, random weights) saved as a model folder."""
    path = tmp_path_factory.mktemp("teacher") / "model"
    tiny_model(seed=3, n_layers=3).save_pretrained(path)
    return path


def distill(data, teacher_dir, **train) -> dict:
    """Quick train settings distilling from `teacher_dir` at T = 2 with weight 0.7 (as the DDP worker)."""
    return tiny_overrides(data, distill_from=str(teacher_dir), **DISTILL, **train)


def test_distillation_counts_the_teachers_flops_and_logs_both_terms(data, teacher_dir, tmp_path):
    plain = Trainer(load_run_config(None, tiny_overrides(data)), tmp_path / "plain", quiet=True)
    student = Trainer(load_run_config(None, distill(data, teacher_dir)), tmp_path / "run", quiet=True)
    teacher = OmniModel.from_pretrained(teacher_dir)
    fwd = teacher.flops_per_byte(32)["train"] / 3
    assert student.flops_per_byte == pytest.approx(plain.flops_per_byte + fwd)
    assert not student.teacher.model.training and not any(p.requires_grad for p in student.teacher.model.parameters())
    # a FLOPs budget stops earlier when a teacher's forward passes are paid for
    budget = 6.5 * plain.flops_per_byte * plain.bytes_per_step
    capped = Trainer(load_run_config(None, distill(data, teacher_dir, steps=50, flops=budget)), tmp_path / "c",
                     quiet=True)
    assert capped.total_steps == int(budget // (student.flops_per_byte * student.bytes_per_step)) < 6
    capped.close()
    student.fit()
    rows = [r for r in metrics(tmp_path / "run") if "loss" in r]
    for r in rows:
        assert r["loss"] == pytest.approx(0.3 * r["data_loss"] + 0.7 * r["distill_kl"], rel=1e-5)
        assert r["flops"] == pytest.approx(r["step"] * student.bytes_per_step * student.flops_per_byte)
    assert "data_loss" not in metrics(tmp_path / "run")[-1]  # the validation line


def test_distilling_with_weight_zero_trains_as_without_a_teacher(data, teacher_dir, tmp_path):
    Trainer(load_run_config(None, tiny_overrides(data, steps=4)), tmp_path / "a", quiet=True).fit()
    over = tiny_overrides(data, steps=4, distill_from=str(teacher_dir), distill_weight=0.0)
    Trainer(load_run_config(None, over), tmp_path / "b", quiet=True).fit()
    for ra, rb in zip(losses(tmp_path / "a"), losses(tmp_path / "b"), strict=True):
        assert ra[1] == pytest.approx(rb[1], rel=1e-6) and ra[3] == pytest.approx(rb[3], rel=1e-5)


def test_distillation_resumes_exactly(data, teacher_dir, tmp_path):
    over = distill(data, teacher_dir, steps=8, grad_accum=2)
    Trainer(load_run_config(None, over), tmp_path / "a", quiet=True).fit()
    broken = tmp_path / "b"
    Trainer(load_run_config(None, over), broken, quiet=True).fit(stop_after=4)
    Trainer(load_run_config(None, over), broken, resume=True, quiet=True).fit()
    a = [r for r in metrics(tmp_path / "a") if "loss" in r]
    b = [r for r in metrics(broken) if "loss" in r]
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "data_loss", "distill_kl", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    wa, wb = OmniModel.from_pretrained(tmp_path / "a").state_dict(), OmniModel.from_pretrained(broken).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_resume_refuses_a_changed_teacher(data, teacher_dir, tmp_path, capsys):
    moved = tmp_path / "teacher"
    tiny_model(seed=3, n_layers=3).save_pretrained(moved)
    run = tmp_path / "run"
    Trainer(load_run_config(None, distill(data, moved, steps=4)), run, quiet=True).fit(stop_after=2)
    tiny_model(seed=4, n_layers=3).save_pretrained(moved)  # other weights at the same path
    rc, _, err = run_cli(["train", "--resume", str(run)], capsys)
    assert_one_line_error(rc, err, "holds other weights than when the run started")


@pytest.mark.parametrize("args, words", [
    (["--train.distill_weight", "0.3"], "need train.distill_from"),
    (["--train.distill_from", "/no/such/teacher"], "train.distill_from: no such model or run directory"),
    (["--train.distill_from", "TEACHER", "--train.distill_weight", "1.5"], "distill_weight must be in [0, 1]"),
    (["--train.distill_from", "TEACHER", "--train.distill_temperature", "0"], "distill_temperature must be > 0"),
    (["--train.distill_from", "BPE"], "the teacher's vocabulary has 512 ids, the student's 263"),
    (["--init", "/no/such/run"], "train.init: no such model or run directory"),
])
def test_bad_distillation_and_init_settings_are_one_line_errors(data, teacher_dir, tmp_path, capsys, args, words):
    bpe = tmp_path / "bpe"
    tiny_model(vocab_size=512).save_pretrained(bpe)
    args = [{"TEACHER": str(teacher_dir), "BPE": str(bpe)}.get(a, a) for a in args]
    rc, _, err = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "run"), *args,
                          *tiny_override_args()], capsys)
    assert_one_line_error(rc, err, words)
    assert not (tmp_path / "run").exists()


def test_ddp_distillation_gradients_equal_one_process(data, teacher_dir, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(TESTS / "ddp_worker.py"), str(tmp_path), str(data), str(teacher_dir)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"grads-{r}.pt", weights_only=True) for r in (0, 1)]
    one = Trainer(load_run_config(None, distill(data, teacher_dir, batch_size=2 * BATCH_SIZE, grad_accum=GRAD_ACCUM)),
                  tmp_path / "one", quiet=True)
    parts = {}
    loss = one.micro_steps(0, parts)
    assert parts["distill_kl"] > 0
    assert loss == pytest.approx(sum(r["loss"] for r in ranks) / 2, rel=1e-5)
    for name, p in one.model.named_parameters():
        for r in ranks:
            assert torch.allclose(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6), name
