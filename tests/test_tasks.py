"""Generated task suites: determinism, the prompt/answer layout, task datasets, per-modality bpb
and task evaluation end to end on a tiny untrained model."""

from __future__ import annotations

import gzip
import json
import shutil
import struct

import numpy as np
import pytest
import torch

from omnibyte.data import BatchLoader, ShardDataset, eval_batches
from omnibyte.data.modality import ANSWER_AUX
from omnibyte.data.tasks import (
    ANSWER_PREFIX,
    build_mix,
    build_task,
    parse_mix,
    parse_task_opts,
    prepare_tasks,
    read_heldout,
    split_seed,
    task_examples,
)
from omnibyte.data.tasks import fashion as fashion_mod
from omnibyte.data.tasks.shapes import Shape
from omnibyte.data.tasks.speech import DIGITS
from omnibyte.errors import OmnibyteError
from omnibyte.eval import bits_per_byte, metrics
from omnibyte.eval.multimodal import (
    ExampleResult,
    bpb_by_modality,
    evaluate_task,
    judge_draws,
    modality_batches,
    modality_labels,
    run_examples,
    score_examples,
    span_bits,
)
from omnibyte.eval.report import question_of
from omnibyte.format import BOA, BOI, BOS, EOA, EOI, EOS, AudioSegment, Document, ImageSegment, TextSegment, decode
from omnibyte.models.registry import build_model

SMALL = {"clocks": {"size": 16}, "shapes": {"size": 16, "max_shapes": 3}, "completion": {"source": "shapes",
                                                                                       "size": 16}}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def small(*names: str) -> dict:
    return {k: dict(SMALL[k]) for k in names}


