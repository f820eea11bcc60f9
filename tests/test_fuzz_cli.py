"""Fuzzing the command line with bad inputs of every kind: JSONL records, config files and values,
flags, prompts, datasets, checkpoints, output paths, permissions, locks, interruptions.

Every call must end one of two ways: success with a correct result, or exit status 2 with exactly
one line on stderr (`omnibyte COMMAND: error: ...`) and no traceback; never an "internal error"
(exit 1, a bug). Either way nothing half-written stays behind (temporary files, lock files,
partial datasets). Commands run in-process through `omnibyte.cli.main`, plus a few real processes
for what only a process shows (argv bytes, signals, a lock held by another process).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import QUICK_TRAIN, TINY_MODEL, tiny_model, tiny_overrides, write_text_dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from omnibyte.cli import main
from omnibyte.data import ShardDataset, is_dataset
from omnibyte.format import BOS, EOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.models import OmniModel
from omnibyte.train import Trainer, load_run_config
from omnibyte.train.runfolder import LOCK_FILE

TESTS = Path(__file__).parent
REPO = TESTS.parent
FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Quick training for the fuzzed runs: 2 steps of 2 × 16 ids.
QUICK = {**QUICK_TRAIN, "steps": 2, "batch_size": 2, "seq_len": 16, "eval_batches": 1}


def quick_args(**train) -> list[str]:
    args = [f"--model.{k}={v}" for k, v in TINY_MODEL.items() if k != "arch"]
    return args + [f"--train.{k}={v}" for k, v in {**QUICK, **train}.items()]


# ----------------------------------------------------------------------------- running the CLI


def cli(args: list[str]) -> tuple[int, str, str]:
    """`omnibyte ARGS` in this process: (exit status, stdout, stderr). argparse's exits count."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, words: str = "") -> None:
    assert rc == 2, f"exit {rc}: {err[-3000:]}"
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert re.match(r"^omnibyte( \w+)?: error: ", err), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert words in err, err


def assert_ok_or_one_line_error(rc: int, err: str) -> bool:
    """True on success; otherwise the failure must be a clean one-line error."""
    if rc == 0:
        return True
    assert_one_line_error(rc, err)
    return False


LEFTOVER = re.compile(r"^\..+\.(tmp|old)-\d+-[0-9a-f]{8}$|\.tmp$|\.old$|^" + re.escape(LOCK_FILE) + "$")


def leftovers(root: Path) -> list[Path]:
    """Temporary files and folders, and lock files, anywhere under `root`."""
    return [p for p in root.rglob("*") if LEFTOVER.search(p.name)]


def dead_pid() -> int:
    """The pid of a process that has just exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("fuzz-data"), n_docs=20, lines=6)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    """A tiny run trained for 2 steps, its checkpoint saved."""
    path = tmp_path_factory.mktemp("fuzz-run") / "run"
    Trainer(load_run_config(None, tiny_overrides(data, **QUICK)), path, quiet=True).fit()
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A folder with a valid PNG and WAV, and files that only look like them."""
    folder = tmp_path_factory.mktemp("fuzz-media")
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(folder / "ok.png")
    sf.write(str(folder / "ok.wav"), np.zeros(80, np.int16), 8000, subtype="PCM_16")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "empty.png").write_bytes(b"")
    return folder


# ----------------------------------------------------------------------------- JSONL records

# A record is (line, text bytes it holds) for a valid one, (line, None) for one that must be refused.
text_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
junk_lines = st.sampled_from([b"{", b"nope", b"\xff\xfe\x00", b"[1, 2", b"{\"text\": }", b"\"just a string\"",
                              b"42", b"null", b"[]", b"{}", b"{\"foo\": 1}", b"{\"text\": \"\\ud800\"}"])
bad_values = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                       st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2))


@st.composite
def jsonl_record(draw) -> tuple[bytes, int | None]:
    kind = draw(st.sampled_from(["text", "segments", "junk", "bad_text", "bad_segments", "bad_entry",
                                 "bad_media", "missing_media", "corrupt_media", "media"]))
    if kind == "text":
        t = draw(text_values)
        return json.dumps({"text": t}).encode(), len(t.encode())
    if kind == "segments":
        texts = draw(st.lists(text_values, max_size=3))
        return json.dumps({"segments": [{"text": t} for t in texts]}).encode(), sum(len(t.encode()) for t in texts)
    if kind == "media":  # a real image or clip with some text: valid, holding that text
        t = draw(text_values)
        m = draw(st.sampled_from([{"image": "ok.png"}, {"audio": "ok.wav"}]))
        return json.dumps({"segments": [{"text": t}, m]}).encode(), len(t.encode())
    if kind == "junk":
        return draw(junk_lines), None
    if kind == "bad_text":
        return json.dumps({"text": draw(bad_values)}).encode(), None
    if kind == "bad_segments":
        return json.dumps({"segments": draw(st.one_of(bad_values.filter(lambda v: not isinstance(v, list)),
                                                      st.text(max_size=5)))}).encode(), None
    if kind == "bad_entry":
        entry = draw(st.sampled_from([5, "text", None, [], {}, {"text": "a", "image": "ok.png"}, {"video": "x.mp4"}]))
        return json.dumps({"segments": [entry]}).encode(), None
    if kind == "bad_media":  # a media path that is not a non-empty string
        return json.dumps({"segments": [{draw(st.sampled_from(["image", "audio"])): draw(
            st.one_of(bad_values, st.just("")))}]}).encode(), None
    if kind == "missing_media":
        return json.dumps({"segments": [{"image": "missing.png"}]}).encode(), None
    return json.dumps({"segments": [draw(st.sampled_from([{"image": "bad.png"}, {"audio": "bad.wav"},
                                                          {"image": "empty.png"}, {"image": "."}]))]}).encode(), None


