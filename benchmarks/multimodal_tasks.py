"""The multimodal demo on a CPU budget: task metrics against chance, bits per byte per modality,
and the early-fusion question — do image and audio bytes get easier or harder to predict when
text shares the training mix (at equal training FLOPs)?

    .venv/bin/python -m benchmarks.multimodal_tasks            # full: ~2 h on a 2-core CPU, writes
                                                                # benchmarks/results_multimodal.md
    .venv/bin/python -m benchmarks.multimodal_tasks --quick    # smoke run, ~2 min: tiny everything

Steps:
1. Two training mixes built with `build_mix` from the same seed: *with text* (KJV + tasks) and
   *without text* (the same task examples alone; `build_mix` makes a task's examples independent
   of the rest of the mix). The demo's mix with more Fashion-MNIST classification
   (kjv:0.3,clocks:2000,shapes:2000,fashion:8000 with 30 % drawing,speech:1000) and smaller media
   so whole documents fit a CPU-sized window: clocks and shapes 24×24 RGB, speech one digit or
   phrase at 4 kHz; every question after its image or clip, right before the answer.
2. A separate evaluation set: new task examples (seed + 1, Fashion-MNIST's *test* images), 90 %
   held out, so neither model has seen any of it.
3. One BLT (configs/multimodal-tiny.toml's shape, wider) trained on each mix with the same
   model, batch and number of steps — so the same FLOPs. The full run first times a few steps
   and sets the step count so that each run takes `--minutes`. Recipe for a task mix: windows
   hold whole documents (`train.align_docs`), task examples are learned from their answers only
   (`train.prompt_loss_weight` 0: the question and input image/clip weigh 0), and image/audio
   targets (the images draw tasks ask for) weigh 0.1 (`train.media_loss_weight`);
   `--prompt-loss-weight 1 --media-loss-weight 1` gives the plain objective.
4. Both models scored on the evaluation set: bits per byte of its image and audio bytes, of KJV
   chapters neither mix holds (text), and every task metric next to its chance level.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from benchmarks.common import HERE, header, steps_for_minutes, train_run, write_section
from omnibyte.config import merge
from omnibyte.data import write_dataset
from omnibyte.data.tasks import build_mix, parse_mix, text_documents
from omnibyte.data.tasks.fashion import DEFAULT_ROOT
from omnibyte.data.tasks.speech import espeak_available
from omnibyte.eval.multimodal import evaluate_by_modality, json_safe, run_examples, score_examples
from omnibyte.models import compat
from omnibyte.models.base import OmniModel

RESULTS = HERE / "results_multimodal.md"
BLT = {"arch": "blt", "cross_attn_k": 2, "patcher": {"kind": "static", "patch_size": 4}}
FULL = {
    "text": "kjv:0.3", "tasks": "clocks:2000,shapes:2000,fashion:8000,speech:1000",
    "eval_tasks": "clocks:300,shapes:300,fashion:300,speech:150",
    "task_opts": {"clocks": {"size": 24, "question_last": True},
                  "shapes": {"size": 24, "max_shapes": 4, "question_last": True},
                  "fashion": {"draw": 0.3, "question_last": True},
                  "speech": {"sample_rate": 4000, "max_digits": 1, "question_last": True}},
    "model": {**BLT, "encoder": {"dim": 64, "n_layers": 1, "n_heads": 2, "window": 128},
              "latent": {"dim": 192, "n_layers": 4, "n_heads": 6},
              "decoder": {"dim": 64, "n_layers": 2, "n_heads": 2, "window": 128}, "ngrams": {"buckets": 4096}},
    # whole documents per window (an example's image and answer are never cut apart); task examples
    # learn their answers only (the question and input image/clip weigh 0), and the images that draw
    # tasks ask for weigh a tenth of a text id, so the short answers are not drowned by pixels
    "train": {"batch_size": 8, "seq_len": 2048, "lr": 2e-3, "align_docs": True, "media_loss_weight": 0.1,
              "prompt_loss_weight": 0.0},
    "minutes": 45.0, "eval_n": 100, "bpb_batches": 40, "text_docs": 60,
}
QUICK = {
    "text": "kjv:0.01", "tasks": "clocks:30,shapes:30,fashion:40,speech:8",
    "eval_tasks": "clocks:6,shapes:8,fashion:8,speech:4",
    "task_opts": {"clocks": {"size": 16}, "shapes": {"size": 16, "max_shapes": 3},
                  "speech": {"sample_rate": 4000, "max_digits": 1, "phrases": 0.0}},
    "model": {**BLT, "encoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "window": 64},
              "latent": {"dim": 64, "n_layers": 2, "n_heads": 4},
              "decoder": {"dim": 32, "n_layers": 1, "n_heads": 2, "window": 64}, "ngrams": {"buckets": 1024}},
    "train": {"batch_size": 2, "seq_len": 512, "lr": 3e-3, "align_docs": True, "media_loss_weight": 0.1,
              "prompt_loss_weight": 0.0},
    "steps": 6, "eval_n": 2, "bpb_batches": 2, "text_docs": 4,
}
CHANCE_KEYS = ("chance", "majority", "copy_row", "wrong_name")


def available_spec(spec: str, note: list[str]) -> str:
    """Drop the tasks this machine cannot generate (no espeak-ng, no Fashion-MNIST), saying so."""
    keep = []
    for entry in spec.split(","):
        name = entry.split(":")[0]
        if name == "speech" and not espeak_available():
            note.append("speech left out: espeak-ng is not installed")
        elif name == "fashion" and not Path(DEFAULT_ROOT).is_dir():
            note.append(f"fashion left out: no Fashion-MNIST in {DEFAULT_ROOT}")
        else:
            keep.append(entry)
    return ",".join(keep)


def run_config(preset: dict, data: Path, steps: int, threads: int) -> dict:
    train = {"device": "cpu", "seed": 0, **preset["train"], "steps": steps, "warmup_steps": max(1, steps // 20),
             "eval_every": 0, "eval_batches": 4, "save_every": 0, "log_every": max(1, min(50, steps // 10)),
             "threads": threads}  # (a pilot's --train may name another device or seed)
    return {"model": json.loads(json.dumps(preset["model"])), "data": {"path": str(data)}, "train": train}


def score(run_dir: Path, preset: dict, eval_set: Path, text_set: Path | None) -> dict:
    model = OmniModel.from_pretrained(run_dir).eval()
    seq_len = preset["train"]["seq_len"]
    bpb = evaluate_by_modality(model, eval_set, "val", seq_len=seq_len, batch_size=4,
                               max_batches=preset["bpb_batches"])["modalities"]
    if text_set is not None:  # KJV chapters that neither mix holds
        bpb["text"] = evaluate_by_modality(model, text_set, "train", seq_len=seq_len, batch_size=4,
                                           max_batches=preset["bpb_batches"])["modalities"]["text"]
    t0 = time.perf_counter()
    tasks = score_examples(run_examples(model, eval_set, n=preset["eval_n"]))
    return {"bpb": {k: v["bpb"] for k, v in bpb.items() if v["bytes"]}, "tasks": tasks,
            "eval_s": time.perf_counter() - t0}


def train_and_score(preset: dict, mix_path: Path, run_dir: Path, steps: int, threads: int, work: Path) -> tuple:
    """One mix end to end (a worker of --parallel runs it in its own process)."""
    torch.set_num_threads(threads)
    run = train_run(run_config(preset, mix_path, steps, threads), run_dir)
    return run, score(run_dir, preset, work / "eval", work / "text-eval")


def mix_bytes(meta: dict) -> dict:
    b = meta["splits"]["train"]["bytes"]
    total = sum(b.values())
    return {k: v / total for k, v in b.items()}


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def model_summary(model: dict) -> str:
    """How the preset's model patches and which input adapters it has, for the report's model line:
    e.g. `static patches of 4; adapters.media_conv channels 32, kernel 7`."""
    p = model.get("patcher", {})
    parts = [f"{p.get('kind', 'static')} patches" + (f" of {p['patch_size']}" if p.get("kind", "static") == "static"
                                                      and "patch_size" in p else "")]
    parts += [f"{k} {p[k]}" for k in ("image_rows", "audio_frame") if p.get(k)]
    parts += [f"adapters.{name} " + ", ".join(f"{k} {v}" for k, v in (fields or {}).items())
              for name, fields in model.get("adapters", {}).items()]
    return "; ".join(part.rstrip() for part in parts)


def report(preset: dict, quick: bool, notes: list[str], mixes: dict, runs: dict, scores: dict,
           total_s: float) -> list[str]:
    title = "Multimodal tasks: smoke run (--quick)" if quick else "Multimodal tasks: BLT on a CPU budget"
    lines = header(title, [
        f"model: BLT, {runs['with text']['params']:,} parameters, {model_summary(preset['model'])}; batch "
        f"{preset['train']['batch_size']} × {preset['train']['seq_len']} ids; {runs['with text']['steps']} steps per "
        f"run ({runs['with text']['flops']:.3g} training FLOPs each)",
        f"training recipe: whole documents per window (`align_docs` {preset['train'].get('align_docs', False)}), "
        f"image/audio targets weighted {preset['train'].get('media_loss_weight', 1.0)} and task examples' prompts "
        f"(question and input media) {preset['train'].get('prompt_loss_weight', 1.0)} in the loss (bits per byte "
        "below are unweighted)",
        f"training mixes: with text `{mixes['with text']['spec']}`; without text `{mixes['without text']['spec']}`; "
        f"task options {json.dumps(preset['task_opts'])}",
        f"evaluation: new examples `{preset['eval_tasks']}` (seed + 1, Fashion-MNIST test images), up to "
        f"{preset['eval_n']} per kind; bits per byte over {preset['bpb_batches']} batches of 4 windows",
        f"total wall time {total_s / 60:.1f} min", *(f"note: {n}" for n in notes)])
    if quick:
        lines += ["A smoke run: a tiny model trained for a few steps. It checks the pipeline; its numbers say "
                  "nothing about what the model can learn.", ""]
    lines += ["### Training", "", "| run | text / image / audio share of training bytes | steps | wall (min) |",
              "| --- | --- | --- | --- |"]
    for name, r in runs.items():
        share = " / ".join(f"{100 * mixes[name]['share'].get(k, 0):.0f} %" for k in ("text", "image", "audio"))
        lines.append(f"| {name} | {share} | {r['steps']} | {r['wall_s'] / 60:.1f} |")

    lines += ["", "### Bits per byte by modality (evaluation set; text: KJV chapters in neither mix)", "",
              "| run | text | image | audio |", "| --- | --- | --- | --- |"]
    for name, s in scores.items():
        lines.append(f"| {name} | " + " | ".join(fmt(s['bpb'].get(k)) for k in ("text", "image", "audio")) + " |")
    w, wo = scores["with text"]["bpb"], scores["without text"]["bpb"]
    for k in ("image", "audio"):
        if k in w and k in wo:
            lines.append(f"\nEarly fusion, {k}: {fmt(w[k])} bits/byte with text in the mix vs {fmt(wo[k])} "
                         f"without ({100 * (w[k] - wo[k]) / wo[k]:+.1f} %), at equal training FLOPs.")

    lines += ["", "### Task metrics against chance (evaluation set)", "",
              "| kind | metric | with text | without text | chance / baseline |", "| --- | --- | --- | --- | --- |"]
    kinds = list(scores["with text"]["tasks"])
    for kind in kinds:
        m_with, m_without = scores["with text"]["tasks"][kind], scores["without text"]["tasks"].get(kind, {})
        base = ", ".join(f"{k} {fmt(v)}" for k, v in m_with.items() if k.startswith(CHANCE_KEYS))
        for k, v in m_with.items():
            if k.startswith(CHANCE_KEYS) or k in ("n", "tolerance", "bytes"):
                continue
            lines.append(f"| {kind} (n={m_with.get('n')}) | {k} | {fmt(v)} | {fmt(m_without.get(k))} | {base} |")
    return lines


def write_results(args: argparse.Namespace, key: str, lines: list[str]) -> None:
    """Replace the `key` section of results_multimodal.md or --results (quick and full runs keep
    separate sections)."""
    write_section(args.results or RESULTS, key, lines, "Multimodal benchmarks")


def rescore(args) -> int:
    """Reload a finished --out folder's runs, score them again, rewrite results.json and the report."""
    work = args.out
    if work is None or not (work / "results.json").is_file():
        sys.exit("error: --score-only needs --out FOLDER holding a finished run (its results.json)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    saved = json.loads((work / "results.json").read_text())
    preset, runs, notes = saved["preset"], saved["runs"], saved["notes"]
    arch = preset["model"].get("arch", "blt")  # (a run saved before a rename: today's names in the report)
    preset["model"] = {"arch": arch, **compat.model_config(arch, {k: v for k, v in preset["model"].items()
                                                                   if k != "arch"})}
    mixes, scores = {}, {}
    for name in runs:
        meta = json.loads((work / name.replace(" ", "-") / "meta.json").read_text())
        spec = f"{preset['text']},{preset['tasks']}" if name == "with text" else preset["tasks"]
        mixes[name] = {"spec": saved.get("specs", {}).get(name, spec), "share": mix_bytes(meta)}
        print(f"scoring {name} ...", flush=True)
        scores[name] = score(work / f"run-{name.replace(' ', '-')}", preset, work / "eval", work / "text-eval")
    total = saved.get("total_s", 0.0) + time.perf_counter() - t0
    notes = [*notes, f"scored again with `--score-only` on {time.strftime('%Y-%m-%d %H:%M %Z')}"]
    lines = report(preset, False, notes, mixes, runs, scores, total)
    (work / "results.json").write_text(json.dumps(json_safe({**saved, "scores": scores, "notes": notes}),
                                                  indent=2, default=str) + "\n")
    print("\n".join(lines))
    write_results(args, args.section or "full", lines)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (~2 min)")
    ap.add_argument("--minutes", type=float, help=f"training minutes per run (full: {FULL['minutes']:.0f})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--question-last", action="store_true",
                    help="task examples put the question after the image/clip, right before the answer "
                         "(the full preset does)")
    ap.add_argument("--model", default="{}",
                    help='overrides of the BLT\'s config as JSON, merged table by table (e.g. '
                         '\'{"adapters": {"media_conv": {"channels": 32, "kernel": 7}}}\')')
    ap.add_argument("--section", help="results_multimodal.md section to write (default: full, or quick)")
    ap.add_argument("--media-loss-weight", type=float,
                    help="weight of image/audio targets in the loss (preset: 0.1; 1 = every id the same)")
    ap.add_argument("--prompt-loss-weight", type=float,
                    help="weight of task examples' prompts (question, input image/clip) in the loss "
                         "(preset: 0, answers only, as in instruction tuning; 1 = every id the same)")
    ap.add_argument("--parallel", action="store_true",
                    help="train and score the two mixes at once, one process each with --threads threads "
                         "(on 2 cores: --parallel --threads 1)")
    ap.add_argument("--out", type=Path, help="keep data, runs and results.json here (default: a temporary folder)")
    ap.add_argument("--score-only", action="store_true",
                    help="score the finished runs in --out again (after a metric changed) and rewrite the report")
    ap.add_argument("--results", type=Path, help="write the section into this file (default "
                    "benchmarks/results_multimodal.md, which records the --quick section too)")
    args = ap.parse_args()
    if args.score_only:
        return rescore(args)
    preset = dict(QUICK if args.quick else FULL)
    if args.minutes:
        preset["minutes"] = args.minutes
    if args.media_loss_weight is not None:
        preset["train"] = {**preset["train"], "media_loss_weight": args.media_loss_weight}
    if args.prompt_loss_weight is not None:
        preset["train"] = {**preset["train"], "prompt_loss_weight": args.prompt_loss_weight}
    preset["model"] = merge(preset["model"], json.loads(args.model))
    if args.question_last:
        preset["task_opts"] = {k: {**v, "question_last": True} for k, v in preset["task_opts"].items()}
        for name in ("clocks", "shapes", "fashion", "speech"):
            preset["task_opts"].setdefault(name, {"question_last": True})
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    notes: list[str] = []
    tasks = available_spec(preset["tasks"], notes)
    eval_tasks = available_spec(preset["eval_tasks"], [])
    work = args.out or Path(tempfile.mkdtemp(prefix="omnibyte-mm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        def opts_for(spec: str, extra: dict | None = None) -> dict:
            names = {e.split(":")[0] for e in spec.split(",")}
            out = {k: dict(v) for k, v in preset["task_opts"].items() if k in names}
            for k, v in (extra or {}).items():
                if k in names:
                    out.setdefault(k, {}).update(v)
            return out

        print("building the training mixes and the evaluation set ...", flush=True)
        mixes = {}
        for name, spec in (("with text", f"{preset['text']},{tasks}"), ("without text", tasks)):
            meta = build_mix(spec, work / name.replace(" ", "-"), seed=0, val_fraction=0.02, task_opts=opts_for(spec))
            mixes[name] = {"spec": spec, "share": mix_bytes(meta), "path": work / name.replace(" ", "-")}
        build_mix(eval_tasks, work / "eval", seed=1, val_fraction=0.9,
                  task_opts=opts_for(eval_tasks, {"fashion": {"split": "test"}}))
        name, share = parse_mix(preset["text"])[0]
        held_text = text_documents(name, share, seed=0, complement=True)[:preset["text_docs"]]
        write_dataset(held_text, work / "text-eval", sources=[f"{name} chapters left out of the mix"], val_fraction=0)

        if args.quick:
            steps = preset["steps"]
        else:
            probe = run_config(preset, mixes["with text"]["path"], 8, args.threads)
            steps, rate = steps_for_minutes(probe, work / "probe", preset["minutes"])
            print(f"{rate:,.0f} bytes/s → {steps} steps per run ({preset['minutes']:.0f} min)", flush=True)
        runs, scores = {}, {}
        jobs = {name: (preset, mix["path"], work / f"run-{name.replace(' ', '-')}", steps, args.threads, work)
                for name, mix in mixes.items()}
        if args.parallel:
            notes.append(f"the two runs trained side by side, one process each with {args.threads} thread(s)")
            print("training and scoring both mixes side by side ...", flush=True)
            with ProcessPoolExecutor(max_workers=len(jobs), mp_context=mp.get_context("spawn")) as pool:
                futures = {name: pool.submit(train_and_score, *job) for name, job in jobs.items()}
                for name, fut in futures.items():
                    runs[name], scores[name] = fut.result()
        else:
            for name, job in jobs.items():
                print(f"training and scoring {name} ...", flush=True)
                runs[name], scores[name] = train_and_score(*job)
        lines = report(preset, args.quick, notes, mixes, runs, scores, time.perf_counter() - t_start)
        (work / "results.json").write_text(json.dumps(json_safe(
            {"preset": preset, "runs": runs, "scores": scores, "notes": notes, "total_s": time.perf_counter() - t_start,
             "specs": {k: v["spec"] for k, v in mixes.items()}}), indent=2, default=str) + "\n")
        print("\n".join(lines))
        write_results(args, args.section or ("quick" if args.quick else "full"), lines)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
