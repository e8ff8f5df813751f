"""Candidate extraction from hand-built OCR token lists: split tokens, OCR slips, ranges, x-groups."""

from __future__ import annotations

import pytest

from imagequant.core.tokens import OcrToken
from imagequant.text.candidates import (
    Candidate,
    extract_candidates,
    group_lines,
    parse_number,
    repair_digits,
    same_quantity,
)
from imagequant.text.features import CANDIDATE_FEATURE_DIM, candidate_features

IMAGE = (1000, 1000)


def line(
    words: list[str],
    y: int = 100,
    h: int = 20,
    line_no: int = 0,
    x: int = 10,
    gap: int = 8,
    conf: float = 90.0,
) -> list[OcrToken]:
    """Tokens of one printed line, left to right, 10 px per character."""
    out = []
    for i, word in enumerate(words):
        width = 10 * len(word)
        out.append(OcrToken(word, conf, x, y, width, h, 1, line_no, i))
        x += width + gap
    return out


def found(words: list[str], entity: str) -> list[tuple[float, str]]:
    return [(c.value, c.unit) for c in extract_candidates(line(words), entity, IMAGE)]


@pytest.mark.parametrize(
    ("words", "entity", "expected"),
    [
        (["500g"], "item_weight", [(500.0, "gram")]),
        (["500", "g"], "item_weight", [(500.0, "gram")]),
        (["1,5", "kg"], "item_weight", [(1.5, "kilogram")]),
        (["1,000", "mg"], "item_weight", [(1000.0, "milligram")]),
        (["0,500", "kg"], "item_weight", [(0.5, "kilogram")]),
        (["1,234.5", "g"], "item_weight", [(1234.5, "gram")]),
        (["Net", "Wt.", "17.6", "oz", "(500", "g)"], "item_weight", [(17.6, "ounce"), (500.0, "gram")]),
        (
            ["16", "OZ", "(1", "LB)", "454g"],
            "item_weight",
            [(16.0, "ounce"), (1.0, "pound"), (454.0, "gram")],
        ),
        ([".5", "oz"], "item_weight", [(0.5, "ounce")]),
        (["12V", "DC"], "voltage", [(12.0, "volt")]),
        (["12-Volt"], "voltage", [(12.0, "volt")]),
        (["100-240V~"], "voltage", [(100.0, "volt"), (240.0, "volt")]),
        (["AC100-240V"], "voltage", [(100.0, "volt"), (240.0, "volt")]),
        (["110/220V"], "voltage", [(110.0, "volt"), (220.0, "volt")]),
        (["1500W"], "wattage", [(1500.0, "watt")]),
        (["2.2", "kW"], "wattage", [(2.2, "kilowatt")]),
        (['5.9"'], "height", [(5.9, "inch")]),
        (["5'"], "height", [(5.0, "foot")]),
        (["12.5cm"], "depth", [(12.5, "centimetre")]),
        (
            ["30", "x", "20", "x", "10", "cm"],
            "width",
            [(30.0, "centimetre"), (20.0, "centimetre"), (10.0, "centimetre")],
        ),
        (["30x20x10mm"], "width", [(30.0, "millimetre"), (20.0, "millimetre"), (10.0, "millimetre")]),
        (["1/2", "in"], "width", [(0.5, "inch")]),
        (["1", "1/2", "in"], "width", [(1.5, "inch")]),
        (["5", "in", "1"], "width", []),  # "5 in 1" is no length
        (["1O0", "ml"], "item_volume", [(100.0, "millilitre")]),
        (["0.5L"], "item_volume", [(0.5, "litre")]),
        (["12", "fl.", "oz."], "item_volume", [(12.0, "fluid ounce")]),
        (["16", "oz"], "item_volume", [(16.0, "fluid ounce")]),
        (["16", "fl", "oz"], "item_weight", []),  # a volume unit is no weight
        (["3.5", "02"], "item_weight", [(3.5, "ounce")]),  # Tesseract reads "oz" as "02"
        (["1.87|b"], "item_weight", [(1.87, "pound")]),
        (["Total", "Fat", "0g"], "item_weight", []),  # zero is never an answer
        (["500g"], "voltage", []),
        (["5G", "network"], "item_weight", [(5.0, "gram")]),  # the extractor is not the judge
        (["10", "min"], "width", []),
        (["500", "mAh"], "width", []),
        (["2019-2022"], "item_weight", []),
        (["60WMAX"], "wattage", [(60.0, "watt")]),  # "60W MAX" with the space lost
        (["60WMax", "bulb"], "wattage", [(60.0, "watt")]),
        (["250WMOTOR"], "wattage", [(250.0, "watt")]),  # unit glued to the next word
        (["15MGserving"], "item_weight", [(15.0, "milligram")]),
        (["200gpack"], "item_weight", [(200.0, "gram")]),
        (["8Light"], "item_volume", []),
        (["0.9inchi"], "width", [(0.9, "inch")]),  # a tick mark read as "i"  # only common spellings glue on: no "8 L" from "8Light"
        (["NET", "WT", "40Z"], "item_weight", [(4.0, "ounce")]),  # "4OZ" read with a zero
        (["30z"], "item_weight", [(3.0, "ounce")]),
        (["280", "GSM"], "item_weight", [(280.0, "gram")]),  # fabric weight, recorded in grams
        (["Weight:", "18¢"], "item_weight", [(18.0, "gram")]),  # Tesseract's "g"
        (["lkg"], "item_weight", [(1.0, "kilogram")]),
        (["Ikg"], "item_weight", [(1.0, "kilogram")]),
        (["Ilkg"], "item_weight", []),
        (["0.42lnch"], "width", [(0.42, "inch")]),  # i read as l
        (["200", "mI", "KOCHENDES"], "item_volume", [(200.0, "millilitre")]),  # l read as I
        (["Net", "128fOZ(1GAL)"], "item_volume", [(128.0, "fluid ounce"), (1.0, "gallon")]),  # "fl" lost its l
        (["5", "min"], "item_volume", []),
        (["80cubicinches"], "item_volume", [(80.0, "cubic inch")]),  # a two-word unit printed without its space
        (["Contents:", "16", "f.oz"], "item_volume", [(16.0, "fluid ounce")]),
        (["59,1FL.", "0Z(1748ml.)"], "item_volume", [(59.1, "fluid ounce"), (1748.0, "millilitre")]),  # O read as 0
        (["3.502"], "item_weight", []),  # a bare "02" glued to digits stays a number
        (["1KG(2.21bs)"], "item_weight", [(1.0, "kilogram"), (2.2, "pound")]),  # "lbs" read as "1bs"
        (["351bs"], "maximum_weight_recommendation", [(35.0, "pound")]),
        (["121"], "item_weight", []),  # a 1 is an l only before "b"/"bs"
        (["Net", "Wt", "567.g"], "item_weight", [(567.0, "gram")]),  # a stray full stop before the unit
        (["500.ml"], "item_volume", [(500.0, "millilitre")]),
        (["Step", "2.In", "the", "box"], "width", []),  # after a full stop "In" starts a sentence
    ],
)
def test_tricky_strings(words: list[str], entity: str, expected: list[tuple[float, str]]) -> None:
    assert found(words, entity) == expected


