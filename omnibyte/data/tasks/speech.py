"""Spoken words: digit strings and short phrases synthesised by espeak-ng → transcript.

Each clip varies voice (regional accents × voice variants), speed, pitch and loudness; leading
and trailing silence is trimmed, then it becomes an 8 kHz µ-law audio segment. English and
French by default, each clip in one of them, transcribed in its own language (``languages =
["en"]`` for English alone). Transcripts are lower case without punctuation, as WER/CER compare
them (French keeps its accents).

espeak-ng runs as a subprocess, several at once; each clip's settings are drawn from its own
seeded stream first, so the output does not depend on scheduling.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from omnibyte.data.tasks.common import Example, example_rng, qa_example
from omnibyte.errors import OmnibyteError
from omnibyte.media import audio_segment_from_array

NAME = "speech"
DIGITS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
}
PHRASES = {
    "en": ("hello", "thank you", "good morning", "good night", "turn left", "turn right", "stop here",
           "open the door", "close the window", "yes please", "no thanks", "red light", "green light",
           "the blue sky", "come back soon", "how are you", "see you later", "a cup of tea"),
    "fr": ("bonjour", "merci", "bonne nuit", "au revoir", "à gauche", "à droite", "oui merci", "non merci",
           "ouvre la porte", "le ciel bleu", "à bientôt", "comment ça va"),
}
VOICES = {
    "en": ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-us-nyc"),
    "fr": ("fr", "fr-be", "fr-ch"),
}
VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+f1", "+f2", "+f3", "+f4", "+klatt")
QUESTIONS = ("Transcribe the audio.", "What is said?")
ESPEAK = "espeak-ng"


@dataclass
class SpeechConfig:
    languages: list[str] = field(default_factory=lambda: ["en", "fr"])  # en and/or fr
    phrases: float = 0.3  # share of short phrases (the rest are strings of 1..max_digits digits)
    # two digits at these speeds: clips of 0.2-1.2 s (a slow three-word phrase), a document of ~4,000
    # ids on average and at most ~9,600
    max_digits: int = 2
    min_speed: int = 160  # words per minute
    max_speed: int = 240
    sample_rate: int = 8000  # Hz of the audio segment
    workers: int = 4  # espeak-ng processes at once
    question_last: bool = False  # the question after the media block, right before the answer

    def __post_init__(self):
        unknown = set(self.languages) - set(DIGITS)
        if not self.languages or unknown:
            raise ValueError(f"speech languages must be a non-empty subset of {sorted(DIGITS)}, got {self.languages}")
        if not 0 <= self.phrases <= 1:
            raise ValueError(f"speech.phrases is a share in [0, 1], got {self.phrases}")
        if not 1 <= self.max_digits <= 10:
            raise ValueError(f"speech.max_digits must be in 1..10, got {self.max_digits}")
        if not 80 <= self.min_speed <= self.max_speed <= 450:
            raise ValueError(f"need 80 ≤ min_speed ≤ max_speed ≤ 450, got {self.min_speed}, {self.max_speed}")
        if not 1000 <= self.sample_rate <= 48000:
            raise ValueError(f"speech.sample_rate must be in 1000..48000, got {self.sample_rate}")
        if self.workers < 1:
            raise ValueError(f"speech.workers must be ≥ 1, got {self.workers}")


@dataclass(frozen=True)
class Utterance:
    text: str
    language: str
    voice: str
    speed: int
    pitch: int
    peak: float  # loudness: the clip's peak amplitude after normalising


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def draw_utterance(rng: np.random.Generator, cfg: SpeechConfig) -> Utterance:
    lang = cfg.languages[int(rng.integers(len(cfg.languages)))]
    if rng.random() < cfg.phrases:
        text = PHRASES[lang][int(rng.integers(len(PHRASES[lang])))]
    else:
        k = int(rng.integers(1, cfg.max_digits + 1))
        text = " ".join(DIGITS[lang][int(d)] for d in rng.integers(0, 10, size=k))
    voice = VOICES[lang][int(rng.integers(len(VOICES[lang])))] + VARIANTS[int(rng.integers(len(VARIANTS)))]
    return Utterance(text, lang, voice, int(rng.integers(cfg.min_speed, cfg.max_speed + 1)),
                     int(rng.integers(25, 76)), float(rng.uniform(0.4, 0.95)))


def synthesize(u: Utterance) -> tuple[np.ndarray, int]:
    """espeak-ng → (float samples, sample rate), silence trimmed and peak set to u.peak."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise OmnibyteError("the speech task needs espeak-ng: apt-get install espeak-ng")
    cmd = [exe, "-v", u.voice, "-s", str(u.speed), "-p", str(u.pitch), "--stdout", u.text]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise OmnibyteError(f"espeak-ng failed for voice {u.voice} saying {u.text!r}: {msg[0]}")
    x, rate = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    loud = np.flatnonzero(np.abs(x) > 0.02 * max(np.abs(x).max(), 1e-9))
    if len(loud) == 0:
        raise OmnibyteError(f"espeak-ng produced silence for {u.text!r} (voice {u.voice})")
    pad = int(0.03 * rate)
    x = x[max(0, loud[0] - pad):loud[-1] + pad]
    return x * (u.peak / np.abs(x).max()), int(rate)


def make_example(u: Utterance, rng: np.random.Generator, cfg: SpeechConfig) -> Example:
    x, rate = synthesize(u)
    seg = audio_segment_from_array(x, rate, target_rate=cfg.sample_rate)
    question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
    return qa_example(question, seg, u.text, "transcribe", cfg.question_last, language=u.language, voice=u.voice,
                      speed=u.speed, pitch=u.pitch)


def examples(n: int, seed: int, cfg: SpeechConfig):
    if not espeak_available():
        raise OmnibyteError("the speech task needs espeak-ng: apt-get install espeak-ng")
    rngs = [example_rng(NAME, seed, i) for i in range(n)]
    utterances = [draw_utterance(rng, cfg) for rng in rngs]
    with ThreadPoolExecutor(cfg.workers) as pool:
        yield from pool.map(make_example, utterances, rngs, [cfg] * n)
