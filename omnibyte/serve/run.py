"""Running the app: `serve` (blocking, the CLI's) and `run_in_thread` (tests and benchmarks).

SIGTERM (and Ctrl-C) first closes the engine: no new request is taken, and every open stream ends
after the text it has (finish reason "length") with ``data: [DONE]``; then uvicorn stops, waiting
for those responses to be sent.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI

from omnibyte.data.bpe import find_tokenizer
from omnibyte.errors import OmnibyteError
from omnibyte.files import resolve_model_dir
from omnibyte.models import OmniModel
from omnibyte.serve.app import create_app
from omnibyte.serve.settings import ServeSettings


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI, stop_if_load_fails: bool = False):
        super().__init__(config)
        self.app = app
        if stop_if_load_fails:
            app.state.engine.on_load_failed = self._load_failed

    def _load_failed(self) -> None:
        self.should_exit = True  # uvicorn's main loop looks at it every 0.1 s

    def handle_exit(self, sig, frame) -> None:
        self.app.state.engine.close()  # open streams end now, cleanly
        super().handle_exit(sig, frame)


def serve(model: str | Path | OmniModel, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, log_level: str = "info", threads: int | None = None) -> None:
    """Serve a model until SIGTERM or Ctrl-C. `threads`: torch's CPU threads; by default one core
    is left to the HTTP thread (on 2 cores, torch's default of 2 threads spinning against it
    slowed decoding some 50-fold). A model that fails to load (or whose rows would not fit in
    memory) stops the server with an OmnibyteError."""
    if not 0 <= port < 65536:
        raise OmnibyteError(f"port must be in 0..65535, got {port}")
    if isinstance(model, str | Path):  # a missing folder is one line now, not a server that answers 503
        model_dir = resolve_model_dir(model)
        if find_tokenizer(model_dir) is not None:
            raise OmnibyteError(f"{model} reads BPE tokens; the server serves byte models")
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
    app = create_app(model, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    _Server(config, app, stop_if_load_fails=True).run()
    error = app.state.engine.error
    if error:
        raise OmnibyteError(f"cannot load the model: {error}")


@contextmanager
def run_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> Iterator[str]:
    """Serve `app` on a background thread; yields its base URL once the model is loaded (port 0:
    a free one), and stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5), app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="omnibyte-http", daemon=True)
    thread.start()
    engine = app.state.engine
    deadline = time.monotonic() + timeout
    while not (server.started and (engine.ready or engine.error)):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
