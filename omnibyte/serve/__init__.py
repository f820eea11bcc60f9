"""The server: an OpenAI-compatible HTTP API with streaming, images and audio in and out, and a
web page, over one model whose decoding batch requests join and leave between steps.

    from omnibyte.serve import ServeSettings, create_app, serve
    serve("runs/demo", port=8000)                     # blocking, as `omnibyte serve runs/demo`
    app = create_app("runs/demo", ServeSettings())    # in-process: fastapi.testclient.TestClient(app)
"""

import importlib

from omnibyte.serve.settings import ServeSettings

# The app, the engine and the runner import torch and fastapi. They load when first named, so the
# command line, which reads ServeSettings' defaults to build `omnibyte serve --help`, stays quick.
_WHERE = {"create_app": "app", "Engine": "engine", "Job": "engine", "run_in_thread": "run", "serve": "run",
          "TextStream": "text"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"omnibyte.serve.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'omnibyte.serve' has no attribute {name!r}")


__all__ = ["Engine", "Job", "ServeSettings", "TextStream", "create_app", "run_in_thread", "serve"]
