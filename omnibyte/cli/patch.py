"""`omnibyte patch`: see where a patcher cuts a text, and calibrate an entropy model's threshold.

    omnibyte patch [show] [MODEL] (--text TEXT | --file PATH) [--out DIR] [--kind ...]
    omnibyte patch calibrate ENTROPY_MODEL --data DIR --target-bytes-per-patch 4.5 [--relative]

MODEL is an entropy model (model or run dir) or a BLT model (its own patcher is used); with
--kind static or space no model is needed.
"""

from __future__ import annotations

import argparse
import os
import sys

from omnibyte.cli.args import arg_bytes, finite_float

USAGE = """omnibyte patch [show] [MODEL] (--text TEXT | --file PATH) [--out DIR] [--kind {static,space,entropy}]
                      [--patch-size P] [--threshold X] [--relative] [--max-patch-len N] [--color WHEN]
       omnibyte patch calibrate ENTROPY_MODEL --data DIR --target-bytes-per-patch B [--relative]
                      [--max-patch-len N] [--sample-bytes N] [--split SPLIT]"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "patch",
        usage=USAGE,
        help="show patch boundaries over a text; calibrate an entropy model's threshold",
        description="show (the default): patch a text with an entropy model, a BLT model's patcher, or "
        "static/space rules; print the patches, mean bytes per patch, and write patches.html and "
        "entropy.png. calibrate: find the entropy threshold that gives a target mean patch size on a "
        "dataset sample and store it with the entropy model (patching.json).",
    )
    p.add_argument("words", nargs="*", metavar="[show|calibrate] MODEL", help=argparse.SUPPRESS)
    show = p.add_argument_group("show")
    show.add_argument("--text", help="text to patch")
    show.add_argument("--file", metavar="PATH", help="file whose bytes to patch")
    show.add_argument("--out", metavar="DIR", default=".", help="where patches.html and entropy.png go")
    show.add_argument("--kind", choices=["static", "space", "entropy"],
                      help="patcher (default: the BLT model's, else entropy with a model)")
    show.add_argument("--patch-size", type=int, help="static patch size")
    show.add_argument("--threshold", type=finite_float, help="entropy threshold (default: the calibrated one)")
    show.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                      help="colour patches in the terminal (else '|' between patches)")
    both = p.add_argument_group("show and calibrate")
    both.add_argument("--relative", action="store_true", default=None,
                      help="relative rule: entropy rise over the previous byte")
    both.add_argument("--max-patch-len", type=int, help="cut patches longer than this")
    cal = p.add_argument_group("calibrate")
    cal.add_argument("--data", metavar="DIR", help="prepared dataset to calibrate on")
    cal.add_argument("--target-bytes-per-patch", type=finite_float, help="mean patch size to hit")
    cal.add_argument("--sample-bytes", type=int, default=256 * 1024, help="ids of the split to use")
    cal.add_argument("--split", default="val", help="dataset split to sample")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.errors import OmnibyteError

    words = list(args.words)
    mode = words.pop(0) if words and words[0] in ("show", "calibrate") else "show"
    if len(words) > 1:
        raise OmnibyteError(f"expected one MODEL, got {' '.join(words)}")
    model_path = words[0] if words else None
    return calibrate(args, model_path) if mode == "calibrate" else show(args, model_path)


# --------------------------------------------------------------------------- calibrate


def calibrate(args, model_path: str | None) -> int:
    from omnibyte.errors import OmnibyteError
    from omnibyte.models.registry import load_model
    from omnibyte.patching.calibrate import calibrate as run_calibration
    from omnibyte.patching.entropy import write_calibration

    if model_path is None:
        raise OmnibyteError("calibrate needs ENTROPY_MODEL (a trained entropy model's run or model dir)")
    if args.data is None or args.target_bytes_per_patch is None:
        raise OmnibyteError("calibrate needs --data DIR and --target-bytes-per-patch B")
    if args.text is not None or args.file is not None or args.kind is not None:
        raise OmnibyteError("--text, --file and --kind belong to `omnibyte patch show`, not calibrate")
    if args.sample_bytes < 2:
        raise OmnibyteError(f"--sample-bytes must be ≥ 2, got {args.sample_bytes}")
    model = load_model(model_path)
    patcher = _patcher_of(model)
    if patcher is not None:
        raise OmnibyteError(f"{model_path} is a BLT model: calibrate its entropy model instead "
                            f"({patcher.cfg.entropy_model or 'none set'})")
    relative, cap = bool(args.relative), args.max_patch_len or 0
    c = run_calibration(model, args.data, args.target_bytes_per_patch, relative=relative, max_patch_len=cap,
                        sample_bytes=args.sample_bytes, split=args.split, progress=True)
    mode = "relative" if relative else "global"
    file = write_calibration(model_path, mode, c.to_entry(data=str(args.data), split=args.split))
    print(f"{mode} threshold {c.threshold:.6g} nats: {c.bytes_per_patch:.3f} bytes/patch on {c.n_bytes} "
          f"bytes of {args.data} (target {c.target_bytes_per_patch:g}{f', max_patch_len {cap}' if cap else ''})")
    print(f"stored in {file}")
    if abs(c.bytes_per_patch / c.target_bytes_per_patch - 1) > 0.05:
        print(f"warning: {c.bytes_per_patch:.3f} bytes/patch is more than 5% off the target: segment markers "
              f"or max_patch_len force too many patch starts on this data", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- show


def _patcher_of(model):
    """A BLT-like model's built patcher; None for a model that does not patch (an entropy model)."""
    from omnibyte.patching import Patcher

    patcher = getattr(model, "patcher", None)
    return patcher if isinstance(patcher, Patcher) else None


