"""Byte Latent Transformer (BLT, Pagnoni et al. 2024): a large transformer over patches of bytes,
small ones over the bytes themselves.

    ids (B, T) ──patcher (static | space | entropy)──► patch starts (B, T)
      │
      ├─ byte + hash n-gram embeddings ─► local encoder (windowed causal)  h (B, T, encoder.dim)
      │     └─ cross-attention pooling: k queries per patch read that patch's bytes
      │        ─► (B, P, k·encoder.dim) ─► linear (latent_proj) ─► (B, P, latent.dim)
      ├─ latent global transformer over patches (causal, within a document)  z (B, P, latent.dim)
      └─ local decoder: byte t reads the latent output of the patch BEFORE its own (a learned
         start vector for a document's first patch) by cross-attention, then a windowed
         causal byte transformer ─► logits (B, T, V)

Why the decoder reads the previous patch: a patch's latent vector depends on all its bytes, so
a byte may only use patches that were complete before it; whether byte t opens a patch depends
on ids[:, :t+1] alone. So logits[:, t] depends on ids[:, :t+1] only — the contract of every
omnibyte model — and generation can decide patches online.

Departures from the paper: one pooling cross-attention after the encoder and one reading
cross-attention before the decoder, instead of one per layer; local layers may see across a
document boundary within their window (like the byte transformer), only the latent model is
document-masked. The decoder continues the encoder's byte states, so both have one width.

The released BLTs (Meta's checkpoints, and transformers' port of them) are this figure with other
settings, so their weights run here unchanged (`omnibyte import`, `omnibyte.interop`):
`decoder_reads = "complete"` — byte t reads the last patch complete at t, its own patch when t
ends it. That needs to know at t whether t+1 opens a patch, which entropy patching without markers
knows one id ahead (the entropy of id t+1 comes from the entropy model's output at t), and still
depends on ids[:, :t+1] only. Their decoder reads the latent before each of its layers
(`read_every_layer`); their cross-attentions add the input back twice (`cross_residual = 2`);
their encoder and latent stacks end without a norm (`final_norm = false`); their latent model
takes the k pooled vectors side by side, projected only when k·encoder.dim ≠ latent.dim
(`latent_proj`); and their hash n-grams, patch rules, norm epsilon, RoPE theta and MLP widths are
their own (`ngrams.hash = "blt"`, `patcher.markers`, `patcher.lone_first`, `norm_eps`,
`rope_theta`, each stack's `mlp_hidden`). They have no start vector: a byte reads one only where a
document begins inside a row (the latent model stays document-masked).

The patcher arrives built (`omnibyte.models.build_model` makes it, with its entropy model);
input adapters (`omnibyte.adapters`) add to the byte embeddings.

Generation (`init_state`/`step`) keeps a KV cache in each transformer (entropy model, encoder,
latent, decoder). When a patch closes (the next id opens a new one; with decoder_reads "complete"
known one id earlier) it is pooled and fed to the latent model as one new position, the row's
patch index. Rows are independent: each has its own byte position and its own number of closed
patches, so rows that close patches at different times (or that joined the batch at different
times) share one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from omnibyte.adapters import AdaptersConfig, AdapterState, InputAdapters
from omnibyte.errors import OmnibyteError
from omnibyte.format import VOCAB_SIZE
from omnibyte.media.layout import document_ids
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import register
from omnibyte.nn import KVCache, StackConfig, TransformerStack, causal_mask, stack_flops
from omnibyte.nn.cache import Rows, first_capacity, grow, row_index
from omnibyte.nn.cross_attention import CrossBlock
from omnibyte.nn.hash_ngram import HashNgramEmbedding, NgramConfig
from omnibyte.patching import Patcher, PatcherConfig, PatchStream, patch_ids

# --------------------------------------------------------------------------- config


@dataclass
class BLTConfig:
    vocab_size: int = VOCAB_SIZE
    # the three stacks; the local encoder and decoder share one width, the latent model is the large one
    encoder: StackConfig = field(default_factory=lambda: StackConfig(dim=32, n_layers=1, n_heads=2, window=64))
    latent: StackConfig = field(default_factory=lambda: StackConfig(dim=64, n_layers=2, n_heads=4))
    decoder: StackConfig = field(default_factory=lambda: StackConfig(dim=32, n_layers=2, n_heads=2, window=64))
    cross_attn_k: int = 2  # queries per patch; the latent model reads k·encoder.dim → latent.dim
    latent_proj: bool = True  # project k·encoder.dim to latent.dim; false: they must be equal (the released BLT-1B)
    ngrams: NgramConfig = field(default_factory=NgramConfig)  # hash n-gram embeddings
    patcher: PatcherConfig = field(default_factory=PatcherConfig)
    mlp_ratio: float = 8 / 3
    qk_norm: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6  # every RMSNorm's epsilon (the released BLTs: 1e-5)
    z_loss: float = 0.0
    adapters: AdaptersConfig = field(default_factory=AdaptersConfig)
    # where bytes and patches meet (the module docstring says when to change these)
    decoder_reads: str = "previous"  # byte t reads the patch before its own; "complete": the last complete at t
    read_every_layer: bool = False  # the decoder reads the latent before each of its layers, not the first only
    cross_residual: int = 1  # a cross-attention's input is added back this many times (1 or 2)

    def __post_init__(self):
        if self.vocab_size < 1 or self.cross_attn_k < 1:
            raise ValueError(f"vocab_size and cross_attn_k must be ≥ 1, got {self.vocab_size} and {self.cross_attn_k}")
        if self.decoder_reads not in ("previous", "complete"):
            raise ValueError(f"decoder_reads must be 'previous' or 'complete', got {self.decoder_reads!r}")
        if self.decoder_reads == "complete" and not self.patcher.looks_ahead:
            raise ValueError("decoder_reads 'complete' needs patch boundaries known one id ahead: patcher.kind "
                             "'entropy' with patcher.markers false and no patcher.image_rows or audio_frame")
        if self.read_every_layer and self.decoder.n_layers < 1:
            raise ValueError("read_every_layer needs decoder.n_layers ≥ 1")
        if self.cross_residual not in (1, 2):
            raise ValueError(f"cross_residual must be 1 or 2, got {self.cross_residual}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        if not self.latent_proj and self.cross_attn_k * self.encoder.dim != self.latent.dim:
            raise ValueError(f"latent_proj false needs cross_attn_k × encoder.dim = latent.dim, got "
                             f"{self.cross_attn_k} × {self.encoder.dim} and {self.latent.dim}")
        if self.ngrams.hash == "blt" and self.vocab_size > VOCAB_SIZE:
            raise ValueError(f"ngrams.hash 'blt' hashes byte-format ids: vocab_size must be ≤ {VOCAB_SIZE}")
        # the local stacks may be empty: hash n-gram embeddings already give each byte its local
        # context, and the cross-attentions still pool bytes into patches and read them back
        self.encoder.check("encoder", min_layers=0)
        self.decoder.check("decoder", min_layers=0)
        self.latent.check("latent")
        if self.decoder.dim != self.encoder.dim:
            raise ValueError(f"decoder.dim {self.decoder.dim} must equal encoder.dim {self.encoder.dim}: the decoder "
                             f"continues the encoder's byte states")
        if self.latent.window:
            raise ValueError("latent.window must be 0: the latent model attends to every earlier patch of its document")


# --------------------------------------------------------------------------- helpers


def patch_documents(doc: torch.Tensor, pid: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(B, P) document of each patch (that of its first byte); -1 for padding patches."""
    out = torch.full((doc.shape[0], n_patches), -1, dtype=doc.dtype, device=doc.device)
    return out.scatter_reduce(1, pid, doc, "amin", include_self=False)


