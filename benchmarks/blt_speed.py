"""BLT speed on this CPU, against the byte transformer and against itself without a cache.

1. Training throughput (bytes/s of forward + backward + AdamW): the byte transformer (width 256,
   4 layers) vs BLT with the same latent width and depth over patches of ~4.5 bytes, at two local
   widths. Patches are variable-length, as entropy patching makes them: precomputed per-byte
   scores (here random) thresholded so the mean patch is 4.5 bytes — exactly the training path,
   where the trainer passes precomputed entropies. All models live in this process; after one
   warm-up step each, every round runs one step of each model, in an order rotated per round
   (`benchmarks.common.compare`), so they share whatever else the machine is doing.
2. Generation (greedy, batch 1, --gen-bytes new bytes after a short prompt): `omnibyte.generate`
   (KV caches in encoder, latent and decoder; patches decided online) vs re-running the full
   forward for every byte, interleaved the same way, one whole generation per side and round.
   Both pick the same bytes (checked). Static patches of 4, and entropy patching with a small
   (random) windowed entropy model that then also runs cached.

Both parts time 7 interleaved rounds after a warm-up by default (`benchmarks.common.compare`).
Tables give the median over rounds and the range (min–max); a speed-up is the ratio of medians
with the range of the per-round ratios; the per-round samples follow each table.

    .venv/bin/python -m benchmarks.blt_speed            # ≈ 25 minutes on a 2-core CPU (the full re-runs)
    .venv/bin/python -m benchmarks.blt_speed --gen-bytes 1000   # ≈ 10 minutes
    .venv/bin/python -m benchmarks.blt_speed --quick    # seconds, prints only
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import (
    bytes_only,
    compare,
    fmt_rate,
    fmt_speedup,
    header,
    how_timed,
    load_line,
    per_round_table,
    results_file,
    results_option,
    train_step,
    write_section,
)
from omnibyte.format import BOS, N_BYTES
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.reference import rerun_greedy
from omnibyte.models import build_model
from omnibyte.models.blt import BLT
from omnibyte.patching import PatcherConfig, mean_patch_len, patch_starts

FULL = dict(batch_size=4, seq_len=2048, latent_dim=256, n_layers=4, n_heads=4, local_dims=(64, 128),
            local_heads=2, enc_layers=1, dec_layers=2, window=128, bytes_per_patch=4.5, steps=7,
            gen_bytes=2000, gen_repeats=7, entropy_lm=dict(dim=64, n_layers=2, n_heads=4, window=64))
QUICK = dict(FULL, batch_size=2, seq_len=256, latent_dim=64, n_layers=2, local_dims=(32,), window=64, steps=3,
             gen_bytes=40, gen_repeats=2, entropy_lm=dict(dim=32, n_layers=1, n_heads=2, window=32))
PROMPT = [BOS, *b"In the beginning God created the heaven and the earth."]


def blt(p: dict, width: int, patcher: dict, entropy_model=None) -> BLT:
    """The benchmark's BLT at local width `width`, patching by the [patcher] fields `patcher`."""
    def local(n_layers):
        return {"dim": width, "n_layers": n_layers, "n_heads": p["local_heads"], "window": p["window"]}
    cfg = {"encoder": local(p["enc_layers"]), "decoder": local(p["dec_layers"]),
           "latent": {"dim": p["latent_dim"], "n_layers": p["n_layers"], "n_heads": p["n_heads"]},
           "patcher": {"bytes_per_patch": p["bytes_per_patch"], **patcher}}
    return build_model("blt", cfg, entropy_model=entropy_model)


def entropy_lm(p: dict):
    torch.manual_seed(1)
    return build_model("transformer", p["entropy_lm"]).eval()


# --------------------------------------------------------------------------- training