def _resolve(args, model_path: str | None):
    """The patcher MODEL and the flags describe, built: a BLT model's own (its embedded entropy
    model), an entropy model's (threshold from the flags or its calibration), or a plain rule."""
    from dataclasses import replace
    from pathlib import Path

    from omnibyte.errors import OmnibyteError
    from omnibyte.models.registry import load_model
    from omnibyte.patching import Patcher, PatcherConfig, decide_threshold

    entropy_model, calibration_dir, threshold = None, model_path, args.threshold
    if model_path is None:
        if args.kind in (None, "entropy"):
            raise OmnibyteError("give MODEL (an entropy or BLT model), or --kind static / --kind space")
        base = PatcherConfig(args.kind)
    else:
        model = load_model(model_path)
        own = _patcher_of(model)
        if own is None:  # an entropy model
            entropy_model, base = model, PatcherConfig("entropy", entropy_model=str(model_path))
        else:  # a BLT model: its patcher, its embedded entropy model
            entropy_model, base = own.entropy_model, own.cfg
            calibration_dir = base.entropy_model if base.entropy_model and Path(base.entropy_model).exists() else None
            if args.relative is not None and args.relative != base.relative:
                base = replace(base, threshold=None)  # its threshold is for the other mode
    overrides = {k: v for k, v in (("kind", args.kind), ("patch_size", args.patch_size), ("threshold", threshold),
                                   ("relative", args.relative), ("max_patch_len", args.max_patch_len)) if v is not None}
    try:
        cfg = replace(base, **overrides)
    except ValueError as e:
        raise OmnibyteError(str(e)) from None
    if cfg.kind != "entropy":
        return Patcher(cfg)
    if entropy_model is None:
        raise OmnibyteError(f"entropy patching needs an entropy model; {model_path} has none")
    try:
        cfg = replace(cfg, threshold=decide_threshold(cfg, calibration_dir)[0])
    except OmnibyteError:
        raise OmnibyteError(f"no calibrated threshold for {model_path} ({'relative' if cfg.relative else 'global'}"
                            f" mode): pass --threshold X or run `omnibyte patch calibrate "
                            f"{calibration_dir or 'ENTROPY_MODEL'} --data DIR --target-bytes-per-patch 4.5`") from None
    return Patcher(cfg, entropy_model)


def show(args, model_path: str | None) -> int:
    from pathlib import Path

    import torch

    from omnibyte.errors import OmnibyteError
    from omnibyte.files import check_output_dir
    from omnibyte.format import encode
    from omnibyte.patching.core import mean_patch_len, patch_starts
    from omnibyte.patching.entropy import stream_entropies
    from omnibyte.patching.viz import plot_entropy, render_html, render_terminal

    if (args.text is None) == (args.file is None):
        raise OmnibyteError("give exactly one of --text TEXT or --file PATH")
    if args.data is not None or args.target_bytes_per_patch is not None:
        raise OmnibyteError("--data and --target-bytes-per-patch belong to `omnibyte patch calibrate`")
    check_output_dir(args.out)
    if args.text is not None:
        data = arg_bytes(args.text)  # the bytes typed, UTF-8 or not
        name = "text"
    else:
        file = Path(args.file)
        if not file.is_file():
            raise OmnibyteError(f"no such file: {file}")
        data, name = file.read_bytes(), file.name
    patcher = _resolve(args, model_path)
    cfg, threshold = patcher.cfg, patcher.cfg.threshold

    ids = encode(data)  # BOS, bytes, EOS: what a model sees
    entropies = None
    if patcher.entropy_model is not None:
        entropies = torch.from_numpy(stream_entropies(patcher.entropy_model, ids))
    x = torch.tensor([ids])
    starts = patch_starts(x, cfg, None if entropies is None else entropies[None])[0]

    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                       and not os.environ.get("NO_COLOR"))
    print(render_terminal(ids, starts.tolist(), color=color))
    rule = cfg.kind + (f" {cfg.patch_size}" if cfg.kind == "static" else "")
    if cfg.kind == "entropy":
        rule += f" {'relative' if cfg.relative else 'global'} threshold {threshold:.4g}"
    if cfg.max_patch_len:
        rule += f", max {cfg.max_patch_len}"
    print(f"{len(ids)} bytes, {int(starts.sum())} patches, {mean_patch_len(starts):.2f} bytes/patch ({rule})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = f"{name}: {rule}"
    h = None if entropies is None else entropies.tolist()
    page = out / "patches.html"
    page.write_text(render_html(ids, starts.tolist(), h, threshold if cfg.kind == "entropy" else None, title))
    print(f"wrote {page}")
    if h is not None:
        png = plot_entropy(out / "entropy.png", ids, starts.tolist(), h,
                           threshold if cfg.kind == "entropy" else None, cfg.relative, title)
        print(f"wrote {png}")
    else:
        print("no entropy model given: entropy.png not written")
    return 0
