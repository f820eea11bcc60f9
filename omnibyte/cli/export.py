"""omnibyte export FORMAT RUN --out DIR"""

from __future__ import annotations

HELP = ("Write an omnibyte BLT as a transformers BLT folder (config.json + model.safetensors) that "
        "transformers' BltForCausalLM.from_pretrained loads and that computes the same function. "
        "Only BLTs with the released BLTs' layout can be (an imported model, fine-tuned or not); for any "
        "other a one-line error names what the port lacks.")


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="an omnibyte BLT → a transformers BLT folder", description=HELP)
    p.add_argument("format", choices=["hf"], help="hf: a transformers BLT folder")
    p.add_argument("run", help="run directory or model directory")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.interop import export_checkpoint

    out = export_checkpoint(args.format, args.run, args.out)
    print(f"exported {args.run} → {out} (transformers: BltForCausalLM.from_pretrained({str(out)!r}))")
    return 0
