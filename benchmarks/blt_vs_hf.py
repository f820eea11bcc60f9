"""omnibyte BLT vs Hugging Face transformers' `BltForCausalLM` at the same tiny size, on this CPU.

Training throughput (bytes/s of forward + backward + AdamW, median step after a warm-up) of the
same configuration on the same random bytes, each side in its own process and virtual
environment: omnibyte's .venv for ours, benchmarks/.venv-peers for theirs (random weights both).

Fair settings (shared/PEERS.md): theirs with `use_cache=False` (its cached path breaks a training
forward), no entropy patcher inside (`patch_in_forward=False`), fixed patches passed as
`patch_lengths=[1, P, P, …, rest]` (the layout its own patcher makes), `hidden_size_global` set
in the encoder and decoder configs, the same hash bucket count and n-gram sizes (3..8), the same
MLP widths, local window, cross-attention k, and one cross-attention in the decoder
(`cross_attn_all_layers=False`, as ours). Its ids are bytes + 4 (vocabulary 260); ours 263.

Set up the peer environment once (torch pinned in the same pip command):
    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 transformers==5.23.0
Run (≈ 3 minutes on a 2-core CPU; --quick ≈ 10 s, prints only):
    .venv/bin/python benchmarks/blt_vs_hf.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, PEER_PYTHON, require_peer_env  # stdlib only, so the peer worker imports it too

FULL = dict(batch_size=4, seq_len=2048, patch_size=4, dim_local=128, dim_global=256, local_heads=2,
            global_heads=4, enc_layers=1, dec_layers=2, global_layers=4, windows=[512, 128], cross_attn_k=2,
            hash_buckets=4096, ngram_sizes=[3, 4, 5, 6, 7, 8], steps=5, threads=2, lr=1e-4)
QUICK = dict(FULL, batch_size=2, seq_len=256, dim_local=32, dim_global=64, global_layers=2, windows=[64],
             hash_buckets=256, steps=2)


def mlp_hidden(dim: int, ratio: float = 8 / 3, multiple_of: int = 32) -> int:
    """omnibyte's SwiGLU width (omnibyte.nn.mlp_hidden), given to both sides."""
    return multiple_of * math.ceil(int(dim * ratio) / multiple_of)


# --------------------------------------------------------------------------- workers


def omnibyte_model(job: dict):
    from omnibyte.models.blt import BLT, BLTConfig, LatentConfig, LocalConfig
    from omnibyte.patching import PatcherConfig

    cfg = BLTConfig(dim_local=job["dim_local"], dim_global=job["dim_global"], cross_attn_k=job["cross_attn_k"],
                    encoder=LocalConfig(job["enc_layers"], job["local_heads"], job["window"]),
                    latent=LatentConfig(job["global_layers"], job["global_heads"]),
                    decoder=LocalConfig(job["dec_layers"], job["local_heads"], job["window"]),
                    hash_buckets=job["hash_buckets"], ngram_sizes=tuple(job["ngram_sizes"]),
                    patcher=PatcherConfig("static", patch_size=job["patch_size"]))
    model = BLT(cfg)

    def loss(ids):  # ids (B, T+1)
        return model(ids[:, :-1], ids[:, 1:]).loss

    return model, loss


def hf_model(job: dict):
    import torch
    from transformers import BltConfig, BltForCausalLM

    dl, dg, k = job["dim_local"], job["dim_global"], job["cross_attn_k"]
    local = dict(hidden_size=dl, num_attention_heads=job["local_heads"], hidden_size_global=dg, cross_attn_k=k,
                 intermediate_size=mlp_hidden(dl), cross_attn_all_layers=False)
    cfg = BltConfig(
        vocab_size=260, patch_in_forward=False, use_cache=False, cross_attn_k=k,
        local_attention_window_len=job["window"], encoder_hash_byte_group_vocab=job["hash_buckets"],
        encoder_hash_byte_group_size=list(job["ngram_sizes"]), max_position_embeddings=job["seq_len"] + 8,
        encoder_config=dict(local, num_hidden_layers=job["enc_layers"]),
        decoder_config=dict(local, num_hidden_layers=job["dec_layers"]),
        global_config=dict(hidden_size=dg, num_attention_heads=job["global_heads"],
                           num_hidden_layers=job["global_layers"], intermediate_size=mlp_hidden(dg)),
        attn_implementation="sdpa")
    model = BltForCausalLM(cfg)
    t, p = job["seq_len"], job["patch_size"]
    n_full = (t - 1) // p
    lengths = [1] + [p] * n_full + ([t - 1 - p * n_full] if t - 1 - p * n_full else [])
    patch_lengths = torch.tensor([lengths] * job["batch_size"])

    def loss(ids):  # ids (B, T+1): its loss shifts labels itself, so feed T ids (T-1 targets)
        x = ids[:, :-1] + 4
        return model(input_ids=x, labels=x, patch_lengths=patch_lengths, use_cache=False).loss

    return model, loss


