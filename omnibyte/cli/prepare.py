"""`omnibyte prepare`: text, JSONL, image and audio files -> a sharded dataset for training."""

from __future__ import annotations

import argparse

from omnibyte.cli.args import seed_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="build a dataset from files (default: the King James Bible)",
        description="Turn text files, folders, globs and JSONL files ({'text': ...} or {'segments': [...]} "
        "per line) into uint16 shards with a document-level train/val/test split (val for choosing, test "
        "for the final figures). With no SRC, builds the King James Bible (apt-get install bible-kjv-text) "
        "into data/kjv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("sources", nargs="*", metavar="SRC", help="file, folder, glob or .jsonl file")
    p.add_argument("--out", metavar="DIR", help="dataset folder (default with no SRC: data/kjv)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of documents held out for val "
                   "(default 0.01; files only: --task/--mix take --heldout)")
    p.add_argument("--test-fraction", type=float, default=None, help="share of documents held out for test, "
                   "scored once per final model (default: as many as val; 0 writes no test split)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the train/val/test split (--task/--mix: of "
                   "the examples; val and test draw from seeds derived from it)")
    p.add_argument("--doc-bytes", type=int, default=16384, help="largest document cut from a text file")
    p.add_argument("--task", metavar="NAME", help="build a generated task suite instead of reading files: "
                   "clocks, shapes, fashion, speech or completion")
    p.add_argument("--mix", metavar="SPEC", help="build tasks and text shuffled into one dataset, e.g. "
                   "kjv:0.3,clocks:2000,shapes:2000,fashion:5000,speech:1000 (TASK:COUNT; kjv:SHARE or kjv:DOCS)")
    p.add_argument("--n", type=int, default=2000, help="--task: number of training examples")
    p.add_argument("--heldout", metavar="N|TASK:N,...", help="--task/--mix: examples of each task in each of the "
                   "val and test splits, drawn from seeds of their own (Fashion-MNIST: from one half of its test "
                   "images each); one count, or per task (default: 10%% of the task's count)")
    p.add_argument("--task-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="--task/--mix: a task option, e.g. size=48 (in a mix: clocks.size=48); repeatable")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.data.corpus import DEFAULT_DATA_DIR, prepare_kjv
    from omnibyte.data.prepare import prepare, summary
    from omnibyte.errors import OmnibyteError

    if (args.task is not None and not args.task.strip()) or (args.mix is not None and not args.mix.strip()):
        raise OmnibyteError("--task and --mix need a value (e.g. --task clocks, --mix kjv:0.3,clocks:2000)")
    if args.task or args.mix:
        from omnibyte.data.tasks import prepare_tasks

        if args.sources:
            raise OmnibyteError("--task/--mix generate their data; give no SRC with them")
        if args.val_fraction is not None or args.test_fraction is not None:
            raise OmnibyteError("--val-fraction and --test-fraction are for files; --task/--mix hold out "
                                "--heldout examples per task")
        print(prepare_tasks(args.out, task=args.task, mix=args.mix, n=args.n, seed=args.seed,
                            heldout=args.heldout, options=args.task_opt))
        return 0
    if args.heldout is not None:
        raise OmnibyteError("--heldout is for --task/--mix; files take --val-fraction")
    val_fraction = 0.01 if args.val_fraction is None else args.val_fraction
    if args.sources:
        if args.out is None:
            raise OmnibyteError("--out DIR is required when sources are given")
        meta = prepare(args.sources, args.out, val_fraction=val_fraction, test_fraction=args.test_fraction,
                       seed=args.seed, doc_bytes=args.doc_bytes, progress=True)
    else:
        meta = prepare_kjv(args.out or DEFAULT_DATA_DIR, val_fraction=val_fraction,
                           test_fraction=args.test_fraction, seed=args.seed)
    print(summary(meta, args.out or DEFAULT_DATA_DIR))
    return 0