def test_split_tokens_net_weight_evidence() -> None:
    tokens = line(["Net", "Wt.", "17.6", "oz", "(500", "g)"])
    oz, g = extract_candidates(tokens, "item_weight", IMAGE)
    assert oz.text == "17.6 oz" and (oz.token_start, oz.token_end) == (2, 4)
    assert g.text == "500 g" and (g.token_start, g.token_end) == (4, 6)
    assert oz.keyword and oz.keyword_same_line and g.keyword
    assert g.in_parens and not oz.in_parens
    # 17.6 oz = 499 g: the same quantity twice, the first printed is the primary
    assert oz.recurrence == g.recurrence == 2
    assert oz.dual_primary and not oz.dual_secondary
    assert g.dual_secondary
    assert (oz.rank, g.rank) == (0, 1)
    assert oz.n_candidates == 2
    assert not oz.glued
    assert oz.unit_explicit and not oz.unit_inferred
    # box is the union of "17.6" and "oz"
    t17, toz = tokens[2], tokens[3]
    assert oz.left == t17.left and oz.width == toz.left + toz.width - t17.left
    assert oz.conf == pytest.approx(0.9)
    assert oz.rel_height == pytest.approx(1.0)


def test_range_flags() -> None:
    low, high = extract_candidates(line(["100-240V~"]), "voltage", IMAGE)
    assert low.range_low and not low.range_high and low.unit_shared
    assert high.range_high and not high.range_low and high.glued
    v12 = extract_candidates(line(["12V", "DC"]), "voltage", IMAGE)[0]
    assert not v12.range_low and not v12.range_high and v12.text == "12V DC"
    ac = extract_candidates(line(["AC100-240V"]), "voltage", IMAGE)
    assert all(c.keyword for c in ac)  # "AC" glued before the number


