"""`omnibyte report RUN --out DIR`: one HTML page showing what a trained model does.

index.html (with PNGs and WAVs beside it, and metrics.json with every number on the page):

- summary: architecture, parameters, training settings, loss curve, last logged numbers;
- bits per byte per modality on the validation split;
- generated text (sampled, text-only constraint);
- generated images: an image block opened after a task's own prompt ("Draw a sneaker.", or
  a question that comes before an image) and finished under the modality constraint;
- for a task dataset, per task kind: metrics next to chance, and examples — clock readings,
  predicted points drawn on the image over the target outlines, counts, class names,
  transcripts against references (with the audio), image completions.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from omnibyte.checks import check_vocab, resolve_device
from omnibyte.data import ShardDataset
from omnibyte.data.tasks.common import ANSWER_PREFIX
from omnibyte.data.tasks.shapes import Shape
from omnibyte.errors import OmnibyteError
from omnibyte.eval import metrics
from omnibyte.eval.multimodal import (
    ExampleResult,
    evaluate_by_modality,
    has_task_records,
    json_safe,
    run_examples,
    score_examples,
)
from omnibyte.eval.runner import run_settings
from omnibyte.files import check_output_dir, remove_stale_temps, temp_sibling
from omnibyte.format import BOI, BOS, N_BYTES, AudioSegment, ImageSegment, decode, split_documents
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.multimodal import ModalityConstraint, open_block
from omnibyte.media import save_png, save_wav, segment_to_pil
from omnibyte.models.base import OmniModel, replace_dir

BASELINES = ("chance", "majority", "copy_row", "wrong_name")  # metric keys shown as the baseline column
SCALE = 4  # images are shown this many times larger (pixelated), points drawn on an 8× copy
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;
vertical-align:middle}th{background:#f4f4f4}img.px{image-rendering:pixelated}pre{background:#f8f8f8;
padding:.6em;white-space:pre-wrap}.ok{color:#080;font-weight:bold}.bad{color:#b00}.chance{color:#777}
figure{display:inline-block;margin:.4em;text-align:center}figcaption{font-size:.85em}"""
SECTION_TITLES = {"clock": ("clocks", "Clock reading"), "point": ("points", "Pointing"),
                  "count": ("counts", "Counting"), "classify": ("fashion", "Fashion-MNIST: image → name"),
                  "draw": ("drawing", "Fashion-MNIST: name → image (bits per byte)"),
                  "transcribe": ("speech", "Speech: transcripts against references"),
                  "complete": ("completion", "Image completion")}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def esc(x) -> str:
    """HTML-escaped text with control characters (which HTML forbids; untrained models write them) as \\xNN."""
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(x)))


def fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}"
    return esc(v)


class Page:
    """Accumulates sections and writes media files next to index.html."""

    def __init__(self, out: Path):
        self.out = out
        self.parts: list[str] = []
        self.n_files = 0

    def section(self, sid: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{sid}"><h2>{esc(title)}</h2>\n{body}\n</section>')

    def _name(self, stem: str, suffix: str) -> str:
        self.n_files += 1
        return f"{stem}-{self.n_files:03d}{suffix}"

    def image(self, seg_or_img, stem: str, scale: int = SCALE, title: str = "") -> str:
        name = self._name(stem, ".png")
        if isinstance(seg_or_img, ImageSegment):
            save_png(seg_or_img, self.out / name)
            w, h = seg_or_img.width, seg_or_img.height
        else:
            seg_or_img.save(self.out / name)
            w, h = seg_or_img.size
            scale = 1
        return (f'<img class="px" src="{name}" width="{w * scale}" height="{h * scale}" '
                f'alt="{esc(title or stem)}" title="{esc(title)}">')

    def audio(self, seg: AudioSegment, stem: str) -> str:
        name = self._name(stem, ".wav")
        save_wav(seg, self.out / name)
        return f'<audio controls preload="none" src="{name}"></audio>'

    def html(self, title: str) -> str:
        return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title>"
                f"<style>{CSS}</style></head><body>\n<h1>{esc(title)}</h1>\n" + "\n".join(self.parts)
                + "\n</body></html>\n")


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def first_image(ids: list[int]) -> ImageSegment | None:
    for seg in decode(ids).segments:
        if isinstance(seg, ImageSegment):
            return seg
    return None


def first_audio(ids: list[int]) -> AudioSegment | None:
    for seg in decode(ids).segments:
        if isinstance(seg, AudioSegment):
            return seg
    return None


