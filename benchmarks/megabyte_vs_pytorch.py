"""omnibyte MEGABYTE vs MEGABYTE-pytorch (lucidrains, 0.3.6) at the same sizes, on this CPU.

MEGABYTE-pytorch lives in its own virtual environment (benchmarks/.venv-peers), so the two sides
never share a process. Measured:

- training bytes/s and memory, interleaved by rounds (`benchmarks.common.compare`, 7 rounds by
  default): each round starts one fresh worker process per side, in an order that alternates
  between rounds; a worker builds its model, counts the FLOPs of one forward + backward
  (`benchmarks.common.count_flops`), runs one warm-up step, then --steps timed steps of forward +
  backward + clip + AdamW on the saved KJV batches, and reports their median (the round's sample),
  the peak resident set of its process (`ru_maxrss`) and its growth over the moment before the
  first step (activations, gradients, AdamW state). Process start-up is not timed. This runs for
  each local-attention setting of --settings (below), and the per-round samples are printed as a
  table beside the summary;
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
`dim_head` for both stages: `heads` = the global model's heads, `dim_head` = its width / heads, so by
default its local attention is wider than ours (4 heads × 64 = 256 on a 128-wide local stage,
against our 2 heads × 64 = 128): about 12% more FLOPs per byte. The settings (--settings):

- `default`: both as just described (the unequal comparison of earlier runs);
- `peer-at-ours`: the peer's local transformer rebuilt (with its own `Transformer` class) at
  omnibyte's local heads and head width, so both local stages attend at 128 wide;
- `ours-at-peer`: omnibyte's local attention projections widened to the peer's heads × dim_head
  (256); omnibyte's configuration has no head width of its own, so the benchmark swaps the local
  layers' q/k/v and output projections for wider ones (training speed only).

FLOPs per byte of each side are counted in its own process by `torch.utils.flop_counter` (one
forward + backward on a training batch, SDPA on its math path so attention is counted), so the
table shows how equal the work is rather than assuming it.

Set up the peer environment once (torch pinned in the same pip command):
    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 MEGABYTE-pytorch==0.3.6
Run (≈ 15 minutes in full on a 2-core CPU with --skip-bpb, most of it MEGABYTE-pytorch generating
without a cache; --quick ≈ 1 minute, prints only):
    .venv/bin/python -m benchmarks.megabyte_vs_pytorch [--quick] [--data data/kjv] [--skip-bpb]
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
from torch import nn

# stdlib at import time, so the peer worker (no omnibyte there) imports it too
from benchmarks.common import (
    Measured,
    compare,
    count_flops,
    fmt_rate,
    fmt_speedup,
    header,
    how_timed,
    load_line,
    peak_rss_mib,
    per_round_table,
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
            warmup=30, val_batches=0, steps=3, rounds=7, gen_bytes=1000, gen_rounds=7, prompt_bytes=64, threads=2,
            setting="default")
QUICK = dict(FULL, global_model=dict(dim=64, n_layers=1, n_heads=2), local_model=dict(dim=32, n_layers=1, n_heads=1),
             seq_len=256, batch_size=2, train_steps=8, warmup=2, val_batches=2, steps=2, rounds=2, gen_bytes=40)
SIDES = {"omnibyte": "omnibyte", "peer": "MEGABYTE-pytorch"}
SETTINGS = {  # local attention of each side: (heads, head width) as text, for the tables
    "default": "omnibyte local 2 × 64, MEGABYTE-pytorch local 4 × 64 (its heads and dim_head are the global's)",
    "peer-at-ours": "both local 2 × 64 (MEGABYTE-pytorch's local transformer at omnibyte's heads and width)",
    "ours-at-peer": "both local 4 × 64 (omnibyte's local attention widened to MEGABYTE-pytorch's)",
}


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


def table(job: dict, t: dict, bpb: dict | None) -> list[str]:
    """The summary (one block of rows per setting), then the per-round samples behind every ratio."""
    step_bytes = job["batch_size"] * job["seq_len"]

    def field(side, key):
        return [r[key] for r in side.values]

    def ratio(x, y):
        return f"{statistics.median(x) / statistics.median(y):.2f}×"

    rows = []
    for setting in job["settings"]:
        ours, theirs = (t[setting][n]["speed"] for n in SIDES.values())
        a, b = ours.values[-1], theirs.values[-1]
        rows += [
            (f"**{setting}**: {SETTINGS[setting]}", "", "", ""),
            ("parameters", f"{a['params'] / 1e6:.2f}M", f"{b['params'] / 1e6:.2f}M",
             f"{a['params'] / b['params']:.2f}×"),
            ("training FLOPs per byte (forward + backward, counted)", f"{a['flops_per_byte'] / 1e6:.2f}M",
             f"{b['flops_per_byte'] / 1e6:.2f}M", f"{a['flops_per_byte'] / b['flops_per_byte']:.2f}×"),
            ("training bytes/s", fmt_rate(ours, step_bytes), fmt_rate(theirs, step_bytes), fmt_speedup(ours, theirs)),
            *((label, spread(field(ours, key), "{:,.0f}"), spread(field(theirs, key), "{:,.0f}"),
               ratio(field(ours, key), field(theirs, key)))
              for label, key in (("peak RSS of the training process, MiB", "peak_rss_mib"),
                                 ("RSS growth in training, MiB", "rss_growth_mib"))),
        ]
    if bpb:
        rows.append((f"val bits/byte after {job['train_steps']} steps (default setting)", f"{bpb['omnibyte']:.4f}",
                     f"{bpb['peer']:.4f}", f"{bpb['omnibyte'] - bpb['peer']:+.4f}"))
    gen = t.get("generate")
    if gen:
        g_ours, g_theirs = (gen[n] for n in SIDES.values())
        rows.append((f"greedy generation bytes/s ({job['gen_bytes']} bytes, default setting; theirs re-runs the "
                     "sequence per byte)", fmt_rate(g_ours, job["gen_bytes"], "{:,.1f}"),
                     fmt_rate(g_theirs, job["gen_bytes"], "{:,.1f}"), fmt_speedup(g_ours, g_theirs)))
    G, L = job["global_model"], job["local_model"]
    head = (f"MEGABYTE, P={job['patch_size']}, global {G['dim']}×{G['n_layers']} ({G['n_heads']} heads), "
            f"local {L['dim']}×{L['n_layers']}, batch {job['batch_size']} × {job['seq_len']} "
            f"bytes, {job['threads']} threads per side, fp32 CPU. Training speed and memory: "
            f"{how_timed(job['rounds'])} (one fresh process per side per round, order alternating; a round's "
            f"sample is the median of {job['steps']} steps after a warm-up step); generation: "
            + (f"{how_timed(job['gen_rounds'])} of one generation per side" if job["gen_rounds"] else "not run")
            + ". A speed-up is the ratio of medians with "
            "the range of the per-round ratios; memory ratios are of the medians. FLOPs per byte: "
            "`torch.utils.flop_counter` over one forward + backward of a training batch in each side's own "
            "process (matrix products; attention on SDPA's math path), / batch bytes.")
    lines = [head, "", "| metric | omnibyte | MEGABYTE-pytorch | omnibyte / theirs |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {m} | {x} | {y} | {r} |" for m, x, y, r in rows]
    for setting in job["settings"]:
        lines += ["", f"Per-round training seconds per step, setting {setting} (order = which side ran first):", ""]
        lines += per_round_table({n: t[setting][n]["speed"] for n in SIDES.values()}, "MEGABYTE-pytorch",
                                 "s/step")
    if gen:
        lines += ["", "Per-round generation seconds (default setting):", ""]
        lines += per_round_table({n: gen[n] for n in SIDES.values()}, "MEGABYTE-pytorch", "s", fmt="{:.2f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the script runs")
    ap.add_argument("--data", default="data/kjv", help="prepared dataset (data/kjv is prepared if missing)")
    ap.add_argument("--train-steps", type=int, help="training steps before the val bpb (default 300; quick 8)")
    ap.add_argument("--steps", type=int, help="timed training steps per worker, after a warm-up step (default 3)")
    ap.add_argument("--rounds", type=int, help="rounds of training workers per side (default 7; quick 2)")
    ap.add_argument("--gen-rounds", type=int, help="rounds of generation workers per side (default 7)")
    ap.add_argument("--gen-bytes", type=int, help="bytes each generation makes (default 1000; quick 40)")
    ap.add_argument("--settings", default=",".join(SETTINGS),
                    help=f"local-attention settings to time, comma-separated (default all: {', '.join(SETTINGS)})")
    ap.add_argument("--skip-bpb", action="store_true", help="leave out the val-bpb training runs (minutes)")
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
    for key in ("train_steps", "steps", "rounds", "gen_rounds", "gen_bytes", "threads"):
        if getattr(args, key) is not None:  # --gen-rounds 0 leaves generation out
            job[key] = getattr(args, key)
    job["settings"] = [x.strip() for x in args.settings.split(",") if x.strip()]
    unknown = [x for x in job["settings"] if x not in SETTINGS]
    if unknown or not job["settings"]:
        sys.exit(f"error: --settings takes some of {', '.join(SETTINGS)}; got {args.settings!r}")
    data = ensure_data(args.data)
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        work = Path(tmp)
        for setting in SETTINGS:  # one job file per setting: the worker reads the one its task names
            (work / f"job-{setting}.json").write_text(json.dumps(dict(job, setting=setting)))
        prepare_inputs(job, data, work)
        lines = header("omnibyte MEGABYTE vs MEGABYTE-pytorch" + (" (quick)" if args.quick else ""),
                       ["peer: MEGABYTE-pytorch 0.3.6 in benchmarks/.venv-peers"])

        def side(name: str, task: str, setting: str):
            def measure() -> Measured:
                r = run_worker(pythons[name], "benchmarks.megabyte_vs_pytorch",
                               ["--worker", name, f"{task}@{setting}", str(work)], job["threads"], args.timeout)
                return Measured(r["seconds"], r)
            return measure

        def timed(task: str, setting: str, rounds: int) -> dict:
            print(f"{task}, {setting}: {rounds} rounds ...", flush=True)
            return compare({SIDES[n]: side(n, task, setting) for n in SIDES}, repeats=rounds, warmup=0, log=True)

        t = {setting: {n: {"speed": x} for n, x in timed("speed", setting, job["rounds"]).items()}
             for setting in job["settings"]}
        if job["gen_rounds"] > 0:
            t["generate"] = timed("generate", "default", job["gen_rounds"])
        bpb = None
        if not args.skip_bpb:
            print("training both sides for the val bpb ...", flush=True)
            peer = run_worker(pythons["peer"], "benchmarks.megabyte_vs_pytorch",
                              ["--worker", "peer", "train@default", str(work)], job["threads"], args.timeout)
            bpb = {"omnibyte": train_omnibyte(job, data, work / "omnibyte-run"), "peer": peer["val_bpb"]}
    lines += table(job, t, bpb) + ["", load_line()]
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
    task, setting = task.split("@")
    job = json.loads((work / f"job-{setting}.json").read_text())
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
        rss = peak_rss_mib()
        batch = inputs["train"][0]  # counted after the timing, so the memory figures are the training's
        flops = count_flops(lambda: loss_fn(batch).backward())
        return {"seconds": t.median, "params": params, "peak_rss_mib": rss, "rss_growth_mib": rss - rss0,
                "flops_per_byte": flops / (batch.shape[0] * (batch.shape[1] - 1))}
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
    if job["setting"] == "ours-at-peer":
        G = job["global_model"]
        widen_attention(model.local_model, G["n_heads"], G["dim"] // G["n_heads"])

    def gen(prompt, n):
        cfg = SamplingConfig(max_new=n, temperature=0, stop_at_eos=False)
        return generate(model, [prompt[0].tolist()], cfg)[0]

    return (model, lambda ids: model(ids[:, :-1], ids[:, 1:]).loss, lambda inp: model(inp).logits, gen)


def widen_attention(stack, heads: int, head_dim: int) -> None:
    """Give every attention layer of an omnibyte stack `heads` heads of `head_dim` on the stack's
    own width (MEGABYTE-pytorch's local layout: attention wider than the stage). omnibyte's
    configuration ties the head width to dim / n_heads, so this swaps the q/k/v and output
    projections for new ones, initialised like omnibyte's (normal, std 0.02); the forward derives
    the head count and width from them. For timing training only: caches assume dim / n_heads."""
    for layer in stack.layers:
        attn = layer.attn
        dim, inner = attn.wo.out_features, heads * head_dim
        attn.n_heads, attn.head_dim = heads, head_dim
        attn.wqkv, attn.wo = nn.Linear(dim, 3 * inner, bias=False), nn.Linear(inner, dim, bias=False)
        for lin in (attn.wqkv, attn.wo):
            nn.init.normal_(lin.weight, std=0.02)
        for name in ("q_norm", "k_norm"):
            norm = getattr(attn, name)
            if hasattr(norm, "eps"):  # QK-norm over one head's width
                setattr(attn, name, type(norm)(head_dim, norm.eps))


def build_peer(job: dict):
    from MEGABYTE_pytorch import MEGABYTE
    from MEGABYTE_pytorch.megabyte import Transformer

    P, G, L = job["patch_size"], job["global_model"], job["local_model"]

    def make(n_patches):
        model = MEGABYTE(num_tokens=263, pad_id=PAD, dim=(G["dim"], L["dim"]),
                         depth=(G["n_layers"], L["n_layers"]), max_seq_len=(n_patches, P),
                         heads=G["n_heads"], dim_head=G["dim"] // G["n_heads"],
                         rel_pos=True, flash_attn=True)
        if job["setting"] == "peer-at-ours":
            # its constructor gives both stages one heads / dim_head: rebuild the local (last) stage's
            # transformer with its own class at omnibyte's local heads and head width
            model.transformers[-1] = Transformer(dim=L["dim"], layers=L["n_layers"], heads=L["n_heads"],
                                                 dim_head=L["dim"] // L["n_heads"], rel_pos=True, flash_attn=True)
        return model

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