def decoder_slots(read: torch.Tensor, pdoc: torch.Tensor, doc: torch.Tensor) -> torch.Tensor:
    """(B, T) which latent output each byte reads: slot p+1 holds patch p's output, slot 0 the
    start vector. Byte t reads patch read[t] (-1: none yet) if that patch began in the byte's
    document doc[t], else the start vector (a document's first patch has no patch before it)."""
    same_doc = pdoc.gather(1, read.clamp_min(0)) == doc
    return torch.where((read >= 0) & same_doc, read + 1, torch.zeros_like(read))


# --------------------------------------------------------------------------- model


@dataclass
class BLTState:
    """Everything `step` needs, per row: its bytes and its patches."""

    lengths: list[int]  # bytes seen per row
    ids: torch.Tensor  # (B, L) ids so far (hash n-grams need the last few)
    h: torch.Tensor  # (B, L, encoder.dim) encoder outputs (a closing patch is pooled from them)
    pid: torch.Tensor  # (B, L) patch of each byte
    patch_start: torch.Tensor  # (B, L+1) first byte of each patch (last column: scratch)
    patch_doc: torch.Tensor  # (B, L+1) document of each patch (last column: scratch)
    n_open: torch.Tensor  # (B,) patches begun
    n_closed: torch.Tensor  # (B,) patches fed to the latent model (its cache holds them in order)
    doc: torch.Tensor  # (B,) current document index
    enc_caches: KVCache
    lat_caches: KVCache
    dec_caches: KVCache
    dec_k: list  # per reader (B, S, k, H, D): the decoder's keys per slot (0 = start, p+1 = patch p; last:
    dec_v: list  # scratch); S grows with the patches closed, up to L+2
    patches: PatchStream
    adapters: AdapterState | None = None


