"""The rule baseline chooses sensibly on hand-built images."""

from __future__ import annotations

import math

from imagequant.core.tokens import OcrToken
from imagequant.scoring.rules import choose, confidence, score_candidate
from imagequant.text.candidates import Candidate, extract_candidates

IMAGE = (1000, 1000)


def line(words: list[str], y: int = 100, h: int = 20, line_no: int = 0, x: int = 10) -> list[OcrToken]:
    out = []
    for i, word in enumerate(words):
        out.append(OcrToken(word, 90.0, x, y, 10 * len(word), h, 1, line_no, i))
        x += 10 * len(word) + 8
    return out


def pick(tokens: list[OcrToken], entity: str) -> tuple[float, str] | None:
    best, conf = choose(extract_candidates(tokens, entity, IMAGE), entity)
    assert 0.0 <= conf <= 1.0
    return (best.value, best.unit) if best else None


def first_mention(tokens: list[OcrToken], entity: str) -> Candidate:
    """What a reader taking the first mention in reading order would answer."""
    return min(extract_candidates(tokens, entity, IMAGE), key=lambda c: c.rank)


def test_headline_weight_beats_nutrition_table() -> None:
    tokens = (
        line(["Protein", "3g"], y=400, line_no=0)
        + line(["Sodium", "140mg"], y=430, line_no=1)
        + line(["NET", "WT", "250g"], y=50, h=60, line_no=2)
        + line(["Fat", "12g"], y=460, line_no=3)
    )
    assert pick(tokens, "item_weight") == (250.0, "gram")
    first = first_mention(tokens, "item_weight")
    assert (first.value, first.unit) == (250.0, "gram")  # reading order: top first


def test_keyword_wins_over_first_mention() -> None:
    tokens = line(["Serving", "30g"], y=50, line_no=0) + line(["Net", "Weight", "500g"], y=300, line_no=1)
    assert pick(tokens, "item_weight") == (500.0, "gram")
    first = first_mention(tokens, "item_weight")
    assert first.value == 30.0


def test_voltage_range_takes_upper_end() -> None:
    assert pick(line(["Input:", "AC100-240V", "50/60Hz"]), "voltage") == (240.0, "volt")


def test_dual_units_prefer_the_primary() -> None:
    assert pick(line(["6.7in/17cm"]), "height") == (6.7, "inch")
    oz, g = extract_candidates(line(["Net", "Wt.", "17.6", "oz", "(500", "g)"]), "item_weight", IMAGE)
    assert g.dual_secondary
    alone = extract_candidates(line(["Net", "Wt.", "500", "g"]), "item_weight", IMAGE)[0]
    assert score_candidate(g, "item_weight") < score_candidate(alone, "item_weight")


def test_dimension_letters_and_positions() -> None:
    tokens = line(["W30xH20cm"])
    assert pick(tokens, "width") == (30.0, "centimetre")
    assert pick(tokens, "height") == (20.0, "centimetre")
    group = line(["30", "x", "20", "x", "10", "cm"])
    assert pick(group, "width") == (30.0, "centimetre")
    assert pick(group, "height") == (10.0, "centimetre")
    assert pick(group, "depth") == (20.0, "centimetre")


def test_dimension_drawing_vertical_label_is_the_height() -> None:
    # A drawing: "15 cm" under the box, a large "144 cm" printed along its right edge (read rotated).
    width = line(["15", "cm"], y=800, h=30, line_no=0, x=300)
    tall = [
        OcrToken("144", 90.0, 850, 300, 60, 130, 1, 1, 0, angle=90),
        OcrToken("cm", 90.0, 850, 440, 60, 80, 1, 1, 1, angle=90),
    ]
    assert pick(width + tall, "width") == (15.0, "centimetre")
    assert pick(width + tall, "height") == (144.0, "centimetre")
    cands = extract_candidates(width + tall, "width", IMAGE)
    by_value = {c.value: c for c in cands}
    assert by_value[144.0].size_order == 0.0 and by_value[15.0].size_order == 1.0
    assert by_value[15.0].lowest and by_value[15.0].leftmost and not by_value[15.0].highest
    assert by_value[144.0].rightmost and by_value[144.0].highest


def test_dimension_drawing_bottom_row_and_side_labels() -> None:
    # A box drawing: "2 in" under the front face, "36 in" along the receding edge to its right (same row,
    # larger print), "18.4 in" beside the box higher up. No letters say which is which.
    tokens = (
        line(["18.4inches"], y=500, h=38, line_no=0, x=40)
        + line(["36IN"], y=740, h=36, line_no=1, x=700)
        + line(["2in"], y=750, h=22, line_no=2, x=430)
    )
    assert pick(tokens, "width") == (2.0, "inch")
    assert pick(tokens, "depth") == (36.0, "inch")
    assert pick(tokens, "height") == (18.4, "inch")
    by_value = {c.value: c for c in extract_candidates(tokens, "width", IMAGE)}
    assert by_value[2.0].row_left and not by_value[2.0].row_right
    assert by_value[36.0].row_right and by_value[18.4].beside_row
    # a table prints its values in one column: nothing there is beside the bottom row
    table = line(["10", "cm"], y=300, line_no=0, x=600) + line(["20", "cm"], y=400, line_no=1, x=600)
    assert not any(c.beside_row or c.row_left for c in extract_candidates(table, "height", IMAGE))


