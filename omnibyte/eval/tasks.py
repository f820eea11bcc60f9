"""Task accuracy by greedy exact match: the model continues each prompt greedily until it writes a
newline (or EOS); the answer is what it wrote before the newline, less one leading space, and it
counts only when it equals the expected answer exactly. Byte models and the BPE baseline are
scored on the very same text; only the prompt encoding differs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from omnibyte.checks import resolve_device
from omnibyte.data.bpe import BpeTokenizer, find_tokenizer
from omnibyte.data.tasks.cute import Example, read_heldout
from omnibyte.format import BOS, EOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.constraints import Constraint, TextOnly
from omnibyte.models.base import OmniModel
from omnibyte.progress import progress as tqdm


class StopAtNewline(Constraint):
    """Until a newline is written: `base`'s rule; after it only EOS may follow, which ends the row."""

    def __init__(self, newline: torch.Tensor, base: Constraint):
        self.newline, self.base, self.done = newline, base, False

    def allowed(self, vocab_size: int) -> torch.Tensor | None:
        if not self.done:
            return self.base.allowed(vocab_size)
        only_eos = torch.zeros(vocab_size, dtype=torch.bool)
        only_eos[EOS] = True
        return only_eos

    def advance(self, token: int) -> None:
        self.done = self.done or bool(self.newline[token])
        self.base.advance(token)


class _Codec:
    """Text ⇄ ids for a byte model (tokenizer None) or a BPE model."""

    def __init__(self, vocab_size: int, tokenizer: BpeTokenizer | None):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        newline = torch.zeros(vocab_size, dtype=torch.bool)
        if tokenizer is None:
            newline[ord("\n")] = True
        else:
            for i, b in enumerate(tokenizer.id_bytes[:vocab_size]):
                newline[i] = b"\n" in b
        self.newline = newline

    def prompt(self, text: str) -> list[int]:
        body = list(text.encode("utf-8")) if self.tokenizer is None else self.tokenizer.encode(text)
        return [BOS, *body]

    def text(self, ids: Sequence[int]) -> bytes:
        if self.tokenizer is None:
            return bytes(t for t in ids if t < N_BYTES)
        return self.tokenizer.decode(ids)

    def constraint(self) -> Constraint:
        # Byte models write text only; a token model may use any token but PAD/BOS.
        return StopAtNewline(self.newline, TextOnly() if self.tokenizer is None else Constraint())


def extract_answer(written: bytes) -> str:
    """What a model answered: its output up to the first newline, less one leading space."""
    line = written.split(b"\n", 1)[0]
    if line.startswith(b" "):
        line = line[1:]
    return line.decode("utf-8", errors="replace")


def score_questions(model, examples: Sequence[Example], tokenizer: BpeTokenizer | None = None,
                   batch_size: int = 32, progress: bool = False) -> dict:
    """Greedy exact-match accuracy of a loaded model on `examples` → {"accuracy", "n", "per_task",
    "samples"} (samples: the first few answers, right and wrong, to look at)."""
    codec = _Codec(model.cfg.vocab_size, tokenizer)
    longest = max(len(ex.answer.encode("utf-8")) for ex in examples)
    cfg = SamplingConfig(max_new=longest + 4, temperature=0.0)  # " answer\n" then EOS, in bytes or tokens
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    samples = []
    for start in tqdm(range(0, len(examples), batch_size), desc="tasks", disable=not progress, leave=False):
        batch = examples[start : start + batch_size]
        outs = generate(model, [codec.prompt(ex.prompt) for ex in batch], cfg,
                        constraints=[codec.constraint() for _ in batch])
        for ex, out in zip(batch, outs):
            got = extract_answer(codec.text(out))
            ok = got == ex.answer
            right[ex.task][0] += ok
            right[ex.task][1] += 1
            if len(samples) < 20:
                samples.append({"task": ex.task, "prompt": ex.prompt, "answer": ex.answer, "got": got, "ok": ok})
    n = sum(t for _, t in right.values())
    return {"accuracy": sum(r for r, _ in right.values()) / n if n else float("nan"), "n": n,
            "per_task": {task: r / t for task, (r, t) in right.items()}, "samples": samples}


def evaluate_tasks(model_path: str | Path, data: str | Path, batch_size: int = 32, limit: int | None = None,
                   device: str | None = None, progress: bool = False) -> dict:
    """Accuracy of a saved model (byte or BPE) on a task suite's held-out questions (`data`: the
    suite's folder or its questions.jsonl); `limit` scores only the first N."""
    device = resolve_device(device)
    model = OmniModel.from_pretrained(model_path, map_location=device)
    examples = read_heldout(data)[: limit or None]
    result = score_questions(model, examples, find_tokenizer(model_path), batch_size, progress)
    return {**result, "model": str(model_path), "data": str(data)}
