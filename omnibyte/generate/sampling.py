"""The one decoding loop for every model: prefill with the model's caches, then one id per step.

`DecodeBatch` holds rows that decode side by side in one model state. Rows join (`add`) and
leave (`drop`, or when they finish) between steps; each step feeds every row's prompt a chunk
further and gives every prompted row one new id, all rows' new ids in one model call. Rows never
affect each other: each stands at its own position in the state and samples with its own
generator, seeded like a lone run, so a row gets exactly what it would get decoded alone.
`generate` runs a fixed set of prompts through one, after checking up front that they fit in
memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS
from omnibyte.generate.constraints import Constraint, TextOnly, default_mask
from omnibyte.memory import check_fits, decoding_bytes

# A prompt is fed in chunks of at most this many ids: attention over the cache then scores
# PREFILL_CHUNK × (prompt + new) pairs at a time, not prompt² (a long prompt fits in memory), and a
# row's long prompt does not stall the other rows of a batch for long.
PREFILL_CHUNK = 512


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
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise OmnibyteError(f"temperature must be a finite number ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise OmnibyteError(f"top-k must be ≥ 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise OmnibyteError(f"top-p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | Sequence[int] = 0,
                  top_p: float | Sequence[float] = 1.0) -> torch.Tensor:
    """Keep the top-k ids and the smallest set whose probability reaches top_p; others → -inf.
    logits: (V,) or (R, V), already divided by the temperature; top_k (0 = off) and top_p (1 =
    off) are one value, or one per row. Each row is filtered as it would be alone."""
    rows = logits.reshape(-1, logits.shape[-1])  # (R, V)
    n, v = rows.shape
    ks = list(top_k) if isinstance(top_k, Sequence) else [top_k] * n
    ps = list(top_p) if isinstance(top_p, Sequence) else [top_p] * n
    if any(0 < k < v for k in ks):
        at = torch.tensor([min(max(k, 1), v) - 1 for k in ks], device=rows.device)[:, None]
        kth = rows.sort(dim=-1, descending=True).values.gather(1, at)  # (R, 1): each row's k-th largest
        off = torch.tensor([not 0 < k < v for k in ks], device=rows.device)[:, None]
        rows = rows.masked_fill((rows < kth) & ~off, float("-inf"))
    if any(p < 1.0 for p in ps):
        sorted_logits, order = torch.sort(rows, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop an id when the mass before it already reaches top_p (the first id always stays)
        p = torch.tensor(ps, device=rows.device, dtype=probs.dtype)[:, None]
        drop = (probs.cumsum(-1) - probs >= p) & (p < 1.0)
        drop[:, 0] = False  # also when top_p underflows to 0 in the logits' dtype (e.g. 1e-300 in fp32)
        rows = rows.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), float("-inf"))
    return rows.reshape(logits.shape)


def choose_rows(logits: torch.Tensor, cfgs: Sequence[SamplingConfig],
                gens: Sequence[torch.Generator | None]) -> list[int]:
    """One id per row of (R, V) logits (already masked), each by its own row's settings and
    generator: greedy, or temperature/top-k/top-p sampling. The filters run on all rows at once;
    a row's id is the one it would get alone."""
    out = [0] * len(cfgs)
    greedy = [i for i, c in enumerate(cfgs) if c.temperature == 0]
    if greedy:
        best = logits[greedy].argmax(-1).tolist() if len(greedy) < len(cfgs) else logits.argmax(-1).tolist()
        for i, tok in zip(greedy, best):
            out[i] = tok
    sampled = [i for i, c in enumerate(cfgs) if c.temperature > 0]
    if sampled:
        temps = torch.tensor([cfgs[i].temperature for i in sampled], device=logits.device)[:, None]
        rows = logits[sampled].float() / temps
        # a temperature beyond fp32 (1e-300 divides to inf, 1e300 rounds to inf): take its limit,
        # greedy below 1 and uniform over the allowed ids above
        beyond = (rows.isnan() | rows.isposinf()).any(-1).tolist()
        keep = []
        for j, i in enumerate(sampled):
            if not beyond[j]:
                keep.append(j)
            elif cfgs[i].temperature < 1:
                out[i] = int(logits[i].argmax())
            else:
                rows[j] = torch.zeros_like(rows[j]).masked_fill(logits[i].isneginf(), float("-inf"))
                keep.append(j)
        if len(keep) < len(sampled):
            rows, sampled = rows[keep], [sampled[j] for j in keep]
    if sampled:
        probs = filter_logits(rows, [cfgs[i].top_k for i in sampled], [cfgs[i].top_p for i in sampled]).softmax(-1)
        probs = probs.cpu()
        # what torch.multinomial(probs[j], 1, generator) does, for all rows at once: the argmax of
        # probs / Exp(1) noise, each row's noise drawn from its own generator
        noise = torch.empty_like(probs)
        for j, i in enumerate(sampled):
            noise[j].exponential_(1, generator=gens[i])
        for i, tok in zip(sampled, (probs / noise).argmax(-1).tolist()):
            out[i] = tok
    return out


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
        ready = [(r, row) for r, row in sorted(self.rows.items()) if row.logits is not None and not row.done]
        if ready:
            logits = torch.stack([row.logits for _, row in ready]).float()  # (R, V)
            bad = (logits.isnan() | logits.isposinf()).any(-1)
            if bool(bad.any()):  # from NaN weights: greedy would pick id 0
                row = ready[int(bad.nonzero()[0, 0])][1]
                raise OmnibyteError(f"the model's logits are NaN or +inf after {len(row.prompt) + len(row.new):,} ids: "
                                    f"its weights or its input hold non-finite values")
            masks = torch.stack([self._allowed(row, logits.shape[-1]) for _, row in ready]).to(logits.device)
            toks = choose_rows(logits.masked_fill(~masks, float("-inf")), [row.cfg for _, row in ready],
                               [row.gen for _, row in ready])
            for (r, row), tok in zip(ready, toks):
                row.constraint.advance(tok)
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

    @staticmethod
    def _allowed(row: _Row, vocab_size: int) -> torch.Tensor:
        mask = row.constraint.allowed(vocab_size)
        return default_mask(vocab_size) if mask is None else mask


def check_generation_fits(model, rows: int, prompt_len: int, max_new: int, min_prompt: int | None = None) -> None:
    """A one-line error when decoding `rows` rows of a `prompt_len`-id prompt plus `max_new` ids
    needs more memory than the model's device has available (see omnibyte.memory)."""
    first = prompt_len if min_prompt is None else min_prompt
    check_fits(decoding_bytes(model, rows, prompt_len + max_new, min(first, PREFILL_CHUNK)), model.device,
               f"generating {rows} × ({prompt_len:,} prompt + {max_new:,} new) ids",
               "ask for fewer new bytes, a smaller image or shorter audio, or give a shorter prompt")


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
    lens = [len(p) for p in prompts]
    check_generation_fits(model, len(prompts), max(lens), cfg.max_new, min_prompt=min(lens))
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
