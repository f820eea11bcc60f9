"""Byte Latent Transformer (BLT, Pagnoni et al. 2024): a large transformer over patches of bytes,
small ones over the bytes themselves.

    ids (B, T) ──patcher (static | space | entropy)──► patch starts (B, T)
      │
      ├─ byte + hash n-gram embeddings ─► local encoder (windowed causal)  h (B, T, dim_local)
      │     └─ cross-attention pooling: k queries per patch read that patch's bytes
      │        ─► (B, P, k·dim_local) ─► linear ─► (B, P, dim_global)
      ├─ latent global transformer over patches (causal, within a document)  z (B, P, dim_global)
      └─ local decoder: byte t reads the latent output of the patch BEFORE its own (a learned
         start vector for a document's first patch) by cross-attention, then a windowed
         causal byte transformer ─► logits (B, T, V)

Why the decoder reads the previous patch: a patch's latent vector depends on all its bytes, so
a byte may only use patches that were complete before it; whether byte t opens a patch depends
on ids[:, :t+1] alone. So logits[:, t] depends on ids[:, :t+1] only — the contract of every
omnibyte model — and generation can decide patches online.

Departures from the paper (marked where they happen): one pooling cross-attention after the
encoder and one reading cross-attention before the decoder, instead of one per layer; local
layers may see across a document boundary within their window (like the byte transformer),
only the latent model is document-masked.

Generation (`init_state`/`step`) keeps a KV cache in each of the four transformers (entropy
model, encoder, latent, decoder). Patch boundaries come from a `StreamingPatcher`; when a patch
closes (the next id opens a new one) it is pooled and fed to the latent model as one new
position. Rows close patches at different times: the latent cache has one slot per "some row
closed a patch" event, each row marks which slots are its own, and attention masks the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import nn

from omnibyte.errors import OmnibyteError
from omnibyte.format import BOS, VOCAB_SIZE
from omnibyte.models.base import ModelOutput, OmniModel
from omnibyte.models.registry import build_model, register
from omnibyte.models.transformer import TransformerConfig, transformer_flops
from omnibyte.nn import TransformerStack, causal_mask, lm_loss
from omnibyte.nn.cross_attention import CrossBlock
from omnibyte.nn.hash_ngram import DEFAULT_BASE, HashNgramEmbedding
from omnibyte.nn.image_encoder import ImageEncoder, image_encoder_flops
from omnibyte.nn.media_conv import MediaConv, image_taps, media_values
from omnibyte.patching import PatcherConfig, StreamingPatcher, patch_ids, patch_starts
from omnibyte.patching.core import positions_in_patch, segment_starts

DEFAULT_BYTES_PER_PATCH = 4.5  # BLT's operating point (matches Llama 3 at equal training FLOPs)


# --------------------------------------------------------------------------- config


@dataclass
class LocalConfig:
    """A small byte-level transformer: the local encoder or the local decoder (width dim_local)."""

    n_layers: int = 1
    n_heads: int = 2
    window: int = 64  # sliding causal attention window in bytes; 0 = full causal attention


@dataclass
class LatentConfig:
    """The latent global transformer over patches (width dim_global)."""

    n_layers: int = 2
    n_heads: int = 4


@dataclass
class BLTConfig:
    vocab_size: int = VOCAB_SIZE
    dim_local: int = 32  # encoder and decoder width
    dim_global: int = 64  # latent transformer width (the large one)
    encoder: LocalConfig = field(default_factory=lambda: LocalConfig(n_layers=1))
    latent: LatentConfig = field(default_factory=LatentConfig)
    decoder: LocalConfig = field(default_factory=lambda: LocalConfig(n_layers=2))
    cross_attn_k: int = 2  # queries per patch; the latent model reads k·dim_local → dim_global
    ngram_sizes: tuple[int, ...] = (3, 4, 5, 6, 7, 8)  # hash n-gram embeddings (paper: 3..8)
    hash_buckets: int = 4096  # rows per n-gram table (paper: 500,002 at scale)
    hash_base: int = DEFAULT_BASE  # base of the rolling polynomial hash (part of the model)
    ngram_dropout: float = 0.0  # training only: drop each n-gram lookup with this probability
    patcher: PatcherConfig = field(default_factory=PatcherConfig)
    # FLOPs accounting only: mean bytes per patch; 0 = patch_size for static patching, the
    # calibration target of the entropy model when it has one, else 4.5
    bytes_per_patch: float = 0.0
    mlp_ratio: float = 8 / 3
    qk_norm: bool = True
    rope_theta: float = 10000.0
    z_loss: float = 0.0
    # > 0: the raw values of image and audio payload bytes (pixel/127.5 - 1, the µ-law sample)
    # also enter their patch's vector linearly, through one learned vector per position in the
    # patch (positions < media_proj) — a ViT-style patch embedding beside the pooled byte states;
    # pair it with patcher.image_rows / audio_frame so a patch is a band of rows or a frame
    media_proj: int = 0
    # > 0: each image/audio payload byte's input also gets causal convolution features of the
    # pixel/sample values around it, with this many channels (omnibyte/nn/media_conv.py): a
    # masked 2-D conv over the image's rows above and the row so far, a 1-D conv over past samples
    media_conv: int = 0
    media_conv_kernel: int = 5  # image window (odd); audio taps are 16 samples, the second layer dilated
    # > 0 (needs media_conv): image bytes' conv features also get learned vectors for their row and
    # column, each in this many bands of the image, and their colour channel
    media_pos: int = 0
    # > 0: a small CNN of this width reads each complete image block and adds its summary to the
    # input of every byte from the image's closing marker (EOI) to the document's end or the next
    # image, so the bytes after an image (a question, its answer) see the whole picture at once
    # (omnibyte/nn/image_encoder.py)
    image_encoder: int = 0
    # the summary's RMS at the start (learned per channel): a byte embedding's is about 0.02; 0.3 and
    # 1.0 taught clock reading in 400 steps where 0.02 stayed at chance (benchmarks/results_multimodal.md)
    image_encoder_gain: float = 0.3
    # Filled when the model is built: {"arch": ..., "model": {...}} of the entropy model, so a
    # checkpoint rebuilds it (weights are in the BLT's own safetensors) without its run dir.
    entropy_model_config: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.media_proj < 0:
            raise ValueError(f"media_proj must be ≥ 0 (0 = off), got {self.media_proj}")
        if self.media_conv < 0:
            raise ValueError(f"media_conv must be ≥ 0 (0 = off), got {self.media_conv}")
        if self.media_conv_kernel < 3 or self.media_conv_kernel % 2 == 0:
            raise ValueError(f"media_conv_kernel must be odd and ≥ 3, got {self.media_conv_kernel}")
        if self.media_pos < 0 or (self.media_pos and not self.media_conv):
            raise ValueError(f"media_pos must be ≥ 0 and needs media_conv > 0, got media_pos {self.media_pos}, "
                             f"media_conv {self.media_conv}")
        if self.image_encoder < 0 or not self.image_encoder_gain > 0:
            raise ValueError(f"image_encoder must be ≥ 0 (0 = off) and image_encoder_gain > 0, got "
                             f"{self.image_encoder} and {self.image_encoder_gain}")
        for name in ("vocab_size", "dim_local", "dim_global", "cross_attn_k", "hash_buckets", "hash_base"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name, dim, heads in (("encoder", self.dim_local, self.encoder.n_heads),
                                 ("decoder", self.dim_local, self.decoder.n_heads),
                                 ("latent", self.dim_global, self.latent.n_heads)):
            if heads < 1 or dim % heads or (dim // heads) % 2:
                raise ValueError(f"{name}: width {dim} must split into {heads} heads of even size")
        # the local stacks may be empty: hash n-gram embeddings already give each byte its local
        # context, and the cross-attentions still pool bytes into patches and read them back
        for name, n, least in (("encoder", self.encoder.n_layers, 0), ("decoder", self.decoder.n_layers, 0),
                               ("latent", self.latent.n_layers, 1)):
            if n < least:
                raise ValueError(f"{name}.n_layers must be ≥ {least}, got {n}")
        if self.encoder.window < 0 or self.decoder.window < 0:
            raise ValueError("encoder/decoder window must be ≥ 0 (0 = full causal attention)")
        if any(n < 2 for n in self.ngram_sizes):
            raise ValueError(f"ngram_sizes must all be ≥ 2, got {list(self.ngram_sizes)}")
        if not 0 <= self.ngram_dropout < 1:
            raise ValueError(f"ngram_dropout must be in [0, 1), got {self.ngram_dropout}")
        if self.bytes_per_patch != 0 and self.bytes_per_patch < 1:
            raise ValueError(f"bytes_per_patch must be ≥ 1 (or 0 = automatic), got {self.bytes_per_patch}")


def expected_bytes_per_patch(cfg: BLTConfig) -> float:
    if cfg.bytes_per_patch > 0:
        return cfg.bytes_per_patch
    if cfg.patcher.kind == "static":
        return float(cfg.patcher.patch_size)
    return DEFAULT_BYTES_PER_PATCH


# --------------------------------------------------------------------------- helpers


def document_ids(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) index of the document each id belongs to: a new document starts at each BOS."""
    return (ids == BOS).long().cumsum(-1)


