"""Training dtype and model FLOPs utilisation: `train.dtype auto` picks bf16 autocast on a CPU with
AMX-BF16 and fp32 elsewhere, and says so; every model family (and each input adapter) trains under
CPU bf16 autocast with finite losses, keeps fp32 weights, and its saved weights evaluate and
generate; the peak FLOP/s derivation from cpuinfo text; MFU in the metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUICK_TRAIN, tiny_overrides, write_text_dataset

from omnibyte import machine
from omnibyte.cli import main
from omnibyte.data import write_dataset
from omnibyte.format import AUDIO_MULAW8, AudioSegment, Document, ImageSegment, TextSegment
from omnibyte.models import OmniModel
from omnibyte.train import Trainer, load_run_config

# two processors of a 2-core Xeon with AMX (abridged /proc/cpuinfo)
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2599.998
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2599.998
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile
"""
# four logical processors on two cores (hyperthreads), AVX2 only, cores at different clocks
DESKTOP = "\n".join(f"processor\t: {p}\ncpu MHz\t\t: {mhz}\nphysical id\t: 0\ncore id\t\t: {p // 2}\n"
                    f"flags\t\t: fpu sse sse2 avx avx2 fma\n" for p, mhz in enumerate((800.0, 3000.0, 1200.5, 900.0)))
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm\nprocessor\t: 1\nFeatures\t: fp asimd evtstrm\n"


@pytest.fixture
def fake_cpu(monkeypatch):
    """Make this machine's cpuinfo the text given (and hide sysfs's max clock)."""
    def use(text: str) -> None:
        monkeypatch.setattr(machine, "read_cpuinfo", lambda: text)
        monkeypatch.setattr(machine, "MAX_FREQ", Path("/nonexistent/cpuinfo_max_freq"))
    return use


# ----------------------------------------------------------------------------- auto dtype


def test_auto_dtype_follows_amx_bf16():
    amx, plain = machine.cpu_flags(XEON), machine.cpu_flags(DESKTOP)
    assert machine.has_amx_bf16(amx) and not machine.has_amx_bf16(plain)
    assert machine.auto_dtype("cpu", amx) == "bf16"
    assert machine.auto_dtype("cpu", plain) == "fp32"
    assert machine.auto_dtype("cpu", machine.cpu_flags(ARM)) == "fp32"
    assert machine.auto_dtype("cpu", frozenset()) == "fp32"  # no cpuinfo (not Linux)
    assert machine.auto_dtype("cuda", plain) == "bf16"
    assert machine.auto_dtype("mps", amx) == "fp32"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("cpu, dtype", [(XEON, "bf16"), (DESKTOP, "fp32")])
def test_trainer_auto_dtype_is_shown_in_the_start_line_and_metrics(data, tmp_path, fake_cpu, capsys, cpu, dtype):
    fake_cpu(cpu)
    cfg = load_run_config(None, tiny_overrides(data, steps=2, dtype="auto"))
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.dtype == dtype and (trainer.amp_dtype is torch.bfloat16) == (dtype == "bf16")
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all(r["dtype"] == dtype and r["mfu"] > 0 for r in train_rows)
    flops_per_s = trainer.flops_per_byte * train_rows[-1]["bytes_per_s"]
    assert train_rows[-1]["mfu"] == pytest.approx(flops_per_s / trainer.peak.flops)
    # the trained weights stay fp32 under autocast
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())

    from omnibyte.train.trainer import run_trainer

    trainer = Trainer(cfg, tmp_path / "again", quiet=True)
    run_trainer(trainer, cfg, quiet=False)
    out = capsys.readouterr().out
    start = out.splitlines()[0]
    if dtype == "bf16":
        assert "bf16 autocast (train.dtype auto: this CPU has AMX-BF16) on cpu" in start
        assert "1 core × 2.60 GHz × 1,024 bf16 FLOPs/cycle (AMX-BF16)" in out  # threads 1
    else:
        assert "fp32 (train.dtype auto) on cpu" in start
        assert "1 core × 3.00 GHz × 32 fp32 FLOPs/cycle (AVX2)" in out


