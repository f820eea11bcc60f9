"""Flag types and output helpers the commands share: a bad number is an argparse error (one line,
exit 2) before anything is loaded, and JSON output never holds NaN."""

from __future__ import annotations

import argparse
import json
import math
import os


def positive_int(text: str) -> int:
    """A whole number ≥ 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {n}")
    return n


def seed_int(text: str) -> int:
    """A random seed: a whole number in 0 .. 2^63 - 1 (what numpy and torch generators take)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= n < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2^63-1, got {n}")
    return n


def port_number(text: str) -> int:
    """A TCP port: 0 (any free one) .. 65535."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= n < 65536:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {n}")
    return n


def finite_float(text: str) -> float:
    """A number that is not NaN or ±inf (which pass every range check, as all comparisons fail)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def json_line(obj) -> str:
    """`obj` as one line of strict JSON: NaN (a score with nothing to average) becomes null."""
    from omnibyte.eval.multimodal import json_safe

    return json.dumps(json_safe(obj), allow_nan=False)


def arg_bytes(text: str) -> bytes:
    """A command-line string as the bytes that were typed: Python decodes argv with
    surrogateescape, so bytes that are not UTF-8 come back unchanged (a byte model reads bytes)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:  # a str that did not come from argv, holding lone surrogates
        return text.encode("utf-8", "surrogatepass")
