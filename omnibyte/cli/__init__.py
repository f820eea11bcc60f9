"""`omnibyte ...`: a thin shell over the library. Each subcommand lives in its own module here
with `add_parser(subparsers)` (which sets `func`) so commands stay independent. A command imports
the library inside its `run`, so `omnibyte --help` and argument errors answer without loading torch.

Every failure a user can cause is one line on stderr, `omnibyte COMMAND: error: ...`, and exit
status 2 (bad flags included); an interruption exits 130 (SIGINT) or 143 (SIGTERM) after cleaning
up; anything else is a bug, reported in one line with exit status 1 (OMNIBYTE_TRACEBACK=1 shows
the traceback).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import signal
import sys
import threading

from omnibyte.errors import OmnibyteError

COMMANDS = ["prepare", "train", "prune", "eval", "generate", "patch", "bench", "report", "serve", "import",
            "export", "compress", "decompress"]


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt so that cleanup (temporary files
    and folders) runs before the process exits."""


def _on_sigterm(signum, frame):
    raise Terminated


def _oneline(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("out of memory", "can't allocate memory", "not enough memory")))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return run_command(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)


def run_command(args) -> int:
    """Run the parsed command; turn whatever stops it into an exit status and one stderr line."""

    def fail(message: str, rc: int = 2) -> int:
        print(f"omnibyte {args.command}: {message}", file=sys.stderr, flush=True)
        return rc

    try:
        rc = args.func(args)
    except OmnibyteError as e:
        return fail(f"error: {_oneline(e)}")
    except FileNotFoundError as e:
        return fail(f"error: no such file: {e.filename or _oneline(e)}")
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Terminated:
        return fail("terminated", 143)
    except OSError as e:  # permissions, a full disk, a folder where a file belongs, ...
        where = f": {e.filename}" if e.filename else ""
        reason = e.strerror or _oneline(e)
        if e.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        return fail(f"error: {reason.lower()}{where}")
    except Exception as e:
        if os.environ.get("OMNIBYTE_TRACEBACK"):
            raise
        if _is_out_of_memory(e):
            return fail(f"error: out of memory: {_oneline(e)[:300]}")
        return fail(f"internal error ({type(e).__name__}: {_oneline(e)[:300]}); this is a bug: please report it "
                    f"(OMNIBYTE_TRACEBACK=1 shows where)", 1)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
