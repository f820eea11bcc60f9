"""The byte format: encode ⇄ decode round trips for any mix of segments, one-line errors on
malformed ids, document splitting, segment starts and readable text."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnibyte.format import (
    BOA,
    BOI,
    BOS,
    EOA,
    EOI,
    EOS,
    N_BYTES,
    PAD,
    VOCAB_SIZE,
    AudioSegment,
    Document,
    FormatError,
    ImageSegment,
    TextSegment,
    decode,
    decode_segments,
    encode,
    ids_to_text,
    is_segment_start,
    split_documents,
)

# ----------------------------------------------------------------------------- strategies

text_segments = st.binary(min_size=0, max_size=40).map(TextSegment)


@st.composite
def image_segments(draw):
    w, h = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 3]))
    return ImageSegment(w, h, c, draw(st.binary(min_size=w * h * c, max_size=w * h * c)))


@st.composite
def audio_segments(draw):
    n = draw(st.integers(0, 30))
    rate = draw(st.sampled_from([1, 8000, 16000, 2**32 - 1]))
    return AudioSegment(rate, n, 1, draw(st.binary(min_size=n, max_size=n)))


documents = st.lists(st.one_of(text_segments, image_segments(), audio_segments()), max_size=6).map(Document)


def normalized(doc: Document) -> list:
    """The segments a decoder can see: empty text dropped, adjacent text merged (text has no markers)."""
    out = []
    for seg in doc.segments:
        if isinstance(seg, TextSegment):
            if not seg.data:
                continue
            if out and isinstance(out[-1], TextSegment):
                out[-1] = TextSegment(out[-1].data + seg.data)
                continue
        out.append(seg)
    return out


# ----------------------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(documents)
def test_encode_decode_round_trip(doc):
    ids = encode(doc)
    assert ids[0] == BOS and ids[-1] == EOS
    assert all(0 <= i < VOCAB_SIZE and i != PAD for i in ids)
    back = decode(ids)
    assert back.segments == normalized(doc)
    assert encode(back) == ids  # ids → document → ids is exact


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_text_including_zero(data):
    ids = encode(data)
    assert ids == [BOS, *data, EOS]
    assert decode(ids).segments == ([TextSegment(data)] if data else [])


def test_zero_bytes_inside_media_payloads():
    img = ImageSegment(2, 1, 3, bytes(6))
    aud = AudioSegment(8000, 3, 1, b"\x00\x00\x00")
    ids = encode(Document([TextSegment(b"\x00"), img, aud, TextSegment(b"\x00")]))
    assert ids == [BOS, 0, BOI, 0, 2, 0, 1, 3, 0, 0, 0, 0, 0, 0, EOI,
                   BOA, *struct.pack(">II", 8000, 3), 1, 0, 0, 0, EOA, 0, EOS]
    assert decode(ids).segments == [TextSegment(b"\x00"), img, aud, TextSegment(b"\x00")]


def test_text_segment_from_str_is_utf8():
    seg = TextSegment.from_str("é☃")
    assert seg.data == "é☃".encode() and seg.text() == "é☃"
    assert TextSegment(b"\xff").text() == "\ufffd"


@pytest.mark.parametrize("make, words", [
    (lambda: ImageSegment(2, 2, 1, b"abc"), "needs 4 pixel bytes"),
    (lambda: ImageSegment(0, 2, 1, b""), "outside"),
    (lambda: ImageSegment(1, 1, 2, b"ab"), "channels"),
    (lambda: AudioSegment(8000, 3, 1, b"ab"), "3 samples"),
    (lambda: AudioSegment(8000, 1, 2, b"a"), "encoding"),
    (lambda: AudioSegment(0, 1, 1, b"a"), "sample rate"),
])
def test_segment_validation(make, words):
    with pytest.raises(FormatError, match=words) as e:
        make()
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- decode errors

IMG_HEADER = [0, 2, 0, 2, 1]  # 2x2 gray: 4 pixel bytes
AUD_HEADER = [*struct.pack(">II", 8000, 3), 1]  # 3 samples


@pytest.mark.parametrize("ids, words", [
    ([BOI, *IMG_HEADER, 1, 2, 3], "image payload is truncated"),
    ([BOI, 0, 2], "image header is truncated"),
    ([BOI, 0, 0, 0, 2, 1, EOI], "bad image header"),
    ([BOI, 0, 2, 0, 2, 2, 1, 2, 3, 4, EOI], "bad image header"),
    ([BOI, *IMG_HEADER, 1, 2, 3, 4], "not closed by EOI"),
    ([BOI, *IMG_HEADER, 1, 2, 3, 4, 5], "not closed by EOI"),
    ([BOI, *IMG_HEADER, 1, 2, 3, 4, EOA], "not closed by EOI"),
    ([BOI, *IMG_HEADER, 1, EOS, 3, 4, EOI], "special id 258"),
    ([BOA, *AUD_HEADER, 9, 9], "audio payload is truncated"),
    ([BOA, *struct.pack(">II", 8000, 1), 7, 9, EOA], "bad audio header"),
    ([BOA, *struct.pack(">II", 0, 1), 1, 9, EOA], "bad audio header"),
    ([BOA, *AUD_HEADER, 9, 9, 9], "not closed by EOA"),
    ([104, 105, EOI], "unexpected EOI at position 2"),
    ([EOA], "unexpected EOA at position 0"),
    ([104, BOS, 105], "unexpected BOS at position 1"),
    ([104, EOS], "unexpected EOS"),
    ([PAD], "unexpected PAD"),
    ([VOCAB_SIZE + 5], "unexpected 268"),
])
def test_decode_segments_errors(ids, words):
    with pytest.raises(FormatError, match=words) as e:
        decode_segments(ids)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_decode_needs_bos_and_eos():
    with pytest.raises(FormatError, match="start with BOS"):
        decode([104, EOS])
    with pytest.raises(FormatError, match="start with BOS"):
        decode([])
    with pytest.raises(FormatError, match="end with EOS"):
        decode([BOS, 104])
    with pytest.raises(FormatError, match="image payload is truncated"):
        decode([BOS, BOI, *IMG_HEADER, 1, EOS])


def test_format_error_is_an_omnibyte_error():
    from omnibyte.errors import OmnibyteError

    assert issubclass(FormatError, OmnibyteError) and issubclass(FormatError, ValueError)


def test_decode_accepts_numpy_ids():
    ids = np.array(encode(Document([TextSegment(b"hi"), ImageSegment(1, 1, 1, b"\x07")])), dtype=np.uint16)
    assert decode(ids).segments == [TextSegment(b"hi"), ImageSegment(1, 1, 1, b"\x07")]


# ----------------------------------------------------------------------------- split_documents


@settings(max_examples=100, deadline=None)
@given(st.lists(documents, max_size=5), st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_split_documents_recovers_documents(docs, pads):
    encoded = [encode(d) for d in docs]
    stream = [PAD] * pads[0]
    for i, ids in enumerate(encoded):
        stream += ids + [PAD] * pads[1 + i % 5]
    assert split_documents(stream) == encoded
    assert split_documents(np.array(stream, dtype=np.uint16)) == encoded


def test_split_documents_edges():
    a, b = encode(b"ab"), encode(b"c")
    # junk before the first BOS is dropped, an unterminated document at the end is dropped
    assert split_documents([104, EOS, *a, *b, BOS, 105]) == [a, b]
    # a BOS inside a document starts it over; PAD inside is dropped
    assert split_documents([BOS, 104, BOS, 105, PAD, 106, EOS]) == [[BOS, 105, 106, EOS]]
    assert split_documents([]) == []
    assert split_documents([EOS, EOS]) == []


# ----------------------------------------------------------------------------- is_segment_start


def test_is_segment_start_hand_made():
    ids = [BOS, 104, BOI, 0, 1, 0, 1, 1, 7, EOI, 105, BOA, *AUD_HEADER, 5, 5, 5, EOA, EOS]
    got = is_segment_start(np.array(ids))
    want = np.zeros(len(ids), bool)
    for i, t in enumerate(ids):
        if t in (BOS, BOI, EOI, BOA, EOA, EOS):
            want[i] = True
        if i and ids[i - 1] in (EOI, EOA):
            want[i] = True  # the byte after a block closes starts the next segment
    assert got.tolist() == want.tolist()
    assert got[10] and got[24] and got[25]  # 'i' after EOI, EOA, EOS (also after EOA)
    assert not got[1] and not got[4] and not got[21]  # plain bytes, header and payload bytes


def test_is_segment_start_batched_rows_independent():
    rows = np.array([[EOI, 104, 105], [104, 105, EOI]])
    got = is_segment_start(rows)
    assert got.tolist() == [[True, True, False], [False, False, True]]
    # an EOI at the end of row 0 never marks position 0 of row 1
    got = is_segment_start(np.array([[104, EOA], [104, 105]]))
    assert got.tolist() == [[False, True], [False, False]]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=30))
def test_is_segment_start_plain_text_only_at_bos_eos(data):
    got = is_segment_start(np.array(encode(data)))
    assert got.tolist() == [True] + [False] * len(data) + [True]


# ----------------------------------------------------------------------------- ids_to_text


def test_ids_to_text():
    ids = [BOS, *"hé".encode(), 0xFF, BOI, 0, 1, 0, 1, 1, 65, EOI, EOS, PAD]
    assert ids_to_text(ids) == "<BOS>hé\ufffd<BOI>\x00\x01\x00\x01\x01A<EOI><EOS><PAD>"
    assert ids_to_text([]) == ""
    assert ids_to_text([VOCAB_SIZE + 1]) == f"<{VOCAB_SIZE + 1}>"
    # a character split by a special is not glued back together
    snow = "☃".encode()
    assert ids_to_text([snow[0], EOS, *snow[1:]]) == "\ufffd<EOS>\ufffd\ufffd"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=40))
def test_ids_to_text_bytes_decode_with_replacement(data):
    assert ids_to_text(list(data)) == data.decode("utf-8", errors="replace")
    assert ids_to_text(np.frombuffer(data, np.uint8)) == data.decode("utf-8", errors="replace")
    assert all(i < N_BYTES for i in data)
