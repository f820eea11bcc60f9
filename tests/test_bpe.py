"""BPE baseline: byte-format id layout, lossless tokenization, token datasets, exact bits per byte."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import write_text_dataset
from torch import nn

from omnibyte.cli import main
from omnibyte.data import ShardDataset, prepare
from omnibyte.data.bpe import (
    BpeTokenizer,
    bytes_per_token,
    find_tokenizer,
    iter_text_documents,
    prepare_bpe,
    tokenize_dataset,
    train_bpe,
)
from omnibyte.errors import OmnibyteError
from omnibyte.eval.runner import evaluate_model, score_dataset
from omnibyte.format import BOS, EOS, PAD, split_documents
from omnibyte.models.base import ModelOutput
from omnibyte.models.transformer import Transformer, TransformerConfig

CORPUS = ["the cat sat on the mat. " * 20, "a dog ran to the red door\n" * 20, "Ünïcödé — 😀 text\n"]


@pytest.fixture(scope="module")
def tok() -> BpeTokenizer:
    return train_bpe(CORPUS, 300)


def test_id_layout_matches_the_byte_format(tok):
    assert tok.vocab_size == 300
    # single bytes keep their value as id; PAD/BOS/EOS sit where the byte format puts them
    assert [tok.id_bytes[b] for b in (0, 10, 65, 255)] == [b"\x00", b"\n", b"A", b"\xff"]
    assert tok.bytes_per_id[[PAD, BOS, EOS]].tolist() == [0, 0, 0]
    assert (tok.bytes_per_id[:256] == 1).all() and (tok.bytes_per_id[259:] >= 2).all()
    assert len(set(tok.id_bytes[259:])) == 300 - 259  # every merge is a distinct byte string


@pytest.mark.parametrize("text", ["the cat sat", "Ünïcödé — 😀\n\ttabs", "x\x00y", "<pad><bos><eos> 256", ""])
def test_encoding_is_lossless_and_never_yields_specials(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text.encode()
    assert tok.n_bytes(ids) == len(text.encode())
    assert not {PAD, BOS, EOS} & set(ids)  # a literal "<pad>" is just bytes
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_merges_compress_the_training_text(tok):
    text = "the cat sat on the mat. "
    assert len(tok.encode(text)) < len(text) / 2


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    again = BpeTokenizer.load(tmp_path)
    assert again.fingerprint() == tok.fingerprint()
    assert again.encode("a dog ran") == tok.encode("a dog ran")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OmnibyteError, match="corrupt tokenizer"):
        BpeTokenizer.load(tmp_path / "bad.json")


def test_vocab_size_is_checked():
    with pytest.raises(OmnibyteError, match="vocab size"):
        train_bpe(CORPUS, 259)
    with pytest.raises(OmnibyteError, match="vocab size"):
        train_bpe(CORPUS, 70000)


def test_token_dataset_keeps_documents_splits_and_bytes(tmp_path):
    src = write_text_dataset(tmp_path, n_docs=20, lines=6)
    meta = prepare_bpe(src, tmp_path / "tok", vocab_size=320)
    byte_ds, tok_ds = ShardDataset(src), ShardDataset(tmp_path / "tok")
    tok = BpeTokenizer.load(tmp_path / "tok")
    assert meta["tokenizer"]["vocab_size"] == tok.vocab_size == meta["vocab_size"]
    for split in ("train", "val"):
        byte_docs = [bytes(d[1:-1]) for d in split_documents(np.asarray(byte_ds.stream(split)))]
        stream = np.asarray(tok_ds.stream(split))
        assert PAD not in stream  # PAD only ever comes from the loader, and the loss skips it
        tok_docs = [tok.decode(d[1:-1]) for d in split_documents(stream)]
        assert tok_docs == byte_docs
        assert tok_ds.meta["splits"][split]["bytes"]["text"] == byte_ds.meta["splits"][split]["bytes"]["text"]
        assert tok_ds.meta["splits"][split]["n_ids"] < byte_ds.meta["splits"][split]["n_ids"]
    assert 1 < bytes_per_token(meta, "train") < 8
    # documents are read a chunk at a time: any chunk size gives the same documents
    small_chunks = list(iter_text_documents(byte_ds, "train", chunk_ids=7))
    assert small_chunks == list(iter_text_documents(byte_ds, "train")) == [
        bytes(d[1:-1]) for d in split_documents(np.asarray(byte_ds.stream("train")))]
    with pytest.raises(OmnibyteError, match="already a token dataset"):
        prepare_bpe(tmp_path / "tok", tmp_path / "tok2")


def test_non_text_documents_are_refused(tmp_path):
    from omnibyte.data import write_dataset
    from omnibyte.format import Document, ImageSegment, TextSegment

    docs = [Document([TextSegment(b"hi"), ImageSegment(1, 1, 1, b"\x00")]), Document([TextSegment(b"yo")])]
    write_dataset(docs, tmp_path / "mm", sources=["x"], val_fraction=0)
    with pytest.raises(OmnibyteError, match="text-only"):
        tokenize_dataset(tmp_path / "mm", tmp_path / "tok", train_bpe(["hi yo"], 270))


class Uniform(nn.Module):
    """Equal logits over V ids: every target costs exactly log2(V) bits."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(1))

    strided_eval = False

    def forward(self, ids, targets=None, **extras):
        return ModelOutput(torch.zeros(*ids.shape, self.vocab_size))

    def prepare_data(self, dataset) -> dict:
        return {}