@FUZZ
@given(records=st.lists(jsonl_record(), min_size=1, max_size=6))
def test_prepare_jsonl_records(media, records):
    src = media / "records.jsonl"
    src.write_bytes(b"\n".join(line for line, _ in records) + b"\n")
    out = media / "out"
    rc, stdout, err = cli(["prepare", src, "--out", out, "--val-fraction", "0"])
    first_bad = next((i for i, (_, n) in enumerate(records, 1) if n is None), None)
    if first_bad is None:
        expected = sum(n for _, n in records)
        if expected == 0 and not any(b'"image"' in line or b'"audio"' in line for line, _ in records):
            assert_one_line_error(rc, err, "no documents")
        else:
            assert rc == 0, err
            meta = ShardDataset(out).meta
            assert sum(s["bytes"]["text"] for s in meta["splits"].values()) == expected
    else:
        assert_one_line_error(rc, err, f"records.jsonl:{first_bad}:")
        assert not out.exists()
    assert not leftovers(media)
    if out.exists():
        import shutil

        shutil.rmtree(out)


# ----------------------------------------------------------------------------- config values

CONFIG_KEYS = ["train.steps", "train.batch_size", "train.seq_len", "train.grad_accum", "train.lr", "train.min_lr_ratio",
               "train.warmup_steps", "train.weight_decay", "train.grad_clip", "train.eval_every", "train.save_every",
               "train.log_every", "train.dtype", "train.flops", "train.media_loss_weight", "train.prompt_loss_weight",
               "train.table_lr_scale", "train.table_weight_decay", "train.align_docs", "train.bogus",
               "model.dim", "model.n_layers", "model.n_heads", "model.vocab_size", "model.window", "model.arch",
               "model.rope_theta", "model.bogus", "patcher.kind", "data.bogus", "bogus.key", "train", "train.seed"]
CONFIG_VALUES = ["nan", "inf", "-inf", "-1", "0", "1", "2", "0.5", "1e-3", "1e400", "-1e400", "abc", "''", "true",
                 "[1, 2]", "{a = 1}", "1.5", "9999999999999999999999", "'cpu'", "bf16", "fp64", "blt", "x.y"]


@FUZZ
@given(pairs=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), st.sampled_from(CONFIG_VALUES)), min_size=1,
                      max_size=3))
def test_train_config_values(data, tmp_path_factory, pairs):
    # keys whose big values mean long work (more steps, larger models) are fuzzed with small ones
    big = {"train.steps", "train.grad_accum", "model.dim", "model.n_layers", "train.seq_len", "train.batch_size"}
    assume(not any(k in big and v.lstrip("-").replace(".", "").replace("e", "").isdigit()
                   and float(v) > 4 for k, v in pairs if v not in ("nan", "inf", "-inf")))
    out = tmp_path_factory.mktemp("cfg") / "run"
    overrides = [a for k, v in pairs for a in (f"--{k}", v)]
    rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args(), *overrides])
    if assert_ok_or_one_line_error(rc, err):
        assert (out / "checkpoint" / "model.safetensors").is_file()
        OmniModel.from_pretrained(out)  # finite and loadable
    elif out.exists():  # failed while training: no checkpoint, and the folder can be trained again
        assert not (out / "checkpoint").exists()
    assert not leftovers(out.parent)


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe[train]\nsteps = 2\n", "not UTF-8"),
    (b"[train\nsteps = 2\n", "not valid TOML"),
    (b"[train]\nlr = nan\n", "finite"),
    (b"[train]\nlr = inf\n", "finite"),
    (b"[nope]\nx = 1\n", "unknown config section"),
    (b"[model]\narch = 5\n", "must be a string"),
    (b"[train]\nweight_decay = 'two'\n", "must be a number"),
    (b"", ""),
])
def test_config_files(data, tmp_path, content, words):
    config = tmp_path / "c.toml"
    config.write_bytes(content)
    out = tmp_path / "run"
    rc, _, err = cli(["train", config, "--data", data, "--out", out, "--quiet", *quick_args()])
    if words:
        assert_one_line_error(rc, err, words)
        assert not out.exists()
    else:
        assert rc == 0, err
    assert not leftovers(tmp_path)