def test_conversion_pair_is_not_a_range() -> None:
    inch, cm = extract_candidates(line(["6.7in/17cm"]), "height", IMAGE)
    assert (inch.value, inch.unit, cm.value, cm.unit) == (6.7, "inch", 17.0, "centimetre")
    assert not inch.range_low and not cm.range_high
    assert inch.dual_primary and cm.dual_secondary  # 6.7 in = 17.02 cm


def test_xgroup_positions_and_header_letters() -> None:
    cands = extract_candidates(line(["30", "x", "20", "x", "10", "cm"]), "width", IMAGE)
    assert [(c.xgroup_pos, c.xgroup_len) for c in cands] == [(0, 3), (1, 3), (2, 3)]
    assert [c.unit_shared for c in cands] == [True, True, False]
    assert all(c.unit_explicit for c in cands)
    cands = extract_candidates(
        line(["L", "x", "W", "x", "H:", "30", "x", "20", "x", "10", "cm"]), "height", IMAGE
    )
    assert [c.dim_letter for c in cands] == ["l", "w", "h"]
    cands = extract_candidates(line(["W30xH20cm"]), "height", IMAGE)
    assert [(c.value, c.dim_letter) for c in cands] == [(30.0, "w"), (20.0, "h")]
    # a count times a weight shares no unit
    cands = extract_candidates(line(["2", "x", "500g"]), "item_weight", IMAGE)
    assert [(c.value, c.xgroup_pos) for c in cands] == [(500.0, 1)]


def test_ocr_slip_and_symbol_flags() -> None:
    c = extract_candidates(line(["1O0", "ml"]), "item_volume", IMAGE)[0]
    assert c.ocr_fixed and c.text == "1O0 ml"
    c = extract_candidates(line(['5.9"']), "height", IMAGE)[0]
    assert not c.unit_explicit and c.glued
    c = extract_candidates(line(["3.5", "02"]), "item_weight", IMAGE)[0]
    assert c.ocr_fixed
    c = extract_candidates(line(["06g"]), "item_weight", IMAGE)[0]
    assert c.leading_zero
    c = extract_candidates(line(["1", "1/2", "in"]), "width", IMAGE)[0]
    assert c.fraction and c.text == "1 1/2 in"


def test_keyword_on_line_above() -> None:
    tokens = line(["NET", "WEIGHT"], y=100, line_no=0) + line(["500g"], y=125, line_no=1)
    c = extract_candidates(tokens, "item_weight", IMAGE)[0]
    assert c.keyword and not c.keyword_same_line
    far = line(["NET", "WEIGHT"], y=100, line_no=0) + line(["500g"], y=400, line_no=1)
    assert not extract_candidates(far, "item_weight", IMAGE)[0].keyword
    assert not extract_candidates(line(["Fat", "5g"]), "item_weight", IMAGE)[0].keyword


