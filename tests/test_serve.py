"""omnibyte serve: the official `openai` client against a live server on 127.0.0.1 (a tiny byte
transformer), bad requests, limits, batching across requests, disconnects and SIGTERM."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient
from helpers import FakeModel, tiny_model
from PIL import Image

from omnibyte.cli import main
from omnibyte.format import EOS, VOCAB_SIZE
from omnibyte.serve import ServeSettings, TextStream, create_app, run_in_thread
from omnibyte.serve.text import unescape

KEY = "test-key"
SETTINGS = dict(max_batch=4, max_context=1024, max_tokens=512, max_image_side=16, max_audio_seconds=0.5, max_queue=8,
                max_body_bytes=1 << 20)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny byte transformer whose EOS logit is always 0: greedy decoding never ends early."""
    path = tmp_path_factory.mktemp("serve") / "tiny"
    m = tiny_model(seed=3)
    with torch.no_grad():
        m.head.weight[EOS] = 0
    m.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(run_dir):
    app = create_app(run_dir, ServeSettings(api_key=KEY, **SETTINGS))
    with run_in_thread(app) as url:
        yield url, app.state.engine


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=60)


def png_uri(w: int, h: int, seed: int = 0) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_b64(seconds: float, rate: int = 8000) -> str:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * t), rate, subtype="PCM_16", format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


# ----------------------------------------------------------------------------- the openai client


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"


def test_completions_streamed_and_not_agree(client):
    args = dict(model="tiny", prompt="In the beginning", max_tokens=40, temperature=0.9, seed=11)
    whole = client.completions.create(**args)
    assert whole.usage.prompt_tokens == 1 + len(b"In the beginning")
    assert whole.usage.completion_tokens == 40 or whole.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_streamed_and_not_agree_with_usage(client):
    args = dict(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "And God said"}], max_tokens=30, seed=5)
    whole = client.chat.completions.create(**args)
    assert whole.usage.prompt_tokens == 1 + len(b"Be brief.\nAnd God said")
    text = ""
    usage = None
    for chunk in client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == whole.choices[0].message.content
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_greedy_output_equals_omnibyte_generate(client, run_dir, tmp_path, capsys):
    prompt = "In the beginning God"
    out = tmp_path / "raw.bin"
    assert main(["generate", str(run_dir), "--prompt", prompt, "--max-bytes", "48", "--temperature", "0",
                 "--seed", "0", "--out", str(out), "--device", "cpu"]) == 0
    want = out.read_bytes().decode("utf-8", "backslashreplace")
    got = client.completions.create(model="tiny", prompt=prompt, max_tokens=48, temperature=0, seed=0)
    assert got.choices[0].text == want
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=48,
                                          temperature=0)
    assert chat.choices[0].message.content == want


def test_image_question(client):
    r = client.chat.completions.create(model="tiny", max_tokens=12, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png_uri(8, 8)}}, {"type": "text", "text": "What is it?"}]}])
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens == 1 + (1 + 5 + 8 * 8 * 3 + 1) + len(b"What is it?")  # the image went in whole


def test_drawing_returns_a_png_of_the_asked_size(client):
    for channels in (1, 3):
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Draw a shoe.\n"}],
                                           extra_body={"modalities": ["image"], "image_size": "8x6",
                                                       "image_channels": channels})
        (part,) = r.choices[0].message.content
        assert part["type"] == "image_url" and r.choices[0].finish_reason == "stop"
        url = part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert img.size == (8, 6) and img.mode == ("L" if channels == 1 else "RGB")


def test_audio_transcription_request_and_a_generated_clip(client):
    r = client.chat.completions.create(model="tiny", max_tokens=10, messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": wav_b64(0.1), "format": "wav"}},
        {"type": "text", "text": "Transcribe:"}]}])
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens == 1 + (1 + 9 + 800 + 1) + len(b"Transcribe:")
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Say yes.\n"}],
                                       extra_body={"modalities": ["audio"], "audio_seconds": 0.05})
    (part,) = r.choices[0].message.content
    samples, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    assert part["type"] == "input_audio" and rate == 8000 and len(samples) == 400


