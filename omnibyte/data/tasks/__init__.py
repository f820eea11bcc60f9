"""Generated task suites: deterministic multimodal datasets with held-out prompts and answers.

`TASKS` maps a task name to its spec (module with a config dataclass and
``examples(n, seed, cfg)``, and optionally ``heldout_config(cfg, split)`` when its held-out
examples need other settings than a seed of their own, as Fashion-MNIST's test images do).
`build_task` writes one task as a prepared dataset and `build_mix` several tasks plus text into
one shuffled dataset (the multimodal demo's data); both write train, val and test splits and
record the held-out examples task metrics need (see `common`).

    build_task("clocks", "data/clocks", n=2000, seed=0, size=48)           # + 200 val, 200 test
    build_mix("kjv:0.3,clocks:2000,shapes:2000,fashion:5000,speech:1000", "data/mm",
              heldout={"fashion": 5000})                                    # others: 10 % of n
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnibyte.config import from_dict, parse_value, to_dict
from omnibyte.data.corpus import kjv_documents
from omnibyte.data.tasks.common import (
    ANSWER_PREFIX,
    HELDOUT_FILE,
    HELDOUT_SPLITS,
    TASKS_FILE,
    Example,
    read_heldout,
    read_tasks_info,
    split_seed,
    write_task_dataset,
)
from omnibyte.errors import OmnibyteError
from omnibyte.format import Document
from omnibyte.progress import progress as tqdm


@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str  # defines `examples(n, seed, cfg)` and the config dataclass below
    config: str
    help: str

    def load(self):
        return importlib.import_module(self.module)

    def make_config(self, opts: dict):
        return from_dict(getattr(self.load(), self.config), opts, prefix=self.name)

    def split_config(self, cfg, split: str):
        """The config of `split`'s examples: `cfg` for train, the module's `heldout_config` for val
        and test where it has one."""
        hook = getattr(self.load(), "heldout_config", None)
        return cfg if split == "train" or hook is None else hook(cfg, split)

    def split_examples(self, cfg, n: int, seed: int, split: str) -> Iterator[Example]:
        """Examples 0..n-1 of `split` for a dataset built with `seed`."""
        return self.load().examples(n, split_seed(seed, split), self.split_config(cfg, split))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("clocks", "omnibyte.data.tasks.clocks", "ClocksConfig", "analog clock face → HH:MM"),
    TaskSpec("shapes", "omnibyte.data.tasks.shapes", "ShapesConfig",
             "coloured shapes → how many <shape>? / point to the <colour> <shape>"),
    TaskSpec("fashion", "omnibyte.data.tasks.fashion", "FashionConfig",
             "Fashion-MNIST image → class name, and class name → image"),
    TaskSpec("speech", "omnibyte.data.tasks.speech", "SpeechConfig", "espeak-ng digits and phrases → transcript"),
    TaskSpec("completion", "omnibyte.data.tasks.completion", "CompletionConfig",
             "top half of an image → bottom half"),
)}
TEXT_CORPORA = ("kjv",)
DEFAULT_MIX = "kjv:0.3,clocks:2000,shapes:2000,fashion:5000,speech:1000"
DEFAULT_HELDOUT_SHARE = 0.1  # held-out examples per task in each of val and test: 10 % of its count
TEXT_HELDOUT_SHARE = 0.05  # of a text corpus's documents, held out in each of val and test
SPLITS = ("train", *HELDOUT_SPLITS)


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise OmnibyteError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]


def task_examples(name: str, n: int, seed: int = 0, **opts) -> Iterator[Example]:
    """Examples 0..n-1 of task `name` (options are its config fields, e.g. size=48)."""
    if n < 1:
        raise OmnibyteError(f"a task needs n ≥ 1 examples, got {n}")
    spec = get_task(name)
    return spec.load().examples(n, seed, spec.make_config(opts))


def _progress(it, desc: str, total: int, show: bool):
    return tqdm(it, desc=desc, total=total, unit="ex", file=sys.stderr, disable=not show, leave=False)


def heldout_counts(entries: list[tuple[str, float]], heldout: int | dict[str, int] | None) -> dict[str, int]:
    """Held-out examples per task in each of val and test: `heldout` (one count for every task, or
    {task: count}), else 10 % of the task's example count."""
    given = heldout if isinstance(heldout, dict) else {}
    unknown = set(given) - {name for name, _ in entries if name in TASKS}
    if unknown:
        raise OmnibyteError(f"held-out counts given for {', '.join(sorted(unknown))}, which the data does not hold")
    out = {}
    for name, amount in entries:
        if name not in TASKS:
            continue
        k = given.get(name, heldout if isinstance(heldout, int) else max(1, round(DEFAULT_HELDOUT_SHARE * amount)))
        if not isinstance(k, int) or k < 1:
            raise OmnibyteError(f"{name}: held-out examples per split must be a whole number ≥ 1, got {k!r}")
        out[name] = k
    return out