def worker(side: str, job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    model, loss_fn = omnibyte_model(job) if side == "omnibyte" else hf_model(job)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (job["batch_size"], job["seq_len"] + 1), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job["lr"])
    model.train()
    times, losses = [], []
    for _ in range(job["steps"] + 1):  # the first step is warm-up
        t0 = time.perf_counter()
        loss = loss_fn(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return {"bytes_per_s": job["batch_size"] * job["seq_len"] / statistics.median(times[1:]),
            "step_s": times[1:], "params": sum(p.numel() for p in params), "losses": losses}


# --------------------------------------------------------------------------- orchestrator


def run_worker(python: Path, side: str, job: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]))
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", side, json.dumps(job)]
    proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the {side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds; print only")
    ap.add_argument("--steps", type=int, help="timed steps (default 5; quick 2)")
    ap.add_argument("--windows", help="local attention windows to compare, comma-separated (default 512,128)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker")
    ap.add_argument("--worker", choices=["omnibyte", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.job))))
        return 0
    require_peer_env("transformers==5.23.0")
    job = dict(QUICK if args.quick else FULL)
    if args.steps:
        job["steps"] = args.steps
    if args.windows:
        job["windows"] = [int(w) for w in args.windows.split(",")]

    sys.path.insert(0, str(HERE))
    from blt_common import header, write_section

    lines = header("BLT vs transformers BltForCausalLM" + (" (quick)" if args.quick else "")) + [
        f"Batch {job['batch_size']} × {job['seq_len']} random bytes, forward + backward + AdamW, median of "
        f"{job['steps']} steps after one warm-up, {job['threads']} threads, fp32. Both: static patches of "
        f"{job['patch_size']}, latent {job['dim_global']} × {job['global_layers']} layers ({job['global_heads']} "
        f"heads), local width {job['dim_local']} ({job['local_heads']} heads), encoder {job['enc_layers']} / decoder "
        f"{job['dec_layers']} layers, k = {job['cross_attn_k']}, {job['hash_buckets']} hash buckets × n-grams "
        f"{job['ngram_sizes']}; the local attention window varies.", "",
        "| local window | params omnibyte / transformers | omnibyte bytes/s | transformers bytes/s | "
        "omnibyte / transformers | loss first → last (ours; theirs) |",
        "| ---: | ---: | ---: | ---: | ---: | --- |"]
    for window in job["windows"]:
        res = {}
        for side, python in (("omnibyte", Path(sys.executable)), ("hf", PEER_PYTHON)):
            print(f"window {window}: running the {side} worker ...", file=sys.stderr, flush=True)
            res[side] = run_worker(python, side, dict(job, window=window), args.timeout)
        ours, theirs = res["omnibyte"], res["hf"]
        lines.append(f"| {window} | {ours['params'] / 1e6:.2f}M / {theirs['params'] / 1e6:.2f}M | "
                     f"{ours['bytes_per_s']:,.0f} | {theirs['bytes_per_s']:,.0f} | "
                     f"{ours['bytes_per_s'] / theirs['bytes_per_s']:.2f}× | {ours['losses'][0]:.3f} → "
                     f"{ours['losses'][-1]:.3f}; {theirs['losses'][0]:.3f} → {theirs['losses'][-1]:.3f} |")
    print("\n".join(lines))
    if not args.quick:
        write_section("blt-vs-hf", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
