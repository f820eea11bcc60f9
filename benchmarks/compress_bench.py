"""Compression with omnibyte models against the usual tools, on the same held-out files.

    .venv/bin/python -m benchmarks.compress_bench --model runs/kjv-compress
    .venv/bin/python -m benchmarks.compress_bench --model runs/kjv-compress --media-model runs/media-compress
    .venv/bin/python -m benchmarks.compress_bench --model M --media-model runs/media-compress --media-only
    .venv/bin/python -m benchmarks.compress_bench --quick --model runs/tiny     # a few KB; writes nothing

Rows (sizes include the .ob header; the model's size is given beside them):

- text: the KJV validation split as one file (the corpus's held-out test split arrives with another
  issue), against gzip -9, xz -9e, zstd -19 and bzip2 -9; compress and decompress speed of each in
  KB/s of original bytes (interleaved rounds, `common.compare`), and the omnibyte sizes at other
  chunk sizes;
- fashion (with --media-model): Fashion-MNIST test images as raw 28 × 28 gray, each its own file:
  omnibyte --as-media against PNG (Pillow, then optipng -o7) and WebP lossless (cwebp -z 9);
- speech (with --media-model): held-out spoken clips of the speech task (8 kHz µ-law), each its own
  file: omnibyte --as-media against FLAC -8 of the same samples (as 16-bit PCM and as 8-bit codes,
  the smaller counts; --no-padding, else flac reserves 8 KB per file for later tags).

The general tools run once per file as processes reading stdin (their KB/s include start-up).

Every omnibyte file of a row is compressed; the first few are also decompressed and compared. The
tools come from Debian (gzip xz-utils zstd bzip2 optipng webp flac).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.common import (
    OUT,
    REPO,
    Measured,
    compare,
    fmt_rate,
    header,
    results_file,
    results_option,
    write_section,
)
from omnibyte.compress import DEFAULT_BATCH, DEFAULT_CHUNK, Source, compress, decompress, read_header, read_source
from omnibyte.compress.files import load_byte_model
from omnibyte.data import ShardDataset, is_dataset, prepare_kjv
from omnibyte.data.tasks import task_examples
from omnibyte.data.tasks.fashion import DEFAULT_ROOT, load_split
from omnibyte.eval.runner import run_settings
from omnibyte.files import WEIGHTS, resolve_model_dir
from omnibyte.format import AudioSegment, split_documents
from omnibyte.media import save_wav

SCRATCH = OUT / "compress"
# (name, compress argv, decompress argv): each reads stdin and writes stdout
TOOLS = [("gzip -9", ["gzip", "-9", "-c"], ["gzip", "-d", "-c"]),
         ("xz -9e", ["xz", "-9e", "-c"], ["xz", "-d", "-c"]),
         ("zstd -19", ["zstd", "-19", "-c", "-q"], ["zstd", "-d", "-c", "-q"]),
         ("bzip2 -9", ["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"])]
SPEECH_SEED = 1_000_003  # clips no speech dataset built with a small seed holds


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"error: missing tools {missing}: apt-get install gzip xz-utils zstd bzip2 optipng webp flac")


def pipe(argv: list[str], data: bytes) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def model_line(path: str) -> str:
    model = load_byte_model(path)
    size = (resolve_model_dir(path) / WEIGHTS).stat().st_size
    return f"{path}: {model.arch}, {model.num_params():,} parameters, {size / 1e6:.1f} MB of weights ({WEIGHTS})"


def kjv_val() -> bytes:
    """The text of the KJV validation split: its documents' bytes, one after another."""
    data = REPO / "data" / "kjv"
    if not is_dataset(data):
        prepare_kjv(data)
    ids = ShardDataset(data).stream("val")[:]
    return b"".join(bytes(int(t) for t in doc if t < 256) for doc in split_documents(ids))


def timed(fn: Callable[[], object]) -> Callable[[], Measured]:
    def side():
        t0 = time.perf_counter()
        value = fn()
        return Measured(time.perf_counter() - t0, value)
    return side