def question_of(r: ExampleResult) -> str:
    """The text before the media block (the question or the drawing prompt); for a task made
    with `question_last`, the text between the media block and the answer."""
    ids = r.ids[1:]
    cut = next((i for i, t in enumerate(ids) if t >= N_BYTES), len(ids))
    before = bytes(ids[:cut]).decode("utf-8", errors="replace").strip()
    if before:
        return before
    closes = [i for i, t in enumerate(r.ids[:r.record["answer_start"]]) if t >= N_BYTES]
    after = r.ids[closes[-1] + 1:r.record["answer_start"]] if closes else []
    return bytes(after).decode("utf-8", errors="replace").removesuffix(ANSWER_PREFIX).strip()


# ----------------------------------------------------------------------------- pictures


def draw_points(seg: ImageSegment, r: ExampleResult, scale: int = 8) -> Image.Image:
    """The image 8× larger with the target shapes outlined in green and predicted points as red crosses."""
    img = segment_to_pil(seg).convert("RGB")
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    for d in r.record["targets"]:
        s = Shape.from_dict(d)
        if s.kind == "circle":
            draw.ellipse([scale * (s.x - s.r), scale * (s.y - s.r), scale * (s.x + s.r), scale * (s.y + s.r)],
                         outline=(0, 200, 0), width=2)
        else:
            draw.polygon([(scale * x, scale * y) for x, y in s.vertices()], outline=(0, 200, 0), width=2)
    w, h = r.record["width"], r.record["height"]
    for x, y in metrics.parse_points(r.prediction or ""):
        px, py, a = x / 100 * w * scale, y / 100 * h * scale, 5
        draw.line([px - a, py - a, px + a, py + a], fill=(255, 0, 0), width=2)
        draw.line([px - a, py + a, px + a, py - a], fill=(255, 0, 0), width=2)
    return img


def with_bottom(seg: ImageSegment, top_rows: int, bottom: list[int]) -> ImageSegment:
    """`seg`'s top rows above `bottom` (padded with black when short)."""
    row = seg.width * seg.channels
    need = (seg.height - top_rows) * row
    fill = bytes(bottom[:need]) + bytes(need - min(len(bottom), need))
    return ImageSegment(seg.width, seg.height, seg.channels, seg.pixels[:top_rows * row] + fill)


# ----------------------------------------------------------------------------- sections


def summary_section(page: Page, run: Path, model: OmniModel, settings: dict) -> dict:
    rows = [["architecture", esc(model.arch)], ["parameters", f"{model.num_params():,}"]]
    last: dict = {}
    mfile = run / "metrics.jsonl"
    if mfile.is_file():
        for line in mfile.read_text().splitlines():
            if line.strip():
                last.update(json.loads(line))
    for key in ("step", "loss", "val_bpb", "flops"):
        if key in last:
            rows.append([f"last {key}", fmt(last[key])])
    body = table(["", ""], rows)
    if (run / "loss.png").is_file():
        shutil.copyfile(run / "loss.png", page.out / "loss.png")
        body += '<p><img src="loss.png" alt="loss curve"></p>'
    if settings:
        body += f"<details><summary>run.json</summary><pre>{esc(json.dumps(settings, indent=2))}</pre></details>"
    page.section("summary", "Run", body)
    return {k: last[k] for k in ("step", "loss", "val_bpb") if k in last}


def bpb_section(page: Page, model: OmniModel, data: Path, seq_len: int, max_batches: int) -> dict:
    res = evaluate_by_modality(model, data, "val", seq_len=seq_len, batch_size=4, max_batches=max_batches)
    rows = [[name, fmt(m["bpb"]), f"{m['bytes']:,}"] for name, m in res["modalities"].items() if m["bytes"]]
    rows.append(["<b>all</b>", f"<b>{fmt(res['bpb'])}</b>", f"{res['bytes']:,}"])
    page.section("bpb", "Bits per byte by modality (validation)",
                 table(["modality", "bits/byte", "bytes scored"], rows)
                 + f"<p class='chance'>First {max_batches} batches of 4 windows of {seq_len} ids; "
                 "uniform guessing is 8 bits/byte.</p>")
    return {"bpb": res["bpb"], **{f"{k}_bpb": v["bpb"] for k, v in res["modalities"].items() if v["bytes"]}}


def text_prompts(dataset: ShardDataset, k: int = 2) -> list[bytes]:
    """Openings of text-only validation documents (or a stock opening when there are none)."""
    stream = np.asarray(dataset.stream("val")[:200_000]) if "val" in dataset.splits else np.zeros(0)
    prompts = []
    for doc in split_documents(stream):
        body = doc[1:-1]
        if body and max(body) < N_BYTES and len(body) > 60:
            prompts.append(bytes(body[:40]))
        if len(prompts) == k:
            break
    return prompts or [b"In the beginning"]


