"""Task metrics on hand-made cases."""

from __future__ import annotations

import math

import pytest

from omnibyte.data.tasks.shapes import Shape, point_answer
from omnibyte.eval.metrics import (
    accuracy,
    clock_distance,
    clock_scores,
    count_scores,
    match_points,
    normalize,
    parse_count,
    parse_points,
    parse_time,
    pixel_mae,
    point_scores,
    wer_cer,
)

# ----------------------------------------------------------------------------- clocks


def test_parse_time():
    assert parse_time("03:25") == 3 * 60 + 25
    assert parse_time("Answer: 3:25\n") == 205
    assert parse_time("12:00") == 0 and parse_time("00:00") == 0
    assert parse_time("13:25") == parse_time("1:25")
    for bad in ("", "3.25", "25:00", "3:61", "half past"):
        assert parse_time(bad) is None


def test_clock_distance_wraps_round_twelve():
    assert clock_distance(parse_time("11:59"), parse_time("12:01")) == 2
    assert clock_distance(parse_time("12:01"), parse_time("11:59")) == 2
    assert clock_distance(parse_time("06:00"), parse_time("12:00")) == 360
    assert clock_distance(parse_time("03:00"), parse_time("03:00")) == 0


def test_clock_scores():
    refs = ["11:59", "03:10", "06:30", "01:00"]
    preds = ["12:01", "03:10", "06:34", "banana"]
    s = clock_scores(refs, preds)
    assert s["exact"] == 0.25  # only 03:10
    assert s["within"] == 0.5  # 12:01 is 2 minutes from 11:59; 06:34 is 4 away
    assert s["parsed"] == 0.75 and s["n"] == 4
    assert s["hour"] == 0.5  # 03 and 06 right; 12:01 is the wrong hour for 11:59, banana none
    assert clock_scores(["12:40", "00:05"], ["0:59", "12:00"])["hour"] == 1.0  # 12 and 0 are one hour hand
    assert s["chance_within"] == pytest.approx(7 / 720) and s["chance_hour"] == pytest.approx(1 / 12)
    assert clock_scores(refs, preds, tolerance=4)["within"] == 0.75
    with pytest.raises(ValueError, match="references"):
        clock_scores(refs, preds[:2])


# ----------------------------------------------------------------------------- counting


def test_parse_count():
    assert parse_count("3") == 3
    assert parse_count(" 12 circles") == 12
    assert parse_count("three") == 3
    assert parse_count("There are none... zero") == 0
    assert parse_count("no idea") is None
    assert parse_count("") is None


def test_count_scores():
    s = count_scores([3, 0, 2, 2], ["3", "one", "2\n", "x"])
    assert s["accuracy"] == 0.5 and s["parsed"] == 0.75
    assert s["mae"] == pytest.approx((0 + 1 + 0) / 3)
    assert s["chance"] == 0.5  # always answering 2


# ----------------------------------------------------------------------------- pointing

SHAPES = [Shape("circle", "red", 10, 10, 4), Shape("square", "blue", 30, 10, 3),
          Shape("triangle", "green", 10, 30, 6), Shape("diamond", "black", 30, 30, 5)]


@pytest.mark.parametrize("shape, inside, outside", [
    (SHAPES[0], [(10, 10), (13.9, 10), (10, 6.1), (12.8, 12.8)], [(14.1, 10), (12.9, 12.9), (6, 6)]),
    (SHAPES[1], [(30, 10), (33, 13), (27.1, 7.1)], [(33.1, 10), (30, 6.9), (26.5, 13.5)]),
    # triangle: apex (10, 24), base y = 33 from x ≈ 4.8 to 15.2
    (SHAPES[2], [(10, 30), (10, 24.5), (6, 32.5), (14, 32.5)], [(10, 23.5), (10, 33.5), (5, 27), (15, 27)]),
    (SHAPES[3], [(30, 30), (34.9, 30), (32, 32.9), (27.5, 27.5)], [(35.1, 30), (33, 33), (26, 26)]),
])
def test_inside_tests(shape, inside, outside):
    for p in inside:
        assert shape.contains(*p), p
    for p in outside:
        assert not shape.contains(*p), p