def test_config_file_errors(data, run, tmp_path):
    rc, _, err = cli(["train", tmp_path, "--data", data, "--out", tmp_path / "r"])
    assert_one_line_error(rc, err, "config file not found")
    (tmp_path / "c.toml").write_text("[train]\nsteps = 3\n")
    rc, _, err = cli(["train", tmp_path / "c.toml", "--resume", run])
    assert_one_line_error(rc, err, "give no CONFIG file with it")
    rc, _, err = cli(["train", "--resume", run, "--out", tmp_path / "elsewhere"])
    assert_one_line_error(rc, err, "give no --out with it")
    before = (run / "checkpoint" / "model.safetensors").read_bytes()
    rc, _, err = cli(["train", "--resume", run, "--model.dim", "48", "--quiet"])
    assert_one_line_error(rc, err, "--model.dim cannot change on --resume")
    assert "corrupt" not in err
    assert (run / "checkpoint" / "model.safetensors").read_bytes() == before and not leftovers(run)


# ----------------------------------------------------------------------------- flags

INTS = st.sampled_from(["-1", "0", "1", "3", "abc", "1.5", "", "1e3", "nan", str(10**15), str(2**70)])
FLOATS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.5", "1", "2", "1e-300", "1e300", "abc", ""])


@FUZZ
@given(max_bytes=INTS, temperature=FLOATS, top_k=INTS, top_p=FLOATS)
def test_generate_sampling_flags(run, tmp_path_factory, max_bytes, temperature, top_k, top_p):
    out = tmp_path_factory.mktemp("gen") / "out.bin"
    rc, stdout, err = cli(["generate", run, "--prompt", "the ", "--max-bytes", max_bytes, "--temperature",
                           temperature, "--top-k", top_k, "--top-p", top_p, "--seed", "0", "--out", out])
    if assert_ok_or_one_line_error(rc, err):
        raw = out.read_bytes()
        assert len(raw) <= int(max_bytes)
        assert stdout == "the " + raw.decode("utf-8", "replace") + "\n"
    else:
        assert stdout == "" and not out.exists()
    assert not leftovers(out.parent)


SIZES = st.sampled_from(["2x2", "1x1", "3x2", "0x4", "4x0", "65536x1", "60000x60000", "40000x40000", "abc", "2x",
                         "-2x2", "2.5x2", "", "3"])
SECONDS = st.sampled_from(["0.002", "0.001", "0", "-1", "nan", "inf", "1e-9", "1e12", "600000", "abc"])


@FUZZ
@given(kind=st.sampled_from(["image", "audio"]), size=SIZES, seconds=SECONDS,
       channels=st.sampled_from([None, "1", "3"]), suffix=st.sampled_from([".png", ".wav", ".bin"]))
def test_generate_media_blocks(run, tmp_path_factory, kind, size, seconds, channels, suffix):
    folder = tmp_path_factory.mktemp("block")
    out = folder / f"out{suffix}"
    args = ["generate", run, "--prompt", "x", "--seed", "1", "--out", out]
    args += ["--image-size", size] if kind == "image" else ["--audio-seconds", seconds]
    if channels is not None and kind == "image":
        args += ["--channels", channels]
    rc, _, err = cli(args)
    if assert_ok_or_one_line_error(rc, err):
        files = [p for p in folder.iterdir()]
        assert files and all(p.suffix == (".png" if kind == "image" else ".wav") for p in files), files
        if kind == "image":
            w, h = (int(v) for v in size.split("x")) if "x" in size else (int(size),) * 2
            assert Image.open(files[0]).size == (w, h)
        else:
            assert len(sf.read(str(files[0]))[0]) == round(float(seconds) * 8000)
    else:
        assert not any(folder.iterdir())


@FUZZ
@given(seq_len=INTS, batch_size=INTS, max_batches=INTS, split=st.sampled_from(["val", "train", "nope", ""]))
def test_eval_flags(run, seq_len, batch_size, max_batches, split):
    rc, stdout, err = cli(["eval", run, "--json", "--seq-len", seq_len, "--batch-size", batch_size,
                           "--max-batches", max_batches, "--split", split])
    if assert_ok_or_one_line_error(rc, err):
        result = json.loads(stdout)  # strict JSON: NaN would not parse
        assert math.isfinite(result["bpb"]) and result["bytes"] > 0


