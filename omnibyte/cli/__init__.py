"""`omnibyte ...`: a thin shell over the library. Each subcommand lives in its own module here
with `add_parser(subparsers)` (which sets `func`) so commands stay independent. A command imports
the library inside its `run`, so `omnibyte --help` and argument errors answer without loading torch."""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from omnibyte.errors import OmnibyteError

COMMANDS = ["prepare", "train", "eval", "generate", "patch", "bench", "report", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnibyte",
        description="Tokenizer-free byte-level models (byte transformer, MEGABYTE, BLT) for text, images "
        "and audio: prepare data, train, evaluate in bits per byte, generate, inspect patches, serve.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"omnibyte.cli.{name}").add_parser(sub)
    return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull dotted config overrides (`--train.steps 300`, `--model.dim=64`) out of argv, so argparse
    sees only the command's own flags."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if re.match(r"^--[A-Za-z_][\w-]*\.[\w.-]+(=.*)?$", a):
            if "=" in a:
                overrides.append(a)
                i += 1
            else:
                overrides += argv[i:i + 2]
                i += 2
            continue
        rest.append(a)
        i += 1
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, overrides = split_overrides(argv)
    args = parser.parse_args(argv)
    if overrides and not getattr(args, "parse_rest", False):
        parser.error(f"{args.command} takes no config overrides (got {overrides[0]})")
    args.overrides = overrides
    try:
        rc = args.func(args)
    except OmnibyteError as e:
        print(f"omnibyte {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"omnibyte {args.command}: error: no such file: {e.filename or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"omnibyte {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
