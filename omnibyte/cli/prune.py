"""omnibyte prune RUN --keep STACK:LAYERS [--keep ...] --out RUN2"""

from __future__ import annotations

import argparse

HELP = """Cut layers out of a trained model: RUN2 holds RUN's model with only the named layers of each
transformer stack, every weight copied from RUN (stacks not named keep all their layers). Train it
on with `omnibyte train --init RUN2` (continued training) or add --train.distill_from RUN
(distillation from the full model).

Stacks: `stack` (byte transformer), `global_model`, `local_model` (MEGABYTE), `encoder`,
`latent`, `decoder` (BLT). Layers count from 0, e.g.

    omnibyte prune runs/blt-small --keep latent:0,2 --keep decoder:1 --out runs/blt-half"""


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="keep some layers of a trained model (a faster model to train on)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run or model folder of the trained model")
    p.add_argument("--keep", action="append", required=True, metavar="STACK:LAYERS",
                   help="layers of one stack to keep, e.g. latent:0,2 (repeat for other stacks; decoder: keeps "
                   "none where a stack may be empty)")
    p.add_argument("--out", required=True, help="the new run folder (must not exist)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.models.prune import parse_keep
    from omnibyte.train.warmstart import prune_run

    record = prune_run(args.model, parse_keep(args.keep), args.out)
    layers = ", ".join(f"{name} {len(s['kept'])} of {s['of']} ({','.join(map(str, s['kept'])) or 'none'})"
                       for name, s in record["stacks"].items())
    print(f"{args.out}: layers kept: {layers}; {record['params']:,} parameters (was {record['source_params']:,})")
    return 0
