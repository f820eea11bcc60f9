"""Cached BLT decoding alone: bytes/s of greedy generation with blt_speed.py's generation model
(dim_local 128, entropy patching), no full re-run. Quick enough to compare two checkouts of the
code side by side, alternating, on an idle machine:

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
      PYTHONPATH=/tmp/before .venv/bin/python /tmp/before/benchmarks/blt_decode_speed.py   # if it has this file,
      .venv/bin/python benchmarks/blt_decode_speed.py                                      # else copy it there
    done

Prints bytes/s and a hash of the generated ids (equal hashes: both checkouts produced the same bytes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blt_speed as bs  # noqa: E402

import omnibyte  # noqa: E402
from omnibyte.generate import SamplingConfig, generate  # noqa: E402
from omnibyte.patching import PatcherConfig  # noqa: E402
from omnibyte.patching.calibrate import calibrate_threshold  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=2000, help="new bytes to generate (default 2000)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = bs.FULL
    em = bs.entropy_model(p)
    thr = calibrate_threshold(em, torch.tensor([bs.PROMPT[1:] * 8]), p["bytes_per_patch"])
    torch.manual_seed(0)
    model = bs.blt(p, p["local_dims"][-1], PatcherConfig("entropy", threshold=thr), em).eval()
    generate(model, [bs.PROMPT], SamplingConfig(max_new=20, temperature=0, stop_at_eos=False))  # warm-up
    t0 = time.perf_counter()
    out = generate(model, [bs.PROMPT], SamplingConfig(max_new=args.bytes, temperature=0, stop_at_eos=False))[0]
    dt = time.perf_counter() - t0
    print(f"{Path(omnibyte.__file__).parent.parent}: {args.bytes / dt:,.0f} bytes/s "
          f"({1000 * dt / args.bytes:.2f} ms/byte), ids hash {hash(tuple(out)) & 0xFFFFFFFF:08x}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
