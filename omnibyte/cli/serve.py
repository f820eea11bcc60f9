"""omnibyte serve RUN [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch N] [limits ...]"""

from __future__ import annotations

import argparse
import os

from omnibyte.cli.args import finite_float, port_number, positive_int

HELP = """Serve a trained byte model over HTTP: an OpenAI-compatible API (/v1/completions,
/v1/chat/completions, /v1/models; streaming; images and audio in and out) and a web page at /.
Concurrent requests decode together in one batch, joining and leaving it between steps.

Each of the --max-batch rows holds up to --max-context ids of model state, growing as it fills and
checked at start as if every row were full: size them to the machine. Past a limit a request gets
a 4xx answer; with every row busy and --max-queue requests waiting, a 503. SIGTERM or Ctrl-C ends
open streams after their text so far, then stops."""


def add_parser(sub) -> None:
    from omnibyte.serve.settings import ServeSettings

    d = ServeSettings()
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible HTTP API and a web page", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="run directory or model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0: any free one)")
    p.add_argument("--api-key", default=os.environ.get("OMNIBYTE_API_KEY"),
                   help="require this bearer token on /v1 (default: $OMNIBYTE_API_KEY; unset: no key)")
    p.add_argument("--max-batch", type=positive_int, default=d.max_batch,
                   help=f"rows decoding together (default {d.max_batch})")
    p.add_argument("--max-context", type=positive_int, default=d.max_context,
                   help=f"ids per request, prompt and output (default {d.max_context})")
    p.add_argument("--max-tokens", type=positive_int, default=d.max_tokens,
                   help=f"largest max_tokens a request may ask for (default {d.max_tokens})")
    p.add_argument("--max-queue", type=positive_int, default=d.max_queue,
                   help=f"requests waiting for a row before 503 (default {d.max_queue})")
    p.add_argument("--max-body-mb", type=finite_float, default=d.max_body_bytes / 2**20,
                   help=f"request body size in MiB (default {d.max_body_bytes / 2**20:g})")
    p.add_argument("--max-image-side", type=positive_int, default=d.max_image_side,
                   help=f"side of a generated image in pixels (default {d.max_image_side})")
    p.add_argument("--max-audio-seconds", type=finite_float, default=d.max_audio_seconds,
                   help=f"length of an input or generated clip (default {d.max_audio_seconds:g})")
    p.add_argument("--name", help="the model id /v1/models lists (default: the run folder's name)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: one fewer than the cores, "
                   "at least 1: the HTTP thread needs one)")
    p.set_defaults(func=run)


def run(args) -> int:
    from omnibyte.serve import ServeSettings, serve

    settings = ServeSettings(api_key=args.api_key, max_batch=args.max_batch, max_context=args.max_context,
                             max_tokens=args.max_tokens, default_max_tokens=min(256, args.max_tokens),
                             max_queue=args.max_queue, max_body_bytes=int(args.max_body_mb * 2**20),
                             max_image_side=args.max_image_side, max_audio_seconds=args.max_audio_seconds,
                             device=args.device, model_name=args.name)
    serve(args.model, host=args.host, port=args.port, settings=settings, threads=args.threads)
    return 0