def test_entity_keywords() -> None:
    assert extract_candidates(line(["Max", "load:", "150", "kg"]), "maximum_weight_recommendation", IMAGE)[
        0
    ].keyword
    assert extract_candidates(line(["Rated", "power:", "1500W"]), "wattage", IMAGE)[0].keyword
    assert extract_candidates(line(["Input:", "12V"]), "voltage", IMAGE)[0].keyword
    assert extract_candidates(line(["Capacity", "2", "L"]), "item_volume", IMAGE)[0].keyword
    assert extract_candidates(line(["Height:", "20", "cm"]), "height", IMAGE)[0].keyword


def test_line_grouping_joins_split_lines_and_keeps_rows_apart() -> None:
    # the engine put "500" and "g" on different lines, yet they sit side by side
    tokens = [
        OcrToken("500", 90, 100, 100, 30, 20, 1, 0, 0),
        OcrToken("g", 90, 134, 104, 10, 16, 2, 1, 0),
        OcrToken("250", 90, 100, 200, 30, 20, 3, 2, 0),
        OcrToken("ml", 90, 400, 200, 20, 20, 4, 3, 0),  # far to the right: not joined
    ]
    assert group_lines(tokens) == [[0, 1], [2], [3]]
    cands = extract_candidates(tokens, "item_weight", IMAGE)
    assert [(c.value, c.unit, c.text) for c in cands] == [(500.0, "gram", "500 g")]
    assert extract_candidates(tokens, "item_volume", IMAGE) == []


def test_reading_order_across_lines() -> None:
    tokens = line(["1", "kg"], y=300, line_no=0) + line(["250", "g"], y=100, line_no=1)
    cands = extract_candidates(tokens, "item_weight", IMAGE)
    assert [(c.value, c.rank) for c in cands] == [(250.0, 0), (1.0, 1)]


def test_rel_height_recurrence_and_position() -> None:
    tokens = (
        line(["500g"], y=50, h=60, line_no=0, x=400)
        + line(["Net", "Wt", "0.5", "kg"], y=500, line_no=1)
        + line(["Fat", "3g"], y=600, line_no=2)
        + line(["Sugar", "1g"], y=700, line_no=3)
    )
    cands = extract_candidates(tokens, "item_weight", (1000, 800))
    big = cands[0]
    assert big.rel_height == pytest.approx(3.0)
    assert big.recurrence == 2 and cands[1].recurrence == 2  # 500 g = 0.5 kg
    assert cands[2].recurrence == 1
    assert big.rel_x == pytest.approx((400 + 20) / 1000)
    assert big.rel_y == pytest.approx(80 / 800)


def test_rotated_tokens_are_ordered_in_their_own_frame() -> None:
    # a pass on the image rotated 90 degrees CCW reads text that runs top-to-bottom in the original;
    # boxes mapped back are tall and thin, "ml" below "250"
    tokens = [
        OcrToken("ml", 80, 50, 338, 20, 20, 1, 0, 1, angle=90),
        OcrToken("250", 80, 50, 300, 20, 30, 1, 0, 0, angle=90),
    ]
    cands = extract_candidates(tokens, "item_volume", IMAGE)
    assert [(c.value, c.unit, c.angle) for c in cands] == [(250.0, "millilitre", 90)]
    assert cands[0].rel_height == pytest.approx(1.0)  # heights measured across the text line


def test_unitless_fallback() -> None:
    tokens = line(["up", "to", "10"]) + line(["2019"], y=300, line_no=1) + line(["50%"], y=400, line_no=2)
    assert extract_candidates(tokens, "maximum_weight_recommendation", IMAGE) == []
    cands = extract_candidates(tokens, "maximum_weight_recommendation", IMAGE, unitless_fallback=True)
    assert [(c.value, c.unit, c.unit_inferred, c.unit_explicit) for c in cands] == [
        (10.0, "kilogram", True, False)
    ]
    assert cands[0].keyword  # "up to"
    # with a real unit mention nothing is guessed
    tokens = line(["10"]) + line(["5", "kg"], y=300, line_no=1)
    cands = extract_candidates(tokens, "maximum_weight_recommendation", IMAGE, unitless_fallback=True)
    assert [(c.value, c.unit_inferred) for c in cands] == [(5.0, False)]