def test_explicit_dtype_wins_over_auto(data, tmp_path, fake_cpu):
    fake_cpu(XEON)
    trainer = Trainer(load_run_config(None, tiny_overrides(data, dtype="fp32")), tmp_path / "a", quiet=True)
    assert trainer.dtype == "fp32" and trainer.amp_dtype is None and trainer.precision() == "fp32"
    fake_cpu(DESKTOP)
    trainer = Trainer(load_run_config(None, tiny_overrides(data, dtype="bf16")), tmp_path / "b", quiet=True)
    assert trainer.dtype == "bf16" and trainer.precision() == "bf16 autocast"


# ----------------------------------------------------------------------------- peak FLOP/s


def test_cpu_peak_from_cpuinfo():
    amx = machine.cpu_peak("bf16", cpuinfo=XEON)
    assert amx.flops == pytest.approx(2 * 2599.998e6 * 1024)
    assert machine.cpu_peak("fp32", cpuinfo=XEON).flops == pytest.approx(2 * 2599.998e6 * 16 * 2 * 2)
    assert machine.cpu_peak("fp32", threads=1, cpuinfo=XEON).flops == pytest.approx(2599.998e6 * 64)
    # hyperthreads share a core's units: 4 processors, 2 cores; the clock is the highest one listed
    desk = machine.cpu_peak("fp32", cpuinfo=DESKTOP)
    assert desk.flops == pytest.approx(2 * 3000e6 * 8 * 2 * 2)
    assert desk.how == "2 cores × 3.00 GHz × 32 fp32 FLOPs/cycle (AVX2)"
    assert machine.cpu_peak("bf16", cpuinfo=DESKTOP).flops == desk.flops  # no bf16 unit: the fp32 rate
    # sysfs's rated maximum (kHz) is preferred to the current clock
    assert machine.cpu_peak("fp32", cpuinfo=DESKTOP, max_freq_khz="4500000\n").flops == pytest.approx(2 * 4.5e9 * 32)
    without_amx = XEON.replace(" amx_bf16", "")
    assert machine.cpu_peak("bf16", cpuinfo=without_amx).how.endswith("128 bf16 FLOPs/cycle (AVX512_BF16)")


def test_cpu_peak_unknown_parts_give_none():
    assert machine.cpu_peak("fp32", cpuinfo=ARM) is None  # Arm's cpuinfo gives no clock
    assert machine.cpu_peak("fp32", cpuinfo=ARM, max_freq_khz="2000000").how == \
        "2 cores × 2.00 GHz × 16 fp32 FLOPs/cycle (NEON)"
    assert machine.cpu_peak("fp32", cpuinfo="") is None
    assert machine.cpu_peak("fp32", cpuinfo="processor\t: 0\ncpu MHz\t: 1000\nflags\t: fpu\n") is None
    assert machine.cpu_peak("fp32", cpuinfo="processor\t: 0\ncpu MHz\t: ?\nflags\t: sse\n") is None
    with pytest.raises(ValueError, match="dtype must be fp32 or bf16"):
        machine.flops_per_cycle(frozenset({"avx2"}), "fp16")


def test_gpu_peak_table():
    assert machine.gpu_peak("NVIDIA H100 80GB HBM3").flops == 989e12
    assert machine.gpu_peak("NVIDIA H200").flops == 989e12
    assert machine.gpu_peak("NVIDIA H100 PCIe").flops == 756e12
    assert machine.gpu_peak("NVIDIA A100-SXM4-80GB").flops == 312e12
    assert machine.gpu_peak("NVIDIA L40S").flops == 362e12
    assert machine.gpu_peak("NVIDIA GeForce GTX 1080") is None
    assert machine.mfu(989e12 / 4, machine.gpu_peak("NVIDIA H200")) == pytest.approx(0.25)
    assert machine.mfu(1e12, None) is None


# ----------------------------------------------------------------------------- every family in bf16

