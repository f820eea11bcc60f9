"""omnibyte eval RUN_OR_MODEL [--data DIR|FILE] [--json]"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="validation bits per byte of a trained model",
                       description="Bits per byte = summed negative log-likelihood in bits over the number of "
                       "bytes scored (special ids are scored but not counted as bytes; PAD is never scored).")
    p.add_argument("model", help="run directory or model directory")
    p.add_argument("--data", help="prepared dataset (default: the run's), or any text file/folder, "
                   "which is prepared on the fly and scored whole")
    p.add_argument("--split", default=None, help="split to score (default: val; all of an unprepared source)")
    p.add_argument("--seq-len", type=int, help="window length (default: the run's train.seq_len, else 1024)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, help="score only the first N batches")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.eval.runner import evaluate_model

    result = evaluate_model(args.model, data=args.data, split=args.split, seq_len=args.seq_len,
                            batch_size=args.batch_size, max_batches=args.max_batches)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['bpb']:.4f} bits/byte over {result['bytes']:,} bytes "
              f"({result['data']}, split {result['split']}, seq_len {result['seq_len']})")
    return 0
