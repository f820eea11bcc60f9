"""The one decoding loop for every model: prefill with the model's caches, then one id per step.

`DecodeBatch` holds rows that decode side by side in one model state. Rows join (`add`) and
leave (`drop`, or when they finish) between steps; each step feeds every row's prompt a chunk
further and gives every prompted row one new id, all rows' new ids in one model call. Rows never
affect each other: each stands at its own position in the state and samples with its own
generator, seeded like a lone run, so a row gets exactly what it would get decoded alone.
`generate` runs a fixed set of prompts through one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS
from omnibyte.generate.constraints import Constraint, TextOnly, default_mask


@dataclass
class SamplingConfig:
    max_new: int = 256  # ids to generate per row (EOS ends a row earlier)
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None
    stop_at_eos: bool = True

    def __post_init__(self):
        if self.max_new < 0:
            raise OmnibyteError(f"max new bytes must be ≥ 0, got {self.max_new}")
        if self.temperature < 0:
            raise OmnibyteError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise OmnibyteError(f"top-k must be ≥ 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise OmnibyteError(f"top-p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the top-k ids and the smallest set whose probability reaches top_p; others → -inf.
    logits: (V,) already divided by the temperature."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop an id when the mass before it already reaches top_p (the first id always stays)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def choose(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator | None) -> int:
    """One id from (V,) logits (already masked) by greedy or temperature/top-k/top-p sampling."""
    if cfg.temperature == 0:
        return int(logits.argmax())
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


PREFILL_CHUNK = 512  # prompt ids a row is fed per step: a long prompt does not stall the other rows


@dataclass
class _Row:
    prompt: list[int]
    cfg: SamplingConfig
    constraint: Constraint
    gen: torch.Generator | None
    fed: int = 0  # prompt ids fed so far
    logits: torch.Tensor | None = None  # (V,) for the next id, once the whole prompt is fed
    new: list[int] = field(default_factory=list)
    done: bool = False


class DecodeBatch:
    """Rows decoding side by side: up to `capacity` rows of up to `max_len` ids each (prompt and
    new ids). A row's id is its slot in the model state; a finished or dropped row frees it."""

    @torch.inference_mode()
    def __init__(self, model, capacity: int, max_len: int, prefill_chunk: int = PREFILL_CHUNK):
        if capacity < 1 or max_len < 1 or prefill_chunk < 1:
            raise OmnibyteError(f"a decoding batch needs capacity, max_len and prefill_chunk ≥ 1, got "
                                f"{capacity}, {max_len} and {prefill_chunk}")
        self.model, self.capacity, self.max_len, self.prefill_chunk = model, capacity, max_len, prefill_chunk
        model.eval()
        self.state = model.init_state(capacity, max_len)
        self.rows: dict[int, _Row] = {}
        self._dirty: set[int] = set()  # freed slots whose state still holds an old sequence

    @property
    def free(self) -> int:
        return self.capacity - len(self.rows)

    @torch.inference_mode()
    def add(self, prompt: Sequence[int], cfg: SamplingConfig, constraint: Constraint | None = None) -> int:
        """A new row (its prompt is fed over the next steps); returns its id."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise OmnibyteError("every prompt needs at least one id (start it with BOS)")
        if len(prompt) + cfg.max_new > self.max_len:
            raise OmnibyteError(f"prompt of {len(prompt)} ids + {cfg.max_new} new ids exceeds the {self.max_len} "
                                f"ids a row holds")
        if not self.free:
            raise OmnibyteError(f"all {self.capacity} rows are busy")
        slot = min(set(range(self.capacity)) - set(self.rows))
        if slot in self._dirty:
            self.model.clear_rows(self.state, [slot])
            self._dirty.discard(slot)
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        self.rows[slot] = _Row(prompt, cfg, constraint if constraint is not None else TextOnly(), gen,
                               done=cfg.max_new == 0)
        return slot

    def drop(self, row: int) -> None:
        """The row leaves the batch now (a finished row has left already)."""
        if self.rows.pop(row, None) is not None:
            self._dirty.add(row)

    @torch.inference_mode()
    def step(self) -> list[tuple[int, int, bool]]:
        """Feed prompts a chunk further, then sample one id for every row whose prompt is in and
        feed those ids. Returns (row, id, finished) for each new id; finished rows have left."""
        device = self.model.device
        for r, row in sorted(self.rows.items()):
            if row.fed < len(row.prompt) and not row.done:
                chunk = row.prompt[row.fed:row.fed + self.prefill_chunk]
                logits = self.model.step(self.state, torch.tensor([chunk], device=device), [r])
                row.fed += len(chunk)
                if row.fed == len(row.prompt):
                    row.logits = logits[0, -1]
        out, feed = [], []
        for r, row in sorted(self.rows.items()):
            if row.logits is None or row.done:
                continue
            tok = self._choose(row)
            row.new.append(tok)
            row.done = len(row.new) >= row.cfg.max_new or (row.cfg.stop_at_eos and tok == EOS)
            out.append((r, tok, row.done))
            if not row.done:
                feed.append((r, tok))
        for r, row in list(self.rows.items()):
            if row.done:
                self.drop(r)
        if feed:
            rows = [r for r, _ in feed]
            logits = self.model.step(self.state, torch.tensor([[t] for _, t in feed], device=device), rows)
            for i, r in enumerate(rows):
                self.rows[r].logits = logits[i, -1]
        return out

    def _choose(self, row: _Row) -> int:
        logits = row.logits.float()
        mask = row.constraint.allowed(logits.shape[-1])
        if mask is None:
            mask = default_mask(logits.shape[-1])
        tok = choose(logits.masked_fill(~mask.to(logits.device), float("-inf")), row.cfg, row.gen)
        row.constraint.advance(tok)
        return tok


@torch.inference_mode()
def generate(
    model,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig | None = None,
    constraints: Sequence[Constraint] | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """Continue each prompt (a list of ids, usually starting with BOS). Returns the new ids of
    each row (EOS included when produced). `on_token(row, id)` streams ids as they come."""
    cfg = cfg or SamplingConfig()
    if not prompts or any(len(p) == 0 for p in prompts):
        raise OmnibyteError("every prompt needs at least one id (start it with BOS)")
    constraints = list(constraints) if constraints is not None else [TextOnly() for _ in prompts]
    batch = DecodeBatch(model, len(prompts), max(len(p) for p in prompts) + cfg.max_new)
    slots = [batch.add(p, cfg, c) for p, c in zip(prompts, constraints)]
    row_of = {s: i for i, s in enumerate(slots)}
    new: list[list[int]] = [[] for _ in prompts]
    while batch.rows:
        for slot, tok, _ in batch.step():
            new[row_of[slot]].append(tok)
            if on_token is not None:
                on_token(row_of[slot], tok)
    return new