def test_triangle_vertices_are_inside_and_area():
    t = SHAPES[2]
    for v in t.vertices():
        assert t.contains(*v)
    assert t.area() == pytest.approx(3 * math.sqrt(3) / 4 * 36)
    assert SHAPES[1].area() == 36 and SHAPES[3].area() == 50


def test_parse_points():
    assert parse_points('<point x="52.9" y="43.9" alt="cat">cat</point>') == [(52.9, 43.9)]
    assert parse_points('<points x1="10" y1="20" x2="30.5" y2="40" alt="cats">cats</points>') == [
        (10.0, 20.0), (30.5, 40.0)]
    # attributes in any order, several tags, junk around them
    text = 'Here: <point y="5" x="6" alt="a">a</point> and <point x="7.5" y="8">b</point>!'
    assert parse_points(text) == [(6.0, 5.0), (7.5, 8.0)]
    assert parse_points('<points x2="3" y2="4" x1="1" y1="2">') == [(1.0, 2.0), (3.0, 4.0)]
    for bad in ("", "52.9, 43.9", '<point x="a" y="2">', '<point x="1">', "<pointer x='1' y='2'>"):
        assert parse_points(bad) == []


def test_point_answers_round_trip_through_the_parser():
    one = point_answer([SHAPES[0]], 40, 40, "red circle")
    assert one == '<point x="25.0" y="25.0" alt="red circle">red circle</point>'
    two = point_answer(SHAPES[:2], 40, 40, "shapes")
    assert parse_points(two) == [(25.0, 25.0), (75.0, 25.0)]


def test_match_points_is_one_to_one():
    a, b = Shape("circle", "red", 10, 10, 4), Shape("circle", "red", 30, 10, 4)
    assert match_points([(10, 10), (11, 11)], [a, b]) == 1  # two points in one target count once
    assert match_points([(10, 10), (30, 10)], [a, b]) == 2
    # overlapping targets: a point inside both must not block the other point's only target
    big, small = Shape("circle", "red", 10, 10, 8), Shape("circle", "red", 12, 10, 2)
    assert match_points([(12, 10), (4, 10)], [small, big]) == 2
    assert match_points([], [a]) == 0


def test_point_scores():
    targets = [[SHAPES[0]], [SHAPES[1], SHAPES[3]]]
    preds = ['<point x="25" y="25">', '<points x1="75" y1="25" x2="10" y2="90">']
    s = point_scores(targets, preds, [(40, 40), (40, 40)])
    assert s["precision"] == pytest.approx(2 / 3)  # (10, 90)% = (4, 36) px hits nothing
    assert s["recall"] == pytest.approx(2 / 3)  # the diamond was missed
    assert s["f1"] == pytest.approx(2 / 3) and s["parsed"] == 1
    s = point_scores(targets, ["nothing", ""], [(40, 40), (40, 40)])
    assert s["precision"] == 0 and s["recall"] == 0 and s["parsed"] == 0
    assert 0 < s["chance_precision"] < 0.1


# ----------------------------------------------------------------------------- text and speech


def test_normalize_and_accuracy():
    assert normalize("  Ankle Boot.\n") == "ankle boot"
    assert normalize("T-shirt!") == "t-shirt"
    assert normalize("À gauche, merci") == "à gauche merci"
    assert accuracy(["sneaker", "bag"], ["Sneaker", "coat"])["accuracy"] == 0.5


def test_wer_cer_known_pairs():
    s = wer_cer(["three seven one"], ["three one"])  # one deletion in three words
    assert s["wer"] == pytest.approx(1 / 3)
    s = wer_cer(["two", "four five"], ["to", "four five"])  # one substitution in three words
    assert s["wer"] == pytest.approx(1 / 3)
    assert s["cer"] == pytest.approx(1 / 12)  # "two" → "to": one deletion in 3 + 9 characters
    assert wer_cer(["Hello, World"], ["hello world"])["wer"] == 0
    assert wer_cer(["one two"], [""])["wer"] == 1
    with pytest.raises(ValueError, match="empty"):
        wer_cer(["..."], ["x"])


def test_pixel_mae():
    assert pixel_mae(b"\x00\x10", b"\x10\x00") == 16
    assert pixel_mae(bytes([255]), bytes([0])) == 255
    with pytest.raises(ValueError, match="differ"):
        pixel_mae(b"\x00", b"\x00\x00")