@register
class BLT(OmniModel):
    arch = "blt"
    config_cls = BLTConfig

    def __init__(self, cfg: BLTConfig, patcher: Patcher | None = None):
        super().__init__(cfg)
        dl, dg, k = cfg.encoder.dim, cfg.latent.dim, cfg.cross_attn_k
        common = dict(mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm, rope_theta=cfg.rope_theta, norm_eps=cfg.norm_eps)
        cross = dict(qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps, residual=cfg.cross_residual)

        # bytes → local encoder
        ng = cfg.ngrams
        self.embed = HashNgramEmbedding(cfg.vocab_size, dl, ng.sizes, ng.buckets, ng.base, ng.dropout, ng.hash,
                                        ng.functions)
        self.adapters = InputAdapters(cfg.adapters, dl)
        self.encoder = TransformerStack.from_config(cfg.encoder, **common)
        # bytes → patches: k queries per patch, initialised from the max-pooled byte states
        self.pool_init = nn.Linear(dl, k * dl, bias=False)
        self.pooler = CrossBlock(dl, cfg.encoder.n_heads, **cross)
        self.to_latent = nn.Linear(k * dl, dg, bias=False) if cfg.latent_proj else nn.Identity()
        # patches → latent global transformer
        self.latent = TransformerStack.from_config(cfg.latent, **common)
        # latent → bytes: each byte reads k vectors made from the output of the patch before its own
        # (decoder_reads), before the decoder's first layer (read_every_layer: before each, a reader each)
        self.start = nn.Parameter(torch.zeros(dg))
        self.from_latent = nn.Linear(dg, k * dl, bias=False)
        self.reader = CrossBlock(dl, cfg.decoder.n_heads, **cross)
        n_more = cfg.decoder.n_layers - 1 if cfg.read_every_layer else 0
        self.layer_readers = nn.ModuleList(CrossBlock(dl, cfg.decoder.n_heads, **cross) for _ in range(n_more))
        self.decoder = TransformerStack.from_config(cfg.decoder, **common)
        self.head = nn.Linear(dl, cfg.vocab_size, bias=False)
        for lin in (self.pool_init, self.to_latent, self.from_latent, self.head):
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.02)
        nn.init.normal_(self.start, std=0.02)

        self.patcher = patcher if patcher is not None else Patcher(cfg.patcher)
        em = self.patcher.entropy_model
        if em is not None and em.cfg.vocab_size != cfg.vocab_size:
            raise OmnibyteError(f"entropy model vocab {em.cfg.vocab_size} differs from the BLT's {cfg.vocab_size}")

    # --- the figure, top to bottom ---------------------------------------------------------
    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                entropies: torch.Tensor | None = None) -> ModelOutput:
        """`entropies` (B, T), or (B, T+1) with the entropy of the id after the last, may come
        precomputed; reading "complete" patches needs that last one (or the entropy model runs)."""
        b, t = ids.shape
        ahead = self.cfg.decoder_reads == "complete"
        starts = self.patcher(ids, entropies, ahead=ahead)  # (B, T) bool; ahead: (B, T+1), the next id too
        pid = patch_ids(starts)  # (B, T[+1]) patch of each byte
        n_patches = int(pid[:, :t].max()) + 1  # pad every row to the batch's most patches
        h = self.encoder(self.adapters(ids, self.embed(ids)))  # (B, T, dl)
        patches = self.pool_patches(h, pid[:, :t], n_patches)  # (B, P, dg)
        doc = document_ids(ids)
        pdoc = patch_documents(doc, pid[:, :t], n_patches)  # (B, P)
        mask = None  # plain causal (the fast kernel) unless a row holds two documents
        if bool((doc[:, -1] != doc[:, 0]).any()):
            mask = (causal_mask(n_patches, n_patches, ids.device) & (pdoc[:, :, None] == pdoc[:, None, :]))[:, None]
        z = self.latent(patches, mask=mask)  # (B, P, dg)
        z = torch.cat([self.start.expand(b, 1, -1).to(z.dtype), z], dim=1)  # (B, 1+P, dg): slot 0 = start
        read = pid[:, 1:] - 1 if ahead else pid - 1  # (B, T) patch each byte reads: before the next byte's, or its own
        logits = self.decode(h, self.decoder_kv(z), decoder_slots(read, pdoc, doc))  # (B, T, V)
        loss = self.loss(logits, targets) if targets is not None else None
        return ModelOutput(logits, loss)

    def pool_patches(self, h: torch.Tensor, pid: torch.Tensor, n_patches: int) -> torch.Tensor:
        """Byte states h (B, T, dl) grouped by patch pid (B, T) → patch vectors (B, n_patches, dg)."""
        b, _, dl = h.shape
        pooled = h.new_zeros(b, n_patches, dl).scatter_reduce(
            1, pid[..., None].expand_as(h), h, "amax", include_self=False)  # (B, P, dl)
        q = rearrange(self.pool_init(pooled), "b p (k d) -> b p k d", k=self.cfg.cross_attn_k)
        q = self.pooler.pool(q, *self.pooler.kv(h), pid)  # (B, P, k, dl)
        return self.to_latent(rearrange(q, "b p k d -> b p (k d)"))

    def decoder_kv(self, z: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Latent outputs (B, S, dg) → each reader's keys, values (B, S, k, H, D)."""
        src = rearrange(self.from_latent(z), "b s (k d) -> b s k d", k=self.cfg.cross_attn_k)
        return [reader.kv(src) for reader in (self.reader, *self.layer_readers)]

    def decode(self, h: torch.Tensor, kv: list, slots: torch.Tensor, caches: KVCache | None = None,
               rows: Rows = None) -> torch.Tensor:
        """The local decoder: byte states h (B, T, dl) read the latent outputs `kv` (per reader, as
        `decoder_kv` makes them) at `slots` (B, T) before its first layer (and each later one with
        read_every_layer) → logits (B, T, V)."""
        x = self.reader.read(h, *kv[0], slots)
        before = None
        if self.layer_readers:
            def before(i: int, x: torch.Tensor) -> torch.Tensor:
                return self.layer_readers[i - 1].read(x, *kv[i], slots)
        return self.head(self.decoder(x, caches=caches, rows=rows, before=before))

    def layer_companions(self) -> dict[str, list[str]]:
        if not self.layer_readers:
            return {}
        return {"decoder": ["reader", *(f"layer_readers.{i}" for i in range(len(self.layer_readers)))]}

    # --- what the trainer asks ----------------------------------------------------------------
    def prepare_data(self, dataset) -> dict[str, str]:
        return self.patcher.prepare_data(dataset)  # entropy patching: entropies computed once

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The hash n-gram tables in a group of their own, with `ngrams`' lr scale and weight decay."""
        ng = self.cfg.ngrams
        tables = list(self.embed.ngrams)
        ids = {id(t.weight) for t in tables}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
                {"params": [t.weight for t in tables], "lr_scale": ng.lr_scale,
                 "weight_decay": weight_decay if ng.weight_decay is None else ng.weight_decay,
                 "sparse_tables": tables if ng.sparse else []}]

    # --- incremental decoding ---------------------------------------------------------------
    def init_state(self, batch_size: int, max_len: int) -> BLTState:
        cfg, b, n = self.cfg, batch_size, max_len
        p = next(self.parameters())
        dev, dt = p.device, p.dtype
        long = dict(dtype=torch.long, device=dev)
        with torch.no_grad():  # (1, 1, k, H, D) per reader: the shape of a slot
            kv0 = self.decoder_kv(self.start.view(1, 1, -1))
        state = BLTState(
            lengths=[0] * b, ids=torch.zeros(b, n, **long), h=torch.zeros(b, n, cfg.encoder.dim, device=dev, dtype=dt),
            pid=torch.zeros(b, n, **long), patch_start=torch.zeros(b, n + 1, **long),
            patch_doc=torch.zeros(b, n + 1, **long), n_open=torch.zeros(b, **long),
            n_closed=torch.zeros(b, **long), doc=torch.zeros(b, **long),
            enc_caches=self.encoder.new_caches(b, n, dev, dt), lat_caches=self.latent.new_caches(b, n, dev, dt),
            dec_caches=self.decoder.new_caches(b, n, dev, dt),
            dec_k=[k0.new_zeros(b, first_capacity(n + 2), *k0.shape[2:]) for k0, _ in kv0],
            dec_v=[v0.new_zeros(b, first_capacity(n + 2), *v0.shape[2:]) for _, v0 in kv0],
            patches=self.patcher.stream(b, n, dev), adapters=self.adapters.init_state(b, n, dev))
        self.clear_rows(state)
        return state

    @torch.no_grad()
    def clear_rows(self, state: BLTState, rows: Rows = None) -> None:
        rows = list(range(len(state.lengths))) if rows is None else list(rows)
        idx = row_index(rows, state.ids.device)
        for r in rows:
            state.lengths[r] = 0
        for t in (state.n_open, state.n_closed, state.doc):
            t[idx] = 0
        for cache in (state.enc_caches, state.lat_caches, state.dec_caches):
            cache.clear(rows)
        for dec_k, dec_v, (k0, v0) in zip(state.dec_k, state.dec_v, self.decoder_kv(self.start.view(1, 1, -1))):
            dec_k[idx, 0], dec_v[idx, 0] = k0[:, 0], v0[:, 0]  # slot 0: the start vector
        self.patcher.clear_rows(state.patches, rows)
        self.adapters.clear_rows(state.adapters, rows)

    @torch.no_grad()
    def step(self, state: BLTState, ids: torch.Tensor, rows: Rows = None) -> torch.Tensor:
        r, t = ids.shape
        dev = ids.device
        rows_l = list(range(len(state.lengths))) if rows is None else list(rows)
        idx = row_index(rows, dev)
        row_of = torch.tensor(rows_l, device=dev)[:, None]  # (R, 1) state row of each input row
        t0 = [state.lengths[i] for i in rows_l]
        if max(t0) + t > state.ids.shape[1]:
            raise RuntimeError(f"BLT state full: {max(t0) + t} > {state.ids.shape[1]} positions")
        pos = torch.tensor(t0, device=dev)[:, None] + torch.arange(t, device=dev)  # (R, T) byte positions
        # where the new bytes go in (B, L) tensors: a slice when the rows stand at one position
        at = (idx, slice(t0[0], t0[0] + t)) if all(s == t0[0] for s in t0) else (row_of, pos)
        state.ids[at] = ids
        # 1. patch boundaries, decided online from the past only
        starts = self.patcher.push(state.patches, ids, rows)  # (R, T)
        pid = state.n_open[idx][:, None] + starts.long().cumsum(1) - 1  # (R, T)
        doc = state.doc[idx][:, None] + document_ids(ids)
        where_new = torch.where(starts, pid, torch.full_like(pid, state.patch_doc.shape[1] - 1))
        state.patch_doc[row_of, where_new] = doc
        state.patch_start[row_of, where_new] = pos
        state.pid[at] = pid
        state.n_open[idx], state.doc[idx] = pid[:, -1] + 1, doc[:, -1]
        read = pid - 1  # (R, T) the patch each byte reads: the one before its own, or ...
        if self.cfg.decoder_reads == "complete":  # ... the one before the next id's
            ahead = self.patcher.peek(state.patches, rows)  # (R,) whether the id after this chunk opens a patch
            read = read + torch.cat([starts[:, 1:], ahead[:, None]], dim=1).long()
        # 2. local encoder (hash n-grams see the ids before this chunk too; before a row's start, the
        # id its hash pads a sequence with)
        ctx = self.embed.context
        if at[1].__class__ is slice and t0[0] >= ctx:
            recent = state.ids[idx, t0[0] - ctx:t0[0] + t]
        else:
            back = pos[:, :1] - ctx + torch.arange(ctx + t, device=dev)  # (R, ctx + T)
            recent = torch.where(back >= 0, state.ids[row_of, back.clamp_min(0)], self.embed.before_start)
        x = self.adapters.step(state.adapters, ids, self.embed(recent)[:, ctx:], rows)
        h = self.encoder(x, caches=state.enc_caches, rows=rows)
        state.h[at] = h
        for i, s in zip(rows_l, t0):
            state.lengths[i] = s + t
        # 3. patches that closed (all up to the last one read) go to the latent model
        closed = read[:, -1] + 1 - state.n_closed[idx]  # (R,)
        if int(closed.max()) > 0:
            self._latent_step(state, rows_l, closed.tolist())
        # 4. local decoder: each byte reads its slot (decoder_slots); the keys of those slots are
        # gathered per byte, so the readers index them by byte
        slots = decoder_slots(read, state.patch_doc[idx], doc)
        kv = [(k[row_of, slots], v[row_of, slots]) for k, v in zip(state.dec_k, state.dec_v)]
        return self.decode(h, kv, torch.arange(t, device=dev).expand(r, t), caches=state.dec_caches, rows=rows)

    def _latent_step(self, state: BLTState, rows: list[int], closed: list[int]) -> None:
        """Pool each row's newly closed patches and run them through the latent model at the row's
        own patch indices. Rows that closed fewer patches than the most feed spare positions, which
        the cache does not keep."""
        sel = [i for i, c in enumerate(closed) if c]
        rows, closed = [rows[i] for i in sel], [closed[i] for i in sel]
        dev = state.ids.device
        c = max(closed)
        row_of = torch.tensor(rows, device=dev)[:, None]
        n_closed = state.n_closed[row_of[:, 0]]  # (R,)
        n_new = torch.tensor(closed, device=dev)[:, None]  # (R, 1)
        # the bytes of every closing patch lie in [s0, end)
        s0 = int(state.patch_start[row_of[:, 0], n_closed].min())
        end = max(state.lengths[i] for i in rows)
        span = torch.arange(s0, end, device=dev)
        local = state.pid[row_of, span] - n_closed[:, None]  # (R, span): index among the closing
        length = torch.tensor([state.lengths[i] for i in rows], device=dev)[:, None]
        mine = (local >= 0) & (local < n_new) & (span < length)  # (a row's bytes past its length are stale)
        group = torch.where(mine, local, torch.full_like(local, c))
        patches = self.pool_patches(state.h[row_of, span], group, c + 1)[:, :c]  # (R, c, dg)

        j = torch.arange(c, device=dev)
        pidx = n_closed[:, None] + j  # (R, c) patch index = latent position
        pdoc = state.patch_doc[row_of, pidx]
        # a patch sees the row's own earlier patches of its document
        keys = torch.arange(int(n_closed.max()) + c, device=dev)
        mask = (keys <= pidx[..., None]) & (state.patch_doc[row_of, keys][:, None] == pdoc[..., None])  # (R, c, keys)
        z = self.latent(patches, pos=pidx, mask=mask[:, None], caches=state.lat_caches, rows=rows, advance=closed)
        self._reserve_slots(state, int(n_closed.max()) + c + 1)
        dest = torch.where(j < n_new, pidx + 1, state.dec_k[0].shape[1] - 1)  # spare positions → scratch
        for dec_k, dec_v, (k, v) in zip(state.dec_k, state.dec_v, self.decoder_kv(z)):  # (R, c, k, H, D)
            dec_k[row_of, dest] = k
            dec_v[row_of, dest] = v
        state.n_closed[row_of[:, 0]] = n_closed + n_new[:, 0]

    @staticmethod
    def _reserve_slots(state: BLTState, n: int) -> None:
        """Grow the decoder's slots to hold slots 0..n-1 and the scratch slot after them; the old
        scratch slot is not carried over."""
        have, limit = state.dec_k[0].shape[1], state.ids.shape[1] + 2
        if n + 1 > have:
            state.dec_k = [grow(k, 1, n + 1, limit, keep=have - 1) for k in state.dec_k]
            state.dec_v = [grow(v, 1, n + 1, limit, keep=have - 1) for v in state.dec_v]

    # --- cost ------------------------------------------------------------------------------------
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        """FLOPs per byte (multiply-add = 2), at the patcher's expected bytes per patch.

        encoder + decoder (+ head) per byte; the latent model per patch ÷ bytes per patch; both
        cross-attentions (projections per byte or per patch, attention scores per byte × k); the
        adapters; hash n-gram lookups are table reads, not counted. Training = 3 × forward of the
        trained parts; the frozen entropy model (entropies precomputed once per dataset) counts in
        inference only.
        """
        cfg = self.cfg
        dl, dg, k = cfg.encoder.dim, cfg.latent.dim, cfg.cross_attn_k
        bpp = cfg.patcher.expected_bytes_per_patch()
        enc = stack_flops(cfg.encoder, cfg.mlp_ratio, seq_len)
        dec = stack_flops(cfg.decoder, cfg.mlp_ratio, seq_len) + 2 * dl * cfg.vocab_size
        lat = stack_flops(cfg.latent, cfg.mlp_ratio, max(1, math.ceil(seq_len / bpp))) / bpp
        # pooling: per patch pool_init, k × (q proj, out proj), to_latent; per byte kv proj + k scores
        pool = (2 * dl * k * dl + k * 4 * dl * dl + 2 * k * dl * dg * cfg.latent_proj) / bpp + 4 * dl * dl + 4 * dl * k
        # reading, by each of r readers: per patch from_latent (once) + k kv projections; per byte
        # q/out proj + k scores
        r = 1 + len(self.layer_readers)
        read = (2 * dg * k * dl + r * k * 4 * dl * dl) / bpp + r * (4 * dl * dl + 4 * dl * k)
        fwd = enc + dec + lat + pool + read + self.adapters.flops_per_byte()
        return {"train": 3.0 * fwd, "infer": fwd + self.patcher.flops_per_byte(seq_len)}