def test_empty_and_unknown_entity() -> None:
    assert extract_candidates([], "item_weight", IMAGE) == []
    assert extract_candidates([OcrToken("", -1, 0, 0, 0, 0, 0, 0, 0)], "item_weight", IMAGE) == []
    with pytest.raises(ValueError):
        extract_candidates(line(["5g"]), "colour", IMAGE)


def test_repair_and_parse_number() -> None:
    assert repair_digits("1O0 ml") == "100 ml"
    assert repair_digits("5oz 5O") == "5oz 5O"  # only between digits
    assert repair_digits("2S0g l0l 1l0") == "250g l0l 110"
    assert parse_number("1,5") == 1.5
    assert parse_number("1,000") == 1000.0
    assert parse_number("1.000.000") == 1_000_000.0
    assert parse_number("1.234,5") == 1234.5
    assert parse_number(".5") == 0.5
    assert parse_number("12.") == 12.0
    assert parse_number("3,4,5") is None
    assert parse_number("abc") is None


def test_same_quantity_rounding() -> None:
    def cand(value: float, unit: str, base: float) -> Candidate:
        return Candidate(value, unit, "", 0, 1, 0, 0, 1, 1, 1.0, 0.5, 0.5, 0.9, base_value=base)

    assert same_quantity(cand(5.3, "inch", 0.13462), cand(13, "centimetre", 0.13))  # 13 is rounded
    assert not same_quantity(cand(1, "kilogram", 1000), cand(1.4, "kilogram", 1400))
    assert not same_quantity(cand(1, "pound", 453.6), cand(300, "gram", 300))  # "1" is not +-50%
    assert same_quantity(cand(1, "pound", 453.6), cand(454, "gram", 454))
    # a short conversion printed to one decimal is coarse: 11 mm = 0.433 in, printed "0.4 in" (8% apart)
    assert same_quantity(cand(11, "millimetre", 0.011), cand(0.4, "inch", 0.01016))
    assert not same_quantity(cand(11, "millimetre", 0.011), cand(0.3, "inch", 0.00762))


def test_candidate_features_fixed_length_and_bounded() -> None:
    cands = []
    for words, entity in [
        (["Net", "Wt.", "17.6", "oz", "(500", "g)"], "item_weight"),
        (["100-240V~"], "voltage"),
        (["30", "x", "20", "x", "10", "cm"], "width"),
        (["0.0001", "mg"], "item_weight"),
        (["99999999", "kg"], "item_weight"),
    ]:
        cands += extract_candidates(line(words), entity, IMAGE)
    rows = [candidate_features(c) for c in cands]
    assert all(len(r) == CANDIDATE_FEATURE_DIM for r in rows)
    assert all(-2.0 <= x <= 2.0 for r in rows for x in r)
    # exactly one unit bit set, and different units differ there
    assert len({tuple(r[-31:]) for r in rows}) >= 5
    assert all(sum(r[-31:]) == 1.0 for r in rows)