def patch_documents(doc: torch.Tensor, pid: torch.Tensor, n_patches: int) -> torch.Tensor:
    """(B, P) document of each patch (that of its first byte); -1 for padding patches."""
    out = torch.full((doc.shape[0], n_patches), -1, dtype=doc.dtype, device=doc.device)
    return out.scatter_reduce(1, pid, doc, "amin", include_self=False)


def decoder_slots(pid: torch.Tensor, pdoc: torch.Tensor) -> torch.Tensor:
    """(B, T) which latent output each byte reads: slot p+1 holds patch p's output, slot 0 the
    start vector. A byte of patch p reads slot p (patch p-1), or 0 if p is a document's first."""
    prev = (pid - 1).clamp_min(0)
    same_doc = pdoc.gather(1, prev) == pdoc.gather(1, pid)
    return torch.where((pid > 0) & same_doc, pid, torch.zeros_like(pid))


# --------------------------------------------------------------------------- model


@dataclass
class BLTState:
    """Everything `step` needs; rows share positions in bytes, not in patches."""

    length: int  # bytes seen
    ids: torch.Tensor  # (B, L) ids so far (hash n-grams need the last few)
    h: torch.Tensor  # (B, L, dim_local) encoder outputs (a closing patch is pooled from them)
    pid: torch.Tensor  # (B, L) patch of each byte
    patch_start: torch.Tensor  # (B, L+1) first byte of each patch (last column: scratch)
    patch_doc: torch.Tensor  # (B, L+1) document of each patch (last column: scratch)
    n_open: torch.Tensor  # (B,) patches begun
    n_closed: torch.Tensor  # (B,) patches fed to the latent model
    doc: torch.Tensor  # (B,) current document index
    enc_caches: list
    lat_caches: list
    dec_caches: list
    n_slots: int  # latent cache slots used (one per patch any row closed, per step)
    slot_doc: torch.Tensor  # (B, L) document of the row's patch in each slot; -1: a spare slot
    dec_k: torch.Tensor  # (B, L+2, k, H, D) decoder keys per slot (0 = start, p+1 = patch p)
    dec_v: torch.Tensor
    patcher: StreamingPatcher
    ent_state: Any = None  # entropy model's own state (entropy patching)
    next_entropy: torch.Tensor | None = None  # (B,) entropy of the next id
    seg_start: torch.Tensor | None = None  # (B,) where each row's current segment began (media_conv)
    # image_encoder: (summary (B, dim_local), document (B,)) the last id had
    image_carry: tuple | None = None


