"""omnibyte report RUN [--out DIR] [--data DIR] [--n N] [--max-batches N] [--seed S] [--device D]"""

from __future__ import annotations

from omnibyte.cli.args import seed_int


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="an HTML page of what a trained model does (text, images, audio, task metrics)",
                       description="Writes index.html plus the PNGs and WAVs it shows: the run's loss curve, bits per "
                       "byte per modality, generated text and images, and for a task dataset (omnibyte prepare --task/"
                       "--mix) clock readings, points drawn on the images, counts, class names, transcripts against "
                       "references and image completions, each with its metric next to chance.")
    p.add_argument("run", help="run directory (omnibyte train --out)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: RUN/report)")
    p.add_argument("--data", metavar="DIR", help="prepared dataset (default: the run's)")
    p.add_argument("--n", type=int, default=8, help="held-out examples shown and scored per task kind (default 8)")
    p.add_argument("--max-batches", type=int, default=20,
                   help="validation windows scored for bits per byte, in batches of 4 (default 20)")
    p.add_argument("--seed", type=seed_int, default=0, help="sampling seed for generated text and images")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.errors import OmnibyteError
    from omnibyte.eval.report import write_report

    if args.n < 1 or args.max_batches < 1:
        raise OmnibyteError("--n and --max-batches must be ≥ 1")
    index = write_report(args.run, args.out, data=args.data, n=args.n, max_batches=args.max_batches,
                         device=args.device, seed=args.seed)
    print(f"wrote {index}")
    return 0