@pytest.mark.parametrize("args, words", [
    (["eval", "{run}", "--seq-len", "0"], "--seq-len"),
    (["eval", "{run}", "--max-batches", "0"], "--max-batches"),
    (["eval", "{run}", "--noise", "--noise-rate", "nan"], "--noise-rate"),
    (["eval", "{run}", "--task", "cute"], "--task cute needs --data"),
    (["eval", "{run}", "--seq-len", str(10**12), "--data", "{data}", "--split", "train", "--strided"], ""),
    (["generate", "{run}", "--device", "cuda"], "CUDA is not available"),
    (["generate", "{run}", "--device", "tpu:9"], "device"),
    (["generate", "{run}", "--max-bytes", str(10**13)], "memory"),
    (["generate", "{run}", "--prompt-image-size", "abc", "--image", "x.png"], "image size"),
    (["generate", "{run}", "--image", "{tmp}/missing.png"], "missing.png"),
    (["generate", "{run}", "--audio", "{tmp}/notes.txt"], "not an image or audio file"),
    (["generate", "{run}", "--out", "{tmp}/file.txt/x.bin"], "not a folder"),
    (["generate", "{run}", "--out", "{tmp}"], "is a folder"),
    (["report", "{run}", "--out", "{tmp}/file.txt"], "is a file, not a folder"),
    (["report", "{run}", "--n", "0"], "≥ 1"),
    (["train", "--data", "{data}", "--out", "{tmp}/file.txt", "--quiet"], "not a run folder"),
    (["train", "--data", "{data}", "--out", "{tmp}/r/deep/run", "--train.device", "cuda", "--quiet"], "CUDA"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--train.device", "abc", "--quiet"], "device"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--train.batch_size", str(10**7), "--quiet"], "memory"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--train.seq_len", str(10**9), "--quiet"], "memory"),
    (["prepare", "{tmp}/notes.txt", "--out", "{tmp}/file.txt"], "not an omnibyte dataset"),
    (["prepare", "{tmp}/notes.txt", "--out", "{tmp}/ds", "--val-fraction", "nan"], "val-fraction"),
    (["prepare", "--mix", "kjv:nan", "--out", "{tmp}/ds"], "finite"),
    (["prepare", "--mix", "", "--out", "{tmp}/ds"], "need a value"),
    (["prepare", "{tmp}/notes.txt", "--out", "{tmp}/ds", "--seed", "-1"], "--seed"),
    (["train", "--data", "{data}", "--out", "{tmp}/r", "--train.seed", "-1", "--quiet"], "seed"),
    (["patch", "--kind", "static", "--text", "abc", "--patch-size", "0"], ""),
    (["patch", "--kind", "static", "--text", "abc", "--out", "{tmp}/file.txt"], "not a folder"),
    (["patch", "calibrate", "{run}", "--data", "{data}", "--target-bytes-per-patch", "nan"], "finite"),
    (["bench", "bpe", "--data", "{tmp}/missing", "--out", "{tmp}/b"], ""),
    (["eval"], "required"),
    (["nope"], "invalid choice"),
])
def test_bad_flags(run, data, tmp_path, args, words):
    (tmp_path / "file.txt").write_text("a file\n")
    (tmp_path / "notes.txt").write_text("some notes\n")
    args = [a.format(run=run, data=data, tmp=tmp_path) for a in args]
    rc, stdout, err = cli(args)
    assert_one_line_error(rc, err, words)
    assert not (tmp_path / "r").exists() and not (tmp_path / "ds").exists() and not leftovers(tmp_path)


# ----------------------------------------------------------------------------- prompts


@FUZZ
@given(prompt=st.binary(max_size=40))
def test_prompt_bytes_are_taken_as_bytes(run, tmp_path_factory, prompt):
    """Any bytes typed as a prompt (argv arrives decoded with surrogateescape) are the prompt."""
    out = tmp_path_factory.mktemp("prompt") / "out.bin"
    rc, stdout, err = cli(["generate", run, f"--prompt={os.fsdecode(prompt)}", "--max-bytes", "4",
                           "--temperature", "0", "--out", out])
    assert rc == 0, err
    model = OmniModel.from_pretrained(run)
    new = generate(model, [[BOS, *prompt]], SamplingConfig(max_new=4, temperature=0))[0]
    assert out.read_bytes() == bytes(t for t in new if t < N_BYTES)
    assert stdout.startswith(prompt.decode("utf-8", "replace"))


@FUZZ
@given(prompt=st.text(max_size=20))
def test_prompt_text_with_lone_surrogates(run, prompt):
    rc, stdout, err = cli(["generate", run, f"--prompt={prompt}", "--max-bytes", "2", "--temperature", "0"])
    assert rc == 0, err


def test_long_prompt_is_fed_in_chunks(run):
    """A prompt longer than a prefill chunk continues exactly as full forward passes say."""
    model = OmniModel.from_pretrained(run)
    prompt = [BOS, *(b"the cat sat on the mat. " * 50)[:1200]]
    new = generate(model, [prompt], SamplingConfig(max_new=3, temperature=0))[0]
    allowed = torch.zeros(model.cfg.vocab_size, dtype=torch.bool)
    allowed[:N_BYTES] = True
    allowed[EOS] = True  # TextOnly, the default constraint
    seq = list(prompt)
    for tok in new:
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        assert tok == int(logits.masked_fill(~allowed, float("-inf")).argmax())
        seq.append(tok)


