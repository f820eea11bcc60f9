"""Tiny released-format BLT checkpoints for the import/export tests: transformers' `BltForCausalLM`
with random weights, saved as a transformers folder or written in Meta's format.

`write_official` maps the port's tensor names back to Meta's the way the port's conversion script
maps Meta's forward (module renames, the fused hash table split per function and size, the head
moved back into the local decoder, the entropy model in its own folder), and writes the params.json
arguments that script reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from omnibyte.format import BOS
from omnibyte.nn.hash_ngram import BLT_IDS

TEXT = b"In the beginning God created the heaven and the earth. And the earth was without form, and void"
# the port's module names → Meta's (the reverse of its conversion script's renames)
TO_META = ((".self_attn.", ".attention."), (".mlp.", ".feed_forward."), (".input_layernorm.", ".attention_norm."),
           (".post_attention_layernorm.", ".ffn_norm."), (".embed_tokens.", ".tok_embeddings."),
           (".q_norm.", ".cross_attn_norm_q."), (".k_norm.", ".cross_attn_norm_kv."), (".gate_proj.", ".w1."),
           (".down_proj.", ".w2."), (".up_proj.", ".w3."), (".q_proj.", ".wq."), (".k_proj.", ".wk."),
           (".v_proj.", ".wv."), (".o_proj.", ".wo."), (".lm_head.", ".output."))


def blt_ids(ids) -> torch.Tensor:
    """omnibyte ids → the ids transformers' BLT takes (byte + 4, BOS 1, EOS 2)."""
    return torch.tensor(BLT_IDS)[torch.as_tensor(ids)]


def tiny_hf_blt(seed: int = 0, dl: int = 16, dg: int = 32, k: int = 2, heads: int = 2, kv_heads: int | None = None,
                enc_layers: int = 1, dec_layers: int = 2, enc_all: bool = False, dec_all: bool = True,
                window: int | None = 8, entropy_window: int = 512, buckets: int = 31, sizes=(3, 4, 5),
                functions: int = 1, max_patch_length: int | None = None, bytes_per_patch: float = 2.5):
    """A random `BltForCausalLM` in eval mode. Its entropy model's head is spread out so entropies
    differ, its threshold gives about `bytes_per_patch` on `TEXT`, and its head is sharpened so
    greedy decoding follows the context rather than near-ties."""
    from transformers import BltConfig, BltForCausalLM

    local = dict(hidden_size=dl, num_attention_heads=heads, num_key_value_heads=kv_heads, hidden_size_global=dg,
                 cross_attn_k=k)
    cfg = BltConfig(
        vocab_size=260, cross_attn_k=k, encoder_hash_byte_group_vocab=buckets, encoder_hash_byte_group_size=list(sizes),
        encoder_hash_byte_group_nb_functions=functions, local_attention_window_len=window,
        max_patch_length=max_patch_length, use_cache=False, patching_threshold=0.0,
        encoder_config=dict(local, num_hidden_layers=enc_layers, cross_attn_all_layers=enc_all, intermediate_size=40),
        decoder_config=dict(local, num_hidden_layers=dec_layers, cross_attn_all_layers=dec_all, intermediate_size=48),
        global_config=dict(hidden_size=dg, num_attention_heads=heads, num_hidden_layers=2, intermediate_size=64),
        patcher_config=dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32,
                            sliding_window=entropy_window))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BltForCausalLM(cfg).eval()
        with torch.no_grad():
            model.model.patcher.lm_head.weight.normal_(0, 0.3)
            model.lm_head.weight.mul_(10)
            ent, _, _ = model.model.patcher(blt_ids([[BOS, *TEXT]]), patch_size=4, threshold=1e9)
    model.config.patching_threshold = float(ent[0, 1:].quantile(1 - 1 / bytes_per_patch))
    return model


def write_official(model, folder: Path) -> Path:
    """`model` (a `BltForCausalLM`) in Meta's format: folder/blt/{params.json, consolidated.pth} and
    folder/entropy_model/{params.json, consolidated.pth}, as Meta's download lays them out; returns
    the model folder."""
    cfg = model.config
    enc, dec, glob, pat = cfg.encoder_config, cfg.decoder_config, cfg.global_config, cfg.patcher_config
    main, entropy = {}, {}
    for name, t in model.state_dict().items():
        if name.startswith("model.patcher."):
            target, name = entropy, "." + name[len("model.patcher."):]
        else:
            target = main
            name = "." + (name[len("model."):] if name.startswith("model.") else "local_decoder." + name)
        for new, old in TO_META:
            name = name.replace(new, old)
        name = name[1:]
        if name == "encoder_hash_tok_embedding.weight":  # one table per (function, n), as Meta trains them
            for i, table in enumerate(t.split(cfg.encoder_hash_byte_group_vocab)):
                target[f"encoder_hash_tok_embedding.{i}.weight"] = table.clone()
        else:
            target[name] = t.clone()
    theta = enc.rope_parameters["rope_theta"]
    args = {
        "vocab_size": 260, "dim_local_encoder": enc.hidden_size, "dim_local_decoder": dec.hidden_size,
        "dim_global": glob.hidden_size, "n_layers_local_encoder": enc.num_hidden_layers,
        "n_layers_local_decoder": dec.num_hidden_layers, "n_layers_global": glob.num_hidden_layers,
        "n_heads_local_encoder": enc.num_attention_heads, "n_heads_local_decoder": dec.num_attention_heads,
        "n_heads_global": glob.num_attention_heads, "cross_attn_nheads": enc.num_attention_heads,
        "cross_attn_k": cfg.cross_attn_k, "cross_attn_encoder": True, "cross_attn_decoder": True,
        "cross_attn_init_by_pooling": True, "cross_attn_all_layers_encoder": enc.cross_attn_all_layers,
        "cross_attn_all_layers_decoder": dec.cross_attn_all_layers, "downsampling_by_pooling": "max",
        "use_local_encoder_transformer": True,
        "encoder_hash_byte_group_size": ",".join(map(str, cfg.encoder_hash_byte_group_size)),
        "encoder_hash_byte_group_vocab": cfg.encoder_hash_byte_group_vocab,
        "encoder_hash_byte_group_nb_functions": cfg.encoder_hash_byte_group_nb_functions,
        "local_attention_window_len": cfg.local_attention_window_len, "norm_eps": enc.rms_norm_eps,
        "rope_theta": theta, "patching_mode": "entropy", "patch_in_forward": True, "monotonicity": False,
        "patching_threshold": cfg.patching_threshold, "max_patch_length": cfg.max_patch_length,
    }
    entropy_args = {"dim": pat.hidden_size, "n_layers": pat.num_hidden_layers, "n_heads": pat.num_attention_heads,
                    "vocab_size": 260, "norm_eps": pat.rms_norm_eps, "max_seqlen": 8192, "ffn_dim_multiplier": 1.0,
                    "rope_theta": pat.rope_parameters["rope_theta"]}
    patcher_args = {"patching_mode": "entropy", "threshold": cfg.patching_threshold,
                    "max_patch_length": cfg.max_patch_length, "monotonicity": False, "threshold_add": None}
    out = folder / "blt"
    for path, params, state in ((out, {"model": args, "data": {"patcher_args": patcher_args}}, main),
                                (folder / "entropy_model", {"entropy_model": entropy_args, "train_entropy_model": True},
                                 entropy)):
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps(params, indent=1))
        torch.save({"model": state}, path / "consolidated.pth")
    return out
