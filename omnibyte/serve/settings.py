"""What a server takes besides its model. The limits turn a request too large for the machine
into a 4xx or 503 answer instead of an out-of-memory crash."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from omnibyte.errors import OmnibyteError


@dataclass
class ServeSettings:
    api_key: str | None = None  # when set, /v1 requests need "Authorization: Bearer KEY"
    max_batch: int = 16  # rows decoding together; each holds max_context ids of model state
    max_context: int = 8192  # ids a request may hold: its prompt (images and audio included) and its output
    max_tokens: int = 4096  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256  # max_tokens of a request that names none
    max_queue: int = 64  # requests waiting for a free row; one more gets 503
    max_body_bytes: int = 8 << 20  # a request body, base64 media included
    max_image_side: int = 64  # width and height of a generated image
    max_input_pixels: int = 1 << 24  # an input image, checked before it is decoded and scaled down
    max_audio_seconds: float = 5.0  # an input clip, and a generated one
    prefill_chunk: int = 512  # prompt ids a row is fed per decoding step
    device: str | None = None  # cpu or cuda; None: cuda when available
    model_name: str | None = None  # the id /v1/models lists; None: the run folder's name

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("api_key", "device", "model_name"):
                continue
            if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
                raise OmnibyteError(f"serve setting {f.name} must be a finite number > 0, got {value}")
        if self.default_max_tokens > self.max_tokens:
            raise OmnibyteError(f"default_max_tokens {self.default_max_tokens} exceeds max_tokens {self.max_tokens}")
        if not 0 < self.max_image_side < 65536:
            raise OmnibyteError(f"max_image_side must be in 1..65535, got {self.max_image_side}")
        if self.api_key == "":
            raise OmnibyteError("an empty API key would let everyone in: leave it unset instead")
