import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import FakeModel
from PIL import Image

from omnibyte.errors import OmnibyteError
from omnibyte.format import (
    BOA,
    BOI,
    BOS,
    EOA,
    EOI,
    EOS,
    PAD,
    VOCAB_SIZE,
    AudioSegment,
    FormatError,
    ImageSegment,
    TextSegment,
    decode,
    decode_segments,
)
from omnibyte.generate import SamplingConfig, generate
from omnibyte.generate.multimodal import (
    ModalityConstraint,
    PartialBlock,
    _field_bytes,
    audio_block_prefix,
    build_prompt,
    image_block_prefix,
    open_block,
    remaining_block_len,
    save_outputs,
    split_outputs,
)
from omnibyte.media import image_segment_from_path, segment_to_pixels
from omnibyte.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4})


class Adversary(FakeModel):
    """A 'model' that ranks the ids a constraint must forbid highest: PAD, BOS, EOI, EOA, BOA,
    BOI, EOS, then bytes in a random order."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.ranking = torch.randn(VOCAB_SIZE, generator=g)
        for rank, tok in enumerate([PAD, BOS, EOI, EOA, BOA, BOI, EOS]):
            self.ranking[tok] = 100.0 - rank

    def logits(self, ids):
        return self.ranking.expand(*ids.shape, VOCAB_SIZE).clone()


# ----------------------------------------------------------------------------- prompts


def test_prompt_with_image_and_audio_has_exact_length(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    sf.write(str(tmp_path / "clip.wav"), np.zeros(4000), 16000, subtype="PCM_16")  # 0.25 s → 2000 samples
    ids = build_prompt(["look: ", pixels, Path(tmp_path / "clip.wav"), "ok"])
    assert ids[0] == BOS and EOS not in ids
    assert len(ids) == 1 + 6 + (1 + 5 + 5 * 4 * 3 + 1) + (1 + 9 + 2000 + 1) + 2
    segs = decode_segments(ids[1:])
    assert [type(s) for s in segs] == [TextSegment, ImageSegment, AudioSegment, TextSegment]
    assert (segs[1].width, segs[1].height, segs[1].channels) == (5, 4, 3)
    assert (segs[2].sample_rate, segs[2].n_samples) == (8000, 2000)
    assert remaining_block_len(ids) == 0


def test_prompt_parts_of_every_kind(tmp_path):
    img = Image.new("L", (3, 2), 7)
    img.save(tmp_path / "a.png")
    seg = ImageSegment(1, 1, 1, b"\x09")
    ids = build_prompt([b"\xff\x00", img, Path(tmp_path / "a.png"), seg, np.zeros(10), str(tmp_path / "a.png")],
                       image_size=(2, 2))
    segs = decode_segments(ids[1:])
    assert segs[0] == TextSegment(b"\xff\x00")
    assert segs[1] == segs[2] == ImageSegment(2, 2, 1, bytes([7] * 4))  # both resized to image_size
    assert segs[3] == seg
    assert segs[4].n_samples == 10 and segs[4].sample_rate == 8000
    assert segs[5] == TextSegment(str(tmp_path / "a.png").encode())  # a str is text, never a file
    with pytest.raises(OmnibyteError, match="not an image or audio"):
        build_prompt([Path(tmp_path / "notes.txt")])
    with pytest.raises(OmnibyteError):
        build_prompt([3.5])
    with pytest.raises(OmnibyteError):
        build_prompt([np.zeros((2, 2))])  # 2-D float: neither audio nor pixels


def test_block_prefixes_and_remaining_lengths():
    assert image_block_prefix(28, 28, 1) == [BOI, 0, 28, 0, 28, 1]
    assert audio_block_prefix(1.0) == [BOA, 0, 0, 0x1F, 0x40, 0, 0, 0x1F, 0x40, 1]
    assert remaining_block_len([BOS, *image_block_prefix(28, 28, 1)]) == 28 * 28 + 1
    assert remaining_block_len([BOS, *audio_block_prefix(1.0)]) == 8000 + 1
    assert remaining_block_len([BOS, *image_block_prefix(28, 28, 1), 5, 6]) == 28 * 28 - 1
    assert remaining_block_len([BOS, *image_block_prefix(28, 28)]) == 1 + 28 * 28 * 3 + 1  # channel open
    assert remaining_block_len([BOS, BOI], max_image_side=4) == 5 + 4 * 4 * 3 + 1
    with pytest.raises(OmnibyteError):
        image_block_prefix(0, 3, 1)
    with pytest.raises(OmnibyteError):
        image_block_prefix(3, 3, 2)
    with pytest.raises(OmnibyteError):
        audio_block_prefix(0.0)


def test_from_prompt_rejects_malformed_prompts():
    for bad in ([BOS, 65, EOI], [BOS, BOI, 0, EOS], [BOS, *image_block_prefix(1, 1, 1), 9, 9],
                [BOS, 1, PAD], [BOS, BOI, 0, 1, 0, 1, 2]):
        with pytest.raises(FormatError):
            ModalityConstraint.from_prompt(bad)
    with pytest.raises(OmnibyteError, match="cannot be completed"):
        ModalityConstraint.from_prompt([BOS, BOI, 5], max_image_side=256)  # width ≥ 1280
    with pytest.raises(OmnibyteError):
        ModalityConstraint(allow_open=("video",))


# ----------------------------------------------------------------------------- the constraint


@pytest.mark.parametrize("ranges", [[(1, 256)], [(1, 1)], [(300, 301)], [(0, 65535)], [(8000, 8000), (16000, 16000)],
                                    [(255, 257), (1000, 1030)]])
def test_field_bytes_reach_exactly_the_allowed_values(ranges):
    reached = set()
    for hi_lo, hi_hi in _field_bytes([], 2, ranges):
        for hi in range(hi_lo, hi_hi + 1):
            for lo_lo, lo_hi in _field_bytes([hi], 2, ranges):
                reached.update(hi * 256 + lo for lo in range(lo_lo, lo_hi + 1))
    assert reached == set(itertools.chain.from_iterable(range(a, b + 1) for a, b in ranges))


def test_masks_by_state():
    c = ModalityConstraint(allow_open=("image",))
    m = c.allowed(VOCAB_SIZE + 5)  # models may round their vocabulary up
    assert m[:256].all() and m[EOS] and m[BOI]
    assert not m[[PAD, BOS, EOI, EOA, BOA]].any() and not m[VOCAB_SIZE:].any()
    assert not ModalityConstraint.text_only().allowed(VOCAB_SIZE)[[BOI, BOA]].any()
    c = ModalityConstraint.from_prompt([BOS, BOI], image_channels=(1,), max_image_side=300)
    assert c.allowed(VOCAB_SIZE).nonzero().flatten().tolist() == [0, 1]  # width high byte: 0..1
    for tok in (1, 44, 0, 1):  # width 300, height 1
        c.advance(tok)
    assert c.allowed(VOCAB_SIZE).nonzero().flatten().tolist() == [1]  # channels: gray only
    c.advance(1)
    assert c.allowed(VOCAB_SIZE)[:256].all() and c.allowed(VOCAB_SIZE).sum() == 256 and c.max_remaining() == 301
    for _ in range(300):
        c.advance(0)
    assert c.allowed(VOCAB_SIZE).nonzero().flatten().tolist() == [EOI]


def run(model, prompts, constraints, max_new, seed, temperature=1.0):
    cfg = SamplingConfig(max_new=max_new, temperature=temperature, seed=seed)
    return generate(model, prompts, cfg, constraints)


@pytest.mark.parametrize("seed", range(3))
def test_forced_headers_always_give_complete_blocks(model, seed):
    cases = [dict(image=(3, 2, 1)), dict(image=(2, 2, 3)), dict(image=(2, 3)), dict(audio_seconds=0.003)]
    prompts, constraints, max_news = [], [], []
    for case in cases:
        ids, c, n = open_block([BOS, *b"draw"], **case)
        prompts.append(ids)
        constraints.append(c)
        max_news.append(n)
    outs = run(model, prompts, constraints, max(max_news), seed)
    for case, prompt, out, n in zip(cases, prompts, outs, max_news):
        doc = decode(prompt + out)  # well-formed: raises otherwise
        block = doc.segments[-1]
        assert out[-1] == EOS
        if "image" in case:
            w, h, *c = case["image"]
            assert (block.width, block.height) == (w, h)
            assert block.channels in ((c[0],) if c else (1, 3))
            assert len(out) == n or not c  # a free channel byte may pick the shorter gray image
        else:
            assert isinstance(block, AudioSegment) and (block.sample_rate, block.n_samples) == (8000, 24)
            assert len(out) == n


@pytest.mark.parametrize("seed", range(3))
def test_free_headers_always_give_complete_valid_blocks(model, seed):
    kw = dict(max_image_side=3, max_audio_samples=40, audio_rates=(8000, 16000), end_after_block=True)
    prompts = [[BOS, BOI], [BOS, *b"a", BOA], [BOS, BOI, 0], [BOS, *image_block_prefix(2, 2, 1), 7]]
    constraints = [ModalityConstraint.from_prompt(p, **kw) for p in prompts]
    max_new = max(c.max_remaining() for c in constraints) + 1
    outs = run(model, prompts, constraints, max_new, seed)
    for prompt, out in zip(prompts, outs):
        block = decode(prompt + out).segments[-1]
        assert out[-1] == EOS
        if isinstance(block, ImageSegment):
            assert 1 <= block.width <= 3 and 1 <= block.height <= 3
        else:
            assert block.sample_rate in (8000, 16000) and 1 <= block.n_samples <= 40


def test_adversarial_model_cannot_break_the_format():
    adversary = Adversary()
    for temperature in (0.0, 1.0):
        c = ModalityConstraint.from_prompt([BOS, BOI], max_image_side=2, end_after_block=True)
        out = run(adversary, [[BOS, BOI]], [c], c.max_remaining() + 1, seed=0, temperature=temperature)[0]
        assert isinstance(decode([BOS, BOI] + out).segments[0], ImageSegment)
        c = ModalityConstraint(max_image_side=2, max_audio_samples=3)  # it opens blocks again and again
        out = run(adversary, [[BOS]], [c], 200, seed=0, temperature=temperature)[0]
        assert PAD not in out and BOS not in out
        if out[-1] == EOS:
            decode([BOS] + out)
        else:  # cut by max_new: all but the last block are complete
            assert temperature == 0.0 and out.count(BOA) > 5
            assert all(isinstance(s, AudioSegment) for s in split_outputs(out)[:-1])
            decode_segments(out[:max(i for i, t in enumerate(out) if t == BOA)])


def test_free_interleaved_generation_is_well_formed(model):
    opened = 0
    for seed in range(6):  # rows of one call share a seed, and an untrained model barely reads its prompt
        c = ModalityConstraint(max_image_side=3, max_audio_samples=16)
        out = run(model, [[BOS, *b"go"]], [c], 400, seed)[0]
        opened += sum(t in (BOI, BOA) for t in out)
        if out[-1] == EOS:
            decode([BOS, *b"go", *out])
        else:  # cut by max_new: everything before the open block (if any) is well-formed
            cut = len(out) if c.mode == "text" else max(i for i, t in enumerate(out) if t in (BOI, BOA))
            decode_segments(out[:cut])
    assert opened > 0


# ----------------------------------------------------------------------------- outputs


def test_split_outputs_is_robust():
    img = ImageSegment(2, 1, 1, b"\x01\x02")
    aud = AudioSegment(8000, 3, 1, b"\x10\x20\x30")
    ids = [BOS, *b"hi", *img.ids(), PAD, EOA, *aud.ids()[:-1], *b"x", EOS, *b"ignored"]
    assert split_outputs(ids) == [TextSegment(b"hi"), img, aud, TextSegment(b"x")]
    partial = split_outputs([*b"a", *image_block_prefix(2, 2, 1), 5])
    assert partial[-1] == PartialBlock("image", bytes([0, 2, 0, 2, 1]), b"\x05")
    assert partial[-1].complete() == ImageSegment(2, 2, 1, b"\x05\x00\x00\x00")
    cut_header = split_outputs([BOA, 0, 0, EOS])
    assert cut_header == [PartialBlock("audio", b"\x00\x00", b"")] and cut_header[0].complete() is None
    bad_header = split_outputs([BOI, 0, 1, 0, 1, 2, 9, 9])  # 2 channels: length unknown, the rest is text
    assert bad_header == [PartialBlock("image", bytes([0, 1, 0, 1, 2]), b""), TextSegment(b"\x09\x09")]
    interrupted = split_outputs([*image_block_prefix(1, 2, 1), 4, BOA])
    assert interrupted == [PartialBlock("image", bytes([0, 1, 0, 2, 1]), b"\x04"), PartialBlock("audio", b"", b"")]


def test_save_outputs_writes_png_and_wav(tmp_path):
    img = ImageSegment(3, 2, 3, bytes(range(18)))
    aud = AudioSegment(8000, 4, 1, bytes([0, 128, 255, 128]))
    report = save_outputs([BOS, *img.ids(), EOS], tmp_path / "x.png")
    assert report["files"] == [str(tmp_path / "x.png")]
    assert image_segment_from_path(tmp_path / "x.png") == img
    report = save_outputs([*b"an image ", *img.ids(), *b" and a sound ", *aud.ids(),
                           *image_block_prefix(2, 2, 1), 200], tmp_path / "out" / "res.png")
    stem = tmp_path / "out" / "res"
    assert report["files"] == [f"{stem}_0.png", f"{stem}_1.wav", f"{stem}_2.png"]
    assert report["text"] == "an image  and a sound "
    assert [p.get("complete") for p in report["parts"]] == [None, True, None, True, False]
    assert report["parts"][3]["seconds"] == 4 / 8000
    partial = image_segment_from_path(f"{stem}_2.png")
    assert segment_to_pixels(partial).tolist() == [[200, 0], [0, 0]]  # the missing pixels are black
    from omnibyte.media import audio_segment_from_path
    assert audio_segment_from_path(f"{stem}_1.wav") == aud
    assert save_outputs([*b"just text", EOS], tmp_path / "t.png") == {"files": [], "text": "just text",
                                                                      "parts": [{"text": "just text"}]}
