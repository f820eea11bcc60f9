"""An imported BLT of the released BLT-1B's shape generating on the CPU: omnibyte's cached decoding
against transformers' `BltForCausalLM.generate` with its cache off (the port's correct path, see
shared PEERS.md), greedy from the same prompt, bytes only; same outputs, bytes/s and peak memory.

Random weights (nothing is downloaded): a `BltForCausalLM` of the BLT-1B shape (local encoder 1 ×
1024, latent 25 × 2048, local decoder 9 × 1024 reading the latent in every layer, k = 2, local
window 512, hash n-grams 3..8, entropy model 14 × 768 with window 512) is saved as a transformers
folder, imported with `omnibyte import hf`, and each side runs in a process of its own (the model is
~7 GB in fp32 per side). The entropy threshold is set for ~4.5 bytes per patch on the prompt.

Scaled down where this machine cannot hold or run the real thing, each stated in the results:
`--buckets` rows per hash table (the released 500,002 × 6 tables take 12 GB per model; a lookup
costs the same at any size), and `--hf-bytes` bytes for the port, whose uncached generation runs
the whole model over the whole sequence for every byte (its time grows with the length). Its time
at `--bytes` is then estimated, and labelled so: its measured steps, plus its forward over the very
sequence it would generate (the prompt and omnibyte's bytes, equal to its own where both ran) timed
at `--forward-lengths` lengths up to the last and interpolated between them.

    .venv/bin/python -m benchmarks.blt_import_speed            # the BLT-1B shape (~8 GB per side)
    .venv/bin/python -m benchmarks.blt_import_speed --quick    # a tiny shape, both sides all bytes
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks.common import (
    OUT,
    Measured,
    compare,
    header,
    peak_rss_mib,
    results_file,
    results_option,
    run_worker,
    write_section,
)

SHAPES = {
    # the released BLT-1B (transformers' BltConfig defaults are its sizes)
    "1b": dict(dl=1024, dg=2048, heads=16, enc_layers=1, dec_layers=9, glob_layers=25, enc_mlp=2816,
               dec_mlp=2816, glob_mlp=5632, window=512, em_dim=768, em_layers=14, em_heads=12, em_mlp=2048),
    "tiny": dict(dl=32, dg=64, heads=2, enc_layers=1, dec_layers=2, glob_layers=2, enc_mlp=96, dec_mlp=96,
                 glob_mlp=192, window=64, em_dim=32, em_layers=2, em_heads=2, em_mlp=96),
}
PROMPT = b"In the beginning God created the heaven and the earth. And the earth was without form, and"
BYTES_PER_PATCH = 4.5


def hf_ids(ids):
    from omnibyte.nn.hash_ngram import BLT_IDS

    return [BLT_IDS[i] for i in ids]


def prompt_ids(n: int) -> list[int]:
    from omnibyte.format import BOS

    return [BOS, *(PROMPT * 4)[: n - 1]]


def blt_config(shape: str, buckets: int):
    """transformers' BltConfig of a shape in SHAPES, hash tables of `buckets` rows."""
    from transformers import BltConfig

    s = SHAPES[shape]
    local = dict(hidden_size=s["dl"], num_attention_heads=s["heads"], hidden_size_global=s["dg"], cross_attn_k=2)
    return BltConfig(
        cross_attn_k=2, encoder_hash_byte_group_vocab=buckets, local_attention_window_len=s["window"], use_cache=False,
        encoder_config=dict(local, num_hidden_layers=s["enc_layers"], intermediate_size=s["enc_mlp"]),
        decoder_config=dict(local, num_hidden_layers=s["dec_layers"], intermediate_size=s["dec_mlp"],
                            cross_attn_all_layers=True),
        global_config=dict(hidden_size=s["dg"], num_attention_heads=s["heads"], num_hidden_layers=s["glob_layers"],
                           intermediate_size=s["glob_mlp"]),
        patcher_config=dict(hidden_size=s["em_dim"], num_attention_heads=s["em_heads"],
                            num_hidden_layers=s["em_layers"], intermediate_size=s["em_mlp"], sliding_window=512))


