"""The OpenAI-compatible requests: their schemas, and how one becomes a prompt of ids and a
decoding job.

Chat messages are joined into one document: each message's parts in order (text as UTF-8, an
image as an image block, a clip as an audio block), a newline between messages. Roles are not
written: the models are trained on documents, not dialogues. A completion prompt is its text.
Either way the ids start with BOS, as `omnibyte generate` builds them, so a greedy request gives
what `omnibyte generate --temperature 0` gives.

Extensions to the OpenAI API (chat only): `modalities: ["image"]` with `image_size: "WxH"` (and
optionally `image_channels`: 1 gray, 3 RGB; default the model's choice) asks for one generated
image instead of text; `modalities: ["audio"]` with `audio_seconds` for one 8 kHz clip. The
output is then that one block, exactly as long as its header says, and max_tokens does not apply.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from omnibyte.errors import OmnibyteError
from omnibyte.format import BOS, TextSegment
from omnibyte.generate import SamplingConfig
from omnibyte.generate.multimodal import ModalityConstraint, open_block
from omnibyte.media import DEFAULT_RATE, audio_segment_from_bytes, image_segment_from_bytes, parse_size
from omnibyte.serve.settings import ServeSettings


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}}


# ----------------------------------------------------------------------------- schemas


class _Strict(BaseModel):
    # wrong types are errors, not conversions; fields this server does not know are ignored
    model_config = ConfigDict(strict=True, extra="ignore")


class ImageURL(_Strict):
    url: str
    detail: str | None = None


class InputAudio(_Strict):
    data: str
    format: str = "wav"


class ContentPart(_Strict):
    type: Literal["text", "image_url", "input_audio"]
    text: str | None = None
    image_url: ImageURL | None = None
    input_audio: InputAudio | None = None


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)  # the newer name of max_tokens
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)
    logprobs: bool | int | None = None


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    modalities: list[Literal["text", "image", "audio"]] | None = None
    image_size: str | None = None
    image_channels: Literal[1, 3] | None = None
    audio_seconds: float | None = Field(None, gt=0)
    tools: list | None = None


class CompletionRequest(_Request):
    prompt: str
    echo: bool = False
    suffix: str | None = None


class PatchesRequest(_Strict):
    """Where the patches fall in `answer` (as a stream sent it: its \\xNN escapes stand for the bytes
    they escape), read after the prompt (chat `messages` or a `prompt`)."""

    answer: str
    messages: list[Message] | None = None
    prompt: str | None = None
    model: str | None = None


# ----------------------------------------------------------------------------- request → job


class Plan:
    """What a request asks the engine for."""

    def __init__(self, prompt: list[int], cfg: SamplingConfig, constraint: ModalityConstraint,
                 stop: list[bytes], n_prompt: int, prefix: list[int], media: str | None):
        self.prompt, self.cfg, self.constraint, self.stop = prompt, cfg, constraint, stop
        self.n_prompt, self.prefix, self.media = n_prompt, prefix, media


def check_unsupported(req: _Request) -> None:
    if req.logprobs:
        raise ApiError(400, "logprobs are not supported by this server", "unsupported_parameter")
    if isinstance(req, ChatRequest) and req.tools:
        raise ApiError(400, "tools are not supported by this server", "unsupported_parameter")
    if isinstance(req, CompletionRequest) and (req.echo or req.suffix):
        raise ApiError(400, "echo and suffix are not supported by this server", "unsupported_parameter")


def stop_sequences(stop: str | list[str] | None) -> list[bytes]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4:
        raise ApiError(400, f"at most 4 stop sequences, got {len(stops)}", "invalid_value")
    return [s.encode("utf-8") for s in stops if s]


def completion_prompt(text: str) -> list[int]:
    return [BOS, *TextSegment.from_str(text).ids()]


def chat_prompt(messages: list[Message], settings: ServeSettings) -> list[int]:
    """Messages → [BOS, ...]: each message's parts in order, a newline between messages.
    Decodes images and clips (CPU work: run it off the event loop)."""
    ids = [BOS]
    for i, msg in enumerate(messages):
        if i:
            ids.append(ord("\n"))
        parts = [ContentPart(type="text", text=msg.content)] if isinstance(msg.content, str) else msg.content or []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            ids.extend(_part_ids(part, where, settings))
    return ids


def _part_ids(part: ContentPart, where: str, settings: ServeSettings) -> list[int]:
    if part.type == "text":
        if part.text is None:
            raise ApiError(400, f"{where}: a text part needs 'text'", "invalid_value")
        return TextSegment.from_str(part.text).ids()
    try:
        if part.type == "image_url":
            if part.image_url is None:
                raise ApiError(400, f"{where}: an image_url part needs 'image_url'", "invalid_value")
            data = _data_uri(part.image_url.url, where)
            return image_segment_from_bytes(data, max_pixels=settings.max_input_pixels).ids()
        if part.input_audio is None:
            raise ApiError(400, f"{where}: an input_audio part needs 'input_audio'", "invalid_value")
        data = _base64(part.input_audio.data, where)
        return audio_segment_from_bytes(data, max_seconds=settings.max_audio_seconds).ids()
    except OmnibyteError as e:
        raise ApiError(400, f"{where}: {e}", "invalid_media") from None


_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,(.*)", re.DOTALL)


def _data_uri(url: str, where: str) -> bytes:
    m = _DATA_URI.fullmatch(url)
    if not m:
        if re.match(r"\s*(https?|ftp|file):", url, re.IGNORECASE):
            raise ApiError(400, f"{where}: image URLs are not fetched; send the image inline as a "
                                f"data:image/...;base64, URI", "remote_url_refused")
        raise ApiError(400, f"{where}: an image_url must be a base64 data URI (data:image/png;base64,...)",
                       "invalid_value")
    return _base64(m.group(3), where)


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: corrupt base64 data", "invalid_base64") from None


def plan(req: ChatRequest | CompletionRequest, prompt: list[int], settings: ServeSettings) -> Plan:
    """The prompt and a request's settings → what to decode, with every limit checked."""
    check_unsupported(req)
    seed = req.seed if req.seed is not None else secrets.randbits(32)  # a generator of its own per row
    media = _media_kind(req)
    if media is None:
        max_new = _max_tokens(req, settings, room=settings.max_context - len(prompt))
        ids, prefix = prompt, []
        constraint = ModalityConstraint.from_prompt(prompt, allow_open=())
    else:
        ids, constraint, max_new = _open_media(req, prompt, media, settings)
        prefix = ids[len(prompt):]
    if len(ids) + max_new > settings.max_context:
        what = "new ids" if media is None else f"ids of the {media}"
        raise ApiError(400, f"the prompt of {len(prompt):,} ids and the {max_new:,} {what} exceed the "
                            f"{settings.max_context:,} ids a request may hold (server setting max_context)",
                       "context_length_exceeded")
    cfg = SamplingConfig(max_new=max_new, temperature=req.temperature, top_p=req.top_p, seed=seed)
    return Plan(ids, cfg, constraint, stop_sequences(req.stop), len(prompt), prefix, media)


