"""Generated task suites: deterministic multimodal datasets with held-out prompts and answers.

`TASKS` maps a task name to its spec (module with a config dataclass and
``examples(n, seed, cfg)``). `build_task` writes one task as a prepared dataset and
`build_mix` several tasks plus text into one shuffled dataset (the multimodal demo's data);
both record the held-out examples task metrics need (see `common`).

    build_task("clocks", "data/clocks", n=2000, seed=0, size=48)
    build_mix("kjv:0.3,clocks:2000,shapes:2000,fashion:5000,speech:1000", "data/mm")
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
    TASKS_FILE,
    Example,
    read_heldout,
    read_tasks_info,
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
DEFAULT_VAL_FRACTION = 0.1  # held-out examples are the metric's test set: 10 % of 2,000 is 200


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


def build_task(name: str, out: str | Path, n: int = 2000, seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION,
               progress: bool = False, **opts) -> dict:
    """Write `n` examples of task `name` as a dataset at `out`, val split held out; returns meta."""
    spec = get_task(name)
    cfg = spec.make_config(opts)
    if n < 1:
        raise OmnibyteError(f"a task needs n ≥ 1 examples, got {n}")
    items = ((name, ex) for ex in _progress(spec.load().examples(n, seed, cfg), name, n, progress))
    info = {"tasks": {name: {"n": n, "seed": seed, "options": to_dict(cfg)}}, "text": {},
            "answer_prefix": ANSWER_PREFIX}
    return write_task_dataset(items, out, sources=[f"task:{name}"], seed=seed, val_fraction=val_fraction, info=info)


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


def text_documents(name: str, amount: float, seed: int, complement: bool = False) -> list[Document]:
    """A seeded subset of a text corpus (document order kept); with `complement`, the documents
    that subset leaves out (held-out text for a model trained on the mix)."""
    docs = list(kjv_documents())
    k = round(amount * len(docs)) if amount <= 1 else int(amount)
    if k > len(docs):
        raise OmnibyteError(f"mix asks for {k} {name} documents, the corpus has {len(docs)}")
    order = np.random.default_rng([seed, 0x7E47]).permutation(len(docs))
    keep = np.sort(order[max(k, 1):] if complement else order[:max(k, 1)])
    return [docs[i] for i in keep]


def build_mix(spec: str, out: str | Path, seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION,
              task_opts: dict[str, dict] | None = None, progress: bool = False) -> dict:
    """Several tasks and text corpora, shuffled together into one dataset at `out`; returns meta.

    Each task's examples are the ones `build_task(name, ..., seed=seed)` would make, whatever
    else is in the mix, so mixes with and without text hold the same task examples.
    """
    entries = parse_mix(spec)
    task_opts = dict(task_opts or {})
    unknown = set(task_opts) - {name for name, _ in entries}
    if unknown:
        raise OmnibyteError(f"options given for {', '.join(sorted(unknown))}, which the mix does not hold")
    items: list[tuple[str, Document | Example]] = []
    info: dict = {"tasks": {}, "text": {}, "answer_prefix": ANSWER_PREFIX, "mix": spec}
    for name, amount in entries:
        if name in TEXT_CORPORA:
            docs = text_documents(name, amount, seed)
            items += [(name, d) for d in docs]
            info["text"][name] = len(docs)
            continue
        taskspec = get_task(name)
        cfg = taskspec.make_config(task_opts.get(name, {}))
        n = int(amount)
        items += [(name, ex) for ex in _progress(taskspec.load().examples(n, seed, cfg), name, n, progress)]
        info["tasks"][name] = {"n": n, "seed": seed, "options": to_dict(cfg)}
    order = np.random.default_rng([seed, 0x313]).permutation(len(items))
    sources = [f"{'text' if name in TEXT_CORPORA else 'task'}:{name}" for name, _ in entries]
    return write_task_dataset((items[i] for i in order), out, sources=sources, seed=seed,
                              val_fraction=val_fraction, info=info)


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
                  seed: int = 0, val_fraction: float | None = None, options: list[str] = (),
                  progress: bool = True) -> str:
    """`omnibyte prepare --task NAME` / `--mix SPEC`: build, and return the summary line."""
    if (task is None) == (mix is None):
        raise OmnibyteError("give either --task NAME or --mix SPEC")
    if out is None:
        raise OmnibyteError("--out DIR is required with --task or --mix")
    val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    if task is not None:
        opts = parse_task_opts(list(options), [get_task(task).name]).get(task, {})
        meta = build_task(task, out, n=n, seed=seed, val_fraction=val_fraction, progress=progress, **opts)
    else:
        names = [name for name, _ in parse_mix(mix) if name in TASKS]
        meta = build_mix(mix, out, seed=seed, val_fraction=val_fraction,
                         task_opts=parse_task_opts(list(options), names), progress=progress)
    return task_summary(meta, out)


def task_summary(meta: dict, out: str | Path) -> str:
    """One line after building: documents per split and held-out examples per task."""
    splits = meta["splits"]
    held = ", ".join(f"{k} {v}" for k, v in meta.get("heldout", {}).items()) or "none"
    return (f"Built {out}: train {splits['train']['n_docs']:,} docs / {splits['train']['n_ids']:,} ids, "
            f"val {splits['val']['n_docs']:,} docs / {splits['val']['n_ids']:,} ids; held-out examples: {held}.")


__all__ = ["ANSWER_PREFIX", "DEFAULT_MIX", "HELDOUT_FILE", "TASKS", "TASKS_FILE", "TEXT_CORPORA", "Example",
           "TaskSpec", "build_mix", "build_task", "get_task", "parse_mix", "parse_task_opts", "prepare_tasks",
           "read_heldout", "read_tasks_info", "task_examples", "task_summary"]
