"""Lossless compression with a model (`omnibyte.compress`): round trips of random bytes, empty input,
text, an image and a WAV with every model family; identical bytes when decompressing with another
thread count and chunk batch (in another process) than compressing; the guard that keeps decoding
exact under last-bit noise; and one-line errors, with nothing written, for a wrong model and
truncated or damaged files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model
from PIL import Image
from test_model_contract import ADAPTERS, MODELS, make

from omnibyte.cli import main
from omnibyte.compress import (
    CorruptFile,
    ProbabilityMismatch,
    Source,
    WrongModel,
    compress,
    decompress,
    freqs,
    model_hash,
    read_header,
    read_source,
)
from omnibyte.compress.coder import Layout
from omnibyte.format import AUDIO_MULAW8, AudioSegment
from omnibyte.media import save_wav

TEXT = (b"In the beginning God created the heaven and the earth. And the earth was without form, and void; "
        b"and darkness was upon the face of the deep.\n") * 3


def roundtrip(model, source: Source, **kw) -> bytes:
    blob = compress(model, source, **kw)
    out = decompress(model, blob, batch=kw.get("batch", 32))
    assert (out.kind, out.media_header, out.payload) == (source.kind, source.media_header, source.payload)
    return blob


# --------------------------------------------------------------------------- the integer map


def test_weight_table_is_integer_and_monotone():
    assert freqs.EXP[0] == 1 << freqs.WEIGHT_BITS and freqs.EXP[-1] >= 1
    assert (np.diff(freqs.EXP) < 0).all()
    assert freqs.EXP[16] == round(2**30 / np.e)  # e^-1 at 1/16-nat steps


def test_windows_cover_the_chunk_and_fit_the_context():
    for prefix, context, align, n in [((257,), 16, 1, 100), ((257, 259, 0, 5, 0, 3, 1), 40, 5, 203),
                                      ((257,), 9, 1, 3), ((257,), 12, 20, 77)]:
        layout = Layout(prefix, context, align)
        windows = list(layout.windows(n))
        assert windows[0][:2] == (0, 0) and windows[-1][2] == n
        for (tail, first, end), nxt in zip(windows, windows[1:] + [None]):
            assert tail <= first < end and len(prefix) + end - 1 - tail <= context - 1
            if nxt is not None:
                assert nxt[1] == end and (nxt[0] % align == 0 or align > (context - len(prefix)) // 2)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 2, TEXT], ids=["empty", "one", "all", "text"])
def test_round_trip_bytes(payload):
    model = tiny_model()
    blob = roundtrip(model, Source(payload), chunk=100, context=48, batch=3)
    assert read_header(blob).n_chunks == -(-len(payload) // 100)


def test_random_bytes_cost_about_eight_bits():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    blob = roundtrip(tiny_model(), Source(noise), chunk=1000, context=64)
    assert len(blob) < 3000 * 1.02 + 40


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_round_trips_text(name, entropy_dir):
    roundtrip(make(name, entropy_dir), Source(TEXT[:300]), chunk=120, context=40, batch=2)


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_image_and_wav_round_trip_as_media(adapter, entropy_dir, tmp_path):
    model = make(f"blt-static+{adapter}", entropy_dir)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    src = read_source(tmp_path / "a.png", as_media=True)
    assert src.kind == "image" and src.payload == pixels.tobytes()
    roundtrip(model, src, chunk=50, context=64)  # 50 → 42: chunks and windows start at a row of 21 bytes
    save_wav(AudioSegment(8000, 300, AUDIO_MULAW8, rng.integers(0, 256, 300, dtype=np.uint8).tobytes()),
             tmp_path / "a.wav")
    roundtrip(model, read_source(tmp_path / "a.wav", as_media=True), chunk=128, context=48)


def test_one_chunk_decodes_alone():
    model = tiny_model()
    blob = compress(model, Source(TEXT), chunk=64, context=32)
    assert decompress(model, blob, chunks=[2]).payload == TEXT[128:192]


# --------------------------------------------------------------------------- determinism


DECODE_ELSEWHERE = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(int(sys.argv[3]))
    from omnibyte.compress import decompress
    from omnibyte.models import OmniModel
    out = decompress(OmniModel.from_pretrained(sys.argv[1]), open(sys.argv[2], "rb").read(), batch=int(sys.argv[4]))
    sys.stdout.buffer.write(out.payload)
""")


def test_another_process_thread_count_and_batch_decode_the_same_bytes(tmp_path):
    """Compressed here on one thread with all chunks in one batch; decompressed in a fresh process
    on two threads, one chunk at a time."""
    model = tiny_model(dim=64, n_layers=2, n_heads=4)
    with torch.no_grad():  # larger logits than at init: quantisation boundaries everywhere
        model.head.weight.mul_(40)
    model.save_pretrained(tmp_path / "m")
    data = TEXT[:200] + bytes(np.random.default_rng(2).integers(0, 256, 200, dtype=np.uint8))
    assert torch.get_num_threads() == 1
    blob = compress(model, Source(data), chunk=100, context=40, batch=8)
    (tmp_path / "f.ob").write_bytes(blob)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", DECODE_ELSEWHERE, str(tmp_path / "m"), str(tmp_path / "f.ob"), "2",
                           "1"], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout == data


