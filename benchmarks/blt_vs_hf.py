"""omnibyte BLT vs Hugging Face transformers' `BltForCausalLM` at the same tiny size, on this CPU.

Training throughput (bytes/s of forward + backward + AdamW) of the same configuration on the same
random bytes (random weights both). transformers lives in its own virtual environment
(benchmarks/.venv-peers), so the sides cannot share a process; the comparison is interleaved by
rounds instead (`benchmarks.common.compare`, 7 rounds by default): each round starts one fresh
worker process per side (omnibyte's in .venv), in an order that alternates between rounds, and each
worker builds its model, runs one warm-up step and then --steps timed steps; their median is the
round's sample (process start-up is not timed). Each worker also counts the FLOPs of one forward +
backward (`benchmarks.common.count_flops`) and reads the local attention window its model really
applies. Tables give the median over rounds and the range (min–max); the ratio is the ratio of
medians with the range of the per-round ratios; the per-round samples follow each table.

What each side computes, at the same window W (checked in every worker, not assumed):

- omnibyte: local encoder and decoder attend causally to the W latest bytes (query t sees keys
  t-W+1 .. t), computed banded (`omnibyte.nn.window_attention`: about T · (W + 128) scores per
  head, not T²); latent: full causal attention over patches. Hash n-gram embeddings: one table per
  n in 3..8 of `buckets` rows, omnibyte's rolling hash, summed with the byte embedding and scaled
  by 1/√7. Patches: the static patcher (4 bytes, the first patch the first byte alone).
- transformers 5.23 `BltForCausalLM`: `local_attention_window_len` W becomes the encoder config's
  `sliding_window`, and the forward builds one sliding-window causal mask from it
  (`create_sliding_window_causal_mask`: key k visible to query q iff q-W < k ≤ q, the same keys as
  ours) which both the local encoder and the local decoder use. The window is applied, but as a
  dense (B, 1, T, T) boolean mask handed to SDPA: every layer still scores all T × T pairs, so its
  cost does not shrink with W. Latent: full causal. Hash n-grams: one table per n in 3..8 of
  `buckets` rows (one hash function), Meta's rolling hash, summed unscaled. Patches: given as
  `patch_lengths = [1, 4, 4, …, rest]` (no entropy patcher in the model).

Fair settings (shared/PEERS.md): theirs with `use_cache=False` (its cached path breaks a training
forward), no entropy patcher inside (`patch_in_forward=False`), fixed patches passed as
`patch_lengths=[1, P, P, …, rest]` (the layout its own patcher makes), `hidden_size_global` set
in the encoder and decoder configs, the same hash bucket count and n-gram sizes (3..8), the same
MLP widths, local window, cross-attention k, and one cross-attention in the decoder
(`cross_attn_all_layers=False`, as ours). Its ids are bytes + 4 (vocabulary 260); ours 263.

Set up the peer environment once (torch pinned in the same pip command):
    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 transformers==5.23.0
Run (≈ 3 minutes on a 2-core CPU; --quick ≈ 30 s, prints only):
    .venv/bin/python -m benchmarks.blt_vs_hf [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

# stdlib at import time (torch and the models are imported where used), so the peer worker imports it too
from benchmarks.common import (
    Measured,
    compare,
    count_flops,
    fmt_rate,
    fmt_speedup,
    header,
    how_timed,
    load_line,
    per_round_table,
    require_peer_env,
    results_file,
    results_option,
    run_worker,
    train_step,
    write_section,
)

# sizes in omnibyte's names (BLTConfig's stacks and n-gram tables; the local window varies by round)
FULL = dict(batch_size=4, seq_len=2048, patch_size=4, encoder=dict(dim=128, n_layers=1, n_heads=2),
            latent=dict(dim=256, n_layers=4, n_heads=4), decoder=dict(dim=128, n_layers=2, n_heads=2),
            windows=[512, 128], cross_attn_k=2, ngrams=dict(buckets=4096, sizes=[3, 4, 5, 6, 7, 8]), steps=2,
            rounds=7, threads=2, lr=1e-4)
QUICK = dict(FULL, batch_size=2, seq_len=256, encoder=dict(FULL["encoder"], dim=32),
             latent=dict(FULL["latent"], dim=64, n_layers=2), decoder=dict(FULL["decoder"], dim=32), windows=[64],
             ngrams=dict(FULL["ngrams"], buckets=256), rounds=2)
SIDES = {"omnibyte": "omnibyte", "hf": "transformers"}


def mlp_hidden(dim: int, ratio: float = 8 / 3, multiple_of: int = 32) -> int:
    """omnibyte's SwiGLU width (omnibyte.nn.mlp_hidden), given to both sides."""
    return multiple_of * math.ceil(int(dim * ratio) / multiple_of)


