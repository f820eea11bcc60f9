"""Cached BLT decoding alone: bytes/s of greedy generation with blt_speed's generation model
(local width 128, entropy patching), no full re-run; median (min–max) of --repeats generations.

With --against DIR it compares this checkout with another one (say, an older commit) on the
same machine: each round runs one generation in a fresh process per checkout, each importing
its own checkout's omnibyte, in an order that alternates between rounds, so the machine's noise
falls on both alike. DIR needs this module (copy this checkout's benchmarks/ there if it lacks it;
the copy builds the model with the config names of DIR's omnibyte only if they match):

    git worktree add /tmp/before <commit>
    .venv/bin/python -m benchmarks.blt_decode_speed --against /tmp/before

Prints bytes/s and a hash of the generated ids (equal hashes: both checkouts produced the same bytes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, Measured, compare, fmt_rate, fmt_speedup, run_worker


def measure(n: int, threads: int) -> dict:
    """One warmed-up generation of `n` bytes: its seconds and the ids' hash."""
    import torch

    from benchmarks import blt_speed as bs
    from omnibyte.generate import SamplingConfig, generate
    from omnibyte.patching.calibrate import calibrate_threshold

    torch.set_num_threads(threads)
    p = bs.FULL
    em = bs.entropy_lm(p)
    thr = calibrate_threshold(em, torch.tensor([bs.PROMPT[1:] * 8]), p["bytes_per_patch"])
    torch.manual_seed(0)
    model = bs.blt(p, p["local_dims"][-1], {"kind": "entropy", "threshold": thr}, em).eval()
    generate(model, [bs.PROMPT], SamplingConfig(max_new=20, temperature=0, stop_at_eos=False))  # warm-up
    t0 = time.perf_counter()
    out = generate(model, [bs.PROMPT], SamplingConfig(max_new=n, temperature=0, stop_at_eos=False))[0]
    return {"seconds": time.perf_counter() - t0, "hash": f"{hash(tuple(out)) & 0xFFFFFFFF:08x}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=2000, help="new bytes to generate (default 2000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed generations (rounds with --against; default 3)")
    ap.add_argument("--against", type=Path, help="another checkout to compare with, round by round")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(measure(args.bytes, args.threads)))
        return 0
    if args.against and args.against.resolve() == REPO:
        ap.error("--against names this checkout")
    worker_args = ["--worker", "--bytes", str(args.bytes), "--threads", str(args.threads)]

    def checkout(root: Path | None):
        def run() -> Measured:
            if root is None:  # in this process
                r = measure(args.bytes, args.threads)
            else:
                r = run_worker(sys.executable, "benchmarks.blt_decode_speed", worker_args, args.threads, 3600, cwd=root)
            return Measured(r["seconds"], r["hash"])
        return run

    if args.against:
        sides = {str(REPO): checkout(REPO), str(args.against.resolve()): checkout(args.against.resolve())}
    else:
        sides = {str(REPO): checkout(None)}
    t = compare(sides, repeats=args.repeats, warmup=0, log=True)
    for root, timing in t.items():
        print(f"{root}: {fmt_rate(timing, args.bytes)} bytes/s, ids hash {', '.join(sorted(set(timing.values)))}")
    if args.against:
        here, there = t.values()
        print(f"this checkout / {args.against}: {fmt_speedup(here, there)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
