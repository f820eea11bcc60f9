"""omnibyte MEGABYTE vs MEGABYTE-pytorch (lucidrains, 0.3.6) at the same sizes, on this CPU.

MEGABYTE-pytorch lives in its own virtual environment (benchmarks/.venv-peers), so the two sides
never share a process. Measured:

- training bytes/s and memory, interleaved by rounds: each round starts one fresh worker process
  per side, in an order that alternates between rounds; a worker builds its model, runs one
  warm-up step, then --steps timed steps of forward + backward + clip + AdamW on the saved KJV
  batches, and reports their median (the round's sample), the peak resident set of its process
  (`ru_maxrss`) and its growth over the moment before the first step (activations, gradients,
  AdamW state). Process start-up is not timed;
- validation bits per byte after the same training on the same batches, each side once (not
  timed): omnibyte's model trained by omnibyte's Trainer, theirs by a loop with the Trainer's
  recipe (same seed, batches, warm-up + cosine schedule, betas, clipping, no weight decay), both
  scored on the same validation windows (NLL in bits over non-PAD targets / byte targets, as
  `omnibyte.nn.nll_sums`);
- greedy generation bytes/s, interleaved by rounds like training (random weights: the length is
  fixed, so the speed does not depend on them): omnibyte's cached decoding vs MEGABYTE-pytorch's
  `generate` (`filter_thres=1.0` = greedy; it re-runs the full sequence per byte, no cache).

Tables give the median over rounds and the range (min–max); a ratio is the ratio of medians with
the range of the per-round ratios.

Fair settings (shared/PEERS.md): theirs is built with `pad_id=256` so real 0x00 bytes are scored,
and with `num_tokens=263`, omnibyte's vocabulary, because the data holds BOS/EOS ids; rotary
positions and SDPA attention (`rel_pos=True, flash_attn=True`) like ours. It has one `heads` and
`dim_head` for both stages: `heads` = the global model's heads, `dim_head` = its width / heads, so its
local attention is wider than ours (param counts are in the table).

Set up the peer environment once (torch pinned in the same pip command):
    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 MEGABYTE-pytorch==0.3.6
Run (≈ 12 minutes in full on a 2-core CPU, half of it MEGABYTE-pytorch generating without a cache;
--quick ≈ 1 minute, prints only):
    .venv/bin/python -m benchmarks.megabyte_vs_pytorch [--quick] [--data data/kjv]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# stdlib at import time, so the peer worker (no omnibyte there) imports it too
from benchmarks.common import (
    Measured,
    compare,
    fmt_rate,
    fmt_speedup,
    header,
    peak_rss_mib,
    require_peer_env,
    results_file,
    results_option,
    run_worker,
    spread,
    train_run,
    train_step,
    write_section,
)

PAD, N_BYTES = 256, 256  # omnibyte's PAD id and byte count (the peer worker cannot import omnibyte)
MODEL_FIELDS = ("patch_size", "global_model", "local_model")  # the job's keys that are MegabyteConfig's
FULL = dict(patch_size=8, global_model=dict(dim=256, n_layers=4, n_heads=4),
            local_model=dict(dim=128, n_layers=2, n_heads=2), seq_len=2048, batch_size=4, train_steps=300, lr=2e-3,
            warmup=30, val_batches=0, steps=3, rounds=5, gen_bytes=4000, gen_rounds=2, prompt_bytes=64, threads=2)
QUICK = dict(FULL, global_model=dict(dim=64, n_layers=1, n_heads=2), local_model=dict(dim=32, n_layers=1, n_heads=1),
             seq_len=256, batch_size=2, train_steps=8, warmup=2, val_batches=2, steps=2, rounds=2, gen_bytes=40)
SIDES = {"omnibyte": "omnibyte", "peer": "MEGABYTE-pytorch"}


# ---------------------------------------------------------------- orchestrator (omnibyte venv)


def prepare_inputs(job: dict, data: str, work: Path) -> None:
    """Train batches, val windows and the generation prompt, saved as tensors the workers load; the
    train batches are those omnibyte's Trainer draws with seed 0."""
    from omnibyte.data import BatchLoader, ShardDataset, eval_batches

    ds = ShardDataset(data)
    loader = BatchLoader(ds, "train", job["batch_size"], job["seq_len"], seed=0)
    train = torch.stack([loader.get_batch(s)["ids"] for s in range(job["train_steps"])])  # (steps, B, T+1)
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