@register
class BLT(OmniModel):
    arch = "blt"
    config_cls = BLTConfig

    def __init__(self, cfg: BLTConfig, entropy_model: OmniModel | None = None):
        super().__init__(cfg)
        dl, dg, k = cfg.dim_local, cfg.dim_global, cfg.cross_attn_k
        stack_args = dict(mlp_ratio=cfg.mlp_ratio, qk_norm=cfg.qk_norm, rope_theta=cfg.rope_theta)
        # bytes → local encoder
        self.embed = HashNgramEmbedding(cfg.vocab_size, dl, cfg.ngram_sizes, cfg.hash_buckets, cfg.hash_base,
                                        cfg.ngram_dropout)
        self.media_conv = (MediaConv(cfg.media_conv, dl, cfg.media_conv_kernel, positions=cfg.media_pos)
                           if cfg.media_conv else None)
        self.encoder = TransformerStack(dl, cfg.encoder.n_layers, cfg.encoder.n_heads,
                                        window=cfg.encoder.window, **stack_args)
        # bytes → patches: k queries per patch, initialised from the max-pooled byte states
        self.pool_init = nn.Linear(dl, k * dl, bias=False)
        self.pooler = CrossBlock(dl, cfg.encoder.n_heads, cfg.qk_norm)
        self.to_latent = nn.Linear(k * dl, dg, bias=False)
        # patches → latent global transformer
        self.latent = TransformerStack(dg, cfg.latent.n_layers, cfg.latent.n_heads, **stack_args)
        # latent → bytes: each byte reads k vectors made from the previous patch's output
        self.start = nn.Parameter(torch.zeros(dg))
        self.from_latent = nn.Linear(dg, k * dl, bias=False)
        self.reader = CrossBlock(dl, cfg.decoder.n_heads, cfg.qk_norm)
        self.decoder = TransformerStack(dl, cfg.decoder.n_layers, cfg.decoder.n_heads,
                                        window=cfg.decoder.window, **stack_args)
        self.head = nn.Linear(dl, cfg.vocab_size, bias=False)
        # media payload values → patch vectors, one learned vector per position in the patch
        self.media_proj = nn.Embedding(cfg.media_proj, dg) if cfg.media_proj else None
        if self.media_proj is not None:
            nn.init.normal_(self.media_proj.weight, std=0.02)
        # finished images → a vector added to the bytes after them
        self.image_encoder = (ImageEncoder(cfg.image_encoder, dl, gain=cfg.image_encoder_gain)
                              if cfg.image_encoder else None)
        for lin in (self.pool_init, self.to_latent, self.from_latent, self.head):
            nn.init.normal_(lin.weight, std=0.02)
        nn.init.normal_(self.start, std=0.02)

        self.entropy_model = self._attach_entropy_model(entropy_model) if cfg.patcher.kind == "entropy" else None

    def _attach_entropy_model(self, model: OmniModel | None) -> OmniModel:
        """Entropy patching: a frozen submodule, so checkpoints are self-contained.

        Sources, in order: a model object passed in; `entropy_model_config` (a checkpoint being
        loaded: the weights follow in the state dict); the run dir named by patcher.entropy_model
        (its calibrated threshold fills patcher.threshold when that is unset).
        """
        cfg = self.cfg
        if model is None and cfg.entropy_model_config:
            c = cfg.entropy_model_config
            if not isinstance(c, dict) or "arch" not in c:
                raise OmnibyteError("model.entropy_model_config must hold the entropy model's "
                                    "{'arch': ..., 'model': {...}}")
            model = build_model(c["arch"], c.get("model", {}))
        elif model is None:
            from omnibyte.patching.entropy import load_entropy_model, read_calibration

            try:
                model, calibrated = load_entropy_model(cfg.patcher.entropy_model, cfg.patcher.relative)
            except OmnibyteError as e:
                raise OmnibyteError(f"patcher.entropy_model: {e} (train an entropy model first, e.g. "
                                    f"configs/entropy-small.toml)") from None
            if cfg.patcher.threshold is None and calibrated is not None:
                cfg.patcher.threshold = calibrated
                if cfg.bytes_per_patch == 0:
                    entry = read_calibration(cfg.patcher.entropy_model)["relative" if cfg.patcher.relative
                                                                         else "global"]
                    cfg.bytes_per_patch = float(entry.get("target_bytes_per_patch", 0.0))
        if cfg.patcher.threshold is None:
            raise OmnibyteError(f"entropy patching needs a threshold: set patcher.threshold or calibrate "
                                f"{cfg.patcher.entropy_model or 'the entropy model'} (`omnibyte patch calibrate`)")
        if getattr(model.cfg, "vocab_size", cfg.vocab_size) != cfg.vocab_size:
            raise OmnibyteError(f"entropy model vocab {model.cfg.vocab_size} differs from the BLT's "
                                f"{cfg.vocab_size}")
        cfg.entropy_model_config = model.config_dict()
        model.requires_grad_(False)
        return model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.entropy_model is not None:
            self.entropy_model.eval()  # frozen: never in training mode
        return self

    # --- the figure, top to bottom ---------------------------------------------------------
    def patch(self, ids: torch.Tensor, entropies: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T) → patch starts (B, T) bool."""
        if self.cfg.patcher.kind == "entropy":
            if entropies is None:
                from omnibyte.patching.entropy import compute_entropies

                entropies = compute_entropies(self.entropy_model, ids)
            elif entropies.shape != ids.shape:
                raise OmnibyteError(f"entropies {tuple(entropies.shape)} do not match ids {tuple(ids.shape)}")
        return patch_starts(ids, self.cfg.patcher, entropies)

    def pool_patches(self, h: torch.Tensor, seg: torch.Tensor, n_patches: int) -> torch.Tensor:
        """Byte states h (B, T, dl) grouped by seg (B, T) → patch vectors (B, n_patches, dim_global)."""
        b, _, dl = h.shape
        pooled = h.new_zeros(b, n_patches, dl).scatter_reduce(
            1, seg[..., None].expand_as(h), h, "amax", include_self=False)  # (B, P, dl)
        q = rearrange(self.pool_init(pooled), "b p (k d) -> b p k d", k=self.cfg.cross_attn_k)
        q = self.pooler.pool(q, *self.pooler.kv(h), seg)  # (B, P, k, dl)
        return self.to_latent(rearrange(q, "b p k d -> b p (k d)"))

    def media_patches(self, ids: torch.Tensor, pos: torch.Tensor, seg: torch.Tensor, n_patches: int,
                      values: torch.Tensor | None = None) -> torch.Tensor:
        """Σ over each patch of value × media_proj[position in patch] → (B, n_patches, dim_global)."""
        n = self.cfg.media_proj
        x = media_values(ids) if values is None else values
        x = torch.where(pos < n, x, torch.zeros_like(x))
        vec = x[..., None] * self.media_proj(pos.clamp(max=n - 1))  # (B, T, dg)
        return vec.new_zeros(ids.shape[0], n_patches, vec.shape[-1]).scatter_add(
            1, seg[..., None].expand_as(vec), vec)

    def decoder_kv(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent outputs (B, S, dg) → the decoder's keys, values (B, S, k, H, D)."""
        return self.reader.kv(rearrange(self.from_latent(z), "b s (k d) -> b s k d", k=self.cfg.cross_attn_k))

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None,
                entropies: torch.Tensor | None = None) -> ModelOutput:
        b = ids.shape[0]
        starts = self.patch(ids, entropies)
        pid = patch_ids(starts)  # (B, T)
        n_patches = int(pid.max()) + 1  # pad every row to the batch's most patches
        x = self.embed(ids)
        if self.media_conv is not None:
            x = x + self.media_conv(ids)
        doc = document_ids(ids)
        if self.image_encoder is not None:
            x = x + self.image_encoder.context(ids, doc).to(x.dtype)
        h = self.encoder(x)  # (B, T, dl)
        patches = self.pool_patches(h, pid, n_patches)  # (B, P, dg)
        if self.media_proj is not None:
            patches = patches + self.media_patches(ids, positions_in_patch(starts), pid, n_patches)
        pdoc = patch_documents(doc, pid, n_patches)  # (B, P)
        mask = None  # plain causal (the fast kernel) unless a row holds two documents
        if bool((doc[:, -1] != doc[:, 0]).any()):
            mask = (causal_mask(n_patches, n_patches, ids.device) & (pdoc[:, :, None] == pdoc[:, None, :]))[:, None]
        z = self.latent(patches, mask=mask)  # (B, P, dg)
        z = torch.cat([self.start.expand(b, 1, -1).to(z.dtype), z], dim=1)  # (B, 1+P, dg): slot 0 = start
        x = self.reader.read(h, *self.decoder_kv(z), decoder_slots(pid, pdoc))  # (B, T, dl)
        logits = self.head(self.decoder(x))  # (B, T, V)
        loss = lm_loss(logits, targets, self.cfg.z_loss) if targets is not None else None
        return ModelOutput(logits, loss)

    def prepare_data(self, dataset) -> dict[str, str]:
        """Entropy patching: have the trainer precompute entropies once per dataset."""
        if self.cfg.patcher.kind != "entropy":
            return {}
        from omnibyte.patching.entropy import ensure_entropies

        # named by the frozen copy's own weights: right even if the run dir has since changed
        return {"entropies": ensure_entropies(dataset, self.entropy_model)}

    # --- incremental decoding ---------------------------------------------------------------
    def init_state(self, batch_size: int, max_len: int) -> BLTState:
        cfg, b, n = self.cfg, batch_size, max_len
        p = next(self.parameters())
        dev, dt = p.device, p.dtype
        long = dict(dtype=torch.long, device=dev)
        with torch.no_grad():
            k0, v0 = self.decoder_kv(self.start.view(1, 1, -1))  # (1, 1, k, H, D)
        dec_k = k0.new_zeros(b, n + 2, *k0.shape[2:])
        dec_v = v0.new_zeros(b, n + 2, *v0.shape[2:])
        dec_k[:, 0], dec_v[:, 0] = k0[:, 0], v0[:, 0]
        state = BLTState(
            length=0, ids=torch.zeros(b, n, **long), h=torch.zeros(b, n, cfg.dim_local, device=dev, dtype=dt),
            pid=torch.zeros(b, n, **long), patch_start=torch.zeros(b, n + 1, **long),
            patch_doc=torch.zeros(b, n + 1, **long), n_open=torch.zeros(b, **long),
            n_closed=torch.zeros(b, **long), doc=torch.zeros(b, **long),
            enc_caches=self.encoder.new_caches(b, n, dev, dt), lat_caches=self.latent.new_caches(b, n, dev, dt),
            dec_caches=self.decoder.new_caches(b, n, dev, dt), n_slots=0,
            slot_doc=torch.full((b, n), -1, **long),
            dec_k=dec_k, dec_v=dec_v, patcher=StreamingPatcher(cfg.patcher, b, device=dev))
        if self.image_encoder is not None:
            state.image_carry = (torch.zeros(b, cfg.dim_local, device=dev, dtype=dt), torch.full((b,), -1, **long))
        if self.entropy_model is not None:
            state.ent_state = self.entropy_model.init_state(b, n)
            state.next_entropy = torch.zeros(b, device=dev)  # entropies[:, 0] = 0 by convention
        return state

    @torch.no_grad()
    def step(self, state: BLTState, ids: torch.Tensor) -> torch.Tensor:
        t0, t = state.length, ids.shape[1]
        t1 = t0 + t
        if t1 > state.ids.shape[1]:
            raise RuntimeError(f"BLT state full: {t1} > {state.ids.shape[1]} positions")
        state.ids[:, t0:t1] = ids
        # 1. patch boundaries, decided online from the past only
        ent = self._step_entropies(state, ids)  # (B, T) or None
        starts = torch.stack([state.patcher.push(ids[:, i], None if ent is None else ent[:, i])
                              for i in range(t)], dim=1)  # (B, T)
        pid = state.n_open[:, None] + starts.long().cumsum(1) - 1  # (B, T)
        doc = state.doc[:, None] + document_ids(ids)
        scratch = torch.full_like(pid, state.patch_doc.shape[1] - 1)
        where_new = torch.where(starts, pid, scratch)
        state.patch_doc.scatter_(1, where_new, doc)
        state.patch_start.scatter_(1, where_new, torch.arange(t0, t1, device=ids.device).expand_as(pid))
        state.pid[:, t0:t1] = pid
        state.n_open, state.doc = pid[:, -1] + 1, doc[:, -1]
        # 2. local encoder (hash n-grams see the ids before this chunk too)
        lo = max(0, t0 - self.embed.context)
        x = self.embed(state.ids[:, lo:t1])[:, t0 - lo:]
        if self.media_conv is not None:
            x = x + self._step_media_conv(state, t0, t1)
        if self.image_encoder is not None:
            x = x + self._step_image_context(state, doc, t0, t1).to(x.dtype)
        h = self.encoder(x, caches=state.enc_caches)
        state.h[:, t0:t1] = h
        state.length = t1
        # 3. patches that closed (all but each row's open one) go to the latent model
        closed = state.n_open - 1 - state.n_closed  # (B,)
        if int(closed.max()) > 0:
            self._latent_step(state, closed)
        # 4. local decoder
        x = self.reader.read(h, state.dec_k, state.dec_v, decoder_slots(pid, state.patch_doc))
        return self.head(self.decoder(x, caches=state.dec_caches))

    def _step_media_conv(self, state: BLTState, t0: int, t1: int) -> torch.Tensor:
        """media_conv features of the new ids. A block's features read back to its header, never
        further, so the ids from where each row's segment at t0 - 1 began are enough (not the whole
        prefix); blocks that open inside the new ids lie after that."""
        lo = 0 if state.seg_start is None else min(int(state.seg_start.min()), t0)
        feats = self.media_conv(state.ids[:, lo:t1], start=t0 - lo)
        # where each row's last segment (as of t1 - 1) began: the last start among the new ids
        c0 = max(0, t0 - 1)  # (a segment also starts right after a closing marker)
        starts = segment_starts(state.ids[:, c0:t1])
        starts[:, 0] |= c0 == 0
        at = torch.arange(c0, t1, device=starts.device)
        last = torch.where(starts, at, torch.full_like(at, -1)).max(dim=1).values
        state.seg_start = last if state.seg_start is None else torch.maximum(state.seg_start, last)
        return feats

    def _step_image_context(self, state: BLTState, doc: torch.Tensor, t0: int, t1: int) -> torch.Tensor:
        """The image summary of each new id (B, t1 - t0, dl): from the images whose EOI is among the new
        ids, else the carry (the summary the id before t0 had, with its document)."""
        ctx = self.image_encoder.context(state.ids[:, :t1], doc, lo=t0, carry=state.image_carry)
        state.image_carry = (ctx[:, -1], doc[:, -1])
        return ctx

    def _step_entropies(self, state: BLTState, ids: torch.Tensor) -> torch.Tensor | None:
        """Entropy of each new id (from the entropy model's cached logits one position back)."""
        if self.entropy_model is None:
            return None
        from omnibyte.patching.entropy import entropy_from_logits

        nxt = entropy_from_logits(self.entropy_model.step(state.ent_state, ids))  # (B, T): of the id after
        ent = torch.cat([state.next_entropy[:, None], nxt[:, :-1]], dim=1)
        state.next_entropy = nxt[:, -1]
        return ent

    def _latent_step(self, state: BLTState, closed: torch.Tensor) -> None:
        """Pool each row's newly closed patches and run them through the latent model as new cache
        slots (latent positions stay per row: the patch index). A row that closed fewer patches
        gives its spare slots document -1, which none of its real patches attends to."""
        c = int(closed.max())
        n_closed = state.n_closed
        # the bytes of every closing patch lie in [s0, length)
        s0 = int(state.patch_start.gather(1, n_closed[:, None]).min())
        local = state.pid[:, s0:state.length] - n_closed[:, None]  # (B, span): index among the closing
        seg = torch.where((local >= 0) & (local < closed[:, None]), local, torch.full_like(local, c))
        patches = self.pool_patches(state.h[:, s0:state.length], seg, c + 1)[:, :c]  # (B, c, dg)
        if self.media_proj is not None:
            span = torch.arange(s0, state.length, device=closed.device)
            pos = span - state.patch_start.gather(1, state.pid[:, s0:state.length])
            values = media_values(state.ids[:, :state.length])[:, s0:]
            patches = patches + self.media_patches(state.ids[:, s0:state.length], pos, seg, c + 1, values)[:, :c]

        j = torch.arange(c, device=closed.device)
        valid = j[None] < closed[:, None]  # (B, c)
        pidx = n_closed[:, None] + j  # (B, c) patch index = latent position
        pdoc = torch.where(valid, state.patch_doc.gather(1, pidx.clamp(max=state.patch_doc.shape[1] - 1)), -1)
        s = state.n_slots
        state.slot_doc[:, s:s + c] = pdoc
        # a patch sees the row's own earlier patches of its document (spare slots: doc -1)
        keys_doc = state.slot_doc[:, :s + c]
        mask = causal_mask(c, s + c, closed.device, offset=s)[None] & (keys_doc[:, None, :] == pdoc[:, :, None])
        z = self.latent(patches, pos=pidx, mask=mask[:, None], caches=state.lat_caches)  # (B, c, dg)
        k, v = self.decoder_kv(z)  # (B, c, k, H, D)
        dest = torch.where(valid, pidx + 1, state.dec_k.shape[1] - 1)  # spare slots → scratch
        sel = dest[:, :, None, None, None].expand_as(k)
        state.dec_k.scatter_(1, sel, k)
        state.dec_v.scatter_(1, sel, v)
        state.n_closed = n_closed + closed
        state.n_slots = s + c

    # --- cost ------------------------------------------------------------------------------------
    def flops_per_byte(self, seq_len: int) -> dict[str, float]:
        em = self.entropy_model.flops_per_byte(seq_len)["infer"] if self.entropy_model is not None else 0.0
        return blt_flops(self.cfg, seq_len, entropy_infer=em)


