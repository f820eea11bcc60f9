"""Character-level tasks in the spirit of CUTE (Edman et al., 2024): questions about the letters
of a word that a byte model sees directly and a token model must infer from its token ids.

Seven tasks, each a (prompt, answer) pair built from one word:

    spell        Spell: cat\\nAnswer:                          → c a t
    backwards    Spell backwards: cat\\nAnswer:                → t a c
    insert       Insert 'x' after every 'a' in: cat\\nAnswer:  → caxt
    delete       Delete every 'a' from: banana\\nAnswer:       → bnn
    substitute   Replace every 'a' with 'o' in: cat\\nAnswer:  → cot
    contains     Does 'cat' contain 'a'?\\nAnswer:             → yes
    swap         Swap 'c' and 't' in: cat\\nAnswer:            → tac

A training document is ``prompt + " " + answer + "\\n"``; a model answers by continuing the prompt,
and is right when what it writes up to the newline (or EOS), less the leading space, equals the
answer exactly. Words are split into train and held-out words first, so held-out questions are
about words the model never saw in a question. Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from omnibyte.data.loader import META_FILE, read_meta
from omnibyte.data.prepare import write_dataset
from omnibyte.errors import OmnibyteError
from omnibyte.files import write_json_atomic
from omnibyte.format import Document, TextSegment

DEFAULT_WORDS = "/usr/share/dict/american-english"  # Debian: apt-get install wamerican
HELDOUT_FILE = "questions.jsonl"  # held-out (prompt, answer) pairs
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"^[a-z]+$")


@dataclass(frozen=True)
class Example:
    task: str
    word: str
    prompt: str
    answer: str

    def document(self) -> str:
        """The training text: prompt, a space, the answer, a newline."""
        return f"{self.prompt} {self.answer}\n"

    def to_json(self) -> dict:
        return {"task": self.task, "word": self.word, "prompt": self.prompt, "answer": self.answer}


# --------------------------------------------------------------------------- the tasks
# Each task: (word, rng) → (prompt, answer), or None when the word does not suit it.


def spell(word: str, rng: random.Random):
    return f"Spell: {word}\nAnswer:", " ".join(word)


def backwards(word: str, rng: random.Random):
    return f"Spell backwards: {word}\nAnswer:", " ".join(reversed(word))


def insert(word: str, rng: random.Random):
    after = rng.choice(sorted(set(word)))
    new = rng.choice([c for c in ALPHABET if c != after])
    return f"Insert '{new}' after every '{after}' in: {word}\nAnswer:", word.replace(after, after + new)


def delete(word: str, rng: random.Random):
    gone = rng.choice(sorted(set(word)))
    answer = word.replace(gone, "")
    if not answer:
        return None
    return f"Delete every '{gone}' from: {word}\nAnswer:", answer


def substitute(word: str, rng: random.Random):
    absent = [c for c in ALPHABET if c not in word]
    if not absent:
        return None
    old = rng.choice(sorted(set(word)))
    new = rng.choice(absent)
    return f"Replace every '{old}' with '{new}' in: {word}\nAnswer:", word.replace(old, new)


def contains(word: str, rng: random.Random):
    # Half yes, half no, so always answering one way scores 50%.
    present = sorted(set(word))
    absent = [c for c in ALPHABET if c not in word]
    if rng.random() < 0.5 or not absent:
        return f"Does '{word}' contain '{rng.choice(present)}'?\nAnswer:", "yes"
    return f"Does '{word}' contain '{rng.choice(absent)}'?\nAnswer:", "no"


def swap(word: str, rng: random.Random):
    once = sorted(c for c in set(word) if word.count(c) == 1)
    if len(once) < 2:
        return None
    a, b = rng.sample(once, 2)
    answer = word.translate(str.maketrans({a: b, b: a}))
    return f"Swap '{a}' and '{b}' in: {word}\nAnswer:", answer


TASKS: dict[str, Callable] = {"spell": spell, "backwards": backwards, "insert": insert, "delete": delete,
                              "substitute": substitute, "contains": contains, "swap": swap}


def make_example(task: str, word: str, rng: random.Random) -> Example | None:
    if task not in TASKS:
        raise OmnibyteError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    made = TASKS[task](word, rng)
    return None if made is None else Example(task, word, *made)


# --------------------------------------------------------------------------- word lists and splits


def load_words(path: str | Path = DEFAULT_WORDS, min_len: int = 3, max_len: int = 10) -> list[str]:
    """Lowercase ASCII words of min_len..max_len letters, sorted and unique (proper nouns,
    possessives and accented words are left out)."""
    path = Path(path)
    if not path.is_file():
        hint = " (apt-get install wamerican)" if str(path) == DEFAULT_WORDS else ""
        raise OmnibyteError(f"word list not found: {path}{hint}")
    words = {w.strip() for w in path.read_text(encoding="utf-8", errors="replace").splitlines()}
    return sorted(w for w in words if _WORD.match(w) and min_len <= len(w) <= max_len)


def split_words(words: Iterable[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train words, held-out words): disjoint, chosen by a seeded shuffle of the sorted list."""
    words = sorted(set(words))
    if len(words) < 2:
        raise OmnibyteError(f"need at least 2 distinct words, got {len(words)}")
    if not 0 < heldout_fraction < 1:
        raise OmnibyteError(f"held-out fraction must be in (0, 1), got {heldout_fraction}")
    random.Random(seed).shuffle(words)
    n_held = min(max(1, round(len(words) * heldout_fraction)), len(words) - 1)
    return sorted(words[n_held:]), sorted(words[:n_held])