def test_memory_limits_follow_the_machine(run, monkeypatch):
    """A request either fits what is available or is refused up front."""
    import omnibyte.memory as memory

    rc, _, err = cli(["generate", run, "--prompt", "hi", "--max-bytes", "64", "--temperature", "0"])
    assert rc == 0, err
    monkeypatch.setattr(memory, "available_memory", lambda device: 10_000)
    rc, stdout, err = cli(["generate", run, "--prompt", "hi", "--max-bytes", "64", "--temperature", "0"])
    assert_one_line_error(rc, err, "memory")
    assert stdout == ""
    rc, _, err = cli(["eval", run, "--batch-size", "64"])
    assert_one_line_error(rc, err, "lower --batch-size or --seq-len")


def test_prompt_images_resized_beyond_memory_are_refused_before_reading(run, media):
    rc, stdout, err = cli(["generate", run, "--image", media / "ok.png", "--prompt-image-size", "60000x60000"])
    assert_one_line_error(rc, err, "memory")
    assert stdout == ""
    rc, _, err = cli(["generate", run, "--image", media / "ok.png", "--prompt-image-size", "4x3", "--max-bytes", "2"])
    assert rc == 0, err


# ----------------------------------------------------------------------------- datasets


META_EDITS = [
    ("format", "nope"), ("version", 99), ("vocab_size", 70000), ("splits", {}), ("splits", []),
    ("splits.val.n_ids", 10**9), ("splits.val.n_ids", 0), ("splits.val.shards", []),
    ("splits.val.shards.0.file", "../../etc/passwd"), ("splits.val.shards.0.n_ids", 3),
    ("splits.train.n_ids", -5), ("aux", {"val": {"x": {"file": "missing.bin"}}}),
]


def edit(obj, path: str, value):
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


