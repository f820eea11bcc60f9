"""omnibyte MEGABYTE vs MEGABYTE-pytorch (lucidrains, 0.3.6) at the same sizes, on this CPU.

Measured for each side, each in its own process and virtual environment (omnibyte's .venv for
ours, benchmarks/.venv-peers for theirs), on the very same batches:

- training bytes/s: forward + backward + AdamW (same lr schedule, clipping, betas), median step
  time over the timed steps (the first steps are warm-up);
- peak memory: the worker process's peak resident set (`ru_maxrss`), and its growth over the
  RSS right before training (activations, gradients, AdamW state); per process, so the two sides
  never share an allocator;
- validation bits per byte after the same number of steps on data/kjv (NLL in bits over non-PAD
  targets / byte targets, as `omnibyte.nn.nll_sums`);
- greedy generation bytes/s: omnibyte's cached decoding vs MEGABYTE-pytorch's `generate`
  (`filter_thres=1.0` = greedy; it re-runs the full sequence per byte, no cache).

Fair settings (shared/PEERS.md): theirs is built with `pad_id=256` so real 0x00 bytes are scored,
and with `num_tokens=263`, omnibyte's vocabulary, because the data holds BOS/EOS ids; rotary
positions and SDPA attention (`rel_pos=True, flash_attn=True`) like ours. It has one `heads` and
`dim_head` for both stages: `heads = global_heads`, `dim_head = global_dim / global_heads`, so its
local attention is wider than ours (param counts are in the table).

Set up the peer environment once (torch pinned in the same pip command):
    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 MEGABYTE-pytorch==0.3.6
Run (≈ 15 minutes in full on a 2-core CPU, half of it MEGABYTE-pytorch generating without a cache;
--quick ≈ 1 minute):
    .venv/bin/python benchmarks/megabyte_vs_pytorch.py [--quick] [--data data/kjv]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import HERE, PEER_PYTHON, require_peer_env  # stdlib only, so the peer worker imports it too

PAD, N_BYTES = 256, 256  # omnibyte's PAD id and byte count (the peer worker cannot import omnibyte)

FULL = dict(patch_size=8, global_dim=256, global_layers=4, global_heads=4, local_dim=128, local_layers=2,
            local_heads=2, seq_len=2048, batch_size=4, steps=300, timed_from=5, lr=2e-3, warmup=30,
            val_batches=0, gen_bytes=4000, prompt_bytes=64, threads=2)
QUICK = dict(FULL, global_dim=64, global_layers=1, global_heads=2, local_dim=32, local_layers=1,
             local_heads=1, seq_len=256, batch_size=2, steps=8, timed_from=3, warmup=2, val_batches=2,
             gen_bytes=40)


# ---------------------------------------------------------------- orchestrator (omnibyte venv)


def prepare_inputs(job: dict, data: str, work: Path) -> None:
    """Train batches, val windows and the generation prompt, saved as tensors both workers load."""
    from omnibyte.data import BatchLoader, ShardDataset, eval_batches

    ds = ShardDataset(data)
    loader = BatchLoader(ds, "train", job["batch_size"], job["seq_len"], seed=0)
    train = torch.stack([loader.get_batch(s)["ids"] for s in range(job["steps"])])  # (steps, B, T+1)
    max_batches = job["val_batches"] or None
    val = torch.cat([b["ids"] for b in eval_batches(ds, "val", job["batch_size"], job["seq_len"], max_batches)])
    stream = ds.stream("val")
    prompt = torch.from_numpy(stream[: job["prompt_bytes"]].astype("int64"))[None]
    torch.save({"train": train, "val": val, "prompt": prompt}, work / "inputs.pt")


def ensure_data(path: str) -> str:
    from omnibyte.data import is_dataset

    if is_dataset(path):
        return path
    if Path(path) != Path("data/kjv"):
        sys.exit(f"error: {path} is not a prepared dataset (run `omnibyte prepare ... --out {path}`)")
    print("preparing data/kjv with `omnibyte prepare` ...", file=sys.stderr)
    subprocess.run([str(Path(sys.executable).parent / "omnibyte"), "prepare"], check=True)
    return path


def run_worker(python: Path, side: str, work: Path, timeout: float) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", side, str(work)]
    env = dict(os.environ, OMP_NUM_THREADS=str(json.loads((work / "job.json").read_text())["threads"]))
    proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the {side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads((work / f"{side}.json").read_text())


def table(job: dict, ours: dict, theirs: dict) -> str:
    def ratio(a, b):
        return f"{a / b:.2f}×" if b else "–"

    rows = [
        ("parameters", f"{ours['params'] / 1e6:.2f}M", f"{theirs['params'] / 1e6:.2f}M",
         ratio(ours["params"], theirs["params"])),
        ("training bytes/s (median step)", f"{ours['train_bytes_per_s']:,.0f}",
         f"{theirs['train_bytes_per_s']:,.0f}", ratio(ours["train_bytes_per_s"], theirs["train_bytes_per_s"])),
        ("peak RSS, MiB (process)", f"{ours['peak_rss_mib']:,.0f}", f"{theirs['peak_rss_mib']:,.0f}",
         ratio(ours["peak_rss_mib"], theirs["peak_rss_mib"])),
        ("RSS growth in training, MiB", f"{ours['train_rss_growth_mib']:,.0f}",
         f"{theirs['train_rss_growth_mib']:,.0f}",
         ratio(ours["train_rss_growth_mib"], theirs["train_rss_growth_mib"])),
        (f"val bits/byte after {job['steps']} steps", f"{ours['val_bpb']:.4f}", f"{theirs['val_bpb']:.4f}",
         f"{ours['val_bpb'] - theirs['val_bpb']:+.4f}"),
        (f"greedy generation bytes/s ({job['gen_bytes']} bytes)", f"{ours['gen_bytes_per_s']:,.1f}",
         f"{theirs['gen_bytes_per_s']:,.1f}", ratio(ours["gen_bytes_per_s"], theirs["gen_bytes_per_s"])),
    ]
    head = (f"MEGABYTE, P={job['patch_size']}, global {job['global_dim']}×{job['global_layers']}, "
            f"local {job['local_dim']}×{job['local_layers']}, batch {job['batch_size']} × {job['seq_len']} "
            f"bytes, {job['threads']} threads, torch {torch.__version__}, fp32 CPU")
    lines = [head, "", "| metric | omnibyte | MEGABYTE-pytorch | omnibyte / theirs |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the script runs")
    ap.add_argument("--data", default="data/kjv", help="prepared dataset (data/kjv is prepared if missing)")
    ap.add_argument("--steps", type=int, help="training steps (default 300; quick 8)")
    ap.add_argument("--out", default=str(HERE / "out"), help="folder for the markdown table and raw JSON")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per worker")
    ap.add_argument("--threads", type=int, help="torch threads of each side (default 2)")
    args = ap.parse_args()
    require_peer_env("MEGABYTE-pytorch==0.3.6")
    job = dict(QUICK if args.quick else FULL)
    if args.steps:
        job["steps"] = args.steps
    if args.threads:
        job["threads"] = args.threads
    data = ensure_data(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        work = Path(tmp)
        (work / "job.json").write_text(json.dumps(job))
        prepare_inputs(job, data, work)
        results = {}
        for side, python in (("omnibyte", Path(sys.executable)), ("peer", PEER_PYTHON)):
            print(f"running {side} worker ...", file=sys.stderr)
            results[side] = run_worker(python, side, work, args.timeout)
    md = table(job, results["omnibyte"], results["peer"])
    name = "megabyte_vs_pytorch" + ("-quick" if args.quick else "")
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.json").write_text(json.dumps({"job": job, **results}, indent=2) + "\n")
    print(md)


# ---------------------------------------------------------------- workers (pure torch + one model package)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def lr_at(step: int, job: dict) -> float:
    if step < job["warmup"]:
        return job["lr"] * (step + 1) / job["warmup"]
    frac = (step - job["warmup"]) / max(1, job["steps"] - job["warmup"])
    return job["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(model, loss_fn, batches: torch.Tensor, job: dict) -> dict:
    opt = torch.optim.AdamW(model.parameters(), lr=job["lr"], betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    rss0 = rss_mib()
    times = []
    for step, ids in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, job)
        t0 = time.perf_counter()
        loss = loss_fn(ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    timed = times[job["timed_from"]:] or times
    return {"train_bytes_per_s": job["batch_size"] * job["seq_len"] / statistics.median(timed),
            "final_loss": loss.item(), "peak_rss_mib": rss_mib(), "train_rss_growth_mib": rss_mib() - rss0}


@torch.no_grad()
def val_bpb(logits_fn, val: torch.Tensor, batch_size: int) -> float:
    bits, n = 0.0, 0
    for i in range(0, len(val), batch_size):
        ids = val[i:i + batch_size]
        logits = logits_fn(ids[:, :-1]).float()
        targets = ids[:, 1:]
        bits += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=PAD,
                                reduction="sum").item() / math.log(2)
        n += int((targets < N_BYTES).sum())
    return bits / n


def worker(side: str, work: Path) -> None:
    job = json.loads((work / "job.json").read_text())
    torch.set_num_threads(job["threads"])
    inputs = torch.load(work / "inputs.pt")
    torch.manual_seed(0)
    build = build_omnibyte if side == "omnibyte" else build_peer
    model, loss_fn, logits_fn, gen_fn = build(job)
    result = {"params": sum(p.numel() for p in model.parameters())}
    result.update(train(model, loss_fn, inputs["train"], job))
    model.eval()
    result["val_bpb"] = val_bpb(logits_fn, inputs["val"], job["batch_size"])
    t0 = time.perf_counter()
    new = gen_fn(inputs["prompt"], job["gen_bytes"])
    result["gen_bytes_per_s"] = len(new) / (time.perf_counter() - t0)
    result["gen_sample"] = bytes(b for b in new[:120] if b < 256).decode("utf-8", "replace")
    (work / f"{side}.json").write_text(json.dumps(result))


def build_omnibyte(job: dict):
    from omnibyte.generate import SamplingConfig, generate
    from omnibyte.models.megabyte import Megabyte, MegabyteConfig

    fields = ("patch_size", "global_dim", "global_layers", "global_heads", "local_dim", "local_layers",
              "local_heads")
    model = Megabyte(MegabyteConfig(**{k: job[k] for k in fields}, **job.get("omnibyte_extra", {})))

    def gen(prompt, n):
        cfg = SamplingConfig(max_new=n, temperature=0, stop_at_eos=False)
        return generate(model, [prompt[0].tolist()], cfg)[0]

    return (model, lambda ids: model(ids[:, :-1], ids[:, 1:]).loss, lambda inp: model(inp).logits, gen)


def build_peer(job: dict):
    from MEGABYTE_pytorch import MEGABYTE

    P = job["patch_size"]

    def make(n_patches):
        return MEGABYTE(num_tokens=263, pad_id=PAD, dim=(job["global_dim"], job["local_dim"]),
                        depth=(job["global_layers"], job["local_layers"]), max_seq_len=(n_patches, P),
                        heads=job["global_heads"], dim_head=job["global_dim"] // job["global_heads"],
                        rel_pos=True, flash_attn=True)

    model = make(job["seq_len"] // P)

    def gen(prompt, n):
        # its generate always fills max_seq_len: a copy sized for prompt + n (no size-dependent weights)
        g = make(-(-(prompt.shape[1] + n) // P))
        g.load_state_dict(model.state_dict())
        g.eval()
        with torch.no_grad():
            out = g.generate(prime=prompt, filter_thres=1.0, temperature=1.0)
        return out.reshape(-1)[prompt.shape[1]:].tolist()

    # its loss predicts every id of the given sequence (the first from its start token): feed the
    # T targets, as omnibyte's loss scores the same T targets
    return (model, lambda ids: model(ids[:, 1:], return_loss=True), lambda inp: model(inp), gen)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