def test_api_key_is_required(server):
    bad = openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    assert httpx.post(server[0] + "/v1/completions", content=b"{not json").status_code == 401


# ----------------------------------------------------------------------------- batching


def test_concurrent_requests_share_steps_and_each_gets_its_lone_output(server, client):
    """Six streaming requests at once on four rows: rows join and leave the running batch, steps
    serve several rows, and each answer is what the same request gets alone (same seed)."""
    engine = server[1]
    reqs = [dict(model="tiny", prompt=f"{i} In the beginning"[: 6 + 3 * i], max_tokens=20 + 9 * i,
                 temperature=1.0, top_p=0.9, seed=i) for i in range(6)]
    alone = [client.completions.create(**r).choices[0].text for r in reqs]
    steps0, rows0 = engine.stats["steps"], engine.stats["rows"]
    got = [None] * len(reqs)

    def ask(i):
        got[i] = "".join(c.choices[0].text for c in client.completions.create(**reqs[i], stream=True))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == alone
    steps, rows = engine.stats["steps"] - steps0, engine.stats["rows"] - rows0
    assert rows / steps > 1.5, (rows, steps)  # steps were shared


def test_a_client_that_goes_away_frees_its_row(server):
    url, engine = server
    body = {"model": "tiny", "prompt": "x", "max_tokens": 500, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=30) as r:
        for _ in zip(range(3), r.iter_lines()):
            pass
        assert engine.running == 1
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.running == 0


# ----------------------------------------------------------------------------- bad requests