@pytest.fixture
def dataset_copy(data, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    return copy


@pytest.mark.parametrize("path, value", META_EDITS)
def test_corrupt_dataset_meta(run, dataset_copy, path, value):
    meta = json.loads((dataset_copy / "meta.json").read_text())
    edit(meta, path, value)
    (dataset_copy / "meta.json").write_text(json.dumps(meta))
    rc, stdout, err = cli(["eval", run, "--data", dataset_copy, "--json"])
    if assert_ok_or_one_line_error(rc, err):
        assert math.isfinite(json.loads(stdout)["bpb"])


@pytest.mark.parametrize("damage", ["delete_val", "truncate_val", "grow_val", "delete_meta", "garbage_meta",
                                    "binary_meta", "meta_is_dir"])
def test_damaged_dataset_files(run, dataset_copy, tmp_path, damage):
    val = dataset_copy / "val-00000.bin"
    meta = dataset_copy / "meta.json"
    if damage == "delete_val":
        val.unlink()
    elif damage == "truncate_val":
        val.write_bytes(val.read_bytes()[:-3])
    elif damage == "grow_val":
        val.write_bytes(val.read_bytes() + b"\x00\x00")
    elif damage == "delete_meta":
        meta.unlink()
    elif damage == "garbage_meta":
        meta.write_text("{not json")
    elif damage == "binary_meta":
        meta.write_bytes(b"\xff\xfe\x00")
    else:
        meta.unlink()
        meta.mkdir()
    rc, _, err = cli(["eval", run, "--data", dataset_copy])
    if damage == "delete_meta":  # a folder of files that is no dataset: scored as text, whole
        assert rc == 0, err
    else:
        assert_one_line_error(rc, err)
    # training on it fails before the first step: nothing is left in the run folder's place
    out = tmp_path / "r"
    rc, _, err = cli(["train", "--data", dataset_copy, "--out", out, "--quiet", *quick_args(eval_every=1)])
    assert_one_line_error(rc, err)
    assert not out.exists() and not leftovers(tmp_path)


@FUZZ
@given(content=st.binary(max_size=300))
def test_eval_any_file_as_text(run, tmp_path_factory, content):
    """Any file is text to a byte model: scored whole when it holds bytes, an error when empty."""
    f = tmp_path_factory.mktemp("text") / "notes.txt"
    f.write_bytes(content)
    rc, stdout, err = cli(["eval", run, "--data", f, "--json", "--seq-len", "64"])
    if content:
        assert rc == 0, err
        result = json.loads(stdout)
        assert result["bytes"] == len(content) and math.isfinite(result["bpb"])
    else:
        assert_one_line_error(rc, err, "no documents")


def test_bpe_dataset_needs_the_matching_vocabulary(data, run, tmp_path):
    rc, _, err = cli(["bench", "bpe", "--data", data, "--out", tmp_path / "bpe", "--vocab", "300"])
    assert rc == 0, err
    vocab = ShardDataset(tmp_path / "bpe").meta["vocab_size"]
    rc, _, err = cli(["train", "--data", tmp_path / "bpe", "--out", tmp_path / "r", "--quiet", *quick_args()])
    assert_one_line_error(rc, err, f"--model.vocab_size {vocab}")
    assert not (tmp_path / "r").exists()
    rc, _, err = cli(["report", run, "--data", tmp_path / "bpe", "--out", tmp_path / "report"])
    assert_one_line_error(rc, err, f"--model.vocab_size {vocab}")
    assert not (tmp_path / "report").exists() and not leftovers(tmp_path)
    rc, _, err = cli(["train", "--data", tmp_path / "bpe", "--out", tmp_path / "r", "--quiet", *quick_args(),
                      "--model.vocab_size", str(vocab)])
    assert rc == 0, err


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture
def ckpt_copy(run, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@FUZZ
@given(where=st.floats(0, 1), byte=st.integers(0, 255), how=st.sampled_from(["flip", "truncate", "append"]),
       file=st.sampled_from(["model.safetensors", "config.json", "trainer.pt"]))
def test_damaged_checkpoint_files(run, tmp_path_factory, where, byte, how, file):
    import shutil

    copy = tmp_path_factory.mktemp("ckpt") / "run"
    shutil.copytree(run, copy)
    target = copy / "checkpoint" / file
    raw = bytearray(target.read_bytes())
    i = min(int(where * len(raw)), len(raw) - 1)
    if how == "flip":
        raw[i] ^= byte or 1
    elif how == "truncate":
        raw = raw[:i]
    else:
        raw += bytes([byte]) * 7
    target.write_bytes(bytes(raw))
    rc, stdout, err = cli(["eval", copy, "--json", "--max-batches", "1"])
    if assert_ok_or_one_line_error(rc, err):
        assert math.isfinite(json.loads(stdout)["bpb"])
    rc, stdout, err = cli(["generate", copy, "--prompt", "a", "--max-bytes", "3", "--temperature", "0"])
    assert_ok_or_one_line_error(rc, err)
    rc, _, err = cli(["train", "--resume", copy, "--train.steps", "3", "--quiet"])
    assert_ok_or_one_line_error(rc, err)
    assert not leftovers(copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_by_name(ckpt_copy, value):
    f = ckpt_copy / "checkpoint" / "model.safetensors"
    state = load_file(str(f))
    name = sorted(state)[-1]
    state[name].view(-1)[0] = value
    save_file(state, str(f))
    for args in (["eval", ckpt_copy, "--json"], ["generate", ckpt_copy, "--temperature", "0"],
                 ["train", "--resume", ckpt_copy, "--train.steps", "3"]):
        rc, stdout, err = cli(args)
        assert_one_line_error(rc, err, f"tensor {name}")
        assert stdout == ""


@pytest.mark.parametrize("change, words", [
    ({"dim": 64}, "shape"), ({"n_layers": 3}, "has no tensor"), ({"n_layers": 1}, "does not have"),
    ({"vocab_size": 300}, "shape"), ({"arch": "nope"}, "unknown model arch"), ({"dim": "big"}, "integer"),
    ({"dim": float("nan")}, ""),
])
def test_config_weights_mismatch(ckpt_copy, change, words):
    f = ckpt_copy / "checkpoint" / "config.json"
    cfg = json.loads(f.read_text())
    for k, v in change.items():
        if k == "arch":
            cfg["arch"] = v
        else:
            cfg["model"][k] = v
    f.write_text(json.dumps(cfg))
    rc, _, err = cli(["eval", ckpt_copy])
    assert_one_line_error(rc, err, words)


def test_overflowing_weights_give_an_error_not_a_nan_result(tmp_path):
    """Finite weights whose logits overflow: eval's bpb and greedy decoding would be NaN."""
    m = tiny_model()
    with torch.no_grad():
        m.head.weight.fill_(3e38)
        m.embed.weight.fill_(1.0)
    m.save_pretrained(tmp_path / "m")
    (tmp_path / "notes.txt").write_text("hello there\n")
    rc, stdout, err = cli(["eval", tmp_path / "m", "--data", tmp_path / "notes.txt", "--json"])
    assert_one_line_error(rc, err, "not finite")
    assert stdout == ""
    rc, stdout, err = cli(["generate", tmp_path / "m", "--prompt", "hi", "--temperature", "0"])
    assert_one_line_error(rc, err, "NaN or +inf")


# ----------------------------------------------------------------------------- permissions


def deny(monkeypatch, path: Path) -> None:
    """Opening anything under `path` fails with EACCES, as for a file the user may not read."""
    import builtins

    real = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, str | bytes | os.PathLike) and str(Path(os.fsdecode(file)).absolute()).startswith(
                str(path.absolute())):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def test_permission_errors_are_one_line(run, data, tmp_path, monkeypatch):
    src = tmp_path / "secret.txt"
    src.write_text("top secret\n")
    deny(monkeypatch, src)
    rc, _, err = cli(["prepare", src, "--out", tmp_path / "ds"])
    assert_one_line_error(rc, err, "permission denied")
    rc, _, err = cli(["eval", run, "--data", src])
    assert_one_line_error(rc, err, "permission denied")
    config = tmp_path / "secret.toml"
    config.write_text("[train]\nsteps = 2\n")
    deny(monkeypatch, config)
    rc, _, err = cli(["train", config, "--data", data, "--out", tmp_path / "r"])
    assert_one_line_error(rc, err, "permission denied")
    assert not (tmp_path / "ds").exists() and not (tmp_path / "r").exists() and not leftovers(tmp_path)


def test_unwritable_output_is_refused_before_the_work(run, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    rc, stdout, err = cli(["generate", run, "--prompt", "hi", "--out", locked / "x.bin"])
    assert_one_line_error(rc, err, "permission denied")
    assert stdout == ""  # refused before generating
    rc, _, err = cli(["report", run, "--out", locked])
    assert_one_line_error(rc, err, "permission denied")
    monkeypatch.undo()
    deny(monkeypatch, tmp_path / "late")  # a write that fails only at the end is still one line
    rc, _, err = cli(["generate", run, "--prompt", "hi", "--max-bytes", "3", "--out", tmp_path / "late" / "x.bin"])
    assert_one_line_error(rc, err, "permission denied")


# ----------------------------------------------------------------------------- run folders


def test_lock_held_by_another_process(data, run, tmp_path):
    """A process holding the lock: training into the folder, or resuming it, is refused with its
    pid; once it is gone (killed: its lock file stays), the folder is taken over."""
    out = tmp_path / "r"
    code = ("import sys, time; from omnibyte.train.runfolder import acquire_run_lock; "
            "acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args()])
        assert_one_line_error(rc, err, f"process {holder.pid} is training into it")
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).read_text().split()[0] == str(holder.pid)  # stale: its owner is gone
    rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args()])
    assert rc == 0, err
    assert not (out / LOCK_FILE).exists()


def test_resume_of_a_run_in_progress_is_refused(run):
    lock_holder = subprocess.Popen(  # a lock taken in another process, as a running trainer holds it
        [sys.executable, "-c", "import sys, time; from omnibyte.train.runfolder import acquire_run_lock; "
         "acquire_run_lock(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert lock_holder.stdout.readline().strip() == "held"
        before = (run / "checkpoint" / "trainer.pt").read_bytes()
        rc, _, err = cli(["train", "--resume", run, "--train.steps", "4", "--quiet"])
        assert_one_line_error(rc, err, "is in use")
        assert (run / "checkpoint" / "trainer.pt").read_bytes() == before
    finally:
        lock_holder.kill()
        lock_holder.wait()
    (run / LOCK_FILE).unlink(missing_ok=True)


def test_stale_lock_file_and_temporaries_are_taken_over(data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"{dead_pid()}\n")
    (out / "checkpoint.tmp").mkdir()
    (out / "checkpoint.tmp" / "model.safetensors").write_bytes(b"half")
    rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args()])
    assert rc == 0, err
    assert not leftovers(tmp_path)


def test_failure_before_the_first_checkpoint_leaves_a_reusable_folder(data, tmp_path, monkeypatch):
    out = tmp_path / "r"
    monkeypatch.setattr(Trainer, "micro_steps", lambda self, step, parts=None: float("nan"))  # diverges at step 1
    rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args()])
    assert_one_line_error(rc, err, "loss became nan")
    assert (out / "run.json").is_file() and not (out / "checkpoint").exists()
    monkeypatch.undo()
    rc, stdout, err = cli(["train", "--resume", out])
    assert rc == 0, err
    assert "no checkpoint yet" in stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    # the same folder named by --out again: it trains from scratch only when no checkpoint is there
    rc, _, err = cli(["train", "--data", data, "--out", out, "--quiet", *quick_args()])
    assert_one_line_error(rc, err, "already holds a run")


