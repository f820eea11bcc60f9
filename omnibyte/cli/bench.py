"""omnibyte bench [sweep] [--preset small|quick|FILE.toml] [--data DIR] [--budgets 1e13,3e13] [--models ...]
                          [--frontier] [--val TEXT] [--task cute] [--noise] [--jobs N] [--out DIR]
   omnibyte bench bpe --data DIR --vocab 4096 --out DIR
   omnibyte bench cute --out DIR [--words FILE]"""

from __future__ import annotations

import argparse
from pathlib import Path

from omnibyte.cli.args import seed_int

HELP = """sweep (the default): train each model at each training-FLOPs budget on one dataset, then write
results.md (params, training FLOPs — own and with BLT-entropy's entropy model included — inference
FLOPs/byte, steps, wall time, peak memory, validation and test bits per byte), results.json and
bpb_vs_flops.png into --out. Finished runs in --out are reused. Choose on val, report test: the
dataset's val split is for choosing sizes and recipes, its test split for the final figures.
--frontier trains every point of the preset's [grid] (sizes, learning rates, BPE vocabularies) and
reports, per family and budget, the grid point best on val with its test bits per byte. A preset
is a name (configs/bench/NAME.toml: small, quick) or the path of a TOML file of the same fields, e.g.
a copy of configs/bench/small.toml with other model sizes: omnibyte bench --preset my.toml.

bpe: learn a byte-level BPE tokenizer on the train split of a prepared dataset and write its token
version (same documents and splits) for the BPE baseline: omnibyte train --data OUT --model.vocab_size V.

cute: generate the character-level task suite (spell, backwards, insert, delete, substitute,
contains, swap) from a word list as a dataset plus held-out questions on other words, scored with
`omnibyte eval MODEL --task cute --data OUT` or `omnibyte bench --data OUT --task cute`."""


def add_parser(sub) -> None:
    from omnibyte.bench import MODELS

    p = sub.add_parser("bench", help="compare models at equal training FLOPs; make BPE and task data",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=["sweep", "bpe", "cute"], default="sweep")
    p.add_argument("--data", help="prepared dataset (default data/kjv, built on first use)")
    p.add_argument("--out", help="output folder (sweep default: runs/bench-PRESET, for a preset file its name "
                   "without .toml)")
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--preset", default="small",
                       help="small (≈20 min on a 2-core CPU, two runs at a time), quick (seconds), or the path "
                            "of a preset file (TOML, fields as in configs/bench/small.toml)")
    sweep.add_argument("--budgets", help="training FLOPs per run, comma-separated (default: the preset's)")
    sweep.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    sweep.add_argument("--frontier", action="store_true", help="train every point of the preset's [grid] and "
                       "report each family's best on val per budget, scored on test")
    sweep.add_argument("--val", help="score on this text file or folder instead of the dataset's val split "
                       "(no test scores then)")
    sweep.add_argument("--task", choices=["cute"], help="also score held-out task accuracy (--data: a task suite)")
    sweep.add_argument("--noise", action="store_true", help="also score perturbed validation text")
    sweep.add_argument("--noise-rate", type=float, default=0.1)
    sweep.add_argument("--seed", type=seed_int, default=0)
    sweep.add_argument("--seeds", help="--frontier: the grid trains at --seed, then each chosen run again at these "
                       "seeds (comma-separated, e.g. 0,1,2); the table gives test bpb's mean and spread")
    sweep.add_argument("--threads", type=int, help="torch CPU threads for training (default: the preset's; "
                       "1 is fastest for tiny models or on a busy machine)")
    sweep.add_argument("--jobs", type=int, help="runs trained at the same time, one process each (default: the "
                       "preset's: 2 for small, 1 for quick)")
    bpe = p.add_argument_group("bpe (and the sweep's BPE model)")
    bpe.add_argument("--vocab", type=int, help="BPE vocabulary size (default 4096; the sweep: the preset's)")
    cute = p.add_argument_group("cute")
    cute.add_argument("--words", help="word list, one word a line (default /usr/share/dict/american-english)")
    cute.add_argument("--n-train", type=int, default=100000,
                      help="training questions (default 100,000: the small preset's models see each about once at "
                           "3e13 FLOPs; on 20,000 they overfit before they learn the character tasks)")
    cute.add_argument("--n-heldout", type=int, default=700, help="held-out questions (on held-out words)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.errors import OmnibyteError

    if args.action == "bpe":
        return make_bpe(args)
    if args.action == "cute":
        return make_cute(args)
    if args.words:
        raise OmnibyteError("--words belongs to `omnibyte bench cute`")
    from omnibyte.bench import Bench, parse_budgets, parse_models

    out = args.out or f"runs/bench-{Path(args.preset).stem}"
    bench = Bench(out, data=args.data or "data/kjv", preset=args.preset,
                  budgets=parse_budgets(args.budgets) if args.budgets else None, models=parse_models(args.models),
                  val=args.val, task=args.task, noise=args.noise, noise_rate=args.noise_rate, bpe_vocab=args.vocab,
                  seed=args.seed, threads=args.threads, jobs=args.jobs, frontier=args.frontier,
                  repeat_seeds=parse_seeds(args.seeds) if args.seeds else (),
                  log=lambda s: print(s, flush=True))
    bench.run()
    print((bench.out / "results.md").read_text())
    print(f"wrote {bench.out / 'results.md'}, {bench.out / 'results.json'} and {bench.out / 'bpb_vs_flops.png'}")
    return 0


def parse_seeds(text: str) -> tuple[int, ...]:
    from omnibyte.errors import OmnibyteError

    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise OmnibyteError(f"--seeds must be whole numbers separated by commas, e.g. 0,1,2; got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise OmnibyteError(f"--seeds must be whole numbers ≥ 0, got {text!r}")
    return seeds


def make_bpe(args) -> int:
    from omnibyte.data.bpe import prepare_bpe
    from omnibyte.errors import OmnibyteError

    if not args.data or not args.out:
        raise OmnibyteError("bench bpe needs --data DIR (a prepared byte dataset) and --out DIR")
    meta = prepare_bpe(args.data, args.out, args.vocab or 4096)
    tok = meta["tokenizer"]
    parts = [f"{name} {s['n_ids']:,} tokens / {sum(s['bytes'].values()):,} bytes" for name, s in meta["splits"].items()]
    print(f"BPE tokenizer of {tok['vocab_size']} ids → {args.out}: {'; '.join(parts)}.\n"
          f"Train the baseline with: omnibyte train --data {args.out} --model.vocab_size {tok['vocab_size']}")
    return 0


def make_cute(args) -> int:
    from omnibyte.data.tasks.cute import DEFAULT_WORDS, load_words, write_cute
    from omnibyte.errors import OmnibyteError

    if not args.out:
        raise OmnibyteError("bench cute needs --out DIR")
    words = load_words(args.words or DEFAULT_WORDS)
    meta = write_cute(args.out, words, n_train=args.n_train, n_heldout=args.n_heldout, seed=args.seed)
    c = meta["cute"]
    print(f"CUTE tasks → {args.out}: {c['train_examples']:,} training questions on {c['train_words']:,} words, "
          f"{c['heldout_examples']:,} held-out questions on {c['heldout_words']:,} other words "
          f"({', '.join(c['tasks'])}).")
    return 0