def test_bpb_of_uniform_model_is_tokens_log2v_over_bytes(tmp_path):
    text = tmp_path / "val.txt"
    text.write_text("the cat sat on the mat\n" * 30 + "Ünïcödé — 😀\n")
    prepare([text], tmp_path / "bytes", val_fraction=0)
    tok = train_bpe(["the cat sat on the mat\n" * 10], 280)
    v = tok.vocab_size
    # token dataset made on the fly from the byte dataset, scored in windows of 16 tokens
    r = score_dataset(Uniform(v), ShardDataset(tmp_path / "bytes"), "train", seq_len=16, batch_size=3,
                      tokenizer=tok, scratch=tmp_path / "scratch")
    ids = tok.encode(text.read_text())
    n_targets = len(ids) + 1  # BOS t1 ... tn EOS: every id after BOS is a target once
    n_bytes = len(text.read_bytes())
    assert r["bytes"] == n_bytes
    assert r["nll_bits"] == pytest.approx(n_targets * math.log2(v), rel=1e-6)
    assert r["bpb"] == pytest.approx(n_targets * math.log2(v) / n_bytes, rel=1e-6)
    # the byte model's denominator is the same bytes
    rb = score_dataset(Uniform(263), ShardDataset(tmp_path / "bytes"), "train", seq_len=16, batch_size=3)
    assert rb["bytes"] == n_bytes and rb["bpb"] == pytest.approx((n_bytes + 1) * math.log2(263) / n_bytes)


def test_bpe_model_trains_and_evaluates_on_any_text(tmp_path, capsys):
    src = write_text_dataset(tmp_path, n_docs=20, lines=6)
    rc = main(["bench", "bpe", "--data", str(src), "--vocab", "280", "--out", str(tmp_path / "tok")])
    assert rc == 0 and "--model.vocab_size 280" in capsys.readouterr().out
    run = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "tok"), "--out", str(run), "--quiet", "--model.vocab_size=280",
               "--model.dim=32", "--model.n_layers=1", "--model.n_heads=2", "--train.steps=3",
               "--train.batch_size=2", "--train.seq_len=16", "--train.threads=1", "--train.eval_batches=1"])
    assert rc == 0, capsys.readouterr().err
    assert find_tokenizer(run) is not None and find_tokenizer(run).vocab_size == 280
    on_tokens = evaluate_model(run, seq_len=16)  # the run's token dataset, val split
    text = tmp_path / "val.txt"
    docs = [bytes(d[1:-1]) for d in split_documents(np.asarray(ShardDataset(src).stream("val")))]
    text.write_bytes(b"".join(docs))
    on_text = evaluate_model(run, data=str(text), seq_len=16)  # tokenized on the fly
    assert on_text["bytes"] == on_tokens["bytes"] == sum(map(len, docs))
    assert 0 < on_text["bpb"] < 20 and math.isfinite(on_tokens["bpb"])
    # a byte model is refused on token data, and vice versa the mismatch is named
    byte_model = tmp_path / "bytes-model"
    Transformer(TransformerConfig(dim=32, n_layers=1, n_heads=2)).save_pretrained(byte_model)
    with pytest.raises(OmnibyteError, match="token dataset"):
        evaluate_model(byte_model, data=str(tmp_path / "tok"), seq_len=16)


def test_bench_bpe_cli_needs_data_and_out(capsys):
    assert main(["bench", "bpe", "--vocab", "300"]) == 2
    assert "--data DIR" in capsys.readouterr().err