def test_resumed_metrics_hold_each_step_once(data, tmp_path):
    out = tmp_path / "r"
    cfg = load_run_config(None, tiny_overrides(data, **{**QUICK, "steps": 6}))
    Trainer(cfg, out, quiet=True).fit(stop_after=3)
    with open(out / "metrics.jsonl", "a") as f:  # logged after the checkpoint, then killed mid-line
        f.write(json.dumps({"step": 4, "loss": 1.0}) + "\n" + '{"step": 5, "lo')
    (out / "checkpoint.old").mkdir()  # left by a swap that was interrupted after it finished
    rc, _, err = cli(["train", "--resume", out, "--quiet"])
    assert rc == 0, err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not leftovers(tmp_path)


def test_interrupted_checkpoint_swap_is_completed(data, tmp_path):
    out = tmp_path / "r"
    cfg = load_run_config(None, tiny_overrides(data, **QUICK))
    Trainer(cfg, out, quiet=True).fit(stop_after=1)
    # killed between the two renames of a save: the new checkpoint whole in checkpoint.tmp, the old aside
    (out / "checkpoint").rename(out / "checkpoint.tmp")
    (out / "checkpoint.old").mkdir()
    rc, _, err = cli(["train", "--resume", out, "--quiet"])
    assert rc == 0, err
    assert torch.load(out / "checkpoint" / "trainer.pt", weights_only=True)["step"] == 2
    assert not leftovers(tmp_path)


