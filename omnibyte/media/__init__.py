"""Media files ⇄ segments of the byte format: images (Pillow) and audio (soundfile, µ-law).

`image_segment_from_path` and `audio_segment_from_path` are the hooks `omnibyte.data.prepare`
uses for image and audio files.
"""

from omnibyte.media.audio import (
    AUDIO_SUFFIXES,
    DEFAULT_RATE,
    audio_segment_from_array,
    audio_segment_from_bytes,
    audio_segment_from_path,
    encode_wav,
    mulaw_decode,
    mulaw_encode,
    resample,
    save_wav,
    segment_to_array,
    segment_to_pcm16,
)
from omnibyte.media.image import (
    DEFAULT_MAX_SIDE,
    IMAGE_SUFFIXES,
    encode_png,
    image_segment_from_array,
    image_segment_from_bytes,
    image_segment_from_path,
    image_segment_from_pil,
    open_image,
    parse_size,
    save_png,
    segment_to_pil,
    segment_to_pixels,
)

__all__ = ["AUDIO_SUFFIXES", "DEFAULT_MAX_SIDE", "DEFAULT_RATE", "IMAGE_SUFFIXES", "audio_segment_from_array",
           "audio_segment_from_bytes", "audio_segment_from_path", "encode_png", "encode_wav",
           "image_segment_from_array", "image_segment_from_bytes", "image_segment_from_path",
           "image_segment_from_pil", "mulaw_decode", "mulaw_encode", "open_image", "parse_size", "resample",
           "save_png", "save_wav", "segment_to_array", "segment_to_pcm16", "segment_to_pil", "segment_to_pixels"]