def build_task(name: str, out: str | Path, n: int = 2000, seed: int = 0, heldout: int | None = None,
               progress: bool = False, **opts) -> dict:
    """Write `n` examples of task `name` as a dataset at `out`, with `heldout` more in each of the
    val and test splits (default 10 % of n); returns meta."""
    get_task(name)
    if n < 1:
        raise OmnibyteError(f"a task needs n ≥ 1 examples, got {n}")
    return build_mix(f"{name}:{n}", out, seed=seed, heldout=heldout, task_opts={name: opts} if opts else None,
                     progress=progress)


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``"kjv:0.3,clocks:2000"`` → [("kjv", 0.3), ("clocks", 2000)].

    A task takes a whole example count. A text corpus takes a share of its documents when the
    number is ≤ 1, else a document count.
    """
    out: list[tuple[str, float]] = []
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        name, sep, amount = part.partition(":")
        name = name.strip()
        if not sep:
            raise OmnibyteError(f"mix entry {part!r} needs an amount: NAME:COUNT (tasks) or kjv:SHARE")
        try:
            value = float(amount)
        except ValueError:
            raise OmnibyteError(f"mix entry {part!r}: {amount!r} is not a number") from None
        if not math.isfinite(value):
            raise OmnibyteError(f"mix entry {part!r}: {amount!r} is not a finite number")
        if name in TEXT_CORPORA:
            if value <= 0 or (value > 1 and not value.is_integer()):
                raise OmnibyteError(f"mix entry {part!r}: a text share must be in (0, 1], or a whole document count")
        elif name in TASKS:
            if value < 1 or not value.is_integer():
                raise OmnibyteError(f"mix entry {part!r}: a task needs a whole number of examples ≥ 1")
        else:
            raise OmnibyteError(f"unknown mix entry {name!r} (tasks: {', '.join(TASKS)}; text: "
                                f"{', '.join(TEXT_CORPORA)})")
        if any(name == seen for seen, _ in out):
            raise OmnibyteError(f"mix names {name!r} twice")
        out.append((name, value))
    if not out:
        raise OmnibyteError("the mix is empty: give entries like clocks:2000,kjv:0.3")
    return out


def text_documents(name: str, amount: float, seed: int, split: str = "train",
                   complement: bool = False) -> list[Document]:
    """A seeded subset of a text corpus (document order kept). The val and test splits each hold
    `TEXT_HELDOUT_SHARE` of the corpus; train takes `amount` (a share ≤ 1 or a count) of the rest.
    With `complement`, the documents that train's subset leaves out (held-out text for a model
    trained on the mix)."""
    docs = list(kjv_documents())
    h = max(1, round(TEXT_HELDOUT_SHARE * len(docs)))
    order = np.random.default_rng([seed, 0x7E47]).permutation(len(docs))
    parts = {"test": order[:h], "val": order[h:2 * h], "train": order[2 * h:]}
    rest = parts["train"]
    k = round(amount * len(rest)) if amount <= 1 else int(amount)
    if k > len(rest):
        raise OmnibyteError(f"mix asks for {k} {name} documents, the corpus has {len(rest)} besides the "
                            f"{2 * h} held out")
    parts["train"] = rest[:max(k, 1)]
    keep = np.setdiff1d(order, parts["train"]) if complement else np.sort(parts[split])
    return [docs[i] for i in keep]


def build_mix(spec: str, out: str | Path, seed: int = 0, heldout: int | dict[str, int] | None = None,
              task_opts: dict[str, dict] | None = None, progress: bool = False) -> dict:
    """Several tasks and text corpora, shuffled together into one dataset at `out`; returns meta.

    The train split holds each entry's count of examples (a text corpus: its share of documents);
    val and test hold `heldout` examples of each task (`heldout_counts`) from seeds of their own,
    and `TEXT_HELDOUT_SHARE` of each text corpus. Each task's examples are the ones
    `build_task(name, ..., seed=seed)` would make, whatever else is in the mix, so mixes with and
    without text hold the same task examples, and a mix of text alone (``kjv:0.3``) the same text.
    """
    entries = parse_mix(spec)
    task_opts = dict(task_opts or {})
    unknown = set(task_opts) - {name for name, _ in entries}
    if unknown:
        raise OmnibyteError(f"options given for {', '.join(sorted(unknown))}, which the mix does not hold")
    held = heldout_counts(entries, heldout)
    configs = {name: get_task(name).make_config(task_opts.get(name, {})) for name, _ in entries if name in TASKS}
    for name, cfg in configs.items():  # bad held-out settings fail here, before any example is made
        for split in HELDOUT_SPLITS:
            get_task(name).split_config(cfg, split)
    info: dict = {"tasks": {}, "text": {}, "answer_prefix": ANSWER_PREFIX, "mix": spec}
    splits: dict[str, list] = {}
    for k, split in enumerate(SPLITS):
        items: list[tuple[str, Document | Example]] = []
        for name, amount in entries:
            if name in TEXT_CORPORA:
                docs = text_documents(name, amount, seed, split)
                items += [(name, d) for d in docs]
                info["text"].setdefault(name, {})[split] = len(docs)
                continue
            spec_ = get_task(name)
            n = int(amount) if split == "train" else held[name]
            examples = spec_.split_examples(configs[name], n, seed, split)
            items += [(name, ex) for ex in _progress(examples, f"{name} {split}", n, progress)]
            task = info["tasks"].setdefault(name, {"options": to_dict(configs[name])})
            task[split] = {"n": n, "seed": split_seed(seed, split)}
        order = np.random.default_rng([seed, 0x313, k]).permutation(len(items))
        splits[split] = [items[i] for i in order]
    sources = [f"{'text' if name in TEXT_CORPORA else 'task'}:{name}" for name, _ in entries]
    return write_task_dataset(splits, out, sources=sources, seed=seed, info=info)


def parse_heldout(text: str | None) -> int | dict[str, int] | None:
    """``--heldout``: ``"500"`` (every task) or ``"clocks:500,fashion:5000"`` (per task; the rest
    10 % of their count) → 500 or {task: count}."""
    if text is None:
        return None
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        pass
    out = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, sep, count = part.partition(":")
        if not sep or not count.strip().isdigit():
            raise OmnibyteError(f"--heldout entry {part!r} must look like TASK:COUNT (or give one count for all)")
        out[name.strip()] = int(count)
    return out


def parse_task_opts(items: list[str], tasks: list[str]) -> dict[str, dict]:
    """``["size=48", "speech.languages=['en','fr']"]`` → {task: {key: value}}.

    A key may name its task (``clocks.size=48``); an unqualified key needs exactly one task.
    Values are read as TOML values (numbers, booleans, lists), else as strings.
    """
    out: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise OmnibyteError(f"task option {item!r} must look like KEY=VALUE (or TASK.KEY=VALUE)")
        task, dot, field = key.rpartition(".")
        if not dot:
            if len(tasks) != 1:
                raise OmnibyteError(f"task option {item!r} must name its task (e.g. clocks.{key}=...) in a mix")
            task, field = tasks[0], key
        if task not in tasks:
            raise OmnibyteError(f"task option {item!r} names {task!r}, which is not being built")
        out.setdefault(task, {})[field] = parse_value(text)
    return out


def prepare_tasks(out: str | Path | None, task: str | None = None, mix: str | None = None, n: int = 2000,
                  seed: int = 0, heldout: str | None = None, options: list[str] = (),
                  progress: bool = True) -> str:
    """`omnibyte prepare --task NAME` / `--mix SPEC`: build, and return the summary line."""
    if (task is None) == (mix is None):
        raise OmnibyteError("give either --task NAME or --mix SPEC")
    if out is None:
        raise OmnibyteError("--out DIR is required with --task or --mix")
    if task is not None:
        get_task(task)
        if n < 1:
            raise OmnibyteError(f"a task needs n ≥ 1 examples, got {n}")
        mix = f"{task}:{n}"
    names = [name for name, _ in parse_mix(mix) if name in TASKS]
    meta = build_mix(mix, out, seed=seed, heldout=parse_heldout(heldout),
                     task_opts=parse_task_opts(list(options), names), progress=progress)
    return task_summary(meta, out)


def task_summary(meta: dict, out: str | Path) -> str:
    """One line after building: documents per split and held-out examples per task."""
    splits = meta["splits"]
    parts = [f"{name} {s['n_docs']:,} docs / {s['n_ids']:,} ids" for name, s in splits.items()]
    held = "; ".join(f"{split} " + ", ".join(f"{k} {v}" for k, v in counts.items())
                     for split, counts in meta.get("heldout", {}).items() if counts) or "none"
    return f"Built {out}: {', '.join(parts)}; held-out examples: {held}."


__all__ = ["ANSWER_PREFIX", "DEFAULT_MIX", "HELDOUT_FILE", "HELDOUT_SPLITS", "SPLITS", "TASKS", "TASKS_FILE",
           "TEXT_CORPORA", "Example", "TaskSpec", "build_mix", "build_task", "get_task", "heldout_counts",
           "parse_heldout", "parse_mix", "parse_task_opts", "prepare_tasks", "read_heldout", "read_tasks_info",
           "split_seed", "task_examples", "task_summary"]