# --------------------------------------------------------------------------- text


def text_rows(args, data: bytes) -> list[str]:
    model = load_byte_model(args.model)
    context = args.context or run_settings(args.model).get("train", {}).get("seq_len", 1024)
    blob = compress(model, Source(data), chunk=args.chunk_size, context=context, batch=args.batch)
    back = decompress(model, blob, batch=args.batch).payload
    assert back == data, "omnibyte round trip differs"
    n_escapes = sum(_escape_counts(blob))
    sides: dict[str, Callable] = {}
    for name, comp, dec in TOOLS:
        packed = pipe(comp, data)
        sides[f"{name} compress"] = lambda comp=comp: pipe(comp, data)
        sides[f"{name} decompress"] = lambda dec=dec, packed=packed: pipe(dec, packed)
    sides["omnibyte compress"] = timed(lambda: compress(model, Source(data), chunk=args.chunk_size, context=context,
                                                        batch=args.batch))
    sides["omnibyte decompress"] = timed(lambda: decompress(model, blob, batch=args.batch))
    times = compare(sides, repeats=args.repeats, warmup=0, log=True)
    sizes = {name: len(pipe(comp, data)) for name, comp, _ in TOOLS}
    sizes["omnibyte"] = len(blob)
    xz = sizes["xz -9e"]
    spread = logit_differences(model, data)
    lines = [f"Held-out file: the KJV validation split as one file, {len(data):,} bytes "
             f"(`benchmarks/out/compress/kjv-val.txt`). Model: {model_line(args.model)}; context {context} ids, "
             f"chunks of {args.chunk_size} bytes ({read_header(blob).n_chunks}), batch {args.batch}, "
             f"{torch.get_num_threads()} torch thread(s); {n_escapes} escapes in the file.", "",
             "| method | bytes | bits/byte | vs xz -9e | compress KB/s | decompress KB/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in [t[0] for t in TOOLS] + ["omnibyte"]:
        size = sizes[name]
        label = f"**omnibyte** ({args.model})" if name == "omnibyte" else name
        lines.append(f"| {label} | {size:,} | {8 * size / len(data):.3f} | {100 * (size / xz - 1):+.1f}% | "
                     f"{fmt_rate(times[f'{name} compress'], len(data) / 1000, '{:,.1f}')} | "
                     f"{fmt_rate(times[f'{name} decompress'], len(data) / 1000, '{:,.1f}')} |")
    lines += ["", "KB/s: median (min–max) over the rounds; the omnibyte sides exclude loading the model.", ""]
    lines += spread
    if args.chunk_sizes:
        lines += ["| chunk bytes | chunks | omnibyte bytes | bits/byte | vs xz -9e |",
                  "| ---: | ---: | ---: | ---: | ---: |"]
        for chunk in args.chunk_sizes:
            other = compress(model, Source(data), chunk=chunk, context=context, batch=args.batch)
            lines.append(f"| {chunk:,} | {read_header(other).n_chunks} | {len(other):,} | "
                         f"{8 * len(other) / len(data):.3f} | {100 * (len(other) / xz - 1):+.1f}% |")
        lines.append("")
    return lines


def _escape_counts(blob: bytes) -> list[int]:
    from omnibyte.compress.container import load

    return [len(c.escapes) for c in load(blob)[1]]


# --------------------------------------------------------------------------- determinism


@torch.inference_mode()
def logit_differences(model, data: bytes, rows: int = 4, length: int = 200) -> list[str]:
    """Largest |Δ logit| over `rows` × `length` positions of `data` between ways of computing the
    same logits, in fp32 and in fp64 (which coding uses): a full forward against cached decoding
    byte by byte, cached decoding of all rows against one row at a time, and 1 against 2 threads."""
    from omnibyte.compress.coder import fp64
    from omnibyte.compress.freqs import GUARD
    from omnibyte.format import BOS

    ids = torch.tensor([[BOS, *data[r * length:(r + 1) * length]] for r in range(rows)])

    def cached(x: torch.Tensor) -> torch.Tensor:
        state = model.init_state(x.shape[0], x.shape[1])
        return torch.cat([model.step(state, x[:, t:t + 1]) for t in range(x.shape[1])], dim=1)

    def spread(dtype_name: str) -> str:
        threads = torch.get_num_threads()
        full, step = model(ids).logits, cached(ids)
        alone = torch.cat([cached(ids[r:r + 1]) for r in range(rows)])
        torch.set_num_threads(3 - min(threads, 2))  # the other of 1 and 2
        other = cached(ids)
        torch.set_num_threads(threads)
        d = [float((a - b)[..., :256].abs().max()) for a, b in ((full, step), (step, alone), (step, other))]
        return f"| {dtype_name} | {d[0]:.1e} | {d[1]:.1e} | {d[2]:.1e} |"

    lines = [f"Largest difference of a byte logit (nats) over {rows} × {length} positions of the text, between two "
             f"ways of computing it; the guard is {GUARD:.1e} nats.", "",
             "| dtype | forward vs cached | batch of {rows} vs one row | 1 vs 2 threads |".replace("{rows}", str(rows)),
             "| --- | ---: | ---: | ---: |", spread("fp32")]
    with fp64(model):
        lines.append(spread("fp64 (coding)"))
    return lines + [""]


# --------------------------------------------------------------------------- media


def media_rows(args, kind: str) -> list[str]:
    """Fashion-MNIST images or spoken clips, each its own file: omnibyte --as-media against the
    media codecs and the general tools, sizes summed over the files."""
    folder = SCRATCH / kind
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths = write_fashion(folder, args.images) if kind == "fashion" else write_speech(folder, args.clips)
    model = load_byte_model(args.media_model)
    context = args.context or run_settings(args.media_model).get("train", {}).get("seq_len", 1024)
    totals: dict[str, int] = {}
    raw = 0
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        source = read_source(path, as_media=True)
        raw += len(source.payload)
        blob = compress(model, source, chunk=args.chunk_size, context=context, batch=args.batch)
        if i < args.verify:
            assert decompress(model, blob).payload == source.payload, f"round trip of {path} differs"
        sizes = {"omnibyte": len(blob), **codec_sizes(kind, path, source)}
        sizes.update({name: len(pipe(comp, source.payload)) for name, comp, _ in TOOLS})
        for k, v in sizes.items():
            totals[k] = totals.get(k, 0) + v
    seconds = time.perf_counter() - t0
    what = (f"{len(paths)} Fashion-MNIST test images (28 × 28 gray, 784 pixels each)" if kind == "fashion" else
            f"{len(paths)} held-out clips of the speech task (8 kHz µ-law, seed {SPEECH_SEED})")
    lines = [f"{what}, {raw:,} payload bytes; each file compressed on its own, sizes summed. Model: "
             f"{model_line(args.media_model)}; context {context}. The first {min(args.verify, len(paths))} files "
             f"decompressed and compared; the row took {seconds:.0f} s.", "",
             "| method | bytes | bits per pixel/sample | vs omnibyte |", "| --- | ---: | ---: | ---: |"]
    for name, size in sorted(totals.items(), key=lambda kv: kv[1]):
        label = "**omnibyte --as-media**" if name == "omnibyte" else name
        lines.append(f"| {label} | {size:,} | {8 * size / raw:.3f} | {100 * (size / totals['omnibyte'] - 1):+.1f}% |")
    return lines + [""]


def write_fashion(folder: Path, n: int) -> list[Path]:
    images, _ = load_split(DEFAULT_ROOT, "test")
    from PIL import Image

    paths = []
    for i in range(n):
        path = folder / f"img{i:05d}.png"
        Image.fromarray(images[i]).save(path, optimize=True)
        paths.append(path)
    return paths


def write_speech(folder: Path, n: int) -> list[Path]:
    paths = []
    for i, ex in enumerate(task_examples("speech", n, seed=SPEECH_SEED)):
        seg = next(s for s in ex.segments if isinstance(s, AudioSegment))
        paths.append(save_wav(seg, folder / f"clip{i:05d}.wav"))
    return paths


def codec_sizes(kind: str, path: Path, source: Source) -> dict[str, int]:
    """The media codecs' sizes for one file: optimised PNG and lossless WebP, or FLAC."""
    if kind == "fashion":
        png = path.with_suffix(".opt.png")
        subprocess.run(["optipng", "-o7", "-strip", "all", "-quiet", "-out", str(png), str(path)], check=True)
        webp = path.with_suffix(".webp")
        subprocess.run(["cwebp", "-lossless", "-z", "9", "-metadata", "none", "-quiet", str(path), "-o", str(webp)],
                       check=True)
        return {"PNG (optipng -o7)": png.stat().st_size, "WebP lossless (cwebp -z 9)": webp.stat().st_size}
    flac16 = path.with_suffix(".16.flac")
    subprocess.run(["flac", "-8", "--no-padding", "--silent", "-f", str(path), "-o", str(flac16)], check=True)
    codes = path.with_suffix(".u8.wav")  # the µ-law codes themselves as 8-bit PCM
    rate = int.from_bytes(source.media_header[:4], "big")
    sf.write(codes, (np.frombuffer(source.payload, np.uint8).astype(np.int16) - 128) << 8, rate, subtype="PCM_U8")
    flac8 = path.with_suffix(".8.flac")
    subprocess.run(["flac", "-8", "--no-padding", "--silent", "-f", str(codes), "-o", str(flac8)], check=True)
    return {"FLAC -8 --no-padding (best of 16-bit PCM, 8-bit codes)": min(flac16.stat().st_size, flac8.stat().st_size)}


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="byte model for the text row (run or model folder)")
    p.add_argument("--media-model", help="multimodal model for the Fashion-MNIST and speech rows")
    p.add_argument("--media-only", action="store_true", help="only the media rows (--model is still recorded)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--chunk-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="also report the text row's omnibyte size at these chunk sizes (e.g. 1024,4096,16384)")
    p.add_argument("--context", type=int, help="ids the model sees (default: the run's train.seq_len)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of every side (text row)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--clips", type=int, default=50)
    p.add_argument("--verify", type=int, default=3, help="media files per row also decompressed and compared")
    p.add_argument("--quick", action="store_true", help="the first 4 KB of text, 5 images, 3 clips; writes nothing")
    results_option(p, "results_compress.md")
    args = p.parse_args()
    if args.media_only and not args.media_model:
        p.error("--media-only needs --media-model")
    torch.set_num_threads(args.threads)
    need(*(t[1][0] for t in TOOLS), *(["optipng", "cwebp", "flac"] if args.media_model else []))
    if args.quick:
        args.images, args.clips, args.repeats, args.verify = 5, 3, 1, 1
    SCRATCH.mkdir(parents=True, exist_ok=True)
    data = kjv_val()[:4096] if args.quick else kjv_val()
    (SCRATCH / "kjv-val.txt").write_bytes(data)
    out = results_file(args, "results_compress.md")
    sections = [] if args.media_only else [("compress_text", "Compression of text with a model against gzip, xz, "
                                            "zstd and bzip2", lambda: text_rows(args, data))]
    if args.media_model:
        sections.append(("compress_media", "Compression of images and audio with a model against PNG, WebP and "
                         "FLAC", lambda: ["### Fashion-MNIST", ""] + media_rows(args, "fashion") + ["### Speech", ""]
                         + media_rows(args, "speech")))
    for key, title, rows in sections:
        load = os.getloadavg()
        lines = header(title, [f"load average at the start: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min) on "
                               f"{os.cpu_count()} cores"]) + rows()
        print("\n".join(lines), flush=True)
        if out is not None:
            write_section(out, key, lines, title="Compression results")

if __name__ == "__main__":
    main()
