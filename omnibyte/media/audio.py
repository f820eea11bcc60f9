"""Audio files ⇄ audio segments: ``BOA, sample rate u32, sample count u32, encoding u8, samples, EOA``.

Reading: any format libsndfile (soundfile) opens — WAV with 8/16/24/32-bit integer or 32/64-bit
float samples, WAVEX, FLAC, OGG, AIFF, ... Channels are averaged to mono, the signal is
resampled to the target rate (8 kHz by default) with a windowed-sinc resampler, clipped to
[-1, 1] and µ-law encoded to one byte per sample.

µ-law here is the continuous companding law of G.711 with µ = 255,
``y = sign(x)·ln(1 + µ|x|)/ln(1 + µ)``, with y quantised uniformly to 256 levels
(byte = round((y + 1)/2 · 255)). Differs from G.711: no segmented (piecewise-linear)
approximation and no bit inversion, so the bytes are ordered like the signal (0 = -1.0,
255 = +1.0), which is friendlier to a byte model.

libsndfile reads a truncated WAV without complaint, so WAV files are checked first: the RIFF
chunk sizes and the fmt header must agree with the bytes actually in the file.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from omnibyte.errors import OmnibyteError
from omnibyte.files import remove_stale_temps, temp_sibling
from omnibyte.format import AUDIO_MULAW8, AudioSegment

DEFAULT_RATE = 8000
MU = 255
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".caf", ".mp3",
                            ".w64", ".rf64"})


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# ----------------------------------------------------------------------------- µ-law


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """Float samples (clipped to [-1, 1]) → uint8 µ-law codes."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / math.log1p(MU)
    return np.rint((y + 1.0) * 127.5).astype(np.uint8)


def mulaw_decode(codes: np.ndarray | bytes) -> np.ndarray:
    """uint8 µ-law codes → float32 samples in [-1, 1] (the centre of each code's cell in y)."""
    q = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, bytes | bytearray) else np.asarray(codes)
    y = q.astype(np.float64) / 127.5 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * math.log1p(MU)) / MU).astype(np.float32)


# ----------------------------------------------------------------------------- resampling

