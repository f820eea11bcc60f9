"""The `omnibyte` command line: help for every command, eval (--json, raw text files), generate
(streaming, --out raw bytes, non-UTF-8 output), and one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_model, tiny_overrides, write_text_dataset

from omnibyte.cli import COMMANDS, build_parser, main
from omnibyte.format import BOS, EOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.models import OmniModel
from omnibyte.nn import nll_sums
from omnibyte.train import Trainer, load_run_config


def available_commands() -> list[str]:
    names = []
    for name in COMMANDS:
        try:
            importlib.import_module(f"omnibyte.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"omnibyte.cli.{name}":
                raise
            continue
        names.append(name)
    return names


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run trained for 4 steps; its final evaluation covers the whole val split."""
    tmp = tmp_path_factory.mktemp("cli")
    data = write_text_dataset(tmp)
    cfg = load_run_config(None, tiny_overrides(data, steps=4, eval_batches=0))
    Trainer(cfg, tmp / "run", quiet=True).fit()
    return tmp / "run"


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """An untrained model with sharp logits: it samples all kinds of bytes, mostly not UTF-8."""
    path = tmp_path_factory.mktemp("model") / "m"
    m = tiny_model(seed=11)
    with torch.no_grad():
        m.head.weight.mul_(5)
    m.save_pretrained(path)
    return path


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, command: str, words: str):
    assert rc == 2, err
    assert err.startswith(f"omnibyte {command}: error: ") and err.count("\n") == 1, err
    assert words in err, err


# ----------------------------------------------------------------------------- help


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Tokenizer-free" in out
    for name in available_commands():
        assert name in out


def test_core_commands_are_registered():
    assert {"prepare", "train", "eval", "generate"} <= set(available_commands())


@pytest.mark.parametrize("name", available_commands())
def test_command_help(name, capsys):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    description = sub.choices[name].description
    assert description and len(description) > 20, f"{name} has no description"
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: omnibyte {name}")
    assert flat(description) in flat(out)


# ----------------------------------------------------------------------------- eval


