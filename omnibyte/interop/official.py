"""Meta's BLT checkpoints (facebookresearch/blt) as transformers' port names them.

A model folder holds `params.json` (the training run's arguments: the model's under "model", the
patcher's under "data.patcher_args") and `consolidated.pth` ({"model": state dict}); its entropy
model is a folder of the same two files (its arguments under "entropy_model"). Meta's download puts
it beside the model folders (hf-weights/blt_1b, hf-weights/entropy_model). Here they become the
config.json and tensor names of transformers' `BltForCausalLM`, as the port's conversion script
makes them, and `omnibyte.interop.convert` takes it from there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from omnibyte.errors import OmnibyteError
from omnibyte.files import read_json_object
from omnibyte.interop.convert import DECODER, ENCODER, GLOBAL, PATCHER

PARAMS, WEIGHTS = "params.json", "consolidated.pth"
ENTROPY_DIR = "entropy_model"
# Meta's module names → the port's (a name is matched with its dots, so ".wo." never hits ".w1.")
_NAMES = ((".attention.", ".self_attn."), (".feed_forward.", ".mlp."), (".attention_norm.", ".input_layernorm."),
          (".ffn_norm.", ".post_attention_layernorm."), (".tok_embeddings.", ".embed_tokens."),
          (".cross_attn_norm_q.", ".q_norm."), (".cross_attn_norm_kv.", ".k_norm."), (".w1.", ".gate_proj."),
          (".w2.", ".down_proj."), (".w3.", ".up_proj."), (".wq.", ".q_proj."), (".wk.", ".k_proj."),
          (".wv.", ".v_proj."), (".wo.", ".o_proj."), (".output.", ".lm_head."))
# settings of Meta's BLT that the port (and so omnibyte) computes only with these values; absent = the default
_REQUIRED = {"cross_attn_encoder": True, "cross_attn_decoder": True, "cross_attn_init_by_pooling": True,
             "downsampling_by_pooling": "max", "use_local_encoder_transformer": True, "use_rope": True,
             "cross_attn_all_layers_encoder": False, "encoder_enable_byte_ngrams": False, "weight_tying": False,
             "tie_local_encoder_decoder_logits": False, "share_encoder_decoder_emb": True, "pm_size": 0,
             "non_linearity": "swiglu", "norm_type": "rmsnorm", "pre_norm": True, "dim_token": None,
             "cross_attn_window_encoder": None, "cross_attn_window_decoder": None, "n_kv_heads": None,
             "global_local_decoder_residual_layer": None, "encoder_ngram_to_size_str": None}


def entropy_folder(src: Path, given: str | Path | None) -> Path:
    """The entropy model's folder: `given`, else SRC/entropy_model, else the one beside SRC."""
    if given is not None:
        return Path(given)
    for cand in (src / ENTROPY_DIR, src.parent / ENTROPY_DIR):
        if (cand / PARAMS).is_file():
            return cand
    raise OmnibyteError(f"no entropy model found in {src / ENTROPY_DIR} or {src.parent / ENTROPY_DIR}: "
                        f"give its folder (params.json + consolidated.pth) with --entropy-model")


def weights_file(folder: Path) -> Path:
    """consolidated.pth, or consolidated/consolidated.pth (a training run's folder)."""
    for cand in (folder / WEIGHTS, folder / "consolidated" / WEIGHTS):
        if cand.is_file():
            return cand
    raise OmnibyteError(f"{folder} has no {WEIGHTS}")


def _params(folder: Path, section: str) -> tuple[dict, dict]:
    """(the arguments in `section` of folder/params.json, the whole file)."""
    raw = read_json_object(folder / PARAMS, "Meta's BLT folder: params.json + consolidated.pth")
    args = raw.get(section) or raw.get("args")
    if not isinstance(args, dict):
        raise OmnibyteError(f"{folder / PARAMS} holds no '{section}' arguments")
    return args, raw