def test_bad_requests_get_4xx_json_errors_and_the_server_keeps_serving(server):
    url = server[0]
    auth = {"Authorization": f"Bearer {KEY}"}
    chat = "/v1/chat/completions"
    msg = [{"role": "user", "content": "hi"}]

    def image_msg(uri):
        return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}]}]

    def audio_msg(data):
        return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}]}]

    png = base64.b64decode(png_uri(8, 8).split(",")[1])
    corrupt_png = "data:image/png;base64," + base64.b64encode(png[:60]).decode()
    wav = base64.b64decode(wav_b64(0.1))
    big = Image.new("L", (5000, 5000))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    huge_canvas = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    cases = [
        ("invalid JSON", chat, b'{"model": "tiny", "messages": [', 400),
        ("not an object", chat, json.dumps([1, 2]).encode(), 400),
        ("messages not a list", chat, {"model": "tiny", "messages": "hello"}, 400),
        ("max_tokens a string", chat, {"model": "tiny", "messages": msg, "max_tokens": "ten"}, 400),
        ("temperature out of range", chat, {"model": "tiny", "messages": msg, "temperature": 7}, 400),
        ("unknown role", chat, {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400),
        ("unknown model", chat, {"model": "gpt-4o", "messages": msg}, 404),
        ("no model", chat, {"messages": msg}, 400),
        ("huge prompt", "/v1/completions", {"model": "tiny", "prompt": "a" * 5000}, 400),
        ("body too large", "/v1/completions", {"model": "tiny", "prompt": "a" * (2 << 20)}, 413),
        ("max_tokens 10^9", chat, {"model": "tiny", "messages": msg, "max_tokens": 10**9}, 400),
        ("n = 3", chat, {"model": "tiny", "messages": msg, "n": 3}, 400),
        ("corrupt base64", chat, {"model": "tiny", "messages": image_msg("data:image/png;base64,@@@@")}, 400),
        ("a remote URL", chat, {"model": "tiny", "messages": image_msg("https://example.com/cat.png")}, 400),
        ("corrupt PNG", chat, {"model": "tiny", "messages": image_msg(corrupt_png)}, 400),
        ("a 25-megapixel PNG", chat, {"model": "tiny", "messages": image_msg(huge_canvas)}, 400),
        ("corrupt WAV", chat, {"model": "tiny", "messages": audio_msg(base64.b64encode(wav[:30]).decode())}, 400),
        ("truncated WAV", chat, {"model": "tiny", "messages": audio_msg(base64.b64encode(wav[:-400]).decode())}, 400),
        ("a long clip", chat, {"model": "tiny", "messages": audio_msg(wav_b64(2.0))}, 400),
        ("image size 65535²", chat, {"model": "tiny", "messages": msg, "modalities": ["image"],
                                     "image_size": "65535x65535"}, 400),
        ("image size 0", chat, {"model": "tiny", "messages": msg, "modalities": ["image"], "image_size": "0x4"}, 400),
        ("image without a size", chat, {"model": "tiny", "messages": msg, "modalities": ["image"]}, 400),
        ("ten-minute clip", chat, {"model": "tiny", "messages": msg, "modalities": ["audio"],
                                   "audio_seconds": 600}, 400),
        ("unknown route", "/v1/embeddings", {"model": "tiny", "input": "x"}, 404),
    ]
    for name, path, body, status in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(url + path, content=content, headers={**auth, "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["message"] and "\n" not in err["message"] and {"type", "code"} <= set(err), (name, err)
    r = httpx.post(url + chat, json={"model": "tiny", "messages": msg, "max_tokens": 5}, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"


def test_a_full_queue_gets_503_and_in_process_client(run_dir):
    """In-process with TestClient: one row and a queue of one; a third request while both are taken
    gets 503, and the first two still finish."""
    app = create_app(run_dir, ServeSettings(max_batch=1, max_queue=1, max_context=4096, max_tokens=4000))
    with TestClient(app) as c:
        while c.get("/health").status_code != 200:
            time.sleep(0.02)
        engine = app.state.engine
        body = {"model": "tiny", "prompt": "x", "max_tokens": 300, "temperature": 0, "stream": True}
        results = []

        def long_stream():
            with c.stream("POST", "/v1/completions", json=body) as r:
                results.append((r.status_code, [x for x in r.iter_lines() if x][-2:]))

        threads = [threading.Thread(target=long_stream) for _ in range(2)]
        threads[0].start()
        while engine.running < 1:
            time.sleep(0.01)
        threads[1].start()
        while engine.queued < 1:
            time.sleep(0.01)
        r = c.post("/v1/completions", json={**body, "stream": False})
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
        for t in threads:
            t.join(600)  # generous: a loaded machine decodes slowly
        assert [s for s, _ in results] == [200, 200] and all(lines[-1] == "data: [DONE]" for _, lines in results)


class Slow(FakeModel):
    """Loads only when `loaded` is set."""

    def __init__(self):
        super().__init__()
        self.loaded = threading.Event()

    def eval(self):
        self.loaded.wait(30)
        return super().eval()

    def logits(self, ids):
        return torch.zeros(*ids.shape, VOCAB_SIZE)


def test_health_is_503_until_the_model_is_loaded_and_a_bad_model_is_reported():
    slow = Slow()
    with TestClient(create_app(slow, ServeSettings(max_batch=1, max_context=64))) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = c.post("/v1/completions", json={"model": "omnibyte", "prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["message"] == "the model is loading"
        slow.loaded.set()
        deadline = time.monotonic() + 10
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    with TestClient(create_app("/nonexistent/run")) as c:
        while (r := c.get("/health")).json()["status"] == "loading":
            time.sleep(0.01)
        assert r.status_code == 503 and r.json()["status"] == "error" and "/nonexistent/run" in r.json()["error"]
        r = c.post("/v1/completions", json={"model": "run", "prompt": "x"})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------- text pieces


class Scripted(FakeModel):
    """A 'model' that writes `text` after the byte '>', one byte per step (10 ms each, so that the
    pieces of a stream arrive one by one), then EOS: its bytes are all different, so each one
    names the next."""

    arch = "scripted"

    def __init__(self, text: str):
        super().__init__()
        data = b">" + text.encode("utf-8")
        self.after = {a: b for a, b in zip(data, data[1:])}

    def logits(self, ids):
        time.sleep(0.01)
        out = torch.full((*ids.shape, VOCAB_SIZE), -10.0)
        for (r, t), i in np.ndenumerate(ids.numpy()):
            out[r, t, self.after.get(int(i), EOS)] = 10.0
        return out


def test_a_stream_never_splits_a_utf8_character_and_stops_before_a_stop_sequence():
    text = "hé ✓😀!"
    assert len(set(text.encode())) == len(text.encode())
    app = create_app(Scripted(text), ServeSettings(max_batch=2, max_context=256))
    with run_in_thread(app) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        pieces = [ch.choices[0].text for ch in c.completions.create(model="omnibyte", prompt="go>", temperature=0,
                                                                    stream=True)]
        assert "".join(pieces) == text
        assert [p for p in pieces if p] == ["h", "é", " ", "✓", "😀", "!"]  # whole characters, as they complete
        r = c.completions.create(model="omnibyte", prompt="go>", temperature=0, stop=["😀", "xyz"])
        assert r.choices[0].text == "hé ✓" and r.choices[0].finish_reason == "stop"
        r = c.completions.create(model="omnibyte", prompt="go>", temperature=0, max_tokens=5)  # cut inside ✓
        assert r.choices[0].text == "hé \\xe2" and r.choices[0].finish_reason == "length"


def test_text_stream_escapes_and_holds_back():
    s = TextStream([b"STOP"])
    assert s.push(b"ab\xc3") == "ab"  # half of "é" waits
    assert s.push(b"\xa9\xff") == "é\\xff"  # a byte that is never UTF-8: the one escape
    assert s.push(b"ST") == ""  # may begin the stop sequence
    assert s.push(b"x") == "STx"
    assert s.push(b"yST") == "y" and s.push(b"OP tail") == "" and s.stopped
    s = TextStream()
    assert s.push(b"\xe2\x9c") == "" and s.finish() == "\\xe2\\x9c"
    raw = bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)) + "é \\x41".encode()
    s = TextStream()
    sent = "".join(s.push(raw[i:i + 1]) for i in range(len(raw))) + s.finish()
    assert unescape(sent) == raw  # back to the bytes (raw holds no text that looks like an escape of 80..ff)


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_ends_open_streams_cleanly(run_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "omnibyte", "serve", str(run_dir), "--port", str(port),
                             "--device", "cpu", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # importing torch and fastapi takes long on a loaded machine
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        body = {"model": "tiny", "prompt": "x", "max_tokens": 4000, "temperature": 0, "stream": True}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            for line in filter(None, r.iter_lines()):
                lines.append(line)
                if len(lines) == 3:
                    proc.send_signal(signal.SIGTERM)
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
        assert lines[-1] == "data: [DONE]"
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(len(e["choices"][0]["text"]) for e in events) < 4000  # ended early, not at max_tokens
        assert proc.wait(120) == 143  # uvicorn re-raises the signal once it has shut down: the CLI's SIGTERM status
        log = proc.stdout.read().decode()
        assert "Traceback" not in log and "Finished server process" in log, log
        assert log.rstrip().endswith("omnibyte serve: terminated"), log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line_refuses_bad_settings_and_a_model_it_cannot_serve_in_one_line(run_dir, capsys):
    for args, words in [(["/nonexistent/run"], "no such model or run directory"),
                        ([str(run_dir), "--port", "70000"], "must be in 0..65535"),
                        ([str(run_dir), "--max-batch", "0"], "must be ≥ 1"),
                        ([str(run_dir), "--max-audio-seconds", "nan"], "finite"),
                        ([str(run_dir), "--device", "tpu"], "unknown device"),
                        # every row's state is allocated at start: settings beyond memory stop the server
                        ([str(run_dir), "--port", "0", "--max-batch", "100000", "--max-context", "1000000"],
                         "lower max_batch (--max-batch) or max_context (--max-context)")]:
        try:
            rc = main(["serve", *args])
        except SystemExit as e:  # argparse's errors exit
            rc = e.code
        assert rc == 2, args
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("omnibyte serve: ") and words in err, (args, err)
