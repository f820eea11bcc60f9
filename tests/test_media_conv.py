"""The media_conv adapter: causal 2-D / 1-D convolution features of image and audio payload bytes
(its contract under every model is in tests/test_model_contract.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnibyte.adapters.media_conv import MediaConv, MediaConvConfig, image_taps, payload_values
from omnibyte.format import AUDIO_MULAW8, BOA, BOI, AudioSegment, Document, ImageSegment, TextSegment, encode
from omnibyte.media.audio import mulaw_decode
from omnibyte.media.layout import AUDIO_PAYLOAD, IMAGE_PAYLOAD


class Features(MediaConv):
    """MediaConv called as a plain feature function of the ids (what the tests below read)."""

    def __call__(self, ids, start=0):
        return self.features(ids, start)


def conv(channels=4, seed=0, kernel=5, **kw) -> MediaConv:
    torch.manual_seed(seed)
    m = Features(MediaConvConfig(channels, kernel), 6, **kw)
    torch.nn.init.normal_(m.out.weight)  # (it starts at zero)
    return m


def image_doc(w: int, h: int, c: int, seed: int = 0) -> tuple[list[int], np.ndarray, int]:
    """ids of "ab" + one image + "cd", the pixels (h, w, c) and where the payload starts."""
    pix = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    ids = encode(Document([TextSegment(b"ab"), ImageSegment(w, h, c, pix.tobytes()), TextSegment(b"cd")]))
    return ids, pix, ids.index(BOI) + IMAGE_PAYLOAD


def reference_image(m: MediaConv, pix: np.ndarray) -> torch.Tensor:
    """The same two layers as a plain loop over the (h, w) grid of each channel: (h, w, c, dim)."""
    h, w, c = pix.shape
    x = torch.tensor(pix, dtype=torch.float32) / 127.5 - 1.0

    def layer(src, taps, scale, lin):  # src (h, w, c, k_in) → (h, w, c, channels)
        out = torch.zeros(h, w, c, lin.out_features)
        for r in range(h):
            for col in range(w):
                for ch in range(c):
                    v = [src[r - dr * scale, col + dc * scale, ch] if r - dr * scale >= 0 and
                         0 <= col + dc * scale < w else torch.zeros(src.shape[-1]) for dr, dc in taps]
                    out[r, col, ch] = F.gelu(lin(torch.cat(v)))
        return out

    taps = m.image_taps
    f1 = layer(x[..., None], taps, 1, m.image1)
    f2 = layer(f1, taps, m.dilation, m.image2)
    return m.out(f1 + f2)


@pytest.mark.parametrize("w,h,c", [(5, 4, 1), (3, 5, 3)])
def test_image_features_match_a_2d_masked_convolution(w, h, c):
    m = conv()
    ids, pix, p0 = image_doc(w, h, c)
    out = m(torch.tensor([ids]))[0]
    want = reference_image(m, pix).reshape(h * w * c, -1)
    with torch.no_grad():
        torch.testing.assert_close(out[p0:p0 + h * w * c], want, atol=1e-5, rtol=1e-4)
    # nothing outside the payload: text, markers, header
    assert out[:p0].abs().sum() == 0 and out[p0 + h * w * c:].abs().sum() == 0


def test_audio_features_match_a_causal_1d_convolution():
    m = conv(audio_kernel=3, audio_dilation=2)
    smp = np.random.default_rng(1).integers(0, 256, 11, dtype=np.uint8)
    ids = encode(Document([TextSegment(b"x"), AudioSegment(8000, 11, AUDIO_MULAW8, smp.tobytes())]))
    out = m(torch.tensor([ids]))[0]
    p0 = ids.index(BOA) + AUDIO_PAYLOAD
    x = torch.tensor(mulaw_decode(smp), dtype=torch.float32)

    def layer(src, scale, lin):  # (n, k_in) → (n, channels)
        pad = [src[i - j * scale] if i - j * scale >= 0 else torch.zeros(src.shape[1]) for j in range(3)
               for i in range(len(src))]
        stacked = torch.stack(pad).view(3, len(src), -1).transpose(0, 1).flatten(1)
        return F.gelu(lin(stacked))

    f1 = layer(x[:, None], 1, m.audio1)
    want = m.out(f1 + layer(f1, 2, m.audio2))
    with torch.no_grad():
        torch.testing.assert_close(out[p0:p0 + 11], want, atol=1e-5, rtol=1e-4)
    assert out[:p0].abs().sum() == 0


def test_causal_start_and_batch_rows():
    """A byte's features depend on the ids up to it only; `start` returns the tail of the full
    output; rows of a batch are independent (one starts inside an image: no header, no features)."""
    m = conv()
    ids, _, p0 = image_doc(6, 5, 3, seed=2)
    a = torch.tensor([ids, ids[10:] + ids[:10]])
    full = m(a)
    for t in (p0, p0 + 7, p0 + 40, p0 + 89):
        changed = a.clone()
        changed[0, t] = (changed[0, t] + 50) % 256
        out = m(changed)
        torch.testing.assert_close(out[0, :t], full[0, :t])
        assert not torch.allclose(out[0, t], full[0, t])  # the byte itself counts (type-B mask)
        torch.testing.assert_close(out[1], full[1])
    for s in (0, p0 + 3, len(ids) - 1):
        torch.testing.assert_close(m(a, start=s), full[:, s:])
    # the second row starts 10 ids in: its image's header is out of view, so no features
    assert full[1, :p0 + 90 - 10].abs().sum() == 0


def test_pixel_above_is_a_neighbour_and_far_rows_are_not():
    m = conv()
    ids, _, p0 = image_doc(6, 9, 1, seed=3)
    base = m(torch.tensor([ids]))[0]
    changed = list(ids)
    changed[p0 + 2] = (changed[p0 + 2] + 90) % 256  # row 0, column 2
    out = m(torch.tensor([changed]))[0]
    moved = (out - base).abs().sum(-1)[p0:p0 + 54].view(9, 6) > 0
    # reach: 2 rows (kernel 5), then 2 × dilation 2 more = 6 rows below; ±2 + ±4 columns
    assert moved[1, 2] and moved[2, 2] and moved[6, 2]
    assert not moved[7:].any() and not moved[0, :2].any()


def test_values_and_bad_sizes():
    ids, pix, p0 = image_doc(2, 2, 1)
    x = torch.tensor([ids])
    img = torch.zeros_like(x, dtype=torch.bool)
    img[0, p0:p0 + 4] = True
    v = payload_values(x, img, torch.zeros_like(img))[0]
    torch.testing.assert_close(v[p0:p0 + 4], torch.tensor(pix.ravel() / 127.5 - 1.0, dtype=torch.float32))
    assert v[:p0].abs().sum() == 0
    assert image_taps(3) == [(1, -1), (1, 0), (1, 1), (0, -1), (0, 0)]
    with pytest.raises(ValueError, match="kernel"):
        MediaConvConfig(4, kernel=4)
    with pytest.raises(ValueError, match="channels"):
        MediaConvConfig(0)