def sample_examples(words: list[str], n: int, seed: int, tasks: Iterable[str] | None = None) -> list[Example]:
    """`n` examples: task k % len(tasks) for the k-th (so tasks are balanced), on seeded random words."""
    tasks = list(tasks or TASKS)
    for t in tasks:
        if t not in TASKS:
            raise OmnibyteError(f"unknown task {t!r} (known: {', '.join(TASKS)})")
    if not words:
        raise OmnibyteError("no words to build examples from")
    rng = random.Random(seed)
    out: list[Example] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise OmnibyteError(f"the word list does not suit task {tasks[len(out) % len(tasks)]!r}")
        ex = make_example(tasks[len(out) % len(tasks)], rng.choice(words), rng)
        if ex is not None:
            out.append(ex)
    return out


# --------------------------------------------------------------------------- on disk


def write_cute(out: str | Path, words: list[str], n_train: int = 100000, n_heldout: int = 700,
               heldout_fraction: float = 0.1, seed: int = 0, tasks: Iterable[str] | None = None,
               val_fraction: float = 0.02) -> dict:
    """Write the task suite at `out`: a prepared byte dataset of training documents (its val split
    is a sample of them, for the training curve) plus `questions.jsonl`, questions on held-out words
    for `omnibyte.eval.tasks`. Returns the dataset meta with a "cute" summary added."""
    tasks = list(tasks or TASKS)
    train_words, held_words = split_words(words, heldout_fraction, seed)
    train = sample_examples(train_words, n_train, seed + 1, tasks)
    held = sample_examples(held_words, n_heldout, seed + 2, tasks)
    out = Path(out)
    docs = (Document([TextSegment.from_str(ex.document())]) for ex in train)
    write_dataset(docs, out, sources=[f"cute:{len(words)} words, seed {seed}"], seed=seed, val_fraction=val_fraction)
    with open(out / HELDOUT_FILE, "w") as f:
        for ex in held:
            f.write(json.dumps(ex.to_json()) + "\n")
    meta = read_meta(out)
    meta["cute"] = {"tasks": tasks, "train_words": len(train_words), "heldout_words": len(held_words),
                    "train_examples": len(train), "heldout_examples": len(held), "heldout_file": HELDOUT_FILE,
                    "seed": seed}
    write_json_atomic(out / META_FILE, meta)
    return meta


def read_heldout(path: str | Path) -> list[Example]:
    """Held-out examples from a task dataset folder (its questions.jsonl) or a JSONL file."""
    path = Path(path)
    file = path / HELDOUT_FILE if path.is_dir() else path
    if not file.is_file():
        raise OmnibyteError(f"no held-out questions at {file} (make them with `omnibyte bench cute`)")
    out = []
    for lineno, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append(Example(rec.get("task", "task"), rec.get("word", ""), rec["prompt"], rec["answer"]))
        except (ValueError, KeyError, TypeError) as e:
            raise OmnibyteError(f"{file}:{lineno}: not a {{prompt, answer}} record: {e}") from None
    if not out:
        raise OmnibyteError(f"{file} holds no questions")
    return out
