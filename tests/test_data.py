"""Data layer: prepare (files, folders, globs, JSONL, media hooks) -> shards -> batches."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import omnibyte.media
from omnibyte.cli import main
from omnibyte.data import (
    BatchLoader,
    ShardDataset,
    document_from_record,
    eval_batches,
    prepare,
    write_dataset,
)
from omnibyte.data import corpus as corpus_mod
from omnibyte.data.loader import document_windows
from omnibyte.data.prepare import split_text
from omnibyte.errors import OmnibyteError
from omnibyte.format import BOS, EOS, PAD, Document, ImageSegment, TextSegment, encode, split_documents


def docs_of(ds: ShardDataset, split: str = "train") -> list[bytes]:
    """Text of each document in a split's stream (text-only datasets)."""
    return [bytes(d[1:-1]) for d in split_documents(np.asarray(ds.stream(split)))]


def text_docs(n: int) -> list[Document]:
    return [Document([TextSegment(f"document {i}: {'ab' * (i % 7)}\n".encode())]) for i in range(n)]


# ----------------------------------------------------------------------------- prepare


def test_prepare_files_folders_globs(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("bee\n")
    (src / "a.txt").write_text("ay\n")
    (src / "sub" / "c.txt").write_text("sea\n")
    (src / ".hidden").write_text("never\n")
    (tmp_path / "x.md").write_text("ex\n")
    (tmp_path / "y.md").write_text("why\n")
    out = tmp_path / "ds"
    meta = prepare([src, str(tmp_path / "*.md"), src / "a.txt"], out, val_fraction=0)
    # folder sorted and recursed, hidden skipped, glob sorted, a file named twice counted once
    assert docs_of(ShardDataset(out)) == [b"ay\n", b"bee\n", b"sea\n", b"ex\n", b"why\n"]
    train = meta["splits"]["train"]
    assert train["n_docs"] == 5 and train["n_ids"] == 5 * 2 + len("ay\nbee\nsea\nex\nwhy\n")
    assert train["bytes"] == {"text": len("ay\nbee\nsea\nex\nwhy\n"), "image": 0, "audio": 0}
    assert meta["splits"]["val"] == {"shards": [], "n_ids": 0, "n_docs": 0,
                                     "bytes": {"text": 0, "image": 0, "audio": 0}}
    assert meta["vocab_size"] == 263 and meta["dtype"] == "uint16" and meta["seed"] == 0


def test_a_text_dataset_needs_text_ids_only(tmp_path):
    """Without images or audio a byte dataset holds bytes, PAD, BOS and EOS only: a model with fewer
    ids than the format's (an imported BLT's 260) can train on it."""
    from PIL import Image

    (tmp_path / "t.txt").write_text("some text\n")
    Image.new("L", (4, 3)).save(tmp_path / "i.png")
    prepare([tmp_path / "t.txt"], tmp_path / "text", val_fraction=0)
    prepare([tmp_path / "t.txt", tmp_path / "i.png"], tmp_path / "mixed", val_fraction=0)
    assert ShardDataset(tmp_path / "text").vocab_needed == EOS + 1
    assert ShardDataset(tmp_path / "mixed").vocab_needed == 263


def test_non_utf8_bytes_kept_and_long_files_split(tmp_path):
    raw = b"\xff\xfe\x00caf\xc3\n"
    (tmp_path / "raw.bin").write_bytes(raw)
    (tmp_path / "long.txt").write_bytes(b"".join(b"line %02d\n" % i for i in range(30)))  # 8 bytes a line
    prepare([tmp_path / "raw.bin"], tmp_path / "raw", val_fraction=0)
    assert ShardDataset(tmp_path / "raw").stream("train").tolist() == [BOS, *raw, EOS]
    prepare([tmp_path / "long.txt"], tmp_path / "long", val_fraction=0, doc_bytes=20)
    docs = docs_of(ShardDataset(tmp_path / "long"))
    assert len(docs) == 15 and all(len(d) == 16 for d in docs)
    assert b"".join(docs) == (tmp_path / "long.txt").read_bytes()


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"") + b"\n"), max_size=20),
       st.integers(1, 40))