_ZEROS = 32  # sinc zero crossings kept on each side of the centre
_ROLLOFF = 0.9  # cutoff as a fraction of the lower Nyquist frequency (room for the transition band)
_BETA = 8.0  # Kaiser window shape: ~80 dB stopband, below 8-bit µ-law's noise floor
_WINDOW_GRID = np.linspace(0.0, 1.0, 4097)
_WINDOW = np.i0(_BETA * np.sqrt(1.0 - _WINDOW_GRID**2)) / np.i0(_BETA)  # Kaiser w(|d| / half), tabulated


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by windowed-sinc interpolation (any rate ratio).

    Output sample n sits at input time t = n·orig/new and is Σ_k x[k]·h(t − k) with
    h(d) = 2f·sinc(2f·d)·kaiser(d / half): a low-pass at f = 0.9 × the lower of the two Nyquist
    frequencies (so downsampling does not alias), windowed to `_ZEROS` zero crossings each side.
    Samples outside the signal count as 0. Output length is ceil(len · new / orig).

    Polyphase: with new/orig = up/down in lowest terms, outputs n, n + up, n + 2·up, ... share
    one fractional offset, so each of the `up` phases is one filter applied at a stride of `down`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise OmnibyteError(f"resample expects a 1-D signal, got shape {x.shape}")
    orig_rate, new_rate = int(orig_rate), int(new_rate)
    if orig_rate <= 0 or new_rate <= 0:
        raise OmnibyteError(f"sample rates must be positive, got {orig_rate} → {new_rate}")
    if orig_rate == new_rate or len(x) == 0:
        return x.astype(np.float32)
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g  # output n sits at input time n·down/up
    f2 = _ROLLOFF * min(1.0, up / down)  # 2f, in cycles per input sample
    half = _ZEROS / f2  # window half-width in input samples
    k = int(math.ceil(half))
    taps = np.arange(-k + 1, k + 1)  # (2k,) input offsets from floor(t)
    xp = np.concatenate([np.zeros(k), x, np.zeros(k + 1)])
    windows = np.lib.stride_tricks.sliding_window_view(xp, 2 * k)  # windows[b + 1] = x[b - k + 1 .. b + k]
    n_out = -(-len(x) * up // down)
    out = np.empty(n_out, dtype=np.float32)
    for phase in range(min(up, n_out)):
        base, rem = divmod(phase * down, up)  # first output of this phase: t = base + rem/up
        d = rem / up - taps  # distances t − k, the same for every output of the phase
        h = f2 * np.sinc(f2 * d) * np.interp(np.abs(d) / half, _WINDOW_GRID, _WINDOW, right=0.0)
        count = len(range(phase, n_out, up))
        out[phase::up] = windows[base + 1::down][:count] @ h  # (count, 2k) @ (2k,)
    return out


# ----------------------------------------------------------------------------- arrays ⇄ segments


def to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM (int8/16/32, uint8 offset-binary) → float in [-1, 1); float passes through."""
    a = np.asarray(samples)
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    if a.dtype == np.uint8:  # 8-bit PCM is offset binary: 128 is silence
        return (a.astype(np.float64) - 128.0) / 128.0
    if a.dtype.kind == "i":
        return a.astype(np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))
    raise OmnibyteError(f"audio samples must be float or integer PCM, got dtype {a.dtype}")


def _check_rate(rate, what: str = "sample rate") -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | np.integer) or not 0 < rate < 2**32:
        raise OmnibyteError(f"{what} must be an integer in 1..2^32-1, got {rate!r}")
    return int(rate)


def audio_segment_from_array(samples: np.ndarray, sample_rate: int = DEFAULT_RATE,
                             target_rate: int | None = None) -> AudioSegment:
    """Samples → µ-law AudioSegment.

    `samples`: 1-D mono, or 2-D (frames, channels) averaged to mono; float in [-1, 1] (clipped)
    or integer PCM. `sample_rate` is the rate of `samples`; with `target_rate` set (and
    different) they are resampled to it first, else the segment keeps `sample_rate`.
    """
    sample_rate = _check_rate(sample_rate)
    a = to_float(samples)
    if a.ndim == 2:
        a = a.mean(axis=1)
    if a.ndim != 1:
        raise OmnibyteError(f"audio samples must be (frames,) or (frames, channels), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise OmnibyteError("audio samples contain NaN or infinity")
    rate = sample_rate
    if target_rate is not None:
        rate = _check_rate(target_rate, "target sample rate")
        a = resample(a, sample_rate, rate)
    if len(a) >= 2**32:
        raise OmnibyteError(f"audio has {len(a)} samples; a segment holds at most 2^32-1")
    return AudioSegment(rate, len(a), AUDIO_MULAW8, mulaw_encode(a).tobytes())


def segment_to_array(seg: AudioSegment) -> tuple[np.ndarray, int]:
    """AudioSegment → (float32 samples in [-1, 1], sample rate)."""
    if not isinstance(seg, AudioSegment):
        raise OmnibyteError(f"expected an AudioSegment, got {type(seg).__name__}")
    if seg.encoding != AUDIO_MULAW8:
        raise OmnibyteError(f"unknown audio encoding {seg.encoding} (known: 1 = 8-bit mu-law)")
    return mulaw_decode(seg.samples), seg.sample_rate


# ----------------------------------------------------------------------------- files

# WAV format tags whose frames are a fixed number of bytes (PCM, IEEE float, A-law, µ-law)
_FIXED_FRAME_TAGS = {1, 3, 6, 7}


def _check_wav(f: BinaryIO, size: int) -> int | None:
    """Walk the RIFF chunks of a WAV file (open, `size` bytes long): raise when a chunk runs past
    the end of the file or the fmt header disagrees with the data. Returns the frame count the
    header promises (None when it cannot be told: a streamed size, or a compressed format)."""
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise OmnibyteError("not a RIFF/WAVE file")
    pos, fmt = 12, None
    while True:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            raise OmnibyteError("truncated WAV: no data chunk" + ("" if fmt else " and no fmt chunk"))
        cid, csize = struct.unpack("<4sI", chunk)
        if cid == b"data":
            break
        if pos + 8 + csize > size:
            raise OmnibyteError(f"truncated WAV: {cid.decode('latin-1')!r} chunk declares {csize} bytes, "
                                f"{size - pos - 8} left")
        if cid == b"fmt ":
            fmt = f.read(min(csize, 40))
        pos += 8 + csize + (csize & 1)  # chunks are padded to even sizes
    if fmt is None or len(fmt) < 16:
        raise OmnibyteError("WAV has no valid fmt chunk before its data")
    tag, channels, _rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID
        tag = struct.unpack("<H", fmt[24:26])[0]
    available = size - pos - 8
    if csize in (0, 0xFFFFFFFF) and available > 0:  # streamed WAV: size never filled in
        return None
    if csize > available:
        raise OmnibyteError(f"truncated WAV: header declares {csize} bytes of audio, file holds {available}")
    if tag not in _FIXED_FRAME_TAGS:
        return None
    if channels == 0 or block_align != channels * ((bits + 7) // 8):
        raise OmnibyteError(f"WAV header disagrees with itself: {channels} channels of {bits} bits "
                            f"but {block_align}-byte frames")
    if csize % block_align:
        raise OmnibyteError(f"WAV data of {csize} bytes is not a whole number of {block_align}-byte frames")
    return csize // block_align


def audio_segment_from_path(path: str | Path, sample_rate: int = DEFAULT_RATE) -> AudioSegment:
    """An audio file → mono µ-law AudioSegment at `sample_rate` (8 kHz by default).
    Unreadable, truncated or inconsistent files raise a one-line OmnibyteError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise OmnibyteError(f"{path}: no such audio file")
    try:
        with open(path, "rb") as f:
            return _read_audio(f, path.stat().st_size, sample_rate)
    except OmnibyteError as e:
        raise OmnibyteError(f"{path}: {e}") from None
    except OSError as e:
        raise OmnibyteError(f"{path}: cannot read audio: {_one_line(e)}") from None


def segment_to_pcm16(seg: AudioSegment) -> np.ndarray:
    """The segment's samples as 16-bit PCM (int16), as `save_wav` and `encode_wav` write them."""
    x, _ = segment_to_array(seg)
    return np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def audio_segment_from_bytes(data: bytes, sample_rate: int = DEFAULT_RATE,
                             max_seconds: float | None = None) -> AudioSegment:
    """An audio file's bytes (an upload) → mono µ-law AudioSegment at `sample_rate`; `max_seconds`
    refuses a longer clip from its header, before its samples are decoded."""
    return _read_audio(io.BytesIO(data), len(data), sample_rate, max_seconds)


def _read_audio(f: BinaryIO, size: int, sample_rate: int, max_seconds: float | None = None) -> AudioSegment:
    sample_rate = _check_rate(sample_rate)
    expected = _check_wav(f, size) if f.read(4) == b"RIFF" else None
    f.seek(0)
    try:
        with sf.SoundFile(f) as snd:
            if max_seconds is not None and snd.frames > max_seconds * snd.samplerate:
                raise OmnibyteError(f"audio of {snd.frames / snd.samplerate:.2f} s is longer than the "
                                    f"{max_seconds:g} s allowed")
            data, rate = snd.read(dtype="float32", always_2d=True), snd.samplerate
    except (RuntimeError, TypeError, ValueError, EOFError) as e:  # LibsndfileError is a RuntimeError
        raise OmnibyteError(f"cannot read audio: {re.sub(r'^Error opening .*?: ', '', _one_line(e))}") from None
    if expected is not None and len(data) != expected:
        raise OmnibyteError(f"WAV header promises {expected} frames, decoder read {len(data)}")
    if len(data) == 0:
        raise OmnibyteError("audio file holds no samples")
    return audio_segment_from_array(data, int(rate), sample_rate)


def encode_wav(seg: AudioSegment) -> bytes:
    """The segment as 16-bit PCM mono WAV file bytes at its own rate."""
    buf = io.BytesIO()
    sf.write(buf, segment_to_pcm16(seg), seg.sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def save_wav(seg: AudioSegment, path: str | Path) -> Path:
    """Write the segment as 16-bit PCM mono WAV at its own rate (atomically: temp file, then rename)."""
    data = encode_wav(seg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # what a killed earlier write of this file left
    tmp = temp_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OmnibyteError(f"{path}: cannot write WAV: {_one_line(e)}") from None
    return path


__all__ = ["AUDIO_SUFFIXES", "DEFAULT_RATE", "MU", "audio_segment_from_array", "audio_segment_from_bytes",
           "audio_segment_from_path", "encode_wav", "mulaw_decode", "mulaw_encode", "resample", "save_wav",
           "segment_to_array", "segment_to_pcm16", "to_float"]