def write_idx(path, array: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fake_fashion(tmp_path_factory):
    """A 40-image Fashion-MNIST lookalike in both splits (tests never need the real one)."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for images, labels in fashion_mod.FILES.values():
        write_idx(root / f"{images}.gz", rng.integers(0, 256, size=(40, 28, 28)))
        write_idx(root / f"{labels}.gz", np.arange(40) % 10)
    return str(root)


def task_opts(name: str, fake_fashion: str) -> dict:
    if name == "fashion":
        return {"root": fake_fashion}
    return dict(SMALL.get(name, {}))


def doc_bytes(name: str, n: int, seed: int, opts: dict) -> list[bytes]:
    return [np.asarray(ex.document().ids(), np.uint16).tobytes() for ex in task_examples(name, n, seed, **opts)]


@pytest.mark.parametrize("name", ["clocks", "shapes", "fashion", "completion",
                                  pytest.param("speech", marks=needs_espeak)])
def test_generators_are_deterministic(name, fake_fashion):
    opts = task_opts(name, fake_fashion)
    n = 2 if name == "speech" else 6
    first = doc_bytes(name, n, 0, opts)
    assert first == doc_bytes(name, n, 0, opts)
    assert first != doc_bytes(name, n, 1, opts)
    assert len(set(first)) == n  # examples differ from each other too
    # example i depends on (seed, i) only: a longer run starts with the same examples
    if name != "speech":
        assert doc_bytes(name, n + 3, 0, opts)[:n] == first


@pytest.mark.parametrize("name", ["clocks", "shapes", "fashion", "completion"])
def test_layout_answer_start(name, fake_fashion):
    for ex in task_examples(name, 8, 3, **task_opts(name, fake_fashion)):
        ids = ex.document().ids()
        kind = ex.meta["kind"]
        if kind in ("clock", "count", "point", "classify"):
            # question, media, "Answer: " | answer "\n" EOS
            assert bytes(ids[ex.answer_start - len(ANSWER_PREFIX):ex.answer_start]).decode() == ANSWER_PREFIX
            assert bytes(ids[ex.answer_start:-1]).decode() == ex.meta["answer"] + "\n"
            assert isinstance(decode(ids).segments[1], ImageSegment)
        elif kind == "draw":
            assert ids[ex.answer_start] == BOI and ids[-2] == EOI
            assert bytes(ids[1:ex.answer_start]).decode() == ex.meta["prompt"]
            assert ex.meta["counterfactual"] != ex.meta["prompt"]
        else:  # complete: the answer starts at the first pixel of row height // 2
            seg = decode(ids).segments[1]
            row = seg.width * seg.channels
            boi = ids.index(BOI)
            assert ex.answer_start == boi + 6 + ex.meta["top_rows"] * row
            assert bytes(ids[ex.answer_start:-2]) == seg.pixels[ex.meta["top_rows"] * row:]


@pytest.mark.parametrize("name", ["clocks", "shapes", "fashion"])
def test_question_last_puts_the_question_between_media_and_answer(name, fake_fashion):
    opts = {**task_opts(name, fake_fashion), "question_last": True}
    if name == "fashion":
        opts["draw"] = 0.0
    plain = list(task_examples(name, 6, 3, **{**opts, "question_last": False}))
    for ex, ref in zip(task_examples(name, 6, 3, **opts), plain):
        ids, ref_ids = ex.document().ids(), ref.document().ids()
        segs, ref_segs = decode(ids).segments, decode(ref_ids).segments
        assert isinstance(segs[0], ImageSegment) and segs[0] == ref_segs[1]  # same image, now first
        question = ref_segs[0].data
        # BOS, image, "question\nAnswer: " | answer "\n" EOS; same length, same answer position
        assert len(ids) == len(ref_ids) and ex.answer_start == ref.answer_start
        assert bytes(ids[ex.answer_start - len(question) - len(ANSWER_PREFIX):ex.answer_start]) == (
            question + ANSWER_PREFIX.encode())
        assert bytes(ids[ex.answer_start:-1]).decode() == ex.meta["answer"] + "\n"
        r = ExampleResult(record={"answer_start": ex.answer_start, **ex.meta}, ids=list(ids))
        assert question_of(r) == question.decode().strip()


def test_clock_answers_and_shape_geometry():
    for ex in task_examples("clocks", 20, 0, **SMALL["clocks"]):
        h, m = ex.meta["hour"], ex.meta["minute"]
        assert 1 <= h <= 12 and 0 <= m <= 59 and ex.meta["answer"] == f"{h:02d}:{m:02d}"
    for ex in task_examples("shapes", 30, 0, size=40):
        shapes = [Shape.from_dict(s) for s in ex.meta["shapes"]]
        for i, a in enumerate(shapes):  # inside the canvas and not overlapping
            assert a.r < a.x < 40 - a.r and a.r < a.y < 40 - a.r
            assert all(np.hypot(a.x - b.x, a.y - b.y) > a.r + b.r for b in shapes[i + 1:])
        if ex.meta["kind"] == "count":
            assert ex.meta["count"] == sum(s.kind == ex.meta["shape"] for s in shapes)
        else:
            t = ex.meta["targets"]
            assert ("<points " if len(t) > 1 else "<point ") in ex.meta["answer"]
            assert all(d["kind"] == t[0]["kind"] and d["colour"] == t[0]["colour"] for d in t)


@pytest.mark.parametrize("point", [0.0, 1.0])
def test_shapes_follow_up_questions(point):
    opts = {**SMALL["shapes"], "max_shapes": 4, "point": point, "question_last": True}
    single = list(task_examples("shapes", 12, 0, **opts))
    asked = 0
    for ex, one in zip(task_examples("shapes", 12, 0, **opts, questions=4), single):
        ids = ex.document().ids()
        # the first question and everything before its answer are those of the one-question example
        assert ids[:ex.answer_start] == one.document().ids()[:one.answer_start] and ex.meta == one.meta
        assert one.prompts == [] and bytes(ids[ex.answer_start:-1]).startswith(ex.meta["answer"].encode() + b"\n")
        shapes = [Shape.from_dict(d) for d in ex.meta["shapes"]]
        seen = {ex.meta["shape"]} if point == 0 else {(ex.meta["targets"][0]["colour"], ex.meta["targets"][0]["kind"])}
        others = 3 if point == 0 else len({(s.colour, s.kind) for s in shapes}) - 1  # kinds or groups not asked
        assert len(ex.prompts) == min(3, others)
        ends = [a for a, _ in ex.prompts[1:]] + [len(ids) - 1]
        for (a, b), end in zip(ex.prompts, ends):
            question = bytes(ids[a:b]).decode()
            assert question.endswith("\n" + ANSWER_PREFIX) and ids[a - 1] == ord("\n")
            answer = bytes(ids[b:end]).decode()
            assert answer.endswith("\n") and "\n" not in answer[:-1]
            if point == 0:
                kind = question.removeprefix("How many ").split("s are there?")[0]
                assert answer == f"{sum(s.kind == kind for s in shapes)}\n" and kind not in seen
                seen.add(kind)
            else:
                colour, kind = question.removeprefix("Point to the ").split(".")[0].split(" ")
                group = (colour, kind.removesuffix("s"))
                targets = [s for s in shapes if (s.colour, s.kind) == group]
                assert targets and group not in seen and answer.count("x") == len(targets)  # one x per point
                assert all(f"{100 * s.x / 16:.1f}" in answer for s in targets)
                seen.add(group)
            asked += 1
    assert asked > 12


@pytest.mark.parametrize("point", [0.0, 1.0])
def test_shapes_describe_counts_every_kind(point):
    opts = {**SMALL["shapes"], "max_shapes": 4, "point": point, "question_last": True}
    for ex, one in zip(task_examples("shapes", 10, 1, **opts, describe=True), task_examples("shapes", 10, 1, **opts)):
        ids = ex.document().ids()
        assert ids[:ex.answer_start] == one.document().ids()[:one.answer_start] and ex.meta == one.meta
        (a, b), = ex.prompts
        assert bytes(ids[a:b]).decode() == "How many of each shape are there?\n" + ANSWER_PREFIX
        shapes = [Shape.from_dict(d) for d in ex.meta["shapes"]]
        kinds = ("circle", "square", "triangle", "diamond")
        want = ", ".join(f"{k}s {sum(s.kind == k for s in shapes)}" for k in kinds)
        assert bytes(ids[b:-1]).decode() == want + "\n"


def test_shapes_locate_points_at_every_shape():
    opts = {**SMALL["shapes"], "max_shapes": 4, "question_last": True}
    for ex, one in zip(task_examples("shapes", 10, 2, **opts, describe=True, locate=True),
                       task_examples("shapes", 10, 2, **opts)):
        ids = ex.document().ids()
        assert ids[:ex.answer_start] == one.document().ids()[:one.answer_start] and ex.meta == one.meta
        (_, b1), (a, b) = ex.prompts  # the counts, then the points
        assert bytes(ids[a:b]).decode() == "Point to every shape.\n" + ANSWER_PREFIX
        answer = bytes(ids[b:-1]).decode()
        assert answer.endswith("\n") and "\n" not in answer[:-1]
        shapes = sorted((Shape.from_dict(d) for d in ex.meta["shapes"]), key=lambda s: s.x)
        points = metrics.parse_points(answer)
        assert len(points) == len(shapes)
        for (x, y), s in zip(points, shapes):
            assert s.contains(x * 16 / 100, y * 16 / 100)
            assert f'alt="{s.colour} {s.kind}"' in answer


def test_follow_up_questions_are_prompt_in_the_answer_marks(tmp_path):
    out = tmp_path / "shapes"
    build_task("shapes", out, n=20, seed=0, **{**SMALL["shapes"], "point": 0.0, "questions": 3})
    data = ShardDataset(out)
    for split in ("train", "val"):
        stream, marks = np.asarray(data.stream(split)), np.asarray(data.aux(split, ANSWER_AUX))
        for s, e in zip(np.flatnonzero(stream == BOS), np.flatnonzero(stream == EOS)):
            eoi = s + int(np.flatnonzero(stream[s:e] == EOI)[-1])
            text = bytes(stream[eoi + 1:e].tolist()).decode()
            marked = bytes(t for t, m in zip(stream[s:e + 1], marks[s:e + 1]) if m and t < 256).decode()
            answers = [line.removeprefix(ANSWER_PREFIX) for line in text.split("\n") if line.startswith(ANSWER_PREFIX)]
            assert len(answers) == 3 and marked == "".join(a + "\n" for a in answers)  # answers only, EOS too
            assert marks[e] == 1
    for r in read_heldout(out):  # the scored answer is the first question's
        assert len(r["prompts"]) == 2 and r["answer"] == str(r["count"])
    with pytest.raises(OmnibyteError, match="questions must be in 1..8"):
        build_task("shapes", tmp_path / "bad", n=2, questions=0)


def test_shapes_are_drawn_where_the_geometry_says():
    ex = next(ex for ex in task_examples("shapes", 40, 2, size=40) if len(ex.meta["shapes"]) >= 2)
    seg = decode(ex.document().ids()).segments[1]
    px = np.frombuffer(seg.pixels, np.uint8).reshape(40, 40, 3).astype(int)
    background = px[0, 0]
    for d in ex.meta["shapes"]:
        s = Shape.from_dict(d)
        centre = px[int(s.y), int(s.x)]
        assert np.abs(centre - background).sum() > 60  # the centre pixel has the shape's colour


def test_read_idx_rejects_corrupt_files(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(OmnibyteError, match="promises 7840 bytes"):
        fashion_mod.read_idx(bad)
    bad.write_bytes(b"PK\x03\x04")
    with pytest.raises(OmnibyteError, match="not an idx-ubyte"):
        fashion_mod.read_idx(bad)
    with pytest.raises(OmnibyteError, match="dataset-fashion-mnist"):
        list(task_examples("fashion", 2, 0, root=str(tmp_path)))


@needs_espeak
def test_speech_clip_and_transcript():
    ex, = task_examples("speech", 1, 5, languages=["fr"], phrases=0.0, max_digits=2)
    seg = decode(ex.document().ids()).segments[1]
    assert isinstance(seg, AudioSegment) and seg.sample_rate == 8000
    assert 0.15 < seg.n_samples / 8000 < 3.0  # silence trimmed, a few words long
    words = ex.meta["answer"].split()
    assert 1 <= len(words) <= 2 and set(words) <= set(DIGITS["fr"])
    assert ex.meta["language"] == "fr" and ex.meta["voice"].startswith("fr")


def test_task_dataset_builds_and_loads(tmp_path):
    out = tmp_path / "clocks"
    meta = build_task("clocks", out, n=30, seed=0, size=16)
    assert json.loads((out / "tasks.json").read_text())["tasks"]["clocks"]["options"]["size"] == 16
    records = read_heldout(out)
    assert len(records) == meta["splits"]["val"]["n_docs"] == 3  # 10 % held out, all from the task
    stream = ShardDataset(out).stream("val")
    for r in records:
        doc = [int(t) for t in stream[r["start"]:r["start"] + r["length"]]]
        assert doc[0] == BOS and doc[-1] == EOS
        assert bytes(doc[r["answer_start"]:-1]).decode() == r["answer"] + "\n"
    batch = BatchLoader(out, "train", batch_size=2, seq_len=64, seed=0).get_batch(0)
    assert batch["ids"].shape == (2, 65)
    # rebuilding gives identical files; another seed gives other examples
    again = tmp_path / "again"
    build_task("clocks", again, n=30, seed=0, size=16)
    for f in ("train-00000.bin", "val-00000.bin", "heldout.jsonl"):
        assert (out / f).read_bytes() == (again / f).read_bytes()
    build_task("clocks", again, n=30, seed=1, size=16)
    assert (out / "train-00000.bin").read_bytes() != (again / "train-00000.bin").read_bytes()


def docs_in(path, split: str) -> list[bytes]:
    ids = np.asarray(ShardDataset(path).stream(split))
    return [ids[s:e + 1].tobytes() for s, e in zip(np.flatnonzero(ids == BOS), np.flatnonzero(ids == EOS))]


def test_val_and_test_examples_come_from_seeds_and_images_of_their_own(tmp_path, fake_fashion):
    out = tmp_path / "mix"
    opts = {**small("clocks"), "fashion": {"root": fake_fashion, "draw": 0.0}}
    meta = build_mix("clocks:12,fashion:10", out, seed=0, heldout={"fashion": 20}, task_opts=opts)
    assert set(meta["splits"]) == {"train", "val", "test"}
    assert meta["heldout"] == {"val": {"clocks": 1, "fashion": 20}, "test": {"clocks": 1, "fashion": 20}}
    train, val, test = (set(docs_in(out, s)) for s in ("train", "val", "test"))
    assert len(train) == 22 and len(val) == len(test) == 21 and not (train & val or train & test or val & test)
    # each split's examples are the generator's under that split's seed
    want = doc_bytes("clocks", 1, split_seed(0, "test"), small("clocks")["clocks"])
    assert set(want) <= test
    for split in ("val", "test"):
        records = read_heldout(out, split=split)
        assert {r["split"] for r in records} == {split} and len(records) == 21
    # Fashion-MNIST: held-out images are the official test images, val and test one half each, and
    # held out examples are the default generator's (half of them draw) whatever the training share
    test_images, _ = fashion_mod.load_split(fake_fashion, "test")
    halves = [fashion_mod.load_split(fake_fashion, h)[0] for h in fashion_mod.HALVES]
    assert [len(h) for h in halves] == [20, 20]
    as_bytes = [{img.tobytes() for img in h} for h in halves]
    assert not as_bytes[0] & as_bytes[1] and as_bytes[0] | as_bytes[1] == {img.tobytes() for img in test_images}
    stream = {s: ShardDataset(out).stream(s) for s in ("val", "test")}
    for split, half in zip(("val", "test"), as_bytes):
        records = read_heldout(out, "fashion", split)
        assert {r["kind"] for r in records} == {"classify", "draw"}
        for r in records:
            doc = [int(t) for t in stream[split][r["start"]:r["start"] + r["length"]]]
            pixels = bytes(doc[doc.index(BOI) + 6:doc.index(EOI)])
            assert pixels in half
    with pytest.raises(OmnibyteError, match="trains on split train"):
        build_mix("fashion:4", tmp_path / "bad", task_opts={"fashion": {"root": fake_fashion, "split": "test"}})
    with pytest.raises(OmnibyteError, match="heldout-val split has 20 images"):
        build_mix("fashion:4", tmp_path / "bad", heldout=21, task_opts={"fashion": {"root": fake_fashion}})
    with pytest.raises(OmnibyteError, match="held-out counts given for speech"):
        build_mix("fashion:4", tmp_path / "bad", heldout={"speech": 3}, task_opts={"fashion": {"root": fake_fashion}})


def test_a_dataset_built_before_the_test_split_reads_as_val(tmp_path):
    out = tmp_path / "old"
    build_task("clocks", out, n=10, seed=0, size=16)
    file = out / "heldout.jsonl"
    old = [json.loads(line) for line in file.read_text().splitlines()]
    file.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n"
                            for r in old if r["split"] == "val"))
    assert len(read_heldout(out)) == 1
    with pytest.raises(OmnibyteError, match="built before task datasets had a test split"):
        read_heldout(out, split="test")
    with pytest.raises(OmnibyteError, match="val and test splits, not 'train'"):
        read_heldout(out, split="train")


def test_text_in_a_mix_holds_out_val_and_test_chapters(tmp_path, monkeypatch):
    from omnibyte.data import corpus

    bible = "".join(f"Ge{c}:{v} verse {v} of chapter {c}\n" for c in range(1, 61) for v in range(1, 3))
    monkeypatch.setattr(corpus, "kjv_text", lambda: bible)
    build_mix("kjv:0.5,clocks:4", tmp_path / "mix", seed=0, task_opts=small("clocks"))
    build_mix("kjv:0.5", tmp_path / "text", seed=0)

    def text(path, split):
        return {d for d in docs_in(path, split) if not np.any(np.frombuffer(d, np.uint16) == BOI)}

    for split in ("train", "val", "test"):
        assert text(tmp_path / "mix", split) == text(tmp_path / "text", split)  # the text baseline's data
    train, val, test = (text(tmp_path / "text", s) for s in ("train", "val", "test"))
    assert len(val) == len(test) == 3 and len(train) == 27  # 5 % of 60 each; half of the other 54
    assert not (train & val or train & test or val & test)


def test_prepare_and_eval_commands_take_held_out_splits(tmp_path, capsys):
    from omnibyte.cli import main

    out = tmp_path / "clocks"
    assert main(["prepare", "--task", "clocks", "--n", "6", "--heldout", "2", "--task-opt", "size=16",
                 "--out", str(out)]) == 0
    assert "held-out examples: val clocks 2; test clocks 2" in capsys.readouterr().out
    assert main(["prepare", "--task", "clocks", "--val-fraction", "0.2", "--out", str(out)]) == 2
    assert "--heldout" in capsys.readouterr().err
    assert main(["prepare", "--mix", "clocks:6", "--heldout", "clocks:x", "--out", str(out)]) == 2
    assert "TASK:COUNT" in capsys.readouterr().err
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": 16, "n_layers": 1, "n_heads": 2})
    model.save_pretrained(tmp_path / "m")
    assert main(["eval", str(tmp_path / "m"), "--task", "clocks", "--data", str(out), "--split", "test",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "test" and result["metrics"]["clock"]["n"] == 2


def test_unknown_task_and_bad_options(tmp_path):
    with pytest.raises(OmnibyteError, match="unknown task 'clock'"):
        build_task("clock", tmp_path / "x", n=5)
    with pytest.raises(OmnibyteError, match="unknown config key 'clocks.colour'"):
        build_task("clocks", tmp_path / "x", n=5, colour="red")
    with pytest.raises(OmnibyteError, match="clock size"):
        build_task("clocks", tmp_path / "x", n=5, size=4)


def test_parse_mix_and_options():
    assert parse_mix("kjv:0.3, clocks:2000,speech:10") == [("kjv", 0.3), ("clocks", 2000.0), ("speech", 10.0)]
    for bad, msg in [("clocks", "needs an amount"), ("clocks:1.5", "whole number"), ("kjv:1.5", "text share"),
                     ("cats:3", "unknown mix entry"), ("clocks:2,clocks:3", "twice"), ("", "empty")]:
        with pytest.raises(OmnibyteError, match=msg):
            parse_mix(bad)
    assert parse_task_opts(["size=48", "mode=gray"], ["clocks"]) == {"clocks": {"size": 48, "mode": "gray"}}
    assert parse_task_opts(["speech.languages=['en','fr']"], ["clocks", "speech"]) == {
        "speech": {"languages": ["en", "fr"]}}
    with pytest.raises(OmnibyteError, match="must name its task"):
        parse_task_opts(["size=48"], ["clocks", "shapes"])
    with pytest.raises(OmnibyteError, match="give either"):
        prepare_tasks("x", task="clocks", mix="clocks:3")


def test_mix_holds_the_same_task_examples_with_and_without_text(tmp_path, monkeypatch):
    from omnibyte.data import corpus

    bible = "".join(f"Ge{c}:{v} verse {v} of chapter {c} and more words\n" for c in range(1, 41) for v in range(1, 4))
    monkeypatch.setattr(corpus, "kjv_text", lambda: bible)
    spec = "clocks:12,shapes:12,completion:6"
    with_text = build_mix("kjv:0.5," + spec, tmp_path / "a", seed=0, task_opts=SMALL)
    without = build_mix(spec, tmp_path / "b", seed=0, task_opts=SMALL)
    assert with_text["splits"]["train"]["bytes"]["text"] > without["splits"]["train"]["bytes"]["text"]

    def task_docs(path, splits=("train", "val", "test")):
        ds = ShardDataset(path)
        ids = np.concatenate([np.asarray(ds.stream(s)) for s in splits])
        docs = [ids[s:e + 1].tobytes() for s, e in zip(np.flatnonzero(ids == BOS), np.flatnonzero(ids == EOS))]
        return sorted(d for d in docs if np.any(np.frombuffer(d, np.uint16) == BOI))

    assert task_docs(tmp_path / "a") == task_docs(tmp_path / "b")
    assert len(task_docs(tmp_path / "a", ["train"])) == 30
    assert len(task_docs(tmp_path / "a")) == 30 + 2 * (1 + 1 + 1)  # 10 % of each task held out per split
    # the answer mask: 0 on each example's prompt, 1 on its answer and on every text document
    ds = ShardDataset(tmp_path / "a")
    val, answer = np.asarray(ds.stream("val")), np.asarray(ds.aux("val", ANSWER_AUX))
    records = read_heldout(tmp_path / "a")
    assert records
    in_task = np.zeros(len(val), bool)
    for r in records:
        s, a, n = r["start"], r["answer_start"], r["length"]
        assert not answer[s:s + a].any() and answer[s + a:s + n].all()
        in_task[s:s + n] = True
    assert (~in_task).any() and answer[~in_task].all()  # KJV chapters: all 1
    train_answer = np.asarray(ds.aux("train", ANSWER_AUX))
    assert 0 < train_answer.mean() < 1
    with pytest.raises(OmnibyteError, match="does not hold"):
        build_mix(spec, tmp_path / "c", task_opts={"speech": {}})


# ----------------------------------------------------------------------------- per-modality bpb


def test_modality_labels():
    doc = Document([TextSegment(b"hi"), ImageSegment(2, 1, 1, b"\x01\x02"), TextSegment(b"a"),
                    AudioSegment(8000, 3, 1, b"\x00\x01\x02"), TextSegment(b"!")]).ids()
    labels = modality_labels(doc)
    want = [0, 0, 0] + [1] * 9 + [0] + [2] * 14 + [0, 0]  # BOS h i | BOI hdr px px EOI | a | BOA ... EOA | ! EOS
    assert labels.tolist() == want
    assert doc[3] == BOI and doc[11] == EOI and doc[13] == BOA and doc[26] == EOA
    # a window that starts inside the image block: everything up to its EOI is image
    assert modality_labels(doc[7:])[:6].tolist() == [1, 1, 1, 1, 1, 0]
    # a block cut by the end of the stream runs to the end
    assert modality_labels(doc[:15]).tolist() == want[:15]


def test_bpb_by_modality_adds_up_to_bits_per_byte(tmp_path):
    out = tmp_path / "mix"
    build_mix("clocks:10,completion:10", out, seed=0, heldout=3, task_opts=small("clocks", "completion"))
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4})
    total = bits_per_byte(model, eval_batches(out, "val", 4, 100))
    split = bpb_by_modality(model, modality_batches(out, "val", 4, 100))
    assert split["bytes"] == total["bytes"]
    assert split["nll_bits"] == pytest.approx(total["nll_bits"], rel=1e-5)
    per = split["modalities"]
    assert per["audio"]["bytes"] == 0 and per["image"]["bytes"] > per["text"]["bytes"] > 0
    assert sum(m["nll_bits"] for m in per.values()) == pytest.approx(split["nll_bits"])
    # the labels read from the whole stream agree with the image bytes the dataset counted
    meta = ShardDataset(out).meta["splits"]["val"]["bytes"]
    assert per["image"]["bytes"] == meta["image"] and per["text"]["bytes"] == meta["text"]


# ----------------------------------------------------------------------------- task evaluation


def test_evaluate_task_end_to_end(tmp_path):
    out = tmp_path / "shapes"
    build_task("shapes", out, n=40, seed=0, **SMALL["shapes"])
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4})
    res = evaluate_task(model, out, n=3)
    assert res["n"] <= 6 and set(res["metrics"]) <= {"count", "point"} and res["metrics"]
    for kind, m in res["metrics"].items():
        assert 1 <= m["n"] <= 3
        assert 0 <= (m["accuracy"] if kind == "count" else m["precision"]) <= 1
    with pytest.raises(OmnibyteError, match="no held-out val examples of task 'clocks'"):
        evaluate_task(model, out, task="clocks")
    assert evaluate_task(model, out, n=1, split="test")["split"] == "test"


def test_score_examples_perfect_and_wrong_answers(tmp_path):
    out = tmp_path / "mix"
    build_mix("clocks:20,shapes:30", out, seed=0, heldout=12, task_opts=small("clocks", "shapes"))
    records = read_heldout(out)
    perfect = [ExampleResult(r, [], prediction=r["answer"]) for r in records]
    scores = score_examples(perfect)
    assert scores["clock"]["exact"] == 1 and scores["count"]["accuracy"] == 1
    assert scores["point"]["precision"] == 1 and scores["point"]["recall"] == 1
    wrong = [ExampleResult(r, [], prediction="") for r in records]
    scores = score_examples(wrong)
    assert scores["clock"]["within"] == 0 and scores["clock"]["parsed"] == 0
    assert scores["point"]["recall"] == 0 and scores["count"]["accuracy"] == 0


def test_drawings_are_sampled_whole_and_judged(tmp_path, fake_fashion):
    out = tmp_path / "fashion"
    build_task("fashion", out, n=4, seed=0, heldout=8, root=fake_fashion)
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": 16, "n_layers": 1, "n_heads": 2})
    results = run_examples(model, out, draws=3, seed=1)
    draws = [r for r in results if r.kind == "draw"]
    assert len(draws) >= 3 and all(r.drawn is None for r in draws[3:])
    drawn = [r.drawn for r in draws[:3]]
    assert all((d.width, d.height, d.channels, len(d.pixels)) == (28, 28, 1, 784) for d in drawn)
    assert len({d.pixels for d in drawn}) == 3  # the same prompt still gives other images
    again = run_examples(model, out, draws=3, seed=1)
    assert [r.drawn for r in again if r.drawn is not None] == drawn  # seeded
    judge_draws(results, lambda segs: [0] * len(segs))
    scores = score_examples(results)["draw"]
    want = np.mean([r.record["label"] == 0 for r in draws[:3]])
    assert scores["judged"] == pytest.approx(want) and scores["judged_n"] == 3 and scores["chance_judged"] == 0.1


def test_transcripts_are_also_scored_per_language():
    recs = [({"kind": "transcribe", "answer": "one two", "language": "en"}, "one two"),
            ({"kind": "transcribe", "answer": "three", "language": "en"}, "tree"),
            ({"kind": "transcribe", "answer": "deux", "language": "fr"}, "")]
    scores = score_examples([ExampleResult(r, [], prediction=p) for r, p in recs])["transcribe"]
    assert scores["wer_en"] == pytest.approx(1 / 3) and scores["wer_fr"] == 1 and scores["n_fr"] == 1
    assert scores["cer_en"] == pytest.approx(1 / 12)  # "tree" for "three": one deletion in 7 + 5 characters
    assert scores["wer"] == pytest.approx(2 / 4)
    alone = score_examples([ExampleResult(r, [], prediction=p) for r, p in recs[:2]])["transcribe"]
    assert "wer_en" not in alone  # one language: the totals say it all


def test_text_answers_also_get_their_bits_given_the_prompt(tmp_path):
    out = tmp_path / "clocks"
    build_task("clocks", out, n=4, seed=0, heldout=3, size=16)
    torch.manual_seed(0)
    model = build_model("transformer", {"dim": 16, "n_layers": 1, "n_heads": 2})
    results = run_examples(model, out)
    for r in results:
        start = r.record["answer_start"]
        (bits, n), = span_bits(model, [(r.ids, start, start + 6)])  # "HH:MM\n"
        assert r.answer_bytes == n == 6 and r.answer_bits == pytest.approx(bits, rel=1e-4)
    want = sum(r.answer_bits for r in results) / sum(r.answer_bytes for r in results)
    assert score_examples(results)["clock"]["answer_bpb"] == pytest.approx(want)