def test_stale_prepare_temporaries_are_cleaned_up(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("hello\n" * 20)
    pid = dead_pid()
    stale = tmp_path / f".ds.tmp-{pid}-0123abcd"
    stale.mkdir()
    (stale / "all.tmp").write_bytes(b"\x00" * 10)
    alive = tmp_path / f".ds.tmp-{os.getpid()}-0123abcd"  # a writer that is still running: left alone
    alive.mkdir()
    rc, _, err = cli(["prepare", src, "--out", tmp_path / "ds"])
    assert rc == 0, err
    assert not stale.exists() and alive.exists() and is_dataset(tmp_path / "ds")
    alive.rmdir()
    # killed between its two renames: the dataset set aside comes back
    (tmp_path / "ds").rename(tmp_path / f".ds.old-{pid}-0123abcd")
    rc, _, err = cli(["eval", tmp_path / "ds"])  # not a dataset now
    assert rc == 2
    rc, _, err = cli(["prepare", src, "--out", tmp_path / "ds"])
    assert rc == 0, err and is_dataset(tmp_path / "ds")
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("sig, rc, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_interrupted_prepare_cleans_up_and_exits_non_zero(tmp_path, monkeypatch, sig, rc, word):
    prepare = importlib.import_module("omnibyte.data.prepare")  # the package exports a function of that name
    before = signal.getsignal(signal.SIGTERM)
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i}\n")
    real = prepare.documents_from_path

    def interrupted(path, doc_bytes):
        yield from real(path, doc_bytes)
        os.kill(os.getpid(), sig)  # arrives part way, while the temporary folder is half written

    monkeypatch.setattr(prepare, "documents_from_path", interrupted)
    # a shell that starts the suite in the background (`cmd &` without job control) starts it with
    # SIGINT ignored, and Python then keeps it ignored: give SIGINT its interactive meaning here
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, _, err = cli(["prepare", tmp_path, "--out", tmp_path / "ds"])
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert code == rc and err == f"omnibyte prepare: {word}\n"
    assert not (tmp_path / "ds").exists() and not leftovers(tmp_path)
    assert signal.getsignal(signal.SIGTERM) == before  # main() restores the handler it installed


# ----------------------------------------------------------------------------- real processes


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    e.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))
    return e


def test_real_process_bytes_prompt_and_one_line_errors(run, tmp_path):
    """argv holds bytes that are not UTF-8: they are the prompt. A bad flag: one line, exit 2."""
    out = tmp_path / "out.bin"
    proc = subprocess.run([sys.executable, "-m", "omnibyte.cli", "generate", str(run), "--prompt",
                           os.fsdecode(b"\xff\xfe caf\xc3"), "--max-bytes", "3", "--temperature", "0",
                           "--out", str(out)], capture_output=True, env=env(), timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    model = OmniModel.from_pretrained(run)
    new = generate(model, [[BOS, *b"\xff\xfe caf\xc3"]], SamplingConfig(max_new=3, temperature=0))[0]
    assert out.read_bytes() == bytes(t for t in new if t < N_BYTES)
    proc = subprocess.run([sys.executable, "-m", "omnibyte.cli", "eval", str(run), "--seq-len", "nan"],
                          capture_output=True, text=True, env=env(), timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_real_process_sigterm_saves_and_exits_143(data, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run_dir), *quick_args(steps=100_000)]
    proc = subprocess.Popen([sys.executable, "-m", "omnibyte", "train", *args], env=env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never logged a step"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err[-2000:]
    step = torch.load(run_dir / "checkpoint" / "trainer.pt", weights_only=True)["step"]
    assert f"stopped at step {step}" in out and not (run_dir / LOCK_FILE).exists()
    rc, _, err = cli(["train", "--resume", run_dir, "--train.steps", str(step + 2), "--quiet"])
    assert rc == 0, err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "loss" in json.loads(line)]
    assert steps == list(range(1, step + 3))


# ----------------------------------------------------------------------------- odd but valid


def test_patch_text_is_the_bytes_typed(tmp_path):
    rc, stdout, err = cli(["patch", "--kind", "static", "--patch-size", "2", "--text", os.fsdecode(b"\xff\xfeab"),
                           "--out", tmp_path])
    assert rc == 0, err
    assert stdout.startswith("<BOS>\\xff") and "6 bytes, " in stdout  # BOS, 4 bytes, EOS


def test_header_bytes_in_a_prompt_stay_text(run):
    """Bytes that look like a media header or markers are just bytes of the prompt."""
    prompt = bytes([0, 1, 2]) + struct.pack(">HH", 65535, 65535) + b"\x00"
    rc, _, err = cli(["generate", run, "--prompt", os.fsdecode(prompt), "--max-bytes", "2", "--temperature", "0"])
    assert rc == 0, err
