"""omnibyte import FORMAT SRC --out RUN [--entropy-model DIR]"""

from __future__ import annotations

import argparse

HELP = """Import a released BLT checkpoint as an omnibyte run folder that computes the same function:
the same entropy patcher (model, threshold, patch rules), hash n-gram tables, cross-attention
layout, norms and RoPE. FORMAT is `hf` (a transformers BLT folder: config.json with model_type
"blt" + model.safetensors) or `blt` (Meta's format: a folder with params.json + consolidated.pth,
its entropy model in SRC/entropy_model or beside SRC, as Meta's download places it). Nothing is
downloaded. The run evaluates (`omnibyte eval RUN --data DIR`), generates with cached decoding
(`omnibyte generate RUN`) and fine-tunes (`omnibyte train --resume RUN --data DIR --train.lr 1e-4`)."""


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="a released BLT checkpoint (transformers or Meta format) → an omnibyte run",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=["hf", "blt"], help="hf: transformers BLT folder; blt: Meta's format")
    p.add_argument("src", help="the checkpoint's folder")
    p.add_argument("--out", required=True, help="the run folder to create")
    p.add_argument("--entropy-model", metavar="DIR", help="blt: the entropy model's folder (default: "
                   "SRC/entropy_model, else the entropy_model folder beside SRC)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.interop import import_checkpoint

    out = import_checkpoint(args.format, args.src, args.out, entropy_model=args.entropy_model, quiet=False)
    print(f"imported {args.src} → {out} (evaluate: omnibyte eval {out} --data DIR; generate: omnibyte generate "
          f"{out} --prompt TEXT)")
    return 0
