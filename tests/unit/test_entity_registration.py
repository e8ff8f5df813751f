"""A made-up length registered in the entity table: every step takes its facts from that one entry.

The candidate extractor (keywords, letters, group header words), the rules (drawing role, group
position, size end, rotated text), the network's encoder (an entity id) and the synthetic generator (unit
shares, value ranges, letters) read ``item_length`` from its :class:`EntitySpec` while it is registered.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from imagequant.core.entities import ENTITIES, ENTITY_SPECS, EntitySpec, ValueRange, entity_spec, registered
from imagequant.core.tokens import OcrToken
from imagequant.scoring import rules
from imagequant.text.candidates import Candidate, extract_candidates

IMAGE = (1000, 1000)
LENGTHS = frozenset({"centimetre", "inch", "millimetre", "metre"})


def _line(words: list[str], y: int = 100, line_no: int = 0) -> list[OcrToken]:
    out, x = [], 10
    for i, word in enumerate(words):
        out.append(OcrToken(word, 90.0, x, y, 10 * len(word), 20, 1, line_no, i))
        x += 10 * len(word) + 8
    return out


def _candidate(**changes: object) -> Candidate:
    base = Candidate(value=120.0, unit="centimetre", text="120 cm", token_start=0, token_end=1, left=100,
                     top=100, width=60, height=20, rel_height=1.0, rel_x=0.5, rel_y=0.5, conf=0.9,
                     base_value=1.2)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture()
def item_length(monkeypatch: pytest.MonkeyPatch) -> Iterator[EntitySpec]:
    """``item_length`` registered for the test, with depth's length words and letter moved over to it (so
    the two do not collide), and its synthetic text templates (units and values are the entry's)."""
    from imagequant import synthetic

    spec = EntitySpec(
        "item_length", LENGTHS, {"millimetre": 0.8, "metre": 0.2}, "millimetre", (0.0001, 20.0),
        r"length|long|len", dimension=True, letters=("l",), header_words=("length", "len"),
        drawing_role="receding", line_orientation="diagonal", group_position="first", size_end="largest",
        value_ranges={"millimetre": ValueRange(1000, 2000, 1.0), "metre": ValueRange(1.0, 2.0, 0.0)},
    )
    narrow_depth = dataclasses.replace(
        entity_spec("depth"), keywords=r"depth|deep|d|thickness|thick|size|dimensions?|dims?|measures?",
        letters=("d",), header_words=("depth",))
    renderer = synthetic.EntityRenderer(
        0.2, (("dimension", 0.5), ("table", 0.5)), ("{q}", "Length {q}"), ("Length",),
        lambda rng: ("Scale 1:10",), p_also_drawn=0.5)
    monkeypatch.setitem(synthetic.RENDERERS, spec.name, renderer)
    with registered(narrow_depth, spec):
        yield spec


def test_registered_adds_for_the_block_and_restores_the_table() -> None:
    before = dict(ENTITY_SPECS)
    spec = EntitySpec("item_length", LENGTHS, {"millimetre": 1.0}, "millimetre", (0.0001, 20.0), "length",
                      dimension=True, letters=("l",), drawing_role="receding", line_orientation="diagonal",
                      group_position="first")
    narrow_depth = dataclasses.replace(entity_spec("depth"), letters=("d",), header_words=("depth",))
    with pytest.raises(RuntimeError, match="inside"), registered(narrow_depth, spec):
        assert list(ENTITIES)[-1] == "item_length" and list(ENTITIES)[1] == "depth"  # a replacement keeps its place
        assert entity_spec("depth").letters == ("d",)
        raise RuntimeError("inside")
    assert before == ENTITY_SPECS and list(before) == list(ENTITY_SPECS)
    assert all(ENTITY_SPECS[name] is before[name] for name in before)
    with pytest.raises(ValueError, match="twice"), registered(spec, spec):
        pass


def test_the_extractor_reads_its_keywords_letters_and_header_words(item_length: EntitySpec) -> None:
    [c] = extract_candidates(_line(["Length", "75", "cm"]), "item_length", IMAGE)
    assert c.keyword and c.keyword_same_line
    [c] = extract_candidates(_line(["Length", "75", "cm"]), "depth", IMAGE)
    assert not c.keyword  # "length" is item_length's word now
    # "len" is a header word of item_length only: the group header names all three positions
    cands = extract_candidates(_line(["Len", "x", "W", "x", "H:", "120", "x", "30", "x", "40", "cm"]),
                               "item_length", IMAGE)
    assert [(c.value, c.dim_letter) for c in cands] == [(120.0, "l"), (30.0, "w"), (40.0, "h")]
    best, _ = rules.choose(cands, "item_length")
    assert best is not None and best.value == 120.0
    assert rules.reasons(best, "item_length")[0] == "dim_letter:l"
    assert "dim_letter:l" not in rules.reasons(cands[0], "depth")  # no letter of the narrowed depth


def test_the_rules_read_its_drawing_role_group_position_and_size_end(item_length: EntitySpec) -> None:
    right, left = _candidate(row_right=True), _candidate(row_left=True)
    assert "drawing:row_right" in rules.reasons(right, "item_length")
    assert rules.score_candidate(right, "item_length") > rules.score_candidate(left, "item_length")
    assert rules.score_candidate(right, "width") < rules.score_candidate(left, "width")
    first, middle, last = (_candidate(xgroup_pos=i, xgroup_len=3) for i in range(3))
    assert rules.score_candidate(first, "item_length") > rules.score_candidate(middle, "item_length")
    assert rules.score_candidate(first, "depth") < rules.score_candidate(middle, "depth")
    assert rules.score_candidate(last, "item_length") < rules.score_candidate(first, "item_length")
    largest, smallest = _candidate(size_order=0.0), _candidate(size_order=1.0)
    assert "size:largest" in rules.reasons(largest, "item_length")
    assert rules.score_candidate(largest, "item_length") > rules.score_candidate(smallest, "item_length")
    rotated, upright = _candidate(angle=90), _candidate()

    def turned(entity: str) -> float:
        return rules.score_candidate(rotated, entity) - rules.score_candidate(upright, entity)

    assert turned("item_length") == pytest.approx(-1.0) and turned("height") == pytest.approx(0.5)
    # the same candidate scores by whatever the entry says: move it to the last place of a group
    with registered(dataclasses.replace(item_length, group_position="last", rotated_text=True)):
        assert rules.score_candidate(last, "item_length") > rules.score_candidate(first, "item_length")
        assert turned("item_length") == pytest.approx(0.5)
        assert "drawing:vertical" in rules.reasons(rotated, "item_length")


def test_the_encoder_gives_it_the_next_entity_id(item_length: EntitySpec) -> None:
    from imagequant.scoring.encode import ModelParams, Vocab, encode_example

    params = ModelParams()
    assert params.entities == list(ENTITIES) and params.entities[-1] == "item_length"
    tokens = _line(["Length", "75", "cm"])
    example = encode_example(tokens, IMAGE, "item_length", None, Vocab.build([t.text for t in tokens], 1),
                             params, label="75.0 centimetre")
    assert example.entity_id == len(params.entities) - 1 == 8
    assert [c.value for c in example.candidates] == [75.0] and example.targets == [0]


def test_the_generator_draws_its_units_and_values_from_the_entry(item_length: EntitySpec) -> None:
    from imagequant import synthetic

    rng = np.random.default_rng(5)
    truths = [synthetic.make_truth(rng, "item_length", "easy") for _ in range(400)]
    units = Counter(t.unit for t in truths)
    assert set(units) == {"millimetre", "metre"} and 0.7 < units["millimetre"] / len(truths) < 0.9
    assert all(1000 <= t.value <= 2000 for t in truths if t.unit == "millimetre")
    assert all(1.0 <= t.value <= 2.0 for t in truths if t.unit == "metre")
    # a drawing prints it with its letter, in its drawing role's place (the narrowed depth shares the role,
    # so the two are never drawn together)
    specs = [synthetic.make_spec(np.random.default_rng([5, i]), entities=["item_length", "width", "depth"])
             for i in range(200)]
    drawings = [s for s in specs if s.kind == "dimension" and "item_length" in {t.entity for t in s.truths}]
    assert drawings
    for s in drawings:
        assert {"item_length", "depth"} - {t.entity for t in s.truths}
    lettered = [t for s in drawings for t in s.truths if t.entity == "item_length" and s.options["letters"]]
    assert lettered and all(t.text.startswith("L: ") for t in lettered)
    image = synthetic.render_item(drawings[0], np.random.default_rng(1))
    assert image.size == drawings[0].size


def test_an_entity_without_a_renderer_or_value_range_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagequant import synthetic

    spec = EntitySpec("item_length", LENGTHS, {"millimetre": 1.0}, "millimetre", (0.0001, 20.0), "length",
                      dimension=True, letters=("l",), drawing_role="receding", line_orientation="diagonal",
                      group_position="first")
    with registered(spec), pytest.raises(KeyError, match="item_length"):
        synthetic.make_truth(np.random.default_rng(0), "item_length")
    monkeypatch.delitem(synthetic._RANGES, "yard")  # a unit with no usual range: the entry must give one
    yards = dataclasses.replace(spec, units=LENGTHS | {"yard"}, unit_prior={"yard": 1.0})
    with registered(yards), pytest.raises(
            ValueError, match="'yard' values of entity 'item_length'"):
        synthetic.make_truth(np.random.default_rng(0), "item_length", "easy")
