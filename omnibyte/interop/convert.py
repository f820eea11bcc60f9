"""transformers' BLT (`BltForCausalLM`: its config.json and its weight names) ⇄ omnibyte's BLT.

One mapping serves both outside formats: Meta's checkpoints are first named the way transformers'
port names them (`omnibyte.interop.official`, as the port's own conversion does), then converted
here. What differs, and why the function stays the same:

- ids: a BLT numbers byte b as b + 4 (BOE 0, BOS 1, EOS 2, BPE delimiter 3). The 260 rows of the
  token embedding, the head, and the entropy model's embedding and head are permuted so that
  omnibyte id i takes BLT row `BLT_IDS[i]`; PAD and BOI take the rows of the two ids text never
  holds. Logits then agree id for id, over the same 260 classes (entropies too).
- RoPE: a BLT rotates interleaved pairs (2i, 2i+1) of a head, omnibyte its halves (i, i + d/2).
  Permuting the rows of every self-attention's q and k projection within each head the same way
  leaves q·k, hence attention, unchanged.
- grouped k/v heads are repeated for the query heads that share them; q, k, v are stacked into
  one `wqkv`, the MLP's gate and up into one `w13`; the hash table, fused in the port, is one table
  per (function, n) here.
- the port's encoder with cross-attention in every layer recomputes the pooled queries at each
  one, so only the last layer's cross-attention reaches the output: that one is imported.
- everything else (final norms, the decoder reading the patch a byte completes, cross-attention
  in every decoder layer, the doubled residual, the hash, the patch rules) is a setting of
  omnibyte's BLT (`omnibyte.models.blt`), set here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.nn import mlp_hidden
from omnibyte.nn.hash_ngram import BLT_IDS, BLT_PRIMES, BLT_VOCAB

ENCODER, DECODER, GLOBAL, PATCHER = "encoder_config", "decoder_config", "global_config", "patcher_config"
# the port's defaults (configuration_blt.py), for keys a config.json leaves out
_STACK_DEFAULTS = {
    ENCODER: dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=1, intermediate_size=None,
                  rope_theta=500000.0, cross_attn_all_layers=False, cross_attn_k=2, hidden_size_global=2048),
    DECODER: dict(hidden_size=1024, num_attention_heads=16, num_hidden_layers=9, intermediate_size=2816,
                  rope_theta=500000.0, cross_attn_all_layers=True, cross_attn_k=2, hidden_size_global=2048),
    GLOBAL: dict(hidden_size=2048, num_attention_heads=16, num_hidden_layers=25, intermediate_size=5632,
                 rope_theta=500000.0),
    PATCHER: dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=14, intermediate_size=2048,
                  rope_theta=10000.0, sliding_window=512, vocab_size=BLT_VOCAB),
}
_TOP_DEFAULTS = dict(vocab_size=BLT_VOCAB, patch_in_forward=True, patching_mode="entropy",
                     patching_threshold=1.335442066192627, max_patch_length=None, local_attention_window_len=512,
                     cross_attn_k=2, encoder_hash_byte_group_size=[3, 4, 5, 6, 7, 8],
                     encoder_hash_byte_group_vocab=500002, encoder_hash_byte_group_nb_functions=1)
_BLT_ROWS = torch.tensor(BLT_IDS[:BLT_VOCAB])  # omnibyte id i ← BLT row _BLT_ROWS[i]


# --------------------------------------------------------------------------- config


def _top(cfg: dict, key: str):
    """A top-level setting, or the port's default (None means "none" for the patch cap and the window)."""
    value = cfg.get(key)
    if value is None and (key not in cfg or key not in ("max_patch_length", "local_attention_window_len")):
        return _TOP_DEFAULTS[key]
    return value