def make(folder: Path, shape: str, buckets: int, prompt_len: int) -> dict:
    """Worker: a random BltForCausalLM of `shape`, its threshold at ~4.5 bytes/patch on the prompt,
    saved to folder/hf."""
    import torch
    from transformers import BltForCausalLM

    cfg = blt_config(shape, buckets)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = BltForCausalLM(cfg).eval()
    with torch.no_grad():
        ids = torch.tensor([hf_ids(prompt_ids(prompt_len))])
        ent, _, _ = model.model.patcher(ids, patch_size=4, threshold=1e9)
    model.config.patching_threshold = float(ent[0, 1:].quantile(1 - 1 / BYTES_PER_PATCH))
    model.save_pretrained(folder / "hf")
    return {"params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - t0,
            "threshold": model.config.patching_threshold, "peak_rss_mib": peak_rss_mib()}


def import_run(folder: Path) -> dict:
    """Worker: `omnibyte import hf folder/hf --out folder/run`, timed."""
    from omnibyte.interop import import_checkpoint

    t0 = time.perf_counter()
    import_checkpoint("hf", folder / "hf", folder / "run")
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


def omnibyte_side(folder: Path, n: int, prompt_len: int, threads: int) -> dict:
    """Worker: the imported run generating n bytes greedily with the one cached decoding loop."""
    import torch

    from benchmarks.common import bytes_only
    from omnibyte.generate import SamplingConfig, generate
    from omnibyte.models import OmniModel

    torch.set_num_threads(threads)
    model = OmniModel.from_pretrained(folder / "run")
    stamps, peaks = [], []

    def on_token(row, tok):
        stamps.append(time.perf_counter())
        peaks.append(peak_rss_mib())

    t0 = time.perf_counter()
    out = generate(model, [prompt_ids(prompt_len)], SamplingConfig(max_new=n, temperature=0),
                   constraints=[bytes_only()], on_token=on_token)[0]
    with torch.no_grad():
        starts = model.patcher(torch.tensor([prompt_ids(prompt_len) + out]))
    return {"seconds": time.perf_counter() - t0, "stamps": [s - t0 for s in stamps], "ids": out, "peaks": peaks,
            "bytes_per_patch": starts.numel() / float(starts.sum()), "peak_rss_mib": peak_rss_mib()}


def hf_side(folder: Path, n: int, prompt_len: int, threads: int) -> dict:
    """Worker: the port's generate, cache off, n bytes greedily (its specials suppressed: bytes only)."""
    import torch
    from transformers import BltForCausalLM
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        def __init__(self):
            self.times, self.peaks = [], []

        def put(self, value):
            self.times.append(time.perf_counter())
            self.peaks.append(peak_rss_mib())

        def end(self):
            pass

    torch.set_num_threads(threads)
    model = BltForCausalLM.from_pretrained(folder / "hf").eval()
    streamer = Stamps()
    ids = torch.tensor([hf_ids(prompt_ids(prompt_len))])
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n, do_sample=False, use_cache=False, suppress_tokens=[0, 1, 2, 3],
                         pad_token_id=3, streamer=streamer)
    seconds = time.perf_counter() - t0
    from omnibyte.nn.hash_ngram import BLT_IDS

    new = [BLT_IDS.index(t) for t in out[0, ids.shape[1]:].tolist()]
    return {"seconds": seconds, "stamps": [s - t0 for s in streamer.times[1:]], "ids": new,
            "peaks": streamer.peaks[1:], "peak_rss_mib": peak_rss_mib()}


def hf_forwards(folder: Path, prompt_len: int, threads: int, lengths: list[int], repeats: int = 3) -> dict:
    """Worker: the seconds of one forward of the port over the first L ids of the sequence it
    generates (the prompt and omnibyte's greedy bytes, which are the port's where both ran), for
    each L in `lengths`, median of `repeats`: uncached `generate` makes one such forward per byte."""
    import torch
    from transformers import BltForCausalLM

    torch.set_num_threads(threads)
    model = BltForCausalLM.from_pretrained(folder / "hf").eval()
    seq = hf_ids(prompt_ids(prompt_len) + json.loads((folder / "ours.json").read_text()))
    seconds = {}
    with torch.no_grad():
        model(torch.tensor([seq[: lengths[0]]]))  # untimed: the first call pays one-off set-up
        for length in lengths:
            ids = torch.tensor([seq[:length]])
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - t0)
            seconds[length] = statistics.median(times)
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def interpolate(seconds: dict[int, float], prompt_len: int, n: int) -> float:
    """Seconds of n uncached steps, the k-th a forward over prompt_len + k ids: each step's time
    read off the timed lengths, linearly between them (and beyond the ends along the nearest pair)."""
    xs = sorted(seconds)
    total = 0.0
    for k in range(n):
        x = prompt_len + k
        i = min(max(1, bisect.bisect_left(xs, x)), len(xs) - 1)  # the pair [i - 1, i] around x
        x0, x1 = xs[i - 1], xs[i]
        total += seconds[x0] + (seconds[x1] - seconds[x0]) * (x - x0) / (x1 - x0)
    return total


