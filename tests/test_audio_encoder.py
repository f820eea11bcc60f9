"""The audio_encoder adapter: which audio blocks count as finished, and the CNN's summary of each
(its contract under every model is in tests/test_model_contract.py; the context it shares with the
image encoder is tested in tests/test_image_encoder.py)."""

import numpy as np
import pytest
import torch

from omnibyte.adapters.audio_encoder import AudioEncoder, AudioEncoderConfig, finished_clips, log_mel
from omnibyte.format import AUDIO_MULAW8, BOA, EOA, EOS, AudioSegment, Document, TextSegment, encode
from omnibyte.media.audio import mulaw_decode


def codes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def doc_ids(*clips: bytes, rate: int = 8000) -> list[int]:
    segs = [TextSegment(b"q")]
    for c in clips:
        segs += [AudioSegment(rate, len(c), AUDIO_MULAW8, c), TextSegment(b"a")]
    return encode(Document(segs))


def encoder(seed: int = 0) -> AudioEncoder:
    torch.manual_seed(seed)
    return AudioEncoder(AudioEncoderConfig(width=4, gain=0.1, cells=4), 6).eval()


def test_finished_clips_finds_whole_blocks_only():
    ids = doc_ids(codes(50, 0), codes(0, 1), codes(400, 2), rate=70_000)
    boa = [i for i, v in enumerate(ids) if v == BOA]
    eoa = [i for i, v in enumerate(ids) if v == EOA]
    b, t, n, rate = finished_clips(torch.tensor([ids]))
    assert t.tolist() == eoa and b.tolist() == [0, 0, 0] and n.tolist() == [50, 0, 400]
    assert rate.tolist() == [70_000] * 3
    assert finished_clips(torch.tensor([ids]), lo=eoa[1])[1].tolist() == eoa[1:]
    bad = list(ids)
    bad[boa[0] + 9] = 2  # an encoding that is not µ-law
    cases = {"header cut": (ids[boa[0] + 3:], [e - boa[0] - 3 for e in eoa[1:]]),
             "EOA early": (ids[:eoa[0] - 1] + ids[eoa[0]:], [e - 1 for e in eoa[1:]]),
             "still open": (ids[:eoa[2]], eoa[:2]),
             "bad header": (bad, eoa[1:])}
    for name, (row, want) in cases.items():
        assert finished_clips(torch.tensor([row]))[1].tolist() == want, name


def test_summaries_read_each_clip_and_keep_its_order():
    m = encoder()
    long, short = codes(3000, 0), codes(100, 1)  # the short one is padded with silence
    rows = [doc_ids(long, short), doc_ids(short)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [EOS] * (width - len(r)) for r in rows])
    eoa = [(ids[r] == EOA).nonzero().flatten().tolist() for r in range(2)]
    want = {(0, eoa[0][0]): long, (0, eoa[0][1]): short, (1, eoa[1][0]): short}

    def samples(c: bytes) -> torch.Tensor:
        return torch.from_numpy(mulaw_decode(c))[None]

    b, t, vec = m.summaries(ids)
    with torch.no_grad():
        assert sorted(zip(b.tolist(), t.tolist())) == sorted(want)
        for row, end, v in zip(b.tolist(), t.tolist(), vec):
            torch.testing.assert_close(v, m.encode(samples(want[row, end]))[0])
        # the cells keep time: a clip and the same clip backwards differ
        assert not torch.allclose(m.encode(samples(long)), m.encode(samples(long[::-1])))
        assert m.encode(samples(codes(3, 3))).shape == (1, 6)  # a clip shorter than a window
    assert m.summaries(torch.tensor([list(b"no audio here")]))[2].shape == (0, 6)


def test_bad_config():
    for bad in ({"width": 0}, {"gain": 0.0}, {"cells": 0}):
        with pytest.raises(ValueError, match="audio_encoder"):
            AudioEncoderConfig(**bad)


def test_log_mel_hears_pitch_and_loudness_where_they_are():
    t = torch.arange(8000) / 8000
    low, high = torch.sin(2 * torch.pi * 300 * t), torch.sin(2 * torch.pi * 2500 * t)
    a, b = log_mel(low, 8000), log_mel(high, 8000)
    assert a.shape == (40, 101)  # 40 bands, a frame every 10 ms (and one more)
    assert int(a.mean(1).argmax()) < int(b.mean(1).argmax())  # the higher tone in a higher band
    assert -1.5 <= float(a.min()) and float(a.max()) <= 1.5
    quiet_then_loud = torch.cat([0.001 * low[:4000], low[4000:]])
    m = log_mel(quiet_then_loud, 8000)
    assert m[:, :40].mean() < m[:, 60:].mean()
    assert log_mel(torch.zeros(0), 8000).shape[0] == 40  # an empty clip still gives a frame
