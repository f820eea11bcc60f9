"""`omnibyte report`: a tiny run on a tiny multimodal mix → index.html with every section."""

from __future__ import annotations

import json
import re
import shutil
import struct

import numpy as np
import pytest
import torch

from omnibyte.cli import main
from omnibyte.data.tasks import build_mix, read_heldout
from omnibyte.errors import OmnibyteError
from omnibyte.eval.multimodal import ExampleResult
from omnibyte.eval.report import draw_points, write_report
from omnibyte.format import ImageSegment
from omnibyte.models.base import OmniModel
from omnibyte.train.config import resolve
from omnibyte.train.trainer import Trainer

TASK_OPTS = {"clocks": {"size": 16}, "shapes": {"size": 16, "max_shapes": 3},
             "completion": {"source": "shapes", "size": 16}}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    spec = "clocks:16,shapes:16,completion:8" + (",speech:6" if shutil.which("espeak-ng") else "")
    opts = dict(TASK_OPTS)
    if "speech" in spec:
        opts["speech"] = {"phrases": 0.0, "max_digits": 1, "min_speed": 300, "max_speed": 400}
    build_mix(spec, root / "data", seed=0, heldout=4, task_opts=opts)
    cfg = resolve({"model": {"arch": "transformer", "dim": 32, "n_layers": 2, "n_heads": 4},
                   "data": {"path": str(root / "data")},
                   "train": {"steps": 3, "batch_size": 2, "seq_len": 128, "warmup_steps": 1, "eval_every": 0,
                             "eval_batches": 1, "save_every": 0, "log_every": 1, "device": "cpu", "threads": 1}})
    torch.manual_seed(0)
    Trainer(cfg, root / "run", quiet=True).fit()
    return root


def test_report_writes_every_section(tiny_run):
    index = write_report(tiny_run / "run", tiny_run / "out", n=2, max_batches=2)
    page = index.read_text()
    sections = re.findall(r'<section id="([a-z]+)"', page)
    expected = ["summary", "bpb", "text", "images", "metrics", "clocks", "points", "counts", "completion"]
    if shutil.which("espeak-ng"):
        expected.append("speech")
    assert set(expected) <= set(sections), sections
    # every file the page links to is there, and only printable text made it into the page
    for name in re.findall(r'src="([^"]+)"', page):
        assert (index.parent / name).is_file(), name
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", page)
    numbers = json.loads((index.parent / "metrics.json").read_text())
    assert {"clock", "complete"} <= set(numbers["tasks"]) and numbers["bits_per_byte"]["image_bpb"] > 0
    if shutil.which("espeak-ng"):
        assert list(index.parent.glob("speech-*.wav")) and numbers["tasks"]["transcribe"]["n"] == 2


def test_report_cli(tiny_run, capsys):
    out = tiny_run / "cli-out"
    assert main(["report", str(tiny_run / "run"), "--out", str(out), "--n", "1", "--max-batches", "1"]) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    test_out = tiny_run / "cli-test"
    assert main(["report", str(tiny_run / "run"), "--out", str(test_out), "--split", "test", "--n", "1",
                 "--max-batches", "1"]) == 0
    assert json.loads((test_out / "metrics.json").read_text())["split"] == "test"
    assert "test split" in (test_out / "index.html").read_text()
    capsys.readouterr()
    assert main(["report", str(tiny_run / "run"), "--data", str(tiny_run / "nowhere")]) == 2
    assert "no prepared dataset" in capsys.readouterr().err


def test_report_refuses_a_folder_that_is_not_a_report(tiny_run):
    other = tiny_run / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OmnibyteError, match="other than a report"):
        write_report(tiny_run / "run", other, n=1, max_batches=1)
    assert (other / "notes.txt").read_text() == "keep me"


def test_points_are_drawn_where_the_model_pointed(tiny_run):
    rec = next(r for r in read_heldout(tiny_run / "data") if r["kind"] == "point")
    seg = ImageSegment(16, 16, 3, bytes(16 * 16 * 3))  # black canvas
    r = ExampleResult(rec, [], prediction='<point x="25.0" y="75.0" alt="x">x</point>')
    px = np.asarray(draw_points(seg, r))  # 8× larger: the cross is centred at (32, 96)
    assert tuple(px[96, 32]) == (255, 0, 0)
    assert px[..., 1].max() == 200  # target outlines in green


def test_report_shows_a_callers_results_with_drawings(tmp_path):
    from omnibyte.data.tasks import fashion as fashion_mod
    from omnibyte.eval.multimodal import judge_draws, run_examples

    root = tmp_path / "fashion"
    root.mkdir()
    rng = np.random.default_rng(0)
    for images, labels in fashion_mod.FILES.values():
        for name, array in ((images, rng.integers(0, 256, size=(20, 28, 28))), (labels, np.arange(20) % 10)):
            head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            (root / name).write_bytes(head + array.astype(np.uint8).tobytes())
    build_mix("fashion:6", tmp_path / "data", seed=0, heldout=6, task_opts={"fashion": {"root": str(root)}})
    cfg = resolve({"model": {"arch": "transformer", "dim": 16, "n_layers": 1, "n_heads": 2},
                   "data": {"path": str(tmp_path / "data")},
                   "train": {"steps": 1, "batch_size": 1, "seq_len": 64, "warmup_steps": 1, "eval_every": 0,
                             "eval_batches": 1, "save_every": 0, "device": "cpu", "threads": 1}})
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    model = OmniModel.from_pretrained(tmp_path / "run")
    results = run_examples(model, tmp_path / "data", split="test", draws=2)
    judge_draws(results, lambda segs: [3] * len(segs))
    index = write_report(tmp_path / "run", tmp_path / "page", split="test", n=1, max_batches=1, results=results,
                         sections=[("targets", "Targets", "<p>the table</p>")])
    page = index.read_text()
    assert page.index('id="targets"') < page.index('id="summary"') and "the table" in page
    assert "drawn by the model" in page and "dress" in page  # class 3, as the judge said
    assert list(index.parent.glob("drawn-*.png"))
    assert json.loads((index.parent / "metrics.json").read_text())["tasks"]["draw"]["judged_n"] == 2
