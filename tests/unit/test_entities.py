"""The entity table: one entry per entity, checked when loaded, and the only place a new entity goes."""

from __future__ import annotations

import numpy as np
import pytest

from imagequant.catalog import classify_row
from imagequant.core.entities import ENTITIES, ENTITY_SPECS, ENTITY_UNITS, EntitySpec, ValueRange, entity_spec
from imagequant.core.tokens import OcrToken
from imagequant.core.units import UNIT_FACTOR, is_valid_prediction, normalize_unit, parse_label
from imagequant.scoring.base import ScoringRow
from imagequant.scoring.zoo import RuleScorer
from imagequant.text.candidates import extract_candidates

LENGTHS = frozenset({"centimetre", "inch", "millimetre"})


def test_the_table_holds_the_challenge_entities_in_order() -> None:
    assert tuple(ENTITIES) == ("width", "depth", "height", "item_weight", "maximum_weight_recommendation",
                               "voltage", "wattage", "item_volume")
    assert all(unit in UNIT_FACTOR for spec in ENTITY_SPECS.values() for unit in spec.units)
    assert [e for e in ENTITIES if entity_spec(e).dimension] == ["width", "depth", "height"]
    with pytest.raises(ValueError, match="unknown entity 'colour'"):
        entity_spec("colour")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_unit": "gram"}, "default_unit"),
        ({"unit_prior": {"gram": 0.5}}, "unit_prior names units"),
        ({"keywords": "thick(ness"}, "not a regular expression"),
        ({"plausible_base": (2.0, 1.0)}, "plausible_base"),
        ({"name": "Frame Thickness"}, "name"),
        ({"letters": ("TH",)}, "letters"),
        ({"dimension": True}, "drawing_role must be one of below, receding, beside"),
        ({"drawing_role": "below"}, "drawing_role is for lengths"),
        ({"dimension": True, "letters": ("t",), "drawing_role": "below", "line_orientation": "horizontal",
          "group_position": "centre"}, "group_position must be one of first, middle, last"),
        ({"dimension": True, "drawing_role": "below", "line_orientation": "horizontal",
          "group_position": "first"}, "a length needs letters"),
        ({"dimension": True, "letters": ("t",), "drawing_role": "below", "line_orientation": "horizontal",
          "group_position": "first", "header_words": ("width",)}, "header word 'width'"),
        ({"value_ranges": {"gram": ValueRange(1, 10, 0.5)}}, "value_ranges names units"),
    ],
)
def test_an_inconsistent_entry_is_refused_when_built(change: dict, message: str) -> None:
    fields = {"name": "frame_thickness", "units": LENGTHS, "unit_prior": {"millimetre": 0.6},
              "default_unit": "millimetre", "plausible_base": (0.0001, 1.0), "keywords": "thickness|thick"}
    with pytest.raises(ValueError, match=message):
        EntitySpec(**{**fields, **change})


@pytest.fixture()
def ninth_entity(monkeypatch: pytest.MonkeyPatch) -> EntitySpec:
    """A throwaway entity added the way a new one is: one table entry plus its synthetic renderer."""
    from imagequant import synthetic

    spec = EntitySpec("frame_thickness", LENGTHS, {"millimetre": 0.6, "centimetre": 0.3, "inch": 0.1},
                      "millimetre", (0.0001, 1.0), r"thickness|thick|frame", dimension=True, letters=("t",),
                      drawing_role="receding", line_orientation="diagonal", group_position="middle")
    monkeypatch.setitem(ENTITY_SPECS, spec.name, spec)
    renderer = synthetic.EntityRenderer(
        0.1, (("table", 1.0),), ("Thickness {q}", "Frame {q}"), ("Thickness",), lambda rng: ("Glass 4 mm",))
    monkeypatch.setitem(synthetic.RENDERERS, spec.name, renderer)
    return spec


def test_a_ninth_entity_flows_through_every_pure_step(ninth_entity: EntitySpec) -> None:
    name = ninth_entity.name
    assert name in ENTITIES and ENTITY_UNITS[name] == LENGTHS
    assert classify_row("https://x.example/a.jpg", name) == ("ok", "")
    assert parse_label("12.0 millimetre", name).kind == "value"
    assert parse_label("12.0 gram", name).kind == "unit_not_allowed"
    assert normalize_unit("mm", name) == "millimetre" and normalize_unit("kg", name) is None
    tokens = [OcrToken("Frame", 90, 10, 10, 60, 20, 0, 0, 0), OcrToken("thickness", 90, 75, 10, 90, 20, 0, 0, 1),
              OcrToken("18mm", 90, 170, 10, 50, 20, 0, 0, 2), OcrToken("Weight", 90, 10, 60, 60, 20, 0, 1, 0),
              OcrToken("2kg", 90, 75, 60, 40, 20, 0, 1, 1)]
    candidates = extract_candidates(tokens, name, (400, 300))
    assert [(c.value, c.unit, c.keyword) for c in candidates] == [(18.0, "millimetre", True)]
    [prediction] = RuleScorer().predict([ScoringRow(name, tokens, (400, 300), candidates)])
    assert prediction.prediction == "18.0 millimetre" and is_valid_prediction(prediction.prediction, name)


def test_a_ninth_entity_is_rendered_and_encoded(ninth_entity: EntitySpec) -> None:
    from imagequant import synthetic
    from imagequant.scoring.encode import ModelParams

    truth = synthetic.make_truth(np.random.default_rng(3), ninth_entity.name)
    assert truth.unit in ninth_entity.unit_prior and truth.entity == ninth_entity.name
    assert ModelParams().entities[-1] == ninth_entity.name