# --------------------------------------------------------------------------- workers


def omnibyte_model(job: dict):
    from omnibyte.models import build_model

    model = build_model("blt", {"encoder": {**job["encoder"], "window": job["window"]}, "latent": job["latent"],
                                "decoder": {**job["decoder"], "window": job["window"]},
                                "cross_attn_k": job["cross_attn_k"], "ngrams": job["ngrams"],
                                "patcher": {"kind": "static", "patch_size": job["patch_size"]}})

    def loss(ids):  # ids (B, T+1)
        return model(ids[:, :-1], ids[:, 1:]).loss

    def window() -> int:  # the stacks attend in bands of their configured window (no mask to read)
        assert model.encoder.window == model.decoder.window
        return model.encoder.window

    return model, loss, window


def hf_model(job: dict):
    import torch
    from transformers import BltConfig, BltForCausalLM

    enc, dec, lat, k = job["encoder"], job["decoder"], job["latent"], job["cross_attn_k"]

    def local(stack):
        return dict(hidden_size=stack["dim"], num_attention_heads=stack["n_heads"], hidden_size_global=lat["dim"],
                    cross_attn_k=k, intermediate_size=mlp_hidden(stack["dim"]), cross_attn_all_layers=False,
                    num_hidden_layers=stack["n_layers"])

    cfg = BltConfig(
        vocab_size=260, patch_in_forward=False, use_cache=False, cross_attn_k=k,
        local_attention_window_len=job["window"], encoder_hash_byte_group_vocab=job["ngrams"]["buckets"],
        encoder_hash_byte_group_size=list(job["ngrams"]["sizes"]), max_position_embeddings=job["seq_len"] + 8,
        encoder_config=local(enc), decoder_config=local(dec),
        global_config=dict(hidden_size=lat["dim"], num_attention_heads=lat["n_heads"],
                           num_hidden_layers=lat["n_layers"], intermediate_size=mlp_hidden(lat["dim"])),
        attn_implementation="sdpa")
    model = BltForCausalLM(cfg)
    t, p = job["seq_len"], job["patch_size"]
    n_full = (t - 1) // p
    lengths = [1] + [p] * n_full + ([t - 1 - p * n_full] if t - 1 - p * n_full else [])
    patch_lengths = torch.tensor([lengths] * job["batch_size"])

    def loss(ids):  # ids (B, T+1): its loss shifts labels itself, so feed T ids (T-1 targets)
        x = ids[:, :-1] + 4
        return model(input_ids=x, labels=x, patch_lengths=patch_lengths, use_cache=False).loss

    # the masks its local encoder and decoder are given, read in a forward
    masks = {}
    for name in ("local_encoder", "local_decoder"):
        getattr(model.model, name).register_forward_pre_hook(
            lambda module, args, kwargs, name=name: masks.__setitem__(name, kwargs.get("attention_mask")),
            with_kwargs=True)

    def window() -> int:
        """Keys the last query of the local stacks may see: the window the mask applies (the sequence
        length when there is no mask, i.e. plain causal attention)."""
        seen = set()
        for mask in masks.values():
            if mask is None:
                seen.add(job["seq_len"])
            else:  # boolean (B, 1, T, T), True = attend; or additive, 0 = attend
                row = mask[0, 0, -1]
                seen.add(int(row.sum()) if row.dtype == torch.bool else int((row == 0).sum()))
        if len(seen) != 1:
            raise RuntimeError(f"the local encoder and decoder apply different windows: {sorted(seen)}")
        return seen.pop()

    return model, loss, window


def worker(side: str, job: dict) -> dict:
    """One round's measurement of one side: a warm-up step, then job["steps"] timed steps."""
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model, loss_fn, window = omnibyte_model(job) if side == "omnibyte" else hf_model(job)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (job["batch_size"], job["seq_len"] + 1), generator=g)
    model.train()
    t = compare({side: train_step(model, ids, loss=loss_fn, lr=job["lr"])}, repeats=job["steps"], warmup=1)[side]
    flops = count_flops(lambda: loss_fn(ids).backward())  # after the timing; also the forward whose mask is read
    return {"step_s": t.median, "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "losses": [float(v["loss"]) for v in t.values], "window": window(),
            "flops_per_byte": flops / (job["batch_size"] * job["seq_len"])}