def _stack(cfg: dict, name: str) -> dict:
    """One sub-config's sizes, with the port's defaults: dim, n_layers, n_heads, kv_heads, mlp_hidden,
    eps, theta (and the sub-config's other keys as they are)."""
    sub = cfg.get(name)
    if not isinstance(sub, dict):
        raise OmnibyteError(f"config.json has no {name} table (a transformers BLT has {ENCODER}, {DECODER}, "
                            f"{GLOBAL} and {PATCHER})")
    d = {**_STACK_DEFAULTS[name], **{k: v for k, v in sub.items() if v is not None}}
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise OmnibyteError(f"{name}: omnibyte has plain RoPE only, this config has {rope['rope_type']!r} RoPE")
    if d.get("hidden_act", "silu") != "silu":
        raise OmnibyteError(f"{name}: omnibyte's MLP is SwiGLU (silu), this config has {d['hidden_act']!r}")
    dim, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
    kv = int(d.get("num_key_value_heads") or heads)
    if heads < 1 or dim % heads or heads % kv:
        raise OmnibyteError(f"{name}: hidden_size {dim} does not split into {heads} heads sharing {kv} k/v heads")
    return {**d, "dim": dim, "n_layers": int(d["num_hidden_layers"]), "n_heads": heads, "kv_heads": kv,
            "mlp_hidden": int(d["intermediate_size"] or int(8 * dim / 3)), "eps": float(d.get("rms_norm_eps", 1e-5)),
            "theta": float(rope.get("rope_theta", d.get("rope_theta")))}


def omnibyte_config(cfg: dict) -> dict:
    """A transformers BLT config (config.json as a dict) → omnibyte's {"arch": "blt", "model": {...}},
    its entropy model's config inside `model.patcher`; a one-line error for what omnibyte cannot run."""
    if cfg.get("model_type") != "blt":
        raise OmnibyteError(f"config.json has model_type {cfg.get('model_type')!r}, not 'blt'")
    enc, dec, glob, pat = (_stack(cfg, n) for n in (ENCODER, DECODER, GLOBAL, PATCHER))
    if not _top(cfg, "patch_in_forward") or _top(cfg, "patching_mode") != "entropy":
        raise OmnibyteError("omnibyte imports BLTs that patch by entropy with their entropy model "
                            "(patch_in_forward true, patching_mode 'entropy')")
    if int(_top(cfg, "vocab_size")) != BLT_VOCAB or int(pat["vocab_size"]) != BLT_VOCAB:
        raise OmnibyteError(f"a BLT's vocabulary has {BLT_VOCAB} ids (bytes + 4 specials), this one "
                            f"{_top(cfg, 'vocab_size')}")
    if enc["dim"] != dec["dim"]:
        raise OmnibyteError(f"the encoder's width {enc['dim']} differs from the decoder's {dec['dim']}: the port's "
                            f"decoder continues the encoder's byte states, so no such BLT runs")
    if int(dec["hidden_size_global"]) != glob["dim"]:
        raise OmnibyteError(f"{DECODER}.hidden_size_global {dec['hidden_size_global']} is not the global width "
                            f"{glob['dim']}")
    if enc["n_layers"] < 1 or dec["n_layers"] < 1:
        raise OmnibyteError("the port's BLT needs at least one encoder and one decoder layer")
    k = int(_top(cfg, "cross_attn_k"))
    if int(enc["cross_attn_k"]) != k or int(dec["cross_attn_k"]) != k:
        raise OmnibyteError(f"cross_attn_k differs between the config ({k}) and its encoder or decoder")
    eps = {s["eps"] for s in (enc, dec, glob)}
    theta = {s["theta"] for s in (enc, dec, glob)}
    if len(eps) > 1 or len(theta) > 1:
        raise OmnibyteError(f"omnibyte's BLT has one norm epsilon and one RoPE theta for its three stacks, this "
                            f"config has {sorted(eps)} and {sorted(theta)}")
    functions = int(_top(cfg, "encoder_hash_byte_group_nb_functions"))
    if not 1 <= functions <= len(BLT_PRIMES):
        raise OmnibyteError(f"encoder_hash_byte_group_nb_functions must be in 1..{len(BLT_PRIMES)}, got {functions}")
    window = int(_top(cfg, "local_attention_window_len") or 0)

    def stack(s: dict, window: int, final_norm: bool) -> dict:
        return {"dim": s["dim"], "n_layers": s["n_layers"], "n_heads": s["n_heads"], "window": window,
                "mlp_hidden": s["mlp_hidden"], "final_norm": final_norm}

    entropy_model = {"arch": "transformer", "model": {
        "vocab_size": BLT_VOCAB, "dim": pat["dim"], "n_layers": pat["n_layers"], "n_heads": pat["n_heads"],
        "window": int(pat.get("sliding_window") or 0), "mlp_hidden": pat["mlp_hidden"], "qk_norm": False,
        "rope_theta": pat["theta"], "norm_eps": pat["eps"]}}
    model = {
        "vocab_size": BLT_VOCAB,
        "encoder": stack(enc, window, False), "latent": stack(glob, 0, False), "decoder": stack(dec, window, True),
        "cross_attn_k": k, "latent_proj": k * enc["dim"] != glob["dim"],
        "ngrams": {"sizes": [int(n) for n in _top(cfg, "encoder_hash_byte_group_size")],
                   "buckets": int(_top(cfg, "encoder_hash_byte_group_vocab")), "hash": "blt", "functions": functions},
        "patcher": {"kind": "entropy", "threshold": float(_top(cfg, "patching_threshold")),
                    "max_patch_len": int(_top(cfg, "max_patch_length") or 0), "markers": False, "lone_first": True,
                    "entropy_model_config": entropy_model},
        "qk_norm": False, "rope_theta": theta.pop(), "norm_eps": eps.pop(),
        "decoder_reads": "complete", "read_every_layer": bool(dec["cross_attn_all_layers"]), "cross_residual": 2,
    }
    return {"arch": "blt", "model": model}


