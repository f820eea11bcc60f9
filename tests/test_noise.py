"""Noise perturbations do what they say; noisy/clean bits per byte for byte and BPE models."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from helpers import write_text_dataset

from omnibyte.cli import main
from omnibyte.data import ShardDataset
from omnibyte.data.bpe import prepare_bpe
from omnibyte.errors import OmnibyteError
from omnibyte.eval.noise import PERTURBATIONS, noise_eval, perturb, write_noisy
from omnibyte.eval.runner import evaluate_model
from omnibyte.models.transformer import Transformer, TransformerConfig

TEXT = "The quick brown fox jumps over the lazy dog.\nÜber café — naïve 😀 ok\n" * 3


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_rate_zero_changes_nothing_and_seed_decides(kind):
    assert perturb(TEXT, kind, 0.0, seed=5) == TEXT
    assert perturb(TEXT, kind, 0.3, seed=1) == perturb(TEXT, kind, 0.3, seed=1)
    assert perturb(TEXT, kind, 0.3, seed=1) != perturb(TEXT, kind, 0.3, seed=2)


def test_rate_one():
    assert perturb(TEXT, "uppercase", 1.0) == TEXT.upper()
    assert perturb(TEXT, "random_case", 1.0) == TEXT.swapcase()
    assert perturb(TEXT, "drop", 1.0) == ""
    assert perturb(TEXT, "repeat", 1.0) == "".join(c + c for c in TEXT)
    assert perturb("abcdefg", "swap", 1.0) == "badcfeg"


def test_partial_rates_keep_their_promises():
    n = len(TEXT)
    dropped = perturb(TEXT, "drop", 0.3, seed=0)
    it = iter(TEXT)
    assert all(c in it for c in dropped)  # a subsequence of the original
    assert 0.5 * n < len(dropped) < 0.9 * n
    repeated = perturb(TEXT, "repeat", 0.3, seed=0)
    assert 1.1 * n < len(repeated) < 1.5 * n and "".join(dict.fromkeys(repeated)) == "".join(dict.fromkeys(TEXT))
    swapped = perturb(TEXT, "swap", 0.3, seed=0)
    assert len(swapped) == n and Counter(swapped) == Counter(TEXT) and swapped != TEXT
    upper = perturb(TEXT, "uppercase", 0.5, seed=0)
    assert upper.lower() == TEXT.lower() and upper != TEXT and upper != TEXT.upper()
    cased = perturb(TEXT, "random_case", 0.5, seed=0)
    assert cased.lower() == TEXT.lower() and sum(a != b for a, b in zip(cased, TEXT)) > 10


def test_bytes_in_bytes_out_with_invalid_utf8_kept():
    assert perturb(b"ab\xffcd", "uppercase", 1.0) == b"AB\xffCD"
    assert perturb("é".encode(), "repeat", 1.0) == "éé".encode()
    with pytest.raises(OmnibyteError, match="unknown perturbation"):
        perturb("x", "shout", 0.1)
    with pytest.raises(OmnibyteError, match="rate"):
        perturb("x", "drop", 1.5)


def test_noisy_dataset_keeps_documents(tmp_path):
    src = ShardDataset(write_text_dataset(tmp_path, n_docs=10, lines=4))
    noisy = write_noisy(src, "val", tmp_path / "noisy", "uppercase", 1.0)
    assert noisy.meta["splits"]["train"]["n_docs"] == src.meta["splits"]["val"]["n_docs"]
    clean, loud = (bytes(x for x in ds.stream(s) if x < 256) for ds, s in ((src, "val"), (noisy, "train")))
    assert loud == clean.upper()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A byte model and a BPE model trained a few steps on the same small dataset."""
    tmp = tmp_path_factory.mktemp("noise")
    data = write_text_dataset(tmp, n_docs=16, lines=6)
    prepare_bpe(data, tmp / "tok", vocab_size=280)
    common = ["--model.dim=32", "--model.n_layers=1", "--model.n_heads=2", "--train.steps=30",
              "--train.batch_size=4", "--train.seq_len=32", "--train.threads=1", "--train.eval_batches=1",
              "--train.warmup_steps=3", "--quiet"]
    assert main(["train", "--data", str(data), "--out", str(tmp / "byte"), *common]) == 0
    assert main(["train", "--data", str(tmp / "tok"), "--out", str(tmp / "bpe"), "--model.vocab_size=280",
                 *common]) == 0
    return tmp, data


def test_noise_eval_byte_and_bpe(trained):
    tmp, data = trained
    for run in ("byte", "bpe"):
        r = noise_eval(tmp / run, kinds=["uppercase", "drop"], rate=0.5, seq_len=32)
        clean = evaluate_model(tmp / run, seq_len=32)
        assert r["clean"]["bpb"] == pytest.approx(clean["bpb"])
        assert r["clean"]["bytes"] == ShardDataset(data).meta["splits"]["val"]["bytes"]["text"]
        for kind, v in r["noisy"].items():
            assert v["ratio"] == pytest.approx(v["bpb"] / r["clean"]["bpb"])
            assert v["ratio"] > 1, (run, kind)  # the models learned lowercase, complete words
        assert r["noisy"]["uppercase"]["bytes"] == r["clean"]["bytes"]
        assert r["noisy"]["drop"]["bytes"] < r["clean"]["bytes"]


def test_eval_cli_noise(trained, tmp_path, capsys):
    tmp, _ = trained
    text = tmp_path / "any.txt"
    text.write_text("the cat sat on the mat.\n" * 20)
    rc = main(["eval", str(tmp / "bpe"), "--data", str(text), "--noise", "--noise-kinds", "swap,repeat",
               "--noise-rate", "0.2", "--json"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    assert set(r["noisy"]) == {"swap", "repeat"} and r["clean"]["bytes"] == len(text.read_bytes())
    assert main(["eval", str(tmp / "byte"), "--noise", "--noise-kinds", "shout"]) == 2
    assert "unknown perturbation" in capsys.readouterr().err
    torch.manual_seed(0)
    Transformer(TransformerConfig(dim=16, n_layers=1, n_heads=2)).save_pretrained(tmp_path / "m")
    assert main(["eval", str(tmp_path / "m"), "--noise", "--data", str(text)]) == 0
    assert "uppercase" in capsys.readouterr().out
