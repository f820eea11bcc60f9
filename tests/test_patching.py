"""Patching: the three rules on hand-made cases, streaming = batch, rows independent, entropies,
calibration, cached entropies for datasets, and the `omnibyte patch` command."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnibyte.errors import OmnibyteError
from omnibyte.format import (
    AUDIO_MULAW8,
    BOA,
    BOI,
    BOS,
    EOA,
    EOI,
    EOS,
    PAD,
    AudioSegment,
    Document,
    ImageSegment,
    TextSegment,
    encode,
    is_segment_start,
)
from omnibyte.media.layout import segment_starts
from omnibyte.patching import (
    PatcherConfig,
    StreamingPatcher,
    decide_threshold,
    patch_ids,
    patch_lengths,
    patch_starts,
)


def _ids(*rows):
    return torch.tensor([list(r) for r in rows])


def _pieces(ids: list[int], starts: torch.Tensor) -> list[bytes]:
    """The patches of one row as bytes (specials shown as b'<>') to compare by eye."""
    out, cur = [], b""
    for i, (t, s) in enumerate(zip(ids, starts.tolist())):
        if s and i:
            out.append(cur)
            cur = b""
        cur += bytes([t]) if t < 256 else b"<>"
    return out + [cur]


def _text_row(text: str) -> list[int]:
    return list(text.encode())


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("kw", [dict(kind="bpe"), dict(patch_size=0), dict(max_patch_len=-1),
                                dict(kind="entropy", threshold=float("nan")), dict(image_rows=-1),
                                dict(audio_frame=-2)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        PatcherConfig(**kw)


# --------------------------------------------------------------------------- static


def test_static_counts_from_segment_start():
    text = b"abcdefg"
    row = [BOS, *text, BOI, 1, 2, 3, EOI, *b"xyz", EOS]
    starts = patch_starts(_ids(row), PatcherConfig("static", patch_size=3))[0]
    assert _pieces(row, starts) == [b"<>ab", b"cde", b"fg", b"<>\x01\x02", b"\x03", b"<>", b"xyz", b"<>"]


def test_static_max_patch_len_cuts():
    row = list(range(10))
    starts = patch_starts(_ids(row), PatcherConfig("static", patch_size=5, max_patch_len=2))[0]
    assert patch_lengths(starts[None]) == [[2, 2, 1, 2, 2, 1]]


# --------------------------------------------------------------------------- space


def test_space_merges_runs_and_keeps_utf8_characters_whole():
    row = _text_row("héllo wörld ✓ (ok)  über, 42")
    starts = patch_starts(_ids(row), PatcherConfig("space"))[0]
    assert [p.decode() for p in _pieces(row, starts)] == ["héllo ", "wörld ", "✓ (", "ok)  ", "über, ", "42"]


def test_space_with_markers_and_cap():
    row = [BOS, *b"ab cdefg", EOS, BOS, *b"hi"]
    starts = patch_starts(_ids(row), PatcherConfig("space", max_patch_len=3))[0]
    # BOS is space-like, so "ab" starts a patch after it; "cdefg" is cut at 3; EOS and BOS start patches.
    assert _pieces(row, starts) == [b"<>", b"ab ", b"cde", b"fg", b"<>", b"<>", b"hi"]


def test_space_utf8_text_without_spaces_gets_no_boundaries_inside():
    row = _text_row("你好世界")
    starts = patch_starts(_ids(row), PatcherConfig("space"))[0]
    assert starts.sum() == 1


# --------------------------------------------------------------------------- entropy


def test_entropy_global_and_relative():
    row = [BOS, *b"abcdef"]
    h = torch.tensor([[0.0, 3.0, 0.5, 2.5, 2.9, 0.1, 1.2]])
    glob = patch_starts(_ids(row), PatcherConfig("entropy", threshold=2.0), h)[0]
    assert glob.tolist() == [True, True, False, True, True, False, False]
    rel = patch_starts(_ids(row), PatcherConfig("entropy", threshold=1.0, relative=True), h)[0]
    # rises: +3.0, -2.5, +2.0, +0.4, -2.8, +1.1
    assert rel.tolist() == [True, True, False, True, False, False, True]
    # threshold argument overrides the config's; the cap still applies
    capped = patch_starts(_ids(row), PatcherConfig("entropy", threshold=100.0, max_patch_len=4), h, threshold=9.0)[0]
    assert capped.tolist() == [True, False, False, False, True, False, False]


def test_entropy_markers_always_start():
    row = [*b"ab", BOA, 1, 2, EOA, *b"cd"]
    h = torch.zeros(1, len(row))
    starts = patch_starts(_ids(row), PatcherConfig("entropy", threshold=1.0), h)[0]
    assert starts.tolist() == [True, False, True, False, False, True, True, False]


def test_entropy_needs_threshold_and_entropies():
    ids = _ids([1, 2, 3])
    with pytest.raises(OmnibyteError, match="threshold"):
        patch_starts(ids, PatcherConfig("entropy"), torch.zeros(1, 3))
    with pytest.raises(OmnibyteError, match="entropies"):
        patch_starts(ids, PatcherConfig("entropy", threshold=1.0))


# --------------------------------------------------------------------------- media patches


def _media_doc(seed: int = 0) -> list[int]:
    """BOS, text, a 5×3 RGB image, text, an audio clip of 10 samples, a 4×2 gray image, EOS."""
    rng = np.random.default_rng(seed)
    pixels, samples = (rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (45, 10))
    return encode(Document([TextSegment(b"a cat "), ImageSegment(5, 3, 3, pixels), TextSegment(b" says "),
                            AudioSegment(8000, 10, AUDIO_MULAW8, samples), ImageSegment(4, 2, 1, bytes(8))]))


MEDIA_KINDS = [PatcherConfig("static", patch_size=4, image_rows=1, audio_frame=4),
               PatcherConfig("space", image_rows=1, audio_frame=4),
               PatcherConfig("entropy", threshold=2.0, image_rows=1, audio_frame=4)]


@pytest.mark.parametrize("cfg", MEDIA_KINDS, ids=lambda c: c.kind)
def test_media_patches_are_rows_and_frames_under_every_kind(cfg):
    ids = _media_doc()
    h = torch.rand(1, len(ids), generator=torch.Generator().manual_seed(0)) * 4
    lens = patch_lengths(patch_starts(torch.tensor([ids]), cfg, h))[0]
    # locate the blocks: BOS + "a cat " is 7 ids, then BOI at 7
    boi, boa = ids.index(BOI), ids.index(BOA)
    boi2 = ids.index(BOI, boa)
    starts = np.cumsum([0] + lens[:-1]).tolist()
    pos = dict(zip(starts, lens))
    assert [pos[boi], pos[boi + 6], pos[boi + 21], pos[boi + 36], pos[boi + 51]] == [6, 15, 15, 15, 1]  # .. EOI
    assert [pos[boa], pos[boa + 10], pos[boa + 14], pos[boa + 18], pos[boa + 20]] == [10, 4, 4, 2, 1]
    assert [pos[boi2], pos[boi2 + 6], pos[boi2 + 10], pos[boi2 + 14]] == [6, 4, 4, 1]
    # the text keeps the kind's own rule: same patches as without the media options
    plain = PatcherConfig(cfg.kind, patch_size=cfg.patch_size, threshold=cfg.threshold)
    lens_plain = patch_lengths(patch_starts(torch.tensor([ids]), plain, h))[0]
    text_end = boi
    assert [n for s, n in pos.items() if s < text_end] == \
        [n for s, n in zip(np.cumsum([0] + lens_plain[:-1]).tolist(), lens_plain) if s < text_end]


def test_media_patches_several_rows_invalid_header_and_cut_windows():
    ids = _media_doc()
    boi = ids.index(BOI)
    two = PatcherConfig("static", patch_size=4, image_rows=2, audio_frame=0)
    lens = patch_lengths(patch_starts(torch.tensor([ids[boi:boi + 52]]), two))[0]
    assert lens == [6, 30, 15, 1]
    # audio untouched when audio_frame = 0: static patches of 4 from the BOA
    boa = ids.index(BOA)
    lens = patch_lengths(patch_starts(torch.tensor([ids[boa:boa + 21]]), two))[0]
    assert lens == [4, 4, 4, 4, 4, 1]
    # a header with 2 channels is not an image header: no patch starts in the header, the payload
    # falls back to the kind's rule (static: every 4th id from the BOI)
    bad = [BOI, 0, 5, 0, 3, 2] + [7] * 30 + [EOI]
    assert patch_lengths(patch_starts(torch.tensor([bad]), two))[0] == [8] + [4] * 7 + [1]
    # a window that begins inside an image cannot see its header: the kind's rule
    cut = ids[boi + 10:boi + 30]
    assert patch_lengths(patch_starts(torch.tensor([cut]), two))[0] == [4, 4, 4, 4, 4]


@pytest.mark.parametrize("cfg", MEDIA_KINDS, ids=lambda c: c.kind)
def test_media_streaming_equals_batch_and_causal(cfg):
    doc = _media_doc(1) + _media_doc(2)
    rows = [doc[:120], doc[9:129], doc[40:160]]  # one starts inside an image
    ids = torch.tensor(rows)
    h = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) * 4
    h[:, 0] = 0
    full = patch_starts(ids, cfg, h)
    sp = StreamingPatcher(cfg, ids.shape[0])
    assert torch.equal(torch.stack([sp.push(ids[:, t], h[:, t]) for t in range(ids.shape[1])], dim=1), full)
    for t in (8, 11, 30, 70):  # inside a header, a payload, the text
        ids2 = ids.clone()
        ids2[:, t + 1:] = torch.randint(0, 263, ids2[:, t + 1:].shape, generator=torch.Generator().manual_seed(t))
        assert torch.equal(patch_starts(ids2, cfg, h)[:, :t + 1], full[:, :t + 1])


# --------------------------------------------------------------------------- shared properties


def _random_batch(gen: torch.Generator, B: int = 5, T: int = 97):
    ids = torch.randint(0, 256, (B, T), generator=gen)
    # sprinkle markers, spaces and letters so every rule has work to do
    pick = torch.rand(B, T, generator=gen)
    ids = torch.where(pick < 0.06, torch.tensor([BOS, EOS, BOI, EOI, BOA, EOA, PAD])[
        torch.randint(0, 7, (B, T), generator=gen)], ids)
    ids = torch.where((pick > 0.06) & (pick < 0.25), torch.full_like(ids, 32), ids)
    ids = torch.where((pick > 0.25) & (pick < 0.6), torch.randint(97, 123, (B, T), generator=gen), ids)
    h = torch.rand(B, T, generator=gen) * 4
    h[:, 0] = 0
    return ids, h


CONFIGS = [PatcherConfig("static", patch_size=3), PatcherConfig("static", patch_size=4, max_patch_len=3),
           PatcherConfig("space"), PatcherConfig("space", max_patch_len=5),
           PatcherConfig("entropy", threshold=2.5), PatcherConfig("entropy", threshold=3.5, max_patch_len=4),
           PatcherConfig("entropy", threshold=0.7, relative=True),
           PatcherConfig("entropy", threshold=1.5, relative=True, max_patch_len=6)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.relative}-{c.max_patch_len}")
def test_streaming_equals_batch(cfg):
    gen = torch.Generator().manual_seed(0)
    ids, h = _random_batch(gen)
    full = patch_starts(ids, cfg, h)
    sp = StreamingPatcher(cfg, ids.shape[0])
    online = torch.stack([sp.push(ids[:, t], h[:, t]) for t in range(ids.shape[1])], dim=1)
    assert torch.equal(online, full)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.kind}-{c.relative}-{c.max_patch_len}")
def test_invariants_rows_independent_and_causal(cfg):
    gen = torch.Generator().manual_seed(1)
    ids, h = _random_batch(gen)
    full = patch_starts(ids, cfg, h)
    # every row alone gives the same answer as in the batch (no leak across rows)
    for b in range(ids.shape[0]):
        assert torch.equal(patch_starts(ids[b : b + 1], cfg, h[b : b + 1])[0], full[b])
    # a boundary never depends on the future
    t = 40
    ids2, h2 = ids.clone(), h.clone()
    ids2[:, t + 1 :] = torch.randint(0, 263, ids2[:, t + 1 :].shape, generator=gen)
    h2[:, t + 1 :] = torch.rand(h2[:, t + 1 :].shape, generator=gen) * 4
    assert torch.equal(patch_starts(ids2, cfg, h2)[:, : t + 1], full[:, : t + 1])
    # position 0 starts, markers start, the cap holds, lengths add up
    assert full[:, 0].all()
    assert full[torch.from_numpy(is_segment_start(ids.numpy()))].all()
    for lens in patch_lengths(full):
        assert sum(lens) == ids.shape[1]
        if cfg.max_patch_len:
            assert max(lens) <= cfg.max_patch_len


def test_segment_starts_matches_format():
    gen = torch.Generator().manual_seed(2)
    ids, _ = _random_batch(gen)
    assert torch.equal(segment_starts(ids), torch.from_numpy(is_segment_start(ids.numpy())))


def test_patch_ids_and_lengths():
    starts = torch.tensor([[True, False, True, True, False, False], [True, True, False, False, False, True]])
    assert patch_ids(starts).tolist() == [[0, 0, 1, 2, 2, 2], [0, 1, 1, 1, 1, 2]]
    assert patch_lengths(starts) == [[2, 1, 3], [1, 4, 1]]


def test_text_document_round_trip_through_patches():
    ids = encode("héllo wörld ✓")
    starts = patch_starts(torch.tensor([ids]), PatcherConfig("space"))
    assert sum(patch_lengths(starts)[0]) == len(ids)
    assert math.isclose(len(ids) / starts.sum().item(), len(ids) / 5)  # BOS, héllo, wörld, ✓, EOS
    assert np.array_equal(starts[0].nonzero().flatten().numpy(), [0, 1, 8, 15, 18])


# --------------------------------------------------------------------------- entropy model

from helpers import write_text_dataset  # noqa: E402

from omnibyte.cli import main  # noqa: E402
from omnibyte.models.transformer import Transformer, TransformerConfig  # noqa: E402
from omnibyte.patching.calibrate import calibrate, calibrate_threshold  # noqa: E402
from omnibyte.patching.entropy import (  # noqa: E402
    CALIBRATION_FILE,
    calibrated,
    compute_entropies,
    ensure_entropies,
    entropy_from_logits,
    stream_entropies,
    write_calibration,
)


def _tiny_entropy_model(seed: int = 0, window: int = 8) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(TransformerConfig(dim=32, n_layers=2, n_heads=2, window=window)).eval()
    with torch.no_grad():  # sharper than at init, so entropies vary from byte to byte
        model.head.weight.mul_(40)
    return model


def test_entropy_from_logits_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3), 0.0, -math.inf, -math.inf]])
    # uniform over 4: ln 4; (3/4, 1/4): -(0.75 ln 0.75 + 0.25 ln 0.25); -inf logits have p = 0
    expected = [math.log(4), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    out = entropy_from_logits(logits.to(torch.bfloat16).float())
    assert out.dtype == torch.float32
    assert torch.allclose(entropy_from_logits(logits), torch.tensor(expected), atol=1e-6)


def test_compute_entropies_alignment_and_streaming():
    model = _tiny_entropy_model()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (3, 50), generator=gen)
    h = compute_entropies(model, ids, batch_size=2)
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.all(h[:, 0] == 0)
    for t in (1, 17, 49):  # entropy of id t comes from the logits at t-1
        assert torch.allclose(h[:, t], entropy_from_logits(logits[:, t - 1]), atol=1e-5)
    assert h[:, 1:].std() > 0.05  # really varies, so misalignment would show
    # a long stream in overlapping chunks: exact once the context covers the receptive field
    stream = torch.randint(0, 256, (300,), generator=gen)
    full = compute_entropies(model, stream[None])[0].numpy()
    window, layers = model.cfg.window, model.cfg.n_layers
    exact = stream_entropies(model, stream.numpy(), chunk_len=37, context=layers * (window - 1) + 1,
                             batch_size=3)
    assert np.allclose(exact, full, atol=1e-4)
    approx = stream_entropies(model, stream.numpy(), chunk_len=37)  # context = window
    assert np.allclose(approx[:37], full[:37], atol=1e-4) and np.abs(approx - full).max() < 1.0


def test_calibration_hits_target():
    model = _tiny_entropy_model(1)
    gen = torch.Generator().manual_seed(3)
    words = [w.encode() for w in ("the ", "cat ", "sat ", "on ", "a ", "mat. ", "and ", "dog\n")]
    stream = np.frombuffer(b"".join(words[i] for i in torch.randint(0, 8, (700,), generator=gen)), np.uint8)
    stream = stream.astype(np.int64)
    h = torch.from_numpy(stream_entropies(model, stream))[None]
    ids = torch.from_numpy(stream)[None]
    for relative, target, cap in ((False, 4.5, 0), (False, 2.0, 0), (True, 4.5, 0), (False, 6.0, 8)):
        cal = calibrate(model, stream, target, relative=relative, max_patch_len=cap)
        cfg = PatcherConfig("entropy", relative=relative, max_patch_len=cap)
        achieved = ids.numel() / patch_starts(ids, cfg, h, cal.threshold).sum().item()
        assert abs(achieved / target - 1) < 0.05, (relative, target, achieved)
        assert math.isclose(achieved, cal.bytes_per_patch)
    # a (B, T) batch works too, and a higher target needs a higher threshold
    rows = ids[:, : 600].reshape(4, 150)
    assert calibrate_threshold(model, rows, 3.0) < calibrate_threshold(model, rows, 6.0)
    with pytest.raises(OmnibyteError, match="max_patch_len"):
        calibrate(model, stream, 9.0, max_patch_len=8)


def test_ensure_entropies_computes_once(tmp_path, monkeypatch):
    from omnibyte.data import ShardDataset
    from omnibyte.patching import entropy as entropy_mod

    ds = ShardDataset(write_text_dataset(tmp_path, n_docs=6, lines=4))
    model = _tiny_entropy_model()
    model.save_pretrained(tmp_path / "em")
    calls = []
    real = entropy_mod.stream_entropies
    monkeypatch.setattr(entropy_mod, "stream_entropies", lambda *a, **k: calls.append(1) or real(*a, **k))
    name = ensure_entropies(ds, model, tmp_path / "em", progress=False)
    assert len(calls) == len(ds.splits) == 3
    for split in ds.splits:
        stored = ds.aux(split, name)
        expect = real(model, ds.stream(split))
        assert stored.dtype == np.float16 and np.allclose(stored, expect, atol=1e-2, rtol=1e-3)
    # second call (even from a fresh handle on the folder) finds it cached
    assert ensure_entropies(ShardDataset(ds.path), model, tmp_path / "em", progress=False) == name
    assert len(calls) == 3
    # another entropy model gets another name
    other = _tiny_entropy_model(5)
    other.save_pretrained(tmp_path / "em2")
    assert ensure_entropies(ds, other, tmp_path / "em2", splits=["val"], progress=False) != name


def threshold_of(path, relative=False):
    entry = calibrated(path, relative)
    return None if entry is None else entry["threshold"]


def test_stored_threshold_round_trip_and_staleness(tmp_path):
    model = _tiny_entropy_model()
    model.save_pretrained(tmp_path / "em")
    assert threshold_of(tmp_path / "em") is None
    write_calibration(tmp_path / "em", "global", {"threshold": 1.25})
    write_calibration(tmp_path / "em", "relative", {"threshold": 0.5})
    assert threshold_of(tmp_path / "em") == 1.25
    assert threshold_of(tmp_path / "em", relative=True) == 0.5
    # the one place that decides: the config's own threshold first, else the calibration's
    em = str(tmp_path / "em")
    assert decide_threshold(PatcherConfig("entropy", entropy_model=em), em) == (1.25, None)
    assert decide_threshold(PatcherConfig("entropy", threshold=3.0, relative=True), em) == (3.0, None)
    # calibrated for other weights: ignored
    data = (tmp_path / "em" / CALIBRATION_FILE).read_text()
    _tiny_entropy_model(9).save_pretrained(tmp_path / "em")
    (tmp_path / "em" / CALIBRATION_FILE).write_text(data)
    assert threshold_of(tmp_path / "em") is None
    with pytest.raises(OmnibyteError, match="patch calibrate"):
        decide_threshold(PatcherConfig("entropy", entropy_model=em), em)


# --------------------------------------------------------------------------- CLI


def test_cli_show_writes_html_and_png(tmp_path, capsys):
    _tiny_entropy_model().save_pretrained(tmp_path / "em")
    text = "héllo wörld ✓ <b>"
    out = tmp_path / "view"
    assert main(["patch", str(tmp_path / "em"), "--text", text, "--threshold", "2.0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bytes/patch" in printed and "|" in printed  # not a TTY: '|' between patches
    page = (out / "patches.html").read_text()
    assert "<b>" not in page and ">&lt;</span>" in page  # the text is escaped
    assert ">ö</span>" in page and page.count("H=") == len(text.encode()) + 2  # every id has a tooltip
    assert (out / "entropy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # static with no model: the patches in the terminal are exactly the patcher's
    assert main(["patch", "show", "--kind", "static", "--patch-size", "4", "--text", "abcdefghij",
                 "--out", str(out), "--color", "never"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "<BOS>abc|defg|hij|<EOS>"


def test_cli_calibrate_stores_threshold(tmp_path, capsys):
    data = write_text_dataset(tmp_path, n_docs=6, lines=4)
    _tiny_entropy_model().save_pretrained(tmp_path / "em")
    assert main(["patch", "calibrate", str(tmp_path / "em"), "--data", str(data),
                 "--target-bytes-per-patch", "4", "--sample-bytes", "3000"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    achieved = float(line.split(": ")[1].split(" bytes/patch")[0])
    assert abs(achieved / 4 - 1) < 0.05
    thr = threshold_of(tmp_path / "em")
    assert thr is not None and f"{thr:.6g}" in line
    # the stored threshold is now used by show
    assert main(["patch", str(tmp_path / "em"), "--text", "the cat sat", "--out", str(tmp_path / "v")]) == 0


@pytest.mark.parametrize("argv, message", [
    (["patch", "{tmp}/nope", "--text", "hi"], "no such model or run directory"),
    (["patch", "{tmp}/em", "--text", "hi"], "no calibrated threshold"),
    (["patch", "--text", "hi"], "give MODEL"),
    (["patch", "--kind", "space"], "--text"),
    (["patch", "calibrate", "{tmp}/em", "--data", "{tmp}/nodata", "--target-bytes-per-patch", "4"],
     "nodata"),
])
def test_cli_one_line_errors(tmp_path, capsys, argv, message):
    _tiny_entropy_model().save_pretrained(tmp_path / "em")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_show_uses_a_blt_models_patcher(tmp_path, capsys):
    from omnibyte.models import build_model

    build_model("blt", {"patcher": {"kind": "space", "max_patch_len": 6}}).save_pretrained(tmp_path / "blt")
    assert main(["patch", str(tmp_path / "blt"), "--text", "In the beginning", "--out", str(tmp_path / "v")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "<BOS>|In |the |beginn|ing|<EOS>" and "(space, max 6)" in lines[1]
    # flags override the model's patcher
    assert main(["patch", str(tmp_path / "blt"), "--kind", "static", "--patch-size", "5", "--text",
                 "In the beginning", "--out", str(tmp_path / "v")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "<BOS>In t|he be|ginni|ng|<EOS>"