def training(p: dict) -> list[str]:
    b, t = p["batch_size"], p["seq_len"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, N_BYTES, (b, t + 1), generator=g)
    # per-byte scores thresholded at 1 - 1/bpp: a patch starts with probability 1/bpp
    scores = torch.rand(b, t, generator=g)
    patcher = {"kind": "entropy", "threshold": 1 - 1 / p["bytes_per_patch"]}
    starts = patch_starts(ids[:, :-1], PatcherConfig(**patcher), scores)

    torch.manual_seed(0)
    models = {"byte transformer": (build_model("transformer", dict(dim=p["latent_dim"], n_layers=p["n_layers"],
                                                                   n_heads=p["n_heads"])), {})}
    for dl in p["local_dims"]:
        models[f"BLT, local width {dl}"] = (blt(p, dl, patcher, entropy_lm(p)), {"entropies": scores})
    steps = {name: train_step(model, ids, extra=extra) for name, (model, extra) in models.items()}
    times = compare(steps, repeats=p["steps"], warmup=1, log=True)

    base = times["byte transformer"]
    lines = [f"Training throughput, batch {b} × {t} random bytes, forward + backward + AdamW: {how_timed(p['steps'])}"
             " (a round: one step per model, order rotated; after one warm-up step each). BLT patches: mean "
             f"{mean_patch_len(starts):.2f} bytes (variable length, precomputed scores as in entropy-patched "
             f"training); latent {p['latent_dim']} × {p['n_layers']} layers = the byte transformer's width and "
             f"depth; encoder {p['enc_layers']} / decoder {p['dec_layers']} layers, window {p['window']}.", "",
             "| model | params (trainable) | train FLOPs/byte | bytes/s | vs byte transformer |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, (model, _) in models.items():
        n = sum(q.numel() for q in model.parameters() if q.requires_grad)
        fl = model.flops_per_byte(t)["train"]
        ratio = fmt_speedup(times[name], base) if times[name] is not base else "–"
        lines.append(f"| {name} | {n / 1e6:.2f}M | {fl / 1e6:.1f}M | {fmt_rate(times[name], b * t)} | {ratio} |")
    return lines + ["", "Per-round seconds per step (order = the order the models ran in that round):", "",
                    *per_round_table(times, "byte transformer", "s/step")]


# --------------------------------------------------------------------------- generation


def generation(p: dict) -> list[str]:
    n = p["gen_bytes"]
    dl = p["local_dims"][-1]
    lines = [f"Greedy generation of {n} bytes (bytes only, no EOS) after a {len(PROMPT)}-id prompt, batch 1, BLT "
             f"with local width {dl} (same sizes as above): cached `omnibyte.generate` vs the full forward re-run "
             "per byte (`omnibyte.generate.reference.rerun_greedy`, measured in full: every step run); "
             f"{how_timed(p['gen_repeats'])} of one whole generation per side, after an 8-byte warm-up generation of "
             "each.", "",
             "| patching | cached bytes/s | full re-run bytes/s | speed-up | same bytes |",
             "| --- | ---: | ---: | ---: | ---: |"]
    raw = []
    em = entropy_lm(p)
    calib = torch.tensor([PROMPT[1:] * 8])
    from omnibyte.patching.calibrate import calibrate_threshold

    thr = calibrate_threshold(em, calib, p["bytes_per_patch"])
    for label, patcher, ent in (("static, 4 bytes", {"kind": "static", "patch_size": 4}, None),
                                (f"entropy (calibrated to {p['bytes_per_patch']} on the prompt)",
                                 {"kind": "entropy", "threshold": thr}, em)):
        torch.manual_seed(0)
        model = blt(p, dl, patcher, ent).eval()
        cfg = SamplingConfig(max_new=n, temperature=0)
        generate(model, [PROMPT], SamplingConfig(max_new=8, temperature=0))  # warm-up
        rerun_greedy(model, PROMPT, 8)
        times = compare({"cached": lambda model=model, cfg=cfg: generate(model, [PROMPT], cfg,
                                                                              constraints=[bytes_only()])[0],
                         "full re-run": lambda model=model: rerun_greedy(model, PROMPT, n, bytes_only())},
                        repeats=p["gen_repeats"], warmup=0, log=True)
        cached, full = times["cached"].values[-1], times["full re-run"].values[-1]
        same = next((i for i, (a, b) in enumerate(zip(cached, full)) if a != b), n)
        lines.append(f"| {label} | {fmt_rate(times['cached'], n)} | {fmt_rate(times['full re-run'], n, '{:,.1f}')} | "
                     f"{fmt_speedup(times['cached'], times['full re-run'], '{:.1f}')} | {same} / {n} |")
        raw += ["", f"Per-round seconds, {label}:", "", *per_round_table(times, "full re-run", "s", fmt="{:.2f}")]
    return lines + raw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds; prints only (unless --results)")
    ap.add_argument("--skip", choices=["training", "generation"], help="leave one part out")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--steps", type=int, help="timed rounds of training steps (default 7; quick 3)")
    ap.add_argument("--gen-repeats", type=int, help="timed rounds of generation (default 7; quick 2)")
    ap.add_argument("--gen-bytes", type=int, help="bytes to generate (default 2000; quick 40)")
    ap.add_argument("--window", type=int, help="local attention window in bytes (default 128; quick 64)")
    results_option(ap, "results_blt.md")
    args = ap.parse_args()
    p = dict(QUICK if args.quick else FULL)
    for key in ("steps", "gen_repeats", "gen_bytes", "window"):
        if getattr(args, key):
            p[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    lines = header("BLT speed" + (" (quick)" if args.quick else ""))
    if args.skip != "training":
        print("training throughput ...", flush=True)
        lines += training(p) + [""]
    if args.skip != "generation":
        print("generation ...", flush=True)
        lines += generation(p)
    lines += ["", load_line()]
    print("\n".join(lines))
    out = results_file(args, "results_blt.md")
    if out:  # a part run alone gets its own section, so --skip never erases the other part
        only = {"training": "-generation", "generation": "-training"}.get(args.skip, "")
        write_section(out, "blt-speed" + only, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
