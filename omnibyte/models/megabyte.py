"""MEGABYTE (Yu et al., 2023, "MEGABYTE: Predicting Million-byte Sequences with Multiscale
Transformers"): fixed patches of P bytes, a large global transformer over patches and a small
local transformer inside each patch.

    bytes ──global embed (local dim each)──► concat P per patch ──► project to global dim
          ──► shift one patch (learned pad) ──► global transformer over patches (causal, RoPE)
          ──► split each patch vector into P slots ──► project slot to local dim   ─┐
    bytes ──local embed──► shift one byte (learned pad before byte 0) ───────────── + ┘
          ──► local transformer inside each patch (batched: (B·n_patches, P, local dim))
          ──► head ──► next-byte logits

Input adapters (omnibyte.adapters) add their features to each byte's embedding in both stages.

The global input for patch k holds bytes of patches < k only, and the local input at slot p of
patch k holds byte kP+p-1 (for slot 0, the previous patch's last byte) plus the global output
for patch k, and attends to slots < p of its patch, so position i sees only bytes before it: the
model predicts x_i from x_<i (the paper's factorisation).

Mapping to the omnibyte interface (logits[:, t] predicts ids[:, t+1] from ids[:, :t+1]): run
MEGABYTE on the sequence z = ids ++ [one more position] and keep its positions 1..T. Position
t+1 of z predicts z_{t+1} = ids[t+1] from z_{≤t} = ids[:, :t+1], exactly the contract. Position 0
(a prediction of ids[0] from nothing) is dropped, and z is padded with PAD up to a multiple of P;
padded positions lie after every kept position, so causality means they change nothing, and
their outputs are cut off before the loss (which ignores PAD targets anyway). A real 0x00 byte is
data like any other.

Departures from the paper: RoPE in both stacks instead of learned absolute position
embeddings (byte order inside a patch is the order of the concatenated slots), pre-norm SwiGLU
blocks with optional QK-norm from `omnibyte.nn`, and no cross-patch attention or convolutional
patch encoder (the paper's optional extensions). Three more, each a config flag that is on by
default because it lowers bits per byte at equal steps (all three off is the paper's layout):

- `patch_proj`: bytes are embedded at the local width and a patch's P embeddings projected to
  the global width (as MEGABYTE-pytorch does), instead of global dim/P dims per byte, concatenated;
- `carry_byte`: slot 0 of a patch reads the last byte of the previous patch instead of a learned
  pad, so the first byte of a patch is not predicted from the global model alone (with the pad,
  slot 0 was the worst-predicted slot by about a bit);
- `token_shift`: every sublayer of both stacks also sees half the channels of the previous
  position (RWKV's token shift, also in MEGABYTE-pytorch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from omnibyte.adapters import AdaptersConfig, AdapterState, InputAdapters
from omnibyte.errors import OmnibyteError
from omnibyte.format import N_BYTES, PAD, VOCAB_SIZE
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import register
from omnibyte.nn import KVCache, StackConfig, TransformerStack, stack_flops
from omnibyte.nn.cache import Rows, join_rows, row_index, take


@dataclass
class MegabyteConfig:
    vocab_size: int = VOCAB_SIZE  # byte ids + specials; must include PAD (internal padding)
    patch_size: int = 4  # P: bytes per patch
    global_model: StackConfig = field(default_factory=lambda: StackConfig(dim=64, n_layers=2, n_heads=4))
    local_model: StackConfig = field(default_factory=lambda: StackConfig(dim=32, n_layers=2, n_heads=2))
    mlp_ratio: float = 8 / 3
    qk_norm: bool = True
    rope_theta: float = 10000.0
    # Three departures from the paper, each on by default because each lowers bits per byte at
    # equal steps; all three off = the paper's layout.
    patch_proj: bool = True  # bytes embedded at local dim, a patch's P embeddings projected to the global dim
    carry_byte: bool = True  # slot 0 of a patch reads the previous patch's last byte, not a learned pad
    token_shift: bool = True  # each sublayer also sees the previous position (patch / byte), as in RWKV
    z_loss: float = 0.0
    adapters: AdaptersConfig = field(default_factory=AdaptersConfig)  # add to the byte embeddings of both stages

    def __post_init__(self):
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be ≥ 1, got {self.patch_size}")
        if self.vocab_size <= PAD:
            raise ValueError(f"vocab_size must be > {PAD} (byte ids and PAD), got {self.vocab_size}")
        self.global_model.check("global_model")
        self.local_model.check("local_model")
        if self.global_model.dim % self.patch_size:
            raise ValueError(f"global_model.dim {self.global_model.dim} must be a multiple of patch_size "
                             f"{self.patch_size} (each byte gets global_model.dim/patch_size of it)")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.adapters.any() and not self.patch_proj:
            raise ValueError("adapters need patch_proj = true (the byte embeddings of both stages at local_model.dim)")


@dataclass
class MegabyteState:
    """Decoding state of each row after its n ids (MEGABYTE position p predicts id p): the global
    cache holds patches 0..a of the row, a = n // P (the pad, then the completed patches); `g` is
    the global output for patch a, split into slots; `buf` holds the global embeddings of patch a's
    n % P ids so far; the local cache holds slots 0..n % P of patch a, and `local` the local
    model's inputs there (a call of several ids reads them again: it runs the local model over
    whole patches from slot 0, as training does)."""

    global_caches: KVCache
    local_caches: KVCache
    g: torch.Tensor  # (B, P, local dim)
    buf: torch.Tensor  # (B, P, global embedding width), the first n % P valid
    local: torch.Tensor  # (B, P, local dim), the first n % P + 1 valid
    n: list[int]  # ids fed, per row
    adapters: AdapterState | None = None


@register
class Megabyte(OmniModel):
    arch = "megabyte"
    config_cls = MegabyteConfig
    strided_eval = True

    def __init__(self, cfg: MegabyteConfig):
        super().__init__(cfg)
        P, G, L = cfg.patch_size, cfg.global_model, cfg.local_model
        stack_args = dict(mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm, rope_theta=cfg.rope_theta,
                          token_shift=cfg.token_shift)
        # patch embedder: P byte embeddings side by side make a patch vector, projected to the
        # global width (patch_proj) or, in the paper, each byte gets G.dim/P dims of it
        self.global_embed = nn.Embedding(cfg.vocab_size, L.dim if cfg.patch_proj else G.dim // P)
        self.patch_proj = nn.Linear(P * L.dim, G.dim, bias=False) if cfg.patch_proj else None
        self.global_pad = nn.Parameter(torch.empty(G.dim))  # stands for "patch -1"
        self.global_model = TransformerStack.from_config(G, **stack_args)
        # the paper's w^GL: one matrix maps every slot of a global output to the local width
        self.global_to_local = nn.Linear(G.dim // P, L.dim, bias=False)
        self.local_embed = nn.Embedding(cfg.vocab_size, L.dim)
        self.local_pad = nn.Parameter(torch.empty(L.dim))  # stands for "byte -1" of a patch
        self.local_model = TransformerStack.from_config(L, **stack_args)
        self.head = nn.Linear(L.dim, cfg.vocab_size, bias=False)
        for p in (self.global_embed.weight, self.global_pad, self.local_embed.weight, self.local_pad,
                  self.head.weight, *([self.patch_proj.weight] if cfg.patch_proj else [])):
            nn.init.normal_(p, std=0.02)
        # The global model's share of a local input starts ~10× below the byte embedding's, so the
        # local model first learns from the bytes it sees.
        nn.init.normal_(self.global_to_local.weight, std=0.002)
        self.adapters = InputAdapters(cfg.adapters, L.dim)

    # --- the two stages ---------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """ids (B, T) → their global and local byte embeddings, and what the adapters add to both."""
        g, loc = self.global_embed(ids), self.local_embed(ids)
        return g, loc, self.adapters.extra(ids, loc)

    def patch_vectors(self, e: torch.Tensor) -> torch.Tensor:
        """(B, m·P, ·) global byte embeddings → (B, m, global dim) patch vectors."""
        e = rearrange(e, "b (m p) d -> b m (p d)", p=self.cfg.patch_size)
        return self.patch_proj(e) if self.patch_proj is not None else e

    def run_global(self, x: torch.Tensor, caches: KVCache | None = None, rows: Rows = None,
                   advance: list[int] | None = None) -> torch.Tensor:
        """(B, m, global dim) global inputs → (B, m, P, local dim): each patch's output split into
        its P slots and projected to the local width. Decoding passes the caches' rows it feeds
        and how many of the m inputs each row keeps (the rest are spare)."""
        g = self.global_model(x, caches=caches, rows=rows, advance=advance)  # (B, m, global dim)
        return self.global_to_local(rearrange(g, "b m (p d) -> b m p d", p=self.cfg.patch_size))

    # --- training / scoring -----------------------------------------------------------------
    def forward(self, ids, targets=None, **extras) -> ModelOutput:
        B, T = ids.shape
        P = self.cfg.patch_size
        n = -(-(T + 1) // P)  # patches covering MEGABYTE positions 0..T
        z = F.pad(ids, (0, n * P - T), value=PAD)  # (B, n·P): position T and padding never feed a kept output
        e_global, e_local, extra = self.embed(z)
        if extra is not None:
            e_global, e_local = e_global + extra, e_local + extra

        # global: patch k sees patches < k (shift by one patch, learned pad in front)
        patches = self.patch_vectors(e_global)  # (B, n, global dim)
        g_in = torch.cat([self.global_pad.expand(B, 1, -1), patches[:, :-1]], dim=1)
        g = self.run_global(g_in)  # (B, n, P, local dim)

        # local: slot p of a patch sees bytes 0..p-1 of it (shift by one byte, learned pad in front)
        if self.cfg.carry_byte:  # byte j's local input is byte j-1, across patch boundaries too
            l_in = rearrange(torch.cat([self.local_pad.expand(B, 1, -1), e_local[:, :-1]], 1), "b (n p) d -> b n p d",
                             p=P)
        else:
            loc = rearrange(e_local, "b (n p) d -> b n p d", p=P)
            l_in = torch.cat([self.local_pad.expand(B, n, 1, -1), loc[:, :, :-1]], dim=2)
        l_in = l_in + g
        h = self.local_model(rearrange(l_in, "b n p d -> (b n) p d"))  # (B·n, P, local dim)

        h = rearrange(h, "(b n) p d -> b (n p) d", b=B)[:, 1:T + 1]  # positions 1..T ↔ targets ids[1..T]
        logits = self.head(h)  # (B, T, V)
        loss = self.loss(logits, targets) if targets is not None else None
        return ModelOutput(logits, loss)

    # --- incremental decoding ---------------------------------------------------------------
    def init_state(self, batch_size: int, max_len: int) -> MegabyteState:
        """Caches for up to `max_len` fed ids per row; every row starts empty (`clear_rows`)."""
        p = next(self.parameters())
        P, L = self.cfg.patch_size, self.cfg.local_model.dim
        state = MegabyteState(
            global_caches=self.global_model.new_caches(batch_size, max_len // P + 1, p.device, p.dtype),
            local_caches=self.local_model.new_caches(batch_size, P, p.device, p.dtype),
            g=p.new_zeros(batch_size, P, L), buf=p.new_zeros(batch_size, P, self.global_embed.embedding_dim),
            local=p.new_zeros(batch_size, P, L), n=[0] * batch_size,
            adapters=self.adapters.init_state(batch_size, max_len, p.device))
        self.clear_rows(state)
        return state

    @torch.no_grad()
    def clear_rows(self, state: MegabyteState, rows: Rows = None) -> None:
        """Rows back to no ids: the global model runs on its pad (patch 0's context), and position
        0's local input is the local pad plus slot 0 of that output."""
        rows = list(range(len(state.n))) if rows is None else list(rows)
        state.global_caches.clear(rows)
        state.local_caches.clear(rows)
        idx = row_index(rows, state.g.device)
        g = self.run_global(self.global_pad.expand(len(rows), 1, -1), state.global_caches, rows)[:, 0]
        state.g[idx] = g
        state.local[idx, 0] = self.local_pad + g[:, 0]
        self.local_model(state.local[idx, :1], caches=state.local_caches, rows=rows)  # slot 0, for later slots
        for r in rows:
            state.n[r] = 0
        self.adapters.clear_rows(state.adapters, rows)

    @torch.no_grad()
    def step(self, state: MegabyteState, ids: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        """Feed ids (R, T) to `rows` — a prompt or one id each — and return their (R, T, V) logits.

        Row r at n ids computes positions n+1..n+T. The global model steps once per patch the call
        completes, for the rows that complete one, each at its own patch index. One id per row: the
        local model takes one position per row from its cache (restarted where a patch begins), rows
        at different slots together. Several ids: it runs over every patch they touch from its slot
        0 (kept inputs, then new ones), as in training, then refills the cache with the last patch.
        """
        R, T = ids.shape
        P, dev = self.cfg.patch_size, ids.device
        rows_l = list(range(len(state.n))) if rows is None else list(rows)
        idx = row_index(rows, dev)
        n = [state.n[r] for r in rows_l]
        m = [k % P for k in n]  # ids of the active patch already fed
        done = [(k + T) // P for k in m]  # patches this call completes
        kept = [(k + 1) % P for k in m]  # kept local inputs of the first new position's patch
        e_global, prev = self.global_embed(ids), self.local_embed(ids)  # (R, T, ·)
        extra = self.adapters.step_extra(state.adapters, ids, prev, rows)
        if extra is not None:
            e_global, prev = e_global + extra, prev + extra
        seq = join_rows(state.buf[idx], m, e_global)  # global embeddings from the active patch's first id

        # global: completed patches as new positions, each row at its own patch index
        c = max(done)
        g = state.g[idx][:, None]  # (R, 1, P, local dim): the active patch's context
        if c:
            sel = [i for i, d in enumerate(done) if d]
            at = row_index(sel, dev)
            out = self.run_global(self.patch_vectors(seq[at, :c * P]), state.global_caches,
                                  [rows_l[i] for i in sel], [done[i] for i in sel])  # (R', c, P, local dim)
            if len(sel) < R:
                out = out.new_zeros(R, *out.shape[1:]).index_copy(0, torch.tensor(sel, device=dev), out)
            g = torch.cat([g, out], dim=1)  # (R, 1 + c, P, local dim)

        # local input of position j: previous byte (pad at slot 0) + slot j % P of its patch's g,
        # which is entry j - aP = m + 1 + i of the row's patches laid end to end
        if not self.cfg.carry_byte:
            first_slot = torch.tensor([[(k + 1 + i) % P == 0 for i in range(T)] for k in n], device=dev)
            prev = torch.where(first_slot[..., None], self.local_pad, prev)
        x = prev + take(rearrange(g, "r c p d -> r (c p) d"), [k + 1 for k in m], T)  # (R, T, local dim)
        loc = join_rows(state.local[idx], kept, x)  # local inputs from a patch's slot 0
        last = [(k + T) % P + 1 for k in n]  # positions of the last position's patch so far
        if T == 1:
            opened = [r for r, q in zip(rows_l, last) if q == 1]  # a new patch: its cache restarts
            if opened:
                state.local_caches.clear(opened)
            out = self.local_model(x, caches=state.local_caches, rows=rows)
        else:
            width = -(-loc.shape[1] // P) * P
            h = self.local_model(rearrange(F.pad(loc, (0, 0, 0, width - loc.shape[1])), "r (w p) d -> (r w) p d", p=P))
            out = take(rearrange(h, "(r w) p d -> r (w p) d", r=R), kept, T)

        # keep the last position's patch: its local inputs (and cache), its ids' global embeddings, its context
        state.local[idx, :max(last)] = take(loc, [k + T - q for k, q in zip(kept, last)], max(last))
        if T > 1:  # the cache restarts with slots 0..(n + T) % P of the last patch (spare ones not kept)
            state.local_caches.clear(rows_l)
            self.local_model(state.local[idx, :max(last)], caches=state.local_caches, rows=rows, advance=last)
        left = [(k + T) % P for k in m]  # ids of that patch so far
        if max(left):
            state.buf[idx, :max(left)] = take(seq, [d * P for d in done], max(left))
        state.g[idx] = take(g.flatten(2), done, 1).view_as(state.g[idx])
        for r, k in zip(rows_l, n):
            state.n[r] = k + T
        return self.head(out)

    # --- cost -------------------------------------------------------------------------------
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """FLOPs per byte for sequences of `seq_len` bytes (multiply-add = 2 FLOPs).

        global: the global stack over ceil(seq_len/P) patches, divided by P because one patch
        carries P bytes; projections: 2 · (global dim/P) · local dim per byte (w^GL), plus
        2 · local dim · global dim per byte with `patch_proj` (P·local dim → global dim once per
        patch of P bytes); local: the local stack over a P-byte sequence, and the head; the
        adapters. Embedding lookups are free. Training = 3 × forward.
        """
        cfg, P, G, L = self.cfg, self.cfg.patch_size, self.cfg.global_model, self.cfg.local_model
        glob = stack_flops(G, cfg.mlp_ratio, math.ceil(seq_len / P)) / P
        loc = stack_flops(L, cfg.mlp_ratio, P) + 2 * L.dim * cfg.vocab_size
        proj = 2 * (G.dim // P) * L.dim + (2 * L.dim * G.dim if cfg.patch_proj else 0)
        fwd = glob + loc + proj + self.adapters.flops_per_byte()
        return {"train": 3.0 * fwd, "infer": float(fwd)}

    def strided_nll_sums(self, ids: torch.Tensor, half: str = "first") -> tuple[float, int]:
        return strided_nll_sums(self, ids, half)


@torch.no_grad()
def strided_nll_sums(model: Megabyte, ids: torch.Tensor, half: str = "first") -> tuple[float, int]:
    """Score windows `ids` (B, L) — inputs ids[:, :-1], targets ids[:, 1:] — with the paper's
    strided inference; returns (NLL in bits over non-PAD targets, number of byte targets), the
    same sums as `omnibyte.nn.nll_sums`, so bits per byte = first / second.

    The window is scored twice: pass A as it is, pass B with its first h = P // 2 ids dropped,
    which moves every patch boundary by h, so each target sits in the first half of its patch in
    one pass and in the second half in the other. Each target is taken from one pass (2× the cost
    of plain scoring, still a proper next-byte distribution, since the choice depends on the
    position only):

    - half="first" (the paper, §4.2): the pass where the target is among the first slots of its
      patch. The paper found loss growing towards the end of a patch in its large models, where
      the weaker local model carries more of the prediction.
    - half="second": the pass where the target is among the last slots, i.e. where more bytes of
      its own patch are in the local model's context. Small, briefly trained models (the CPU
      configs here) have the opposite profile to the paper's, with the worst loss at slot 0, and
      score better this way.

    Targets ids[j] with j ≤ h, which pass B cannot predict, stay with pass A.
    """
    if half not in ("first", "second"):
        raise OmnibyteError(f"strided inference keeps the 'first' or 'second' half of each patch, got {half!r}")
    P, L = model.cfg.patch_size, ids.shape[1]
    targets = ids[:, 1:]  # target t is ids[t+1]: MEGABYTE position j = t + 1
    nll = _token_nll(model(ids[:, :-1]).logits, targets)  # (B, L-1), pass A
    h = P // 2
    if h and L - 1 > h:
        nll_b = _token_nll(model(ids[:, h:-1]).logits, targets[:, h:])  # targets j = h+1 .. L-1
        j = torch.arange(1, L, device=ids.device)
        late_in_a = j % P >= h
        use_b = (late_in_a if half == "first" else ~late_in_a) & (j > h)
        nll[:, h:] = torch.where(use_b[h:], nll_b, nll[:, h:])
    return nll.sum().item() / math.log(2), int((targets < N_BYTES).sum().item())


def _token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-target NLL in nats (B, T); PAD targets cost 0."""
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=PAD, reduction="none")
    return flat.view(targets.shape)
