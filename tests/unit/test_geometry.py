"""Dimension drawings: the line each measure labels (core.geometry), found in a drawing rendered here, and
what the candidates and the rules make of it."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFont

from imagequant.core.geometry import (
    DIAGONAL,
    HORIZONTAL,
    VERTICAL,
    labelled_line,
    orientation,
    segments_from_flat,
)
from imagequant.core.tokens import OcrToken
from imagequant.imaging import line_segments
from imagequant.scoring.rules import choose, reasons
from imagequant.synthetic import font_dir
from imagequant.text.candidates import extract_candidates
from imagequant.text.features import CANDIDATE_FEATURE_DIM, candidate_features


def test_orientation_classes() -> None:
    assert orientation((0, 0, 100, 0)) == HORIZONTAL
    assert orientation((0, 0, 100, 20)) == HORIZONTAL  # a floor line in perspective (11 degrees)
    assert orientation((10, 0, 12, 100)) == VERTICAL
    assert orientation((0, 100, 100, 0)) == DIAGONAL
    assert orientation((100, 0, 0, 5)) == HORIZONTAL  # either direction


def test_segments_from_flat_tolerates_null_and_incomplete_tails() -> None:
    assert segments_from_flat(None) == []
    assert segments_from_flat(float("nan")) == []
    assert segments_from_flat([1, 2, 3, 4, 5, 6]) == [(1.0, 2.0, 3.0, 4.0)]


def test_a_label_is_linked_to_the_line_it_sits_beside_not_a_farther_one() -> None:
    segments = [(100, 500, 700, 500), (50, 100, 50, 480), (600, 100, 600, 300)]
    # "60 cm" centred under the horizontal line, 20 px tall
    link = labelled_line((370, 510, 60, 20), 20, segments, (800, 600))
    assert link is not None and link.orientation == HORIZONTAL
    assert link.along == pytest.approx(0.5, abs=0.02) and link.length == pytest.approx(0.75)
    # "40 cm" beside the vertical line on the left
    link = labelled_line((60, 280, 50, 20), 20, segments, (800, 600))
    assert link is not None and link.orientation == VERTICAL
    # far from every line: no link; a line too short to be a dimension line: no link
    assert labelled_line((300, 250, 50, 20), 20, segments, (800, 600)) is None
    assert labelled_line((60, 280, 50, 20), 20, [(50, 270, 50, 300)], (800, 600)) is None


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / "DejaVuSans.ttf"), size)


def _drawing() -> tuple[Image.Image, list[OcrToken]]:
    """A cabinet's front: a box, a vertical dimension line labelled "75 cm" to its left, a horizontal one
    labelled "120 cm" below it and a short diagonal labelled "40 cm" at its top right; and the tokens an
    OCR engine would give for the three labels."""
    img = Image.new("RGB", (1000, 800), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((250, 150, 850, 600), outline="black", width=4)  # the object
    draw.line((180, 150, 180, 600), fill="black", width=3)  # height
    draw.line((250, 680, 850, 680), fill="black", width=3)  # width
    draw.line((870, 140, 960, 60), fill="black", width=3)  # depth, receding
    font = _font(30)
    tokens = []
    for i, (text, xy) in enumerate((("75 cm", (60, 360)), ("120 cm", (500, 692)), ("40 cm", (905, 100)))):
        draw.text(xy, text, fill="black", font=font)
        left, top, right, bottom = draw.textbbox(xy, text, font=font)
        number, unit = text.split()
        split = left + (right - left) * len(number) // len(text)
        tokens.append(OcrToken(number, 95.0, left, top, split - left, bottom - top, 0, i, 0))
        tokens.append(OcrToken(unit, 95.0, split + 8, top, right - split - 8, bottom - top, 0, i, 1))
    return img, tokens


def test_line_segments_of_a_rendered_drawing_are_linked_to_their_labels() -> None:
    img, tokens = _drawing()
    flat = line_segments(img)
    segments = segments_from_flat(flat)
    assert len(flat) % 4 == 0 and segments
    assert any(orientation(s) == VERTICAL and abs(s[0] - 180) < 5 for s in segments)
    assert any(orientation(s) == HORIZONTAL and abs(s[1] - 680) < 5 for s in segments)
    by_value = {c.value: c for c in extract_candidates(tokens, "height", img.size, segments=segments)}
    assert by_value[75.0].line_orientation == VERTICAL
    assert by_value[120.0].line_orientation == HORIZONTAL
    assert by_value[40.0].line_orientation == DIAGONAL
    # without segments (a store written before they were kept) nothing is linked
    assert all(c.line_orientation == "" for c in extract_candidates(tokens, "height", img.size))


@pytest.mark.parametrize(("entity", "value"), [("height", 75.0), ("width", 120.0), ("depth", 40.0)])
def test_the_rules_read_each_measure_by_its_line(entity: str, value: float) -> None:
    img, tokens = _drawing()
    segments = segments_from_flat(line_segments(img))
    candidates = extract_candidates(tokens, entity, img.size, segments=segments)
    best, _ = choose(candidates, entity)
    assert best is not None and best.value == value
    assert f"line:{best.line_orientation}" in reasons(best, entity)
    assert len(candidate_features(best)) == CANDIDATE_FEATURE_DIM
