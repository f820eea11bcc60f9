"""What every generated task shares: one prompt/answer layout, examples, and writing a task dataset.

Layout of a task document (question first, so a causal model reads the image or clip knowing
what it will be asked about)::

    BOS "How many circles are there?\\n" [image] "Answer: 3\\n" EOS
    BOS "Draw a sneaker.\\n" [image] EOS                       (the answer is the image block)
    BOS "Complete the image.\\n" [image: top half | bottom half] EOS  (the answer is the bottom half)

An `Example` is the document plus `answer_start`, the index (counting BOS) of the first id a
model must produce, and `meta`: JSON-able facts the metric needs (``kind``, the reference
``answer``, geometry for points, ...). Every example is a pure function of (task, seed, index).

A question about an image may be followed by more questions about the same image, each with its
answer (``[image] q1 Answer: a1 q2 Answer: a2 ...``), as vision-language training data asks
several questions per picture: one image then teaches several answers for little more than the
cost of reading it once. `prompts` lists the later questions' spans, which are prompt (weight 0
under `train.prompt_loss_weight`) like the first; metrics score the first answer only, whose
prompt is the same as without the follow-ups.

A task dataset is an ordinary prepared dataset (`omnibyte.data.write_dataset`) plus:

    tasks.json      what was built: each task's example count, seed and options
    heldout.jsonl   one line per val-split document that came from a task: ``task``, ``kind``,
                    ``start`` (offset of its BOS in the val stream), ``length`` (ids),
                    ``answer_start`` and the example's meta
    {split}.answer.bin  aux array ``answer`` (one value per id): 0 on a task example's prompt
                    (BOS through the answer prefix), 1 on its answer and on plain documents —
                    what `train.prompt_loss_weight` reads

The val split *is* the held-out set: the trainer never trains on it, and task metrics read
the prompts straight from its stream.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omnibyte.data.loader import ShardDataset
from omnibyte.data.modality import ANSWER_AUX
from omnibyte.data.prepare import document_array, write_dataset
from omnibyte.errors import OmnibyteError
from omnibyte.files import write_atomic, write_json_atomic
from omnibyte.format import BOS, EOS, Document, Segment, TextSegment

ANSWER_PREFIX = "Answer: "
HELDOUT_FILE = "heldout.jsonl"
TASKS_FILE = "tasks.json"


@dataclass
class Example:
    segments: list[Segment]
    answer_start: int  # ids from BOS (included) before the first id the model must produce
    meta: dict = field(default_factory=dict)  # "kind", "answer" and whatever the metric needs
    prompts: list[tuple[int, int]] = field(default_factory=list)  # later questions' [start, end) from BOS

    def document(self) -> Document:
        return Document(list(self.segments))


def example_rng(task: str, seed: int, index: int) -> np.random.Generator:
    """The random stream of example `index`: the same whatever the example count or the mix."""
    return np.random.default_rng([zlib.crc32(task.encode()), seed, index])


def qa_example(question: str, media: Segment, answer: str, kind: str, question_last: bool = False,
               more: Sequence[tuple[str, str]] = (), **meta) -> Example:
    """``question\\n [media] Answer: answer\\n`` — a text answer about an image or a clip; with
    `question_last`, ``[media] question\\n Answer: answer\\n`` (the question right before the answer).
    `more` (question, answer) pairs follow as ``question\\n Answer: answer\\n`` each."""
    q = TextSegment.from_str(question + "\n")
    prefix = ANSWER_PREFIX.encode()
    segs = [media, q] if question_last else [q, media]
    at = 1 + len(q.data) + len(media.ids())  # where the text after the question and media begins
    start = at + len(prefix)
    tail = prefix + answer.encode() + b"\n"
    prompts = []
    for q2, a2 in more:
        begin = at + len(tail)
        tail += q2.encode() + b"\n" + prefix
        prompts.append((begin, at + len(tail)))
        tail += a2.encode() + b"\n"
    segs.append(TextSegment(tail))
    return Example(segs, start, {"kind": kind, "answer": answer, **meta}, prompts)


def media_example(prompt: str, media: Segment, kind: str, answer_offset: int = 0, **meta) -> Example:
    """``prompt\\n [media]`` — the media block is the answer, from `answer_offset` ids into it
    (0: the whole block from its opening marker)."""
    p = TextSegment.from_str(prompt + "\n")
    return Example([p, media], 1 + len(p.data) + answer_offset, {"kind": kind, "prompt": prompt + "\n", **meta})


# ----------------------------------------------------------------------------- writing


def _doc_key(doc_ids: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(doc_ids, dtype=np.uint16).tobytes()).digest()


def write_task_dataset(items: Iterable[tuple[str, Document | Example]], out: str | Path, *, sources: list[str],
                       seed: int, val_fraction: float, info: dict) -> dict:
    """Write (task name, document or example) pairs as a dataset plus tasks.json and heldout.jsonl.

    Plain documents (text corpora in a mix) are trained on and scored for bits per byte but get
    no held-out record. Returns the dataset's meta with ``heldout`` (records per task) added.
    """
    records: dict[bytes, dict] = {}

    def documents() -> Iterator[Document]:
        for task, item in items:
            if isinstance(item, Example):
                doc = item.document()
                records[_doc_key(document_array(doc))] = {"task": task, "answer_start": item.answer_start,
                                                          **item.meta,
                                                          **({"prompts": item.prompts} if item.prompts else {})}
                yield doc
            else:
                yield item

    meta = write_dataset(documents(), out, sources=sources, seed=seed, val_fraction=val_fraction)
    out = Path(out)
    dataset = ShardDataset(out)
    heldout = []
    for split, split_meta in meta["splits"].items():
        if not split_meta["n_ids"]:
            continue
        stream = np.asarray(dataset.stream(split))
        answer = np.ones(len(stream), np.float16)  # see ANSWER_AUX
        starts, ends = np.flatnonzero(stream == BOS), np.flatnonzero(stream == EOS)
        for s, e in zip(starts, ends):
            rec = records.get(_doc_key(stream[s:e + 1]))
            if rec is None:
                continue
            answer[s:s + rec["answer_start"]] = 0
            for a, b in rec.get("prompts", ()):
                answer[s + a:s + b] = 0
            if split == "val":
                heldout.append({"task": rec["task"], "kind": rec["kind"], "start": int(s), "length": int(e + 1 - s),
                                **{k: v for k, v in rec.items() if k not in ("task", "kind")}})
        dataset.write_aux(split, ANSWER_AUX, answer)
    write_atomic(out / HELDOUT_FILE, lambda f: f.write("".join(json.dumps(r) + "\n" for r in heldout).encode()))
    counts: dict[str, int] = {}
    for r in heldout:
        counts[r["task"]] = counts.get(r["task"], 0) + 1
    write_json_atomic(out / TASKS_FILE, {**info, "heldout": counts})
    return {**dataset.meta, "heldout": counts}


def read_heldout(path: str | Path, task: str | None = None) -> list[dict]:
    """Held-out records of the task dataset at `path` (only `task`'s when given)."""
    file = Path(path) / HELDOUT_FILE
    if not file.is_file():
        raise OmnibyteError(f"{path} has no {HELDOUT_FILE}: it is not a task dataset "
                            f"(build one with `omnibyte prepare --task NAME --out DIR`)")
    try:
        records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise OmnibyteError(f"{file} is corrupt: {e}") from None
    if task is not None:
        have = sorted({r["task"] for r in records})
        records = [r for r in records if r["task"] == task]
        if not records:
            raise OmnibyteError(f"{path} has no held-out examples of task {task!r} (has: {', '.join(have) or 'none'})")
    return records


def read_tasks_info(path: str | Path) -> dict:
    file = Path(path) / TASKS_FILE
    if not file.is_file():
        return {}
    return json.loads(file.read_text())