def transformers_config(model) -> dict:
    """omnibyte's BLT → the config.json of the same model in transformers' port; a one-line error
    naming every setting of `model` that the port cannot express."""
    check_exportable(model)
    cfg, em = model.cfg, model.patcher.entropy_model.cfg
    k = cfg.cross_attn_k

    def sub(s, kind: str, theta: float, eps: float, ratio: float = cfg.mlp_ratio, **extra) -> dict:
        width = s.mlp_hidden or mlp_hidden(s.dim, ratio)
        return {"model_type": kind, "hidden_size": s.dim, "num_attention_heads": s.n_heads,
                "num_key_value_heads": s.n_heads, "num_hidden_layers": s.n_layers, "intermediate_size": width,
                "rms_norm_eps": eps, "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
                "hidden_act": "silu", **extra}

    local = dict(vocab_size=BLT_VOCAB, cross_attn_k=k, hidden_size_global=cfg.latent.dim)
    theta, eps = cfg.rope_theta, cfg.norm_eps
    return {
        "model_type": "blt", "architectures": ["BltForCausalLM"], "vocab_size": BLT_VOCAB,
        "patch_in_forward": True, "patching_mode": "entropy", "patching_threshold": cfg.patcher.threshold,
        "max_patch_length": cfg.patcher.max_patch_len or None,
        "local_attention_window_len": cfg.encoder.window or None, "cross_attn_k": k,
        "encoder_hash_byte_group_size": list(cfg.ngrams.sizes), "encoder_hash_byte_group_vocab": cfg.ngrams.buckets,
        "encoder_hash_byte_group_nb_functions": cfg.ngrams.functions, "tie_word_embeddings": False,
        # the port's cached generation loses the context (transformers' BLT feeds only the newest
        # byte after the prompt); its uncached path is the one that computes this model
        "use_cache": False, "bos_token_id": 1, "eos_token_id": 2,
        ENCODER: sub(cfg.encoder, "blt_local_encoder", theta, eps, cross_attn_all_layers=False, **local),
        DECODER: sub(cfg.decoder, "blt_local_decoder", theta, eps, cross_attn_all_layers=cfg.read_every_layer,
                     **local),
        GLOBAL: sub(cfg.latent, "blt_global_transformer", theta, eps),
        PATCHER: {**sub(em.stack, "blt_patcher", em.rope_theta, em.norm_eps, em.mlp_ratio, vocab_size=BLT_VOCAB),
                  "sliding_window": em.window or None},
    }


