"""omnibyte train [CONFIG.toml] [--data DIR] [--out RUN_DIR] [--resume RUN_DIR] [--section.key value ...]"""

from __future__ import annotations

import argparse
import os
import sys

HELP = """Train any omnibyte model with the one trainer. Settings come from defaults, then CONFIG.toml,
then dotted overrides such as --train.steps 300 --model.dim 64 --patcher.kind space.
Ctrl-C (or SIGTERM) saves a checkpoint and exits with status 130 (143); --resume continues exactly.
A run folder is locked while a process trains into it; a run that never saved a checkpoint is
trained again from step 0 by --resume or by naming it as --out.
Under torchrun (`torchrun --nproc-per-node N -m omnibyte train CONFIG`) it trains with DDP."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (byte transformer, MEGABYTE, BLT)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="TOML config (see configs/); defaults build a tiny byte transformer")
    p.add_argument("--data", help="prepared dataset directory (same as --data.path)")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run, parse_rest=True)


def run(args) -> int:
    from omnibyte.train.trainer import train

    overrides = list(args.overrides)
    if args.data:
        overrides += ["--data.path", args.data]
    result = train(args.config, overrides, args.out, args.resume, quiet=args.quiet)
    # interrupted: saved, but not finished; a script tells the two apart by the exit status
    rc = 128 + result["signal"] if "signal" in result else 0
    if "val_bpb" in result and not args.quiet:
        print(f"step {result['step']}: validation {result['val_bpb']:.4f} bits/byte")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun the run is saved, every file closed and the process group destroyed by
        # now. Skip interpreter finalization: there, about 1 run in 10, a gloo rank aborted
        # ("terminate called without an active exception") and torchrun reported a finished run
        # as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