def text_section(page: Page, model: OmniModel, dataset: ShardDataset, seed: int) -> None:
    prompts = text_prompts(dataset)
    cfg = SamplingConfig(max_new=200, temperature=0.8, top_p=0.95, seed=seed)
    outs = generate(model, [[BOS, *p] for p in prompts], cfg,
                    constraints=[ModalityConstraint.text_only() for _ in prompts])
    body = ""
    for p, new in zip(prompts, outs):
        cont = bytes(t for t in new if t < N_BYTES).decode("utf-8", errors="replace")
        body += f"<pre><b>{esc(p.decode('utf-8', errors='replace'))}</b>{esc(cont)}</pre>"
    page.section("text", "Generated text (temperature 0.8)", body)


def image_prompts(results: list[ExampleResult], k: int = 6) -> list[tuple[str, list[int], tuple[int, int, int]]]:
    """(caption, prompt ids, (w, h, c)): one per draw class, then one per kind whose question precedes an image."""
    out, seen = [], set()
    for r in results:
        seg = first_image(r.ids)
        if seg is None:
            continue
        key = r.record.get("answer") if r.kind == "draw" else r.kind
        if key in seen:
            continue
        seen.add(key)
        boi = r.ids.index(BOI)
        out.append((question_of(r), r.ids[:boi], (seg.width, seg.height, seg.channels)))
        if len(out) == k:
            break
    return out


def images_section(page: Page, model: OmniModel, results: list[ExampleResult], seed: int) -> None:
    prompts = image_prompts(sorted(results, key=lambda r: r.kind != "draw"))
    if not prompts:
        return
    blocks = [open_block(ids, image=whc) for _, ids, whc in prompts]  # (prompt + BOI header, constraint, max_new)
    outs = generate(model, [full for full, _, _ in blocks],
                    SamplingConfig(max_new=max(m for _, _, m in blocks), temperature=1.0, seed=seed),
                    constraints=[c for _, c, _ in blocks])
    figures = []
    for (caption, _, (w, h, c)), new in zip(prompts, outs):
        pixels = bytes(t for t in new if t < N_BYTES)[:w * h * c]
        seg = ImageSegment(w, h, c, pixels.ljust(w * h * c, b"\0"))
        figures.append(f"<figure>{page.image(seg, 'generated', title=caption)}"
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    page.section("images", "Generated images (sampled at temperature 1, constrained image block)",
                 "<p>Each prompt is followed by an opened image block of the task's size; the model writes "
                 "every pixel.</p>" + "".join(figures))


def metrics_section(page: Page, scores: dict[str, dict]) -> None:
    rows = []
    for kind, m in scores.items():
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in m.items()
                          if not k.startswith(BASELINES) and k not in ("n", "tolerance"))
        base = ", ".join(f"{k} {fmt(v)}" for k, v in m.items() if k.startswith(BASELINES))
        rows.append([esc(kind), esc(m.get("n", "")), shown, f"<span class='chance'>{base}</span>"])
    page.section("metrics", "Task metrics (held-out examples)",
                 table(["kind", "examples", "model", "chance / baseline"], rows))


def kind_rows(page: Page, kind: str, rs: list[ExampleResult]) -> tuple[list[str], list[list[str]]]:
    rows = []
    if kind == "clock":
        for r in rs:
            ref, pred = metrics.parse_time(r.record["answer"]), metrics.parse_time(r.prediction or "")
            d = metrics.clock_distance(ref, pred) if pred is not None else None
            ok = d is not None and d <= 3
            rows.append([page.image(first_image(r.ids), "clock"), esc(r.record["answer"]), esc(r.prediction),
                         f"<span class='{'ok' if ok else 'bad'}'>{'–' if d is None else f'{d} min'}</span>"])
        return ["image", "reference", "model", "off by"], rows
    if kind == "point":
        for r in rs:
            pts = [(x * r.record["width"] / 100, y * r.record["height"] / 100)
                   for x, y in metrics.parse_points(r.prediction or "")]
            hit = metrics.match_points(pts, [Shape.from_dict(s) for s in r.record["targets"]])
            rows.append([page.image(draw_points(first_image(r.ids), r), "points"), esc(question_of(r)),
                         f"<code>{esc(r.prediction)}</code>", f"{hit}/{len(r.record['targets'])} targets hit"])
        return ["image (green: targets, red: model)", "question", "model", ""], rows
    if kind == "count":
        for r in rs:
            ok = metrics.parse_count(r.prediction or "") == r.record["count"]
            rows.append([page.image(first_image(r.ids), "count"), esc(question_of(r)), esc(r.record["answer"]),
                         f"<span class='{'ok' if ok else 'bad'}'>{esc(r.prediction)}</span>"])
        return ["image", "question", "reference", "model"], rows
    if kind == "classify":
        for r in rs:
            ok = metrics.normalize(r.prediction or "") == metrics.normalize(r.record["answer"])
            rows.append([page.image(first_image(r.ids), "fashion"), esc(r.record["answer"]),
                         f"<span class='{'ok' if ok else 'bad'}'>{esc(r.prediction)}</span>"])
        return ["image", "reference", "model"], rows
    if kind == "transcribe":
        for r in rs:
            w = metrics.wer_cer([r.record["answer"]], [r.prediction or ""])["wer"]
            rows.append([page.audio(first_audio(r.ids), "speech"), esc(r.record.get("voice", "")),
                         esc(r.record["answer"]), esc(r.prediction), fmt(w)])
        return ["audio", "voice", "reference", "model", "WER"], rows
    if kind == "draw":
        for r in rs:
            cf = r.counterfactual_bits / r.answer_bytes if r.counterfactual_bits is not None else float("nan")
            wrong = esc(r.record.get("counterfactual", "").strip())
            rows.append([page.image(first_image(r.ids), "draw"), esc(question_of(r)),
                         fmt(r.answer_bits / r.answer_bytes), f"{fmt(cf)} ({wrong})"])
        return ["true image", "prompt", "bits/byte", "under a wrong name"], rows
    if kind == "complete":
        for r in rs:
            seg = first_image(r.ids)
            top = r.record["top_rows"]
            given = with_bottom(seg, top, [])
            model_img = with_bottom(seg, top, r.completion or [])
            cut = top * seg.width * seg.channels
            mae = metrics.pixel_mae(model_img.pixels[cut:], seg.pixels[cut:])
            rows.append([page.image(given, "given"), page.image(model_img, "completed"), page.image(seg, "truth"),
                         fmt(r.answer_bits / r.answer_bytes), fmt(mae)])
        return ["given", "model (greedy)", "truth", "bits/byte", "pixel MAE"], rows
    return [], []