def check_exportable(model) -> None:
    """A one-line error listing what of `model` transformers' BLT port lacks, if anything."""
    cfg = model.cfg
    p = cfg.patcher
    lacks = []
    if model.arch != "blt":
        raise OmnibyteError(f"transformers' BLT port takes BLTs; this model is a {model.arch}")

    def want(ok: bool, what: str) -> None:
        if not ok:
            lacks.append(what)

    want(cfg.vocab_size == BLT_VOCAB, f"vocab_size {cfg.vocab_size} (a BLT's is {BLT_VOCAB}: no media markers)")
    want(not cfg.adapters.media_conv and not cfg.adapters.image_encoder, "input adapters")
    want(cfg.ngrams.hash == "blt", "ngrams.hash 'omnibyte'")
    want(p.kind == "entropy", f"{p.kind} patching")
    want(not p.markers, "patcher.markers")
    want(p.lone_first, "patcher.lone_first false")
    want(not p.relative, "relative entropy thresholds")
    want(not p.image_rows and not p.audio_frame, "media patching")
    want(cfg.decoder_reads == "complete", "decoder_reads 'previous'")
    want(cfg.cross_residual == 2, "cross_residual 1")
    want(not cfg.qk_norm, "qk_norm")
    want(not cfg.encoder.final_norm and not cfg.latent.final_norm, "a final norm on the encoder or latent stack")
    want(cfg.decoder.final_norm, "a decoder without a final norm")
    want(cfg.encoder.window == cfg.decoder.window, "different encoder and decoder windows")
    want(cfg.latent.window == 0, "a windowed latent model")
    want(cfg.encoder.n_layers >= 1 and cfg.decoder.n_layers >= 1, "an encoder or decoder without layers")
    want(cfg.latent_proj == (cfg.cross_attn_k * cfg.encoder.dim != cfg.latent.dim),
         "latent_proj with k × encoder.dim = latent.dim (the port projects only when they differ)")
    em = model.patcher.entropy_model
    if em is not None:
        e = em.cfg
        want(model.patcher.entropy_model.arch == "transformer", f"a {em.arch} entropy model")
        if em.arch == "transformer":
            want(not e.qk_norm and not e.token_shift, "qk_norm or token_shift in the entropy model")
            want(not e.adapters.media_conv and not e.adapters.image_encoder, "input adapters in the entropy model")
    if lacks:
        raise OmnibyteError(f"transformers' BLT port has no equivalent of this model's {', '.join(lacks)}")


# --------------------------------------------------------------------------- weights


