"""The server: an OpenAI-compatible HTTP API with streaming, images and audio in and out, and a
web page, over one model whose decoding batch requests join and leave between steps.

    from omnibyte.serve import ServeSettings, create_app, serve
    serve("runs/demo", port=8000)                     # blocking, as `omnibyte serve runs/demo`
    app = create_app("runs/demo", ServeSettings())    # in-process: fastapi.testclient.TestClient(app)
"""

from omnibyte.serve.app import create_app
from omnibyte.serve.engine import Engine, Job
from omnibyte.serve.run import run_in_thread, serve
from omnibyte.serve.settings import ServeSettings
from omnibyte.serve.text import TextStream

__all__ = ["Engine", "Job", "ServeSettings", "TextStream", "create_app", "run_in_thread", "serve"]