def task_sections(page: Page, results: list[ExampleResult]) -> None:
    by_kind: dict[str, list[ExampleResult]] = {}
    for r in results:
        by_kind.setdefault(r.kind, []).append(r)
    for kind, (sid, title) in SECTION_TITLES.items():
        if kind in by_kind:
            header, rows = kind_rows(page, kind, by_kind[kind])
            page.section(sid, title, table(header, rows))


# ----------------------------------------------------------------------------- entry point


def write_report(run: str | Path, out: str | Path | None = None, data: str | Path | None = None, n: int = 8,
                 max_batches: int = 20, device: str | None = None, seed: int = 0, quiet: bool = False) -> Path:
    """Write `out`/index.html (default RUN/report) for the model in run directory `run`; returns its path.

    `data` defaults to the run's dataset; `n` examples per task kind are run and shown;
    `max_batches` windows of validation data are scored for bits per byte. Each stage is
    announced on stderr unless `quiet` (generation with a hierarchical model on a CPU takes minutes).
    """

    def stage(what: str) -> None:
        if not quiet:
            print(f"report: {what} ...", file=sys.stderr, flush=True)

    run = Path(run)
    out = check_output_dir(Path(out) if out else run / "report")
    model = OmniModel.from_pretrained(run, map_location=resolve_device(device))
    settings = run_settings(run)
    data = Path(data or settings.get("data", {}).get("path", ""))
    if not str(data) or not (data / "meta.json").is_file():
        raise OmnibyteError(f"no prepared dataset for the report (got {str(data) or 'none'}): pass --data DIR")
    seq_len = int(settings.get("train", {}).get("seq_len", 1024))
    if out.exists() and not (out / "index.html").is_file() and any(out.iterdir()):
        raise OmnibyteError(f"{out} exists and holds something other than a report; choose another --out")
    dataset = ShardDataset(data)
    check_vocab(dataset, model)

    # written whole into a temporary folder, then swapped in: a failed report leaves the old one
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    tmp = temp_sibling(out)
    tmp.mkdir()
    try:
        write_pages(tmp, run, model, settings, dataset, seq_len, n, max_batches, seed, stage)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def write_pages(out: Path, run: Path, model: OmniModel, settings: dict, dataset: ShardDataset, seq_len: int,
                n: int, max_batches: int, seed: int, stage) -> None:
    """index.html, metrics.json and the media they show, into the folder `out`."""
    data = dataset.path
    page = Page(out)
    numbers: dict = {"run": summary_section(page, run, model, settings)}
    stage("bits per byte by modality")
    numbers["bits_per_byte"] = bpb_section(page, model, data, seq_len, max_batches)
    stage("generating text")
    text_section(page, model, dataset, seed)
    if has_task_records(data):
        stage(f"answering up to {n} held-out examples per task kind")
        results = run_examples(model, data, n=n)
        if results:
            scores = score_examples(results)
            numbers["tasks"] = scores
            stage("generating images")
            images_section(page, model, results, seed)
            metrics_section(page, scores)
            task_sections(page, results)
    (out / "metrics.json").write_text(json.dumps(json_safe(numbers), indent=2) + "\n")
    (out / "index.html").write_text(page.html(f"omnibyte report: {run.name} ({model.arch})"))


__all__ = ["write_report"]