def read_config(src: Path, entropy_dir: Path) -> dict:
    """Meta's params.json files → the port's config.json (as a dict); a one-line error for settings
    the port cannot compute. Sizes the arguments leave to code (MLP widths) come from the weights."""
    args, raw = _params(src, "model")
    em, em_raw = _params(entropy_dir, "entropy_model")
    for key, want in _REQUIRED.items():
        if key in args and args[key] != want:
            raise OmnibyteError(f"{src / PARAMS}: model.{key} is {args[key]!r}; omnibyte imports BLTs with {want!r}")
    if args.get("patching_mode", "entropy") != "entropy":
        raise OmnibyteError(f"{src / PARAMS}: model.patching_mode is {args['patching_mode']!r}; omnibyte imports "
                            f"entropy-patched BLTs")
    heads = {args[k] for k in ("cross_attn_nheads", "n_heads_local_encoder", "n_heads_local_decoder")
             if args.get(k) is not None}
    if len(heads) > 1:
        raise OmnibyteError(f"{src / PARAMS}: cross_attn_nheads must equal the local models' n_heads, got {heads}")
    patcher = {**{k: args.get(f"patching_{k}") for k in ("threshold", "threshold_add")},
               "max_patch_length": args.get("max_patch_length"), "monotonicity": args.get("monotonicity", False)}
    for found in ((em_raw.get("data") or {}).get("patcher_args"), (raw.get("data") or {}).get("patcher_args")):
        if isinstance(found, dict):  # the model folder's own patcher arguments win
            patcher.update({k: v for k, v in found.items() if k in patcher})
    if patcher["monotonicity"] or patcher["threshold_add"] is not None:
        raise OmnibyteError("this BLT patches with monotonicity or threshold_add; omnibyte imports BLTs that "
                            "patch by a global entropy threshold")
    if patcher["threshold"] is None:
        raise OmnibyteError(f"{src / PARAMS} names no patching threshold")
    sizes = args.get("encoder_hash_byte_group_size")
    if isinstance(sizes, str):
        sizes = [int(x) for x in sizes.split(",") if x]
    if not sizes:
        raise OmnibyteError(f"{src / PARAMS}: model.encoder_hash_byte_group_size is not set")
    k, theta, eps = int(args.get("cross_attn_k") or 2), float(args.get("rope_theta", 10000.0)), \
        float(args.get("norm_eps", 1e-5))
    rope = {"rope_theta": theta, "rope_type": "default"}

    def local(prefix: str, all_layers: bool) -> dict:
        return {"hidden_size": int(args[f"dim_{prefix}"]), "num_attention_heads": int(args[f"n_heads_{prefix}"]),
                "num_hidden_layers": int(args[f"n_layers_{prefix}"]), "rms_norm_eps": eps, "rope_parameters": rope,
                "cross_attn_all_layers": all_layers, "cross_attn_k": k, "hidden_size_global": int(args["dim_global"]),
                "vocab_size": int(args.get("vocab_size", 260))}

    try:
        return {
            "model_type": "blt", "vocab_size": int(args.get("vocab_size", 260)), "patch_in_forward": True,
            "patching_mode": "entropy", "patching_threshold": float(patcher["threshold"]),
            "max_patch_length": patcher["max_patch_length"],
            "local_attention_window_len": args.get("local_attention_window_len"), "cross_attn_k": k,
            "encoder_hash_byte_group_size": sizes,
            "encoder_hash_byte_group_vocab": int(args.get("encoder_hash_byte_group_vocab", 30000)),
            "encoder_hash_byte_group_nb_functions": int(args.get("encoder_hash_byte_group_nb_functions", 3)),
            ENCODER: local("local_encoder", False),
            DECODER: local("local_decoder", bool(args.get("cross_attn_all_layers_decoder", False))),
            GLOBAL: {"hidden_size": int(args["dim_global"]), "num_attention_heads": int(args["n_heads_global"]),
                     "num_key_value_heads": args.get("n_kv_heads_global"),
                     "num_hidden_layers": int(args["n_layers_global"]), "rms_norm_eps": eps, "rope_parameters": rope},
            # Meta's loader builds the entropy model with a 512-id window and default norm and RoPE
            PATCHER: {"hidden_size": int(em["dim"]), "num_attention_heads": int(em["n_heads"]),
                      "num_key_value_heads": em.get("n_kv_heads"), "num_hidden_layers": int(em["n_layers"]),
                      "rms_norm_eps": float(em.get("norm_eps", 1e-5)), "vocab_size": int(em.get("vocab_size", 260)),
                      "rope_parameters": {"rope_theta": float(em.get("rope_theta", 10000.0)), "rope_type": "default"},
                      "sliding_window": 512},
        }
    except (KeyError, TypeError, ValueError) as e:
        raise OmnibyteError(f"{src / PARAMS} or {entropy_dir / PARAMS} lacks or garbles a size: {e}") from None


def read_weights(src: Path, entropy_dir: Path, config: dict) -> dict[str, torch.Tensor]:
    """Both consolidated.pth files (memory-mapped) → one dict under the port's names; `config`
    (from `read_config`) gets the MLP widths the weights have."""
    main, entropy = _load(weights_file(src)), _load(weights_file(entropy_dir))
    out = {}
    for prefix, state in (("model.", main), ("model.patcher.", entropy)):
        for name, t in state.items():
            name = prefix + name
            for old, new in _NAMES:
                name = name.replace(old, new)
            out["lm_head.weight" if name == "model.local_decoder.lm_head.weight" else name] = t
    for sub, stack in ((ENCODER, "local_encoder"), (DECODER, "local_decoder"), (GLOBAL, "global_transformer"),
                       (PATCHER, "patcher")):
        gate = out.get(f"model.{stack}.layers.0.mlp.gate_proj.weight")
        if gate is not None:
            config[sub]["intermediate_size"] = gate.shape[0]
    return out


def _load(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a corrupt or foreign file, of any kind: say which
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OmnibyteError(f"cannot read {file}: {first}") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OmnibyteError(f"{file} holds no state dict of tensors")
    return state