def _media_kind(req) -> str | None:
    asked = set(getattr(req, "modalities", None) or ["text"]) - {"text"}
    if len(asked) > 1:
        raise ApiError(400, "ask for one of image or audio per request", "invalid_value")
    media = asked.pop() if asked else None
    if media == "image" and req.image_size is None:
        raise ApiError(400, "an image output needs image_size, e.g. \"28x28\"", "invalid_value")
    if media == "audio" and req.audio_seconds is None:
        raise ApiError(400, "an audio output needs audio_seconds", "invalid_value")
    return media


def _max_tokens(req, settings: ServeSettings, room: int) -> int:
    """The request's max_tokens; when it names none, the server's default or what room the
    context has left, whichever is less."""
    n = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if n is None:
        return max(1, min(settings.default_max_tokens, room))
    if n > settings.max_tokens:
        raise ApiError(400, f"max_tokens {n:,} is more than the {settings.max_tokens:,} this server allows",
                       "invalid_value")
    return n


def _open_media(req: ChatRequest, prompt: list[int], media: str, settings: ServeSettings):
    limits = dict(max_image_side=settings.max_image_side,
                  max_audio_samples=max(1, round(settings.max_audio_seconds * DEFAULT_RATE)))
    if media == "image":
        try:
            w, h = parse_size(req.image_size)
        except OmnibyteError as e:
            raise ApiError(400, str(e), "invalid_value") from None
        if max(w, h) > settings.max_image_side:
            raise ApiError(400, f"image_size {w}x{h}: this server makes images of at most {settings.max_image_side} "
                                f"pixels a side", "invalid_value")
        return open_block(prompt, image=(w, h, req.image_channels), **limits)
    if req.audio_seconds > settings.max_audio_seconds:
        raise ApiError(400, f"audio_seconds {req.audio_seconds:g}: this server makes clips of at most "
                            f"{settings.max_audio_seconds:g} s", "invalid_value")
    return open_block(prompt, audio_seconds=req.audio_seconds, **limits)