def test_number_with_its_unit_on_the_line_below_or_beside() -> None:
    # A big "350" with a small "LBS" under it, read as two lines.
    big = OcrToken("350", 90.0, 100, 100, 120, 60, 1, 0, 0)
    under = OcrToken("LBS", 90.0, 110, 170, 60, 20, 1, 1, 0)
    beside = OcrToken("Grams", 90.0, 230, 130, 60, 20, 1, 1, 0)
    far = OcrToken("kg", 90.0, 110, 400, 30, 20, 1, 1, 0)
    label = OcrToken("CAPACITY", 90.0, 400, 100, 160, 20, 1, 2, 0)
    cands = extract_candidates([big, under, label], "maximum_weight_recommendation", IMAGE)
    assert [(c.value, c.unit) for c in cands] == [(350.0, "pound")]
    assert (cands[0].top, cands[0].height) == (100, 90)  # boxed over both lines
    assert [(c.value, c.unit) for c in extract_candidates([big, beside], "item_weight", IMAGE)] == [(350.0, "gram")]
    assert extract_candidates([big, far], "item_weight", IMAGE) == []  # too far below
    bigger_unit = OcrToken("g", 90.0, 110, 170, 60, 120, 1, 1, 0)
    assert extract_candidates([big, bigger_unit], "item_weight", IMAGE) == []
    # Loose detector boxes: the unit starts inside the number's box (below it, or right of its middle)
    inside_below = OcrToken("kg", 90.0, 115, 145, 50, 40, 1, 1, 0)
    assert [(c.value, c.unit) for c in extract_candidates([big, inside_below], "item_weight", IMAGE)] == [
        (350.0, "kilogram")
    ]
    inside_right = OcrToken("Grams", 90.0, 190, 130, 70, 25, 1, 1, 0)
    assert [(c.value, c.unit) for c in extract_candidates([big, inside_right], "item_weight", IMAGE)] == [
        (350.0, "gram")
    ]
    left_half = OcrToken("Grams", 90.0, 130, 120, 70, 25, 1, 1, 0)
    assert extract_candidates([big, left_half], "item_weight", IMAGE) == []


@pytest.mark.parametrize(
    ("words", "entity", "expected"),
    [
        # fraction glyphs, and the forms OCR and Unicode folding make of them
        (["12½", "inch"], "width", [(12.5, "inch")]),
        (["12", "½", "inch"], "width", [(12.5, "inch")]),
        (["¾", "inch"], "width", [(0.75, "inch")]),
        (["121/2", "inch"], "height", [(12.5, "inch")]),
        (["121\u20442", "inch"], "height", [(12.5, "inch")]),
        (["115/16", "in"], "depth", [(1.9375, "inch")]),
        (["33/4in"], "width", [(3.75, "inch")]),
        (["13/16", "inch"], "width", [(0.8125, "inch")]),  # a proper fraction stays one
        # l / I read for 1 and O for 0 next to digits and units
        (["l5kg"], "item_weight", [(15.0, "kilogram")]),
        (["I2V"], "voltage", [(12.0, "volt")]),
        (["5Og"], "item_weight", [(50.0, "gram")]),
        (["1OOW"], "wattage", [(100.0, "watt")]),
        # units glued to the next word
        (["42WMAX"], "wattage", [(42.0, "watt")]),
        (["15MGerving"], "item_weight", [(15.0, "milligram")]),
        # the bar between two units of one quantity read as a 1 ("100g|3.52oz"), only when that makes a conversion
        (["100g13.52oz"], "item_weight", [(100.0, "gram"), (3.52, "ounce")]),
        (["100g12oz"], "item_weight", [(100.0, "gram"), (12.0, "ounce")]),
    ],
)
def test_print_forms_real_images_need(words: list[str], entity: str, expected: list[tuple[float, str]]) -> None:
    assert found(words, entity) == expected


def test_a_number_and_its_unit_stacked_on_two_lines() -> None:
    tokens = [OcrToken("350", 95.0, 100, 100, 120, 60, 1, 0, 0), OcrToken("LBS", 95.0, 110, 170, 60, 20, 1, 1, 0)]
    assert [(c.value, c.unit) for c in extract_candidates(tokens, "maximum_weight_recommendation", IMAGE)] == [
        (350.0, "pound")]


def test_a_stacked_unit_in_capitals_may_have_a_taller_box_than_its_number() -> None:
    # "0.423" over "OUNCES": the capitals word's detector box is a quarter taller than the digits'
    tokens = [OcrToken("0.423", 95.0, 1518, 1589, 260, 80, 1, 0, 0),
              OcrToken("OUNCES", 95.0, 1516, 1664, 264, 101, 1, 1, 0)]
    assert [(c.value, c.unit) for c in extract_candidates(tokens, "item_weight", (2000, 2000))] == [(0.423, "ounce")]


