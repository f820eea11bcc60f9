"""omnibyte compress RUN FILE [-o FILE.ob] [--as-media] [--chunk-size N] [--context N] [--batch N] [--threads N]"""

from __future__ import annotations

import argparse

HELP = """Lossless compression with a trained byte model: arithmetic coding with the model's next-byte
probabilities, made exact on every machine (decompress with the same model: `omnibyte decompress`).
The file is coded in independent chunks, side by side as the rows of a batch. --as-media codes an
image's pixels or a WAV's µ-law samples through their byte-format block, so an image or audio model
compresses them (decompressed as PNG / 16-bit WAV)."""


def add_parser(sub) -> None:
    p = sub.add_parser("compress", help="compress a file losslessly with a trained model", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run directory or model directory")
    p.add_argument("file", help="file to compress")
    p.add_argument("-o", "--out", help="output file (default: FILE.ob)")
    p.add_argument("--as-media", action="store_true", help="code an image's pixels or a WAV's samples as the "
                   "byte format's image/audio block (exactly; a file that would change is refused)")
    p.add_argument("--chunk-size", type=int, help="bytes per independently coded chunk (default 4096)")
    p.add_argument("--context", type=int, help="ids the model sees at most (default: the run's train.seq_len, "
                   "else 1024)")
    p.add_argument("--batch", type=int, help="chunks coded together (default 32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def report(stats: dict, decompressed: bool = False) -> str:
    """One line on a finished compression (or decompression): sizes, bits per byte, speed."""
    n, c, s = stats["original_bytes"], stats["compressed_bytes"], stats["seconds"]
    sizes = f"{c:,} → {n:,} bytes" if decompressed else f"{n:,} → {c:,} bytes"
    ratio = f" ({8 * c / n:.3f} bits/byte, {100 * c / n:.1f}%)" if n else ""
    rate = f" ({n / s / 1000:,.1f} KB/s)" if n and s > 0 else ""
    verb = "decompressed" if decompressed else "compressed"
    kind = f" ({stats['kind']})" if stats["kind"] != "bytes" else ""
    return f"{verb} {stats['input']} → {stats['output']}{kind}: {sizes}{ratio} in {s:.1f} s{rate}"


def run(args) -> int:
    import torch

    from omnibyte.compress.files import compress_file

    if args.threads:
        torch.set_num_threads(args.threads)
    stats = compress_file(args.model, args.file, args.out, as_media=args.as_media, chunk=args.chunk_size,
                          context=args.context, batch=args.batch, force=args.force, progress=True)
    print(report(stats))
    return 0