def train_omnibyte(job: dict, data: str, run_dir: Path) -> float:
    """Val bpb of omnibyte's MEGABYTE after job["train_steps"] steps of omnibyte's Trainer."""
    from omnibyte.train import TrainConfig
    from omnibyte.train import lr_at as trainer_lr_at

    train = {"steps": job["train_steps"], "batch_size": job["batch_size"], "seq_len": job["seq_len"],
             "lr": job["lr"], "warmup_steps": job["warmup"], "min_lr_ratio": 0.1, "weight_decay": 0.0,
             "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "seed": 0, "eval_every": 0,
             "eval_batches": job["val_batches"], "save_every": 0, "log_every": 50, "device": "cpu", "dtype": "fp32",
             "threads": job["threads"]}
    tc = TrainConfig(**train)
    if any(abs(lr_at(s, job) - trainer_lr_at(s, tc)) > 1e-12 for s in range(job["train_steps"])):
        sys.exit("error: the peer's schedule (lr_at) no longer matches omnibyte's Trainer")
    raw = {"model": {"arch": "megabyte", **{k: job[k] for k in MODEL_FIELDS}}, "data": {"path": data}, "train": train}
    return train_run(raw, run_dir)["val_bpb"]


def table(job: dict, t: dict, bpb: dict) -> list[str]:
    ours, theirs = (t[n]["speed"] for n in SIDES.values())
    a, b = ours.values[-1], theirs.values[-1]
    step_bytes = job["batch_size"] * job["seq_len"]

    def field(side, key):
        return [r[key] for r in side.values]

    def ratio(x, y):
        return f"{statistics.median(x) / statistics.median(y):.2f}×"

    g_ours, g_theirs = (t[n]["generate"] for n in SIDES.values())
    rows = [
        ("parameters", f"{a['params'] / 1e6:.2f}M", f"{b['params'] / 1e6:.2f}M", f"{a['params'] / b['params']:.2f}×"),
        ("training bytes/s", fmt_rate(ours, step_bytes), fmt_rate(theirs, step_bytes), fmt_speedup(ours, theirs)),
        *((label, spread(field(ours, key), "{:,.0f}"), spread(field(theirs, key), "{:,.0f}"),
           ratio(field(ours, key), field(theirs, key)))
          for label, key in (("peak RSS of the training process, MiB", "peak_rss_mib"),
                             ("RSS growth in training, MiB", "rss_growth_mib"))),
        (f"val bits/byte after {job['train_steps']} steps", f"{bpb['omnibyte']:.4f}", f"{bpb['peer']:.4f}",
         f"{bpb['omnibyte'] - bpb['peer']:+.4f}"),
        (f"greedy generation bytes/s ({job['gen_bytes']} bytes)", fmt_rate(g_ours, job["gen_bytes"], "{:,.1f}"),
         fmt_rate(g_theirs, job["gen_bytes"], "{:,.1f}"), fmt_speedup(g_ours, g_theirs)),
    ]
    G, L = job["global_model"], job["local_model"]
    head = (f"MEGABYTE, P={job['patch_size']}, global {G['dim']}×{G['n_layers']}, "
            f"local {L['dim']}×{L['n_layers']}, batch {job['batch_size']} × {job['seq_len']} "
            f"bytes, {job['threads']} threads per side, fp32 CPU. Training speed and memory: median (min–max) over "
            f"{job['rounds']} rounds of one fresh process per side (order alternating), each timing {job['steps']} "
            f"steps after a warm-up step; generation: {job['gen_rounds']} rounds of one generation per side; "
            "memory ratios are of the medians.")
    lines = [head, "", "| metric | omnibyte | MEGABYTE-pytorch | omnibyte / theirs |", "| --- | ---: | ---: | ---: |"]
    return lines + [f"| {m} | {x} | {y} | {r} |" for m, x, y, r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the script runs")
    ap.add_argument("--data", default="data/kjv", help="prepared dataset (data/kjv is prepared if missing)")
    ap.add_argument("--train-steps", type=int, help="training steps before the val bpb (default 300; quick 8)")
    ap.add_argument("--steps", type=int, help="timed training steps per worker, after a warm-up step (default 3)")
    ap.add_argument("--rounds", type=int, help="rounds of training workers per side (default 5; quick 2)")
    ap.add_argument("--gen-rounds", type=int, help="rounds of generation workers per side (default 2)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds allowed per worker")
    ap.add_argument("--threads", type=int, help="torch threads of each side (default 2)")
    results_option(ap, "results_megabyte.md")
    ap.add_argument("--worker", nargs=3, metavar=("SIDE", "TASK", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        side, task, work = args.worker
        print(json.dumps(worker(side, task, Path(work))))
        return
    pythons = {"omnibyte": sys.executable, "peer": require_peer_env("MEGABYTE-pytorch==0.3.6")}
    job = dict(QUICK if args.quick else FULL)
    for key in ("train_steps", "steps", "rounds", "gen_rounds", "threads"):
        if getattr(args, key):
            job[key] = getattr(args, key)
    data = ensure_data(args.data)
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        work = Path(tmp)
        (work / "job.json").write_text(json.dumps(job))
        prepare_inputs(job, data, work)

        def side(name: str, task: str):
            def measure() -> Measured:
                r = run_worker(pythons[name], "benchmarks.megabyte_vs_pytorch", ["--worker", name, task, str(work)],
                               job["threads"], args.timeout)
                return Measured(r["seconds"], r)
            return measure

        t = {}
        for task, rounds in (("speed", job["rounds"]), ("generate", job["gen_rounds"])):
            print(f"{task}: {rounds} rounds ...", flush=True)
            for name, timing in compare({SIDES[n]: side(n, task) for n in SIDES}, repeats=rounds, warmup=0,
                                        log=True).items():
                t.setdefault(name, {})[task] = timing
        print("training both sides for the val bpb ...", flush=True)
        peer = run_worker(pythons["peer"], "benchmarks.megabyte_vs_pytorch", ["--worker", "peer", "train", str(work)],
                          job["threads"], args.timeout)
        bpb = {"omnibyte": train_omnibyte(job, data, work / "omnibyte-run"), "peer": peer["val_bpb"]}
    lines = header("omnibyte MEGABYTE vs MEGABYTE-pytorch" + (" (quick)" if args.quick else ""),
                   ["peer: MEGABYTE-pytorch 0.3.6 in benchmarks/.venv-peers"])
    lines += table(job, t, bpb)
    print("\n".join(lines))
    out = results_file(args, "results_megabyte.md")
    if out:
        write_section(out, "megabyte-vs-pytorch", lines)


# ---------------------------------------------------------------- workers (pure torch + one model package)


def lr_at(step: int, job: dict) -> float:
    """omnibyte's Trainer schedule (omnibyte.train.lr_at, which the peer environment cannot import):
    linear warm-up, then cosine decay to a tenth of the peak."""
    if step < job["warmup"]:
        return job["lr"] * (step + 1) / job["warmup"]
    frac = min(1.0, (step - job["warmup"]) / max(1, job["train_steps"] - job["warmup"]))
    return job["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def adamw(model, job: dict):
    return torch.optim.AdamW(model.parameters(), lr=job["lr"], betas=(0.9, 0.95), weight_decay=0.0)


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


def worker(side: str, task: str, work: Path) -> dict:
    """One process's measurement: `speed` (a warm-up step, then timed steps, and memory), `generate`
    (a short warm-up, then one timed generation) or `train` (the peer's training run and val bpb)."""
    job = json.loads((work / "job.json").read_text())
    torch.set_num_threads(job["threads"])
    inputs = torch.load(work / "inputs.pt")
    torch.manual_seed(0)
    model, loss_fn, logits_fn, gen_fn = (build_omnibyte if side == "omnibyte" else build_peer)(job)
    params = sum(p.numel() for p in model.parameters())
    if task == "speed":
        model.train()
        rss0 = peak_rss_mib()
        step = train_step(model, inputs["train"], loss=loss_fn, opt=adamw(model, job), clip=1.0)
        t = compare({side: step}, repeats=job["steps"], warmup=1)[side]
        return {"seconds": t.median, "params": params, "peak_rss_mib": peak_rss_mib(),
                "rss_growth_mib": peak_rss_mib() - rss0}
    if task == "generate":
        model.eval()
        gen_fn(inputs["prompt"], 8)
        t0 = time.perf_counter()
        new = gen_fn(inputs["prompt"], job["gen_bytes"])
        return {"seconds": time.perf_counter() - t0, "bytes": len(new)}
    # the peer's training, by the Trainer's recipe (omnibyte's side trains with the Trainer itself)
    opt = adamw(model, job)
    step = train_step(model, inputs["train"], loss=loss_fn, opt=opt, clip=1.0)
    model.train()
    for s in range(job["train_steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, job)
        step()
    model.eval()
    return {"val_bpb": val_bpb(logits_fn, inputs["val"], job["batch_size"])}


def build_omnibyte(job: dict):
    from omnibyte.generate import SamplingConfig, generate
    from omnibyte.models import build_model

    model = build_model("megabyte", {k: job[k] for k in MODEL_FIELDS})

    def gen(prompt, n):
        cfg = SamplingConfig(max_new=n, temperature=0, stop_at_eos=False)
        return generate(model, [prompt[0].tolist()], cfg)[0]

    return (model, lambda ids: model(ids[:, :-1], ids[:, 1:]).loss, lambda inp: model(inp).logits, gen)


def build_peer(job: dict):
    from MEGABYTE_pytorch import MEGABYTE

    P, G, L = job["patch_size"], job["global_model"], job["local_model"]

    def make(n_patches):
        return MEGABYTE(num_tokens=263, pad_id=PAD, dim=(G["dim"], L["dim"]),
                        depth=(G["n_layers"], L["n_layers"]), max_seq_len=(n_patches, P),
                        heads=G["n_heads"], dim_head=G["dim"] // G["n_heads"],
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
    main()
