"""The web page in a real browser: Playwright drives Debian's chromium (`make setup` installs it;
Playwright's own browser download is never used) against a live server with a tiny model."""

from __future__ import annotations

import io
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from omnibyte.format import EOS
from omnibyte.models.transformer import Transformer
from omnibyte.serve import ServeSettings, create_app, run_in_thread

CHROMIUM = "/usr/bin/chromium"
expect.set_options(timeout=60_000)  # a loaded machine is slow to render; a working page passes in far less
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run",
         # a microphone that plays a test tone, allowed without asking
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium for these tests")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Paced(Transformer):
    """The tiny transformer at a few hundred bytes a second, as a real model decodes: its answer
    reaches the browser in many pieces, not in one read."""

    def step(self, state, ids, rows=None):
        time.sleep(0.003)
        return super().step(state, ids, rows)


@pytest.fixture(scope="module")
def site():
    m = tiny_model(seed=2)
    paced = Paced(m.cfg).eval()
    paced.load_state_dict(m.state_dict())
    with torch.no_grad():
        paced.head.weight[EOS] = 0  # answers run to max bytes
    app = create_app(paced, ServeSettings(max_batch=4, max_context=40_000, max_image_side=32, max_audio_seconds=4.0,
                                          model_name="tiny"))
    with run_in_thread(app) as url:
        yield url


@pytest.fixture
def page(browser, site):
    p = browser.new_page()
    p.goto(site)
    expect(p.locator("#model")).to_have_text("tiny")
    # count the answer's text updates: streamed text arrives in several
    p.evaluate("""() => { window.textUpdates = 0;
        new MutationObserver(() => window.textUpdates++).observe(document.getElementById('log'),
            {subtree: true, childList: true, characterData: true}); }""")
    yield p
    p.close()


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        t = np.arange(int(seconds * rate)) / rate
        w.writeframes((8000 * np.sin(2 * np.pi * 330 * t)).astype("<i2").tobytes())
    return buf.getvalue()


def ask(page, prompt: str):
    page.fill("#prompt", prompt)
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".meta")).to_contain_text("bytes in", timeout=180_000)  # generous: a loaded machine
    return answer


def test_chat_streams_text_reads_an_image_and_a_clip_draws_and_shows_patches(page, tmp_path_factory):
    expect(page.locator("#record")).to_be_visible()  # 127.0.0.1 is a secure context: the microphone may be asked
    page.fill("#max-tokens", "120")
    answer = ask(page, "In the beginning")
    assert len(answer.locator(".text").inner_text()) > 20
    assert page.evaluate("window.textUpdates") > 10  # the text came in pieces

    page.set_input_files("#attach", files=[{"name": "dots.png", "mimeType": "image/png", "buffer": png(6, 4)}])
    page.set_input_files("#attach", files=[{"name": "tone.wav", "mimeType": "audio/wav", "buffer": wav(0.2)}])
    expect(page.locator("#attachments .chip")).to_have_count(2)
    answer = ask(page, "What is in the picture and the sound?")
    question = page.locator(".msg.user").last
    expect(question.locator(".parts img")).to_have_count(1)
    expect(question.locator(".parts audio")).to_have_count(1)
    # the conversation so far, then the image (6·4·3 + 7 ids) and the clip (0.2 s at 8 kHz + 11 ids) whole
    first_answer = page.evaluate("() => page.history[1].content")
    asked = (1 + len(b"In the beginning") + 1 + len(first_answer.encode()) + 1 + (6 * 4 * 3 + 7) + (1600 + 11)
             + len(b"What is in the picture and the sound?"))
    meta = answer.locator(".meta").inner_text()
    assert f"{asked} bytes in" in meta, meta

    page.select_option("#mode", "image")
    page.fill("#image-size", "12x8")
    answer = ask(page, "Draw a shoe.")
    img = answer.locator(".parts img")
    expect(img).to_have_count(1)
    assert img.evaluate("i => i.complete && [i.naturalWidth, i.naturalHeight]") == [12, 8]

    page.select_option("#mode", "audio")
    page.fill("#audio-seconds", "0.05")
    answer = ask(page, "Say seven.")
    expect(answer.locator(".parts audio")).to_have_count(1)
    assert answer.locator(".parts audio").evaluate("a => a.src.startsWith('data:audio/wav;base64,')")

    first = page.locator(".msg.assistant").first
    first.get_by_role("button", name="patches").click()
    frame = first.locator("iframe.patches")
    expect(frame).to_have_count(1)
    expect(frame.content_frame.locator("body")).to_contain_text("patches")
    shot = tmp_path_factory.mktemp("screens") / "page.png"
    height = page.evaluate("document.getElementById('log').scrollHeight")
    page.set_viewport_size({"width": 1280, "height": height + 220})  # the whole conversation in one picture
    page.screenshot(path=shot)
    assert Image.open(shot).size[0] > 0


def test_errors_show_on_the_page(page):
    page.select_option("#mode", "image")
    page.fill("#image-size", "500x500")
    page.fill("#prompt", "Draw a big one.")
    page.click("#send")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_class("msg assistant error")
    expect(answer.locator(".meta")).to_contain_text("at most 32 pixels a side")


def test_a_recording_from_the_microphone_is_asked_about(page):
    alerts = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    page.click("#record")
    expect(page.locator("#record")).to_have_text("stop")
    page.wait_for_timeout(300)
    page.click("#record")
    expect(page.locator("#attachments .chip")).to_have_count(1)
    assert alerts == []
    expect(page.locator("#attachments .chip")).to_contain_text("recording")
    page.fill("#max-tokens", "8")
    answer = ask(page, "What was said?")
    expect(page.locator(".msg.user").last.locator(".parts audio")).to_have_count(1)
    meta = answer.locator(".meta").inner_text()
    clip = int(meta.split(" bytes in")[0].split()[-1]) - 1 - len(b"What was said?") - 11  # ids of the samples
    assert 0.2 * 8000 < clip <= 4 * 8000, meta  # the 0.3 s recorded (longer when clicks come late), at 8 kHz
