"""omnibyte decompress RUN FILE.ob [-o FILE] [--batch N] [--threads N]"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("decompress", help="decompress an .ob file with the model it was compressed with",
                       description="Decode a file made by `omnibyte compress` with the same model (checked by "
                       "the hash of its weights and config stored in the file). Every chunk is checked against "
                       "the checksum of its original bytes before anything is written.")
    p.add_argument("model", help="run directory or model directory the file was compressed with")
    p.add_argument("file", help="the .ob file")
    p.add_argument("-o", "--out", help="output file (default: FILE without .ob; media: PNG or WAV)")
    p.add_argument("--batch", type=int, help="chunks decoded together (default 32; any batch decodes the same bytes)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from omnibyte.cli.compress import report
    from omnibyte.compress.files import decompress_file

    if args.threads:
        torch.set_num_threads(args.threads)
    stats = decompress_file(args.model, args.file, args.out, batch=args.batch, force=args.force, progress=True)
    print(report(stats, decompressed=True))
    return 0
