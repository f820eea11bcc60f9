"""`omnibyte bench`: the quick preset end to end, reuse of finished runs, options, presets from TOML,
the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_text_dataset

from omnibyte.bench import (
    ARCH,
    MODELS,
    Bench,
    arch_available,
    available_memory,
    fit_jobs,
    load_preset,
    markdown_table,
    parse_budgets,
    parse_models,
    run_memory,
)
from omnibyte.bench.presets import PRESET_DIR
from omnibyte.cli import main
from omnibyte.data.tasks.cute import write_cute
from omnibyte.errors import OmnibyteError

WORDS = ["cat", "banana", "dog", "house", "zebra", "apple", "quiz", "river", "stone", "melon", "tiger", "plum"]


def test_parse_options():
    assert parse_budgets("1e13, 3e13") == (1e13, 3e13)
    assert parse_models("bpe,transformer") == ("bpe", "transformer")
    with pytest.raises(OmnibyteError, match="--budgets"):
        parse_budgets("1e13,lots")
    with pytest.raises(OmnibyteError, match="--budgets"):
        parse_budgets("-1")
    with pytest.raises(OmnibyteError, match="unknown bench model"):
        parse_models("transformer,gpt5")


def test_preset_from_a_toml_path(tmp_path, capsys):
    text = (PRESET_DIR / "quick.toml").read_text()
    assert load_preset(PRESET_DIR / "quick.toml") == load_preset("quick")
    mine = tmp_path / "mine.toml"
    mine.write_text(text.replace("budgets = [6e8]", "budgets = [3e8]").replace("bpe_vocab = 320", "bpe_vocab = 300"))
    preset = load_preset(str(mine))
    assert preset.budgets == (3e8,) and preset.bpe_vocab == 300 and preset.transformer["dim"] == 32
    short = tmp_path / "short.toml"
    short.write_text("budgets = [1e9]\n")
    with pytest.raises(OmnibyteError, match="missing batch_size, seq_len"):
        load_preset(short)
    # and on the command line: the sweep runs with the file's values
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    out = tmp_path / "bench"
    rc = main(["bench", "--preset", str(mine), "--data", str(data), "--out", str(out), "--models", "transformer"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    assert summary["preset"]["bpe_vocab"] == 300 and [r["budget"] for r in summary["results"]] == [3e8]


@pytest.mark.parametrize("line, added, name", [("jobs = 1", "epochs = 3", "epochs"),  # a preset field
                                               ("ngrams = {", "ngramz = 1", "blt.ngramz")])  # a model's
def test_unknown_key_in_a_preset_file_is_a_one_line_error(tmp_path, capsys, line, added, name):
    bad = tmp_path / "bad.toml"
    bad.write_text((PRESET_DIR / "quick.toml").read_text().replace(line, f"{added}\n{line}", 1))
    with pytest.raises(OmnibyteError, match=f"unknown config key '{name}'") as e:
        load_preset(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert main(["bench", "--preset", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"unknown config key '{name}'" in err and not (tmp_path / "b").exists()


def test_a_preset_with_a_base_overrides_its_keys_and_replaces_its_grid(tmp_path):
    small = load_preset("small")
    (tmp_path / "v.toml").write_text('base = "small"\nbudgets = [1e13]\n[blt]\nlatent = { dim = 96 }\n'
                                     '[grid]\nlr = [1e-3]\n')
    p = load_preset(tmp_path / "v.toml")
    assert tuple(p.budgets) == (1e13,) and p.lr == small.lr and p.transformer == small.transformer
    assert p.blt["latent"]["dim"] == 96 and p.blt["latent"]["n_layers"] == small.blt["latent"]["n_layers"]
    assert p.grid == {"lr": [1e-3]}  # the base's size lists are not inherited
    (tmp_path / "w.toml").write_text('base = "v.toml"\n')  # found beside the file naming it
    with pytest.raises(OmnibyteError, match="no base itself"):
        load_preset(tmp_path / "w.toml")
    (tmp_path / "x.toml").write_text('base = "nope"\n')
    with pytest.raises(OmnibyteError, match="unknown preset 'nope'"):
        load_preset(tmp_path / "x.toml")


def test_unknown_preset_name_lists_the_known_ones(tmp_path, monkeypatch):
    with pytest.raises(OmnibyteError, match=r"unknown preset 'huge' \(known: quick, small; or pass a preset"):
        load_preset("huge")
    with pytest.raises(OmnibyteError, match="preset file not found"):
        load_preset(tmp_path / "missing.toml")
    # installed without the repository's configs/: a name cannot be found, a file still can
    monkeypatch.setattr("omnibyte.bench.presets.PRESET_DIR", tmp_path / "nowhere")
    with pytest.raises(OmnibyteError, match="pass a preset file"):
        load_preset("small")
    assert load_preset(PRESET_DIR / "small.toml").jobs == 2


def test_quick_sweep_end_to_end_and_reuse(tmp_path, capsys):
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    out = tmp_path / "bench"
    rc = main(["bench", "--preset", "quick", "--data", str(data), "--out", str(out), "--budgets", "3e8,6e8"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())
    available = [m for m in MODELS if arch_available(ARCH[m])]
    assert sorted({r["model"] for r in summary["results"]}) == sorted(available)
    assert len(summary["results"]) == 2 * len(available) and not [s for s in summary["skipped"] if "failed" in s]
    for r in summary["results"]:
        assert r["train_flops"] <= r["train_flops_all"] <= r["budget"] and r["steps"] >= 1 and r["params"] > 0
        assert 0 < r["val_bpb"] < 12 and 0 < r["test_bpb"] < 12 and r["infer_flops_per_byte"] > 0
        assert 0 < r["mfu"] < 1 and r["dtype"] in ("fp32", "bf16")
        # only BLT-entropy pays for something besides its own training: its entropy model
        assert (r["entropy_flops"] > 0) == (r["model"] == "blt-entropy")
        assert r["train_flops_all"] == pytest.approx(r["train_flops"] + r["entropy_flops"])
    by = {(r["model"], r["budget"]): r for r in summary["results"]}
    # the entropy model's cost comes out of BLT-entropy's budget: fewer steps than space patching's
    # (the same model, the same FLOPs per byte)
    assert by[("blt-entropy", 6e8)]["steps"] < by[("blt-space", 6e8)]["steps"]
    # twice the budget: about twice the steps (the BPE model's are per token)
    assert by[("transformer", 6e8)]["steps"] in (2 * by[("transformer", 3e8)]["steps"],
                                                 2 * by[("transformer", 3e8)]["steps"] + 1)
    # the BPE model is scored on the same validation and test bytes as the byte model
    assert by[("bpe", 3e8)]["val_bytes"] == by[("transformer", 3e8)]["val_bytes"]
    assert by[("bpe", 3e8)]["test_bytes"] == by[("transformer", 3e8)]["test_bytes"] > 0
    table = (out / "results.md").read_text()
    assert ("| model | run | params | train FLOPs (own) | train FLOPs (all in) | inference FLOPs/byte | steps | "
            "wall time | peak memory | MFU | val bpb | test bpb |") in table
    assert table.count("| transformer |") == 2 and "bytes per token" in table and table in printed
    png = (out / "bpb_vs_flops.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # finished runs keep their weights, not the optimizer state that served only to resume them
    for r in summary["results"]:
        ckpt = Path(r["run"]) / "checkpoint"
        assert (ckpt / "model.safetensors").is_file() and not (ckpt / "trainer.pt").exists()

    # a second run reuses every finished run (same records, nothing retrained)
    before = {r["run"]: r["wall_s"] for r in summary["results"]}
    stamp = (out / "runs" / "transformer-3e08" / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    assert main(["bench", "--preset", "quick", "--data", str(data), "--out", str(out), "--budgets", "3e8,6e8",
                 "--models", "transformer"]) == 0
    again = json.loads((out / "results.json").read_text())["results"]
    assert {r["run"]: r["wall_s"] for r in again} == {k: v for k, v in before.items() if "/transformer-" in k}
    assert (out / "runs" / "transformer-3e08" / "checkpoint" / "model.safetensors").stat().st_mtime_ns == stamp
    # and a reused BLT run still gets its patching notes: entropy calibrated to space's mean length
    assert "BLT entropy patching" in table
    assert main(["bench", "--preset", "quick", "--data", str(data), "--out", str(out), "--budgets", "3e8",
                 "--models", "blt-space,blt-entropy"]) == 0
    notes = (out / "results.md").read_text()
    assert "BLT space patching" in notes and "BLT entropy patching" in notes
    info = json.loads((out / "runs" / "entropy-model" / "bench.json").read_text())
    space = json.loads((out / "results.json").read_text())["space_bytes_per_patch"]
    assert info["target_bytes_per_patch"] == space and abs(info["bytes_per_patch"] - space) / space < 0.25

    # a changed preset does not reuse a stale run: the model is trained again as the preset says now
    preset = load_preset("quick")
    preset.transformer = {**preset.transformer, "n_layers": 2}
    logs: list[str] = []
    Bench(out, data=str(data), preset=preset, budgets=(3e8,), models=("transformer",), log=logs.append).run()
    assert any("training it again" in line for line in logs), logs
    saved = json.loads((out / "runs" / "transformer-3e08" / "run.json").read_text())
    assert saved["model"]["n_layers"] == 2
    # so does a changed training setting that changes what is learned
    preset.lr, logs[:] = 0.004, []
    Bench(out, data=str(data), preset=preset, budgets=(3e8,), models=("transformer",), log=logs.append).run()
    assert any("training it again" in line for line in logs), logs
    saved = json.loads((out / "runs" / "transformer-3e08" / "run.json").read_text())
    assert saved["train"]["lr"] == 0.004


def test_sweep_on_tasks_with_any_text_val_and_noise(tmp_path, capsys):
    write_cute(tmp_path / "cute", WORDS * 3, n_train=300, n_heldout=14, heldout_fraction=0.25, seed=0)
    val = tmp_path / "val.txt"
    val.write_text("Spell: river\nAnswer: r i v e r\n" * 5)
    out = tmp_path / "bench"
    rc = main(["bench", "--preset", "quick", "--data", str(tmp_path / "cute"), "--out", str(out),
               "--models", "transformer,bpe", "--task", "cute", "--val", str(val), "--noise"])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["model"] for r in results] == ["transformer", "bpe"]
    for r in results:
        assert r["val_bytes"] == len(val.read_bytes())
        assert r["task_n"] == 14 and 0 <= r["task_accuracy"] <= 1
        assert set(r["noise"]) == {"random_case", "drop", "repeat", "uppercase", "swap"}
    table = (out / "results.md").read_text()
    assert "task accuracy" in table and "uppercase ×" in table
    # not a task suite: refused before anything is trained
    data = write_text_dataset(tmp_path, n_docs=6, lines=2)
    assert main(["bench", "--preset", "quick", "--data", str(data), "--out", str(tmp_path / "b2"),
                 "--task", "cute"]) == 2
    assert "questions" in capsys.readouterr().err and not (tmp_path / "b2" / "runs").exists()


def test_markdown_table_notes_skips():
    summary = {"data": "d", "val": None, "preset": {"charge_entropy": True}, "results": [
        {"model": "transformer", "name": "transformer-1e09", "budget": 1e9, "params": 12345, "train_flops": 9.9e8,
         "infer_flops_per_byte": 2.5e5, "steps": 10, "wall_s": 3.2, "val_bpb": 2.5}],
        "skipped": ["blt-space: skipped (no module)"]}
    table = markdown_table(summary)
    assert "| transformer | transformer-1e09 | 12.3k | 9.90e+08 | 9.90e+08 | 250k | 10 | 3 s |  | 2.5000 |" in table
    assert "no test split" in table and "- blt-space: skipped (no module)" in table


def test_frontier_chooses_on_val_and_reports_test(tmp_path, capsys):
    """--frontier trains every grid point (quick preset: 2 sizes × 2 learning rates, × 2 vocabularies
    for BPE) and picks, per family and budget, the lowest val bpb; the table reports its test bpb."""
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    out = tmp_path / "bench"
    rc = main(["bench", "--preset", "quick", "--data", str(data), "--out", str(out), "--budgets", "3e8",
               "--models", "transformer,bpe", "--frontier", "--seeds", "0,1"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    repeats = [r for r in summary["results"] if r["name"].endswith("-seed1")]
    results = [r for r in summary["results"] if r not in repeats]
    assert sorted(r["name"] for r in results if r["model"] == "transformer") == [
        "transformer-s0-lr0.003-3e08", "transformer-s0-lr0.01-3e08", "transformer-s1-lr0.003-3e08",
        "transformer-s1-lr0.01-3e08"]
    bpe = [r for r in results if r["model"] == "bpe"]
    assert len(bpe) == 8 and {r["bpe_vocab"] for r in bpe} == {300, 320}
    assert {json.loads((Path(r["run"]) / "run.json").read_text())["model"]["dim"] for r in bpe} == {32, 16}
    assert {r["lr"] for r in bpe} == {3e-3, 1e-2}
    picks = {f["model"]: f for f in summary["frontier"]}
    for model, group in (("transformer", [r for r in results if r["model"] == "transformer"]), ("bpe", bpe)):
        best = min(group, key=lambda r: r["val_bpb"])
        assert picks[model]["name"] == best["name"] and picks[model]["grid_points"] == len(group)
        # the chosen run again at seed 1, the same grid point: its test bpb joins the mean
        again = next(r for r in repeats if r["name"] == best["name"] + "-seed1")
        assert again["seed"] == 1 and again["variant"] == best["variant"] and again["steps"] == best["steps"]
        by_seed = picks[model]["test_by_seed"]
        assert by_seed == {"0": best["test_bpb"], "1": again["test_bpb"]} or by_seed == {0: best["test_bpb"],
                                                                                          1: again["test_bpb"]}
        assert picks[model]["test_mean"] == pytest.approx((best["test_bpb"] + again["test_bpb"]) / 2)
    assert len(repeats) == 2
    table = (out / "results.md").read_text()
    assert "## Frontier" in table and "(of 8)" in table and "(of 4)" in table and "| 0, 1 |" in table
    # --seeds repeats a frontier's choices; a plain sweep has none
    assert main(["bench", "--preset", "quick", "--data", str(data), "--out", str(out), "--seeds", "1"]) == 2
    assert "--frontier" in capsys.readouterr().err
    # a preset without a grid has nothing to search
    preset = load_preset("quick")
    preset.grid = {}
    with pytest.raises(OmnibyteError, match="no grid|has none"):
        Bench(out, data=str(data), preset=preset, frontier=True)


@pytest.mark.parametrize("grid, match", [
    ("[grid]\nsizes = [1]\n", "unknown grid key"),
    ("[grid]\nlr = [0]\n", "grid.lr"),
    ("[grid]\nbpe_vocab = [100]\n", "grid.bpe_vocab"),
    ("[grid]\ntransformer = [{ depth = 3 }]\n", "depth"),
    ("[grid]\nlr = []\n", "non-empty list"),
])
def test_bad_grid_is_a_one_line_error(tmp_path, grid, match):
    text = (PRESET_DIR / "quick.toml").read_text()
    text = text[: text.index("[grid]")] if "[grid]" in text else text
    bad = tmp_path / "bad.toml"
    bad.write_text(text + grid)
    with pytest.raises(OmnibyteError, match=match):
        load_preset(bad)


def test_budget_below_the_entropy_models_cost_is_named(tmp_path):
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    logs: list[str] = []
    summary = Bench(tmp_path / "b", data=str(data), preset="quick", budgets=(1e5,), models=("blt-entropy",),
                    log=logs.append).run()
    assert not summary["results"] and "after paying for its entropy model" in summary["skipped"][0]


def test_parallel_jobs_train_the_same_runs(tmp_path):
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    models = ("transformer", "blt-entropy")
    alone = Bench(tmp_path / "one", data=str(data), preset="quick", budgets=(3e8,), models=models, log=lambda s: None)
    logs: list[str] = []
    together = Bench(tmp_path / "two", data=str(data), preset="quick", budgets=(3e8,), models=models, jobs=2,
                     log=logs.append)
    a = {r["model"]: r for r in alone.run()["results"]}
    b = {r["model"]: r for r in together.run()["results"]}
    assert any("2 at a time" in line for line in logs), logs
    assert sorted(a) == sorted(b) == sorted(models)
    for m in models:  # the same deterministic training, in a worker process or not
        assert b[m]["steps"] == a[m]["steps"] and abs(b[m]["val_bpb"] - a[m]["val_bpb"]) < 1e-6
        # each worker run had a fresh process: its peak memory is its own (torch alone is more than 50 MiB)
        assert b[m]["peak_rss_mib"] > 50
    with pytest.raises(OmnibyteError, match="--jobs"):
        Bench(tmp_path / "bad", data=str(data), preset="quick", jobs=0)


def test_entropy_runs_are_reused_across_processes_and_path_spellings(tmp_path, monkeypatch):
    """Runs trained in worker processes, then the same sweep named by a relative --out: nothing is
    trained again (each process plans a BLT-entropy run with the same exact patch size and the
    entropy model's path is compared resolved)."""
    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    kw = dict(data=str(data), preset="quick", budgets=(3e8, 6e8), models=("blt-entropy",))
    Bench(tmp_path / "b", jobs=2, log=lambda s: None, **kw).run()
    monkeypatch.chdir(tmp_path)
    logs: list[str] = []
    Bench("b", log=logs.append, **kw).run()
    assert not any("again" in line or "training blt" in line for line in logs), logs


def test_parallel_runs_fit_in_memory():
    """`--jobs` runs at a time only while they fit: 12 bytes per parameter plus 0.5 GiB each."""
    per_run = run_memory(353_000_000)  # the small preset's BLT: about 4.4 GiB
    assert 4.3 * 2**30 < per_run < 4.5 * 2**30
    assert fit_jobs(2, per_run, 24 * 2**30) == 2
    assert fit_jobs(2, per_run, 8 * 2**30) == 1
    assert fit_jobs(2, per_run, 2**30) == 1  # one run is always tried
    assert fit_jobs(3, per_run, None) == 3  # unknown memory: as asked
    free = available_memory()
    assert free is None or free > 0


def test_an_interrupted_run_leaves_no_record_and_resumes(tmp_path, monkeypatch):
    """A run stopped part way (SIGTERM to a sweep saves a checkpoint and ends fit() early) is not
    recorded as finished: the next sweep continues it from its checkpoint to the planned steps."""
    from omnibyte.train import Trainer

    data = write_text_dataset(tmp_path, n_docs=30, lines=8)
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, stop_after=None: real_fit(self, stop_after=2))
    kw = dict(data=str(data), preset="quick", budgets=(6e8,), models=("transformer",), log=lambda s: None)
    first = Bench(tmp_path / "b", **kw).run()
    run = tmp_path / "b" / "runs" / "transformer-6e08"
    assert not first["results"] and "stopped at step 2" in first["skipped"][0]
    assert not (run / "bench.json").exists() and (run / "checkpoint" / "trainer.pt").is_file()
    monkeypatch.setattr(Trainer, "fit", real_fit)
    (result,) = Bench(tmp_path / "b", **kw).run()["results"]
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["steps"] == logged[-1] > 2 and logged[0] <= 2  # one run, continued
