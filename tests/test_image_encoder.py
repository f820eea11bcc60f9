"""The image_encoder adapter: which image blocks count as finished, and the CNN's summary of each
(its contract under every model is in tests/test_model_contract.py)."""

import numpy as np
import pytest
import torch

from omnibyte.adapters.image_encoder import ImageEncoder, ImageEncoderConfig, finished_images
from omnibyte.format import BOI, EOI, EOS, Document, ImageSegment, TextSegment, encode
from omnibyte.media.layout import IMAGE_PAYLOAD, document_ids


def pixels(w: int, h: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def doc_ids(*images: np.ndarray) -> list[int]:
    segs = [TextSegment(b"q")]
    for pix in images:
        h, w, c = pix.shape
        segs += [ImageSegment(w, h, c, pix.tobytes()), TextSegment(b"a")]
    return encode(Document(segs))


def encoder(seed: int = 0) -> ImageEncoder:
    torch.manual_seed(seed)
    return ImageEncoder(ImageEncoderConfig(width=4, gain=0.1), 6).eval()


def as_input(pix: np.ndarray) -> torch.Tensor:
    """(h, w, c) bytes → (1, c, h, w) in [-1, 1], as a plain image pipeline would."""
    return torch.tensor(pix, dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1.0


def test_finished_images_finds_whole_blocks_only():
    gray, rgb, one = pixels(6, 4, 1, 0), pixels(3, 2, 3, 1), pixels(1, 1, 1, 2)
    ids = doc_ids(gray, rgb, one)
    boi = [i for i, v in enumerate(ids) if v == BOI]
    eoi = [i for i, v in enumerate(ids) if v == EOI]
    b, t, start, height, row_len, chans = finished_images(torch.tensor([ids]))
    assert t.tolist() == eoi and b.tolist() == [0, 0, 0]
    assert start.tolist() == [i + IMAGE_PAYLOAD for i in boi]
    assert height.tolist() == [4, 2, 1] and row_len.tolist() == [6, 9, 1] and chans.tolist() == [1, 3, 1]
    assert finished_images(torch.tensor([ids]), lo=eoi[1])[1].tolist() == eoi[1:]
    # not finished: the header out of view, an EOI one byte early, a block still open, a bad header
    bad = list(ids)
    bad[boi[0] + 5] = 2  # two channels
    cases = {"header cut": (ids[boi[0] + 3:], [e - boi[0] - 3 for e in eoi[1:]]),
             "EOI early": (ids[:eoi[0] - 1] + ids[eoi[0]:], [e - 1 for e in eoi[1:]]),
             "still open": (ids[:eoi[1]], eoi[:1]),
             "bad header": (bad, eoi[1:])}
    for name, (row, want) in cases.items():
        assert finished_images(torch.tensor([row]))[1].tolist() == want, name


def test_summaries_read_each_image_in_its_own_shape():
    m = encoder()
    gray, rgb, small = pixels(6, 4, 1, 0), pixels(5, 3, 3, 1), pixels(2, 2, 3, 2)
    rows = [doc_ids(gray, rgb), doc_ids(small, rgb)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [EOS] * (width - len(r)) for r in rows])
    b, t, vec = m.summaries(ids)
    got = {(int(r), int(p)): v for r, p, v in zip(b, t, vec)}
    with torch.no_grad():
        for r, images in enumerate(((gray, rgb), (small, rgb))):
            eois = (ids[r] == EOI).nonzero().flatten().tolist()
            for pos, pix in zip(eois, images):
                torch.testing.assert_close(got.pop((r, pos)), m.encode(as_input(pix))[0])
    assert not got
    # gray enters as three equal channels
    with torch.no_grad():
        torch.testing.assert_close(m.encode(as_input(gray)), m.encode(as_input(np.repeat(gray, 3, axis=2))))
    # lo skips images that closed before it; a row of text alone gives nothing
    assert m.summaries(ids, lo=int(t.max()))[0].numel() == 1
    assert m.summaries(torch.tensor([list(b"no image here")]))[2].shape == (0, 6)


def test_summary_depends_on_where_things_are():
    """The 4 × 4 grid keeps position: a bright square top-left and bottom-right differ."""
    m = encoder(1)
    a = np.zeros((16, 16, 1), dtype=np.uint8)
    a[:4, :4] = 255
    with torch.no_grad():
        assert not torch.allclose(m.encode(as_input(a)), m.encode(as_input(a[::-1, ::-1].copy())))


def test_bad_config():
    with pytest.raises(ValueError, match="width"):
        ImageEncoderConfig(width=0)
    with pytest.raises(ValueError, match="gain"):
        ImageEncoderConfig(gain=0.0)


def test_context_holds_the_last_image_of_the_document():
    """Each position gets the last image finished at or before it in its document; a new document
    starts empty; `lo` with a carry gives the same as the whole sequence."""
    m = encoder()
    a, b = pixels(3, 2, 1, 0), pixels(2, 2, 3, 1)
    ids = torch.tensor([doc_ids(a, b) + doc_ids(b)])
    doc = document_ids(ids)
    eoi = (ids[0] == EOI).nonzero().flatten().tolist()
    bos2 = int((doc[0] == doc[0, -1]).nonzero()[0])
    with torch.no_grad():
        ctx = m.context(ids, doc)[0]
        va, vb = m.encode(as_input(a))[0], m.encode(as_input(b))[0]
    assert ctx[:eoi[0]].abs().sum() == 0
    torch.testing.assert_close(ctx[eoi[0]:eoi[1]], va.expand(eoi[1] - eoi[0], -1))
    torch.testing.assert_close(ctx[eoi[1]:bos2], vb.expand(bos2 - eoi[1], -1))
    assert ctx[bos2:eoi[2]].abs().sum() == 0  # the new document has seen no image yet
    torch.testing.assert_close(ctx[eoi[2]:], vb.expand(len(ctx) - eoi[2], -1))
    # from lo on, with the carry of what came before
    for lo in (eoi[0] + 1, eoi[1] + 3, bos2 + 1):
        carry = (ctx[lo - 1][None], doc[:, lo - 1])
        with torch.no_grad():
            part = m.context(ids, doc[:, lo:], lo=lo, carry=carry)[0]
        torch.testing.assert_close(part, ctx[lo:])


def test_summary_size_is_set_by_its_gain():
    """The summary's RMS is the output gain (0.1 at the start), however large the projection grows:
    it cannot swamp the patch vectors it is added to."""
    m = encoder()
    x = as_input(pixels(8, 8, 3, 0))
    with torch.no_grad():
        rms = m.encode(x).pow(2).mean().sqrt()
        m.out.weight.mul_(100)
        torch.testing.assert_close(m.encode(x).pow(2).mean().sqrt(), rms)
    assert rms.item() == pytest.approx(0.1, rel=1e-3)
