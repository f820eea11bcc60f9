"""The benchmark end of `make multimodal` (benchmarks/multimodal_run.py, fashion_judge.py,
image_encoder_probe.py) and the Makefile's MM_ variables: small fakes, no trained model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import fashion_judge, image_encoder_probe, multimodal_run
from benchmarks.multimodal_run import combine, targets_table, text_bytes_seen, training_facts
from omnibyte.data import BatchLoader
from omnibyte.data.prepare import write_dataset
from omnibyte.data.tasks import fashion as fashion_mod
from omnibyte.format import BOA, BOI, BOS, N_BYTES, Document, ImageSegment, TextSegment
from tests.test_tasks import write_idx

REPO = Path(__file__).resolve().parent.parent


def scores(**over) -> dict:
    """Task scores that meet every target, with `over` ({kind: {metric: value}}) laid over them."""
    base = {"classify": {"accuracy": 0.9, "majority": 0.11}, "transcribe": {"cer_en": 0.05, "cer_fr": 0.1},
            "clock": {"hour": 0.7, "within": 0.4}, "count": {"accuracy": 0.8, "chance": 0.5},
            "point": {"f1": 0.6}, "draw": {"judged": 0.7, "chance_judged": 0.1}}
    for kind, m in over.items():
        base[kind] = {**base.get(kind, {}), **m}
    return base


def test_targets_table_marks_each_target_met_or_missed():
    text = {"model": 1.5, "baseline": 1.45, "ratio": 1.5 / 1.45}
    rows = targets_table({"scores": scores(), "text": text, "split": "test"})
    assert len(rows) == len(multimodal_run.TARGETS) + 1 and all(r["met"] for r in rows)
    rows = {r["label"]: r for r in targets_table({"scores": scores(transcribe={"cer_fr": 0.2}, point={"f1": None}),
                                                  "text": {**text, "ratio": 1.2}, "split": "test"})}
    assert not rows["spoken digits and phrases, French: CER"]["met"]  # ≤: 20% is above 15%
    assert rows["spoken digits and phrases, English: CER"]["met"]
    assert not rows["point (Molmo format): F1"]["met"] and rows["point (Molmo format): F1"]["value"] is None
    kjv = rows["KJV test text: bits per byte, as a multiple of the text-only model's"]
    assert not kjv["met"] and kjv["threshold"] == multimodal_run.TEXT_TARGET
    assert rows["count (40 × 40, 1–6 shapes)"]["baseline"] == 0.5  # the majority answer beside it


def test_combine_gives_the_mean_and_each_seed(tmp_path):
    runs = []
    for seed, acc in ((0, 0.8), (1, 0.9)):
        run = tmp_path / f"mm-cpu-s{seed}"
        run.mkdir()
        result = {"run": str(run), "training": {"steps": 10, "train_minutes": 1.0}, "split": "test",
                  "scores": scores(classify={"accuracy": acc})}
        result["targets"] = targets_table({**result, "text": {"model": 1.0, "baseline": 1.0, "ratio": 1.0}})
        (run / "results-test.json").write_text(json.dumps(result))
        runs.append(run)
    lines = combine(runs, "test")
    row = next(line for line in lines if line.startswith("| Fashion-MNIST classification"))
    assert "**85.0%**" in row and "80.0%" in row and "90.0%" in row and row.endswith("| met |")


def fake_run(run: Path, data: Path, steps: int, batch_size: int = 2, seq_len: int = 256,
             bytes_per_s: float = 512.0) -> None:
    """A run folder as far as the scoring reads it: run.json and a metrics.jsonl of `steps` steps."""
    run.mkdir(parents=True)
    train = {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "seed": 0, "align_docs": True,
             "warmup_steps": 1}
    (run / "run.json").write_text(json.dumps({"data": {"path": str(data)}, "train": train}))
    rows = [{"step": s, "loss": 1.0, "bytes_per_s": bytes_per_s, "flops": 1e6 * s} for s in range(2, steps + 1, 2)]
    rows.insert(1, {"step": 2, "val_bpb": 3.0})  # evaluation rows carry no throughput and are left out
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_facts_time_steps_by_their_logged_throughput(tmp_path):
    fake_run(tmp_path / "run", tmp_path, steps=6)
    facts = training_facts(tmp_path / "run")
    assert facts["steps"] == 6 and facts["flops"] == 6e6
    assert facts["train_minutes"] == facts["logged_minutes"] == pytest.approx(6 * 2 * 256 / 512 / 60)
    assert facts["paused"] == []


def test_training_facts_count_a_paused_window_at_the_median_rate(tmp_path):
    fake_run(tmp_path / "run", tmp_path, steps=10)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows[3]["bytes_per_s"] = 5.0  # steps 4..6 took 204.8 s: the process was stopped, not training
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    facts = training_facts(tmp_path / "run")
    assert facts["train_minutes"] == pytest.approx(10 * 2 * 256 / 512 / 60)
    assert facts["logged_minutes"] == pytest.approx((8 * 2 * 256 / 512 + 2 * 2 * 256 / 5) / 60)
    assert facts["paused"] == [{"step": 6, "seconds": pytest.approx(2 * 2 * 256 / 5)}]


def test_text_bytes_seen_counts_the_text_documents_of_the_trained_windows(tmp_path):
    rng = np.random.default_rng(0)
    docs = []
    for k in range(30):
        text = TextSegment(bytes(rng.integers(97, 123, size=int(rng.integers(20, 90))).astype(np.uint8)))
        if k % 3 == 0:  # a task example: its question bytes are not KJV text
            img = ImageSegment(6, 6, 1, rng.integers(0, 256, size=36).astype(np.uint8).tobytes())
            docs.append(Document([img, text]))
        else:
            docs.append(Document([text]))
    data = tmp_path / "mix"
    write_dataset(docs, data, sources=["test"], val_fraction=0.1)
    # 6 steps: fake_run logs every second step, and the count runs to the last logged one
    fake_run(tmp_path / "run", data, steps=6, batch_size=2, seq_len=128)
    loader = BatchLoader(data, "train", 2, 128, 0, align_docs=True)
    expected = 0
    for step in range(6):
        for row in loader.get_batch(step)["ids"].numpy():
            starts = np.flatnonzero(row == BOS)
            for a, b in zip(starts, [*starts[1:], len(row)]):
                doc = row[a:b]
                if not np.isin(doc, (BOI, BOA)).any():
                    expected += int((doc < N_BYTES).sum())
    assert expected > 0 and text_bytes_seen(tmp_path / "run") == expected


@pytest.fixture
def small_fashion(tmp_path):
    root = tmp_path / "fashion"
    root.mkdir()
    rng = np.random.default_rng(0)
    for images, labels in fashion_mod.FILES.values():
        write_idx(root / f"{images}.gz", rng.integers(0, 256, size=(20, 28, 28)))
        write_idx(root / f"{labels}.gz", np.arange(20) % 10)
    return str(root)


def test_a_smoke_judge_is_cached_apart_from_the_real_one(tmp_path, small_fashion, monkeypatch):
    monkeypatch.setattr(fashion_judge, "WEIGHTS", tmp_path / "out" / "fashion_judge.pt")
    assert fashion_judge.weights_path() == tmp_path / "out" / "fashion_judge.pt"
    small = fashion_judge.weights_path(12)
    assert small.name == "fashion_judge-12.pt"
    net, info = fashion_judge.load_judge(small_fashion, images_limit=12)
    assert info["train_images"] == 12 and 0 <= info["test_accuracy"] <= 1
    assert small.is_file() and not fashion_judge.WEIGHTS.exists()
    again, info_again = fashion_judge.load_judge(small_fashion, images_limit=12)  # loaded, not trained again
    assert info_again == info
    seg = ImageSegment(28, 28, 1, bytes(28 * 28))
    assert fashion_judge.judge(net, [seg]) == fashion_judge.judge(again, [seg])
    with pytest.raises(SystemExit, match="at least one training image"):
        fashion_judge.load_judge(small_fashion, images_limit=0)


def test_image_probe_reads_each_tasks_targets_from_the_text():
    assert image_encoder_probe.labels("clocks", "What time is it?\nAnswer: 3:07\n") == [3, 7]
    caption = "How many of each shape are there?\nAnswer: circles 1, squares 0, triangles 2, diamonds 0\n"
    assert image_encoder_probe.labels("shapes", caption) == [1, 0, 2, 0]
    assert image_encoder_probe.labels("shapes", "How many circles?\nAnswer: 2\n") is None
    name = fashion_mod.CLASSES[3]
    assert image_encoder_probe.labels("fashion", f"What is this?\nAnswer: {name}\n") == [3]
    assert image_encoder_probe.labels("fashion", "nothing here") is None


def test_scoring_refuses_a_missing_run_or_text_data_before_any_work(tmp_path, monkeypatch, capsys):
    fake_run(tmp_path / "run", tmp_path, steps=2)
    for argv, what in (([str(tmp_path / "run"), "--text-data", str(tmp_path)], "is not a finished run"),
                       ([str(tmp_path / "nowhere"), "--text-data", str(tmp_path)], "is not a finished run")):
        monkeypatch.setattr("sys.argv", ["multimodal_run", *argv])
        with pytest.raises(SystemExit):
            multimodal_run.main()
        assert what in capsys.readouterr().err
    (tmp_path / "run" / "checkpoint").mkdir()
    monkeypatch.setattr("sys.argv", ["multimodal_run", str(tmp_path / "run"), "--text-data", str(tmp_path / "none")])
    with pytest.raises(SystemExit):
        multimodal_run.main()
    assert "is not a prepared dataset" in capsys.readouterr().err


def make_dry_run(*args: str) -> str:
    """The commands `make -n` would run for `args` (nothing runs; setup is taken as done)."""
    out = subprocess.run(["make", "-n", "-o", "setup", "-o", ".venv/.installed", *args], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return " ".join(out.stdout.replace("\\\n", " ").split())  # continuation lines joined, spaces collapsed


def test_make_multimodal_variables_reach_every_command():
    text = make_dry_run("multimodal", "MM_NAME=mmx", "MM_STEPS=7", "MM_TASKS=clocks:5",
                        "MM_SCORE_ARGS=--limit 1", "MM_RESULTS=/tmp/r.md", "SEED=3")
    assert "--mix kjv:1.0,clocks:5 " in text and "--out data/mmx" in text and "--out data/mmx-text" in text
    assert "echo 7 > data/mmx.steps" in text and "--steps-for" in text  # the probe only without MM_STEPS
    assert "--out runs/mmx-cpu-s3" in text and "--data data/mmx " in text and "--train.seed 3" in text
    assert "benchmarks.multimodal_run runs/mmx-cpu-s3 --text-data data/mmx-text --results /tmp/r.md --limit 1" in text
    smoke = make_dry_run("multimodal-smoke")
    assert "MM_NAME=mm-smoke" in smoke and "MM_STEPS=4" in smoke and "--judge-images" in smoke
    assert "benchmarks/results_multimodal.md" not in smoke  # a smoke run never writes the results file