def noisy(model, scale: float, seed: int = 0):
    """`model` whose cached decoding adds uniform noise of ±scale to every logit (the forward pass,
    which the encoder uses, stays exact): another machine's last bits, enlarged."""
    gen = torch.Generator().manual_seed(seed)
    step = model.step

    def shaken(state, ids):
        logits = step(state, ids)
        return logits + (torch.rand(logits.shape, generator=gen, dtype=logits.dtype) * 2 - 1) * scale

    model.step = shaken
    return model


def test_noise_inside_the_guard_decodes_exactly_thanks_to_escapes(monkeypatch):
    """With the guard widened to 1/50 of a quantisation step, noise of 1/100 of a step makes many
    logits round the other way: the escapes put every one back; without them decoding fails."""
    monkeypatch.setattr(freqs, "_GAMMA", 0.02)
    monkeypatch.setattr(freqs, "GUARD", 0.02 / freqs.SCALE)
    model = tiny_model()
    blob = compress(model, Source(TEXT), chunk=200, context=48)
    from omnibyte.compress.container import dump, load

    header, chunks = load(blob)
    assert sum(len(c.escapes) for c in chunks) > 20
    assert decompress(noisy(model, 0.01 / freqs.SCALE), blob).payload == TEXT
    for c in chunks:
        c.escapes = []
    with pytest.raises(ProbabilityMismatch):
        decompress(noisy(tiny_model(), 0.01 / freqs.SCALE), dump(header, chunks))


def test_noise_below_the_guard_decodes_exactly_and_beyond_it_is_an_error_not_a_wrong_output():
    """1e-11 nats is 100 times fp64's observed last-bit differences and 1/93 of the real guard."""
    model = tiny_model()
    blob = compress(model, Source(TEXT), chunk=100, context=48)
    assert decompress(noisy(tiny_model(), 1e-11), blob).payload == TEXT
    with pytest.raises(ProbabilityMismatch, match="differ"):
        decompress(noisy(model, 0.05), blob)


# --------------------------------------------------------------------------- bad input


def test_wrong_model_truncated_and_damaged_files_are_one_line_errors():
    model = tiny_model()
    blob = compress(model, Source(TEXT), chunk=100, context=48)
    with pytest.raises(WrongModel, match="another model"):
        decompress(tiny_model(seed=1), blob)
    for bad in (blob[:-1], blob[:30], blob[:10] + bytes([blob[10] ^ 1]) + blob[11:], b"", b"PK\x03\x04"):
        with pytest.raises(CorruptFile):
            decompress(model, bad)
    assert model_hash(model) == model_hash(tiny_model()) != model_hash(tiny_model(seed=1))


def test_media_that_would_change_is_refused(tmp_path):
    Image.new("RGBA", (4, 4), (1, 2, 3, 100)).save(tmp_path / "alpha.png")
    with pytest.raises(Exception, match="RGBA image would not survive"):
        read_source(tmp_path / "alpha.png", as_media=True)
    import soundfile as sf

    sf.write(tmp_path / "pcm.wav", (np.arange(400) * 37 % 2000).astype(np.int16), 16000, subtype="PCM_16")
    with pytest.raises(Exception, match="not omnibyte µ-law levels"):
        read_source(tmp_path / "pcm.wav", as_media=True)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(Exception, match="--as-media reads images"):
        read_source(tmp_path / "notes.txt", as_media=True)


# --------------------------------------------------------------------------- command line


def test_cli_round_trip_and_errors_leave_no_file(tmp_path, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    tiny_model(seed=1).save_pretrained(tmp_path / "other")
    src = tmp_path / "notes.txt"
    src.write_bytes(TEXT)
    m = str(tmp_path / "m")
    assert main(["compress", m, str(src), "--chunk-size", "100", "--context", "48"]) == 0
    ob = tmp_path / "notes.txt.ob"
    assert main(["decompress", m, str(ob), "-o", str(tmp_path / "back.txt"), "--batch", "1"]) == 0
    assert (tmp_path / "back.txt").read_bytes() == TEXT
    assert "bits/byte" in capsys.readouterr().out

    def fails(args, words):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err

    fails(["decompress", m, str(ob)], "exists (--force overwrites it)")  # notes.txt is there already
    fails(["decompress", str(tmp_path / "other"), str(ob), "-o", str(tmp_path / "o1")], "another model")
    (tmp_path / "cut.ob").write_bytes(ob.read_bytes()[:-3])
    fails(["decompress", m, str(tmp_path / "cut.ob"), "-o", str(tmp_path / "o2")], "truncated or damaged")
    fails(["compress", m, str(tmp_path / "missing.txt")], "no such file")
    fails(["compress", m, str(src), "--as-media", "-o", str(tmp_path / "o3")], "--as-media reads images")
    fails(["compress", m, str(src), "-o", str(tmp_path / "o4"), "--context", "2"], "too short")
    fails(["decompress", m, str(ob), "-o", str(tmp_path / "o5"), "--batch", "0"], "batch must be ≥ 1")
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o", "missing")) for p in Path(tmp_path).iterdir())

    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    Image.fromarray(pixels).save(tmp_path / "tile.bmp")
    assert main(["compress", m, str(tmp_path / "tile.bmp"), "--as-media"]) == 0
    capsys.readouterr()
    fails(["decompress", m, str(tmp_path / "tile.bmp.ob"), "-o", str(tmp_path / "o6.bmp")], "name the output *.png")
    assert main(["decompress", m, str(tmp_path / "tile.bmp.ob")]) == 0  # → tile.png: pixels, as PNG
    assert (np.asarray(Image.open(tmp_path / "tile.png")) == pixels).all()