def test_eval_json(run, capsys):
    rc, out, err = cli(["eval", str(run), "--json"], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    meta = json.loads((Path(result["data"]) / "meta.json").read_text())
    # every byte of the val split after its first id (BOS) is scored exactly once
    assert result["bytes"] == meta["splits"]["val"]["bytes"]["text"]
    assert result["split"] == "val" and result["seq_len"] == 32
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert result["bpb"] == pytest.approx(final["val_bpb"], rel=1e-5)  # = the trainer's final eval

    rc, out, _ = cli(["eval", str(run)], capsys)
    assert rc == 0 and f"{result['bpb']:.4f} bits/byte over {result['bytes']:,} bytes" in out


def test_eval_raw_text_file(run, tmp_path, capsys):
    text = ("In the beginning was the byte, and the byte was with the model. Ünïcödé ☃\n" * 4).encode()
    f = tmp_path / "notes.txt"
    f.write_bytes(text)
    rc, out, err = cli(["eval", str(run), "--data", str(f), "--seq-len", "1024", "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert result["bytes"] == len(text) and result["split"] == "train"
    # by hand: one window BOS text EOS, every target after BOS scored
    model = OmniModel.from_pretrained(run)
    ids = torch.tensor([[BOS, *text, EOS]])
    with torch.no_grad():
        bits, n = nll_sums(model(ids[:, :-1]).logits, ids[:, 1:])
    assert n == len(text) and result["bpb"] == pytest.approx(bits / n, rel=1e-5)
    assert not list(tmp_path.glob("*/meta.json"))  # prepared on the fly, in a temporary folder


# ----------------------------------------------------------------------------- generate


class Recorder:
    """Stands in for sys.stdout: remembers every write and flush, so streaming shows."""

    def __init__(self):
        self.writes, self.flushes = [], 0

    def write(self, s: str) -> int:
        self.writes.append(s)
        return len(s)

    def flush(self):
        self.flushes += 1

    def text(self) -> str:
        return "".join(self.writes)


def test_generate_streams_and_writes_raw_bytes(random_model, tmp_path, monkeypatch, capsys):
    out_file = tmp_path / "gen.bin"
    rec = Recorder()
    monkeypatch.setattr(sys, "stdout", rec)
    args = ["generate", str(random_model), "--prompt", "héllo ", "--max-bytes", "60", "--temperature", "1",
            "--top-p", "1", "--seed", "3", "--out", str(out_file)]
    assert main(args) == 0
    raw = out_file.read_bytes()

    # the same bytes the library gives for the same settings
    model = OmniModel.from_pretrained(random_model)
    new = generate(model, [[BOS, *"héllo ".encode()]], SamplingConfig(max_new=60, temperature=1.0, top_p=1.0,
                                                                      seed=3))[0]
    assert raw == bytes(t for t in new if t < N_BYTES) and 0 < len(raw) <= 60
    assert new[-1] == EOS or len(new) == 60
    # not UTF-8: the terminal shows replacement characters, the file keeps the bytes
    assert any(b >= 0x80 for b in raw)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    shown = rec.text()
    assert shown == "héllo " + raw.decode("utf-8", errors="replace") + "\n"
    assert "\ufffd" in shown
    # streamed: written and flushed byte by byte as they came, not once at the end
    assert len(rec.writes) > len(raw) // 2 and rec.flushes > len(raw) // 2
    err = capsys.readouterr().err
    assert f"wrote {len(raw)} bytes to {out_file}" in err


def test_generate_greedy_from_run_dir(run, capsys):
    rc, out, err = cli(["generate", str(run), "--prompt", "the ", "--max-bytes", "12", "--temperature", "0"],
                       capsys)
    assert rc == 0, err
    model = OmniModel.from_pretrained(run)
    new = generate(model, [[BOS, *b"the "]], SamplingConfig(max_new=12, temperature=0))[0]
    assert out == "the " + bytes(t for t in new if t < N_BYTES).decode("utf-8", errors="replace") + "\n"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args, command, words", [
    (["eval", "{tmp}/missing"], "eval", "no such model or run directory"),
    (["eval", "{run}", "--data", "{tmp}/missing.txt"], "eval", "no such dataset, file or folder"),
    (["eval", "{run}", "--data", "{tmp}/empty.txt"], "eval", "no documents"),
    (["eval", "{tmp}"], "eval", "holds no model"),
    (["generate", "{tmp}/missing"], "generate", "no such model or run directory"),
    (["generate", "{run}", "--top-p", "2"], "generate", "top-p must be in (0, 1]"),
    (["generate", "{run}", "--max-bytes", "-1"], "generate", "max new bytes must be ≥ 0"),
    (["prepare", "{tmp}/empty.txt"], "prepare", "--out DIR is required"),
    (["prepare", "{tmp}/missing.txt", "--out", "{tmp}/ds"], "prepare", "source not found"),
    (["train", "--resume", "{tmp}/missing"], "train", "not a run directory"),
])
def test_errors_are_one_line(run, tmp_path, capsys, args, command, words):
    (tmp_path / "empty.txt").write_bytes(b"")
    args = [a.format(tmp=tmp_path, run=run) for a in args]
    rc, _, err = cli(args, capsys)
    assert_one_line_error(rc, err, command, words)
    assert not (tmp_path / "ds").exists()


def test_error_exit_code_in_a_real_process(tmp_path):
    """`python -m omnibyte.cli` works, and an error is one line on stderr, exit 2, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "omnibyte.cli", "eval", str(tmp_path / "nope"), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("omnibyte eval: error: no such model or run directory")


def test_eval_result_is_finite(run, capsys):
    rc, out, _ = cli(["eval", str(run), "--json", "--max-batches", "1", "--batch-size", "2"], capsys)
    result = json.loads(out)
    assert rc == 0 and math.isfinite(result["bpb"]) and 0 < result["bytes"] <= 2 * 32
