"""Multimodal evaluation: bits per byte per modality, and task metrics on held-out examples.

Per-modality bpb splits the bits-per-byte sums by what each target id belongs to, read from the
segment structure: an image block (BOI, header, pixels, EOI) is "image", an audio block is
"audio", everything else (text bytes, BOS, EOS) is "text". The modalities' bits and bytes add
up exactly to the totals of `bits_per_byte`.

Task evaluation reads a task dataset's held-out records (see `omnibyte.data.tasks.common`):

- text answers (clock, count, point, classify, transcribe): greedy decoding with the shared
  `generate` under `ModalityConstraint.text_only()`, up to the first newline, scored by the
  metric of the example's kind;
- image answers (draw, complete): bits per byte of the answer ids given the prompt, teacher
  forced; "draw" also under a prompt naming a wrong class, "complete" also by the pixel error of
  a greedy completion (decoded under `ModalityConstraint.from_prompt`, which finishes the block).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnibyte.checks import resolve_device
from omnibyte.data import ShardDataset, eval_batches
from omnibyte.data.modality import MODALITIES, MODALITY_AUX, LabelledDataset, modality_labels
from omnibyte.data.tasks.common import HELDOUT_FILE, read_heldout
from omnibyte.data.tasks.shapes import Shape
from omnibyte.errors import OmnibyteError
from omnibyte.eval import metrics
from omnibyte.format import (
    EOS,
    N_BYTES,
    PAD,
)
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.multimodal import ModalityConstraint
from omnibyte.models.base import OmniModel

TEXT_KINDS = ("clock", "count", "point", "classify", "transcribe")
IMAGE_KINDS = ("draw", "complete")
RECORD_KEYS = {"task", "kind", "start", "length", "answer_start"}

# ----------------------------------------------------------------------------- per-modality bpb


def modality_batches(dataset: ShardDataset | str | Path, split: str = "val", batch_size: int = 8,
                     seq_len: int = 1024, max_batches: int | None = None,
                     aux: Sequence[str] = ()) -> Iterator[dict[str, torch.Tensor]]:
    """`eval_batches` plus ``"modality"``: each window's labels, read from the whole stream."""
    ds = dataset if isinstance(dataset, ShardDataset) else ShardDataset(dataset)
    return eval_batches(LabelledDataset(ds), split, batch_size, seq_len, max_batches, aux=(*aux, MODALITY_AUX))