BLT_ENC = {"dim": 16, "n_layers": 1, "n_heads": 2, "window": 16}
BLT = {"arch": "blt", "encoder": BLT_ENC, "latent": {"dim": 32, "n_layers": 1, "n_heads": 2}, "decoder": BLT_ENC,
       "ngrams": {"buckets": 97, "sizes": [3, 5]}}
MEGABYTE = {"arch": "megabyte", "patch_size": 4, "global_model": {"dim": 32, "n_layers": 1, "n_heads": 2},
            "local_model": {"dim": 16, "n_layers": 1, "n_heads": 2}}
ADAPTERS = {"media_conv": {"channels": 4, "kernel": 3}, "image_encoder": {"width": 4},
            "audio_encoder": {"width": 4, "cells": 3}}
FAMILIES = {
    "transformer": {"arch": "transformer", "dim": 32, "n_layers": 2, "n_heads": 4},
    "megabyte": MEGABYTE,
    "blt-static": {**BLT, "patcher": {"kind": "static", "patch_size": 3}},
    "blt-space": {**BLT, "patcher": {"kind": "space", "max_patch_len": 6}},
    "blt-entropy": {**BLT, "patcher": {"kind": "entropy", "entropy_model": "ENTROPY"}},
    "transformer+adapters": {"arch": "transformer", "dim": 32, "n_layers": 2, "n_heads": 4, "adapters": ADAPTERS},
    "megabyte+adapters": {**MEGABYTE, "adapters": ADAPTERS},
    "blt+adapters": {**BLT, "patcher": {"kind": "static", "patch_size": 3}, "adapters": ADAPTERS},
}


@pytest.fixture(scope="module")
def media_data(tmp_path_factory) -> Path:
    """A dataset of text with images and µ-law clips, so that each adapter has input to read."""
    rng = np.random.default_rng(0)
    docs = []
    for d in range(12):
        w, h, c = 3 + d % 3, 4, 1 + 2 * (d % 2)
        pixels = rng.integers(0, 256, w * h * c, dtype=np.uint8).tobytes()
        clip = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        docs.append(Document([TextSegment(b"the cat sat on the mat. "), ImageSegment(w, h, c, pixels),
                              TextSegment(b"a red door. "), AudioSegment(8000, 40, AUDIO_MULAW8, clip),
                              TextSegment(b"and the dog ran to the sun.")]))
    out = tmp_path_factory.mktemp("media") / "ds"
    write_dataset(docs, out, sources=["generated"], val_fraction=0.2)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_under_cpu_bf16_autocast(family, data, media_data, entropy_dir, tmp_path, capsys):
    """Two bf16-autocast steps (BLT's hash tables with sparse row updates) give finite losses and fp32
    weights; the saved weights then evaluate (fp32) close to the trainer's bf16 validation, and generate."""
    model = dict(FAMILIES[family])
    if model.get("patcher", {}).get("entropy_model") == "ENTROPY":
        model["patcher"] = {**model["patcher"], "entropy_model": str(entropy_dir)}
    dataset = media_data if "adapters" in family else data
    cfg = load_run_config(None, {"model": model, "data": {"path": str(dataset)},
                                 "train": {**QUICK_TRAIN, "steps": 2, "dtype": "bf16", "eval_batches": 0}})
    run = tmp_path / "run"
    trainer = Trainer(cfg, run, quiet=True)
    assert trainer.amp_dtype is torch.bfloat16
    if family.startswith("blt"):
        assert hasattr(trainer.optimizer, "flush")  # the sparse row updates of the hash n-gram tables
    last = trainer.fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())

    saved = OmniModel.from_pretrained(run)
    assert all(t.dtype == torch.float32 for t in saved.state_dict().values() if t.is_floating_point())
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert math.isfinite(result["bpb"]) and result["bpb"] == pytest.approx(last["val_bpb"], rel=0.02)
    assert main(["generate", str(run), "--prompt", "the ", "--max-bytes", "6", "--seed", "0"]) == 0