def test_one_quantity_in_two_units_is_one_size() -> None:
    # "15.8 in / 40.1 cm" and "6 in / 15.2 cm": the cm halves are a hair larger in metres than the inch
    # halves, yet each pair is one size, so nothing favours one half of a pair for being larger
    tokens = line(["15.8in/40.1cm"], y=100, line_no=0) + line(["6in/15.2cm"], y=300, line_no=1)
    orders = {c.text: c.size_order for c in extract_candidates(tokens, "depth", IMAGE)}
    assert orders == {"15.8in": 0.0, "40.1cm": 0.0, "6in": 1.0, "15.2cm": 1.0}
    single = extract_candidates(line(["12in/30.5cm"]), "depth", IMAGE)
    assert [c.size_order for c in single] == [0.5, 0.5]  # one quantity: neither largest nor smallest


def test_unmarked_measures_depth_takes_the_larger_and_width_the_smaller() -> None:
    # nothing tells two measures apart: catalogs label the longer extent the depth, the shorter the width
    group = line(["4\"", "x", "5.65\""])
    assert pick(group, "depth") == (5.65, "inch")
    assert pick(group, "width") == (4.0, "inch")
    column = line(["30in"], y=300, line_no=0, x=500) + line(["12in"], y=400, line_no=1, x=500)
    assert pick(column, "depth") == (30.0, "inch")
    assert pick(column, "width") == (12.0, "inch")
    # a printed letter still decides, and so does a triple's position
    assert pick(line(["D", "4in", "W", "5.65in"]), "depth") == (4.0, "inch")
    assert pick(line(["30", "x", "20", "x", "10", "cm"]), "depth") == (20.0, "centimetre")


def test_specification_table_row_labels_name_the_value() -> None:
    # name | value rows: the name cell is a line of its own, left of the value and a little higher
    table = (
        line(["Power"], y=297, h=41, line_no=0, x=49)
        + line(["1,000", "WATTS"], y=349, h=37, line_no=1, x=350)
        + line(["Note"], y=430, h=80, line_no=2, x=43)
        + line(["Replaces", "40W"], y=440, h=65, line_no=3, x=520)
    )
    assert pick(table, "wattage") == (1000.0, "watt")
    by_value = {c.value: c for c in extract_candidates(table, "wattage", IMAGE)}
    assert by_value[1000.0].keyword_row and not by_value[40.0].keyword_row
    # "Weight capacity" names the load: the item weight is the row named "Item weight"
    cart = (
        line(["Weight", "capacity"], y=454, h=46, line_no=0, x=50)
        + line(["6kilograms"], y=437, h=77, line_no=1, x=347)
        + line(["Item", "weight"], y=662, h=45, line_no=2, x=46)
        + line(["6oz"], y=658, h=44, line_no=3, x=343)
    )
    assert pick(cart, "item_weight") == (6.0, "ounce")
    assert pick(cart, "maximum_weight_recommendation") == (6.0, "kilogram")


def test_implausible_values_lose() -> None:
    # 0.2 kV is printed as 200 V; 5000 t is no product weight
    tokens = line(["0.2kV"], y=50, line_no=0) + line(["12V"], y=300, line_no=1)
    assert pick(tokens, "voltage") == (12.0, "volt")
    tokens = line(["5000", "t"], y=50, h=40, line_no=0) + line(["2", "kg"], y=300, line_no=1)
    assert pick(tokens, "item_weight") == (2.0, "kilogram")


def test_count_in_multipack_is_not_the_weight() -> None:
    assert pick(line(["2", "x", "500g"]), "item_weight") == (500.0, "gram")


def test_no_candidates_and_wrong_units() -> None:
    assert choose([], "item_weight") == (None, 0.0)
    c = Candidate(5.0, "gram", "5 g", 0, 1, 0, 0, 10, 10, 1.0, 0.5, 0.5, 0.9)
    assert score_candidate(c, "voltage") == -math.inf
    assert choose([c], "voltage") == (None, 0.0)


def test_confidence_is_monotone() -> None:
    xs = [-20.0, -5.0, -1.0, 0.0, 2.0, 10.0]
    ys = [confidence(x) for x in xs]
    assert ys == sorted(ys) and all(0.0 < y < 1.0 for y in ys)
    assert confidence(-math.inf) == 0.0
    strong = extract_candidates(line(["NET", "WT", "500g"], h=60), "item_weight", IMAGE)
    weak = extract_candidates(
        line(["Fat", "3g"]) + line(["Salt", "3g"], y=300, line_no=1), "item_weight", IMAGE
    )
    assert choose(strong, "item_weight")[1] > choose(weak, "item_weight")[1]


def test_unit_inferred_only_as_last_resort() -> None:
    tokens = line(["Max", "load", "25"])
    assert pick(tokens, "maximum_weight_recommendation") is None
    cands = extract_candidates(tokens, "maximum_weight_recommendation", IMAGE, unitless_fallback=True)
    best, conf = choose(cands, "maximum_weight_recommendation")
    assert best is not None and (best.value, best.unit, best.unit_inferred) == (25.0, "kilogram", True)
    assert conf < 0.5