@torch.no_grad()
def bpb_by_modality(model, batches: Iterable[dict], extras: dict[str, str] | None = None,
                    autocast=contextlib.nullcontext) -> dict:
    """Bits per byte in total and per modality over batches of {"ids": (B, T+1), ...}.

    Labels come from batch["modality"] (`modality_batches`) or, when absent, from each window
    alone (`modality_labels`). Returns ``{"bpb", "bytes", "nll_bits", "modalities": {name:
    {"bpb", "bytes", "nll_bits"}}}``; a modality with no bytes has bpb NaN.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    bits = torch.zeros(len(MODALITIES), dtype=torch.float64)
    count = torch.zeros(len(MODALITIES), dtype=torch.int64)
    for batch in batches:
        ids = batch["ids"].to(device)
        if MODALITY_AUX in batch:
            labels = batch[MODALITY_AUX][:, 1:].round().long()
        else:
            labels = torch.from_numpy(np.stack([modality_labels(row) for row in batch["ids"].numpy()])[:, 1:]).long()
        kwargs = {k: batch[v][:, :-1].to(device) for k, v in (extras or {}).items()}
        with autocast():
            logits = model(ids[:, :-1], **kwargs).logits
        targets = ids[:, 1:]
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                              ignore_index=PAD, reduction="none").double().cpu() / math.log(2)
        targets, labels = targets.reshape(-1).cpu(), labels.reshape(-1)
        bits += torch.bincount(labels, weights=nll, minlength=len(MODALITIES))[:len(MODALITIES)]
        count += torch.bincount(labels[targets < N_BYTES], minlength=len(MODALITIES))[:len(MODALITIES)]
    model.train(was_training)
    per = {name: {"bpb": float(bits[i] / count[i]) if count[i] else float("nan"), "bytes": int(count[i]),
                  "nll_bits": float(bits[i])} for i, name in enumerate(MODALITIES)}
    total_bits, total_bytes = float(bits.sum()), int(count.sum())
    return {"bpb": total_bits / total_bytes if total_bytes else float("nan"), "bytes": total_bytes,
            "nll_bits": total_bits, "modalities": per}


def evaluate_by_modality(model: OmniModel, data: str | Path, split: str = "val", seq_len: int = 1024,
                         batch_size: int = 8, max_batches: int | None = None) -> dict:
    """Per-modality bpb of `model` on a prepared dataset's split (the model's own extras included)."""
    dataset = ShardDataset(data)
    extras = model.prepare_data(dataset)
    batches = modality_batches(dataset, split, batch_size, seq_len, max_batches, aux=tuple(extras.values()))
    return {**bpb_by_modality(model, batches, extras), "data": str(data), "split": split, "seq_len": seq_len}


def format_by_modality(result: dict) -> str:
    """One line per modality that has bytes: ``  image  3.2100 bits/byte over 12,345 bytes``."""
    return "\n".join(f"  {name:<6} {m['bpb']:.4f} bits/byte over {m['bytes']:,} bytes"
                     for name, m in result["modalities"].items() if m["bytes"])


# ----------------------------------------------------------------------------- task evaluation


@dataclass
class ExampleResult:
    """One held-out example after evaluation: its record, prompt ids and what the model did."""

    record: dict
    ids: list[int]  # the whole document, BOS ... EOS
    prediction: str | None = None  # text answers: what the model wrote (up to the newline)
    answer_bits: float | None = None  # image answers: bits of the answer ids given the prompt
    answer_bytes: int | None = None
    counterfactual_bits: float | None = None  # draw: the same image under a wrong class name
    completion: list[int] | None = None  # complete: generated bottom-half pixels
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.record["kind"]

    @property
    def prompt(self) -> list[int]:
        return self.ids[:self.record["answer_start"]]


def _load_model(model, device: str | None) -> OmniModel:
    if isinstance(model, OmniModel):
        return model
    device = resolve_device(device)
    return OmniModel.from_pretrained(model, map_location=device)


def _text_answer(new_ids: Sequence[int]) -> str:
    out = bytearray()
    for t in new_ids:
        if t >= N_BYTES or t == 0x0A:  # EOS (or anything special) or the newline ends the answer
            break
        out.append(t)
    return out.decode("utf-8", errors="replace")


def _length_groups(items: list, length, batch_size: int, max_gap: int = 64) -> Iterator[list]:
    """Items sorted by length, in batches whose lengths differ by at most `max_gap` (the shared
    decoding loop feeds a longer prompt one id per step while shorter rows already generate)."""
    items = sorted(items, key=length)
    group: list = []
    for it in items:
        if group and (len(group) == batch_size or length(it) - length(group[0]) > max_gap):
            yield group
            group = []
        group.append(it)
    if group:
        yield group


def answer_text(model, results: list[ExampleResult], batch_size: int = 8, max_new: int | None = None) -> None:
    """Fill `prediction` of text-answer results by greedy decoding, batched by prompt length."""
    if not results:
        return
    cap = max_new or max(len(r.record["answer"].encode()) for r in results) + 8
    cfg = SamplingConfig(max_new=cap, temperature=0.0)
    for group in _length_groups(results, lambda r: r.record["answer_start"], batch_size):
        outs = generate(model, [r.prompt for r in group], cfg,
                        constraints=[ModalityConstraint.text_only() for _ in group])
        for r, new in zip(group, outs):
            r.prediction = _text_answer(new)


@torch.no_grad()
def span_bits(model, seqs: list[tuple[list[int], int, int]], batch_size: int = 8) -> list[tuple[float, int]]:
    """For each (ids, start, end): (bits of ids[start:end] given ids[:start], bytes among them),
    teacher forced; sequences are padded with PAD, which earlier positions never see."""
    out: list[tuple[float, int] | None] = [None] * len(seqs)
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        width = max(len(seqs[i][0]) for i in idx)
        x = torch.full((len(idx), width), PAD, dtype=torch.long)
        for row, i in enumerate(idx):
            x[row, :len(seqs[i][0])] = torch.tensor(seqs[i][0])
        x = x.to(device)
        logits = model(x[:, :-1]).logits.float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), ignore_index=PAD,
                              reduction="none").view(len(idx), -1).cpu() / math.log(2)
        for row, i in enumerate(idx):
            ids, start, end = seqs[i]
            span = slice(start - 1, end - 1)  # logits[t] predicts ids[t + 1]
            out[i] = (float(nll[row, span].sum()), sum(1 for t in ids[start:end] if t < N_BYTES))
    return out


def answer_images(model, results: list[ExampleResult], batch_size: int = 8, complete: bool = True) -> None:
    """Fill the bits of image answers (and wrong-name bits for draw, greedy completions for complete)."""
    if not results:
        return
    seqs = [(r.ids, r.record["answer_start"], len(r.ids) - 1) for r in results]  # the answer stops before EOS
    for r, (bits, n) in zip(results, span_bits(model, seqs, batch_size)):
        r.answer_bits, r.answer_bytes = bits, n
    draws = [r for r in results if r.kind == "draw" and r.record.get("counterfactual")]
    if draws:
        alt = []
        for r in draws:
            cf = r.record["counterfactual"].encode()
            ids = [r.ids[0], *cf, *r.ids[r.record["answer_start"]:]]
            alt.append((ids, 1 + len(cf), len(ids) - 1))
        for r, (bits, _) in zip(draws, span_bits(model, alt, batch_size)):
            r.counterfactual_bits = bits
    fills = [r for r in results if r.kind == "complete"] if complete else []
    for group in _length_groups(fills, lambda r: r.record["answer_start"], batch_size):
        constraints = [ModalityConstraint.from_prompt(r.prompt, end_after_block=True) for r in group]
        cap = max(c.max_remaining() for c in constraints) + 1
        outs = generate(model, [r.prompt for r in group], SamplingConfig(max_new=cap, temperature=0.0),
                        constraints=constraints)
        for r, new in zip(group, outs):
            r.completion = [t for t in new if t < N_BYTES]


def has_task_records(path: str | Path) -> bool:
    """Does the dataset at `path` hold multimodal task records (not, e.g., CUTE's held-out words)?"""
    file = Path(path) / HELDOUT_FILE
    if not file.is_file():
        return False
    with open(file) as f:
        first = f.readline()
    try:
        return bool(first.strip()) and RECORD_KEYS <= set(json.loads(first))
    except ValueError:
        return False


def run_examples(model, task_dir: str | Path, task: str | None = None, n: int | None = None,
                 batch_size: int = 8, kinds: Sequence[str] | None = None, complete: bool = True) -> list[ExampleResult]:
    """Run the model on up to `n` held-out examples of each kind (of `task`, or of every task).

    The first n records of each kind in the val split are used, so runs compare like with like.
    """
    if not has_task_records(task_dir):
        raise OmnibyteError(f"{task_dir} holds no multimodal task examples (build it with `omnibyte prepare "
                            f"--task NAME` or `--mix SPEC`)")
    records = read_heldout(task_dir, task)
    if kinds is not None:
        records = [r for r in records if r["kind"] in kinds]
    if n is not None:
        if n < 1:
            raise OmnibyteError(f"--n must be ≥ 1, got {n}")
        seen: dict[str, int] = {}
        keep = []
        for r in records:
            if seen.get(r["kind"], 0) < n:
                seen[r["kind"]] = seen.get(r["kind"], 0) + 1
                keep.append(r)
        records = keep
    stream = ShardDataset(task_dir).stream("val")
    results = [ExampleResult(r, [int(t) for t in stream[r["start"]:r["start"] + r["length"]]]) for r in records]
    for res in results:
        if len(res.ids) != res.record["length"] or res.ids[-1] != EOS:
            raise OmnibyteError(f"{task_dir}: held-out record at {res.record['start']} does not match the val "
                                f"split; build the task dataset again")
    answer_text(model, [r for r in results if r.kind in TEXT_KINDS], batch_size)
    answer_images(model, [r for r in results if r.kind in IMAGE_KINDS], batch_size, complete)
    return results


def score_examples(results: list[ExampleResult]) -> dict[str, dict]:
    """Metrics per kind; each kind also reports a chance or baseline level next to the model's."""
    by_kind: dict[str, list[ExampleResult]] = {}
    for r in results:
        by_kind.setdefault(r.kind, []).append(r)
    out: dict[str, dict] = {}
    for kind, rs in by_kind.items():
        if kind in IMAGE_KINDS:
            out[kind] = _image_scores(kind, rs)
            continue
        refs = [r.record["answer"] for r in rs]
        preds = [r.prediction or "" for r in rs]
        if kind == "clock":
            out[kind] = metrics.clock_scores(refs, preds)
        elif kind == "count":
            out[kind] = metrics.count_scores([r.record["count"] for r in rs], preds)
        elif kind == "point":
            targets = [[Shape.from_dict(s) for s in r.record["targets"]] for r in rs]
            out[kind] = metrics.point_scores(targets, preds, [(r.record["width"], r.record["height"]) for r in rs])
        elif kind == "classify":
            out[kind] = {**metrics.accuracy(refs, preds), "chance": 0.1,
                         "majority": metrics.accuracy(refs, [metrics.majority_answer(refs)] * len(refs))["accuracy"]}
        elif kind == "transcribe":
            base = metrics.wer_cer(refs, [metrics.majority_answer(refs)] * len(refs))
            out[kind] = {**metrics.wer_cer(refs, preds), "majority_wer": base["wer"], "majority_cer": base["cer"]}
    return out


def _image_scores(kind: str, rs: list[ExampleResult]) -> dict:
    bits = sum(r.answer_bits for r in rs)
    n = sum(r.answer_bytes for r in rs)
    scores = {"bpb": bits / n if n else float("nan"), "bytes": n, "n": len(rs)}
    if kind == "draw":
        cf = [r for r in rs if r.counterfactual_bits is not None]
        if cf:
            scores["wrong_name_bpb"] = sum(r.counterfactual_bits for r in cf) / sum(r.answer_bytes for r in cf)
    done = [r for r in rs if r.completion is not None]
    if kind == "complete" and done:
        scores["mae"] = float(np.mean([metrics.pixel_mae(bytes(r.completion), bytes(truth_bottom(r)))
                                       for r in done]))
        scores["copy_row_mae"] = float(np.mean([metrics.pixel_mae(bytes(copy_last_row(r)), bytes(truth_bottom(r)))
                                                for r in done]))
    return scores


def truth_bottom(r: ExampleResult) -> list[int]:
    """The true missing pixels of a completion example."""
    rec = r.record
    n = (rec["height"] - rec["top_rows"]) * rec["width"] * rec["channels"]
    return r.ids[rec["answer_start"]:rec["answer_start"] + n]


def copy_last_row(r: ExampleResult) -> list[int]:
    """Baseline completion: the last given row repeated down the missing rows."""
    rec = r.record
    row = rec["width"] * rec["channels"]
    last = r.ids[rec["answer_start"] - row:rec["answer_start"]]
    return last * (rec["height"] - rec["top_rows"])


def evaluate_task(model, task_dir: str | Path, n: int | None = None, task: str | None = None,
                  batch_size: int = 8, device: str | None = None) -> dict:
    """Task metrics of `model` (an OmniModel, or a model/run directory) on a task dataset.

    Up to `n` held-out examples per kind (all by default) of `task` (every task in the dataset
    by default). Returns ``{"data", "task", "n", "metrics": {kind: {...}}}``.
    """
    model = _load_model(model, device)
    results = run_examples(model, task_dir, task, n, batch_size)
    return {"data": str(task_dir), "task": task or "all", "n": len(results),
            "metrics": json_safe(score_examples(results))}


def json_safe(obj):
    """NaN (a metric with nothing to average, e.g. the error of counts when none was readable) → None,
    so the result is valid JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def format_task_metrics(result: dict) -> str:
    """Readable lines: one per kind with the model's numbers and the chance/baseline ones."""
    lines = [f"{result['task']} on {result['data']}: {result['n']} held-out examples"]
    for kind, m in result["metrics"].items():
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {'–' if v is None else v}" for k, v in m.items()]
        lines.append(f"  {kind:<10} " + ", ".join(parts))
    return "\n".join(lines)


__all__ = ["MODALITIES", "ExampleResult", "bpb_by_modality", "evaluate_by_modality", "evaluate_task",
           "format_by_modality", "format_task_metrics", "has_task_records", "json_safe", "modality_batches",
           "modality_labels", "run_examples", "score_examples", "span_bits"]