def blt_flops(cfg: BLTConfig, seq_len: int, entropy_infer: float = 0.0) -> dict[str, float]:
    """FLOPs per byte (multiply-add = 2), at `expected_bytes_per_patch` bytes per patch.

    encoder + decoder (+ head) per byte; the latent model per patch ÷ bytes per patch; both
    cross-attentions (projections per byte or per patch, attention scores per byte × k);
    media_proj, counted on every byte, 2·dim_global; media_conv and the image encoder's CNN (per
    pixel), counted on every byte; hash
    n-gram lookups are table reads, not counted. Training = 3 × forward of the trained parts;
    the frozen entropy model (entropies precomputed once per dataset) counts in inference only.
    """
    dl, dg, k = cfg.dim_local, cfg.dim_global, cfg.cross_attn_k
    bpp = expected_bytes_per_patch(cfg)
    n_patches = max(1, math.ceil(seq_len / bpp))

    def stack(dim, n_layers, n_heads, window, length):
        if n_layers == 0:
            return 0.0
        tc = TransformerConfig(cfg.vocab_size, dim, n_layers, n_heads, cfg.mlp_ratio, window=window)
        return transformer_flops(tc, length, with_head=False)["infer"]

    enc = stack(dl, cfg.encoder.n_layers, cfg.encoder.n_heads, cfg.encoder.window, seq_len)
    dec = stack(dl, cfg.decoder.n_layers, cfg.decoder.n_heads, cfg.decoder.window, seq_len) + 2 * dl * cfg.vocab_size
    lat = stack(dg, cfg.latent.n_layers, cfg.latent.n_heads, 0, n_patches) / bpp
    # pooling: per patch pool_init, k × (q proj, out proj), to_latent; per byte kv proj + k scores
    pool = (2 * dl * k * dl + k * 4 * dl * dl + 2 * k * dl * dg) / bpp + 4 * dl * dl + 4 * dl * k
    # reading: per patch from_latent + k kv projections; per byte q/out proj + k scores
    read = (2 * dg * k * dl + k * 4 * dl * dl) / bpp + 4 * dl * dl + 4 * dl * k
    media = 2 * dg if cfg.media_proj else 0
    if cfg.media_conv:
        c, ki = cfg.media_conv, len(image_taps(cfg.media_conv_kernel))
        media += 2 * (ki * c + ki * c * c + c * dl)  # the image branch (audio's 16 taps cost about the same)
    if cfg.image_encoder:
        media += image_encoder_flops(cfg.image_encoder, dl)
    fwd = enc + dec + lat + pool + read + media
    return {"train": 3.0 * fwd, "infer": fwd + entropy_infer}
