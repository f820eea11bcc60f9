"""The one decoding loop for every model: prefill with the model's caches, then one id per step.

Rows of a batch never affect each other: all rows advance through the same absolute positions
(a row whose prompt is longer is fed its own prompt ids while shorter rows already sample),
and each row samples with its own generator seeded like a lone run. So a batched row gets
exactly what it would get alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import EOS, PAD
from omnibyte.generate.constraints import Constraint, TextOnly, default_mask
from omnibyte.memory import check_fits, decoding_bytes

# A prompt is fed in chunks of at most this many ids: attention over the cache then scores
# PREFILL_CHUNK × (prompt + new) pairs at a time, not prompt² (a long prompt fits in memory).
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
        drop[0] = False  # also when top_p underflows to 0 in the logits' dtype (e.g. 1e-300 in fp32)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


def choose(logits: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator | None) -> int:
    """One id from (V,) logits (already masked) by greedy or temperature/top-k/top-p sampling."""
    if cfg.temperature == 0:
        return int(logits.argmax())
    scaled = logits.float() / cfg.temperature
    if bool((scaled.isnan() | scaled.isposinf()).any()):
        # a temperature beyond fp32 (1e-300 divides to inf, 1e300 rounds to inf): take its limit,
        # greedy below 1 and uniform over the allowed ids above
        if cfg.temperature < 1:
            return int(logits.argmax())
        scaled = torch.zeros_like(scaled).masked_fill(logits.isneginf(), float("-inf"))
    probs = filter_logits(scaled, cfg.top_k, cfg.top_p).softmax(-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


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
    b = len(prompts)
    constraints = list(constraints) if constraints is not None else [TextOnly() for _ in range(b)]
    device = model.device
    lens = [len(p) for p in prompts]
    total = max(lens) + cfg.max_new
    gens = []
    for _ in range(b):
        g = None
        if cfg.seed is not None:
            g = torch.Generator().manual_seed(cfg.seed)
        gens.append(g)

    model.eval()
    n0 = min(lens)
    check_generation_fits(model, b, max(lens), cfg.max_new, min_prompt=n0)
    state = model.init_state(b, total)
    seqs = [list(map(int, p)) for p in prompts]
    new: list[list[int]] = [[] for _ in range(b)]
    done = [cfg.max_new == 0] * b
    for start in range(0, n0, PREFILL_CHUNK):
        chunk = torch.tensor([s[start:min(n0, start + PREFILL_CHUNK)] for s in seqs], device=device)
        logits = model.step(state, chunk)[:, -1]
    pos = n0
    while not all(done):
        if bool((logits.isnan() | logits.isposinf()).any()):  # from NaN weights: greedy would pick id 0
            raise OmnibyteError(f"the model's logits are NaN or +inf after {pos:,} ids: "
                                f"its weights or its input hold non-finite values")
        nxt = []
        for r in range(b):
            if pos < lens[r]:
                tok = seqs[r][pos]  # still inside this row's prompt
            elif done[r]:
                tok = PAD  # finished rows idle; nothing reads their outputs
            else:
                row = logits[r].float()
                mask = constraints[r].allowed(row.shape[-1])
                if mask is None:
                    mask = default_mask(row.shape[-1])
                row = row.masked_fill(~mask.to(row.device), float("-inf"))
                tok = choose(row, cfg, gens[r])
                constraints[r].advance(tok)
                new[r].append(tok)
                seqs[r].append(tok)
                if on_token is not None:
                    on_token(r, tok)
                if len(new[r]) >= cfg.max_new or (cfg.stop_at_eos and tok == EOS):
                    done[r] = True
            nxt.append(tok)
        pos += 1
        if all(done):
            break
        logits = model.step(state, torch.tensor(nxt, device=device)[:, None])[:, -1]
    return new
