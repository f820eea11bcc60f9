import math
import struct

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omnibyte.errors import OmnibyteError
from omnibyte.format import AudioSegment, ImageSegment, decode_segments
from omnibyte.media import (
    DEFAULT_MAX_SIDE,
    audio_segment_from_array,
    audio_segment_from_bytes,
    audio_segment_from_path,
    encode_png,
    encode_wav,
    image_segment_from_array,
    image_segment_from_bytes,
    image_segment_from_path,
    image_segment_from_pil,
    mulaw_decode,
    mulaw_encode,
    parse_size,
    resample,
    save_png,
    save_wav,
    segment_to_array,
    segment_to_pil,
    segment_to_pixels,
)

RNG = np.random.default_rng(0)


def one_line_error(fn, path):
    with pytest.raises(OmnibyteError) as e:
        fn(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("channels", [1, 3])
def test_image_png_roundtrip_native_size(tmp_path, channels):
    shape = (7, 5) if channels == 1 else (7, 5, 3)
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    seg = image_segment_from_path(tmp_path / "in.png")
    assert (seg.width, seg.height, seg.channels) == (5, 7, channels)
    assert seg.pixels == pixels.tobytes()  # row-major, as the format says
    save_png(seg, tmp_path / "out.png")
    assert image_segment_from_path(tmp_path / "out.png") == seg
    assert np.array_equal(segment_to_pixels(seg), pixels)
    assert decode_segments(seg.ids()) == [seg]


@pytest.mark.parametrize("mode,channels", [("gray", 1), ("rgb", 3)])
def test_image_resized_to_target_is_pixel_exact_after_png(tmp_path, mode, channels):
    src = Image.fromarray(RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    src.save(tmp_path / "src.bmp")
    seg = image_segment_from_path(tmp_path / "src.bmp", size=(16, 12), mode=mode)
    assert (seg.width, seg.height, seg.channels) == (16, 12, channels)
    expected = src.convert("L" if channels == 1 else "RGB").resize((16, 12), Image.Resampling.LANCZOS)
    assert seg.pixels == expected.tobytes()
    save_png(seg, tmp_path / "small.png")
    back = image_segment_from_path(tmp_path / "small.png")  # 16x12 fits the default: native size kept
    assert back == seg
    assert segment_to_pil(back).tobytes() == seg.pixels


def test_image_default_size_and_modes(tmp_path):
    big = RNG.integers(0, 256, (100, 200, 3), dtype=np.uint8)  # H=100, W=200
    seg = image_segment_from_array(big)
    assert (seg.width, seg.height) == (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE // 2)
    gray = image_segment_from_array(big[..., 0])
    assert gray.channels == 1
    as_rgb = image_segment_from_array(big[:10, :10, 0], mode="rgb")
    px = segment_to_pixels(as_rgb)
    assert as_rgb.channels == 3 and (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
    # transparency goes over white; 16-bit gray is scaled, not clipped
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    assert segment_to_pixels(image_segment_from_array(rgba))[1, 1].tolist() == [255, 255, 255]
    assert segment_to_pixels(image_segment_from_array(rgba))[0, 0].tolist() == [10, 20, 30]
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(tmp_path / "g16.png")
    assert image_segment_from_path(tmp_path / "g16.png").pixels == bytes([0, 128, 255])
    # a palette image whose colours are gray stays gray; a coloured one becomes RGB
    Image.fromarray(big[:8, :8, 0]).convert("P").save(tmp_path / "gray.gif")
    assert image_segment_from_path(tmp_path / "gray.gif").channels == 1
    with pytest.raises(OmnibyteError, match="unknown image mode"):
        image_segment_from_array(big, mode="cmyk")


def test_image_formats_gif_first_frame_and_exif(tmp_path):
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    seg = image_segment_from_path(tmp_path / "anim.gif")
    assert segment_to_pixels(seg)[0, 0].tolist() == [255, 0, 0]
    img = Image.fromarray(RNG.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    for name in ("a.jpg", "a.webp", "a.bmp", "a.tiff"):
        img.save(tmp_path / name)
        seg = image_segment_from_path(tmp_path / name)
        assert (seg.width, seg.height, seg.channels) == (12, 8, 3), name
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    seg = image_segment_from_path(tmp_path / "rot.jpg")
    assert (seg.width, seg.height) == (8, 12)


def test_image_bad_files_give_one_line_errors(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.png").write_bytes(RNG.bytes(500))
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "float.tiff")
    for name in ("truncated.png", "random.png", "empty.png", "missing.png"):
        one_line_error(image_segment_from_path, tmp_path / name)
    assert "unsupported image mode" in one_line_error(image_segment_from_path, tmp_path / "float.tiff")


def test_image_bytes_read_like_files_and_huge_canvases_are_refused(tmp_path):
    pixels = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    seg = image_segment_from_bytes((tmp_path / "in.png").read_bytes())
    assert seg == image_segment_from_path(tmp_path / "in.png")
    assert image_segment_from_bytes(encode_png(seg)) == seg
    Image.new("L", (5000, 4000)).save(tmp_path / "big.png")  # a few kB on disk, 20 M pixels
    with pytest.raises(OmnibyteError, match="5000x4000 pixels is larger than"):
        image_segment_from_bytes((tmp_path / "big.png").read_bytes(), max_pixels=1 << 20)
    for bad in (b"", RNG.bytes(300), encode_png(seg)[:40]):
        with pytest.raises(OmnibyteError, match="cannot read image"):
            image_segment_from_bytes(bad)


def test_parse_size():
    assert parse_size("28x28") == (28, 28)
    assert parse_size("64X32") == (64, 32)
    assert parse_size("16") == (16, 16)
    for bad in ("0x4", "axb", "3x", "70000x1"):
        with pytest.raises(OmnibyteError):
            parse_size(bad)


def test_image_segment_from_pil_rejects_bad_size():
    with pytest.raises(OmnibyteError):
        image_segment_from_pil(Image.new("L", (3, 3)), size=(0, 3))


# ----------------------------------------------------------------------------- µ-law


def mulaw_inverse(y):
    """x for a companded value y (the G.711 µ=255 law, written independently of the library)."""
    return np.sign(y) * (256.0 ** np.abs(y) - 1.0) / 255.0


def mulaw_bound(codes):
    """Largest |x − decode(code)| for any x that encodes to `code`: the code's cell is
    y ∈ [y_q − h, y_q + h] with y_q = code/127.5 − 1 and h = half a step = 1/255."""
    y = codes.astype(np.float64) / 127.5 - 1.0
    h = 1.0 / 255.0
    xq = mulaw_inverse(y)
    hi = mulaw_inverse(np.minimum(y + h, 1.0)) - xq
    lo = xq - mulaw_inverse(np.maximum(y - h, -1.0))
    return np.maximum(hi, lo) + 1e-6  # float32 output


def test_mulaw_error_within_quantisation_step():
    x = np.concatenate([np.linspace(-1, 1, 40001), RNG.uniform(-1, 1, 10000), RNG.normal(0, 1e-3, 1000)])
    x = np.clip(x, -1, 1)
    codes = mulaw_encode(x)
    err = np.abs(mulaw_decode(codes) - x)
    bound = mulaw_bound(codes)
    assert (err <= bound).all()
    assert err.max() > 0.9 * bound.max()  # the bound is the real step, not a loose tolerance
    assert mulaw_encode(np.array([-1.0, 1.0])).tolist() == [0, 255]
    assert (np.diff(mulaw_encode(np.linspace(-1, 1, 1000)).astype(int)) >= 0).all()  # bytes ordered like x
    assert np.allclose(mulaw_decode(np.arange(256, dtype=np.uint8)), mulaw_inverse(np.arange(256) / 127.5 - 1),
                       atol=1e-6)


def tone(freq, rate, seconds, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)


def test_audio_segment_wav_roundtrip_within_mulaw_error(tmp_path):
    x = tone(440, 8000, 0.5, 0.6) + tone(1234, 8000, 0.5, 0.3) + RNG.normal(0, 0.01, 4000)
    seg = audio_segment_from_array(x, 8000)
    assert (seg.sample_rate, seg.n_samples, seg.encoding) == (8000, 4000, 1)
    save_wav(seg, tmp_path / "clip.wav")
    info = sf.info(str(tmp_path / "clip.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    back = audio_segment_from_path(tmp_path / "clip.wav")
    assert back == seg  # 16-bit PCM is far finer than a µ-law step: the codes come back exactly
    y, rate = segment_to_array(back)
    assert rate == 8000 and y.dtype == np.float32
    codes = np.frombuffer(back.samples, np.uint8)
    assert (np.abs(y - np.clip(x, -1, 1)) <= mulaw_bound(codes)).all()


QUANT = {"PCM_U8": 1 / 128, "PCM_16": 2**-15, "PCM_24": 2**-23, "PCM_32": 2**-31, "FLOAT": 1e-7, "DOUBLE": 1e-7}


@pytest.mark.parametrize("subtype", list(QUANT))
def test_wav_sample_formats_load(tmp_path, subtype):
    sf.write(str(tmp_path / "t.wav"), tone(440, 16000, 0.25), 16000, subtype=subtype)
    seg = audio_segment_from_path(tmp_path / "t.wav")
    assert (seg.sample_rate, seg.n_samples) == (8000, 2000)
    y, _ = segment_to_array(seg)
    ref = tone(440, 8000, 0.25)
    inner = slice(100, -100)  # the resampler's edges see zeros beyond the signal
    codes = np.frombuffer(seg.samples, np.uint8)
    assert (np.abs(y - ref)[inner] <= (mulaw_bound(codes) + 2 * QUANT[subtype] + 1e-3)[inner]).all()


def test_stereo_44k_and_flac_load(tmp_path):
    left, right = tone(440, 44100, 1.0, 0.6), tone(440, 44100, 1.0, 0.2)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], 1), 44100, subtype="PCM_16")
    seg = audio_segment_from_path(tmp_path / "st.wav")
    assert (seg.sample_rate, seg.n_samples) == (8000, 8000)
    y, _ = segment_to_array(seg)
    inner = slice(200, -200)
    assert np.abs(y - tone(440, 8000, 1.0, 0.4))[inner].max() < 0.02  # mono = mean of the channels
    sf.write(str(tmp_path / "t.flac"), left, 44100, subtype="PCM_16")
    assert audio_segment_from_path(tmp_path / "t.flac", sample_rate=16000).n_samples == 16000


@pytest.mark.parametrize("rates", [(44100, 8000), (8000, 16000), (22050, 8000), (8001, 8000)])
def test_resampler_keeps_a_tone_and_rejects_aliases(rates):
    orig, new = rates
    y = resample(tone(440, orig, 1.0), orig, new)
    assert len(y) == math.ceil(orig * 1.0 * new / orig)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * new / len(y) - 440) <= 1.0
    ref = tone(440, new, 1.0)
    assert np.abs(y - ref)[len(y) // 8: -len(y) // 8].max() < 1e-3
    if 0.6 * new < 0.45 * orig:  # a tone between the two Nyquist frequencies must not fold back in
        alias = resample(tone(0.6 * new, orig, 1.0), orig, new)
        assert np.sqrt(np.mean(alias[200:-200] ** 2)) < 1e-3


def wav_bytes(tmp_path, frames=1000):
    sf.write(str(tmp_path / "ok.wav"), tone(440, 8000, frames / 8000), 8000, subtype="PCM_16")
    return bytearray((tmp_path / "ok.wav").read_bytes())


def test_bad_audio_files_give_one_line_errors(tmp_path):
    data = wav_bytes(tmp_path)
    assert data[36:40] == b"data" and data[12:16] == b"fmt "
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header_only.wav").write_bytes(data[:40])
    (tmp_path / "random.wav").write_bytes(RNG.bytes(400))
    (tmp_path / "text.flac").write_bytes(b"this is not audio\n" * 20)
    bad_align = data.copy()
    bad_align[32:34] = struct.pack("<H", 3)  # block align disagrees with 1 channel × 16 bits
    (tmp_path / "bad_align.wav").write_bytes(bad_align)
    odd = data.copy()
    odd[40:44] = struct.pack("<I", struct.unpack("<I", data[40:44])[0] - 1)  # half a frame
    (tmp_path / "odd.wav").write_bytes(odd)
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0), 8000, subtype="PCM_16")
    messages = {name: one_line_error(audio_segment_from_path, tmp_path / name)
                for name in ("truncated.wav", "header_only.wav", "random.wav", "text.flac", "bad_align.wav",
                             "odd.wav", "empty.wav", "missing.wav")}
    assert "truncated" in messages["truncated.wav"]
    assert "disagrees" in messages["bad_align.wav"]
    assert "whole number" in messages["odd.wav"]
    assert "no samples" in messages["empty.wav"]


def test_audio_bytes_read_like_files_and_long_clips_are_refused(tmp_path):
    data = bytes(wav_bytes(tmp_path))
    (tmp_path / "clip.wav").write_bytes(data)
    seg = audio_segment_from_bytes(data)
    assert seg == audio_segment_from_path(tmp_path / "clip.wav")
    assert audio_segment_from_bytes(encode_wav(seg)) == seg  # 16-bit PCM holds every µ-law level
    with pytest.raises(OmnibyteError, match="longer than the 0.01 s allowed"):
        audio_segment_from_bytes(data, max_seconds=0.01)
    for bad, what in ((data[: len(data) // 2], "truncated"), (RNG.bytes(400), "cannot read audio"), (b"", "audio")):
        with pytest.raises(OmnibyteError, match=what):
            audio_segment_from_bytes(bad)


def test_audio_arrays_and_bad_inputs():
    pcm = (tone(440, 8000, 0.1) * 32767).astype(np.int16)
    a = audio_segment_from_array(pcm, 8000)
    b = audio_segment_from_array(pcm / 32768.0, 8000)
    assert a == b
    up = audio_segment_from_array(pcm, 8000, target_rate=16000)
    assert (up.sample_rate, up.n_samples) == (16000, 1600)
    assert isinstance(a, AudioSegment) and not isinstance(a, ImageSegment)
    for bad in (np.array([0.1, np.nan]), np.zeros((2, 2, 2)), np.array(["a"])):
        with pytest.raises(OmnibyteError):
            audio_segment_from_array(bad, 8000)
    with pytest.raises(OmnibyteError):
        audio_segment_from_array(pcm, 0)
