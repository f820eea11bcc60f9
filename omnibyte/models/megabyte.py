"""MEGABYTE (Yu et al., 2023, "MEGABYTE: Predicting Million-byte Sequences with Multiscale
Transformers"): fixed patches of P bytes, a large global transformer over patches and a small
local transformer inside each patch.

    bytes ──global embed (local_dim each)──► concat P per patch ──► project to global_dim
          ──► shift one patch (learned pad) ──► global transformer over patches (causal, RoPE)
          ──► split each patch vector into P slots ──► project slot to local_dim   ─┐
    bytes ──local embed──► shift one byte (learned pad before byte 0) ───────────── + ┘
          ──► local transformer inside each patch (batched: (B·n_patches, P, local_dim))
          ──► head ──► next-byte logits

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
default because it lowered bits per byte at equal steps on the default corpus (measured in
benchmarks/megabyte_variants.py; all three off is the paper's layout):

- `patch_proj`: bytes are embedded at local_dim and a patch's P embeddings projected to
  global_dim (as MEGABYTE-pytorch does), instead of global_dim/P dims per byte, concatenated;
- `carry_byte`: slot 0 of a patch reads the last byte of the previous patch instead of a learned
  pad, so the first byte of a patch is not predicted from the global model alone (with the pad,
  slot 0 was the worst-predicted slot by about a bit);
- `token_shift`: every sublayer of both stacks also sees half the channels of the previous
  position (RWKV's token shift, also in MEGABYTE-pytorch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from omnibyte.errors import OmnibyteError
from omnibyte.format import N_BYTES, PAD, VOCAB_SIZE
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import register
from omnibyte.models.transformer import TransformerConfig, transformer_flops
from omnibyte.nn import KVCache, TransformerStack, lm_loss


@dataclass
class MegabyteConfig:
    vocab_size: int = VOCAB_SIZE  # byte ids + specials; must include PAD (internal padding)
    patch_size: int = 4  # P: bytes per patch
    global_dim: int = 64  # width of the global model = P × per-byte global embedding
    global_layers: int = 2
    global_heads: int = 4
    local_dim: int = 32
    local_layers: int = 2
    local_heads: int = 2
    mlp_ratio: float = 8 / 3
    qk_norm: bool = True
    rope_theta: float = 10000.0
    # Three departures from the paper, each on by default because each lowers bits per byte at
    # equal steps (benchmarks/megabyte_variants.py); all three off = the paper's layout.
    patch_proj: bool = True  # bytes embedded at local_dim, a patch's P embeddings projected to global_dim
    carry_byte: bool = True  # slot 0 of a patch reads the previous patch's last byte, not a learned pad
    token_shift: bool = True  # each sublayer also sees the previous position (patch / byte), as in RWKV
    z_loss: float = 0.0

    def __post_init__(self):
        for name in ("patch_size", "global_dim", "global_layers", "global_heads", "local_dim",
                     "local_layers", "local_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.vocab_size <= PAD:
            raise ValueError(f"vocab_size must be > {PAD} (byte ids and PAD), got {self.vocab_size}")
        if self.global_dim % self.patch_size:
            raise ValueError(f"global_dim {self.global_dim} must be a multiple of patch_size "
                             f"{self.patch_size} (each byte gets global_dim/patch_size of it)")
        for stage in ("global", "local"):
            dim, heads = getattr(self, f"{stage}_dim"), getattr(self, f"{stage}_heads")
            if dim % heads or (dim // heads) % 2:
                raise ValueError(f"{stage}_dim {dim} must split into {heads} heads of even size")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")

    def stage(self, which: str) -> TransformerConfig:
        """The global or local stack as a TransformerConfig (for FLOP counting)."""
        return TransformerConfig(vocab_size=self.vocab_size, dim=getattr(self, f"{which}_dim"),
                                 n_layers=getattr(self, f"{which}_layers"),
                                 n_heads=getattr(self, f"{which}_heads"), mlp_ratio=self.mlp_ratio,
                                 qk_norm=self.qk_norm, rope_theta=self.rope_theta)


@dataclass
class MegabyteState:
    """Decoding state after n ids were fed: the active patch a = n // P holds buf (its n % P ids
    so far); the global cache holds patches 0..a (pad, then completed patches); `g` is the global
    output for patch a, already split into slots; the local cache holds slots 0..n % P of patch a."""

    global_caches: list[KVCache]
    local_caches: list[KVCache]
    g: torch.Tensor  # (B, P, local_dim)
    buf: torch.Tensor  # (B, n % P) ids
    n: int = 0


@register
class Megabyte(OmniModel):
    arch = "megabyte"
    config_cls = MegabyteConfig
    # checkpoints saved before these flags existed were trained with the paper's layout
    saved_defaults: ClassVar[dict] = {"patch_proj": False, "carry_byte": False, "token_shift": False}

    def __init__(self, cfg: MegabyteConfig):
        super().__init__(cfg)
        P = cfg.patch_size
        # patch embedder: P byte embeddings side by side make a patch vector, projected to
        # global_dim (patch_proj) or, in the paper, each byte gets global_dim/P dims of it
        self.global_embed = nn.Embedding(cfg.vocab_size, cfg.local_dim if cfg.patch_proj else cfg.global_dim // P)
        self.patch_proj = nn.Linear(P * cfg.local_dim, cfg.global_dim, bias=False) if cfg.patch_proj else None
        self.global_pad = nn.Parameter(torch.empty(cfg.global_dim))  # stands for "patch -1"
        self.global_model = TransformerStack(cfg.global_dim, cfg.global_layers, cfg.global_heads,
                                             cfg.mlp_ratio, cfg.qk_norm, cfg.rope_theta,
                                             token_shift=cfg.token_shift)
        # the paper's w^GL: one matrix maps every slot of a global output to the local width
        self.global_to_local = nn.Linear(cfg.global_dim // P, cfg.local_dim, bias=False)
        self.local_embed = nn.Embedding(cfg.vocab_size, cfg.local_dim)
        self.local_pad = nn.Parameter(torch.empty(cfg.local_dim))  # stands for "byte -1" of a patch
        self.local_model = TransformerStack(cfg.local_dim, cfg.local_layers, cfg.local_heads,
                                            cfg.mlp_ratio, cfg.qk_norm, cfg.rope_theta,
                                            token_shift=cfg.token_shift)
        self.head = nn.Linear(cfg.local_dim, cfg.vocab_size, bias=False)
        for p in (self.global_embed.weight, self.global_pad, self.local_embed.weight, self.local_pad,
                  self.head.weight, *([self.patch_proj.weight] if cfg.patch_proj else [])):
            nn.init.normal_(p, std=0.02)
        # The global model's share of a local input starts ~10× below the byte embedding's, so the
        # local model first learns from the bytes it sees (a small effect: 2.161 against 2.173
        # bits/byte with std 0.02, after 300 steps in benchmarks/megabyte_variants.py).
        nn.init.normal_(self.global_to_local.weight, std=0.002)

    # --- the two stages ---------------------------------------------------------------------
    def patch_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, m·P) ids → (B, m, global_dim) patch vectors."""
        e = rearrange(self.global_embed(ids), "b (m p) d -> b m (p d)", p=self.cfg.patch_size)
        return self.patch_proj(e) if self.patch_proj is not None else e

    def run_global(self, x: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """(B, m, global_dim) global inputs → (B, m, P, local_dim): each patch's output split into
        its P slots and projected to the local width."""
        g = self.global_model(x, caches=caches)  # (B, m, global_dim)
        return self.global_to_local(rearrange(g, "b m (p d) -> b m p d", p=self.cfg.patch_size))

    # --- training / scoring -----------------------------------------------------------------
    def forward(self, ids, targets=None, **extras) -> ModelOutput:
        B, T = ids.shape
        P = self.cfg.patch_size
        n = -(-(T + 1) // P)  # patches covering MEGABYTE positions 0..T
        z = F.pad(ids, (0, n * P - T), value=PAD)  # (B, n·P): position T and padding never feed a kept output

        # global: patch k sees patches < k (shift by one patch, learned pad in front)
        patches = self.patch_embed(z)  # (B, n, global_dim)
        g_in = torch.cat([self.global_pad.expand(B, 1, -1), patches[:, :-1]], dim=1)
        g = self.run_global(g_in)  # (B, n, P, local_dim)

        # local: slot p of a patch sees bytes 0..p-1 of it (shift by one byte, learned pad in front)
        if self.cfg.carry_byte:  # byte j's local input is byte j-1, across patch boundaries too
            e = self.local_embed(z)
            l_in = rearrange(torch.cat([self.local_pad.expand(B, 1, -1), e[:, :-1]], 1), "b (n p) d -> b n p d", p=P)
        else:
            loc = rearrange(self.local_embed(z), "b (n p) d -> b n p d", p=P)
            l_in = torch.cat([self.local_pad.expand(B, n, 1, -1), loc[:, :, :-1]], dim=2)
        l_in = l_in + g
        h = self.local_model(rearrange(l_in, "b n p d -> (b n) p d"))  # (B·n, P, local_dim)

        h = rearrange(h, "(b n) p d -> b (n p) d", b=B)[:, 1:T + 1]  # positions 1..T ↔ targets ids[1..T]
        logits = self.head(h)  # (B, T, V)
        loss = lm_loss(logits, targets, self.cfg.z_loss) if targets is not None else None
        return ModelOutput(logits, loss)

    # --- incremental decoding ---------------------------------------------------------------
    def init_state(self, batch_size: int, max_len: int) -> MegabyteState:
        """Caches for up to `max_len` fed ids; runs the global model on its pad (patch 0's
        context) and the local model on slot 0 of patch 0, whose keys later slots attend to."""
        p = next(self.parameters())
        P = self.cfg.patch_size
        state = MegabyteState(
            global_caches=self.global_model.new_caches(batch_size, max_len // P + 1, p.device, p.dtype),
            local_caches=self.local_model.new_caches(batch_size, P, p.device, p.dtype),
            g=p.new_zeros(0), buf=torch.zeros(batch_size, 0, dtype=torch.long, device=p.device))
        g = self.run_global(self.global_pad.expand(batch_size, 1, -1), state.global_caches)
        state.g = g[:, 0]  # (B, P, local_dim)
        self.local_model(self.local_pad + state.g[:, :1], caches=state.local_caches)
        return state

    def step(self, state: MegabyteState, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids (B, T) — a prompt or one id — and return their (B, T, V) logits.

        The T new positions n+1..n+T fall into three runs: the rest of the active patch a (local
        cache continued), whole patches in between (local model batched over them, no cache) and
        the last, partial patch (local cache restarted). The global model steps once per patch
        this call completes, all of them in one cached call.
        """
        B, T = ids.shape
        P = self.cfg.patch_size
        n, a = state.n, state.n // P
        full = torch.cat([state.buf, ids], dim=1)  # ids z[aP : n+T]
        c = (n + T) // P - a  # patches completed by this call
        g = state.g[:, None]  # (B, 1, P, local_dim): patch a
        if c:
            g = torch.cat([g, self.run_global(self.patch_embed(full[:, :c * P]), state.global_caches)], 1)

        # local input of position j: previous byte (pad at slot 0) + slot j % P of its patch's g
        j = torch.arange(n + 1, n + T + 1, device=ids.device)
        slot, patch = j % P, j // P - a
        prev = self.local_embed(ids)  # (B, T, local_dim)
        if not self.cfg.carry_byte:
            prev = torch.where((slot == 0)[:, None], self.local_pad, prev)
        x = prev + g[:, patch, slot]

        t1 = min(T, (a + 1) * P - 1 - n)  # positions left in patch a
        out = []
        if t1:
            out.append(self.local_model(x[:, :t1], caches=state.local_caches))
        if c:
            mid = x[:, t1:t1 + (c - 1) * P]
            if c > 1:
                h = self.local_model(rearrange(mid, "b (m p) d -> (b m) p d", p=P))
                out.append(rearrange(h, "(b m) p d -> b (m p) d", b=B))
            for cache in state.local_caches:
                cache.reset()
            out.append(self.local_model(x[:, t1 + (c - 1) * P:], caches=state.local_caches))

        state.n, state.buf, state.g = n + T, full[:, c * P:], g[:, -1]
        return self.head(torch.cat(out, dim=1))

    # --- cost -------------------------------------------------------------------------------
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """FLOPs per byte for sequences of `seq_len` bytes (multiply-add = 2 FLOPs).

        global: `transformer_flops` of the global stack over ceil(seq_len/P) patches (attention
        included, no head), divided by P because one patch carries P bytes;
        projections: 2 · (global_dim/P) · local_dim per byte (w^GL), plus 2 · local_dim · global_dim
        per byte with `patch_proj` (P·local_dim → global_dim once per patch of P bytes);
        local: `transformer_flops` of the local stack over a P-byte sequence, with the head.
        Embedding lookups are free. Training = 3 × forward.
        """
        cfg, P = self.cfg, self.cfg.patch_size
        glob = transformer_flops(cfg.stage("global"), math.ceil(seq_len / P), with_head=False)
        loc = transformer_flops(cfg.stage("local"), P, with_head=True)
        proj = 2 * (cfg.global_dim // P) * cfg.local_dim + (2 * cfg.local_dim * cfg.global_dim if cfg.patch_proj else 0)
        return {k: glob[k] / P + loc[k] + (3.0 if k == "train" else 1.0) * proj for k in ("train", "infer")}

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