def test_split_text_cuts_at_line_ends(lines, doc_bytes):
    chunks = list(split_text(lines, doc_bytes))
    assert b"".join(chunks) == b"".join(lines)
    assert all(0 < len(c) <= doc_bytes for c in chunks)
    if all(len(line) <= doc_bytes for line in lines):
        assert all(c.endswith(b"\n") for c in chunks)


def test_split_text_keeps_utf8_characters_whole():
    line = ("é" * 10).encode()  # 2 bytes a character
    chunks = list(split_text([line], 5))
    assert all(c.decode() for c in chunks) and b"".join(chunks) == line


def test_jsonl_records_and_segments(tmp_path):
    lines = [{"text": "plain"}, {"segments": [{"text": "one "}, {"text": "two"}]}, {"text": "é"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n\n")
    prepare([tmp_path / "d.jsonl"], tmp_path / "ds", val_fraction=0)
    assert docs_of(ShardDataset(tmp_path / "ds")) == [b"plain", b"one two", "é".encode()]


def test_media_files_and_segments_use_media_hooks(tmp_path, monkeypatch):
    (tmp_path / "pic.png").write_bytes(b"not really a png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"segments": [{"text": "see "}, {"image": "pic.png"}]}))
    with pytest.raises(OmnibyteError, match="pic.png"):
        prepare([tmp_path / "pic.png"], tmp_path / "ds")
    assert not (tmp_path / "ds").exists()

    seen = []

    def fake_image(path):
        seen.append(path)
        return ImageSegment(2, 1, 1, b"\x00\xff")

    monkeypatch.setattr(omnibyte.media, "image_segment_from_path", fake_image)
    meta = prepare([tmp_path / "pic.png", tmp_path / "m.jsonl"], tmp_path / "ds", val_fraction=0)
    assert seen == [tmp_path / "pic.png", tmp_path / "pic.png"]  # JSONL paths are relative to its folder
    assert meta["splits"]["train"]["bytes"] == {"text": 4, "image": 2 * (5 + 2), "audio": 0}
    stream = ShardDataset(tmp_path / "ds").stream("train").tolist()
    image = ImageSegment(2, 1, 1, b"\x00\xff")
    assert stream == encode(Document([image])) + encode(Document([TextSegment(b"see "), image]))


def test_write_dataset_shards_and_split_determinism(tmp_path):
    docs = text_docs(40)
    m1 = write_dataset(docs, tmp_path / "a", sources=["gen"], seed=1, val_fraction=0.2, shard_ids=50)
    m2 = write_dataset(docs, tmp_path / "b", sources=["gen"], seed=1, val_fraction=0.2, shard_ids=50)
    write_dataset(docs, tmp_path / "c", sources=["gen"], seed=2, val_fraction=0.2, shard_ids=50)
    assert m1["splits"] == m2["splits"]
    assert len(m1["splits"]["train"]["shards"]) > 1
    assert all(s["n_ids"] <= 50 for s in m1["splits"]["train"]["shards"])
    a, c = ShardDataset(tmp_path / "a"), ShardDataset(tmp_path / "c")
    assert m1["splits"]["val"]["n_docs"] == m1["splits"]["test"]["n_docs"] == 8
    assert docs_of(a, "val") != docs_of(c, "val")
    # splits keep the original order and together hold every document once
    everything = [d.segments[0].data for d in docs]
    train, val, test = docs_of(a, "train"), docs_of(a, "val"), docs_of(a, "test")
    assert sorted(train + val + test) == sorted(everything)
    for part in (train, val, test):
        assert part == [d for d in everything if d in part]
    shards = m1["splits"]["train"]["shards"]
    assert a.n_ids("train") == len(a.stream("train")) == sum(s["n_ids"] for s in shards)


def test_two_documents_give_one_val_document(tmp_path):
    meta = write_dataset(text_docs(2), tmp_path / "ds", sources=["gen"], val_fraction=0.01)
    assert meta["splits"]["val"]["n_docs"] == meta["splits"]["train"]["n_docs"] == 1
    assert meta["splits"]["test"]["n_docs"] == 0  # train keeps its one document


def test_test_split_leaves_val_as_it_was(tmp_path):
    """The test documents come out of train: val holds the same documents as a dataset prepared
    without a test split (choices made on an older val carry over)."""
    docs = text_docs(50)
    old = write_dataset(docs, tmp_path / "old", sources=["gen"], seed=3, val_fraction=0.1, test_fraction=0)
    new = write_dataset(docs, tmp_path / "new", sources=["gen"], seed=3, val_fraction=0.1, test_fraction=0.2)
    assert "test" not in old["splits"] and new["splits"]["test"]["n_docs"] == 10
    a, b = ShardDataset(tmp_path / "old"), ShardDataset(tmp_path / "new")
    assert docs_of(a, "val") == docs_of(b, "val")
    assert set(docs_of(b, "test")) <= set(docs_of(a, "train"))
    assert set(docs_of(b, "train")) == set(docs_of(a, "train")) - set(docs_of(b, "test"))


@pytest.mark.parametrize("val, test, match", [(0.5, 0.5, "must be below 1"), (0.1, 1.0, "--test-fraction"),
                                              (0.1, -0.1, "--test-fraction")])
def test_bad_fractions_are_named(tmp_path, val, test, match):
    with pytest.raises(OmnibyteError, match=match):
        write_dataset(text_docs(10), tmp_path / "ds", sources=["gen"], val_fraction=val, test_fraction=test)
    assert not (tmp_path / "ds").exists()


def test_old_dataset_without_test_split_says_how_to_get_one(tmp_path):
    write_dataset(text_docs(10), tmp_path / "ds", sources=["gen"], val_fraction=0.2, test_fraction=0)
    meta_file = tmp_path / "ds" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["test_fraction"]  # as datasets prepared before test splits existed
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(OmnibyteError, match="prepare it again"):
        ShardDataset(tmp_path / "ds").n_ids("test")


def test_errors_leave_old_dataset_intact(tmp_path):
    out = tmp_path / "ds"
    write_dataset(text_docs(3), out, sources=["gen"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    (tmp_path / "notext.jsonl").write_text('{"title": "x"}\n')
    (tmp_path / "empty.txt").write_text("")
    cases = [([tmp_path / "missing.txt"], "source not found"),
             ([str(tmp_path / "*.nothing")], "no files match"),
             ([tmp_path / "bad.jsonl"], r"bad.jsonl:2: not valid JSON"),
             ([tmp_path / "notext.jsonl"], r"notext.jsonl:1: record has neither 'text' nor 'segments'"),
             ([tmp_path / "empty.txt"], "no documents")]
    for sources, message in cases:
        with pytest.raises(OmnibyteError, match=message):
            prepare(sources, out)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp left


def test_refuses_to_overwrite_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "src.txt").write_text("hello\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(OmnibyteError, match="not an omnibyte dataset"):
        prepare([tmp_path / "src.txt"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    # re-preparing a dataset replaces it; files inside the output folder are never read as sources
    prepare([tmp_path], tmp_path / "ds", val_fraction=0)
    prepare([tmp_path], tmp_path / "ds", val_fraction=0)
    assert docs_of(ShardDataset(tmp_path / "ds")) == [b"precious", b"hello\n"]


# ----------------------------------------------------------------------------- loader


@pytest.fixture(scope="module")
def pos_ds(tmp_path_factory):
    """A dataset whose train/val aux array `pos` is each id's position (exact in float16 below 2048)."""
    path = tmp_path_factory.mktemp("pos") / "ds"
    docs = [Document([TextSegment(bytes(range(i % 50, i % 50 + 30)))]) for i in range(60)]
    write_dataset(docs, path, sources=["gen"], val_fraction=0.25, test_fraction=0, shard_ids=500)
    ds = ShardDataset(path)
    for split in ds.splits:
        ds.write_aux(split, "pos", np.arange(ds.n_ids(split)))
    return ds


def starts_of(batch) -> list[int]:
    return [int(r[0]) for r in batch["pos"]]


def test_dataset_meta_and_aux(pos_ds):
    assert pos_ds.n_ids("train") == 45 * 32 and len(pos_ds.meta["splits"]["train"]["shards"]) == 3
    assert pos_ds.has_aux("train", "pos") and not pos_ds.has_aux("train", "entropy")
    assert ShardDataset(pos_ds.path).aux("val", "pos").dtype == np.float16
    assert not [p for p in pos_ds.path.iterdir() if p.name.startswith(".")]
    with pytest.raises(OmnibyteError, match="shape"):
        pos_ds.write_aux("train", "bad", np.zeros(3))
    with pytest.raises(OmnibyteError, match="no split 'test'"):
        pos_ds.stream("test")


def test_dataset_open_errors(tmp_path):
    with pytest.raises(OmnibyteError, match="not an omnibyte dataset"):
        ShardDataset(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(OmnibyteError, match="corrupt"):
        ShardDataset(tmp_path)
    write_dataset(text_docs(3), tmp_path / "ds", sources=["gen"], val_fraction=0)
    with open(tmp_path / "ds" / "train-00000.bin", "r+b") as f:
        f.truncate(4)
    with pytest.raises(OmnibyteError, match="truncated"):
        ShardDataset(tmp_path / "ds").stream("train")


def test_batches_are_aligned_windows_and_deterministic(pos_ds):
    loader = BatchLoader(pos_ds, batch_size=4, seq_len=16, seed=3, aux=["pos"])
    batch = loader.get_batch(5)
    assert batch["ids"].shape == batch["pos"].shape == (4, 17)
    assert batch["ids"].dtype == torch.int64 and batch["pos"].dtype == torch.float32
    stream = np.asarray(pos_ds.stream("train"))
    for ids, pos in zip(batch["ids"], batch["pos"]):
        start = int(pos[0])
        assert start % 16 == 0 and pos.tolist() == list(range(start, start + 17))
        assert ids.tolist() == stream[start : start + 17].tolist()
    again = BatchLoader(pos_ds.path, batch_size=4, seq_len=16, seed=3, aux=["pos"]).get_batch(5)
    assert torch.equal(batch["ids"], again["ids"])
    other = BatchLoader(pos_ds, batch_size=4, seq_len=16, seed=4, aux=["pos"]).get_batch(5)
    assert starts_of(other) != starts_of(batch)


def test_every_window_once_per_epoch_across_epoch_boundaries(pos_ds):
    loader = BatchLoader(pos_ds, batch_size=7, seq_len=16, aux=["pos"])
    n = loader.n_windows
    assert n == (pos_ds.n_ids("train") - 1) // 16
    starts = [s for step in range(-(-3 * n // 7)) for s in starts_of(loader.get_batch(step))]
    for epoch in range(3):
        assert sorted(starts[epoch * n : (epoch + 1) * n]) == [16 * k for k in range(n)]
    assert starts[:n] != starts[n : 2 * n]  # a new order each epoch


def test_resume_equals_continuing(pos_ds):
    it = iter(BatchLoader(pos_ds, batch_size=2, seq_len=8, seed=1))
    continued = [next(it) for _ in range(7)][4:]
    resumed = list(itertools.islice(BatchLoader(pos_ds, batch_size=2, seq_len=8, seed=1).iter_from(4), 3))
    assert all(torch.equal(a["ids"], b["ids"]) for a, b in zip(continued, resumed))


@settings(max_examples=25, deadline=None)
@given(world_size=st.integers(1, 4), batch_size=st.integers(1, 5), seq_len=st.sampled_from([8, 16, 100]),
       step=st.integers(0, 40), seed=st.integers(0, 3))
def test_ranks_are_disjoint_slices_of_the_global_batch(pos_ds, world_size, batch_size, seq_len, step, seed):
    def loader(**kw):
        return BatchLoader(pos_ds, seq_len=seq_len, seed=seed, aux=["pos"], **kw)

    ranks = [loader(batch_size=batch_size, rank=r, world_size=world_size).get_batch(step)
             for r in range(world_size)]
    single = loader(batch_size=batch_size * world_size).get_batch(step)
    for key in ("ids", "pos"):
        assert torch.equal(torch.cat([b[key] for b in ranks]), single[key])
    n = loader(batch_size=1).n_windows
    if world_size * batch_size <= n:
        first = loader(batch_size=batch_size * world_size).get_batch(0)  # one epoch: all distinct
        assert len(set(starts_of(first))) == world_size * batch_size


def test_short_split_is_padded_and_empty_split_is_an_error(tmp_path):
    write_dataset([Document([TextSegment(b"tiny")])], tmp_path / "ds", sources=["gen"])
    batch = BatchLoader(tmp_path / "ds", batch_size=2, seq_len=10).get_batch(0)
    assert batch["ids"].tolist() == [[BOS, *b"tiny", EOS] + [PAD] * 5] * 2
    with pytest.raises(OmnibyteError, match="split 'val' .* is empty"):
        BatchLoader(tmp_path / "ds", split="val")
    with pytest.raises(OmnibyteError, match="split 'val' .* is empty"):
        next(eval_batches(tmp_path / "ds"))
    with pytest.raises(OmnibyteError, match="no aux array 'entropy'"):
        BatchLoader(tmp_path / "ds", aux=["entropy"])


@settings(max_examples=25, deadline=None)
@given(seq_len=st.integers(1, 300), batch_size=st.integers(1, 6), split=st.sampled_from(["train", "val"]))
def test_eval_windows_cover_every_target_once(pos_ds, seq_len, batch_size, split):
    stream = np.asarray(pos_ds.stream(split))
    targets = []
    for batch in eval_batches(pos_ds, split, batch_size=batch_size, seq_len=seq_len, aux=["pos"]):
        assert batch["ids"].shape[1] == seq_len + 1 and batch["ids"].shape[0] <= batch_size
        real = batch["ids"] != PAD
        targets += batch["pos"][:, 1:][real[:, 1:]].tolist()
        assert batch["ids"][real].tolist() == stream[batch["pos"][real].long().numpy()].tolist()
    assert targets == list(range(1, len(stream)))
    assert len(list(eval_batches(pos_ds, split, batch_size=batch_size, seq_len=seq_len, max_batches=1))) == 1


# ----------------------------------------------------------------------------- corpus and CLI


def test_kjv_chapters_from_bible_output():
    text = "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus the heavens.\n1Jn1:1 That which.\n"
    assert list(corpus_mod.chapters(text)) == ["In the beginning.\nAnd the earth.\n", "Thus the heavens.\n",
                                               "That which.\n"]


def test_kjv_needs_the_bible_command(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod.shutil, "which", lambda name: None)
    with pytest.raises(OmnibyteError, match="apt-get install bible-kjv-text"):
        corpus_mod.prepare_kjv(tmp_path / "kjv")
    assert not (tmp_path / "kjv").exists()


@pytest.mark.skipif(shutil.which("bible") is None, reason="needs Debian's bible-kjv-text")
def test_kjv_default_corpus(tmp_path):
    meta = corpus_mod.prepare_kjv(tmp_path / "kjv")
    assert sum(s["n_docs"] for s in meta["splits"].values()) == 1189  # chapters in the Bible
    first = docs_of(ShardDataset(tmp_path / "kjv"))[0]
    assert first.startswith(b"In the beginning God created the heaven and the earth.\nAnd the earth")


def test_cli_prepare(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello\nworld\n")
    assert main(["prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "ds")]) == 0
    assert "Prepared 1 documents" in capsys.readouterr().out
    for argv, message in [([str(tmp_path / "nope.txt"), "--out", str(tmp_path / "x")], "source not found"),
                          ([str(tmp_path / "a.txt")], "--out DIR is required"),
                          ([str(tmp_path / "a.txt"), "--out", str(tmp_path / "x"), "--val-fraction", "1.5"],
                           "val-fraction")]:
        assert main(["prepare", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert document_from_record({"text": "x"}, tmp_path).segments == [TextSegment(b"x")]


@given(lengths=st.lists(st.integers(2, 30), min_size=1, max_size=40), seq_len=st.integers(2, 20),
       lead=st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_document_windows_hold_whole_documents(lengths, seq_len, lead):
    # documents BOS x x ... of the given lengths, after `lead` ids that belong to no document
    ids, doc_starts = [7] * lead, []
    for n in lengths:
        doc_starts.append(len(ids))
        ids += [BOS] + [(len(ids) + i) % 256 for i in range(n - 1)]
    ids = np.asarray(ids)
    bounds = set(doc_starts) | {0}
    ends = sorted(bounds | {len(ids)})
    targets, placed = [], []
    for pieces in document_windows(ids, seq_len):
        assert 1 <= sum(n for _, n in pieces) <= seq_len + 1
        for k, (s, n) in enumerate(pieces):
            doc = max(b for b in bounds if b <= s)
            doc_end = min(b for b in ends if b > s)
            if doc_end - doc <= seq_len + 1:  # a whole document
                assert s == doc and s + n == doc_end
                placed.append(s)
            else:  # a long document: windows of its own, each continuing the previous one
                assert len(pieces) == 1 and s + n <= doc_end
            targets += range(s + (k == 0), s + n)  # the first id of a window is never a target
    assert len(placed) == len(set(placed))  # a document goes in one window once
    # every id is a target at most once, and only the first id of a document can be skipped
    assert len(targets) == len(set(targets))
    assert set(range(len(ids))) - set(targets) <= bounds


def test_document_windows_are_packed_full():
    rng = np.random.default_rng(0)
    ids = []
    for n in rng.integers(50, 1000, size=400):
        ids += [BOS] + [1] * int(n - 1)
    windows = document_windows(np.asarray(ids), 2047)
    assert sum(n for w in windows for _, n in w) / (len(windows) * 2048) > 0.95


def test_document_windows_in_the_loader(tmp_path):
    docs = [Document([TextSegment(bytes([65 + i % 26]) * (3 + 2 * i))]) for i in range(12)]
    write_dataset(docs, tmp_path / "ds", sources=["t"], val_fraction=0)
    ds = ShardDataset(tmp_path / "ds")
    ds.write_aux("train", "pos", np.arange(ds.n_ids("train")) % 1000)
    loader = BatchLoader(ds, "train", batch_size=4, seq_len=32, seed=3, aux=("pos",), align_docs=True)
    stream = np.asarray(ds.stream("train"))
    seen = 0
    for step in range(6):
        batch = loader.get_batch(step)
        assert (batch["ids"][:, 0] == BOS).all()
        for row, pos in zip(batch["ids"], batch["pos"]):
            n = int((row != PAD).sum())
            # whole documents side by side, each with its own ids and aux values from the stream
            for a, b in zip(np.flatnonzero(row[:n] == BOS), [*np.flatnonzero(row[:n] == BOS)[1:], n]):
                start = int(pos[a])
                assert torch.equal(row[a:b], torch.from_numpy(stream[start:start + b - a].astype(np.int64)))
                assert start + b - a == len(stream) or stream[start + b - a] == BOS
            assert (row[n:] == PAD).all() and (pos[n:] == 0).all()
            seen += 1
    assert loader.n_windows < len(stream) // 10  # whole documents packed, not one per window
    assert torch.equal(loader.get_batch(2)["ids"], BatchLoader(ds, "train", 4, 32, seed=3, align_docs=True)
                       .get_batch(2)["ids"])