def extrapolate(stamps: list[float], prompt_len: int, n: int) -> float:
    """Seconds the port would take for n bytes: its k-th byte costs a + b·(prompt + k) (a full
    forward over the sequence so far), fitted by least squares to its measured per-byte times."""
    steps = [b - a for a, b in zip([0.0, *stamps[:-1]], stamps)]
    xs = [prompt_len + k for k in range(len(steps))]
    mx, my = statistics.fmean(xs), statistics.fmean(steps)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, steps)) / max(1e-12, sum((x - mx) ** 2 for x in xs))
    a = my - b * mx
    return sum(a + b * (prompt_len + k) for k in range(n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny shape; both sides generate every byte")
    ap.add_argument("--bytes", type=int, default=1000, help="bytes omnibyte generates (default 1000)")
    ap.add_argument("--hf-bytes", type=int, help="bytes the port generates (default: 64 for the 1B shape, "
                    "--bytes with --quick)")
    ap.add_argument("--buckets", type=int, default=50_000, help="rows per hash n-gram table (released: 500,002)")
    ap.add_argument("--prompt-bytes", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1: on a shared, "
                    "loaded 2-core machine a second thread waits for the first at every op)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints in benchmarks/out/blt_import")
    ap.add_argument("--forward-lengths", type=int, default=9, help="when the port generates fewer bytes than "
                    "omnibyte: time its forward at this many lengths up to prompt + --bytes, for an estimate of its "
                    "whole run interpolated between them (default 9; 0: none)")
    ap.add_argument("--worker", choices=["make", "import", "omnibyte", "hf", "forwards"], help=argparse.SUPPRESS)
    ap.add_argument("--lengths", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="1b", help=argparse.SUPPRESS)
    results_option(ap, "results_blt.md")
    args = ap.parse_args()
    shape = "tiny" if args.quick else args.shape
    hf_bytes = args.hf_bytes or (args.bytes if args.quick else 64)
    if args.worker:
        work = {"make": lambda: make(args.dir, shape, args.buckets, args.prompt_bytes),
                "import": lambda: import_run(args.dir),
                "omnibyte": lambda: omnibyte_side(args.dir, args.bytes, args.prompt_bytes, args.threads),
                "hf": lambda: hf_side(args.dir, args.bytes, args.prompt_bytes, args.threads),
                "forwards": lambda: hf_forwards(args.dir, args.prompt_bytes, args.threads, args.lengths)}[args.worker]
        print(json.dumps(work()))
        return 0

    folder = OUT / ("blt_import_quick" if args.quick else "blt_import")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    common = ["--dir", str(folder), "--shape", shape, "--buckets", str(args.buckets), "--prompt-bytes",
              str(args.prompt_bytes), "--threads", str(args.threads)]

    def worker(kind: str, n: int = 0, extra: tuple[str, ...] = ()) -> dict:
        print(f"{kind} ...", flush=True)
        return run_worker(sys.executable, "benchmarks.blt_import_speed",
                          ["--worker", kind, "--bytes", str(n), *common, *extra], args.threads, timeout=6 * 3600)

    def side(kind: str, n: int):
        def run() -> Measured:
            r = worker(kind, n)
            return Measured(r["seconds"], r)
        return run

    load = [os.getloadavg()[0]]
    made = worker("make")
    imported = worker("import")
    # one generation per side (the port's alone takes many minutes), each in its own process
    t = compare({"omnibyte": side("omnibyte", args.bytes), "transformers": side("hf", hf_bytes)},
                repeats=1, warmup=0, log=True)
    ours, theirs = t["omnibyte"].values[0], t["transformers"].values[0]
    forwards = None
    if hf_bytes < args.bytes and args.forward_lengths > 1:
        (folder / "ours.json").write_text(json.dumps(ours["ids"]))
        first, last = args.prompt_bytes + hf_bytes, args.prompt_bytes + args.bytes - 1
        step = (last - first) / (args.forward_lengths - 1)
        lengths = sorted({round(first + i * step) for i in range(args.forward_lengths)})
        forwards = worker("forwards", extra=("--lengths", *map(str, lengths)))["seconds"]
        forwards = {int(k): v for k, v in forwards.items()}
    load.append(os.getloadavg()[0])
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    n = min(len(ours["ids"]), len(theirs["ids"]))
    same = ours["ids"][:n] == theirs["ids"][:n]
    first = next((i for i in range(n) if ours["ids"][i] != theirs["ids"][i]), None)
    ours_rate = args.bytes / ours["seconds"]
    ours_rate_n = hf_bytes / ours["stamps"][hf_bytes - 1]
    theirs_rate = hf_bytes / theirs["seconds"]
    lines = [f"- {'tiny shape (--quick)' if args.quick else 'BLT-1B shape'}: {made['params']:,} parameters in "
             f"transformers' model, hash tables of {args.buckets:,} rows (released: 500,002), random weights, "
             f"entropy threshold {made['threshold']:.3f} (≈{BYTES_PER_PATCH} bytes/patch on the prompt; "
             f"{ours['bytes_per_patch']:.2f} over prompt + generated bytes), {args.prompt_bytes}-byte prompt, greedy, "
             f"bytes only, fp32, {args.threads} torch thread(s) per side; load average (1 min) {load[0]:.1f} "
             f"at the start, "
             f"{load[1]:.1f} at the end (the machine is shared)",
             f"- import (`omnibyte import hf`): {imported['seconds']:.0f} s, peak {imported['peak_rss_mib']:,.0f} MiB",
             "",
             "| side | bytes | seconds | bytes/s | peak memory (MiB) |",
             "| --- | ---: | ---: | ---: | ---: |",
             f"| omnibyte, cached decoding | {args.bytes:,} | {ours['seconds']:.1f} | {ours_rate:.2f} | "
             f"{ours['peak_rss_mib']:,.0f} |",
             f"| omnibyte, its first {hf_bytes} bytes (prompt included) | {hf_bytes} | "
             f"{ours['stamps'][hf_bytes - 1]:.1f} | "
             f"{ours_rate_n:.2f} | {ours['peaks'][hf_bytes - 1]:,.0f} |",
             f"| transformers `generate(use_cache=False)` | {hf_bytes} | {theirs['seconds']:.1f} | {theirs_rate:.3f} | "
             f"{theirs['peak_rss_mib']:,.0f} |",
             "",
             f"- same outputs: **{'yes' if same else 'no'}** over the {n} bytes both generated"
             + ("" if same else f" (first difference at byte {first})"),
             f"- speed-up over the same {hf_bytes} bytes: **{ours_rate_n / theirs_rate:.1f}×**",
             f"- peak memory over the same {hf_bytes} bytes: omnibyte {ours['peaks'][hf_bytes - 1]:,.0f} MiB, the port "
             f"{theirs['peak_rss_mib']:,.0f} MiB (**{ours['peaks'][hf_bytes - 1] / theirs['peak_rss_mib']:.2f}×**; the "
             "weights are mapped from the file on both sides, so the hash tables grow resident as rows are looked up)"]
    if hf_bytes < args.bytes and not forwards:
        est = extrapolate(theirs["stamps"], args.prompt_bytes, args.bytes)
        lines.append(f"- the port at {args.bytes:,} bytes, extrapolated from its per-byte times (a + b·length, "
                     f"not measured): ≈{est / 60:.0f} min, {args.bytes / est:.3f} bytes/s, so ≈"
                     f"{ours_rate / (args.bytes / est):.0f}× against omnibyte's measured {ours_rate:.2f} bytes/s")
    if forwards:
        # the measured steps (until its last byte's stamp) and the timed forwards beyond them
        est = theirs["stamps"][-1] + interpolate(forwards, args.prompt_bytes + hf_bytes, args.bytes - hf_bytes)
        lines.append(f"- the port at {args.bytes:,} bytes, its first {hf_bytes} steps measured and the rest read off "
                     f"its forward timed at {len(forwards)} lengths from {min(forwards)} to {max(forwards)} ids "
                     f"(median of 3 each: "
                     + ", ".join(f"{k}: {v:.3g} s" for k, v in sorted(forwards.items()))
                     + f"; linear between them, not a full run): ≈{est / 60:.0f} min, {args.bytes / est:.3f} "
                     f"bytes/s, so ≈**{ours_rate / (args.bytes / est):.0f}×** against omnibyte's measured "
                     f"{ours_rate:.2f} bytes/s")
    print("\n".join(lines))
    out = results_file(args, "results_blt.md")
    if out is not None:
        write_section(out, "blt-import-speed", header("Imported BLT-1B shape: cached decoding vs transformers' "
                                                      "uncached generate") + lines)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
