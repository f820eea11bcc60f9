"""benchmarks/common.py: the interleaved timing helper and the results-section writer."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

# benchmarks/ is a package run from the repository root (`python -m benchmarks.NAME`), which the
# test runner does not put on the import path: load the module from its file (it imports only the
# standard library at the top)
_spec = importlib.util.spec_from_file_location(
    "benchmarks_common", Path(__file__).resolve().parent.parent / "benchmarks" / "common.py")
common = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def recording_sides(names, calls):
    return {n: (lambda n=n: calls.append(n)) for n in names}


def test_compare_runs_every_side_once_per_round_in_rotating_order():
    calls = []
    t = common.compare(recording_sides("abc", calls), repeats=4, warmup=1)
    assert calls[:3] == list("abc")  # the warm-up: each side once
    rounds = ["".join(calls[3 + 3 * r: 6 + 3 * r]) for r in range(4)]
    assert rounds == ["abc", "bca", "cab", "abc"]
    assert all(len(t[n].samples) == 4 for n in "abc")


def test_two_sides_alternate():
    calls = []
    common.compare(recording_sides("xy", calls), repeats=4, warmup=0)
    assert calls == list("xyyxxyyx")


def test_median_min_max_from_the_clock_and_from_measured_sides():
    now = [0.0]
    durations = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 4.0, 6.0])}

    def side(name):
        def run():
            now[0] += next(durations[name])
            return name.upper()
        return run

    t = common.compare({"a": side("a"), "b": side("b"), "c": lambda: common.Measured(0.5, "own")},
                       repeats=3, warmup=0, clock=lambda: now[0])
    assert t["a"].samples == (3.0, 1.0, 2.0)
    assert (t["a"].median, t["a"].min, t["a"].max) == (2.0, 1.0, 3.0)
    assert (t["b"].median, t["b"].min, t["b"].max) == (5.0, 4.0, 6.0)
    assert t["a"].values == ("A", "A", "A")
    assert t["c"].samples == (0.5, 0.5, 0.5) and t["c"].values == ("own",) * 3
    # b takes 5/3, 4/1, 6/2 times as long as a round by round; 5/2 over the medians
    assert common.speedup(t["a"], t["b"]) == (2.5, 5 / 3, 4.0)
    assert common.fmt_speedup(t["a"], t["b"]) == "2.50× (1.67–4.00×)"
    assert common.fmt_rate(t["a"], 6.0, "{:.0f}") == "3 (2–6)"


def test_write_section_replaces_appends_and_creates(tmp_path):
    f = tmp_path / "results.md"
    common.write_section(f, "one", ["first"], title="Title")
    common.write_section(f, "two", ["second"])
    common.write_section(f, "one", ["first again", "more"])
    assert f.read_text() == ("# Title\n\n<!-- one:start -->\nfirst again\nmore\n<!-- one:end -->\n\n"
                             "<!-- two:start -->\nsecond\n<!-- two:end -->\n")
    assert list(tmp_path.iterdir()) == [f]


def test_write_section_leaves_the_old_file_whole_when_the_write_fails(tmp_path, monkeypatch):
    f = tmp_path / "results.md"
    common.write_section(f, "one", ["kept"])
    before = f.read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        common.write_section(f, "one", ["lost"])
    assert f.read_text() == before
    assert list(tmp_path.iterdir()) == [f]


def test_compare_defaults_to_seven_timed_repeats_after_a_warm_up():
    calls = []
    t = common.compare(recording_sides("ab", calls))
    assert common.REPEATS >= 7
    assert len(calls) == 2 * (common.REPEATS + 1) and len(t["a"].samples) == common.REPEATS
    with pytest.raises(ValueError, match="repeats"):
        common.compare(recording_sides("ab", []), repeats=0)


def test_per_round_table_shows_each_round_its_order_and_ratio():
    t = {"ours": common.Timing((1.0, 2.0), ()), "peer": common.Timing((3.0, 3.0), ())}
    lines = common.per_round_table(t, "peer")
    assert lines[0] == "| round | order | ours (s) | peer (s) | ours / peer speed |"
    assert lines[2] == "| 1 | ours, peer | 1.000 | 3.000 | 3.00× |"
    assert lines[3] == "| 2 | peer, ours | 2.000 | 3.000 | 1.50× |"
    assert common.how_timed(7) == "median (min–max) of 7 interleaved repeats"


def test_count_flops_counts_matrix_products_and_attention():
    torch = pytest.importorskip("torch")
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    assert common.count_flops(lambda: a @ b) == 2 * 4 * 8 * 3
    q = torch.randn(1, 2, 16, 8)
    # scores and weighted values: two products of 16 × 16 × 8 per head
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert common.count_flops(lambda: sdpa(q, q, q)) == 2 * 2 * 2 * 16 * 16 * 8


def test_header_records_the_load_average():
    assert any(line.startswith("- load average") for line in common.header("t"))
    assert common.load_line().startswith("Load average")