def test_a_number_grouped_with_words_beside_it_still_takes_the_unit_under_it() -> None:
    # a big "10" over "KG", with "Capacity when" printed right of the "10" (side by side, so one line)
    tokens = [OcrToken("10", 95.0, 100, 1299, 110, 76, 1, 0, 0),
              OcrToken("Capacity", 95.0, 298, 1342, 248, 61, 1, 1, 0),
              OcrToken("when", 95.0, 576, 1342, 125, 61, 1, 1, 1),
              OcrToken("KG", 95.0, 85, 1373, 128, 87, 1, 2, 0)]
    cands = extract_candidates(tokens, "maximum_weight_recommendation", (2500, 2500))
    assert [(c.value, c.unit) for c in cands] == [(10.0, "kilogram")]



# The same print as the two readers give it: PP-OCRv4 drops the spaces between words (RapidOCR's tokens are
# then split at letter/digit boundaries), PP-OCRv6 keeps them. Both must give the same candidates.
@pytest.mark.parametrize(
    ("glued", "spaced", "entity", "expected"),
    [
        (["8floz"], ["8", "fl", "oz"], "item_volume", [(8.0, "fluid ounce")]),
        (["10OZ"], ["10", "OZ"], "item_weight", [(10.0, "ounce")]),
        (["1KG", "(2.2lbs)"], ["1", "KG", "(2.2", "lbs)"], "item_weight", [(1.0, "kilogram"), (2.2, "pound")]),
        (["NETWT", "10OZ(283g)"], ["NET", "WT", "10", "OZ", "(283", "g)"], "item_weight",
         [(10.0, "ounce"), (283.0, "gram")]),
        (["1800mg"], ["1800", "mg"], "item_weight", [(1800.0, "milligram")]),
        (["8FLOZ(236mL)"], ["8", "FL", "OZ", "(236", "mL)"], "item_volume", [(8.0, "fluid ounce"), (236.0, "millilitre")]),
        (["100-240V"], ["100", "-", "240", "V"], "voltage", [(100.0, "volt"), (240.0, "volt")]),
        (["30x20x10cm"], ["30", "x", "20", "x", "10", "cm"], "width",
         [(30.0, "centimetre"), (20.0, "centimetre"), (10.0, "centimetre")]),
        # OCR slips, glued and spaced: l/I for 1 before a unit, O for 0 after a digit, 1 for the l of lb
        (["lKG"], ["l", "KG"], "item_weight", [(1.0, "kilogram")]),
        (["5Og"], ["5O", "g"], "item_weight", [(50.0, "gram")]),
        (["2.21bs"], ["2.2", "1bs"], "item_weight", [(2.2, "pound")]),
    ],
)
def test_spaced_and_glued_readings_give_the_same_candidates(
    glued: list[str], spaced: list[str], entity: str, expected: list[tuple[float, str]]
) -> None:
    assert found(glued, entity) == expected
    assert found(spaced, entity) == expected


@pytest.mark.parametrize(
    ("words", "entity", "expected"),
    [
        (["1O", "OZ"], "item_weight", [(10.0, "ounce")]),  # spaced: an O before "oz" can only be a digit
        (["8", "FI", "OZ"], "item_volume", [(8.0, "fluid ounce")]),  # I for the l of a spaced FL
        (["8", "fI", "oz."], "item_volume", [(8.0, "fluid ounce")]),
        (["(I", "kg)"], "item_weight", [(1.0, "kilogram")]),
        # what must stay as it is: glued "5Oz" is 5 oz; "I" before a word that is no unit stays a letter;
        # a list of sizes is not decimals
        (["5Oz"], "item_weight", [(5.0, "ounce")]),
        (["I", "love", "5", "kg"], "item_weight", [(5.0, "kilogram")]),
        (["size", "7,", "8", "oz"], "item_weight", [(8.0, "ounce")]),
    ],
)
def test_slips_of_spaced_text(words: list[str], entity: str, expected: list[tuple[float, str]]) -> None:
    assert found(words, entity) == expected
