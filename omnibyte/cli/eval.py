"""omnibyte eval RUN_OR_MODEL [--data DIR|FILE] [--json] [--task cute] [--noise]"""

from __future__ import annotations

from omnibyte.cli.args import finite_float, json_line, positive_int, seed_int


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="validation bits per byte of a trained model",
                       description="Bits per byte = summed negative log-likelihood in bits over the number of "
                       "bytes scored (special ids are scored but not counted as bytes; PAD is never scored).")
    p.add_argument("model", help="run directory or model directory")
    p.add_argument("--data", help="prepared dataset (default: the run's), or any text file/folder, "
                   "which is prepared on the fly and scored whole")
    p.add_argument("--split", default=None, help="split to score (default: val; all of an unprepared source)")
    p.add_argument("--seq-len", type=positive_int, help="window length (default: the run's train.seq_len, else 1024)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--max-batches", type=positive_int, help="score only the first N batches")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--task", help="instead of bits per byte, the task metric on a task suite's held-out "
                   "questions (--data: the suite's folder): cute (see `omnibyte bench cute`), or a multimodal "
                   "suite made by `omnibyte prepare --task/--mix`: clocks, shapes, fashion, speech, completion, all")
    p.add_argument("--limit", type=positive_int,
                   help="--task: score only the first N questions (per kind for multimodal)")
    p.add_argument("--by-modality", action="store_true", help="also report text / image / audio bits per byte")
    p.add_argument("--strided", action="store_true", help="MEGABYTE: also report strided-inference bits per byte "
                   "(two passes offset by P/2)")
    p.add_argument("--noise", action="store_true", help="also score perturbed copies of the text (random case, "
                   "drop, repeat, uppercase, swap) and report noisy/clean bpb")
    p.add_argument("--noise-rate", type=finite_float, default=0.1, help="--noise: chance each character is perturbed")
    p.add_argument("--noise-kinds", help="--noise: comma-separated perturbations (default: all)")
    p.add_argument("--noise-seed", type=seed_int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.errors import OmnibyteError
    from omnibyte.eval.runner import evaluate_model

    if args.task:
        if args.task != "cute":
            return run_multimodal_task(args)
        if not args.data:
            raise OmnibyteError("--task cute needs --data DIR (a task suite made by `omnibyte bench cute`)")
        return run_task(args)
    if args.noise:
        return run_noise(args)

    result = evaluate_model(args.model, data=args.data, split=args.split, seq_len=args.seq_len,
                            batch_size=args.batch_size, max_batches=args.max_batches,
                            by_modality=args.by_modality, strided=args.strided)
    if args.json:
        print(json_line(result))
        return 0
    print(f"{result['bpb']:.4f} bits/byte over {result['bytes']:,} bytes "
          f"({result['data']}, split {result['split']}, seq_len {result['seq_len']})")
    if "modalities" in result:
        from omnibyte.eval.multimodal import format_by_modality

        print(format_by_modality(result))
    for half in ("first", "second"):
        if f"strided_{half}_bpb" in result:
            print(f"strided inference, each byte from the pass where it is {'early' if half == 'first' else 'late'} "
                  f"in its patch: {result[f'strided_{half}_bpb']:.4f} bits/byte")
    return 0


def run_multimodal_task(args) -> int:
    from omnibyte.errors import OmnibyteError
    from omnibyte.eval.multimodal import evaluate_task, format_task_metrics
    from omnibyte.eval.runner import run_settings

    data = args.data or run_settings(args.model).get("data", {}).get("path")
    if not data:
        raise OmnibyteError(f"--task {args.task} needs --data DIR (made by `omnibyte prepare --task/--mix`)")
    result = evaluate_task(args.model, data, n=args.limit, task=None if args.task == "all" else args.task,
                           batch_size=args.batch_size)
    print(json_line(result) if args.json else format_task_metrics(result))
    return 0


def run_task(args) -> int:
    from omnibyte.eval.tasks import evaluate_tasks

    result = evaluate_tasks(args.model, args.data, batch_size=args.batch_size, limit=args.limit, progress=True)
    if args.json:
        print(json_line(result))
        return 0
    print(f"{args.task}: {result['accuracy']:.1%} exact match over {result['n']} held-out questions")
    for task, acc in result["per_task"].items():
        print(f"  {task:<12} {acc:.1%}")
    return 0


def run_noise(args) -> int:
    from omnibyte.eval.noise import noise_eval

    kinds = [k.strip() for k in args.noise_kinds.split(",") if k.strip()] if args.noise_kinds else None
    result = noise_eval(args.model, args.data, args.split, kinds, args.noise_rate, args.noise_seed, args.seq_len,
                        args.batch_size, args.max_batches)
    if args.json:
        print(json_line(result))
        return 0
    print(f"clean      {result['clean']['bpb']:.4f} bits/byte over {result['clean']['bytes']:,} bytes "
          f"({result['data']}, split {result['split']})")
    for kind, r in result["noisy"].items():
        print(f"{kind:<10} {r['bpb']:.4f} bits/byte  ×{r['ratio']:.3f}  (rate {args.noise_rate})")
    return 0
