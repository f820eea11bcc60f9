"""The end of `make multimodal`: score one trained model of the one-model recipe (issue 22) on the
held-out TEST split, judge its drawings, train and score the text-only baseline at equal text
bytes, and write the report page and a results section.

    .venv/bin/python -m benchmarks.multimodal_run --steps-for 120 configs/multimodal-cpu.toml
    .venv/bin/python -m benchmarks.multimodal_run runs/mm-cpu-s0 --text-data data/mm-text
    .venv/bin/python -m benchmarks.multimodal_run --combine runs/mm-cpu-s0 runs/mm-cpu-s1

For one run it
1. answers every held-out example of the split (test by default; --split val while choosing a
   recipe) and draws an image for the first --draws drawing prompts, which the benchmark's own
   classifier (benchmarks/fashion_judge.py, not the model under test) labels;
2. scores the model's bits per byte on the split's KJV chapters (--text-data: the mix's text alone,
   `omnibyte prepare --mix kjv:SHARE`, which holds the very same chapters);
3. trains the text-only baseline beside the run (RUN-text: the run's config on --text-data, for as
   many steps as carry the KJV bytes the run trained on) unless it is there, and scores it the same;
4. writes RUN/report (`omnibyte report` with every example's results, the drawings and the targets
   table first), RUN/results.json, and the section "one-model-RUN" of results_multimodal.md.
`--combine` puts the targets of several finished runs (seeds) side by side: mean and each value.
`--steps-for MINUTES CONFIG` prints the steps that fill MINUTES of training with CONFIG on this
machine, from a probe of a few steps (`make multimodal` runs it once and gives both seeds its count).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import HERE, header, metrics, steps_for_minutes, train_run, write_section
from benchmarks.fashion_judge import judge, load_judge
from omnibyte.data import BatchLoader, ShardDataset, is_dataset
from omnibyte.eval.multimodal import first_image, json_safe, judge_draws, run_examples, score_examples
from omnibyte.eval.report import esc, table, write_report
from omnibyte.eval.runner import evaluate_model, run_settings
from omnibyte.format import BOA, BOI, BOS, N_BYTES
from omnibyte.models.base import OmniModel
from omnibyte.train import load_run_config

RESULTS = HERE / "results_multimodal.md"
# (label, kind, metric, "≥" or "≤", target): issue 22's table; KJV text is compared with the baseline
TARGETS = (
    ("Fashion-MNIST classification", "classify", "accuracy", "≥", 0.85),
    ("spoken digits and phrases, English: CER", "transcribe", "cer_en", "≤", 0.10),
    ("spoken digits and phrases, French: CER", "transcribe", "cer_fr", "≤", 0.15),
    ("clock hour", "clock", "hour", "≥", 0.60),
    ("clock time within ±3 min", "clock", "within", "≥", 0.30),
    ("count (40 × 40, 1–6 shapes)", "count", "accuracy", "≥", 0.70),
    ("point (Molmo format): F1", "point", "f1", "≥", 0.50),
    ("draw a class: share the judge labels as asked", "draw", "judged", "≥", 0.60),
)
BASELINE_OF = {("count", "accuracy"): "chance", ("classify", "accuracy"): "majority",
               ("transcribe", "cer_en"): "majority_cer_en", ("transcribe", "cer_fr"): "majority_cer_fr",
               ("clock", "hour"): "chance_hour", ("clock", "within"): "chance_within",
               ("draw", "judged"): "chance_judged"}
TEXT_TARGET = 1.05  # the model's KJV bits per byte at most 5% above the text-only model's


# ----------------------------------------------------------------------------- training facts


# a logged window slower than this share of the run's median rate was a pause (the process stopped
# or starved by another job), not training: it is counted at the median rate
PAUSED = 0.1


def training_facts(run: Path) -> dict:
    """Steps, training minutes (the logged throughput: evaluation left out; a paused window at the
    run's median rate), the minutes as logged, the paused windows, and FLOPs of a finished run."""
    rows = [r for r in metrics(run) if "loss" in r and r.get("bytes_per_s")]
    settings = run_settings(run)["train"]
    per_step = settings["batch_size"] * settings["seq_len"] * settings.get("grad_accum", 1)
    median = statistics.median(r["bytes_per_s"] for r in rows) if rows else 0.0
    seconds = logged = 0.0
    last, paused = 0, []
    for r in rows:
        work = (r["step"] - last) * per_step
        logged += work / r["bytes_per_s"]
        if r["bytes_per_s"] < PAUSED * median:
            paused.append({"step": r["step"], "seconds": work / r["bytes_per_s"]})
            seconds += work / median
        else:
            seconds += work / r["bytes_per_s"]
        last = r["step"]
    return {"steps": last, "train_minutes": seconds / 60, "logged_minutes": logged / 60, "paused": paused,
            "flops": rows[-1]["flops"] if rows else 0.0}


def text_bytes_seen(run: Path) -> int:
    """KJV bytes (ids < 256 of the documents without a media block) in the windows the run trained on,
    replayed from its loader: the text the text-only baseline gets as much of."""
    settings = run_settings(run)
    tc = settings["train"]
    dataset = ShardDataset(settings["data"]["path"])
    loader = BatchLoader(dataset, "train", tc["batch_size"], tc["seq_len"], tc["seed"],
                         align_docs=tc.get("align_docs", False))
    if loader.windows is None:
        raise SystemExit("error: the text bytes of a run are counted in whole-document windows (train.align_docs)")
    ids = np.asarray(loader.stream)
    starts = np.flatnonzero(ids == BOS)
    ends = np.append(starts[1:], len(ids))
    text_docs = {}
    for a, b in zip(starts.tolist(), ends.tolist()):
        doc = ids[a:b]
        if not np.isin(doc, (BOI, BOA)).any():
            text_docs[a] = int((doc < N_BYTES).sum())
    per_window = np.array([sum(text_docs.get(s, 0) for s, _ in w) for w in loader.windows])
    steps = training_facts(run)["steps"]
    total = 0
    for step in range(steps):
        first = step * tc["batch_size"]
        for p in range(first, first + tc["batch_size"]):
            total += int(per_window[loader._perm(p // loader.n_windows)[p % loader.n_windows]])
    return total


def train_baseline(run: Path, text_data: Path, text_bytes: int) -> Path:
    """The text-only model: the run's config on the mix's text alone, packed windows, for as many steps
    as carry `text_bytes` (the same schedule shape), unless RUN-text already holds it."""
    out = run.parent / f"{run.name}-text"
    if (out / "checkpoint").is_dir():
        return out
    settings = run_settings(run)
    tc = settings["train"]
    steps = max(1, math.ceil(text_bytes / (tc["batch_size"] * tc["seq_len"])))
    train = {**tc, "steps": steps, "warmup_steps": max(1, round(tc["warmup_steps"] * steps / max(1, tc["steps"]))),
             "align_docs": False, "prompt_loss_weight": 1.0, "media_loss_weight": 1.0, "task_eval_every": 0,
             "eval_every": 0, "save_every": 0}
    print(f"training the text-only baseline: {steps} steps ({text_bytes:,} KJV bytes) → {out}", flush=True)
    train_run({"model": settings["model"], "data": {"path": str(text_data)}, "train": train}, out, quiet=False)
    return out


# ----------------------------------------------------------------------------- scoring one run


def score_run(args) -> dict:
    run = args.run
    settings = run_settings(run)
    data = Path(settings["data"]["path"])
    model = OmniModel.from_pretrained(run).eval()
    t0 = time.perf_counter()
    print(f"answering the {args.split} examples of {data} ...", flush=True)
    results = run_examples(model, data, n=args.limit, split=args.split, draws=args.draws,
                           draw_temperature=args.temperature, seed=0)
    net, judge_info = load_judge(images_limit=args.judge_images)
    judge_draws(results, lambda segs: judge(net, segs))
    drawn = [r for r in results if r.drawn is not None]
    truth = judge(net, [first_image(r.ids) for r in drawn]) if drawn else []
    scores = score_examples(results)
    if drawn:  # the judge on the very images the prompts came with: the ceiling a drawing can reach
        scores["draw"]["judged_real"] = float(np.mean([t == r.record["label"] for t, r in zip(truth, drawn)]))
    answer_s = time.perf_counter() - t0
    text = {"model": evaluate_model(run, data=str(args.text_data), split=args.split)["bpb"]}
    baseline = train_baseline(run, args.text_data, text_bytes_seen(run))
    text["baseline"] = evaluate_model(baseline, data=str(args.text_data), split=args.split)["bpb"]
    text["baseline_steps"] = training_facts(baseline)["steps"]
    text["ratio"] = text["model"] / text["baseline"]
    facts = training_facts(run)
    result = {"run": str(run), "split": args.split, "data": str(data), "text_data": str(args.text_data),
              "training": facts, "scores": scores, "text": text, "judge": judge_info, "draws": len(drawn),
              "draw_temperature": args.temperature, "answer_minutes": answer_s / 60}
    targets = targets_table(result)
    page = write_report(run, args.report or run / "report", split=args.split, results=results, n=args.show,
                        sections=[("targets", f"Targets of issue 22 ({args.split} split)", targets_html(targets))])
    result["report"] = str(page)
    result["targets"] = targets
    (run / f"results-{args.split}.json").write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return result


def targets_table(result: dict) -> list[dict]:
    """One row per target: measured value, baseline, target, met."""
    rows = []
    for label, kind, metric, op, target in TARGETS:
        m = result["scores"].get(kind, {})
        value = m.get(metric)
        base = m.get(BASELINE_OF.get((kind, metric), ""))
        met = value is not None and (value >= target if op == "≥" else value <= target)
        rows.append({"label": label, "kind": kind, "metric": metric, "value": value, "baseline": base,
                     "op": op, "threshold": target, "met": met})
    text = result["text"]
    rows.append({"label": f"KJV {result['split']} text: bits per byte, as a multiple of the text-only model's",
                 "kind": "text", "metric": "ratio", "value": text["ratio"], "baseline": 1.0, "op": "≤",
                 "threshold": TEXT_TARGET, "met": text["ratio"] <= TEXT_TARGET})
    return rows


def target(row: dict) -> str:
    return f"{row['op']} {fmt(row['threshold'], is_share(row))}"


def fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}"


def is_share(row: dict) -> bool:
    return row["metric"] in ("accuracy", "hour", "within", "judged") or row["metric"].startswith("cer")


def targets_html(rows: list[dict]) -> str:
    body = [[esc(r["label"]), f"<b>{fmt(r['value'], is_share(r))}</b>", fmt(r["baseline"], is_share(r)),
             esc(target(r)), "<span class='ok'>met</span>" if r["met"] else "<span class='bad'>missed</span>"]
            for r in rows]
    return table(["task", "measured", "chance / baseline", "target", ""], body)


# ----------------------------------------------------------------------------- results sections


def run_section(args, result: dict) -> list[str]:
    facts = result["training"]
    settings = run_settings(args.run)
    lines = header(f"One model for every task: {args.run.name} ({result['split']} split)", [
        f"run: `{args.run}` ({facts['steps']} steps, {facts['train_minutes']:.1f} minutes of training by its "
        f"logged throughput{paused_note(facts)}, {facts['flops']:.3g} training FLOPs, "
        f"seed {settings['train']['seed']})",
        f"data: `{result['data']}`; every held-out {result['split']} example answered, the first {result['draws']} "
        f"drawing prompts drawn at temperature {result['draw_temperature']:g} and judged by "
        f"benchmarks/fashion_judge.py ({100 * result['judge']['test_accuracy']:.1f}% on the official test images)",
        f"answering took {result['answer_minutes']:.1f} minutes; report page: `{result['report']}`"])
    lines += ["| task | measured | chance / baseline | target | |", "| --- | ---: | ---: | --- | --- |"]
    for r in result["targets"]:
        pct = is_share(r)
        lines.append(f"| {r['label']} | **{fmt(r['value'], pct)}** | {fmt(r['baseline'], pct)} | {target(r)} | "
                     f"{'met' if r['met'] else 'missed'} |")
    text = result["text"]
    lines += ["", f"KJV {result['split']} text: {text['model']:.4f} bits per byte against {text['baseline']:.4f} for "
              f"the text-only model trained on as many KJV bytes ({text['baseline_steps']} steps).",
              "", "Every metric:", "", "| kind | metric | value |", "| --- | --- | ---: |"]
    for kind, m in result["scores"].items():
        for k, v in m.items():
            lines.append(f"| {kind} | {k} | {fmt(v) if not isinstance(v, int) else v} |")
    return lines


def paused_note(facts: dict) -> str:
    if not facts.get("paused"):
        return ""
    windows = ", ".join(f"{p['seconds'] / 60:.0f} min up to step {p['step']}" for p in facts["paused"])
    return (f" ({facts['logged_minutes']:.1f} as logged, with {len(facts['paused'])} window(s) where the process was "
            f"paused, below a tenth of its median rate ({windows}), counted at the median rate)")


def combine(paths: list[Path], split: str) -> list[str]:
    """The targets of several runs (seeds) side by side: mean and each value."""
    results = [json.loads((p / f"results-{split}.json").read_text()) for p in paths]
    lines = header(f"One model for every task: {len(paths)} seeds ({split} split)", [
        "runs: " + ", ".join(f"`{r['run']}` ({r['training']['steps']} steps, {r['training']['train_minutes']:.1f} min)"
                             for r in results)])
    lines += ["| task | target | mean | " + " | ".join(Path(r["run"]).name for r in results) + " | met by the mean |",
              "| --- | --- | ---: | " + " | ".join("---:" for _ in results) + " | --- |"]
    for i, row in enumerate(results[0]["targets"]):
        values = [r["targets"][i]["value"] for r in results]
        pct = is_share(row)
        mean = statistics.mean(values) if all(v is not None for v in values) else None
        met = mean is not None and (mean >= row["threshold"] if row["op"] == "≥" else mean <= row["threshold"])
        lines.append(f"| {row['label']} | {target(row)} | **{fmt(mean, pct)}** | "
                     + " | ".join(fmt(v, pct) for v in values) + f" | {'met' if met else 'missed'} |")
    return lines


def probe_steps(config: Path, minutes: float, data: Path | None = None) -> int:
    """Steps of `config` (on `data` when given) that fill `minutes` of training here (a probe of 8
    steps, evaluation off)."""
    raw = load_run_config(config).to_dict()
    raw["train"] = {**raw["train"], "task_eval_every": 0}
    if data is not None:
        raw["data"] = {**raw["data"], "path": str(data)}
    steps, rate = steps_for_minutes(raw, HERE / "out" / "steps-probe", minutes)
    print(f"{rate:,.0f} ids/s: {steps} steps in {minutes:g} minutes", file=sys.stderr)
    return steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, nargs="?", help="a finished run of configs/multimodal-cpu.toml (or the GPU one)")
    ap.add_argument("--text-data", type=Path, help="the mix's text alone (omnibyte prepare --mix kjv:SHARE)")
    ap.add_argument("--split", default="test", choices=("val", "test"), help="test (the final figures) or val")
    ap.add_argument("--limit", type=int, help="answer only the first N examples of each kind (default: all)")
    ap.add_argument("--draws", type=int, default=200, help="drawing prompts drawn and judged (default 200)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the drawings")
    ap.add_argument("--show", type=int, default=8, help="examples of each kind shown on the report page")
    ap.add_argument("--report", type=Path, help="report folder (default RUN/report)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--combine", type=Path, nargs="+", metavar="RUN", help="put these finished runs side by side")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the results file a section goes into")
    ap.add_argument("--steps-for", type=float, metavar="MINUTES", help="print the steps of RUN (a config file here) "
                    "that fill MINUTES of training on this machine")
    ap.add_argument("--data", type=Path,
                    help="with --steps-for: the dataset the probe trains on (default: the config's)")
    ap.add_argument("--section-only", action="store_true", help="write RUN's results section again from its "
                    "results-SPLIT.json, its training minutes recounted (nothing is answered again)")
    ap.add_argument("--judge-images", type=int, help="train the drawing judge on the first N Fashion-MNIST training "
                    "images only, cached apart from the full judge (a smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.combine:
        lines = combine(args.combine, args.split)
        print("\n".join(lines))
        write_section(args.results, f"one-model-{args.split}-seeds", lines, "Multimodal benchmarks")
        return 0
    if args.steps_for:
        if args.run is None or not args.run.is_file():
            ap.error("--steps-for needs a config file")
        print(probe_steps(args.run, args.steps_for, args.data))
        return 0
    if args.run is None or args.text_data is None:
        ap.error("give RUN and --text-data (or --combine RUN RUN ...)")
    if not (args.run / "run.json").is_file() or not (args.run / "checkpoint").is_dir():
        ap.error(f"{args.run} is not a finished run (no run.json and checkpoint/)")
    if not is_dataset(args.text_data):
        ap.error(f"{args.text_data} is not a prepared dataset (make it with `omnibyte prepare --mix kjv:SHARE`)")
    if args.section_only:
        saved = args.run / f"results-{args.split}.json"
        if not saved.is_file():
            ap.error(f"{saved} does not exist: score the run first")
        result = {**json.loads(saved.read_text()), "training": training_facts(args.run)}
        saved.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    else:
        result = score_run(args)
    lines = run_section(args, result)
    print("\n".join(lines))
    write_section(args.results, f"one-model-{args.split}-{args.run.name}", lines, "Multimodal benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
