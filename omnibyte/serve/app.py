"""The HTTP application: OpenAI-compatible endpoints over one `Engine`, and the web page.

    GET  /                      the web page (static/index.html)
    GET  /health                200 {"status": "ok"} once the model is loaded, 503 before
    GET  /v1/models             the one model
    POST /v1/completions        text in, text out
    POST /v1/chat/completions   text, images and audio in; text, an image or a clip out
    POST /v1/patches            where the model's patches fall in an answer (for the page)

Streams are server-sent events, one JSON chunk per piece of text, ending with ``data: [DONE]``.
Errors have OpenAI's shape, {"error": {"message", "type", "code", "param"}}, with a 4xx status for
a bad request and 503 while the model loads, when the queue is full or while shutting down.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnibyte.checks import resolve_device
from omnibyte.data.bpe import find_tokenizer
from omnibyte.errors import OmnibyteError
from omnibyte.files import resolve_model_dir
from omnibyte.format import AudioSegment, ImageSegment
from omnibyte.generate.multimodal import AUDIO, PartialBlock, split_outputs
from omnibyte.media import encode_png, encode_wav
from omnibyte.models import OmniModel
from omnibyte.serve.api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    PatchesRequest,
    chat_prompt,
    completion_prompt,
    plan,
)
from omnibyte.serve.engine import Engine, Job, Unavailable
from omnibyte.serve.patches import patch_view
from omnibyte.serve.settings import ServeSettings
from omnibyte.serve.text import unescape

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("omnibyte.serve")


def create_app(model: str | Path | OmniModel, settings: ServeSettings | None = None) -> FastAPI:
    """The server's app for a run or model folder (loaded on a thread when the app starts: /health
    answers 503 until it is in memory) or for a model object. Serve it with uvicorn, or use it
    in-process with `fastapi.testclient.TestClient(app)` (as a context manager, so it starts)."""
    settings = settings or ServeSettings()
    model_dir = Path(model) if isinstance(model, str | Path) else None
    name = settings.model_name or _model_name(model_dir)
    device = resolve_device(settings.device)

    def load() -> OmniModel:
        if model_dir is None:
            return model.eval()
        if find_tokenizer(model_dir) is not None:
            raise OmnibyteError(f"{model_dir} reads BPE tokens; the server serves byte models")
        return OmniModel.from_pretrained(model_dir, map_location=device)

    engine = Engine(load, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await asyncio.to_thread(engine.close, 10.0)

    app = FastAPI(title="omnibyte", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings, app.state.model_name = engine, settings, name
    app.add_middleware(_Gate, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --- errors in OpenAI's shape ----------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"Retry-After": "1"} if e.status == 503 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}"
        elif tuple(first["loc"]) == ("body",):
            message = "the body must be a JSON object (Content-Type: application/json)"
        else:
            where = ".".join(str(p) for p in first["loc"] if p != "body")
            message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(ApiError(400, message, first["type"]).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return JSONResponse(ApiError(e.status_code, str(e.detail), code).body(), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):
        log.exception("request failed")
        return JSONResponse(ApiError(500, f"internal error: {type(e).__name__}", "internal_error",
                                     "server_error").body(), status_code=500)

    # --- helpers ----------------------------------------------------------------------------------
    def ready(requested: str | None) -> Engine:
        if not engine.ready:
            message = f"the model failed to load: {engine.error}" if engine.error else "the model is loading"
            raise ApiError(503, message, "model_not_ready", "server_error")
        if requested is not None and requested != name:
            raise ApiError(404, f"the model {requested!r} does not exist; this server serves {name!r}",
                           "model_not_found")
        return engine

    def submit(job: Job) -> None:
        try:
            engine.submit(job)
        except Unavailable as e:
            raise ApiError(503, str(e), "server_busy", "server_error") from None

    async def begin(req, request: Request, prompt_of, chunk) -> StreamingResponse | Response | tuple[Job, dict, str]:
        """Queue the request's job. A stream is answered at once; otherwise → (job, meta, whole text),
        or a bare 499 when the client went away before the end (nobody reads it)."""
        ready(req.model)
        prompt = await asyncio.to_thread(prompt_of)
        p = plan(req, prompt, settings)
        job = Job(p.prompt, p.cfg, p.constraint, asyncio.get_running_loop(), p.stop, p.prefix, p.media)
        submit(job)
        kind = "chatcmpl" if chunk is _chat_chunk else "cmpl"
        meta = {"id": f"{kind}-{uuid.uuid4().hex}", "object": "chat.completion.chunk" if kind == "chatcmpl" else
                "text_completion", "created": int(time.time()), "model": name, "n_prompt": p.n_prompt}
        if req.stream:
            return _sse(_stream(engine, job, meta, chunk, _include_usage(req)))
        text = await _collect(engine, job, request)
        return Response(status_code=499) if text is None else (job, meta, text)

    # --- routes ------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        if engine.ready:
            return {"status": "ok", "model": name, "running": engine.running, "queued": engine.queued,
                    **engine.stats}
        status = {"status": "error", "error": engine.error} if engine.error else {"status": "loading"}
        return JSONResponse(status, status_code=503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "omnibyte"}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        out = await begin(req, request, lambda: completion_prompt(req.prompt), _completion_chunk)
        if not isinstance(out, tuple):
            return out
        job, meta, text = out
        return {**_head(meta), "choices": [{"index": 0, "text": text, "finish_reason": job.finish_reason,
                                            "logprobs": None}], "usage": _usage(job, meta)}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        out = await begin(req, request, lambda: chat_prompt(req.messages, settings), _chat_chunk)
        if not isinstance(out, tuple):
            return out
        job, meta, text = out
        content: str | list = text
        if job.media is not None:
            content = [*([{"type": "text", "text": text}] if text else []), await asyncio.to_thread(_media_part, job)]
        message = {"role": "assistant", "content": content}
        return {**_head(meta), "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": job.finish_reason, "logprobs": None}],
                "usage": _usage(job, meta)}

    @app.post("/v1/patches")
    async def patches(req: PatchesRequest):
        ready(req.model)
        if req.messages is not None:
            prompt = await asyncio.to_thread(chat_prompt, req.messages, settings)
        else:
            prompt = completion_prompt(req.prompt or "")
        ids = prompt + list(unescape(req.answer))
        if len(ids) > settings.max_context:
            raise ApiError(400, f"{len(ids):,} ids exceed the {settings.max_context:,} a request may hold",
                           "context_length_exceeded")
        return await asyncio.to_thread(patch_view, engine.model, ids, len(prompt), model_dir)

    return app


# ----------------------------------------------------------------------------- the gate


class _Gate:
    """ASGI middleware in front of everything: the API key on /v1 (before the body is read) and
    the body size limit (from Content-Length, and counted as the body arrives)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        key = self.settings.api_key
        if key is not None and scope["path"].startswith("/v1/"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {key}".encode()):
                return await _reply(send, ApiError(401, "a valid API key is needed: Authorization: Bearer KEY",
                                                   "invalid_api_key"))
        limit = self.settings.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _reply(send, _too_large(limit))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted, send)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than the {limit:,} bytes this server takes",
                    "request_too_large")