# --------------------------------------------------------------------------- orchestrator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds; prints only (unless --results)")
    ap.add_argument("--steps", type=int, help="timed steps per worker, after one warm-up step (default 2)")
    ap.add_argument("--rounds", type=int, help="rounds, each running one worker per side (default 7; quick 2)")
    ap.add_argument("--windows", help="local attention windows to compare, comma-separated (default 512,128)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker")
    results_option(ap, "results_blt.md")
    ap.add_argument("--worker", choices=list(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.job))))
        return 0
    pythons = {"omnibyte": sys.executable, "hf": require_peer_env("transformers==5.23.0")}
    job = dict(QUICK if args.quick else FULL)
    for key in ("steps", "rounds"):
        if getattr(args, key):
            job[key] = getattr(args, key)
    if args.windows:
        job["windows"] = [int(w) for w in args.windows.split(",")]

    def side(name: str, window: int):
        def measure() -> Measured:
            r = run_worker(pythons[name], "benchmarks.blt_vs_hf",
                           ["--worker", name, json.dumps(dict(job, window=window))], job["threads"], args.timeout)
            return Measured(r["step_s"], r)
        return measure

    enc, dec, lat, ng = job["encoder"], job["decoder"], job["latent"], job["ngrams"]
    lines = header("BLT vs transformers BltForCausalLM" + (" (quick)" if args.quick else "")) + [
        f"Batch {job['batch_size']} × {job['seq_len']} random bytes, forward + backward + AdamW, {job['threads']} "
        f"threads, fp32: {how_timed(job['rounds'])}; in each round one fresh process per side "
        f"(order alternating) runs a warm-up step and {job['steps']} timed steps, whose median is its sample. Both: "
        f"static patches of {job['patch_size']}, latent {lat['dim']} × {lat['n_layers']} layers "
        f"({lat['n_heads']} heads), local width {enc['dim']} ({enc['n_heads']} heads), encoder "
        f"{enc['n_layers']} / decoder {dec['n_layers']} layers, k = {job['cross_attn_k']}, {ng['buckets']} "
        f"hash buckets × n-grams {ng['sizes']}; the local attention window varies. \"window applied\": the keys the "
        "last query of the local encoder and decoder may see, read from each model in its worker (omnibyte: its "
        "banded window; transformers: the mask its forward built). Training FLOPs per byte: "
        "`torch.utils.flop_counter` over one forward + backward in each worker (matrix products; SDPA on its math "
        "path, so transformers' dense masked local attention counts all T × T scores, omnibyte's banded one its "
        "band).", "",
        "| local window | window applied (ours / theirs) | params omnibyte / transformers | train FLOPs/byte ours / "
        "theirs | omnibyte bytes/s | transformers bytes/s | omnibyte / transformers | "
        "loss first → last (ours; theirs) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    step_bytes = job["batch_size"] * job["seq_len"]
    raw = []
    for window in job["windows"]:
        print(f"window {window} ...", flush=True)
        t = compare({SIDES[n]: side(n, window) for n in SIDES}, repeats=job["rounds"], warmup=0, log=True)
        ours, theirs = t["omnibyte"], t["transformers"]
        a, b = ours.values[-1], theirs.values[-1]
        if any(r["window"] != min(window, job["seq_len"]) for r in ours.values + theirs.values):
            sys.exit(f"error: a side did not apply the local window {window}: ours {a['window']}, theirs {b['window']}")
        lines.append(f"| {window} | {a['window']} / {b['window']} | "
                     f"{a['params'] / 1e6:.2f}M / {b['params'] / 1e6:.2f}M | "
                     f"{a['flops_per_byte'] / 1e6:.2f}M / {b['flops_per_byte'] / 1e6:.2f}M | "
                     f"{fmt_rate(ours, step_bytes)} | {fmt_rate(theirs, step_bytes)} | {fmt_speedup(ours, theirs)} | "
                     f"{a['losses'][0]:.3f} → {a['losses'][-1]:.3f}; {b['losses'][0]:.3f} → {b['losses'][-1]:.3f} |")
        raw += ["", f"Per-round seconds per step, local window {window} (order = which side ran first):", "",
                *per_round_table(t, "transformers", "s/step")]
    lines += raw + ["", load_line()]
    print("\n".join(lines))
    out = results_file(args, "results_blt.md")
    if out:
        write_section(out, "blt-vs-hf", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