def _rope_perm(head_dim: int) -> torch.Tensor:
    """Rows of a head in omnibyte's RoPE order, taken from the interleaved order: (0, 2, 4, …, 1, 3, …)."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def _heads(w: torch.Tensor, heads: int, perm: torch.Tensor) -> torch.Tensor:
    """Rows of a (heads · d, in) projection reordered within each head by `perm`."""
    return w.reshape(heads, -1, w.shape[-1])[:, perm].reshape(w.shape)


def _repeat_kv(w: torch.Tensor, kv_heads: int, heads: int) -> torch.Tensor:
    """A (kv_heads · d, in) k or v projection as (heads · d, in): each k/v head repeated for the
    query heads that share it (consecutive query heads share one, as in the port)."""
    if kv_heads == heads:
        return w
    d = w.shape[0] // kv_heads
    return w.reshape(kv_heads, 1, d, -1).expand(kv_heads, heads // kv_heads, d, w.shape[-1]).reshape(heads * d, -1)


class _Source:
    """The transformers-named tensors being imported: each read once, the names read remembered,
    so names left over (weights omnibyte would silently drop) can be reported."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self.tensors, self.used = tensors, set()

    def __call__(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise OmnibyteError(f"the checkpoint has no tensor {name}")
        self.used.add(name)
        return self.tensors[name].float()

    def has(self, name: str) -> bool:
        return name in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors.shape(name) if hasattr(self.tensors, "shape") else self.tensors[name].shape)

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of a tensor, read alone where the source can (a fused table's parts)."""
        self.used.add(name)
        if hasattr(self.tensors, "rows"):
            return self.tensors.rows(name, start, stop).float()
        return self.tensors[name][start:stop].float().clone()

    def skip(self, prefix: str) -> None:
        self.used.update(n for n in self.tensors if n.startswith(prefix))


def omnibyte_weights(cfg: dict, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a transformers BLT (its names; `cfg` its config.json) → the state dict of the
    omnibyte BLT `omnibyte_config(cfg)` describes, in fp32."""
    get = _Source(tensors)
    enc, dec, glob, pat = (_stack(cfg, n) for n in (ENCODER, DECODER, GLOBAL, PATCHER))
    out: dict[str, torch.Tensor] = {}

    def layers(src: str, dst: str, s: dict) -> None:
        perm = _rope_perm(s["dim"] // s["n_heads"])
        for i in range(s["n_layers"]):
            a, b = f"{src}.layers.{i}", f"{dst}.layers.{i}"
            q = _heads(get(f"{a}.self_attn.q_proj.weight"), s["n_heads"], perm)
            k = _heads(_repeat_kv(get(f"{a}.self_attn.k_proj.weight"), s["kv_heads"], s["n_heads"]), s["n_heads"], perm)
            v = _repeat_kv(get(f"{a}.self_attn.v_proj.weight"), s["kv_heads"], s["n_heads"])
            out[f"{b}.attn.wqkv.weight"] = torch.cat([q, k, v])
            out[f"{b}.attn.wo.weight"] = get(f"{a}.self_attn.o_proj.weight")
            out[f"{b}.attn_norm.weight"] = get(f"{a}.input_layernorm.weight")
            out[f"{b}.mlp_norm.weight"] = get(f"{a}.post_attention_layernorm.weight")
            out[f"{b}.mlp.w13.weight"] = torch.cat([get(f"{a}.mlp.gate_proj.weight"), get(f"{a}.mlp.up_proj.weight")])
            out[f"{b}.mlp.w2.weight"] = get(f"{a}.mlp.down_proj.weight")

    def cross(src: str, dst: str, s: dict) -> None:
        kv = [_repeat_kv(get(f"{src}.{p}_proj.weight"), s["kv_heads"], s["n_heads"]) for p in ("k", "v")]
        out[f"{dst}.attn.wq.weight"] = get(f"{src}.q_proj.weight")
        out[f"{dst}.attn.wkv.weight"] = torch.cat(kv)
        out[f"{dst}.attn.wo.weight"] = get(f"{src}.o_proj.weight")
        out[f"{dst}.q_norm.weight"] = get(f"{src}.q_norm.weight")
        out[f"{dst}.kv_norm.weight"] = get(f"{src}.k_norm.weight")

    m = "model"
    # bytes → local encoder: token embedding (rows in omnibyte's id order) + hash n-gram tables
    out["embed.bytes.weight"] = get(f"{m}.local_encoder.embed_tokens.weight")[_BLT_ROWS]
    n_tables = int(_top(cfg, "encoder_hash_byte_group_nb_functions")) * len(_top(cfg, "encoder_hash_byte_group_size"))
    buckets = int(_top(cfg, "encoder_hash_byte_group_vocab"))
    fused = f"{m}.encoder_hash_tok_embedding.weight"
    if get.has(fused):  # the port's one table, all tables stacked
        rows = get.shape(fused)[0]
        if rows != n_tables * buckets:
            raise OmnibyteError(f"the hash table has {rows:,} rows, the config {n_tables} × {buckets:,}")
        tables = [get.rows(fused, i * buckets, (i + 1) * buckets) for i in range(n_tables)]
    else:  # one per (function, n), as Meta's checkpoints hold them
        tables = [get(f"{m}.encoder_hash_tok_embedding.{i}.weight") for i in range(n_tables)]
    for i, table in enumerate(tables):
        out[f"embed.ngrams.{i}.weight"] = table
    layers(f"{m}.local_encoder", "encoder", enc)
    # bytes → patches: the last encoder layer's cross-attention pools (see the module docstring)
    out["pool_init.weight"] = get(f"{m}.local_encoder.patch_embedding_projection.weight")
    last = enc["n_layers"] - 1 if enc["cross_attn_all_layers"] else 0
    cross(f"{m}.local_encoder.cross_attn_layers.{last}", "pooler", enc)
    get.skip(f"{m}.local_encoder.cross_attn_layers.")
    k = int(_top(cfg, "cross_attn_k"))
    if k * enc["dim"] != glob["dim"]:
        out["to_latent.weight"] = get(f"{m}.global_transformer.token_embedding_projection.weight")
    layers(f"{m}.global_transformer", "latent", glob)
    # latent → bytes
    out["start"] = torch.zeros(glob["dim"])  # the port has none: read only where a document begins mid-row
    out["from_latent.weight"] = get(f"{m}.local_decoder.patch_embedding_projection.weight")
    cross(f"{m}.local_decoder.cross_attn_layers.0", "reader", dec)
    for i in range(1, dec["n_layers"] if dec["cross_attn_all_layers"] else 1):
        cross(f"{m}.local_decoder.cross_attn_layers.{i}", f"layer_readers.{i - 1}", dec)
    layers(f"{m}.local_decoder", "decoder", dec)
    out["decoder.norm.weight"] = get(f"{m}.local_decoder.norm.weight")
    out["head.weight"] = get("lm_head.weight")[_BLT_ROWS]
    # the entropy model
    e = "patcher.entropy_model"
    out[f"{e}.embed.weight"] = get(f"{m}.patcher.embed_tokens.weight")[_BLT_ROWS]
    layers(f"{m}.patcher", f"{e}.stack", pat)
    out[f"{e}.stack.norm.weight"] = get(f"{m}.patcher.norm.weight")
    out[f"{e}.head.weight"] = get(f"{m}.patcher.lm_head.weight")[_BLT_ROWS]
    left = sorted(set(tensors) - get.used)
    if left:
        raise OmnibyteError(f"the checkpoint holds {len(left)} tensor(s) omnibyte's BLT has no place for, e.g. "
                            f"{left[0]}")
    return out


def transformers_weights(model) -> dict[str, torch.Tensor]:
    """omnibyte's BLT (`check_exportable`) → its tensors under transformers' names, in fp32."""
    check_exportable(model)
    cfg = model.cfg
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    unrows = torch.argsort(_BLT_ROWS)  # BLT row r ← omnibyte id unrows[r]
    out: dict[str, torch.Tensor] = {}

    def layers(src: str, dst: str, n_layers: int, dim: int, heads: int) -> None:
        back = torch.argsort(_rope_perm(dim // heads))
        for i in range(n_layers):
            a, b = f"{src}.layers.{i}", f"{dst}.layers.{i}"
            q, k, v = sd[f"{a}.attn.wqkv.weight"].chunk(3)
            out[f"{b}.self_attn.q_proj.weight"] = _heads(q, heads, back)
            out[f"{b}.self_attn.k_proj.weight"] = _heads(k, heads, back)
            out[f"{b}.self_attn.v_proj.weight"] = v
            out[f"{b}.self_attn.o_proj.weight"] = sd[f"{a}.attn.wo.weight"]
            out[f"{b}.input_layernorm.weight"] = sd[f"{a}.attn_norm.weight"]
            out[f"{b}.post_attention_layernorm.weight"] = sd[f"{a}.mlp_norm.weight"]
            gate, up = sd[f"{a}.mlp.w13.weight"].chunk(2)
            out[f"{b}.mlp.gate_proj.weight"], out[f"{b}.mlp.up_proj.weight"] = gate, up
            out[f"{b}.mlp.down_proj.weight"] = sd[f"{a}.mlp.w2.weight"]

    def cross(src: str, dst: str) -> None:
        k, v = sd[f"{src}.attn.wkv.weight"].chunk(2)
        out[f"{dst}.q_proj.weight"] = sd[f"{src}.attn.wq.weight"]
        out[f"{dst}.k_proj.weight"], out[f"{dst}.v_proj.weight"] = k, v
        out[f"{dst}.o_proj.weight"] = sd[f"{src}.attn.wo.weight"]
        out[f"{dst}.q_norm.weight"] = sd[f"{src}.q_norm.weight"]
        out[f"{dst}.k_norm.weight"] = sd[f"{src}.kv_norm.weight"]

    m = "model"
    out[f"{m}.local_encoder.embed_tokens.weight"] = sd["embed.bytes.weight"][unrows]
    out[f"{m}.encoder_hash_tok_embedding.weight"] = torch.cat(
        [sd[f"embed.ngrams.{i}.weight"] for i in range(len(model.embed.ngrams))])
    layers("encoder", f"{m}.local_encoder", cfg.encoder.n_layers, cfg.encoder.dim, cfg.encoder.n_heads)
    out[f"{m}.local_encoder.patch_embedding_projection.weight"] = sd["pool_init.weight"]
    cross("pooler", f"{m}.local_encoder.cross_attn_layers.0")
    if cfg.latent_proj:
        out[f"{m}.global_transformer.token_embedding_projection.weight"] = sd["to_latent.weight"]
    layers("latent", f"{m}.global_transformer", cfg.latent.n_layers, cfg.latent.dim, cfg.latent.n_heads)
    out[f"{m}.local_decoder.patch_embedding_projection.weight"] = sd["from_latent.weight"]
    cross("reader", f"{m}.local_decoder.cross_attn_layers.0")
    for i in range(len(model.layer_readers)):
        cross(f"layer_readers.{i}", f"{m}.local_decoder.cross_attn_layers.{i + 1}")
    layers("decoder", f"{m}.local_decoder", cfg.decoder.n_layers, cfg.decoder.dim, cfg.decoder.n_heads)
    out[f"{m}.local_decoder.norm.weight"] = sd["decoder.norm.weight"]
    out["lm_head.weight"] = sd["head.weight"][unrows]
    e, ec = "patcher.entropy_model", model.patcher.entropy_model.cfg
    out[f"{m}.patcher.embed_tokens.weight"] = sd[f"{e}.embed.weight"][unrows]
    layers(f"{e}.stack", f"{m}.patcher", ec.n_layers, ec.dim, ec.n_heads)
    out[f"{m}.patcher.norm.weight"] = sd[f"{e}.stack.norm.weight"]
    out[f"{m}.patcher.lm_head.weight"] = sd[f"{e}.head.weight"][unrows]
    return {k: v.contiguous() for k, v in out.items()}

