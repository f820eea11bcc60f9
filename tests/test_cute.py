"""CUTE-style character tasks: answers on hand-made words, determinism, word-level splits, and
greedy exact-match scoring for byte and BPE models."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import torch
from helpers import FakeModel

from omnibyte.cli import main
from omnibyte.data import ShardDataset
from omnibyte.data.bpe import train_bpe
from omnibyte.data.tasks.cute import (
    TASKS,
    Example,
    load_words,
    make_example,
    read_heldout,
    sample_examples,
    split_words,
    write_cute,
)
from omnibyte.errors import OmnibyteError
from omnibyte.eval.tasks import extract_answer, score_questions
from omnibyte.format import split_documents
from omnibyte.models.base import ModelOutput
from omnibyte.models.transformer import Transformer, TransformerConfig

WORDS = ["cat", "banana", "dog", "house", "zebra", "apple", "quiz", "river", "stone", "melon", "tiger", "plum"]


def quoted(prompt: str) -> list[str]:
    return re.findall(r"'([^']*)'", prompt)


def test_spell_and_backwards():
    rng = random.Random(0)
    assert make_example("spell", "cat", rng) == Example("spell", "cat", "Spell: cat\nAnswer:", "c a t")
    assert make_example("backwards", "cat", rng).answer == "t a c"
    assert make_example("backwards", "banana", rng).answer == "a n a n a b"
    assert make_example("spell", "cat", rng).document() == "Spell: cat\nAnswer: c a t\n"


@pytest.mark.parametrize("seed", range(8))
def test_edit_tasks_answer_what_they_ask(seed):
    rng = random.Random(seed)
    for word in WORDS:
        ex = make_example("insert", word, rng)
        new, after = quoted(ex.prompt)
        assert after in word and ex.answer == word.replace(after, after + new)
        assert len(ex.answer) == len(word) + word.count(after)

        ex = make_example("delete", word, rng)
        (gone,) = quoted(ex.prompt)
        assert ex.answer == "".join(c for c in word if c != gone) and gone not in ex.answer

        ex = make_example("substitute", word, rng)
        old, new = quoted(ex.prompt)
        assert new not in word and ex.answer == "".join(new if c == old else c for c in word)

        ex = make_example("contains", word, rng)
        w, letter = quoted(ex.prompt)
        assert w == word and ex.answer == ("yes" if letter in word else "no")

        ex = make_example("swap", word, rng)
        if ex is None:  # needs two letters that occur once
            assert len([c for c in set(word) if word.count(c) == 1]) < 2
            continue
        a, b = quoted(ex.prompt)
        i, j = word.index(a), word.index(b)
        expect = list(word)
        expect[i], expect[j] = b, a
        assert ex.answer == "".join(expect)


def test_hand_checked_answers():
    class Fixed(random.Random):  # choice() picks the first candidate: answers known in advance
        def choice(self, seq):
            return seq[0]

        def sample(self, seq, k):
            return list(seq[:k])

    rng = Fixed()
    assert make_example("insert", "cat", rng).answer == "cabt"  # 'b' after every 'a'
    assert make_example("delete", "banana", rng).answer == "bnn"
    assert make_example("substitute", "cat", rng).answer == "cbt"  # every 'a' → 'b'
    assert make_example("swap", "cat", rng).answer == "act"  # 'a' and 'c'
    assert make_example("delete", "aaa", rng) is None and make_example("swap", "aab", rng) is None


def test_sampling_is_deterministic_balanced_and_seeded():
    a = sample_examples(WORDS, 70, seed=3)
    assert a == sample_examples(WORDS, 70, seed=3)
    assert a != sample_examples(WORDS, 70, seed=4)
    counts = {t: sum(ex.task == t for ex in a) for t in TASKS}
    assert set(counts.values()) == {10}
    contains = [ex.answer for ex in sample_examples(WORDS, 700, seed=1, tasks=["contains"])]
    assert 0.4 < contains.count("yes") / len(contains) < 0.6
    with pytest.raises(OmnibyteError, match="unknown task"):
        sample_examples(WORDS, 3, seed=0, tasks=["rhyme"])


def test_word_split_is_disjoint_and_deterministic():
    train, held = split_words(WORDS, 0.25, seed=0)
    assert not set(train) & set(held) and sorted(train + held) == sorted(WORDS)
    assert len(held) == 3 and (train, held) == split_words(list(reversed(WORDS)), 0.25, seed=0)
    assert split_words(WORDS, 0.25, seed=1) != (train, held)


def test_load_words_keeps_plain_lowercase_words(tmp_path):
    f = tmp_path / "words"
    f.write_text("cat\nCat\ndog's\nélan\nox\nzebra\nzebra\nabcdefghijk\n")
    assert load_words(f) == ["cat", "zebra"]
    with pytest.raises(OmnibyteError, match="word list not found"):
        load_words(tmp_path / "nope")


def test_write_cute_dataset_and_questions(tmp_path):
    meta = write_cute(tmp_path / "cute", WORDS * 1, n_train=40, n_heldout=14, heldout_fraction=0.25, seed=0)
    c = meta["cute"]
    assert (c["train_examples"], c["heldout_examples"], c["heldout_words"]) == (40, 14, 3)
    ds = ShardDataset(tmp_path / "cute")
    docs = [bytes(d[1:-1]).decode() for s in ("train", "val", "test")
            for d in split_documents(np.asarray(ds.stream(s)))]
    assert len(docs) == 40 and all(re.fullmatch(r"[^\n]+\nAnswer: [^\n]*\n", d) for d in docs)
    held = read_heldout(tmp_path / "cute")
    assert len(held) == 14 and {ex.task for ex in held} == set(TASKS)
    train_words = {w for w in WORDS if any(f": {w}\n" in d or f"'{w}'" in d for d in docs)}
    assert not train_words & {ex.word for ex in held}
    again = write_cute(tmp_path / "again", WORDS, n_train=40, n_heldout=14, heldout_fraction=0.25, seed=0)
    assert again["splits"] == meta["splits"]
    assert (tmp_path / "again" / "questions.jsonl").read_text() == (tmp_path / "cute" / "questions.jsonl").read_text()


def test_extract_answer():
    assert extract_answer(b" c a t\nmore") == "c a t"
    assert extract_answer(b"yes") == "yes"
    assert extract_answer(b"  no\n") == " no"  # only one separating space is removed


class Scripted(FakeModel):
    """Greedy output is a fixed chain: the most likely next id depends only on the last id."""

    def __init__(self, vocab_size: int, chain: dict[int, int]):
        super().__init__()
        self.cfg = TransformerConfig(vocab_size=vocab_size)
        self.chain = chain

    def logits(self, ids):
        out = torch.zeros(*ids.shape, self.cfg.vocab_size)
        for (b, t), i in np.ndenumerate(ids.numpy()):
            out[b, t, self.chain.get(int(i), ord("z"))] = 10.0
        return out

    def forward(self, ids, targets=None, **extras):
        return ModelOutput(self.logits(ids))


def test_scoring_byte_model_greedy_exact_match():
    chain = {ord(":"): ord(" "), ord(" "): ord("y"), ord("y"): ord("e"), ord("e"): ord("s"), ord("s"): ord("\n"),
             ord("\n"): ord("z")}  # after the newline it wants 'z': the stop rule forces EOS instead
    examples = [Example("contains", "cat", "Does 'cat' contain 'a'?\nAnswer:", "yes"),
                Example("contains", "cat", "Does 'cat' contain 'q'?\nAnswer:", "no"),
                Example("spell", "yes", "Spell: yes\nAnswer:", "y e s")]
    r = score_questions(Scripted(263, chain), examples, batch_size=2)
    assert r["n"] == 3 and r["accuracy"] == pytest.approx(1 / 3)
    assert r["per_task"] == {"contains": 0.5, "spell": 0.0}
    assert [s["got"] for s in r["samples"]] == ["yes", "yes", "yes"]


def test_scoring_bpe_model_decodes_tokens():
    tok = train_bpe(["Answer: yes\n" * 50], 300)
    colon, yes, newline = tok.encode(":")[0], tok.encode(" yes")[0], tok.encode("\n")[0]
    assert tok.id_bytes[yes] == b" yes"
    chain = {colon: yes, yes: newline, newline: yes}
    ex = [Example("contains", "cat", "Does 'cat' contain 'a'?\nAnswer:", "yes")]
    assert score_questions(Scripted(tok.vocab_size, chain), ex, tokenizer=tok)["accuracy"] == 1.0


def test_eval_cli_task_cute(tmp_path, capsys):
    write_cute(tmp_path / "cute", WORDS, n_train=20, n_heldout=7, heldout_fraction=0.25, seed=0)
    torch.manual_seed(0)
    Transformer(TransformerConfig(dim=16, n_layers=1, n_heads=2)).save_pretrained(tmp_path / "m")
    rc = main(["eval", str(tmp_path / "m"), "--task", "cute", "--data", str(tmp_path / "cute"), "--json"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 7 and set(r["per_task"]) == set(TASKS) and 0 <= r["accuracy"] <= 1
    assert main(["eval", str(tmp_path / "m"), "--task", "cute"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["bench", "cute", "--out", str(tmp_path / "c2"), "--words", str(tmp_path / "nope")]) == 2