async def _reply(send, e: ApiError) -> None:
    body = json.dumps(e.body()).encode()
    await send({"type": "http.response.start", "status": e.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- responses


def _model_name(model_dir: Path | None) -> str:
    if model_dir is None:
        return "omnibyte"
    try:
        resolved = resolve_model_dir(model_dir)
    except OmnibyteError:
        resolved = model_dir
    path = resolved.resolve()
    return path.parent.name if path.name == "checkpoint" else path.name


def _include_usage(req) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _head(meta: dict) -> dict:
    return {"id": meta["id"], "object": meta["object"], "created": meta["created"], "model": meta["model"]}


def _usage(job: Job, meta: dict) -> dict:
    """Tokens are ids: bytes, and the markers of image and audio blocks."""
    out = len(job.output)
    return {"prompt_tokens": meta["n_prompt"], "completion_tokens": out, "total_tokens": meta["n_prompt"] + out}


def _completion_chunk(meta: dict, text: str | None = None, finish: str | None = None, **_) -> dict:
    return {**_head(meta), "choices": [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]}


def _chat_chunk(meta: dict, text: str | None = None, finish: str | None = None, delta: dict | None = None) -> dict:
    delta = dict(delta or {})
    if text is not None:
        delta["content"] = text
    return {**_head(meta), "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


def _media_part(job: Job) -> dict:
    """The generated image or clip as a content part holding a data URI (PNG) or base64 WAV, the
    shapes requests send them in. A block cut short (the server shut down) is filled up."""
    for seg in split_outputs(job.output):
        if isinstance(seg, PartialBlock):
            seg = seg.complete(fill=128 if seg.kind == AUDIO else 0)
        if isinstance(seg, ImageSegment):
            return {"type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(encode_png(seg)).decode()}}
        if isinstance(seg, AudioSegment):
            return {"type": "input_audio",
                    "input_audio": {"data": base64.b64encode(encode_wav(seg)).decode(), "format": "wav"}}
    return {"type": "text", "text": ""}


def _sse(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _data(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream(engine: Engine, job: Job, meta: dict, chunk, include_usage: bool):
    """The job's events as server-sent events. Text that arrived while the last chunk was being
    sent goes out as one chunk (a busy server sends fewer, larger chunks instead of falling
    behind). When the client goes away the generator is cancelled, and the job leaves its row."""
    try:
        if chunk is _chat_chunk:
            yield _data(chunk(meta, delta={"role": "assistant", "content": ""}))
        while True:
            for kind, value in _merge_text(await job.take()):
                if kind == "text":
                    yield _data(chunk(meta, text=value))
                elif kind == "progress":
                    total = len(job.prefix) + job.cfg.max_new
                    yield _data({**chunk(meta, delta={}), "omnibyte": {"media_ids": value, "media_total": total}})
                elif kind == "error":
                    yield _data(ApiError(500, value, "decoding_failed", "server_error").body())
                    yield "data: [DONE]\n\n"
                    return
                else:  # done
                    if job.media is not None:
                        yield _data(chunk(meta, delta={"content": [await asyncio.to_thread(_media_part, job)]}))
                    yield _data(chunk(meta, finish=value))
                    if include_usage:
                        yield _data({**_head(meta), "choices": [], "usage": _usage(job, meta)})
                    yield "data: [DONE]\n\n"
                    return
    finally:
        if job.finish_reason is None:
            engine.cancel(job)


def _merge_text(events: list[tuple[str, object]]) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for kind, value in events:
        if kind == "text" and out and out[-1][0] == "text":
            out[-1] = ("text", out[-1][1] + value)
        else:
            out.append((kind, value))
    return out


async def _collect(engine: Engine, job: Job, request: Request) -> str | None:
    """The whole text of a job; None when the client went away first (then the job is cancelled)."""
    pieces = []
    try:
        while True:
            try:
                events = await asyncio.wait_for(job.take(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return None
                continue
            for kind, value in events:
                if kind == "text":
                    pieces.append(value)
                elif kind == "error":
                    raise ApiError(500, value, "decoding_failed", "server_error")
                elif kind == "done":
                    return "".join(pieces)
    finally:
        if job.finish_reason is None:
            engine.cancel(job)


__all__ = ["create_app"]
